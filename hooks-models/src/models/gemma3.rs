//! Gemma 3's text decoder, as transformers' `Gemma3ForCausalLM` computes it
//! ([`modeling_gemma3.py`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/gemma3/modeling_gemma3.py)),
//! `model_type` `gemma3_text`: its config; the computation is Gemma 2's (sandwich norms, scaled
//! embeddings, `query_pre_attn_scalar`, sliding windows by `layer_types`) with an RMS norm over
//! each head's query and key (`q_norm`, `k_norm`), a rope of its own on the sliding ("local")
//! layers, and no attention soft-cap. transformers applies `q_norm` and `k_norm` after the heads'
//! transpose, so its modules output `[batch, heads, tokens, head_dim]`; their captures here are
//! `[batch, tokens, heads, head_dim]`, the same values with the token axis at dim 1, where the
//! engine pads, pools and windows every output.
//!
//! The multimodal `gemma3` checkpoints (4B and up: the text trunk under `model.language_model`,
//! its config under `text_config`) are not loaded; their `model_type` is refused.

use serde::Deserialize;

use crate::activation::Activation;
use crate::config::{ArchConfig, Invalid};
use crate::decoder::{sealed, CausalLm, DecoderConfig, DecoderSpec, Features, NormPlacement, QkNorm};
use crate::gemma2::{bidirectional_refused, check_layer_types, sliding_layers, GEMMA2_KEYS};
use crate::layers::RmsStyle;
use crate::rope::RopeParameters;

/// Gemma 3's text decoder with its language-model head: transformers' `Gemma3ForCausalLM`. See
/// [`CausalLm`] for its layers.
pub type Gemma3 = CausalLm<Gemma3TextConfig>;

/// transformers 5's `rope_parameters` for Gemma 3: one set per layer type.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RopePerLayerType {
    /// The full-attention ("global") layers' rope.
    pub full_attention: Option<RopeParameters>,
    /// The sliding ("local") layers' rope.
    pub sliding_attention: Option<RopeParameters>,
}

/// The hyper-parameters of Gemma 3's text decoder: transformers'
/// [`Gemma3TextConfig`](https://huggingface.co/docs/transformers/model_doc/gemma3#transformers.Gemma3TextConfig),
/// only what the forward pass reads, in either of its forms: transformers 5's `rope_parameters`
/// per layer type, or the Hub's `rope_theta`, `rope_local_base_freq`, `rope_scaling` (global
/// layers only) and `sliding_window_pattern`. `Default` gives transformers' defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Gemma3TextConfig {
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
    /// Width of one head.
    pub head_dim: i64,
    /// The activation of the gate (`gelu_pytorch_tanh`).
    pub hidden_activation: Activation,
    /// The longest input.
    pub max_position_embeddings: i64,
    /// The standard deviation of the random weights of a model built with [`CausalLm::new`].
    pub initializer_range: f64,
    /// Epsilon of every RMS norm.
    pub rms_norm_eps: f64,
    /// Whether `lm_head` reuses `model.embed_tokens`' weight.
    pub tie_word_embeddings: bool,
    /// transformers 5's rotary settings, per layer type.
    pub rope_parameters: Option<RopePerLayerType>,
    /// The global layers' rotary base (older form; default 1,000,000).
    pub rope_theta: Option<f64>,
    /// The local layers' rotary base (older form; default 10,000).
    pub rope_local_base_freq: Option<f64>,
    /// The global layers' rotary scaling (older form).
    pub rope_scaling: Option<RopeParameters>,
    /// Biases on the attention's projections.
    pub attention_bias: bool,
    /// The scores are scaled by `query_pre_attn_scalar^-0.5`.
    pub query_pre_attn_scalar: f64,
    /// A query of a sliding layer attends to at most this many keys, itself included.
    pub sliding_window: Option<i64>,
    /// Each layer's attention; `None`: from `sliding_window_pattern`.
    pub layer_types: Option<Vec<String>>,
    /// Every this-many-th layer is global, the others slide (older form; default 6).
    pub sliding_window_pattern: Option<usize>,
    /// The cap on the logits the model returns.
    pub final_logit_softcapping: Option<f64>,
    /// Refused when set: transformers' Gemma 3 attention does not apply it.
    pub attn_logit_softcapping: Option<f64>,
    /// Bidirectional (non-causal) attention: not implemented, refused when on.
    pub use_bidirectional_attention: Option<bool>,
}

