//! Reads `#[hook(...)]`: `crate` on the struct, `rename`, `alias` and `skip` on fields.
//!
//! Every mistake is reported into the [`Ctxt`] and reading goes on, so one build shows them all.
//! Whether a value makes sense (a `rename` with a `.` in it, `rename` with `skip`) is
//! [`check`](crate::check)'s job; this file only reads what was written.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::{Expr, ExprLit, Lit, LitStr, Token};

use crate::ctxt::Ctxt;

/// The attribute's name: `#[hook(...)]`.
pub const HOOK: &str = "hook";
/// Field key: the layer-path segment, when it differs from the field's name.
pub const RENAME: &str = "rename";
/// Field key (repeatable): another name the field's layers answer to, at run time.
pub const ALIAS: &str = "alias";
/// Field key: leave the field out of the layer tree.
pub const SKIP: &str = "skip";
/// Struct key: the path of the `hooks` crate, for crates that reach it under another name.
pub const CRATE: &str = "crate";

/// The `#[hook(...)]` keys of the struct itself.
pub struct Container {
    /// The path given with `crate = "..."`, if any.
    crate_path: Option<syn::Path>,
    /// Whether a `crate = "..."` was given that is not a path, so no path can be trusted.
    crate_path_unreadable: bool,
}

impl Container {
    pub fn from_ast(cx: &Ctxt, attrs: &[syn::Attribute]) -> Self {
        let mut crate_path = Once::new(CRATE);
        let mut crate_path_unreadable = false;
        for_each_hook_key(cx, attrs, |meta| {
            if meta.path.is_ident(CRATE) {
                let key = meta.path.clone();
                let Some(lit) = string_value(cx, &meta, CRATE, "::hooks")? else {
                    crate_path_unreadable = true;
                    crate_path.seen(cx, &key);
                    return Ok(());
                };
                if let Ok(path) = lit.parse::<syn::Path>() {
                    crate_path.set(cx, &key, path);
                } else {
                    crate_path_unreadable = true;
                    crate_path.seen(cx, &key);
                    cx.error_spanned_by(
                        &lit,
                        format!(
                            "`{}` is not a path; `crate` names the `hooks` crate, like `crate = \"::hooks\"`",
                            lit.value()
                        ),
                    );
                }
            } else if meta.path.is_ident(RENAME) || meta.path.is_ident(ALIAS) || meta.path.is_ident(SKIP) {
                cx.error_spanned_by(
                    &meta.path,
                    format!(
                        "`{}` goes on a field, not on the struct; move it to the field",
                        key_name(&meta.path)
                    ),
                );
                skip_value(&meta)?;
            } else {
                cx.error_spanned_by(
                    &meta.path,
                    format!(
                        "unknown key `{}` in `#[hook(...)]` on a struct; the only struct key is `crate = \"...\"`",
                        key_name(&meta.path)
                    ),
                );
                skip_value(&meta)?;
            }
            Ok(())
        });
        Container {
            crate_path: crate_path.value,
            crate_path_unreadable,
        }
    }

    /// The path generated code names the `hooks` crate by; `None` when the one given is not a
    /// path, so that nothing is generated against a guess.
    pub fn crate_path(&self) -> Option<syn::Path> {
        if self.crate_path_unreadable {
            return None;
        }
        Some(self.crate_path.clone().unwrap_or_else(default_crate))
    }
}

/// The `#[hook(...)]` keys of one field.
pub struct Field {
    /// `rename = "..."`, as written.
    pub rename: Option<Rename>,
    /// Each `alias = "..."`, as written.
    pub aliases: Vec<Rename>,
    /// The `skip` key, kept for its span.
    pub skip: Option<syn::Path>,
}

/// A `rename = "..."` (or `alias = "..."`) key with its tokens, for error spans.
pub struct Rename {
    /// The `rename` key.
    pub key: syn::Path,
    /// The string after it.
    pub lit: LitStr,
}

impl Field {
    pub fn from_ast(cx: &Ctxt, attrs: &[syn::Attribute]) -> Self {
        let mut rename = Once::new(RENAME);
        let mut skip = Once::new(SKIP);
        let mut aliases = Vec::new();
        for_each_hook_key(cx, attrs, |meta| {
            if meta.path.is_ident(RENAME) {
                let key = meta.path.clone();
                match string_value(cx, &meta, RENAME, "LayerNorm")? {
                    Some(lit) => rename.set(cx, &key, Rename { key: key.clone(), lit }),
                    None => rename.seen(cx, &key),
                }
            } else if meta.path.is_ident(ALIAS) {
                let key = meta.path.clone();
                if let Some(lit) = string_value(cx, &meta, ALIAS, "h")? {
                    aliases.push(Rename { key, lit });
                }
            } else if meta.path.is_ident(SKIP) {
                if !meta.input.is_empty() && !meta.input.peek(Token![,]) {
                    let value = value_tokens(&meta)?;
                    cx.error_spanned_by(value, "`skip` takes no value; write `#[hook(skip)]`");
                }
                skip.set(cx, &meta.path, meta.path.clone());
            } else if meta.path.is_ident(CRATE) {
                cx.error_spanned_by(
                    &meta.path,
                    "`crate` goes on the struct, not on a field; move `#[hook(crate = \"...\")]` above the struct",
                );
                skip_value(&meta)?;
            } else {
                cx.error_spanned_by(
                    &meta.path,
                    format!(
                        "unknown key `{}` in `#[hook(...)]` on a field; the field keys are `rename = \"...\"`, `alias = \"...\"` and `skip`",
                        key_name(&meta.path)
                    ),
                );
                skip_value(&meta)?;
            }
            Ok(())
        });
        Field {
            rename: rename.value,
            aliases,
            skip: skip.value,
        }
    }
}

