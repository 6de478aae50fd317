//! Linear probes (re-exported as `hooks::analysis`): does a layer's representation hold a label
//! linearly? Stratified, seeded k-fold cross-validation of a logistic, ridge or mean-difference
//! probe, with Hewitt & Liang's (2019, "Designing and Interpreting Probes with Control Tasks")
//! control task and selectivity, and a probe direction ready for steering.
//!
//! Features are rows `[n, h]` (a pooled layer: one per sample; an unpooled one: one per real
//! token), computed in f64 on the features' device. The mistakes this module exists to rule out:
//!
//! - **Leakage.** Features are standardised per training fold, as scikit-learn's
//!   `StandardScaler` fitted on that fold (population standard deviation; a feature constant to
//!   within rounding keeps scale 1, by scikit-learn's test); the test fold never shapes the
//!   scaler or the probe. As in scikit-learn, a feature that barely varies (a dead unit, std
//!   1e-30) is scaled up like any other, and its raw-space coefficient can dominate a direction:
//!   `mean-diff` has no such scaling.
//! - **Unbalanced folds.** Folds are stratified: each class is shuffled by the seed and dealt
//!   round the folds ([`stratified_folds`]). Token rows keep each sample's tokens in one fold
//!   ([`stratified_group_folds`]): tokens share their context, which would otherwise leak.
//! - **No control.** A control task ([`Control`]) runs on the same folds: selectivity is the
//!   accuracy minus the control's.
//! - **A direction in the wrong space.** [`ProbeReport::direction`] is mapped back to the raw
//!   features (`coef / scale`) and normalised, so it can be added to the layer's output as is.
//!
//! The probes ([`Method`]):
//!
//! - `Logistic { c }`: scikit-learn's `LogisticRegression(C=c)` objective, `C · Σ loss +
//!   ½‖W‖²` with the intercept unpenalised; binary with one coefficient vector for two classes,
//!   multinomial (softmax, one row per class) for more. Solved by Newton's method with a
//!   backtracking line search to the optimum (not to lbfgs' tolerance): the gradient in f64, the
//!   Hessian accumulated in f32 and kept while steps with it converge, each fold started from
//!   the fit on every row.
//! - `Ridge { alpha }`: `RidgeClassifier(alpha)`: least squares on ±1 targets (one column per
//!   class, one for two classes) with an intercept, in closed form.
//! - `MeanDiff`: the mass-mean probe of Marks & Tegmark (2023, "The Geometry of Truth"): the
//!   direction `μ₁ − μ₀` of the raw features, thresholded at the midpoint of the means; binary
//!   only, never standardised.
//!
//! Labels are classes in sorted order ([`Labels`]): numerically when every label is a number,
//! else as strings. A binary probe's score and direction point toward the second class.
//!
//! ```
//! use hooks_runtime::analysis::{probe, stratified_folds, Control, Labels, Method, ProbeOptions};
//! use tch::{Device, Kind, Tensor};
//!
//! // Two classes apart along the first feature (seeded: the bounds below hold for 200 seeds).
//! tch::manual_seed(0);
//! let y: Vec<i64> = (0..100).map(|i| i % 2).collect();
//! let x = Tensor::randn([100, 8], (Kind::Float, Device::Cpu));
//! let x = x + Tensor::from_slice(&y).to_kind(Kind::Float).unsqueeze(1) * Tensor::from_slice(&[4.0f32, 0., 0., 0., 0., 0., 0., 0.]);
//! let labels = Labels::new(&y.iter().map(ToString::to_string).collect::<Vec<_>>());
//! let folds = stratified_folds(&labels, 5, 0)?;
//! let options = ProbeOptions { method: Method::Logistic { c: 1.0 }, control: Control::Shuffle, seed: 0 };
//! let report = probe(&x, &labels, &folds, &options)?;
//! assert!(report.accuracy > 0.85);
//! assert!(report.control_accuracy.unwrap() < 0.75);
//! assert!(report.direction.double_value(&[0]) > 0.75);
//! # Ok::<(), hooks_runtime::Error>(())
//! ```

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// Which probe to fit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// scikit-learn's `LogisticRegression(C=c)` on standardised features.
    Logistic {
        /// The inverse of the L2 penalty's strength (sklearn's `C`, default 1).
        c: f64,
    },
    /// scikit-learn's `RidgeClassifier(alpha)` on standardised features.
    Ridge {
        /// The L2 penalty (sklearn's `alpha`, default 1).
        alpha: f64,
    },
    /// The difference of the class means, thresholded at their midpoint (binary only).
    MeanDiff,
}

impl Method {
    /// `logistic`, `ridge` or `mean-diff`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Method::Logistic { .. } => "logistic",
            Method::Ridge { .. } => "ridge",
            Method::MeanDiff => "mean-diff",
        }
    }
}

