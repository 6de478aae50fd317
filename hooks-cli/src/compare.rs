//! `hooks compare`: CKA or SVCCA between the layers of one extraction, or of two, written as a
//! CSV matrix and optionally drawn as a heatmap. Reading the inputs (an `.npz` or a dataset
//! folder, token-level arrays cut to real tokens) happens here; the metrics are the library's
//! (`hooks::analysis`).

use std::fs;
use std::path::{Path, PathBuf};

use hooks::analysis::{self, CompareOptions, Layer, Metric, RowSource, Similarity};
use hooks::{Dataset, Rows};
use tch::{Kind, Tensor};

use crate::error::CliError;
use crate::heatmap::Heatmap;

/// The arrays `hooks extract` writes beside the layers (with `sample_index` and `meta.*`): never
/// compared.
const NOT_LAYERS: [&str; 2] = ["input_ids", "attention_mask"];

/// `hooks compare`'s arguments.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The first input: an .npz written by `hooks extract`, or a dataset folder (`--out DIR/`).
    a: PathBuf,
    /// A second input over the same samples: its layers are the columns. Without it, the first
    /// input's layers are compared with one another.
    b: Option<PathBuf>,
    /// The similarity: linear CKA (Kornblith et al., 2019) or SVCCA (Raghu et al., 2017).
    #[arg(long, value_enum, default_value_t = MetricArg::Cka)]
    metric: MetricArg,
    /// CKA with the unbiased HSIC estimator (Song et al., 2012; Nguyen et al., 2021).
    #[arg(long)]
    unbiased: bool,
    /// Minibatch CKA (Nguyen et al., 2021): the unbiased HSIC averaged over consecutive batches
    /// of at least ROWS rows. An estimate; without it CKA is exact over all rows.
    #[arg(long, value_name = "ROWS", value_parser = clap::value_parser!(i64).range(4..=1_000_000_000))]
    minibatch: Option<i64>,
    /// SVCCA: the share of variance the kept singular directions explain.
    #[arg(long, default_value_t = 0.99, value_name = "SHARE")]
    threshold: f64,
    /// The layers of the first input to compare, comma-separated (default: every array but
    /// input_ids and attention_mask).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    layers_a: Vec<String>,
    /// The layers of the second input (default: all, as for --layers-a; without a second
    /// input, the columns are these layers of the first).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    layers_b: Vec<String>,
    /// The CSV to write: a header row (`,` then the column layers), then one row per layer of
    /// the first input.
    #[arg(long, value_name = "M.csv")]
    out: PathBuf,
    /// Also draw the matrix as a heatmap PNG.
    #[arg(long, value_name = "M.png")]
    plot: Option<PathBuf>,
    /// cpu, cuda or cuda:N: where the arithmetic runs.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// `--metric`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum MetricArg {
    Cka,
    Svcca,
}

/// Whether an array has one row per sample or one per real token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RowKind {
    Samples,
    Tokens,
}

/// One input, read: its layers as row sources.
pub(crate) struct Input {
    pub(crate) path: PathBuf,
    pub(crate) samples: i64,
    /// Real tokens per sample, when the input says (an `attention_mask`, a folder's offsets).
    pub(crate) lengths: Option<Vec<i64>>,
    pub(crate) layers: Vec<(String, Box<dyn RowSource>, RowKind)>,
}

