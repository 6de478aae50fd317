//! The logit lens (nostalgebraist, "interpreting GPT: the logit lens", 2020): what each layer of a
//! causal LM predicts, read through the model's own [`Readout`] (final norm, unembedding, final
//! soft-cap) and reduced, on the model's device, to what a reader needs per layer and position:
//! the top-k tokens and their probabilities, the entropy, the KL divergence from the model's own
//! prediction, and a target token's probability and rank.
//!
//! # The norm is recomputed on each layer's residual
//!
//! Each layer's residual goes through the final norm itself, so an RMS norm divides it by its own
//! root mean square (and a LayerNorm subtracts its own mean). Reusing the scale the norm computed
//! on the *last* layer's residual (TransformerLens did until 2026-02: its issue #1076) makes early
//! layers, whose residuals are much smaller, look near-uniform.
//!
//! # Memory
//!
//! The logits of a layer are `[rows, vocab]`; they are computed for a bounded number of token
//! positions at a time ([`LOGIT_CHUNK_BYTES`]) and reduced at once, so `[items, layers, tokens,
//! vocab]` never exists: what a run holds grows with `top_k`, not with the vocabulary. Only real
//! tokens are read out; padding positions cost nothing and hold zeros.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hooks::{ActivationStore, CaptureMode, Item, Site, Walker};
use tch::{Device, Kind, Tensor};

use crate::error::{ModelError, Result};
use crate::text_model::{Readout, TextModel};

/// How many bytes of f32 logits the lens computes at once: the row count of a chunk is this over
/// `4 × vocab` (at least one row).
pub const LOGIT_CHUNK_BYTES: usize = 32 << 20;

/// The token whose probability and rank the lens reports, for one input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The same token id at every position.
    Every(i64),
    /// One token id per position of the input (after truncation to the lens's `max_length`).
    PerPosition(Vec<i64>),
}

/// What [`logit_lens`] computes, and how it batches.
#[derive(Clone, Debug)]
pub struct LensOptions {
    /// How many of the most probable tokens to keep per layer and position (at least 1, at most
    /// the vocabulary). Default 10.
    pub top_k: usize,
    /// Inputs per forward. Inputs are sorted by length, each batch right-padded to its own
    /// longest; results keep input order. Default 32.
    pub batch_size: usize,
    /// Cut each input to its first `max_length` tokens (at most the model's
    /// [`max_length`](TextModel::max_length), which is also the default).
    pub max_length: Option<usize>,
    /// One target per input: then [`Lens::target_prob`] and [`Lens::target_rank`] are filled.
    pub targets: Option<Vec<Target>>,
    /// Checked between batches: when set, the lens stops with
    /// [`hooks::Error::Interrupted`] (as [`ModelError::Capture`]).
    pub interrupt: Option<Arc<AtomicBool>>,
}

impl Default for LensOptions {
    fn default() -> Self {
        LensOptions {
            top_k: 10,
            batch_size: 32,
            max_length: None,
            targets: None,
            interrupt: None,
        }
    }
}

/// What [`logit_lens`] returns: `N` inputs, `L` layers, `T` the longest input, `K` = `top_k`.
/// Every value past an input's length is zero. Probabilities are those of the softmax of the
/// logits in float32; logarithms are natural (nats).
#[derive(Debug)]
pub struct Lens {
    /// The layers read, in the order of the `L` axis.
    pub layers: Vec<String>,
    /// `[N, T]` int64: each input's ids (after truncation), then the model's pad id.
    pub input_ids: Tensor,
    /// `[N, T]` int64: 1 for a real token, 0 past the input's length.
    pub attention_mask: Tensor,
    /// `[N, L, T, K]` int64: the `K` most probable next tokens, most probable first.
    pub top_ids: Tensor,
    /// `[N, L, T, K]` float32: their probabilities.
    pub top_probs: Tensor,
    /// `[N, L, T]` float32: the entropy of the layer's distribution, `−Σ p log p`.
    pub entropy: Tensor,
    /// `[N, L, T]` float32: `KL(p_final ‖ p_layer) = Σ p_final (log p_final − log p_layer)`, where
    /// `p_final` is the model's own next-token distribution.
    pub kl_to_final: Tensor,
    /// `[N, L, T]` float32, with targets: the target's probability.
    pub target_prob: Option<Tensor>,
    /// `[N, L, T]` int64, with targets: how many tokens are strictly more probable than the
    /// target (0: the target is on top).
    pub target_rank: Option<Tensor>,
}

