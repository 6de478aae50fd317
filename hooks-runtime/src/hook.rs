//! The capture sites a model places: [`Hook<M>`] around a module, the counterpart of a PyTorch
//! forward hook, and [`HookPoint`] for any intermediate tensor, the TransformerLens way.

use std::ops::Deref;

use tch::{nn, Tensor};

use crate::builder::HookPaths;
use crate::hookable::{Hookable, LayerTree, Walker};
use crate::path::{LayerPath, Prefix};
use crate::schema::Schema;
use crate::site::Site;

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

    /// Whether this hook's output would be captured now ([`Site::is_capturing`]): lets a model
    /// skip a forward whose output nothing else uses.
    #[inline]
    #[must_use]
    pub fn is_capturing(&self) -> bool {
        self.site.is_capturing()
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
