//! Every `#[derive(Hookable)]` type linked into the program, with its path templates.

use std::sync::OnceLock;

use crate::schema::Schema;

/// One derived type in the [`registry`]. The derive submits one for each non-generic type.
#[derive(Debug)]
pub struct Registration {
    /// The type's name.
    pub name: &'static str,
    /// The module that defines it (`module_path!()`).
    pub module_path: &'static str,
    /// Its layer tree.
    pub schema: &'static Schema,
}

impl Registration {
    /// The type's full path, `crate::module::Type`.
    #[must_use]
    pub fn type_path(&self) -> String {
        format!("{}::{}", self.module_path, self.name)
    }
}

inventory::collect!(Registration);

/// Every `#[derive(Hookable)]` type linked into the program, sorted by type path, each once.
///
/// Generic types are not listed: their trees depend on their parameters. inventory drops the
/// submissions of a crate that nothing references, so reference a type of that crate first.
#[must_use]
pub fn registry() -> &'static [&'static Registration] {
    static REGISTRY: OnceLock<Vec<&'static Registration>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut all: Vec<&'static Registration> = inventory::iter::<Registration>.into_iter().collect();
        all.sort_by(|a, b| (a.module_path, a.name).cmp(&(b.module_path, b.name)));
        // A type is submitted once per derive; the same path twice means the same crate was
        // linked twice (two versions): keep the first rather than list a type twice.
        all.dedup_by(|a, b| a.module_path == b.module_path && a.name == b.name);
        all
    })
}
