//! Reading `--input`: text lines, JSONL with a `text` field, or JSONL with `input_ids` (and the
//! `attention_mask` a padding tokenizer writes beside them). Every line is read exactly or
//! refused with its line number.

use std::io::Read as _;
use std::path::Path;

use hooks::SampleColumn;
use sha2::{Digest, Sha256};

use crate::error::CliError;

/// One input sample.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// Text for the model's tokenizer.
    Text(String),
    /// Token ids of the real tokens (a given `attention_mask` has cut the padding), with the
    /// line they came from.
    Ids {
        /// The ids, padding removed.
        ids: Vec<i64>,
        /// The 1-based line of the input file, for messages.
        line: usize,
    },
}

/// `--input-format`: how each line of the input is read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    /// A line that starts with `{` is JSON; a bare `[ids]` list is refused as ambiguous; any
    /// other line is text.
    #[default]
    Auto,
    /// Every line is text, even one that starts with `{`.
    Text,
    /// Every line is a JSON object.
    Jsonl,
}

/// The bundled default input: a few hundred varied English sentences written for this project.
pub const DEFAULT_INPUT: &str = include_str!("../../data/sentences.txt");

/// The keys a JSON line may hold.
const KEYS: [&str; 4] = ["text", "input_ids", "attention_mask", "token_type_ids"];

/// What [`read`] found: the samples, one per non-blank line, the keys kept, and a note for the
/// user when blank lines were skipped.
#[derive(Debug)]
pub struct Input {
    /// In file order.
    pub samples: Vec<Sample>,
    /// Each sample's 0-based line in the file: the output's `sample_index`.
    pub lines: Vec<i64>,
    /// `--keep-keys`: each key's values, one per sample, as `meta.KEY` columns.
    pub meta: Vec<(String, SampleColumn)>,
    /// Which blank lines were skipped, when any were: rows follow the non-blank lines, so labels
    /// kept by line number would shift.
    pub note: Option<String>,
    /// The sha256 of the bytes read, in hex: what a dataset folder's request records (a file
    /// read once, so the hash is of what was extracted).
    pub sha256: String,
}

/// The sha256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Bytes in lowercase hex, two digits each.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `--input -`: standard input.
pub fn is_stdin(path: &Path) -> bool {
    path == Path::new("-")
}

/// `path`'s name in messages: `` `data.txt` ``, or `standard input` for `-`.
pub fn display_name(path: &Path) -> String {
    if is_stdin(path) {
        "standard input".to_owned()
    } else {
        format!("`{}`", path.display())
    }
}

/// The bytes of `path` (standard input for `-`) and its name for messages.
pub fn read_bytes(path: &Path) -> Result<(String, Vec<u8>), CliError> {
    let name = display_name(path);
    let mut bytes = Vec::new();
    let read = if is_stdin(path) {
        std::io::stdin().lock().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::read(path).map(|b| bytes = b)
    };
    read.map_err(|e| CliError::Input(format!("cannot read {name}: {e}")))?;
    Ok((name, bytes))
}

