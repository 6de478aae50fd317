//! Rotary position embeddings, as transformers computes them
//! ([`modeling_rope_utils.py`](https://github.com/huggingface/transformers/blob/main/src/transformers/modeling_rope_utils.py)
//! and `LlamaRotaryEmbedding`): the inverse frequencies of the `default`, `linear`, `llama3` and
//! `longrope` rope types, read from a config in either form transformers knows, and their
//! application to queries and keys.

use std::f64::consts::PI;

use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use crate::config::Invalid;

/// A config's rotary settings: transformers 5's `rope_parameters`, or (older checkpoints) a
/// `rope_scaling` object beside a top-level `rope_theta`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct RopeParameters {
    /// `default`, `linear`, `llama3` or `longrope` (Phi-3's older names `su` and `yarn` mean
    /// `longrope`, as transformers' `Phi3Config` reads them; the others are refused).
    #[serde(alias = "type", default = "default_rope_type")]
    pub rope_type: String,
    /// The base wavelength. `None` in an old-style `rope_scaling`, whose base is the config's
    /// top-level `rope_theta`.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// `linear`: positions are divided by it; `llama3`: low frequencies are.
    #[serde(default)]
    pub factor: Option<f64>,
    /// `llama3`.
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    /// `llama3`.
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    /// `llama3`, `longrope`: the context length of pre-training.
    #[serde(default)]
    pub original_max_position_embeddings: Option<i64>,
    /// `longrope`: one divisor per rotated frequency, for sequences up to
    /// `original_max_position_embeddings`.
    #[serde(default)]
    pub short_factor: Option<Vec<f64>>,
    /// `longrope`: one divisor per rotated frequency, for longer sequences.
    #[serde(default)]
    pub long_factor: Option<Vec<f64>>,
    /// `longrope`: the factor on `cos` and `sin`; `None` derives it from the context extension
    /// (`sqrt(1 + ln(factor) / ln(original_max_position_embeddings))`).
    #[serde(default)]
    pub attention_factor: Option<f64>,
    /// The fraction of each head's features that rotate (GPT-NeoX's `rotary_pct`); the rest pass
    /// through. `None` means all.
    #[serde(default)]
    pub partial_rotary_factor: Option<f64>,
}

fn default_rope_type() -> String {
    "default".into()
}

impl RopeParameters {
    /// The `default` rope type at base `theta`.
    #[must_use]
    pub fn default_at(theta: f64) -> Self {
        RopeParameters {
            rope_type: default_rope_type(),
            rope_theta: Some(theta),
            factor: None,
            low_freq_factor: None,
            high_freq_factor: None,
            original_max_position_embeddings: None,
            short_factor: None,
            long_factor: None,
            attention_factor: None,
            partial_rotary_factor: None,
        }
    }

    /// How many of a head's `head_dim` features rotate: `int(head_dim × partial_rotary_factor)`,
    /// as transformers computes it.
    #[must_use]
    pub fn rotary_dim(&self, head_dim: i64) -> i64 {
        match self.partial_rotary_factor {
            Some(fraction) => (head_dim as f64 * fraction) as i64,
            None => head_dim,
        }
    }

    /// The parameters a config means: `rope_parameters` when it has them, else the old
    /// `rope_theta` with `rope_scaling` (`rope_theta` of `None` takes `default_theta`).
    pub(crate) fn resolve(
        parameters: Option<&RopeParameters>,
        rope_theta: Option<f64>,
        rope_scaling: Option<&RopeParameters>,
        default_theta: f64,
    ) -> RopeParameters {
        let mut resolved = parameters
            .or(rope_scaling)
            .cloned()
            .unwrap_or_else(|| RopeParameters::default_at(rope_theta.unwrap_or(default_theta)));
        if resolved.rope_theta.is_none() {
            resolved.rope_theta = Some(rope_theta.unwrap_or(default_theta));
        }
        resolved
    }

