//! Interventions: changing what flows on at a capture site (ablation, steering, patching), the
//! counterpart of a PyTorch forward hook that returns a new output (or a forward pre-hook that
//! returns new arguments), as TransformerLens's `run_with_hooks` and baukit's `edit_output` use
//! them.
//!
//! An [`Intervention`] says what to do to a tensor; [`Interventions`] binds a list of them to the
//! capture sites of one model instance. The sites call back here (the `Editor` of `site.rs`);
//! nothing in a model's code changes.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::hookable::{walk_bindable, LayerTree};
use crate::positions::{Positions, TokenPositions};
use crate::select::resolve;
use crate::site::Editor;
use crate::switch;

/// A user's function from the tensor at a site to the tensor that flows on.
type MapFn = dyn Fn(&Tensor) -> Tensor + Send + Sync;

/// A user's function that may fail, or leave the tensor as it is (`None`).
type TryMapFn = dyn Fn(&Tensor) -> Result<Option<Tensor>> + Send + Sync;

/// What an [`Intervention`] does to the tensor `x` at its site (shape `S`).
enum Edit {
    Zero,
    Mean(Tensor),
    Add { vector: Tensor, scale: f64 },
    Replace(Tensor),
    Scale(f64),
    Map(Arc<MapFn>),
    TryMap(Arc<TryMapFn>),
}

// Given tensors are never written to, so copies may share them.
impl Clone for Edit {
    fn clone(&self) -> Self {
        match self {
            Edit::Zero => Edit::Zero,
            Edit::Mean(t) => Edit::Mean(t.shallow_clone()),
            Edit::Add { vector, scale } => Edit::Add {
                vector: vector.shallow_clone(),
                scale: *scale,
            },
            Edit::Replace(t) => Edit::Replace(t.shallow_clone()),
            Edit::Scale(s) => Edit::Scale(*s),
            Edit::Map(f) => Edit::Map(Arc::clone(f)),
            Edit::TryMap(f) => Edit::TryMap(Arc::clone(f)),
        }
    }
}

/// One change to the tensor at a site: the output of a module (the first tensor of a tuple, as
/// captures take), or its first positional input at `PATH:input`.
///
/// The kinds follow the field's names: zero- and mean-ablation, steering (add a vector), patching
/// (replace), scaling, and a closure for anything else. Each may be limited to token positions
/// (dim 1 of a `[batch, tokens, ...]` tensor) with [`at_positions`](Self::at_positions) and to a
/// slice of the last dim with [`on_features`](Self::on_features): outside that region the
/// tensor is left as it was.
///
/// Given tensors (a mean, a vector, a replacement) are converted to the site's dtype and device
/// when applied, and must broadcast to the site's shape (numpy's rules); the result always has the
/// site's shape, dtype and device.
///
/// **Single heads.** The input of an attention block's output projection (`o_proj` in Llama and
/// its kin, `attn.c_proj` in GPT-2, `attention.output.dense` in BERT, `attention.dense` in
/// GPT-NeoX) holds the heads' outputs side by side along its last dim, head `h` at features
/// `h * head_dim .. (h + 1) * head_dim`. So patching head 3 of GPT-2's block 5 (64-wide heads) is
/// a replace on a slice of that input:
///
/// ```
/// # use hooks_runtime::Intervention;
/// # use tch::Tensor;
/// # let clean = Tensor::zeros([1, 4, 768], (tch::Kind::Float, tch::Device::Cpu));
/// // `clean`: that input captured from the clean run (layer `h.5.attn.c_proj:input`).
/// let patch = Intervention::replace(clean).on_features(3 * 64..4 * 64);
/// // Interventions::new(&model, [("h.5.attn.c_proj:input", patch)])?;
/// ```
#[derive(Clone)]
pub struct Intervention {
    edit: Edit,
    positions: Option<Positions>,
    features: Option<Range<i64>>,
    /// The given tensor must have the site's shape exactly, not just broadcast to it (a patch).
    exact: bool,
}