/// Reads `path` (standard input for `-`), or the bundled sentences when `None`. Blank lines are skipped; a leading UTF-8
/// byte-order mark (as some editors save files) is not part of the first line. The JSON keys in
/// `keep` are read into columns (every line must hold each).
pub fn read(path: Option<&Path>, format: InputFormat, keep: &[String]) -> Result<Input, CliError> {
    for (i, key) in keep.iter().enumerate() {
        if keep[..i].contains(key) {
            return Err(CliError::Usage(format!(
                "`--keep-keys`: `{key}` is given twice; name each key once"
            )));
        }
        if KEYS.contains(&key.as_str()) {
            return Err(CliError::Usage(format!(
                "`--keep-keys {key}`: `{key}` is read as the model's input, not kept; name other keys"
            )));
        }
        if key.is_empty() || key.contains(['/', '\\', '\0']) {
            return Err(CliError::Usage(format!(
                "`--keep-keys {key:?}`: a key becomes the array `meta.KEY`, so it must be non-empty and hold no `/` or `\\`"
            )));
        }
    }
    let (name, contents) = match path {
        Some(p) => read_bytes(p)?,
        None => ("the bundled sentences".to_owned(), DEFAULT_INPUT.as_bytes().to_vec()),
    };
    let sha256 = sha256_hex(&contents);
    let Lines { lines, blank } = non_blank_lines(&contents, &name)?;
    let mut samples = Vec::new();
    let mut numbers = Vec::new();
    let mut kept: Vec<Vec<(usize, serde_json::Value)>> = vec![Vec::new(); keep.len()];
    for (line_no, line) in lines {
        let bad = |why: String| CliError::Input(format!("{name}, line {line_no}: {why}"));
        let (sample, values) = parse_line(line, line_no, format, keep).map_err(bad)?;
        samples.push(sample);
        numbers.push(i64::try_from(line_no).unwrap_or(i64::MAX) - 1);
        for (column, value) in kept.iter_mut().zip(values) {
            column.push((line_no, value));
        }
    }
    let meta = keep
        .iter()
        .zip(kept)
        .map(|(key, values)| Ok((format!("{}{key}", hooks::META_PREFIX), column(key, &values, &name)?)))
        .collect::<Result<Vec<_>, CliError>>()?;
    if samples.is_empty() {
        return Err(CliError::Input(format!(
            "{name} has no samples; give one text (or JSON object) per line"
        )));
    }
    let note = (!blank.is_empty()).then(|| {
        let shown: Vec<String> = blank.iter().take(5).map(usize::to_string).collect();
        let more = if blank.len() > 5 { ", ..." } else { "" };
        format!(
            "{name}: skipped {} blank line(s) (line {}{more}); the output has one row per non-blank line, and `sample_index` gives each row's line",
            blank.len(),
            shown.join(", ")
        )
    });
    Ok(Input {
        samples,
        lines: numbers,
        meta,
        note,
        sha256,
    })
}

/// One kept key's values as a column typed as numpy types the same Python values: all booleans
/// `bool`, all integers `int64`, all numbers `float64`, all strings unicode.
fn column(key: &str, values: &[(usize, serde_json::Value)], name: &str) -> Result<SampleColumn, CliError> {
    use serde_json::Value;
    let kind = |v: &Value| match v {
        Value::Bool(_) => Some("a boolean"),
        Value::Number(n) if n.is_i64() => Some("an integer"),
        Value::Number(_) => Some("a number"),
        Value::String(_) => Some("a string"),
        _ => None,
    };
    for (line, value) in values {
        if kind(value).is_none() {
            return Err(CliError::Input(format!(
                "{name}, line {line}: `{key}` is {value}; a kept key holds a number, a string or a boolean on every line"
            )));
        }
        if value.is_u64() && !value.is_i64() {
            return Err(CliError::Input(format!(
                "{name}, line {line}: `{key}` is {value}, past int64's largest value, and a float64 would not hold it exactly; write such ids as strings"
            )));
        }
    }
    let Some((first_line, first)) = values.first() else {
        return Ok(SampleColumn::Int64(Vec::new()));
    };
    let numeric = |v: &Value| matches!(v, Value::Number(_));
    let same = |v: &Value| match first {
        Value::Number(_) => numeric(v),
        other => std::mem::discriminant(other) == std::mem::discriminant(v),
    };
    if let Some((line, value)) = values.iter().find(|(_, v)| !same(v)) {
        return Err(CliError::Input(format!(
            "{name}, line {line}: `{key}` is {} here but {} on line {first_line}; give a key one type on every line",
            kind(value).unwrap_or("?"),
            kind(first).unwrap_or("?")
        )));
    }
    Ok(match first {
        Value::Bool(_) => SampleColumn::Bool(values.iter().map(|(_, v)| v.as_bool().unwrap_or(false)).collect()),
        Value::String(_) => SampleColumn::strings(
            values
                .iter()
                .map(|(_, v)| v.as_str().unwrap_or("").to_owned())
                .collect(),
        )
        .map_err(|e| CliError::Input(format!("{name}: `{key}`: {e}")))?,
        _ if values.iter().all(|(_, v)| v.is_i64()) => {
            SampleColumn::Int64(values.iter().map(|(_, v)| v.as_i64().unwrap_or(0)).collect())
        }
        _ => {
            if let Some((line, value)) = values.iter().find(|(_, v)| v.as_f64().is_none()) {
                return Err(CliError::Input(format!(
                    "{name}, line {line}: `{key}` is {value}, which a float64 cannot hold"
                )));
            }
            SampleColumn::Float64(values.iter().map(|(_, v)| v.as_f64().unwrap_or(f64::NAN)).collect())
        }
    })
}

