//! The `Hookable` trait: a type's layer tree, statically and per instance.

use std::fmt;
use std::marker::PhantomData;

use crate::path::{HookPaths, LayerPath, NoLayers, Prefix, SeqPaths};
use crate::schema::Schema;
use crate::site::{Hook, HookPoint, Site};

/// A type whose value holds capture sites at PyTorch-style dotted paths.
///
/// Derive it with `#[derive(Hookable)]`; the runtime implements it for [`Hook`], [`HookPoint`],
/// `Vec`, `Option`, `Box` and arrays of hookable types, and (as leaves with no capture site) for
/// tch's `nn` modules.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no layer tree",
    label = "not `Hookable`",
    note = "add `#[derive(Hookable)]` to `{Self}` (a struct with no capture sites of its own is fine), or mark the field `#[hook(skip)]`"
)]
pub trait Hookable {
    /// The static layer tree of this type; `hooks::layer!` checks paths against it.
    const SCHEMA: &'static Schema;

    /// The typed path builder for this type.
    type Paths;

    /// The typed paths of a value of this type placed at `prefix`.
    fn paths_at(prefix: Prefix) -> Self::Paths;

    /// The typed path builder from the root, where a typo is a "no method" compile error:
    /// `Model::paths().encoder().layer(3).attention()`.
    #[must_use]
    fn paths() -> Self::Paths
    where
        Self: Sized,
    {
        Self::paths_at(Prefix::root())
    }

    /// Visits every capture site of this instance with its path, in field order.
    fn walk(&self, walker: &mut Walker<'_>);

    /// Every capturable layer path of this instance, in field order, with real `Vec` lengths:
    /// the counterpart of PyTorch's `named_modules()`.
    #[must_use]
    fn layer_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        self.walk(&mut Walker::new(&mut |path, _| names.push(path.to_owned())));
        names
    }
}

/// Carries the current path through [`Hookable::walk`] and reports each capture site.
pub struct Walker<'a> {
    path: String,
    visit: &'a mut dyn FnMut(&str, &Site),
}

impl fmt::Debug for Walker<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Walker")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<'a> Walker<'a> {
    /// A walker from the root that calls `visit(path, site)` for every capture site.
    pub fn new(visit: &'a mut dyn FnMut(&str, &Site)) -> Self {
        Walker {
            path: String::new(),
            visit,
        }
    }

    /// Walks `inner` one segment (a field name or an index) deeper.
    pub fn enter(&mut self, segment: impl fmt::Display, inner: impl FnOnce(&mut Self)) {
        use fmt::Write as _;
        let len = self.path.len();
        if len > 0 {
            self.path.push('.');
        }
        // Writing to a String cannot fail.
        let _ = write!(self.path, "{segment}");
        inner(self);
        self.path.truncate(len);
    }

    /// Reports a capture site at the current path.
    pub fn site(&mut self, site: &Site) {
        (self.visit)(&self.path, site);
    }
}

/// Tells at compile time whether a field type is `Hookable`, for the derive: the inherent items
/// apply when `T: Hookable`, and the [`NotHookable`] trait's defaults otherwise (this is the
/// `impls` crate's trick; it needs concrete types, which is why the derive bounds type parameters).
#[doc(hidden)]
pub struct Probe<T: ?Sized>(PhantomData<T>);

impl<T: Hookable> Probe<T> {
    pub const SCHEMA: Option<&'static Schema> = Some(T::SCHEMA);

    #[inline]
    pub fn walk(value: &T, walker: &mut Walker<'_>) {
        value.walk(walker);
    }
}

/// The fallback of [`Probe`] for fields that are not `Hookable`: they are not part of the tree.
#[doc(hidden)]
pub trait NotHookable {
    const SCHEMA: Option<&'static Schema> = None;

    #[inline]
    fn walk<U: ?Sized>(_value: &U, _walker: &mut Walker<'_>) {}
}

impl<T: ?Sized> NotHookable for Probe<T> {}

impl<M: Hookable> Hookable for Hook<M> {
    const SCHEMA: &'static Schema = &Schema::Site { inner: Some(M::SCHEMA) };
    type Paths = HookPaths<M>;

