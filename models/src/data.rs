//! Parsers for labelled text: the CLINC150 benchmark file, and an institution's own CSV or JSON Lines.
//!
//! Bad rows of an institution's file are never dropped silently: each is reported with its 1-based line
//! number and what was wrong, and the caller decides whether to import the rest.

use serde::Deserialize;

use crate::{Example, ModelError, OOS_LABEL};

/// Longest text accepted in a row, in characters.
pub const MAX_TEXT_CHARS: usize = 10_000;
/// Longest label accepted, in bytes.
pub const MAX_LABEL_BYTES: usize = 200;

/// CLINC150 with out-of-scope examples merged into each split under the label `oos`.
#[derive(Debug, Clone, PartialEq)]
pub struct Clinc150 {
    /// 15,000 in-scope + 100 out-of-scope.
    pub train: Vec<Example>,
    /// 3,000 + 100.
    pub val: Vec<Example>,
    /// 4,500 + 1,000.
    pub test: Vec<Example>,
}

#[derive(Deserialize)]
struct ClincFile {
    train: Vec<(String, String)>,
    val: Vec<(String, String)>,
    test: Vec<(String, String)>,
    oos_train: Vec<(String, String)>,
    oos_val: Vec<(String, String)>,
    oos_test: Vec<(String, String)>,
}

/// Parses CLINC150's `data_full.json`.
pub fn parse_clinc150(json: &str) -> Result<Clinc150, ModelError> {
    let f: ClincFile =
        serde_json::from_str(json).map_err(|e| ModelError::InvalidData(format!("CLINC150: {e}")))?;
    Ok(merge_clinc150(f))
}

/// The splits of a CLINC150 file, out-of-scope examples merged in as `oos`.
fn merge_clinc150(f: ClincFile) -> Clinc150 {
    let merge = |a: Vec<(String, String)>, b: Vec<(String, String)>| -> Vec<Example> {
        a.into_iter()
            .chain(b.into_iter().map(|(t, _)| (t, OOS_LABEL.to_string())))
            .map(|(text, label)| Example { text, label, embedding: None })
            .collect()
    };
    Clinc150 {
        train: merge(f.train, f.oos_train),
        val: merge(f.val, f.oos_val),
        test: merge(f.test, f.oos_test),
    }
}

/// A file format for labelled examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// Comma-separated with a header naming `text` and `label` columns; RFC 4180 quoting.
    Csv,
    /// One JSON object per line with string fields `text` and `label`.
    JsonLines,
}

/// Picks the format from the file name's extension, else from the first non-blank character.
pub fn detect_format(file_name: &str, content: &str) -> InputFormat {
    let lower = file_name.to_ascii_lowercase();
    if lower.ends_with(".csv") {
        return InputFormat::Csv;
    }
    if lower.ends_with(".jsonl") || lower.ends_with(".json") || lower.ends_with(".ndjson") {
        return InputFormat::JsonLines;
    }
    if content.trim_start().starts_with('{') {
        InputFormat::JsonLines
    } else {
        InputFormat::Csv
    }
}

/// A row that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// 1-based line number where the row starts.
    pub line: usize,
    /// What was wrong.
    pub reason: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// The good rows and the bad ones of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportReport<T = Example> {
    /// Rows that parsed, in file order.
    pub examples: Vec<T>,
    /// Rows that did not, in file order.
    pub errors: Vec<RowError>,
}

impl<T> Default for ImportReport<T> {
    fn default() -> Self {
        Self { examples: Vec::new(), errors: Vec::new() }
    }
}

/// Trims `text` and checks it is something a model can read: not empty, at most [`MAX_TEXT_CHARS`]
/// characters. Services call it on every request before featurising.
pub fn check_text(text: &str) -> Result<&str, ModelError> {
    check_text_row(text).map_err(ModelError::InvalidInput)
}

/// Decodes a request body's text as UTF-8 and checks it with [`check_text`].
pub fn text_from_utf8(bytes: &[u8]) -> Result<&str, ModelError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ModelError::InvalidInput(format!("text is not valid UTF-8 (bad byte at offset {})", e.valid_up_to()))
    })?;
    check_text(text)
}

