//! Gemma, as transformers' `GemmaForCausalLM` computes it
//! ([`modeling_gemma.py`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/gemma/modeling_gemma.py)):
//! its config; the computation is Llama's, [`crate::decoder`]'s, with `(1 + weight)` RMS norms computed in f32, embeddings scaled by `√hidden_size`, the
//! tanh-approximated GELU, and a `head_dim` of its own.

use serde::Deserialize;

use crate::activation::Activation;
use crate::config::{ArchConfig, Invalid};
use crate::decoder::{sealed, CausalLm, DecoderConfig, DecoderSpec, Features};
use crate::layers::RmsStyle;
use crate::rope::RopeParameters;

/// Gemma with its language-model head: transformers' `GemmaForCausalLM`. See [`CausalLm`] for
/// its layers.
pub type Gemma = CausalLm<GemmaConfig>;

/// The hyper-parameters of a Gemma decoder: transformers'
/// [`GemmaConfig`](https://huggingface.co/docs/transformers/model_doc/gemma#transformers.GemmaConfig),
/// only what the forward pass reads. `Default` gives transformers' defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct GemmaConfig {
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
    /// The activation of the gate (`gelu_pytorch_tanh`; a legacy `gelu` means it too).
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
    /// Bidirectional (non-causal) attention: not implemented, refused when on.
    pub use_bidirectional_attention: Option<bool>,
}

impl Default for GemmaConfig {
    /// transformers' `GemmaConfig()` defaults.
    fn default() -> Self {
        GemmaConfig {
            vocab_size: 256_000,
            hidden_size: 3072,
            intermediate_size: 24576,
            num_hidden_layers: 28,
            num_attention_heads: 16,
            num_key_value_heads: Some(16),
            head_dim: Some(256),
            hidden_act: Activation::GeluPytorchTanh,
            max_position_embeddings: 8192,
            initializer_range: 0.02,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: true,
            rope_parameters: None,
            rope_theta: None,
            rope_scaling: None,
            attention_bias: false,
            use_bidirectional_attention: None,
        }
    }
}

impl ArchConfig for GemmaConfig {
    const ACTIVATION_FIELD: &'static str = "hidden_act";

    fn check(&self) -> std::result::Result<(), Invalid> {
        if self.use_bidirectional_attention == Some(true) {
            return Err(Invalid::Unsupported {
                setting: "`use_bidirectional_attention` is true".into(),
                hint: "only the causal Gemma decoder is implemented",
            });
        }
        sealed::Sealed::spec(self).check()
    }
}

impl DecoderConfig for GemmaConfig {
    const MODEL_TYPE: &'static str = "gemma";
}

impl sealed::Sealed for GemmaConfig {
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
            // transformers reads Gemma's legacy `"gelu"` as the tanh approximation it meant.
            act: match self.hidden_act {
                Activation::Gelu => Activation::GeluPytorchTanh,
                other => other,
            },
            rms_norm_eps: self.rms_norm_eps,
            max_position_embeddings: self.max_position_embeddings,
            initializer_range: self.initializer_range,
            tie_word_embeddings: self.tie_word_embeddings,
            qkv_bias: self.attention_bias,
            o_bias: self.attention_bias,
            mlp_bias: false,
            qk_norm: false,
            sliding_window: None,
            norm: RmsStyle::Gemma,
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
