//! OLMo 2, as transformers' `Olmo2ForCausalLM` computes it
//! ([`modeling_olmo2.py`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/olmo2/modeling_olmo2.py)):
//! its config; the computation is [`crate::decoder`]'s with norms after each sublayer only
//! (`post_attention_layernorm`, `post_feedforward_layernorm`, on the sublayer's output before the
//! residual; no norm before), an RMS norm over the **full** query and key projections
//! (`q_norm` of `heads × head_dim`, `k_norm` of `kv_heads × head_dim`) before the heads split,
//! and `Olmo2RMSNorm`'s weight applied in f32.

use serde::Deserialize;

use crate::activation::Activation;
use crate::config::{ArchConfig, Invalid};
use crate::decoder::{sealed, CausalLm, DecoderConfig, DecoderSpec, Features, NormPlacement, QkNorm};
use crate::layers::RmsStyle;
use crate::rope::RopeParameters;

/// OLMo 2 with its language-model head: transformers' `Olmo2ForCausalLM`. See [`CausalLm`] for
/// its layers: no `input_layernorm`, a `post_feedforward_layernorm`.
pub type Olmo2 = CausalLm<Olmo2Config>;

/// The hyper-parameters of an OLMo 2 decoder: transformers'
/// [`Olmo2Config`](https://huggingface.co/docs/transformers/model_doc/olmo2#transformers.Olmo2Config),
/// only what the forward pass reads. `Default` gives transformers' defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Olmo2Config {
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
    /// Key and value heads per layer; `None` means one per query head.
    pub num_key_value_heads: Option<i64>,
    /// Width of one head (not a `Olmo2Config` field, but read when present, as transformers'
    /// attention reads it); `None`: `hidden_size / num_attention_heads`.
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
    /// The rotary scaling of older checkpoints.
    pub rope_scaling: Option<RopeParameters>,
    /// Biases on the attention's projections.
    pub attention_bias: bool,
}

impl Default for Olmo2Config {
    /// transformers' `Olmo2Config()` defaults.
    fn default() -> Self {
        Olmo2Config {
            vocab_size: 50304,
            hidden_size: 4096,
            intermediate_size: 11008,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: None,
            head_dim: None,
            hidden_act: Activation::Silu,
            max_position_embeddings: 2048,
            initializer_range: 0.02,
            rms_norm_eps: 1e-5,
            tie_word_embeddings: false,
            rope_parameters: None,
            rope_theta: None,
            rope_scaling: None,
            attention_bias: false,
        }
    }
}

impl ArchConfig for Olmo2Config {
    const ACTIVATION_FIELD: &'static str = "hidden_act";
    const KNOWN_KEYS: Option<&'static [&'static str]> = Some(&[
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "hidden_act",
        "max_position_embeddings",
        "rms_norm_eps",
        "tie_word_embeddings",
        "rope_parameters",
        "rope_theta",
        "rope_scaling",
        "attention_bias",
    ]);

    fn check(&self) -> std::result::Result<(), Invalid> {
        sealed::Sealed::spec(self).check()
    }
}

impl DecoderConfig for Olmo2Config {
    const MODEL_TYPE: &'static str = "olmo2";
}

impl sealed::Sealed for Olmo2Config {
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
            norm: RmsStyle::Olmo2,
            rope: RopeParameters::resolve(
                self.rope_parameters.as_ref(),
                self.rope_theta,
                self.rope_scaling.as_ref(),
                10_000.0,
            ),
            features: Features {
                norms: NormPlacement::Post,
                qk_norm: QkNorm::FullWidth,
                ..Features::default()
            },
        }
    }
}
