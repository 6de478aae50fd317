//! Token positions: which positions an [`Intervention`](crate::Intervention) changes, written as
//! Python indexes and slices (`-1`, `3:`, `:5`, `0,-1`), and where each column of a batch sits in
//! its own sequence ([`TokenPositions`]), so that `-1` means each sample's last token however the
//! batch is padded.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// One entry of a [`Positions`] list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// Python's `x[i]`: one position; a negative one counts from the end (`-1` is the last).
    Index(i64),
    /// Python's `x[start:stop]`: the positions `start ≤ p < stop`, either end left out for "from
    /// the start" or "to the end", a negative end counting from the end. Out-of-range ends are
    /// clipped, as Python clips them.
    Slice {
        /// The first position, `None` for 0.
        start: Option<i64>,
        /// One past the last position, `None` for the end.
        stop: Option<i64>,
    },
}

/// The token positions an intervention changes: a list of [`Position`]s, Python's indexes and
/// slices of the token axis, whose union is changed.
///
/// Parsed from text as the command line writes it: entries separated by commas, each an index
/// (`-1`) or a slice (`3:`, `:5`, `2:6`); steps are not supported.
///
/// ```
/// use hooks_runtime::{Position, Positions};
///
/// let p: Positions = "0, -3:".parse()?;
/// assert_eq!(p.as_slice(), [Position::Index(0), Position::Slice { start: Some(-3), stop: None }]);
/// assert_eq!(p.to_string(), "0,-3:");
/// # Ok::<(), hooks_runtime::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Positions(Vec<Position>);

impl Positions {
    /// The list, in the order given.
    #[must_use]
    pub fn as_slice(&self) -> &[Position] {
        &self.0
    }

    /// Whether the list is empty (which changes nothing, and interventions refuse).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether position `p` of a sequence is in the list; `end` is where negative entries count
    /// from.
    fn contains(&self, p: i64, end: i64) -> bool {
        self.0.iter().any(|entry| match *entry {
            Position::Index(i) => p == if i < 0 { end + i } else { i },
            Position::Slice { start, stop } => {
                let resolve = |e: i64| if e < 0 { end + e } else { e };
                let start = start.map_or(0, resolve).max(0);
                let stop = stop.map_or(i64::MAX, resolve);
                (start..stop).contains(&p)
            }
        })
    }

    /// The first index that falls outside a sequence of `end` tokens (before its start or, with
    /// `bounded`, at or past its end).
    fn out_of_range(&self, end: i64, bounded: bool) -> Option<i64> {
        self.0.iter().find_map(|entry| match *entry {
            Position::Index(i) => {
                let at = if i < 0 { end + i } else { i };
                (at < 0 || (bounded && at >= end)).then_some(i)
            }
            Position::Slice { .. } => None,
        })
    }
}

impl From<Vec<i64>> for Positions {
    /// Indexes, each one position.
    fn from(indexes: Vec<i64>) -> Self {
        Positions(indexes.into_iter().map(Position::Index).collect())
    }
}

impl From<&[i64]> for Positions {
    fn from(indexes: &[i64]) -> Self {
        Positions::from(indexes.to_vec())
    }
}

impl<const N: usize> From<[i64; N]> for Positions {
    fn from(indexes: [i64; N]) -> Self {
        Positions::from(indexes.to_vec())
    }
}

impl From<Vec<Position>> for Positions {
    fn from(list: Vec<Position>) -> Self {
        Positions(list)
    }
}

impl From<Position> for Positions {
    fn from(one: Position) -> Self {
        Positions(vec![one])
    }
}

impl FromStr for Positions {
    type Err = Error;

