//! [`WithSaes`]: a model with SAEs attached to some of its layers, whose layer tree holds the
//! SAEs' capture points.

use std::fmt;
use std::sync::Arc;

use hooks::{ActivationStore, Intervention, Interventions, LayerTree, Walker};
use tch::{nn, Device, Kind, Tensor};

use super::{layer_for_hook, Sae};
use crate::error::{ModelError, Result};
use crate::text_model::{KvCache, Readout, TextModel};

/// How attached SAEs act on the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaeOptions {
    /// Replace each layer's output with its SAE's `hook_sae_output` (SAELens' `add_sae`):
    /// `--sae-splice`. Off by default: the SAE reads the layer and changes nothing (until an
    /// intervention edits one of its points).
    pub splice: bool,
    /// Add the error term, `x − recons`, to the reconstruction (SAELens' `use_error_term`), so
    /// that a spliced SAE changes nothing until its features are edited. On by default;
    /// `--sae-no-error` turns it off (the model then runs on the reconstruction alone).
    pub error_term: bool,
}

impl Default for SaeOptions {
    fn default() -> Self {
        SaeOptions {
            splice: false,
            error_term: true,
        }
    }
}

/// `model` with SAEs attached to some of its layers.
///
/// Its layer tree is the model's, then each SAE's six points under `LAYER.sae.`
/// (`model.layers.6.sae.hook_sae_acts_post`): bind [`ActivationStore`]s and [`Interventions`] to
/// it, not to the model, to reach them. Feature ablation is a zero on one feature of
/// `LAYER.sae.hook_sae_acts_post` (`Intervention::zero().on_features(f..f + 1)`), feature
/// steering an add there (`Intervention::add(Tensor::from(s), 1.0).on_features(f..f + 1)`,
/// which adds `s × W_dec[f]` to the layer's output); either splices the SAE in (see the
/// [module docs](super)).
///
/// At each layer, the SAE runs before interventions bound to that layer itself by the caller
/// (it is bound first): a capture of the layer sees the spliced output.
///
/// ```no_run
/// use hooks::{ActivationStore, Intervention, Interventions};
/// use hooks_models::sae::{Sae, SaeOptions, WithSaes};
/// use tch::{Device, Kind, Tensor};
///
/// let dir = std::path::Path::new("gemma-2-2b");
/// let model = hooks_models::load(dir, Device::Cpu, Kind::Float)?;
/// let sae = Sae::load("gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82/params.npz")?;
/// let model = WithSaes::attach(model, [("model.layers.12", sae)], SaeOptions::default())?;
/// let store = ActivationStore::new(&model, ["model.layers.12.sae.hook_sae_acts_post"])?;
/// // Steer by feature 4242: 8 × its decoder row is added at every position.
/// let steer = Intervention::add(Tensor::from(8.0f32), 1.0).on_features(4242..4243);
/// let edits = Interventions::new(&model, [("model.layers.12.sae.hook_sae_acts_post", steer)])?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct WithSaes<M> {
    model: M,
    saes: Vec<(String, Arc<Sae>)>,
    options: SaeOptions,
    notes: Vec<String>,
    /// The SAEs, each bound to its layer's site of `model`.
    _runner: Interventions,
}

