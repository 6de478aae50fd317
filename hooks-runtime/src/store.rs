//! [`ActivationStore`]: which layers to capture, and what was captured.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tch::Tensor;

use crate::error::{Error, Result};
use crate::hookable::{walk_bindable, LayerTree, Walker};
use crate::host::{snapshot, InFlight};
use crate::rows::RowBuffer;
use crate::select::{resolve, Selection};
use crate::site::Sink;
use crate::switch;

/// What a store does when a selected layer fires again while enabled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CaptureMode {
    /// Keep the latest output (the reference `ActivationStore`'s behaviour).
    #[default]
    Replace,
    /// Append along dim 0, as extraction over batches needs. With `max_rows`, the buffer is
    /// allocated once at that size and rows past it are not copied.
    Accumulate {
        /// The most rows to keep; `None` grows the buffer as needed.
        max_rows: Option<usize>,
    },
    /// Keep every output since the last [`clear`](ActivationStore::clear), each as the layer
    /// gave it: detached, on its own device, not copied (read them with
    /// [`calls`](ActivationStore::calls)). A layer called twice in one forward (a shared module)
    /// leaves two tensors. What the extraction engine captures with; memory is held until
    /// `clear`.
    Every,
}

/// Captures the outputs of selected layers of a model, as detached CPU copies.
///
/// Bind it to a model with [`new`](Self::new); nothing is captured until [`enable`](Self::enable).
/// The store is `Send + Sync`. A model (tch tensors are not `Sync`) runs on one thread; to capture
/// from models on several threads, [`attach`](Self::attach) each instance to one store: every
/// capture of a selected layer from any attached instance lands in this store, in the order the
/// captures happen (with [`CaptureMode::Accumulate`], rows from different threads interleave by
/// batch). Two stores that select the same layer each get their own copy.
///
/// ```
/// use hooks_runtime::{ActivationStore, Hook, LayerTree, Walker};
/// use tch::{nn, nn::Module, Device, Kind, Tensor};
///
/// // `#[derive(Hookable)]` writes this impl (and `Hookable`); spelled out here to keep the
/// // example self-contained.
/// struct Net { fc: Hook<nn::Linear> }
/// impl LayerTree for Net {
///     fn walk(&self, w: &mut Walker<'_>) { w.enter("fc", |w| self.fc.walk(w)) }
/// }
/// let vs = nn::VarStore::new(Device::Cpu);
/// let net = Net { fc: Hook::new(nn::linear(vs.root() / "fc", 3, 2, Default::default())) };
///
/// let store = ActivationStore::new(&net, ["fc"])?;
/// store.enable();
/// let y = net.fc.forward(&Tensor::ones([1, 3], (Kind::Float, Device::Cpu)));
/// assert!(store.get("fc").unwrap().equal(&y));
/// # Ok::<(), hooks_runtime::Error>(())
/// ```
#[derive(Debug)]
pub struct ActivationStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    enabled: AtomicBool,
    mode: CaptureMode,
    names: Vec<String>,
    index: HashMap<String, usize>,
    slots: Vec<Mutex<Option<Captured>>>,
    /// When armed (by the extraction engine): how many outputs each layer gives per forward, so
    /// that the forward stops once all have come.
    stop: Mutex<Option<StopPlan>>,
    /// Errors met while capturing (a capture site cannot return one); surfaced by `check`.
    failures: Mutex<Vec<Error>>,
    /// CUDA devices that `Replace` captures may still be copying from.
    in_flight: InFlight,
}

/// When to stop a forward: once every layer has given `needed[layer]` outputs.
#[derive(Debug)]
struct StopPlan {
    needed: Vec<usize>,
    /// Layers still short of their count.
    pending: usize,
}

#[derive(Debug)]
enum Captured {
    /// The latest output.
    One(Tensor),
    /// Every output since the last `clear`, uncopied.
    Calls(Vec<Tensor>),
    /// Every output so far, stacked along dim 0.
    Rows(RowBuffer),
}