/// Runs `model` over `items` once and reads each of `layers` through the model's own
/// [`Readout`]: the logit lens.
///
/// `layers` are paths or globs of the residual stream: the embedding's output, each block's
/// output or input (`model.layers.3:input`), or the final norm's output, which is read through
/// the unembedding alone; empty, it reads [`TextModel::residual_layers`] (the embedding's output
/// and each block's). The last block's distribution is the model's own next-token distribution.
///
/// ```no_run
/// use hooks::Item;
/// use hooks_models::lens::{logit_lens, LensOptions};
/// use tch::{Device, Kind};
///
/// let model = hooks_models::load("my-llama", Device::Cpu, Kind::Float)?;
/// let items = [Item::new(vec![1, 450, 4996, 17354])];
/// let lens = logit_lens(&*model, &items, &[] as &[&str], &LensOptions::default())?;
/// println!("{:?}: {:?}", lens.layers, lens.top_ids.size()); // [1, layers, 4, 10]
/// # Ok::<(), hooks_models::ModelError>(())
/// ```
///
/// # Errors
///
/// [`ModelError::NoReadout`] for a model without an unembedding; [`ModelError::InvalidArgument`]
/// for `top_k` of 0 or past the vocabulary, a `batch_size` of 0, no inputs or an empty one,
/// targets whose count or lengths do not match the inputs or that lie outside the vocabulary, a
/// layer off the residual stream or that runs more than once per forward;
/// [`ModelError::Capture`] for an unknown layer (with suggestions) or an interruption; the
/// forward's own errors.
pub fn logit_lens<L: AsRef<str>>(
    model: &dyn TextModel,
    items: &[Item],
    layers: &[L],
    options: &LensOptions,
) -> Result<Lens> {
    let readout = model.readout().ok_or(ModelError::NoReadout {
        model_type: model.model_type(),
    })?;
    let vocab = model.vocab_size();
    let max_length = options.max_length.unwrap_or(usize::MAX).min(model.max_length());
    let plan = Plan::new(items, options, vocab, max_length)?;
    let layers: Vec<String> = if layers.is_empty() {
        model.residual_layers()
    } else {
        layers.iter().map(|l| l.as_ref().to_owned()).collect()
    };
    let store = ActivationStore::with_mode(model, &layers, CaptureMode::Every)?;
    let names = store.layer_names().to_vec();
    let is_final = classify(model, &readout, &names)?;
    let out = Output::new(
        plan.lengths.len(),
        names.len(),
        plan.longest,
        options.top_k,
        options.targets.is_some(),
    );
    let _no_grad = tch::no_grad_guard();
    store.enable();
    for batch in plan.batches(options.batch_size) {
        if options
            .interrupt
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::Relaxed))
        {
            return Err(hooks::Error::Interrupted.into());
        }
        store.clear();
        let inputs = plan.inputs(&batch, model)?;
        let last = model.forward(&inputs.ids, &inputs.mask)?;
        let residuals = names
            .iter()
            .zip(&is_final)
            .map(|(name, &is_final)| {
                Ok((
                    one_residual(name, store.calls(name), &inputs, model.hidden_size())?,
                    is_final,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        read_batch(&readout, &last, &residuals, &inputs, &out, (vocab, options.top_k))?;
    }
    store.disable();
    store.clear();
    Ok(out.finish(names, &plan, model.pad_token_id()))
}

/// The inputs, checked and cut, and their order.
struct Plan<'a> {
    items: &'a [Item],
    /// Each input's length after truncation.
    lengths: Vec<usize>,
    longest: usize,
    targets: Option<Vec<Vec<i64>>>,
}

impl<'a> Plan<'a> {
    fn new(items: &'a [Item], options: &LensOptions, vocab: usize, max_length: usize) -> Result<Self> {
        let invalid = |name, reason: String| ModelError::InvalidArgument { name, reason };
        if options.top_k == 0 || options.top_k > vocab {
            return Err(invalid(
                "top_k",
                format!("is {}; give 1 to the vocabulary size, {vocab}", options.top_k),
            ));
        }
        if options.batch_size == 0 {
            return Err(invalid("batch_size", "is 0; give at least 1".into()));
        }
        if items.is_empty() {
            return Err(invalid("items", "there are none; give at least one input".into()));
        }
        let lengths: Vec<usize> = items.iter().map(|item| item.ids().len().min(max_length)).collect();
        if let Some(i) = lengths.iter().position(|&n| n == 0) {
            return Err(invalid("items", format!("input {i} has no tokens; give at least one")));
        }
        let targets = match &options.targets {
            None => None,
            Some(targets) => Some(Self::targets(targets, &lengths, vocab)?),
        };
        Ok(Plan {
            items,
            longest: lengths.iter().copied().max().unwrap_or(0),
            lengths,
            targets,
        })
    }

    /// One target id per position of each input.
    fn targets(targets: &[Target], lengths: &[usize], vocab: usize) -> Result<Vec<Vec<i64>>> {
        let invalid = |reason: String| ModelError::InvalidArgument {
            name: "targets",
            reason,
        };
        if targets.len() != lengths.len() {
            return Err(invalid(format!(
                "{} targets for {} inputs; give one per input",
                targets.len(),
                lengths.len()
            )));
        }
        let mut per_position = Vec::with_capacity(targets.len());
        for (i, (target, &len)) in targets.iter().zip(lengths).enumerate() {
            let ids = match target {
                Target::Every(id) => vec![*id; len],
                Target::PerPosition(ids) if ids.len() == len => ids.clone(),
                Target::PerPosition(ids) => {
                    return Err(invalid(format!(
                        "input {i} has {len} tokens but its target list has {}; give one target per token",
                        ids.len()
                    )))
                }
            };
            if let Some(id) = ids
                .iter()
                .find(|&&id| usize::try_from(id).map_or(true, |id| id >= vocab))
            {
                return Err(invalid(format!(
                    "input {i} has target {id}, outside the vocabulary 0..{vocab}"
                )));
            }
            per_position.push(ids);
        }
        Ok(per_position)
    }

    /// The inputs, longest first (ties in input order), in the extraction engine's batches: runs
    /// of at most `batch_size`, none padding an input to more than twice its length
    /// ([`hooks::length_batches`]).
    fn batches(&self, batch_size: usize) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.lengths.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(self.lengths[i]));
        let sorted: Vec<usize> = order.iter().map(|&i| self.lengths[i]).collect();
        hooks::length_batches(&sorted, batch_size, None)
            .into_iter()
            .map(|run| order[run].to_vec())
            .collect()
    }

    /// The batch's ids, mask and targets, right-padded to its longest, on the model's device.
    fn inputs(&self, batch: &[usize], model: &dyn TextModel) -> Result<Inputs> {
        let width = batch.iter().map(|&i| self.lengths[i]).max().unwrap_or(0);
        let (mut ids, mut mask, mut targets) = (Vec::new(), Vec::new(), Vec::new());
        for &i in batch {
            let len = self.lengths[i];
            ids.extend_from_slice(&self.items[i].ids()[..len]);
            ids.extend(std::iter::repeat_n(model.pad_token_id(), width - len));
            mask.extend((0..width).map(|t| i64::from(t < len)));
            if let Some(all) = &self.targets {
                targets.extend_from_slice(&all[i]);
                targets.extend(std::iter::repeat_n(0, width - len));
            }
        }
        let shape = [i64::try_from(batch.len()).unwrap_or(i64::MAX), to_i64(width)];
        let device = model.device();
        let ids = Tensor::from_slice(&ids).reshape(shape);
        let mask = Tensor::from_slice(&mask).reshape(shape);
        // The flat positions `[B × width]` of the real tokens, and where each lands in the output.
        let real = mask.reshape([-1]).nonzero().reshape([-1]);
        let order = Tensor::from_slice(&batch.iter().map(|&i| to_i64(i)).collect::<Vec<_>>());
        let item = order.index_select(0, &real.f_div_scalar_mode(shape[1], "floor")?);
        let position = real.remainder(shape[1]);
        let targets =
            (!targets.is_empty()).then(|| Tensor::from_slice(&targets).index_select(0, &real).to_device(device));
        Ok(Inputs {
            ids: ids.f_to_device(device)?,
            mask: mask.f_to_device(device)?,
            real_on_device: real.f_to_device(device)?,
            item,
            position,
            targets,
        })
    }
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// One batch on the device, and where its real tokens go.
struct Inputs {
    ids: Tensor,
    mask: Tensor,
    /// `[R]`: the flat indices (into `[B × width]`) of the batch's real tokens.
    real_on_device: Tensor,
    /// `[R]` on the CPU: each real token's input (its index in `items`).
    item: Tensor,
    /// `[R]` on the CPU: its position in that input.
    position: Tensor,
    /// `[R]` on the device: its target.
    targets: Option<Tensor>,
}

