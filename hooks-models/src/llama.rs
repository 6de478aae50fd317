//! Llama, as transformers' `LlamaForCausalLM` computes it
//! ([`modeling_llama.py`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py)),
//! with every module at the path `AutoModelForCausalLM.named_modules()` gives it:
//! `model.embed_tokens`, `model.layers.3.self_attn.q_proj`, `model.norm`, `lm_head`.
//!
//! Laid out like [`crate::bert`]: the config, then each module's struct, constructor and forward.
//! RMS norm, rotary embeddings (`default`, `linear` and `llama3` rope types), grouped-query
//! attention through the fused kernel, the SwiGLU MLP, and tied or untied embeddings.

use std::path::Path;

use hooks::Hookable;
use serde::Deserialize;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use crate::activation::Activation;
use crate::attention;
use crate::config::{self, ArchConfig, ConfigFile, Invalid};
use crate::error::Result;
use crate::layers::{embedding, linear, Init, RmsNorm};
use crate::rope::{RopeParameters, Rotation};
use crate::text_model::{check_inputs, load_as, to_usize, Pretrained, TextModel};
use crate::weights::Checkpoint;
// `hooks::Hook`; a pass-through under the `uninstrumented` feature, for the benchmark (see lib.rs).
use crate::{Hook, HookPoint};

/// The hyper-parameters of a Llama decoder: transformers'
/// [`LlamaConfig`](https://huggingface.co/docs/transformers/model_doc/llama#transformers.LlamaConfig),
/// only what the forward pass reads.
///
/// `Default` gives transformers' defaults (llama-7b's shape). Both forms of the rotary settings
/// load: transformers 5's `rope_parameters`, and the `rope_theta` + `rope_scaling` of older
/// checkpoints.
///
/// ```
/// use hooks::LayerTree;
/// use hooks_models::{Llama, LlamaConfig};
/// use tch::{Device, Kind};
///
/// let mut config = LlamaConfig::default();
/// config.hidden_size = 64;
/// config.intermediate_size = 96;
/// config.num_hidden_layers = 2;
/// config.num_attention_heads = 4;
/// config.num_key_value_heads = Some(2);
/// let llama = Llama::new(&config, Device::Cpu, Kind::Float)?;
/// assert!(llama.layer_names().contains(&"model.layers.1.self_attn.k_proj".to_owned()));
/// # Ok::<(), hooks_models::ModelError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct LlamaConfig {
    /// Rows of `model.embed_tokens` and of `lm_head`'s output.
    pub vocab_size: i64,
    /// Width of every hidden state.
    pub hidden_size: i64,
    /// Width of `mlp.gate_proj` and `mlp.up_proj`.
    pub intermediate_size: i64,
    /// Entries of `model.layers`.
    pub num_hidden_layers: usize,
    /// Query heads per layer.
    pub num_attention_heads: i64,
    /// Key and value heads per layer (grouped-query attention); `None` means one per query head.
    pub num_key_value_heads: Option<i64>,
    /// Width of one head; `None` means `hidden_size / num_attention_heads`.
    pub head_dim: Option<i64>,
    /// The activation of the gate (`silu`).
    pub hidden_act: Activation,
    /// The longest input.
    pub max_position_embeddings: i64,
    /// The standard deviation of the random weights of a model built with [`Llama::new`].
    pub initializer_range: f64,
    /// Epsilon of every RMS norm.
    pub rms_norm_eps: f64,
    /// Whether `lm_head` reuses `model.embed_tokens`' weight.
    pub tie_word_embeddings: bool,
    /// Biases on `q_proj`, `k_proj`, `v_proj` and `o_proj`.
    pub attention_bias: bool,
    /// Biases on the MLP's projections.
    pub mlp_bias: bool,
    /// transformers 5's rotary settings.
    pub rope_parameters: Option<RopeParameters>,
    /// The rotary base of older checkpoints (with `rope_scaling`).
    pub rope_theta: Option<f64>,
    /// The rotary scaling of older checkpoints (`type` or `rope_type`, `factor`, ...).
    pub rope_scaling: Option<RopeParameters>,
}

impl Default for LlamaConfig {
    /// transformers' `LlamaConfig()` defaults.
    fn default() -> Self {
        LlamaConfig {
            vocab_size: 32000,
            hidden_size: 4096,
            intermediate_size: 11008,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: None,
            head_dim: None,
            hidden_act: Activation::Silu,
            max_position_embeddings: 2048,
            initializer_range: 0.02,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: false,
            attention_bias: false,
            mlp_bias: false,
            rope_parameters: None,
            rope_theta: None,
            rope_scaling: None,
        }
    }
}

