//! Generation with a KV cache: [`generate`] decodes from each prompt one token at a time, over
//! [`TextModel::forward_cached`], through the model's own [`Readout`], with every capture site
//! and intervention live on every step.
//!
//! What it computes follows transformers' `generate`: greedy decoding by default (the arg-max of
//! the float32 logits, ties to the lowest id, as `torch.argmax`), or sampling with `temperature`,
//! then `top_k`, then `top_p` (the smallest set of most probable tokens whose probabilities reach
//! `top_p`); it stops a prompt at an end-of-sequence id (kept in the output) or after
//! `max_new_tokens`.
//!
//! Prompts of different lengths share a batch, right-padded: each row keeps its own positions,
//! and the cache's padding columns are masked for every later token, so a prompt's output never
//! depends on its batch-mates. Sampling draws each prompt's tokens from its own random stream
//! (ChaCha8, seeded by `seed`, stream = the prompt's index), so the same seed gives the same
//! output whatever the batching.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hooks::Item;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use crate::error::{ModelError, Result};
use crate::text_model::{KvCache, Readout, TextModel};

/// How [`generate`] picks each token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// Divides the logits before sampling; `0` means greedy (the most probable token). Default 0.
    pub temperature: f64,
    /// Sample among the `k` most probable tokens only (ties at the `k`-th kept, as transformers'
    /// `TopKLogitsWarper`); `Some(1)` is greedy.
    pub top_k: Option<usize>,
    /// Sample among the smallest set of most probable tokens whose probabilities sum to at least
    /// `p`, in `(0, 1]`.
    pub top_p: Option<f64>,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature: 0.0,
            top_k: None,
            top_p: None,
        }
    }
}

impl Sampling {
    /// Whether every choice is the most probable token.
    #[must_use]
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == Some(1)
    }
}

/// What [`generate`] does.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// The most tokens to add to each prompt (at least 1). Default 32.
    pub max_new_tokens: usize,
    /// Greedy by default.
    pub sampling: Sampling,
    /// The seed of every prompt's random stream (sampling only). Default 0.
    pub seed: u64,
    /// End-of-sequence ids: a prompt stops after emitting one ([`eos_token_ids`] reads a
    /// folder's). Default none.
    pub eos: Vec<i64>,
    /// Prompts per batch (sorted by length, right-padded). Default 8.
    pub batch_size: usize,
    /// Checked between steps: when set, generation stops with [`hooks::Error::Interrupted`].
    pub interrupt: Option<Arc<AtomicBool>>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 32,
            sampling: Sampling::default(),
            seed: 0,
            eos: Vec::new(),
            batch_size: 8,
            interrupt: None,
        }
    }
}

/// Why a prompt stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// It emitted an end-of-sequence id (the last of its output ids).
    Eos,
    /// It reached `max_new_tokens`, or the model's maximum length.
    Length,
}

impl FinishReason {
    /// `"eos"` or `"length"`, as OpenAI-style APIs and `hooks generate` write it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Eos => "eos",
            FinishReason::Length => "length",
        }
    }
}

/// One prompt's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    /// The prompt's ids, as given.
    pub prompt_ids: Vec<i64>,
    /// The ids generated after it (a final end-of-sequence id included).
    pub output_ids: Vec<i64>,
    /// Why it stopped.
    pub finish_reason: FinishReason,
}

