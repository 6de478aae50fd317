//! Comparing representations: linear CKA (biased and unbiased), minibatch CKA and SVCCA,
//! between the layers of one model or of two, computed in tch with f64 accumulation.
//!
//! Every metric takes activations as rows: `X` `[n, p]` and `Y` `[n, q]`, row `i` of both
//! describing the same input (a sample, or a real token). Arrays with more dims are flattened
//! to `[n, p]` (everything after the first dim is one row). The metrics:
//!
//! - **Linear CKA** (Kornblith et al., 2019, "Similarity of Neural Network Representations
//!   Revisited", eq. 5 with a linear kernel): each feature centered over the rows, then
//!   `‖Yᵀ X‖²_F / (‖Xᵀ X‖_F ‖Yᵀ Y‖_F)`.
//! - **Unbiased linear CKA** (Nguyen, Raghu & Kornblith, 2021, "Do Wide and Deep Networks Learn
//!   the Same Things?", eq. 3): the same ratio with HSIC replaced by Song et al.'s (2012)
//!   unbiased estimator `HSIC₁` of linear-kernel Gram matrices.
//! - **Minibatch CKA** (Nguyen et al., 2021): `HSIC₁` computed on each minibatch of rows and
//!   averaged over the batches, in numerator and denominator alike; an estimator of the unbiased
//!   CKA whose memory does not grow with `n`.
//! - **SVCCA** (Raghu et al., 2017, "SVCCA: Singular Vector Canonical Correlation Analysis"):
//!   centered features, the top singular directions that explain a share of the variance, then
//!   CCA between the two reduced sets; the mean canonical correlation.
//!
//! The CKA metrics never hold more than a chunk of rows: they accumulate, over chunks, the
//! feature-space statistics that the formulas need (`Xᵀ Y` for every pair of layers, column
//! sums, and the squared row norms' products), in f64, in one pass over the rows for a whole
//! layer × layer matrix. That makes linear and unbiased CKA over millions of token rows exact
//! (not estimated) in `O(H²)` memory per pair. SVCCA needs its SVDs and holds every row of the
//! layers it compares.
//!
//! ```
//! use hooks_runtime::analysis::{linear_cka, svcca, unbiased_cka};
//! use tch::{Kind, Tensor};
//!
//! tch::manual_seed(0);
//! let x = Tensor::randn([200, 16], (Kind::Float, tch::Device::Cpu));
//! // A rotation and a scale leave CKA at 1.
//! let q = Tensor::linalg_qr(&Tensor::randn([16, 16], (Kind::Float, tch::Device::Cpu)), "reduced").0;
//! let y = x.matmul(&q) * 3.0;
//! assert!((linear_cka(&x, &y)? - 1.0).abs() < 1e-9);
//! assert!((unbiased_cka(&x, &y)? - 1.0).abs() < 1e-9);
//! assert!((svcca(&x, &y, 0.99)? - 1.0).abs() < 1e-9);
//! # Ok::<(), hooks_runtime::Error>(())
//! ```

use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::dataset::ArrayReader;
use crate::error::{Error, Result};
pub use crate::probe::{
    probe, stratified_folds, stratified_group_folds, Control, Labels, Method, ProbeOptions, ProbeReport,
};
use crate::select::{glob_match, unknown};

/// The rows of one layer's activations, read a range at a time: a tensor `[n, ...]` in memory,
/// or an array of a dataset folder ([`ArrayReader`]) read from disk.
pub trait RowSource {
    /// How many rows (`n`, the first dim).
    fn rows(&self) -> i64;
    /// Features per row (the product of every dim after the first).
    fn width(&self) -> i64;
    /// Rows `start..start + len` as `[len, width]`, of any float (or integer) kind, on any
    /// device.
    ///
    /// # Errors
    ///
    /// When the rows cannot be read (a file's I/O error, say).
    fn read(&self, start: i64, len: i64) -> Result<Tensor>;
}

impl RowSource for Tensor {
    fn rows(&self) -> i64 {
        self.size().first().copied().unwrap_or(0)
    }

    fn width(&self) -> i64 {
        self.size().iter().skip(1).product()
    }

    fn read(&self, start: i64, len: i64) -> Result<Tensor> {
        Ok(self.f_narrow(0, start, len)?.f_reshape([len, self.width()])?)
    }
}

impl RowSource for ArrayReader {
    fn rows(&self) -> i64 {
        self.shape().first().copied().unwrap_or(0)
    }

