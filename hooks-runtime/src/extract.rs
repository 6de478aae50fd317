//! The extraction engine: runs a model over items of any length, batched by length, and gives one
//! row per item, in input order, for every selected layer.
//!
//! [`Extractor`] is the engine; [`BatchForward`] is what it needs of a model (a forward over a
//! right-padded batch and its mask); [`Unmasked`] adapts any tch `ModuleT` that takes ids alone;
//! [`extract_representations`] is the one-call form for such a model.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tch::{nn::ModuleT, Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::hookable::{LayerTree, Walker};
use crate::intervene::{Intervention, Interventions};
use crate::pool::{normalize, zero_padding, Pool};
use crate::positions::TokenPositions;
use crate::stop::{catch_failure, run_stoppable};
use crate::store::{ActivationStore, Activations, CaptureMode};

/// What the engine needs of a model: a forward over a batch of right-padded token ids.
///
/// `hooks_models` implements it for `dyn TextModel`; [`Unmasked`] implements it for any tch
/// `ModuleT` over ids alone. Outputs reach the engine through the model's capture sites; what
/// the forward returns is not used.
pub trait BatchForward: LayerTree {
    /// Runs the model on `input_ids` and `attention_mask`, both `[batch, tokens]` `Int64` CPU
    /// tensors, right-padded (`1` for a real token, then `0`s) with [`pad_id`](Self::pad_id).
    /// The implementation moves them to the model's device.
    ///
    /// # Errors
    ///
    /// Whatever the model reports (as [`Error::Model`], say).
    fn forward_batch(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<()>;

    /// The id at padding positions, or `None` when the model takes no attention mask: then the
    /// engine batches only items of one length together, and nothing is ever padded.
    fn pad_id(&self) -> Option<i64>;
}

/// A tch `ModuleT` over token ids alone (`forward_t(ids, false)`), as a [`BatchForward`] without
/// a mask: the engine never pads its batches.
#[derive(Debug)]
pub struct Unmasked<'a, M: ?Sized> {
    model: &'a M,
    device: Device,
}

impl<'a, M: LayerTree + ModuleT + ?Sized> Unmasked<'a, M> {
    /// `model`, whose weights live on `device` (batches are moved there).
    pub fn new(model: &'a M, device: Device) -> Self {
        Unmasked { model, device }
    }
}

impl<M: LayerTree + ModuleT + ?Sized> LayerTree for Unmasked<'_, M> {
    fn walk(&self, walker: &mut Walker<'_>) {
        self.model.walk(walker);
    }
}

impl<M: LayerTree + ModuleT + ?Sized> BatchForward for Unmasked<'_, M> {
    fn forward_batch(&self, input_ids: &Tensor, _attention_mask: &Tensor) -> Result<()> {
        let _ = self.model.forward_t(&input_ids.f_to_device(self.device)?, false);
        Ok(())
    }

    fn pad_id(&self) -> Option<i64> {
        None
    }
}

/// One input of the engine: the token ids of its real tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    ids: Vec<i64>,
}

impl Item {
    /// An item of `ids`, all real tokens.
    pub fn new(ids: impl Into<Vec<i64>>) -> Self {
        Item { ids: ids.into() }
    }

    /// An item given with its own attention mask, as a padding tokenizer writes one: the mask
    /// must have one 0/1 entry per id and be right-padded (1s, then 0s); the padded ids are
    /// dropped.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] (`attention_mask`) when the lengths differ, an entry is not 0
    /// or 1, a 1 follows a 0 (left padding), or no entry is 1.
    pub fn with_mask(ids: impl Into<Vec<i64>>, attention_mask: &[i64]) -> Result<Self> {
        let mut ids = ids.into();
        let bad = |reason: String| Error::InvalidArgument {
            name: "attention_mask",
            reason,
        };
        if attention_mask.len() != ids.len() {
            return Err(bad(format!(
                "has {} entries for {} ids; give one per id",
                attention_mask.len(),
                ids.len()
            )));
        }
        if let Some(v) = attention_mask.iter().find(|&&v| v != 0 && v != 1) {
            return Err(bad(format!("holds {v}; entries are 1 (a token) or 0 (padding)")));
        }
        let real = attention_mask.iter().take_while(|&&v| v == 1).count();
        if attention_mask[real..].contains(&1) {
            return Err(bad(
                "is left-padded (a 1 follows a 0); give right-padded ids (`tokenizer.padding_side = \"right\"`)".into(),
            ));
        }
        if real == 0 {
            return Err(bad("marks no real token; give at least one".into()));
        }
        ids.truncate(real);
        Ok(Item { ids })
    }

    /// The ids of the real tokens.
    #[must_use]
    pub fn ids(&self) -> &[i64] {
        &self.ids
    }
}

impl From<Vec<i64>> for Item {
    fn from(ids: Vec<i64>) -> Self {
        Item::new(ids)
    }
}

impl From<&[i64]> for Item {
    fn from(ids: &[i64]) -> Self {
        Item::new(ids)
    }
}

/// What the engine does with a selected layer that fires more than once in one forward (a
/// module shared by two branches, say).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Repeats {
    /// Refuse: [`Error::FiredMore`] names the layer and how often it fired. No silent choice.
    #[default]
    Error,
    /// Keep the last call's output.
    Last,
    /// Keep every call, stacked on a new axis after the batch: `[samples, calls, ...]`, each
    /// call pooled first.
    Stack,
}

/// The batches of items sorted longest first, given their `lengths` in that order: consecutive
/// runs of at most `batch_size` items and (with `batch_tokens`) at most that many token positions
/// (items × the run's first, longest, length), and cut before an item shorter than half the
/// run's width, so that no item is padded to more than twice its length. One long document among
/// short ones then runs alone, instead of padding a whole batch of them to its length.
#[must_use]
pub fn length_batches(
    lengths: &[usize],
    batch_size: usize,
    batch_tokens: Option<usize>,
) -> Vec<std::ops::Range<usize>> {
    cut_batches(lengths, batch_size, batch_tokens, false)
}

/// [`length_batches`]; with `one_length`, also cut wherever the length changes.
fn cut_batches(
    lengths: &[usize],
    batch_size: usize,
    batch_tokens: Option<usize>,
    one_length: bool,
) -> Vec<std::ops::Range<usize>> {
    let mut batches = Vec::new();
    let mut start = 0;
    for (at, &len) in lengths.iter().enumerate() {
        let count = at - start;
        let width = lengths[start];
        let full = count == batch_size
            || (count > 0 && batch_tokens.is_some_and(|budget| (count + 1) * width > budget))
            || (count > 0 && len * 2 < width)
            || (one_length && len != width);
        if full {
            batches.push(start..at);
            start = at;
        }
    }
    batches.push(start..lengths.len());
    batches
}

