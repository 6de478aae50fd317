//! [`Tokenizer`]: a model folder's `tokenizer.json`, batching the way transformers'
//! `tokenizer(texts, padding=True, truncation=True, max_length=n)` does.

use std::fs;
use std::path::{Path, PathBuf};

use tch::Tensor;
use tokenizers::{PostProcessor, TruncationDirection};

use crate::error::{ModelError, Result};

/// The fast tokenizer of a Hugging Face model folder (`tokenizer.json`), producing the `[B, T]`
/// batches that [`TextModel::forward`](crate::TextModel::forward) takes.
///
/// ```no_run
/// use hooks_models::Tokenizer;
///
/// let tokenizer = Tokenizer::from_dir("all-MiniLM-L6-v2")?;
/// let (input_ids, attention_mask) = tokenizer.encode_batch(&["Hello, world!", "Hi"], 128)?;
/// assert_eq!(input_ids.size(), [2, 6]); // [CLS] hello , world ! [SEP]; "hi" is padded
/// # Ok::<(), hooks_models::ModelError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Tokenizer {
    /// With its own truncation and padding settings removed: `encode_batch` applies them.
    inner: tokenizers::Tokenizer,
    pad_id: u32,
    path: PathBuf,
}

impl Tokenizer {
    /// Loads `<dir>/tokenizer.json`. The padding id is `tokenizer.json`'s own, else the id of
    /// the `pad_token` named in `tokenizer_config.json` or `special_tokens_map.json`, else `0`
    /// (GPT-2 has no padding token; padded positions are masked, so the id does not matter).
    ///
    /// # Errors
    ///
    /// [`ModelError::MissingFolder`], [`ModelError::MissingFile`] when there is no
    /// `tokenizer.json` (only fast tokenizers are supported), [`ModelError::Tokenizer`] when it
    /// does not parse.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Tokenizer> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(ModelError::MissingFolder {
                path: dir.to_path_buf(),
            });
        }
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(ModelError::MissingFile {
                path,
                hint: "the tokenizer needs the `tokenizer.json` of a fast tokenizer; save one with `AutoTokenizer.from_pretrained(...).save_pretrained(dir)`",
            });
        }
        let mut inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| ModelError::Tokenizer {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let configured_pad = inner.get_padding().map(|p| p.pad_id);
        let pad_id = configured_pad
            .or_else(|| named_pad_token(dir).and_then(|token| inner.token_to_id(&token)))
            .unwrap_or(0);
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| ModelError::Tokenizer {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(Tokenizer { inner, pad_id, path })
    }

    /// The id written at padding positions.
    #[must_use]
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The vocabulary's token for each id (`[CLS]`, `cat`, `##s`, `Ġthe`), as transformers'
    /// `convert_ids_to_tokens` gives them; `None` for an id outside the vocabulary. For labels
    /// (the axis of a patching plot), not for turning ids back into text.
    #[must_use]
    pub fn tokens(&self, ids: &[i64]) -> Vec<Option<String>> {
        ids.iter()
            .map(|&id| u32::try_from(id).ok().and_then(|id| self.inner.id_to_token(id)))
            .collect()
    }

    /// The text of `ids`, as transformers' `tokenizer.decode(ids, skip_special_tokens=True)`
    /// gives it: special tokens (`</s>`, `<|endoftext|>`) left out; an id outside the vocabulary
    /// is an error.
    ///
    /// # Errors
    ///
    /// [`ModelError::Tokenizer`] when the ids cannot be decoded.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let ids: Vec<u32> = ids.iter().map(|&id| u32::try_from(id).unwrap_or(u32::MAX)).collect();
        self.inner.decode(&ids, true).map_err(|e| ModelError::Tokenizer {
            path: self.path.clone(),
            reason: format!("cannot decode: {e}"),
        })
    }

    /// Tokenizes `texts` into `(input_ids, attention_mask)`, both `Int64` `[B, T]` on the CPU:
    /// special tokens added as the tokenizer's post-processor adds them (`[CLS] ... [SEP]` for
    /// BERT), each row cut to `max_length` tokens counting those, then right-padded to the
    /// longest row with mask `0`. These are the ids and mask of transformers'
    /// `tokenizer(texts, padding=True, truncation=True, max_length=max_length)`.
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidInput`] for no texts, or a `max_length` too short to hold the special
    /// tokens and one more; [`ModelError::Tokenizer`] when a text cannot be encoded.
    pub fn encode_batch(&self, texts: &[&str], max_length: usize) -> Result<(Tensor, Tensor)> {
        let (rows, _) = self.encode_each(texts, max_length)?;
        let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len() * longest);
        let mut mask = Vec::with_capacity(rows.len() * longest);
        for row in &rows {
            let pad = longest - row.len();
            ids.extend_from_slice(row);
            ids.extend(std::iter::repeat_n(i64::from(self.pad_id), pad));
            mask.extend(std::iter::repeat_n(1i64, row.len()));
            mask.extend(std::iter::repeat_n(0i64, pad));
        }
        let shape = [
            i64::try_from(rows.len()).unwrap_or(i64::MAX),
            i64::try_from(longest).unwrap_or(i64::MAX),
        ];
        Ok((
            Tensor::f_from_slice(&ids)?.f_view(shape)?,
            Tensor::f_from_slice(&mask)?.f_view(shape)?,
        ))
    }

    /// The ids of `text` with no special token added (what transformers' chat templates are
    /// tokenized with: the template writes its own), uncut.
    ///
    /// # Errors
    ///
    /// [`ModelError::Tokenizer`] when the text cannot be encoded.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<i64>> {
        let encoding = self.inner.encode(text, false).map_err(|e| ModelError::Tokenizer {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        Ok(encoding.get_ids().iter().map(|&id| i64::from(id)).collect())
    }

    /// Each text's ids, unpadded, tokenized and cut to `max_length` as
    /// [`encode_batch`](Self::encode_batch) does; and how many texts were longer and were cut.
    ///
    /// # Errors
    ///
    /// As [`encode_batch`](Self::encode_batch).
    pub fn encode_each(&self, texts: &[&str], max_length: usize) -> Result<(Vec<Vec<i64>>, usize)> {
        if texts.is_empty() {
            return Err(ModelError::InvalidInput {
                reason: "no texts to tokenize; pass at least one".into(),
            });
        }
        let specials = self.inner.get_post_processor().map_or(0, |p| p.added_tokens(false));
        if max_length <= specials {
            return Err(ModelError::InvalidInput {
                reason: format!(
                    "`max_length` {max_length} leaves no room for text after the {specials} special tokens; pass at least {}",
                    specials + 1
                ),
            });
        }
        let failed = |e: tokenizers::Error| ModelError::Tokenizer {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let mut rows = Vec::with_capacity(texts.len());
        let mut cut = 0;
        for text in texts {
            // What `encode` does with truncation set, step by step: truncate the text's tokens
            // so that they and the special tokens fit, then add the special tokens.
            let mut encoding = self.inner.encode(*text, false).map_err(failed)?;
            cut += usize::from(encoding.len() > max_length - specials);
            encoding.truncate(max_length - specials, 0, TruncationDirection::Right);
            let encoding = self.inner.post_process(encoding, None, true).map_err(failed)?;
            rows.push(encoding.get_ids().iter().map(|&id| i64::from(id)).collect::<Vec<_>>());
        }
        Ok((rows, cut))
    }
}

/// The `pad_token` that `tokenizer_config.json` or `special_tokens_map.json` names, if any: a
/// string, or an object with a `content` string.
fn named_pad_token(dir: &Path) -> Option<String> {
    ["tokenizer_config.json", "special_tokens_map.json"]
        .iter()
        .find_map(|file| {
            let text = fs::read_to_string(dir.join(file)).ok()?;
            let json: serde_json::Value = serde_json::from_str(&text).ok()?;
            match json.get("pad_token")? {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_owned),
                _ => None,
            }
        })
}
