//! The runtime of `hooks`: layer trees, capture sites, the capture switch, the activation store,
//! `.npz` files and extraction. Most users depend on the `hooks` facade, which re-exports all of
//! this together with `#[derive(Hookable)]`.

mod error;
mod extract;
mod hookable;
mod host;
mod npz;
mod path;
mod registry;
mod rows;
mod schema;
mod select;
mod site;
mod store;
pub mod switch;

pub use error::{Error, Result};
pub use extract::{extract_representations, InputIds, Progress};
pub use hookable::{Hookable, Walker};
pub use npz::{load_activations, save_activations};
pub use path::{HookPaths, LayerPath, NoLayers, Prefix, SeqPaths};
pub use registry::{registry, Registration};
pub use rows::RowBuffer;
pub use schema::{FieldSchema, Schema};
pub use site::{CaptureOutput, Hook, HookPoint, Site};
pub use store::{ActivationStore, Activations, CaptureMode};

/// What generated code names. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::hookable::{NotHookable, Probe};
    pub use crate::schema::{check_layer_path, LayerPathError};
    pub use inventory;
    pub use std::marker::PhantomData;
}
