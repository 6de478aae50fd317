//! `hooks extract --ablate / --steer / --patch`: reading the interventions from the command line
//! and their files, and checking them against the model before anything is written.

use std::path::{Path, PathBuf};

use hooks::{ActivationStore, Extractor, Intervention, Item};
use hooks_models::TextModel;
use serde_json::json;
use tch::{Kind, Tensor};

use crate::error::CliError;

/// One `--patch LAYER=SRC.npz`.
struct Patch {
    layer: String,
    /// `[samples, tokens, ...]`, float32.
    source: Tensor,
    /// Each sample's token count in the source.
    lengths: Vec<i64>,
    path: PathBuf,
}

/// The interventions of one run.
#[derive(Default)]
pub struct Edits {
    /// `--ablate` and `--steer`, in the order given (ablations first).
    interventions: Vec<(String, Intervention)>,
    /// `--steer`: the layer and the vector's length, checked against the layer.
    steers: Vec<(String, i64, PathBuf)>,
    /// `--patch`.
    patches: Vec<Patch>,
    /// What a dataset folder records, so that a resume must use the same interventions.
    record: Vec<serde_json::Value>,
}

/// An intervention flag of the command line, in the order given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flag {
    /// `--ablate`.
    Ablate,
    /// `--steer`.
    Steer,
}

/// The order of the `--ablate` and `--steer` flags on the command line (clap keeps each flag's
/// values apart, so their interleaving is read from its indices).
pub fn order(matches: &clap::ArgMatches) -> Vec<Flag> {
    let Some((_, sub)) = matches.subcommand() else {
        return Vec::new();
    };
    let indices = |id: &str| -> Vec<usize> {
        match sub.try_get_raw(id) {
            Ok(Some(_)) => sub.indices_of(id).map(Iterator::collect).unwrap_or_default(),
            _ => Vec::new(),
        }
    };
    let mut flags: Vec<(usize, Flag)> = indices("ablate")
        .into_iter()
        .map(|i| (i, Flag::Ablate))
        .chain(indices("steer").into_iter().map(|i| (i, Flag::Steer)))
        .collect();
    flags.sort_unstable_by_key(|(i, _)| *i);
    flags.into_iter().map(|(_, flag)| flag).collect()
}

impl Edits {
    /// Reads `--ablate LAYER`, `--steer LAYER=VEC.npy@SCALE` and `--patch LAYER=SRC.npz`; the
    /// ablations and steerings apply in `order`, the order of their flags on the command line
    /// (ablations first when `order` does not cover them), patches after them.
    pub fn parse(ablate: &[String], steer: &[String], patch: &[String], order: &[Flag]) -> Result<Edits, CliError> {
        let mut edits = Edits::default();
        let covered = order.iter().filter(|f| **f == Flag::Ablate).count() == ablate.len()
            && order.iter().filter(|f| **f == Flag::Steer).count() == steer.len();
        let default: Vec<Flag> = std::iter::repeat_n(Flag::Ablate, ablate.len())
            .chain(std::iter::repeat_n(Flag::Steer, steer.len()))
            .collect();
        let (mut ablate, mut steer) = (ablate.iter(), steer.iter());
        for flag in if covered { order } else { &default } {
            match flag {
                Flag::Ablate => {
                    if let Some(layer) = ablate.next() {
                        edits.ablate(layer)?;
                    }
                }
                Flag::Steer => {
                    if let Some(spec) = steer.next() {
                        edits.steer(spec)?;
                    }
                }
            }
        }
        edits.patches(patch)?;
        Ok(edits)
    }

    fn ablate(&mut self, layer: &str) -> Result<(), CliError> {
        let layer = nonempty(layer, "--ablate", "LAYER")?;
        self.interventions.push((layer.to_owned(), Intervention::zero()));
        self.record.push(json!({"ablate": layer}));
        Ok(())
    }

