//! Sparse autoencoders read through a layer: released SAEs loaded from SAELens folders, Gemma
//! Scope `params.npz` files and Gemma Scope 2 folders, with SAELens' capture points and its
//! semantics.
//!
//! An [`Sae`] is weights and six capture points. [`WithSaes`] attaches SAEs to layers of a model:
//! its layer tree is the model's plus, under each SAE's layer, `LAYER.sae.hook_sae_input`,
//! `.hook_sae_acts_pre`, `.hook_sae_acts_post`, `.hook_sae_recons`, `.hook_sae_error` and
//! `.hook_sae_output` (SAELens' `HookedSAETransformer` names), which stores capture and
//! interventions change like any layer. [`FeatureStats`] reduces a feature's activations over a
//! corpus to what feature dashboards show.
//!
//! **Semantics** (SAELens 6's `SAE.forward` with `use_error_term=True`; `x` is the layer's
//! tensor, `[..., d_in]`, computed in float32 whatever the model's dtype):
//!
//! - encode: `x' = x − b_dec` when `apply_b_dec_to_input` (false for both Gemma Scope formats),
//!   `pre = x' W_enc + b_enc` (`hook_sae_acts_pre`), then
//!   - `standard`: `relu(pre)`;
//!   - `jumprelu`: `relu(pre) · (pre > threshold)`, strictly greater;
//!   - `topk`: the `k` largest of `relu(pre)` kept, the rest zero. A tie at the k-th place keeps
//!     the lowest feature indexes (deterministic, unlike `torch.topk`; only ties between equal
//!     positive values can differ from SAELens, whose choice among them is unspecified);
//!   - `gated`: `(x' W_enc + b_gate > 0) · relu(x' (W_enc · exp(r_mag)) + b_mag)`, `pre` being
//!     the magnitude path, as SAELens' `GatedSAE`;
//!
//!   the result is `hook_sae_acts_post`, `[..., d_sae]`;
//! - decode: `acts W_dec + b_dec` (`hook_sae_recons`);
//! - the error term: `x − decode(encode(x))` from the unedited input (`hook_sae_error`; SAELens
//!   fires it only with `use_error_term`, this always);
//! - `hook_sae_output` = reconstruction + error term (or the reconstruction alone, without the
//!   error term: then it differs from the layer's output even when nothing is spliced in).
//!
//! **Read-only by default.** The model's forward is unchanged: `hook_sae_output` equals the
//! layer's output (to float rounding), and nothing flows back. The layer's output is replaced
//! by `hook_sae_output` when [`SaeOptions::splice`] is set, and whenever an intervention changed
//! one of the SAE's points (feature ablation or steering on `hook_sae_acts_post`): with the error
//! term, the output is then `decode(edited acts) + error`, so the edit always reaches the model.
//!
//! **Cost.** An attached SAE computes nothing in a forward where none of its points is captured
//! or edited and it is not spliced in, and only its encoder when nothing past
//! `hook_sae_acts_post` is captured or edited (reading the features).

mod attach;
mod features;
mod gemma_scope;
mod gemma_scope2;
mod names;
mod saelens;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use hooks::{HookPoint, LayerTree, Walker};
use tch::{Device, Kind, Tensor};

use crate::error::{ModelError, Result};

pub use attach::{SaeOptions, WithSaes};
pub use features::{FeatureStats, FeatureSummary};
pub use names::layer_for_hook;

/// What an SAE's encoder does after `pre = x' W_enc + b_enc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// `relu(pre)` (SAELens' `standard`).
    Standard,
    /// `relu(pre) · (pre > threshold)` (SAELens' `jumprelu`, Gemma Scope).
    JumpRelu,
    /// The `k` largest of `relu(pre)` (SAELens' `topk`).
    TopK {
        /// Features kept per token.
        k: i64,
    },
    /// A gate path and a magnitude path sharing `W_enc` (SAELens' `gated`).
    Gated,
}

impl Architecture {
    /// SAELens' name for it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Standard => "standard",
            Architecture::JumpRelu => "jumprelu",
            Architecture::TopK { .. } => "topk",
            Architecture::Gated => "gated",
        }
    }
}

