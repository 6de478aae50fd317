//! `hooks probe`: a linear probe per layer, cross-validated with a control task
//! (`hooks::analysis::probe`), written as one CSV row per layer, the folds beside it, and
//! optionally the probe directions and the accuracy-by-layer figure. Reading the features (an
//! `.npz` or a dataset folder, token-level layers cut to their real tokens) is `compare`'s.

use std::path::{Path, PathBuf};

use hooks::analysis::{self, Control, Labels, Method, ProbeOptions, ProbeReport};
use hooks::{Dataset, NpzArray, NpzValue, SampleColumn};
use tch::{Kind, Tensor};

use crate::compare::{file_name, quote, read_input, temp_beside, write_atomic, RowKind};
use crate::error::CliError;
use crate::lineplot::LinePlot;

/// `hooks probe`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// The features: an .npz written by `hooks extract`, or a dataset folder. A pooled layer
    /// gives one row per sample; a `--pool none` layer one row per real token.
    #[arg(long, value_name = "ACTS.npz|DIR")]
    activations: PathBuf,
    /// The labels: `meta.KEY`, an array that `extract --keep-keys KEY` wrote beside the
    /// layers (one per sample); or a FILE: a `.npy` (integers, floats, booleans or strings) or a
    /// text file with one label per line, one per sample, or one per real token for token-level
    /// layers.
    #[arg(long, value_name = "meta.KEY|FILE")]
    labels: String,
    /// The CSV to write: one row per layer,
    /// `layer,method,accuracy,accuracy_std,auroc,control_accuracy,selectivity,n`; and
    /// `RESULTS.folds.npy` beside it (int64 [n], each row's fold).
    #[arg(long, value_name = "RESULTS.csv")]
    out: PathBuf,
    /// The layers to probe, comma-separated (default: every layer of the input).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    layers: Vec<String>,
    /// logistic (sklearn's LogisticRegression(C)), ridge (RidgeClassifier(alpha)), both on
    /// features standardised per training fold; or mean-diff (binary: the difference of the
    /// class means, thresholded at their midpoint).
    #[arg(long, value_enum, default_value_t = MethodArg::Logistic)]
    method: MethodArg,
    /// Folds of the stratified cross-validation (token rows: a sample's tokens stay in one
    /// fold).
    #[arg(long, default_value_t = 5, value_name = "K", value_parser = clap::value_parser!(u32).range(2..))]
    folds: u32,
    /// The seed of the folds and of the control task's labels.
    #[arg(long, default_value_t = 0, value_name = "S")]
    seed: u64,
    /// `logistic`: the inverse regularisation strength (sklearn's C). [default: 1]
    #[arg(long = "C", value_name = "C", allow_negative_numbers = true)]
    c: Option<f64>,
    /// `ridge`: the regularisation strength (sklearn's alpha). [default: 1]
    #[arg(long, value_name = "A", allow_negative_numbers = true)]
    alpha: Option<f64>,
    /// A control task on the same folds (Hewitt & Liang, 2019): shuffle (the labels permuted
    /// by the seed) or type (token-level: each token type gets a fixed random label).
    /// Adds control_accuracy and selectivity = accuracy − control_accuracy.
    #[arg(long, value_enum)]
    control: Option<ControlArg>,
    /// Also write each layer's probe direction, fitted on every row, mapped back to the raw
    /// features and of unit length: float32 [h] (toward the second label in sorted order), or
    /// [classes, h] for more than two classes. One array per layer, named as the layer.
    #[arg(long, value_name = "DIRS.npz")]
    directions: Option<PathBuf>,
    /// Also draw accuracy (and control accuracy) against layer, as a PNG.
    #[arg(long, value_name = "P.png")]
    plot: Option<PathBuf>,
    /// cpu, cuda or cuda:N: where the probes are fitted.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// `--method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum MethodArg {
    Logistic,
    Ridge,
    MeanDiff,
}

/// `--control`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ControlArg {
    Shuffle,
    Type,
}

/// Rows read a chunk at a time (a dataset folder's layers come from disk).
const CHUNK_ROWS: i64 = 16_384;