/// A file's non-blank lines, with their 1-based numbers, and the numbers of its blank ones.
pub struct Lines<'a> {
    /// `(number, line)`, in file order, without `\r`.
    pub lines: Vec<(usize, &'a str)>,
    /// The blank lines' numbers.
    pub blank: Vec<usize>,
}

/// The lines of a UTF-8 file's `contents` (a leading byte-order mark dropped); `name` is the file
/// as messages name it.
pub fn non_blank_lines<'a>(contents: &'a [u8], name: &str) -> Result<Lines<'a>, CliError> {
    let contents = contents.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(contents);
    // The text after the last newline is a line only when it is not empty.
    let contents = contents.strip_suffix(b"\n").unwrap_or(contents);
    let (mut lines, mut blank) = (Vec::new(), Vec::new());
    for (index, raw) in contents.split(|&b| b == b'\n').enumerate() {
        let line_no = index + 1;
        let line = std::str::from_utf8(raw).map_err(|_| {
            CliError::Input(format!(
                "{name}, line {line_no}: not valid UTF-8; save the file as UTF-8"
            ))
        })?;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            blank.push(line_no);
        } else {
            lines.push((line_no, line));
        }
    }
    Ok(Lines { lines, blank })
}

/// A line's sample, and the values of the `keep` keys.
fn parse_line(
    line: &str,
    line_no: usize,
    format: InputFormat,
    keep: &[String],
) -> Result<(Sample, Vec<serde_json::Value>), String> {
    let json = match format {
        InputFormat::Auto => line.trim_start().starts_with('{'),
        InputFormat::Text => false,
        InputFormat::Jsonl => true,
    };
    if !json && !keep.is_empty() {
        return Err(format!(
            "the line is text, but `--keep-keys` reads keys of JSON lines; write {{\"text\": ..., \"{}\": ...}} on every line",
            keep[0]
        ));
    }
    if !json {
        if format == InputFormat::Auto && is_bare_id_list(line) {
            return Err("a bare list of ids is not read as ids; write {\"input_ids\": [...]}, or pass `--input-format text` to read the line as text".into());
        }
        return Ok((Sample::Text(line.to_owned()), Vec::new()));
    }
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| {
        format!("invalid JSON ({e}); write one JSON object per line, or pass `--input-format text` for text lines")
    })?;
    let mut object = value
        .as_object()
        .ok_or("a JSON line must be an object, like {\"text\": \"...\"}")?
        .clone();
    let mut kept = Vec::with_capacity(keep.len());
    for key in keep {
        kept.push(
            object
                .remove(key)
                .ok_or_else(|| format!("no key `{key}`, which `--keep-keys` asks for; give it on every line"))?,
        );
    }
    let unknown: Vec<&str> = object
        .keys()
        .map(String::as_str)
        .filter(|k| !KEYS.contains(k))
        .collect();
    if let Some(key) = unknown.first() {
        let (keys, named) = if unknown.len() == 1 {
            (format!("key `{key}`"), (*key).to_owned())
        } else {
            let quoted: Vec<String> = unknown.iter().map(|k| format!("`{k}`")).collect();
            (format!("keys {}", quoted.join(", ")), unknown.join(","))
        };
        return Err(format!(
            "unknown {keys}; a JSON line holds `text`, or `input_ids` with an optional `attention_mask` and `token_type_ids` (pass `--keep-keys {named}` to carry them into the output as `meta.KEY`)"
        ));
    }
    parse_object(&object, line_no).map(|sample| (sample, kept))
}