impl LlamaConfig {
    /// This config with its implied values written out, as transformers' `LlamaConfig` fills
    /// them in when built: `num_key_value_heads`, `head_dim`, and `rope_parameters` (from
    /// `rope_theta` and `rope_scaling`, which it clears).
    #[must_use]
    pub fn resolved(&self) -> LlamaConfig {
        LlamaConfig {
            num_key_value_heads: Some(self.kv_heads()),
            head_dim: Some(self.head_width()),
            rope_parameters: Some(self.rope()),
            rope_theta: None,
            rope_scaling: None,
            ..self.clone()
        }
    }

    /// Key and value heads.
    fn kv_heads(&self) -> i64 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one head.
    fn head_width(&self) -> i64 {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// The rotary settings this config means, in either form.
    fn rope(&self) -> RopeParameters {
        RopeParameters::resolve(
            self.rope_parameters.as_ref(),
            self.rope_theta,
            self.rope_scaling.as_ref(),
            10_000.0,
        )
    }
}

impl ArchConfig for LlamaConfig {
    const ACTIVATION_FIELD: &'static str = "hidden_act";

    fn check(&self) -> std::result::Result<(), Invalid> {
        for (name, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
            ("head_dim", self.head_width()),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            config::positive(name, value)?;
        }
        config::heads_divide(
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
        )?;
        if self.head_width() % 2 != 0 {
            return Err(Invalid::Value(format!(
                "`head_dim` is {}; rotary embeddings need an even width",
                self.head_width()
            )));
        }
        // Builds the inverse frequencies once, on the CPU, to report a bad rope type here.
        self.rope().inv_freq(self.head_width(), Device::Cpu).map(|_| ())
    }
}

/// A Llama decoder with its language-model head: transformers'
/// [`LlamaForCausalLM`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py).
///
/// Its layers are named as `AutoModelForCausalLM.named_modules()` names them: `model`,
/// `model.embed_tokens`, `model.layers.N`, `model.layers.N.self_attn.{q,k,v,o}_proj`,
/// `model.layers.N.mlp.{gate,up,down}_proj`, `model.layers.N.{input,post_attention}_layernorm`,
/// `model.norm` and `lm_head` (the logits, `[B, T, vocab]`, computed only when captured). The
/// rotary embedding and the activation hold no parameters and are not layers.
#[derive(Debug, Hookable)]
pub struct Llama {
    /// `model`: transformers' `LlamaModel`; its output is the last hidden state.
    pub model: Hook<LlamaModel>,
    /// `lm_head`: the logits.
    pub lm_head: Hook<nn::Linear>,
    config: LlamaConfig,
    vs: nn::VarStore,
}

impl Llama {
    /// A Llama of `config`'s shape with random weights (`N(0, initializer_range²)` matrices and
    /// embeddings, unit norms), on `device` in `kind`. Its variables are trainable; a loaded
    /// model's are frozen.
    ///
    /// # Errors
    ///
    /// [`ModelError::BadConfig`](crate::ModelError::BadConfig) or
    /// [`ModelError::UnsupportedConfig`](crate::ModelError::UnsupportedConfig) for a config it
    /// cannot build, [`ModelError::UnsupportedKind`](crate::ModelError::UnsupportedKind).
    pub fn new(config: &LlamaConfig, device: Device, kind: Kind) -> Result<Llama> {
        config::check_in_code(config, kind)?;
        let init = Init::Random {
            std: config.initializer_range,
        };
        Llama::build(config.clone(), device, kind, init)
    }

    /// Loads the Llama in `dir` (`config.json` with `model_type: "llama"`, safetensors weights
    /// named as `LlamaForCausalLM` saves them) onto `device` in `kind`.
    ///
    /// # Errors
    ///
    /// As [`load`](crate::load); [`ModelError::UnsupportedModelType`](crate::ModelError::UnsupportedModelType)
    /// when the folder holds another architecture.
    pub fn load(dir: impl AsRef<Path>, device: Device, kind: Kind) -> Result<Llama> {
        load_as(dir.as_ref(), device, kind)
    }

    fn build(config: LlamaConfig, device: Device, kind: Kind, init: Init) -> Result<Llama> {
        let mut vs = nn::VarStore::new(device);
        vs.set_kind(kind);
        let p = vs.root();
        let model = LlamaModel::new(&p / "model", &config, init)?;
        let lm_head = if config.tie_word_embeddings {
            // The head's weight is the embedding table itself, as transformers ties them.
            Hook::new(nn::Linear {
                ws: model.embed_tokens.ws.shallow_clone(),
                bs: None,
            })
        } else {
            linear(&p / "lm_head", config.hidden_size, config.vocab_size, false, init)
        };
        Ok(Llama {
            model: Hook::new(model),
            lm_head,
            config,
            vs,
        })
    }

