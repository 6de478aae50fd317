//! `hooks extract --ablate / --steer / --patch`: reading the interventions from the command line
//! and their files, and checking them against the model before anything is written.

use std::path::{Path, PathBuf};

use hooks::{ActivationStore, Extractor, Intervention, Item, Positions, TokenPositions};
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

/// The interventions of `extract` and `generate`, in the order given on the command line.
#[derive(Debug, Default, clap::Args)]
pub struct EditArgs {
    /// Replace LAYER's output with zeros (zero-ablation); repeatable, globs allowed,
    /// `LAYER:input` for a module's input. Captures see the changed tensors.
    #[arg(long, value_name = "LAYER")]
    pub ablate: Vec<String>,
    /// Replace LAYER's output with MEAN (mean-ablation): a float32 vector of the layer's width,
    /// broadcast to every position, say the mean of each sample's mean over a corpus (numpy, on a
    /// `--pool mean` run: `np.save(path, np.load(acts)[LAYER].mean(0))`). Repeatable.
    #[arg(long, value_name = "LAYER=MEAN.npy")]
    pub mean_ablate: Vec<String>,
    /// Multiply LAYER's output by F, at POSITIONS only when given (see --steer). Repeatable.
    #[arg(long, value_name = "LAYER@F[:POSITIONS]")]
    pub scale: Vec<String>,
    /// Add SCALE x VEC to LAYER's output (steering); VEC.npy holds a float32 vector of the
    /// layer's width (or VEC is `DIRS.npz:KEY`, one array of an .npz, such as a direction that
    /// `hooks probe --directions` wrote). POSITIONS limits it to some tokens, as Python indexes and slices of each
    /// sample counted from 0 (`-1` its last token, `3:` the fourth on, `0,-1`); in `generate` they run
    /// over the prompt and then the generated tokens, negatives counting from the prompt's end.
    /// Repeatable.
    #[arg(long, value_name = "LAYER=VEC.npy@SCALE[:POSITIONS]")]
    pub steer: Vec<String>,
    /// Zero feature F of the SAE attached to LAYER (`--sae LAYER=PATH`): its
    /// `hook_sae_acts_post`, so that the layer's output becomes the reconstruction of the edited
    /// features plus the error term. POSITIONS as for --steer. Repeatable.
    #[arg(long, value_name = "LAYER.sae:F[@POSITIONS]")]
    pub ablate_feature: Vec<String>,
    /// Add S to feature F of the SAE attached to LAYER: S x W_dec[F] is added to the layer's
    /// output (with the error term, the rest of it unchanged). Repeatable.
    #[arg(long, value_name = "LAYER.sae:F@S[:POSITIONS]")]
    pub steer_feature: Vec<String>,
}

/// The interventions of one run.
#[derive(Default)]
pub struct Edits {
    /// `--ablate`, `--mean-ablate`, `--scale` and `--steer`, in the order given.
    interventions: Vec<(String, Intervention)>,
    /// The vectors given (steering, means): the flag, the layer and the vector's length,
    /// checked against the layer.
    vectors: Vec<(&'static str, String, i64, PathBuf)>,
    /// The position-limited ones: the flag's text and the positions, checked against the inputs.
    positioned: Vec<(String, Positions)>,
    /// `--ablate-feature` and `--steer-feature`: the flag, the SAE's layer and the feature,
    /// checked against the attached SAE.
    features: Vec<(&'static str, String, i64)>,
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
    /// `--mean-ablate`.
    MeanAblate,
    /// `--scale`.
    Scale,
    /// `--steer`.
    Steer,
    /// `--ablate-feature`.
    AblateFeature,
    /// `--steer-feature`.
    SteerFeature,
}

impl Flag {
    const ALL: [Flag; 6] = [
        Flag::Ablate,
        Flag::MeanAblate,
        Flag::Scale,
        Flag::Steer,
        Flag::AblateFeature,
        Flag::SteerFeature,
    ];

    /// The argument's id in clap.
    fn id(self) -> &'static str {
        match self {
            Flag::Ablate => "ablate",
            Flag::MeanAblate => "mean_ablate",
            Flag::Scale => "scale",
            Flag::Steer => "steer",
            Flag::AblateFeature => "ablate_feature",
            Flag::SteerFeature => "steer_feature",
        }
    }

    fn values(self, args: &EditArgs) -> &[String] {
        match self {
            Flag::Ablate => &args.ablate,
            Flag::MeanAblate => &args.mean_ablate,
            Flag::Scale => &args.scale,
            Flag::Steer => &args.steer,
            Flag::AblateFeature => &args.ablate_feature,
            Flag::SteerFeature => &args.steer_feature,
        }
    }
}

/// The order of the intervention flags on the command line (clap keeps each flag's values apart,
/// so their interleaving is read from its indices).
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
    let mut flags: Vec<(usize, Flag)> = Flag::ALL
        .into_iter()
        .flat_map(|flag| indices(flag.id()).into_iter().map(move |i| (i, flag)))
        .collect();
    flags.sort_unstable_by_key(|(i, _)| *i);
    flags.into_iter().map(|(_, flag)| flag).collect()
}

