//! The building blocks every architecture is made of, as tch modules in a hooked wrapper: an
//! embedding, a layer norm and a linear layer, created under their PyTorch paths with the
//! initial values the caller asks for.
//!
//! Architectures are built in one of two ways, and [`Init`] says which: with random weights
//! drawn as transformers' `_init_weights` draws them (a model built from a config in code; each
//! architecture adds its own exceptions, such as GPT-2's scaled `c_proj`), or with cheap
//! placeholders that a checkpoint overwrites right after (a model loaded from a folder: random
//! values would only cost time).

use hooks::Hookable;
use tch::{nn, Kind, Tensor};

// `hooks::Hook`; a pass-through under the `uninstrumented` feature, for the benchmark (see lib.rs).
use crate::{Hook, HookPoint};

/// How a new model's weights start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Init {
    /// As transformers' `_init_weights`: weight matrices and embeddings from `N(0, std²)` with
    /// the config's `initializer_range`, biases 0, norm weights 1.
    Random {
        /// The standard deviation.
        std: f64,
    },
    /// Every value a placeholder, to be overwritten by a checkpoint.
    Placeholder,
}

impl Init {
    /// The same, with weight matrices drawn with `std / divisor` instead (GPT-2's residual
    /// projections); placeholders stay placeholders.
    pub(crate) fn scaled(self, divisor: f64) -> Init {
        match self {
            Init::Random { std } => Init::Random { std: std / divisor },
            Init::Placeholder => Init::Placeholder,
        }
    }

    /// The initial values of a weight matrix or embedding table.
    pub(crate) fn weight(self) -> nn::Init {
        match self {
            Init::Random { std } => nn::Init::Randn { mean: 0.0, stdev: std },
            Init::Placeholder => nn::Init::Const(0.0),
        }
    }
}

/// A hooked embedding table of `rows × width` (transformers' `nn.Embedding`).
pub(crate) fn embedding(p: nn::Path<'_>, rows: i64, width: i64, init: Init) -> Hook<nn::Embedding> {
    let config = nn::EmbeddingConfig {
        ws_init: init.weight(),
        ..Default::default()
    };
    Hook::new(nn::embedding(p, rows, width, config))
}

/// A hooked layer norm over the last dimension (`nn.LayerNorm(width, eps)`): weight 1, bias 0.
pub(crate) fn layer_norm(p: nn::Path<'_>, width: i64, eps: f64) -> Hook<nn::LayerNorm> {
    let config = nn::LayerNormConfig {
        eps,
        ..Default::default()
    };
    Hook::new(nn::layer_norm(p, vec![width], config))
}

/// A hooked linear layer (`nn.Linear(input, output, bias=bias)`), weight `[output, input]`.
pub(crate) fn linear(p: nn::Path<'_>, input: i64, output: i64, bias: bool, init: Init) -> Hook<nn::Linear> {
    let config = nn::LinearConfig {
        ws_init: init.weight(),
        bs_init: bias.then_some(nn::Init::Const(0.0)),
        bias,
    };
    Hook::new(nn::linear(p, input, output, config))
}

/// Which of transformers' RMS norms a [`RmsNorm`] computes. All three normalise in f32; they
/// differ in where the weight multiplies and in what it stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RmsStyle {
    /// `LlamaRMSNorm` (and its copies in Mistral, Qwen2, Qwen3, Phi-3): `weight * (x̂` cast back
    /// to the input's dtype`)`.
    Llama,
    /// `GemmaRMSNorm` (Gemma, Gemma 2, Gemma 3): `x̂ * (1 + weight)` in f32, then cast back; the
    /// stored weight is an offset from 1.
    Gemma,
    /// `Olmo2RMSNorm`: `weight * x̂` in f32, then cast back.
    Olmo2,
}

/// Root-mean-square layer norm over the last dimension, `[..., width]` → the same:
/// `x̂ = x / sqrt(mean(x²) + eps)` computed in f32, then the weight, as [`RmsStyle`] says.
///
/// Besides its output, each norm offers the capture point `PATH.normalized`: `x̂` before the
/// weight, in the input's dtype (TransformerLens' `lnN.hook_normalized`, which no transformers
/// module outputs; Gemma Scope's transcoders read `ln2.hook_normalized`, the
/// `pre_feedforward_layernorm.normalized` of Gemma 2 and 3). It is an observer: it cannot be
/// edited.
#[derive(Debug, Hookable)]
pub struct RmsNorm {
    /// `[width]`.
    pub weight: Tensor,
    /// `PATH.normalized`: `x / sqrt(mean(x²) + eps)`, the shape of the input; computed only when
    /// captured.
    pub normalized: HookPoint,
    eps: f64,
    style: RmsStyle,
}

impl RmsNorm {
    /// A hooked RMS norm of `style` over `width` features: weight 1 (Gemma's 0, an offset from
    /// 1); a checkpoint overwrites it.
    pub(crate) fn with_style(p: nn::Path<'_>, width: i64, eps: f64, style: RmsStyle) -> Hook<RmsNorm> {
        let start = if style == RmsStyle::Gemma { 0.0 } else { 1.0 };
        Hook::new(RmsNorm {
            weight: p.var("weight", &[width], nn::Init::Const(start)),
            normalized: HookPoint::observer(),
            eps,
            style,
        })
    }
}

impl nn::Module for RmsNorm {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let hidden = xs.to_kind(Kind::Float);
        let variance = hidden.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        let normed = hidden * (variance + self.eps).rsqrt();
        if self.normalized.is_capturing() {
            self.normalized.observe(&normed.to_kind(xs.kind()));
        }
        match self.style {
            RmsStyle::Gemma => (normed * (self.weight.to_kind(Kind::Float) + 1.0)).to_kind(xs.kind()),
            RmsStyle::Olmo2 => (self.weight.to_kind(Kind::Float) * normed).to_kind(xs.kind()),
            RmsStyle::Llama => &self.weight * normed.to_kind(xs.kind()),
        }
    }
}

/// A token embedding table, optionally scaled: transformers' `nn.Embedding`, or Gemma's
/// `GemmaTextScaledWordEmbedding`, whose output is multiplied by `√hidden` (rounded to the
/// weights' dtype, as transformers rounds it). `[B, T]` ids → `[B, T, width]`.
#[derive(Debug, Hookable)]
pub struct TokenEmbedding {
    /// `[rows, width]`: the table (also the weight of a tied language-model head).
    pub ws: Tensor,
    scale: Option<f64>,
}

impl TokenEmbedding {
    /// A hooked table of `rows × width`, its output times `scale` when given.
    pub(crate) fn new(p: nn::Path<'_>, rows: i64, width: i64, scale: Option<f64>, init: Init) -> Hook<TokenEmbedding> {
        Hook::new(TokenEmbedding {
            ws: p.var("weight", &[rows, width], init.weight()),
            scale,
        })
    }
}

impl nn::Module for TokenEmbedding {
    fn forward(&self, ids: &Tensor) -> Tensor {
        let embedded = Tensor::embedding(&self.ws, ids, -1, false, false);
        match self.scale {
            // `torch.tensor(scale)` is f32, then cast to the weights' dtype.
            Some(scale) => {
                embedded
                    * Tensor::from(scale as f32)
                        .to_kind(self.ws.kind())
                        .to_device(self.ws.device())
            }
            None => embedded,
        }
    }
}
