//! Parsers for emotion data: GoEmotions-style files (a label list, `labels.txt`, and tab-separated rows
//! of `text <TAB> comma-separated label indices <TAB> comment id`), and an institution's own CSV or JSON
//! Lines files whose rows name their labels ([`parse_emotion_labelled`]).
//!
//! As for intent data, a bad row is never dropped silently: it is reported with its 1-based line number
//! and the reason, and the caller decides whether to use the rest.

use crate::data::{check_text_row, csv_records, ImportReport, InputFormat, RowError, MAX_LABEL_BYTES};
use crate::emotion::{EmotionExample, MAX_EMOTION_LABELS};
use crate::linear::check_labels;
use crate::ModelError;

/// Parses a label list: one name per line, blank lines ignored; 2 to 64 unique names.
pub fn parse_emotion_labels(content: &str) -> Result<Vec<String>, ModelError> {
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    let labels: Vec<String> =
        content.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
    check_labels(&labels, 2, MAX_EMOTION_LABELS)
        .map_err(|e| ModelError::InvalidData(format!("label list: {e}")))?;
    Ok(labels)
}

/// Parses GoEmotions TSV rows whose label indices point into `labels`. Each row needs a text and at
/// least one label index; the third column (the comment id) is optional and ignored. Labels keep the
/// row's order, so the first one listed is the example's primary label.
pub fn parse_goemotions(content: &str, labels: &[String]) -> ImportReport<EmotionExample> {
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    let mut r = ImportReport::default();
    for (i, line) in content.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        match parse_row(line, labels) {
            Ok(e) => r.examples.push(e),
            Err(reason) => r.errors.push(RowError { line: i + 1, reason }),
        }
    }
    r
}

fn parse_row(line: &str, labels: &[String]) -> Result<EmotionExample, String> {
    let fields: Vec<&str> = line.split('\t').collect();
    let [text, ids, rest @ ..] = fields.as_slice() else {
        return Err("expected text, labels and id separated by tabs; found one field".into());
    };
    if rest.len() > 1 {
        return Err(format!("{} tab-separated fields; expected 2 or 3", fields.len()));
    }
    let text = check_text_row(text)?;
    let mut names: Vec<String> = Vec::new();
    for id in ids.split(',').map(str::trim) {
        if id.is_empty() {
            return Err(format!("empty label index in {ids:?}"));
        }
        let k: usize = id.parse().map_err(|_| format!("label index {id:?} is not a number"))?;
        let name = labels
            .get(k)
            .ok_or_else(|| format!("label index {k} is out of range (there are {} labels)", labels.len()))?;
        if names.contains(name) {
            return Err(format!("label index {k} is listed twice"));
        }
        names.push(name.clone());
    }
    Ok(EmotionExample { text: text.to_string(), labels: names, embedding: None })
}

/// Characters that separate label names inside one field: `anger;disgust`, `anger|disgust`, `anger,disgust`.
const LABEL_SEPARATORS: [char; 3] = [';', '|', ','];

/// Parses an institution's emotion file, each row a text and its labels (the first listed is the primary
/// label), the label names spelled out:
/// - CSV with a header naming a `text` column and a `labels` (or `label`) column; several labels in one
///   field are separated by `;`, `|` or `,` (quote the field for commas). RFC 4180 quoting.
/// - JSON Lines: `{"text": "...", "labels": ["anger", "sadness"]}`; `labels` may also be one string
///   with separators, and `label` a single name.
///
/// A file-level problem (no header, missing column) is an error; bad rows are reported by line. Whether
/// the labels are the ones a job's model knows is checked when the data is encoded for that model.
pub fn parse_emotion_labelled(
    content: &str,
    format: InputFormat,
) -> Result<ImportReport<EmotionExample>, ModelError> {
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    match format {
        InputFormat::Csv => parse_emotion_csv(content),
        InputFormat::JsonLines => Ok(parse_emotion_jsonl(content)),
    }
}

