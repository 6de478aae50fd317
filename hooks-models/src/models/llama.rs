//! Llama, as transformers' `LlamaForCausalLM` computes it
//! ([`modeling_llama.py`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py)):
//! its config; the computation, which Mistral and the Qwens share, is [`crate::decoder`]'s.
//! RMS norm, rotary embeddings (`default`, `linear` and `llama3` rope types), grouped-query
//! attention through the fused kernel, the SwiGLU MLP, and tied or untied embeddings.

use serde::Deserialize;

use crate::activation::Activation;
use crate::config::{ArchConfig, Invalid};
use crate::decoder::{sealed, CausalLm, DecoderConfig, DecoderSpec, Features};
use crate::layers::RmsStyle;
use crate::rope::RopeParameters;

/// Llama with its language-model head: transformers' `LlamaForCausalLM`. See [`CausalLm`] for
/// its layers.
pub type Llama = CausalLm<LlamaConfig>;

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
    /// The standard deviation of the random weights of a model built with [`CausalLm::new`].
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
        sealed::Sealed::spec(self).check()
    }
}

impl DecoderConfig for LlamaConfig {
    const MODEL_TYPE: &'static str = "llama";
}

impl sealed::Sealed for LlamaConfig {
    fn spec(&self) -> DecoderSpec {
        DecoderSpec {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            heads: self.num_attention_heads,
            kv_heads: self.kv_heads(),
            head_dim: self.head_width(),
            act: self.hidden_act,
            rms_norm_eps: self.rms_norm_eps,
            max_position_embeddings: self.max_position_embeddings,
            initializer_range: self.initializer_range,
            tie_word_embeddings: self.tie_word_embeddings,
            qkv_bias: self.attention_bias,
            o_bias: self.attention_bias,
            mlp_bias: self.mlp_bias,
            qk_norm: false,
            sliding_window: None,
            norm: RmsStyle::Llama,
            rope: self.rope(),
            features: Features::default(),
        }
    }
}