/// Runs `hooks probe`.
pub fn run(args: &ProbeArgs) -> Result<(), CliError> {
    let (c, alpha) = (args.c.unwrap_or(1.0), args.alpha.unwrap_or(1.0));
    let method = match args.method {
        _ if args.c.is_some() && args.method != MethodArg::Logistic => {
            return Err(CliError::Usage(
                "`--C` applies to `--method logistic`; leave it out, or use --alpha for ridge".into(),
            ))
        }
        _ if args.alpha.is_some() && args.method != MethodArg::Ridge => {
            return Err(CliError::Usage(
                "`--alpha` applies to `--method ridge`; leave it out, or use --C for logistic".into(),
            ))
        }
        MethodArg::Logistic if !(c.is_finite() && c > 0.0) => {
            return Err(CliError::Usage(format!("`--C {c}`: give a positive number")))
        }
        MethodArg::Ridge if !(alpha.is_finite() && alpha > 0.0) => {
            return Err(CliError::Usage(format!(
                "`--alpha {alpha}`: give a positive number (0 is least squares with no penalty, whose solution is not unique when features outnumber rows)"
            )))
        }
        MethodArg::Logistic => Method::Logistic { c },
        MethodArg::Ridge => Method::Ridge { alpha },
        MethodArg::MeanDiff => Method::MeanDiff,
    };
    check_outputs(args)?;
    let device = crate::extract::parse_device(&args.device)?;
    let input = read_input(&args.activations, &args.layers)?;
    if input.layers.is_empty() {
        return Err(CliError::Input(format!(
            "`{}` holds no layer to probe",
            args.activations.display()
        )));
    }
    let sample = input.layers.iter().find(|(_, _, k)| *k == RowKind::Samples);
    let token = input.layers.iter().find(|(_, _, k)| *k == RowKind::Tokens);
    if let (Some((s, _, _)), Some((t, _, _))) = (sample, token) {
        return Err(CliError::Input(format!(
            "`{s}` has one row per sample (pooled) and `{t}` one per token, and one set of labels cannot fit both; probe layers of one kind (pick them with --layers)"
        )));
    }
    let tokens = input.layers.iter().any(|(_, _, k)| *k == RowKind::Tokens);
    let rows = input.layers[0].1.rows();
    let labels = read_labels(&args.labels, &args.activations, tokens, rows)?;
    let labels = Labels::new(&labels);
    if method == Method::MeanDiff && labels.classes.len() > 2 {
        return Err(CliError::Usage(format!(
            "`--method mean-diff` is a binary probe and the labels have {} classes ({}); use logistic or ridge",
            labels.classes.len(),
            shown(&labels.classes)
        )));
    }
    // Token rows: a sample's tokens stay in one fold, so that no sample is on both sides.
    let folds = match (&input.lengths, tokens) {
        (Some(lengths), true) => {
            let groups: Vec<i64> = lengths
                .iter()
                .enumerate()
                .flat_map(|(i, &n)| std::iter::repeat_n(i as i64, usize::try_from(n).unwrap_or(0)))
                .collect();
            analysis::stratified_group_folds(&labels, &groups, args.folds as usize, args.seed)?
        }
        _ => analysis::stratified_folds(&labels, args.folds as usize, args.seed)?,
    };
    let control = match args.control {
        None => Control::None,
        Some(ControlArg::Shuffle) => Control::Shuffle,
        Some(ControlArg::Type) if !tokens => {
            return Err(CliError::Usage(
                "`--control type` gives each token type a random label, so it needs token-level layers (`extract --pool none`); use `--control shuffle` for pooled ones".into(),
            ))
        }
        Some(ControlArg::Type) => Control::Type(token_ids(&args.activations)?),
    };
    let options = ProbeOptions {
        method,
        control,
        seed: args.seed,
    };
    let mut reports: Vec<(String, ProbeReport)> = Vec::new();
    let mut notes = Vec::new();
    for (name, source, _) in &input.layers {
        let mut parts = Vec::new();
        let mut start = 0;
        while start < source.rows() {
            let len = CHUNK_ROWS.min(source.rows() - start);
            parts.push(source.read(start, len)?.to_kind(Kind::Float));
            start += len;
        }
        let features = Tensor::cat(&parts, 0).to_device(device);
        if args.directions.is_some() && method != Method::MeanDiff {
            let dead = barely_varying(&features);
            if dead > 0 {
                notes.push(format!(
                    "`{name}` has {dead} feature(s) that barely vary (standard deviation under 1e-6 of the median); standardised as StandardScaler does, they can dominate its direction in --directions (`--method mean-diff` has no such scaling)"
                ));
            }
        }
        let report = analysis::probe(&features, &labels, &folds, &options).map_err(|e| match e {
            hooks::Error::NotFinite { .. } => CliError::Input(format!(
                "layer `{name}` of `{}` holds NaN or infinite values; probes need finite features (check the model's dtype)",
                args.activations.display()
            )),
            e => e.into(),
        })?;
        reports.push((name.clone(), report));
    }
    // Everything is computed: now the files, each made beside its path and put in place last.
    let mut temps = Vec::new();
    if let Some(path) = &args.plot {
        temps.push((
            path.clone(),
            draw(&reports, method, args.control.is_some(), &args.activations, path)?,
        ));
    }
    if let Some(path) = &args.directions {
        let temp = temp_beside(path, ".npz")?;
        hooks::save_npz(
            reports
                .iter()
                .map(|(n, r)| (n.as_str(), NpzArray::Tensor(&r.direction))),
            temp.path(),
        )?;
        temps.push((path.clone(), temp));
    }
    let folds_path = folds_path(&args.out);
    let temp = temp_beside(&folds_path, ".npy")?;
    Tensor::from_slice(&folds)
        .write_npy(temp.path())
        .map_err(|e| CliError::Usage(format!("cannot write `{}`: {e}", folds_path.display())))?;
    temps.push((folds_path.clone(), temp));
    temps.push((
        args.out.clone(),
        write_atomic(&args.out, csv(&reports, method).as_bytes())?,
    ));
    for (path, temp) in temps {
        temp.persist(&path)
            .map_err(|e| CliError::Usage(format!("cannot write `{}`: {}", path.display(), e.error)))?;
    }
    // The first of the best, when layers tie.
    let best = reports
        .iter()
        .rev()
        .max_by(|a, b| a.1.accuracy.total_cmp(&b.1.accuracy))
        .map(|(n, r)| format!("; best `{n}` at {:.3}", r.accuracy))
        .unwrap_or_default();
    out!(
        "{} probe over {} rows ({} classes), {} folds, {} layer(s){best} -> {}, {}",
        method.name(),
        labels.len(),
        labels.classes.len(),
        args.folds,
        reports.len(),
        args.out.display(),
        folds_path.display()
    )?;
    for note in notes {
        eprintln!("note: {note}");
    }
    Ok(())
}

