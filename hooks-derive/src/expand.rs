//! Generates `impl LayerTree`, `impl Hookable`, the typed path builder and the registry entry.
//!
//! Everything sits in `const _: () = { ... };`, so the builder struct (`{Type}Paths`) and the
//! imports never meet the user's names. Generated code names the `hooks` crate only through its
//! crate path (`::hooks` unless `#[hook(crate = "...")]`) and std only through `::core` paths, so it
//! compiles where the user shadows `Vec`, `Option`, `Box`, `Result` or `Sized`.

use proc_macro2::{Delimiter, Group, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::{GenericArgument, GenericParam, Ident, PathArguments, PathSegment, Type};

use crate::ast::{Container, Field};
use crate::bound;

/// `impl LayerTree`, `impl Hookable`, the typed path builder and the registry entry of a
/// struct with named fields.
pub fn expand_struct(cont: &Container<'_>, fields: &[Field<'_>], krate: &syn::Path) -> TokenStream {
    let ident = cont.ident;
    let name = ident.unraw().to_string();
    let paths_ident = format_ident!("{}Paths", ident);
    let in_tree: Vec<&Field<'_>> = fields.iter().filter(|field| !field.skipped()).collect();

    let bounded = bound::with_hookable_bounds(cont, krate);
    let (impl_generics, ty_generics, where_clause) = bounded.split_for_impl();

    let field_schemas = in_tree.iter().map(|field| {
        let segment = field.segment();
        let schema = probe(krate, field.ty, "SCHEMA");
        quote! {
            #krate::FieldSchema { name: #segment, schema: #schema }
        }
    });

    let walk_param = if in_tree.is_empty() {
        quote!(_walker)
    } else {
        quote!(walker)
    };
    let walks = in_tree.iter().map(|field| {
        let segment = field.segment();
        let walk = probe(krate, field.ty, "walk");
        let member = field.ident;
        let aliases = field.attrs.aliases.iter().map(|alias| alias.lit.value());
        quote! {
            walker.enter(#segment, |walker| #walk(&self.#member, walker));
            #(walker.alias(#aliases, |walker| #walk(&self.#member, walker));)*
        }
    });

    let paths_struct = paths_struct(cont, &bounded, &in_tree, &paths_ident, &name, krate);
    let (_, marker_value) = marker(cont, krate);

    // inventory needs one `static` per type; a generic type has no single tree to list.
    let registration = cont.generics.params.is_empty().then(|| {
        quote! {
            #krate::__private::inventory::submit! {
                #krate::Registration {
                    name: #name,
                    module_path: ::core::module_path!(),
                    schema: <#ident as #krate::Hookable>::SCHEMA,
                }
            }
        }
    });

    quote! {
        #[doc(hidden)]
        const _: () = {
            // The fallback of `Probe::<T>` for fields whose type is not `Hookable`.
            #[allow(unused_imports)]
            use #krate::__private::NotHookable as _;

            #[automatically_derived]
            impl #impl_generics #krate::LayerTree for #ident #ty_generics #where_clause {
                fn walk(&self, #walk_param: &mut #krate::Walker<'_>) {
                    #(#walks)*
                }
            }

            #[automatically_derived]
            impl #impl_generics #krate::Hookable for #ident #ty_generics #where_clause {
                const SCHEMA: &'static #krate::Schema = &#krate::Schema::Struct {
                    name: #name,
                    fields: &[#(#field_schemas),*],
                };

                type Paths = #paths_ident #ty_generics;

                fn paths_at(prefix: #krate::Prefix) -> Self::Paths {
                    #paths_ident { prefix, #marker_value }
                }
            }

            #paths_struct

            #registration
        };
    }
}

