//! `hooks generate`: what a (steered) causal LM says, one JSON line per prompt, and optionally
//! the activations of every prompt and generated token.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use hooks::{Activations, DatasetWriter, Item, Pool as LibPool, SampleColumn};
use hooks_models::generate::{eos_token_ids, generate, GenerateOptions, Generation, InterveneOn, Sampling};
use hooks_models::{ChatTemplate, ModelError, TextModel, Tokenizer};
use serde_json::json;
use tch::{Kind, Tensor};

use crate::compare::temp_beside;
use crate::edits::{EditArgs, Edits, Flag};
use crate::error::CliError;
use crate::extract::{check_vocabulary, layer_list, parse_device, sample_columns, save_output, tokenize, DType};
use crate::folder::{is_npz, Request};
use crate::input::{self, InputFormat};
use crate::pool::Pool;
use crate::sae::SaeArgs;
use crate::signals;

/// Options of `hooks generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// A Hugging Face causal LM folder (config.json, model.safetensors; tokenizer.json for text
    /// prompts and the decoded `text`).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// The prompts: text lines, JSONL with `text`, or JSONL with `input_ids`, as `extract` reads
    /// them.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// How to read each line: auto, text or jsonl (as `extract`).
    #[arg(long, value_enum, default_value_t = InputFormat::Auto)]
    input_format: InputFormat,
    /// Carry these keys of the input's JSON lines into the output, as `extract` does: each JSON
    /// line written holds them, and the captures hold them as `meta.KEY` arrays `[N]`. (Every
    /// line and capture file also holds `sample_index`: the prompt's 0-based line in the input.)
    #[arg(long, value_name = "KEY[,KEY]", value_delimiter = ',')]
    keep_keys: Vec<String>,
    /// The most tokens to add to each prompt.
    #[arg(long, value_name = "N")]
    max_new_tokens: u64,
    /// One JSON line per prompt: `prompt_ids`, `output_ids`, `finish_reason` (`eos` or
    /// `length`) and, with a tokenizer, `text`.
    #[arg(long, value_name = "OUT.jsonl")]
    out: PathBuf,
    /// Sample from softmax(logits / T); 0 is greedy. Default: greedy, or 1 when --top-k or
    /// --top-p is given.
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    temperature: Option<f64>,
    /// Sample among the K most probable tokens (1 is greedy).
    #[arg(long, value_name = "K")]
    top_k: Option<u64>,
    /// Sample among the smallest set of most probable tokens whose probabilities reach P, in
    /// (0, 1].
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    top_p: Option<f64>,
    /// The seed of the draws: the same seed gives the same output; each prompt draws from its
    /// own stream, so batching does not change it.
    #[arg(long, default_value_t = 0, value_name = "S")]
    seed: u64,
    /// Prompts per batch (sorted by length, right-padded).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    /// Layers to capture over each prompt and its output (paths or globs, as `extract`).
    #[arg(long, value_name = "LIST")]
    layers: Option<String>,
    /// Where --layers go: an .npz with `input_ids` (prompt + output, right-padded),
    /// `attention_mask` and one array per layer; or any other path for a dataset folder, written
    /// window by window as generation goes (as `extract --out DIR` writes one).
    #[arg(long, value_name = "ACTS.npz|DIR")]
    activations: Option<PathBuf>,
    /// Prompts per window of a dataset folder (--activations DIR; default 64): generated, then
    /// written and synced, before the next window starts.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    window: Option<u32>,
    /// Replace the dataset folder --activations names when it holds a run (a generation folder
    /// is never resumed).
    #[arg(long)]
    overwrite: bool,
    /// Reduce the token axis of --activations: none, mean, max, first, last (over real tokens).
    #[arg(long, value_enum, default_value_t = Pool::None)]
    pool: Pool,
    #[command(flatten)]
    sae: SaeArgs,
    #[command(flatten)]
    edits: EditArgs,
    /// Where the interventions apply: every position (the prompt's and each new token's), or
    /// the generated positions only (within the POSITIONS of one that names some).
    #[arg(long, value_enum, default_value_t = InterveneOnArg::All)]
    intervene_on: InterveneOnArg,
    /// Read each input line as a conversation, `{"messages": [{"role": ..., "content": ...}]}`,
    /// and prompt with the folder's chat template (`tokenizer_config.json`'s `chat_template`, or
    /// `chat_template.jinja`) and the assistant's turn to follow, as transformers'
    /// `apply_chat_template(messages, add_generation_prompt=True, tokenize=True)`.
    #[arg(long)]
    chat: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// The dtype the model runs in.
    #[arg(long, value_enum, default_value_t = DType::F32)]
    dtype: DType,
}