/// Generates from each of `prompts` with `model`'s KV cache, calling `on_token(prompt, id)` for
/// every token as it is chosen (for streaming), and returns one [`Generation`] per prompt, in
/// order.
///
/// Capture sites and interventions fire on every step: a store bound to the model sees the
/// prefill (`[B, T, ...]`) and then one `[B, 1, ...]` call per token; an enabled
/// [`Interventions`](hooks::Interventions) list changes every call, so it applies at every
/// position, prompt and generated alike (a position-limited intervention counts positions within
/// each call).
///
/// ```no_run
/// use hooks::Item;
/// use hooks_models::generate::{generate, GenerateOptions};
/// use tch::{Device, Kind};
///
/// let model = hooks_models::load("my-llama", Device::Cpu, Kind::Float)?;
/// let options = GenerateOptions { max_new_tokens: 8, ..GenerateOptions::default() };
/// let out = generate(&*model, &[Item::new(vec![1, 450, 4996])], &options, &mut |_, _| {})?;
/// println!("{:?} ({:?})", out[0].output_ids, out[0].finish_reason);
/// # Ok::<(), hooks_models::ModelError>(())
/// ```
///
/// # Errors
///
/// [`ModelError::NoReadout`] or [`ModelError::NotCausal`] for a model that cannot generate;
/// [`ModelError::InvalidArgument`] for `max_new_tokens` or `batch_size` of 0, a negative or
/// non-finite temperature, `top_k` of 0, `top_p` outside `(0, 1]`, no prompts, an empty prompt,
/// or one as long as the model's maximum length or longer; the forward's own errors (an
/// intervention that does not fit, say); [`ModelError::Capture`] for an interruption.
pub fn generate(
    model: &dyn TextModel,
    prompts: &[Item],
    options: &GenerateOptions,
    on_token: &mut dyn FnMut(usize, i64),
) -> Result<Vec<Generation>> {
    let readout = model.readout().ok_or(ModelError::NoReadout {
        model_type: model.model_type(),
    })?;
    check_options(model, prompts, options)?;
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(prompts[i].ids().len()));
    let mut results: Vec<Option<Generation>> = vec![None; prompts.len()];
    for batch in order.chunks(options.batch_size) {
        let rows = generate_batch(model, &readout, prompts, batch, options, on_token)?;
        for (&i, generation) in batch.iter().zip(rows) {
            results[i] = Some(generation);
        }
    }
    Ok(results.into_iter().flatten().collect())
}

fn check_options(model: &dyn TextModel, prompts: &[Item], options: &GenerateOptions) -> Result<()> {
    let invalid = |name, reason: String| Err(ModelError::InvalidArgument { name, reason });
    let sampling = &options.sampling;
    if options.max_new_tokens == 0 {
        return invalid("max_new_tokens", "is 0; give at least 1".into());
    }
    if options.batch_size == 0 {
        return invalid("batch_size", "is 0; give at least 1".into());
    }
    if !(sampling.temperature.is_finite() && sampling.temperature >= 0.0) {
        return invalid(
            "temperature",
            format!("is {}; give 0 (greedy) or more", sampling.temperature),
        );
    }
    if sampling.top_k == Some(0) {
        return invalid("top_k", "is 0; give at least 1".into());
    }
    if let Some(p) = sampling.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
        return invalid("top_p", format!("is {p}; give a value in (0, 1]"));
    }
    if prompts.is_empty() {
        return invalid("prompts", "there are none; give at least one".into());
    }
    let max = model.max_length();
    for (i, prompt) in prompts.iter().enumerate() {
        let len = prompt.ids().len();
        if len == 0 {
            return invalid("prompts", format!("prompt {i} has no tokens; give at least one"));
        }
        if len >= max {
            return invalid(
                "prompts",
                format!(
                    "prompt {i} has {len} tokens, and the model takes {max} in all: no room for a new one; shorten it"
                ),
            );
        }
        let vocab = model.vocab_size();
        if let Some(id) = prompt
            .ids()
            .iter()
            .find(|&&id| usize::try_from(id).map_or(true, |id| id >= vocab))
        {
            return invalid(
                "prompts",
                format!("prompt {i} holds {id}, outside the vocabulary 0..{vocab}"),
            );
        }
    }
    Ok(())
}