/// `{Type}Paths`: one method per field in the tree, returning that field's own typed paths.
fn paths_struct(
    cont: &Container<'_>,
    bounded: &syn::Generics,
    in_tree: &[&Field<'_>],
    paths_ident: &syn::Ident,
    name: &str,
    krate: &syn::Path,
) -> TokenStream {
    let (impl_generics, ty_generics, where_clause) = bounded.split_for_impl();

    // The builder takes the type's parameters without their bounds, so that naming it needs none;
    // `?Sized` so that it fits any parameter. The methods' impl has the bounds of the `Hookable`
    // impl, under which every field type is well-formed.
    let params: Vec<TokenStream> = cont
        .generics
        .params
        .iter()
        .map(|param| match param {
            GenericParam::Lifetime(param) => {
                let lifetime = &param.lifetime;
                quote!(#lifetime)
            }
            GenericParam::Type(param) => {
                let ident = &param.ident;
                quote!(#ident: ?::core::marker::Sized)
            }
            GenericParam::Const(param) => {
                let ident = &param.ident;
                let ty = &param.ty;
                quote!(const #ident: #ty)
            }
        })
        .collect();
    let (marker_field, marker_value) = marker(cont, krate);

    let struct_doc = format!(
        "Typed layer paths of `{name}`, one method per layer, so a misspelt layer is a compile error. \
         Start from `{name}::paths()`."
    );
    let methods = in_tree.iter().map(|field| path_method(field, krate));

    quote! {
        #[doc = #struct_doc]
        pub struct #paths_ident <#(#params),*> {
            prefix: #krate::Prefix,
            #marker_field
        }

        #[automatically_derived]
        impl <#(#params),*> ::core::clone::Clone for #paths_ident #ty_generics {
            fn clone(&self) -> Self {
                #paths_ident { prefix: ::core::clone::Clone::clone(&self.prefix), #marker_value }
            }
        }

        #[automatically_derived]
        impl <#(#params),*> ::core::fmt::Debug for #paths_ident #ty_generics {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_tuple(::core::stringify!(#paths_ident)).field(&self.prefix.as_str()).finish()
            }
        }

        // A method for a field that is not `Hookable` (a config, a tensor) is never callable:
        // its `for<'__hooks>` bound is false, and calling it says why. A method nobody calls is
        // not dead code the user could remove.
        #[allow(dead_code)]
        impl #impl_generics #paths_ident #ty_generics #where_clause {
            #(#methods)*
        }
    }
}

