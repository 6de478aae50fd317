//! [`TextModel`]: what every reference architecture offers, object-safe so that code can hold a
//! `Box<dyn TextModel>` of any of them; and the input checks their forwards share.

use std::fmt;
use std::path::Path;

use hooks::LayerTree;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use crate::attention::{self, KvSlot, Mask};
use crate::config::ConfigFile;
use crate::error::{ModelError, Result};
use crate::weights::Checkpoint;

/// A transformer over token ids whose layers can be captured by their PyTorch paths.
///
/// Every architecture of this crate implements it, and [`load`](crate::load) returns any of them
/// as a `Box<dyn TextModel>`; an [`ActivationStore`](hooks::ActivationStore) binds to it through
/// its [`LayerTree`] supertrait, so no code needs to know which architecture it holds.
///
/// ```no_run
/// use hooks::{ActivationStore, LayerTree};
/// use hooks_models::{TextModel, Tokenizer};
/// use tch::{Device, Kind};
///
/// let dir = std::path::Path::new("all-MiniLM-L6-v2");
/// let model: Box<dyn TextModel> = hooks_models::load(dir, Device::Cpu, Kind::Float)?;
/// let (ids, mask) = Tokenizer::from_dir(dir)?.encode_batch(&["a first sentence", "a second"], model.max_length())?;
/// let names = model.layer_names();
/// let store = ActivationStore::new(&*model, [names.last().map_or("", String::as_str)])?;
/// store.enable();
/// model.forward(&ids, &mask)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait TextModel: LayerTree + fmt::Debug + Send {
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

    /// `config.json`'s `model_type`: `"bert"`, `"gpt2"`, ...
    fn model_type(&self) -> &'static str;

    /// The width of the hidden states.
    fn hidden_size(&self) -> usize;

    /// The number of token ids the model embeds: valid ids are `0..vocab_size`.
    fn vocab_size(&self) -> usize;

    /// The id a padded batch holds past each sample's end (`config.json`'s `pad_token_id`, or
    /// 0 when it has none). The mask hides those positions, so the choice changes only the
    /// meaningless hidden states there.
    fn pad_token_id(&self) -> i64 {
        0
    }

    /// The variables, named as the checkpoint names them (`encoder.layer.0.attention.self.query.weight`).
    fn var_store(&self) -> &nn::VarStore;

    /// The device the weights live on.
    fn device(&self) -> Device {
        self.var_store().device()
    }

    /// The floating-point kind the model computes in (`Kind::Float`, `Kind::Half` or
    /// `Kind::BFloat16`).
    fn kind(&self) -> Kind {
        self.var_store().kind()
    }

    /// The model's own way from the residual stream to next-token logits (its final norm,
    /// unembedding and final soft-cap), which the [logit lens](crate::lens) reads every layer
    /// through; `None` for a model without an unembedding (BERT, `GPT2Model`, or a base-model
    /// folder saved without `lm_head`).
    fn readout(&self) -> Option<Readout<'_>> {
        None
    }

    /// One step of decoding with a KV cache: runs the tokens `input_ids` `[B, Tq]` at their
    /// `positions` `[B, Tq]` (int64; each row's own, counting its real tokens from 0), after
    /// the tokens `cache` holds, and appends their keys and values to it. `valid` `[B, Tq]` is 1
    /// for a real token and 0 for a column that holds none (a short prompt's padding, a row that
    /// has finished): no later token attends to it. Returns the last hidden state `[B, Tq, H]`,
    /// as [`forward`](Self::forward) returns it. Every capture site and intervention fires, on
    /// this step's tokens.
    ///
    /// A prompt's prefill and then one token at a time give each real token the same hidden
    /// state as one [`forward`](Self::forward) over the whole sequence, to float rounding. After
    /// an error the cache is in an unknown state: start a new one.
    ///
    /// # Errors
    ///
    /// [`ModelError::NotCausal`] for a model that does not decode (BERT, `GPT2Model`);
    /// [`ModelError::InvalidInput`] for shapes that differ, ids outside the vocabulary, a
    /// position past [`max_length`](Self::max_length), or a batch size other than the cache's.
    fn forward_cached(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        valid: &Tensor,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let _ = (input_ids, positions, valid, cache);
        Err(ModelError::NotCausal {
            model_type: self.model_type(),
        })
    }

    /// What loading noticed that the user should hear, one line each: a `config.json` that
    /// contradicts its weights, resolved as transformers resolves it (a tied head over a stored
    /// head of its own: the stored one is used). Empty for most folders.
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }

    /// The residual stream's layers, in order: the embedding's output (the residual entering
    /// the first block) and each block's output. What the logit lens reads by default; empty
    /// for a model without a [`readout`](Self::readout).
    fn residual_layers(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The keys and values each attention layer has seen, per row, and where: what lets a causal LM
/// decode one token at a time without recomputing the prefix (a KV cache). Start with
/// [`KvCache::new`]; [`TextModel::forward_cached`] fills it. It lives on the model's device and
/// holds `2 × layers × B × kv_heads × tokens × head_dim` values.
#[derive(Debug, Default)]
pub struct KvCache {
    slots: Vec<KvSlot>,
    /// `[B, Tk]` int64: each key column's position, and `[B, Tk]` bool: whether it holds a token.
    columns: Option<(Tensor, Tensor)>,
    /// What a model fixes per row at the prefill and keeps for the batch's life (Phi-3's choice
    /// of `longrope` factors, `[B]` bool).
    rows: Option<Tensor>,
}

impl KvCache {
    /// An empty cache, for a new batch.
    #[must_use]
    pub fn new() -> Self {
        KvCache::default()
    }

    /// How many key columns it holds (the prefill's width plus one per step).
    #[must_use]
    pub fn len(&self) -> usize {
        self.columns
            .as_ref()
            .map_or(0, |(p, _)| usize::try_from(p.size()[1]).unwrap_or(0))
    }

    /// Whether it holds nothing yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends a step's columns and returns every key column's position and validity so far.
    fn advance(&mut self, positions: &Tensor, valid: &Tensor) -> Result<(Tensor, Tensor)> {
        let valid = valid.f_ne(0)?;
        let columns = match &self.columns {
            None => (positions.shallow_clone(), valid),
            Some((p, v)) if p.size()[0] == positions.size()[0] => {
                (Tensor::f_cat(&[p, positions], 1)?, Tensor::f_cat(&[v, &valid], 1)?)
            }
            Some((p, _)) => {
                return Err(ModelError::InvalidInput {
                    reason: format!(
                        "the cache holds {} rows but the step has {}; start a new `KvCache` for a new batch",
                        p.size()[0],
                        positions.size()[0]
                    ),
                })
            }
        };
        let out = (columns.0.shallow_clone(), columns.1.shallow_clone());
        self.columns = Some(columns);
        Ok(out)
    }

    /// Appends a step's columns (as [`advance`](Self::advance)) and returns the step's attention
    /// mask over every column so far: by position, with an optional sliding `window`.
    pub(crate) fn step_mask(
        &mut self,
        positions: &Tensor,
        valid: &Tensor,
        window: Option<i64>,
        kind: Kind,
    ) -> Result<Mask> {
        let (key_positions, key_valid) = self.advance(positions, valid)?;
        Ok(attention::positions_mask(
            positions,
            &key_positions,
            &key_valid,
            window,
            kind,
        ))
    }

    /// The steps's masks as [`step_mask`](Self::step_mask) makes them, for a model whose layers
    /// attend fully and (when `any_sliding`) within `window`: `(full, sliding)`.
    pub(crate) fn step_masks(
        &mut self,
        positions: &Tensor,
        valid: &Tensor,
        window: Option<i64>,
        any_sliding: bool,
        kind: Kind,
    ) -> Result<(Mask, Option<Mask>)> {
        let (key_positions, key_valid) = self.advance(positions, valid)?;
        let mask = |window| attention::positions_mask(positions, &key_positions, &key_valid, window, kind);
        let sliding = window.filter(|_| any_sliding).map(|w| mask(Some(w)));
        Ok((mask(None), sliding))
    }

    /// The per-row state fixed at the prefill: `first()` on the first step (while the cache is
    /// empty), the stored value after.
    pub(crate) fn rows_state(&mut self, first: impl FnOnce() -> Tensor) -> Tensor {
        if self.is_empty() || self.rows.is_none() {
            self.rows = Some(first());
        }
        self.rows.as_ref().map_or_else(Tensor::new, Tensor::shallow_clone)
    }

    /// The slots of a model's `layers` attention layers, in order.
    pub(crate) fn slots(&mut self, layers: usize) -> &mut [KvSlot] {
        self.slots.resize_with(layers, KvSlot::default);
        &mut self.slots
    }
}

/// A residual stream's layer names: `embedding`, then `blocks.0` to `blocks.{count - 1}`.
pub(crate) fn residual_stream(embedding: &str, blocks: &str, count: usize) -> Vec<String> {
    std::iter::once(embedding.to_owned())
        .chain((0..count).map(|i| format!("{blocks}.{i}")))
        .collect()
}

/// Validates a cached step (as [`check_inputs`], and positions within `max_length`) and moves it
/// to `device`: ids and positions as `Int64`, `valid` as it came.
pub(crate) fn check_step(
    input_ids: &Tensor,
    positions: &Tensor,
    valid: &Tensor,
    max_length: i64,
    vocab_size: i64,
    device: Device,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (ids, valid) = check_inputs(input_ids, valid, i64::MAX, vocab_size, device)?;
    if positions.size() != input_ids.size() || !is_integer(positions.kind()) {
        return Err(ModelError::InvalidInput {
            reason: format!(
                "`positions` has shape {:?} and dtype {:?}; give an integer tensor of the ids' shape {:?}",
                positions.size(),
                positions.kind(),
                input_ids.size()
            ),
        });
    }
    let positions = positions.f_to_device(device)?.f_to_kind(Kind::Int64)?;
    let (low, high) = (positions.f_min()?.int64_value(&[]), positions.f_max()?.int64_value(&[]));
    if low < 0 || high >= max_length {
        return Err(ModelError::InvalidInput {
            reason: format!(
                "positions run from {low} to {high}, but the model has positions 0..{max_length}; stop generating before the model's maximum length"
            ),
        });
    }
    Ok((ids, positions, valid))
}

/// A causal LM's read-out from a residual `h` `[..., hidden]` to logits `[..., vocab]`: its own
/// final norm (recomputed on `h`), its unembedding (`lm_head`, tied or not), then its final logit
/// soft-cap where the architecture has one (`cap × tanh(logits / cap)`, transformers'
/// `final_logit_softcapping`). Applied to the last block's output it gives the logits the model
/// returns.
///
/// It calls the modules themselves, not their capture sites: reading a layer through it never
/// shows up in a store or meets an intervention.
pub struct Readout<'a> {
    norm: &'a dyn nn::Module,
    norm_layer: &'static str,
    head: &'a nn::Linear,
    final_logit_softcapping: Option<f64>,
}