impl fmt::Debug for Intervention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.edit {
            Edit::Zero => "zero".to_owned(),
            Edit::Mean(m) => format!("mean {:?}", m.size()),
            Edit::Add { vector, scale } => format!("add {:?} × {scale}", vector.size()),
            Edit::Replace(v) => format!("replace {:?}", v.size()),
            Edit::Scale(s) => format!("scale {s}"),
            Edit::Map(_) | Edit::TryMap(_) => "closure".to_owned(),
        };
        f.debug_struct("Intervention")
            .field("kind", &kind)
            .field("positions", &self.positions)
            .field("features", &self.features)
            .finish()
    }
}

impl Intervention {
    fn of(edit: Edit) -> Self {
        Intervention {
            edit,
            positions: None,
            features: None,
            exact: false,
        }
    }

    /// Zero-ablation: the tensor becomes zeros.
    #[must_use]
    pub fn zero() -> Self {
        Self::of(Edit::Zero)
    }

    /// Mean-ablation: the tensor becomes `mean`, broadcast to its shape (a `[hidden]` mean over a
    /// dataset's tokens, say, or a `[tokens, hidden]` mean per position).
    #[must_use]
    pub fn mean(mean: Tensor) -> Self {
        Self::of(Edit::Mean(mean.detach()))
    }

    /// Steering: `x + scale × vector`, the vector broadcast to the tensor's shape (a `[hidden]`
    /// vector is added at every position).
    #[must_use]
    pub fn add(vector: Tensor, scale: f64) -> Self {
        Self::of(Edit::Add {
            vector: vector.detach(),
            scale,
        })
    }

    /// Patching: the tensor becomes `value`, broadcast to its shape. With
    /// [`at_positions`](Self::at_positions), only those positions are taken from `value` (which
    /// can then be the whole tensor of another run).
    #[must_use]
    pub fn replace(value: Tensor) -> Self {
        Self::of(Edit::Replace(value.detach()))
    }

    /// `factor × x`.
    #[must_use]
    pub fn scale(factor: f64) -> Self {
        Self::of(Edit::Scale(factor))
    }

    /// Anything else: `f(x)` flows on. It must return a tensor of `x`'s shape (any dtype or
    /// device; it is converted back). A panic in `f` propagates out of the forward.
    #[must_use]
    pub fn map(f: impl Fn(&Tensor) -> Tensor + Send + Sync + 'static) -> Self {
        Self::of(Edit::Map(Arc::new(f)))
    }

    /// A closure that may fail or leave the tensor: `Ok(None)` lets `x` flow on untouched,
    /// `Ok(Some(y))` sends `y` on instead (of `x`'s shape; converted back to its dtype and
    /// device), and an `Err` ends the forward as a mismatched intervention does (see
    /// [`Interventions::run`]). What an attached module that reads a layer uses (a sparse
    /// autoencoder that only splices its output in when asked).
    #[must_use]
    pub fn try_map(f: impl Fn(&Tensor) -> Result<Option<Tensor>> + Send + Sync + 'static) -> Self {
        Self::of(Edit::TryMap(Arc::new(f)))
    }

    /// Limits the change to these token positions along dim 1 of a `[batch, tokens, ...]`
    /// tensor: Python indexes and slices ([`Positions`]; a list of `i64` is a list of indexes),
    /// negative ones counting from the end.
    ///
    /// The positions count within each sample when the run says where its samples sit
    /// ([`Interventions::set_positions`]): the extraction engine does, so `-1` is each item's
    /// last real token however its batch is padded, and generation does, so positions run over
    /// the prompt and then the generated tokens. A forward called directly counts within the
    /// tensor. Applying it to a tensor with fewer than 3 dims, or with an index out of range,
    /// fails the forward.
    #[must_use]
    pub fn at_positions(mut self, positions: impl Into<Positions>) -> Self {
        self.positions = Some(positions.into());
        self
    }

    /// Limits the change to features `range` of the last dim: one head's slice of an output
    /// projection's input, say (see the type's docs).
    #[must_use]
    pub fn on_features(mut self, range: Range<i64>) -> Self {
        self.features = Some(range);
        self
    }

    /// Requires the given tensor to have the site's shape exactly (the engine's patches).
    pub(crate) fn exact(mut self) -> Self {
        self.exact = true;
        self
    }

