//! Layer paths and the typed path builder.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use crate::hookable::Hookable;

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

/// Typed paths below a `Vec<T>` or `[T; N]`: pick an element with [`at`](Self::at).
#[derive(Clone, Debug)]
pub struct SeqPaths<T: Hookable> {
    prefix: Prefix,
    elem: PhantomData<fn() -> T>,
}

impl<T: Hookable> SeqPaths<T> {
    #[doc(hidden)]
    #[must_use]
    pub fn new(prefix: Prefix) -> Self {
        SeqPaths {
            prefix,
            elem: PhantomData,
        }
    }

    /// The paths of element `index`. Bounds are checked when a store binds to a model.
    #[must_use]
    pub fn at(&self, index: usize) -> T::Paths {
        T::paths_at(self.prefix.child(index))
    }
}

/// Typed paths of a `Hook<M>`: a capture site itself (convert it with `.path()` or `into()`),
/// which also dereferences to the paths inside `M`.
#[derive(Clone, Debug)]
pub struct HookPaths<M: Hookable> {
    path: LayerPath,
    inner: M::Paths,
}

impl<M: Hookable> HookPaths<M> {
    #[doc(hidden)]
    #[must_use]
    pub fn new(prefix: &Prefix) -> Self {
        HookPaths {
            path: LayerPath::from(prefix.as_str().to_owned()),
            inner: M::paths_at(prefix.clone()),
        }
    }

    /// This capture site's path.
    #[must_use]
    pub fn path(&self) -> LayerPath {
        self.path.clone()
    }
}

impl<M: Hookable> Deref for HookPaths<M> {
    type Target = M::Paths;

    fn deref(&self) -> &M::Paths {
        &self.inner
    }
}

impl<M: Hookable> From<HookPaths<M>> for LayerPath {
    fn from(paths: HookPaths<M>) -> Self {
        paths.path
    }
}

impl<M: Hookable> AsRef<str> for HookPaths<M> {
    fn as_ref(&self) -> &str {
        self.path.as_str()
    }
}

/// Typed paths of a module with no capture site inside (tch's `nn` types): nothing to pick.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoLayers;
