//! The derive input, read into structs that borrow from syn's tree.
//!
//! Only a struct with named fields (or none) has a layer tree: its field names are the layer-path
//! segments. Any other shape is reported here, spanned on what makes it unsupported.

use syn::ext::IdentExt;
use syn::{DeriveInput, Fields, Generics, Ident, Type};

use crate::attr;
use crate::ctxt::Ctxt;

/// A struct the derive can implement `Hookable` for.
pub struct Container<'a> {
    /// The type's name.
    pub ident: &'a Ident,
    /// Its generics as written.
    pub generics: &'a Generics,
    /// Its `#[hook(...)]` keys.
    pub attrs: attr::Container,
    /// What the derive can do with its body.
    pub data: Data<'a>,
}

/// The body of the derive input.
pub enum Data<'a> {
    /// A struct's named fields in declaration order; none for a unit struct.
    Struct(Vec<Field<'a>>),
    /// An enum, a union or a tuple struct (already reported): it gets a stub impl.
    Unsupported,
}

/// One named field.
pub struct Field<'a> {
    /// The field's name as written (maybe raw, like `r#type`).
    pub ident: &'a Ident,
    /// Its type as written.
    pub ty: &'a Type,
    /// Its `#[hook(...)]` keys.
    pub attrs: attr::Field,
}

impl<'a> Container<'a> {
    /// Reads `input`, reporting into `cx` what the derive cannot support.
    pub fn from_ast(cx: &Ctxt, input: &'a DeriveInput) -> Self {
        // Read the struct's keys even when the shape is wrong, so their mistakes show up too.
        let attrs = attr::Container::from_ast(cx, &input.attrs);
        let data = match &input.data {
            syn::Data::Struct(data) => match &data.fields {
                Fields::Named(fields) => Data::Struct(
                    fields
                        .named
                        .iter()
                        .filter_map(|field| Field::from_ast(cx, field))
                        .collect(),
                ),
                Fields::Unit => Data::Struct(Vec::new()),
                Fields::Unnamed(fields) => {
                    cx.error_spanned_by(
                        fields,
                        "`Hookable` cannot be derived for a tuple struct: layer paths are made of field names; \
                         name the fields, like `struct Model { encoder: Encoder }`",
                    );
                    Data::Unsupported
                }
            },
            syn::Data::Enum(data) => {
                cx.error_spanned_by(
                    data.enum_token,
                    "`Hookable` cannot be derived for an enum: a layer path must name the same layers whatever \
                     the value; use a struct, with an `Option` field for a layer that may be absent",
                );
                Data::Unsupported
            }
            syn::Data::Union(data) => {
                cx.error_spanned_by(
                    data.union_token,
                    "`Hookable` cannot be derived for a union; use a struct with named fields",
                );
                Data::Unsupported
            }
        };
        Container {
            ident: &input.ident,
            generics: &input.generics,
            attrs,
            data,
        }
    }

    /// The fields, in declaration order; none when the shape is unsupported.
    pub fn fields(&self) -> &[Field<'a>] {
        match &self.data {
            Data::Struct(fields) => fields,
            Data::Unsupported => &[],
        }
    }
}

impl<'a> Field<'a> {
    fn from_ast(cx: &Ctxt, field: &'a syn::Field) -> Option<Self> {
        let attrs = attr::Field::from_ast(cx, &field.attrs);
        // A `Fields::Named` field always has a name.
        let ident = field.ident.as_ref()?;
        Some(Field {
            ident,
            ty: &field.ty,
            attrs,
        })
    }

    /// Whether the field is left out of the layer tree.
    pub fn skipped(&self) -> bool {
        self.attrs.skip.is_some()
    }

    /// The field's layer-path segment: its `rename`, or its name without `r#`.
    pub fn segment(&self) -> String {
        match &self.attrs.rename {
            Some(rename) => rename.lit.value(),
            None => self.ident.unraw().to_string(),
        }
    }
}