    /// Checks what can be checked before a forward.
    fn validate(&self, layer: &str) -> Result<()> {
        let invalid = |reason: String| Error::InvalidArgument {
            name: "intervention",
            reason: format!("on `{layer}`: {reason}"),
        };
        match &self.edit {
            Edit::Add { scale, .. } | Edit::Scale(scale) if !scale.is_finite() => {
                return Err(invalid(format!("the scale {scale} is not finite")));
            }
            _ => {}
        }
        if let Some(positions) = &self.positions {
            if positions.is_empty() {
                return Err(invalid(
                    "no positions given; leave them out to change every position".into(),
                ));
            }
        }
        if let Some(range) = &self.features {
            if range.start < 0 || range.end <= range.start {
                return Err(invalid(format!(
                    "the feature range {}..{} is empty or negative",
                    range.start, range.end
                )));
            }
        }
        Ok(())
    }

    /// The tensor that flows on in place of `x`, and whether the change covered any of it;
    /// `given` is [`given`](Self::given), converted to `x`'s dtype and device.
    fn apply(
        &self,
        x: &Tensor,
        given: Option<&Tensor>,
        layout: Option<&TokenPositions>,
        layer: &str,
    ) -> Result<(Tensor, bool)> {
        let shape = x.size();
        let mismatch = |reason: String| Error::EditMismatch {
            layer: layer.to_owned(),
            shape: shape.clone(),
            reason,
        };
        let broadcast = |t: &Tensor, what: &str| {
            if self.exact && t.size() != shape {
                return Err(mismatch(format!(
                    "the {what} has shape {:?}; it must be a tensor of the same layer, from a run of the same model",
                    t.size()
                )));
            }
            t.f_broadcast_to(shape.as_slice()).map_err(|_| {
                mismatch(format!(
                    "the {what} has shape {:?}, which does not broadcast to it; give a tensor of its shape or of its last dims",
                    t.size()
                ))
            })
        };
        let edited = match (&self.edit, given) {
            (Edit::Zero, _) => x.f_zeros_like()?,
            (Edit::Scale(factor), _) => x.f_mul_scalar(*factor)?,
            (Edit::Mean(_), Some(mean)) => broadcast(mean, "mean")?.f_contiguous()?,
            (Edit::Replace(_), Some(value)) => broadcast(value, "replacement")?.f_contiguous()?,
            (Edit::Add { scale, .. }, Some(vector)) => x.f_add(&broadcast(vector, "vector")?.f_mul_scalar(*scale)?)?,
            (Edit::Map(f), _) => {
                let out = f(x);
                if out.size() != shape {
                    return Err(mismatch(format!(
                        "the closure returned shape {:?}; it must return the shape it was given",
                        out.size()
                    )));
                }
                out.f_to_device(x.device())?.f_to_kind(x.kind())?
            }
            (Edit::TryMap(f), _) => match f(x)? {
                None => x.shallow_clone(),
                Some(out) => {
                    if out.size() != shape {
                        return Err(mismatch(format!(
                            "the closure returned shape {:?}; it must return the shape it was given",
                            out.size()
                        )));
                    }
                    out.f_to_device(x.device())?.f_to_kind(x.kind())?
                }
            },
            (Edit::Mean(_) | Edit::Replace(_) | Edit::Add { .. }, None) => {
                unreachable!("the editor passes the given tensor of every kind that has one")
            }
        };
        match self.region(x, &shape, layout).map_err(mismatch)? {
            Some((region, covered)) => Ok((edited.f_where_self(&region, x)?, covered)),
            None => Ok((edited, true)),
        }
    }

