//! Stopping a forward once every selected layer has fired: the rest of the model does not run.
//!
//! A forward returns a tensor and knows nothing of stores, so a capture site cannot return early
//! on its behalf. It leaves the forward the one way Rust allows without the model's help: it
//! unwinds with a private payload, by [`std::panic::resume_unwind`] (which runs no panic hook,
//! so nothing is printed), and [`run_stoppable`] catches exactly that payload around the forward.
//!
//! The unwinding crosses Rust frames only. A capture site runs in the model's Rust `forward`,
//! between libtorch calls, never inside one: libtorch calls no Rust code back, so no C++ frame
//! lies between the site and the catch. Tensors on the way are dropped as on any early return.
//! Under `panic = "abort"` unwinding is impossible; [`AVAILABLE`] is then false and nobody asks
//! to stop.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

/// Whether this build can stop a forward early (it unwinds on panic).
pub(crate) const AVAILABLE: bool = cfg!(panic = "unwind");

/// The payload a capture site unwinds with. Private: no other code can raise or mistake it.
struct StopForward;

/// Leaves the running forward; [`run_stoppable`] catches it. Call only while a `run_stoppable`
/// is on this thread's stack: the store that asks for it is armed only inside one.
pub(crate) fn stop_forward() -> ! {
    resume_unwind(Box::new(StopForward))
}

/// Runs `forward`; `None` when a capture site stopped it. Any other panic goes on unwinding.
pub(crate) fn run_stoppable<R>(forward: impl FnOnce() -> R) -> Option<R> {
    // The model is borrowed immutably and its capture sites' lists stay consistent under a
    // panic (see `site.rs`), so nothing observable is left half-done.
    match catch_unwind(AssertUnwindSafe(forward)) {
        Ok(r) => Some(r),
        Err(payload) if payload.is::<StopForward>() => None,
        Err(payload) => resume_unwind(payload),
    }
}
