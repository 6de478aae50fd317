//! `config.json`: reading it, and the checks every architecture's config shares.
//!
//! Each architecture's config struct lives in the architecture's own file, with `Default` giving
//! transformers' defaults; a field that `config.json` leaves out takes that default, so a minimal
//! config loads here exactly when it loads there.

use std::fs;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use tch::Kind;

use crate::activation::Activation;
use crate::error::{ModelError, Result};

/// A parsed `config.json`: its `model_type` and the raw JSON, for the architecture to read.
pub(crate) struct ConfigFile {
    pub path: PathBuf,
    pub model_type: String,
    json: serde_json::Value,
}

impl ConfigFile {
    /// Checks the folder and the kind a model is to be loaded in, then reads its `config.json`:
    /// the steps every load starts with.
    pub fn open(dir: &Path, kind: Kind) -> Result<Self> {
        if !dir.is_dir() {
            return Err(ModelError::MissingFolder {
                path: dir.to_path_buf(),
            });
        }
        check_kind(kind)?;
        Self::read(dir)
    }

    /// The config's `model_type` must be `expected`, for the `load` of one architecture.
    pub fn expect_model_type(&self, expected: &[&'static str]) -> Result<()> {
        if expected.contains(&self.model_type.as_str()) {
            Ok(())
        } else {
            Err(ModelError::UnsupportedModelType {
                path: self.path.clone(),
                found: self.model_type.clone(),
                supported: expected.to_vec(),
            })
        }
    }

    /// Reads `<dir>/config.json`.
    fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        if !path.is_file() {
            return Err(ModelError::MissingFile {
                path,
                hint: "a model folder needs the `config.json` that `save_pretrained` writes",
            });
        }
        let text = fs::read_to_string(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::BadConfig {
            path: Some(path.clone()),
            reason: format!("not JSON ({e})"),
        })?;
        let model_type = match json.get("model_type") {
            Some(serde_json::Value::String(t)) if !t.is_empty() => t.clone(),
            _ => {
                return Err(ModelError::BadConfig {
                    path: Some(path),
                    reason: "it has no `model_type`, the architecture's name that `save_pretrained` writes (`llama`, `bert`, ...); add it, or save the model with transformers again".into(),
                })
            }
        };
        Ok(ConfigFile { path, model_type, json })
    }

    /// `architectures`: the classes the checkpoint was saved from (`GPT2LMHeadModel`), or none.
    pub fn architectures(&self) -> Vec<&str> {
        self.json
            .get("architectures")
            .and_then(serde_json::Value::as_array)
            .map(|classes| classes.iter().filter_map(serde_json::Value::as_str).collect())
            .unwrap_or_default()
    }

    /// The config as an architecture's config struct, checked.
    pub fn config<C: ArchConfig>(&self) -> Result<C> {
        // An activation transformers has but this crate does not is an unsupported setting, not
        // an invalid file: say so before serde reads the name into an `Activation`.
        if let Some(name) = self.json.get(C::ACTIVATION_FIELD).and_then(serde_json::Value::as_str) {
            if Activation::from_name(name).is_none() {
                let supported: Vec<String> = Activation::NAMES.iter().map(|n| format!("`{n}`")).collect();
                return Err(ModelError::UnsupportedConfig {
                    path: Some(self.path.clone()),
                    setting: format!("`{}` is `{name}`", C::ACTIVATION_FIELD),
                    hint: format!("supported activations: {}", supported.join(", ")),
                });
            }
        }
        if let (Some(known), Some(object)) = (C::KNOWN_KEYS, self.json.as_object()) {
            let unknown = object.iter().find(|(key, value)| {
                !value.is_null() && !known.contains(&key.as_str()) && !HARMLESS_KEYS.contains(&key.as_str())
            });
            if let Some((key, _)) = unknown {
                return Err(ModelError::UnsupportedConfig {
                    path: Some(self.path.clone()),
                    setting: format!("`{key}` is set"),
                    hint: format!(
                        "hooks does not read `{key}` for `{}` and does not know it to be harmless, so the model might compute something else; remove the key if it does not apply",
                        self.model_type
                    ),
                });
            }
        }
        let config: C = serde_path_to_error::deserialize(&self.json).map_err(|e| ModelError::BadConfig {
            path: Some(self.path.clone()),
            reason: format!("`{}`: {}", e.path(), e.inner()),
        })?;
        config.check().map_err(|invalid| invalid.into_error(Some(&self.path)))?;
        Ok(config)
    }
}

/// An architecture's config struct: read from `config.json` with serde, then checked.
// `pub` in a private module: nameable in this crate only, and usable as a bound of the sealed
// trait behind `DecoderConfig`.
pub trait ArchConfig: DeserializeOwned {
    /// The field that names the activation function (`hidden_act`, `activation_function`).
    const ACTIVATION_FIELD: &'static str;

