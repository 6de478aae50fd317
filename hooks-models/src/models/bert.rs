//! BERT, as transformers' `BertModel` computes it
//! ([`modeling_bert.py`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/bert/modeling_bert.py)),
//! with every module at its PyTorch path.
//!
//! This file doubles as the worked example of annotating a model for `hooks`, and reads next to
//! the Python: each module is a `#[derive(Hookable)]` struct with, right below it, its
//! constructor and its forward. Each sub-module whose output should be capturable is a
//! `Hook<...>` field (tch's `nn` types included); `#[hook(rename = "...")]` gives a field the
//! name PyTorch uses when Rust cannot (`self`) or style would not (`LayerNorm`); and a module
//! with a forward of its own signature is run through [`Hook::call`](hooks::Hook::call). Fields
//! of other types (sizes, the activation) are not layers and need no attribute.

use std::path::Path;

use hooks::Hookable;
use serde::Deserialize;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use crate::activation::Activation;
use crate::attention;
use crate::config::{self, ArchConfig, ConfigFile, Invalid};
use crate::error::Result;
use crate::layers::{embedding, layer_norm, linear, Init};
use crate::text_model::{check_inputs, load_as, to_usize, Pretrained, TextModel};
use crate::weights::Checkpoint;
// `hooks::Hook`; a pass-through under the `uninstrumented` feature, for the benchmark (see lib.rs).
use crate::{Hook, HookPoint};

/// How `BertFor...` checkpoints prefix the base model's weights.
const PREFIX: &str = "bert.";

/// The hyper-parameters of a BERT encoder: transformers'
/// [`BertConfig`](https://huggingface.co/docs/transformers/model_doc/bert#transformers.BertConfig),
/// only what the forward pass of `BertModel` reads.
///
/// `Default` gives transformers' defaults (bert-base-uncased's shape), and a field that
/// `config.json` leaves out takes its default. Build a model of any shape in code:
///
/// ```
/// use hooks::LayerTree;
/// use hooks_models::{Bert, BertConfig};
/// use tch::{Device, Kind};
///
/// let mut config = BertConfig::default();
/// config.hidden_size = 32;
/// config.num_hidden_layers = 2;
/// config.num_attention_heads = 4;
/// config.intermediate_size = 64;
/// let bert = Bert::new(&config, Device::Cpu, Kind::Float)?;
/// assert!(bert.layer_names().contains(&"encoder.layer.1.attention.self.query".to_owned()));
/// # Ok::<(), hooks_models::ModelError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct BertConfig {
    /// Rows of `embeddings.word_embeddings`.
    pub vocab_size: i64,
    /// Width of every hidden state.
    pub hidden_size: i64,
    /// Entries of `encoder.layer`.
    pub num_hidden_layers: usize,
    /// Attention heads per layer; divides `hidden_size`.
    pub num_attention_heads: i64,
    /// Width of `intermediate.dense`.
    pub intermediate_size: i64,
    /// The activation after `intermediate.dense`.
    pub hidden_act: Activation,
    /// Rows of `embeddings.position_embeddings`: the longest input.
    pub max_position_embeddings: i64,
    /// Rows of `embeddings.token_type_embeddings`.
    pub type_vocab_size: i64,
    /// Epsilon of every LayerNorm.
    pub layer_norm_eps: f64,
    /// The standard deviation of the random weights of a model built with [`Bert::new`].
    pub initializer_range: f64,
    /// The padding token: its row of `embeddings.word_embeddings` starts at zero in a model
    /// built with [`Bert::new`] (`nn.Embedding(padding_idx=...)`); `None` for none.
    pub pad_token_id: Option<i64>,
    /// Only `absolute` (learned position embeddings) is implemented.
    pub position_embedding_type: String,
    /// A decoder BERT (causal attention) is not implemented.
    pub is_decoder: bool,
    /// Cross-attention layers are not implemented.
    pub add_cross_attention: bool,
}

