//! Scaled dot-product attention and its masks, computed as transformers' default attention
//! (`sdpa`) computes them: libtorch's fused `scaled_dot_product_attention`, with no mask at all
//! when no position is padding (transformers drops the mask then too, and libtorch takes its
//! fastest kernel), and otherwise an additive mask of `0` (attend) or the dtype's most negative
//! finite value (do not).
//!
//! The fused kernel never forms the attention probabilities. [`probabilities`] computes them the
//! way transformers' `eager` attention does, for the `attn_weights` capture points, and only when
//! one is captured: the output still comes from the fused kernel, so capturing them changes no
//! value.

use tch::{Device, Kind, Tensor};

/// `torch.finfo(kind).min`: what transformers adds to the scores of masked positions. A finite
/// value rather than `-inf`, so a row with every key masked gives a uniform softmax, not NaNs.
pub(crate) fn most_negative(kind: Kind) -> f64 {
    match kind {
        Kind::Half => -65504.0,
        Kind::BFloat16 => -3.389_531_389_251_535_5e38,
        Kind::Double => f64::MIN,
        _ => f64::from(f32::MIN),
    }
}

/// Which keys each query attends to.
pub(crate) enum Mask {
    /// Every key: no mask tensor.
    All,
    /// Keys up to the query's own position (GPT-2 without padding).
    Causal,
    /// An additive mask, broadcast to `[B, heads, T, T]`.
    Additive(Tensor),
}

/// Whether `attention_mask` marks every position as a token (then no mask is needed).
fn no_padding(attention_mask: &Tensor) -> bool {
    attention_mask.eq(0).any().int64_value(&[]) == 0
}

/// BERT's mask: every query ignores padding keys; `[B, 1, 1, T]` `(1 - mask) * finfo.min`.
pub(crate) fn padding_mask(attention_mask: &Tensor, kind: Kind) -> Mask {
    if no_padding(attention_mask) {
        return Mask::All;
    }
    let keep = attention_mask.to_kind(kind).unsqueeze(1).unsqueeze(2);
    Mask::Additive((-keep + 1.0) * most_negative(kind))
}

/// GPT-2's mask: query `i` attends to key `j` when `j <= i` and key `j` is not padding
/// (`[B, 1, T, T]` when there is padding).
pub(crate) fn causal_padding_mask(attention_mask: &Tensor, kind: Kind) -> Mask {
    if no_padding(attention_mask) {
        return Mask::Causal;
    }
    let (batch, len) = (attention_mask.size()[0], attention_mask.size()[1]);
    let device: Device = attention_mask.device();
    let causal = Tensor::ones([len, len], (Kind::Bool, device)).tril(0);
    let keys = attention_mask.ne(0).view([batch, 1, 1, len]);
    let allowed = causal.view([1, 1, len, len]).logical_and(&keys);
    Mask::Additive(
        Tensor::zeros([batch, 1, len, len], (kind, device)).masked_fill(&allowed.logical_not(), most_negative(kind)),
    )
}

/// Mistral's mask: query `i` attends to key `j` when `i - window < j <= i` and key `j` is not
/// padding (transformers' `sliding_window_causal_mask_function`), `[B, 1, T, T]`; plain causal
/// when the window never binds and nothing is padding.
pub(crate) fn sliding_window_mask(attention_mask: &Tensor, kind: Kind, window: i64) -> Mask {
    let (batch, len) = (attention_mask.size()[0], attention_mask.size()[1]);
    if len <= window {
        return causal_padding_mask(attention_mask, kind);
    }
    let device = attention_mask.device();
    let query = Tensor::arange(len, (Kind::Int64, device)).view([len, 1]);
    let key = Tensor::arange(len, (Kind::Int64, device)).view([1, len]);
    let in_window = key.le_tensor(&query).logical_and(&key.gt_tensor(&(&query - window)));
    let keys = attention_mask.ne(0).view([batch, 1, 1, len]);
    let allowed = in_window.view([1, 1, len, len]).logical_and(&keys);
    Mask::Additive(
        Tensor::zeros([batch, 1, len, len], (kind, device)).masked_fill(&allowed.logical_not(), most_negative(kind)),
    )
}

/// The mask of a cached step: query `i` of row `b`, at position `query_positions[b, i]`,
/// attends to key column `j` when the column holds a token (`key_valid[b, j]`) at a position not
/// after the query's (and, with a `window`, less than `window` before it), `[B, 1, Tq, Tk]`.
/// Positions, not columns, decide: a row's cache may hold padding columns between its tokens.
pub(crate) fn positions_mask(
    query_positions: &Tensor,
    key_positions: &Tensor,
    key_valid: &Tensor,
    window: Option<i64>,
    kind: Kind,
) -> Mask {
    let query = query_positions.unsqueeze(-1);
    let key = key_positions.unsqueeze(1);
    let mut allowed = key.le_tensor(&query).logical_and(&key_valid.unsqueeze(1));
    if let Some(window) = window {
        allowed = allowed.logical_and(&key.gt_tensor(&(&query - window)));
    }
    let allowed = allowed.unsqueeze(1);
    Mask::Additive(
        Tensor::zeros(allowed.size(), (kind, allowed.device()))
            .masked_fill(&allowed.logical_not(), most_negative(kind)),
    )
}