    /// Where the change applies, as a mask that broadcasts to `shape`, and whether it covers
    /// anything; `None` for everywhere. Positions count in `layout` when given, else in the
    /// tensor's dim 1.
    fn region(
        &self,
        x: &Tensor,
        shape: &[i64],
        layout: Option<&TokenPositions>,
    ) -> std::result::Result<Option<(Tensor, bool)>, String> {
        if self.positions.is_none() && self.features.is_none() {
            return Ok(None);
        }
        let device = x.device();
        let dims = shape.len();
        let mut mask = Tensor::ones([1], (Kind::Bool, device));
        let mut covered = true;
        if let Some(positions) = &self.positions {
            if dims < 3 {
                return Err(format!(
                    "positions need a `[batch, tokens, ...]` tensor, and this one has {dims} dims; leave positions out"
                ));
            }
            let whole;
            let layout = match layout {
                Some(layout) => layout,
                None => {
                    whole = TokenPositions::whole(usize::try_from(shape[0]).unwrap_or(0), shape[1]);
                    &whole
                }
            };
            let (rows, columns) = layout.shape();
            if i64::try_from(rows).ok() != Some(shape[0]) || i64::try_from(columns).ok() != Some(shape[1]) {
                return Err(format!(
                    "positions count over the batch's {rows} samples of {columns} tokens, and this tensor's first dims are not those (a layer without a batch axis, say); leave positions out, or limit a layer after it"
                ));
            }
            let keep = layout.mask(positions).map_err(|e| match e {
                Error::InvalidArgument { reason, .. } => reason,
                other => other.to_string(),
            })?;
            covered = keep.contains(&true);
            let mut view = vec![1i64; dims];
            view[0] = shape[0];
            view[1] = shape[1];
            mask = Tensor::from_slice(&keep).to_device(device).view(view.as_slice());
        }
        if let Some(range) = &self.features {
            let width = shape[dims - 1];
            if range.end > width {
                return Err(format!(
                    "features {}..{} reach past its last dim of {width}",
                    range.start, range.end
                ));
            }
            let keep: Vec<bool> = (0..width).map(|i| range.contains(&i)).collect();
            let mut view = vec![1i64; dims];
            view[dims - 1] = width;
            let features = Tensor::from_slice(&keep).to_device(device).view(view.as_slice());
            mask = mask.logical_and(&features);
        }
        Ok(Some((mask, covered)))
    }

    /// The tensor this intervention was given, if any.
    fn given(&self) -> Option<&Tensor> {
        match &self.edit {
            Edit::Mean(t) | Edit::Replace(t) | Edit::Add { vector: t, .. } => Some(t),
            Edit::Zero | Edit::Scale(_) | Edit::Map(_) | Edit::TryMap(_) => None,
        }
    }
}

/// A list of [`Intervention`]s bound to the capture sites of one model instance: while it is
/// enabled, every forward of that instance applies them. Dropping it removes them.
///
/// - **Scope.** Only the instance given to [`new`](Self::new) is changed; another instance of the
///   same model, on this thread or another, is not.
/// - **Order.** At one site, interventions apply in the order they were bound (within a list,
///   then across lists by creation), each to what the one before returned.
/// - **With captures.** A site runs its interventions first, then its captures: a store sees the
///   changed tensor, at that site and downstream.
/// - **With the capture switch.** The process-wide [`switch`](crate::switch) turns capture
///   off, never interventions: an enabled intervention applies whatever the switch says, since
///   skipping it would change results, not just cost. Use [`disable`](Self::disable) to run the
///   model unchanged.
/// - **Cost.** With no intervention enabled anywhere in the process, a site costs what it cost
///   before: one relaxed load. While one is enabled, every site checks its own list (one more
///   load) before doing nothing.
/// - **Errors.** An intervention that does not fit the tensor it meets (a vector of another
///   width) ends the forward: as an `Err` inside [`run`](Self::run) (and in the extraction
///   engine), as a panic with the same message when the forward was called directly.
///
/// ```
/// use hooks_runtime::{Intervention, Interventions, HookPoint, LayerTree, Walker};
/// use tch::Tensor;
///
/// struct Toy { resid: HookPoint }
/// impl LayerTree for Toy {
///     fn walk(&self, w: &mut Walker<'_>) { w.enter("resid", |w| self.resid.walk(w)) }
/// }
/// let toy = Toy { resid: HookPoint::new() };
/// let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
///
/// let edits = Interventions::new(&toy, [("resid", Intervention::scale(2.0))])?;
/// let y = edits.run(|| toy.resid.apply(x.shallow_clone()))?;
/// assert_eq!(Vec::<f32>::try_from(&y).unwrap(), [2.0, 4.0, 6.0]);
/// drop(edits);
/// assert!(toy.resid.apply(x.shallow_clone()).equal(&x));
/// # Ok::<(), hooks_runtime::Error>(())
/// ```
#[derive(Debug)]
pub struct Interventions {
    shared: Arc<Edits>,
}

