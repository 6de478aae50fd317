//! See inside tch (libtorch) models: capture intermediate activations by PyTorch-style layer
//! paths, checked at compile time, and save them as `.npz` files numpy reads exactly.
//!
//! This crate is the facade: it re-exports the runtime ([`hooks_runtime`]) and the derive
//! ([`hooks_derive`]), so one dependency and `use hooks::{Hookable, Hook, HookPoint};` suffice.

pub use hooks_derive::Hookable;
pub use hooks_runtime::*;

/// What generated code names. Not public API.
#[doc(hidden)]
pub use hooks_runtime::__private;

/// A [`LayerPath`] checked against `Model`'s layer tree at compile time.
///
/// A segment that names nothing, an index past a fixed-size array's length, or a path that ends
/// on something other than a capture site is a compile error naming the bad segment and the
/// valid names at that level. `Vec` indices are checked when a store binds to a model instance.
///
/// ```ignore
/// let path = hooks::layer!(Bert, "encoder.layer.3.attention");
/// ```
#[macro_export]
macro_rules! layer {
    ($model:ty, $path:literal $(,)?) => {{
        const __HOOKS_LAYER: $crate::LayerPath =
            $crate::__private::check_layer_path(<$model as $crate::Hookable>::SCHEMA, $path);
        __HOOKS_LAYER
    }};
}
