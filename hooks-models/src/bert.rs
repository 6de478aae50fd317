//! BERT, as transformers' `BertModel` computes it, with every module at its PyTorch path.
//!
//! This file doubles as the worked example of annotating a model for `hooks`: each module is a
//! `#[derive(Hookable)]` struct; each sub-module whose output should be capturable is a
//! `Hook<...>` field (tch's `nn` types included); `#[hook(rename = "...")]` gives a field the
//! name PyTorch uses when Rust cannot (`self`) or style would not (`LayerNorm`); and a module
//! with a forward of its own signature is run through [`Hook::call`]. Fields of other types
//! (sizes, the activation) are not layers and need no attribute.

use std::path::Path;

use hooks::Hookable;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use crate::activation::Activation;
use crate::attention;
use crate::config::{BertConfig, ConfigFile};
use crate::error::Result;
use crate::model::{self, embedding, layer_norm, TextModel};
use crate::weights::Checkpoint;
// `hooks::Hook`; a pass-through under the `uninstrumented` feature, for the benchmark (see lib.rs).
use crate::Hook;

/// How `BertFor...` checkpoints prefix the base model's weights.
const PREFIX: &str = "bert.";

/// A BERT encoder (transformers' `BertModel`): embeddings, `num_hidden_layers` encoder layers
/// and, when the weights have one, the pooler.
///
/// Its layers are named as `BertModel.named_modules()` names them: `embeddings`,
/// `embeddings.word_embeddings`, `encoder.layer.3.attention.self.query`, `pooler.dense`, ...;
/// dropouts and activation functions hold no parameters and are not layers.
///
/// ```no_run
/// use hooks::{ActivationStore, Hookable};
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
    device: Device,
    kind: Kind,
}

/// `embeddings`: word + token type + position embeddings, then LayerNorm.
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

/// `encoder`: the stack of layers.
#[derive(Debug, Hookable)]
pub struct BertEncoder {
    /// `encoder.layer.N`.
    pub layer: Vec<Hook<BertLayer>>,
}

/// `encoder.layer.N`: self-attention, then the feed-forward block.
#[derive(Debug, Hookable)]
pub struct BertLayer {
    /// `encoder.layer.N.attention`.
    pub attention: Hook<BertAttention>,
    /// `encoder.layer.N.intermediate`: the feed-forward block's first half.
    pub intermediate: Hook<BertIntermediate>,
    /// `encoder.layer.N.output`: the feed-forward block's second half, residual and LayerNorm.
    pub output: Hook<BertOutput>,
}

/// `encoder.layer.N.attention`: multi-head self-attention, then projection, residual and
/// LayerNorm.
#[derive(Debug, Hookable)]
pub struct BertAttention {
    /// `encoder.layer.N.attention.self`: its output is the heads' merged context, `[B, T, H]`.
    #[hook(rename = "self")]
    pub self_attention: Hook<BertSelfAttention>,
    /// `encoder.layer.N.attention.output`.
    pub output: Hook<BertSelfOutput>,
}

/// `encoder.layer.N.attention.self`: the query, key and value projections and the attention.
#[derive(Debug, Hookable)]
pub struct BertSelfAttention {
    /// `...attention.self.query`.
    pub query: Hook<nn::Linear>,
    /// `...attention.self.key`.
    pub key: Hook<nn::Linear>,
    /// `...attention.self.value`.
    pub value: Hook<nn::Linear>,
    heads: i64,
    scaling: f64,
}

/// `encoder.layer.N.attention.output`: `LayerNorm(dense(context) + input)`.
#[derive(Debug, Hookable)]
pub struct BertSelfOutput {
    /// `...attention.output.dense`.
    pub dense: Hook<nn::Linear>,
    /// `...attention.output.LayerNorm`.
    #[hook(rename = "LayerNorm")]
    pub layer_norm: Hook<nn::LayerNorm>,
}

/// `encoder.layer.N.intermediate`: `act(dense(x))`.
#[derive(Debug, Hookable)]
pub struct BertIntermediate {
    /// `...intermediate.dense`.
    pub dense: Hook<nn::Linear>,
    act: Activation,
}

