//! Parsers for GoEmotions-style files: a label list (`labels.txt`) and tab-separated rows of
//! `text <TAB> comma-separated label indices <TAB> comment id`.
//!
//! As for intent data, a bad row is never dropped silently: it is reported with its 1-based line number
//! and the reason, and the caller decides whether to use the rest.

use crate::data::{check_text_row, ImportReport, RowError};
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
    Ok(EmotionExample { text: text.to_string(), labels: names })
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
    fn label_lists_are_validated() {
        assert_eq!(labels().len(), 7);
        assert!(parse_emotion_labels("anger\n").is_err());
        assert!(parse_emotion_labels("anger\nanger\n").is_err());
        let many: String = (0..65).map(|i| format!("l{i}\n")).collect();
        assert!(parse_emotion_labels(&many).is_err());
    }
}