/// Splits and checks one row's label names.
fn split_labels<'a>(names: impl Iterator<Item = &'a str>) -> Result<Vec<String>, String> {
    let mut labels: Vec<String> = Vec::new();
    for name in names.flat_map(|n| n.split(LABEL_SEPARATORS)).map(str::trim) {
        if name.is_empty() {
            continue;
        }
        if name.len() > MAX_LABEL_BYTES {
            return Err(format!("label is {} bytes; the limit is {MAX_LABEL_BYTES}", name.len()));
        }
        if name.chars().any(char::is_control) {
            return Err("label contains control characters".into());
        }
        if labels.iter().any(|l| l == name) {
            return Err(format!("label {name:?} is listed twice"));
        }
        labels.push(name.to_string());
    }
    if labels.is_empty() {
        return Err("no label".into());
    }
    if labels.len() > MAX_EMOTION_LABELS {
        return Err(format!("{} labels; at most {MAX_EMOTION_LABELS}", labels.len()));
    }
    Ok(labels)
}

fn emotion_row<'a>(text: &str, labels: impl Iterator<Item = &'a str>) -> Result<EmotionExample, String> {
    let text = check_text_row(text)?;
    Ok(EmotionExample { text: text.to_string(), labels: split_labels(labels)?, embedding: None })
}

fn parse_emotion_csv(content: &str) -> Result<ImportReport<EmotionExample>, ModelError> {
    let mut records = csv_records(content).into_iter();
    let (_, header) = records.next().ok_or_else(|| ModelError::InvalidData("the file is empty".into()))?;
    let header = header.map_err(|e| ModelError::InvalidData(format!("header: {e}")))?;
    let col = |name: &str| header.iter().position(|h| h.trim().eq_ignore_ascii_case(name));
    let (Some(ti), Some(li)) = (col("text"), col("labels").or_else(|| col("label"))) else {
        return Err(ModelError::InvalidData(format!(
            "the header must name a `text` and a `labels` column; found {header:?}"
        )));
    };
    let mut r = ImportReport::default();
    for (line, rec) in records {
        let row = rec.and_then(|f| {
            if f.len() != header.len() {
                return Err(format!("{} fields, the header has {}", f.len(), header.len()));
            }
            let get = |i: usize| f.get(i).map_or("", String::as_str);
            emotion_row(get(ti), std::iter::once(get(li)))
        });
        match row {
            Ok(e) => r.examples.push(e),
            Err(reason) => r.errors.push(RowError { line, reason }),
        }
    }
    Ok(r)
}