/// How many features of `[n, h]` rows have a standard deviation under 1e-6 of the median
/// feature's (dead units, which standardisation scales up like any other).
fn barely_varying(features: &Tensor) -> i64 {
    let std = features
        .to_kind(Kind::Double)
        .var_dim([0i64].as_slice(), false, false)
        .sqrt();
    let median = std.median().double_value(&[]);
    std.lt(median * 1e-6).sum(Kind::Int64).int64_value(&[])
}

/// `RESULTS.folds.npy` for `RESULTS.csv`.
fn folds_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map_or_else(|| "results".into(), |s| s.to_string_lossy().into_owned());
    out.with_file_name(format!("{stem}.folds.npy"))
}

/// The first few of `classes`, quoted.
fn shown(classes: &[String]) -> String {
    let mut names: Vec<String> = classes.iter().take(5).map(|c| format!("`{c}`")).collect();
    if classes.len() > 5 {
        names.push("...".into());
    }
    names.join(", ")
}

/// `--out`, `--folds`' file, `--directions` and `--plot`: files of their own, none an input.
fn check_outputs(args: &ProbeArgs) -> Result<(), CliError> {
    let same = |x: &Path, y: &Path| x == y || matches!((x.canonicalize(), y.canonicalize()), (Ok(a), Ok(b)) if a == b);
    let folds = folds_path(&args.out);
    let outputs: Vec<(&str, &Path)> = [
        ("--out", Some(args.out.as_path())),
        ("--directions", args.directions.as_deref()),
        ("--plot", args.plot.as_deref()),
    ]
    .into_iter()
    .filter_map(|(flag, p)| p.map(|p| (flag, p)))
    .chain(std::iter::once(("the folds file", folds.as_path())))
    .collect();
    let label_file = Path::new(&args.labels);
    // A file inside the input folder (a dataset folder's arrays) is an input too.
    let inside = |out: &Path| {
        args.activations.is_dir()
            && out
                .parent()
                .map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p })
                .is_some_and(|p| same(p, &args.activations))
    };
    for (i, (flag, out)) in outputs.iter().enumerate() {
        if inside(out) {
            return Err(CliError::Usage(format!(
                "`{flag}` is `{}`, inside the input folder `{}`, whose files it could overwrite; write outside it",
                out.display(),
                args.activations.display()
            )));
        }
        if same(out, &args.activations) || same(out, label_file) {
            return Err(CliError::Usage(format!(
                "`{flag}` is `{}`, an input, which it would overwrite; write to another file",
                out.display()
            )));
        }
        if out.is_dir() {
            return Err(CliError::Usage(format!(
                "`{flag} {}` is a folder; give a file path",
                out.display()
            )));
        }
        if let Some((other, _)) = outputs[..i].iter().find(|(_, o)| same(o, out)) {
            return Err(CliError::Usage(format!(
                "`{flag}` and `{other}` are both `{}`; give each its own file",
                out.display()
            )));
        }
    }
    let extension = |p: &Path, e: &str| p.extension().is_some_and(|x| x.eq_ignore_ascii_case(e));
    if let Some(plot) = args.plot.as_deref().filter(|p| !extension(p, "png")) {
        return Err(CliError::Usage(format!(
            "`--plot {}`: give a path ending in .png",
            plot.display()
        )));
    }
    if let Some(dirs) = args.directions.as_deref().filter(|p| !extension(p, "npz")) {
        return Err(CliError::Usage(format!(
            "`--directions {}`: the directions are one .npz; give a path ending in .npz",
            dirs.display()
        )));
    }
    Ok(())
}

