//! Phi-3, as transformers' `Phi3ForCausalLM` computes it
//! ([`modeling_phi3.py`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/phi3/modeling_phi3.py)):
//! its config; the computation is [`crate::decoder`]'s with fused projections (`qkv_proj`:
//! queries, keys, values side by side; `gate_up_proj`: the gate's half, then the up
//! projection's), a sliding window on every layer when set, partial rotary embeddings, and
//! `longrope` scaling on the long-context variants.
//!
//! **`longrope` per sample.** A row takes the long factors when its own length (its real tokens)
//! passes `original_max_position_embeddings`, the short ones otherwise, so that a row never
//! depends on its batch-mates. transformers decides once per padded batch (by its longest row),
//! so a short row batched with a long one differs there; run alone, it agrees.
//!
//! In [`generate`](crate::generate), a row's factors are chosen by its prompt's length at the
//! prefill. A row whose prompt takes the short factors and whose generation would pass
//! `original_max_position_embeddings` is refused at that step with an error: transformers then
//! recomputes the whole sequence with the long factors, which a KV cache of rotated keys cannot
//! do.

use serde::Deserialize;

use crate::activation::Activation;
use crate::config::{ArchConfig, Invalid};
use crate::decoder::{sealed, CausalLm, DecoderConfig, DecoderSpec, Features};
use crate::layers::RmsStyle;
use crate::rope::RopeParameters;

/// Phi-3 with its language-model head: transformers' `Phi3ForCausalLM`. See [`CausalLm`] for
/// its layers: `self_attn.qkv_proj` and `mlp.gate_up_proj` in place of the separate projections.
pub type Phi3 = CausalLm<Phi3Config>;

/// The hyper-parameters of a Phi-3 decoder: transformers'
/// [`Phi3Config`](https://huggingface.co/docs/transformers/model_doc/phi3#transformers.Phi3Config),
/// only what the forward pass reads. `Default` gives transformers' defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Phi3Config {
    /// Rows of `model.embed_tokens` and of `lm_head`'s output.
    pub vocab_size: i64,
    /// Width of every hidden state.
    pub hidden_size: i64,
    /// Width of the gate and of the up projection (each half of `gate_up_proj`).
    pub intermediate_size: i64,
    /// Entries of `model.layers`.
    pub num_hidden_layers: usize,
    /// Query heads per layer.
    pub num_attention_heads: i64,
    /// Key and value heads per layer; `None` means one per query head.
    pub num_key_value_heads: Option<i64>,
    /// Width of one head (read when present, as transformers' attention reads it); `None`:
    /// `hidden_size / num_attention_heads`.
    pub head_dim: Option<i64>,
    /// The activation of the gate (`silu`).
    pub hidden_act: Activation,
    /// The longest input.
    pub max_position_embeddings: i64,
    /// The context length of pre-training: a longer row takes `longrope`'s long factors.
    pub original_max_position_embeddings: i64,
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
    /// The rotary scaling of older checkpoints (`longrope`, or its older names `su`, `yarn`).
    pub rope_scaling: Option<RopeParameters>,
    /// The fraction of each head that rotates (older form; default all).
    pub partial_rotary_factor: Option<f64>,
    /// A query attends to at most this many keys, itself included, on every layer.
    pub sliding_window: Option<i64>,
}

impl Default for Phi3Config {
    /// transformers' `Phi3Config()` defaults.
    fn default() -> Self {
        Phi3Config {
            vocab_size: 32064,
            hidden_size: 3072,
            intermediate_size: 8192,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: None,
            head_dim: None,
            hidden_act: Activation::Silu,
            max_position_embeddings: 4096,
            original_max_position_embeddings: 4096,
            initializer_range: 0.02,
            rms_norm_eps: 1e-5,
            tie_word_embeddings: false,
            rope_parameters: None,
            rope_theta: None,
            rope_scaling: None,
            partial_rotary_factor: None,
            sliding_window: None,
        }
    }
}

impl Phi3Config {
    /// The rotary settings, as `Phi3Config.convert_rope_params_to_dict` and
    /// `standardize_rope_params` resolve them: `rope_scaling` over `rope_parameters`, the base and
    /// the rotating fraction from the top level when the parameters lack them, and (for
    /// `longrope`) the top-level `original_max_position_embeddings`, which takes precedence.
    fn rope(&self) -> RopeParameters {
        let mut rope = RopeParameters::resolve(
            self.rope_scaling.as_ref().or(self.rope_parameters.as_ref()),
            self.rope_theta,
            None,
            10_000.0,
        );
        if rope.partial_rotary_factor.is_none() {
            rope.partial_rotary_factor = self.partial_rotary_factor;
        }
        if rope.is_longrope() {
            rope.original_max_position_embeddings = Some(self.original_max_position_embeddings);
        }
        rope
    }
}

impl ArchConfig for Phi3Config {
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
        "original_max_position_embeddings",
        "rms_norm_eps",
        "tie_word_embeddings",
        "rope_parameters",
        "rope_theta",
        "rope_scaling",
        "partial_rotary_factor",
        "sliding_window",
    ]);

    fn check(&self) -> std::result::Result<(), Invalid> {
        let rope = self.rope();
        if !matches!(rope.rope_type.as_str(), "default" | "longrope" | "su" | "yarn") {
            return Err(Invalid::Unsupported {
                setting: format!("the rope type `{}`", rope.rope_type),
                hint: "Phi-3 takes `default` or `longrope`, as transformers' `Phi3Config` does",
            });
        }
        sealed::Sealed::spec(self).check()
    }
}

impl DecoderConfig for Phi3Config {
    const MODEL_TYPE: &'static str = "phi3";
}

impl sealed::Sealed for Phi3Config {
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
            rope: self.rope(),
            features: Features {
                fused: true,
                ..Features::default()
            },
        }
    }
}
