//! See inside tch (libtorch) models: capture intermediate activations by PyTorch-style layer
//! paths, checked at compile time, and save them as `.npz` files numpy reads exactly.
//!
//! This crate is the facade: it re-exports the runtime ([`hooks_runtime`]) and the derive
//! ([`hooks_derive`]), so one dependency and `use hooks::{Hookable, Hook, HookPoint};` suffice.

/// `#[derive(Hookable)]`: gives every layer of a model struct its PyTorch path. This is the
/// reference for the derive and its attributes.
///
/// Each field whose type is `Hookable` is a layer named after the field: `Hook<M>` and
/// `HookPoint` fields are capture sites, derived structs nest, and `Vec`, arrays, `Option` and
/// `Box` of those add indices or nothing, the way PyTorch's `named_modules()` names modules.
/// Other fields (configs, tensors, sizes) are not part of the tree. A unit struct has no layers.
///
/// The derive generates:
///
/// - `impl LayerTree`: a `walk` over an instance's capture sites, so that `layer_names()` lists
///   them and an [`ActivationStore`] binds to them. This trait is object-safe: code that handles
///   any architecture holds a `&dyn LayerTree`.
/// - `impl Hookable`: the type's static layer tree (`SCHEMA`), which [`layer!`] checks paths
///   against at compile time, and the typed path builder `{Type}Paths` returned by
///   `Type::paths()`, with one method per field, named after the field (a `Vec` or array field's
///   method takes the index).
/// - For a type without generic parameters, an entry in [`registry()`].
///
/// A type parameter used in a field gets a `Hookable` bound on the generated impls.
///
/// # A model
///
/// ```
/// use hooks::{Hook, HookPoint, Hookable, LayerTree};
/// use tch::{nn, Device};
///
/// #[derive(Hookable)]
/// struct Block {
///     attention: Hook<nn::Linear>, // `layer.N.attention`
///     resid: HookPoint,            // `layer.N.resid`
///     dropout: f64,                // not a layer
/// }
///
/// #[derive(Hookable)]
/// struct Model {
///     layer: Vec<Hook<Block>>,           // `layer.N`
///     pooler: Option<Hook<nn::Linear>>,  // `pooler`, when `Some`
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
///
/// // Any model, behind the object-safe half of the trait.
/// let any: &dyn LayerTree = &model;
/// assert_eq!(any.layer_names().len(), 6);
/// ```
///
/// # `#[hook(rename = "...")]`
///
/// On a field: its layer-path segment, when it differs from the field's name (PyTorch's names
/// are not always Rust names: `LayerNorm`, `self`). It must be one segment: not empty, no `.`. A
/// raw name such as `r#type` is the segment `type` without any rename.
///
/// # `#[hook(skip)]`
///
/// On a field: leave it out of the layer tree, even if its type is `Hookable`. A skipped field
/// has no builder method and no bound, and cannot also be renamed.
///
/// ```
/// use hooks::{Hook, HookPoint, Hookable, LayerTree};
/// use tch::{nn, Device};
///
/// #[derive(Hookable)]
/// struct Output {
///     dense: Hook<nn::Linear>,
///     #[hook(rename = "LayerNorm")]
///     layer_norm: Hook<nn::LayerNorm>, // `LayerNorm`
///     #[hook(skip)]
///     debug: HookPoint,                // not captured
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
/// # `#[hook(alias = "...")]`
///
/// On a field (repeatable): another name its layers answer to, for names that Python code
/// spells two ways. `alias = "embed_out"` makes `embed_out` reach the field `lm_head`; the empty
/// alias `alias = ""` makes the field's layers answer without its segment, as `GPT2Model`'s
/// names (`h.0.mlp`) are `GPT2LMHeadModel`'s without `transformer.`. An alias is one segment or
/// empty, and is not another field's segment. The empty alias does not name the field's own
/// output (`GPT2Model` has no name for itself). A layer's own name wins over an alias, and a name
/// that aliases give two different layers names neither.
///
/// Aliases are resolved at run time, by [`ActivationStore`] and [`Interventions`], for names and
/// for globs that match no layer's own name; what is captured is keyed by the name asked for.
/// Listings show the layers' own names ([`LayerTree::layer_names`]; the others are
/// [`LayerTree::alias_names`]), and [`layer!`] and the typed builder know only those.
///
/// ```
/// use hooks::{ActivationStore, Hook, Hookable, LayerTree};
/// use tch::{nn, nn::Module, Device, Tensor};
///
/// #[derive(Hookable)]
/// struct Body {
///     fc: Hook<nn::Linear>,
/// }
///
/// #[derive(Hookable)]
/// struct WithHead {
///     #[hook(alias = "")]
///     body: Hook<Body>,       // `body`, and `body.fc` also as `fc`
///     #[hook(alias = "out")]
///     head: Hook<nn::Linear>, // `head`, also as `out`
/// }
///
/// let vs = nn::VarStore::new(Device::Cpu);
/// let model = WithHead {
///     body: Hook::new(Body { fc: Hook::new(nn::linear(vs.root() / "fc", 4, 4, Default::default())) }),
///     head: Hook::new(nn::linear(vs.root() / "head", 4, 2, Default::default())),
/// };
/// assert_eq!(model.layer_names(), ["body", "body.fc", "head"]);
/// assert_eq!(model.alias_names(), ["fc", "fc:input", "out", "out:input"]);
///
/// let store = ActivationStore::new(&model, ["fc", "body.fc", "out"])?;
/// store.enable();
/// let x = Tensor::ones([1, 4], (tch::Kind::Float, Device::Cpu));
/// let hidden = model.body.call_with(&x, |body, x| body.fc.forward(x));
/// let _logits = model.head.forward(&hidden);
/// assert_eq!(store.get("fc").unwrap(), store.get("body.fc").unwrap());
/// assert_eq!(store.get("out").unwrap().size(), [1, 2]);
/// # Ok::<(), hooks::Error>(())
/// ```
///
/// # `#[hook(crate = "...")]`
///
/// On the struct: the path generated code names the `hooks` crate by, `::hooks` by default. Use
/// it when `hooks` is a dependency under another name, or is reached through a re-export.
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
/// # use my_hooks::LayerTree as _;
/// assert_eq!(Probe { point: my_hooks::HookPoint::new() }.layer_names(), ["point"]);
/// ```
///
/// # Errors
///
/// An enum, a union or a tuple struct, an unknown or repeated key, a `rename` that is not one
/// segment, a `rename` or `alias` on a skipped field, an `alias` with a `.`, repeated, or equal
/// to a field's segment, and two fields with the same segment are compile
/// errors, all reported at once, each on the offending token (`tests/ui/` holds one case each).
///
/// ```compile_fail
/// #[derive(hooks::Hookable)]
/// struct Heads(hooks::HookPoint); // a tuple struct: fields need names to be layers
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
        // A `panic!` here, in a `const`, is the compile error: its message names the bad segment.
        const __HOOKS_LAYER: $crate::LayerPath = {
            if let ::core::option::Option::Some(error) =
                $crate::__private::check_layer_path(<$model as $crate::Hookable>::SCHEMA, $path)
            {
                ::core::panic!("{}", error.message());
            }
            $crate::LayerPath::from_static($path)
        };
        __HOOKS_LAYER
    }};
}