fn parse_emotion_jsonl(content: &str) -> ImportReport<EmotionExample> {
    let mut r = ImportReport::default();
    for (i, line) in content.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row = serde_json::from_str::<serde_json::Value>(line)
            .map_err(|e| format!("not valid JSON: {e}"))
            .and_then(|v| {
                let text = match v.get("text") {
                    Some(serde_json::Value::String(s)) => s.as_str(),
                    Some(_) => return Err("field \"text\" is not a string".to_string()),
                    None => return Err("field \"text\" is missing".to_string()),
                };
                let names: Vec<&str> = match (v.get("labels"), v.get("label")) {
                    (Some(serde_json::Value::Array(a)), _) => a
                        .iter()
                        .map(|l| l.as_str().ok_or("field \"labels\" holds a value that is not a string"))
                        .collect::<Result<_, _>>()?,
                    (Some(serde_json::Value::String(s)), _) | (None, Some(serde_json::Value::String(s))) => {
                        vec![s.as_str()]
                    }
                    (Some(_), _) => return Err("field \"labels\" is not a list of strings".to_string()),
                    (None, Some(_)) => return Err("field \"label\" is not a string".to_string()),
                    (None, None) => return Err("field \"labels\" is missing".to_string()),
                };
                emotion_row(text, names.into_iter())
            });
        match row {
            Ok(e) => r.examples.push(e),
            Err(reason) => r.errors.push(RowError { line: i + 1, reason }),
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        parse_emotion_labels("anger\ndisgust\nfear\njoy\nneutral\nsadness\nsurprise").unwrap()
    }

    #[test]
    fn rows_parse_with_their_labels_in_order() {
        let tsv = "I am so angry!\t0\ted1\n\nHappy and surprised\t6,3\ted2\r\n查询余额\t4\n";
        let r = parse_goemotions(tsv, &labels());
        assert_eq!(r.errors, vec![]);
        assert_eq!(r.examples.len(), 3);
        assert_eq!(r.examples[1].labels, ["surprise", "joy"]);
        assert_eq!(r.examples[2].text, "查询余额");
    }

    #[test]
    fn bad_rows_are_reported_by_line() {
        let long = "x".repeat(crate::data::MAX_TEXT_CHARS + 1);
        let long_row = format!("{long}\t0\tid");
        let rows = [
            "ok\t0\tid",
            "no labels here",
            "\t1\tid",
            "text\t\tid",
            "text\t7\tid",
            "text\t1,1\tid",
            "text\ta\tid",
            &long_row,
            "ok\t0\tid\textra",
        ];
        let tsv = rows.join("\n");
        let r = parse_goemotions(&tsv, &labels());
        assert_eq!(r.examples.len(), 1);
        let got: Vec<(usize, &str)> = r.errors.iter().map(|e| (e.line, e.reason.as_str())).collect();
        let want = [
            (2, "one field"),
            (3, "empty text"),
            (4, "empty label index"),
            (5, "out of range"),
            (6, "listed twice"),
            (7, "not a number"),
            (8, "limit"),
            (9, "4 tab-separated fields"),
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for ((line, reason), (wl, wr)) in got.iter().zip(want) {
            assert_eq!(*line, wl);
            assert!(reason.contains(wr), "line {line}: {reason:?} lacks {wr:?}");
        }
    }

    #[test]
    fn institution_files_name_their_labels() {
        let csv =
            "id,text,labels\n1,I am furious,anger\n2,\"Wow, great\",\"surprise, joy\"\n3,查询余额,neutral\n";
        let r = parse_emotion_labelled(csv, InputFormat::Csv).unwrap();
        assert_eq!(r.errors, vec![]);
        assert_eq!(r.examples[1].labels, ["surprise", "joy"]);
        assert_eq!(r.examples[2].text, "查询余额");
        let jl = "{\"text\": \"so sad\", \"labels\": [\"sadness\", \"fear\"]}\n\n{\"text\": \"ok\", \"label\": \"neutral\"}\n{\"text\": \"grr\", \"labels\": \"anger|disgust\"}\n";
        let r = parse_emotion_labelled(jl, InputFormat::JsonLines).unwrap();
        assert_eq!(r.errors, vec![]);
        let labels: Vec<&[String]> = r.examples.iter().map(|e| e.labels.as_slice()).collect();
        assert_eq!(
            labels,
            [
                &["sadness".to_string(), "fear".into()][..],
                &["neutral".into()],
                &["anger".into(), "disgust".into()]
            ]
        );
        assert_eq!(r.examples[0].primary_label(), "sadness");
    }

    #[test]
    fn bad_institution_rows_are_reported_by_line() {
        let csv = "text,labels\nok,joy\n,joy\nno labels,\nrepeat,joy;joy\nthree,fields,here\n";
        let r = parse_emotion_labelled(csv, InputFormat::Csv).unwrap();
        assert_eq!(r.examples.len(), 1);
        let got: Vec<(usize, &str)> = r.errors.iter().map(|e| (e.line, e.reason.as_str())).collect();
        let want = [(3, "empty text"), (4, "no label"), (5, "listed twice"), (6, "3 fields")];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for ((line, reason), (wl, wr)) in got.iter().zip(want) {
            assert_eq!(*line, wl);
            assert!(reason.contains(wr), "line {line}: {reason:?} lacks {wr:?}");
        }
        let jl = "{\"text\": \"a\"}\n{bad\n{\"text\": 3, \"labels\": [\"joy\"]}\n{\"text\": \"a\", \"labels\": [1]}\n{\"text\": \"a\", \"labels\": {}}\n";
        let r = parse_emotion_labelled(jl, InputFormat::JsonLines).unwrap();
        let lines: Vec<usize> = r.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [1, 2, 3, 4, 5], "{:?}", r.errors);
        assert!(r.errors[0].reason.contains("missing"));
        assert!(parse_emotion_labelled("utterance,emotion\nhi,joy\n", InputFormat::Csv).is_err());
        assert!(parse_emotion_labelled("", InputFormat::Csv).is_err());
    }

    #[test]
    fn label_lists_are_validated() {
        assert_eq!(labels().len(), 7);
        assert!(parse_emotion_labels("anger\n").is_err());
        assert!(parse_emotion_labels("anger\nanger\n").is_err());
        let many: String = (0..65).map(|i| format!("l{i}\n")).collect();
        assert!(parse_emotion_labels(&many).is_err());
    }
}