    /// The inverse frequencies for `dim` rotated features, `[dim / 2]` f32 on `device`, as
    /// transformers' rope-init function of this rope type computes them.
    pub(crate) fn inv_freq(&self, dim: i64, device: Device) -> Result<Tensor, Invalid> {
        let base = self.rope_theta.unwrap_or(10_000.0);
        if base <= 0.0 {
            return Err(Invalid::Value(format!("`rope_theta` is {base}; it must be positive")));
        }
        // `1.0 / (base ** (arange(0, dim, 2).float() / dim))`, in f32 as transformers computes it.
        let exponents = Tensor::arange_start_step(0, dim, 2, (Kind::Int64, device)).to_kind(Kind::Float) / (dim as f64);
        let inv_freq = Tensor::pow_scalar(base, &exponents).reciprocal();
        let needed = |name: &str, value: Option<f64>| {
            value.ok_or_else(|| Invalid::Value(format!("rope type `{}` needs `{name}`", self.rope_type)))
        };
        match self.rope_type.as_str() {
            "default" => Ok(inv_freq),
            "linear" => Ok(inv_freq / needed("factor", self.factor)?),
            "llama3" => {
                let factor = needed("factor", self.factor)?;
                let low = needed("low_freq_factor", self.low_freq_factor)?;
                let high = needed("high_freq_factor", self.high_freq_factor)?;
                let old_context = needed(
                    "original_max_position_embeddings",
                    self.original_max_position_embeddings.map(|n| n as f64),
                )?;
                let (low_wavelen, high_wavelen) = (old_context / low, old_context / high);
                // transformers' `_compute_llama3_parameters`, op for op.
                let wavelen = inv_freq.reciprocal() * (2.0 * PI);
                let scaled = inv_freq.where_self(&wavelen.le(low_wavelen), &(&inv_freq / factor));
                let smooth = ((wavelen.reciprocal() * old_context) - low) / (high - low);
                let smoothed = (-&smooth + 1.0) * &scaled / factor + &smooth * &scaled;
                let medium = wavelen.ge(high_wavelen).logical_and(&wavelen.le(low_wavelen));
                Ok(smoothed.where_self(&medium, &scaled))
            }
            // The short factors; `longrope` picks per row between them and the long ones
            // (`RopeParameters::longrope`).
            "longrope" | "su" | "yarn" => Ok(self
                .longrope(dim, i64::MAX, device)?
                .map_or(inv_freq, |rope| rope.short)),
            other => Err(Invalid::Unsupported {
                setting: format!("the rope type `{other}`"),
                hint: "supported rope types: `default`, `linear`, `llama3`, `longrope`",
            }),
        }
    }
}

/// A `longrope` rotation's two sets of inverse frequencies (transformers'
/// `_compute_longrope_parameters`), each `[dim / 2]` f32, and the factor on `cos` and `sin`.
#[derive(Debug)]
pub(crate) struct LongRope {
    pub short: Tensor,
    pub long: Tensor,
    /// A sequence longer than this takes the long factors.
    pub original_max_position_embeddings: i64,
    pub attention_factor: f64,
}

impl LongRope {
    /// Each row's inverse frequencies `[B, 1, dim / 2]`: the long factors for a row whose own
    /// `lengths[b]` (its real tokens) pass `original_max_position_embeddings`, the short ones
    /// otherwise. A row never depends on its batch-mates (transformers decides by the padded
    /// batch's length).
    pub(crate) fn per_row(&self, long_rows: &Tensor) -> Tensor {
        let long = long_rows.view([-1, 1, 1]);
        self.long
            .view([1, 1, -1])
            .where_self(&long, &self.short.view([1, 1, -1]))
    }

    /// Whether each row of `lengths` `[B]` takes the long factors.
    pub(crate) fn long_rows(&self, lengths: &Tensor) -> Tensor {
        lengths.gt(self.original_max_position_embeddings)
    }
}

impl RopeParameters {
    /// The `longrope` frequencies for `dim` rotated features of a model of
    /// `max_position_embeddings`, or `None` for another rope type.
    pub(crate) fn longrope(
        &self,
        dim: i64,
        max_position_embeddings: i64,
        device: Device,
    ) -> Result<Option<LongRope>, Invalid> {
        if !self.is_longrope() {
            return Ok(None);
        }
        let base = self.rope_theta.unwrap_or(10_000.0);
        let original = self
            .original_max_position_embeddings
            .ok_or_else(|| Invalid::Value("rope type `longrope` needs `original_max_position_embeddings`".into()))?;
        if original < 2 {
            return Err(Invalid::Value(format!(
                "`original_max_position_embeddings` is {original}; it must be at least 2"
            )));
        }
        let factors = |name: &str, values: &Option<Vec<f64>>| -> Result<Tensor, Invalid> {
            let values = values
                .as_ref()
                .ok_or_else(|| Invalid::Value(format!("rope type `longrope` needs `{name}`")))?;
            if values.len() as i64 != dim / 2 {
                return Err(Invalid::Value(format!(
                    "`{name}` has {} values; {dim} rotated features need {}",
                    values.len(),
                    dim / 2
                )));
            }
            let ext = Tensor::from_slice(&values.iter().map(|&v| v as f32).collect::<Vec<_>>()).to_device(device);
            // `1.0 / (ext_factors * base**(arange(0, dim, 2).float() / dim))`, in f32.
            let exponents =
                Tensor::arange_start_step(0, dim, 2, (Kind::Int64, device)).to_kind(Kind::Float) / (dim as f64);
            Ok((ext * Tensor::pow_scalar(base, &exponents)).reciprocal())
        };
        let factor = self.factor.unwrap_or(max_position_embeddings as f64 / original as f64);
        let attention_factor = self.attention_factor.unwrap_or(if factor <= 1.0 {
            1.0
        } else {
            (1.0 + factor.ln() / (original as f64).ln()).sqrt()
        });
        Ok(Some(LongRope {
            short: factors("short_factor", &self.short_factor)?,
            long: factors("long_factor", &self.long_factor)?,
            original_max_position_embeddings: original,
            attention_factor,
        }))
    }