    /// Every key of `config.json` the architecture reads, or knows to change nothing it computes;
    /// any other key (not null) is refused, naming it. `None`: not checked (the architectures
    /// that predate the check).
    const KNOWN_KEYS: Option<&'static [&'static str]> = None;

    /// Whether the forward can run with these values.
    fn check(&self) -> std::result::Result<(), Invalid>;
}

/// Keys of `config.json` that change nothing a forward computes, whatever the architecture: the
/// file's bookkeeping, token ids, generation and training settings (dropouts are off in
/// inference).
const HARMLESS_KEYS: &[&str] = &[
    "_name_or_path",
    "architectures",
    "attention_dropout",
    "auto_map",
    "bos_token_id",
    "cache_implementation",
    "dtype",
    "embd_pdrop",
    "eos_token_id",
    "id2label",
    "initializer_range",
    "label2id",
    "model_type",
    "output_attentions",
    "output_hidden_states",
    "pad_token_id",
    "resid_pdrop",
    "return_dict",
    "tokenizer_class",
    "torch_dtype",
    "transformers_version",
    "use_cache",
];

/// Checks a config built in code (not read from a file) and the kind a model is built in.
pub(crate) fn check_in_code(config: &impl ArchConfig, kind: Kind) -> Result<()> {
    check_kind(kind)?;
    config.check().map_err(|invalid| invalid.into_error(None))
}

fn check_kind(kind: Kind) -> Result<()> {
    if matches!(kind, Kind::Float | Kind::Half | Kind::BFloat16) {
        Ok(())
    } else {
        Err(ModelError::UnsupportedKind { kind })
    }
}

/// What is wrong with a config, said before it is tied to the file it came from (if any).
#[derive(Debug)]
pub enum Invalid {
    /// A value out of its range.
    Value(String),
    /// A variant of the architecture that is not implemented.
    Unsupported {
        /// The setting and its value.
        setting: String,
        /// What is supported instead.
        hint: &'static str,
    },
}

impl Invalid {
    /// The error, naming the file the config came from (`None`: built in code).
    pub(crate) fn into_error(self, path: Option<&Path>) -> ModelError {
        let path = path.map(Path::to_path_buf);
        match self {
            Invalid::Value(reason) => ModelError::BadConfig { path, reason },
            Invalid::Unsupported { setting, hint } => ModelError::UnsupportedConfig {
                path,
                setting,
                hint: hint.to_owned(),
            },
        }
    }
}

/// `value` must be at least 1, and no larger than any real model's [`bound`]: checked before
/// anything is allocated, so that an absurd size is an error rather than an allocation that
/// aborts the process.
pub(crate) fn positive(name: &str, value: i64) -> std::result::Result<(), Invalid> {
    if value <= 0 {
        return Err(Invalid::Value(format!(
            "`{name}` is {value}, but it must be at least 1"
        )));
    }
    let max = bound(name);
    if value > max {
        return Err(Invalid::Value(format!(
            "`{name}` is {value}, beyond any model's (at most {max} here); it must describe the weights in this folder"
        )));
    }
    Ok(())
}

/// A count of layers: at least 1 (or 0, where `allow_zero`) and at most 4096.
pub(crate) fn layers(name: &str, value: usize) -> std::result::Result<(), Invalid> {
    let max = bound(name);
    if usize::try_from(max).is_ok_and(|max| value > max) {
        return Err(Invalid::Value(format!(
            "`{name}` is {value}, beyond any model's (at most {max} here); it must describe the weights in this folder"
        )));
    }
    Ok(())
}

/// The largest value a size setting takes here: well past every released model's (vocabularies
/// reach 262,144; hidden sizes 16,384; context lengths 10M), small enough that no single
/// dimension can ask for an allocation the machine cannot attempt.
fn bound(name: &str) -> i64 {
    match name {
        "vocab_size" => 1 << 25,
        "hidden_size" | "n_embd" => 1 << 17,
        "intermediate_size" | "n_inner" => 1 << 20,
        "num_attention_heads" | "num_key_value_heads" | "n_head" => 1 << 12,
        "head_dim" => 1 << 14,
        "num_hidden_layers" | "n_layer" => 1 << 12,
        "type_vocab_size" => 1 << 16,
        // Context lengths and windows allocate nothing in the rotary models; BERT's and GPT-2's
        // position tables are checked against their weights.
        _ => 1 << 27,
    }
}

/// The width must split evenly into heads.
pub(crate) fn heads_divide(width: (&str, i64), heads: (&str, i64)) -> std::result::Result<(), Invalid> {
    if width.1 % heads.1 == 0 {
        Ok(())
    } else {
        Err(Invalid::Value(format!(
            "`{}` ({}) is not a multiple of `{}` ({})",
            width.0, width.1, heads.0, heads.1
        )))
    }
}