/// The extraction engine's settings; [`run`](Self::run) runs it.
///
/// Items of any length are sorted by length (longest first) and cut into batches of at most
/// [`batch_size`](Self::batch_size) items and, with [`batch_tokens`](Self::batch_tokens), at
/// most that many token positions (items × the batch's longest), and never padding an item to
/// more than twice its length ([`length_batches`]); each batch is padded to its own longest
/// item. The result has one row per item, in input order, whatever the batching:
///
/// - an output without a batch axis (`[1, ...]`, like BERT's `position_embeddings`) is broadcast
///   to the batch, as TransformerLens does;
/// - outputs with a token axis are pooled with [`pool`](Self::pool) over each item's real tokens;
///   unpooled, they hold zeros past each item's length, up to the longest item (on both token
///   axes of an attention pattern), so that no value depends on the batch an item ran in;
/// - a layer that fires more than once per forward is an error, unless
///   [`repeats`](Self::repeats) says otherwise.
///
/// Once every selected layer has given its outputs, the rest of the forward does not run
/// ([`stop_early`](Self::stop_early), on by default): capturing `encoder.layer.1` does not pay
/// for the layers after it. A first forward over the shortest item alone runs whole, to learn
/// how many outputs each layer gives per forward.
///
/// ```
/// use hooks_runtime::{BatchForward, Extractor, HookPoint, Item, LayerTree, Pool, Result, Walker};
/// use tch::{Kind, Tensor};
///
/// /// Embeds each id as `[id, 2 * id]` and captures it as `embed`.
/// struct Toy { embed: HookPoint }
/// impl LayerTree for Toy {
///     fn walk(&self, w: &mut Walker<'_>) { w.enter("embed", |w| self.embed.walk(w)) }
/// }
/// impl BatchForward for Toy {
///     fn forward_batch(&self, ids: &Tensor, _mask: &Tensor) -> Result<()> {
///         let x = ids.to_kind(Kind::Float).unsqueeze(-1);
///         self.embed.apply(Tensor::cat(&[&x, &(&x * 2.0)], -1));
///         Ok(())
///     }
///     fn pad_id(&self) -> Option<i64> { Some(0) }
/// }
///
/// let items = [Item::new([1, 3]), Item::new([4, 5, 6])];
/// let out = Extractor::new().pool(Pool::Mean).run(&Toy { embed: HookPoint::new() }, &["embed"], &items)?;
/// let mean = out.activations.get("embed").unwrap();
/// assert_eq!(*mean, Tensor::from_slice(&[2.0f32, 4.0, 5.0, 10.0]).view([2, 2]));
/// # Ok::<(), hooks_runtime::Error>(())
/// ```
#[derive(Debug)]
pub struct Extractor {
    batch_size: usize,
    batch_tokens: Option<usize>,
    max_length: Option<usize>,
    pool: Pool,
    normalize: bool,
    repeats: Repeats,
    stop_early: bool,
    progress: bool,
    window: usize,
    interrupt: Option<Arc<AtomicBool>>,
    interventions: Vec<(String, Intervention)>,
    patches: Vec<(String, Tensor)>,
    patch_offset: usize,
}

impl Default for Extractor {
    fn default() -> Self {
        Extractor {
            batch_size: 32,
            batch_tokens: None,
            max_length: None,
            pool: Pool::None,
            normalize: false,
            repeats: Repeats::Error,
            stop_early: true,
            progress: false,
            window: 512,
            interrupt: None,
            interventions: Vec::new(),
            patches: Vec::new(),
            patch_offset: 0,
        }
    }
}

// `Tensor` is `Send` but not `Sync` or `Clone`; the patches are only read (and shallow-cloned).
impl Clone for Extractor {
    fn clone(&self) -> Self {
        Extractor {
            interrupt: self.interrupt.clone(),
            interventions: self.interventions.clone(),
            patches: self
                .patches
                .iter()
                .map(|(l, t)| (l.clone(), t.shallow_clone()))
                .collect(),
            ..*self
        }
    }
}

/// What [`Extractor::run`] gives back.
#[derive(Debug)]
pub struct Extracted {
    /// Each selected layer, one row per item in input order, in selection order.
    pub activations: Activations,
    /// `[items, longest]` `Int64`: each item's ids, then the pad id (0 for a model without a
    /// mask).
    pub input_ids: Tensor,
    /// `[items, longest]` `Int64`: 1 for a real token, 0 for padding.
    pub attention_mask: Tensor,
    /// The selected layers a pooling was asked for but whose output it does not reduce
    /// ([`Pool::reduces`]: BERT's pooler, attention patterns, ids): kept whole.
    pub unpooled: Vec<String>,
    /// How many items were longer than the maximum length and were cut to it.
    pub truncated: usize,
    /// Counts and times of the run.
    pub stats: Stats,
}

/// What [`Extractor::run_into`] gives back: the rows went to the sink.
#[derive(Debug)]
pub struct Report {
    /// As [`Extracted::unpooled`].
    pub unpooled: Vec<String>,
    /// As [`Extracted::truncated`] (of the items run, not those skipped).
    pub truncated: usize,
    /// Counts and times of the items run.
    pub stats: Stats,
}

/// Counts and times of one [`Extractor::run`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stats {
    /// Items run.
    pub samples: usize,
    /// Their real tokens.
    pub tokens: usize,
    /// Token positions the batches computed (real tokens plus padding; the first forward over
    /// the shortest item, run to count each layer's outputs, not included).
    pub positions: usize,
    /// Forward passes, the first one whole included.
    pub forwards: usize,
    /// Time in the forwards.
    pub forward_time: Duration,
    /// Time of the whole run.
    pub total_time: Duration,
}

impl Extractor {
    /// How many token positions (padded) a window of [`run_into`](Self::run_into) holds per
    /// item of its [`window`](Self::window) size.
    pub const WINDOW_POSITIONS_PER_ITEM: usize = 8;

    /// The defaults: batches of 32, no token budget, no truncation, no pooling, repeats refused,
    /// early stop on, no progress bar.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// At most `n` items per forward (at least 1).
    #[must_use]
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// At most `n` token positions per forward: items × the batch's longest. An item longer
    /// than `n` runs alone. `None`: no budget.
    #[must_use]
    pub fn batch_tokens(mut self, n: Option<usize>) -> Self {
        self.batch_tokens = n;
        self
    }