/// Runs `hooks compare`.
pub fn run(args: &CompareArgs) -> Result<(), CliError> {
    let metric = metric(args)?;
    check_outputs(args)?;
    let device = crate::extract::parse_device(&args.device)?;
    let a = read_input(&args.a, &args.layers_a)?;
    let b = match &args.b {
        Some(path) => Some(read_input(path, &args.layers_b)?),
        None => None,
    };
    // One input, `--layers-b`: its columns are other layers of the same input.
    let b = match (b, args.layers_b.is_empty()) {
        (None, false) => Some(read_input(&args.a, &args.layers_b)?),
        (b, _) => b,
    };
    if let Some(b) = &b {
        same_rows(&a, b)?;
    }
    one_kind(&a, b.as_ref())?;
    let (la, lb) = (layers_of(&a), b.as_ref().map(layers_of));
    let options = CompareOptions {
        device,
        ..CompareOptions::default()
    };
    let matrix = analysis::compare(&la, lb.as_deref(), metric, &options)?;
    let inputs = match &args.b {
        Some(b) => format!("{} × {}", file_name(&args.a), file_name(b)),
        None => file_name(&args.a),
    };
    // Draw first: a failed plot leaves no CSV either.
    let plot = match &args.plot {
        Some(path) => Some((path, draw(&matrix, &inputs, path)?)),
        None => None,
    };
    let csv = write_atomic(&args.out, csv(&matrix).as_bytes())?;
    // The plot first, then the CSV: should the CSV's rename fail, the plot goes too, so that a
    // failed run leaves neither.
    if let Some((path, temp)) = &plot {
        fs::rename(temp.path(), path)
            .map_err(|e| CliError::Usage(format!("cannot write `{}`: {e}", path.display())))?;
    }
    if let Err(e) = csv.persist(&args.out) {
        if let Some((path, _)) = &plot {
            let _ = fs::remove_file(path);
        }
        return Err(CliError::Usage(format!(
            "cannot write `{}`: {}",
            args.out.display(),
            e.error
        )));
    }
    drop(plot);
    let rows = a.layers.first().map_or(0, |(_, s, _)| s.rows());
    if let Metric::MinibatchCka { batch } = metric {
        // Batches of at least `batch` rows: fewer than two of them when `batch > rows / 2`.
        if batch > 0 && rows / batch < 2 {
            eprintln!(
                "note: `--minibatch {batch}` leaves one minibatch of the {rows} rows (two need at least {} rows): this is the unbiased CKA of all rows (as `--unbiased` computes it), not a minibatch estimate",
                2 * batch
            );
        }
    }
    out!(
        "{} of {} × {} layers over {} rows: {}{}",
        metric.label(),
        matrix.rows.len(),
        matrix.columns.len(),
        rows,
        args.out.display(),
        args.plot
            .as_ref()
            .map_or_else(String::new, |p| format!(", {}", p.display()))
    )?;
    Ok(())
}

fn layers_of(input: &Input) -> Vec<Layer<'_>> {
    input.layers.iter().map(|(n, s, _)| (n.as_str(), s.as_ref())).collect()
}

fn metric(args: &CompareArgs) -> Result<Metric, CliError> {
    let usage = |m: &str| Err(CliError::Usage(m.to_owned()));
    match (args.metric, args.unbiased, args.minibatch) {
        (MetricArg::Cka, false, None) => Ok(Metric::Cka),
        (MetricArg::Cka, true, None) => Ok(Metric::UnbiasedCka),
        (MetricArg::Cka, _, Some(batch)) => Ok(Metric::MinibatchCka { batch }),
        (MetricArg::Svcca, false, None) => Ok(Metric::Svcca {
            threshold: args.threshold,
        }),
        (MetricArg::Svcca, _, _) => {
            usage("`--unbiased` and `--minibatch` apply to `--metric cka` only; drop them for SVCCA")
        }
    }
}

/// `--out` and `--plot` must be files of their own: not an input, not each other, not a folder;
/// the plot a `.png`.
fn check_outputs(args: &CompareArgs) -> Result<(), CliError> {
    let same = |x: &Path, y: &Path| x == y || matches!((x.canonicalize(), y.canonicalize()), (Ok(a), Ok(b)) if a == b);
    let inputs: Vec<&PathBuf> = std::iter::once(&args.a).chain(&args.b).collect();
    let outputs: Vec<(&str, &PathBuf)> = std::iter::once(("--out", &args.out))
        .chain(args.plot.as_ref().map(|p| ("--plot", p)))
        .collect();
    for (flag, out) in &outputs {
        if let Some(input) = inputs.iter().find(|i| same(i, out)) {
            return Err(CliError::Usage(format!(
                "`{flag} {}` is the input `{}`, which it would overwrite; write to another file",
                out.display(),
                input.display()
            )));
        }
        if out.is_dir() {
            return Err(CliError::Usage(format!(
                "`{flag} {}` is a folder; give a file path",
                out.display()
            )));
        }
    }
    if let Some(plot) = &args.plot {
        if same(plot, &args.out) {
            return Err(CliError::Usage(format!(
                "`--plot` and `--out` are both `{}`; give the CSV and the PNG their own names",
                plot.display()
            )));
        }
        if !plot.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
            return Err(CliError::Usage(format!(
                "`--plot {}`: the heatmap is a PNG; give a path ending in .png",
                plot.display()
            )));
        }
    }
    Ok(())
}

pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// An `.npz` (token-level arrays cut to their real tokens by the file's `attention_mask`) or a
/// dataset folder, and the layers `wanted` of it (all by default).
pub(crate) fn read_input(path: &Path, wanted: &[String]) -> Result<Input, CliError> {
    if path.is_dir() {
        return read_folder(path, wanted);
    }
    let acts = hooks::load_numeric(path)?;
    let available: Vec<String> = acts
        .names()
        .filter(|n| !NOT_LAYERS.contains(n) && !hooks::is_sample_column(n))
        .map(str::to_owned)
        .collect();
    let names = analysis::select_layers(&available, wanted, path)?;
    let mask = acts.get("attention_mask").map(|m| m.to_kind(Kind::Bool));
    let samples = match (&mask, names.first().and_then(|n| acts.get(n))) {
        (Some(mask), _) => mask.size()[0],
        (None, Some(first)) => first.size().first().copied().unwrap_or(0),
        (None, None) => 0,
    };
    let mut layers = Vec::new();
    for name in names {
        let Some(t) = acts.get(&name) else { continue };
        let shape = t.size();
        // An attention pattern `[N, heads, T, T]` is no set of feature rows: left out unless asked
        // for by name (which then fails below, saying why).
        let pattern = shape.len() == 4
            && mask
                .as_ref()
                .is_some_and(|m| m.size().get(1) == shape.get(2) && shape.get(2) == shape.get(3));
        if pattern && wanted.is_empty() {
            eprintln!(
                "note: left out `{name}`: an attention pattern [samples, heads, tokens, tokens] has no feature rows to compare"
            );
            continue;
        }
        let bad = |why: String| CliError::Input(format!("array `{name}` of `{}` {why}", path.display()));
        if shape.first() != Some(&samples) {
            return Err(bad(format!(
                "has shape {shape:?}, not one row per sample ({samples} samples); pick layers with --layers-a/--layers-b"
            )));
        }
        let (rows, kind): (Tensor, RowKind) = match (shape.len(), &mask) {
            (0, _) => return Err(bad("is a scalar; compare arrays of one row per sample".into())),
            (1 | 2, _) => (t.shallow_clone(), RowKind::Samples),
            (_, Some(mask)) if mask.size() == shape[..2] => {
                let width: i64 = shape[2..].iter().product();
                let flat = t.reshape([-1, width]);
                let real = mask.reshape([-1]).nonzero().squeeze_dim(1);
                (flat.index_select(0, &real), RowKind::Tokens)
            }
            (_, Some(mask)) => {
                return Err(bad(format!(
                    "has shape {shape:?} and the file's attention_mask {:?}; a token-level array is [N, T, ...] with the mask's [N, T]{}",
                    mask.size(),
                    if pattern { " (this is an attention pattern: compare other layers)" } else { "" }
                )))
            }
            (_, None) => {
                return Err(bad(format!(
                    "has shape {shape:?} but the file has no attention_mask to tell real tokens from padding; extract with `--pool mean`, or keep the mask"
                )))
            }
        };
        layers.push((name, Box::new(rows) as Box<dyn RowSource>, kind));
    }
    let lengths = mask
        .map(|m| Vec::<i64>::try_from(m.sum_dim_intlist(1, false, Kind::Int64)))
        .transpose();
    Ok(Input {
        path: path.to_owned(),
        samples,
        lengths: lengths.map_err(|e| CliError::Hooks(e.into()))?,
        layers,
    })
}

/// A dataset folder: its layers read from disk a chunk at a time, never loaded whole.
fn read_folder(dir: &Path, wanted: &[String]) -> Result<Input, CliError> {
    let dataset = Dataset::open(dir)?;
    let available: Vec<String> = dataset
        .layers()
        .filter(|n| !NOT_LAYERS.contains(n))
        .map(str::to_owned)
        .collect();
    let names = analysis::select_layers(&available, wanted, dir)?;
    let manifest = dataset.manifest();
    let mut layers = Vec::new();
    let mut any_tokens = false;
    for name in names {
        let kind = match manifest.rows_of(&name).map(Rows::dense) {
            Some(Rows::Tokens) => RowKind::Tokens,
            Some(Rows::Patterns) if wanted.is_empty() => {
                eprintln!(
                    "note: left out `{name}`: attention patterns ([heads, tokens, tokens] per sample) have no feature rows to compare"
                );
                continue;
            }
            Some(Rows::Patterns) => {
                return Err(CliError::Input(format!(
                    "`{name}` in `{}` holds attention patterns ([heads, tokens, tokens] per sample), not feature rows; compare other layers",
                    dir.display()
                )))
            }
            _ => RowKind::Samples,
        };
        any_tokens |= kind == RowKind::Tokens;
        let reader = dataset.reader(&name)?;
        layers.push((name, Box::new(reader) as Box<dyn RowSource>, kind));
    }
    let lengths = if any_tokens {
        let offsets = Vec::<i64>::try_from(dataset.array("offsets")?).map_err(|e| CliError::Hooks(e.into()))?;
        Some(offsets.windows(2).map(|w| w[1] - w[0]).collect())
    } else {
        None
    };
    Ok(Input {
        path: dir.to_owned(),
        samples: manifest.samples as i64,
        lengths,
        layers,
    })
}