/// The labels as text, one per row: `meta.KEY` of the input, or a `.npy` or text file.
fn read_labels(spec: &str, activations: &Path, tokens: bool, rows: i64) -> Result<Vec<String>, CliError> {
    let (labels, what) = if let Some(key) = spec
        .strip_prefix(hooks::META_PREFIX)
        .filter(|_| !Path::new(spec).is_file())
    {
        if tokens {
            return Err(CliError::Usage(format!(
                "`--labels {spec}` holds one label per sample, and the layers have one row per real token; probe pooled layers (`extract --pool mean`), or give one label per token in a FILE"
            )));
        }
        let column = meta_column(activations, spec).map_err(|e| match e {
            CliError::Input(m) => CliError::Input(format!(
                "{m}; extract with `--keep-keys {key}` to carry the labels, or give a FILE"
            )),
            e => e,
        })?;
        (column.to_strings(), format!("`{spec}`"))
    } else {
        (read_label_file(Path::new(spec))?, format!("`{spec}`"))
    };
    if i64::try_from(labels.len()).ok() != Some(rows) {
        return Err(CliError::Input(format!(
            "{what} holds {} labels and the layers have {rows} rows ({}); give one label per row",
            labels.len(),
            if tokens { "one per real token" } else { "one per sample" }
        )));
    }
    Ok(labels)
}

/// The column `name` (`meta.KEY`) of an `.npz` or a dataset folder.
fn meta_column(activations: &Path, name: &str) -> Result<SampleColumn, CliError> {
    let missing = |held: Vec<String>| {
        let held: Vec<String> = held
            .into_iter()
            .filter(|n| n.starts_with(hooks::META_PREFIX))
            .map(|n| format!("`{n}`"))
            .collect();
        CliError::Input(format!(
            "`{}` has no array `{name}` (its labels: {})",
            activations.display(),
            if held.is_empty() {
                "none".to_owned()
            } else {
                held.join(", ")
            }
        ))
    };
    if activations.is_dir() {
        let dataset = Dataset::open(activations)?;
        if dataset.columns().all(|c| c != name) {
            return Err(missing(dataset.columns().map(str::to_owned).collect()));
        }
        return Ok(dataset.column(name)?);
    }
    let arrays = hooks::load_npz(activations)?;
    let held: Vec<String> = arrays.iter().map(|(n, _)| n.clone()).collect();
    let value = arrays
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .ok_or_else(|| missing(held))?;
    match value {
        NpzValue::Strings { strings, .. } => Ok(SampleColumn::strings(strings)?),
        NpzValue::Tensor(t) => tensor_labels(&t).map(|v| SampleColumn::strings(v).map_err(CliError::from))?,
    }
}

/// A 1-d tensor of integers, floats or booleans as label text.
fn tensor_labels(t: &Tensor) -> Result<Vec<String>, CliError> {
    if t.dim() != 1 {
        return Err(CliError::Input(format!(
            "labels of shape {:?}; give a 1-d array",
            t.size()
        )));
    }
    Ok(match t.kind() {
        Kind::Bool => Vec::<bool>::try_from(t)
            .map_err(hooks::Error::from)?
            .iter()
            .map(ToString::to_string)
            .collect(),
        Kind::Float | Kind::Double | Kind::Half => Vec::<f64>::try_from(t.to_kind(Kind::Double))
            .map_err(hooks::Error::from)?
            .iter()
            .map(ToString::to_string)
            .collect(),
        _ => Vec::<i64>::try_from(t.to_kind(Kind::Int64))
            .map_err(hooks::Error::from)?
            .iter()
            .map(ToString::to_string)
            .collect(),
    })
}