    /// Cut items to their first `n` ids (the count is [`Extracted::truncated`]). `None`: items
    /// run whole, and the model refuses any past its positions.
    #[must_use]
    pub fn max_length(mut self, n: Option<usize>) -> Self {
        self.max_length = n;
        self
    }

    /// How to reduce outputs' token axis.
    #[must_use]
    pub fn pool(mut self, pool: Pool) -> Self {
        self.pool = pool;
        self
    }

    /// Scale pooled rows to unit L2 length (sentence-transformers' `Normalize`).
    #[must_use]
    pub fn normalize(mut self, on: bool) -> Self {
        self.normalize = on;
        self
    }

    /// What to do with a layer that fires more than once per forward.
    #[must_use]
    pub fn repeats(mut self, repeats: Repeats) -> Self {
        self.repeats = repeats;
        self
    }

    /// Whether forwards stop once every selected layer has fired (on by default).
    ///
    /// A forward is left by unwinding from the capture site that completes the set to the
    /// engine (Rust frames only; see the crate's `stop` module): tensors on the way are dropped
    /// as on an early return. A model whose forward holds a `Mutex` guard or a `RefCell` borrow
    /// across its sub-modules would find it poisoned or released; turn the early stop off for
    /// such a model. Built with `panic = "abort"`, nothing stops early.
    #[must_use]
    pub fn stop_early(mut self, on: bool) -> Self {
        self.stop_early = on;
        self
    }

    /// At most `n` items per window of [`run_into`](Self::run_into) (default 512), and at most
    /// `8 × n` token positions once padded to the window's longest (4096 by default: for the
    /// six block outputs of MiniLM, unpooled, 38 MB).
    #[must_use]
    pub fn window(mut self, n: usize) -> Self {
        self.window = n;
        self
    }

    /// A flag (set by a signal handler, say) checked before every batch: once it is `true` the
    /// run stops with [`Error::Interrupted`], between batches, and a sink has received only
    /// whole windows.
    #[must_use]
    pub fn interrupt(mut self, flag: Arc<AtomicBool>) -> Self {
        self.interrupt = Some(flag);
        self
    }

    /// Applies `intervention` at `layer` (a path or glob; `PATH:input` for a module's input) in
    /// every forward of the run, as [`Interventions`] binds it; repeatable. Captures downstream,
    /// and at `layer` itself, see the changed tensor. Positions count within each item: `-1`
    /// is each item's last real token, however its batch is padded, and an index past an
    /// item's end fails the run.
    ///
    /// An intervention that does not fit (a vector of another width) fails the run before any
    /// row is handed over; one that never applies in a whole forward fails it with
    /// [`Error::NeverApplied`].
    #[must_use]
    pub fn intervene(mut self, layer: impl Into<String>, intervention: Intervention) -> Self {
        self.interventions.push((layer.into(), intervention));
        self
    }

    /// Activation patching from another run of the same items: `layer`'s tensor is replaced, in
    /// every forward, by `source`'s rows for the batch's items. `source` is `[items, tokens,
    /// ...]`, one row per item in input order, padded at the end of the token axis (what
    /// [`run`](Self::run) with [`Pool::None`] gives); each batch takes its first `tokens` of the
    /// batch's width. Repeatable, one per layer.
    ///
    /// The run fails with [`Error::InvalidArgument`] when `source` has another number of rows
    /// than the items or fewer positions than a batch needs, and with [`Error::EditMismatch`]
    /// when its trailing dims differ from the layer's.
    #[must_use]
    pub fn patch(mut self, layer: impl Into<String>, source: Tensor) -> Self {
        self.patches.push((layer.into(), source));
        self
    }

    /// The items of a run are the patch sources' rows from `first` on: a shard of the input the
    /// sources were made from. The sources then need at least `first + items` rows (rather than
    /// exactly `items`).
    #[must_use]
    pub fn patch_offset(mut self, first: usize) -> Self {
        self.patch_offset = first;
        self
    }

    /// Whether to show a progress bar (samples/s, tokens/s, ETA) on stderr when it is a
    /// terminal. Elsewhere nothing is drawn; [`Extracted::stats`] has the figures.
    #[must_use]
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// Runs `model` over `items` and returns `layers`' outputs: exact paths or globs, as
    /// [`ActivationStore::new`] takes them. All items form one window: the result is in memory.
    ///
    /// Runs under `no_grad`, in eval (tch's modules take train/eval per call).
    ///
    /// # Errors
    ///
    /// [`Error::EmptyDataset`]; [`Error::InvalidArgument`] for a zero batch size, token budget
    /// or maximum length, or an item with no ids; the store's selection errors;
    /// [`Error::NeverFired`] naming selected layers that gave nothing; [`Error::FiredMore`] for a
    /// layer that fired more than once per forward under [`Repeats::Error`];
    /// [`Error::BatchRows`] for an output whose first dim is neither the batch nor 1;
    /// [`Error::ShapeMismatch`] when a layer's outputs differ between batches past their token
    /// axes; [`Error::Interrupted`] when the [`interrupt`](Self::interrupt) flag is raised;
    /// whatever the model's forward reports.
    pub fn run<M, L>(&self, model: &M, layers: &[L], items: &[Item]) -> Result<Extracted>
    where
        M: BatchForward + ?Sized,
        L: AsRef<str>,
    {
        let start = Instant::now();
        self.check()?;
        if items.is_empty() {
            return Err(Error::EmptyDataset);
        }
        let mut session = Session::start(self, model, layers, items)?;
        let window = session.window(items, 0)?;
        let (stats, unpooled, truncated) = session.finish(start);
        Ok(Extracted {
            activations: window.activations,
            input_ids: window.input_ids,
            attention_mask: window.attention_mask,
            unpooled,
            truncated,
            stats,
        })
    }