impl Default for BertConfig {
    /// transformers' `BertConfig()` defaults.
    fn default() -> Self {
        BertConfig {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: Activation::Gelu,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            initializer_range: 0.02,
            pad_token_id: Some(0),
            position_embedding_type: "absolute".into(),
            is_decoder: false,
            add_cross_attention: false,
        }
    }
}

impl ArchConfig for BertConfig {
    const ACTIVATION_FIELD: &'static str = "hidden_act";

    fn check(&self) -> std::result::Result<(), Invalid> {
        if self.position_embedding_type != "absolute" {
            return Err(Invalid::Unsupported {
                setting: format!("`position_embedding_type` is `{}`", self.position_embedding_type),
                hint: "only `absolute` position embeddings are implemented",
            });
        }
        if self.is_decoder || self.add_cross_attention {
            return Err(Invalid::Unsupported {
                setting: "`is_decoder` or `add_cross_attention` is true".into(),
                hint: "only the encoder BERT (`BertModel` as an encoder) is implemented",
            });
        }
        for (name, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            config::positive(name, value)?;
        }
        config::layers("num_hidden_layers", self.num_hidden_layers)?;
        if let Some(pad) = self.pad_token_id.filter(|pad| !(0..self.vocab_size).contains(pad)) {
            return Err(Invalid::Value(format!(
                "`pad_token_id` is {pad}, outside the vocabulary 0..{}",
                self.vocab_size
            )));
        }
        config::heads_divide(
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
        )
    }
}

/// A BERT encoder: transformers' [`BertModel`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/bert/modeling_bert.py). Embeddings, `num_hidden_layers` encoder layers
/// and, when the weights have one, the pooler.
///
/// Its layers are named as `BertModel.named_modules()` names them: `embeddings`,
/// `embeddings.word_embeddings`, `encoder.layer.3.attention.self.query`, `pooler.dense`, ...;
/// dropouts and activation functions hold no parameters and are not layers.
///
/// ```no_run
/// use hooks::ActivationStore;
/// use hooks_models::{Bert, TextModel, Tokenizer};
/// use tch::{Device, Kind};
///
/// let dir = std::path::Path::new("all-MiniLM-L6-v2");
/// let bert = Bert::load(dir, Device::Cpu, Kind::Float)?;
/// let (ids, mask) = Tokenizer::from_dir(dir)?.encode_batch(&["Hello, world!"], bert.max_length())?;
/// let store = ActivationStore::new(&bert, ["encoder.layer.*.attention.output"])?;
/// store.enable();
/// bert.forward(&ids, &mask)?;
/// let third = store.get("encoder.layer.2.attention.output").unwrap(); // [1, T, 384]
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Hookable)]
pub struct Bert {
    /// `embeddings`.
    pub embeddings: Hook<BertEmbeddings>,
    /// `encoder`.
    pub encoder: Hook<BertEncoder>,
    /// `pooler`: present when the weights have `pooler.dense`.
    pub pooler: Option<Hook<BertPooler>>,
    config: BertConfig,
    vs: nn::VarStore,
}

impl Bert {
    /// A BERT of `config`'s shape with random weights, as transformers' `BertModel(config)`
    /// builds one (with its pooler), on `device` in `kind`.
    ///
    /// Its variables are trainable (`requires_grad`), as in a fresh transformers model; a loaded
    /// model's are frozen. Either way [`TextModel::var_store`] holds them, by checkpoint name.
    ///
    /// # Errors
    ///
    /// [`ModelError::BadConfig`](crate::ModelError::BadConfig) or
    /// [`ModelError::UnsupportedConfig`](crate::ModelError::UnsupportedConfig) for a config it
    /// cannot build, [`ModelError::UnsupportedKind`](crate::ModelError::UnsupportedKind).
    pub fn new(config: &BertConfig, device: Device, kind: Kind) -> Result<Bert> {
        config::check_in_code(config, kind)?;
        let init = Init::Random {
            std: config.initializer_range,
        };
        let bert = Bert::build(config.clone(), device, kind, init, true);
        if let Some(pad) = config.pad_token_id {
            let _no_grad = tch::no_grad_guard();
            let _ = bert.embeddings.word_embeddings.ws.get(pad).zero_();
        }
        Ok(bert)
    }

