//! What the derive emits when the input has errors: the errors, and an impl that keeps the rest
//! of the user's crate compiling, so that the errors are the only ones reported.

use proc_macro2::TokenStream;
use quote::quote;
use syn::ext::IdentExt;

use crate::ast::Container;
use crate::expand;

/// Every error as a `compile_error!`, plus an impl of `Hookable`.
///
/// For a struct whose attributes are wrong, the impl is the normal one, read as far as the
/// attributes could be (a rejected `rename` leaves the field's own name): then
/// `Model::paths().encoder()` and `hooks::layer!` keep working and add no errors of their own,
/// which a stub could not do. For an unsupported shape it is [`stub`]. When the crate path itself
/// is unreadable there is nothing to name the trait by, so only the errors are emitted.
pub fn expand(cont: &Container<'_>, krate: Option<&syn::Path>, errors: &syn::Error) -> TokenStream {
    let mut out = errors.to_compile_error();
    if let Some(krate) = krate {
        out.extend(expand::expand(cont, krate));
    }
    out
}

/// An impl of `Hookable` with no layers, for an enum, union or tuple struct, so that using the
/// type (in a `Hook<...>` field, say) does not add errors to the one about its shape.
pub fn stub(cont: &Container<'_>, krate: &syn::Path) -> TokenStream {
    let ident = cont.ident;
    let name = ident.unraw().to_string();
    let (impl_generics, ty_generics, where_clause) = cont.generics.split_for_impl();
    quote! {
        #[doc(hidden)]
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #krate::Hookable for #ident #ty_generics #where_clause {
                const SCHEMA: &'static #krate::Schema = &#krate::Schema::Struct { name: #name, fields: &[] };

                type Paths = #krate::NoLayers;

                fn paths_at(_prefix: #krate::Prefix) -> #krate::NoLayers {
                    #krate::NoLayers
                }

                fn walk(&self, _walker: &mut #krate::Walker<'_>) {}
            }
        };
    }
}
