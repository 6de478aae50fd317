//! The one error type of the runtime.

use std::path::PathBuf;

/// How the layer errors say to list a model's layers (the `hooks` command says it its own way).
pub const LIST_LAYERS: &str = "list every layer with `layer_names()` on the model or `hooks layers`";

/// Everything that can go wrong in `hooks`: bad input, I/O, libtorch.
///
/// Messages are one line, name the culprit in backticks and say how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A selected layer path names no capture site of the bound model.
    #[error("unknown layer `{path}`{}; {LIST_LAYERS}", did_you_mean(.suggestions))]
    UnknownLayer {
        /// The path as given.
        path: String,
        /// The model's layer paths closest to `path`, best first (at most three; may be empty).
        suggestions: Vec<String>,
    },
    /// A glob matched no capture site.
    #[error("the pattern `{pattern}` matches no layer; {LIST_LAYERS}")]
    NoMatch {
        /// The glob as given.
        pattern: String,
    },
    /// A store was asked for no layers at all.
    #[error("no layers selected; pass at least one layer path or pattern")]
    NoLayers,
    /// Layers were selected but never produced an output during a run.
    #[error("selected layers produced no output: {}; check that forward() calls their capture sites{}", list(.layers), input_hint(.layers))]
    NeverFired {
        /// The selected layers that captured nothing.
        layers: Vec<String>,
    },
    /// An intervention cannot act at this layer: its tensor does not flow on.
    #[error("cannot intervene on `{layer}`: {reason}; intervene on a module's output or input instead (the attention output, or the `:input` of its output projection for single heads)")]
    NotEditable {
        /// The layer path.
        layer: String,
        /// Why.
        reason: &'static str,
    },
    /// An intervention does not fit the tensor at its layer.
    #[error("the intervention on `{layer}` does not fit its tensor of shape {shape:?}: {reason}")]
    EditMismatch {
        /// The layer path.
        layer: String,
        /// The shape of the tensor at the layer.
        shape: Vec<i64>,
        /// What does not fit, and how to fix it.
        reason: String,
    },
    /// Interventions were bound but never applied during a forward.
    #[error("interventions never applied during the forward: {}; check that forward() passes these layers' tensors through their capture sites{}", list(.layers), input_hint(.layers))]
    NeverApplied {
        /// The layers whose interventions did not apply.
        layers: Vec<String>,
    },
    /// A selected layer fired more than once in one forward (a shared module), and the
    /// extraction was not told which call to keep.
    #[error("layer `{layer}` fired {times} times in one forward (a module called more than once); keep every call with `Repeats::Stack` (`--repeats stack`) or the last with `Repeats::Last` (`--repeats last`)")]
    FiredMore {
        /// The layer.
        layer: String,
        /// How many times it fired in one forward.
        times: usize,
    },
    /// A layer's output has neither one row per sample nor one row for all.
    #[error("layer `{layer}` gave shape {shape:?} for a batch of {batch} samples; extraction needs one row per sample (or one row, broadcast to all), so its first dim must be {batch} or 1")]
    BatchRows {
        /// The layer.
        layer: String,
        /// The output's shape.
        shape: Vec<i64>,
        /// Samples in the batch.
        batch: i64,
    },
    /// A dataset folder holds an extraction of another request than the one resuming it.
    #[error("`{}` holds an extraction with another `{what}` ({there} there, {now} now); run the same command to resume it, choose another folder, or pass --overwrite to start it again", dir.display())]
    DatasetMismatch {
        /// The folder.
        dir: PathBuf,
        /// The first setting that differs.
        what: String,
        /// Its value in the folder's manifest (JSON).
        there: String,
        /// Its value now (JSON).
        now: String,
    },
    /// Another run holds the dataset folder's lock (see [`FolderLock`](crate::FolderLock)).
    #[error("`{}` is in use by another run ({}); wait for it to end, or write to another folder", dir.display(), pid.map_or_else(|| "its pid is not recorded yet".to_owned(), |pid| format!("pid {pid}")))]
    FolderInUse {
        /// The folder.
        dir: PathBuf,
        /// The holder's process id, as it recorded it.
        pid: Option<u32>,
    },
    /// The run was interrupted (its interrupt flag was raised: Ctrl-C, say).
    #[error("interrupted")]
    Interrupted,
    /// The model's forward failed (bad input, say); its own message.
    #[error(transparent)]
    Model(Box<dyn std::error::Error + Send + Sync>),
    /// Extraction was given nothing to run on.
    #[error("the dataset is empty; give extraction at least one item")]
    EmptyDataset,
    /// A numeric argument is out of its range.
    #[error("invalid `{name}`: {reason}")]
    InvalidArgument {
        /// The argument's name.
        name: &'static str,
        /// Why it is invalid and what would be valid.
        reason: String,
    },
    /// Two captures of one layer cannot be stacked along dim 0.
    #[error("layer `{layer}` gave shape {got:?} after shape {expected:?}; all dims but the first must match to stack along dim 0 (pad inputs to one length, or pool)")]
    ShapeMismatch {
        /// The layer.
        layer: String,
        /// The shape captured first.
        expected: Vec<i64>,
        /// The shape that does not fit.
        got: Vec<i64>,
    },
    /// An array name that numpy could not use as an `.npz` key.
    #[error("invalid array name `{name}`: {reason}")]
    InvalidKey {
        /// The rejected name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A tensor dtype that `.npz` files cannot hold.
    #[error(
        "layer `{layer}` has dtype {kind:?}, which numpy cannot store; convert it (e.g. `to_kind(Kind::Float)`) first"
    )]
    UnsupportedDtype {
        /// The layer or array name.
        layer: String,
        /// The tensor's kind.
        kind: tch::Kind,
    },
    /// A file could not be read or written.
    #[error("{action} `{}`: {source}", path.display())]
    Io {
        /// What we were doing ("cannot write", ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is not the `.npz` we expected.
    #[error("cannot read `{}`: {}", path.display(), one_line(reason))]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Layers compared with one another hold different numbers of rows.
    #[error("layer `{left}` has {left_rows} rows and layer `{right}` has {right_rows}; layers compared must hold the same samples (or the same real tokens) in the same order")]
    RowCountMismatch {
        /// The first layer.
        left: String,
        /// Its rows.
        left_rows: i64,
        /// The layer that differs.
        right: String,
        /// Its rows.
        right_rows: i64,
    },
    /// Too few rows for a similarity metric to be defined.
    #[error("{metric} needs at least {needed} rows (samples, or real tokens) and got {rows}; compare more samples")]
    TooFewRows {
        /// The metric (`CKA`, `unbiased CKA`, ...).
        metric: String,
        /// Its minimum.
        needed: i64,
        /// The rows given.
        rows: i64,
    },
    /// A layer's activations hold NaN or infinite values.
    #[error("layer `{layer}` holds NaN or infinite values; similarities need finite activations (check the model's dtype and inputs)")]
    NotFinite {
        /// The layer.
        layer: String,
    },
    /// A layer is constant over its rows: no similarity is defined.
    #[error("layer `{layer}` does not vary over its rows (zero variance after centering); similarity to it is undefined, leave it out")]
    NoVariance {
        /// The layer.
        layer: String,
    },
    /// SVCCA keeps more directions than the rows can support.
    #[error("SVCCA of `{left}` ({left_kept} directions kept) and `{right}` ({right_kept}) needs more than {} rows and has {rows}; with fewer, some canonical correlations are 1 whatever the data; compare more samples (token rows: `--pool none`) or lower the threshold (`--threshold`)", left_kept + right_kept)]
    SvccaRank {
        /// The row layer.
        left: String,
        /// Directions kept of it.
        left_kept: i64,
        /// The column layer.
        right: String,
        /// Directions kept of it.
        right_kept: i64,
        /// The rows.
        rows: i64,
    },
    /// An input (an `.npz` or a dataset folder) has no array of that name.
    #[error("`{}` has no array `{name}`{}; list the arrays with `hooks inspect` (an .npz) or in `manifest.json` (a dataset folder)", input.display(), did_you_mean(.suggestions))]
    UnknownArray {
        /// The name as given.
        name: String,
        /// The input.
        input: PathBuf,
        /// Its array names closest to `name`, best first (at most three; may be empty).
        suggestions: Vec<String>,
    },
    /// libtorch reported an error.
    #[error("libtorch: {}", libtorch_line(.0))]
    Torch(#[from] tch::TchError),
}

/// A foreign message (a parser's, pointing at a column over several lines) on one line.
#[must_use]
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// libtorch's message without the C++ backtrace that follows its first line ("Exception raised
/// from ...", one line per frame).
#[must_use]
pub fn libtorch_line(error: &tch::TchError) -> String {
    let text = error.to_string();
    one_line(text.lines().next().unwrap_or(""))
}

fn list(layers: &[String]) -> String {
    layers.iter().map(|l| format!("`{l}`")).collect::<Vec<_>>().join(", ")
}

/// For `LAYER:input` points: a module's input is seen only when the model passes it in.
fn input_hint(layers: &[String]) -> &'static str {
    if layers.iter().any(|l| l.ends_with(":input")) {
        " (a `:input` point fires only when the model runs the module with `Hook::forward` or `Hook::call_with`, which pass its input)"
    } else {
        ""
    }
}

/// ` (did you mean `a` or `b`?)`, or nothing when there is no suggestion.
fn did_you_mean(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        return String::new();
    }
    let names: Vec<String> = suggestions.iter().map(|n| format!("`{n}`")).collect();
    format!(" (did you mean {}?)", names.join(" or "))
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