    fn steer(&mut self, spec: &str) -> Result<(), CliError> {
        let usage = "LAYER=VEC.npy@SCALE";
        let (layer, rest) = split(spec, '=', "--steer", usage)?;
        let (file, scale) = rest.rsplit_once('@').ok_or_else(|| {
            CliError::Usage(format!(
                "invalid `--steer {spec}`: no `@SCALE`; write {usage}, like h.6=happy.npy@4"
            ))
        })?;
        let scale: f64 = scale
            .trim()
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite())
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "invalid `--steer {spec}`: the scale `{scale}` is not a finite number; write {usage}"
                ))
            })?;
        let path = PathBuf::from(file.trim());
        let vector = read_vector(&path)?;
        self.steers.push((layer.to_owned(), vector.size()[0], path.clone()));
        self.record
            .push(json!({"steer": layer, "scale": scale, "vector": file_record(&path)?}));
        self.interventions
            .push((layer.to_owned(), Intervention::add(vector, scale)));
        Ok(())
    }

    fn patches(&mut self, patch: &[String]) -> Result<(), CliError> {
        for spec in patch {
            let (layer, file) = split(spec, '=', "--patch", "LAYER=SRC.npz")?;
            if layer.contains('*') {
                return Err(CliError::Usage(format!(
                    "invalid `--patch {spec}`: a patch names one layer, not a pattern; give one --patch per layer"
                )));
            }
            if self.patches.iter().any(|p| p.layer == layer) {
                return Err(CliError::Usage(format!(
                    "`--patch {layer}=...` is given twice; give one source per layer"
                )));
            }
            let path = PathBuf::from(file.trim());
            let patch = read_patch(&path, layer)?;
            self.record.push(json!({"patch": layer, "source": file_record(&path)?}));
            self.patches.push(patch);
        }
        Ok(())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.interventions.is_empty() && self.patches.is_empty()
    }

    /// What a dataset folder's request records of them.
    pub fn record(&self) -> serde_json::Value {
        json!(self.record)
    }

    /// Checks everything that can fail against `model` and `items` before a file is written:
    /// the layers exist and fire, steering vectors have the layer's width, patches have one row
    /// per item with the item's length and the layer's shape past its token axis, and a patched
    /// layer has a batch axis unless each batch holds one item (`batch_size`). Runs a batch of the
    /// shortest item twice, without interventions.
    pub fn check(
        &self,
        model: &dyn TextModel,
        items: &[Item],
        max_length: usize,
        batch_size: usize,
    ) -> Result<(), CliError> {
        if self.is_empty() {
            return Ok(());
        }
        let lengths: Vec<usize> = items.iter().map(|i| i.ids().len().min(max_length)).collect();
        for patch in &self.patches {
            check_patch_rows(patch, &lengths)?;
        }
        let layers: Vec<&str> = self
            .interventions
            .iter()
            .map(|(l, _)| l.as_str())
            .chain(self.patches.iter().map(|p| p.layer.as_str()))
            .collect();
        // Unknown layers, globs that match nothing, observers: as the engine would bind them.
        drop(hooks::Interventions::new(
            model,
            layers.iter().map(|&l| (l, Intervention::scale(1.0))),
        )?);
        let Some(shortest) = (0..items.len()).min_by_key(|&i| lengths[i]) else {
            return Ok(());
        };
        let store = ActivationStore::new(model, &layers)?;
        store.enable();
        // Two rows, so that a layer without a batch axis (`[1, T, H]` whatever the batch) shows.
        let ids = Tensor::from_slice(&items[shortest].ids()[..lengths[shortest]])
            .unsqueeze(0)
            .repeat([2, 1]);
        let _no_grad = tch::no_grad_guard();
        let _ = model.forward(
            &ids.to_device(model.device()),
            &ids.ones_like().to_device(model.device()),
        )?;
        store.check()?;
        let never = store.never_fired();
        if !never.is_empty() {
            return Err(hooks::Error::NeverApplied { layers: never }.into());
        }
        for (layer, width, path) in &self.steers {
            let names = ActivationStore::new(model, [layer])?.layer_names().to_vec();
            for name in names {
                let shape = store.get(&name).map(|t| t.size()).unwrap_or_default();
                if shape.last() != Some(width) {
                    let features = shape.last().copied().unwrap_or(0);
                    return Err(CliError::Usage(format!(
                        "`--steer`: `{}` holds {width} values, and `{name}` has {features} features (its last dim); give a float32 vector of {features} values",
                        path.display()
                    )));
                }
            }
        }
        for Patch {
            layer, source, path, ..
        } in &self.patches
        {
            let shape = store.get(layer).map(|t| t.size()).unwrap_or_default();
            if source.size().get(2..) != shape.get(2..) || shape.len() < 2 {
                let mut one = shape.clone();
                if let Some(rows) = one.first_mut() {
                    *rows = 1;
                }
                return Err(CliError::Usage(format!(
                    "`--patch`: `{}` holds `{layer}` of shape {:?}, and this model's `{layer}` gives {one:?} for one sample; make it with this model",
                    path.display(),
                    source.size()
                )));
            }
            if shape[0] == 1 && batch_size > 1 && items.len() > 1 {
                return Err(CliError::Usage(format!(
                    "`--patch`: `{layer}` has no batch axis (one `{shape:?}` for a whole batch), so each sample's rows cannot replace it in a batch of several; pass --batch-size 1, or patch a layer after it"
                )));
            }
        }
        Ok(())
    }

    /// The interventions bound to `model` for generation (where patches have no meaning: the
    /// positions they replace do not exist yet); `None` when there are none.
    pub fn bind(&self, model: &dyn TextModel) -> Result<Option<hooks::Interventions>, CliError> {
        if !self.patches.is_empty() {
            return Err(CliError::Usage(
                "`--patch` replaces the positions of an earlier run, and generation makes new ones; steer or ablate instead".into(),
            ));
        }
        if self.interventions.is_empty() {
            return Ok(None);
        }
        let list = self.interventions.iter().map(|(l, i)| (l.as_str(), i.clone()));
        Ok(Some(hooks::Interventions::new(model, list)?))
    }

    /// `extractor` with these interventions and patches.
    pub fn apply(&self, mut extractor: Extractor) -> Extractor {
        for (layer, intervention) in &self.interventions {
            extractor = extractor.intervene(layer.clone(), intervention.clone());
        }
        for patch in &self.patches {
            extractor = extractor.patch(patch.layer.clone(), patch.source.shallow_clone());
        }
        extractor
    }
}