/// The builder's `PhantomData` field and its value, when the type has lifetimes or type
/// parameters (a struct must use them all); two empty streams otherwise.
fn marker(cont: &Container<'_>, krate: &syn::Path) -> (TokenStream, TokenStream) {
    let lifetimes = cont.generics.lifetimes().map(|param| &param.lifetime);
    let types = cont.generics.type_params().map(|param| &param.ident);
    if cont.generics.lifetimes().next().is_none() && cont.generics.type_params().next().is_none() {
        return (TokenStream::new(), TokenStream::new());
    }
    (
        // `fn() -> ...` keeps the builder `Send`, `Sync` and covariant whatever the parameters.
        quote!(marker: #krate::__private::PhantomData<fn() -> (#(&#lifetimes (),)* #(*const #types,)*)>,),
        quote!(marker: #krate::__private::PhantomData,),
    )
}

/// The builder method of one field: `encoder()`, or `layer(index)` for a `Vec` or array.
fn path_method(field: &Field<'_>, krate: &syn::Path) -> TokenStream {
    let member = field.ident;
    let segment = field.segment();
    let ty = field.ty;
    // The `for<'__hooks>` binder makes the bound legal even when it is false for a concrete type,
    // so the impl compiles and only a call reports the missing `Hookable`.
    if let Some(elem) = seq_elem(ty) {
        let paths_at = paths_at(krate, elem, &quote!(self.prefix.child(#segment).child(index)));
        let doc = format!("The layer paths of element `index` of `{segment}`: `{segment}.{{index}}`.");
        quote! {
            #[doc = #doc]
            #[must_use]
            pub fn #member(&self, index: ::core::primitive::usize) -> <#elem as #krate::Hookable>::Paths
            where
                for<'__hooks> #elem: #krate::Hookable,
            {
                #paths_at
            }
        }
    } else {
        let paths_at = paths_at(krate, ty, &quote!(self.prefix.child(#segment)));
        let doc = format!("The layer paths under `{segment}`.");
        quote! {
            #[doc = #doc]
            #[must_use]
            pub fn #member(&self) -> <#ty as #krate::Hookable>::Paths
            where
                for<'__hooks> #ty: #krate::Hookable,
            {
                #paths_at
            }
        }
    }
}

/// The element type of a field that is syntactically `Vec<E>` or `[E; N]`, whose builder method
/// takes the index directly (`layer(3)` rather than `layer().at(3)`).
fn seq_elem(ty: &Type) -> Option<&Type> {
    match ty {
        Type::Array(array) => Some(&array.elem),
        Type::Group(group) => seq_elem(&group.elem),
        Type::Paren(paren) => seq_elem(&paren.elem),
        Type::Path(path) if path.qself.is_none() => {
            let segments: Vec<&PathSegment> = path.path.segments.iter().collect();
            let [modules @ .., last] = segments.as_slice() else {
                return None;
            };
            let modules: Vec<String> = modules
                .iter()
                .map(|segment| segment.arguments.is_none().then(|| segment.ident.to_string()))
                .collect::<Option<_>>()?;
            let modules: Vec<&str> = modules.iter().map(String::as_str).collect();
            if last.ident != "Vec" || !matches!(modules.as_slice(), [] | ["vec"] | ["std" | "alloc", "vec"]) {
                return None;
            }
            let PathArguments::AngleBracketed(args) = &last.arguments else {
                return None;
            };
            match args.args.iter().collect::<Vec<_>>().as_slice() {
                [GenericArgument::Type(elem)] => Some(elem),
                _ => None,
            }
        }
        _ => None,
    }
}

/// `Probe::<Ty>::{item}`, spanned from the first to the last token of `ty`.
///
/// An error about `ty` in the generated code (most often: `Hook<M>` where `M` is not `Hookable`)
/// then points at the field's type, exactly where rustc reports the same error for the field
/// itself, and rustc shows the two as one. With the derive's own span it would be a second error,
/// on `#[derive(Hookable)]`.
fn probe(krate: &syn::Path, ty: &Type, item: &str) -> TokenStream {
    let (first, last) = outer_spans(ty);
    let krate = respan(krate.to_token_stream(), first);
    let item = Ident::new(item, last);
    let head = quote_spanned!(first=> #krate::__private::Probe::<);
    let tail = quote_spanned!(last=> >::#item);
    quote!(#head #ty #tail)
}

/// `<Ty as Hookable>::paths_at(prefix)`, the whole call spanned like `ty` for the reason given at
/// [`probe`] (a call's span runs to its closing parenthesis, so the arguments' group is respanned).
fn paths_at(krate: &syn::Path, ty: &Type, prefix: &TokenStream) -> TokenStream {
    let (first, last) = outer_spans(ty);
    let krate = respan(krate.to_token_stream(), last);
    let head = quote_spanned!(first=> <);
    let tail = quote_spanned!(last=> as #krate::Hookable>::paths_at);
    let mut args = Group::new(Delimiter::Parenthesis, prefix.clone());
    args.set_span(last);
    quote!(#head #ty #tail #args)
}

/// The spans of the first and last tokens of `ty` (one group's span for `[T; N]` or `(A, B)`).
fn outer_spans(ty: &Type) -> (Span, Span) {
    let tokens: Vec<TokenTree> = ty.to_token_stream().into_iter().collect();
    let first = tokens.first().map_or_else(Span::call_site, TokenTree::span);
    let last = tokens.last().map_or(first, TokenTree::span);
    (first, last)
}

/// `tokens` with every span set to `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            if let TokenTree::Group(group) = &token {
                let mut respanned = Group::new(group.delimiter(), respan(group.stream(), span));
                respanned.set_span(span);
                token = TokenTree::Group(respanned);
            } else {
                token.set_span(span);
            }
            token
        })
        .collect()
}
