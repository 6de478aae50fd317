//! Copies to the host: on the CPU a plain copy; from CUDA an asynchronous copy into pinned memory
//! that must be waited for before anything reads it.

use std::sync::atomic::{AtomicU64, Ordering};

use tch::{Device, Tensor};

use crate::error::Result;

/// A detached, contiguous CPU copy of `t` that shares storage with nothing, and the device the
/// copy may still be in flight from.
///
/// On the CPU it is a real copy, so a later in-place op on the model's tensor cannot change it
/// (PyTorch's `.detach().cpu()` shares storage there). From CUDA it is a non-blocking copy into
/// pinned host memory, queued on the current stream behind the kernel that produced `t`: the
/// caller must [`InFlight::wait`] (or synchronize the device) before reading it.
pub(crate) fn snapshot(t: &Tensor) -> Result<(Tensor, Device)> {
    let src = t.detach();
    match src.device() {
        Device::Cpu => {
            let mut out = Tensor::f_empty(src.size(), (src.kind(), Device::Cpu))?;
            out.f_copy_(&src)?;
            Ok((out, Device::Cpu))
        }
        device => {
            // `contiguous` runs on the device (a no-op when it already is); `to_device_` with
            // `non_blocking` from CUDA allocates the destination pinned and returns at once.
            let src = src.f_contiguous()?;
            let out = src.f_to_device_(Device::Cpu, src.kind(), true, false)?;
            Ok((out, device))
        }
    }
}

/// The CUDA devices that host copies may still be in flight from: a bit per device index (63
/// stands for 63 and above).
#[derive(Debug, Default)]
pub(crate) struct InFlight(AtomicU64);

impl InFlight {
    /// Records that a copy from `device` may be in flight.
    pub(crate) fn add(&self, device: Device) {
        if let Device::Cuda(index) = device {
            self.0.fetch_or(1 << index.min(63), Ordering::AcqRel);
        }
    }

    /// Waits for every copy recorded so far to land.
    pub(crate) fn wait(&self) {
        let bits = self.0.swap(0, Ordering::AcqRel);
        if bits == 0 {
            return;
        }
        for index in 0..63 {
            if bits & (1 << index) != 0 {
                tch::Cuda::synchronize(index);
            }
        }
        if bits & (1 << 63) != 0 {
            for index in 63..tch::Cuda::device_count() {
                tch::Cuda::synchronize(index);
            }
        }
    }
}