/// The control task run beside the probe, on the same folds (Hewitt & Liang, 2019).
#[derive(Clone, Debug, PartialEq)]
pub enum Control {
    /// None: no control accuracy or selectivity.
    None,
    /// The labels permuted by the seed: the same classes in the same numbers, with no relation to
    /// the features.
    Shuffle,
    /// Hewitt & Liang's control for token-level probes: each token type (one id per row) gets a
    /// fixed label drawn by the seed from the labels' empirical distribution, so a probe that
    /// memorises token identity scores well and one that reads the property does not.
    Type(Vec<i64>),
}

/// Class labels, one per row, as indices into their sorted classes.
#[derive(Clone, Debug, PartialEq)]
pub struct Labels {
    /// The distinct labels, sorted: numerically when every label parses as a number, else as
    /// strings.
    pub classes: Vec<String>,
    /// Each row's class, an index into `classes`.
    pub codes: Vec<i64>,
}

impl Labels {
    /// The labels `values`, one per row.
    #[must_use]
    pub fn new(values: &[String]) -> Labels {
        let mut classes: Vec<String> = values.to_vec();
        let numeric: Option<Vec<f64>> = classes.iter().map(|v| v.trim().parse::<f64>().ok()).collect();
        match numeric {
            Some(_) => classes.sort_by(|a, b| {
                let (x, y) = (
                    a.trim().parse::<f64>().unwrap_or(0.0),
                    b.trim().parse::<f64>().unwrap_or(0.0),
                );
                x.total_cmp(&y).then_with(|| a.cmp(b))
            }),
            None => classes.sort(),
        }
        classes.dedup();
        let codes = values
            .iter()
            .map(|v| classes.iter().position(|c| c == v).map_or(0, |i| i as i64))
            .collect();
        Labels { classes, codes }
    }

    /// The number of rows.
    #[must_use]
    pub fn len(&self) -> usize {
        self.codes.len()
    }

    /// Whether there is no row.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    /// How many rows each class has.
    #[must_use]
    pub fn counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &c in &self.codes {
            counts[c as usize] += 1;
        }
        counts
    }
}

/// What [`probe`] does besides the folds.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeOptions {
    /// The probe.
    pub method: Method,
    /// The control task.
    pub control: Control,
    /// The seed of the control's labels.
    pub seed: u64,
}

/// A probe's cross-validated scores and its direction.
#[derive(Debug)]
pub struct ProbeReport {
    /// Each fold's test accuracy, fold 0 first.
    pub fold_accuracies: Vec<f64>,
    /// Their mean.
    pub accuracy: f64,
    /// Their population standard deviation (numpy's `std`, `ddof=0`).
    pub accuracy_std: f64,
    /// For two classes, the mean over folds of the test fold's area under the ROC curve of the
    /// probe's score (ties count one half, as scikit-learn's `roc_auc_score`).
    pub auroc: Option<f64>,
    /// With a control task, its mean accuracy over the same folds.
    pub control_accuracy: Option<f64>,
    /// `accuracy − control_accuracy`.
    pub selectivity: Option<f64>,
    /// The rows.
    pub n: usize,
    /// The probe fitted on every row, its direction in the raw feature space, unit length,
    /// `Float` on the CPU: `[h]` for two classes (toward the second), `[classes, h]` for more.
    pub direction: Tensor,
}

/// Each row's fold, `0..k`: every class shuffled by `seed` and dealt round the folds, each class
/// starting where the one before it stopped, so that folds differ in size by one at most and
/// hold each class in proportion.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for `k` < 2, a single class, or a class with fewer rows than `k`.
pub fn stratified_folds(labels: &Labels, k: usize, seed: u64) -> Result<Vec<i64>> {
    check_labels(labels, k)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut folds = vec![0i64; labels.len()];
    let mut next = 0usize;
    for class in 0..labels.classes.len() {
        let mut rows: Vec<usize> = (0..labels.len()).filter(|&i| labels.codes[i] == class as i64).collect();
        shuffle(&mut rows, &mut rng);
        for row in rows {
            folds[row] = (next % k) as i64;
            next += 1;
        }
    }
    Ok(folds)
}