#[derive(Debug)]
struct Edits {
    enabled: AtomicBool,
    /// The layer of each slot (a glob gives one slot per match).
    layers: Vec<String>,
    slots: Vec<Mutex<Slot>>,
    /// Where the samples of the forwards to come sit, for position-limited interventions.
    layout: Mutex<Option<TokenPositions>>,
}

#[derive(Debug)]
struct Slot {
    intervention: Intervention,
    /// The given tensor, converted to the dtype and device it last met.
    converted: Option<(Device, Kind, Tensor)>,
    /// Times applied since the last reset.
    applied: usize,
    /// Whether it has changed any position since it was bound (a position-limited one may meet
    /// only tensors that lack its positions).
    touched: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A slot is only ever replaced whole, so a panic elsewhere cannot leave it half-written.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Interventions {
    /// Binds `interventions` (layer path or glob, intervention) to `model`'s capture sites, and
    /// enables them. A path ending in `:input` ([`INPUT_SUFFIX`](crate::INPUT_SUFFIX)) targets
    /// the module's first positional input.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownLayer`] (with the closest names) or [`Error::NoMatch`] for a path the
    /// model lacks, [`Error::NoLayers`] for an empty list, [`Error::NotEditable`] for a site
    /// whose tensor does not flow on (attention probabilities computed for capture alone),
    /// [`Error::InvalidArgument`] for a non-finite scale, no positions or an empty feature range.
    pub fn new<M, L>(model: &M, interventions: impl IntoIterator<Item = (L, Intervention)>) -> Result<Self>
    where
        M: LayerTree + ?Sized,
        L: AsRef<str>,
    {
        let (available, aliases) = (model.site_names(), model.alias_names());
        let (mut layers, mut slots) = (Vec::new(), Vec::new());
        for (pattern, intervention) in interventions {
            for layer in resolve(&available, &aliases, [pattern.as_ref()])?.names {
                intervention.validate(&layer)?;
                layers.push(layer);
                slots.push(Mutex::new(Slot {
                    intervention: intervention.clone(),
                    converted: None,
                    applied: 0,
                    touched: false,
                }));
            }
        }
        if layers.is_empty() {
            return Err(Error::NoLayers);
        }
        let mut observer = None;
        walk_bindable(model, &mut |path, site| {
            if site.is_observer() && layers.iter().any(|l| l == path) {
                observer.get_or_insert_with(|| path.to_owned());
            }
        });
        if let Some(layer) = observer {
            return Err(Error::NotEditable {
                layer,
                reason:
                    "the model computes this tensor for capture alone, so changing it would change nothing downstream",
            });
        }
        let shared = Arc::new(Edits {
            enabled: AtomicBool::new(false),
            layers,
            slots,
            layout: Mutex::new(None),
        });
        let editor: Arc<dyn Editor> = shared.clone();
        let weak: Weak<dyn Editor> = Arc::downgrade(&editor);
        // One walk per intervention, so that a site reached by two names (an alias) still gets
        // its interventions in binding order.
        for (slot, layer) in shared.layers.iter().enumerate() {
            walk_bindable(model, &mut |path, site| {
                if layer == path {
                    site.add_editor(weak.clone(), slot);
                }
            });
        }
        let edits = Interventions { shared };
        edits.enable();
        Ok(edits)
    }

    /// The layer each intervention is bound to, globs expanded, in binding order.
    #[must_use]
    pub fn layers(&self) -> &[String] {
        &self.shared.layers
    }

    /// Replaces the intervention bound at `layer` (every one there) with `intervention`: the
    /// next forward applies the new one. For a value that changes between forwards (the patch
    /// for each batch, say) without binding again.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownLayer`] when nothing is bound at `layer`; as [`new`](Self::new) for an
    /// invalid intervention.
    pub fn set(&self, layer: &str, intervention: Intervention) -> Result<()> {
        intervention.validate(layer)?;
        let mut found = false;
        for (name, slot) in self.shared.layers.iter().zip(&self.shared.slots) {
            if name == layer {
                let mut slot = lock(slot);
                slot.intervention = intervention.clone();
                slot.converted = None;
                found = true;
            }
        }
        if found {
            Ok(())
        } else {
            Err(crate::select::unknown(layer, &self.shared.layers))
        }
    }

    /// Says where each column of the next forwards' `[batch, tokens, ...]` tensors sits in its
    /// own sequence, so that positions ([`Intervention::at_positions`]) count within each sample;
    /// `None` (the default) counts them within each tensor. The extraction engine sets it for
    /// every batch, and generation for every step.
    pub fn set_positions(&self, layout: Option<TokenPositions>) {
        *lock(&self.shared.layout) = layout;
    }

    /// The layers whose interventions have changed nothing since they were bound: never applied,
    /// or limited to positions that no tensor they met held (`30:` on short samples, or prompt
    /// positions in a generation that intervenes on generated ones only). Such an intervention
    /// is a silent no-op; callers say so.
    #[must_use]
    pub fn untouched(&self) -> Vec<String> {
        let mut untouched: Vec<String> = Vec::new();
        for (layer, slot) in self.shared.layers.iter().zip(&self.shared.slots) {
            if !lock(slot).touched && !untouched.contains(layer) {
                untouched.push(layer.clone());
            }
        }
        untouched
    }

    /// Whether any of them is limited to positions.
    #[must_use]
    pub fn uses_positions(&self) -> bool {
        self.shared
            .slots
            .iter()
            .any(|slot| lock(slot).intervention.positions.is_some())
    }

    /// Applies the interventions to every later forward of the model. New lists start enabled.
    pub fn enable(&self) {
        if !self.shared.enabled.swap(true, Ordering::SeqCst) {
            switch::edits_enabled();
        }
    }

    /// Stops applying them; the model computes as if they were not bound.
    pub fn disable(&self) {
        if self.shared.enabled.swap(false, Ordering::SeqCst) {
            switch::edits_disabled();
        }
    }

    /// Whether they apply.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.shared.enabled.load(Ordering::SeqCst)
    }