impl Captured {
    /// What was captured; the caller has waited for copies in flight to `One`.
    fn tensor(&mut self) -> Result<Option<Tensor>> {
        match self {
            Captured::One(t) => Ok(Some(t.shallow_clone())),
            Captured::Calls(calls) => Ok(calls.last().map(Tensor::shallow_clone)),
            Captured::Rows(rows) => rows.tensor(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section below computes its new value first and assigns it last, so a panic
    // inside one (say, libtorch running out of memory) leaves the old, consistent value.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ActivationStore {
    /// A store bound to `model`, selecting `layers`: exact layer paths, or globs where `*`
    /// matches within one segment (`encoder.layer.*.output`). `PATH:input` selects the first
    /// input of the module at `PATH` (what a PyTorch forward pre-hook sees), captured as the
    /// module receives it, after any intervention there.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownLayer`] for a path the model lacks (with the closest names),
    /// [`Error::NoMatch`] for a glob that matches nothing, [`Error::NoLayers`] for an empty list.
    pub fn new<M, L>(model: &M, layers: impl IntoIterator<Item = L>) -> Result<Self>
    where
        M: LayerTree + ?Sized,
        L: AsRef<str>,
    {
        Self::with_mode(model, layers, CaptureMode::Replace)
    }

    /// Like [`new`](Self::new), with a [`CaptureMode`].
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new); also [`Error::InvalidArgument`] for `max_rows: Some(0)`.
    pub fn with_mode<M, L>(model: &M, layers: impl IntoIterator<Item = L>, mode: CaptureMode) -> Result<Self>
    where
        M: LayerTree + ?Sized,
        L: AsRef<str>,
    {
        if mode == (CaptureMode::Accumulate { max_rows: Some(0) }) {
            return Err(Error::InvalidArgument {
                name: "max_rows",
                reason: "must be at least 1".into(),
            });
        }
        let Selection { names } = resolve(&model.site_names(), &model.alias_names(), layers)?;
        let index = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        let slots = names.iter().map(|_| Mutex::new(None)).collect();
        let store = ActivationStore {
            shared: Arc::new(Shared {
                enabled: AtomicBool::new(false),
                mode,
                names,
                index,
                slots,
                stop: Mutex::new(None),
                failures: Mutex::new(Vec::new()),
                in_flight: InFlight::default(),
            }),
        };
        store.subscribe(model);
        Ok(store)
    }

    /// Binds another instance of the model (one per thread, say) to this store.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownLayer`] when the instance lacks a selected layer (a shorter `Vec`).
    pub fn attach<M: LayerTree + ?Sized>(&self, model: &M) -> Result<()> {
        let mut present = model.site_names();
        present.extend(model.alias_names());
        if let Some(missing) = self.shared.names.iter().find(|n| !present.contains(n)) {
            return Err(crate::select::unknown(missing, &present));
        }
        self.subscribe(model);
        Ok(())
    }

    /// Removes this store from `model`'s capture sites; the captures stay.
    pub fn detach_from<M: LayerTree + ?Sized>(&self, model: &M) {
        let sink: Arc<dyn Sink> = self.shared.clone();
        model.walk(&mut Walker::with_inputs(&mut |_, site| site.unsubscribe(&sink)));
    }

    fn subscribe<M: LayerTree + ?Sized>(&self, model: &M) {
        let sink: Arc<dyn Sink> = self.shared.clone();
        let weak: Weak<dyn Sink> = Arc::downgrade(&sink);
        walk_bindable(model, &mut |path, site| {
            if let Some(&layer) = self.shared.index.get(path) {
                site.subscribe(weak.clone(), layer);
            }
        });
    }

    /// Starts capturing the selected layers. Calling it again does nothing.
    pub fn enable(&self) {
        if !self.shared.enabled.swap(true, Ordering::SeqCst) {
            switch::store_enabled();
        }
    }

    /// Stops capturing; what was captured stays.
    pub fn disable(&self) {
        if self.shared.enabled.swap(false, Ordering::SeqCst) {
            switch::store_disabled();
        }
    }

    /// Whether the store is capturing.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.shared.enabled.load(Ordering::SeqCst)
    }

    /// Drops what was captured; the store stays enabled or disabled as it was.
    pub fn clear(&self) {
        for slot in &self.shared.slots {
            *lock(slot) = None;
        }
        if let Some(plan) = lock(&self.shared.stop).as_mut() {
            plan.pending = plan.needed.len();
        }
        lock(&self.shared.failures).clear();
    }

    /// The selected layer paths, globs expanded, in the order given (a glob's matches in model
    /// order).
    #[must_use]
    pub fn layer_names(&self) -> &[String] {
        &self.shared.names
    }

    /// The mode this store captures in.
    #[must_use]
    pub fn mode(&self) -> CaptureMode {
        self.shared.mode
    }

    /// What `layer` captured (a CPU tensor sharing storage with the store), or `None`.
    ///
    /// Copies from CUDA still in flight are waited for first.
    #[must_use]
    pub fn get(&self, layer: &str) -> Option<Tensor> {
        let &i = self.shared.index.get(layer)?;
        self.shared.read(i)
    }

    /// Every output of `layer` since the last [`clear`](Self::clear), in call order, as the
    /// layer gave them (detached, on their device): in [`CaptureMode::Every`]. In the other
    /// modes, what [`get`](Self::get) returns, as the one element. Empty for a layer that was not
    /// selected or did not fire.
    #[must_use]
    pub fn calls(&self, layer: &str) -> Vec<Tensor> {
        let Some(&i) = self.shared.index.get(layer) else {
            return Vec::new();
        };
        if let Some(Captured::Calls(calls)) = &*lock(&self.shared.slots[i]) {
            return calls.iter().map(Tensor::shallow_clone).collect();
        }
        self.shared.read(i).into_iter().collect()
    }

    /// Whether another enabled store listens to one of `model`'s capture sites: it may want
    /// layers past this store's, so a forward must not stop early.
    pub(crate) fn shares_sites<M: LayerTree + ?Sized>(&self, model: &M) -> bool {
        let mine: Arc<dyn Sink> = self.shared.clone();
        let mut shared = false;
        model.walk(&mut Walker::with_inputs(&mut |_, site| {
            shared |= site.has_other_listener(&mine)
        }));
        shared
    }

    /// Arms (with `Some`) or disarms the early stop: once each selected layer has given
    /// `needed[i]` outputs since the last `clear`, the capture site that completes the set
    /// stops the forward, which must be running inside [`crate::stop::run_stoppable`]. Never
    /// armed in a build that cannot unwind; the caller checks [`shares_sites`](Self::shares_sites)
    /// first.
    pub(crate) fn stop_after(&self, needed: Option<&[usize]>) {
        let plan = needed.filter(|_| crate::stop::AVAILABLE).map(|needed| StopPlan {
            needed: needed.to_vec(),
            pending: needed.len(),
        });
        *lock(&self.shared.stop) = plan;
    }

    /// A snapshot of everything captured, in [`layer_names`](Self::layer_names) order, leaving
    /// out layers that captured nothing.
    #[must_use]
    pub fn activations(&self) -> Activations {
        let mut out = Activations::default();
        for (i, name) in self.shared.names.iter().enumerate() {
            if let Some(t) = self.shared.read(i) {
                out.insert(name.clone(), t);
            }
        }
        out
    }

    /// The selected layers that have captured nothing since creation or the last `clear`.
    #[must_use]
    pub fn never_fired(&self) -> Vec<String> {
        let names = self.shared.names.iter().zip(&self.shared.slots);
        names
            .filter(|(_, slot)| lock(slot).is_none())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Returns (and forgets) the first error met while capturing, if any. A capture site cannot
    /// return errors (a forward returns a tensor), so they wait here.
    ///
    /// # Errors
    ///
    /// The first capture error: [`Error::ShapeMismatch`] when accumulated outputs do not stack,
    /// or an [`Error::Torch`] from the copy.
    pub fn check(&self) -> Result<()> {
        let mut failures = lock(&self.shared.failures);
        if failures.is_empty() {
            Ok(())
        } else {
            let first = failures.remove(0);
            failures.clear();
            Err(first)
        }
    }
}

impl Drop for ActivationStore {
    fn drop(&mut self) {
        // Keeps the process-wide count of enabled stores right; the sites drop their weak
        // references to this store lazily.
        self.disable();
    }
}

impl Shared {
    /// Layer `i`'s capture, once every copy to it has landed. A failure to move staged copies
    /// into place waits in `failures` like any capture error.
    fn read(&self, i: usize) -> Option<Tensor> {
        self.in_flight.wait();
        let result = lock(&self.slots[i]).as_mut().map(Captured::tensor).transpose();
        result
            .unwrap_or_else(|e| {
                lock(&self.failures).push(e);
                None
            })
            .flatten()
    }
}

impl Sink for Shared {
    fn wants(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    fn record(&self, layer: usize, output: &Tensor) -> bool {
        let mut slot = lock(&self.slots[layer]);
        let result = match self.mode {
            CaptureMode::Every => {
                let output = output.detach();
                let calls = match &mut *slot {
                    Some(Captured::Calls(calls)) => {
                        calls.push(output);
                        calls.len()
                    }
                    _ => {
                        *slot = Some(Captured::Calls(vec![output]));
                        1
                    }
                };
                drop(slot);
                return self.complete(layer, calls);
            }
            CaptureMode::Replace => snapshot(output).map(|(t, device)| {
                self.in_flight.add(device);
                *slot = Some(Captured::One(t));
            }),
            CaptureMode::Accumulate { max_rows } => match &mut *slot {
                Some(Captured::Rows(rows)) => rows.push(output, &self.names[layer]),
                _ => {
                    let mut rows = RowBuffer::new(max_rows);
                    rows.push(output, &self.names[layer])
                        .map(|()| *slot = Some(Captured::Rows(rows)))
                }
            },
        };
        drop(slot);
        if let Err(e) = result {
            lock(&self.failures).push(e);
        }
        false
    }
}

impl Shared {
    /// Whether `layer`'s `calls`-th output this forward completes the armed stop plan.
    fn complete(&self, layer: usize, calls: usize) -> bool {
        let mut plan = lock(&self.stop);
        let Some(plan) = plan.as_mut() else {
            return false;
        };
        if plan.needed.get(layer) == Some(&calls) {
            plan.pending = plan.pending.saturating_sub(1);
        }
        plan.pending == 0
    }
}

/// Captured tensors by layer path, in selection order.
#[derive(Debug, Default)]
pub struct Activations {
    entries: Vec<(String, Tensor)>,
}

impl Activations {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `tensor` under `name`, replacing any tensor already there.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) {
        let name = name.into();
        match self.entries.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = tensor,
            None => self.entries.push((name, tensor)),
        }
    }

    /// The tensor under `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// `(name, tensor)` pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// How many tensors.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl IntoIterator for Activations {
    type Item = (String, Tensor);
    type IntoIter = std::vec::IntoIter<(String, Tensor)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<'a> IntoIterator for &'a Activations {
    type Item = (&'a str, &'a Tensor);
    type IntoIter = Box<dyn Iterator<Item = (&'a str, &'a Tensor)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl FromIterator<(String, Tensor)> for Activations {
    fn from_iter<I: IntoIterator<Item = (String, Tensor)>>(iter: I) -> Self {
        let mut out = Activations::new();
        for (n, t) in iter {
            out.insert(n, t);
        }
        out
    }
}
