//! Gemma 2, as transformers' `Gemma2ForCausalLM` computes it
//! ([`modeling_gemma2.py`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/gemma2/modeling_gemma2.py)):
//! its config; the computation is [`crate::decoder`]'s with Gemma's `(1 + weight)` norms and
//! scaled embeddings, plus a norm before and after each sublayer, the attention logits
//! soft-capped (`tanh(s / cap) · cap`, on an eager path: the fused kernel has no soft-cap),
//! sliding-window attention on alternating layers (the first sliding), scores scaled by
//! `query_pre_attn_scalar^-0.5`, and the returned logits soft-capped.

use serde::Deserialize;

use crate::activation::Activation;
use crate::config::{ArchConfig, Invalid};
use crate::decoder::{sealed, CausalLm, DecoderConfig, DecoderSpec, Features, NormPlacement};
use crate::layers::RmsStyle;
use crate::rope::RopeParameters;

/// Gemma 2 with its language-model head: transformers' `Gemma2ForCausalLM`. See [`CausalLm`]
/// for its layers, which add `pre_feedforward_layernorm` and `post_feedforward_layernorm` to
/// Llama's; `post_attention_layernorm` normalises the attention's output here.
pub type Gemma2 = CausalLm<Gemma2Config>;

/// The hyper-parameters of a Gemma 2 decoder: transformers'
/// [`Gemma2Config`](https://huggingface.co/docs/transformers/model_doc/gemma2#transformers.Gemma2Config),
/// only what the forward pass reads. `Default` gives transformers' defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Gemma2Config {
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
    /// Key and value heads per layer (grouped-query attention).
    pub num_key_value_heads: i64,
    /// Width of one head, independent of `hidden_size / num_attention_heads`.
    pub head_dim: i64,
    /// The activation of the gate (`gelu_pytorch_tanh`). Gemma 2 reads this key, not
    /// `hidden_act`.
    pub hidden_activation: Activation,
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
    /// The scores are scaled by `query_pre_attn_scalar^-0.5`.
    pub query_pre_attn_scalar: f64,
    /// A query of a sliding layer attends to at most this many keys, itself included.
    pub sliding_window: Option<i64>,
    /// Each layer's attention, `sliding_attention` or `full_attention`; `None`: alternating,
    /// the first sliding.
    pub layer_types: Option<Vec<String>>,
    /// The cap on the logits the model returns (`lm_head`'s raw output is what its capture
    /// holds, as a forward hook sees it).
    pub final_logit_softcapping: Option<f64>,
    /// The cap on the attention scores.
    pub attn_logit_softcapping: Option<f64>,
    /// Bidirectional (non-causal) attention: not implemented, refused when on.
    pub use_bidirectional_attention: Option<bool>,
}

impl Default for Gemma2Config {
    /// transformers' `Gemma2Config()` defaults.
    fn default() -> Self {
        Gemma2Config {
            vocab_size: 256_000,
            hidden_size: 2304,
            intermediate_size: 9216,
            num_hidden_layers: 26,
            num_attention_heads: 8,
            num_key_value_heads: 4,
            head_dim: 256,
            hidden_activation: Activation::GeluPytorchTanh,
            max_position_embeddings: 8192,
            initializer_range: 0.02,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: true,
            rope_parameters: None,
            rope_theta: None,
            rope_scaling: None,
            attention_bias: false,
            query_pre_attn_scalar: 256.0,
            sliding_window: Some(4096),
            layer_types: None,
            final_logit_softcapping: Some(30.0),
            attn_logit_softcapping: Some(50.0),
            use_bidirectional_attention: None,
        }
    }
}

/// The keys Gemma 2 and Gemma 3 share.
pub(crate) const GEMMA2_KEYS: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_activation",
    // Written by older checkpoints beside `hidden_activation`; transformers' Gemma 2 and 3 read
    // `hidden_activation` only.
    "hidden_act",
    "max_position_embeddings",
    "rms_norm_eps",
    "tie_word_embeddings",
    "rope_parameters",
    "rope_theta",
    "rope_scaling",
    "attention_bias",
    "query_pre_attn_scalar",
    "sliding_window",
    "layer_types",
    "final_logit_softcapping",
    "attn_logit_softcapping",
    "use_bidirectional_attention",
];

impl ArchConfig for Gemma2Config {
    const ACTIVATION_FIELD: &'static str = "hidden_activation";
    const KNOWN_KEYS: Option<&'static [&'static str]> = Some(GEMMA2_KEYS);

    fn check(&self) -> std::result::Result<(), Invalid> {
        bidirectional_refused(self.use_bidirectional_attention)?;
        check_layer_types(self.layer_types.as_deref())?;
        sealed::Sealed::spec(self).check()
    }
}

impl DecoderConfig for Gemma2Config {
    const MODEL_TYPE: &'static str = "gemma2";
}

impl sealed::Sealed for Gemma2Config {
    fn spec(&self) -> DecoderSpec {
        DecoderSpec {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            heads: self.num_attention_heads,
            kv_heads: self.num_key_value_heads,
            head_dim: self.head_dim,
            act: self.hidden_activation,
            rms_norm_eps: self.rms_norm_eps,
            max_position_embeddings: self.max_position_embeddings,
            initializer_range: self.initializer_range,
            tie_word_embeddings: self.tie_word_embeddings,
            qkv_bias: self.attention_bias,
            o_bias: self.attention_bias,
            mlp_bias: false,
            qk_norm: false,
            sliding_window: self.sliding_window,
            norm: RmsStyle::Gemma,
            rope: RopeParameters::resolve(
                self.rope_parameters.as_ref(),
                self.rope_theta,
                self.rope_scaling.as_ref(),
                10_000.0,
            ),
            features: Features {
                norms: NormPlacement::Sandwich,
                query_pre_attn_scalar: Some(self.query_pre_attn_scalar),
                attn_logit_softcapping: self.attn_logit_softcapping,
                final_logit_softcapping: self.final_logit_softcapping,
                sliding_layers: Some(sliding_layers(self.layer_types.as_deref(), self.num_hidden_layers, 2)),
                ..Features::default()
            },
        }
    }
}

/// Which layers slide: `layer_types` when given (an unknown type counts as full here and is
/// refused by [`check_layer_types`]), else every layer but each `pattern`-th, as transformers'
/// `"sliding_attention" if (i + 1) % pattern else "full_attention"`.
pub(crate) fn sliding_layers(layer_types: Option<&[String]>, layers: usize, pattern: usize) -> Vec<bool> {
    match layer_types {
        Some(types) => types.iter().map(|t| t == "sliding_attention").collect(),
        None => (0..layers).map(|i| (i + 1) % pattern.max(1) != 0).collect(),
    }
}

/// Every entry of `layer_types` is `sliding_attention` or `full_attention`.
pub(crate) fn check_layer_types(layer_types: Option<&[String]>) -> std::result::Result<(), Invalid> {
    match layer_types
        .into_iter()
        .flatten()
        .find(|t| *t != "sliding_attention" && *t != "full_attention")
    {
        Some(other) => Err(Invalid::Unsupported {
            setting: format!("a layer type is `{other}`"),
            hint: "supported layer types: `sliding_attention`, `full_attention`",
        }),
        None => Ok(()),
    }
}

/// Gemma's bidirectional variants (embedding models) are not implemented.
pub(crate) fn bidirectional_refused(flag: Option<bool>) -> std::result::Result<(), Invalid> {
    if flag == Some(true) {
        return Err(Invalid::Unsupported {
            setting: "`use_bidirectional_attention` is true".into(),
            hint: "only the causal decoder is implemented",
        });
    }
    Ok(())
}
