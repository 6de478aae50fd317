//! `--pool`: reduce `[batch, tokens, ...]` outputs over the token axis, respecting the mask.

use tch::{Kind, Tensor};

/// How to reduce the token axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Pool {
    /// Keep every token: `[samples, tokens, ...]`.
    None,
    /// Mean over the non-padding tokens (sentence-transformers' mean pooling).
    Mean,
    /// The first token (BERT's `[CLS]`).
    First,
    /// The last non-padding token (GPT-2's summary position).
    Last,
}

impl Pool {
    /// Pools `output` (`[batch, tokens, ...]`) with `mask` (`[batch, tokens]`, 1 = real token).
    /// Outputs without a token axis matching the mask (e.g. BERT's pooler) pass through.
    pub fn apply(self, output: &Tensor, mask: &Tensor) -> Tensor {
        let (batch, tokens) = (mask.size()[0], mask.size()[1]);
        let size = output.size();
        if self == Pool::None || size.len() < 3 || size[0] != batch || size[1] != tokens {
            return output.shallow_clone();
        }
        match self {
            Pool::None => output.shallow_clone(),
            Pool::First => output.select(1, 0),
            Pool::Last => {
                let last = (mask.sum_dim_intlist(1, false, Kind::Int64) - 1).clamp_min(0);
                let mut index_shape = vec![batch, 1];
                index_shape.extend(std::iter::repeat_n(1, size.len() - 2));
                let mut expand = size.clone();
                expand[1] = 1;
                let index = last
                    .view(index_shape.as_slice())
                    .expand(expand.as_slice(), false)
                    .to_device(output.device());
                output.gather(1, &index, false).squeeze_dim(1)
            }
            Pool::Mean => {
                let mut weight_shape = vec![batch, tokens];
                weight_shape.extend(std::iter::repeat_n(1, size.len() - 2));
                let weights = mask
                    .to_kind(output.kind())
                    .to_device(output.device())
                    .view(weight_shape.as_slice());
                let summed = (output * &weights).sum_dim_intlist(1, false, output.kind());
                // sentence-transformers clamps the count at 1e-9 so an all-padding row gives 0.
                let count = weights.sum_dim_intlist(1, false, output.kind()).clamp_min(1e-9);
                summed / count
            }
        }
    }
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
        assert_eq!(Pool::Mean.apply(&x, &mask), f(&[3., 4., 20., 30.]));
        assert_eq!(Pool::First.apply(&x, &mask), f(&[1., 2., 10., 20.]));
        assert_eq!(Pool::Last.apply(&x, &mask), f(&[5., 6., 30., 40.]));
        assert_eq!(Pool::None.apply(&x, &mask), x);
        let pooled = Tensor::ones([2, 2], (Kind::Float, Device::Cpu));
        assert_eq!(
            Pool::Mean.apply(&pooled, &mask),
            pooled,
            "outputs without a token axis pass through"
        );
    }
}