/// `--intervene-on`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum InterveneOnArg {
    All,
    Generated,
}

/// `hooks generate`.
pub fn run(args: &GenerateArgs, order: &[Flag]) -> Result<(), CliError> {
    let start = Instant::now();
    let sampling = sampling(args)?;
    let max_new_tokens = usize::try_from(args.max_new_tokens).unwrap_or(usize::MAX);
    if max_new_tokens == 0 {
        return Err(CliError::Usage(
            "`--max-new-tokens 0` generates nothing; give at least 1".into(),
        ));
    }
    let layers: Vec<String> = layer_list(args.layers.as_deref().unwrap_or(""))
        .into_iter()
        .map(str::to_owned)
        .collect();
    check_outputs(args, &layers)?;
    let device = parse_device(&args.device)?;
    let edits = Edits::parse(&args.edits, &[], order)?;
    let input_name = input::display_name(&args.input);
    if let Some(key) = args
        .keep_keys
        .iter()
        .find(|k| ["prompt_ids", "output_ids", "finish_reason", "sample_index"].contains(&k.as_str()))
    {
        return Err(CliError::Usage(format!(
            "`--keep-keys {key}`: `{key}` is a key of the JSON lines `generate` writes; rename it in the input"
        )));
    }
    let (items, note, columns, input_sha256) = if args.chat {
        if !args.keep_keys.is_empty() {
            return Err(CliError::Usage(
                "`--keep-keys` reads keys beside `text` or `input_ids`; with --chat a line holds `messages` alone"
                    .into(),
            ));
        }
        let (items, lines, sha256) = conversations(&args.input, &args.model)?;
        let columns = sample_columns(lines, Vec::new(), items.len());
        (items, None, columns, sha256)
    } else {
        let input = input::read(Some(&args.input), args.input_format, &args.keep_keys)?;
        let columns = sample_columns(input.lines.clone(), input.meta.clone(), input.samples.len());
        let sha256 = input.sha256.clone();
        (Vec::new(), Some(input), columns, sha256)
    };
    let model = args
        .sae
        .attach(hooks_models::load(&args.model, device, args.dtype.kind())?)?;
    if model.readout().is_none() {
        return Err(ModelError::NotCausal {
            model_type: model.model_type(),
        }
        .into());
    }
    let (items, note) = match note {
        Some(input) => {
            check_vocabulary(&input.samples, &input_name, model.vocab_size())?;
            (tokenize(&input.samples, &args.model, usize::MAX)?.0, input.note)
        }
        None => (items, None),
    };
    let max = model.max_length();
    if let Some((i, item)) = items.iter().enumerate().find(|(_, item)| item.ids().len() >= max) {
        return Err(CliError::Input(format!(
            "{input_name}: prompt {} has {} tokens, and the model takes {max} in all, so no token can follow it; shorten it",
            i + 1,
            item.ids().len()
        )));
    }
    let batch_size = usize::try_from(args.batch_size).unwrap_or(usize::MAX);
    edits.check(&*model, &items, max, batch_size, true)?;
    let interventions = edits.bind(&*model)?.map(Arc::new);
    let interrupt = signals::Interrupt::install()?;
    let options = GenerateOptions {
        max_new_tokens,
        sampling,
        seed: args.seed,
        first_index: 0,
        eos: eos_token_ids(&args.model)?,
        batch_size,
        interrupt: Some(interrupt.flag()),
        interventions,
        intervene_on: match args.intervene_on {
            InterveneOnArg::All => InterveneOn::All,
            InterveneOnArg::Generated => InterveneOn::Generated,
        },
        layers,
    };
    let mut tokens = 0usize;
    // On a terminal, a progress line: tokens so far and their rate.
    let terminal = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut on_token = |_, _| {
        tokens += 1;
        if terminal && tokens.is_multiple_of(8) {
            let rate = tokens as f64 / started.elapsed().as_secs_f64().max(1e-9);
            eprint!("\r{tokens} tokens, {rate:.1} tokens/s");
        }
    };
    let pool = lib_pool(args.pool)?;
    let folder = args.activations.as_deref().filter(|p| !is_npz(p));
    let mut writer = match folder {
        Some(dir) => Some(open_folder(
            args,
            &*model,
            &edits,
            &options,
            (&columns, &input_sha256),
            dir,
        )?),
        None => None,
    };
    // A folder is written window by window; anything else is one window.
    let window = match &writer {
        Some(_) => usize::try_from(args.window.unwrap_or(64)).unwrap_or(usize::MAX),
        None => items.len(),
    };
    let mut generations = Vec::with_capacity(items.len());
    let mut windows = || -> Result<(), CliError> {
        for (w, part) in items.chunks(window).enumerate() {
            let options = GenerateOptions {
                first_index: w * window,
                ..options.clone()
            };
            let generated = generate(&*model, part, &options, &mut on_token).map_err(|e| match e {
                ModelError::Capture(hooks::Error::Interrupted) => interrupt.error("nothing was written"),
                e => e.into(),
            })?;
            match &mut writer {
                Some(writer) => {
                    let (acts, ids, mask) = captured(&generated, pool, model.pad_token_id())?;
                    let chunk = hooks::Chunk {
                        first: w * window,
                        activations: &acts,
                        input_ids: &ids,
                        attention_mask: &mask,
                    };
                    hooks::ActivationSink::write(writer, &chunk)?;
                    generations.extend(generated.into_iter().map(|mut g| {
                        g.activations.clear();
                        g
                    }));
                }
                None => generations.extend(generated),
            }
        }
        Ok(())
    };
    let outcome = windows();
    if terminal {
        eprint!("\r\x1b[K");
    }
    if let Err(e) = outcome {
        // A generation folder cannot be resumed, and its JSON lines are written at the end: a
        // run that stops part-way takes its folder away, as an `.npz` run writes nothing.
        if let Some(Err(cleanup)) = writer.map(DatasetWriter::discard) {
            eprintln!("note: {cleanup}");
        }
        return Err(e);
    }
    let tokenizer = if args.model.join("tokenizer.json").is_file() {
        Some(Tokenizer::from_dir(&args.model)?)
    } else {
        None
    };
    // The files are made beside their paths first: a failure leaves none of them.
    let lines = match write_lines(&generations, &columns, tokenizer.as_ref(), &args.out) {
        Ok(lines) => lines,
        Err(e) => {
            if let Some(Err(cleanup)) = writer.map(DatasetWriter::discard) {
                eprintln!("note: {cleanup}");
            }
            return Err(e);
        }
    };
    let acts = match (&args.activations, &mut writer) {
        (Some(path), None) => Some((
            path,
            write_activations(&generations, &columns, pool, model.pad_token_id(), path)?,
        )),
        (_, Some(writer)) => {
            writer.finish()?;
            None
        }
        (None, None) => None,
    };
    // A signal before the files replace their paths: nothing is written (the temporaries go).
    if interrupt.raised() {
        return Err(interrupt.error("nothing was written"));
    }
    lines
        .persist(&args.out)
        .map_err(|e| CliError::Usage(format!("cannot write `{}`: {}", args.out.display(), e.error)))?;
    if let Some((path, temp)) = acts {
        temp.persist(path)
            .map_err(|e| CliError::Usage(format!("cannot write `{}`: {}", path.display(), e.error)))?;
    }
    let seconds = start.elapsed().as_secs_f64();
    out!(
        "generated {tokens} tokens for {} prompts in {seconds:.1} s ({:.1} tokens/s) -> {}",
        generations.len(),
        tokens as f64 / seconds.max(1e-9),
        args.out.display()
    )?;
    for note in note.into_iter().chain(model.notes()) {
        eprintln!("note: {note}");
    }
    let untouched = options
        .interventions
        .as_ref()
        .map(|e| e.untouched())
        .unwrap_or_default();
    if !untouched.is_empty() {
        let layers: Vec<String> = untouched.iter().map(|l| format!("`{l}`")).collect();
        eprintln!(
            "note: the interventions on {} changed nothing: their positions were in no sequence{}",
            layers.join(", "),
            if options.intervene_on == InterveneOn::Generated {
                " (with --intervene-on generated, prompt positions are never changed)"
            } else {
                ""
            }
        );
    }
    if interrupt.raised() {
        return Err(interrupt.error("the files were written whole before stopping"));
    }
    Ok(())
}