/// A `.npy` of numbers or booleans, or a text file of one label per line.
fn read_label_file(path: &Path) -> Result<Vec<String>, CliError> {
    let name = format!("`{}`", path.display());
    if path.is_dir() || !path.is_file() {
        return Err(CliError::Input(format!(
            "`--labels {}`: no such file; give `meta.KEY` (an array `extract --keep-keys KEY` wrote) or a label file",
            path.display()
        )));
    }
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
        return match hooks::load_npy(path)? {
            NpzValue::Strings { shape, strings, .. } if shape.len() == 1 => Ok(strings),
            NpzValue::Strings { shape, .. } => Err(CliError::Input(format!(
                "{name} holds labels of shape {shape:?}; give a 1-d array"
            ))),
            NpzValue::Tensor(t) => tensor_labels(&t).map_err(|e| CliError::Input(format!("{name}: {e}"))),
        };
    }
    let bytes = std::fs::read(path).map_err(|e| CliError::Input(format!("cannot read {name}: {e}")))?;
    let lines = crate::input::non_blank_lines(&bytes, &name)?;
    // Blank lines at the end are no labels; one among the labels is a mistake.
    let last = lines.lines.last().map_or(0, |(n, _)| *n);
    if let Some(blank) = lines.blank.iter().find(|&&b| b < last) {
        return Err(CliError::Input(format!(
            "{name}, line {blank}: blank; give one label on every line"
        )));
    }
    Ok(lines.lines.into_iter().map(|(_, l)| l.trim().to_owned()).collect())
}

/// Each real token's id, in row order, for the type control.
fn token_ids(activations: &Path) -> Result<Vec<i64>, CliError> {
    let ids = if activations.is_dir() {
        Dataset::open(activations)?.array("input_ids")?
    } else {
        let arrays = hooks::load_numeric(activations)?;
        let (Some(ids), Some(mask)) = (arrays.get("input_ids"), arrays.get("attention_mask")) else {
            return Err(CliError::Input(format!(
                "`{}` has no `input_ids` and `attention_mask`, which `--control type` reads token types from",
                activations.display()
            )));
        };
        ids.masked_select(&mask.to_kind(Kind::Bool))
    };
    Ok(Vec::<i64>::try_from(ids.to_kind(Kind::Int64).reshape([-1])).map_err(hooks::Error::from)?)
}

/// The CSV: a header, then one row per layer; numbers in Rust's shortest round-trip form, an
/// empty field where a value does not apply.
fn csv(reports: &[(String, ProbeReport)], method: Method) -> String {
    let mut s = String::from("layer,method,accuracy,accuracy_std,auroc,control_accuracy,selectivity,n\n");
    let opt = |v: Option<f64>| v.map_or_else(String::new, |v| v.to_string());
    for (name, r) in reports {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{}\n",
            quote(name),
            method.name(),
            r.accuracy,
            r.accuracy_std,
            opt(r.auroc),
            opt(r.control_accuracy),
            opt(r.selectivity),
            r.n
        ));
    }
    s
}

/// Accuracy (and control accuracy) against layer, into a temporary PNG beside `path`.
fn draw(
    reports: &[(String, ProbeReport)],
    method: Method,
    control: bool,
    input: &Path,
    path: &Path,
) -> Result<tempfile::NamedTempFile, CliError> {
    let temp = temp_beside(path, ".png")?;
    let layers: Vec<String> = reports.iter().map(|(n, _)| n.clone()).collect();
    let mut series = vec![(
        "accuracy".to_owned(),
        reports.iter().map(|(_, r)| r.accuracy).collect::<Vec<f64>>(),
    )];
    if control {
        series.push((
            "control accuracy".to_owned(),
            reports
                .iter()
                .map(|(_, r)| r.control_accuracy.unwrap_or(f64::NAN))
                .collect(),
        ));
    }
    LinePlot {
        title: &format!("{} probe — {}", method.name(), file_name(input)),
        x_labels: &layers,
        y_label: "accuracy (mean over folds)",
        series: &series,
    }
    .draw(temp.path())
    .map_err(|e| CliError::Usage(format!("cannot draw `{}`: {e}", path.display())))?;
    Ok(temp)
}
