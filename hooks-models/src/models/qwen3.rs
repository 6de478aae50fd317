//! Qwen3, as transformers' `Qwen3ForCausalLM` computes it
//! ([`modeling_qwen3.py`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/qwen3/modeling_qwen3.py)):
//! its config; the computation is Llama's, [`crate::decoder`]'s, with an RMS norm over each head's query and key (`q_norm`, `k_norm`).

use serde::Deserialize;

use crate::activation::Activation;
use crate::config::{ArchConfig, Invalid};
use crate::decoder::{full_attention_only, sealed, CausalLm, DecoderConfig, DecoderSpec, Features};
use crate::layers::RmsStyle;
use crate::rope::RopeParameters;

/// Qwen3 with its language-model head: transformers' `Qwen3ForCausalLM`. See [`CausalLm`] for
/// its layers.
pub type Qwen3 = CausalLm<Qwen3Config>;

/// The hyper-parameters of a Qwen3 decoder: transformers'
/// [`Qwen3Config`](https://huggingface.co/docs/transformers/model_doc/qwen3#transformers.Qwen3Config),
/// only what the forward pass reads. `Default` gives transformers' defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Qwen3Config {
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
    /// Width of one head, independent of `hidden_size / num_attention_heads`.
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
    /// transformers 5's rotary settings.
    pub rope_parameters: Option<RopeParameters>,
    /// The rotary base of older checkpoints (with `rope_scaling`).
    pub rope_theta: Option<f64>,
    /// The rotary scaling of older checkpoints (`type` or `rope_type`, `factor`, ...).
    pub rope_scaling: Option<RopeParameters>,
    /// Biases on the attention's projections.
    pub attention_bias: bool,
    /// Sliding-window attention on some layers: not implemented, refused when on.
    pub use_sliding_window: bool,
    /// Each layer's attention, `full_attention` or `sliding_attention` (refused).
    pub layer_types: Option<Vec<String>>,
}

impl Default for Qwen3Config {
    /// transformers' `Qwen3Config()` defaults.
    fn default() -> Self {
        Qwen3Config {
            vocab_size: 151936,
            hidden_size: 4096,
            intermediate_size: 22016,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: Some(32),
            head_dim: Some(128),
            hidden_act: Activation::Silu,
            max_position_embeddings: 32768,
            initializer_range: 0.02,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: false,
            rope_parameters: None,
            rope_theta: None,
            rope_scaling: None,
            attention_bias: false,
            use_sliding_window: false,
            layer_types: None,
        }
    }
}

impl ArchConfig for Qwen3Config {
    const ACTIVATION_FIELD: &'static str = "hidden_act";

    fn check(&self) -> std::result::Result<(), Invalid> {
        full_attention_only(self.use_sliding_window, self.layer_types.as_deref())?;
        sealed::Sealed::spec(self).check()
    }
}

impl DecoderConfig for Qwen3Config {
    const MODEL_TYPE: &'static str = "qwen3";
}

impl sealed::Sealed for Qwen3Config {
    fn spec(&self) -> DecoderSpec {
        DecoderSpec {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            heads: self.num_attention_heads,
            kv_heads: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            head_dim: self
                .head_dim
                .unwrap_or(self.hidden_size / self.num_attention_heads.max(1)),
            act: self.hidden_act,
            rms_norm_eps: self.rms_norm_eps,
            max_position_embeddings: self.max_position_embeddings,
            initializer_range: self.initializer_range,
            tie_word_embeddings: self.tie_word_embeddings,
            qkv_bias: self.attention_bias,
            o_bias: self.attention_bias,
            mlp_bias: false,
            qk_norm: true,
            sliding_window: None,
            norm: RmsStyle::Llama,
            rope: RopeParameters::resolve(
                self.rope_parameters.as_ref(),
                self.rope_theta,
                self.rope_scaling.as_ref(),
                10_000.0,
            ),
            features: Features::default(),
        }
    }
}