impl<M> fmt::Debug for WithSaes<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithSaes")
            .field("saes", &self.saes)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<M: LayerTree> WithSaes<M> {
    /// Attaches each `(layer, sae)` to `model`: `layer` is one capture point's name (a module's
    /// output, or `PATH:input`; an alias is fine, a glob is not), at most one SAE each. The SAEs
    /// must already be on the model's device ([`Sae::to_device`]); a text model is better
    /// attached with [`WithSaes::attach`], which also checks widths and hook names.
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidArgument`] for a glob, no SAE, or a layer given twice; the runtime's
    /// [`hooks::Error::UnknownLayer`] for a name the model lacks.
    pub fn new<L: Into<String>>(
        model: M,
        saes: impl IntoIterator<Item = (L, Sae)>,
        options: SaeOptions,
    ) -> Result<Self> {
        let saes: Vec<(String, Arc<Sae>)> = saes.into_iter().map(|(l, s)| (l.into(), Arc::new(s))).collect();
        let invalid = |reason: String| ModelError::InvalidArgument { name: "sae", reason };
        if saes.is_empty() {
            return Err(invalid("no SAE given; attach at least one".into()));
        }
        for (i, (layer, _)) in saes.iter().enumerate() {
            if layer.contains('*') {
                return Err(invalid(format!(
                    "`{layer}` is a pattern; an SAE attaches to one layer, named in full"
                )));
            }
            if saes[..i].iter().any(|(l, _)| l == layer) {
                return Err(invalid(format!(
                    "two SAEs are attached to `{layer}`; attach one per layer"
                )));
            }
        }
        let runner = Interventions::new(
            &model,
            saes.iter().map(|(layer, sae)| {
                let (sae, layer_name) = (Arc::clone(sae), layer.clone());
                let run = move |x: &Tensor| sae.run(x, options, &layer_name);
                (layer.as_str(), Intervention::try_map(run))
            }),
        )?;
        Ok(WithSaes {
            model,
            saes,
            options,
            notes: Vec::new(),
            _runner: runner,
        })
    }

    /// The model the SAEs are attached to.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The attached SAEs, with their layers, in the order given.
    pub fn saes(&self) -> impl Iterator<Item = (&str, &Sae)> {
        self.saes.iter().map(|(l, s)| (l.as_str(), &**s))
    }

    /// The SAE attached to `layer`, if any.
    #[must_use]
    pub fn sae(&self, layer: &str) -> Option<&Sae> {
        self.saes.iter().find(|(l, _)| l == layer).map(|(_, s)| &**s)
    }

    /// How the SAEs act.
    #[must_use]
    pub fn options(&self) -> SaeOptions {
        self.options
    }
}

impl WithSaes<Box<dyn TextModel>> {
    /// Attaches SAEs to a loaded text model, as [`new`](Self::new) does, after moving them to
    /// its device and checking each against it: `d_in` must equal the layer's width (one
    /// forward of one token tells), and a hook named by the SAE's config
    /// ([`Sae::hook_name`], [`Sae::hf_hook_name`]) that maps to another layer of this
    /// architecture ([`layer_for_hook`]) gives a note ([`TextModel::notes`]).
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new); [`ModelError::Sae`] naming both widths when they differ.
    pub fn attach<L: Into<String>>(
        model: Box<dyn TextModel>,
        saes: impl IntoIterator<Item = (L, Sae)>,
        options: SaeOptions,
    ) -> Result<Self> {
        let device = model.device();
        let saes = saes
            .into_iter()
            .map(|(l, s)| Ok((l.into(), s.to_device(device)?)))
            .collect::<Result<Vec<(String, Sae)>>>()?;
        let layers: Vec<&str> = saes.iter().map(|(l, _)| l.as_str()).collect();
        let store = ActivationStore::new(&*model, &layers)?;
        store.enable();
        let ids = Tensor::from_slice(&[model.pad_token_id().max(0)])
            .view([1, 1])
            .to_device(device);
        {
            let _no_grad = tch::no_grad_guard();
            let _ = model.forward(&ids, &ids.ones_like())?;
        }
        let mut notes = Vec::new();
        let sites = model.site_names();
        for (layer, sae) in &saes {
            let width = store.get(layer).and_then(|t| t.size().last().copied()).unwrap_or(0);
            if width != sae.d_in() {
                return Err(ModelError::Sae {
                    path: sae.path().to_owned(),
                    reason: format!(
                        "it reads {} features (d_in), and `{layer}` gives {width} (its last dim); attach it to a layer of width {}",
                        sae.d_in(),
                        sae.d_in()
                    ),
                });
            }
            let named = sae.hook_name().or(sae.hf_hook_name());
            if let Some(hook) = named {
                if let Some(expected) = layer_for_hook(hook, model.model_type()) {
                    if !sites.iter().any(|s| same_layer(s, &expected)) {
                        notes.push(format!(
                            "the SAE `{}` was trained on `{hook}`, `{expected}` in this architecture, which this model does not have; check that the SAE was trained on this model",
                            sae.path().display()
                        ));
                    } else if !same_layer(&expected, layer) {
                        notes.push(format!(
                            "the SAE `{}` was trained on `{hook}`, which is `{expected}` here, and is attached to `{layer}`; check the layer (README: \"Read a layer through an SAE\")",
                            sae.path().display()
                        ));
                    }
                }
            }
        }
        drop(store);
        let mut attached = WithSaes::new(model, saes, options)?;
        attached.notes = notes;
        Ok(attached)
    }
}

/// Whether two names of a point hold the same tensor: GPT-2's `h.3` and `transformer.h.3` are
/// one, and so are a block's input and the output of the block before it (`model.layers.4:input`
/// and `model.layers.3`: the residual stream between them).
fn same_layer(a: &str, b: &str) -> bool {
    let canonical = |s: &str| {
        let s = s.strip_prefix("transformer.").unwrap_or(s);
        if let Some((stack, index)) = s.strip_suffix(":input").and_then(|b| b.rsplit_once('.')) {
            if let Some(previous) = index.parse::<usize>().ok().and_then(|n| n.checked_sub(1)) {
                return format!("{stack}.{previous}");
            }
        }
        s.to_owned()
    };
    canonical(a) == canonical(b)
}

impl<M: LayerTree> LayerTree for WithSaes<M> {
    fn walk(&self, walker: &mut Walker<'_>) {
        self.model.walk(walker);
        for (layer, sae) in &self.saes {
            walker.enter(layer, |w| w.enter("sae", |w| sae.points().walk(w)));
        }
    }
}

impl<M: hooks::BatchForward> hooks::BatchForward for WithSaes<M> {
    fn forward_batch(&self, input_ids: &Tensor, attention_mask: &Tensor) -> hooks::Result<()> {
        self.model.forward_batch(input_ids, attention_mask)
    }

    fn pad_id(&self) -> Option<i64> {
        self.model.pad_id()
    }
}

impl TextModel for WithSaes<Box<dyn TextModel>> {
    fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        self.model.forward(input_ids, attention_mask)
    }

    fn max_length(&self) -> usize {
        self.model.max_length()
    }

    fn model_type(&self) -> &'static str {
        self.model.model_type()
    }

    fn hidden_size(&self) -> usize {
        self.model.hidden_size()
    }

    fn vocab_size(&self) -> usize {
        self.model.vocab_size()
    }

    fn pad_token_id(&self) -> i64 {
        self.model.pad_token_id()
    }

    fn var_store(&self) -> &nn::VarStore {
        self.model.var_store()
    }

    fn device(&self) -> Device {
        self.model.device()
    }

    fn kind(&self) -> Kind {
        self.model.kind()
    }

    fn readout(&self) -> Option<Readout<'_>> {
        self.model.readout()
    }

    fn forward_cached(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        valid: &Tensor,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        self.model.forward_cached(input_ids, positions, valid, cache)
    }

    fn notes(&self) -> Vec<String> {
        let mut notes = self.model.notes();
        notes.extend(self.notes.iter().cloned());
        notes
    }

    fn residual_layers(&self) -> Vec<String> {
        self.model.residual_layers()
    }
}
