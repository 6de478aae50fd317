//! `hooks lens`: the logit lens over an input file, to one `.npz` and, with `--plot`, the figure.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use hooks::{save_npz_unless, Item, NpzArray};
use hooks_models::lens::{logit_lens, Lens, LensOptions, Target};
use hooks_models::{ModelError, Tokenizer};

use crate::compare::temp_beside;
use crate::error::CliError;
use crate::extract::{check_vocabulary, layer_list, parse_device, tokenize, DType};
use crate::heatmap::Heatmap;
use crate::input::{self, InputFormat, Sample};
use crate::signals;

/// Options of `hooks lens`.
#[derive(Debug, clap::Args)]
pub struct LensArgs {
    /// A Hugging Face causal LM folder (config.json, model.safetensors, and tokenizer.json for
    /// text input and decoded plot labels).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Text lines, JSONL with a `text` field, or JSONL with `input_ids` lists, as `extract`
    /// reads them.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// How to read each line: auto, text or jsonl (as `extract`).
    #[arg(long, value_enum, default_value_t = InputFormat::Auto)]
    input_format: InputFormat,
    /// The `.npz` to write: `layers`, `input_ids`, `attention_mask`, `top_ids`, `top_probs`,
    /// `entropy`, `kl_to_final` (and `target_prob`, `target_rank` with --targets).
    #[arg(long, value_name = "LENS.npz")]
    out: PathBuf,
    /// Comma-separated layers to read (paths or globs of residual-stream layers: the embedding
    /// and block outputs). Default: the embedding's output and every block's output.
    #[arg(long, value_name = "LIST")]
    layers: Option<String>,
    /// How many of the most probable tokens to keep per layer and position.
    #[arg(long, default_value_t = 10, value_name = "K")]
    top_k: u64,
    /// One target per non-blank input line: a token id (the same at every position), or a JSON
    /// list of one id per token of the input.
    #[arg(long, value_name = "FILE")]
    targets: Option<PathBuf>,
    /// Draw the logit-lens figure of one sample: layers x positions, each cell its top token,
    /// coloured by its probability.
    #[arg(long, value_name = "P.png")]
    plot: Option<PathBuf>,
    /// Which sample --plot draws (from 0, in input order).
    #[arg(long, default_value_t = 0, value_name = "I")]
    plot_sample: usize,
    /// Samples per forward pass (sorted by length, each batch padded to its own longest).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    /// Truncate inputs to N tokens. Default: the model's maximum.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_length: Option<u64>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// The dtype the model runs in; the distributions are computed in float32 from its logits.
    #[arg(long, value_enum, default_value_t = DType::F32)]
    dtype: DType,
}

/// `hooks lens`.
pub fn run(args: &LensArgs) -> Result<(), CliError> {
    let start = Instant::now();
    check_outputs(args)?;
    let device = parse_device(&args.device)?;
    let input = input::read(Some(&args.input), args.input_format, &[])?;
    let samples = input.samples;
    let input_name = input::display_name(&args.input);
    if args.plot.is_some() && args.plot_sample >= samples.len() {
        return Err(CliError::Usage(format!(
            "`--plot-sample {}`: {input_name} has {} samples, numbered from 0",
            args.plot_sample,
            samples.len()
        )));
    }
    let model = hooks_models::load(&args.model, device, args.dtype.kind())?;
    if model.readout().is_none() {
        return Err(ModelError::NoReadout {
            model_type: model.model_type(),
        }
        .into());
    }
    let vocab = model.vocab_size();
    if args.top_k == 0 || usize::try_from(args.top_k).map_or(true, |k| k > vocab) {
        return Err(CliError::Usage(format!(
            "`--top-k {}`: give a K from 1 to the model's vocabulary size, {vocab}",
            args.top_k
        )));
    }
    check_vocabulary(&samples, &input_name, vocab)?;
    let max_length = args
        .max_length
        .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX))
        .min(model.max_length());
    let (items, texts_cut) = tokenize(&samples, &args.model, max_length)?;
    let mut notes: Vec<String> = input.note.into_iter().chain(model.notes()).collect();
    if let Some(asked) = args
        .max_length
        .filter(|&m| usize::try_from(m).map_or(true, |m| m > model.max_length()))
    {
        notes.push(format!(
            "--max-length {asked} is past the model's {} positions; inputs were cut at {max_length}",
            model.max_length()
        ));
    }
    let ids_cut = samples
        .iter()
        .filter(|s| matches!(s, Sample::Ids { ids, .. } if ids.len() > max_length))
        .count();
    if texts_cut + ids_cut > 0 {
        notes.push(format!(
            "{} of {} inputs were longer than {max_length} tokens and were cut to it",
            texts_cut + ids_cut,
            samples.len()
        ));
    }
    let targets = match args.targets.as_deref() {
        Some(path) => {
            // The input's 1-based line numbers, for messages (the reader skipped its blank lines).
            let lines: Vec<usize> = input
                .lines
                .iter()
                .map(|&l| usize::try_from(l).unwrap_or(0) + 1)
                .collect();
            let (targets, cut) = read_targets(path, &items, &lines, max_length, vocab)?;
            if cut > 0 {
                notes.push(format!(
                    "{cut} target lists were cut to their input's first {max_length} tokens, as the input was"
                ));
            }
            Some(targets)
        }
        None => None,
    };
    let layers = layer_list(args.layers.as_deref().unwrap_or(""));
    if args.layers.is_some() && layers.is_empty() {
        return Err(CliError::Usage(
            "`--layers` names no layer; leave it out for the default (the embedding and every block), or name some"
                .into(),
        ));
    }
    let interrupt = signals::Interrupt::install()?;
    let options = LensOptions {
        top_k: usize::try_from(args.top_k).unwrap_or(usize::MAX),
        batch_size: usize::try_from(args.batch_size).unwrap_or(usize::MAX),
        max_length: Some(max_length),
        targets,
        interrupt: Some(interrupt.flag()),
    };
    let lens = match logit_lens(&*model, &items, &layers, &options) {
        Err(ModelError::Capture(hooks::Error::Interrupted)) => return Err(interrupt.error("nothing was written")),
        Err(ModelError::InvalidArgument { name: "layers", reason }) => {
            return Err(CliError::Usage(format!("`--layers`: {reason}")))
        }
        other => other?,
    };
    // Drawn first, beside its path: a failed plot leaves no file at all.
    let plot = match &args.plot {
        Some(path) => Some((path, draw(&lens, args.plot_sample, &args.model, path)?)),
        None => None,
    };
    let written = match write(&lens, &args.out, &interrupt.flag()) {
        // A signal during the write: neither file replaces its path.
        Err(hooks::Error::Interrupted) => return Err(interrupt.error("nothing was written")),
        other => other?,
    };
    if let Some((path, temp)) = plot {
        if let Err(e) = temp.persist(path) {
            let _ = fs::remove_file(&written);
            return Err(CliError::Usage(format!(
                "cannot write `{}`: {}",
                path.display(),
                e.error
            )));
        }
    }
    let size = lens.top_ids.size();
    out!(
        "read {} samples x {} layers (top {}) through the model's final norm and unembedding in {:.1} s -> {}",
        size[0],
        size[1],
        size[3],
        start.elapsed().as_secs_f64(),
        written.display()
    )?;
    for note in notes {
        eprintln!("note: {note}");
    }
    if interrupt.raised() {
        return Err(interrupt.error("the file was written whole before stopping"));
    }
    Ok(())
}

