//! Mistral, as transformers' `MistralForCausalLM` computes it
//! ([`modeling_mistral.py`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/mistral/modeling_mistral.py)):
//! its config; the computation is Llama's, [`crate::decoder`]'s, with a sliding window of attention.

use serde::Deserialize;

use crate::activation::Activation;
use crate::config::{ArchConfig, Invalid};
use crate::decoder::{sealed, CausalLm, DecoderConfig, DecoderSpec, Features};
use crate::layers::RmsStyle;
use crate::rope::RopeParameters;

/// Mistral with its language-model head: transformers' `MistralForCausalLM`. See [`CausalLm`] for
/// its layers.
pub type Mistral = CausalLm<MistralConfig>;

/// The hyper-parameters of a Mistral decoder: transformers'
/// [`MistralConfig`](https://huggingface.co/docs/transformers/model_doc/mistral#transformers.MistralConfig),
/// only what the forward pass reads. `Default` gives transformers' defaults (Mistral-7B's shape).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct MistralConfig {
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
    /// transformers 5's rotary settings.
    pub rope_parameters: Option<RopeParameters>,
    /// The rotary base of older checkpoints (with `rope_scaling`).
    pub rope_theta: Option<f64>,
    /// The rotary scaling of older checkpoints (`type` or `rope_type`, `factor`, ...).
    pub rope_scaling: Option<RopeParameters>,
    /// A query attends to at most this many keys, itself included; `None` for plain causal.
    pub sliding_window: Option<i64>,
}

impl Default for MistralConfig {
    /// transformers' `MistralConfig()` defaults.
    fn default() -> Self {
        MistralConfig {
            vocab_size: 32000,
            hidden_size: 4096,
            intermediate_size: 14336,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: Some(8),
            head_dim: None,
            hidden_act: Activation::Silu,
            max_position_embeddings: 4096 * 32,
            initializer_range: 0.02,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: false,
            rope_parameters: None,
            rope_theta: None,
            rope_scaling: None,
            sliding_window: Some(4096),
        }
    }
}

impl ArchConfig for MistralConfig {
    const ACTIVATION_FIELD: &'static str = "hidden_act";

    fn check(&self) -> std::result::Result<(), Invalid> {
        sealed::Sealed::spec(self).check()
    }
}

impl DecoderConfig for MistralConfig {
    const MODEL_TYPE: &'static str = "mistral";
}

impl sealed::Sealed for MistralConfig {
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
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            qk_norm: false,
            sliding_window: self.sliding_window,
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