fn nonempty<'a>(s: &'a str, flag: &str, usage: &str) -> Result<&'a str, CliError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(CliError::Usage(format!("`{flag}` needs a value: {usage}")));
    }
    Ok(s)
}

/// `LAYER<sep>REST`, both non-empty.
fn split<'a>(spec: &'a str, sep: char, flag: &str, usage: &str) -> Result<(&'a str, &'a str), CliError> {
    match spec.split_once(sep) {
        Some((layer, rest)) if !layer.trim().is_empty() && !rest.trim().is_empty() => Ok((layer.trim(), rest)),
        _ => Err(CliError::Usage(format!("invalid `{flag} {spec}`; write {usage}"))),
    }
}

/// A file's path and sha256, for the request a folder records.
fn file_record(path: &Path) -> Result<serde_json::Value, CliError> {
    Ok(json!({"path": path.canonicalize().unwrap_or_else(|_| path.to_owned()), "sha256": crate::folder::sha256(path)?}))
}

/// A steering vector: a float32 `.npy` of one dim, every value finite.
fn read_vector(path: &Path) -> Result<Tensor, CliError> {
    let bad = |why: String| {
        CliError::Input(format!(
            "`--steer`: `{}` {why}; give a float32 .npy vector of the layer's width (numpy: np.save(path, v.astype(np.float32)))",
            path.display()
        ))
    };
    if path.is_dir() {
        return Err(bad("is a folder".into()));
    }
    if !path.is_file() {
        return Err(bad("does not exist".into()));
    }
    let vector = Tensor::read_npy(path).map_err(|e| bad(format!("is not a readable .npy file ({e})")))?;
    if vector.kind() != Kind::Float || vector.dim() != 1 || vector.numel() == 0 {
        return Err(bad(format!(
            "holds {} values of shape {:?}",
            crate::inspect::dtype(vector.kind()),
            vector.size()
        )));
    }
    if !bool::try_from(vector.isfinite().all()).unwrap_or(false) {
        return Err(bad("holds values that are not finite".into()));
    }
    Ok(vector)
}

