//! [`RowBuffer`]: tensors stacked along dim 0 into one growing buffer.

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::host::{snapshot, InFlight};

/// Pinned host copies waiting to be moved into the buffer are flushed past this many bytes, so a
/// CUDA extraction holds the result plus a bounded amount in flight.
const STAGED_BYTES: usize = 256 << 20;

/// Stacks tensors along dim 0 into one CPU buffer.
///
/// With `max_rows` the buffer is allocated once at that size and rows past it are not copied;
/// without, it doubles when full (amortised O(1) per row). Compared with keeping every part and
/// concatenating at the end, peak memory is the result plus the incoming part, not twice the
/// result.
///
/// CPU parts are copied straight into place. CUDA parts are copied asynchronously into pinned
/// memory and moved into place later (when [`tensor`](Self::tensor) is called, or when 256 MiB
/// are waiting), so capturing does not stall the device for every part.
///
/// ```
/// use hooks_runtime::RowBuffer;
/// use tch::Tensor;
///
/// let mut rows = RowBuffer::new(Some(3));
/// rows.push(&Tensor::from_slice(&[1.0f32, 2.0]).view([2, 1]), "x")?;
/// rows.push(&Tensor::from_slice(&[3.0f32, 4.0]).view([2, 1]), "x")?;
/// // The fourth row is past `max_rows`: not copied.
/// assert_eq!(rows.tensor()?.unwrap(), Tensor::from_slice(&[1.0f32, 2.0, 3.0]).view([3, 1]));
/// # Ok::<(), hooks_runtime::Error>(())
/// ```
#[derive(Debug)]
pub struct RowBuffer {
    /// Rows `0..len` hold the data so far; the rest is capacity.
    buf: Option<Tensor>,
    len: i64,
    /// Rows accepted so far: `len` plus the staged rows.
    accepted: i64,
    max_rows: Option<i64>,
    /// Every dim but the first, and the dtype, of the first part: later parts must match.
    row_shape: Option<(Vec<i64>, Kind)>,
    /// Host copies from CUDA, in order, not yet known to have landed.
    staged: Vec<Tensor>,
    staged_bytes: usize,
    in_flight: InFlight,
}

impl RowBuffer {
    /// An empty buffer that keeps at most `max_rows` rows (`None`: all).
    #[must_use]
    pub fn new(max_rows: Option<usize>) -> Self {
        RowBuffer {
            buf: None,
            len: 0,
            accepted: 0,
            max_rows: max_rows.map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
            row_shape: None,
            staged: Vec::new(),
            staged_bytes: 0,
            in_flight: InFlight::default(),
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
        match &self.row_shape {
            None => self.row_shape = Some((size[1..].to_vec(), src.kind())),
            Some((rest, kind)) if rest[..] != size[1..] || *kind != src.kind() => {
                let mut expected = vec![self.accepted];
                expected.extend_from_slice(rest);
                return Err(Error::ShapeMismatch {
                    layer: layer.to_owned(),
                    expected,
                    got: size,
                });
            }
            Some(_) => {}
        }
        let room = self.max_rows.map_or(i64::MAX, |m| m - self.accepted);
        let rows = src.size()[0].min(room);
        if rows <= 0 {
            return Ok(());
        }
        let src = src.f_narrow(0, 0, rows)?;
        if src.device() == Device::Cpu {
            self.flush()?;
            self.place(&src)?;
        } else {
            let (host, device) = snapshot(&src)?;
            self.in_flight.add(device);
            self.staged_bytes += host.numel() * host.kind().elt_size_in_bytes();
            self.staged.push(host);
            if self.staged_bytes > STAGED_BYTES {
                self.flush()?;
            }
        }
        self.accepted += rows;
        Ok(())
    }

    /// Copies `src` (on the CPU, readable now, shape checked by `push`) into rows `len..`,
    /// growing the buffer if needed.
    fn place(&mut self, src: &Tensor) -> Result<()> {
        let size = src.size();
        let rows = size[0];
        let buf = match &mut self.buf {
            None => {
                let mut shape = size.clone();
                shape[0] = self.max_rows.unwrap_or(rows).max(rows);
                self.buf.insert(Tensor::f_empty(&shape, (src.kind(), Device::Cpu))?)
            }
            Some(buf) => {
                let held = buf.size();
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
        buf.f_narrow(0, self.len, rows)?.f_copy_(src)?;
        self.len += rows;
        Ok(())
    }

    /// Waits for the staged CUDA copies and moves them into the buffer.
    fn flush(&mut self) -> Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        self.in_flight.wait();
        for host in std::mem::take(&mut self.staged) {
            self.place(&host)?;
        }
        self.staged_bytes = 0;
        Ok(())
    }

    /// The rows so far (a view of the buffer), or `None` before the first push. Waits for any
    /// copies from CUDA still in flight.
    ///
    /// # Errors
    ///
    /// [`Error::Torch`] when moving the staged CUDA parts into place fails.
    pub fn tensor(&mut self) -> Result<Option<Tensor>> {
        self.flush()?;
        Ok(self.buf.as_ref().map(|b| b.narrow(0, 0, self.len)))
    }
}