/// Each row's fold, `0..k`, keeping every group's rows (a sample's tokens) in one fold, so that
/// no sample has tokens on both sides of a split; stratified as far as the groups allow, as
/// scikit-learn's `StratifiedGroupKFold(shuffle=True)` does it: the groups, shuffled by `seed`
/// and then taken those with the most uneven labels first, each go to the fold that keeps every
/// class's share across folds most even (ties: the smaller fold). `groups` holds each row's
/// group id.
///
/// # Errors
///
/// As [`stratified_folds`], and [`Error::InvalidArgument`] for `groups` of another length, or a
/// class whose rows lie in fewer groups than `k` (some fold would lack it).
pub fn stratified_group_folds(labels: &Labels, groups: &[i64], k: usize, seed: u64) -> Result<Vec<i64>> {
    check_labels(labels, k)?;
    let bad = |reason: String| Error::InvalidArgument { name: "labels", reason };
    if groups.len() != labels.len() {
        return Err(bad(format!("{} group ids for {} rows", groups.len(), labels.len())));
    }
    let classes = labels.classes.len();
    // Each group's rows and class counts, in order of first appearance.
    let mut index: std::collections::HashMap<i64, usize> = std::collections::HashMap::new();
    let mut counts: Vec<Vec<f64>> = Vec::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for (row, (&group, &code)) in groups.iter().zip(&labels.codes).enumerate() {
        let g = *index.entry(group).or_insert_with(|| {
            counts.push(vec![0.0; classes]);
            members.push(Vec::new());
            counts.len() - 1
        });
        counts[g][code as usize] += 1.0;
        members[g].push(row);
    }
    for class in 0..classes {
        let holding = counts.iter().filter(|c| c[class] > 0.0).count();
        if holding < k {
            return Err(bad(format!(
                "class `{}` lies in {holding} sample(s), fewer than the {k} folds, and a sample's tokens stay in one fold; use fewer folds or more samples",
                labels.classes[class]
            )));
        }
    }
    let mut order: Vec<usize> = (0..counts.len()).collect();
    shuffle(&mut order, &mut ChaCha8Rng::seed_from_u64(seed));
    let spread = |c: &[f64]| {
        let mean = c.iter().sum::<f64>() / c.len() as f64;
        (c.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / c.len() as f64).sqrt()
    };
    // A stable sort keeps the shuffled order among groups of equal spread.
    order.sort_by(|&a, &b| spread(&counts[b]).total_cmp(&spread(&counts[a])));
    let totals: Vec<f64> = (0..classes).map(|c| counts.iter().map(|g| g[c]).sum()).collect();
    let mut per_fold = vec![vec![0.0; classes]; k];
    let mut folds = vec![0i64; labels.len()];
    for g in order {
        let mut best: Option<(f64, f64, usize)> = None;
        for f in 0..k {
            for c in 0..classes {
                per_fold[f][c] += counts[g][c];
            }
            let unevenness = (0..classes)
                .map(|c| spread(&per_fold.iter().map(|fold| fold[c] / totals[c]).collect::<Vec<_>>()))
                .sum::<f64>()
                / classes as f64;
            for c in 0..classes {
                per_fold[f][c] -= counts[g][c];
            }
            let size: f64 = per_fold[f].iter().sum();
            let better =
                best.is_none_or(|(u, s, _)| unevenness < u - 1e-12 || ((unevenness - u).abs() <= 1e-12 && size < s));
            if better {
                best = Some((unevenness, size, f));
            }
        }
        let f = best.map_or(0, |(_, _, f)| f);
        for c in 0..classes {
            per_fold[f][c] += counts[g][c];
        }
        for &row in &members[g] {
            folds[row] = f as i64;
        }
    }
    Ok(folds)
}

fn check_labels(labels: &Labels, k: usize) -> Result<()> {
    let bad = |reason: String| Error::InvalidArgument { name: "labels", reason };
    if k < 2 {
        return Err(Error::InvalidArgument {
            name: "folds",
            reason: format!("{k} fold(s); cross-validation needs at least 2"),
        });
    }
    if labels.classes.len() < 2 {
        return Err(bad(format!(
            "every row has the label `{}`; a probe needs at least two classes",
            labels.classes.first().map_or("", String::as_str)
        )));
    }
    let counts = labels.counts();
    if let Some((class, &count)) = counts.iter().enumerate().find(|(_, &n)| n < k) {
        return Err(bad(format!(
            "class `{}` has {count} row(s), fewer than the {k} folds; use fewer folds or more samples",
            labels.classes[class]
        )));
    }
    Ok(())
}

/// Fisher–Yates, with unbiased draws.
fn shuffle<T>(items: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..items.len()).rev() {
        items.swap(i, below(rng, i as u64 + 1) as usize);
    }
}

/// A uniform draw from `0..n` (rejection sampling, so no modulo bias).
fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    let zone = u64::MAX - u64::MAX % n;
    loop {
        let x = rng.next_u64();
        if x < zone {
            return x % n;
        }
    }
}

