//! Reading a checkpoint's safetensors and copying it into a model's variables, by name.
//!
//! A model is first built with placeholder values in a `VarStore` whose variable names are the
//! checkpoint's names (`encoder.layer.0.attention.self.query.weight`); then every variable is
//! filled from the checkpoint, checking names and shapes. A tensor left over inside the model's
//! modules (a layer or bias the config does not have) is an error; buffers older checkpoints store
//! (`embeddings.position_ids`) and other classes' heads (`cls.` of a `...ForMaskedLM` checkpoint)
//! are ignored, as transformers ignores them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use tch::{nn, Kind, Tensor};

use crate::error::{ModelError, Result};

const SINGLE: &str = "model.safetensors";
const INDEX: &str = "model.safetensors.index.json";

/// The tensors of a checkpoint, by stored name.
pub(crate) struct Checkpoint {
    /// The file (or, for sharded weights, the folder) the tensors came from, for messages.
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
}

impl Checkpoint {
    /// Reads `<dir>/model.safetensors`, or every shard listed in `model.safetensors.index.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let single = dir.join(SINGLE);
        if single.is_file() {
            return Ok(Checkpoint {
                tensors: read_file(&single)?,
                path: single,
            });
        }
        let index = dir.join(INDEX);
        if index.is_file() {
            let mut tensors = HashMap::new();
            for shard in shards(&index)? {
                tensors.extend(read_file(&dir.join(shard))?);
            }
            return Ok(Checkpoint {
                path: dir.to_path_buf(),
                tensors,
            });
        }
        let hint = if dir.join("pytorch_model.bin").is_file() {
            "only safetensors weights are read; convert `pytorch_model.bin` with `save_pretrained(dir, safe_serialization=True)`"
        } else {
            "a model folder needs the `model.safetensors` that `save_pretrained` writes"
        };
        Err(ModelError::MissingFile { path: single, hint })
    }

    /// Whether the checkpoint holds `name`, with or without `prefix`.
    pub fn contains(&self, name: &str, prefix: &str) -> bool {
        self.tensors.contains_key(name) || self.tensors.contains_key(&format!("{prefix}{name}"))
    }

    /// Before a model of the config's sizes is allocated: the stored `name` (with or without
    /// `prefix`) must have the `expected` shape that `settings` give it. A size that disagrees
    /// with the weights is then an error naming the settings and the tensor, rather than an
    /// allocation sized by the config alone.
    ///
    /// # Errors
    ///
    /// [`ModelError::MissingWeight`] when it is not stored, [`ModelError::ConfigMismatch`].
    pub fn expect_shape(&self, name: &str, prefix: &str, expected: &[i64], settings: &str) -> Result<()> {
        let found = self
            .tensors
            .get(&format!("{prefix}{name}"))
            .map(|t| (format!("{prefix}{name}"), t))
            .or_else(|| self.tensors.get(name).map(|t| (name.to_owned(), t)));
        match found {
            None => Err(ModelError::MissingWeight {
                path: self.path.clone(),
                name: format!("{prefix}{name}"),
                expected: expected.to_vec(),
            }),
            Some((stored, t)) if t.size() != expected => Err(ModelError::ConfigMismatch {
                path: self.path.clone(),
                reason: format!(
                    "{settings} give `{stored}` the shape {expected:?}, but it is stored as {:?}",
                    t.size()
                ),
            }),
            Some(_) => Ok(()),
        }
    }

    /// Before allocation: the checkpoint must store at least `count` blocks `{stack}.{i}.`
    /// (with or without `prefix`), as the config's `setting` says.
    ///
    /// # Errors
    ///
    /// [`ModelError::ConfigMismatch`].
    pub fn expect_blocks(&self, stack: &str, prefix: &str, count: usize, setting: &str) -> Result<()> {
        let index = |key: &str| {
            let rest = key
                .strip_prefix(prefix)
                .unwrap_or(key)
                .strip_prefix(stack)?
                .strip_prefix('.')?;
            rest.split('.').next()?.parse::<usize>().ok()
        };
        let stored = self.tensors.keys().filter_map(|k| index(k)).max().map_or(0, |i| i + 1);
        if stored < count {
            return Err(ModelError::ConfigMismatch {
                path: self.path.clone(),
                reason: format!("{setting} is {count}, but the weights hold {stored} blocks `{prefix}{stack}.N`"),
            });
        }
        Ok(())
    }

    /// Whether the checkpoint stores both `a` and `b` (each with or without `prefix`) with
    /// different values: a head stored apart from the embedding it is said to be tied to.
    pub fn differ(&self, a: &str, b: &str, prefix: &str) -> bool {
        let get = |name: &str| {
            self.tensors
                .get(name)
                .or_else(|| self.tensors.get(&format!("{prefix}{name}")))
        };
        match (get(a), get(b)) {
            (Some(x), Some(y)) => x.size() != y.size() || !x.equal(y),
            _ => false,
        }
    }

    /// Fills every variable of `vs` from the checkpoint's tensor of that name, converting to the
    /// variable's kind and device. Names are matched as transformers matches them when it loads:
    /// with or without the base model's `prefix` (`bert.` in a `BertFor...` checkpoint; `model.`
    /// missing from a decoder saved as its base model), and with the legacy LayerNorm names
    /// `gamma` and `beta` for `weight` and `bias`.
    pub fn load_into(&self, vs: &mut nn::VarStore, prefix: &str) -> Result<()> {
        self.load_renamed(vs, prefix, &[])
    }

    /// [`load_into`](Self::load_into), where a variable named as the first of a pair of
    /// `renames` may also be stored under the second (GPT-NeoX's `lm_head.weight`, which its
    /// checkpoints store as `embed_out.weight`).
    pub fn load_renamed(&self, vs: &mut nn::VarStore, prefix: &str, renames: &[(&str, &str)]) -> Result<()> {
        let _no_grad = tch::no_grad_guard();
        let (mut used, mut ours) = (HashSet::new(), Vec::new());
        let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        // Sorted, so that the first error reported does not depend on hash order.
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, variable) in variables {
            let renamed = renames
                .iter()
                .filter(|(ours, _)| *ours == name)
                .map(|(_, stored)| (*stored).to_owned());
            let found = stored_names(&name, prefix)
                .into_iter()
                .chain(renamed)
                .find_map(|candidate| self.tensors.get(&candidate).map(|t| (candidate, t)));
            if let Some((stored_name, _)) = &found {
                used.insert(stored_name.clone());
            }
            ours.push(name.clone());
            let Some((stored_name, stored)) = found else {
                return Err(ModelError::MissingWeight {
                    path: self.path.clone(),
                    name,
                    expected: variable.size(),
                });
            };
            if stored.size() != variable.size() {
                return Err(ModelError::WeightShape {
                    path: self.path.clone(),
                    name: stored_name,
                    expected: variable.size(),
                    found: stored.size(),
                });
            }
            if !is_float(stored.kind()) {
                return Err(ModelError::BadWeights {
                    path: self.path.clone(),
                    reason: format!(
                        "`{stored_name}` has dtype {:?}, but weights must be floating point",
                        stored.kind()
                    ),
                });
            }
            let mut variable = variable;
            variable.f_copy_(stored)?;
        }
        self.check_unexpected(&ours, prefix, &used)?;
        vs.freeze();
        Ok(())
    }

    /// A stored tensor left unused that belongs inside the model (under one of its modules:
    /// a fifth layer where the config says four, a bias where it says none) means the weights and
    /// `config.json` disagree, as a missing one does. Unused tensors elsewhere are another class's
    /// (`cls.`, `score.`, a tied `lm_head.`) and are ignored, as transformers ignores them; so are
    /// the buffers older checkpoints store (`position_ids`, `inv_freq`, GPT-2's and GPT-NeoX's
    /// causal masks `attn.bias`, `masked_bias`).
    fn check_unexpected(&self, ours: &[String], prefix: &str, used: &HashSet<String>) -> Result<()> {
        let modules: HashSet<&str> = ours.iter().flat_map(|name| ancestors(name)).collect();
        // The prefix's own module (`model`) holds every other class's head too.
        let root = prefix.trim_end_matches('.');
        let mut unexpected: Vec<&String> = self
            .tensors
            .keys()
            .filter(|stored| !used.contains(*stored) && !is_buffer(stored))
            .filter(|stored| {
                stored_names(stored, prefix)
                    .iter()
                    .any(|candidate| ancestors(candidate).any(|m| m != root && modules.contains(m)))
            })
            .collect();
        unexpected.sort();
        match unexpected.first() {
            Some(name) => Err(ModelError::UnexpectedWeight {
                path: self.path.clone(),
                name: (*name).clone(),
            }),
            None => Ok(()),
        }
    }
}