/// `--chat`: each non-blank line's `messages` through the folder's chat template, tokenized; and
/// each line's 0-based number.
fn conversations(path: &Path, model_dir: &Path) -> Result<(Vec<Item>, Vec<i64>, String), CliError> {
    let template = ChatTemplate::from_dir(model_dir)?;
    if !model_dir.join("tokenizer.json").is_file() {
        return Err(CliError::Input(format!(
            "`--chat`: `{}` has no tokenizer.json to tokenize the rendered conversation",
            model_dir.display()
        )));
    }
    let tokenizer = Tokenizer::from_dir(model_dir)?;
    let (name, bytes) = input::read_bytes(path)?;
    let lines = input::non_blank_lines(&bytes, &name)?.lines;
    if lines.is_empty() {
        return Err(CliError::Input(format!(
            "{name} has no conversations; give one JSON object per line"
        )));
    }
    let numbers = lines
        .iter()
        .map(|(n, _)| i64::try_from(*n).unwrap_or(i64::MAX) - 1)
        .collect();
    let items = lines
        .into_iter()
        .map(|(line_no, line)| {
            let bad = |why: &str| {
                CliError::Input(format!(
                    "{name}, line {line_no}: {why}; with --chat each line is {{\"messages\": [{{\"role\": \"user\", \"content\": \"...\"}}]}}"
                ))
            };
            let value: serde_json::Value = serde_json::from_str(line).map_err(|_| bad("not JSON"))?;
            let messages = match value.as_object() {
                Some(object) if object.len() == 1 => object.get("messages").ok_or_else(|| bad("no `messages`"))?,
                _ => return Err(bad("not an object with `messages` alone")),
            };
            let well_formed = messages.as_array().is_some_and(|list| {
                !list.is_empty() && list.iter().all(|m| m.get("role").is_some_and(serde_json::Value::is_string))
            });
            if !well_formed {
                return Err(bad("`messages` must be a non-empty list of objects with a `role`"));
            }
            let ids = template
                .encode(messages, &tokenizer)
                .map_err(|e| CliError::Input(format!("{name}, line {line_no}: {e}")))?;
            if ids.is_empty() {
                return Err(bad("the template renders it to no token"));
            }
            Ok(Item::new(ids))
        })
        .collect::<Result<_, CliError>>()?;
    let sha256 = input::sha256_hex(&bytes);
    Ok((items, numbers, sha256))
}