/// `encoder.layer.N.output`: `LayerNorm(dense(x) + attention_output)`.
#[derive(Debug, Hookable)]
pub struct BertOutput {
    /// `...output.dense`.
    pub dense: Hook<nn::Linear>,
    /// `...output.LayerNorm`.
    #[hook(rename = "LayerNorm")]
    pub layer_norm: Hook<nn::LayerNorm>,
}

/// `pooler`: `tanh(dense(x[:, 0]))`, the first token's state, `[B, H]`.
#[derive(Debug, Hookable)]
pub struct BertPooler {
    /// `pooler.dense`.
    pub dense: Hook<nn::Linear>,
}

/// Weights are overwritten by the checkpoint: skip random initialisation.
fn linear(p: nn::Path<'_>, input: i64, output: i64) -> Hook<nn::Linear> {
    let config = nn::LinearConfig {
        ws_init: nn::Init::Const(0.0),
        bs_init: Some(nn::Init::Const(0.0)),
        bias: true,
    };
    Hook::new(nn::linear(p, input, output, config))
}

impl Bert {
    /// Loads the BERT in `dir` (`config.json` with `model_type: "bert"`, `model.safetensors`)
    /// onto `device` in `kind`. Weights stored under a `bert.` prefix (a `BertFor...`
    /// checkpoint) load too; other tensors in the file are ignored.
    ///
    /// # Errors
    ///
    /// As [`Model::load`](crate::Model::load); [`ModelError::UnsupportedModelType`](crate::ModelError::UnsupportedModelType)
    /// when the folder holds another architecture.
    pub fn load(dir: impl AsRef<Path>, device: Device, kind: Kind) -> Result<Bert> {
        let dir = dir.as_ref();
        let config = model::open(dir, kind)?;
        model::expect_model_type(&config, &["bert"])?;
        Bert::from_config(dir, &config, device, kind)
    }

    pub(crate) fn from_config(dir: &Path, file: &ConfigFile, device: Device, kind: Kind) -> Result<Bert> {
        let (config, act) = file.bert()?;
        let checkpoint = Checkpoint::read(dir)?;
        let mut vs = nn::VarStore::new(device);
        vs.set_kind(kind);
        let pooler = checkpoint.contains("pooler.dense.weight", PREFIX);
        let bert = Bert::new(&vs.root(), config, act, pooler, kind);
        checkpoint.load_into(&mut vs, PREFIX)?;
        Ok(bert)
    }

    fn new(p: &nn::Path<'_>, config: BertConfig, act: Activation, pooler: bool, kind: Kind) -> Bert {
        let h = config.hidden_size;
        let eps = config.layer_norm_eps;
        let e = p / "embeddings";
        let embeddings = BertEmbeddings {
            word_embeddings: embedding(&e / "word_embeddings", config.vocab_size, h),
            position_embeddings: embedding(&e / "position_embeddings", config.max_position_embeddings, h),
            token_type_embeddings: embedding(&e / "token_type_embeddings", config.type_vocab_size, h),
            layer_norm: layer_norm(&e / "LayerNorm", h, eps),
        };
        let layers = p / "encoder" / "layer";
        let layer = (0..config.num_hidden_layers)
            .map(|i| {
                let l = &layers / i;
                let heads = config.num_attention_heads;
                let a = &l / "attention";
                let attention = BertAttention {
                    self_attention: Hook::new(BertSelfAttention {
                        query: linear(&a / "self" / "query", h, h),
                        key: linear(&a / "self" / "key", h, h),
                        value: linear(&a / "self" / "value", h, h),
                        heads,
                        // transformers computes `head_dim ** -0.5` in double precision too.
                        scaling: 1.0 / ((h / heads) as f64).sqrt(),
                    }),
                    output: Hook::new(BertSelfOutput {
                        dense: linear(&a / "output" / "dense", h, h),
                        layer_norm: layer_norm(&a / "output" / "LayerNorm", h, eps),
                    }),
                };
                Hook::new(BertLayer {
                    attention: Hook::new(attention),
                    intermediate: Hook::new(BertIntermediate {
                        dense: linear(&l / "intermediate" / "dense", h, config.intermediate_size),
                        act,
                    }),
                    output: Hook::new(BertOutput {
                        dense: linear(&l / "output" / "dense", config.intermediate_size, h),
                        layer_norm: layer_norm(&l / "output" / "LayerNorm", h, eps),
                    }),
                })
            })
            .collect();
        let pooler = pooler.then(|| {
            Hook::new(BertPooler {
                dense: linear(p / "pooler" / "dense", h, h),
            })
        });
        Bert {
            embeddings: Hook::new(embeddings),
            encoder: Hook::new(BertEncoder { layer }),
            pooler,
            config,
            device: p.device(),
            kind,
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
        let (ids, mask) = model::check_inputs(
            input_ids,
            attention_mask,
            self.config.max_position_embeddings,
            self.config.vocab_size,
            self.device,
        )?;
        Ok(self.run(&ids, &mask))
    }

    /// The forward pass on inputs already checked and on the model's device.
    fn run(&self, input_ids: &Tensor, attention_mask: &Tensor) -> (Tensor, Option<Tensor>) {
        let _no_grad = tch::no_grad_guard();
        let hidden = self.embeddings.call(|m| m.forward(input_ids));
        let mask = attention::padding_mask(attention_mask, self.kind);
        let hidden = self.encoder.call(|m| m.forward(&hidden, &mask));
        let pooled = self.pooler.as_ref().map(|p| p.call(|m| m.forward(&hidden)));
        (hidden, pooled)
    }
}

impl TextModel for Bert {
    fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        self.forward_with_pooler(input_ids, attention_mask)
            .map(|(hidden, _)| hidden)
    }

