//! Per-sample values that travel beside the layers: `sample_index` (each row's line in the input
//! file) and `meta.KEY` (a key of the input's JSON lines, such as a label). They are written as
//! numpy writes the same Python values: integers as `int64`, floats as `float64`, booleans as
//! `bool`, strings as fixed-width unicode (`<U{n}`).

use std::ops::Range;

use tch::Tensor;

use crate::error::{Error, Result};

/// The name of the array that holds each row's 0-based line in the input file.
pub const SAMPLE_INDEX: &str = "sample_index";

/// The prefix of the arrays that carry the input's own keys (`meta.label`).
pub const META_PREFIX: &str = "meta.";

/// Whether `name` is a per-sample column (`sample_index`, `meta.*`) rather than a layer.
#[must_use]
pub fn is_sample_column(name: &str) -> bool {
    name == SAMPLE_INDEX || name.starts_with(META_PREFIX)
}

/// One value per sample, `[N]`.
#[derive(Clone, Debug, PartialEq)]
pub enum SampleColumn {
    /// numpy `int64` (`<i8`).
    Int64(Vec<i64>),
    /// numpy `float64` (`<f8`).
    Float64(Vec<f64>),
    /// numpy `bool` (`|b1`).
    Bool(Vec<bool>),
    /// numpy unicode `<U{width}`: each string padded with NULs to `width` characters.
    Strings {
        /// In sample order.
        values: Vec<String>,
        /// Characters per element: the longest string's, at least 1 (fixed for the whole input,
        /// so that every shard of a run has the same dtype).
        width: usize,
    },
}

impl SampleColumn {
    /// Strings, as `numpy.array(values)` types them (`<U{longest}`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a string holding a NUL character (numpy drops trailing NULs,
    /// so it would not read back the same).
    pub fn strings(values: Vec<String>) -> Result<SampleColumn> {
        if values.iter().any(|s| s.contains('\0')) {
            return Err(Error::InvalidArgument {
                name: "strings",
                reason: "a value holds a NUL character, which numpy would drop; remove it".into(),
            });
        }
        let width = values.iter().map(|s| s.chars().count()).max().unwrap_or(0).max(1);
        Ok(SampleColumn::Strings { values, width })
    }