    /// The config the model was built from.
    #[must_use]
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }
}

impl Pretrained for Llama {
    const MODEL_TYPE: &'static str = "llama";

    fn load_from(dir: &Path, file: &ConfigFile, device: Device, kind: Kind) -> Result<Llama> {
        let config: LlamaConfig = file.config()?;
        let checkpoint = Checkpoint::read(dir)?;
        let mut llama = Llama::build(config, device, kind, Init::Placeholder)?;
        checkpoint.load_into(&mut llama.vs, "")?;
        Ok(llama)
    }
}

impl TextModel for Llama {
    /// The last hidden state (`model.norm`'s output); `lm_head` runs only when captured.
    fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let (ids, mask) = check_inputs(
            input_ids,
            attention_mask,
            self.config.max_position_embeddings,
            self.config.vocab_size,
            self.vs.device(),
        )?;
        let _no_grad = tch::no_grad_guard();
        let hidden = self.model.call(|m| m.forward(&ids, &mask, self.vs.kind()));
        if self.lm_head.is_capturing() {
            let _ = self.lm_head.forward(&hidden);
        }
        Ok(hidden)
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

    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
}

/// `model`: embeddings, decoder layers and the final norm (transformers'
/// [`LlamaModel`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py)).
#[derive(Debug, Hookable)]
pub struct LlamaModel {
    /// `model.embed_tokens`.
    pub embed_tokens: Hook<nn::Embedding>,
    /// `model.layers.N`.
    pub layers: Vec<Hook<LlamaDecoderLayer>>,
    /// `model.norm`.
    pub norm: Hook<RmsNorm>,
    /// The rotary embedding's inverse frequencies, `[head_dim / 2]` f32 (`model.rotary_emb`,
    /// which has buffers and no parameters, so it is not a layer).
    inv_freq: Tensor,
}

impl LlamaModel {
    fn new(p: nn::Path<'_>, config: &LlamaConfig, init: Init) -> Result<Self> {
        let inv_freq = config
            .rope()
            .inv_freq(config.head_width(), p.device())
            .map_err(|invalid| invalid.into_error(None))?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| Hook::new(LlamaDecoderLayer::new(&p / "layers" / i, config, init)))
            .collect();
        Ok(LlamaModel {
            embed_tokens: embedding(&p / "embed_tokens", config.vocab_size, config.hidden_size, init),
            layers,
            norm: RmsNorm::new(&p / "norm", config.hidden_size, config.rms_norm_eps),
            inv_freq,
        })
    }

    fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor, kind: Kind) -> Tensor {
        let mut hidden = self.embed_tokens.forward(input_ids);
        let rotation = Rotation::new(&self.inv_freq, input_ids.size()[1], kind);
        let mask = attention::causal_padding_mask(attention_mask, kind);
        for layer in &self.layers {
            hidden = layer.call(|m| m.forward(&hidden, &rotation, &mask));
        }
        self.norm.forward(&hidden)
    }
}

/// `model.layers.N`: pre-norm attention and MLP, each with a residual connection (transformers'
/// [`LlamaDecoderLayer`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py)).
#[derive(Debug, Hookable)]
pub struct LlamaDecoderLayer {
    /// `...self_attn`: its output is after `o_proj`, before the residual.
    pub self_attn: Hook<LlamaAttention>,
    /// `...mlp`: its output is before the residual.
    pub mlp: Hook<LlamaMlp>,
    /// `...input_layernorm`.
    pub input_layernorm: Hook<RmsNorm>,
    /// `...post_attention_layernorm`.
    pub post_attention_layernorm: Hook<RmsNorm>,
}

impl LlamaDecoderLayer {
    fn new(p: nn::Path<'_>, config: &LlamaConfig, init: Init) -> Self {
        let (h, eps) = (config.hidden_size, config.rms_norm_eps);
        LlamaDecoderLayer {
            self_attn: Hook::new(LlamaAttention::new(&p / "self_attn", config, init)),
            mlp: Hook::new(LlamaMlp::new(&p / "mlp", config, init)),
            input_layernorm: RmsNorm::new(&p / "input_layernorm", h, eps),
            post_attention_layernorm: RmsNorm::new(&p / "post_attention_layernorm", h, eps),
        }
    }

    fn forward(&self, hidden: &Tensor, rotation: &Rotation, mask: &attention::Mask) -> Tensor {
        let normed = self.input_layernorm.forward(hidden);
        let hidden = hidden + self.self_attn.call(|m| m.forward(&normed, rotation, mask));
        let normed = self.post_attention_layernorm.forward(&hidden);
        &hidden + self.mlp.call(|m| m.forward(&normed))
    }
}