/// Which of `names` (the store's, as given) read as the model's own distribution: the final
/// norm's output, whose unembedding is the model's logits, and the last block's output, which the
/// final norm turns into exactly that (so its read-out is not computed twice). Every other must
/// be on the residual stream: the embedding's output, a block's output or input (by any of its
/// names). Anything else (a norm's output, a projection that happens to have the hidden width)
/// would be normalised as if it were a residual: refused.
fn classify(model: &dyn TextModel, readout: &Readout<'_>, names: &[String]) -> Result<Vec<bool>> {
    let mut sites: HashMap<String, *const Site> = HashMap::new();
    let mut visit = |path: &str, site: &Site| {
        sites.entry(path.to_owned()).or_insert(std::ptr::from_ref(site));
    };
    model.walk(&mut Walker::with_inputs(&mut visit));
    model.walk(&mut Walker::aliases(&mut visit));
    let residual = model.residual_layers();
    let blocks = residual.iter().skip(1).filter(|l| !l.ends_with(hooks::INPUT_SUFFIX));
    let allowed: Vec<*const Site> = residual
        .iter()
        .cloned()
        .chain(blocks.map(|l| format!("{l}{}", hooks::INPUT_SUFFIX)))
        .filter_map(|l| sites.get(&l).copied())
        .collect();
    let norm = sites.get(readout.norm_layer()).copied();
    let last = residual.last().and_then(|l| sites.get(l)).copied();
    names
        .iter()
        .map(|name| {
            let site = sites.get(name.as_str()).copied();
            if site.is_some() && (site == norm || site == last) {
                Ok(true)
            } else if site.is_some_and(|s| allowed.contains(&s)) {
                Ok(false)
            } else {
                Err(ModelError::InvalidArgument {
                    name: "layers",
                    reason: format!(
                        "`{name}` is not on the residual stream; the lens reads the embedding's output and each block's output or input (`{}`, ...), and the final norm `{}` through the unembedding alone",
                        residual.get(1).map_or("", String::as_str),
                        readout.norm_layer()
                    ),
                })
            }
        })
        .collect()
}