    /// The number of samples.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            SampleColumn::Int64(v) => v.len(),
            SampleColumn::Float64(v) => v.len(),
            SampleColumn::Bool(v) => v.len(),
            SampleColumn::Strings { values, .. } => values.len(),
        }
    }

    /// Whether it holds no sample.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The samples in `range`, of the same dtype (strings keep their width).
    ///
    /// # Panics
    ///
    /// When `range` is past the end, as slicing does.
    #[must_use]
    pub fn slice(&self, range: Range<usize>) -> SampleColumn {
        match self {
            SampleColumn::Int64(v) => SampleColumn::Int64(v[range].to_vec()),
            SampleColumn::Float64(v) => SampleColumn::Float64(v[range].to_vec()),
            SampleColumn::Bool(v) => SampleColumn::Bool(v[range].to_vec()),
            SampleColumn::Strings { values, width } => SampleColumn::Strings {
                values: values[range].to_vec(),
                width: *width,
            },
        }
    }

    /// numpy's dtype string: `<i8`, `<f8`, `|b1` or `<U{width}`.
    #[must_use]
    pub fn descr(&self) -> String {
        match self {
            SampleColumn::Int64(_) => "<i8".into(),
            SampleColumn::Float64(_) => "<f8".into(),
            SampleColumn::Bool(_) => "|b1".into(),
            SampleColumn::Strings { width, .. } => format!("<U{width}"),
        }
    }

    /// The bytes of the samples in `range`, as a `.npy` of [`descr`](Self::descr) holds them.
    #[must_use]
    pub fn bytes(&self, range: Range<usize>) -> Vec<u8> {
        match self {
            SampleColumn::Int64(v) => v[range].iter().flat_map(|x| x.to_le_bytes()).collect(),
            SampleColumn::Float64(v) => v[range].iter().flat_map(|x| x.to_le_bytes()).collect(),
            SampleColumn::Bool(v) => v[range].iter().map(|&b| u8::from(b)).collect(),
            SampleColumn::Strings { values, width } => {
                let mut out = Vec::with_capacity(range.len() * width * 4);
                for s in &values[range] {
                    let mut n = 0;
                    for c in s.chars().take(*width) {
                        out.extend_from_slice(&u32::from(c).to_le_bytes());
                        n += 1;
                    }
                    out.resize(out.len() + (width - n) * 4, 0);
                }
                out
            }
        }
    }

    /// Reads `bytes` holding `count` elements of the dtype `descr`, as [`bytes`](Self::bytes)
    /// writes them.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for another dtype, a length that does not match, or a code
    /// point that is not a character.
    pub fn from_bytes(descr: &str, bytes: &[u8], count: usize) -> Result<SampleColumn> {
        let bad = |reason: String| Error::InvalidArgument { name: "column", reason };
        let size = match descr {
            "<i8" | "<f8" => 8,
            "|b1" => 1,
            d => match d.strip_prefix("<U").map(str::parse::<usize>) {
                Some(Ok(width)) if width > 0 => width * 4,
                _ => return Err(bad(format!("dtype `{descr}` is not one of a per-sample column's"))),
            },
        };
        if count.checked_mul(size) != Some(bytes.len()) {
            return Err(bad(format!(
                "{} bytes do not hold {count} elements of `{descr}`",
                bytes.len()
            )));
        }
        let eight = |b: &[u8]| <[u8; 8]>::try_from(b).unwrap_or([0; 8]);
        Ok(match descr {
            "<i8" => SampleColumn::Int64(bytes.chunks_exact(8).map(|b| i64::from_le_bytes(eight(b))).collect()),
            "<f8" => SampleColumn::Float64(bytes.chunks_exact(8).map(|b| f64::from_le_bytes(eight(b))).collect()),
            "|b1" => SampleColumn::Bool(bytes.iter().map(|&b| b != 0).collect()),
            _ => {
                let width = size / 4;
                let mut values = Vec::with_capacity(count);
                for element in bytes.chunks_exact(size) {
                    let mut s = String::new();
                    for unit in element.chunks_exact(4) {
                        let code = u32::from_le_bytes(<[u8; 4]>::try_from(unit).unwrap_or([0; 4]));
                        if code == 0 {
                            break;
                        }
                        s.push(char::from_u32(code).ok_or_else(|| bad(format!("{code:#x} is not a character")))?);
                    }
                    values.push(s);
                }
                SampleColumn::Strings { values, width }
            }
        })
    }

    /// The values as a CPU tensor `[N]` (`Int64`, `Double` or `Bool`); `None` for strings.
    #[must_use]
    pub fn to_tensor(&self) -> Option<Tensor> {
        match self {
            SampleColumn::Int64(v) => Some(Tensor::from_slice(v)),
            SampleColumn::Float64(v) => Some(Tensor::from_slice(v)),
            SampleColumn::Bool(v) => Some(Tensor::from_slice(v)),
            SampleColumn::Strings { .. } => None,
        }
    }

    /// Each value as text: what a label reads as (`3`, `0.5`, `true`, `positive`).
    #[must_use]
    pub fn to_strings(&self) -> Vec<String> {
        match self {
            SampleColumn::Int64(v) => v.iter().map(ToString::to_string).collect(),
            SampleColumn::Float64(v) => v.iter().map(ToString::to_string).collect(),
            SampleColumn::Bool(v) => v.iter().map(ToString::to_string).collect(),
            SampleColumn::Strings { values, .. } => values.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dtype_reads_back_its_bytes() {
        let columns = [
            SampleColumn::Int64(vec![0, -3, i64::MAX]),
            SampleColumn::Float64(vec![0.5, -1e300, f64::MIN_POSITIVE]),
            SampleColumn::Bool(vec![true, false, true]),
            SampleColumn::strings(vec!["ab".into(), String::new(), "é😀".into()]).unwrap(),
        ];
        for column in columns {
            let bytes = column.bytes(0..3);
            assert_eq!(SampleColumn::from_bytes(&column.descr(), &bytes, 3).unwrap(), column);
            assert_eq!(column.slice(1..3).bytes(0..2), column.bytes(1..3));
        }
    }

    /// `numpy.array(["ab", "", "é😀"])` is `<U2`: two characters, whatever their UTF-8 size.
    #[test]
    fn strings_are_as_wide_as_numpy_makes_them() {
        let column = SampleColumn::strings(vec!["ab".into(), String::new(), "é😀".into()]).unwrap();
        assert_eq!(column.descr(), "<U2");
        assert_eq!(column.bytes(2..3), [0xe9, 0, 0, 0, 0x00, 0xf6, 0x01, 0]);
        assert_eq!(SampleColumn::strings(vec![String::new()]).unwrap().descr(), "<U1");
        assert!(SampleColumn::strings(vec!["a\0".into()]).is_err());
    }

    #[test]
    fn names_tell_columns_from_layers() {
        assert!(is_sample_column("sample_index"));
        assert!(is_sample_column("meta.label"));
        assert!(!is_sample_column("encoder.layer.0"));
    }
}