/// `model.layers.N.self_attn`: grouped-query attention with rotary embeddings on queries and
/// keys (transformers' [`LlamaAttention`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py),
/// with its default `sdpa` attention).
#[derive(Debug, Hookable)]
pub struct LlamaAttention {
    /// `...q_proj`: `[B, T, heads × head_dim]`.
    pub q_proj: Hook<nn::Linear>,
    /// `...k_proj`: `[B, T, kv_heads × head_dim]`.
    pub k_proj: Hook<nn::Linear>,
    /// `...v_proj`: `[B, T, kv_heads × head_dim]`.
    pub v_proj: Hook<nn::Linear>,
    /// `...o_proj`: its input holds the heads' outputs side by side.
    pub o_proj: Hook<nn::Linear>,
    /// `...self_attn.attn_weights`: the attention probabilities `[B, heads, T, T]`, as
    /// `output_attentions=True` gives them (0 on future and padding keys). Computed, unfused,
    /// only when captured; the output always comes from the fused kernel.
    pub attn_weights: HookPoint,
    heads: i64,
    kv_heads: i64,
    scaling: f64,
}

impl LlamaAttention {
    fn new(p: nn::Path<'_>, config: &LlamaConfig, init: Init) -> Self {
        let (h, heads, kv_heads, d) = (
            config.hidden_size,
            config.num_attention_heads,
            config.kv_heads(),
            config.head_width(),
        );
        let bias = config.attention_bias;
        LlamaAttention {
            q_proj: linear(&p / "q_proj", h, heads * d, bias, init),
            k_proj: linear(&p / "k_proj", h, kv_heads * d, bias, init),
            v_proj: linear(&p / "v_proj", h, kv_heads * d, bias, init),
            o_proj: linear(&p / "o_proj", heads * d, h, bias, init),
            attn_weights: HookPoint::new(),
            heads,
            kv_heads,
            // transformers' `head_dim**-0.5`, in double precision too: the same bits.
            scaling: (d as f64).powf(-0.5),
        }
    }

    fn forward(&self, hidden: &Tensor, rotation: &Rotation, mask: &attention::Mask) -> Tensor {
        let query = rotation.apply(&attention::split_heads(&self.q_proj.forward(hidden), self.heads));
        let key = rotation.apply(&attention::split_heads(&self.k_proj.forward(hidden), self.kv_heads));
        let value = attention::split_heads(&self.v_proj.forward(hidden), self.kv_heads);
        let groups = self.heads / self.kv_heads;
        let (key, value) = (repeat_kv(&key, groups), repeat_kv(&value, groups));
        if self.attn_weights.is_capturing() {
            let _ = self
                .attn_weights
                .apply(attention::probabilities(&query, &key, mask, self.scaling, true));
        }
        let context = attention::attend(&query, &key, &value, mask, self.scaling);
        self.o_proj.forward(&context)
    }
}

/// transformers' `repeat_kv`: each of the `kv_heads` key or value heads serves `groups` query
/// heads, `[B, kv_heads, T, d]` → `[B, kv_heads × groups, T, d]`.
fn repeat_kv(x: &Tensor, groups: i64) -> Tensor {
    if groups == 1 {
        return x.shallow_clone();
    }
    let size = x.size();
    let (batch, kv_heads, len, d) = (size[0], size[1], size[2], size[3]);
    x.unsqueeze(2)
        .expand([batch, kv_heads, groups, len, d], false)
        .reshape([batch, kv_heads * groups, len, d])
}

/// `model.layers.N.mlp`: `down_proj(act(gate_proj(x)) * up_proj(x))` (transformers'
/// [`LlamaMLP`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py)).
#[derive(Debug, Hookable)]
pub struct LlamaMlp {
    /// `...mlp.gate_proj`.
    pub gate_proj: Hook<nn::Linear>,
    /// `...mlp.up_proj`.
    pub up_proj: Hook<nn::Linear>,
    /// `...mlp.down_proj`.
    pub down_proj: Hook<nn::Linear>,
    act: Activation,
}

impl LlamaMlp {
    fn new(p: nn::Path<'_>, config: &LlamaConfig, init: Init) -> Self {
        let (h, inner, bias) = (config.hidden_size, config.intermediate_size, config.mlp_bias);
        LlamaMlp {
            gate_proj: linear(&p / "gate_proj", h, inner, bias, init),
            up_proj: linear(&p / "up_proj", h, inner, bias, init),
            down_proj: linear(&p / "down_proj", inner, h, bias, init),
            act: config.hidden_act,
        }
    }

    fn forward(&self, hidden: &Tensor) -> Tensor {
        let gated = self.act.apply(&self.gate_proj.forward(hidden)) * self.up_proj.forward(hidden);
        self.down_proj.forward(&gated)
    }
}
