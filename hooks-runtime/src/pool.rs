//! [`Pool`]: reducing the token axis of `[batch, tokens, ...]` outputs over the real tokens, as
//! sentence-transformers' `Pooling` module does.

use tch::{Kind, Tensor};

use crate::error::Result;

/// How the extraction engine reduces the token axis of an output.
///
/// An output is pooled when its first two dims are `[batch, tokens]` of the batch's attention
/// mask. Multi-head attention patterns `[batch, heads, tokens, tokens]` never are, even when
/// `heads` happens to equal the batch's width, and neither are outputs without a token axis
/// (BERT's pooler): both are kept whole, and the engine names them in
/// [`Extracted::unpooled`](crate::Extracted::unpooled).
///
/// Mean and max follow sentence-transformers' `Pooling` exactly: the mean divides by the number
/// of real tokens (clamped at 1e-9), the max ignores padding (set to -1e9 first). Both sum or
/// compare in f32 when the output is f16 or bf16, and round to the output's dtype once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pool {
    /// Keep every token: `[samples, tokens, ...]`, with zeros past each sample's length (on both
    /// token axes of an attention pattern).
    #[default]
    None,
    /// The mean over the real tokens (sentence-transformers' mean pooling).
    Mean,
    /// The first token (BERT's `[CLS]`).
    First,
    /// The last real token (a causal model's summary position).
    Last,
    /// The largest value of each feature over the real tokens (sentence-transformers' max
    /// pooling).
    Max,
}

impl Pool {
    /// Whether `output` has a token axis at dim 1 that `mask` (`[batch, tokens]`) describes:
    /// `[batch, tokens, ...]`, including `[batch, tokens]` itself (the token or position ids an
    /// embedding takes as its input), and not an attention pattern. Such an output has zeros past
    /// each sample's length, and one row per token in a dataset folder.
    #[must_use]
    pub fn has_token_axis(output: &Tensor, mask: &Tensor) -> bool {
        let size = output.size();
        let mask = mask.size();
        let pattern = size.len() == 4 && size[2] == mask[1] && size[3] == mask[1];
        size.len() >= 2 && size[..2] == mask[..] && !pattern
    }

    /// Whether a pooling reduces `output`: it has a token axis and floating-point values (ids
    /// have no mean; they are kept whole).
    #[must_use]
    pub fn reduces(output: &Tensor, mask: &Tensor) -> bool {
        Self::has_token_axis(output, mask) && output.is_floating_point()
    }

    /// Pools `output` (`[batch, tokens, ...]`) over the tokens where `mask` (`[batch, tokens]`,
    /// integer, 1 for a real token) is 1, giving `[batch, ...]`. An output a pooling does not
    /// reduce ([`reduces`](Self::reduces) false), or `Pool::None`, is returned as is.
    ///
    /// # Errors
    ///
    /// [`Error::Torch`](crate::Error::Torch) when libtorch fails (out of memory, say).
    pub fn apply(self, output: &Tensor, mask: &Tensor) -> Result<Tensor> {
        if self == Pool::None || !Self::reduces(output, mask) {
            return Ok(output.shallow_clone());
        }
        let size = output.size();
        let batch = size[0];
        let kind = output.kind();
        let wide = if matches!(kind, Kind::Half | Kind::BFloat16) {
            Kind::Float
        } else {
            kind
        };
        let mask = mask.f_to_device(output.device())?;
        // `[batch, tokens, 1, ...]`: broadcasts over the feature dims.
        let mut weight_shape = vec![batch, size[1]];
        weight_shape.extend(std::iter::repeat_n(1, size.len() - 2));
        let weights = || mask.f_to_kind(wide)?.f_view(weight_shape.as_slice());
        Ok(match self {
            Pool::None => unreachable!("returned above"),
            Pool::First => output.f_select(1, 0)?,
            Pool::Last => {
                let last = (mask.f_sum_dim_intlist(1, false, Kind::Int64)? - 1).f_clamp_min(0)?;
                let mut index_shape = vec![batch, 1];
                index_shape.extend(std::iter::repeat_n(1, size.len() - 2));
                let mut expand = size.clone();
                expand[1] = 1;
                let index = last
                    .f_view(index_shape.as_slice())?
                    .f_expand(expand.as_slice(), false)?;
                output.f_gather(1, &index, false)?.f_squeeze_dim(1)?
            }
            Pool::Mean => {
                let weights = weights()?;
                let summed = (output.f_to_kind(wide)? * &weights).f_sum_dim_intlist(1, false, wide)?;
                let count = weights.f_sum_dim_intlist(1, false, wide)?.f_clamp_min(1e-9)?;
                (summed / count).f_to_kind(kind)?
            }
            Pool::Max => {
                let padding = weights()?.f_eq(0.0)?;
                let filled = output.f_to_kind(wide)?.f_masked_fill(&padding, -1e9)?;
                filled.f_amax(1, false)?.f_to_kind(kind)?
            }
        })
    }
}