    /// Runs `model` over `items` window by window and hands each window's rows, in input order,
    /// to `sink`: memory holds two windows (one running, one being written), whatever the number
    /// of items. A window is at most [`window`](Self::window) items, and at most that many times
    /// 8 token positions once padded to its longest item; items are sorted by length within it. Windows depend only on
    /// the items' lengths and these settings, so a rerun cuts the same windows (and runs the
    /// same batches).
    ///
    /// `skip` items are counted as already done (a resumed run): windows are cut from the start
    /// of `items` as in a full run, and those wholly within the first `skip` items are not run.
    /// `skip` must fall on a window boundary, as a sink that writes whole windows records.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run), plus the sink's; [`Error::InvalidArgument`] for a `skip` that is
    /// not a window boundary.
    pub fn run_into<M, L>(
        &self,
        model: &M,
        layers: &[L],
        items: &[Item],
        skip: usize,
        sink: &mut (dyn ActivationSink + Send),
    ) -> Result<Report>
    where
        M: BatchForward + ?Sized,
        L: AsRef<str>,
    {
        let start = Instant::now();
        self.check()?;
        if items.is_empty() {
            return Err(Error::EmptyDataset);
        }
        let windows = self.windows(items);
        if skip != 0 && skip != items.len() && !windows.iter().any(|w| w.start == skip) {
            return Err(Error::InvalidArgument {
                name: "skip",
                reason: format!("{skip} items is not a window boundary of this input; start the run again"),
            });
        }
        let todo: Vec<_> = windows.into_iter().filter(|w| w.start >= skip).collect();
        let mut session = Session::start(self, model, layers, items)?;
        session.progress.skip(skip);
        // The sink takes each window on a thread of its own while the next window runs: writing
        // and syncing overlap the forwards. The channel holds nothing (a hand-over), so memory
        // holds two windows at most: one running, one being written.
        let ran = std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Window)>(0);
            let writer = scope.spawn(move || -> Result<()> {
                for (first, window) in rx {
                    sink.write(&Chunk {
                        first,
                        activations: &window.activations,
                        input_ids: &window.input_ids,
                        attention_mask: &window.attention_mask,
                    })?;
                }
                Ok(())
            });
            let mut ran = Ok(());
            for range in todo {
                match session.window(&items[range.clone()], range.start) {
                    // A closed channel means the writer stopped on an error: it says which.
                    Ok(window) => {
                        if tx.send((range.start, window)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        ran = Err(e);
                        break;
                    }
                }
            }
            // Windows already handed over are written before the run ends, even on an error.
            drop(tx);
            let written = writer.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            written.and(ran)
        });
        ran?;
        let (stats, unpooled, truncated) = session.finish(start);
        Ok(Report {
            unpooled,
            truncated,
            stats,
        })
    }

    /// The windows [`run_into`](Self::run_into) cuts `items` into: consecutive ranges, cut
    /// greedily from the start, so that cutting again from any window's start gives the same
    /// windows after it (which is what lets a resumed run or a shard cut the windows a whole run
    /// cuts).
    #[must_use]
    pub fn windows(&self, items: &[Item]) -> Vec<std::ops::Range<usize>> {
        let max_length = self.max_length.unwrap_or(usize::MAX);
        let budget = self.window.saturating_mul(Self::WINDOW_POSITIONS_PER_ITEM);
        let mut windows = Vec::new();
        let (mut start, mut longest) = (0, 0);
        for (i, item) in items.iter().enumerate() {
            let len = item.ids.len().min(max_length);
            let n = i - start;
            if n > 0 && (n == self.window || (n + 1) * longest.max(len) > budget) {
                windows.push(start..i);
                (start, longest) = (i, 0);
            }
            longest = longest.max(len);
        }
        windows.push(start..items.len());
        windows
    }

    fn check(&self) -> Result<()> {
        let positive = [
            ("batch_size", Some(self.batch_size)),
            ("batch_tokens", self.batch_tokens),
            ("max_length", self.max_length),
            ("window", Some(self.window)),
        ];
        for (name, value) in positive {
            if value == Some(0) {
                return Err(Error::InvalidArgument {
                    name,
                    reason: "must be at least 1".into(),
                });
            }
        }
        Ok(())
    }

    /// Binds the interventions and patches to `model`, checking each patch's rows against the
    /// `items` count; `None` when there are none.
    fn bind_edits<M: LayerTree + ?Sized>(&self, model: &M, items: usize) -> Result<Option<Interventions>> {
        if self.interventions.is_empty() && self.patches.is_empty() {
            return Ok(None);
        }
        for (layer, source) in &self.patches {
            let rows = source.size();
            let first = self.patch_offset;
            let fits = rows.first().and_then(|&n| usize::try_from(n).ok()).is_some_and(|n| {
                if first == 0 {
                    n == items
                } else {
                    n >= first + items
                }
            });
            if rows.len() < 2 || !fits {
                return Err(Error::InvalidArgument {
                    name: "patch",
                    reason: format!(
                        "the patch for `{layer}` has shape {rows:?}, and needs `[{}, tokens, ...]`: one row per item, from a run of the same items without pooling",
                        first + items
                    ),
                });
            }
            if layer.contains('*') {
                return Err(Error::InvalidArgument {
                    name: "patch",
                    reason: format!("`{layer}`: a patch names one layer, not a pattern"),
                });
            }
        }
        let patches = self
            .patches
            .iter()
            .map(|(layer, source)| (layer.clone(), Intervention::replace(source.shallow_clone()).exact()));
        let all = self.interventions.iter().cloned().chain(patches);
        Interventions::new(model, all).map(Some)
    }

    /// Every layer fired, and fired once unless repeats are allowed.
    fn check_counts(&self, names: &[String], counts: &[usize]) -> Result<()> {
        let never: Vec<String> = names
            .iter()
            .zip(counts)
            .filter(|(_, &c)| c == 0)
            .map(|(n, _)| n.clone())
            .collect();
        if !never.is_empty() {
            return Err(Error::NeverFired { layers: never });
        }
        if self.repeats == Repeats::Error {
            if let Some((layer, &times)) = names.iter().zip(counts).find(|(_, &c)| c > 1) {
                return Err(Error::FiredMore {
                    layer: layer.clone(),
                    times,
                });
            }
        }
        Ok(())
    }

    /// Consecutive runs of `order` (longest first) that form the batches ([`length_batches`]).
    /// Without a mask, a batch holds one length only.
    fn plan(&self, order: &[usize], lengths: &[usize], one_length: bool) -> Vec<std::ops::Range<usize>> {
        let sorted: Vec<usize> = order.iter().map(|&i| lengths[i]).collect();
        cut_batches(&sorted, self.batch_size, self.batch_tokens, one_length)
    }

    /// One layer's rows for this batch: the calls chosen per [`Repeats`], each broadcast to the
    /// batch and pooled; and whether pooling applied.
    fn rows(&self, name: &str, calls: Vec<Tensor>, batch: i64, mask: &Tensor) -> Result<(Tensor, bool)> {
        let calls = match self.repeats {
            Repeats::Last => calls.into_iter().last().into_iter().collect(),
            Repeats::Error | Repeats::Stack => calls,
        };
        let mut pooled = true;
        let mut parts = Vec::with_capacity(calls.len());
        for call in calls {
            let call = per_sample(call, batch, name)?;
            pooled &= Pool::reduces(&call, mask);
            let part = if self.pool == Pool::None || !Pool::reduces(&call, mask) {
                zero_padding(&call, mask)?
            } else if self.normalize {
                normalize(&self.pool.apply(&call, mask)?)?
            } else {
                self.pool.apply(&call, mask)?
            };
            parts.push(part.f_to_device(Device::Cpu)?);
        }
        let part = match (self.repeats, parts.pop()) {
            (Repeats::Stack, Some(last)) => {
                parts.push(last);
                Tensor::f_stack(&parts, 1)?
            }
            (_, Some(only)) => only,
            (_, None) => unreachable!("every layer fired: checked before"),
        };
        Ok((part, pooled))
    }
}

