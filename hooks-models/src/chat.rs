//! Chat templates: a folder's Jinja template (`tokenizer_config.json`'s `chat_template`, or
//! `chat_template.jinja`) rendered as transformers' `apply_chat_template` renders it, with
//! MiniJinja (the engine Rust LLM servers use) and its Python-compatible string methods.
//!
//! As transformers does: `trim_blocks` and `lstrip_blocks` on, the special tokens of
//! `tokenizer_config.json` (`bos_token`, `eos_token`, ...) and `raise_exception` in scope, and
//! the rendered text tokenized with no special token added ([`Tokenizer::encode_plain`]).

use std::path::{Path, PathBuf};

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, Error as JinjaError, ErrorKind};
use serde_json::Value;

use crate::error::{ModelError, Result};
use crate::tokenizer::Tokenizer;

/// A folder's chat template and the special tokens it may name.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    /// `bos_token`, `eos_token`, `unk_token`, `pad_token`, ... as `tokenizer_config.json` names
    /// them.
    tokens: serde_json::Map<String, Value>,
    path: PathBuf,
}

/// The keys of `tokenizer_config.json` that name special tokens a template may print.
const SPECIAL_TOKENS: [&str; 6] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "pad_token",
    "sep_token",
    "cls_token",
];

impl ChatTemplate {
    /// The template of the model in `dir`: `chat_template.jinja` when present, else
    /// `tokenizer_config.json`'s `chat_template` (a string, or the one named `default` of a list
    /// of `{name, template}`).
    ///
    /// # Errors
    ///
    /// [`ModelError::MissingFile`] when the folder has no template; [`ModelError::BadConfig`]
    /// for a `tokenizer_config.json` that is not JSON or whose template is neither form.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<ChatTemplate> {
        let dir = dir.as_ref();
        let config_path = dir.join("tokenizer_config.json");
        let config: serde_json::Map<String, Value> = match std::fs::read_to_string(&config_path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| ModelError::BadConfig {
                path: Some(config_path.clone()),
                reason: e.to_string(),
            })?,
            Err(_) => serde_json::Map::new(),
        };
        let tokens = SPECIAL_TOKENS
            .iter()
            .filter_map(|&key| {
                let token = match config.get(key)? {
                    Value::String(s) => s.clone(),
                    // An `AddedToken` written out: `{"content": "<s>", ...}`.
                    Value::Object(o) => o.get("content")?.as_str()?.to_owned(),
                    _ => return None,
                };
                Some((key.to_owned(), Value::String(token)))
            })
            .collect();
        let jinja = dir.join("chat_template.jinja");
        if let Ok(source) = std::fs::read_to_string(&jinja) {
            return Ok(ChatTemplate {
                source,
                tokens,
                path: jinja,
            });
        }
        let bad = |reason: &str| ModelError::BadConfig {
            path: Some(config_path.clone()),
            reason: reason.to_owned(),
        };
        let source = match config.get("chat_template") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(named)) => named
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template")?.as_str())
                .ok_or_else(|| bad("`chat_template` is a list with no template named `default`"))?
                .to_owned(),
            Some(_) => return Err(bad("`chat_template` is neither a string nor a list of named templates")),
            None => {
                return Err(ModelError::MissingFile {
                    path: jinja,
                    hint: "the folder has no chat template (`chat_template.jinja`, or `chat_template` in `tokenizer_config.json`); give plain prompts without --chat",
                })
            }
        };
        Ok(ChatTemplate {
            source,
            tokens,
            path: config_path,
        })
    }

    /// The text of `messages` (`[{"role": ..., "content": ...}, ...]`) followed by the prompt of
    /// the assistant's turn (`add_generation_prompt=True`).
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidInput`] naming the template when it fails to render, or calls
    /// `raise_exception` (an unsupported role order, say), with its message.
    pub fn render(&self, messages: &Value) -> Result<String> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| ModelError::InvalidInput {
                reason: format!("the chat template's syntax: {e}"),
            })?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<String, JinjaError> {
                Err(JinjaError::new(ErrorKind::InvalidOperation, message))
            },
        );
        let mut context = self.tokens.clone();
        context.insert("messages".into(), messages.clone());
        context.insert("add_generation_prompt".into(), Value::Bool(true));
        env.render_str(&self.source, minijinja::value::Serde(Value::Object(context)))
            .map_err(|e| ModelError::InvalidInput {
                reason: format!("the chat template of `{}` fails: {e:#}", self.path.display()),
            })
    }

    /// The prompt ids of `messages`: [`render`](Self::render), then the tokenizer with no
    /// special token added, as `apply_chat_template(messages, add_generation_prompt=True,
    /// tokenize=True)`.
    ///
    /// # Errors
    ///
    /// As [`render`](Self::render) and [`Tokenizer::encode_plain`].
    pub fn encode(&self, messages: &Value, tokenizer: &Tokenizer) -> Result<Vec<i64>> {
        tokenizer.encode_plain(&self.render(messages)?)
    }
}