/// A key that may be given once: a second one is an error on the second key.
struct Once<T> {
    name: &'static str,
    seen: bool,
    value: Option<T>,
}

impl<T> Once<T> {
    fn new(name: &'static str) -> Self {
        Once {
            name,
            seen: false,
            value: None,
        }
    }

    /// Records the key with its value, unless it was given before.
    fn set(&mut self, cx: &Ctxt, key: &syn::Path, value: T) {
        if self.first(cx, key) {
            self.value = Some(value);
        }
    }

    /// Records the key given with a value that could not be read (already reported).
    fn seen(&mut self, cx: &Ctxt, key: &syn::Path) {
        self.first(cx, key);
    }

    /// Whether this is the first time the key is given; reports it if not.
    fn first(&mut self, cx: &Ctxt, key: &syn::Path) -> bool {
        if self.seen {
            cx.error_spanned_by(key, format!("duplicate `{}` key; keep only one", self.name));
            return false;
        }
        self.seen = true;
        true
    }
}

/// Calls `read` for each key of each `#[hook(...)]` in `attrs`, reporting what it cannot parse.
fn for_each_hook_key(
    cx: &Ctxt,
    attrs: &[syn::Attribute],
    mut read: impl FnMut(ParseNestedMeta<'_>) -> syn::Result<()>,
) {
    for attr in attrs {
        if !attr.path().is_ident(HOOK) {
            continue;
        }
        if let syn::Meta::List(list) = &attr.meta {
            if let Err(err) = list.parse_nested_meta(&mut read) {
                cx.syn_error(err);
            }
        } else {
            cx.error_spanned_by(
                &attr.meta,
                "expected keys in parentheses, like `#[hook(rename = \"LayerNorm\")]` or `#[hook(skip)]`",
            );
        }
    }
}

/// Reads `= "..."` after `key`; reports anything else (with `example` as a model) and returns
/// `None`, having consumed it.
fn string_value(cx: &Ctxt, meta: &ParseNestedMeta<'_>, key: &str, example: &str) -> syn::Result<Option<LitStr>> {
    if !meta.input.peek(Token![=]) {
        cx.error_spanned_by(
            &meta.path,
            format!("`{key}` needs a value, like `{key} = \"{example}\"`"),
        );
        skip_value(meta)?;
        return Ok(None);
    }
    let value: Expr = meta.value()?.parse()?;
    match value {
        Expr::Lit(ExprLit { lit: Lit::Str(lit), .. }) => Ok(Some(lit)),
        other => {
            cx.error_spanned_by(
                other,
                format!("expected a string for `{key}`, like `{key} = \"{example}\"`"),
            );
            Ok(None)
        }
    }
}

/// Consumes whatever follows a key (`= value` or `(...)`), so reading goes on after an error.
fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if !meta.input.is_empty() && !meta.input.peek(Token![,]) {
        value_tokens(meta)?;
    }
    Ok(())
}

/// The tokens of `= value` or `(...)` after a key.
fn value_tokens(meta: &ParseNestedMeta<'_>) -> syn::Result<TokenStream> {
    if meta.input.peek(Token![=]) {
        let eq: Token![=] = meta.input.parse()?;
        let value: Expr = meta.input.parse()?;
        Ok(quote::quote!(#eq #value))
    } else {
        let content;
        let paren = syn::parenthesized!(content in meta.input);
        let inner: TokenStream = content.parse()?;
        Ok(quote::quote_spanned!(paren.span.join()=> (#inner)))
    }
}

/// A key as the user wrote it, for messages.
fn key_name(path: &syn::Path) -> String {
    path.to_token_stream().to_string().replace(' ', "")
}

/// The crate path generated code names when `#[hook(crate = "...")]` is absent: `::hooks`.
fn default_crate() -> syn::Path {
    syn::Path {
        leading_colon: Some(<Token![::]>::default()),
        segments: std::iter::once(syn::PathSegment::from(syn::Ident::new("hooks", Span::call_site()))).collect(),
    }
}