/// One window's rows, in input order.
#[derive(Debug)]
struct Window {
    activations: Activations,
    input_ids: Tensor,
    attention_mask: Tensor,
}

/// A run in progress: the store bound to the model, what the first whole forward learnt, the
/// counts so far.
struct Session<'a, M: ?Sized> {
    settings: &'a Extractor,
    model: &'a M,
    store: ActivationStore,
    /// The run's interventions and patches, bound to the model.
    edits: Option<Interventions>,
    names: Vec<String>,
    /// How many outputs each layer gives per forward: the early stop's plan.
    needed: Option<Vec<usize>>,
    stats: Stats,
    unpooled: Vec<String>,
    truncated: usize,
    progress: Progress,
}

impl<'a, M: BatchForward + ?Sized> Session<'a, M> {
    /// Binds the store and, with the early stop, runs the shortest of `items` alone, whole.
    fn start<L: AsRef<str>>(settings: &'a Extractor, model: &'a M, layers: &[L], items: &[Item]) -> Result<Self> {
        let store = ActivationStore::with_mode(model, layers, CaptureMode::Every)?;
        let names = store.layer_names().to_vec();
        let max_length = settings.max_length.unwrap_or(usize::MAX);
        let lengths: Vec<usize> = items.iter().map(|item| item.ids.len().min(max_length)).collect();
        check_lengths(&lengths, 0)?;
        let edits = settings.bind_edits(model, items.len())?;
        let mut session = Session {
            settings,
            model,
            store,
            edits,
            names,
            needed: None,
            stats: Stats::default(),
            unpooled: Vec::new(),
            truncated: 0,
            progress: Progress::new(settings.progress, items.len(), lengths.iter().sum()),
        };
        if settings.stop_early && crate::stop::AVAILABLE {
            if let Some(shortest) = (0..items.len()).min_by_key(|&i| lengths[i]) {
                let feed = Feed {
                    items,
                    lengths: &lengths,
                    pad_id: model.pad_id().unwrap_or(0),
                };
                let (ids, mask) = feed.batch(&[shortest])?;
                let _no_grad = tch::no_grad_guard();
                session.set_patches(&[settings.patch_offset + shortest], ids.size()[1])?;
                session.set_layout(&[shortest], &lengths, ids.size()[1]);
                session.store.enable();
                let forward = Instant::now();
                let result = catch_failure(|| model.forward_batch(&ids, &mask));
                session.stats.forward_time += forward.elapsed();
                session.stats.forwards += 1;
                session.store.disable();
                result??;
                session.store.check()?;
                session.check_applied()?;
                let counts: Vec<usize> = session.names.iter().map(|n| session.store.calls(n).len()).collect();
                settings.check_counts(&session.names, &counts)?;
                session.store.clear();
                session.needed = Some(counts);
            }
        }
        Ok(session)
    }

    /// Sets each patch to `members`' rows of its source (indices into the whole input), cut to
    /// `width` positions, and forgets how often each intervention applied.
    fn set_patches(&self, members: &[usize], width: i64) -> Result<()> {
        let Some(edits) = &self.edits else {
            return Ok(());
        };
        edits.reset_counts();
        for (layer, source) in &self.settings.patches {
            let positions = source.size().get(1).copied().unwrap_or(0);
            if positions < width {
                return Err(Error::InvalidArgument {
                    name: "patch",
                    reason: format!(
                        "the patch for `{layer}` holds {positions} token positions, and a batch needs {width}; make it from the same items with the same maximum length"
                    ),
                });
            }
            let rows = Tensor::from_slice(&members.iter().map(|&i| i as i64).collect::<Vec<_>>());
            let value = source.f_index_select(0, &rows)?.f_narrow(1, 0, width)?;
            edits.set(layer, Intervention::replace(value).exact())?;
        }
        Ok(())
    }

    /// Tells position-limited interventions where `members`' tokens sit in a right-padded batch
    /// of `width` columns: positions count within each item.
    fn set_layout(&self, members: &[usize], lengths: &[usize], width: i64) {
        if let Some(edits) = self.edits.as_ref().filter(|edits| edits.uses_positions()) {
            let lengths: Vec<i64> = members
                .iter()
                .map(|&i| i64::try_from(lengths[i]).unwrap_or(i64::MAX))
                .collect();
            edits.set_positions(Some(TokenPositions::right_padded(&lengths, width)));
        }
    }

    /// After a whole forward: every intervention applied.
    fn check_applied(&self) -> Result<()> {
        match &self.edits {
            Some(edits) => match edits.never_applied() {
                never if never.is_empty() => Ok(()),
                layers => Err(Error::NeverApplied { layers }),
            },
            None => Ok(()),
        }
    }