pub(crate) fn check_text_row(text: &str) -> Result<&str, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty text".into());
    }
    // Count no further than one past the limit: a huge input costs no more than a long one.
    let n = text.chars().take(MAX_TEXT_CHARS + 1).count();
    if n > MAX_TEXT_CHARS {
        return Err(format!("text has more than {MAX_TEXT_CHARS} characters, the limit"));
    }
    Ok(text)
}

fn check_row(text: &str, label: &str) -> Result<Example, String> {
    let text = check_text_row(text)?;
    let label = label.trim();
    if label.is_empty() {
        return Err("empty label".into());
    }
    if label.len() > MAX_LABEL_BYTES {
        return Err(format!("label is {} bytes; the limit is {MAX_LABEL_BYTES}", label.len()));
    }
    if label.chars().any(char::is_control) {
        return Err("label contains control characters".into());
    }
    Ok(Example { text: text.to_string(), label: label.to_string(), embedding: None })
}

/// Parses a whole file. A file-level problem (no header, missing column) is an error; bad rows are
/// reported in [`ImportReport::errors`].
pub fn parse_labelled(content: &str, format: InputFormat) -> Result<ImportReport, ModelError> {
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    match format {
        InputFormat::Csv => parse_csv(content),
        InputFormat::JsonLines => match whole_document(content) {
            Some(document) => document,
            None => Ok(parse_jsonl(content)),
        },
    }
}

/// Content given as JSON Lines that is one JSON document instead: CLINC150's `data_full.json` as shipped
/// (its train split is imported: the in-scope examples and the out-of-scope ones as `oos`), or any other
/// document, refused with what was expected. `None`: JSON Lines (or not JSON at all; the line parser
/// reports each bad line).
fn whole_document(content: &str) -> Option<Result<ImportReport, ModelError>> {
    if !content.trim_start().starts_with('{') {
        return None;
    }
    // A JSON Lines file of several rows fails here at its second object, after parsing one line.
    let serde_json::Value::Object(doc) = serde_json::from_str::<serde_json::Value>(content).ok()? else {
        return None;
    };
    if ["train", "val", "test", "oos_train"].iter().all(|k| doc.contains_key(*k)) {
        // Read once: the document already parsed is the CLINC150 file.
        let file = serde_json::from_value::<ClincFile>(serde_json::Value::Object(doc))
            .map_err(|e| ModelError::InvalidData(format!("CLINC150: {e}")));
        return Some(file.map(merge_clinc150).map(|d| {
            let mut r = ImportReport::default();
            for (i, e) in d.train.into_iter().enumerate() {
                match check_row(&e.text, &e.label) {
                    Ok(e) => r.examples.push(e),
                    Err(reason) => r
                        .errors
                        .push(RowError { line: i + 1, reason: format!("train example {}: {reason}", i + 1) }),
                }
            }
            r
        }));
    }
    if content.trim().lines().count() > 1 {
        let keys: Vec<&str> = doc.keys().map(String::as_str).take(8).collect();
        return Some(Err(ModelError::InvalidData(format!(
            "this is one JSON document (an object with keys {keys:?}), not JSON Lines: give one object per line \
             with string fields \"text\" and \"label\", a CSV file with text and label columns, or CLINC150's \
             data_full.json as shipped"
        ))));
    }
    None
}

fn parse_jsonl(content: &str) -> ImportReport {
    let mut r = ImportReport::default();
    for (i, line) in content.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                r.errors.push(RowError { line: line_no, reason: format!("not valid JSON: {e}") });
                continue;
            }
        };
        let field = |k: &str| match v.get(k) {
            Some(serde_json::Value::String(s)) => Ok(s.as_str()),
            Some(_) => Err(format!("field {k:?} is not a string")),
            None => Err(format!("field {k:?} is missing")),
        };
        match field("text").and_then(|t| field("label").map(|l| (t, l))).and_then(|(t, l)| check_row(t, l)) {
            Ok(e) => r.examples.push(e),
            Err(reason) => r.errors.push(RowError { line: line_no, reason }),
        }
    }
    r
}

/// One CSV record: its fields and the line it starts on, or a syntax error.
pub(crate) type Record = (usize, Result<Vec<String>, String>);