/// Cross-validates `options.method` on `features` `[n, h]` (any float kind; computed in f64 on
/// its device) with `labels` over `folds` (each row's fold, `0..k`, as [`stratified_folds`]
/// makes them), runs the control task on the same folds, and fits the direction on every row.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for a row count that differs from the labels', fewer than two
/// classes, a fold whose training rows hold one class only, a method that does not fit the
/// classes (`MeanDiff` on more than two), a non-positive `c` or negative `alpha`, or a `Type`
/// control whose ids do not match the rows; [`Error::NotFinite`] for NaN or infinite features.
pub fn probe(features: &Tensor, labels: &Labels, folds: &[i64], options: &ProbeOptions) -> Result<ProbeReport> {
    let bad = |name: &'static str, reason: String| Error::InvalidArgument { name, reason };
    let size = features.size();
    if size.len() != 2 {
        return Err(bad("features", format!("shape {size:?}; give rows `[n, h]`")));
    }
    let n = size[0] as usize;
    if n != labels.len() || n != folds.len() {
        return Err(bad(
            "labels",
            format!(
                "{} labels and {} fold assignments for {n} rows; give one label per row",
                labels.len(),
                folds.len()
            ),
        ));
    }
    let classes = labels.classes.len();
    if classes < 2 {
        return Err(bad("labels", "a probe needs at least two classes".into()));
    }
    match options.method {
        Method::MeanDiff if classes > 2 => {
            return Err(bad(
                "method",
                format!(
                    "`mean-diff` is a binary probe and the labels have {classes} classes; use `logistic` or `ridge`"
                ),
            ))
        }
        Method::Logistic { c } if !(c.is_finite() && c > 0.0) => {
            return Err(bad("C", format!("{c}; give a positive number")))
        }
        Method::Ridge { alpha } if !(alpha.is_finite() && alpha >= 0.0) => {
            return Err(bad("alpha", format!("{alpha}; give a non-negative number")))
        }
        _ => {}
    }
    let x = features.f_to_kind(Kind::Double)?;
    if !bool::try_from(x.f_isfinite()?.f_all()?)? {
        return Err(Error::NotFinite {
            layer: "features".into(),
        });
    }
    let device = x.device();
    let k = folds.iter().copied().max().map_or(0, |m| m + 1);
    let fold_ids = Tensor::from_slice(folds).to_device(device);
    let y = Tensor::from_slice(&labels.codes).to_device(device);
    // The fit on every row first: the folds' fits start from it (the optimum is unique, so a
    // start changes only how many Newton steps reach it).
    let full = fit(&x, &y, classes, options.method, -1, None)?;
    // Each fold's fit starts from `start`, or (for the control's labels) from the fold before.
    let run = |y: &Tensor, start: Option<&Fitted>| -> Result<(Vec<f64>, Vec<f64>)> {
        let (mut accuracies, mut aurocs) = (Vec::new(), Vec::new());
        let mut previous: Option<Fitted> = None;
        for fold in 0..k {
            let test = fold_ids.eq(fold);
            let train = test.logical_not();
            let (x_train, y_train) = (
                x.index_select(0, &train.nonzero().squeeze_dim(1)),
                y.masked_select(&train),
            );
            let (x_test, y_test) = (
                x.index_select(0, &test.nonzero().squeeze_dim(1)),
                y.masked_select(&test),
            );
            if x_test.size()[0] == 0 {
                continue;
            }
            let fitted = fit(
                &x_train,
                &y_train,
                classes,
                options.method,
                fold,
                start.or(previous.as_ref()),
            )?;
            let scores = fitted.scores(&x_test)?;
            let predicted = predict(&scores);
            accuracies.push(
                predicted
                    .eq_tensor(&y_test)
                    .to_kind(Kind::Double)
                    .mean(Kind::Double)
                    .double_value(&[]),
            );
            if classes == 2 {
                let positives = y_test.sum(Kind::Int64).int64_value(&[]);
                if positives == 0 || positives == y_test.size()[0] {
                    return Err(Error::InvalidArgument {
                        name: "folds",
                        reason: format!(
                            "the test rows of fold {fold} hold one class, so its AUROC is undefined; use fewer folds"
                        ),
                    });
                }
                aurocs.push(auroc(
                    &Vec::<f64>::try_from(scores.squeeze_dim(1).to_device(Device::Cpu))?,
                    &Vec::<i64>::try_from(y_test.to_device(Device::Cpu))?,
                ));
            }
            previous = Some(fitted);
        }
        Ok((accuracies, aurocs))
    };
    let (fold_accuracies, aurocs) = run(&y, Some(&full))?;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let accuracy = mean(&fold_accuracies);
    let accuracy_std = (fold_accuracies.iter().map(|a| (a - accuracy).powi(2)).sum::<f64>()
        / fold_accuracies.len().max(1) as f64)
        .sqrt();
    let control = match &options.control {
        Control::None => None,
        Control::Shuffle => {
            let mut codes = labels.codes.clone();
            shuffle(&mut codes, &mut control_rng(options.seed));
            Some(codes)
        }
        Control::Type(ids) => {
            if ids.len() != n {
                return Err(bad(
                    "control",
                    format!(
                        "{} token ids for {n} rows; the type control needs one id per row",
                        ids.len()
                    ),
                ));
            }
            Some(type_labels(ids, &labels.codes, options.seed))
        }
    };
    let control_accuracy = match control {
        Some(codes) => Some(mean(&run(&Tensor::from_slice(&codes).to_device(device), None)?.0)),
        None => None,
    };
    let direction = full.direction()?;
    Ok(ProbeReport {
        accuracy,
        accuracy_std,
        auroc: (classes == 2).then(|| mean(&aurocs)),
        selectivity: control_accuracy.map(|c| accuracy - c),
        control_accuracy,
        n,
        fold_accuracies,
        direction,
    })
}

/// The control's own stream of the seed, apart from the folds'.
fn control_rng(seed: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(1);
    rng
}

