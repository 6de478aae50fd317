//! `hooks inspect`: what an `.npz` file holds.

use std::path::Path;

use hooks::NpzValue;
use tch::Kind;

use crate::error::CliError;

/// Prints one line per array: name, dtype, shape, bytes, min / max / mean (for strings, the
/// first few).
pub fn run(path: &Path) -> Result<(), CliError> {
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