/// `--out` must be an `.npz` file and `--plot` a `.png`, each a file path in a folder this run
/// can write to (checked before any work, by making a temporary file there).
fn check_outputs(args: &LensArgs) -> Result<(), CliError> {
    let outputs = std::iter::once(("--out", &args.out, "npz", "the lens writes one .npz file"))
        .chain(args.plot.iter().map(|p| ("--plot", p, "png", "the figure is a PNG")));
    for (flag, path, ext, what) in outputs {
        if path.is_dir() {
            return Err(CliError::Usage(format!(
                "`{flag} {}` is a folder; give a file path ending in .{ext}",
                path.display()
            )));
        }
        if !path.extension().is_some_and(|e| e.eq_ignore_ascii_case(ext)) {
            return Err(CliError::Usage(format!(
                "`{flag} {}`: {what}; give a file path ending in .{ext}",
                path.display()
            )));
        }
        drop(temp_beside(path, ".tmp")?);
    }
    if args.plot.is_none() && args.plot_sample != 0 {
        return Err(CliError::Usage(
            "`--plot-sample` chooses the sample --plot draws; give --plot P.png too".into(),
        ));
    }
    Ok(())
}

/// `--targets`: one line per non-blank input line, each a token id or a JSON list of one id per
/// token of `items` (whose input lines are `input_lines`), checked against the vocabulary; a list
/// of an input's length before it was cut to `max_length` is cut with it. Returns the targets
/// and how many lists were cut.
fn read_targets(
    path: &Path,
    items: &[Item],
    input_lines: &[usize],
    max_length: usize,
    vocab: usize,
) -> Result<(Vec<Target>, usize), CliError> {
    let name = format!("--targets `{}`", path.display());
    let bytes = fs::read(path).map_err(|e| CliError::Input(format!("cannot read `{}`: {e}", path.display())))?;
    let lines = input::non_blank_lines(&bytes, &name)?.lines;
    if lines.len() != items.len() {
        return Err(CliError::Input(format!(
            "{name} has {} non-blank lines for {} input samples; give one target per input line",
            lines.len(),
            items.len()
        )));
    }
    let mut cut = 0;
    let mut targets = Vec::with_capacity(items.len());
    for (i, (line_no, line)) in lines.into_iter().enumerate() {
        let input_line = input_lines.get(i).copied().unwrap_or(i + 1);
        let bad = |why: String| CliError::Input(format!("{name}, line {line_no}: {why}"));
        let shape = || {
            bad(format!(
                "`{}` is neither a token id nor a JSON list of ids; write `42` or `[5, 17, 42]`",
                line.trim()
            ))
        };
        let target = match serde_json::from_str::<serde_json::Value>(line).map_err(|_| shape())? {
            serde_json::Value::Number(n) => Target::Every(n.as_i64().ok_or_else(shape)?),
            serde_json::Value::Array(ids) => {
                let mut ids: Vec<i64> = ids
                    .iter()
                    .map(serde_json::Value::as_i64)
                    .collect::<Option<_>>()
                    .ok_or_else(shape)?;
                let (given, tokens) = (items[i].ids().len(), items[i].ids().len().min(max_length));
                if ids.len() == given && given > tokens {
                    ids.truncate(tokens);
                    cut += 1;
                }
                if ids.len() != tokens {
                    let after = if given > tokens {
                        format!(" (cut to {tokens} from {given})")
                    } else {
                        String::new()
                    };
                    return Err(bad(format!(
                        "{} ids for the {tokens} tokens of input line {input_line}{after}; give one id per token",
                        ids.len()
                    )));
                }
                Target::PerPosition(ids)
            }
            _ => return Err(shape()),
        };
        let ids = match &target {
            Target::Every(id) => std::slice::from_ref(id),
            Target::PerPosition(ids) => ids.as_slice(),
        };
        if let Some(id) = ids
            .iter()
            .find(|&&id| usize::try_from(id).map_or(true, |id| id >= vocab))
        {
            return Err(bad(format!("the id {id} is outside the model's vocabulary 0..{vocab}")));
        }
        targets.push(target);
    }
    Ok((targets, cut))
}

