//! Capture sites: [`Hook<M>`] around a module, [`HookPoint`] for any intermediate tensor.
//!
//! A site learns nothing at construction. When a store binds to a model, it walks the model
//! (see [`Hookable::walk`](crate::Hookable::walk)) and subscribes to the sites it selected, with the
//! index of the layer in its own list: so firing needs no path and no string compare.

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tch::{nn, Tensor};

use crate::hookable::Hookable;
use crate::switch;

/// Receives the tensors of the sites it subscribed to (an [`ActivationStore`](crate::ActivationStore)).
pub(crate) trait Sink: Send + Sync {
    /// Records `output` for the layer at `layer` in the sink's own list.
    fn record(&self, layer: usize, output: &Tensor);
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

    #[cold]
    #[inline(never)]
    fn capture_slow(&self, output: &Tensor) {
        if !self.subscribed.load(Ordering::Acquire) {
            return;
        }
        // A panic in a store while recording cannot leave the list half-updated (it is only read
        // here), so a poisoned lock is still consistent.
        let mut subscribers = self.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
        subscribers.retain(|sub| match sub.sink.upgrade() {
            Some(sink) => {
                if sink.wants() {
                    sink.record(sub.layer, output);
                }
                true
            }
            None => false,
        });
        if subscribers.is_empty() {
            self.subscribed.store(false, Ordering::Release);
        }
    }

    pub(crate) fn subscribe(&self, sink: Weak<dyn Sink>, layer: usize) {
        let mut subscribers = self.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
        subscribers
            .retain(|sub| sub.sink.strong_count() > 0 && !(Weak::ptr_eq(&sub.sink, &sink) && sub.layer == layer));
        subscribers.push(Subscription { sink, layer });
        self.subscribed.store(true, Ordering::Release);
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

/// What a hooked forward returns, and which tensor of it is captured: the tensor itself, or the
/// first element of a tuple (as PyTorch forward hooks in the reference tools do).
pub trait CaptureOutput {
    /// The tensor to capture.
    fn captured(&self) -> &Tensor;
}

impl CaptureOutput for Tensor {
    fn captured(&self) -> &Tensor {
        self
    }
}

macro_rules! tuple_output {
    ($($rest:ident),*) => {
        impl<$($rest),*> CaptureOutput for (Tensor, $($rest),*) {
            fn captured(&self) -> &Tensor {
                &self.0
            }
        }
    };
}
tuple_output!(A);
tuple_output!(A, B);
tuple_output!(A, B, C);
tuple_output!(A, B, C, D);

/// A module whose output is captured under the field's layer path: the Rust counterpart of a
/// PyTorch forward hook.
///
/// `Hook<M>` implements tch's `Module` (and so `ModuleT`) when `M` does; for any other forward,
/// use [`call`](Self::call). It dereferences to `M`.
///
/// ```
/// use hooks_runtime::Hook;
/// use tch::{nn, nn::Module, Device, Kind, Tensor};
///
/// let vs = nn::VarStore::new(Device::Cpu);
/// let dense = Hook::new(nn::linear(vs.root() / "dense", 4, 2, Default::default()));
/// let x = Tensor::ones([3, 4], (Kind::Float, Device::Cpu));
/// assert_eq!(dense.forward(&x).size(), [3, 2]);
/// ```
#[derive(Debug, Clone)]
pub struct Hook<M: Hookable> {
    module: M,
    site: Site,
}

impl<M: Hookable> Hook<M> {
    /// Wraps `module` in a capture site.
    pub fn new(module: M) -> Self {
        Hook {
            module,
            site: Site::default(),
        }
    }

    /// Runs any forward of the module and captures its output (the first tensor of a tuple).
    ///
    /// `self.attn.call(|m| m.forward_masked(&x, &mask))`
    #[inline]
    pub fn call<R: CaptureOutput>(&self, forward: impl FnOnce(&M) -> R) -> R {
        let output = forward(&self.module);
        self.site.capture(output.captured());
        output
    }

    /// `M`'s `forward_t`, captured. (An inherent method, since tch's blanket `ModuleT` impl for
    /// every `Module` rules out implementing both traits here.)
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor
    where
        M: nn::ModuleT,
    {
        self.call(|m| m.forward_t(xs, train))
    }

    /// The wrapped module.
    pub fn module(&self) -> &M {
        &self.module
    }

    /// The wrapped module, unwrapped.
    pub fn into_inner(self) -> M {
        self.module
    }

    /// This hook's capture site.
    pub fn site(&self) -> &Site {
        &self.site
    }
}

impl<M: Hookable> Deref for Hook<M> {
    type Target = M;

    fn deref(&self) -> &M {
        &self.module
    }
}

impl<M: Hookable + nn::Module> nn::Module for Hook<M> {
    fn forward(&self, xs: &Tensor) -> Tensor {
        self.call(|m| m.forward(xs))
    }
}

/// A named point for any intermediate tensor (attention pattern, residual stream), the
/// TransformerLens way: `let x = self.hook_resid.apply(x);`.
///
/// ```
/// use hooks_runtime::HookPoint;
/// use tch::{Device, Kind, Tensor};
///
/// let point = HookPoint::new();
/// let x = Tensor::arange(4, (Kind::Float, Device::Cpu));
/// let y = point.apply(x.shallow_clone());
/// assert!(y.equal(&x));
/// ```
#[derive(Debug, Clone, Default)]
pub struct HookPoint {
    site: Site,
}

impl HookPoint {
    /// A hook point; it learns its path when a store binds to the model.
    #[must_use]
    pub fn new() -> Self {
        HookPoint::default()
    }

    /// Captures `x` and returns it unchanged, so later interventions can replace it in place.
    #[inline]
    pub fn apply(&self, x: Tensor) -> Tensor {
        self.site.capture(&x);
        x
    }

    /// This point's capture site.
    pub fn site(&self) -> &Site {
        &self.site
    }
}
