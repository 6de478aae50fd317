//! `config.json`: the architecture hyper-parameters, read the way transformers reads them.
//!
//! A field that `config.json` leaves out takes transformers' default for that architecture, so a
//! minimal config loads here exactly when it loads there.

use std::fs;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::activation::Activation;
use crate::error::{ModelError, Result};

/// The hyper-parameters of a BERT encoder (transformers' `BertConfig`; only what the forward
/// pass of `BertModel` reads).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct BertConfig {
    /// Rows of `embeddings.word_embeddings`.
    #[serde(default = "bert::vocab_size")]
    pub vocab_size: i64,
    /// Width of every hidden state.
    #[serde(default = "bert::hidden_size")]
    pub hidden_size: i64,
    /// Entries of `encoder.layer`.
    #[serde(default = "bert::num_hidden_layers")]
    pub num_hidden_layers: usize,
    /// Attention heads per layer; divides `hidden_size`.
    #[serde(default = "bert::num_attention_heads")]
    pub num_attention_heads: i64,
    /// Width of `intermediate.dense`.
    #[serde(default = "bert::intermediate_size")]
    pub intermediate_size: i64,
    /// The activation after `intermediate.dense`, by transformers' name (`gelu`, ...).
    #[serde(default = "bert::hidden_act")]
    pub hidden_act: String,
    /// Rows of `embeddings.position_embeddings`: the longest input.
    #[serde(default = "bert::max_position_embeddings")]
    pub max_position_embeddings: i64,
    /// Rows of `embeddings.token_type_embeddings`.
    #[serde(default = "bert::type_vocab_size")]
    pub type_vocab_size: i64,
    /// Epsilon of every LayerNorm.
    #[serde(default = "bert::layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Only `absolute` (learned position embeddings) is implemented.
    #[serde(default = "bert::position_embedding_type")]
    pub position_embedding_type: String,
    /// A decoder BERT (causal attention) is not implemented.
    #[serde(default)]
    pub is_decoder: bool,
    /// Cross-attention layers are not implemented.
    #[serde(default)]
    pub add_cross_attention: bool,
}

/// The hyper-parameters of a GPT-2 decoder (transformers' `GPT2Config`; only what the forward
/// pass of `GPT2Model` reads). transformers' generic names (`hidden_size`, ...) are accepted too.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Gpt2Config {
    /// Rows of `wte`.
    #[serde(default = "gpt2::vocab_size")]
    pub vocab_size: i64,
    /// Rows of `wpe`: the longest input.
    #[serde(default = "gpt2::n_positions", alias = "max_position_embeddings")]
    pub n_positions: i64,
    /// Width of every hidden state.
    #[serde(default = "gpt2::n_embd", alias = "hidden_size")]
    pub n_embd: i64,
    /// Entries of `h`.
    #[serde(default = "gpt2::n_layer", alias = "num_hidden_layers")]
    pub n_layer: usize,
    /// Attention heads per block; divides `n_embd`.
    #[serde(default = "gpt2::n_head", alias = "num_attention_heads")]
    pub n_head: i64,
    /// Width of `mlp.c_fc`; `None` means `4 * n_embd`.
    #[serde(default)]
    pub n_inner: Option<i64>,
    /// The activation inside the MLP, by transformers' name (`gelu_new`, ...).
    #[serde(default = "gpt2::activation_function")]
    pub activation_function: String,
    /// Epsilon of every LayerNorm.
    #[serde(default = "gpt2::layer_norm_epsilon")]
    pub layer_norm_epsilon: f64,
    /// Whether attention scores are divided by `sqrt(head_dim)`.
    #[serde(default = "gpt2::scale_attn_weights")]
    pub scale_attn_weights: bool,
    /// Whether block `i`'s attention scores are also divided by `i + 1`.
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Cross-attention layers are not implemented.
    #[serde(default)]
    pub add_cross_attention: bool,
}

/// transformers' `BertConfig` defaults.
mod bert {
    pub fn vocab_size() -> i64 {
        30522
    }
    pub fn hidden_size() -> i64 {
        768
    }
    pub fn num_hidden_layers() -> usize {
        12
    }
    pub fn num_attention_heads() -> i64 {
        12
    }
    pub fn intermediate_size() -> i64 {
        3072
    }
    pub fn hidden_act() -> String {
        "gelu".into()
    }
    pub fn max_position_embeddings() -> i64 {
        512
    }
    pub fn type_vocab_size() -> i64 {
        2
    }
    pub fn layer_norm_eps() -> f64 {
        1e-12
    }
    pub fn position_embedding_type() -> String {
        "absolute".into()
    }
}