/// One attention layer's keys and values so far, `[B, kv_heads, Tk, head_dim]` each: its slot of
/// a [`KvCache`](crate::KvCache).
#[derive(Debug, Default)]
pub(crate) struct KvSlot(Option<(Tensor, Tensor)>);

impl KvSlot {
    /// Appends this step's `key` and `value` `[B, kv_heads, Tq, d]` and returns every key and
    /// value so far.
    pub(crate) fn extend(&mut self, key: &Tensor, value: &Tensor) -> (Tensor, Tensor) {
        let (key, value) = match &self.0 {
            Some((k, v)) => (Tensor::cat(&[k, key], 2), Tensor::cat(&[v, value], 2)),
            None => (key.shallow_clone(), value.shallow_clone()),
        };
        self.0 = Some((key.shallow_clone(), value.shallow_clone()));
        (key, value)
    }
}

/// A layer's keys and values for this forward: with a cache slot, everything so far; without,
/// this forward's own.
pub(crate) fn with_cache(slot: Option<&mut KvSlot>, key: Tensor, value: Tensor) -> (Tensor, Tensor) {
    match slot {
        Some(slot) => slot.extend(&key, &value),
        None => (key, value),
    }
}

/// Splits `[B, T, heads * head_dim]` into `[B, heads, T, head_dim]`.
pub(crate) fn split_heads(x: &Tensor, heads: i64) -> Tensor {
    let size = x.size();
    let (batch, len, width) = (size[0], size[1], size[2]);
    x.view([batch, len, heads, width / heads]).transpose(1, 2)
}

/// `softmax(q kᵀ · scaling + mask) v`, heads merged back: `[B, heads, T, d]` → `[B, T, heads * d]`.
pub(crate) fn attend(query: &Tensor, key: &Tensor, value: &Tensor, mask: &Mask, scaling: f64) -> Tensor {
    let (additive, causal) = match mask {
        Mask::All => (None, false),
        Mask::Causal => (None, true),
        Mask::Additive(m) => (Some(m), false),
    };
    let context = Tensor::scaled_dot_product_attention(query, key, value, additive, 0.0, causal, scaling, false)
        .transpose(1, 2)
        .contiguous();
    let size = context.size();
    context.view([size[0], size[1], size[2] * size[3]])
}

/// The eager attention's output from its `probabilities` `[B, heads, Tq, Tk]` and `value`
/// `[B, heads, Tk, d]`, heads merged back: `[B, Tq, heads * d]`. The path of a soft-capped
/// attention, which libtorch's fused kernel cannot compute.
pub(crate) fn attend_eager(probabilities: &Tensor, value: &Tensor) -> Tensor {
    let context = probabilities.matmul(value).transpose(1, 2).contiguous();
    let size = context.size();
    context.view([size[0], size[1], size[2] * size[3]])
}

/// The attention probabilities `softmax(q kᵀ · scaling + mask)`, `[B, heads, T, T]`, as
/// transformers' `eager_attention_forward` computes them (`output_attentions=True`): the additive
/// mask is `mask`'s, or for [`Mask::Causal`] the dtype's most negative value above the diagonal.
/// With `softmax_in_f32` (Llama's eager attention) the softmax runs in f32 and is cast back;
/// otherwise (BERT's, GPT-2's) in the scores' dtype. `key` has as many heads as `query`.
pub(crate) fn probabilities(query: &Tensor, key: &Tensor, mask: &Mask, scaling: f64, softmax_in_f32: bool) -> Tensor {
    capped_probabilities(query, key, mask, scaling, None, softmax_in_f32)
}

/// [`probabilities`] with Gemma 2's attention logit soft-cap: the scores become
/// `tanh(scores / cap) · cap` before the mask is added (transformers' Gemma 2
/// `eager_attention_forward`).
pub(crate) fn capped_probabilities(
    query: &Tensor,
    key: &Tensor,
    mask: &Mask,
    scaling: f64,
    softcap: Option<f64>,
    softmax_in_f32: bool,
) -> Tensor {
    let scores = query.matmul(&key.transpose(-1, -2)) * scaling;
    let scores = match softcap {
        Some(cap) => (scores / cap).tanh() * cap,
        None => scores,
    };
    let scores = match mask {
        Mask::All => scores,
        Mask::Causal => {
            let len = scores.size()[2];
            let future = Tensor::ones([len, len], (Kind::Bool, scores.device())).triu(1);
            let additive = Tensor::zeros([len, len], (scores.kind(), scores.device()))
                .masked_fill(&future, most_negative(scores.kind()));
            scores + additive
        }
        Mask::Additive(additive) => scores + additive,
    };
    if softmax_in_f32 {
        scores.softmax(-1, Kind::Float).to_kind(query.kind())
    } else {
        scores.softmax(-1, scores.kind())
    }
}