/// The layer's one output of this forward, as rows `[R, hidden]` of the real tokens.
fn one_residual(name: &str, calls: Vec<Tensor>, inputs: &Inputs, hidden: usize) -> Result<Tensor> {
    let invalid = |reason: String| ModelError::InvalidArgument { name: "layers", reason };
    let [output] = <[Tensor; 1]>::try_from(calls).map_err(|calls| {
        invalid(format!(
            "`{name}` ran {} times in one forward; the lens reads a layer that runs once (an embedding or a block output)",
            calls.len()
        ))
    })?;
    let size = output.size();
    let expected = [inputs.ids.size()[0], inputs.ids.size()[1], to_i64(hidden)];
    if size != expected {
        return Err(invalid(format!(
            "`{name}` outputs {size:?}, not a residual `[batch, tokens, hidden]` = {expected:?}; the lens reads the embedding's output and the blocks' outputs (run `hooks layers`)"
        )));
    }
    Ok(output
        .f_reshape([-1, to_i64(hidden)])?
        .f_index_select(0, &inputs.real_on_device)?)
}

/// The results, on the CPU, as flat rows `[N × L × T, ...]` filled batch by batch.
struct Output {
    layers: i64,
    longest: i64,
    top_ids: Tensor,
    top_probs: Tensor,
    entropy: Tensor,
    kl_to_final: Tensor,
    targets: Option<(Tensor, Tensor)>,
}

