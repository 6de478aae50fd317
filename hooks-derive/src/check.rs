//! Checks that what the attributes say makes a well-formed layer tree.

use std::collections::HashMap;

use quote::ToTokens;

use crate::ast::{Container, Field};
use crate::attr::{ALIAS, RENAME, SKIP};
use crate::ctxt::Ctxt;

/// Reports every problem with `cont`'s fields into `cx`.
pub fn check(cx: &Ctxt, cont: &Container<'_>) {
    for field in cont.fields() {
        check_rename(cx, field);
        check_aliases(cx, field);
    }
    check_unique_segments(cx, cont);
}

/// An alias is one segment, or empty (the field's layers answer without its segment); it is on
/// a field in the tree, differs from every field's segment and is given once.
fn check_aliases(cx: &Ctxt, field: &Field<'_>) {
    let segment = field.segment();
    for (i, alias) in field.attrs.aliases.iter().enumerate() {
        let value = alias.lit.value();
        if field.skipped() {
            cx.error_spanned_by(
                &alias.key,
                format!("`{ALIAS}` has no effect on a field marked `{SKIP}`; remove one of them"),
            );
        } else if value.contains('.') {
            cx.error_spanned_by(
                &alias.lit,
                format!(
                    "`{ALIAS}` value `{value}` contains `.`, but it stands for one layer-path segment; \
                     use a name without `.`, or `\"\"` for the field's layers without its segment"
                ),
            );
        } else if value == segment {
            cx.error_spanned_by(
                &alias.lit,
                format!("`{ALIAS}` `{value}` is the field's own layer-path segment; remove it"),
            );
        } else if field.attrs.aliases[..i].iter().any(|a| a.lit.value() == value) {
            cx.error_spanned_by(&alias.lit, format!("duplicate `{ALIAS}` `{value}`; keep only one"));
        }
    }
}

/// A `rename` must be one non-empty segment, on a field that is in the tree.
fn check_rename(cx: &Ctxt, field: &Field<'_>) {
    let Some(rename) = &field.attrs.rename else {
        return;
    };
    if field.skipped() {
        cx.error_spanned_by(
            &rename.key,
            format!("`{RENAME}` has no effect on a field marked `{SKIP}`; remove one of them"),
        );
    }
    let value = rename.lit.value();
    if value.is_empty() {
        cx.error_spanned_by(
            &rename.lit,
            format!("empty `{RENAME}`; a layer-path segment needs a name, like `{RENAME} = \"LayerNorm\"`"),
        );
    } else if value.contains('.') {
        cx.error_spanned_by(
            &rename.lit,
            format!(
                "`{RENAME}` value `{value}` contains `.`, but it names one layer-path segment; \
                 use a name without `.`, and nest a struct to add a level"
            ),
        );
    }
}

/// Two fields of one struct may not end on the same layer path, and an alias may not be another
/// field's segment.
fn check_unique_segments(cx: &Ctxt, cont: &Container<'_>) {
    let in_tree: Vec<&Field<'_>> = cont.fields().iter().filter(|field| !field.skipped()).collect();
    for field in &in_tree {
        for alias in &field.attrs.aliases {
            let value = alias.lit.value();
            if let Some(other) = in_tree.iter().find(|o| o.segment() == value && o.ident != field.ident) {
                cx.error_spanned_by(
                    &alias.lit,
                    format!(
                        "`{ALIAS}` `{value}` is the layer-path segment of field `{}`; choose another alias",
                        other.ident.to_token_stream()
                    ),
                );
            }
        }
    }
    let mut first_with: HashMap<String, &Field<'_>> = HashMap::new();
    for field in cont.fields().iter().filter(|field| !field.skipped()) {
        let segment = field.segment();
        let Some(first) = first_with.get(&segment) else {
            first_with.insert(segment, field);
            continue;
        };
        let message = format!(
            "fields `{}` and `{}` both have the layer path segment `{segment}`; \
             give one another name with `#[hook({RENAME} = \"...\")]`, or mark one `#[hook({SKIP})]`",
            first.ident.to_token_stream(),
            field.ident.to_token_stream(),
        );
        match &field.attrs.rename {
            Some(rename) => cx.error_spanned_by(&rename.lit, message),
            None => cx.error_spanned_by(field.ident, message),
        }
    }
}
