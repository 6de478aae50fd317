//! Scaled dot-product attention and its masks, computed as transformers' eager attention does:
//! an additive mask of `0` (attend) or the dtype's most negative finite value (do not), added to
//! the scaled scores before the softmax.

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

/// BERT's extended attention mask, `[B, 1, 1, T]`: `(1 - mask) * finfo.min`, so every query
/// ignores padding keys.
pub(crate) fn padding_mask(attention_mask: &Tensor, kind: Kind) -> Tensor {
    let keep = attention_mask.to_kind(kind).unsqueeze(1).unsqueeze(2);
    (-keep + 1.0) * most_negative(kind)
}

/// GPT-2's mask, `[B, 1, T, T]`: query `i` attends to key `j` when `j <= i` and key `j` is not
/// padding.
pub(crate) fn causal_padding_mask(attention_mask: &Tensor, kind: Kind) -> Tensor {
    let (batch, len) = (attention_mask.size()[0], attention_mask.size()[1]);
    let device: Device = attention_mask.device();
    let causal = Tensor::ones([len, len], (Kind::Bool, device)).tril(0);
    let keys = attention_mask.ne(0).view([batch, 1, 1, len]);
    let allowed = causal.view([1, 1, len, len]).logical_and(&keys);
    Tensor::zeros([batch, 1, len, len], (kind, device)).masked_fill(&allowed.logical_not(), most_negative(kind))
}

/// Splits `[B, T, heads * head_dim]` into `[B, heads, T, head_dim]`.
pub(crate) fn split_heads(x: &Tensor, heads: i64) -> Tensor {
    let size = x.size();
    let (batch, len, width) = (size[0], size[1], size[2]);
    x.view([batch, len, heads, width / heads]).transpose(1, 2)
}

/// `softmax(q kᵀ · scaling + mask) v`, heads merged back: `[B, heads, T, d]` → `[B, T, heads * d]`.
pub(crate) fn attend(query: &Tensor, key: &Tensor, value: &Tensor, mask: &Tensor, scaling: f64) -> Tensor {
    let scores = query.matmul(&key.transpose(-1, -2)) * scaling + mask;
    let probs = scores.softmax(-1, scores.kind());
    let context = probs.matmul(value).transpose(1, 2).contiguous();
    let size = context.size();
    context.view([size[0], size[1], size[2] * size[3]])
}
