//! The stub impls the derive emits, next to its error, for a shape it does not support (an enum,
//! a union, a tuple struct): they keep the rest of the user's crate compiling, so that the error
//! is the only one reported.

use proc_macro2::TokenStream;
use quote::quote;
use syn::ext::IdentExt;

use crate::ast::Container;

/// Impls of `LayerTree` and `Hookable` with no layers, for an enum, union or tuple struct, so that
/// using the type (in a `Hook<...>` field, say) does not add errors to the one about its shape.
pub fn stub(cont: &Container<'_>, krate: &syn::Path) -> TokenStream {
    let ident = cont.ident;
    let name = ident.unraw().to_string();
    let (impl_generics, ty_generics, where_clause) = cont.generics.split_for_impl();
    quote! {
        #[doc(hidden)]
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #krate::LayerTree for #ident #ty_generics #where_clause {
                fn walk(&self, _walker: &mut #krate::Walker<'_>) {}
            }

            #[automatically_derived]
            impl #impl_generics #krate::Hookable for #ident #ty_generics #where_clause {
                const SCHEMA: &'static #krate::Schema = &#krate::Schema::Struct { name: #name, fields: &[] };

                type Paths = #krate::NoLayers;

                fn paths_at(_prefix: #krate::Prefix) -> #krate::NoLayers {
                    #krate::NoLayers
                }
            }
        };
    }
}