/// The file layout an SAE was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A SAELens folder: `cfg.json` and `sae_weights.safetensors`.
    SaeLens,
    /// A Gemma Scope `params.npz` (`W_enc W_dec b_enc b_dec threshold`; no config).
    GemmaScope,
    /// A Gemma Scope 2 folder: `params.safetensors` (lowercase keys) and `config.json`.
    GemmaScope2,
}

/// The capture points of one SAE, in the order a forward fires them. Their paths are
/// `LAYER.sae.<name>` once attached ([`WithSaes`]).
#[derive(Debug, Default)]
pub struct SaePoints {
    /// The layer's tensor as the SAE reads it (float32), before `b_dec` is subtracted.
    pub hook_sae_input: HookPoint,
    /// `x' W_enc + b_enc`, `[..., d_sae]`.
    pub hook_sae_acts_pre: HookPoint,
    /// The feature activations, `[..., d_sae]`.
    pub hook_sae_acts_post: HookPoint,
    /// `acts W_dec + b_dec`, `[..., d_in]`.
    pub hook_sae_recons: HookPoint,
    /// `x − recons` of the unedited input, `[..., d_in]` (fired without the error term too, where
    /// it is not added to the output).
    pub hook_sae_error: HookPoint,
    /// What the SAE gives back: recons + error, or recons alone, `[..., d_in]`.
    pub hook_sae_output: HookPoint,
}

impl SaePoints {
    /// The names, in walk order.
    pub const NAMES: [&'static str; 6] = [
        "hook_sae_input",
        "hook_sae_acts_pre",
        "hook_sae_acts_post",
        "hook_sae_recons",
        "hook_sae_error",
        "hook_sae_output",
    ];

    fn all(&self) -> [&HookPoint; 6] {
        [
            &self.hook_sae_input,
            &self.hook_sae_acts_pre,
            &self.hook_sae_acts_post,
            &self.hook_sae_recons,
            &self.hook_sae_error,
            &self.hook_sae_output,
        ]
    }

    /// Whether any point is captured or edited now.
    fn in_use(&self) -> bool {
        self.all().into_iter().any(in_use)
    }
}

impl LayerTree for SaePoints {
    fn walk(&self, walker: &mut Walker<'_>) {
        for (name, point) in Self::NAMES.iter().zip(self.all()) {
            walker.enter(name, |w| point.walk(w));
        }
    }
}

/// The weights, float32, on one device. (Shared between the threads a model runs on behind a
/// lock, since tch's tensors are not `Sync`; a forward takes shallow copies.)
struct Weights {
    w_enc: Tensor,
    w_dec: Tensor,
    b_enc: Tensor,
    b_dec: Tensor,
    /// JumpReLU's.
    threshold: Option<Tensor>,
    /// Gated's: `b_gate`, and `W_enc · exp(r_mag)`.
    gate: Option<(Tensor, Tensor)>,
}

impl Weights {
    fn shallow(&self) -> Weights {
        Weights {
            w_enc: self.w_enc.shallow_clone(),
            w_dec: self.w_dec.shallow_clone(),
            b_enc: self.b_enc.shallow_clone(),
            b_dec: self.b_dec.shallow_clone(),
            threshold: self.threshold.as_ref().map(Tensor::shallow_clone),
            gate: self.gate.as_ref().map(|(a, b)| (a.shallow_clone(), b.shallow_clone())),
        }
    }
}

/// What a format's reader found: the settings, and the weights by SAELens' names
/// (`W_enc`, `W_dec`, `b_enc`, `b_dec`, `threshold`, `b_gate`, `b_mag`, `r_mag`).
struct Read {
    format: Format,
    architecture: Architecture,
    d_in: Option<i64>,
    d_sae: Option<i64>,
    apply_b_dec_to_input: bool,
    /// TransformerLens' hook name (`blocks.12.hook_resid_post`).
    hook_name: Option<String>,
    /// transformers' module path (`model.layers.12.output`).
    hf_hook_name: Option<String>,
    tensors: std::collections::HashMap<String, Tensor>,
    files: Vec<PathBuf>,
}