    /// `-1`, `3:`, `:5`, `2:6`, or several separated by commas (`0,-1`).
    fn from_str(s: &str) -> Result<Self> {
        let invalid = |why: String| Error::InvalidArgument {
            name: "positions",
            reason: format!(
                "`{s}` {why}; write Python indexes and slices separated by commas, like -1, 3:, :5 or 0,-1"
            ),
        };
        let number = |n: &str| -> Result<Option<i64>> {
            let n = n.trim();
            if n.is_empty() {
                return Ok(None);
            }
            n.parse()
                .map(Some)
                .map_err(|_| invalid(format!("holds `{n}`, which is not a whole number")))
        };
        let mut list = Vec::new();
        for entry in s.split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(invalid("has an empty entry".into()));
            }
            let parts: Vec<&str> = entry.split(':').collect();
            list.push(match parts.as_slice() {
                [index] => Position::Index(number(index)?.unwrap_or_default()),
                [start, stop] => Position::Slice {
                    start: number(start)?,
                    stop: number(stop)?,
                },
                _ => return Err(invalid(format!("has `{entry}`: slices take no step"))),
            });
        }
        Ok(Positions(list))
    }
}

impl fmt::Display for Positions {
    /// The form [`FromStr`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, entry) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match *entry {
                Position::Index(i) => write!(f, "{i}")?,
                Position::Slice { start, stop } => {
                    if let Some(start) = start {
                        write!(f, "{start}")?;
                    }
                    f.write_str(":")?;
                    if let Some(stop) = stop {
                        write!(f, "{stop}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Where each column of a batch's `[batch, tokens, ...]` tensors sits in its own sequence, so
/// that [`Positions`] count within each sample rather than within the padded tensor.
///
/// Set with [`Interventions::set_positions`](crate::Interventions::set_positions); the
/// extraction engine sets it for every batch, and generation for every step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenPositions {
    rows: usize,
    columns: usize,
    /// Row-major `[rows, columns]`: the sequence position of each column, `-1` for padding.
    at: Vec<i64>,
    /// Per row, where negative positions count from.
    ends: Vec<i64>,
    /// An index must fall inside its row (`0..end`): the whole sequence is in the batch.
    bounded: bool,
}

impl TokenPositions {
    /// A right-padded batch of whole sequences of `lengths` tokens, `width` columns: column `t`
    /// of row `r` is position `t` when `t < lengths[r]`, padding after. A negative position
    /// counts from each sequence's end, and an index past a sequence's end is an error.
    #[must_use]
    pub fn right_padded(lengths: &[i64], width: i64) -> Self {
        let columns = usize::try_from(width).unwrap_or(0);
        let at = lengths
            .iter()
            .flat_map(|&n| (0..width).map(move |t| if t < n { t } else { -1 }))
            .collect();
        TokenPositions {
            rows: lengths.len(),
            columns,
            at,
            ends: lengths.to_vec(),
            bounded: true,
        }
    }

    /// Sequences that continue past the batch (generation): `at` is `[rows, columns]` row-major,
    /// each column's position in its sequence (`-1` for padding), and `prompt_lengths` per row is
    /// where negative positions count from (`-1` is the prompt's last token). Positions at or
    /// past a prompt's end are the tokens generated after it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `at` does not hold `rows × columns` values for
    /// `prompt_lengths.len()` rows.
    pub fn continuing(at: Vec<i64>, columns: usize, prompt_lengths: &[i64]) -> Result<Self> {
        if at.len() != prompt_lengths.len() * columns {
            return Err(Error::InvalidArgument {
                name: "positions",
                reason: format!(
                    "{} positions for {} rows of {columns} columns",
                    at.len(),
                    prompt_lengths.len()
                ),
            });
        }
        Ok(TokenPositions {
            rows: prompt_lengths.len(),
            columns,
            at,
            ends: prompt_lengths.to_vec(),
            bounded: false,
        })
    }

    /// The same layout for every row of a tensor of `columns` tokens, as a tensor's dim 1 alone
    /// gives it: what positions count in when none are set.
    pub(crate) fn whole(rows: usize, columns: i64) -> Self {
        let lengths = vec![columns; rows];
        TokenPositions::right_padded(&lengths, columns)
    }

    /// `[rows, columns]`.
    pub(crate) fn shape(&self) -> (usize, usize) {
        (self.rows, self.columns)
    }

    /// Which columns `positions` covers, row-major `[rows, columns]`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming an index outside a row's sequence: before its start,
    /// or past its end when the whole sequence is in the batch.
    pub fn mask(&self, positions: &Positions) -> Result<Vec<bool>> {
        for &end in &self.ends {
            if let Some(i) = positions.out_of_range(end, self.bounded) {
                let reason = if self.bounded {
                    format!("position {i} is out of range for a sample of {end} tokens")
                } else {
                    format!("position {i} counts back past the start of a prompt of {end} tokens")
                };
                return Err(Error::InvalidArgument {
                    name: "positions",
                    reason,
                });
            }
        }
        Ok(self
            .at
            .chunks(self.columns.max(1))
            .zip(&self.ends)
            .flat_map(|(row, &end)| row.iter().map(move |&p| p >= 0 && positions.contains(p, end)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Positions {
        s.parse().unwrap()
    }

    /// Python's own answers: `list(range(n))[i]` and `list(range(n))[a:b]`.
    #[test]
    fn indexes_and_slices_resolve_as_python_does() {
        let layout = TokenPositions::right_padded(&[5, 3], 5);
        let rows = |s: &str| -> Vec<Vec<i64>> {
            let mask = layout.mask(&parse(s)).unwrap();
            mask.chunks(5)
                .map(|row| (0..5).filter(|&t| row[t as usize]).collect())
                .collect()
        };
        assert_eq!(rows("-1"), [vec![4], vec![2]]);
        assert_eq!(rows("0,-1"), [vec![0, 4], vec![0, 2]]);
        assert_eq!(rows("3:"), [vec![3, 4], vec![]]);
        assert_eq!(rows(":2"), [vec![0, 1], vec![0, 1]]);
        assert_eq!(rows("-2:"), [vec![3, 4], vec![1, 2]]);
        assert_eq!(rows("1:-1"), [vec![1, 2, 3], vec![1]]);
        assert_eq!(rows("-9:2"), [vec![0, 1], vec![0, 1]]);
        assert_eq!(rows(":"), [vec![0, 1, 2, 3, 4], vec![0, 1, 2]]);
        let error = layout.mask(&parse("4")).unwrap_err().to_string();
        assert!(
            error.ends_with("position 4 is out of range for a sample of 3 tokens"),
            "{error}"
        );
        assert!(layout.mask(&parse("-4")).is_err());
    }

    #[test]
    fn continuing_sequences_count_negatives_from_the_prompt() {
        // Two rows: prompt lengths 4 and 2, one generated column at positions 6 and 3.
        let layout = TokenPositions::continuing(vec![6, 3], 1, &[4, 2]).unwrap();
        assert_eq!(layout.mask(&parse("-1:")).unwrap(), [true, true]);
        assert_eq!(layout.mask(&parse("-1")).unwrap(), [false, false]);
        assert_eq!(layout.mask(&parse("6")).unwrap(), [true, false]);
        assert_eq!(layout.mask(&parse(":5")).unwrap(), [false, true]);
        // Padding (a finished row) is never changed.
        let layout = TokenPositions::continuing(vec![-1, 3], 1, &[4, 2]).unwrap();
        assert_eq!(layout.mask(&parse(":")).unwrap(), [false, true]);
        assert!(layout.mask(&parse("-3")).is_err());
    }

    #[test]
    fn text_round_trips_and_bad_text_is_named() {
        for s in ["-1", "3:", ":5", "2:6", "0,-1", ":", "-3:-1"] {
            assert_eq!(parse(s).to_string(), s);
        }
        assert_eq!(parse(" 1 , 2: ").to_string(), "1,2:");
        for bad in ["", "1,,2", "a", "1:2:3", "1.5"] {
            let e = bad.parse::<Positions>().unwrap_err().to_string();
            assert!(e.contains("Python indexes and slices"), "{bad}: {e}");
        }
    }
}