    fn paths_at(prefix: Prefix) -> HookPaths<M> {
        HookPaths::new(&prefix)
    }

    fn walk(&self, walker: &mut Walker<'_>) {
        walker.site(self.site());
        self.module().walk(walker);
    }
}

impl Hookable for HookPoint {
    const SCHEMA: &'static Schema = &Schema::Site { inner: None };
    type Paths = LayerPath;

    fn paths_at(prefix: Prefix) -> LayerPath {
        LayerPath::from(prefix.as_str().to_owned())
    }

    fn walk(&self, walker: &mut Walker<'_>) {
        walker.site(self.site());
    }
}

/// Walks the elements of a `Vec` or array, each under its index.
fn walk_elements<T: Hookable>(elements: &[T], walker: &mut Walker<'_>) {
    for (index, element) in elements.iter().enumerate() {
        walker.enter(index, |w| element.walk(w));
    }
}

impl<T: Hookable> Hookable for Vec<T> {
    const SCHEMA: &'static Schema = &Schema::Seq {
        elem: T::SCHEMA,
        len: None,
    };
    type Paths = SeqPaths<T>;

    fn paths_at(prefix: Prefix) -> SeqPaths<T> {
        SeqPaths::new(prefix)
    }

    fn walk(&self, walker: &mut Walker<'_>) {
        walk_elements(self, walker);
    }
}

impl<T: Hookable, const N: usize> Hookable for [T; N] {
    const SCHEMA: &'static Schema = &Schema::Seq {
        elem: T::SCHEMA,
        len: Some(N),
    };
    type Paths = SeqPaths<T>;

    fn paths_at(prefix: Prefix) -> SeqPaths<T> {
        SeqPaths::new(prefix)
    }

    fn walk(&self, walker: &mut Walker<'_>) {
        walk_elements(self, walker);
    }
}

impl<T: Hookable> Hookable for Option<T> {
    const SCHEMA: &'static Schema = &Schema::Optional { inner: T::SCHEMA };
    type Paths = T::Paths;

    fn paths_at(prefix: Prefix) -> T::Paths {
        T::paths_at(prefix)
    }

    fn walk(&self, walker: &mut Walker<'_>) {
        if let Some(inner) = self {
            inner.walk(walker);
        }
    }
}

impl<T: Hookable> Hookable for Box<T> {
    const SCHEMA: &'static Schema = T::SCHEMA;
    type Paths = T::Paths;

    fn paths_at(prefix: Prefix) -> T::Paths {
        T::paths_at(prefix)
    }

    fn walk(&self, walker: &mut Walker<'_>) {
        (**self).walk(walker);
    }
}

/// tch's modules hold no capture site; they join the tree as leaves so `Hook<nn::Linear>` works.
macro_rules! leaf {
    ($($ty:ty => $name:literal),* $(,)?) => {$(
        impl Hookable for $ty {
            const SCHEMA: &'static Schema = &Schema::Leaf { name: $name };
            type Paths = NoLayers;

            fn paths_at(_prefix: Prefix) -> NoLayers {
                NoLayers
            }

            fn walk(&self, _walker: &mut Walker<'_>) {}
        }
    )*};
}

leaf! {
    tch::nn::Linear => "Linear",
    tch::nn::LayerNorm => "LayerNorm",
    tch::nn::Embedding => "Embedding",
    tch::nn::BatchNorm => "BatchNorm",
    tch::nn::GroupNorm => "GroupNorm",
    tch::nn::Conv1D => "Conv1D",
    tch::nn::Conv2D => "Conv2D",
    tch::nn::Conv3D => "Conv3D",
    tch::nn::ConvTranspose1D => "ConvTranspose1D",
    tch::nn::ConvTranspose2D => "ConvTranspose2D",
    tch::nn::ConvTranspose3D => "ConvTranspose3D",
    tch::nn::Sequential => "Sequential",
    tch::nn::SequentialT => "SequentialT",
    tch::nn::GRU => "GRU",
    tch::nn::LSTM => "LSTM",
}
