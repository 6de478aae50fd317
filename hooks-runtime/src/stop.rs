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
//!
//! An intervention that fails (a steering vector of the wrong width, say) leaves the forward the
//! same way, with the error as its payload, so that no forward goes on with a tensor left
//! unchanged: [`run_stoppable`] returns it as an `Err`. With no `run_stoppable` on the thread's
//! stack (a forward called directly), it panics with the error's message instead, as tch does on
//! a shape error.

use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use crate::error::{Error, Result};

/// Whether this build can stop a forward early (it unwinds on panic).
pub(crate) const AVAILABLE: bool = cfg!(panic = "unwind");

/// The payload a capture site unwinds with. Private: no other code can raise or mistake it.
struct StopForward;

/// Leaves the running forward; [`run_stoppable`] catches it. Call only while a `run_stoppable`
/// is on this thread's stack: the store that asks for it is armed only inside one.
pub(crate) fn stop_forward() -> ! {
    resume_unwind(Box::new(StopForward))
}

/// The payload a failed intervention unwinds with.
struct Failed(Error);

thread_local! {
    /// How many `run_stoppable` calls are on this thread's stack.
    static CATCHERS: Cell<usize> = const { Cell::new(0) };
}

/// Leaves the running forward with `error`: as an `Err` from the innermost [`run_stoppable`],
/// or, with none on this thread's stack, as a panic with the error's message.
pub(crate) fn fail(error: Error) -> ! {
    if AVAILABLE && CATCHERS.with(Cell::get) > 0 {
        resume_unwind(Box::new(Failed(error)))
    }
    panic!("{error} (run the forward inside `Interventions::run` to get this as an error)")
}

/// Counts a `run_stoppable` on the stack for as long as it lives, panics included.
struct Catching;

impl Catching {
    fn new() -> Self {
        CATCHERS.with(|n| n.set(n.get() + 1));
        Catching
    }
}

impl Drop for Catching {
    fn drop(&mut self) {
        CATCHERS.with(|n| n.set(n.get() - 1));
    }
}

/// Runs `forward`: `Err` when an intervention failed in it. Any other panic (a stop included)
/// goes on unwinding.
pub(crate) fn catch_failure<R>(forward: impl FnOnce() -> R) -> Result<R> {
    let catching = Catching::new();
    // The model is borrowed immutably and its capture sites' lists stay consistent under a
    // panic (see `site.rs`), so nothing observable is left half-done.
    let result = catch_unwind(AssertUnwindSafe(forward));
    drop(catching);
    result.or_else(|payload| match payload.downcast::<Failed>() {
        Ok(failed) => Err(failed.0),
        Err(payload) => resume_unwind(payload),
    })
}

/// Runs `forward`: `Ok(None)` when a capture site stopped it, `Err` when an intervention failed.
/// Any other panic goes on unwinding.
pub(crate) fn run_stoppable<R>(forward: impl FnOnce() -> R) -> Result<Option<R>> {
    catch_failure(|| match catch_unwind(AssertUnwindSafe(forward)) {
        Ok(r) => Some(r),
        Err(payload) if payload.is::<StopForward>() => None,
        Err(payload) => resume_unwind(payload),
    })
}
