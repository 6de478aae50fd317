//! Layer paths: [`LayerPath`], and the [`Prefix`] a typed path builder extends.

use std::borrow::Cow;
use std::fmt;

/// What a layer path ends with to name the module's first positional input rather than its
/// output (`encoder.layer.3.attention.output.dense:input`): the counterpart of a PyTorch forward
/// pre-hook.
pub const INPUT_SUFFIX: &str = ":input";

/// The dotted path of a capture site, as PyTorch's `named_modules()` would name the module:
/// `encoder.layer.3.attention.self`.
///
/// Make one with `hooks::layer!(Model, "...")` (checked at compile time), with the typed builder
/// `Model::paths().encoder().layer(3).attention()`, or from a string (checked when a store binds).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LayerPath(Cow<'static, str>);

impl LayerPath {
    /// A path from a string literal. Prefer `hooks::layer!`, which checks it.
    #[must_use]
    pub const fn from_static(path: &'static str) -> Self {
        LayerPath(Cow::Borrowed(path))
    }

    /// The dotted path.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for LayerPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LayerPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for LayerPath {
    fn from(path: String) -> Self {
        LayerPath(Cow::Owned(path))
    }
}

impl From<&'static str> for LayerPath {
    fn from(path: &'static str) -> Self {
        LayerPath(Cow::Borrowed(path))
    }
}

/// The prefix a typed path builder extends: the path of the node it stands for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prefix(String);

impl Prefix {
    /// The root of a model (the empty path).
    #[must_use]
    pub fn root() -> Self {
        Prefix(String::new())
    }

    /// This prefix extended by one segment.
    #[must_use]
    pub fn child(&self, segment: impl fmt::Display) -> Prefix {
        if self.0.is_empty() {
            Prefix(segment.to_string())
        } else {
            Prefix(format!("{}.{segment}", self.0))
        }
    }

    /// The dotted path so far.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
