//! The process-wide capture switch.
//!
//! Like tracing's callsite interest, one atomic answers "could anything happen at a capture site
//! now?" for every site in the process. It packs three facts into one word so that the check is
//! one load: the number of enabled stores (the low half), the number of enabled
//! [`Interventions`](crate::Interventions) (the high half, less the top bit) and whether the
//! switch has been turned off (`OFF`, the top bit).
//!
//! The switch governs **capture only**. Capture is active when some store is enabled and the
//! switch is on. An enabled intervention applies whatever the switch says: turning capture off to
//! save its cost must not change what a model computes. So a site has work to do when capture is
//! active **or** an intervention is enabled anywhere. That answer is kept ready in a second word,
//! `BUSY`, recomputed whenever the first changes (rarely: a store or list enabled, the switch
//! set), so that a site with nothing to do costs one relaxed load of a bool and a branch.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

const OFF: usize = 1 << (usize::BITS - 1);
/// One enabled intervention set, counted in the high half.
const EDIT: usize = 1 << (usize::BITS / 2);
/// The bits that count enabled intervention sets.
const EDITS: usize = (OFF - 1) & !(EDIT - 1);
/// The bits that count enabled stores.
const STORES: usize = EDIT - 1;

static STATE: AtomicUsize = AtomicUsize::new(0);

/// `has_work(STATE)`, for the sites' one load.
static BUSY: AtomicBool = AtomicBool::new(false);

/// Serialises changes to `STATE` with the recomputing of `BUSY`, so that `BUSY` always follows
/// the last change.
static CHANGE: Mutex<()> = Mutex::new(());

/// Applies `op` to `STATE` and refreshes `BUSY`; returns the previous state.
fn change(op: impl FnOnce(&AtomicUsize) -> usize) -> usize {
    // The guarded section cannot panic, so the lock is never poisoned in a way that matters.
    let _guard = CHANGE.lock().unwrap_or_else(PoisonError::into_inner);
    let previous = op(&STATE);
    BUSY.store(has_work(STATE.load(Ordering::SeqCst)), Ordering::SeqCst);
    previous
}

/// Whether any capture can happen now: the switch is on and at least one store is enabled.
///
/// This is the whole cost of a capture site when capture is off: one relaxed load and a branch.
#[inline(always)]
#[must_use]
pub fn active() -> bool {
    capturing(STATE.load(Ordering::Relaxed))
}

/// Whether `state` has capture on: some store enabled, the switch not off.
#[inline(always)]
fn capturing(state: usize) -> bool {
    state & STORES != 0 && state & OFF == 0
}

/// Whether a site has anything to do now: capture is active, or an intervention is enabled
/// somewhere. One relaxed load; a site's whole cost when nothing is on.
#[inline(always)]
pub(crate) fn busy() -> bool {
    BUSY.load(Ordering::Relaxed)
}

#[inline(always)]
fn has_work(state: usize) -> bool {
    // Without interventions, `1 <= state < OFF` is "capture active", in one comparison.
    state.wrapping_sub(1) < OFF - 1 || state & EDITS != 0
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
        change(|s| s.fetch_and(!OFF, Ordering::SeqCst))
    } else {
        change(|s| s.fetch_or(OFF, Ordering::SeqCst))
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
    change(|s| s.fetch_add(1, Ordering::SeqCst));
}

/// Counts a store as disabled (called by the store).
pub(crate) fn store_disabled() {
    change(|s| s.fetch_sub(1, Ordering::SeqCst));
}

/// Counts an intervention set as enabled (called by [`Interventions`](crate::Interventions)).
pub(crate) fn edits_enabled() {
    change(|s| s.fetch_add(EDIT, Ordering::SeqCst));
}

/// Counts an intervention set as disabled.
pub(crate) fn edits_disabled() {
    change(|s| s.fetch_sub(EDIT, Ordering::SeqCst));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_and_edits_are_independent_in_one_word() {
        // (state, capturing, busy)
        let cases = [
            (0, false, false),
            (1, true, true),
            (OFF, false, false),
            (OFF | 3, false, false),
            (EDIT, false, true),
            (EDIT | 2, true, true),
            (OFF | EDIT, false, true),
            (OFF | EDIT | 1, false, true),
        ];
        for (state, capture, busy) in cases {
            assert_eq!(capturing(state), capture, "{state:#x}");
            assert_eq!(has_work(state), busy, "{state:#x}");
        }
    }
}