    /// Runs one window of items (sorted by length, batched) and returns its rows in input order.
    /// `first` is the index of `items[0]` in the whole input (patches are indexed by it).
    fn window(&mut self, items: &[Item], first: usize) -> Result<Window> {
        let settings = self.settings;
        let max_length = settings.max_length.unwrap_or(usize::MAX);
        let lengths: Vec<usize> = items.iter().map(|item| item.ids.len().min(max_length)).collect();
        check_lengths(&lengths, self.stats.samples)?;
        self.truncated += items.iter().filter(|item| item.ids.len() > max_length).count();
        self.stats.samples += items.len();
        self.stats.tokens += lengths.iter().sum::<usize>();
        let pad_id = self.model.pad_id();
        let order = longest_first(&lengths);
        let batches = settings.plan(&order, &lengths, pad_id.is_none());
        let feed = Feed {
            items,
            lengths: &lengths,
            pad_id: pad_id.unwrap_or(0),
        };
        let store = &self.store;
        let mut buffers: Vec<Option<Tensor>> = self.names.iter().map(|_| None).collect();
        let widest = i64::try_from(lengths[order[0]]).unwrap_or(i64::MAX);
        let _no_grad = tch::no_grad_guard();
        store.enable();
        for range in &batches {
            if settings
                .interrupt
                .as_ref()
                .is_some_and(|flag| flag.load(Ordering::SeqCst))
            {
                store.disable();
                return Err(Error::Interrupted);
            }
            let members = &order[range.clone()];
            let (ids, mask) = feed.batch(members)?;
            let width = ids.size()[1];
            let whole: Vec<usize> = members.iter().map(|&i| settings.patch_offset + first + i).collect();
            self.set_patches(&whole, width)?;
            self.set_layout(members, &lengths, width);
            store.stop_after(self.needed.as_deref().filter(|_| !store.shares_sites(self.model)));
            let forward = Instant::now();
            let result = run_stoppable(|| self.model.forward_batch(&ids, &mask));
            self.stats.forward_time += forward.elapsed();
            store.stop_after(None);
            // A failed intervention ends the run like any other error of the forward.
            let result = result?;
            // A stopped forward never reached the layers past the captured ones: interventions
            // there could change nothing.
            let stopped = result.is_none();
            result.unwrap_or(Ok(()))?;
            store.check()?;
            if !stopped {
                self.check_applied()?;
            }
            self.stats.forwards += 1;
            self.stats.positions += members.len() * lengths[members[0]];
            let rows = Tensor::from_slice(&members.iter().map(|&i| i as i64).collect::<Vec<_>>());
            let counts: Vec<usize> = self.names.iter().map(|n| store.calls(n).len()).collect();
            settings.check_counts(&self.names, &counts)?;
            let batch = i64::try_from(members.len()).unwrap_or(i64::MAX);
            for (name, buffer) in self.names.iter().zip(&mut buffers) {
                let (part, pooled) = settings.rows(name, store.calls(name), batch, &mask)?;
                if !pooled && settings.pool != Pool::None && !self.unpooled.contains(name) {
                    self.unpooled.push(name.clone());
                }
                place(buffer, &part, &rows, (width, widest), items.len(), name)?;
            }
            store.clear();
            self.progress
                .advance(members.len(), members.iter().map(|&i| lengths[i]).sum());
        }
        store.disable();
        let mut activations = Activations::new();
        for (name, buffer) in self.names.iter().zip(buffers) {
            // Every batch checked that every layer fired.
            if let Some(t) = buffer {
                activations.insert(name.clone(), t);
            }
        }
        let all: Vec<usize> = (0..items.len()).collect();
        let (input_ids, attention_mask) = feed.batch(&all)?;
        Ok(Window {
            activations,
            input_ids,
            attention_mask,
        })
    }

    /// The counts, the layers left unpooled and the items cut, once the run is over.
    fn finish(mut self, start: Instant) -> (Stats, Vec<String>, usize) {
        self.progress.finish();
        self.stats.total_time = start.elapsed();
        (self.stats, self.unpooled, self.truncated)
    }
}

/// Every item has at least one id; `first` is the index of the first, for the message.
fn check_lengths(lengths: &[usize], first: usize) -> Result<()> {
    match lengths.iter().position(|&n| n == 0) {
        Some(empty) => Err(Error::InvalidArgument {
            name: "items",
            reason: format!(
                "item {} has no token ids; drop it or give it at least one",
                first + empty
            ),
        }),
        None => Ok(()),
    }
}

/// Where [`Extractor::run_into`] hands each window's rows: memory, a file, a dataset folder, or
/// a store of your own.
pub trait ActivationSink {
    /// Takes one window's rows. Windows come in input order, each once.
    ///
    /// # Errors
    ///
    /// Whatever keeps the sink from taking them (a full disk, say); the run stops with it.
    fn write(&mut self, chunk: &Chunk<'_>) -> Result<()>;
}

/// An [`ActivationSink`] that keeps every window in memory and joins them at the end: one row
/// per item in input order, unpooled outputs padded with zeros to the longest item, as
/// [`Extractor::run`] returns them (`input_ids` are padded with 0 past the windows' own width).
#[derive(Debug, Default)]
pub struct MemorySink {
    windows: Vec<(usize, Window)>,
}

impl MemorySink {
    /// An empty sink.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything received, joined: the activations, then `input_ids` and `attention_mask`
    /// (`[items, longest]`).
    ///
    /// # Errors
    ///
    /// [`Error::ShapeMismatch`] when a layer's windows differ past their token axes;
    /// [`Error::Torch`].
    pub fn into_parts(mut self) -> Result<(Activations, Tensor, Tensor)> {
        self.windows.sort_by_key(|(first, _)| *first);
        let items: usize = self
            .windows
            .iter()
            .map(|(_, w)| w.attention_mask.size()[0] as usize)
            .sum();
        // The widest window first: it sizes every buffer (see `place`).
        let widest = self
            .windows
            .iter()
            .map(|(_, w)| w.attention_mask.size()[1])
            .max()
            .unwrap_or(0);
        let mut order: Vec<usize> = (0..self.windows.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(self.windows[i].1.attention_mask.size()[1]));
        let names: Vec<String> = self
            .windows
            .first()
            .map(|(_, w)| w.activations.names().map(str::to_owned).collect())
            .unwrap_or_default();
        let mut buffers: Vec<Option<Tensor>> = names.iter().map(|_| None).collect();
        let (mut ids, mut mask) = (None, None);
        for i in order {
            let (first, window) = &self.windows[i];
            let n = window.attention_mask.size()[0];
            let width = window.attention_mask.size()[1];
            let rows = Tensor::arange_start(*first as i64, *first as i64 + n, (Kind::Int64, Device::Cpu));
            for (name, buffer) in names.iter().zip(&mut buffers) {
                let part = window.activations.get(name).ok_or_else(|| Error::NeverFired {
                    layers: vec![name.clone()],
                })?;
                place(buffer, part, &rows, (width, widest), items, name)?;
            }
            place(&mut ids, &window.input_ids, &rows, (width, widest), items, "input_ids")?;
            place(
                &mut mask,
                &window.attention_mask,
                &rows,
                (width, widest),
                items,
                "attention_mask",
            )?;
        }
        let activations = names
            .into_iter()
            .zip(buffers)
            .filter_map(|(n, b)| b.map(|t| (n, t)))
            .collect();
        let empty = || Tensor::zeros([0, 0], (Kind::Int64, Device::Cpu));
        Ok((activations, ids.unwrap_or_else(empty), mask.unwrap_or_else(empty)))
    }
}

impl ActivationSink for MemorySink {
    fn write(&mut self, chunk: &Chunk<'_>) -> Result<()> {
        let activations = chunk
            .activations
            .iter()
            .map(|(n, t)| (n.to_owned(), t.shallow_clone()))
            .collect();
        self.windows.push((
            chunk.first,
            Window {
                activations,
                input_ids: chunk.input_ids.shallow_clone(),
                attention_mask: chunk.attention_mask.shallow_clone(),
            },
        ));
        Ok(())
    }
}

/// An [`ActivationSink`] that writes one `.npz` when the run is over (a [`MemorySink`], then
/// [`save_activations`](crate::save_activations) with `input_ids` and `attention_mask` beside the
/// layers). For small runs; a dataset folder ([`DatasetWriter`](crate::DatasetWriter)) streams.
#[derive(Debug)]
pub struct NpzSink {
    path: std::path::PathBuf,
    memory: MemorySink,
}

impl NpzSink {
    /// A sink for the file `path` (`.npz` appended when missing).
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        NpzSink {
            path: path.into(),
            memory: MemorySink::new(),
        }
    }

