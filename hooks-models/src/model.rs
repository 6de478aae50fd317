//! What every reference model offers ([`TextModel`]), and [`Model`], which picks the architecture
//! from a folder's `config.json`.

use std::path::Path;

use hooks::Hookable;
use tch::{nn, Device, Kind, Tensor};

use crate::bert::Bert;
use crate::config::ConfigFile;
use crate::error::{ModelError, Result};
use crate::gpt2::Gpt2;
// `hooks::Hook`; a pass-through under the `uninstrumented` feature, for the benchmark (see lib.rs).
use crate::Hook;

/// The `model_type`s of `config.json` that [`Model::load`] loads.
pub const SUPPORTED_MODEL_TYPES: [&str; 2] = ["bert", "gpt2"];

/// A transformer over token ids whose layers can be captured by their PyTorch paths.
///
/// Implemented by [`Bert`] and [`Gpt2`]; write code generic over it to handle both.
///
/// ```no_run
/// use hooks::ActivationStore;
/// use hooks_models::{Model, TextModel, Tokenizer};
/// use tch::{Device, Kind};
///
/// fn last_layer(model: &impl TextModel, tokenizer: &Tokenizer) -> Result<tch::Tensor, Box<dyn std::error::Error>> {
///     let (ids, mask) = tokenizer.encode_batch(&["a first sentence", "a second"], model.max_length())?;
///     let names = model.layer_names();
///     let store = ActivationStore::new(model, [names.last().map_or("", String::as_str)])?;
///     store.enable();
///     model.forward(&ids, &mask)?;
///     Ok(store.activations().into_iter().next().map(|(_, t)| t).ok_or("nothing captured")?)
/// }
///
/// let dir = std::path::Path::new("all-MiniLM-L6-v2");
/// let tokenizer = Tokenizer::from_dir(dir)?;
/// let out = match Model::load(dir, Device::Cpu, Kind::Float)? {
///     Model::Bert(m) => last_layer(&m, &tokenizer)?,
///     Model::Gpt2(m) => last_layer(&m, &tokenizer)?,
/// };
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait TextModel: Hookable {
    /// Runs the model on a right-padded batch and returns the last hidden state `[B, T, H]`.
    ///
    /// `input_ids` and `attention_mask` are integer tensors of shape `[B, T]` (`1` for a token,
    /// `0` for padding), as [`Tokenizer::encode_batch`](crate::Tokenizer::encode_batch) makes
    /// them; they are moved to the model's device. Every capture site on the way fires. Hidden
    /// states at padding positions are computed but meaningless.
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidInput`] when the shapes differ or are not 2-d, the batch is empty,
    /// the ids are not integers or lie outside the vocabulary, or `T` exceeds
    /// [`max_length`](Self::max_length).
    fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor>;

    /// The longest input the model takes: the rows of its position embeddings.
    fn max_length(&self) -> usize;

    /// `config.json`'s `model_type`: `"bert"` or `"gpt2"`.
    fn model_type(&self) -> &'static str;

    /// The width of the hidden states.
    fn hidden_size(&self) -> usize;

    /// The device the weights live on.
    fn device(&self) -> Device;

    /// The floating-point kind the model computes in.
    fn kind(&self) -> Kind;
}

/// A reference model of any supported architecture, as found in a Hugging Face model folder.
///
/// Exhaustive on purpose: a `match` that hands each variant to code generic over
/// [`TextModel`] then fails to compile when an architecture is added, rather than at run time.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "one model is loaded at a time, and unboxed variants let callers pass `&bert` as `&impl TextModel`"
)]
pub enum Model {
    /// `model_type: "bert"`.
    Bert(Bert),
    /// `model_type: "gpt2"`.
    Gpt2(Gpt2),
}

impl Model {
    /// Loads the model in `dir` (`config.json` and `model.safetensors`, as `save_pretrained`
    /// writes them), picking the architecture from `config.json`'s `model_type`, onto `device`
    /// in `kind` (`Kind::Float`, `Kind::Half` or `Kind::BFloat16`).
    ///
    /// # Errors
    ///
    /// [`ModelError::MissingFolder`], [`ModelError::MissingFile`], [`ModelError::BadConfig`],
    /// [`ModelError::UnsupportedModelType`] (naming [`SUPPORTED_MODEL_TYPES`]),
    /// [`ModelError::UnsupportedConfig`], [`ModelError::UnsupportedKind`],
    /// [`ModelError::BadWeights`], [`ModelError::MissingWeight`], [`ModelError::WeightShape`].
    pub fn load(dir: impl AsRef<Path>, device: Device, kind: Kind) -> Result<Model> {
        let dir = dir.as_ref();
        let config = open(dir, kind)?;
        match config.model_type.as_str() {
            "bert" => Bert::from_config(dir, &config, device, kind).map(Model::Bert),
            "gpt2" => Gpt2::from_config(dir, &config, device, kind).map(Model::Gpt2),
            other => Err(ModelError::UnsupportedModelType {
                path: config.path.clone(),
                found: other.to_owned(),
                supported: &SUPPORTED_MODEL_TYPES,
            }),
        }
    }

    /// `config.json`'s `model_type`.
    #[must_use]
    pub fn model_type(&self) -> &'static str {
        match self {
            Model::Bert(m) => m.model_type(),
            Model::Gpt2(m) => m.model_type(),
        }
    }

    /// Every capturable layer path, in forward order.
    #[must_use]
    pub fn layer_names(&self) -> Vec<String> {
        match self {
            Model::Bert(m) => m.layer_names(),
            Model::Gpt2(m) => m.layer_names(),
        }
    }

    /// [`TextModel::forward`] of the model inside.
    ///
    /// # Errors
    ///
    /// As [`TextModel::forward`].
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        match self {
            Model::Bert(m) => m.forward(input_ids, attention_mask),
            Model::Gpt2(m) => m.forward(input_ids, attention_mask),
        }
    }

    /// [`TextModel::max_length`] of the model inside.
    #[must_use]
    pub fn max_length(&self) -> usize {
        match self {
            Model::Bert(m) => m.max_length(),
            Model::Gpt2(m) => m.max_length(),
        }
    }
}

/// Checks the folder and the kind, and reads `config.json`: the steps every `load` starts with.
pub(crate) fn open(dir: &Path, kind: Kind) -> Result<ConfigFile> {
    if !dir.is_dir() {
        return Err(ModelError::MissingFolder {
            path: dir.to_path_buf(),
        });
    }
    if !matches!(kind, Kind::Float | Kind::Half | Kind::BFloat16) {
        return Err(ModelError::UnsupportedKind {
            kind: format!("{kind:?}"),
        });
    }
    ConfigFile::read(dir)
}

/// The config's `model_type` must be `expected`, for the `load` of one architecture.
pub(crate) fn expect_model_type(config: &ConfigFile, expected: &'static [&'static str]) -> Result<()> {
    if expected.contains(&config.model_type.as_str()) {
        Ok(())
    } else {
        Err(ModelError::UnsupportedModelType {
            path: config.path.clone(),
            found: config.model_type.clone(),
            supported: expected,
        })
    }
}

/// Validates a batch and moves it to `device`: ids as `Int64`, the mask as it came.
pub(crate) fn check_inputs(
    input_ids: &Tensor,
    attention_mask: &Tensor,
    max_length: i64,
    vocab_size: i64,
    device: Device,
) -> Result<(Tensor, Tensor)> {
    let invalid = |reason: String| ModelError::InvalidInput { reason };
    let ids_size = input_ids.size();
    if ids_size.len() != 2 || ids_size[0] == 0 || ids_size[1] == 0 {
        return Err(invalid(format!(
            "`input_ids` has shape {ids_size:?}; pass a non-empty `[batch, length]` tensor"
        )));
    }
    if attention_mask.size() != ids_size {
        return Err(invalid(format!(
            "`attention_mask` has shape {:?} but `input_ids` has {ids_size:?}; give both the same shape",
            attention_mask.size()
        )));
    }
    for (name, t) in [("input_ids", input_ids), ("attention_mask", attention_mask)] {
        if !is_integer(t.kind()) {
            return Err(invalid(format!(
                "`{name}` has dtype {:?}; pass an integer tensor (`Kind::Int64`)",
                t.kind()
            )));
        }
    }
    if ids_size[1] > max_length {
        return Err(invalid(format!(
            "the batch has {} tokens per row but the model takes at most {max_length}; truncate the inputs (e.g. `encode_batch(texts, model.max_length())`)",
            ids_size[1]
        )));
    }
    let ids = input_ids.f_to_device(device)?.f_to_kind(Kind::Int64)?;
    let (low, high) = (ids.f_min()?.int64_value(&[]), ids.f_max()?.int64_value(&[]));
    if low < 0 || high >= vocab_size {
        return Err(invalid(format!(
            "`input_ids` hold ids from {low} to {high}, outside the vocabulary 0..{vocab_size}; tokenize with this model's tokenizer"
        )));
    }
    Ok((ids, attention_mask.f_to_device(device)?))
}

fn is_integer(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8 | Kind::Bool
    )
}

/// `usize` from a positive config size (configs are checked positive when loaded).
pub(crate) fn to_usize(n: i64) -> usize {
    usize::try_from(n).unwrap_or(0)
}

/// A hooked embedding whose weights the checkpoint fills (zero-initialised, not random: every
/// value is overwritten, so random init would only cost time).
pub(crate) fn embedding(p: nn::Path<'_>, rows: i64, width: i64) -> Hook<nn::Embedding> {
    let config = nn::EmbeddingConfig {
        ws_init: nn::Init::Const(0.0),
        ..Default::default()
    };
    Hook::new(nn::embedding(p, rows, width, config))
}

/// A hooked layer norm over the last dimension, with the checkpoint's epsilon.
pub(crate) fn layer_norm(p: nn::Path<'_>, width: i64, eps: f64) -> Hook<nn::LayerNorm> {
    let config = nn::LayerNormConfig {
        eps,
        ..Default::default()
    };
    Hook::new(nn::layer_norm(p, vec![width], config))
}
