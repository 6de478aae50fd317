//! `hooks extract --out DIR`: the dataset folder, its request (what a resume must match), shards,
//! and `hooks merge`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hooks::{DatasetWriter, Extractor, Item, Report, Shard, Stats};
use hooks_models::TextModel;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::CliError;

/// Whether `--out` names an `.npz` file rather than a dataset folder.
pub fn is_npz(out: &Path) -> bool {
    out.extension().is_some_and(|e| e.eq_ignore_ascii_case("npz"))
}

/// `--shard K/N` or `--shard auto` (RANK and WORLD_SIZE, as torchrun sets them): `(K, N)`.
pub fn parse_shard(spec: &str) -> Result<(usize, usize), CliError> {
    let (k, n) = if spec.trim() == "auto" {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| {
                CliError::Usage(format!(
                    "`--shard auto` reads RANK and WORLD_SIZE (as torchrun sets them), but {name} is not set; pass --shard K/N"
                ))
            })
        };
        (var("RANK")?, var("WORLD_SIZE")?)
    } else {
        let (k, n) = spec
            .split_once('/')
            .ok_or_else(|| CliError::Usage(format!("invalid `--shard {spec}`; write K/N, like 0/4, or auto")))?;
        (k.trim().to_owned(), n.trim().to_owned())
    };
    match (k.parse::<usize>(), n.parse::<usize>()) {
        (Ok(k), Ok(n)) if n > 0 && k < n => Ok((k, n)),
        _ => Err(CliError::Usage(format!(
            "invalid shard `{k}/{n}`; write K/N with whole numbers, K from 0 and below N (0/4 … 3/4), or auto"
        ))),
    }
}

/// What a dataset folder records as its request: a rerun resumes only the same request.
pub struct Request<'a> {
    pub model_dir: &'a Path,
    /// `--input` (`-` for standard input), or `None` for the bundled sentences.
    pub input: Option<&'a Path>,
    /// The sha256 of the input's bytes as read ([`crate::input::Input::sha256`]).
    pub input_sha256: &'a str,
    pub layers: &'a [&'a str],
    /// Every setting that changes the bytes (pooling, lengths, dtype, device, batching).
    pub settings: serde_json::Value,
    /// The per-sample columns written beside the layers (`sample_index`, `meta.KEY`), one
    /// value per sample of the whole input.
    pub columns: &'a [(String, hooks::SampleColumn)],
}

impl Request<'_> {
    /// The manifest's `config`: the model folder and the sha256 of every file that shapes the
    /// bytes ([`model_files`]: config, weights, tokenizer, sentence-transformers' settings), the
    /// resolved layers, the settings (`--max-samples` among them), the input's sha256, hooks'
    /// version and [`WRITER_FORMAT`]. A resume that differs names the first difference: the file
    /// that changed (`model_sha256.tokenizer.json`).
    pub fn config(&self, model: &dyn TextModel) -> Result<serde_json::Value, CliError> {
        let store = hooks::ActivationStore::new(model, self.layers)?;
        let mut files = serde_json::Map::new();
        for (name, path) in model_files(self.model_dir)? {
            files.insert(name, json!(sha256(&path)?));
        }
        let input = match self.input {
            Some(p) if crate::input::is_stdin(p) => json!({ "path": "standard input", "sha256": self.input_sha256 }),
            Some(p) => {
                json!({ "path": p.canonicalize().unwrap_or_else(|_| p.to_owned()), "sha256": self.input_sha256 })
            }
            None => json!({ "path": "the bundled sentences" }),
        };
        Ok(json!({
            "hooks": env!("CARGO_PKG_VERSION"),
            "writer_format": WRITER_FORMAT,
            "model": self.model_dir.canonicalize().unwrap_or_else(|_| self.model_dir.to_owned()),
            "model_sha256": files,
            "layers": store.layer_names(),
            "settings": self.settings,
            "input": input,
            "columns": self.columns.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(),
        }))
    }
}

/// The version of what a run writes for a given request, recorded in the request: a folder
/// written by a program whose bytes differ for the same request is not resumed (its request
/// differs here). Raised whenever the bytes of a request change.
pub const WRITER_FORMAT: u32 = 2;

/// The files of a model folder whose bytes shape an extraction, as `(name relative to the
/// folder, path)`, sorted: `config.json`, the weights (`*.safetensors`, a sharded index), the
/// tokenizer's files (`tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`,
/// `added_tokens.json`, vocabularies), the chat template, and sentence-transformers' settings
/// (`modules.json`, `config_sentence_transformers.json`, `sentence_bert_config.json`, and each
/// module folder's `config.json`, such as `1_Pooling/config.json`).
pub fn model_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, CliError> {
    const NAMED: [&str; 14] = [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.txt",
        "vocab.json",
        "merges.txt",
        "tokenizer.model",
        "chat_template.jinja",
        "chat_template.json",
        "modules.json",
        "config_sentence_transformers.json",
        "sentence_bert_config.json",
    ];
    let read =
        |d: &Path| std::fs::read_dir(d).map_err(|e| CliError::Input(format!("cannot read `{}`: {e}", d.display())));
    let mut files = Vec::new();
    for entry in read(dir)?.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_file()
            && (NAMED.contains(&name.as_str())
                || name.ends_with(".safetensors")
                || name.ends_with(".safetensors.index.json"))
        {
            files.push((name, path));
        } else if path.is_dir() && path.join("config.json").is_file() && dir.join("modules.json").is_file() {
            // A sentence-transformers module's settings (`1_Pooling/config.json`).
            files.push((format!("{name}/config.json"), path.join("config.json")));
        }
    }
    files.sort();
    Ok(files)
}

