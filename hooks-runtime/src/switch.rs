//! The process-wide capture switch.
//!
//! Like tracing's callsite interest, one atomic answers "could anything capture now?" for every
//! capture site in the process. It packs two facts into one word so the check is one load:
//! the number of enabled stores (low bits) and whether the switch has been turned off (`OFF`).
//! Capture is active exactly when the word lies in `1..OFF`.

use std::sync::atomic::{AtomicUsize, Ordering};

const OFF: usize = 1 << (usize::BITS - 1);

static STATE: AtomicUsize = AtomicUsize::new(0);

/// Whether any capture can happen now: the switch is on and at least one store is enabled.
///
/// This is the whole cost of a capture site when capture is off: one relaxed load and a branch.
#[inline(always)]
#[must_use]
pub fn active() -> bool {
    // `wrapping_sub(1) < OFF - 1` <=> `1 <= state < OFF`, in one comparison.
    STATE.load(Ordering::Relaxed).wrapping_sub(1) < OFF - 1
}

/// Whether the switch is on (it is, unless turned off with [`set`] or [`scoped`]).
///
/// When on, enabled stores capture; when off, no capture site does any work.
#[must_use]
pub fn is_on() -> bool {
    STATE.load(Ordering::Relaxed) & OFF == 0
}

/// Turns capture on or off for the whole process and returns the previous setting.
///
/// ```
/// let was_on = hooks_runtime::switch::set(false);
/// assert!(!hooks_runtime::switch::is_on());
/// hooks_runtime::switch::set(was_on);
/// ```
pub fn set(on: bool) -> bool {
    let previous = if on {
        STATE.fetch_and(!OFF, Ordering::SeqCst)
    } else {
        STATE.fetch_or(OFF, Ordering::SeqCst)
    };
    previous & OFF == 0
}

/// Sets the switch for as long as the guard lives, then restores the previous setting, even if
/// the code in between panics.
///
/// ```
/// {
///     let _paused = hooks_runtime::switch::scoped(false);
///     assert!(!hooks_runtime::switch::is_on());
/// }
/// assert!(hooks_runtime::switch::is_on());
/// ```
#[must_use = "the setting is restored when the guard drops; bind it to a named variable"]
pub fn scoped(on: bool) -> SwitchGuard {
    SwitchGuard { previous: set(on) }
}

/// Restores the switch's previous setting on drop; see [`scoped`].
#[derive(Debug)]
pub struct SwitchGuard {
    previous: bool,
}

impl Drop for SwitchGuard {
    fn drop(&mut self) {
        set(self.previous);
    }
}

/// Counts a store as enabled (called by the store).
pub(crate) fn store_enabled() {
    STATE.fetch_add(1, Ordering::SeqCst);
}

/// Counts a store as disabled (called by the store).
pub(crate) fn store_disabled() {
    STATE.fetch_sub(1, Ordering::SeqCst);
}
