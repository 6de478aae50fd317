//! [`Site`]: the state every capture site carries, the [`Sink`] it hands captures to and the
//! [`Editor`] that changes what flows on. The capture sites users place, `Hook<M>` (two: its
//! output and its input) and `HookPoint`, wrap sites (see `hook.rs`).
//!
//! A site learns nothing at construction. When a store or an intervention set binds to a model,
//! it walks the model (see [`LayerTree::walk`](crate::LayerTree::walk)) and subscribes to the
//! sites it selected, with the index of the layer in its own list: so firing needs no path and
//! no string compare.
//!
//! Firing a site runs, in order: every enabled intervention bound to it (in the order they were
//! bound), each on the tensor the one before returned; then every enabled store, on the final
//! tensor. So a capture sees what flows on.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tch::Tensor;

use crate::error::Result;
use crate::switch;

/// Receives the tensors of the sites it subscribed to (an [`ActivationStore`](crate::ActivationStore)).
pub(crate) trait Sink: Send + Sync {
    /// Records `output` for the layer at `layer` in the sink's own list. Returns `true` when
    /// the sink has all it needs from this forward and asks that the rest not run.
    fn record(&self, layer: usize, output: &Tensor) -> bool;
    /// Whether the sink currently wants outputs.
    fn wants(&self) -> bool;
}

/// Changes the tensor at the sites it subscribed to (an [`Interventions`](crate::Interventions)).
pub(crate) trait Editor: Send + Sync {
    /// Applies edit `slot` (an index in the editor's own list) to `x`: `Some` tensor to flow on
    /// instead, or `None` to leave it.
    ///
    /// # Errors
    ///
    /// When the edit does not fit `x` (a vector of another width, positions past its length).
    fn edit(&self, slot: usize, x: &Tensor) -> Result<Option<Tensor>>;
    /// The layer path edit `slot` is bound to.
    fn layer(&self, slot: usize) -> &str;
    /// Whether the editor is enabled.
    fn active(&self) -> bool;
}

struct Subscription {
    sink: Weak<dyn Sink>,
    layer: usize,
}

struct Edit {
    editor: Weak<dyn Editor>,
    slot: usize,
}

/// The state every capture site carries: who listens to it, and who edits what flows on.
///
/// Cloning a site gives an unbound one: a cloned model must be bound again.
#[derive(Default)]
pub struct Site {
    /// Fast "is anyone listening?" so that an enabled but unselected site takes no lock.
    subscribed: AtomicBool,
    subscribers: Mutex<Vec<Subscription>>,
    /// Fast "is anyone editing?", likewise.
    edited: AtomicBool,
    editors: Mutex<Vec<Edit>>,
    /// The tensor here does not flow on (see [`observer`](Self::observer)): interventions are
    /// refused.
    observer: bool,
}

impl fmt::Debug for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Site")
            .field("subscribed", &self.subscribed.load(Ordering::Relaxed))
            .field("edited", &self.edited.load(Ordering::Relaxed))
            .field("observer", &self.observer)
            .finish()
    }
}

impl Clone for Site {
    fn clone(&self) -> Self {
        Site {
            observer: self.observer,
            ..Site::default()
        }
    }
}

impl Site {
    /// A site whose tensor does not flow on: the model computes it for capture alone (attention
    /// probabilities the fused kernel never forms). Binding an intervention to it is an error,
    /// since changing it could change nothing downstream.
    #[must_use]
    pub fn observer() -> Self {
        Site {
            observer: true,
            ..Site::default()
        }
    }

    /// Whether this site's tensor does not flow on ([`observer`](Self::observer)).
    #[must_use]
    pub fn is_observer(&self) -> bool {
        self.observer
    }

    /// Hands `output` to every enabled store that selected this site: for a tensor that does
    /// not flow on. A tensor that flows on goes through [`apply`](Self::apply), which also runs
    /// the interventions bound here; an intervention bound to a site fired through `capture`
    /// fails the forward rather than be skipped.
    #[inline]
    pub fn capture(&self, output: &Tensor) {
        // Hot path. Nothing on (capture off and no intervention enabled) costs this one relaxed
        // load and a branch: no allocation, no lock, no string work before it.
        if !switch::busy() {
            return;
        }
        self.capture_busy(output);
    }

    #[cold]
    #[inline(never)]
    fn capture_busy(&self, output: &Tensor) {
        if self.edited.load(Ordering::Acquire) {
            if let Some(layer) = self.active_edit() {
                crate::stop::fail(crate::Error::NotEditable {
                    layer,
                    reason: "the model hands its tensor to `Site::capture`, so it does not flow on",
                });
            }
        }
        if self.subscribed.load(Ordering::Acquire) && switch::active() {
            self.record(output);
        }
    }

