//! Reading `--input`: text lines, JSONL with a `text` field, or JSONL with `input_ids`.

use std::path::Path;

use crate::error::CliError;

/// One input sample.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// Text for the model's tokenizer.
    Text(String),
    /// Token ids, for models without a tokenizer.
    Ids(Vec<i64>),
}

/// The bundled default input: a few hundred varied English sentences written for this project.
pub const DEFAULT_INPUT: &str = include_str!("../../data/sentences.txt");

/// Reads `path`, or the bundled sentences when `None`. Blank lines are skipped.
///
/// A line that starts with `{` is JSON: `{"text": "..."}` or `{"input_ids": [1, 2, 3]}`; any other
/// line is text.
pub fn read(path: Option<&Path>) -> Result<Vec<Sample>, CliError> {
    let (name, contents) = match path {
        Some(p) => {
            let bytes = std::fs::read(p).map_err(|e| CliError::Input(format!("cannot read `{}`: {e}", p.display())))?;
            (p.display().to_string(), bytes)
        }
        None => ("the bundled sentences".to_owned(), DEFAULT_INPUT.as_bytes().to_vec()),
    };
    let mut samples = Vec::new();
    for (index, raw) in contents.split(|&b| b == b'\n').enumerate() {
        let line_no = index + 1;
        let bad = |why: String| CliError::Input(format!("{name}, line {line_no}: {why}"));
        let line = std::str::from_utf8(raw).map_err(|_| bad("not valid UTF-8; save the file as UTF-8".into()))?;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        samples.push(parse_line(line).map_err(bad)?);
    }
    if samples.is_empty() {
        return Err(CliError::Input(format!(
            "{name} has no samples; give one text (or JSON object) per line"
        )));
    }
    Ok(samples)
}

fn parse_line(line: &str) -> Result<Sample, String> {
    if !line.trim_start().starts_with('{') {
        return Ok(Sample::Text(line.to_owned()));
    }
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("invalid JSON ({e}); write one JSON object per line"))?;
    if let Some(text) = value.get("text") {
        return text
            .as_str()
            .map(|t| Sample::Text(t.to_owned()))
            .ok_or_else(|| "`text` must be a string".to_owned());
    }
    if let Some(ids) = value.get("input_ids") {
        let ids = ids.as_array().ok_or("`input_ids` must be a list of integers")?;
        let ids: Option<Vec<i64>> = ids.iter().map(serde_json::Value::as_i64).collect();
        let ids = ids.ok_or("`input_ids` must be a list of integers")?;
        if ids.is_empty() {
            return Err("`input_ids` is empty".into());
        }
        return Ok(Sample::Ids(ids));
    }
    Err("a JSON line needs a `text` or an `input_ids` field".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_text_or_json() {
        assert_eq!(parse_line("Hello there."), Ok(Sample::Text("Hello there.".into())));
        assert_eq!(parse_line(r#"{"text": "Hi {x}"}"#), Ok(Sample::Text("Hi {x}".into())));
        assert_eq!(
            parse_line(r#"{"input_ids": [101, 7, 102]}"#),
            Ok(Sample::Ids(vec![101, 7, 102]))
        );
        assert!(parse_line(r#"{"input_ids": [1.5]}"#)
            .unwrap_err()
            .contains("list of integers"));
        assert!(parse_line(r#"{"txt": "x"}"#)
            .unwrap_err()
            .contains("`text` or an `input_ids`"));
        assert!(parse_line("{broken").unwrap_err().starts_with("invalid JSON"));
    }

    #[test]
    fn errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, "{\"text\": \"ok\"}\n\n{\"text\": 3}\n").unwrap();
        let err = read(Some(&path)).unwrap_err().to_string();
        assert!(err.ends_with("in.jsonl, line 3: `text` must be a string"), "{err}");
        std::fs::write(&path, "\n  \n").unwrap();
        let err = read(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("has no samples"), "{err}");
        std::fs::write(&path, b"fine\n\xff\xfe\n").unwrap();
        assert!(read(Some(&path))
            .unwrap_err()
            .to_string()
            .contains("line 2: not valid UTF-8"));
    }

    #[test]
    fn the_bundled_input_has_hundreds_of_sentences() {
        let samples = read(None).unwrap();
        assert!(samples.len() >= 200, "{}", samples.len());
        assert!(samples
            .iter()
            .all(|s| matches!(s, Sample::Text(t) if !t.trim().is_empty())));
    }
}
