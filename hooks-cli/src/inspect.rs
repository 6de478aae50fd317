//! `hooks inspect`: what an `.npz` file or a dataset folder holds.

use std::path::Path;

use hooks::NpzValue;
use tch::Kind;

use crate::error::CliError;

/// Prints one line per array: name, dtype, shape, bytes, min / max / mean (for strings, the
/// first few); for a dataset folder, finished or not, see [`folder`].
pub fn run(path: &Path) -> Result<(), CliError> {
    if path.is_dir() {
        return folder(path);
    }
    let arrays = hooks::load_npz(path)?;
    let width = arrays.iter().map(|(name, _)| name.len()).max().unwrap_or(4).max(4);
    out!(
        "{:<width$}  {:<7} {:<18} {:>12}  {:>12} {:>12} {:>12}",
        "name",
        "dtype",
        "shape",
        "bytes",
        "min",
        "max",
        "mean"
    )?;
    let mut total = 0usize;
    for (name, value) in &arrays {
        let t = match value {
            NpzValue::Tensor(t) => t,
            NpzValue::Strings {
                shape,
                width: chars,
                strings,
            } => {
                let bytes = 4 * chars * strings.len();
                total += bytes;
                let shown: Vec<&str> = strings.iter().take(3).map(String::as_str).collect();
                let more = if strings.len() > 3 { ", ..." } else { "" };
                out!(
                    "{name:<width$}  {:<7} {:<18} {bytes:>12}  {}{more}",
                    format!("<U{chars}"),
                    format!("{shape:?}"),
                    shown.join(", "),
                )?;
                continue;
            }
        };
        let bytes = t.numel() * t.kind().elt_size_in_bytes();
        total += bytes;
        let (min, max, mean) = if t.numel() == 0 {
            ("-".to_owned(), "-".to_owned(), "-".to_owned())
        } else {
            let f = t.to_kind(Kind::Double);
            let fmt = |v: f64| format!("{v:.6}");
            (
                fmt(f.min().double_value(&[])),
                fmt(f.max().double_value(&[])),
                fmt(f.mean(Kind::Double).double_value(&[])),
            )
        };
        out!(
            "{name:<width$}  {:<7} {:<18} {bytes:>12}  {min:>12} {max:>12} {mean:>12}",
            dtype(t.kind()),
            format!("{:?}", t.size())
        )?;
    }
    out!("{} arrays, {} bytes of data in {}", arrays.len(), total, path.display())?;
    Ok(())
}

/// A dataset folder, from its manifest alone (so a folder being written, or left by a killed run,
/// is described as numpy sees it now): whether it is complete, the samples and tokens written,
/// and per file its dtype, the shape its `.npy` header gives now and its bytes.
fn folder(dir: &Path) -> Result<(), CliError> {
    let m = hooks::read_manifest(dir)?;
    let (samples, tokens) = (m.done.samples, m.done.tokens);
    let mut files: Vec<(String, String, Vec<u64>)> = m
        .arrays
        .iter()
        .map(|(name, info)| {
            let rest = info.row_shape.iter().map(|&d| u64::try_from(d).unwrap_or(0));
            let shape = match info.rows {
                hooks::Rows::Tokens => std::iter::once(tokens).chain(rest).collect(),
                hooks::Rows::Samples => std::iter::once(samples as u64).chain(rest).collect(),
                // One flat [heads, T, T] block per sample: the elements written.
                hooks::Rows::SparseTokens => vec![tokens + 1],
                hooks::Rows::SparseSamples => vec![samples as u64 + 1],
                hooks::Rows::Patterns | hooks::Rows::Nonzeros => {
                    let bytes = m.done.bytes.get(name).copied().unwrap_or(0).saturating_sub(128);
                    let elt = match info.descr.as_str() {
                        "<f8" | "<i8" => 8,
                        "<f2" => 2,
                        _ => 4,
                    };
                    vec![bytes / elt]
                }
            };
            (name.clone(), numpy_name(&info.descr), shape)
        })
        .collect();
    if !m.arrays.is_empty() {
        files.push(("offsets.npy".into(), "int64".into(), vec![samples as u64 + 1]));
        files.push(("input_ids.npy".into(), "int64".into(), vec![tokens]));
    }
    let width = files.iter().map(|(name, _, _)| name.len()).max().unwrap_or(4).max(4);
    out!("{:<width$}  {:<7} {:<18} {:>12}", "file", "dtype", "shape", "bytes")?;
    for (name, _, _) in &files {
        let counted = m.done.bytes.get(name).copied().unwrap_or(0);
        let held = std::fs::metadata(dir.join(name)).map_or(0, |meta| meta.len());
        if held < counted {
            return Err(CliError::Input(format!(
                "`{name}` in `{}` holds {held} bytes, but the manifest counts {counted}: the folder was damaged after it was written",
                dir.display()
            )));
        }
    }
    for (name, dtype, shape) in &files {
        let bytes = m.done.bytes.get(name).copied().unwrap_or(0);
        out!("{name:<width$}  {dtype:<7} {:<18} {bytes:>12}", format!("{shape:?}"))?;
    }
    let state = if m.complete {
        "complete"
    } else {
        "in progress (or stopped)"
    };
    let shard = m.shard.map_or_else(String::new, |s| {
        format!(", shard {}/{} (samples {}..{})", s.index, s.count, s.first, s.end)
    });
    out!(
        "dataset folder {}: {state}, {samples} of {} samples and {tokens} tokens written{shard}; each .npy's header counts the rows of the windows the manifest counts",
        dir.display(),
        m.samples
    )?;
    Ok(())
}

/// numpy's name for a `.npy` dtype string (`<f4` → `float32`); strings as they are (`<U12`).
fn numpy_name(descr: &str) -> String {
    match descr {
        "<f4" => "float32",
        "<f8" => "float64",
        "<f2" => "float16",
        "<i8" => "int64",
        "<i4" => "int32",
        "|b1" => "bool",
        other => other,
    }
    .to_owned()
}

/// numpy's name for a tch kind (as our `.npz` files store it).
pub fn dtype(kind: Kind) -> &'static str {
    match kind {
        Kind::Float => "float32",
        Kind::Double => "float64",
        Kind::Half => "float16",
        Kind::Int64 => "int64",
        Kind::Int => "int32",
        Kind::Int16 => "int16",
        Kind::Int8 => "int8",
        Kind::Uint8 => "uint8",
        Kind::Bool => "bool",
        _ => "other",
    }
}