/// A patch source: array `layer` of an `.npz` written by `hooks extract --pool none`, and the
/// token count of each row from the `attention_mask` saved beside it. Padding positions are zero,
/// as written.
fn read_patch(path: &Path, layer: &str) -> Result<Patch, CliError> {
    let fix = format!(
        "make it with `hooks extract --layers {layer} --pool none --out {}` on inputs of the same token lengths",
        path.display()
    );
    if path.is_dir() {
        return Err(CliError::Input(format!(
            "`--patch`: `{}` is a folder; a patch source is the .npz of a `--pool none` run: {fix}",
            path.display()
        )));
    }
    if !path.is_file() {
        return Err(CliError::Input(format!(
            "`--patch`: `{}` does not exist; {fix}",
            path.display()
        )));
    }
    let arrays = hooks::load_activations(path)?;
    let Some(source) = arrays.get(layer) else {
        let held: Vec<&str> = arrays.names().collect();
        return Err(CliError::Input(format!(
            "`--patch`: `{}` holds no array `{layer}` (it holds {}); {fix}",
            path.display(),
            held.join(", ")
        )));
    };
    if source.dim() < 3 {
        return Err(CliError::Input(format!(
            "`--patch`: `{layer}` in `{}` has shape {:?}, pooled or without a token axis; patching needs every position: {fix}",
            path.display(),
            source.size()
        )));
    }
    let Some(mask) = arrays.get("attention_mask") else {
        return Err(CliError::Input(format!(
            "`--patch`: `{}` has no `attention_mask`, so its token lengths are unknown; {fix}",
            path.display()
        )));
    };
    let lengths = Vec::<i64>::try_from(mask.sum_dim_intlist(1, false, Kind::Int64))
        .map_err(|e| CliError::Input(format!("`--patch`: `{}`: {e}", path.display())))?;
    Ok(Patch {
        layer: layer.to_owned(),
        source: source.to_kind(Kind::Float),
        lengths,
        path: path.to_owned(),
    })
}

/// A source's rows must be the items', one for one, with the same token counts: position `p`
/// of a row patches position `p` of the same item.
fn check_patch_rows(patch: &Patch, lengths: &[usize]) -> Result<(), CliError> {
    let path = patch.path.display();
    if patch.lengths.len() != lengths.len() {
        return Err(CliError::Input(format!(
            "`--patch`: `{path}` holds {} samples, and this run has {}; patch from a run over the same number of inputs, in the same order",
            patch.lengths.len(),
            lengths.len()
        )));
    }
    let differs = patch
        .lengths
        .iter()
        .zip(lengths)
        .position(|(&there, &here)| usize::try_from(there).ok() != Some(here));
    if let Some(row) = differs {
        return Err(CliError::Input(format!(
            "`--patch`: sample {row} has {} tokens in `{path}` and {} here; patching replaces position by position, so each input needs the token count of its source (pad or rephrase the prompts to match)",
            patch.lengths[row], lengths[row]
        )));
    }
    Ok(())
}