impl Output {
    fn new(items: usize, layers: usize, longest: usize, k: usize, targets: bool) -> Self {
        let rows = to_i64(items * layers * longest);
        let zeros = |shape: &[i64], kind| Tensor::zeros(shape, (kind, Device::Cpu));
        Output {
            layers: to_i64(layers),
            longest: to_i64(longest),
            top_ids: zeros(&[rows, to_i64(k)], Kind::Int64),
            top_probs: zeros(&[rows, to_i64(k)], Kind::Float),
            entropy: zeros(&[rows], Kind::Float),
            kl_to_final: zeros(&[rows], Kind::Float),
            targets: targets.then(|| (zeros(&[rows], Kind::Float), zeros(&[rows], Kind::Int64))),
        }
    }

    /// Writes `values` (one row per real token of `chunk`) at layer `layer`.
    fn put(&self, inputs: &Inputs, chunk: (i64, i64), layer: i64, values: &Reduced) -> Result<()> {
        let (start, len) = chunk;
        let item = inputs.item.narrow(0, start, len);
        let position = inputs.position.narrow(0, start, len);
        let rows = (item * self.layers + layer) * self.longest + position;
        let copy = |into: &Tensor, from: &Tensor| -> Result<()> {
            // `into` shares its storage with the output: the copy lands there.
            let _ = into
                .shallow_clone()
                .f_index_copy_(0, &rows, &from.f_to_device(Device::Cpu)?)?;
            Ok(())
        };
        copy(&self.top_ids, &values.top_ids)?;
        copy(&self.top_probs, &values.top_probs)?;
        copy(&self.entropy, &values.entropy)?;
        copy(&self.kl_to_final, &values.kl_to_final)?;
        if let (Some((prob, rank)), Some((p, r))) = (&self.targets, &values.target) {
            copy(prob, p)?;
            copy(rank, r)?;
        }
        Ok(())
    }

    fn finish(self, layers: Vec<String>, plan: &Plan<'_>, pad_id: i64) -> Lens {
        let n = to_i64(plan.lengths.len());
        let (l, t) = (self.layers, self.longest);
        let per_layer = |x: Tensor| x.reshape([n, l, t]);
        let per_token = |x: Tensor| {
            let k = x.size()[1];
            x.reshape([n, l, t, k])
        };
        let mut ids = Vec::with_capacity(plan.lengths.len() * plan.longest);
        let mut mask = Vec::with_capacity(ids.capacity());
        for (item, &len) in plan.items.iter().zip(&plan.lengths) {
            ids.extend_from_slice(&item.ids()[..len]);
            ids.extend(std::iter::repeat_n(pad_id, plan.longest - len));
            mask.extend((0..plan.longest).map(|p| i64::from(p < len)));
        }
        let (target_prob, target_rank) = match self.targets {
            Some((prob, rank)) => (Some(per_layer(prob)), Some(per_layer(rank))),
            None => (None, None),
        };
        Lens {
            layers,
            input_ids: Tensor::from_slice(&ids).reshape([n, t]),
            attention_mask: Tensor::from_slice(&mask).reshape([n, t]),
            top_ids: per_token(self.top_ids),
            top_probs: per_token(self.top_probs),
            entropy: per_layer(self.entropy),
            kl_to_final: per_layer(self.kl_to_final),
            target_prob,
            target_rank,
        }
    }
}

/// One layer's reductions over a chunk of rows, on the device.
struct Reduced {
    top_ids: Tensor,
    top_probs: Tensor,
    entropy: Tensor,
    kl_to_final: Tensor,
    target: Option<(Tensor, Tensor)>,
}