/// `output` with zeros at padding positions on its token axes: dim 1 of a `[batch, tokens, ...]`
/// output, dims 2 and 3 (queries and keys) of an attention pattern `[batch, heads, tokens,
/// tokens]`; other outputs as they are. What a model computes at padding positions depends on the
/// batch it ran in; zeros do not.
pub(crate) fn zero_padding(output: &Tensor, mask: &Tensor) -> Result<Tensor> {
    if mask.f_min()?.int64_value(&[]) != 0 {
        // No padding: nothing to blank, and no copy.
        return Ok(output.shallow_clone());
    }
    let size = output.size();
    let (batch, tokens) = (mask.size()[0], mask.size()[1]);
    let padding = mask.f_to_device(output.device())?.f_eq(0)?;
    let ones = |n: usize| std::iter::repeat_n(1i64, n);
    let blank = if Pool::has_token_axis(output, mask) {
        let shape: Vec<i64> = [batch, tokens].into_iter().chain(ones(size.len() - 2)).collect();
        padding.f_view(shape.as_slice())?
    } else if size.len() == 4 && size[0] == batch && size[2] == tokens && size[3] == tokens {
        let queries = padding.f_view([batch, 1, tokens, 1])?;
        let keys = padding.f_view([batch, 1, 1, tokens])?;
        queries.f_logical_or(&keys)?
    } else {
        return Ok(output.shallow_clone());
    };
    Ok(output.f_masked_fill(&blank, 0.0)?)
}