/// One batch of prompts (indices into `prompts`), decoded to the end.
fn generate_batch(
    model: &dyn TextModel,
    readout: &Readout<'_>,
    prompts: &[Item],
    batch: &[usize],
    options: &GenerateOptions,
    on_token: &mut dyn FnMut(usize, i64),
) -> Result<Vec<Generation>> {
    let device = model.device();
    let rows = i64::try_from(batch.len()).unwrap_or(i64::MAX);
    let lengths: Vec<i64> = batch
        .iter()
        .map(|&i| i64::try_from(prompts[i].ids().len()).unwrap_or(i64::MAX))
        .collect();
    let width = lengths.iter().copied().max().unwrap_or(0);
    let (mut ids, mut valid) = (Vec::new(), Vec::new());
    for (&i, &len) in batch.iter().zip(&lengths) {
        ids.extend_from_slice(prompts[i].ids());
        ids.extend(std::iter::repeat_n(
            model.pad_token_id(),
            usize::try_from(width - len).unwrap_or(0),
        ));
        valid.extend((0..width).map(|t| i64::from(t < len)));
    }
    let ids = Tensor::from_slice(&ids).reshape([rows, width]);
    let valid = Tensor::from_slice(&valid).reshape([rows, width]);
    let positions = Tensor::arange(width, (Kind::Int64, tch::Device::Cpu))
        .unsqueeze(0)
        .expand([rows, width], false);
    let mut cache = KvCache::new();
    let hidden = model.forward_cached(&ids, &positions, &valid, &mut cache)?;
    // Each row's last real token: where its first new token is predicted.
    let last = Tensor::from_slice(&lengths.iter().map(|&n| n - 1).collect::<Vec<_>>()).to_device(device);
    let mut state = hidden
        .f_gather(
            1,
            &last.view([rows, 1, 1]).expand([rows, 1, hidden.size()[2]], false),
            false,
        )?
        .f_squeeze_dim(1)?;
    let mut rngs: Vec<ChaCha8Rng> = batch
        .iter()
        .map(|&i| {
            let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
            rng.set_stream(u64::try_from(i).unwrap_or(u64::MAX));
            rng
        })
        .collect();
    let mut outputs: Vec<Vec<i64>> = vec![Vec::new(); batch.len()];
    let mut finished: Vec<Option<FinishReason>> = vec![None; batch.len()];
    let max_length = i64::try_from(model.max_length()).unwrap_or(i64::MAX);
    let _no_grad = tch::no_grad_guard();
    loop {
        if options.interrupt.as_ref().is_some_and(|f| f.load(Ordering::Relaxed)) {
            return Err(hooks::Error::Interrupted.into());
        }
        let logits = readout.logits_of_normed(&state).f_to_kind(Kind::Float)?;
        let chosen = choose(&logits, &options.sampling, &mut rngs)?;
        let mut step_ids = Vec::with_capacity(batch.len());
        let mut step_positions = Vec::with_capacity(batch.len());
        let mut step_valid = Vec::with_capacity(batch.len());
        for (row, &id) in chosen.iter().enumerate() {
            if finished[row].is_some() {
                step_ids.push(model.pad_token_id());
                step_positions.push(0);
                step_valid.push(0);
                continue;
            }
            outputs[row].push(id);
            on_token(batch[row], id);
            let total = lengths[row] + i64::try_from(outputs[row].len()).unwrap_or(i64::MAX);
            if options.eos.contains(&id) {
                finished[row] = Some(FinishReason::Eos);
            } else if outputs[row].len() >= options.max_new_tokens || total >= max_length {
                finished[row] = Some(FinishReason::Length);
            }
            // The new token's own step runs only if something follows it.
            step_ids.push(id);
            step_positions.push(total - 1);
            step_valid.push(i64::from(finished[row].is_none()));
        }
        if finished.iter().all(Option::is_some) {
            break;
        }
        let ids = Tensor::from_slice(&step_ids).view([rows, 1]);
        let positions = Tensor::from_slice(&step_positions).view([rows, 1]);
        let valid = Tensor::from_slice(&step_valid).view([rows, 1]);
        state = model
            .forward_cached(&ids, &positions, &valid, &mut cache)?
            .f_squeeze_dim(1)?;
    }
    Ok(batch
        .iter()
        .zip(outputs)
        .zip(finished)
        .map(|((&i, output_ids), finish)| Generation {
            prompt_ids: prompts[i].ids().to_vec(),
            output_ids,
            finish_reason: finish.unwrap_or(FinishReason::Length),
        })
        .collect())
}

/// One token per row from `logits` `[B, vocab]` (float32).
fn choose(logits: &Tensor, sampling: &Sampling, rngs: &mut [ChaCha8Rng]) -> Result<Vec<i64>> {
    if sampling.is_greedy() {
        return Ok(Vec::<i64>::try_from(
            logits.f_argmax(-1, false)?.f_to_device(tch::Device::Cpu)?,
        )?);
    }
    let rows = Vec::<Vec<f32>>::try_from(logits.f_to_device(tch::Device::Cpu)?)?;
    Ok(rows
        .iter()
        .zip(rngs)
        .map(|(row, rng)| sample(row, sampling, rng))
        .collect())
}

