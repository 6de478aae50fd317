//! The one error type of the reference models.

use std::path::PathBuf;

/// Everything that can go wrong loading or running a reference model or its tokenizer.
///
/// Messages are one line, name the culprit in backticks and say how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The model folder does not exist.
    #[error("model folder `{}` does not exist; pass a folder holding `config.json` and `model.safetensors`, as `save_pretrained` writes them", path.display())]
    MissingFolder {
        /// The folder as given.
        path: PathBuf,
    },
    /// A file the model folder must hold is absent.
    #[error("`{}` not found; {hint}", path.display())]
    MissingFile {
        /// The file that was looked for.
        path: PathBuf,
        /// How to get it.
        hint: &'static str,
    },
    /// A file could not be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `config.json` is not valid JSON, or a config holds a value the architecture cannot take.
    #[error("invalid {}: {reason}; {}", config_name(path.as_deref()), config_fix(path.as_deref()))]
    BadConfig {
        /// The config file; `None` for a config built in code.
        path: Option<PathBuf>,
        /// What is wrong with it.
        reason: String,
    },
    /// `config.json` names an architecture this loader does not implement.
    #[error("unsupported model_type `{found}` in `{}`; supported: {}", path.display(), backticked(supported))]
    UnsupportedModelType {
        /// The config file.
        path: PathBuf,
        /// The `model_type` it names (empty when absent).
        found: String,
        /// The `model_type`s this loader takes.
        supported: Vec<&'static str>,
    },
    /// A config asks for a variant of the architecture this crate does not implement.
    #[error("unsupported setting in {}: {setting}; {hint}", config_name(path.as_deref()))]
    UnsupportedConfig {
        /// The config file; `None` for a config built in code.
        path: Option<PathBuf>,
        /// The setting and its value.
        setting: String,
        /// What is supported instead.
        hint: String,
    },
    /// The weights file could not be parsed.
    #[error("cannot read the weights in `{}`: {}; it must be a safetensors file (`save_pretrained` writes one)", path.display(), hooks::one_line(reason))]
    BadWeights {
        /// The weights file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A weight the config implies is not in the weights file.
    #[error("weight `{name}` (shape {expected:?}) is missing from `{}`; the weights do not match `config.json`: check that both come from the same model", path.display())]
    MissingWeight {
        /// The weights file (or folder, for sharded weights).
        path: PathBuf,
        /// The weight's name, without the checkpoint's prefix.
        name: String,
        /// The shape the config implies.
        expected: Vec<i64>,
    },
    /// The weights file holds a parameter inside the model that the config does not describe (a
    /// layer past `num_hidden_layers`, a bias the config says is absent).
    #[error("weight `{name}` in `{}` is not part of the model `config.json` describes; the weights do not match `config.json`: check that both come from the same model", path.display())]
    UnexpectedWeight {
        /// The weights file (or folder, for sharded weights).
        path: PathBuf,
        /// The weight's name as stored.
        name: String,
    },
    /// A size setting disagrees with the weights, found before the model is allocated.
    #[error("`config.json` does not describe the weights in `{}`: {reason}; check that both come from the same model", path.display())]
    ConfigMismatch {
        /// The weights file (or folder, for sharded weights).
        path: PathBuf,
        /// The settings, their values and the tensor that disagrees.
        reason: String,
    },
    /// A weight has a different shape from the one the config implies.
    #[error("weight `{name}` in `{}` has shape {found:?}, but `config.json` implies {expected:?}; check that the weights and `config.json` come from the same model", path.display())]
    WeightShape {
        /// The weights file.
        path: PathBuf,
        /// The weight's name as stored.
        name: String,
        /// The shape the config implies.
        expected: Vec<i64>,
        /// The shape stored.
        found: Vec<i64>,
    },
    /// A dtype the models do not run in.
    #[error("unsupported dtype `{kind:?}`; load the model with `Kind::Float`, `Kind::Half` or `Kind::BFloat16`")]
    UnsupportedKind {
        /// The kind asked for.
        kind: tch::Kind,
    },
    /// `tokenizer.json` could not be loaded, or a text could not be encoded.
    #[error("tokenizer `{}`: {reason}", path.display())]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Inputs that the model cannot run on.
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What is wrong and what would be valid.
        reason: String,
    },
    /// The logit lens was asked of a model that has no unembedding to read its layers through.
    #[error("a `{model_type}` model has no unembedding (`lm_head`) to read its layers through; the logit lens needs a causal LM with its head (a folder saved from a `...ForCausalLM` or `GPT2LMHeadModel` class)")]
    NoReadout {
        /// The model's `model_type`.
        model_type: &'static str,
    },
    /// Decoding was asked of a model that is not a causal language model.
    #[error("a `{model_type}` model is not a causal language model, so it cannot generate; use a decoder (Llama, Mistral, Qwen2, Qwen3, Gemma, GPT-NeoX, or GPT-2 saved as `GPT2LMHeadModel`)")]
    NotCausal {
        /// The model's `model_type`.
        model_type: &'static str,
    },
    /// An argument outside what a function takes (`top_k` of 0, targets that do not fit the
    /// inputs).
    #[error("invalid `{name}`: {reason}")]
    InvalidArgument {
        /// The argument.
        name: &'static str,
        /// What is wrong and what would be valid.
        reason: String,
    },
    /// A sparse autoencoder that cannot be read or used as given.
    #[error("SAE `{}`: {reason}", path.display())]
    Sae {
        /// The SAE's folder or file.
        path: std::path::PathBuf,
        /// What is wrong, and the fix.
        reason: String,
    },
    /// From capturing: an unknown layer (with suggestions), a capture that failed.
    #[error(transparent)]
    Capture(#[from] hooks::Error),
    /// libtorch reported an error.
    #[error("libtorch: {}", hooks::libtorch_line(.0))]
    Torch(#[from] tch::TchError),
}

/// The config file in backticks, or "the config" for one built in code.
fn config_name(path: Option<&std::path::Path>) -> String {
    path.map_or_else(|| "the config".to_owned(), |p| format!("`{}`", p.display()))
}

fn config_fix(path: Option<&std::path::Path>) -> &'static str {
    if path.is_some() {
        "it must be the `config.json` transformers writes for this model"
    } else {
        "give the field a value transformers accepts"
    }
}

fn backticked(names: &[&str]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// `Result` with [`ModelError`].
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