/// The two inputs hold the same samples and, where both say, the same real tokens per sample.
fn same_rows(a: &Input, b: &Input) -> Result<(), CliError> {
    if a.samples != b.samples {
        return Err(CliError::Input(format!(
            "`{}` holds {} samples and `{}` holds {}; compare extractions of the same input",
            a.path.display(),
            a.samples,
            b.path.display(),
            b.samples
        )));
    }
    let tokens = |i: &Input| i.layers.iter().any(|(_, _, k)| *k == RowKind::Tokens);
    if let (Some(la), Some(lb), true, true) = (&a.lengths, &b.lengths, tokens(a), tokens(b)) {
        if let Some(i) = la.iter().zip(lb).position(|(x, y)| x != y) {
            return Err(CliError::Input(format!(
                "`{}` and `{}` hold different tokens: sample {i} has {} real tokens in one and {} in the other; extract both with the same tokenizer and --max-length",
                a.path.display(),
                b.path.display(),
                la[i],
                lb[i]
            )));
        }
    }
    Ok(())
}

/// All layers compared have rows of one kind: per sample, or per real token.
pub(crate) fn one_kind(a: &Input, b: Option<&Input>) -> Result<(), CliError> {
    let all: Vec<(&str, &Path, RowKind)> = a
        .layers
        .iter()
        .map(|(n, _, k)| (n.as_str(), a.path.as_path(), *k))
        .chain(
            b.into_iter()
                .flat_map(|b| b.layers.iter().map(|(n, _, k)| (n.as_str(), b.path.as_path(), *k))),
        )
        .collect();
    let sample = all.iter().find(|(_, _, k)| *k == RowKind::Samples);
    let token = all.iter().find(|(_, _, k)| *k == RowKind::Tokens);
    if let (Some((s, sp, _)), Some((t, tp, _))) = (sample, token) {
        return Err(CliError::Input(format!(
            "`{s}` of `{}` has one row per sample (pooled) and `{t}` of `{}` one per token; compare layers of one kind (pick them with --layers-a/--layers-b), or extract both with the same --pool",
            sp.display(),
            tp.display()
        )));
    }
    Ok(())
}

/// The matrix as CSV: `,` and the column layers, then per row layer its name and values, each
/// in Rust's shortest round-trip form (every digit an f64 holds; numpy and pandas read it).
fn csv(m: &Similarity) -> String {
    let mut s = String::new();
    for column in &m.columns {
        s.push(',');
        s.push_str(&quote(column));
    }
    s.push('\n');
    for (name, row) in m.rows.iter().zip(&m.values) {
        s.push_str(&quote(name));
        for v in row {
            s.push_str(&format!(",{v}"));
        }
        s.push('\n');
    }
    s
}

/// A CSV field, quoted as RFC 4180 asks when it holds a comma, a quote or a line break.
pub(crate) fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

/// A temporary file beside `path`, holding `bytes`, synced: persist it to put it in place.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<tempfile::NamedTempFile, CliError> {
    use std::io::Write as _;
    let mut temp = temp_beside(path, ".tmp")?;
    temp.write_all(bytes)
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|e| CliError::Usage(format!("cannot write `{}`: {e}", path.display())))?;
    Ok(temp)
}

/// A new temporary file in `path`'s folder (created if missing), with the mode a new file gets.
pub(crate) fn temp_beside(path: &Path, suffix: &str) -> Result<tempfile::NamedTempFile, CliError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|e| CliError::Usage(format!("cannot create folder `{}`: {e}", dir.display())))?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".hooks.").suffix(suffix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        // Created with the mode any new file gets (less the umask), not tempfile's private 0600.
        builder.permissions(fs::Permissions::from_mode(0o666));
    }
    builder
        .tempfile_in(&dir)
        .map_err(|e| CliError::Usage(format!("cannot write in `{}`: {e}", dir.display())))
}

/// Draws `m` as a heatmap (layer names on the axes, values in the cells when they fit, a colour
/// bar, the metric and inputs in the title) into a temporary PNG beside `path`.
fn draw(m: &Similarity, inputs: &str, path: &Path) -> Result<tempfile::NamedTempFile, CliError> {
    let temp = temp_beside(path, ".png")?;
    Heatmap {
        title: &format!("{} — {inputs}", m.metric.label()),
        rows: &m.rows,
        columns: &m.columns,
        values: &m.values,
        cell_labels: None,
    }
    .draw(temp.path())
    .map_err(|e| CliError::Usage(format!("cannot draw `{}`: {e}", path.display())))?;
    Ok(temp)
}
