//! The error context: every step reports into it, and the derive reports them all at once.

use std::cell::RefCell;
use std::fmt::Display;

use quote::ToTokens;

/// Collects the errors of one derive invocation, so the user sees every mistake in one build
/// rather than one per build.
#[derive(Default)]
pub struct Ctxt {
    errors: RefCell<Vec<syn::Error>>,
}

impl Ctxt {
    pub fn new() -> Self {
        Ctxt::default()
    }

    /// Records an error spanned on the tokens of `obj` (use the smallest wrong token).
    pub fn error_spanned_by(&self, obj: impl ToTokens, msg: impl Display) {
        self.errors.borrow_mut().push(syn::Error::new_spanned(obj, msg));
    }

    /// Records an error syn produced (or one built with a span already).
    pub fn syn_error(&self, err: syn::Error) {
        self.errors.borrow_mut().push(err);
    }

    /// All recorded errors combined into one, or `Ok` when there were none.
    pub fn check(self) -> syn::Result<()> {
        let mut errors = self.errors.into_inner().into_iter();
        let Some(mut combined) = errors.next() else {
            return Ok(());
        };
        for err in errors {
            combined.combine(err);
        }
        Err(combined)
    }
}