/// Hewitt & Liang's control labels: each distinct id (in increasing order) draws one row's
/// label uniformly, which is a draw from the labels' empirical distribution; each row takes its
/// id's label.
fn type_labels(ids: &[i64], codes: &[i64], seed: u64) -> Vec<i64> {
    let mut rng = control_rng(seed);
    let mut types: Vec<i64> = ids.to_vec();
    types.sort_unstable();
    types.dedup();
    let drawn: std::collections::HashMap<i64, i64> = types
        .into_iter()
        .map(|id| (id, codes[below(&mut rng, codes.len() as u64) as usize]))
        .collect();
    ids.iter().map(|id| drawn[id]).collect()
}

/// The area under the ROC curve of `scores` for `truth` (1 positive, 0 negative): the
/// Mann–Whitney statistic with average ranks for ties.
fn auroc(scores: &[f64], truth: &[i64]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut ranks = vec![0.0; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            ranks[o] = rank;
        }
        i = j + 1;
    }
    let positives = truth.iter().filter(|&&t| t == 1).count() as f64;
    let negatives = truth.len() as f64 - positives;
    let sum: f64 = ranks.iter().zip(truth).filter(|(_, &t)| t == 1).map(|(r, _)| r).sum();
    (sum - positives * (positives + 1.0) / 2.0) / (positives * negatives)
}

/// `[m, 1]` scores (binary: toward class 1) or `[m, classes]` → each row's class.
fn predict(scores: &Tensor) -> Tensor {
    if scores.size()[1] == 1 {
        scores.squeeze_dim(1).gt(0.0).to_kind(Kind::Int64)
    } else {
        scores.argmax(1, false)
    }
}

/// A probe fitted on one training set.
struct Fitted {
    /// Per feature: what is subtracted, and what it is divided by after (1 when not standardised).
    mean: Tensor,
    scale: Tensor,
    /// `[h, outputs]` and `[outputs]`, in the standardised space.
    weights: Tensor,
    bias: Tensor,
}

impl Fitted {
    fn scores(&self, x: &Tensor) -> Result<Tensor> {
        Ok(((x - &self.mean) / &self.scale).f_matmul(&self.weights)? + &self.bias)
    }

    /// The probe as `[h + 1, outputs]` coefficients (the intercepts last) for features
    /// standardised by another `mean` and `scale`: the same function of the raw features.
    fn carried(&self, mean: &Tensor, scale: &Tensor) -> Tensor {
        let raw = &self.weights / self.scale.unsqueeze(1);
        let bias = &self.bias - self.mean.unsqueeze(0).matmul(&raw).squeeze_dim(0)
            + mean.unsqueeze(0).matmul(&raw).squeeze_dim(0);
        Tensor::cat(&[raw * scale.unsqueeze(1), bias.unsqueeze(0)], 0)
    }

    /// The weights in the raw space (`w / scale`), each output's row normalised.
    fn direction(&self) -> Result<Tensor> {
        let raw = (&self.weights / self.scale.unsqueeze(1)).transpose(0, 1);
        let unit = &raw
            / raw
                .square()
                .sum_dim_intlist([1i64].as_slice(), true, Kind::Double)
                .sqrt()
                .clamp_min(1e-300);
        let unit = if unit.size()[0] == 1 { unit.squeeze_dim(0) } else { unit };
        Ok(unit.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?)
    }
}

/// Fits `method` on `x` `[m, h]` (f64) and `y` (class codes `0..classes`); `fold` names the
/// training set in errors (−1: every row). An iterative fit starts from `start`'s probe, carried
/// into this fit's standardised space.
fn fit(x: &Tensor, y: &Tensor, classes: usize, method: Method, fold: i64, start: Option<&Fitted>) -> Result<Fitted> {
    let present = y
        .bincount(None::<Tensor>, classes as i64)
        .gt(0)
        .sum(Kind::Int64)
        .int64_value(&[]);
    if present < classes as i64 {
        return Err(Error::InvalidArgument {
            name: "labels",
            reason: format!(
                "the training rows of {} hold {present} of the {classes} classes; use fewer folds or more samples of each class",
                if fold < 0 { "the full fit".to_owned() } else { format!("fold {fold}") }
            ),
        });
    }
    let (h, options) = (x.size()[1], (Kind::Double, x.device()));
    if method == Method::MeanDiff {
        let mean_of = |c: i64| {
            x.index_select(0, &y.eq(c).nonzero().squeeze_dim(1))
                .mean_dim(0, false, Kind::Double)
        };
        let (m0, m1) = (mean_of(0), mean_of(1));
        let d = &m1 - &m0;
        let threshold = ((&m0 + &m1) / 2.0).dot(&d);
        return Ok(Fitted {
            mean: Tensor::zeros([h], options),
            scale: Tensor::ones([h], options),
            weights: d.unsqueeze(1),
            bias: -threshold.unsqueeze(0),
        });
    }
    // StandardScaler: population variance; a feature whose variance is within rounding of its
    // mean (scikit-learn's `_is_constant_feature`: var ≤ m·ε·var + (m·mean·ε)²) keeps scale 1.
    let mean = x.mean_dim(0, false, Kind::Double);
    let var = x.var_dim([0i64].as_slice(), false, false);
    let rows = x.size()[0] as f64;
    let bound = &var * (rows * f64::EPSILON) + (&mean * (rows * f64::EPSILON)).square();
    let scale = var.sqrt().where_self(&var.gt_tensor(&bound), &var.ones_like());
    // The standardised rows with a 1 appended (the intercept's column), made in place: the
    // rows are copied once.
    let (m, h) = (x.size()[0], x.size()[1]);
    let zt = Tensor::empty([m, h + 1], (Kind::Double, x.device()));
    let mut standardised = zt.narrow(1, 0, h);
    standardised.f_copy_(x)?;
    let _ = standardised.f_sub_(&mean)?.f_div_(&scale)?;
    let _ = zt.narrow(1, h, 1).f_fill_(1.0)?;
    let z = zt.narrow(1, 0, h);
    let (weights, bias) = match method {
        Method::Ridge { alpha } => ridge(&z, y, classes, alpha)?,
        Method::Logistic { c } => logistic(&zt, y, classes, c, start.map(|s| s.carried(&mean, &scale)))?,
        Method::MeanDiff => unreachable!("handled above"),
    };
    Ok(Fitted {
        mean,
        scale,
        weights,
        bias,
    })
}

