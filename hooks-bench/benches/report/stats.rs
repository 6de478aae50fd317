//! Medians and spreads of repeated measurements.

/// The median and interquartile range of a set of samples.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    pub median: f64,
    /// The 25th and 75th percentiles.
    pub p25: f64,
    pub p75: f64,
    pub n: usize,
}

impl Summary {
    /// Summarises `samples`; NaN everywhere for none.
    pub fn of(samples: &[f64]) -> Summary {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Summary {
            median: quantile(&sorted, 0.5),
            p25: quantile(&sorted, 0.25),
            p75: quantile(&sorted, 0.75),
            n: sorted.len(),
        }
    }

    /// `1.003 (0.998–1.010)`: the median and the interquartile range, to `digits` decimals.
    pub fn show(&self, digits: usize) -> String {
        if self.n < 2 {
            return format!("{:.digits$}", self.median);
        }
        format!("{:.digits$} ({:.digits$}–{:.digits$})", self.median, self.p25, self.p75)
    }

    /// The same summary with every value multiplied by `k` (unit changes).
    pub fn scaled(&self, k: f64) -> Summary {
        Summary {
            median: self.median * k,
            p25: self.p25 * k,
            p75: self.p75 * k,
            n: self.n,
        }
    }
}

/// Linear interpolation between closest ranks, as numpy's default.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let pos = q * (n - 1) as f64;
            let low = pos.floor() as usize;
            let high = (low + 1).min(n - 1);
            let frac = pos - low as f64;
            sorted[low] + (sorted[high] - sorted[low]) * frac
        }
    }
}

/// Per-round ratios `num[i] / den[i]`: each pair was measured back to back, so load from other
/// processes on the machine mostly cancels within a pair.
pub fn paired_ratios(num: &[f64], den: &[f64]) -> Vec<f64> {
    num.iter().zip(den).map(|(a, b)| a / b).collect()
}

/// The mean of `samples`.
pub fn mean(samples: &[f64]) -> f64 {
    let n = samples.len() as f64;
    samples.iter().sum::<f64>() / n
}