fn parse_object(object: &serde_json::Map<String, serde_json::Value>, line_no: usize) -> Result<Sample, String> {
    match (object.get("text"), object.get("input_ids")) {
        (Some(_), Some(_)) => Err("the line has both `text` and `input_ids`; give one of them".into()),
        (Some(text), None) => {
            if object.len() > 1 {
                return Err("`attention_mask` and `token_type_ids` go with `input_ids`, not `text`".into());
            }
            text.as_str()
                .map(|t| Sample::Text(t.to_owned()))
                .ok_or_else(|| "`text` must be a string".to_owned())
        }
        (None, Some(ids)) => {
            let ids = integers(ids, "input_ids")?;
            if ids.is_empty() {
                return Err("`input_ids` is empty; give at least one token id, or remove the line".into());
            }
            let len = ids.len();
            let item = match object.get("attention_mask") {
                Some(mask) => hooks::Item::with_mask(ids, &integers(mask, "attention_mask")?).map_err(|e| match e {
                    hooks::Error::InvalidArgument { name, reason } => format!("`{name}` {reason}"),
                    other => other.to_string(),
                })?,
                None => hooks::Item::new(ids),
            };
            if let Some(types) = object.get("token_type_ids") {
                check_token_types(&integers(types, "token_type_ids")?, len)?;
            }
            Ok(Sample::Ids {
                ids: item.ids().to_vec(),
                line: line_no,
            })
        }
        (None, None) => Err("a JSON line needs a `text` or an `input_ids` field".into()),
    }
}

/// `[101, 2000, 102]`: a line that looks meant as token ids, which the auto format would
/// otherwise tokenize as text.
fn is_bare_id_list(line: &str) -> bool {
    line.trim_start().starts_with('[') && serde_json::from_str::<Vec<i64>>(line).is_ok_and(|ids| !ids.is_empty())
}

fn integers(value: &serde_json::Value, key: &str) -> Result<Vec<i64>, String> {
    let list = value.as_array().ok_or(format!("`{key}` must be a list of integers"))?;
    list.iter()
        .map(serde_json::Value::as_i64)
        .collect::<Option<Vec<i64>>>()
        .ok_or(format!("`{key}` must be a list of integers"))
}