/// Splits RFC 4180 CSV into records with the line each starts on; blank lines are skipped.
pub(crate) fn csv_records(content: &str) -> Vec<Record> {
    let mut out = Vec::new();
    let mut chars = content.chars().peekable();
    let mut line = 1;
    while chars.peek().is_some() {
        let start = line;
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut err = None;
        let mut at_field_start = true;
        loop {
            let Some(c) = chars.next() else {
                if quoted {
                    err = Some("quoted field is not closed before the end of the file".to_string());
                }
                break;
            };
            if quoted {
                match c {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    '"' => quoted = false,
                    '\n' => {
                        line += 1;
                        field.push('\n');
                    }
                    c => field.push(c),
                }
                continue;
            }
            match c {
                '"' if at_field_start => {
                    quoted = true;
                    at_field_start = false;
                }
                '"' => {
                    if err.is_none() {
                        err = Some("a quote inside an unquoted field (quote the whole field)".into());
                    }
                    field.push('"');
                }
                ',' => {
                    fields.push(std::mem::take(&mut field));
                    at_field_start = true;
                }
                '\r' if chars.peek() == Some(&'\n') => {}
                '\n' => {
                    line += 1;
                    break;
                }
                c => {
                    field.push(c);
                    at_field_start = false;
                }
            }
        }
        fields.push(field);
        let blank = fields.len() == 1 && fields[0].trim().is_empty() && err.is_none();
        if !blank {
            out.push((start, err.map_or(Ok(fields), Err)));
        }
    }
    out
}