    fn width(&self) -> i64 {
        self.shape().iter().skip(1).product()
    }

    fn read(&self, start: i64, len: i64) -> Result<Tensor> {
        Ok(self.read_rows(start, len)?.f_reshape([len, self.width()])?)
    }
}

/// A named layer's rows, as [`compare`] takes them.
pub type Layer<'a> = (&'a str, &'a dyn RowSource);

/// Which similarity [`compare`] computes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Metric {
    /// Linear CKA (Kornblith et al., 2019): centered features, HSIC's biased estimator.
    /// Exact over all rows. Needs 3 rows (with 2, the centered rows span one direction and CKA
    /// is 1 whatever the layers).
    Cka,
    /// Unbiased linear CKA (Nguyen et al., 2021): Song et al.'s unbiased `HSIC₁` over all rows,
    /// exact. Needs 4 rows.
    UnbiasedCka,
    /// Minibatch CKA (Nguyen et al., 2021): the `n` rows split, in order, into
    /// `max(1, ⌊n / batch⌋)` consecutive minibatches whose sizes differ by at most one (numpy's
    /// `array_split`: every row counts, and every batch has at least `batch` rows); `HSIC₁` of
    /// each batch, averaged over batches; `CKA = mean HSIC₁(X, Y) / √(mean HSIC₁(X, X) · mean
    /// HSIC₁(Y, Y))`. An estimator of the unbiased CKA (equal to it when `batch ≥ n`), not the
    /// same number: averaging `HSIC₁` is unbiased for HSIC, but the ratio of averages is not
    /// the ratio over all rows. `batch` ≥ 4.
    MinibatchCka {
        /// The smallest minibatch, in rows.
        batch: i64,
    },
    /// SVCCA (Raghu et al., 2017): keep the fewest top singular directions of each centered
    /// layer whose squared singular values reach `threshold` of the total (0.99 in the paper),
    /// CCA between the reduced sets (QR of each, then the SVD of `Q_xᵀ Q_y`), and the mean of
    /// the canonical correlations. Holds all rows in memory.
    Svcca {
        /// The share of variance kept, in `(0, 1]`.
        threshold: f64,
    },
}

impl Metric {
    /// Its name, for titles and messages: `CKA`, `unbiased CKA`, `minibatch CKA (batch 1024)`,
    /// `SVCCA (0.99)`.
    #[must_use]
    pub fn label(&self) -> String {
        match self {
            Metric::Cka => "CKA".into(),
            Metric::UnbiasedCka => "unbiased CKA".into(),
            Metric::MinibatchCka { batch } => format!("minibatch CKA (batch {batch})"),
            Metric::Svcca { threshold } => format!("SVCCA ({threshold})"),
        }
    }
}

/// How [`compare`] runs.
#[derive(Clone, Copy, Debug)]
pub struct CompareOptions {
    /// Where the arithmetic runs (rows are moved there a chunk at a time).
    pub device: Device,
    /// Rows read and accumulated at once (per layer) by the CKA metrics: bounds their memory.
    pub chunk_rows: i64,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            device: Device::Cpu,
            chunk_rows: 16_384,
        }
    }
}

/// A similarity matrix: `values[i][j]` compares row layer `i` with column layer `j`.
#[derive(Clone, Debug, PartialEq)]
pub struct Similarity {
    /// What was computed.
    pub metric: Metric,
    /// The layers of the rows (the first input's).
    pub rows: Vec<String>,
    /// The layers of the columns (the second input's, or the first's again).
    pub columns: Vec<String>,
    /// Row-major, one row per row layer.
    pub values: Vec<Vec<f64>>,
}