/// The `.npz`, written atomically; returns its path.
fn write(lens: &Lens, out: &Path, cancel: &AtomicBool) -> Result<PathBuf, hooks::Error> {
    let mut arrays = vec![
        ("layers", NpzArray::Strings(&lens.layers)),
        ("input_ids", NpzArray::Tensor(&lens.input_ids)),
        ("attention_mask", NpzArray::Tensor(&lens.attention_mask)),
        ("top_ids", NpzArray::Tensor(&lens.top_ids)),
        ("top_probs", NpzArray::Tensor(&lens.top_probs)),
        ("entropy", NpzArray::Tensor(&lens.entropy)),
        ("kl_to_final", NpzArray::Tensor(&lens.kl_to_final)),
    ];
    if let (Some(prob), Some(rank)) = (&lens.target_prob, &lens.target_rank) {
        arrays.push(("target_prob", NpzArray::Tensor(prob)));
        arrays.push(("target_rank", NpzArray::Tensor(rank)));
    }
    save_npz_unless(arrays, out, cancel)
}

/// The canonical logit-lens figure of sample `index` into a temporary PNG beside `path`: one row
/// per layer (the last at the top), one column per position (labelled with its input token), each
/// cell the layer's top next-token prediction there, coloured by its probability.
fn draw(lens: &Lens, index: usize, model_dir: &Path, path: &Path) -> Result<tempfile::NamedTempFile, CliError> {
    let i = i64::try_from(index).unwrap_or(i64::MAX);
    let length = lens.attention_mask.get(i).sum(tch::Kind::Int64).int64_value(&[]);
    let ids: Vec<i64> = Vec::try_from(lens.input_ids.get(i).narrow(0, 0, length))
        .map_err(|e| CliError::Usage(format!("cannot draw `{}`: {e}", path.display())))?;
    let tokenizer = Tokenizer::from_dir(model_dir).ok();
    let label = |ids: &[i64]| -> Vec<String> {
        let tokens = tokenizer.as_ref().map(|t| t.tokens(ids)).unwrap_or_default();
        ids.iter()
            .enumerate()
            .map(|(p, id)| match tokens.get(p) {
                Some(Some(token)) => token.clone(),
                _ => format!("#{id}"),
            })
            .collect()
    };
    let columns: Vec<String> = label(&ids)
        .into_iter()
        .enumerate()
        .map(|(p, t)| format!("{p} {t}"))
        .collect();
    let layers = lens.layers.len();
    let (mut values, mut cells) = (Vec::with_capacity(layers), Vec::with_capacity(layers));
    for l in (0..layers).rev() {
        let l = i64::try_from(l).unwrap_or(0);
        let top = |t: &tch::Tensor| t.get(i).get(l).narrow(0, 0, length).select(1, 0);
        let probs: Vec<f64> = Vec::<f32>::try_from(top(&lens.top_probs))
            .map_err(|e| CliError::Usage(format!("cannot draw `{}`: {e}", path.display())))?
            .into_iter()
            .map(f64::from)
            .collect();
        let best: Vec<i64> = Vec::try_from(top(&lens.top_ids))
            .map_err(|e| CliError::Usage(format!("cannot draw `{}`: {e}", path.display())))?;
        values.push(probs);
        cells.push(label(&best));
    }
    let rows: Vec<String> = lens.layers.iter().rev().cloned().collect();
    let temp = temp_beside(path, ".png")?;
    Heatmap {
        title: &format!("Logit lens, sample {index}: top next token and its probability"),
        rows: &rows,
        columns: &columns,
        values: &values,
        cell_labels: Some(&cells),
    }
    .draw(temp.path())
    .map_err(|e| CliError::Usage(format!("cannot draw `{}`: {e}", path.display())))?;
    Ok(temp)
}
