//! `#[derive(Hookable)]`: placeholder until the derive lands.
use proc_macro::TokenStream;

/// Derives `hooks::Hookable`.
#[proc_macro_derive(Hookable, attributes(hook))]
pub fn derive_hookable(_input: TokenStream) -> TokenStream {
    TokenStream::new()
}