    /// Loads the BERT in `dir` (`config.json` with `model_type: "bert"`, `model.safetensors`)
    /// onto `device` in `kind`. Weights stored under a `bert.` prefix (a `BertFor...`
    /// checkpoint) load too; other tensors in the file are ignored.
    ///
    /// # Errors
    ///
    /// As [`load`](crate::load); [`ModelError::UnsupportedModelType`](crate::ModelError::UnsupportedModelType)
    /// when the folder holds another architecture.
    pub fn load(dir: impl AsRef<Path>, device: Device, kind: Kind) -> Result<Bert> {
        load_as(dir.as_ref(), device, kind)
    }

    fn build(config: BertConfig, device: Device, kind: Kind, init: Init, pooler: bool) -> Bert {
        let mut vs = nn::VarStore::new(device);
        vs.set_kind(kind);
        let p = vs.root();
        let embeddings = Hook::new(BertEmbeddings::new(&p / "embeddings", &config, init));
        let encoder = Hook::new(BertEncoder::new(&p / "encoder", &config, init));
        let pooler = pooler.then(|| Hook::new(BertPooler::new(&p / "pooler", &config, init)));
        Bert {
            embeddings,
            encoder,
            pooler,
            config,
            vs,
        }
    }

    /// The config the model was built from.
    #[must_use]
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Runs the model and returns the last hidden state `[B, T, H]` and, when the model has a
    /// pooler, the pooled output `[B, H]`.
    ///
    /// # Errors
    ///
    /// As [`TextModel::forward`].
    pub fn forward_with_pooler(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let (ids, mask) = check_inputs(
            input_ids,
            attention_mask,
            self.config.max_position_embeddings,
            self.config.vocab_size,
            self.vs.device(),
        )?;
        Ok(self.run(&ids, &mask))
    }

    /// The forward pass on inputs already checked and on the model's device.
    fn run(&self, input_ids: &Tensor, attention_mask: &Tensor) -> (Tensor, Option<Tensor>) {
        let _no_grad = tch::no_grad_guard();
        let hidden = self.embeddings.call_with(input_ids, |m, ids| m.forward(ids));
        let mask = attention::padding_mask(attention_mask, self.vs.kind());
        let hidden = self.encoder.call_with(&hidden, |m, x| m.forward(x, &mask));
        let pooled = self.pooler.as_ref().map(|p| p.call_with(&hidden, |m, x| m.forward(x)));
        (hidden, pooled)
    }
}

impl Pretrained for Bert {
    const MODEL_TYPE: &'static str = "bert";

    fn load_from(dir: &Path, file: &ConfigFile, device: Device, kind: Kind) -> Result<Bert> {
        let config: BertConfig = file.config()?;
        let checkpoint = Checkpoint::read(dir)?;
        let pooler = checkpoint.contains("pooler.dense.weight", PREFIX);
        let h = config.hidden_size;
        let embeddings = [
            ("word_embeddings", config.vocab_size, "`vocab_size` and `hidden_size`"),
            (
                "position_embeddings",
                config.max_position_embeddings,
                "`max_position_embeddings`",
            ),
            ("token_type_embeddings", config.type_vocab_size, "`type_vocab_size`"),
        ];
        for (table, rows, settings) in embeddings {
            checkpoint.expect_shape(&format!("embeddings.{table}.weight"), PREFIX, &[rows, h], settings)?;
        }
        checkpoint.expect_blocks("encoder.layer", PREFIX, config.num_hidden_layers, "`num_hidden_layers`")?;
        if config.num_hidden_layers > 0 {
            let inner = [config.intermediate_size, h];
            checkpoint.expect_shape(
                "encoder.layer.0.intermediate.dense.weight",
                PREFIX,
                &inner,
                "`intermediate_size`",
            )?;
        }
        let mut bert = Bert::build(config, device, kind, Init::Placeholder, pooler);
        checkpoint.load_into(&mut bert.vs, PREFIX)?;
        Ok(bert)
    }
}