    fn max_length(&self) -> usize {
        model::to_usize(self.config.max_position_embeddings)
    }

    fn model_type(&self) -> &'static str {
        "bert"
    }

    fn hidden_size(&self) -> usize {
        model::to_usize(self.config.hidden_size)
    }

    fn device(&self) -> Device {
        self.device
    }

    fn kind(&self) -> Kind {
        self.kind
    }
}

/// The forward on unpadded token ids `[B, T]` (attention mask all ones), returning the last
/// hidden state: what [`hooks::extract_representations`] runs. It panics on ids outside the
/// vocabulary or `T` past [`TextModel::max_length`]; [`TextModel::forward`] reports those as
/// errors instead.
impl nn::ModuleT for Bert {
    fn forward_t(&self, input_ids: &Tensor, _train: bool) -> Tensor {
        let ids = input_ids.to_device(self.device);
        self.run(&ids, &ids.ones_like()).0
    }
}

impl BertEmbeddings {
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

impl BertEncoder {
    fn forward(&self, hidden: &Tensor, mask: &attention::Mask) -> Tensor {
        let mut hidden = hidden.shallow_clone();
        for layer in &self.layer {
            hidden = layer.call(|m| m.forward(&hidden, mask));
        }
        hidden
    }
}

impl BertLayer {
    fn forward(&self, hidden: &Tensor, mask: &attention::Mask) -> Tensor {
        let attention = self.attention.call(|m| m.forward(hidden, mask));
        let intermediate = self.intermediate.call(|m| m.forward(&attention));
        self.output.call(|m| m.forward(&intermediate, &attention))
    }
}

impl BertAttention {
    fn forward(&self, hidden: &Tensor, mask: &attention::Mask) -> Tensor {
        let context = self.self_attention.call(|m| m.forward(hidden, mask));
        self.output.call(|m| m.forward(&context, hidden))
    }
}

impl BertSelfAttention {
    fn forward(&self, hidden: &Tensor, mask: &attention::Mask) -> Tensor {
        let query = attention::split_heads(&self.query.forward(hidden), self.heads);
        let key = attention::split_heads(&self.key.forward(hidden), self.heads);
        let value = attention::split_heads(&self.value.forward(hidden), self.heads);
        attention::attend(&query, &key, &value, mask, self.scaling)
    }
}

impl BertSelfOutput {
    fn forward(&self, hidden: &Tensor, input: &Tensor) -> Tensor {
        self.layer_norm.forward(&(self.dense.forward(hidden) + input))
    }
}

impl BertIntermediate {
    fn forward(&self, hidden: &Tensor) -> Tensor {
        self.act.apply(&self.dense.forward(hidden))
    }
}

impl BertOutput {
    fn forward(&self, hidden: &Tensor, input: &Tensor) -> Tensor {
        self.layer_norm.forward(&(self.dense.forward(hidden) + input))
    }
}

impl BertPooler {
    fn forward(&self, hidden: &Tensor) -> Tensor {
        self.dense.forward(&hidden.select(1, 0)).tanh()
    }
}