/// Reads every layer of one batch through `readout`, a chunk of real tokens at a time.
fn read_batch(
    readout: &Readout<'_>,
    last: &Tensor,
    residuals: &[(Tensor, bool)],
    inputs: &Inputs,
    out: &Output,
    (vocab, k): (usize, usize),
) -> Result<()> {
    let hidden = *last.size().last().unwrap_or(&1);
    let last = last
        .f_reshape([-1, hidden])?
        .f_index_select(0, &inputs.real_on_device)?;
    let rows = last.size()[0];
    let chunk = to_i64((LOGIT_CHUNK_BYTES / (4 * vocab.max(1))).max(1));
    let mut start = 0;
    while start < rows {
        let len = chunk.min(rows - start);
        // The model's own next-token distribution: its last hidden state is already normalised.
        let final_logp = readout
            .logits_of_normed(&last.narrow(0, start, len))
            .f_to_kind(Kind::Float)?
            .f_log_softmax(-1, Kind::Float)?;
        let final_p = final_logp.f_exp()?;
        // Σ p_final log p_final, once per chunk: KL = this − Σ p_final log p_layer.
        let final_neg_entropy = (&final_p * &final_logp).f_sum_dim_intlist(-1, false, Kind::Float)?;
        let targets = inputs.targets.as_ref().map(|t| t.narrow(0, start, len).unsqueeze(-1));
        for (layer, (residual, is_final)) in residuals.iter().enumerate() {
            let logp = if *is_final {
                final_logp.shallow_clone()
            } else {
                readout
                    .logits(&residual.narrow(0, start, len))
                    .f_to_kind(Kind::Float)?
                    .f_log_softmax(-1, Kind::Float)?
            };
            let reduced = reduce(&logp, &final_p, &final_neg_entropy, targets.as_ref(), k)?;
            out.put(inputs, (start, len), to_i64(layer), &reduced)?;
        }
        start += len;
    }
    Ok(())
}

/// A layer's log-probabilities `[rows, vocab]` reduced to what the lens keeps.
fn reduce(
    logp: &Tensor,
    final_p: &Tensor,
    final_neg_entropy: &Tensor,
    targets: Option<&Tensor>,
    k: usize,
) -> Result<Reduced> {
    let (top_logp, top_ids) = logp.f_topk(to_i64(k), -1, true, true)?;
    let p = logp.f_exp()?;
    let entropy = -(&p * logp).f_sum_dim_intlist(-1, false, Kind::Float)?;
    let kl_to_final = final_neg_entropy - (final_p * logp).f_sum_dim_intlist(-1, false, Kind::Float)?;
    let target = match targets {
        None => None,
        Some(ids) => {
            let target_logp = logp.f_gather(-1, ids, false)?;
            let rank = logp
                .f_gt_tensor(&target_logp)?
                .f_sum_dim_intlist(-1, false, Kind::Int64)?;
            Some((target_logp.f_exp()?.f_squeeze_dim(-1)?, rank))
        }
    };
    Ok(Reduced {
        top_ids,
        top_probs: top_logp.f_exp()?,
        entropy,
        kl_to_final,
        target,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Hand arithmetic on a three-token vocabulary.
    #[test]
    fn reductions_match_hand_arithmetic() {
        let p = [0.5f64, 0.3, 0.2];
        let q = [0.2f64, 0.7, 0.1];
        let logp = Tensor::from_slice(&q.map(|x| x.ln() as f32)).unsqueeze(0);
        let final_p = Tensor::from_slice(&p.map(|x| x as f32)).unsqueeze(0);
        let final_neg = Tensor::from_slice(&[p.iter().map(|x| x * x.ln()).sum::<f64>() as f32]);
        let targets = Tensor::from_slice(&[0i64]).unsqueeze(0);
        let r = reduce(&logp, &final_p, &final_neg, Some(&targets), 2).unwrap();
        assert_eq!(Vec::<i64>::try_from(r.top_ids.reshape([-1])).unwrap(), [1, 0]);
        let probs = Vec::<f32>::try_from(r.top_probs.reshape([-1])).unwrap();
        assert!((probs[0] - 0.7).abs() < 1e-6 && (probs[1] - 0.2).abs() < 1e-6);
        let entropy = -q.iter().map(|x| x * x.ln()).sum::<f64>();
        assert!((r.entropy.double_value(&[0]) - entropy).abs() < 1e-6);
        let kl: f64 = p.iter().zip(&q).map(|(a, b)| a * (a / b).ln()).sum();
        assert!((r.kl_to_final.double_value(&[0]) - kl).abs() < 1e-6, "{kl}");
        let (prob, rank) = r.target.unwrap();
        assert!((prob.double_value(&[0]) - 0.2).abs() < 1e-6);
        // Token 1 (0.7) is more probable than token 0 (0.2); token 2 (0.1) is not.
        assert_eq!(rank.int64_value(&[0]), 1);
    }
}