impl TextModel for Bert {
    fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        self.forward_with_pooler(input_ids, attention_mask)
            .map(|(hidden, _)| hidden)
    }

    fn max_length(&self) -> usize {
        to_usize(self.config.max_position_embeddings)
    }

    fn model_type(&self) -> &'static str {
        Self::MODEL_TYPE
    }

    fn hidden_size(&self) -> usize {
        to_usize(self.config.hidden_size)
    }

    fn vocab_size(&self) -> usize {
        to_usize(self.config.vocab_size)
    }

    fn pad_token_id(&self) -> i64 {
        self.config.pad_token_id.unwrap_or(0)
    }

    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
}

/// The forward on unpadded token ids `[B, T]` (attention mask all ones), returning the last
/// hidden state: what [`hooks::extract_representations`] runs. It panics on ids outside the
/// vocabulary or `T` past [`TextModel::max_length`]; [`TextModel::forward`] reports those as
/// errors instead.
impl nn::ModuleT for Bert {
    fn forward_t(&self, input_ids: &Tensor, _train: bool) -> Tensor {
        let ids = input_ids.to_device(self.vs.device());
        self.run(&ids, &ids.ones_like()).0
    }
}

/// `embeddings`: word + token type + position embeddings, then LayerNorm (transformers' [`BertEmbeddings`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/bert/modeling_bert.py)).
#[derive(Debug, Hookable)]
pub struct BertEmbeddings {
    /// `embeddings.word_embeddings`.
    pub word_embeddings: Hook<nn::Embedding>,
    /// `embeddings.position_embeddings`; its output is `[1, T, H]`, as in transformers.
    pub position_embeddings: Hook<nn::Embedding>,
    /// `embeddings.token_type_embeddings` (every token has type 0).
    pub token_type_embeddings: Hook<nn::Embedding>,
    /// `embeddings.LayerNorm`.
    #[hook(rename = "LayerNorm")]
    pub layer_norm: Hook<nn::LayerNorm>,
}

impl BertEmbeddings {
    fn new(p: nn::Path<'_>, config: &BertConfig, init: Init) -> Self {
        let h = config.hidden_size;
        BertEmbeddings {
            word_embeddings: embedding(&p / "word_embeddings", config.vocab_size, h, init),
            position_embeddings: embedding(&p / "position_embeddings", config.max_position_embeddings, h, init),
            token_type_embeddings: embedding(&p / "token_type_embeddings", config.type_vocab_size, h, init),
            layer_norm: layer_norm(&p / "LayerNorm", h, config.layer_norm_eps),
        }
    }

    fn forward(&self, input_ids: &Tensor) -> Tensor {
        let (batch, len) = (input_ids.size()[0], input_ids.size()[1]);
        let device = input_ids.device();
        let position_ids = Tensor::arange(len, (Kind::Int64, device)).unsqueeze(0);
        let token_type_ids = Tensor::zeros([batch, len], (Kind::Int64, device));
        // transformers' order of additions, so the sums round alike.
        let embeddings = self.word_embeddings.forward(input_ids) + self.token_type_embeddings.forward(&token_type_ids);
        let embeddings = embeddings + self.position_embeddings.forward(&position_ids);
        self.layer_norm.forward(&embeddings)
    }
}

/// `encoder`: the stack of layers (transformers' [`BertEncoder`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/bert/modeling_bert.py)).
#[derive(Debug, Hookable)]
pub struct BertEncoder {
    /// `encoder.layer.N`.
    pub layer: Vec<Hook<BertLayer>>,
}