/// `token_type_ids` are accepted only when every id is 0, which is what the models compute with;
/// other segments (sentence pairs) would change the values, so they are refused.
fn check_token_types(types: &[i64], len: usize) -> Result<(), String> {
    if types.len() != len {
        return Err(format!(
            "`token_type_ids` has {} entries but `input_ids` has {len}; give one per token",
            types.len()
        ));
    }
    if types.iter().any(|&t| t != 0) {
        return Err("`token_type_ids` other than 0 (sentence pairs) are not supported; give single sequences".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(line: &str, line_no: usize, format: InputFormat) -> Result<Sample, String> {
        parse_line(line, line_no, format, &[]).map(|(sample, _)| sample)
    }

    fn parse(line: &str) -> Result<Sample, String> {
        plain(line, 7, InputFormat::Auto)
    }

    fn ids(ids: &[i64]) -> Sample {
        Sample::Ids {
            ids: ids.to_vec(),
            line: 7,
        }
    }

    #[test]
    fn lines_are_text_or_json() {
        assert_eq!(parse("Hello there."), Ok(Sample::Text("Hello there.".into())));
        assert_eq!(parse(r#"{"text": "Hi {x}"}"#), Ok(Sample::Text("Hi {x}".into())));
        assert_eq!(parse(r#"{"input_ids": [101, 7, 102]}"#), Ok(ids(&[101, 7, 102])));
        assert!(parse(r#"{"input_ids": [1.5]}"#)
            .unwrap_err()
            .contains("list of integers"));
        assert!(parse("{broken").unwrap_err().starts_with("invalid JSON"));
        assert!(parse("[1, 2]").unwrap_err().contains("bare list of ids"));
        assert_eq!(plain("[1, 2]", 1, InputFormat::Text), Ok(Sample::Text("[1, 2]".into())));
        assert_eq!(parse("[see note 3]"), Ok(Sample::Text("[see note 3]".into())));
        assert!(plain("[1, 2]", 1, InputFormat::Jsonl)
            .unwrap_err()
            .contains("must be an object"));
    }

    #[test]
    fn text_format_reads_braces_as_text() {
        let line = r#"{"text": "a line of code"}"#;
        assert_eq!(plain(line, 1, InputFormat::Text), Ok(Sample::Text(line.into())));
        assert!(plain("plain words", 1, InputFormat::Jsonl)
            .unwrap_err()
            .starts_with("invalid JSON"));
    }

    #[test]
    fn unknown_and_conflicting_keys_are_errors_naming_the_key() {
        assert_eq!(
            parse(r#"{"txt": "x"}"#).unwrap_err(),
            "unknown key `txt`; a JSON line holds `text`, or `input_ids` with an optional `attention_mask` and `token_type_ids` (pass `--keep-keys txt` to carry them into the output as `meta.KEY`)"
        );
        assert!(parse(r#"{"text": "x", "input_ids": [1]}"#)
            .unwrap_err()
            .contains("both `text` and `input_ids`"));
        assert!(parse(r#"{"text": "x", "attention_mask": [1]}"#)
            .unwrap_err()
            .contains("go with `input_ids`"));
    }

    /// What `tokenizer(texts, padding=True)` writes: the padding is cut, the real ids kept.
    #[test]
    fn a_right_padded_attention_mask_cuts_the_padding() {
        assert_eq!(
            parse(
                r#"{"input_ids": [101, 7592, 102, 0, 0], "token_type_ids": [0, 0, 0, 0, 0], "attention_mask": [1, 1, 1, 0, 0]}"#
            ),
            Ok(ids(&[101, 7592, 102]))
        );
        assert_eq!(
            parse(r#"{"input_ids": [5, 6], "attention_mask": [1, 1]}"#),
            Ok(ids(&[5, 6]))
        );
        for (mask, needle) in [
            ("[0, 1, 1]", "left-padded"),
            ("[1, 0, 1]", "left-padded (a 1 follows a 0)"),
            ("[1, 2, 0]", "holds 2"),
            ("[1, 1]", "has 2 entries"),
            ("[0, 0, 0]", "marks no real token"),
        ] {
            let line = format!(r#"{{"input_ids": [1, 2, 3], "attention_mask": {mask}}}"#);
            let err = parse(&line).unwrap_err();
            assert!(err.contains(needle), "{mask}: {err}");
        }
        assert!(parse(r#"{"input_ids": [1, 2], "token_type_ids": [0, 1]}"#)
            .unwrap_err()
            .contains("sentence pairs"));
    }

    #[test]
    fn errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, "{\"text\": \"ok\"}\n\n{\"text\": 3}\n").unwrap();
        let err = read(Some(&path), InputFormat::Auto, &[]).unwrap_err().to_string();
        assert!(err.ends_with("in.jsonl`, line 3: `text` must be a string"), "{err}");
        std::fs::write(&path, "a\n\nb\n  \nc\n").unwrap();
        let input = read(Some(&path), InputFormat::Auto, &[]).unwrap();
        assert_eq!(input.samples.len(), 3);
        assert!(input
            .note
            .unwrap()
            .ends_with("skipped 2 blank line(s) (line 2, 4); the output has one row per non-blank line, and `sample_index` gives each row's line"));
        std::fs::write(&path, "a\nb\n").unwrap();
        assert!(
            read(Some(&path), InputFormat::Auto, &[]).unwrap().note.is_none(),
            "the final newline ends a line"
        );
        std::fs::write(&path, "\n  \n").unwrap();
        let err = read(Some(&path), InputFormat::Auto, &[]).unwrap_err().to_string();
        assert!(err.contains("has no samples"), "{err}");
        std::fs::write(&path, b"fine\n\xff\xfe\n").unwrap();
        assert!(read(Some(&path), InputFormat::Auto, &[])
            .unwrap_err()
            .to_string()
            .contains("line 2: not valid UTF-8"));
    }

    /// `--keep-keys`: typed as `numpy.array` types the same values; `sample_index` counts
    /// blank lines too.
    #[test]
    fn kept_keys_become_typed_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(
            &path,
            "{\"text\": \"a\", \"y\": 1, \"f\": 1, \"s\": \"x\", \"b\": true}\n\n{\"input_ids\": [5], \"y\": 0, \"f\": 2.5, \"s\": \"été\", \"b\": false}\n",
        )
        .unwrap();
        let keep: Vec<String> = ["y", "f", "s", "b"].map(String::from).to_vec();
        let input = read(Some(&path), InputFormat::Auto, &keep).unwrap();
        assert_eq!(input.lines, [0, 2]);
        let names: Vec<&str> = input.meta.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["meta.y", "meta.f", "meta.s", "meta.b"]);
        assert_eq!(input.meta[0].1, SampleColumn::Int64(vec![1, 0]));
        assert_eq!(input.meta[1].1, SampleColumn::Float64(vec![1.0, 2.5]));
        assert_eq!(
            input.meta[2].1,
            SampleColumn::strings(vec!["x".into(), "été".into()]).unwrap()
        );
        assert_eq!(input.meta[3].1, SampleColumn::Bool(vec![true, false]));
        for (text, needle) in [
            ("{\"text\": \"a\", \"y\": 1}\n{\"text\": \"b\"}\n", "line 2: no key `y`"),
            (
                "{\"text\": \"a\", \"y\": 1}\n{\"text\": \"b\", \"y\": \"1\"}\n",
                "line 2: `y` is a string here but an integer on line 1",
            ),
            ("{\"text\": \"a\", \"y\": null}\n", "line 1: `y` is null"),
            ("plain text\n", "line 1: the line is text"),
            (
                "{\"text\": \"a\", \"y\": 18446744073709551615}\n",
                "past int64's largest value",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = read(Some(&path), InputFormat::Auto, &["y".to_owned()])
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err}");
        }
        let err = read(Some(&path), InputFormat::Auto, &["text".to_owned()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("read as the model's input"), "{err}");
        let twice = ["y".to_owned(), "y".to_owned()];
        let err = read(Some(&path), InputFormat::Auto, &twice).unwrap_err().to_string();
        assert!(err.contains("`y` is given twice"), "{err}");
        std::fs::write(&path, "{\"text\": \"a\", \"b\": 1, \"a\": 2}\n").unwrap();
        let err = read(Some(&path), InputFormat::Auto, &[]).unwrap_err().to_string();
        assert!(
            err.contains("unknown keys `a`, `b`") && err.contains("--keep-keys a,b"),
            "{err}"
        );
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bom.jsonl");
        std::fs::write(&path, b"\xEF\xBB\xBF{\"input_ids\": [4, 5]}\r\n{\"text\": \"x\"}\r\n").unwrap();
        let samples = read(Some(&path), InputFormat::Auto, &[]).unwrap().samples;
        assert_eq!(
            samples,
            [
                Sample::Ids {
                    ids: vec![4, 5],
                    line: 1
                },
                Sample::Text("x".into())
            ]
        );
        std::fs::write(&path, b"\xEF\xBB\xBFHello\n").unwrap();
        assert_eq!(
            read(Some(&path), InputFormat::Text, &[]).unwrap().samples,
            [Sample::Text("Hello".into())]
        );
    }

    #[test]
    fn the_bundled_input_has_hundreds_of_sentences() {
        let samples = read(None, InputFormat::Auto, &[]).unwrap().samples;
        assert!(samples.len() >= 200, "{}", samples.len());
        assert!(samples
            .iter()
            .all(|s| matches!(s, Sample::Text(t) if !t.trim().is_empty())));
    }
}
