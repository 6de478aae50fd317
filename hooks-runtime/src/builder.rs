//! The typed path builder: `Model::paths().encoder().layer(3).attention()`, where a misspelt
//! layer is a "no method" compile error. The derive generates one builder struct per type; the
//! ones here serve the runtime's own `Hookable` impls.

use std::marker::PhantomData;
use std::ops::Deref;

use crate::hookable::Hookable;
use crate::path::{LayerPath, Prefix, INPUT_SUFFIX};

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

    /// The path of this module's input (`PATH:input`), the counterpart of a PyTorch forward
    /// pre-hook: `Model::paths().h(3).attn().c_proj().input()`.
    #[must_use]
    pub fn input(&self) -> LayerPath {
        LayerPath::from(format!("{}{INPUT_SUFFIX}", self.path))
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