/// `RidgeClassifier`: targets ±1 (one column for two classes, toward class 1), centred with the
/// features, `(ZᵀZ + αI)⁻¹ Zᵀ Y`, and the intercept that restores the means.
fn ridge(z: &Tensor, y: &Tensor, classes: usize, alpha: f64) -> Result<(Tensor, Tensor)> {
    let targets = if classes == 2 {
        (y.to_kind(Kind::Double) * 2.0 - 1.0).unsqueeze(1)
    } else {
        y.one_hot(classes as i64).to_kind(Kind::Double) * 2.0 - 1.0
    };
    let z_mean = z.mean_dim(0, true, Kind::Double);
    let t_mean = targets.mean_dim(0, true, Kind::Double);
    let zc = z - &z_mean;
    let h = z.size()[1];
    let gram = zc.transpose(0, 1).matmul(&zc) + Tensor::eye(h, (Kind::Double, z.device())) * alpha;
    let weights = Tensor::f_linalg_solve(&gram, &zc.transpose(0, 1).matmul(&(&targets - &t_mean)), true)?;
    let bias = (t_mean - z_mean.matmul(&weights)).squeeze_dim(0);
    Ok((weights, bias))
}

/// `LogisticRegression(C)`'s optimum by Newton's method: binary (one output, toward class 1) for
/// two classes, multinomial for more; the intercept unpenalised. The gradient and objective are
/// f64; the Hessian, which only shapes the steps, is accumulated in f32 (twice as fast, and the
/// optimum is where the f64 gradient vanishes). `zt` is the standardised rows with a 1 appended
/// (`[m, h + 1]`); `start` is `[h + 1, outputs]`, or zeros.
fn logistic(zt: &Tensor, y: &Tensor, classes: usize, c: f64, start: Option<Tensor>) -> Result<(Tensor, Tensor)> {
    let p = zt.size()[1];
    let h = p - 1;
    let device = zt.device();
    let outputs = if classes == 2 { 1 } else { classes as i64 };
    let targets = if classes == 2 {
        y.to_kind(Kind::Double).unsqueeze(1)
    } else {
        y.one_hot(classes as i64).to_kind(Kind::Double)
    };
    // The penalty's diagonal: 1 on weights, 0 on intercepts; `[p, outputs]`.
    let penalty = Tensor::cat(
        &[
            Tensor::ones([h, outputs], (Kind::Double, device)),
            Tensor::zeros([1, outputs], (Kind::Double, device)),
        ],
        0,
    );
    // The objective at `theta`, with the logits it computed (the next step starts from them).
    let objective = |theta: &Tensor| -> (f64, Tensor) {
        let logits = zt.matmul(theta);
        let loss = if classes == 2 {
            // softplus(l) − y·l, summed.
            (logits.softplus() - &targets * &logits).sum(Kind::Double)
        } else {
            (logits.logsumexp([1i64].as_slice(), false)
                - (&targets * &logits).sum_dim_intlist([1i64].as_slice(), false, Kind::Double))
            .sum(Kind::Double)
        };
        let value = loss * c + (theta.square() * &penalty).sum(Kind::Double) * 0.5;
        (value.double_value(&[]), logits)
    };
    let zt32 = zt.to_kind(Kind::Float);
    let mut theta = start.unwrap_or_else(|| Tensor::zeros([p, outputs], (Kind::Double, device)));
    let (mut value, mut logits) = objective(&theta);
    // The Cholesky factor of the (damped) Hessian in use, whether it was formed at this step,
    // whether the next step forms a new one, and the last step's Newton decrement.
    let (mut factor, mut fresh, mut refresh, mut last_decrement): (Option<Tensor>, bool, bool, f64) =
        (None, false, true, f64::INFINITY);
    // Steps taken whole at the level of rounding.
    let mut blind = 0;
    for _ in 0..500 {
        let probs = if classes == 2 {
            logits.sigmoid()
        } else {
            logits.softmax(1, Kind::Double)
        };
        let gradient = zt.transpose(0, 1).matmul(&(&probs - &targets)) * c + &theta * &penalty;
        let g = gradient.transpose(0, 1).reshape([-1, 1]);
        if refresh || factor.is_none() {
            factor = Some(newton_matrix(&zt32, &probs, &penalty, classes, c)?);
            fresh = true;
        }
        let Some(l) = &factor else { break };
        let step = g.f_cholesky_solve(l, false)?;
        let decrement = g.reshape([-1]).dot(&step.reshape([-1])).double_value(&[]) / 2.0;
        let step = step.reshape([outputs, p]).transpose(0, 1);
        if decrement <= 1e-20 * value.abs().max(1.0) {
            break;
        }
        // A Hessian is kept while steps with it shrink the decrement tenfold (the optimum is
        // near, and the Hessian barely changes there): forming it is the costly part of a step.
        let converging = decrement <= last_decrement / 10.0;
        last_decrement = decrement;
        // Below the objective's rounding (the decrement within 1e-12 of it), no line search can
        // tell a decrease: the step is taken whole, as the iterate is then close enough for it
        // to contract, and the gradient says where the optimum is.
        if decrement <= 1e-12 * value.abs().max(1.0) {
            theta = &theta - &step;
            (value, logits) = objective(&theta);
            blind += 1;
            if blind >= 10 {
                break;
            }
            refresh = !converging;
            fresh = false;
            continue;
        }
        // Backtracking (Armijo) on the step.
        let mut t = 1.0;
        let mut moved = false;
        while t >= 1e-10 {
            let candidate = &theta - &step * t;
            let (next, next_logits) = objective(&candidate);
            if next <= value - 1e-4 * t * 2.0 * decrement {
                (theta, value, logits) = (candidate, next, next_logits);
                moved = true;
                break;
            }
            t /= 2.0;
        }
        if !moved && fresh {
            break;
        }
        refresh = !moved || t < 1.0 || !converging;
        fresh = false;
    }
    let weights = theta.narrow(0, 0, h);
    let bias = theta.select(0, h);
    Ok((weights, bias))
}