    /// Runs the enabled interventions bound here on `x`, then hands the result to the enabled
    /// stores: `Some(tensor)` to flow on in `x`'s place, `None` when no intervention changed it.
    ///
    /// When nothing is on it costs one relaxed load and a branch. An intervention that fails
    /// (a tensor of another shape than the edit's) ends the forward: see
    /// [`Interventions::run`](crate::Interventions::run).
    #[inline]
    #[must_use]
    pub fn apply(&self, x: &Tensor) -> Option<Tensor> {
        if !switch::busy() {
            return None;
        }
        self.apply_slow(x)
    }

    #[cold]
    #[inline(never)]
    fn apply_slow(&self, x: &Tensor) -> Option<Tensor> {
        let edited = if self.edited.load(Ordering::Acquire) {
            self.edit(x)
        } else {
            None
        };
        if self.subscribed.load(Ordering::Acquire) && switch::active() {
            self.record(edited.as_ref().unwrap_or(x));
        }
        edited
    }

    /// The layer of the first enabled edit bound here, if any.
    #[cold]
    fn active_edit(&self) -> Option<String> {
        let editors = self.editors.lock().unwrap_or_else(PoisonError::into_inner);
        editors.iter().find_map(|edit| {
            let editor = edit.editor.upgrade()?;
            editor.active().then(|| editor.layer(edit.slot).to_owned())
        })
    }

    /// Runs the enabled editors in order; `None` when none changed `x`.
    fn edit(&self, x: &Tensor) -> Option<Tensor> {
        let mut current: Option<Tensor> = None;
        let mut failure = None;
        let mut editors = self.editors.lock().unwrap_or_else(PoisonError::into_inner);
        editors.retain(|edit| match edit.editor.upgrade() {
            Some(editor) => {
                if failure.is_none() && editor.active() {
                    match editor.edit(edit.slot, current.as_ref().unwrap_or(x)) {
                        Ok(Some(t)) => current = Some(t),
                        Ok(None) => {}
                        Err(e) => failure = Some(e),
                    }
                }
                true
            }
            None => false,
        });
        if editors.is_empty() {
            self.edited.store(false, Ordering::Release);
        }
        drop(editors);
        if let Some(e) = failure {
            crate::stop::fail(e);
        }
        current
    }

    /// Whether a capture here would be recorded now: capture is on and an enabled store that is
    /// still alive subscribed to this site. A model asks this before computing an output only a
    /// capture would use (the logits of a head nobody reads, attention probabilities the fused
    /// kernel never forms), so the answer is exact: a store dropped or disabled, with another one
    /// on, does not make the model compute what nobody will record. With capture off it costs a
    /// load; with capture on, at a subscribed site, a lock.
    #[inline]
    #[must_use]
    pub fn is_capturing(&self) -> bool {
        switch::active() && self.subscribed.load(Ordering::Acquire) && self.has_taker()
    }

    /// Whether an enabled intervention is bound here now: with [`is_capturing`](Self::is_capturing),
    /// lets a module computed only for what its points give (an attached sparse autoencoder)
    /// skip the work when nobody reads or changes them.
    #[must_use]
    pub fn is_edited(&self) -> bool {
        switch::busy() && self.edited.load(Ordering::Acquire) && self.active_edit().is_some()
    }

    /// Whether an enabled subscriber is alive here; forgets the dropped ones.
    #[cold]
    #[inline(never)]
    fn has_taker(&self) -> bool {
        let mut subscribers = self.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
        subscribers.retain(|sub| sub.sink.strong_count() > 0);
        if subscribers.is_empty() {
            self.subscribed.store(false, Ordering::Release);
        }
        subscribers
            .iter()
            .any(|sub| sub.sink.upgrade().is_some_and(|sink| sink.wants()))
    }

    /// Hands `output` to every enabled subscriber (the site has some).
    #[cold]
    #[inline(never)]
    fn record(&self, output: &Tensor) {
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

    /// Binds edit `slot` of `editor` here, after any bound before.
    pub(crate) fn add_editor(&self, editor: Weak<dyn Editor>, slot: usize) {
        let mut editors = self.editors.lock().unwrap_or_else(PoisonError::into_inner);
        editors.retain(|e| e.editor.strong_count() > 0);
        editors.push(Edit { editor, slot });
        self.edited.store(true, Ordering::Release);
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