fn parse_csv(content: &str) -> Result<ImportReport, ModelError> {
    let mut records = csv_records(content).into_iter();
    let (_, header) = records.next().ok_or_else(|| ModelError::InvalidData("the file is empty".into()))?;
    let header = header.map_err(|e| ModelError::InvalidData(format!("header: {e}")))?;
    let col = |name: &str| header.iter().position(|h| h.trim().eq_ignore_ascii_case(name));
    let (Some(ti), Some(li)) = (col("text"), col("label")) else {
        return Err(ModelError::InvalidData(format!(
            "the header must name a `text` and a `label` column; found {header:?}"
        )));
    };
    let mut r = ImportReport::default();
    for (line, rec) in records {
        let row = rec.and_then(|f| {
            if f.len() != header.len() {
                return Err(format!("{} fields, the header has {}", f.len(), header.len()));
            }
            check_row(&f[ti], &f[li])
        });
        match row {
            Ok(e) => r.examples.push(e),
            Err(reason) => r.errors.push(RowError { line, reason }),
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(t: &str, l: &str) -> Example {
        Example { text: t.into(), label: l.into(), embedding: None }
    }

    #[test]
    fn csv_handles_quotes_commas_newlines_and_column_order() {
        let csv = "label,text,extra\nbalance,\"what's my balance, please\",x\r\ntransfer,\"send \"\"50\"\" now\",y\n\ngreet,\"hello\nthere\",z\n退款,我要退款,w\n";
        let r = parse_labelled(csv, InputFormat::Csv).unwrap();
        assert_eq!(r.errors, vec![]);
        assert_eq!(
            r.examples,
            vec![
                ex("what's my balance, please", "balance"),
                ex("send \"50\" now", "transfer"),
                ex("hello\nthere", "greet"),
                ex("我要退款", "退款"),
            ]
        );
    }

    #[test]
    fn bad_csv_rows_are_reported_by_line() {
        let csv = "text,label\nok,a\n,b\nno label,\nthree,fields,here\n\"unclosed,c\nmore\n";
        let r = parse_labelled(csv, InputFormat::Csv).unwrap();
        assert_eq!(r.examples, vec![ex("ok", "a")]);
        let lines: Vec<usize> = r.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6], "{:?}", r.errors);
        assert!(r.errors[0].to_string().starts_with("line 3: empty text"));
        assert!(r.errors[3].reason.contains("not closed"));
    }

    #[test]
    fn csv_without_the_columns_is_an_error() {
        assert!(parse_labelled("utterance,intent\nhi,greet\n", InputFormat::Csv).is_err());
        assert!(parse_labelled("", InputFormat::Csv).is_err());
    }

    #[test]
    fn jsonl_rows_and_their_errors() {
        let long = "x".repeat(MAX_TEXT_CHARS + 1);
        let jl = format!(
            "{{\"text\": \"hi\", \"label\": \"greet\", \"id\": 7}}\n\n{{bad json\n{{\"text\": 5, \"label\": \"a\"}}\n{{\"label\": \"a\"}}\n{{\"text\": \"{long}\", \"label\": \"a\"}}\n"
        );
        let r = parse_labelled(&jl, InputFormat::JsonLines).unwrap();
        assert_eq!(r.examples, vec![ex("hi", "greet")]);
        let lines: Vec<usize> = r.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6]);
        assert!(r.errors[1].reason.contains("not a string"));
        assert!(r.errors[2].reason.contains("missing"));
        assert!(r.errors[3].reason.contains("limit"));
    }

    #[test]
    fn request_text_is_checked() {
        assert_eq!(check_text("  hi  ").unwrap(), "hi");
        for bad in ["", "   \n\t"] {
            let e = check_text(bad).unwrap_err();
            assert!(e.to_string().contains("empty text"), "{e}");
        }
        let huge = "a".repeat(10 * MAX_TEXT_CHARS);
        assert!(check_text(&huge).unwrap_err().to_string().contains("limit"));
        let e = text_from_utf8(&[b'o', b'k', 0xff, 0xfe]).unwrap_err();
        assert!(e.to_string().contains("offset 2"), "{e}");
        assert_eq!(text_from_utf8("查询余额".as_bytes()).unwrap(), "查询余额");
    }

    #[test]
    fn formats_are_detected() {
        assert_eq!(detect_format("a.CSV", "{"), InputFormat::Csv);
        assert_eq!(detect_format("a.jsonl", ""), InputFormat::JsonLines);
        assert_eq!(detect_format("data", "  {\"text\":"), InputFormat::JsonLines);
        assert_eq!(detect_format("data", "text,label"), InputFormat::Csv);
    }

    #[test]
    fn clinc150_as_shipped_imports_its_train_split_and_other_documents_are_named() {
        // Pretty-printed over many lines, as the file is shipped.
        let shipped =
            "{\n \"oos_val\": [[\"v\", \"oos\"]],\n \"train\": [[\"a\", \"x\"], [\"b\", \"y\"]],\n \
                       \"val\": [],\n \"test\": [[\"t\", \"x\"]],\n \"oos_train\": [[\"c\", \"oos\"]],\n \
                       \"oos_test\": []\n}\n";
        let r = parse_labelled(shipped, InputFormat::JsonLines).unwrap();
        assert_eq!(r.examples, vec![ex("a", "x"), ex("b", "y"), ex("c", "oos")]);
        assert!(r.errors.is_empty());
        // Another JSON document: one clear error instead of one per line.
        let e = parse_labelled("{\n \"rows\": [{\"text\": \"a\"}]\n}\n", InputFormat::JsonLines).unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("one JSON document") && e.contains("\"rows\"") && e.contains("not JSON Lines"),
            "{e}"
        );
        // JSON Lines, one row or several, are still JSON Lines.
        let one = parse_labelled("{\"text\": \"hi\", \"label\": \"x\"}\n", InputFormat::JsonLines).unwrap();
        assert_eq!(one.examples, vec![ex("hi", "x")]);
        let bad = parse_labelled("{\"utterance\": \"hi\"}\n", InputFormat::JsonLines).unwrap();
        assert_eq!(bad.errors.len(), 1, "a one-line file keeps its line error");
        let two = "{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\", \"label\": \"y\"}\n";
        assert_eq!(parse_labelled(two, InputFormat::JsonLines).unwrap().examples.len(), 2);
    }

    #[test]
    fn clinc150_merges_out_of_scope() {
        let j = r#"{"train": [["a", "x"]], "val": [], "test": [["b", "y"]], "oos_train": [["c", "oos"]], "oos_val": [], "oos_test": []}"#;
        let d = parse_clinc150(j).unwrap();
        assert_eq!(d.train, vec![ex("a", "x"), ex("c", "oos")]);
        assert_eq!(d.test, vec![ex("b", "y")]);
        assert!(parse_clinc150("{}").is_err());
    }
}