/// `--temperature`, `--top-k`, `--top-p`, checked.
fn sampling(args: &GenerateArgs) -> Result<Sampling, CliError> {
    let usage = |s: String| Err(CliError::Usage(s));
    if let Some(t) = args.temperature.filter(|t| !(t.is_finite() && *t >= 0.0)) {
        return usage(format!("`--temperature {t}`: give 0 (greedy) or a positive number"));
    }
    if args.top_k == Some(0) {
        return usage("`--top-k 0` keeps no token; give at least 1 (1 is greedy)".into());
    }
    if let Some(p) = args.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
        return usage(format!("`--top-p {p}`: give a value in (0, 1]"));
    }
    let sampled = args.top_k.is_some() || args.top_p.is_some();
    Ok(Sampling {
        temperature: args.temperature.unwrap_or(if sampled { 1.0 } else { 0.0 }),
        top_k: args.top_k.map(|k| usize::try_from(k).unwrap_or(usize::MAX)),
        top_p: args.top_p,
    })
}

/// `--out` a file, `--activations` an `.npz` that needs `--layers` (and the reverse).
fn check_outputs(args: &GenerateArgs, layers: &[String]) -> Result<(), CliError> {
    if args.out.is_dir() {
        return Err(CliError::Usage(format!(
            "`--out {}` is a folder; give a file path for the JSON lines",
            args.out.display()
        )));
    }
    let same = |a: &Path, b: &Path| a == b || a.canonicalize().is_ok_and(|a| b.canonicalize().is_ok_and(|b| a == b));
    for (flag, path) in [("--out", Some(&args.out)), ("--activations", args.activations.as_ref())] {
        if path.is_some_and(|p| same(p, &args.input)) {
            return Err(CliError::Usage(format!(
                "`{flag}` is the input file `{}`, which it would replace; give another path",
                args.input.display()
            )));
        }
    }
    if args.activations.is_none() {
        let given: Vec<&str> = [
            ("--window", args.window.is_some()),
            ("--overwrite", args.overwrite),
            ("--pool", args.pool != Pool::None),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect();
        if let Some(flag) = given.first() {
            return Err(CliError::Usage(format!(
                "`{flag}` applies to the captures: give --layers and --activations ACTS.npz|DIR, or leave it out"
            )));
        }
    }
    match (&args.activations, layers.is_empty()) {
        (Some(path), true) => Err(CliError::Usage(format!(
            "`--activations {}` needs --layers: name the layers to capture",
            path.display()
        ))),
        (None, false) => Err(CliError::Usage(
            "`--layers` needs --activations ACTS.npz|DIR: where the captures go".into(),
        )),
        (Some(path), false) if is_npz(path) && path.is_dir() => Err(CliError::Usage(format!(
            "`--activations {}` is a folder; give a file path ending in .npz, or a folder path without .npz",
            path.display()
        ))),
        (Some(path), false) if !is_npz(path) && path.join("manifest.json").is_file() && !args.overwrite => {
            Err(CliError::Usage(format!(
                "`--activations {}` already holds a dataset folder, and generation does not resume one; pass --overwrite to replace it, or choose a new folder",
                path.display()
            )))
        }
        (Some(path), false) if is_npz(path) && (args.window.is_some() || args.overwrite) => Err(CliError::Usage(format!(
            "`{}` is for a dataset folder, and `{}` is one .npz; give a folder path, or leave it out",
            if args.window.is_some() { "--window" } else { "--overwrite" },
            path.display()
        ))),
        (Some(path), false) if !is_npz(path) && path.is_file() => Err(CliError::Usage(format!(
            "`--activations {}` is a file; a dataset folder needs a folder path (or end the path in .npz for one file)",
            path.display()
        ))),
        (Some(path), false)
            if !is_npz(path)
                && !path.join("manifest.json").is_file()
                && std::fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_some()) =>
        {
            Err(CliError::Usage(format!(
                "`--activations {}` is a folder that holds files and no manifest.json: not a dataset folder, so nothing is written into it; choose a new or empty folder",
                path.display()
            )))
        }
        (Some(path), false) if path == &args.out => Err(CliError::Usage(format!(
            "`--out` and `--activations` are both `{}`; give each its own file",
            path.display()
        ))),
        (Some(_), false)
            if layers
                .iter()
                .any(|l| l == "input_ids" || l == "attention_mask" || hooks::is_sample_column(l)) =>
        {
            Err(CliError::Usage(
                "a layer named `input_ids`, `attention_mask`, `sample_index` or `meta.*` clashes with the arrays of that name the output holds"
                    .into(),
            ))
        }
        _ => Ok(()),
    }
}