/// A token drawn from `softmax(logits / temperature)`, cut to the top `k` and then to the
/// nucleus `p`, with one uniform draw from `rng`.
fn sample(logits: &[f32], sampling: &Sampling, rng: &mut ChaCha8Rng) -> i64 {
    let t = sampling.temperature;
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // Most probable first; equal logits by id, so the draw is reproducible.
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    let mut keep = order.len();
    if let Some(k) = sampling.top_k.filter(|&k| k < order.len()) {
        // As `TopKLogitsWarper`: every token whose logit ties the k-th's stays.
        let kth = logits[order[k - 1]];
        keep = order.iter().take_while(|&&i| logits[i] >= kth).count();
    }
    let top = f64::from(logits[order[0]]);
    let weights: Vec<f64> = order[..keep]
        .iter()
        .map(|&i| ((f64::from(logits[i]) - top) / t).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    if let Some(p) = sampling.top_p {
        let mut cumulative = 0.0;
        let mut nucleus = 0;
        for w in &weights {
            nucleus += 1;
            cumulative += w / total;
            if cumulative >= p {
                break;
            }
        }
        keep = nucleus;
    }
    let total: f64 = weights[..keep].iter().sum();
    // A uniform draw in [0, 1) from the top 53 bits.
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
    let mut cumulative = 0.0;
    for (&i, w) in order[..keep].iter().zip(&weights) {
        cumulative += w;
        if u < cumulative {
            return i64::try_from(i).unwrap_or(0);
        }
    }
    i64::try_from(order[keep - 1]).unwrap_or(0)
}

/// The end-of-sequence ids of the model in `dir`: `generation_config.json`'s `eos_token_id`, else
/// `config.json`'s (an id or a list of ids); empty when neither has one.
///
/// # Errors
///
/// [`ModelError::BadConfig`] when a file holds an `eos_token_id` that is neither an id nor a list
/// of ids.
pub fn eos_token_ids(dir: impl AsRef<std::path::Path>) -> Result<Vec<i64>> {
    for name in ["generation_config.json", "config.json"] {
        let path = dir.as_ref().join(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::BadConfig {
            path: Some(path.clone()),
            reason: e.to_string(),
        })?;
        let bad = || ModelError::BadConfig {
            path: Some(path.clone()),
            reason: "`eos_token_id` is neither a token id nor a list of ids".into(),
        };
        match json.get("eos_token_id") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Array(ids)) => {
                return ids.iter().map(|v| v.as_i64().ok_or_else(bad)).collect();
            }
            Some(v) => return Ok(vec![v.as_i64().ok_or_else(bad)?]),
        }
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Frequencies of 20,000 draws against `softmax(logits / T)` restricted as asked, by hand.
    #[test]
    fn sampling_follows_the_restricted_softmax() {
        let logits = [2.0f32, 1.0, 0.5, 0.5, -1.0];
        let draws = |sampling: Sampling| {
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            let mut counts = [0usize; 5];
            for _ in 0..20_000 {
                counts[usize::try_from(sample(&logits, &sampling, &mut rng)).unwrap()] += 1;
            }
            counts.map(|c| c as f64 / 20_000.0)
        };
        let softmax = |t: f64, keep: &[usize]| {
            let w: Vec<f64> = keep.iter().map(|&i| (f64::from(logits[i]) / t).exp()).collect();
            let total: f64 = w.iter().sum();
            let mut p = [0.0; 5];
            for (&i, w) in keep.iter().zip(&w) {
                p[i] = w / total;
            }
            p
        };
        let close = |got: [f64; 5], want: [f64; 5]| {
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 0.015, "{got:?} vs {want:?}");
            }
        };
        let plain = Sampling {
            temperature: 2.0,
            ..Sampling::default()
        };
        close(draws(plain), softmax(2.0, &[0, 1, 2, 3, 4]));
        // Top 3: the tie at the third place keeps both 0.5s.
        let top_k = Sampling {
            top_k: Some(3),
            ..plain
        };
        close(draws(top_k), softmax(2.0, &[0, 1, 2, 3]));
        // At T = 1 the probabilities are .537, .197, .120, .120, .027: 0.7 takes the first two,
        // 0.8 the first three (the tie broken by id).
        let top_p = |p| Sampling {
            temperature: 1.0,
            top_p: Some(p),
            ..Sampling::default()
        };
        close(draws(top_p(0.7)), softmax(1.0, &[0, 1]));
        close(draws(top_p(0.8)), softmax(1.0, &[0, 1, 2]));
    }
}