impl fmt::Debug for Readout<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Readout")
            .field("norm", &self.norm_layer)
            .field("head", &self.head.ws.size())
            .field("final_logit_softcapping", &self.final_logit_softcapping)
            .finish()
    }
}

impl<'a> Readout<'a> {
    /// The read-out through `norm` (the layer at path `norm_layer`), then `head`, then the
    /// soft-cap `cap` when given.
    pub(crate) fn new(
        norm: &'a dyn nn::Module,
        norm_layer: &'static str,
        head: &'a nn::Linear,
        final_logit_softcapping: Option<f64>,
    ) -> Self {
        Readout {
            norm,
            norm_layer,
            head,
            final_logit_softcapping,
        }
    }

    /// The path of the final norm's layer (`model.norm`): its output is already normalised, so
    /// it is read through [`logits_of_normed`](Self::logits_of_normed).
    #[must_use]
    pub fn norm_layer(&self) -> &'static str {
        self.norm_layer
    }

    /// The logits `[..., vocab]` of a residual `[..., hidden]`, in the model's kind: the final
    /// norm, the unembedding, the soft-cap.
    pub fn logits(&self, residual: &Tensor) -> Tensor {
        self.logits_of_normed(&self.norm.forward(residual))
    }

    /// The logits of a hidden state the final norm has already normalised (what
    /// [`TextModel::forward`] returns): the unembedding, then the soft-cap.
    pub fn logits_of_normed(&self, normed: &Tensor) -> Tensor {
        let logits = self.head.forward(normed);
        match self.final_logit_softcapping {
            Some(cap) => (logits / cap).tanh() * cap,
            None => logits,
        }
    }

    /// The soft-cap applied to the logits, if any.
    #[must_use]
    pub fn final_logit_softcapping(&self) -> Option<f64> {
        self.final_logit_softcapping
    }
}