/// A sparse autoencoder, with SAELens' six capture points.
///
/// Load one with [`Sae::load`]; attach it to a layer with [`WithSaes`]. Its weights are float32
/// (a bf16 checkpoint is widened), on the device of the model it is attached to.
pub struct Sae {
    path: PathBuf,
    files: Vec<PathBuf>,
    format: Format,
    architecture: Architecture,
    d_in: i64,
    d_sae: i64,
    apply_b_dec_to_input: bool,
    hook_name: Option<String>,
    hf_hook_name: Option<String>,
    weights: Mutex<Weights>,
    points: SaePoints,
}

impl fmt::Debug for Sae {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sae")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("architecture", &self.architecture)
            .field("d_in", &self.d_in)
            .field("d_sae", &self.d_sae)
            .field("apply_b_dec_to_input", &self.apply_b_dec_to_input)
            .field("hook_name", &self.hook_name)
            .finish_non_exhaustive()
    }
}

impl Sae {
    /// Reads an SAE from `path`:
    ///
    /// - a SAELens folder (`cfg.json` + `sae_weights.safetensors`), in SAELens 6's config layout
    ///   (`metadata.hook_name`) or the older flat one (`hook_name` / `hook_point`,
    ///   `activation_fn_str`);
    /// - a Gemma Scope `params.npz`, or a folder holding one;
    /// - a Gemma Scope 2 folder (`params.safetensors`, `config.json`).
    ///
    /// # Errors
    ///
    /// [`ModelError::Sae`] for a path that is none of these, an architecture other than
    /// `standard`, `jumprelu`, `topk` and `gated` (naming it), a setting SAELens applies that is
    /// not implemented here (`normalize_activations` other than `none`, a head index, rescaled
    /// or fine-tuned activations), a missing, unexpected or misshapen weight; I/O errors.
    pub fn load(path: impl AsRef<Path>) -> Result<Sae> {
        let path = path.as_ref();
        let bad = |reason: String| ModelError::Sae {
            path: path.to_owned(),
            reason,
        };
        // A file of an SAE folder stands for the folder.
        let folder_file = [
            "cfg.json",
            "sae_weights.safetensors",
            "params.safetensors",
            "config.json",
        ];
        if path.is_file() && path.file_name().is_some_and(|n| folder_file.iter().any(|f| n == *f)) {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                return Sae::load(parent);
            }
            return Sae::load(".");
        }
        let read = if path.is_file() {
            if !path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npz")) {
                return Err(bad(
                    "is a file, and an SAE is a SAELens folder, a Gemma Scope 2 folder or a Gemma Scope `params.npz`; give one of those".into(),
                ));
            }
            gemma_scope::read(path)?
        } else if path.join("cfg.json").is_file() || path.join("sae_weights.safetensors").is_file() {
            saelens::read(path)?
        } else if path.join("params.safetensors").is_file() {
            gemma_scope2::read(path)?
        } else if path.join("params.npz").is_file() {
            gemma_scope::read(&path.join("params.npz"))?
        } else if path.is_dir() {
            return Err(bad(
                "holds none of `cfg.json` + `sae_weights.safetensors` (SAELens), `params.safetensors` (Gemma Scope 2) or `params.npz` (Gemma Scope); give the folder of one SAE".into(),
            ));
        } else {
            return Err(bad("does not exist".into()));
        };
        Sae::from_read(path, read)
    }

    fn from_read(path: &Path, mut read: Read) -> Result<Sae> {
        let bad = |reason: String| ModelError::Sae {
            path: path.to_owned(),
            reason,
        };
        // A JumpReLU SAE saved while training (SAELens' `JumpReLUTrainingSAE`) holds the log.
        if read.architecture == Architecture::JumpRelu && !read.tensors.contains_key("threshold") {
            if let Some(log) = read.tensors.remove("log_threshold") {
                read.tensors.insert("threshold".into(), log.f_exp()?);
            }
        }
        let mut take = |name: &str| -> Result<Tensor> {
            let t = read.tensors.remove(name).ok_or_else(|| {
                bad(format!(
                    "has no weight `{name}`, which a {} SAE needs",
                    read.architecture.name()
                ))
            })?;
            Ok(t.f_to_kind(Kind::Float)?.f_contiguous()?)
        };
        let w_enc = take("W_enc")?;
        let w_dec = take("W_dec")?;
        let b_dec = take("b_dec")?;
        let (b_enc, threshold, gate) = match read.architecture {
            Architecture::Standard | Architecture::TopK { .. } => (take("b_enc")?, None, None),
            Architecture::JumpRelu => (take("b_enc")?, Some(take("threshold")?), None),
            Architecture::Gated => {
                let b_mag = take("b_mag")?;
                let b_gate = take("b_gate")?;
                let r_mag = take("r_mag")?;
                (b_mag, None, Some((b_gate, r_mag)))
            }
        };
        if let Some(extra) = read.tensors.keys().min() {
            return Err(bad(format!(
                "holds a weight `{extra}` that a {} SAE does not have; only {} SAEs without extra parts are supported",
                read.architecture.name(),
                read.architecture.name()
            )));
        }
        let shape = w_enc.size();
        let (d_in, d_sae) = match shape.as_slice() {
            &[d_in, d_sae] => (d_in, d_sae),
            other => return Err(bad(format!("`W_enc` has shape {other:?}; it must be [d_in, d_sae]"))),
        };
        for (what, stated, found) in [("d_in", read.d_in, d_in), ("d_sae", read.d_sae, d_sae)] {
            if let Some(stated) = stated.filter(|&s| s != found) {
                return Err(bad(format!(
                    "the config says {what} = {stated}, and `W_enc` has {found}; the config and the weights are of different SAEs"
                )));
            }
        }
        let mut expect = vec![("W_dec", &w_dec, vec![d_sae, d_in]), ("b_dec", &b_dec, vec![d_in])];
        let b_enc_name = if gate.is_some() { "b_mag" } else { "b_enc" };
        expect.push((b_enc_name, &b_enc, vec![d_sae]));
        if let Some(t) = &threshold {
            expect.push(("threshold", t, vec![d_sae]));
        }
        if let Some((b_gate, r_mag)) = &gate {
            expect.push(("b_gate", b_gate, vec![d_sae]));
            expect.push(("r_mag", r_mag, vec![d_sae]));
        }
        for (name, t, want) in expect {
            if t.size() != want {
                return Err(bad(format!(
                    "`{name}` has shape {:?}, and `W_enc` [{d_in}, {d_sae}] implies {want:?}",
                    t.size()
                )));
            }
        }
        if let Architecture::TopK { k } = read.architecture {
            if k < 1 || k > d_sae {
                return Err(bad(format!("its `k` is {k}; it must be 1 to d_sae ({d_sae})")));
            }
        }
        let gate = match gate {
            Some((b_gate, r_mag)) => Some((b_gate, w_enc.f_mul(&r_mag.f_exp()?)?)),
            None => None,
        };
        Ok(Sae {
            path: path.to_owned(),
            files: read.files,
            format: read.format,
            architecture: read.architecture,
            d_in,
            d_sae,
            apply_b_dec_to_input: read.apply_b_dec_to_input,
            hook_name: read.hook_name,
            hf_hook_name: read.hf_hook_name,
            weights: Mutex::new(Weights {
                w_enc,
                w_dec,
                b_enc,
                b_dec,
                threshold,
                gate,
            }),
            points: SaePoints::default(),
        })
    }

    /// Moves the weights to `device`.
    ///
    /// # Errors
    ///
    /// libtorch's, for a device it cannot reach.
    pub fn to_device(mut self, device: Device) -> Result<Sae> {
        let w = self.weights.get_mut().unwrap_or_else(PoisonError::into_inner);
        for t in [&mut w.w_enc, &mut w.w_dec, &mut w.b_enc, &mut w.b_dec] {
            *t = t.f_to_device(device)?;
        }
        if let Some(t) = &mut w.threshold {
            *t = t.f_to_device(device)?;
        }
        if let Some((a, b)) = &mut w.gate {
            *a = a.f_to_device(device)?;
            *b = b.f_to_device(device)?;
        }
        Ok(self)
    }

    /// Where it was read from.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The files it was read from (config and weights), to fingerprint a run by.
    #[must_use]
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The layout it was read from.
    #[must_use]
    pub fn format(&self) -> Format {
        self.format
    }

    /// Its encoder's architecture.
    #[must_use]
    pub fn architecture(&self) -> Architecture {
        self.architecture
    }

    /// The width it reads: the layer's last dim.
    #[must_use]
    pub fn d_in(&self) -> i64 {
        self.d_in
    }

    /// Its number of features.
    #[must_use]
    pub fn d_sae(&self) -> i64 {
        self.d_sae
    }

    /// Whether `b_dec` is subtracted from the input before encoding.
    #[must_use]
    pub fn apply_b_dec_to_input(&self) -> bool {
        self.apply_b_dec_to_input
    }

    /// The TransformerLens hook its config names (`blocks.12.hook_resid_post`), if any.
    #[must_use]
    pub fn hook_name(&self) -> Option<&str> {
        self.hook_name.as_deref()
    }

    /// The transformers module its config names (`model.layers.12.output`), if any.
    #[must_use]
    pub fn hf_hook_name(&self) -> Option<&str> {
        self.hf_hook_name.as_deref()
    }

    /// The decoder, `[d_sae, d_in]` float32: row `f` is feature `f`'s direction.
    pub fn w_dec(&self) -> Tensor {
        self.weights().w_dec
    }

    /// Shallow copies of the weights.
    fn weights(&self) -> Weights {
        self.weights.lock().unwrap_or_else(PoisonError::into_inner).shallow()
    }

    /// Its capture points.
    #[must_use]
    pub fn points(&self) -> &SaePoints {
        &self.points
    }

    /// The feature activations of `x` (`[..., d_in]`, any float dtype): `[..., d_sae]`,
    /// float32. No capture point fires.
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidArgument`] when `x`'s last dim is not `d_in`; libtorch's.
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        self.check_width(x)?;
        let x = x.f_to_kind(Kind::Float)?;
        let w = self.weights();
        let (pre, gate) = self.pre(&w, &x)?;
        Ok(self.activate(&w, &pre, gate.as_ref())?)
    }

    /// The reconstruction of `acts` (`[..., d_sae]`): `acts W_dec + b_dec`, `[..., d_in]`,
    /// float32. No capture point fires.
    ///
    /// # Errors
    ///
    /// libtorch's, for acts of another width.
    pub fn decode(&self, acts: &Tensor) -> Result<Tensor> {
        Ok(decode_raw(&self.weights(), &acts.f_to_kind(Kind::Float)?)?)
    }

    fn check_width(&self, x: &Tensor) -> Result<()> {
        match x.size().last() {
            Some(&w) if w == self.d_in => Ok(()),
            other => Err(ModelError::InvalidArgument {
                name: "x",
                reason: format!(
                    "the SAE reads {} features (d_in), and the tensor's last dim is {}",
                    self.d_in,
                    other.copied().unwrap_or(0)
                ),
            }),
        }
    }

    /// The input after `b_dec` is taken off (when the SAE does).
    fn centred(&self, w: &Weights, x: &Tensor) -> std::result::Result<Tensor, tch::TchError> {
        if self.apply_b_dec_to_input {
            x.f_sub(&w.b_dec)
        } else {
            Ok(x.shallow_clone())
        }
    }

    /// `pre` (the magnitude path for a gated SAE), and a gated SAE's gate.
    fn pre(&self, w: &Weights, x: &Tensor) -> std::result::Result<(Tensor, Option<Tensor>), tch::TchError> {
        let x = self.centred(w, x)?;
        match &w.gate {
            Some((b_gate, w_mag)) => {
                let gate = x.f_matmul(&w.w_enc)?.f_add(b_gate)?.f_gt(0.0)?;
                Ok((x.f_matmul(w_mag)?.f_add(&w.b_enc)?, Some(gate)))
            }
            None => Ok((x.f_matmul(&w.w_enc)?.f_add(&w.b_enc)?, None)),
        }
    }

    /// `hook_sae_acts_post` from `pre`.
    fn activate(&self, w: &Weights, pre: &Tensor, gate: Option<&Tensor>) -> std::result::Result<Tensor, tch::TchError> {
        let relu = pre.f_relu()?;
        match self.architecture {
            Architecture::Standard => Ok(relu),
            Architecture::JumpRelu => {
                let threshold = w.threshold.as_ref().expect("a JumpReLU SAE has a threshold");
                relu.f_mul(&pre.f_gt_tensor(threshold)?)
            }
            Architecture::Gated => relu.f_mul(gate.expect("a gated SAE has a gate")),
            Architecture::TopK { k } => top_k(&relu, k),
        }
    }

    /// The SAE on the layer's tensor `x`, through its capture points: `Some(output)` to flow on
    /// in `x`'s place (spliced, or edited at one of its points), `None` to leave `x`. `layer` names
    /// the layer in errors.
    fn run(&self, x: &Tensor, options: SaeOptions, layer: &str) -> hooks::Result<Option<Tensor>> {
        if x.size().last() != Some(&self.d_in) {
            return Err(hooks::Error::EditMismatch {
                layer: layer.to_owned(),
                shape: x.size(),
                reason: format!(
                    "the SAE `{}` reads {} features (d_in), and this layer has {}; attach it to a layer of width {}",
                    self.path.display(),
                    self.d_in,
                    x.size().last().copied().unwrap_or(0),
                    self.d_in
                ),
            });
        }
        if !options.splice && !self.points.in_use() {
            return Ok(None);
        }
        let p = &self.points;
        let x32 = x.f_to_kind(Kind::Float)?;
        let w = self.weights();
        let mut edited = false;
        let input = through(&p.hook_sae_input, x32.shallow_clone(), &mut edited);
        let (pre, gate) = self.pre(&w, &input)?;
        let pre = through(&p.hook_sae_acts_pre, pre, &mut edited);
        let acts = through(
            &p.hook_sae_acts_post,
            self.activate(&w, &pre, gate.as_ref())?,
            &mut edited,
        );
        // Reading the features alone (the common case, and `hooks features`') needs no decoder.
        let later = [&p.hook_sae_recons, &p.hook_sae_error, &p.hook_sae_output];
        if !options.splice && !edited && !later.iter().any(|point| in_use(point)) {
            return Ok(None);
        }
        let recons = through(&p.hook_sae_recons, decode_raw(&w, &acts)?, &mut edited);
        // The error of the unedited input, as SAELens computes it with its hooks off. Without the
        // error term it is still there to capture, and not added.
        let clean = if edited {
            let (pre, gate) = self.pre(&w, &x32)?;
            decode_raw(&w, &self.activate(&w, &pre, gate.as_ref())?)?
        } else {
            recons.shallow_clone()
        };
        let error = through(&p.hook_sae_error, x32.f_sub(&clean)?, &mut edited);
        let output = if options.error_term {
            recons.f_add(&error)?
        } else {
            recons
        };
        let output = through(&p.hook_sae_output, output, &mut edited);
        if options.splice || edited {
            Ok(Some(output.f_to_kind(x.kind())?))
        } else {
            Ok(None)
        }
    }
}

/// Whether `point` is captured or edited now.
fn in_use(point: &HookPoint) -> bool {
    point.is_capturing() || point.site().is_edited()
}

/// `acts W_dec + b_dec`.
fn decode_raw(w: &Weights, acts: &Tensor) -> std::result::Result<Tensor, tch::TchError> {
    acts.f_matmul(&w.w_dec)?.f_add(&w.b_dec)
}

/// `t` through `point` (its interventions, then its captures); `edited` is set when an
/// intervention changed it.
fn through(point: &HookPoint, t: Tensor, edited: &mut bool) -> Tensor {
    match point.site().apply(&t) {
        Some(changed) => {
            *edited = true;
            changed
        }
        None => t,
    }
}

/// The `k` largest entries of each row of `relu` (last dim) kept, the rest zero; at a tie for
/// the k-th place, the lowest indexes are kept. O(d_sae) per row: the k-th value from
/// `topk`, every entry above it, then the first of those equal to it, by a running count.
fn top_k(relu: &Tensor, k: i64) -> std::result::Result<Tensor, tch::TchError> {
    let (values, _) = relu.f_topk(k, -1, true, false)?;
    let kth = values.f_amin(&[-1i64][..], true)?;
    let above = relu.f_gt_tensor(&kth)?;
    let missing = above
        .f_sum_dim_intlist(&[-1i64][..], true, Kind::Int64)?
        .f_neg()?
        .f_add_scalar(k)?;
    let equal = relu.f_eq_tensor(&kth)?;
    let rank = equal.f_cumsum(-1, Kind::Int64)?;
    let keep = above.f_logical_or(&equal.f_logical_and(&rank.f_le_tensor(&missing)?)?)?;
    relu.f_mul(&keep)
}