impl Edits {
    /// Reads the interventions of `args` and `--patch LAYER=SRC.npz`: the interventions apply
    /// in `order`, the order of their flags on the command line (flag by flag, as listed in
    /// [`Flag`], when `order` does not cover them), patches after them.
    pub fn parse(args: &EditArgs, patch: &[String], order: &[Flag]) -> Result<Edits, CliError> {
        let mut edits = Edits::default();
        let covered = Flag::ALL
            .iter()
            .all(|flag| order.iter().filter(|f| *f == flag).count() == flag.values(args).len());
        let default: Vec<Flag> = Flag::ALL
            .iter()
            .flat_map(|&flag| std::iter::repeat_n(flag, flag.values(args).len()))
            .collect();
        let mut next = [0usize; Flag::ALL.len()];
        for &flag in if covered { order } else { &default } {
            let i = Flag::ALL.iter().position(|&f| f == flag).unwrap_or(0);
            let Some(spec) = flag.values(args).get(next[i]) else {
                continue;
            };
            next[i] += 1;
            match flag {
                Flag::Ablate => edits.ablate(spec)?,
                Flag::MeanAblate => edits.mean_ablate(spec)?,
                Flag::Scale => edits.scale(spec)?,
                Flag::Steer => edits.steer(spec)?,
                Flag::AblateFeature => edits.feature(spec, false)?,
                Flag::SteerFeature => edits.feature(spec, true)?,
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

    fn mean_ablate(&mut self, spec: &str) -> Result<(), CliError> {
        let (layer, file) = split(spec, '=', "--mean-ablate", "LAYER=MEAN.npy")?;
        let path = PathBuf::from(file.trim());
        let mean = read_vector(&path, "--mean-ablate")?;
        self.vectors
            .push(("--mean-ablate", layer.to_owned(), mean.size()[0], path.clone()));
        self.record
            .push(json!({"mean_ablate": layer, "mean": file_record(&path)?}));
        self.interventions.push((layer.to_owned(), Intervention::mean(mean)));
        Ok(())
    }

    fn scale(&mut self, spec: &str) -> Result<(), CliError> {
        let usage = "LAYER@F[:POSITIONS]";
        let (layer, rest) = spec
            .rsplit_once('@')
            .filter(|(layer, _)| !layer.trim().is_empty())
            .ok_or_else(|| CliError::Usage(format!("invalid `--scale {spec}`; write {usage}, like h.3.mlp@0.5")))?;
        let (factor, positions) = number_and_positions(spec, "--scale", rest, usage)?;
        let layer = layer.trim();
        let intervention = Intervention::scale(factor);
        let record = json!({"scale": layer, "factor": factor});
        self.push(layer, intervention, record, positions, format!("--scale {spec}"));
        Ok(())
    }

    fn steer(&mut self, spec: &str) -> Result<(), CliError> {
        let usage = "LAYER=VEC.npy@SCALE[:POSITIONS]";
        let (layer, rest) = split(spec, '=', "--steer", usage)?;
        let (file, tail) = rest.rsplit_once('@').ok_or_else(|| {
            CliError::Usage(format!(
                "invalid `--steer {spec}`: no `@SCALE`; write {usage}, like h.6=happy.npy@4"
            ))
        })?;
        let (scale, positions) = number_and_positions(spec, "--steer", tail, usage)?;
        // `DIRS.npz:KEY`: one array of an .npz (a `hooks probe --directions` file, say).
        let (path, key) = match file.trim().split_once(".npz:") {
            Some((stem, key)) => (PathBuf::from(format!("{stem}.npz")), Some(key.to_owned())),
            None => (PathBuf::from(file.trim()), None),
        };
        let vector = match &key {
            Some(key) => read_npz_vector(&path, key, "--steer")?,
            None => read_vector(&path, "--steer")?,
        };
        self.vectors
            .push(("--steer", layer.to_owned(), vector.size()[0], path.clone()));
        let mut record = json!({"steer": layer, "scale": scale, "vector": file_record(&path)?});
        if let Some(key) = key {
            record["key"] = json!(key);
        }
        let intervention = Intervention::add(vector, scale);
        self.push(layer, intervention, record, positions, format!("--steer {spec}"));
        Ok(())
    }

    /// `--ablate-feature LAYER.sae:F[@POSITIONS]` or `--steer-feature LAYER.sae:F@S[:POSITIONS]`:
    /// a zero, or an add of S, on feature F of `LAYER.sae.hook_sae_acts_post`.
    fn feature(&mut self, spec: &str, steer: bool) -> Result<(), CliError> {
        let (flag, usage, example) = if steer {
            (
                "--steer-feature",
                "LAYER.sae:F@S[:POSITIONS]",
                "model.layers.6.sae:1234@8",
            )
        } else {
            ("--ablate-feature", "LAYER.sae:F[@POSITIONS]", "model.layers.6.sae:1234")
        };
        let invalid =
            |why: &str| CliError::Usage(format!("invalid `{flag} {spec}`: {why}; write {usage}, like {example}"));
        let (layer, rest) = spec
            .rsplit_once(".sae:")
            .filter(|(layer, _)| !layer.trim().is_empty())
            .ok_or_else(|| invalid("no `LAYER.sae:`"))?;
        let layer = layer.trim();
        if layer.contains('*') {
            return Err(invalid(
                "the layer is a pattern; name the SAE's layer in full, one flag per layer",
            ));
        }
        let (feature, tail) = match rest.split_once('@') {
            Some((f, tail)) => (f, Some(tail)),
            None => (rest, None),
        };
        let feature: i64 = feature
            .trim()
            .parse()
            .ok()
            .filter(|&f: &i64| f >= 0)
            .ok_or_else(|| invalid(&format!("the feature `{feature}` is not a feature index (0, 1, ...)")))?;
        let point = format!("{layer}.sae.hook_sae_acts_post");
        let (intervention, mut record, positions) = if steer {
            let tail = tail.ok_or_else(|| invalid("no `@S`"))?;
            let (scale, positions) = number_and_positions(spec, flag, tail, usage)?;
            let add = Intervention::add(Tensor::from_slice(&[1.0f32]), scale);
            (
                add,
                json!({"steer_feature": layer, "feature": feature, "scale": scale}),
                positions,
            )
        } else {
            let positions = match tail {
                Some(p) => Some(p.parse::<Positions>().map_err(|e| invalid(&e.to_string()))?),
                None => None,
            };
            (
                Intervention::zero(),
                json!({"ablate_feature": layer, "feature": feature}),
                positions,
            )
        };
        record["sae_feature"] = json!(feature);
        self.features.push((flag, layer.to_owned(), feature));
        let intervention = intervention.on_features(feature..feature + 1);
        self.push(&point, intervention, record, positions, format!("{flag} {spec}"));
        Ok(())
    }

    /// Adds `intervention` at `layer` and its `record`, both limited to `positions` when given
    /// (`flag`, the flag's text, names them in errors).
    fn push(
        &mut self,
        layer: &str,
        mut intervention: Intervention,
        mut record: serde_json::Value,
        positions: Option<Positions>,
        flag: String,
    ) {
        if let Some(positions) = positions {
            record["positions"] = json!(positions.to_string());
            intervention = intervention.at_positions(positions.clone());
            self.positioned.push((flag, positions));
        }
        self.record.push(record);
        self.interventions.push((layer.to_owned(), intervention));
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
    /// layer has a batch axis unless each batch holds one item (`batch_size`), and positions fall
    /// inside every item (`generating`: inside or past every prompt). Runs a batch of the
    /// shortest item twice, without interventions.
    pub fn check(
        &self,
        model: &dyn TextModel,
        items: &[Item],
        max_length: usize,
        batch_size: usize,
        generating: bool,
    ) -> Result<(), CliError> {
        if self.is_empty() {
            return Ok(());
        }
        let lengths: Vec<usize> = items.iter().map(|i| i.ids().len().min(max_length)).collect();
        self.check_positions(&lengths, generating)?;
        let sites = model.site_names();
        for (flag, layer, _) in &self.features {
            if !sites.iter().any(|s| *s == format!("{layer}.sae.hook_sae_acts_post")) {
                return Err(CliError::Usage(format!(
                    "`{flag} {layer}.sae:...`: no SAE is attached to `{layer}`; attach one with --sae {layer}=PATH"
                )));
            }
        }
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
        for (flag, layer, width, path) in &self.vectors {
            let names = ActivationStore::new(model, [layer])?.layer_names().to_vec();
            for name in names {
                let shape = store.get(&name).map(|t| t.size()).unwrap_or_default();
                if shape.last() != Some(width) {
                    let features = shape.last().copied().unwrap_or(0);
                    return Err(CliError::Usage(format!(
                        "`{flag}`: `{}` holds {width} values, and `{name}` has {features} features (its last dim); give a float32 vector of {features} values",
                        path.display()
                    )));
                }
            }
        }
        for (flag, layer, feature) in &self.features {
            let point = format!("{layer}.sae.hook_sae_acts_post");
            let d_sae = store.get(&point).and_then(|t| t.size().last().copied()).unwrap_or(0);
            if *feature >= d_sae {
                return Err(CliError::Usage(format!(
                    "`{flag}`: the SAE on `{layer}` has {d_sae} features (0 to {}), and feature {feature} is past them",
                    d_sae - 1
                )));
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

    /// Each position-limited intervention's positions against each item of `lengths` tokens:
    /// an index must fall inside it, or (`generating`) not before a prompt's start.
    fn check_positions(&self, lengths: &[usize], generating: bool) -> Result<(), CliError> {
        for (flag, positions) in &self.positioned {
            let mut covered = false;
            for (i, &len) in lengths.iter().enumerate() {
                let len = i64::try_from(len).unwrap_or(i64::MAX);
                let layout = if generating {
                    TokenPositions::continuing(Vec::new(), 0, &[len])?
                } else {
                    TokenPositions::right_padded(&[len], len)
                };
                match layout.mask(positions) {
                    Err(hooks::Error::InvalidArgument { reason, .. }) => {
                        let what = if generating { "prompt" } else { "input" };
                        return Err(CliError::Input(format!(
                            "`{flag}`: {what} {}: {reason}; give positions that every {what} has",
                            i + 1
                        )));
                    }
                    Ok(mask) => covered |= mask.contains(&true),
                    Err(e) => return Err(e.into()),
                }
            }
            // Generation goes on past the prompts; an extraction has every token here.
            if !generating && !covered {
                let longest = lengths.iter().max().copied().unwrap_or(0);
                return Err(CliError::Input(format!(
                    "`{flag}`: the positions hold no token of any input (the longest has {longest}), so it would change nothing; give positions inside the inputs"
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

/// `F` or `F:POSITIONS` after a flag's `@`: a finite number, and the positions if given.
fn number_and_positions(spec: &str, flag: &str, tail: &str, usage: &str) -> Result<(f64, Option<Positions>), CliError> {
    let (number, positions) = match tail.split_once(':') {
        Some((number, positions)) => (number, Some(positions)),
        None => (tail, None),
    };
    let value: f64 = number
        .trim()
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite())
        .ok_or_else(|| {
            CliError::Usage(format!(
                "invalid `{flag} {spec}`: `{number}` is not a finite number; write {usage}"
            ))
        })?;
    let positions = positions
        .map(|p| {
            p.parse::<Positions>().map_err(|_| {
                CliError::Usage(format!(
                    "invalid `{flag} {spec}`: the positions `{p}` are not Python indexes and slices; write them like -1, 3:, :5 or 0,-1"
                ))
            })
        })
        .transpose()?;
    Ok((value, positions))
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

/// A steering vector or a mean (`flag`): a float32 `.npy` of one dim, every value finite.
fn read_vector(path: &Path, flag: &str) -> Result<Tensor, CliError> {
    let bad = |why: String| {
        CliError::Input(format!(
            "`{flag}`: `{}` {why}; give a float32 .npy vector of the layer's width (numpy: np.save(path, v.astype(np.float32)))",
            path.display()
        ))
    };
    if path.is_dir() {
        return Err(bad("is a folder".into()));
    }
    if !path.is_file() {
        return Err(bad("does not exist".into()));
    }
    // Read by hooks' own reader: tch's trusts the header (a cut-short file would give memory
    // past the data, a negative shape a libtorch backtrace).
    let vector = match hooks::load_npy(path)? {
        hooks::NpzValue::Tensor(t) => t,
        hooks::NpzValue::Strings { .. } => return Err(bad("holds strings, not numbers".into())),
    };
    check_vector(vector, bad)
}

/// `vector` if it is a non-empty float32 vector of finite values; otherwise `bad(why)`.
fn check_vector(vector: Tensor, bad: impl Fn(String) -> CliError) -> Result<Tensor, CliError> {
    if vector.kind() != Kind::Float || vector.dim() != 1 || vector.numel() == 0 {
        let why = if vector.dim() == 2 {
            " (one row per class, as a multi-class probe's directions: save the row wanted as its own vector)"
        } else {
            ""
        };
        return Err(bad(format!(
            "holds {} values of shape {:?}{why}",
            crate::inspect::dtype(vector.kind()),
            vector.size()
        )));
    }
    if !bool::try_from(vector.isfinite().all()).unwrap_or(false) {
        return Err(bad("holds values that are not finite".into()));
    }
    Ok(vector)
}

/// Array `key` of the `.npz` at `path`, checked as [`read_vector`] checks a `.npy`: a float32
/// vector (a binary probe's direction from `hooks probe --directions`).
fn read_npz_vector(path: &Path, key: &str, flag: &str) -> Result<Tensor, CliError> {
    let bad = |why: String| {
        CliError::Input(format!(
            "`{flag}`: `{}:{key}` {why}; give a float32 vector of the layer's width",
            path.display()
        ))
    };
    if !path.is_file() {
        return Err(bad("does not exist".into()));
    }
    let arrays = hooks::load_numeric(path)?;
    let Some(vector) = arrays.get(key) else {
        let held: Vec<String> = arrays.names().map(|n| format!("`{n}`")).collect();
        return Err(bad(format!("is not there (the file holds {})", held.join(", "))));
    };
    check_vector(vector.shallow_clone(), bad)
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
    let arrays = hooks::load_numeric(path)?;
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