/// The extraction engine runs any text model with its mask, padding with its `pad_token_id`.
impl hooks::BatchForward for dyn TextModel + '_ {
    fn forward_batch(&self, input_ids: &Tensor, attention_mask: &Tensor) -> hooks::Result<()> {
        self.forward(input_ids, attention_mask)
            .map(drop)
            .map_err(|e| hooks::Error::Model(Box::new(e)))
    }

    fn pad_id(&self) -> Option<i64> {
        Some(self.pad_token_id())
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

/// An architecture that loads from a Hugging Face folder: what [`load`](crate::load)'s table of
/// architectures needs of each.
pub(crate) trait Pretrained: TextModel + Sized + 'static {
    /// `config.json`'s `model_type` for this architecture.
    const MODEL_TYPE: &'static str;

    /// Builds the model from the folder's parsed `config.json` and fills it from its weights.
    fn load_from(dir: &Path, file: &ConfigFile, device: Device, kind: Kind) -> Result<Self>;
}

/// Whether a causal LM loaded from this folder gets an untied `lm_head`: unless `config.json`
/// says the folder holds the base model alone (`architectures` names no `...ForCausalLM` class,
/// as `LlamaModel.save_pretrained` writes it) and the weights hold none of the head's `stored`
/// names. Otherwise a missing head weight stays an error.
pub(crate) fn has_head(file: &ConfigFile, checkpoint: &Checkpoint, stored: &[&str]) -> bool {
    let classes = file.architectures();
    let base_only = !classes.is_empty() && !classes.iter().any(|class| class.ends_with("ForCausalLM"));
    !base_only || stored.iter().any(|name| checkpoint.contains(name, ""))
}

/// Loads the folder as architecture `M`, refusing a folder of another `model_type`.
pub(crate) fn load_as<M: Pretrained>(dir: &Path, device: Device, kind: Kind) -> Result<M> {
    let file = ConfigFile::open(dir, kind)?;
    file.expect_model_type(&[M::MODEL_TYPE])?;
    M::load_from(dir, &file, device, kind)
}