/// The sha256 of a file, in hex.
pub fn sha256(path: &Path) -> Result<String, CliError> {
    let fail = |e: std::io::Error| CliError::Input(format!("cannot read `{}`: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(fail)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(fail)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(crate::input::hex(&hasher.finalize()))
}

/// What a folder run ended with.
pub enum Outcome {
    /// The folder is complete: this run's counts, and how many samples earlier runs wrote.
    Done {
        report: Report,
        resumed: usize,
        samples: usize,
    },
    /// An earlier run had finished it.
    AlreadyComplete { samples: usize },
}

/// Runs the extraction into the dataset folder `out`, resuming it if an earlier run of the same
/// request stopped, for the part of `items` that `shard` names.
pub fn extract(
    extractor: &Extractor,
    model: &dyn TextModel,
    items: &[Item],
    request: &Request<'_>,
    shard: Option<(usize, usize)>,
    out: &Path,
    overwrite: bool,
) -> Result<Outcome, hooks::Error> {
    let windows = extractor.windows(items);
    let (first, end) = match shard {
        None => (0, items.len()),
        Some((k, n)) => {
            if windows.len() < n {
                return Err(hooks::Error::InvalidArgument {
                    name: "shard",
                    reason: format!(
                        "the input makes {} window(s) of samples and a shard is whole windows, so it splits into at most {}; use fewer shards or a smaller --window",
                        windows.len(),
                        windows.len()
                    ),
                });
            }
            let at = |k: usize| windows.get(k * windows.len() / n).map_or(items.len(), |w| w.start);
            (at(k), at(k + 1))
        }
    };
    let config = request.config(model).map_err(|e| hooks::Error::InvalidArgument {
        name: "request",
        reason: e.to_string(),
    })?;
    let shard = shard.map(|(index, count)| Shard {
        index,
        count,
        first,
        end,
    });
    let mut writer = DatasetWriter::create(out, config, shard, end - first, overwrite)?;
    if writer.is_complete() {
        return Ok(Outcome::AlreadyComplete { samples: end - first });
    }
    if let Err(err) = writer.set_columns(
        request
            .columns
            .iter()
            .map(|(n, c)| (n.clone(), c.slice(first..end)))
            .collect(),
    ) {
        let _ = writer.discard_if_empty();
        return Err(err);
    }
    if let Err(err) = writer.set_sparse(sparse_layers(model, request.layers)?) {
        let _ = writer.discard_if_empty();
        return Err(err);
    }
    let resumed = writer.done_samples();
    // A shard's items are rows `first..end` of the input, and so of any patch source.
    let extractor = extractor.clone().patch_offset(first);
    let report = match extractor.run_into(model, request.layers, &items[first..end], resumed, &mut writer) {
        Ok(report) => report,
        Err(err) => {
            // The run's own error is the one to report; a folder that cannot be removed as well
            // is left as a failed first window leaves it.
            let _ = writer.discard_if_empty();
            return Err(err);
        }
    };
    writer.finish()?;
    Ok(Outcome::Done {
        report,
        resumed,
        samples: end - first,
    })
}

/// The selected layers a folder writes sparse, in scipy's CSR layout: SAEs' feature
/// activations (`LAYER.sae.hook_sae_acts_post`), mostly zeros.
pub fn sparse_layers(model: &dyn TextModel, layers: &[impl AsRef<str>]) -> Result<Vec<String>, hooks::Error> {
    Ok(hooks::ActivationStore::new(model, layers)?
        .layer_names()
        .iter()
        .filter(|name| name.ends_with(".sae.hook_sae_acts_post"))
        .cloned()
        .collect())
}

/// The notes a run leaves: samples cut to the maximum length, layers not pooled.
pub fn notes(unpooled: &[String], truncated: usize, samples: usize, max_length: usize) -> Vec<String> {
    let mut notes = Vec::new();
    if truncated > 0 {
        notes.push(format!(
            "{truncated} of {samples} samples given as `input_ids` were longer than {max_length} tokens and were cut to it"
        ));
    }
    if !unpooled.is_empty() {
        let names: Vec<String> = unpooled.iter().map(|l| format!("`{l}`")).collect();
        notes.push(format!(
            "not pooled (no single token axis of float values to reduce), kept whole: {}",
            names.join(", ")
        ));
    }
    notes
}

/// ` in 1.2 s (300 samples/s, 5000 tokens/s; 12% of positions were padding; forwards 1.0 s)`.
pub fn rates(stats: &Stats, start: Instant) -> String {
    let seconds = start.elapsed().as_secs_f64();
    format!(
        " in {seconds:.1} s ({:.0} samples/s, {:.0} tokens/s; {:.0}% of positions were padding; forwards {:.1} s)",
        stats.samples as f64 / seconds,
        stats.tokens as f64 / seconds,
        100.0 * (1.0 - stats.tokens as f64 / stats.positions.max(1) as f64),
        stats.forward_time.as_secs_f64()
    )
}

/// `hooks merge OUT IN...`.
pub fn merge(out: &Path, inputs: &[PathBuf]) -> Result<(), CliError> {
    hooks::merge_datasets(out, inputs)?;
    let manifest = hooks::read_manifest(out)?;
    out!(
        "merged {} shards: {} samples, {} tokens -> {}",
        inputs.len(),
        manifest.samples,
        manifest.done.tokens,
        out.display()
    )?;
    Ok(())
}
