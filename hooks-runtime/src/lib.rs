//! The runtime of `hooks`: layer trees, capture sites, the capture switch, the activation store,
//! `.npz` files and extraction. Most users depend on the `hooks` facade, which re-exports all of
//! this together with `#[derive(Hookable)]`.

pub mod analysis;
mod builder;
mod columns;
mod dataset;
mod error;
mod extract;
mod hook;
mod hookable;
mod host;
mod impls;
mod intervene;
mod npz;
mod path;
mod pool;
mod positions;
mod probe;
mod registry;
mod rows;
mod schema;
mod select;
mod site;
mod stop;
mod store;
pub mod switch;

pub use builder::{HookPaths, NoLayers, SeqPaths};
pub use columns::{is_sample_column, SampleColumn, META_PREFIX, SAMPLE_INDEX};
pub use dataset::{
    merge_datasets, read_manifest, ArrayInfo, ArrayReader, Dataset, DatasetWriter, Done, FolderLock, Manifest, Rows,
    Shard,
};
pub use error::{libtorch_line, one_line, Error, Result, LIST_LAYERS};
pub use extract::{
    extract_representations, length_batches, ActivationSink, BatchForward, Chunk, Extracted, Extractor, InputIds, Item,
    MemorySink, NpzSink, Progress, Repeats, Report, Stats, Unmasked,
};
pub use hook::{CaptureOutput, Hook, HookPoint};
pub use hookable::{Hookable, LayerTree, Walker};
pub use intervene::{Intervention, Interventions};
pub use npz::{
    load_activations, load_npy, load_npz, load_numeric, save_activations, save_npz, save_npz_unless, NpzArray, NpzValue,
};
pub use path::{LayerPath, Prefix, INPUT_SUFFIX};
pub use pool::Pool;
pub use positions::{Position, Positions, TokenPositions};
pub use registry::{registry, Registration};
pub use rows::RowBuffer;
pub use schema::{FieldSchema, Schema};
pub use site::Site;
pub use store::{ActivationStore, Activations, CaptureMode};

/// What generated code names. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::hookable::{NotHookable, Probe};
    pub use crate::schema::{check_layer_path, LayerPathError};
    pub use inventory;
    pub use std::marker::PhantomData;
}
