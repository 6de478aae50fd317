//! [`Site`]: the state every capture site carries, and the [`Sink`] it hands captures to. The
//! capture sites users place, `Hook<M>` and `HookPoint`, wrap one each (see `hook.rs`).
//!
//! A site learns nothing at construction. When a store binds to a model, it walks the model
//! (see [`LayerTree::walk`](crate::LayerTree::walk)) and subscribes to the sites it selected, with the
//! index of the layer in its own list: so firing needs no path and no string compare.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tch::Tensor;

use crate::switch;

/// Receives the tensors of the sites it subscribed to (an [`ActivationStore`](crate::ActivationStore)).
pub(crate) trait Sink: Send + Sync {
    /// Records `output` for the layer at `layer` in the sink's own list. Returns `true` when
    /// the sink has all it needs from this forward and asks that the rest not run.
    fn record(&self, layer: usize, output: &Tensor) -> bool;
    /// Whether the sink currently wants outputs.
    fn wants(&self) -> bool;
}

struct Subscription {
    sink: Weak<dyn Sink>,
    layer: usize,
}

/// The state every capture site carries: who listens to it.
///
/// Cloning a site gives an unbound one: a cloned model must be bound again.
#[derive(Default)]
pub struct Site {
    /// Fast "is anyone listening?" so that an enabled but unselected site takes no lock.
    subscribed: AtomicBool,
    subscribers: Mutex<Vec<Subscription>>,
}

impl fmt::Debug for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Site")
            .field("subscribed", &self.subscribed.load(Ordering::Relaxed))
            .finish()
    }
}

impl Clone for Site {
    fn clone(&self) -> Self {
        Site::default()
    }
}

impl Site {
    /// Hands `output` to every enabled store that selected this site.
    #[inline]
    pub fn capture(&self, output: &Tensor) {
        // Hot path. Capture off (switch off, or no store enabled) costs this one relaxed load and
        // a branch: no allocation, no lock, no string work before it.
        if !switch::active() {
            return;
        }
        self.capture_slow(output);
    }

    /// Whether a capture here could be recorded now: capture is on and some store subscribed
    /// to this site. A model asks this before computing an output only a capture would use (the
    /// logits of a head nobody reads, attention probabilities the fused kernel never forms). It
    /// may answer `true` for a store that is bound but disabled while another is enabled: that
    /// costs the computation, never a value.
    #[inline]
    #[must_use]
    pub fn is_capturing(&self) -> bool {
        switch::active() && self.subscribed.load(Ordering::Acquire)
    }

    #[cold]
    #[inline(never)]
    fn capture_slow(&self, output: &Tensor) {
        if !self.subscribed.load(Ordering::Acquire) {
            return;
        }
        // A panic in a store while recording cannot leave the list half-updated (it is only read
        // here), so a poisoned lock is still consistent.
        let mut stop = false;
        let mut subscribers = self.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
        subscribers.retain(|sub| match sub.sink.upgrade() {
            Some(sink) => {
                if sink.wants() {
                    stop |= sink.record(sub.layer, output);
                }
                true
            }
            None => false,
        });
        if subscribers.is_empty() {
            self.subscribed.store(false, Ordering::Release);
        }
        drop(subscribers);
        // Every subscriber has its copy; only then does the forward stop (see `stop.rs`).
        if stop {
            crate::stop::stop_forward();
        }
    }

    pub(crate) fn subscribe(&self, sink: Weak<dyn Sink>, layer: usize) {
        let mut subscribers = self.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
        subscribers
            .retain(|sub| sub.sink.strong_count() > 0 && !(Weak::ptr_eq(&sub.sink, &sink) && sub.layer == layer));
        subscribers.push(Subscription { sink, layer });
        self.subscribed.store(true, Ordering::Release);
    }

    /// Whether an enabled sink other than `sink` listens here.
    pub(crate) fn has_other_listener(&self, sink: &Arc<dyn Sink>) -> bool {
        let mine = Arc::downgrade(sink);
        let subscribers = self.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
        subscribers
            .iter()
            .any(|sub| !Weak::ptr_eq(&sub.sink, &mine) && sub.sink.upgrade().is_some_and(|s| s.wants()))
    }

    pub(crate) fn unsubscribe(&self, sink: &Arc<dyn Sink>) {
        let weak = Arc::downgrade(sink);
        let mut subscribers = self.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
        subscribers.retain(|sub| !Weak::ptr_eq(&sub.sink, &weak));
        if subscribers.is_empty() {
            self.subscribed.store(false, Ordering::Release);
        }
    }
}
