//! Feature statistics over a corpus, in one streaming pass and bounded memory: what feature
//! dashboards (SAEDashboard, Neuronpedia) show of each feature.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use tch::{Device, Kind, Tensor};

use crate::error::{ModelError, Result};

/// One token where a feature fired.
#[derive(Clone, Copy, Debug)]
struct Example {
    value: f32,
    sample: i64,
    position: i64,
}

// Ordered best first: a higher value, then the earlier sample, then the earlier position. So a
// max-heap's top is the worst example it holds.
impl Ord for Example {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .value
            .total_cmp(&self.value)
            .then((self.sample, self.position).cmp(&(other.sample, other.position)))
    }
}

impl PartialOrd for Example {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Example {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Example {}

/// Accumulates, per feature of an SAE, over every real token it is given: how often it fires
/// (activation > 0), its maximum, its mean where it fires, and its `k` max-activating examples.
/// Memory is `O(d_sae × k)`, whatever the number of tokens.
///
/// ```
/// use hooks_models::sae::FeatureStats;
/// use tch::Tensor;
///
/// let mut stats = FeatureStats::new(2, 1)?;
/// // Two tokens of sample 0 (positions 0 and 1), then one of sample 1.
/// stats.add(&Tensor::from_slice2(&[[0.0f32, 1.0], [2.0, 0.0]]), &[0, 0], &[0, 1])?;
/// stats.add(&Tensor::from_slice2(&[[3.0f32, 0.5]]), &[1], &[0])?;
/// let s = stats.finish();
/// assert_eq!(s.frequency, [2.0 / 3.0, 2.0 / 3.0]);
/// assert_eq!(s.max, [3.0, 1.0]);
/// assert_eq!(s.mean_when_active, [2.5, 0.75]);
/// assert_eq!((s.top_values[0], s.top_sample[0], s.top_position[0]), (3.0, 1, 0));
/// # Ok::<(), hooks_models::ModelError>(())
/// ```
#[derive(Debug)]
pub struct FeatureStats {
    d_sae: usize,
    k: usize,
    tokens: u64,
    fired: Vec<u64>,
    sum: Vec<f64>,
    max: Option<Tensor>,
    top: Vec<BinaryHeap<Example>>,
}

/// What [`FeatureStats::finish`] gives; each `Vec` is row-major, features first.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureSummary {
    /// Tokens seen.
    pub tokens: u64,
    /// Features.
    pub d_sae: usize,
    /// Examples kept per feature.
    pub k: usize,
    /// `[d_sae]`: the share of tokens where the feature is > 0.
    pub frequency: Vec<f64>,
    /// `[d_sae]`: its largest activation over every token (0 for a feature that never fires and
    /// is never negative).
    pub max: Vec<f32>,
    /// `[d_sae]`: its mean over the tokens where it fires; NaN where it never fires (numpy's
    /// mean of no values).
    pub mean_when_active: Vec<f64>,
    /// `[d_sae, k]`: its `k` largest activations where it fires, largest first (ties: the
    /// earlier sample, then the earlier position); 0 past the examples it has.
    pub top_values: Vec<f32>,
    /// `[d_sae, k]`: each example's sample (its index in the input); −1 past the examples.
    pub top_sample: Vec<i64>,
    /// `[d_sae, k]`: each example's token position in its sample (from 0); −1 past them.
    pub top_position: Vec<i64>,
}

impl FeatureStats {
    /// Statistics of `d_sae` features, keeping `k` examples each.
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidArgument`] for `d_sae` of 0.
    pub fn new(d_sae: usize, k: usize) -> Result<FeatureStats> {
        if d_sae == 0 {
            return Err(ModelError::InvalidArgument {
                name: "d_sae",
                reason: "must be at least 1".into(),
            });
        }
        Ok(FeatureStats {
            d_sae,
            k,
            tokens: 0,
            fired: vec![0; d_sae],
            sum: vec![0.0; d_sae],
            max: None,
            top: (0..d_sae).map(|_| BinaryHeap::with_capacity(k + 1)).collect(),
        })
    }

    /// Adds the activations of `n` real tokens, `acts` `[n, d_sae]` (any float dtype and
    /// device), token `i` being position `positions[i]` of sample `samples[i]`.
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidArgument`] for another shape, or `samples` / `positions` of
    /// another length than `n`; libtorch's.
    pub fn add(&mut self, acts: &Tensor, samples: &[i64], positions: &[i64]) -> Result<()> {
        let size = acts.size();
        let n = size.first().copied().unwrap_or(0);
        if size.len() != 2 || size[1] != self.d_sae as i64 {
            return Err(ModelError::InvalidArgument {
                name: "acts",
                reason: format!("has shape {size:?}; it must be [tokens, {}]", self.d_sae),
            });
        }
        if samples.len() as i64 != n || positions.len() as i64 != n {
            return Err(ModelError::InvalidArgument {
                name: "samples",
                reason: format!(
                    "{} samples and {} positions for {n} tokens; give one of each per token",
                    samples.len(),
                    positions.len()
                ),
            });
        }
        if n == 0 {
            return Ok(());
        }
        let acts = acts.f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?;
        let batch_max = acts.f_amax(&[0i64][..], false)?;
        self.max = Some(match self.max.take() {
            Some(max) => max.f_maximum(&batch_max)?,
            None => batch_max,
        });
        self.tokens += n as u64;
        let fired = acts.f_gt(0.0)?.f_nonzero()?;
        let hits = fired.size()[0];
        if hits == 0 {
            return Ok(());
        }
        let values = Vec::<f32>::try_from(acts.f_index(&[Some(fired.f_select(1, 0)?), Some(fired.f_select(1, 1)?)])?)
            .map_err(ModelError::Torch)?;
        let at = Vec::<i64>::try_from(fired.f_contiguous()?.f_view([-1])?).map_err(ModelError::Torch)?;
        for (pair, &value) in at.chunks_exact(2).zip(&values) {
            let (token, feature) = (pair[0] as usize, pair[1] as usize);
            self.fired[feature] += 1;
            self.sum[feature] += f64::from(value);
            if self.k == 0 {
                continue;
            }
            let example = Example {
                value,
                sample: samples[token],
                position: positions[token],
            };
            let heap = &mut self.top[feature];
            if heap.len() < self.k {
                heap.push(example);
            } else if heap.peek().is_some_and(|worst| example < *worst) {
                heap.pop();
                heap.push(example);
            }
        }
        Ok(())
    }