/// Compares each layer of `a` with each layer of `b` (or of `a` itself when `b` is `None`) and
/// returns the `[a.len(), b.len()]` matrix. See [`Metric`] for what each metric computes, and
/// the [module docs](self) for how.
///
/// Every layer must have the same number of rows, in the same order (the same samples, or the
/// same real tokens).
///
/// # Errors
///
/// [`Error::NoLayers`] for an empty list, [`Error::RowCountMismatch`] for layers of different
/// lengths, [`Error::TooFewRows`] below a metric's minimum, [`Error::NotFinite`] for NaN or
/// infinite activations, [`Error::NoVariance`] for a layer constant over its rows,
/// [`Error::SvccaRank`] when SVCCA keeps more directions than the rows can support,
/// [`Error::InvalidArgument`] for a threshold, batch or chunk out of range, and any error of
/// reading the rows.
pub fn compare(
    a: &[Layer<'_>],
    b: Option<&[Layer<'_>]>,
    metric: Metric,
    options: &CompareOptions,
) -> Result<Similarity> {
    if a.is_empty() || b.is_some_and(<[Layer<'_>]>::is_empty) {
        return Err(Error::NoLayers);
    }
    if options.chunk_rows < 1 {
        return Err(invalid(
            "chunk_rows",
            format!("{}; give at least 1", options.chunk_rows),
        ));
    }
    let n = a[0].1.rows();
    for (name, source) in a.iter().chain(b.unwrap_or_default()) {
        if source.rows() != n {
            return Err(Error::RowCountMismatch {
                left: a[0].0.to_owned(),
                left_rows: n,
                right: (*name).to_owned(),
                right_rows: source.rows(),
            });
        }
    }
    let values = match metric {
        Metric::Cka | Metric::UnbiasedCka => {
            // With 2 rows the centered data has one direction, and CKA is 1 whatever the layers.
            let needed = if metric == Metric::Cka { 3 } else { 4 };
            too_few(&metric, needed, n)?;
            let mut pass = Pass::new(a, b, options);
            let stats = pass.moments(0, n)?;
            stats.check_finite(a, b)?;
            if metric == Metric::Cka {
                stats.linear_cka(a, b)?
            } else {
                let (cross, left, right) = stats.unbiased_hsic();
                ratio(&cross, &left, &right, a, b)?
            }
        }
        Metric::MinibatchCka { batch } => {
            if batch < 4 {
                return Err(invalid(
                    "batch",
                    format!("{batch}; the unbiased HSIC needs batches of at least 4 rows"),
                ));
            }
            too_few(&metric, 4, n)?;
            let mut pass = Pass::new(a, b, options);
            let batches = (n / batch).max(1);
            let (mut cross, mut left, mut right) = (
                None::<Vec<Vec<f64>>>,
                vec![0.0; a.len()],
                vec![0.0; b.map_or(0, <[_]>::len)],
            );
            let mut start = 0;
            for i in 0..batches {
                // numpy's array_split: the first `n % batches` batches get one row more.
                let len = n / batches + i64::from(i < n % batches);
                let stats = pass.moments(start, len)?;
                stats.check_finite(a, b)?;
                let (c, l, r) = stats.unbiased_hsic();
                add(&mut left, &l);
                add(&mut right, &r);
                match &mut cross {
                    None => cross = Some(c),
                    Some(sum) => sum.iter_mut().zip(&c).for_each(|(s, c)| add(s, c)),
                }
                start += len;
            }
            // The means' 1 / batches cancels in the ratio.
            ratio(&cross.unwrap_or_default(), &left, &right, a, b)?
        }
        Metric::Svcca { threshold } => {
            if !(threshold > 0.0 && threshold <= 1.0) {
                return Err(invalid(
                    "threshold",
                    format!("{threshold}; give a share of variance in (0, 1], such as 0.99"),
                ));
            }
            too_few(&metric, 2, n)?;
            svcca_matrix(a, b, threshold, options)?
        }
    };
    let names = |layers: &[Layer<'_>]| layers.iter().map(|(n, _)| (*n).to_owned()).collect::<Vec<_>>();
    Ok(Similarity {
        metric,
        rows: names(a),
        columns: names(b.unwrap_or(a)),
        values,
    })
}

/// Linear CKA of `x` `[n, p]` and `y` `[n, q]` (Kornblith et al., 2019): features centered over
/// the rows, `‖Yᵀ X‖²_F / (‖Xᵀ X‖_F ‖Yᵀ Y‖_F)`, in f64 on `x`'s device. 1 for `y = x`;
/// unchanged by an orthogonal transform or an isotropic scaling of either.
///
/// # Errors
///
/// As [`compare`] with [`Metric::Cka`]: at least 2 rows, equal row counts, finite values.
pub fn linear_cka(x: &Tensor, y: &Tensor) -> Result<f64> {
    pair(x, y, Metric::Cka)
}

/// Unbiased linear CKA of `x` `[n, p]` and `y` `[n, q]` (Nguyen et al., 2021): CKA with Song et
/// al.'s (2012) unbiased HSIC estimator of the linear-kernel Gram matrices `K = X Xᵀ`,
/// `L = Y Yᵀ` (no centering needed: the estimator is invariant to shifting the features). With
/// `K̃`, `L̃` the Gram matrices with zeroed diagonals,
/// `HSIC₁ = [tr(K̃ L̃) + 1ᵀK̃1 · 1ᵀL̃1 / ((n−1)(n−2)) − 2/(n−2) · 1ᵀK̃L̃1] / (n(n−3))`.
///
/// # Errors
///
/// As [`compare`] with [`Metric::UnbiasedCka`]: at least 4 rows.
pub fn unbiased_cka(x: &Tensor, y: &Tensor) -> Result<f64> {
    pair(x, y, Metric::UnbiasedCka)
}

/// Minibatch CKA of `x` `[n, p]` and `y` `[n, q]` (Nguyen et al., 2021): unbiased `HSIC₁`
/// averaged over minibatches of at least `batch` consecutive rows; see
/// [`Metric::MinibatchCka`] for the batches and the estimator.
///
/// # Errors
///
/// As [`compare`] with [`Metric::MinibatchCka`]: `batch` and `n` at least 4.
pub fn minibatch_cka(x: &Tensor, y: &Tensor, batch: i64) -> Result<f64> {
    pair(x, y, Metric::MinibatchCka { batch })
}

/// SVCCA of `x` `[n, p]` and `y` `[n, q]` (Raghu et al., 2017): center each, keep the fewest
/// top singular directions whose squared singular values reach `threshold` of the total, then
/// the mean canonical correlation between the two reduced sets (QR of each, SVD of
/// `Q_xᵀ Q_y`). 1 when `y = x A` for an invertible `A` that maps the kept subspace to itself.
///
/// # Errors
///
/// As [`compare`] with [`Metric::Svcca`]; [`Error::SvccaRank`] unless `n` exceeds the two kept
/// dimensions together (with fewer rows, some correlations are 1 whatever the data).
pub fn svcca(x: &Tensor, y: &Tensor, threshold: f64) -> Result<f64> {
    pair(x, y, Metric::Svcca { threshold })
}

/// The layers `wanted` among `available` (an input's arrays, from `input`), in the order
/// wanted, each once; every one of `available` when `wanted` is empty. Names are trimmed, and
/// `*` matches within one dotted segment, as in layer selections (`encoder.layer.*.output`).
///
/// # Errors
///
/// [`Error::UnknownArray`] for a name not there, with the closest names as suggestions.
pub fn select_layers(available: &[String], wanted: &[String], input: &Path) -> Result<Vec<String>> {
    let wanted: Vec<&str> = wanted.iter().map(|w| w.trim()).filter(|w| !w.is_empty()).collect();
    if wanted.is_empty() {
        return Ok(available.to_vec());
    }
    let mut names: Vec<String> = Vec::new();
    for w in wanted {
        let matched: Vec<&String> = if w.contains('*') {
            available.iter().filter(|n| glob_match(w, n)).collect()
        } else {
            available.iter().filter(|n| n.as_str() == w).collect()
        };
        if matched.is_empty() {
            let suggestions = match unknown(w, available) {
                Error::UnknownLayer { suggestions, .. } => suggestions,
                _ => Vec::new(),
            };
            return Err(Error::UnknownArray {
                name: w.to_owned(),
                input: input.to_owned(),
                suggestions,
            });
        }
        for name in matched {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    Ok(names)
}

fn pair(x: &Tensor, y: &Tensor, metric: Metric) -> Result<f64> {
    let options = CompareOptions {
        device: x.device(),
        ..CompareOptions::default()
    };
    let m = compare(&[("x", x)], Some(&[("y", y)]), metric, &options)?;
    Ok(m.values[0][0])
}

fn invalid(name: &'static str, reason: String) -> Error {
    Error::InvalidArgument { name, reason }
}

fn too_few(metric: &Metric, needed: i64, rows: i64) -> Result<()> {
    if rows < needed {
        return Err(Error::TooFewRows {
            metric: metric.label(),
            needed,
            rows,
        });
    }
    Ok(())
}

fn add(sum: &mut [f64], more: &[f64]) {
    sum.iter_mut().zip(more).for_each(|(s, m)| *s += m);
}

/// `cross[i][j] / √(left[i] · right[j])`: CKA from HSICs; `right` is `left` when comparing one
/// input with itself.
fn ratio(
    cross: &[Vec<f64>],
    left: &[f64],
    right: &[f64],
    a: &[Layer<'_>],
    b: Option<&[Layer<'_>]>,
) -> Result<Vec<Vec<f64>>> {
    let right = if b.is_some() { right } else { left };
    for (value, (name, _)) in left.iter().zip(a).chain(right.iter().zip(b.unwrap_or(a))) {
        if value.is_nan() || *value <= 0.0 {
            return Err(Error::NoVariance {
                layer: (*name).to_owned(),
            });
        }
    }
    Ok(cross
        .iter()
        .zip(left)
        .map(|(row, l)| row.iter().zip(right).map(|(c, r)| c / (l * r).sqrt()).collect())
        .collect())
}

/// One pass over the rows of every layer: reads chunks, moves them to the device in f64 and
/// shifts each layer by a fixed per-feature vector (the mean of its first chunk).
///
/// The shift changes none of the results (centered CKA subtracts the mean exactly; the unbiased
/// HSIC is invariant to shifting the features) but keeps the accumulated sums near zero, so
/// that the differences the formulas take of them lose no precision to cancellation.
struct Pass<'a> {
    a: &'a [Layer<'a>],
    b: Option<&'a [Layer<'a>]>,
    options: CompareOptions,
    shifts: Vec<Option<Tensor>>,
}

impl<'a> Pass<'a> {
    fn new(a: &'a [Layer<'a>], b: Option<&'a [Layer<'a>]>, options: &CompareOptions) -> Self {
        let count = a.len() + b.map_or(0, <[_]>::len);
        Pass {
            a,
            b,
            options: *options,
            shifts: (0..count).map(|_| None).collect(),
        }
    }

    /// Rows `start..start + len` of every layer, chunk by chunk, accumulated into [`Moments`].
    fn moments(&mut self, start: i64, len: i64) -> Result<Moments> {
        let mut m = Moments::new(self.a, self.b, self.options.device);
        let mut at = start;
        while at < start + len {
            let rows = self.options.chunk_rows.min(start + len - at);
            let mut read = |index: usize, source: &dyn RowSource| -> Result<Tensor> {
                let x = source
                    .read(at, rows)?
                    .f_to_device(self.options.device)?
                    .f_to_kind(Kind::Double)?;
                let shift = self.shifts[index].get_or_insert_with(|| x.mean_dim(0, true, Kind::Double));
                Ok(x - &*shift)
            };
            let xa = self
                .a
                .iter()
                .enumerate()
                .map(|(i, (_, s))| read(i, *s))
                .collect::<Result<Vec<_>>>()?;
            let xb = match self.b {
                Some(b) => Some(
                    b.iter()
                        .enumerate()
                        .map(|(i, (_, s))| read(self.a.len() + i, *s))
                        .collect::<Result<Vec<_>>>()?,
                ),
                None => None,
            };
            m.add(&xa, xb.as_deref());
            at += rows;
        }
        Ok(m)
    }
}

/// The statistics of a set of rows from which linear and unbiased CKA follow, for every pair of
/// a row layer (from `a`) and a column layer (from `b`, or `a` again), accumulated in f64.
///
/// With `x_i`, `y_i` row `i` of a row layer and a column layer, `kx_i = ‖x_i‖²`,
/// `ky_i = ‖y_i‖²`: `n`; `cross = Σ x_i y_iᵀ` (all pairs as one `[Σp, Σq]` matrix, `Zaᵀ Zb`);
/// the column sums; `w_ab = Σ kx_i y_i` (`[La, Σq]`) and `w_ba = Σ ky_i x_i` (`[Lb, Σp]`);
/// `kk = Σ kx_i ky_i` (`[La, Lb]`); and the same of each layer with itself (`self_*`), for the
/// denominators.
struct Moments {
    n: f64,
    same: bool,
    widths_a: Vec<i64>,
    widths_b: Vec<i64>,
    cross: Tensor,
    sum_a: Tensor,
    sum_b: Tensor,
    w_ab: Tensor,
    w_ba: Tensor,
    kk: Tensor,
    /// Per layer of `a` then `b`: `Σ x_i x_iᵀ`, `Σ kx_i x_i`, `Σ kx_i²`.
    self_gram: Vec<Tensor>,
    self_w: Vec<Tensor>,
    self_kk: Vec<Tensor>,
}

impl Moments {
    fn new(a: &[Layer<'_>], b: Option<&[Layer<'_>]>, device: Device) -> Moments {
        let widths_a: Vec<i64> = a.iter().map(|(_, s)| s.width()).collect();
        let widths_b: Vec<i64> = b.unwrap_or(a).iter().map(|(_, s)| s.width()).collect();
        let (pa, pb) = (widths_a.iter().sum::<i64>(), widths_b.iter().sum::<i64>());
        let (la, lb) = (widths_a.len() as i64, widths_b.len() as i64);
        let zeros = |shape: &[i64]| Tensor::zeros(shape, (Kind::Double, device));
        let own: Vec<i64> = if b.is_some() {
            widths_a.iter().chain(&widths_b).copied().collect()
        } else {
            widths_a.clone()
        };
        Moments {
            n: 0.0,
            same: b.is_none(),
            cross: zeros(&[pa, pb]),
            sum_a: zeros(&[pa]),
            sum_b: zeros(&[pb]),
            w_ab: zeros(&[la, pb]),
            w_ba: zeros(&[lb, pa]),
            kk: zeros(&[la, lb]),
            self_gram: own.iter().map(|&p| zeros(&[p, p])).collect(),
            self_w: own.iter().map(|&p| zeros(&[p])).collect(),
            self_kk: own.iter().map(|_| zeros(&[])).collect(),
            widths_a,
            widths_b,
        }
    }

    /// Adds a chunk: `xa` (and `xb`), each layer `[r, p]` f64.
    fn add(&mut self, xa: &[Tensor], xb: Option<&[Tensor]>) {
        let rows = xa[0].size()[0];
        self.n += rows as f64;
        let za = Tensor::cat(xa, 1);
        let ka = Tensor::stack(
            &xa.iter()
                .map(|x| x.square().sum_dim_intlist(1, false, Kind::Double))
                .collect::<Vec<_>>(),
            1,
        );
        let (zb, kb) = match xb {
            Some(xb) => (
                Tensor::cat(xb, 1),
                Tensor::stack(
                    &xb.iter()
                        .map(|x| x.square().sum_dim_intlist(1, false, Kind::Double))
                        .collect::<Vec<_>>(),
                    1,
                ),
            ),
            None => (za.shallow_clone(), ka.shallow_clone()),
        };
        self.cross += za.tr().matmul(&zb);
        self.sum_a += za.sum_dim_intlist(0, false, Kind::Double);
        self.sum_b += zb.sum_dim_intlist(0, false, Kind::Double);
        self.w_ab += ka.tr().matmul(&zb);
        self.w_ba += kb.tr().matmul(&za);
        self.kk += ka.tr().matmul(&kb);
        let own = xa
            .iter()
            .zip(ka.unbind(1))
            .chain(xb.unwrap_or_default().iter().zip(kb.unbind(1)));
        for (i, (x, k)) in own.enumerate().take(self.self_gram.len()) {
            self.self_gram[i] += x.tr().matmul(x);
            self.self_w[i] += k.matmul(x);
            self.self_kk[i] += k.dot(&k);
        }
    }

    /// [`Error::NotFinite`] for the first layer whose sums are NaN or infinite: any non-finite
    /// value in its rows makes them so.
    fn check_finite(&self, a: &[Layer<'_>], b: Option<&[Layer<'_>]>) -> Result<()> {
        for (i, (name, _)) in a.iter().chain(b.unwrap_or_default()).enumerate() {
            let probe = self.self_gram[i].sum(Kind::Double) + self.self_w[i].sum(Kind::Double);
            if !probe.double_value(&[]).is_finite() {
                return Err(Error::NotFinite {
                    layer: (*name).to_owned(),
                });
            }
        }
        Ok(())
    }

    /// `self_*` index of column layer `j`.
    fn own_b(&self, j: usize) -> usize {
        if self.same {
            j
        } else {
            self.widths_a.len() + j
        }
    }

    /// Linear (biased) CKA for every pair: the centered cross-covariance
    /// `C = Σ x_i y_iᵀ − (Σ x_i)(Σ y_i)ᵀ / n`, then `‖C_xy‖²_F / (‖C_xx‖_F ‖C_yy‖_F)`.
    fn linear_cka(&self, a: &[Layer<'_>], b: Option<&[Layer<'_>]>) -> Result<Vec<Vec<f64>>> {
        let centered = |gram: &Tensor, sx: &Tensor, sy: &Tensor| gram - sx.outer(sy) / self.n;
        let norm2 = |t: &Tensor| t.square().sum(Kind::Double).double_value(&[]);
        let own = |i: usize| {
            let s = self.own_sum(i);
            norm2(&centered(&self.self_gram[i], &s, &s)).sqrt()
        };
        let left: Vec<f64> = (0..self.widths_a.len()).map(own).collect();
        let right: Vec<f64> = (0..self.widths_b.len()).map(|j| own(self.own_b(j))).collect();
        let mut cross = Vec::new();
        let offsets_a = offsets(&self.widths_a);
        let offsets_b = offsets(&self.widths_b);
        for (i, &pa) in self.widths_a.iter().enumerate() {
            let mut row = Vec::new();
            let sa = self.sum_a.narrow(0, offsets_a[i], pa);
            for (j, &pb) in self.widths_b.iter().enumerate() {
                let sb = self.sum_b.narrow(0, offsets_b[j], pb);
                let block = self.cross.narrow(0, offsets_a[i], pa).narrow(1, offsets_b[j], pb);
                row.push(norm2(&centered(&block, &sa, &sb)));
            }
            cross.push(row);
        }
        let squared = |v: Vec<f64>| v.into_iter().map(|x| x * x).collect::<Vec<_>>();
        ratio(&cross, &squared(left), &squared(right), a, b)
    }

    /// The column sums of `self_*` layer `i`.
    fn own_sum(&self, i: usize) -> Tensor {
        let (sums, widths, j) = if i < self.widths_a.len() {
            (&self.sum_a, &self.widths_a, i)
        } else {
            (&self.sum_b, &self.widths_b, i - self.widths_a.len())
        };
        sums.narrow(0, offsets(widths)[j], widths[j])
    }

    /// Song et al.'s unbiased `HSIC₁` for every pair (`[La][Lb]`), and of each row and column
    /// layer with itself, from the feature-space statistics. With `K = X Xᵀ`, `L = Y Yᵀ` and
    /// `K̃`, `L̃` their diagonals zeroed:
    /// `tr(K̃ L̃) = ‖Σ x_i y_iᵀ‖²_F − Σ kx_i ky_i`,
    /// `1ᵀK̃1 = ‖Σ x_i‖² − Σ kx_i`,
    /// `1ᵀK̃L̃1 = Σ_i (x_i·sx − kx_i)(y_i·sy − ky_i)
    ///         = sxᵀ (Σ x_i y_iᵀ) sy − syᵀ (Σ kx_i y_i) − sxᵀ (Σ ky_i x_i) + Σ kx_i ky_i`.
    fn unbiased_hsic(&self) -> (Vec<Vec<f64>>, Vec<f64>, Vec<f64>) {
        let n = self.n;
        let hsic =
            |gram: &Tensor, sx: &Tensor, sy: &Tensor, wxy: &Tensor, wyx: &Tensor, kk: f64, trx: f64, try_: f64| {
                let d = |t: Tensor| t.double_value(&[]);
                let trace = d(gram.square().sum(Kind::Double)) - kk;
                let ones_k = d(sx.dot(sx)) - trx;
                let ones_l = d(sy.dot(sy)) - try_;
                let ones_kl = d(sx.matmul(gram).dot(sy)) - d(sy.dot(wxy)) - d(sx.dot(wyx)) + kk;
                (trace + ones_k * ones_l / ((n - 1.0) * (n - 2.0)) - 2.0 / (n - 2.0) * ones_kl) / (n * (n - 3.0))
            };
        let own = |i: usize| {
            let s = self.own_sum(i);
            let tr = self.self_gram[i].trace().double_value(&[]);
            let kk = self.self_kk[i].double_value(&[]);
            hsic(&self.self_gram[i], &s, &s, &self.self_w[i], &self.self_w[i], kk, tr, tr)
        };
        let left: Vec<f64> = (0..self.widths_a.len()).map(own).collect();
        let right: Vec<f64> = if self.same {
            Vec::new()
        } else {
            (0..self.widths_b.len()).map(|j| own(self.own_b(j))).collect()
        };
        let (offsets_a, offsets_b) = (offsets(&self.widths_a), offsets(&self.widths_b));
        let cross = self
            .widths_a
            .iter()
            .enumerate()
            .map(|(i, &pa)| {
                let sa = self.sum_a.narrow(0, offsets_a[i], pa);
                let tra = self.self_gram[i].trace().double_value(&[]);
                self.widths_b
                    .iter()
                    .enumerate()
                    .map(|(j, &pb)| {
                        let sb = self.sum_b.narrow(0, offsets_b[j], pb);
                        let trb = self.self_gram[self.own_b(j)].trace().double_value(&[]);
                        let gram = self.cross.narrow(0, offsets_a[i], pa).narrow(1, offsets_b[j], pb);
                        let wab = self.w_ab.get(i as i64).narrow(0, offsets_b[j], pb);
                        let wba = self.w_ba.get(j as i64).narrow(0, offsets_a[i], pa);
                        let kk = self.kk.double_value(&[i as i64, j as i64]);
                        hsic(&gram, &sa, &sb, &wab, &wba, kk, tra, trb)
                    })
                    .collect()
            })
            .collect();
        (cross, left, right)
    }
}

/// Where each layer starts in the concatenated features.
fn offsets(widths: &[i64]) -> Vec<i64> {
    widths
        .iter()
        .scan(0, |at, w| {
            let start = *at;
            *at += w;
            Some(start)
        })
        .collect()
}

/// One layer reduced for SVCCA: an orthonormal basis `[n, k]` of its kept directions.
struct Reduced {
    basis: Tensor,
    kept: i64,
}

/// SVCCA's first step for one layer: center, SVD, keep the fewest top directions whose squared
/// singular values reach `threshold` of the total (never past the numerical rank), project
/// onto them, and QR the projection for the CCA.
fn reduce(name: &str, source: &dyn RowSource, threshold: f64, device: Device) -> Result<Reduced> {
    let n = source.rows();
    let x = source.read(0, n)?.f_to_device(device)?.f_to_kind(Kind::Double)?;
    if !bool::try_from(x.isfinite().all())? {
        return Err(Error::NotFinite { layer: name.to_owned() });
    }
    let x = &x - x.mean_dim(0, true, Kind::Double);
    let (_, s, v) = x.f_svd(true, true)?;
    let s = Vec::<f64>::try_from(&s.to_device(Device::Cpu))?;
    let total: f64 = s.iter().map(|v| v * v).sum();
    let largest = s.first().copied().unwrap_or(0.0);
    if total.is_nan() || total <= 0.0 {
        return Err(Error::NoVariance { layer: name.to_owned() });
    }
    // Directions below this are rounding noise (numpy's matrix_rank tolerance).
    let noise = largest * f64::EPSILON * x.size().iter().copied().max().unwrap_or(1) as f64;
    let rank = s.iter().take_while(|&&v| v > noise).count();
    let mut kept = 0;
    let mut covered = 0.0;
    for v in &s[..rank] {
        kept += 1;
        covered += v * v;
        if covered >= threshold * total {
            break;
        }
    }
    let projected = x.matmul(&v.narrow(1, 0, kept as i64));
    let (q, _) = Tensor::f_linalg_qr(&projected, "reduced")?;
    Ok(Reduced {
        basis: q,
        kept: kept as i64,
    })
}

fn svcca_matrix(
    a: &[Layer<'_>],
    b: Option<&[Layer<'_>]>,
    threshold: f64,
    options: &CompareOptions,
) -> Result<Vec<Vec<f64>>> {
    let reduce_all = |layers: &[Layer<'_>]| {
        layers
            .iter()
            .map(|(name, s)| reduce(name, *s, threshold, options.device))
            .collect::<Result<Vec<_>>>()
    };
    let ra = reduce_all(a)?;
    let rb_owned = match b {
        Some(b) => Some(reduce_all(b)?),
        None => None,
    };
    let rb = rb_owned.as_deref().unwrap_or(&ra);
    let n = a[0].1.rows();
    let mut values = Vec::new();
    for (x, (name_a, _)) in ra.iter().zip(a) {
        let mut row = Vec::new();
        for (y, (name_b, _)) in rb.iter().zip(b.unwrap_or(a)) {
            // Centered rows span n - 1 dimensions: two subspaces of k1 and k2 dimensions there
            // share at least k1 + k2 - (n - 1), each a correlation of 1 whatever the data.
            if x.kept + y.kept > n - 1 {
                return Err(Error::SvccaRank {
                    left: (*name_a).to_owned(),
                    left_kept: x.kept,
                    right: (*name_b).to_owned(),
                    right_kept: y.kept,
                    rows: n,
                });
            }
            // CCA of two orthonormal bases: the canonical correlations are the singular values
            // of Q_xᵀ Q_y (Björck & Golub), clipped against rounding.
            let (_, rho, _) = x.basis.tr().matmul(&y.basis).f_svd(true, false)?;
            row.push(rho.clamp(0.0, 1.0).mean(Kind::Double).double_value(&[]));
        }
        values.push(row);
    }
    Ok(values)
}