impl Default for Gemma3TextConfig {
    /// transformers' `Gemma3TextConfig()` defaults.
    fn default() -> Self {
        Gemma3TextConfig {
            vocab_size: 262_208,
            hidden_size: 2304,
            intermediate_size: 9216,
            num_hidden_layers: 26,
            num_attention_heads: 8,
            num_key_value_heads: 4,
            head_dim: 256,
            hidden_activation: Activation::GeluPytorchTanh,
            max_position_embeddings: 131_072,
            initializer_range: 0.02,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: true,
            rope_parameters: None,
            rope_theta: None,
            rope_local_base_freq: None,
            rope_scaling: None,
            attention_bias: false,
            query_pre_attn_scalar: 256.0,
            sliding_window: Some(4096),
            layer_types: None,
            sliding_window_pattern: None,
            final_logit_softcapping: None,
            attn_logit_softcapping: None,
            use_bidirectional_attention: Some(false),
        }
    }
}

impl Gemma3TextConfig {
    /// The global and the local layers' rope, as transformers'
    /// `Gemma3TextConfig.convert_rope_params_to_dict` resolves either form.
    fn ropes(&self) -> (RopeParameters, RopeParameters) {
        let unset = || RopeParameters {
            rope_theta: None,
            ..RopeParameters::default_at(0.0)
        };
        let given = self.rope_parameters.clone().unwrap_or_default();
        let mut global = given.full_attention.unwrap_or_else(unset);
        if let Some(scaling) = &self.rope_scaling {
            // `rope_parameters["full_attention"].update(rope_scaling)`.
            global = RopeParameters {
                rope_theta: scaling.rope_theta.or(global.rope_theta),
                ..scaling.clone()
            };
        }
        let _ = global.rope_theta.get_or_insert(self.rope_theta.unwrap_or(1_000_000.0));
        let mut local = given.sliding_attention.unwrap_or_else(unset);
        let _ = local
            .rope_theta
            .get_or_insert(self.rope_local_base_freq.unwrap_or(10_000.0));
        (global, local)
    }
}

impl ArchConfig for Gemma3TextConfig {
    const ACTIVATION_FIELD: &'static str = "hidden_activation";
    const KNOWN_KEYS: Option<&'static [&'static str]> = Some(GEMMA3_KEYS);

    fn check(&self) -> std::result::Result<(), Invalid> {
        bidirectional_refused(self.use_bidirectional_attention)?;
        check_layer_types(self.layer_types.as_deref())?;
        if let Some(cap) = self.attn_logit_softcapping {
            return Err(Invalid::Unsupported {
                setting: format!("`attn_logit_softcapping` is {cap}"),
                hint: "transformers' Gemma 3 attention does not apply it (released checkpoints set it to null); set it to null to run the model as transformers does",
            });
        }
        if self.sliding_window_pattern == Some(0) {
            return Err(Invalid::Value(
                "`sliding_window_pattern` is 0, but it must be at least 1".into(),
            ));
        }
        sealed::Sealed::spec(self).check()
    }
}

const GEMMA3_KEYS: &[&str] = &{
    let mut keys = [""; GEMMA2_KEYS.len() + 3];
    let mut i = 0;
    while i < GEMMA2_KEYS.len() {
        keys[i] = GEMMA2_KEYS[i];
        i += 1;
    }
    keys[i] = "rope_local_base_freq";
    keys[i + 1] = "sliding_window_pattern";
    // transformers 5 writes its private copy of the pattern (the default 6, whatever the
    // layers) beside `layer_types`, and never reads it back.
    keys[i + 2] = "_sliding_window_pattern";
    keys
};

impl DecoderConfig for Gemma3TextConfig {
    const MODEL_TYPE: &'static str = "gemma3_text";
}

impl sealed::Sealed for Gemma3TextConfig {
    fn spec(&self) -> DecoderSpec {
        let (global, local) = self.ropes();
        let pattern = self.sliding_window_pattern.unwrap_or(6);
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
            qk_norm: true,
            sliding_window: self.sliding_window,
            norm: RmsStyle::Gemma,
            rope: global,
            features: Features {
                norms: NormPlacement::Sandwich,
                qk_norm: QkNorm::PerHead,
                query_pre_attn_scalar: Some(self.query_pre_attn_scalar),
                final_logit_softcapping: self.final_logit_softcapping,
                sliding_layers: Some(sliding_layers(
                    self.layer_types.as_deref(),
                    self.num_hidden_layers,
                    pattern,
                )),
                local_rope: Some(local),
                ..Features::default()
            },
        }
    }
}