    /// The statistics so far.
    #[must_use]
    pub fn finish(self) -> FeatureSummary {
        let (d, k) = (self.d_sae, self.k);
        let tokens = self.tokens;
        let frequency = self
            .fired
            .iter()
            .map(|&c| if tokens == 0 { 0.0 } else { c as f64 / tokens as f64 })
            .collect();
        let max = self
            .max
            .and_then(|m| Vec::<f32>::try_from(m).ok())
            .unwrap_or_else(|| vec![0.0; d]);
        let mean_when_active = self
            .sum
            .iter()
            .zip(&self.fired)
            .map(|(&s, &c)| if c == 0 { f64::NAN } else { s / c as f64 })
            .collect();
        let mut top_values = vec![0.0f32; d * k];
        let mut top_sample = vec![-1i64; d * k];
        let mut top_position = vec![-1i64; d * k];
        for (f, heap) in self.top.into_iter().enumerate() {
            for (j, e) in heap.into_sorted_vec().into_iter().enumerate() {
                top_values[f * k + j] = e.value;
                top_sample[f * k + j] = e.sample;
                top_position[f * k + j] = e.position;
            }
        }
        FeatureSummary {
            tokens,
            d_sae: d,
            k,
            frequency,
            max,
            mean_when_active,
            top_values,
            top_sample,
            top_position,
        }
    }
}