    /// Runs `forward` (a forward of the bound model) and returns what it returns, checking that
    /// every intervention applied at least once.
    ///
    /// # Errors
    ///
    /// [`Error::EditMismatch`] when an intervention did not fit its tensor (the forward stops
    /// there); [`Error::NeverApplied`] naming the layers whose interventions did not apply (the
    /// forward never passed them, or a `:input` of a module called without its input).
    pub fn run<R>(&self, forward: impl FnOnce() -> R) -> Result<R> {
        self.reset_counts();
        let out = crate::stop::catch_failure(forward)?;
        let never = self.never_applied();
        if self.is_enabled() && !never.is_empty() {
            return Err(Error::NeverApplied { layers: never });
        }
        Ok(out)
    }

    /// The layers whose interventions have not applied since the last reset.
    pub(crate) fn never_applied(&self) -> Vec<String> {
        let mut never: Vec<String> = Vec::new();
        for (layer, slot) in self.shared.layers.iter().zip(&self.shared.slots) {
            if lock(slot).applied == 0 && !never.contains(layer) {
                never.push(layer.clone());
            }
        }
        never
    }

    /// Forgets how many times each intervention applied.
    pub(crate) fn reset_counts(&self) {
        for slot in &self.shared.slots {
            lock(slot).applied = 0;
        }
    }
}

impl Drop for Interventions {
    fn drop(&mut self) {
        // The sites drop their weak references lazily; the count of enabled lists must be right
        // at once.
        self.disable();
    }
}

impl Editor for Edits {
    fn edit(&self, slot: usize, x: &Tensor) -> Result<Option<Tensor>> {
        let layer = &self.layers[slot];
        let mut slot = lock(&self.slots[slot]);
        let given = match slot.intervention.given() {
            Some(given) => {
                let (device, kind) = (x.device(), x.kind());
                let fresh = !matches!(&slot.converted, Some((d, k, _)) if *d == device && *k == kind);
                if fresh {
                    let converted = given.f_to_device(device)?.f_to_kind(kind)?;
                    slot.converted = Some((device, kind, converted));
                }
                slot.converted.as_ref().map(|(_, _, t)| t.shallow_clone())
            }
            None => None,
        };
        let layout = lock(&self.layout);
        let (out, covered) = slot.intervention.apply(x, given.as_ref(), layout.as_ref(), layer)?;
        slot.applied += 1;
        slot.touched |= covered;
        Ok(Some(out))
    }

    fn layer(&self, slot: usize) -> &str {
        &self.layers[slot]
    }

    fn active(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }
}
