//! Pass-through stand-ins for [`hooks::Hook`] and [`hooks::HookPoint`], swapped in by the
//! `uninstrumented` feature: the same constructors and forwards, and no capture site at all.
//!
//! They exist to measure what capture sites cost. With them, `Bert` and `Gpt2` are built from the
//! very same source as the instrumented models and run the very same tensor ops, but their
//! forward never reaches the capture switch; the benchmark (`make bench`, see BENCHMARKS.md)
//! compares the two. The layer tree of a model built this way is empty: there is nothing to
//! capture.

use std::ops::Deref;

use hooks::{Hookable, LayerTree, Prefix, Schema, Walker};
use tch::{nn, Tensor};

/// `hooks::Hook<M>` without its capture site: `M`, with the same forward.
#[derive(Debug, Clone)]
pub struct Hook<M>(M);

impl<M> Hook<M> {
    /// Wraps `module`.
    pub fn new(module: M) -> Self {
        Hook(module)
    }

    /// Never: there is no capture site.
    #[inline]
    #[must_use]
    pub fn is_capturing(&self) -> bool {
        false
    }

    /// Runs any forward of the module; nothing is captured.
    #[inline]
    pub fn call<R>(&self, forward: impl FnOnce(&M) -> R) -> R {
        forward(&self.0)
    }

    /// Runs a forward of the module on `input`; nothing is captured or changed.
    #[inline]
    pub fn call_with<R>(&self, input: &Tensor, forward: impl FnOnce(&M, &Tensor) -> R) -> R {
        forward(&self.0, input)
    }

    /// The wrapped module.
    #[inline]
    pub fn module(&self) -> &M {
        &self.0
    }
}

impl<M> Deref for Hook<M> {
    type Target = M;

    fn deref(&self) -> &M {
        &self.0
    }
}

impl<M: nn::Module> nn::Module for Hook<M> {
    fn forward(&self, xs: &Tensor) -> Tensor {
        self.0.forward(xs)
    }
}

/// Transparent: the module's own tree (its fields' sites, of which a model built with the feature
/// has none), with no site of its own.
impl<M: LayerTree> LayerTree for Hook<M> {
    fn walk(&self, walker: &mut Walker<'_>) {
        self.0.walk(walker);
    }
}

impl<M: Hookable> Hookable for Hook<M> {
    const SCHEMA: &'static Schema = M::SCHEMA;
    type Paths = M::Paths;

    fn paths_at(prefix: Prefix) -> M::Paths {
        M::paths_at(prefix)
    }
}

/// `hooks::HookPoint` without its capture site: `apply` returns its input, nothing is captured.
#[derive(Debug, Clone, Default)]
pub struct HookPoint;

impl HookPoint {
    /// A point with no capture site.
    #[must_use]
    pub fn new() -> Self {
        HookPoint
    }

    /// Never: there is no capture site.
    #[inline]
    #[must_use]
    pub fn is_capturing(&self) -> bool {
        false
    }

    /// A point with no capture site.
    #[must_use]
    pub fn observer() -> Self {
        HookPoint
    }

    /// Returns `x`.
    #[inline]
    pub fn apply(&self, x: Tensor) -> Tensor {
        x
    }

    /// Nothing: there is no capture site.
    #[inline]
    pub fn observe(&self, _x: &Tensor) {}
}

impl LayerTree for HookPoint {
    fn walk(&self, _walker: &mut Walker<'_>) {}
}

impl Hookable for HookPoint {
    const SCHEMA: &'static Schema = &Schema::Leaf { name: "HookPoint" };
    type Paths = hooks::NoLayers;

    fn paths_at(_prefix: Prefix) -> hooks::NoLayers {
        hooks::NoLayers
    }
}
