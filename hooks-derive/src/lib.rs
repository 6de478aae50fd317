//! `#[derive(Hookable)]` for the `hooks` framework. Use it through the `hooks` crate, which
//! re-exports it and documents it with runnable examples.
//!
//! The derive reads the struct (`ast`) and its `#[hook(...)]` attributes (`attr`), checks them
//! (`check`), infers bounds (`bound`) and generates code (`expand`); every error goes into one
//! context (`ctxt`) and is reported together with impls that keep the rest of the crate
//! compiling (the normal ones, or `fallback`'s stub for a shape the derive does not support).
//! `derive` below is the only place that chooses between them, so `expand` and `fallback` never
//! import each other.

mod ast;
mod attr;
mod bound;
mod check;
mod ctxt;
mod expand;
mod fallback;

use proc_macro::TokenStream;
use syn::{parse_macro_input, DeriveInput};

use crate::ast::{Container, Data};
use crate::ctxt::Ctxt;

/// Derives `hooks::Hookable` and `hooks::LayerTree` for a struct with named fields: its layer
/// tree, a typed path builder and an entry in `hooks::registry()`.
///
/// Use it through the `hooks` crate. The reference for what it generates and for each attribute
/// (`rename`, `skip`, `crate`), with runnable examples, is the documentation of `hooks::Hookable`
/// (the derive macro), kept in one place there.
#[proc_macro_derive(Hookable, attributes(hook))]
pub fn derive_hookable(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    derive(&input).into()
}

/// The whole derive: read, check, then generate, or report every error with an impl that keeps
/// the rest of the user's crate compiling.
fn derive(input: &DeriveInput) -> proc_macro2::TokenStream {
    let cx = Ctxt::new();
    let cont = Container::from_ast(&cx, input);
    check::check(&cx, &cont);
    let errors = cx.check().err();
    let Some(krate) = cont.attrs.crate_path() else {
        // A crate path that does not parse is an error, so `errors` has it; with nothing to
        // name the traits by, the errors are all there is to emit.
        return errors.map(|e| e.to_compile_error()).unwrap_or_default();
    };
    // For a struct whose attributes are wrong, the impls are the normal ones, read as far as the
    // attributes could be (a rejected `rename` leaves the field's own name): then
    // `Model::paths().encoder()` and `hooks::layer!` keep working and add no errors of their own,
    // which a stub could not do. An unsupported shape gets the stub.
    let impls = match &cont.data {
        Data::Struct(fields) => expand::expand_struct(&cont, fields, &krate),
        Data::Unsupported => fallback::stub(&cont, &krate),
    };
    match errors {
        Some(errors) => {
            let mut out = errors.to_compile_error();
            out.extend(impls);
            out
        }
        None => impls,
    }
}