/// transformers' `GPT2Config` defaults.
mod gpt2 {
    pub fn vocab_size() -> i64 {
        50257
    }
    pub fn n_positions() -> i64 {
        1024
    }
    pub fn n_embd() -> i64 {
        768
    }
    pub fn n_layer() -> usize {
        12
    }
    pub fn n_head() -> i64 {
        12
    }
    pub fn activation_function() -> String {
        "gelu_new".into()
    }
    pub fn layer_norm_epsilon() -> f64 {
        1e-5
    }
    pub fn scale_attn_weights() -> bool {
        true
    }
}

/// A parsed `config.json`: its `model_type` and the raw JSON, for the architecture to read.
pub(crate) struct ConfigFile {
    pub path: PathBuf,
    pub model_type: String,
    json: serde_json::Value,
}

impl ConfigFile {
    /// Reads `<dir>/config.json`.
    pub fn read(dir: &Path) -> Result<Self> {
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
            path: path.clone(),
            reason: format!("not JSON ({e})"),
        })?;
        let model_type = match json.get("model_type") {
            Some(serde_json::Value::String(t)) => t.clone(),
            _ => String::new(),
        };
        Ok(ConfigFile { path, model_type, json })
    }

    /// The config as an architecture's config struct.
    pub fn parse<C: DeserializeOwned>(&self) -> Result<C> {
        serde_path_to_error::deserialize(&self.json).map_err(|e| ModelError::BadConfig {
            path: self.path.clone(),
            reason: format!("`{}`: {}", e.path(), e.inner()),
        })
    }

    fn unsupported(&self, setting: String, hint: impl Into<String>) -> ModelError {
        ModelError::UnsupportedConfig {
            path: self.path.clone(),
            setting,
            hint: hint.into(),
        }
    }

    fn positive(&self, name: &str, value: i64) -> Result<()> {
        if value > 0 {
            Ok(())
        } else {
            Err(ModelError::BadConfig {
                path: self.path.clone(),
                reason: format!("`{name}` is {value}, but it must be at least 1"),
            })
        }
    }

    fn heads_divide(&self, width: (&str, i64), heads: (&str, i64)) -> Result<()> {
        if width.1 % heads.1 == 0 {
            Ok(())
        } else {
            Err(ModelError::BadConfig {
                path: self.path.clone(),
                reason: format!(
                    "`{}` ({}) is not a multiple of `{}` ({})",
                    width.0, width.1, heads.0, heads.1
                ),
            })
        }
    }

    fn activation(&self, field: &str, name: &str) -> Result<Activation> {
        Activation::from_name(name).ok_or_else(|| {
            self.unsupported(
                format!("`{field}` is `{name}`"),
                format!(
                    "supported activations: {}",
                    Activation::NAMES.map(|n| format!("`{n}`")).join(", ")
                ),
            )
        })
    }

    /// The BERT config, checked, with its activation.
    pub fn bert(&self) -> Result<(BertConfig, Activation)> {
        let c: BertConfig = self.parse()?;
        if c.position_embedding_type != "absolute" {
            return Err(self.unsupported(
                format!("`position_embedding_type` is `{}`", c.position_embedding_type),
                "only `absolute` position embeddings are implemented",
            ));
        }
        if c.is_decoder || c.add_cross_attention {
            return Err(self.unsupported(
                "`is_decoder` or `add_cross_attention` is true".into(),
                "only the encoder BERT (`BertModel` as an encoder) is implemented",
            ));
        }
        for (name, value) in [
            ("vocab_size", c.vocab_size),
            ("hidden_size", c.hidden_size),
            ("num_attention_heads", c.num_attention_heads),
            ("intermediate_size", c.intermediate_size),
            ("max_position_embeddings", c.max_position_embeddings),
            ("type_vocab_size", c.type_vocab_size),
        ] {
            self.positive(name, value)?;
        }
        self.heads_divide(
            ("hidden_size", c.hidden_size),
            ("num_attention_heads", c.num_attention_heads),
        )?;
        let act = self.activation("hidden_act", &c.hidden_act)?;
        Ok((c, act))
    }

    /// The GPT-2 config, checked, with its activation.
    pub fn gpt2(&self) -> Result<(Gpt2Config, Activation)> {
        let c: Gpt2Config = self.parse()?;
        if c.add_cross_attention {
            return Err(self.unsupported(
                "`add_cross_attention` is true".into(),
                "only the decoder-only GPT-2 (`GPT2Model`) is implemented",
            ));
        }
        for (name, value) in [
            ("vocab_size", c.vocab_size),
            ("n_positions", c.n_positions),
            ("n_embd", c.n_embd),
            ("n_head", c.n_head),
            ("n_inner", c.n_inner.unwrap_or(1)),
        ] {
            self.positive(name, value)?;
        }
        self.heads_divide(("n_embd", c.n_embd), ("n_head", c.n_head))?;
        let act = self.activation("activation_function", &c.activation_function)?;
        Ok((c, act))
    }
}
