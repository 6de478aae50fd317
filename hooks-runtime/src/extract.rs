//! [`extract_representations`]: run a model over a dataset in batches and keep what the selected
//! layers output.

use std::io::IsTerminal;

use tch::{nn::ModuleT, Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::hookable::LayerTree;
use crate::store::{ActivationStore, Activations, CaptureMode};

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

/// Runs `model` over `dataset` in batches and returns the selected layers' outputs, each stacked
/// along dim 0 and cut to `max_samples` rows.
///
/// Items are stacked into `[batch, len]` token-id batches on `device` (the model must already be
/// there) and run with `forward_t(batch, false)` under `no_grad`. tch modules take train/eval as
/// an argument rather than holding a mode, so there is no mode to change or restore: eval always.
///
/// Unlike the Python reference, which keeps every batch and concatenates at the end (twice the
/// result in memory), each layer's rows are copied into one buffer allocated once when the
/// number of rows is known (`max_samples`, or an `ExactSizeIterator` dataset): peak memory is the
/// result plus one batch. Batches past `max_samples` are not run. A progress bar shows on stderr
/// when it is a terminal.
///
/// # Errors
///
/// [`Error::EmptyDataset`]; [`Error::InvalidArgument`] for `batch_size == 0`, `max_samples ==
/// Some(0)` or items of unequal length; the store's selection errors; [`Error::NeverFired`] naming
/// selected layers that produced nothing; [`Error::ShapeMismatch`] when a layer's outputs differ
/// past dim 0.
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
    if batch_size == 0 {
        return Err(Error::InvalidArgument {
            name: "batch_size",
            reason: "must be at least 1".into(),
        });
    }
    if max_samples == Some(0) {
        return Err(Error::InvalidArgument {
            name: "max_samples",
            reason: "must be at least 1, or None for all".into(),
        });
    }
    let items = dataset.into_iter();
    let (low, high) = items.size_hint();
    let known_len = (Some(low) == high).then_some(low);
    let rows = match (known_len, max_samples) {
        (Some(n), Some(m)) => Some(n.min(m)),
        (n, m) => n.or(m),
    };
    if rows == Some(0) {
        return Err(Error::EmptyDataset);
    }
    let store = ActivationStore::with_mode(
        model,
        layers.iter().map(AsRef::as_ref),
        CaptureMode::Accumulate { max_rows: rows },
    )?;
    let progress = Progress::new(rows);
    let limit = rows.unwrap_or(usize::MAX);

    let _no_grad = tch::no_grad_guard();
    store.enable();
    let mut seen = 0usize;
    let mut batch: Vec<Tensor> = Vec::with_capacity(batch_size);
    let mut first_len: Option<i64> = None;
    for (index, item) in items.enumerate() {
        if seen >= limit {
            break;
        }
        let ids = item.input_ids()?;
        let len = ids.size()[0];
        match first_len {
            None => first_len = Some(len),
            Some(first) if first != len => {
                return Err(Error::InvalidArgument {
                    name: "dataset",
                    reason: format!(
                        "item {index} has {len} tokens but item 0 has {first}; pad every item to one length"
                    ),
                });
            }
            Some(_) => {}
        }
        batch.push(ids);
        seen += 1;
        if batch.len() == batch_size || seen >= limit {
            run_batch(model, &store, &mut batch, device, &progress)?;
        }
    }
    if !batch.is_empty() {
        run_batch(model, &store, &mut batch, device, &progress)?;
    }
    store.disable();
    progress.finish();
    if seen == 0 {
        return Err(Error::EmptyDataset);
    }
    let never = store.never_fired();
    if !never.is_empty() {
        return Err(Error::NeverFired { layers: never });
    }
    Ok(store.activations())
}

fn run_batch<M: ModuleT + ?Sized>(
    model: &M,
    store: &ActivationStore,
    batch: &mut Vec<Tensor>,
    device: Device,
    progress: &Progress,
) -> Result<()> {
    let input = Tensor::f_stack(batch, 0)?.f_to_device(device)?;
    let n = batch.len();
    batch.clear();
    let _ = model.forward_t(&input, false);
    store.check()?;
    progress.advance(n);
    Ok(())
}

/// A progress bar on stderr when it is a terminal; nothing otherwise (logs and pipes stay clean).
#[derive(Debug)]
pub struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    /// A bar counting to `total` samples, or a spinner when the total is unknown.
    #[must_use]
    pub fn new(total: Option<usize>) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = match total {
            Some(n) => indicatif::ProgressBar::new(n as u64),
            None => indicatif::ProgressBar::new_spinner(),
        };
        let style =
            indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} samples [{elapsed_precise}] {wide_bar}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        Progress(Some(bar))
    }

    /// Counts `n` more samples done.
    pub fn advance(&self, n: usize) {
        if let Some(bar) = &self.0 {
            bar.inc(n as u64);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
