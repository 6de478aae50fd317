//! `#[derive(Hookable)]` for the `hooks` framework. Use it through the `hooks` crate, which
//! re-exports it and documents it with runnable examples.
//!
//! The derive reads the struct (`ast`) and its `#[hook(...)]` attributes (`attr`), checks them
//! (`check`), infers bounds (`bound`) and generates code (`expand`); every error goes into one
//! context (`ctxt`) and is reported together with an impl that keeps the rest of the crate
//! compiling (`fallback`).

mod ast;
mod attr;
mod bound;
mod check;
mod ctxt;
mod expand;
mod fallback;

use proc_macro::TokenStream;
use syn::{parse_macro_input, DeriveInput};

/// Derives `hooks::Hookable` for a struct with named fields: its layer tree, a typed path
/// builder and an entry in `hooks::registry()`.
///
/// Each field whose type is `Hookable` is a layer named after the field: `Hook<M>` and
/// `HookPoint` fields are capture sites, derived structs nest, and `Vec`, arrays, `Option` and
/// `Box` of those add indices or nothing, the way PyTorch's `named_modules()` names modules.
/// Other fields (configs, tensors) are not part of the tree. A unit struct has no layers.
///
/// ```ignore
/// use hooks::{Hook, HookPoint, Hookable};
/// use tch::nn;
///
/// #[derive(Hookable)]
/// struct Block {
///     attention: Hook<nn::Linear>,  // `attention`
///     resid: HookPoint,             // `resid`
///     dropout: f64,                 // not a layer
/// }
///
/// #[derive(Hookable)]
/// struct Model {
///     layer: Vec<Hook<Block>>,      // `layer.0`, `layer.0.attention`, `layer.0.resid`, ...
///     pooler: Option<Hook<nn::Linear>>,  // `pooler`, when `Some`
/// }
///
/// let path = Model::paths().layer(3).attention().path();  // `layer.3.attention`
/// let same = hooks::layer!(Model, "layer.3.attention");    // checked at compile time
/// ```
///
/// The derive generates:
///
/// - `impl Hookable`, with the type's static layer tree (`SCHEMA`) that `hooks::layer!` checks
///   paths against, and a `walk` over an instance's capture sites (`layer_names()` lists them).
/// - The typed path builder `{Type}Paths`, returned by `Type::paths()`: one method per field,
///   named after the field; a `Vec` or array field's method takes the index.
/// - For a type without generic parameters, an entry in `hooks::registry()`.
///
/// A type parameter used in a field gets a `Hookable` bound on the generated impls.
///
/// # `#[hook(rename = "...")]`
///
/// On a field: its layer-path segment, when it differs from the field's name (PyTorch's names
/// are not always Rust names). It must be one segment: not empty, no `.`. A raw name such as
/// `r#type` is the segment `type` without any rename.
///
/// ```ignore
/// #[derive(Hookable)]
/// struct Output {
///     dense: Hook<nn::Linear>,
///     #[hook(rename = "LayerNorm")]
///     layer_norm: Hook<nn::LayerNorm>,  // `LayerNorm`
/// }
/// ```
///
/// # `#[hook(skip)]`
///
/// On a field: leave it out of the layer tree, even if its type is `Hookable`. A skipped field
/// has no builder method and no bound, and cannot also be renamed.
///
/// ```ignore
/// #[derive(Hookable)]
/// struct Model {
///     encoder: Encoder,
///     #[hook(skip)]
///     teacher: Encoder,  // not captured
/// }
/// ```
///
/// # `#[hook(crate = "...")]`
///
/// On the struct: the path generated code names the `hooks` crate by, `::hooks` by default. Use
/// it when `hooks` is a dependency under another name, or is reached through a re-export.
///
/// ```ignore
/// #[derive(Hookable)]
/// #[hook(crate = "my_framework::hooks")]
/// struct Model {
///     head: Hook<nn::Linear>,
/// }
/// ```
///
/// # Errors
///
/// An enum, a union or a tuple struct, an unknown or repeated key, a `rename` that is not one
/// segment, and two fields with the same segment are compile errors, all reported at once.
#[proc_macro_derive(Hookable, attributes(hook))]
pub fn derive_hookable(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input).into()
}