/// The module paths above a parameter name, nearest last: `a.b.weight` → `a`, `a.b`.
fn ancestors(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices('.').map(move |(i, _)| &name[..i])
}

/// Buffers older checkpoints store beside the parameters; transformers skips them at load.
fn is_buffer(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    matches!(last, "position_ids" | "inv_freq" | "masked_bias")
        || name.ends_with(".attn.bias")
        || name.ends_with(".attention.bias")
}

/// The names a checkpoint may store the variable `name` under, in the order they are tried:
/// itself, with the base model's `prefix` added or removed, and each of those with a LayerNorm's
/// legacy `gamma`/`beta` for `weight`/`bias`.
fn stored_names(name: &str, prefix: &str) -> Vec<String> {
    let mut names = vec![name.to_owned()];
    if !prefix.is_empty() {
        match name.strip_prefix(prefix) {
            Some(base) => names.push(base.to_owned()),
            None => names.push(format!("{prefix}{name}")),
        }
    }
    let legacy: Vec<String> = names
        .iter()
        .filter(|n| n.contains("LayerNorm."))
        .filter_map(|n| {
            n.strip_suffix(".weight")
                .map(|stem| format!("{stem}.gamma"))
                .or_else(|| n.strip_suffix(".bias").map(|stem| format!("{stem}.beta")))
        })
        .collect();
    names.extend(legacy);
    names
}