/// The JSON lines, in a synced temporary beside `out`.
fn write_lines(
    generations: &[Generation],
    columns: &[(String, SampleColumn)],
    tokenizer: Option<&Tokenizer>,
    out: &Path,
) -> Result<tempfile::NamedTempFile, CliError> {
    let mut text = String::new();
    for (i, g) in generations.iter().enumerate() {
        let mut line = json!({
            "prompt_ids": g.prompt_ids,
            "output_ids": g.output_ids,
            "finish_reason": g.finish_reason.as_str(),
        });
        for (name, column) in columns {
            let key = name.strip_prefix(hooks::META_PREFIX).unwrap_or(name);
            line[key] = match column {
                SampleColumn::Int64(v) => json!(v[i]),
                SampleColumn::Float64(v) => json!(v[i]),
                SampleColumn::Bool(v) => json!(v[i]),
                SampleColumn::Strings { values, .. } => json!(values[i]),
            };
        }
        if let Some(tokenizer) = tokenizer {
            line["text"] = json!(tokenizer.decode(&g.output_ids)?);
        }
        text.push_str(&line.to_string());
        text.push('\n');
    }
    let mut temp = temp_beside(out, ".tmp")?;
    temp.write_all(text.as_bytes())
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|e| CliError::Usage(format!("cannot write `{}`: {e}", out.display())))?;
    Ok(temp)
}

/// `--pool`, as generation takes it.
fn lib_pool(pool: Pool) -> Result<LibPool, CliError> {
    Ok(match pool {
        Pool::None => LibPool::None,
        Pool::Mean => LibPool::Mean,
        Pool::Max => LibPool::Max,
        Pool::First => LibPool::First,
        Pool::Last => LibPool::Last,
        Pool::Model => {
            return Err(CliError::Usage(
                "`--pool model` is a sentence-transformers pipeline; generation takes none, mean, max, first or last"
                    .into(),
            ))
        }
    })
}