impl BertEncoder {
    fn new(p: nn::Path<'_>, config: &BertConfig, init: Init) -> Self {
        let layer = (0..config.num_hidden_layers)
            .map(|i| Hook::new(BertLayer::new(&p / "layer" / i, config, init)))
            .collect();
        BertEncoder { layer }
    }

    fn forward(&self, hidden: &Tensor, mask: &attention::Mask) -> Tensor {
        let mut hidden = hidden.shallow_clone();
        for layer in &self.layer {
            hidden = layer.call_with(&hidden, |m, x| m.forward(x, mask));
        }
        hidden
    }
}

/// `encoder.layer.N`: self-attention, then the feed-forward block (transformers' [`BertLayer`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/bert/modeling_bert.py)).
#[derive(Debug, Hookable)]
pub struct BertLayer {
    /// `encoder.layer.N.attention`.
    pub attention: Hook<BertAttention>,
    /// `encoder.layer.N.intermediate`: the feed-forward block's first half.
    pub intermediate: Hook<BertIntermediate>,
    /// `encoder.layer.N.output`: the feed-forward block's second half, residual and LayerNorm.
    pub output: Hook<BertOutput>,
}

impl BertLayer {
    fn new(p: nn::Path<'_>, config: &BertConfig, init: Init) -> Self {
        BertLayer {
            attention: Hook::new(BertAttention::new(&p / "attention", config, init)),
            intermediate: Hook::new(BertIntermediate::new(&p / "intermediate", config, init)),
            output: Hook::new(BertOutput::new(&p / "output", config.intermediate_size, config, init)),
        }
    }

    fn forward(&self, hidden: &Tensor, mask: &attention::Mask) -> Tensor {
        let attention = self.attention.call_with(hidden, |m, x| m.forward(x, mask));
        let intermediate = self.intermediate.call_with(&attention, |m, x| m.forward(x));
        self.output.call_with(&intermediate, |m, x| m.forward(x, &attention))
    }
}

/// `encoder.layer.N.attention`: multi-head self-attention, then projection, residual and
/// LayerNorm (transformers' [`BertAttention`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/bert/modeling_bert.py)).
#[derive(Debug, Hookable)]
pub struct BertAttention {
    /// `encoder.layer.N.attention.self`: its output is the heads' merged context, `[B, T, H]`.
    #[hook(rename = "self")]
    pub self_attention: Hook<BertSelfAttention>,
    /// `encoder.layer.N.attention.output`.
    pub output: Hook<BertSelfOutput>,
}

impl BertAttention {
    fn new(p: nn::Path<'_>, config: &BertConfig, init: Init) -> Self {
        BertAttention {
            self_attention: Hook::new(BertSelfAttention::new(&p / "self", config, init)),
            output: Hook::new(BertSelfOutput::new(&p / "output", config.hidden_size, config, init)),
        }
    }

    fn forward(&self, hidden: &Tensor, mask: &attention::Mask) -> Tensor {
        let context = self.self_attention.call_with(hidden, |m, x| m.forward(x, mask));
        self.output.call_with(&context, |m, x| m.forward(x, hidden))
    }
}

/// `encoder.layer.N.attention.self`: the query, key and value projections and the attention
/// (transformers' [`BertSelfAttention`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/bert/modeling_bert.py), with transformers' default `sdpa` attention).
#[derive(Debug, Hookable)]
pub struct BertSelfAttention {
    /// `...attention.self.query`.
    pub query: Hook<nn::Linear>,
    /// `...attention.self.key`.
    pub key: Hook<nn::Linear>,
    /// `...attention.self.value`.
    pub value: Hook<nn::Linear>,
    /// `...attention.self.attn_weights`: the attention probabilities `[B, heads, T, T]`, as
    /// `output_attentions=True` gives them (0 on padding keys). Computed, unfused, only when
    /// captured; the output always comes from the fused kernel.
    pub attn_weights: HookPoint,
    heads: i64,
    scaling: f64,
}

