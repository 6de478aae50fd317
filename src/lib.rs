//! See inside tch (libtorch) models: capture intermediate activations by PyTorch-style layer
//! paths, checked at compile time, and save them as `.npz` files numpy reads exactly.
//!
//! This crate is the facade: it re-exports the runtime ([`hooks_runtime`]) and the derive
//! ([`hooks_derive`]), so one dependency and `use hooks::{Hookable, Hook, HookPoint};` suffice.

/// Runnable examples of `#[derive(Hookable)]`; the reference for each attribute follows them.
///
/// # A model
///
/// ```
/// use hooks::{Hook, HookPoint, Hookable};
/// use tch::{nn, Device};
///
/// #[derive(Hookable)]
/// struct Block {
///     attention: Hook<nn::Linear>,
///     resid: HookPoint,
///     dropout: f64, // not a layer
/// }
///
/// #[derive(Hookable)]
/// struct Model {
///     layer: Vec<Hook<Block>>,
///     pooler: Option<Hook<nn::Linear>>,
/// }
///
/// let vs = nn::VarStore::new(Device::Cpu);
/// let block = |i: usize| {
///     Hook::new(Block {
///         attention: Hook::new(nn::linear(vs.root() / "layer" / i / "attention", 4, 4, Default::default())),
///         resid: HookPoint::new(),
///         dropout: 0.1,
///     })
/// };
/// let model = Model { layer: vec![block(0), block(1)], pooler: None };
///
/// assert_eq!(
///     model.layer_names(),
///     ["layer.0", "layer.0.attention", "layer.0.resid", "layer.1", "layer.1.attention", "layer.1.resid"]
/// );
/// assert_eq!(Model::SCHEMA.templates(), ["layer.*", "layer.*.attention", "layer.*.resid", "pooler"]);
///
/// // The typed builder and `layer!` name the same layer; a typo in either fails to compile.
/// assert_eq!(Model::paths().layer(1).attention().path(), hooks::layer!(Model, "layer.1.attention"));
/// ```
///
/// # `rename` and `skip`
///
/// ```
/// use hooks::{Hook, HookPoint, Hookable};
/// use tch::{nn, Device};
///
/// #[derive(Hookable)]
/// struct Output {
///     dense: Hook<nn::Linear>,
///     #[hook(rename = "LayerNorm")]
///     layer_norm: Hook<nn::LayerNorm>,
///     #[hook(skip)]
///     debug: HookPoint,
/// }
///
/// let vs = nn::VarStore::new(Device::Cpu);
/// let output = Output {
///     dense: Hook::new(nn::linear(vs.root() / "dense", 4, 4, Default::default())),
///     layer_norm: Hook::new(nn::layer_norm(vs.root() / "LayerNorm", vec![4], Default::default())),
///     debug: HookPoint::new(),
/// };
/// assert_eq!(output.layer_names(), ["dense", "LayerNorm"]);
/// assert_eq!(Output::paths().layer_norm().path(), hooks::layer!(Output, "LayerNorm"));
/// ```
///
/// # `crate`
///
/// ```
/// // `hooks` reached under another name, as through a re-export.
/// extern crate hooks as my_hooks;
///
/// #[derive(my_hooks::Hookable)]
/// #[hook(crate = "my_hooks")]
/// struct Probe {
///     point: my_hooks::HookPoint,
/// }
///
/// # use my_hooks::Hookable as _;
/// assert_eq!(Probe { point: my_hooks::HookPoint::new() }.layer_names(), ["point"]);
/// ```
pub use hooks_derive::Hookable;
pub use hooks_runtime::*;

/// What generated code names. Not public API.
#[doc(hidden)]
pub use hooks_runtime::__private;

/// A [`LayerPath`] checked against `Model`'s layer tree at compile time.
///
/// A segment that names nothing, an index past a fixed-size array's length, or a path that ends
/// on something other than a capture site is a compile error naming the bad segment and the
/// valid names at that level. `Vec` indices are checked when a store binds to a model instance.
///
/// ```
/// use hooks::{Hook, HookPoint, Hookable};
/// use tch::nn;
///
/// #[derive(Hookable)]
/// struct Layer {
///     attention: Hook<nn::Linear>,
///     heads: [HookPoint; 4],
/// }
///
/// #[derive(Hookable)]
/// struct Encoder {
///     layer: Vec<Hook<Layer>>,
/// }
///
/// let path = hooks::layer!(Encoder, "layer.3.heads.0");
/// assert_eq!(path.as_str(), "layer.3.heads.0");
/// ```
///
/// ```compile_fail
/// # use hooks::{Hook, HookPoint, Hookable};
/// # #[derive(Hookable)]
/// # struct Layer { heads: [HookPoint; 4] }
/// // There are four heads: `heads.4` is out of range.
/// let path = hooks::layer!(Layer, "heads.4");
/// ```
#[macro_export]
macro_rules! layer {
    ($model:ty, $path:literal $(,)?) => {{
        const __HOOKS_LAYER: $crate::LayerPath =
            $crate::__private::check_layer_path(<$model as $crate::Hookable>::SCHEMA, $path);
        __HOOKS_LAYER
    }};
}