/// The dataset folder `dir` for `samples` prompts' captures, its request recording everything
/// that shapes the bytes. A generation folder is never resumed: its request holds the time it
/// started, so an earlier folder never matches it and `--overwrite` replaces it.
fn open_folder(
    args: &GenerateArgs,
    model: &dyn TextModel,
    edits: &Edits,
    options: &GenerateOptions,
    (columns, input_sha256): (&[(String, SampleColumn)], &str),
    dir: &Path,
) -> Result<DatasetWriter, CliError> {
    let layers: Vec<&str> = options.layers.iter().map(String::as_str).collect();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let request = Request {
        model_dir: &args.model,
        input: Some(&args.input),
        input_sha256,
        layers: &layers,
        settings: json!({
            "command": "generate",
            "started_ns": started.to_string(),
            "pool": format!("{:?}", args.pool).to_lowercase(),
            "max_new_tokens": options.max_new_tokens,
            "temperature": options.sampling.temperature,
            "top_k": options.sampling.top_k,
            "top_p": options.sampling.top_p,
            "seed": options.seed,
            "eos": options.eos,
            "batch_size": options.batch_size,
            "window": args.window.unwrap_or(64),
            "chat": args.chat,
            "interventions": edits.record(),
            "sae": args.sae.record()?,
            "intervene_on": format!("{:?}", options.intervene_on).to_lowercase(),
            "dtype": format!("{:?}", args.dtype).to_lowercase(),
            "device": args.device,
        }),
        columns,
    };
    let config = request.config(model)?;
    let samples = columns.first().map_or(0, |(_, c)| c.len());
    let mut writer = DatasetWriter::create(dir, config, None, samples, true)?;
    if let Err(e) = writer.set_columns(columns.to_vec()) {
        let _ = writer.discard();
        return Err(e.into());
    }
    if let Err(e) = writer.set_sparse(crate::folder::sparse_layers(model, &layers)?) {
        let _ = writer.discard();
        return Err(e.into());
    }
    Ok(writer)
}

/// The captures of `generations` as `extract` writes them: `[N, T, ...]` right-padded with zeros
/// (or pooled over real tokens) per layer; and `input_ids` and `attention_mask` `[N, T]` (prompt
/// + output, right-padded).
fn captured(generations: &[Generation], pool: LibPool, pad_id: i64) -> Result<(Activations, Tensor, Tensor), CliError> {
    let sequences: Vec<Vec<i64>> = generations
        .iter()
        .map(|g| g.prompt_ids.iter().chain(&g.output_ids).copied().collect())
        .collect();
    let longest = sequences.iter().map(Vec::len).max().unwrap_or(0);
    let (mut ids, mut mask) = (Vec::new(), Vec::new());
    for sequence in &sequences {
        ids.extend_from_slice(sequence);
        ids.extend(std::iter::repeat_n(pad_id, longest - sequence.len()));
        mask.extend((0..longest).map(|t| i64::from(t < sequence.len())));
    }
    let shape = [
        i64::try_from(sequences.len()).unwrap_or(0),
        i64::try_from(longest).unwrap_or(0),
    ];
    let mask = Tensor::from_slice(&mask).reshape(shape);
    let ids = Tensor::from_slice(&ids).reshape(shape);
    let mut acts = Activations::new();
    let names: Vec<String> = generations
        .first()
        .map(|g| g.activations.iter().map(|(n, _)| n.clone()).collect())
        .unwrap_or_default();
    for (l, name) in names.iter().enumerate() {
        let rows: Vec<Tensor> = generations
            .iter()
            .map(|g| {
                let t = &g.activations[l].1;
                let pad = shape[1] - t.size()[0];
                let mut padding = t.size();
                padding[0] = pad;
                let t = if t.kind() == Kind::BFloat16 {
                    t.to_kind(Kind::Float)
                } else {
                    t.shallow_clone()
                };
                Tensor::cat(&[&t, &Tensor::zeros(&padding, (t.kind(), t.device()))], 0)
            })
            .collect();
        let stacked = Tensor::f_stack(&rows, 0).map_err(hooks::Error::from)?;
        acts.insert(name.clone(), pool.apply(&stacked, &mask)?);
    }
    Ok((acts, ids, mask))
}

/// Every prompt's and output's captures ([`captured`]) in a temporary `.npz` beside `path`.
fn write_activations(
    generations: &[Generation],
    columns: &[(String, SampleColumn)],
    pool: LibPool,
    pad_id: i64,
    path: &Path,
) -> Result<tempfile::NamedTempFile, CliError> {
    let (acts, ids, mask) = captured(generations, pool, pad_id)?;
    let temp = temp_beside(path, ".npz")?;
    // A temporary: the caller persists it (or drops it, on Ctrl-C).
    save_output(&acts, &ids, &mask, columns, temp.path(), &AtomicBool::new(false))?;
    Ok(temp)
}