impl BertSelfAttention {
    fn new(p: nn::Path<'_>, config: &BertConfig, init: Init) -> Self {
        let (h, heads) = (config.hidden_size, config.num_attention_heads);
        BertSelfAttention {
            query: linear(&p / "query", h, h, true, init),
            key: linear(&p / "key", h, h, true, init),
            value: linear(&p / "value", h, h, true, init),
            attn_weights: HookPoint::observer(),
            heads,
            // transformers' `head_dim**-0.5`, in double precision too: the same bits.
            scaling: ((h / heads) as f64).powf(-0.5),
        }
    }

    fn forward(&self, hidden: &Tensor, mask: &attention::Mask) -> Tensor {
        let query = attention::split_heads(&self.query.forward(hidden), self.heads);
        let key = attention::split_heads(&self.key.forward(hidden), self.heads);
        let value = attention::split_heads(&self.value.forward(hidden), self.heads);
        if self.attn_weights.is_capturing() {
            self.attn_weights
                .observe(&attention::probabilities(&query, &key, mask, self.scaling, false));
        }
        attention::attend(&query, &key, &value, mask, self.scaling)
    }
}

/// `encoder.layer.N.intermediate`: `act(dense(x))` (transformers' [`BertIntermediate`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/bert/modeling_bert.py)).
#[derive(Debug, Hookable)]
pub struct BertIntermediate {
    /// `...intermediate.dense`.
    pub dense: Hook<nn::Linear>,
    act: Activation,
}

impl BertIntermediate {
    fn new(p: nn::Path<'_>, config: &BertConfig, init: Init) -> Self {
        BertIntermediate {
            dense: linear(&p / "dense", config.hidden_size, config.intermediate_size, true, init),
            act: config.hidden_act,
        }
    }

    fn forward(&self, hidden: &Tensor) -> Tensor {
        self.act.apply(&self.dense.forward(hidden))
    }
}

/// `LayerNorm(dense(x) + input)`: transformers' [`BertOutput`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/bert/modeling_bert.py)
/// (`encoder.layer.N.output`, `x` the intermediate state) and `BertSelfOutput`
/// (`encoder.layer.N.attention.output`, `x` the heads' context), two classes that compute the same
/// thing from inputs of different widths.
#[derive(Debug, Hookable)]
pub struct BertOutput {
    /// `...output.dense`.
    pub dense: Hook<nn::Linear>,
    /// `...output.LayerNorm`.
    #[hook(rename = "LayerNorm")]
    pub layer_norm: Hook<nn::LayerNorm>,
}

/// transformers' `BertSelfOutput` (`encoder.layer.N.attention.output`) is a [`BertOutput`] from
/// the hidden width.
pub type BertSelfOutput = BertOutput;

impl BertOutput {
    /// The block at `p` whose `dense` maps `input` features to the hidden width.
    fn new(p: nn::Path<'_>, input: i64, config: &BertConfig, init: Init) -> Self {
        let h = config.hidden_size;
        BertOutput {
            dense: linear(&p / "dense", input, h, true, init),
            layer_norm: layer_norm(&p / "LayerNorm", h, config.layer_norm_eps),
        }
    }

    fn forward(&self, hidden: &Tensor, input: &Tensor) -> Tensor {
        self.layer_norm.forward(&(self.dense.forward(hidden) + input))
    }
}

/// `pooler`: `tanh(dense(x[:, 0]))`, the first token's state, `[B, H]` (transformers' [`BertPooler`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/bert/modeling_bert.py)).
#[derive(Debug, Hookable)]
pub struct BertPooler {
    /// `pooler.dense`.
    pub dense: Hook<nn::Linear>,
}

impl BertPooler {
    fn new(p: nn::Path<'_>, config: &BertConfig, init: Init) -> Self {
        let h = config.hidden_size;
        BertPooler {
            dense: linear(&p / "dense", h, h, true, init),
        }
    }

    fn forward(&self, hidden: &Tensor) -> Tensor {
        self.dense.forward(&hidden.select(1, 0)).tanh()
    }
}