    /// Whether the rope type is `longrope` (or Phi-3's older names for it).
    pub(crate) fn is_longrope(&self) -> bool {
        matches!(self.rope_type.as_str(), "longrope" | "su" | "yarn")
    }
}

/// The rotation of a forward: `cos` and `sin`, `[1, 1, T, dim]` (or `[B, 1, T, dim]`) in the
/// model's dtype.
pub(crate) struct Rotation {
    cos: Tensor,
    sin: Tensor,
}

impl Rotation {
    /// For positions `0..len` (right-padded inputs: every row's real tokens start at 0), as
    /// `LlamaRotaryEmbedding.forward`: `freqs = positions × inv_freq` in f32, `cat(freqs, freqs)`,
    /// then cos and sin cast to `kind`.
    pub(crate) fn new(inv_freq: &Tensor, len: i64, kind: Kind) -> Self {
        let positions = Tensor::arange(len, (Kind::Int64, inv_freq.device())).to_kind(Kind::Float);
        let freqs = positions.unsqueeze(-1) * inv_freq;
        let emb = Tensor::cat(&[&freqs, &freqs], -1).unsqueeze(0).unsqueeze(0);
        Rotation {
            cos: emb.cos().to_kind(kind),
            sin: emb.sin().to_kind(kind),
        }
    }

    /// For each row's own positions `[B, T]` (int64): a cached decoding step, whose rows have
    /// reached different lengths. The same arithmetic as [`new`](Self::new), `[B, 1, T, dim]`.
    pub(crate) fn at(inv_freq: &Tensor, positions: &Tensor, kind: Kind) -> Self {
        Self::scaled(inv_freq, positions, 1.0, kind)
    }

    /// For positions `[B, T]` (or `[1, T]`) and inverse frequencies `[dim / 2]` or, one set per
    /// row, `[B, 1, dim / 2]`, with `cos` and `sin` multiplied by `scale` in f32 before the cast
    /// (`longrope`'s attention factor; transformers' `attention_scaling`), `[B, 1, T, dim]`.
    pub(crate) fn scaled(inv_freq: &Tensor, positions: &Tensor, scale: f64, kind: Kind) -> Self {
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * inv_freq;
        let emb = Tensor::cat(&[&freqs, &freqs], -1).unsqueeze(1);
        let (cos, sin) = if scale == 1.0 {
            (emb.cos(), emb.sin())
        } else {
            (emb.cos() * scale, emb.sin() * scale)
        };
        Rotation {
            cos: cos.to_kind(kind),
            sin: sin.to_kind(kind),
        }
    }

    /// `x * cos + rotate_half(x) * sin` for `x` of `[B, heads, T, head_dim]`, on the first
    /// features as many as the rotation has; the rest pass through (partial rotary, GPT-NeoX's
    /// `apply_rotary_pos_emb`).
    pub(crate) fn apply(&self, x: &Tensor) -> Tensor {
        let (width, rotary) = (x.size()[3], self.cos.size()[3]);
        let rot = if rotary < width {
            x.narrow(3, 0, rotary)
        } else {
            x.shallow_clone()
        };
        let half = rotary / 2;
        let (x1, x2) = (rot.narrow(3, 0, half), rot.narrow(3, half, rotary - half));
        let rotated = Tensor::cat(&[&(-x2), &x1], -1);
        let embedded = &rot * &self.cos + rotated * &self.sin;
        if rotary < width {
            Tensor::cat(&[&embedded, &x.narrow(3, rotary, width - rotary)], -1)
        } else {
            embedded
        }
    }
}
