//! The capture sites a model places: [`Hook<M>`] around a module, the counterpart of a PyTorch
//! forward hook, and [`HookPoint`] for any intermediate tensor, the TransformerLens way.

use std::ops::Deref;

use tch::{nn, Tensor};

use crate::builder::HookPaths;
use crate::hookable::{Hookable, LayerTree, Walker};
use crate::path::{LayerPath, Prefix};
use crate::schema::Schema;
use crate::site::Site;

/// What a hooked forward returns, and which tensor of it is captured and intervened on: the
/// tensor itself, or the first element of a tuple (as PyTorch forward hooks in the reference
/// tools do).
pub trait CaptureOutput {
    /// The tensor to capture.
    fn captured(&self) -> &Tensor;
    /// The same tensor, to replace with what an intervention returns.
    fn captured_mut(&mut self) -> &mut Tensor;
}

impl CaptureOutput for Tensor {
    fn captured(&self) -> &Tensor {
        self
    }

    fn captured_mut(&mut self) -> &mut Tensor {
        self
    }
}

macro_rules! tuple_output {
    ($($rest:ident),*) => {
        impl<$($rest),*> CaptureOutput for (Tensor, $($rest),*) {
            fn captured(&self) -> &Tensor {
                &self.0
            }

            fn captured_mut(&mut self) -> &mut Tensor {
                &mut self.0
            }
        }
    };
}
tuple_output!(A);
tuple_output!(A, B);
tuple_output!(A, B, C);
tuple_output!(A, B, C, D);

/// A module whose output is captured under the field's layer path: the Rust counterpart of a
/// PyTorch forward hook; and whose first positional input is captured under `PATH:input`, the
/// counterpart of a forward pre-hook. Interventions bound at either change what flows on.
///
/// `Hook<M>` implements tch's `Module` (and so `ModuleT`) when `M` does; for any other forward,
/// use [`call_with`](Self::call_with) (which sees the input) or [`call`](Self::call) (which does
/// not: its `:input` point never fires). It dereferences to `M`.
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
    input: Site,
}

impl<M: Hookable> Hook<M> {
    /// Wraps `module` in a capture site.
    pub fn new(module: M) -> Self {
        Hook {
            module,
            site: Site::default(),
            input: Site::default(),
        }
    }

    /// Runs any forward of the module; its output (the first tensor of a tuple) goes through
    /// this hook's interventions and is captured.
    ///
    /// `self.attn.call(|m| m.forward_masked(&x, &mask))`. The module's input is not seen: prefer
    /// [`call_with`](Self::call_with) where there is one.
    #[inline]
    pub fn call<R: CaptureOutput>(&self, forward: impl FnOnce(&M) -> R) -> R {
        let mut output = forward(&self.module);
        if let Some(edited) = self.site.apply(output.captured()) {
            *output.captured_mut() = edited;
        }
        output
    }

    /// Runs a forward of the module on `input`, its first positional argument: `input` goes
    /// through the `PATH:input` point (interventions, then captures) and the forward gets what
    /// comes out; the output then goes through the `PATH` point, as with [`call`](Self::call).
    ///
    /// `self.attn.call_with(&hidden, |m, x| m.forward(x, &mask))`
    #[inline]
    pub fn call_with<R: CaptureOutput>(&self, input: &Tensor, forward: impl FnOnce(&M, &Tensor) -> R) -> R {
        // One load of the switch for both points when nothing is on.
        if !crate::switch::busy() {
            return forward(&self.module, input);
        }
        let edited = self.input.apply(input);
        let mut output = forward(&self.module, edited.as_ref().unwrap_or(input));
        if let Some(edited) = self.site.apply(output.captured()) {
            *output.captured_mut() = edited;
        }
        output
    }

    /// `M`'s `forward_t`, captured. (An inherent method, since tch's blanket `ModuleT` impl for
    /// every `Module` rules out implementing both traits here.)
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor
    where
        M: nn::ModuleT,
    {
        self.call_with(xs, |m, x| m.forward_t(x, train))
    }

    /// Whether this hook's output or input (`PATH:input`) would be captured now
    /// ([`Site::is_capturing`]): lets a model skip a forward whose output nothing else uses.
    #[inline]
    #[must_use]
    pub fn is_capturing(&self) -> bool {
        self.site.is_capturing() || self.input.is_capturing()
    }

    /// The wrapped module.
    pub fn module(&self) -> &M {
        &self.module
    }

    /// The wrapped module, unwrapped.
    pub fn into_inner(self) -> M {
        self.module
    }

    /// This hook's capture site (its output).
    pub fn site(&self) -> &Site {
        &self.site
    }

    /// The site of the module's input (`PATH:input`).
    pub fn input_site(&self) -> &Site {
        &self.input
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
        self.call_with(xs, |m, x| m.forward(x))
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

    /// A point for a tensor that does not flow on, computed for capture alone (attention
    /// probabilities the fused kernel never forms): hand it over with
    /// [`observe`](Self::observe). Interventions on it are refused when they bind.
    #[must_use]
    pub fn observer() -> Self {
        HookPoint { site: Site::observer() }
    }

    /// Runs the interventions bound here on `x`, captures the result and returns it: what flows
    /// on. `x` itself when nothing is bound.
    #[inline]
    pub fn apply(&self, x: Tensor) -> Tensor {
        self.site.apply(&x).unwrap_or(x)
    }

    /// Captures `x`, a tensor that does not flow on (see [`observer`](Self::observer)).
    #[inline]
    pub fn observe(&self, x: &Tensor) {
        self.site.capture(x);
    }

    /// Whether a tensor applied here would be captured now ([`Site::is_capturing`]): lets a
    /// model compute a tensor only a capture uses (attention probabilities the fused kernel never
    /// forms) only when it is selected.
    #[inline]
    #[must_use]
    pub fn is_capturing(&self) -> bool {
        self.site.is_capturing()
    }

    /// This point's capture site.
    pub fn site(&self) -> &Site {
        &self.site
    }
}

impl<M: Hookable> LayerTree for Hook<M> {
    fn walk(&self, walker: &mut Walker<'_>) {
        walker.site(self.site());
        walker.input_site(self.input_site());
        self.module().walk(walker);
    }
}

impl<M: Hookable> Hookable for Hook<M> {
    const SCHEMA: &'static Schema = &Schema::Site { inner: Some(M::SCHEMA) };
    type Paths = HookPaths<M>;

    fn paths_at(prefix: Prefix) -> HookPaths<M> {
        HookPaths::new(&prefix)
    }
}

impl LayerTree for HookPoint {
    fn walk(&self, walker: &mut Walker<'_>) {
        walker.site(self.site());
    }
}

impl Hookable for HookPoint {
    const SCHEMA: &'static Schema = &Schema::Site { inner: None };
    type Paths = LayerPath;

    fn paths_at(prefix: Prefix) -> LayerPath {
        LayerPath::from(prefix.as_str().to_owned())
    }
}