fn is_float(kind: Kind) -> bool {
    matches!(kind, Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16)
}

pub(crate) fn read_file(path: &Path) -> Result<HashMap<String, Tensor>> {
    if !path.is_file() {
        return Err(ModelError::MissingFile {
            path: path.to_path_buf(),
            hint: "a shard listed in `model.safetensors.index.json` is absent; copy the whole model folder",
        });
    }
    let bad = |reason: String| ModelError::BadWeights {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(reason) = cut_short(path) {
        return Err(bad(reason));
    }
    let tensors = Tensor::read_safetensors(path).map_err(|e| bad(e.to_string()))?;
    Ok(tensors.into_iter().collect())
}

/// Whether a safetensors file holds fewer bytes than its header describes (an interrupted
/// download or copy), said plainly; `None` when it does not, or when the header cannot be read
/// (the reader then says why).
fn cut_short(path: &Path) -> Option<String> {
    use std::io::Read as _;
    let mut file = fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let mut size = [0u8; 8];
    file.read_exact(&mut size).ok()?;
    let header_len = u64::from_le_bytes(size);
    let short = |needed: u64| {
        format!("the file is cut short ({len} bytes of the {needed} its header describes; an interrupted download or copy?)")
    };
    if header_len > len.saturating_sub(8) {
        // A header longer than the file: cut inside the header, or not safetensors at all.
        return (header_len < 100 << 20).then(|| short(8 + header_len));
    }
    let mut header = vec![0u8; usize::try_from(header_len).ok()?];
    file.read_exact(&mut header).ok()?;
    let header: serde_json::Value = serde_json::from_slice(&header).ok()?;
    let end = header
        .as_object()?
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .filter_map(|(_, info)| info.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    let needed = 8 + header_len + end;
    (needed > len).then(|| short(needed))
}

/// The shard files named by a `model.safetensors.index.json`, each once.
fn shards(index: &Path) -> Result<BTreeSet<String>> {
    let bad = |reason: String| ModelError::BadWeights {
        path: index.to_path_buf(),
        reason,
    };
    let text = fs::read_to_string(index).map_err(|source| ModelError::Io {
        path: index.to_path_buf(),
        source,
    })?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON ({e})")))?;
    let map = json
        .get("weight_map")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| bad("no `weight_map` object".into()))?;
    map.values()
        .map(|file| {
            file.as_str()
                .filter(|f| !f.contains('/') && !f.contains('\\'))
                .map(str::to_owned)
                .ok_or_else(|| bad(format!("`weight_map` entry {file} is not a file name")))
        })
        .collect()
}