    /// Writes the file, atomically; returns its path.
    ///
    /// # Errors
    ///
    /// As [`MemorySink::into_parts`] and [`save_activations`](crate::save_activations).
    pub fn finish(self) -> Result<std::path::PathBuf> {
        let (mut activations, ids, mask) = self.memory.into_parts()?;
        activations.insert("input_ids", ids);
        activations.insert("attention_mask", mask);
        crate::npz::save_activations(&activations, &self.path)
    }
}

impl ActivationSink for NpzSink {
    fn write(&mut self, chunk: &Chunk<'_>) -> Result<()> {
        self.memory.write(chunk)
    }
}

/// One window's rows, in input order: what an [`ActivationSink`] receives.
#[derive(Debug)]
pub struct Chunk<'a> {
    /// The index, among all items of the run, of the window's first item.
    pub first: usize,
    /// Each selected layer, one row per item: pooled `[n, ...]`, or `[n, longest, ...]` with
    /// zeros past each item's length (see [`Extractor`]).
    pub activations: &'a Activations,
    /// `[n, longest]` `Int64`: the items' ids, right-padded.
    pub input_ids: &'a Tensor,
    /// `[n, longest]` `Int64`: 1 for a real token.
    pub attention_mask: &'a Tensor,
}

impl Chunk<'_> {
    /// How many items the window holds.
    #[must_use]
    pub fn len(&self) -> usize {
        usize::try_from(self.attention_mask.size()[0]).unwrap_or(0)
    }

    /// Whether the window holds no item (never, for chunks the engine makes).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each item's number of real tokens.
    ///
    /// # Errors
    ///
    /// [`Error::Torch`] when libtorch fails.
    pub fn lengths(&self) -> Result<Vec<i64>> {
        Ok(Vec::<i64>::try_from(self.attention_mask.f_sum_dim_intlist(
            1,
            false,
            Kind::Int64,
        )?)?)
    }
}

/// The order items run in: longest first (the widest batch comes first, so the result's buffers
/// are sized by it and memory peaks at once), input order among equals.
fn longest_first(lengths: &[usize]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    order
}

/// The items, their lengths after truncation and the pad id: makes padded batches.
struct Feed<'a> {
    items: &'a [Item],
    lengths: &'a [usize],
    pad_id: i64,
}

impl Feed<'_> {
    /// `input_ids` and `attention_mask` for `members`, right-padded to the longest of them.
    fn batch(&self, members: &[usize]) -> Result<(Tensor, Tensor)> {
        let width = members.iter().map(|&i| self.lengths[i]).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(members.len() * width);
        let mut mask = Vec::with_capacity(members.len() * width);
        for &i in members {
            let n = self.lengths[i];
            ids.extend_from_slice(&self.items[i].ids[..n]);
            ids.extend(std::iter::repeat_n(self.pad_id, width - n));
            mask.extend(std::iter::repeat_n(1i64, n));
            mask.extend(std::iter::repeat_n(0i64, width - n));
        }
        let shape = [members.len() as i64, width as i64];
        Ok((
            Tensor::from_slice(&ids).f_view(shape)?,
            Tensor::from_slice(&mask).f_view(shape)?,
        ))
    }
}

/// `output` with one row per sample: as is when its first dim is the batch, broadcast when it is
/// 1 (no batch axis, like position embeddings).
fn per_sample(output: Tensor, batch: i64, layer: &str) -> Result<Tensor> {
    let size = output.size();
    match size.first() {
        Some(&rows) if rows == batch => Ok(output),
        Some(1) => {
            let mut shape = size.clone();
            shape[0] = batch;
            Ok(output.f_expand(shape.as_slice(), false)?)
        }
        _ => Err(Error::BatchRows {
            layer: layer.to_owned(),
            shape: size,
            batch,
        }),
    }
}

/// Copies `part`'s rows into `buffer` at `rows`. The buffer is made by the first (widest) batch;
/// a later batch's dims may be narrower only where they equal its width and the buffer's equal
/// the widest: its token axes.
fn place(
    buffer: &mut Option<Tensor>,
    part: &Tensor,
    rows: &Tensor,
    (width, widest): (i64, i64),
    items: usize,
    layer: &str,
) -> Result<()> {
    let size = part.size();
    let buf = match buffer {
        Some(buf) => buf,
        None => {
            let mut shape = size.clone();
            shape[0] = items as i64;
            buffer.insert(Tensor::f_zeros(shape.as_slice(), (part.kind(), Device::Cpu))?)
        }
    };
    let held = buf.size();
    let mismatch = || Error::ShapeMismatch {
        layer: layer.to_owned(),
        expected: held.clone(),
        got: size.clone(),
    };
    if held.len() != size.len() || buf.kind() != part.kind() {
        return Err(mismatch());
    }
    let mut view = buf.shallow_clone();
    for d in 1..size.len() {
        if size[d] == held[d] {
            continue;
        }
        if size[d] == width && held[d] == widest {
            view = view.f_narrow(d as i64, 0, width)?;
        } else {
            return Err(mismatch());
        }
    }
    // Runs of consecutive rows are copied as blocks (a memcpy each); `index_copy_` would move
    // element by element.
    let rows = Vec::<i64>::try_from(rows)?;
    let mut start = 0;
    while start < rows.len() {
        let mut end = start + 1;
        while end < rows.len() && rows[end] == rows[end - 1] + 1 {
            end += 1;
        }
        let n = (end - start) as i64;
        view.f_narrow(0, rows[start], n)?
            .f_copy_(&part.f_narrow(0, start as i64, n)?)?;
        start = end;
    }
    Ok(())
}