/// The Cholesky factor of the logistic objective's Hessian at `probs` (`[p·outputs]²`,
/// output-major), accumulated in f32: `C X̃ᵀ diag(p(1 − p)) X̃` (binary) or its multinomial
/// blocks, plus the penalty (1 on weights) and, on the intercepts, a tiny damping: a softmax's
/// intercepts are free up to a shared shift, where the Hessian is singular, and the damping picks
/// one solution without changing any prediction.
fn newton_matrix(zt32: &Tensor, probs: &Tensor, penalty: &Tensor, classes: usize, c: f64) -> Result<Tensor> {
    let gram = |w: &Tensor| {
        zt32.transpose(0, 1)
            .matmul(&(zt32 * w.to_kind(Kind::Float).unsqueeze(1)))
            .to_kind(Kind::Double)
    };
    let hessian = if classes == 2 {
        let w: Tensor = (probs * (probs.ones_like() - probs)).squeeze_dim(1) * c;
        gram(&w)
    } else {
        let k = probs.size()[1];
        let rows: Vec<Tensor> = (0..k)
            .map(|a| {
                let blocks: Vec<Tensor> = (0..k)
                    .map(|b| {
                        let (pa, pb) = (probs.select(1, a), probs.select(1, b));
                        let w: Tensor = if a == b {
                            &pa * (pa.ones_like() - &pa)
                        } else {
                            -(&pa * &pb)
                        } * c;
                        gram(&w)
                    })
                    .collect();
                Tensor::cat(&blocks, 1)
            })
            .collect();
        Tensor::cat(&rows, 0)
    };
    let flat_penalty = penalty.transpose(0, 1).reshape([-1]);
    let scale = hessian.diagonal(0, 0, 1).abs().max().double_value(&[]).max(1.0);
    let damping: Tensor = (flat_penalty.ones_like() - &flat_penalty) * (scale * 1e-6);
    let diagonal: Tensor = &flat_penalty + &damping;
    let hessian = hessian + diagonal.diag(0);
    // Symmetric by construction; rounding in f32 may leave it a hair off.
    let hessian = (&hessian + hessian.transpose(0, 1)) / 2.0;
    Ok(Tensor::f_linalg_cholesky(&hessian, false)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_sort_numerically_when_numbers() {
        let labels = Labels::new(&["10".into(), "9".into(), "10".into(), "-1".into()]);
        assert_eq!(labels.classes, ["-1", "9", "10"]);
        assert_eq!(labels.codes, [2, 1, 2, 0]);
        let labels = Labels::new(&["b".into(), "a".into(), "10".into()]);
        assert_eq!(labels.classes, ["10", "a", "b"]);
    }

    #[test]
    fn folds_are_stratified_balanced_and_seeded() {
        let values: Vec<String> = (0..23).map(|i| if i < 8 { "a" } else { "b" }.to_owned()).collect();
        let labels = Labels::new(&values);
        let folds = stratified_folds(&labels, 4, 7).unwrap();
        for class in 0..2 {
            let mut per_fold = [0; 4];
            for (f, c) in folds.iter().zip(&labels.codes) {
                if *c == class {
                    per_fold[*f as usize] += 1;
                }
            }
            let (lo, hi) = (per_fold.iter().min().unwrap(), per_fold.iter().max().unwrap());
            assert!(hi - lo <= 1, "{per_fold:?}");
        }
        let mut sizes = [0; 4];
        folds.iter().for_each(|&f| sizes[f as usize] += 1);
        assert!(
            sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
            "{sizes:?}"
        );
        assert_eq!(folds, stratified_folds(&labels, 4, 7).unwrap());
        assert_ne!(folds, stratified_folds(&labels, 4, 8).unwrap());
        let err = stratified_folds(&labels, 9, 0).unwrap_err().to_string();
        assert!(err.contains("class `a` has 8 row(s), fewer than the 9 folds"), "{err}");
        let single = Labels::new(&["x".into(), "x".into()]);
        assert!(stratified_folds(&single, 2, 0)
            .unwrap_err()
            .to_string()
            .contains("two classes"));
    }

    /// A group's rows share a fold; every fold holds every class; sizes stay close.
    #[test]
    fn group_folds_keep_each_sample_whole() {
        // 40 samples of 3 to 7 tokens, each token labelled by its position's parity.
        let (mut groups, mut values) = (Vec::new(), Vec::new());
        for sample in 0..40i64 {
            for t in 0..(3 + sample % 5) {
                groups.push(sample);
                values.push((t % 2).to_string());
            }
        }
        let labels = Labels::new(&values);
        let folds = stratified_group_folds(&labels, &groups, 5, 3).unwrap();
        for (i, g) in groups.iter().enumerate() {
            let first = groups.iter().position(|x| x == g).unwrap();
            assert_eq!(folds[i], folds[first], "sample {g} is split across folds");
        }
        let mut sizes = [0usize; 5];
        let mut ones = [0usize; 5];
        for (f, c) in folds.iter().zip(&labels.codes) {
            sizes[*f as usize] += 1;
            ones[*f as usize] += *c as usize;
        }
        assert!(
            sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 8,
            "{sizes:?}"
        );
        assert!(ones.iter().all(|&n| n > 0), "{ones:?}");
        assert_eq!(folds, stratified_group_folds(&labels, &groups, 5, 3).unwrap());
        let err = stratified_group_folds(&labels, &groups[..groups.len() - 1], 5, 3).unwrap_err();
        assert!(err.to_string().contains("group ids for"), "{err}");
        let err = stratified_group_folds(&labels, &groups, 41, 3).unwrap_err().to_string();
        assert!(err.contains("fewer than the 41 folds"), "{err}");
    }

    /// Hand-computed: scores 0.1 0.4 0.35 0.8 for truth 0 0 1 1 → 0.75; a tie counts one half.
    #[test]
    fn auroc_is_the_mann_whitney_statistic() {
        assert!((auroc(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1]) - 0.75).abs() < 1e-12);
        assert!((auroc(&[0.5, 0.5], &[0, 1]) - 0.5).abs() < 1e-12);
    }

    /// The optimum's gradient is zero: `C Σ (p − y) x̃ + [w; 0] = 0`, checked in numpy's terms.
    #[test]
    fn logistic_reaches_the_optimum() {
        tch::manual_seed(11);
        let opts = (Kind::Double, Device::Cpu);
        let z = Tensor::randn([60, 3], opts);
        let y = (z.select(1, 0) + Tensor::randn([60], opts))
            .gt(0.0)
            .to_kind(Kind::Int64);
        let zt = Tensor::cat(&[z.shallow_clone(), Tensor::ones([60, 1], opts)], 1);
        let (w, b) = logistic(&zt, &y, 2, 0.7, None).unwrap();
        let p = (z.matmul(&w).squeeze_dim(1) + &b).sigmoid();
        let r = &p - y.to_kind(Kind::Double);
        let grad_w = z.transpose(0, 1).matmul(&r.unsqueeze(1)).squeeze_dim(1) * 0.7 + w.squeeze_dim(1);
        let grad_b = r.sum(Kind::Double) * 0.7;
        assert!(grad_w.abs().max().double_value(&[]) < 1e-9, "{grad_w}");
        assert!(grad_b.abs().double_value(&[]) < 1e-9, "{grad_b}");
    }
}
