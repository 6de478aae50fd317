//! Infers the `Hookable` bounds of a generic struct's impls, the way serde infers `Serialize`.
//!
//! Whether a field joins the layer tree is decided by `Probe::<FieldTy>`, which needs to know
//! whether `FieldTy: Hookable`. For a field of type `A` (or `Vec<Hook<A>>`) that is only known
//! when `A: Hookable` is in the impl's bounds, so each type parameter that appears in a field in
//! the tree gets that bound.

use std::collections::BTreeSet;

use syn::visit::{self, Visit};
use syn::{parse_quote, GenericParam, Generics, Ident, TypePath};

use crate::ast::Container;

/// `cont`'s generics, with `Param: Hookable` added for each type parameter used by a field in the
/// tree. The user's own bounds, where-clauses, lifetimes and const generics are kept.
pub fn with_hookable_bounds(cont: &Container<'_>, krate: &syn::Path) -> Generics {
    let params: BTreeSet<&Ident> = cont
        .generics
        .params
        .iter()
        .filter_map(|param| match param {
            GenericParam::Type(param) => Some(&param.ident),
            _ => None,
        })
        .collect();
    let mut used = Used {
        params: &params,
        found: BTreeSet::new(),
    };
    for field in cont.fields().iter().filter(|field| !field.skipped()) {
        used.visit_type(field.ty);
    }

    let mut generics = cont.generics.clone();
    // Walk the parameters in declaration order so the bounds read in that order too.
    let bounded: Vec<Ident> = cont
        .generics
        .type_params()
        .filter(|param| used.found.contains(&param.ident))
        .map(|param| param.ident.clone())
        .collect();
    let where_clause = generics.make_where_clause();
    for ident in bounded {
        where_clause.predicates.push(parse_quote!(#ident: #krate::Hookable));
    }
    generics
}

/// Finds which of `params` a type mentions.
struct Used<'p> {
    params: &'p BTreeSet<&'p Ident>,
    found: BTreeSet<Ident>,
}

impl<'ast> Visit<'ast> for Used<'_> {
    fn visit_type_path(&mut self, ty: &'ast TypePath) {
        // `PhantomData<A>` holds no `A` to walk, so it needs no bound (serde skips it too).
        if ty.qself.is_none()
            && ty
                .path
                .segments
                .last()
                .is_some_and(|segment| segment.ident == "PhantomData")
        {
            return;
        }
        if ty.qself.is_none() && ty.path.leading_colon.is_none() {
            if let Some(first) = ty.path.segments.first() {
                if self.params.contains(&first.ident) {
                    self.found.insert(first.ident.clone());
                }
            }
        }
        visit::visit_type_path(self, ty);
    }
}