/// A dataset item that carries token ids (a 1-d integer sequence).
pub trait InputIds {
    /// The item's token ids as a 1-d `Int64` tensor.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when the item holds no 1-d integer sequence.
    fn input_ids(&self) -> Result<Tensor>;
}

impl InputIds for Tensor {
    fn input_ids(&self) -> Result<Tensor> {
        if self.dim() != 1
            || !matches!(
                self.kind(),
                Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8
            )
        {
            return Err(Error::InvalidArgument {
                name: "input_ids",
                reason: format!(
                    "expected a 1-d integer tensor, got {:?} of shape {:?}",
                    self.kind(),
                    self.size()
                ),
            });
        }
        Ok(self.to_kind(Kind::Int64))
    }
}

impl InputIds for [i64] {
    fn input_ids(&self) -> Result<Tensor> {
        Ok(Tensor::from_slice(self))
    }
}

impl InputIds for Vec<i64> {
    fn input_ids(&self) -> Result<Tensor> {
        self.as_slice().input_ids()
    }
}

impl<T: InputIds + ?Sized> InputIds for &T {
    fn input_ids(&self) -> Result<Tensor> {
        (**self).input_ids()
    }
}

/// Runs `model` (a tch `ModuleT` over token ids, its weights on `device`) over the first
/// `max_samples` items of `dataset` and returns the selected layers' outputs, one row per item in
/// dataset order.
///
/// The [`Extractor`] with [`Unmasked`]: the model takes no attention mask, so items are batched
/// only with items of their own length (up to `batch_size` per forward) and nothing is padded.
/// Items of unequal length are fine: a layer's rows are zero-padded past each item's length to
/// the longest. Forwards stop after the last selected layer. A progress bar shows on stderr when
/// it is a terminal.
///
/// # Errors
///
/// [`Error::EmptyDataset`]; [`Error::InvalidArgument`] for `batch_size == 0`, `max_samples ==
/// Some(0)` or an item that is not a 1-d integer sequence; and [`Extractor::run`]'s.
pub fn extract_representations<M, D, L>(
    model: &M,
    dataset: D,
    layers: &[L],
    device: Device,
    batch_size: usize,
    max_samples: Option<usize>,
) -> Result<Activations>
where
    M: LayerTree + ModuleT + ?Sized,
    D: IntoIterator,
    D::Item: InputIds,
    L: AsRef<str>,
{
    if max_samples == Some(0) {
        return Err(Error::InvalidArgument {
            name: "max_samples",
            reason: "must be at least 1, or None for all".into(),
        });
    }
    let items = dataset
        .into_iter()
        .take(max_samples.unwrap_or(usize::MAX))
        .map(|item| Ok(Item::new(Vec::<i64>::try_from(item.input_ids()?)?)))
        .collect::<Result<Vec<Item>>>()?;
    let extracted =
        Extractor::new()
            .batch_size(batch_size)
            .progress(true)
            .run(&Unmasked::new(model, device), layers, &items)?;
    Ok(extracted.activations)
}

/// A progress bar on stderr when asked for and stderr is a terminal: samples, samples/s,
/// tokens/s and the time left. Nothing otherwise (logs and pipes stay clean).
#[derive(Debug)]
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    start: Instant,
    tokens: std::cell::Cell<usize>,
}

impl Progress {
    /// A bar counting to `samples` items of `tokens` tokens in all, when `on` and stderr is a
    /// terminal.
    #[must_use]
    pub fn new(on: bool, samples: usize, tokens: usize) -> Self {
        let bar = (on && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(samples as u64);
            let style = indicatif::ProgressStyle::with_template(
                "{spinner} {pos}/{len} samples, {per_sec}, {msg} [{elapsed_precise}, {eta} left] {wide_bar}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_message(format!("of {tokens} tokens"));
            bar
        });
        Progress {
            bar,
            start: Instant::now(),
            tokens: std::cell::Cell::new(0),
        }
    }

    /// Counts `samples` items as done before this run (a resumed run).
    pub fn skip(&self, samples: usize) {
        if let Some(bar) = &self.bar {
            bar.inc(samples as u64);
        }
    }

    /// Counts `samples` more items, of `tokens` tokens, done.
    pub fn advance(&self, samples: usize, tokens: usize) {
        self.tokens.set(self.tokens.get() + tokens);
        if let Some(bar) = &self.bar {
            let rate = self.tokens.get() as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("{rate:.0} tokens/s"));
            bar.inc(samples as u64);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One 280-token paragraph among 256 sentences of 10–25 tokens runs alone: no sentence is
    /// padded to its length (the field case of a run 3.9× slower than the sentences alone).
    #[test]
    fn one_long_document_runs_alone() {
        let mut lengths: Vec<usize> = (0..256).map(|i| 10 + i % 16).collect();
        lengths.push(280);
        lengths.sort_by(|a, b| b.cmp(a));
        let batches = length_batches(&lengths, 32, None);
        assert_eq!(batches[0], 0..1);
        let positions: usize = batches.iter().map(|b| b.len() * lengths[b.start]).sum();
        let tokens: usize = lengths.iter().sum();
        assert!(
            positions * 10 < tokens * 13,
            "{positions} positions for {tokens} tokens"
        );
        // Every item's batch is at most twice its length wide, and every item is in one batch.
        for b in &batches {
            assert!(b.len() <= 32);
            assert!(lengths[b.clone()].iter().all(|&l| 2 * l >= lengths[b.start]), "{b:?}");
        }
        assert_eq!(batches.iter().map(ExactSizeIterator::len).sum::<usize>(), lengths.len());
    }

    /// The budget and the batch size still cut; a mask-free model cuts at every length.
    #[test]
    fn budgets_and_one_length_still_cut() {
        let lengths = [8, 8, 7, 7, 7, 5, 4];
        assert_eq!(length_batches(&lengths, 3, None), [0..3, 3..6, 6..7]);
        assert_eq!(length_batches(&lengths, 32, Some(16)), [0..2, 2..4, 4..6, 6..7]);
        assert_eq!(cut_batches(&lengths, 32, None, true), [0..2, 2..5, 5..6, 6..7]);
        assert_eq!(length_batches(&[9, 5, 4, 1], 32, None), [0..2, 2..3, 3..4]);
    }
}