/// Scales each row of `pooled` (`[batch, features]`) to unit L2 length, as
/// sentence-transformers' `Normalize` does (`x / max(‖x‖, 1e-12)`), in f32 for f16 and bf16.
pub(crate) fn normalize(pooled: &Tensor) -> Result<Tensor> {
    let kind = pooled.kind();
    let wide = pooled.f_to_kind(Kind::Float)?;
    let norm = wide
        .f_norm_scalaropt_dim(2, [-1i64].as_slice(), true)?
        .f_clamp_min(1e-12)?;
    Ok((wide / norm).f_to_kind(kind)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn data() -> (Tensor, Tensor) {
        // Two samples, three tokens, two features; the second sample has one padding token.
        let x = Tensor::from_slice(&[1.0f32, 2., 3., 4., 5., 6., 10., 20., 30., 40., 99., 99.]).view([2, 3, 2]);
        let mask = Tensor::from_slice(&[1i64, 1, 1, 1, 1, 0]).view([2, 3]);
        (x, mask)
    }

    #[test]
    fn pooling_respects_the_mask() {
        let (x, mask) = data();
        let f = |v: &[f32]| Tensor::from_slice(v).view([2, 2]);
        assert_eq!(Pool::Mean.apply(&x, &mask).unwrap(), f(&[3., 4., 20., 30.]));
        assert_eq!(Pool::First.apply(&x, &mask).unwrap(), f(&[1., 2., 10., 20.]));
        assert_eq!(Pool::Last.apply(&x, &mask).unwrap(), f(&[5., 6., 30., 40.]));
        // The padding token's 99 is not a maximum.
        assert_eq!(Pool::Max.apply(&x, &mask).unwrap(), f(&[5., 6., 30., 40.]));
        assert_eq!(Pool::None.apply(&x, &mask).unwrap(), x);
        let pooled = Tensor::ones([2, 2], (Kind::Float, Device::Cpu));
        assert_eq!(
            Pool::Mean.apply(&pooled, &mask).unwrap(),
            pooled,
            "outputs without a token axis pass through"
        );
    }

    /// `[batch, heads, tokens, tokens]` is an attention pattern, even with as many heads as
    /// tokens: pooling over its heads would be a value of the right shape and the wrong meaning.
    #[test]
    fn attention_patterns_are_not_pooled_over_their_heads() {
        let mask = Tensor::ones([2, 3], (Kind::Int64, Device::Cpu));
        let pattern = Tensor::rand([2, 3, 3, 3], (Kind::Float, Device::Cpu));
        assert!(!Pool::has_token_axis(&pattern, &mask));
        assert_eq!(Pool::Mean.apply(&pattern, &mask).unwrap(), pattern);
        // A hidden state as wide as its sequence is still pooled.
        let hidden = Tensor::rand([2, 3, 3], (Kind::Float, Device::Cpu));
        assert!(Pool::has_token_axis(&hidden, &mask));
    }

    /// `[batch, tokens]`: ids keep their token axis (zeroed past each length) and are not pooled;
    /// a float per token is pooled by hand arithmetic.
    #[test]
    fn batch_by_token_outputs_have_a_token_axis_and_only_floats_pool() {
        let mask = Tensor::from_slice2(&[[1i64, 1, 0], [1, 1, 1]]);
        let ids = Tensor::from_slice2(&[[5i64, 6, 7], [8, 9, 10]]);
        assert!(Pool::has_token_axis(&ids, &mask) && !Pool::reduces(&ids, &mask));
        assert_eq!(Pool::Mean.apply(&ids, &mask).unwrap(), ids);
        assert_eq!(
            zero_padding(&ids, &mask).unwrap(),
            Tensor::from_slice2(&[[5i64, 6, 0], [8, 9, 10]])
        );
        let scores = ids.to_kind(Kind::Float);
        assert_eq!(
            Pool::Mean.apply(&scores, &mask).unwrap(),
            Tensor::from_slice(&[5.5f32, 9.0])
        );
        assert_eq!(
            Pool::Last.apply(&scores, &mask).unwrap(),
            Tensor::from_slice(&[6.0f32, 10.0])
        );
    }

    /// f16 sums of many values lose digits; the mean is taken in f32 and rounded once.
    #[test]
    fn half_precision_means_are_accumulated_in_f32() {
        // 4096 tokens of 1.0 and one of 2048: the exact mean is 4096 * 1 + 2048 over 4097.
        let mut values = vec![1.0f32; 4096];
        values.push(2048.0);
        for kind in [Kind::Half, Kind::BFloat16] {
            let x = Tensor::from_slice(&values).view([1, 4097, 1]).to_kind(kind);
            let mask = Tensor::ones([1, 4097], (Kind::Int64, Device::Cpu));
            let mean = Pool::Mean.apply(&x, &mask).unwrap();
            assert_eq!(mean.kind(), kind);
            let exact = 6144.0 / 4097.0;
            let got = mean.to_kind(Kind::Double).double_value(&[0, 0]);
            // One rounding of the exact mean: f16 has 10 fraction bits, bf16 7.
            let bits = if kind == Kind::Half { 10 } else { 7 };
            assert!(
                (got - exact).abs() <= exact * 2f64.powi(-bits),
                "{kind:?}: {got} vs {exact}"
            );
        }
    }

    #[test]
    fn normalised_rows_have_unit_length() {
        let (x, mask) = data();
        // The means are [3, 4] (length 5) and [20, 30].
        let got = normalize(&Pool::Mean.apply(&x, &mask).unwrap()).unwrap();
        let want = Tensor::from_slice(&[0.6f32, 0.8, 20.0 / 1300f32.sqrt(), 30.0 / 1300f32.sqrt()]).view([2, 2]);
        assert!(got.allclose(&want, 1e-6, 1e-7, false), "{got}");
    }
}
