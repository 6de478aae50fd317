//! `LayerTree` and `Hookable` for the containers a model holds its layers in (`Vec`, arrays,
//! `Option`, `Box`), and for tch's `nn` modules, which join the tree as leaves.

use crate::builder::{NoLayers, SeqPaths};
use crate::hookable::{Hookable, LayerTree, Walker};
use crate::path::Prefix;
use crate::schema::Schema;

/// Walks the elements of a `Vec` or array, each under its index.
fn walk_elements<T: LayerTree>(elements: &[T], walker: &mut Walker<'_>) {
    for (index, element) in elements.iter().enumerate() {
        walker.enter(index, |w| element.walk(w));
    }
}

impl<T: LayerTree> LayerTree for Vec<T> {
    fn walk(&self, walker: &mut Walker<'_>) {
        walk_elements(self, walker);
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
}

impl<T: LayerTree, const N: usize> LayerTree for [T; N] {
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
}

impl<T: LayerTree> LayerTree for Option<T> {
    fn walk(&self, walker: &mut Walker<'_>) {
        if let Some(inner) = self {
            inner.walk(walker);
        }
    }
}

impl<T: Hookable> Hookable for Option<T> {
    const SCHEMA: &'static Schema = &Schema::Optional { inner: T::SCHEMA };
    type Paths = T::Paths;

    fn paths_at(prefix: Prefix) -> T::Paths {
        T::paths_at(prefix)
    }
}

/// Transparent, and unsized types included, so that a `Box<dyn LayerTree>` (or a box of any trait
/// built on it) walks like the model inside.
impl<T: LayerTree + ?Sized> LayerTree for Box<T> {
    fn walk(&self, walker: &mut Walker<'_>) {
        (**self).walk(walker);
    }
}

impl<T: Hookable> Hookable for Box<T> {
    const SCHEMA: &'static Schema = T::SCHEMA;
    type Paths = T::Paths;

    fn paths_at(prefix: Prefix) -> T::Paths {
        T::paths_at(prefix)
    }
}

/// tch's modules hold no capture site; they join the tree as leaves so `Hook<nn::Linear>` works.
macro_rules! leaf {
    ($($ty:ty => $name:literal),* $(,)?) => {$(
        impl LayerTree for $ty {
            fn walk(&self, _walker: &mut Walker<'_>) {}
        }

        impl Hookable for $ty {
            const SCHEMA: &'static Schema = &Schema::Leaf { name: $name };
            type Paths = NoLayers;

            fn paths_at(_prefix: Prefix) -> NoLayers {
                NoLayers
            }
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
