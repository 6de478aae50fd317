//! [`RowBuffer`]: tensors stacked along dim 0 into one growing buffer.

use tch::{Device, Tensor};

use crate::error::{Error, Result};

/// Stacks tensors along dim 0 into one CPU buffer, copying each straight from its source (any
/// device) into place.
///
/// With `max_rows` the buffer is allocated once at that size and rows past it are not copied;
/// without, it doubles when full (amortised O(1) per row). Compared with keeping every part and
/// concatenating at the end, peak memory is the result plus the incoming part, not twice the
/// result.
///
/// ```
/// use hooks_runtime::RowBuffer;
/// use tch::Tensor;
///
/// let mut rows = RowBuffer::new(Some(3));
/// rows.push(&Tensor::from_slice(&[1.0f32, 2.0]).view([2, 1]), "x")?;
/// rows.push(&Tensor::from_slice(&[3.0f32, 4.0]).view([2, 1]), "x")?;
/// assert_eq!(rows.tensor().unwrap(), Tensor::from_slice(&[1.0f32, 2.0, 3.0]).view([3, 1]));
/// assert!(rows.is_full());
/// # Ok::<(), hooks_runtime::Error>(())
/// ```
#[derive(Debug)]
pub struct RowBuffer {
    /// Rows `0..len` hold the data so far; the rest is capacity.
    buf: Option<Tensor>,
    len: i64,
    max_rows: Option<i64>,
}

impl RowBuffer {
    /// An empty buffer that keeps at most `max_rows` rows (`None`: all).
    #[must_use]
    pub fn new(max_rows: Option<usize>) -> Self {
        RowBuffer {
            buf: None,
            len: 0,
            max_rows: max_rows.map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
        }
    }

    /// Appends the rows of `part` (a 0-d tensor counts as one row), detached.
    ///
    /// # Errors
    ///
    /// [`Error::ShapeMismatch`] (naming `layer`) when `part` differs from the rows so far past
    /// dim 0 or in dtype; [`Error::Torch`] when allocating or copying fails.
    pub fn push(&mut self, part: &Tensor, layer: &str) -> Result<()> {
        let src = part.detach();
        let src = if src.dim() == 0 { src.f_unsqueeze(0)? } else { src };
        let size = src.size();
        let room = self.max_rows.map_or(i64::MAX, |m| m - self.len);
        let rows = size[0].min(room);
        let buf = match &mut self.buf {
            None => {
                let mut shape = size.clone();
                shape[0] = self.max_rows.unwrap_or(rows).max(rows);
                self.buf.insert(Tensor::f_empty(&shape, (src.kind(), Device::Cpu))?)
            }
            Some(buf) => {
                let held = buf.size();
                if held[1..] != size[1..] || buf.kind() != src.kind() {
                    let mut expected = held;
                    expected[0] = self.len;
                    return Err(Error::ShapeMismatch {
                        layer: layer.to_owned(),
                        expected,
                        got: size,
                    });
                }
                if self.len + rows > held[0] {
                    let mut shape = held.clone();
                    shape[0] = (held[0] * 2).max(self.len + rows);
                    let grown = Tensor::f_empty(&shape, (src.kind(), Device::Cpu))?;
                    grown
                        .f_narrow(0, 0, self.len)?
                        .f_copy_(&buf.f_narrow(0, 0, self.len)?)?;
                    *buf = grown;
                }
                buf
            }
        };
        if rows > 0 {
            buf.f_narrow(0, self.len, rows)?.f_copy_(&src.f_narrow(0, 0, rows)?)?;
            self.len += rows;
        }
        Ok(())
    }

    /// The rows so far (a view of the buffer), or `None` before the first push.
    #[must_use]
    pub fn tensor(&self) -> Option<Tensor> {
        self.buf.as_ref().map(|b| b.narrow(0, 0, self.len))
    }

    /// How many rows are held.
    #[must_use]
    pub fn rows(&self) -> usize {
        usize::try_from(self.len).unwrap_or(0)
    }

    /// Whether `max_rows` rows are held (never, without a limit).
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.max_rows.is_some_and(|m| self.len >= m)
    }
}
