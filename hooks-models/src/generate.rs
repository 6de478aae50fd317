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

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hooks::{ActivationStore, CaptureMode, Interventions, Item, TokenPositions};
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
    /// The index of the first prompt in the whole input, when it is generated in parts: each
    /// prompt draws from the random stream of its index in the whole input, so the parts give
    /// what one call over it gives. Default 0.
    pub first_index: usize,
    /// End-of-sequence ids: a prompt stops after emitting one ([`eos_token_ids`] reads a
    /// folder's). Default none.
    pub eos: Vec<i64>,
    /// Prompts per batch (sorted by length, right-padded). Default 8.
    pub batch_size: usize,
    /// Checked between steps: when set, generation stops with [`hooks::Error::Interrupted`].
    pub interrupt: Option<Arc<AtomicBool>>,
    /// Interventions bound to the model, applied while generating (on the positions
    /// `intervene_on` says) and checked at every step: one that does not fit its tensor, or never
    /// applies, ends generation with its error instead of a panic.
    pub interventions: Option<Arc<Interventions>>,
    /// Where the interventions apply. Default: every position.
    pub intervene_on: InterveneOn,
    /// Layers (paths or globs) to capture over each prompt and its output: see
    /// [`Generation::activations`]. Default none.
    pub layers: Vec<String>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 32,
            sampling: Sampling::default(),
            seed: 0,
            first_index: 0,
            eos: Vec::new(),
            batch_size: 8,
            interrupt: None,
            interventions: None,
            intervene_on: InterveneOn::All,
            layers: Vec::new(),
        }
    }
}

/// The positions [`GenerateOptions::interventions`] change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InterveneOn {
    /// Every position, the prompt's and each new token's: transformers' `generate` with a forward
    /// hook that changes the module's whole output at every call.
    #[default]
    All,
    /// The generated positions only (positions at or past each prompt's length): the prompt is
    /// read as the model reads it unchanged.
    Generated,
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
#[derive(Debug)]
pub struct Generation {
    /// The prompt's ids, as given.
    pub prompt_ids: Vec<i64>,
    /// The ids generated after it (a final end-of-sequence id included).
    pub output_ids: Vec<i64>,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// With [`GenerateOptions::layers`]: each layer's output over the whole sequence, the prompt
    /// then every generated token (the last one fed once more so that its positions exist),
    /// `[prompt + output tokens, ...]` on the CPU, in the order the store lists the layers. As
    /// generation computed them, interventions included: equal to one forward over the final
    /// sequence with the same interventions.
    pub activations: Vec<(String, Tensor)>,
}

impl Clone for Generation {
    fn clone(&self) -> Self {
        Generation {
            prompt_ids: self.prompt_ids.clone(),
            output_ids: self.output_ids.clone(),
            finish_reason: self.finish_reason,
            activations: self
                .activations
                .iter()
                .map(|(name, t)| (name.clone(), t.shallow_clone()))
                .collect(),
        }
    }
}

impl PartialEq for Generation {
    /// The ids and the finish reason (activations are not compared).
    fn eq(&self, other: &Self) -> bool {
        self.prompt_ids == other.prompt_ids
            && self.output_ids == other.output_ids
            && self.finish_reason == other.finish_reason
    }
}

/// Where the time of a [`generate_timed`] call went. On a CUDA device kernels run
/// asynchronously, so their time lands in the next part that waits for them (the choice, which
/// copies the ids to the host).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GenerateStats {
    /// The prefills and decode steps through the KV cache, capture sites and interventions
    /// included.
    pub forward: Duration,
    /// The read-out (final norm and `lm_head`) of each step's last positions.
    pub readout: Duration,
    /// Choosing each token (the arg-max, or a draw) and copying it to the host.
    pub choice: Duration,
    /// Assembling each prompt's captures over its sequence.
    pub captures: Duration,
    /// Forwards through the cache after the prefills.
    pub steps: usize,
}

/// Generates from each of `prompts` with `model`'s KV cache, calling `on_token(prompt, id)` for
/// every token as it is chosen (for streaming), and returns one [`Generation`] per prompt, in
/// order.
///
/// Capture sites and interventions fire on every step: a store bound to the model sees the
/// prefill (`[B, T, ...]`) and then one `[B, 1, ...]` call per token; an enabled
/// [`Interventions`](hooks::Interventions) list changes every call, so it applies at every
/// position, prompt and generated alike. A position-limited intervention
/// ([`Intervention::at_positions`](hooks::Intervention::at_positions)) counts over each
/// sequence, the prompt then its generated tokens: `3:` is position 3 onwards, every generated
/// token included, and a negative position counts from the prompt's end (`-1` is its last
/// token, `-1:` that token and everything generated after it).
///
/// ```no_run
/// use hooks::{ActivationStore, CaptureMode, Interventions, Item};
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
    generate_timed(model, prompts, options, on_token).map(|(generations, _)| generations)
}

/// [`generate`], and where its time went.
///
/// # Errors
///
/// As [`generate`].
pub fn generate_timed(
    model: &dyn TextModel,
    prompts: &[Item],
    options: &GenerateOptions,
    on_token: &mut dyn FnMut(usize, i64),
) -> Result<(Vec<Generation>, GenerateStats)> {
    let readout = model.readout().ok_or(ModelError::NoReadout {
        model_type: model.model_type(),
    })?;
    check_options(model, prompts, options)?;
    let store = if options.layers.is_empty() {
        None
    } else {
        let store = ActivationStore::with_mode(model, &options.layers, CaptureMode::Every)?;
        store.enable();
        Some(store)
    };
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(prompts[i].ids().len()));
    let mut results: Vec<Option<Generation>> = vec![None; prompts.len()];
    let run = Run {
        model,
        readout: &readout,
        options,
        store: store.as_ref(),
        stats: Cell::new(GenerateStats::default()),
    };
    let enabled = options.interventions.as_ref().map(|edits| edits.is_enabled());
    let outcome = (|| {
        for batch in order.chunks(options.batch_size) {
            let rows = run.batch(prompts, batch, on_token)?;
            for (&i, generation) in batch.iter().zip(rows) {
                results[i] = Some(generation);
            }
        }
        Ok::<_, ModelError>(())
    })();
    // The list is left as it came, whatever `intervene_on` did to it.
    if let (Some(edits), Some(enabled)) = (&options.interventions, enabled) {
        edits.set_positions(None);
        if enabled {
            edits.enable();
        } else {
            edits.disable();
        }
    }
    outcome?;
    Ok((results.into_iter().flatten().collect(), run.stats.get()))
}

/// What every batch of one [`generate`] call shares.
struct Run<'a> {
    model: &'a dyn TextModel,
    readout: &'a Readout<'a>,
    options: &'a GenerateOptions,
    store: Option<&'a ActivationStore>,
    stats: Cell<GenerateStats>,
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

impl Run<'_> {
    /// One step through the cache, inside the interventions' checks when there are any.
    fn step(&self, ids: &Tensor, positions: &Tensor, valid: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let prefill = cache.is_empty();
        let out = self.timed(
            |s| &mut s.forward,
            || match &self.options.interventions {
                Some(edits) => edits.run(|| self.model.forward_cached(ids, positions, valid, cache))?,
                None => self.model.forward_cached(ids, positions, valid, cache),
            },
        );
        if !prefill {
            let mut stats = self.stats.get();
            stats.steps += 1;
            self.stats.set(stats);
        }
        out
    }

    /// Runs `f`, adding its time to the part of the stats `part` names.
    fn timed<R>(&self, part: fn(&mut GenerateStats) -> &mut Duration, f: impl FnOnce() -> R) -> R {
        let start = Instant::now();
        let out = f();
        let mut stats = self.stats.get();
        *part(&mut stats) += start.elapsed();
        self.stats.set(stats);
        out
    }

    /// One batch of prompts (indices into `prompts`), decoded to the end.
    fn batch(
        &self,
        prompts: &[Item],
        batch: &[usize],
        on_token: &mut dyn FnMut(usize, i64),
    ) -> Result<Vec<Generation>> {
        let (model, options) = (self.model, self.options);
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
        if let Some(store) = self.store {
            store.clear();
        }
        let edits = options.interventions.as_deref();
        let generated_only = options.intervene_on == InterveneOn::Generated;
        if let (Some(edits), true) = (edits, generated_only) {
            edits.disable();
        }
        let _no_grad = tch::no_grad_guard();
        let mut cache = KvCache::new();
        let positioned = edits.filter(|edits| edits.uses_positions());
        if let Some(edits) = positioned {
            let at = (0..rows as usize)
                .flat_map(|r| (0..width).map(move |t| (r, t)))
                .map(|(r, t)| if t < lengths[r] { t } else { -1 })
                .collect();
            edits.set_positions(Some(TokenPositions::continuing(at, width as usize, &lengths)?));
        }
        let hidden = self.step(&ids, &positions, &valid, &mut cache)?;
        if let (Some(edits), true) = (edits, generated_only) {
            edits.enable();
        }
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
                rng.set_stream(u64::try_from(options.first_index + i).unwrap_or(u64::MAX));
                rng
            })
            .collect();
        let mut outputs: Vec<Vec<i64>> = vec![Vec::new(); batch.len()];
        let mut finished: Vec<Option<FinishReason>> = vec![None; batch.len()];
        let max_length = i64::try_from(model.max_length()).unwrap_or(i64::MAX);
        loop {
            if options.interrupt.as_ref().is_some_and(|f| f.load(Ordering::Relaxed)) {
                return Err(hooks::Error::Interrupted.into());
            }
            let logits = self.timed(
                |s| &mut s.readout,
                || self.readout.logits_of_normed(&state).f_to_kind(Kind::Float),
            )?;
            let chosen = self.timed(|s| &mut s.choice, || choose(&logits, &options.sampling, &mut rngs))?;
            let (mut step_ids, mut step_positions, mut step_valid) = (Vec::new(), Vec::new(), Vec::new());
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
                // Every new token is fed once, its row's last included: the next token attends to
                // it, and a capture sees its position.
                step_ids.push(id);
                step_positions.push(total - 1);
                step_valid.push(1);
            }
            let done = finished.iter().all(Option::is_some);
            if done && self.store.is_none() {
                break;
            }
            if let Some(edits) = positioned {
                let at = step_positions
                    .iter()
                    .zip(&step_valid)
                    .map(|(&p, &v)| if v == 1 { p } else { -1 })
                    .collect();
                edits.set_positions(Some(TokenPositions::continuing(at, 1, &lengths)?));
            }
            let ids = Tensor::from_slice(&step_ids).view([rows, 1]);
            let positions = Tensor::from_slice(&step_positions).view([rows, 1]);
            let valid = Tensor::from_slice(&step_valid).view([rows, 1]);
            state = self.step(&ids, &positions, &valid, &mut cache)?.f_squeeze_dim(1)?;
            if done {
                break;
            }
        }
        let activations = match self.store {
            Some(store) => self.timed(|s| &mut s.captures, || rows_of(store, &lengths, &outputs))?,
            None => std::iter::repeat_with(Vec::new).take(batch.len()).collect(),
        };
        Ok(batch
            .iter()
            .zip(outputs)
            .zip(finished)
            .zip(activations)
            .map(|(((&i, output_ids), finish), activations)| Generation {
                prompt_ids: prompts[i].ids().to_vec(),
                output_ids,
                finish_reason: finish.unwrap_or(FinishReason::Length),
                activations,
            })
            .collect())
    }
}

/// Each row's captures over its prompt (the prefill's first `lengths[row]` columns) and each of
/// its `outputs` (the one column of the step that fed it).
fn rows_of(store: &ActivationStore, lengths: &[i64], outputs: &[Vec<i64>]) -> Result<Vec<Vec<(String, Tensor)>>> {
    let mut rows: Vec<Vec<(String, Tensor)>> = std::iter::repeat_with(Vec::new).take(lengths.len()).collect();
    let steps = outputs.iter().map(Vec::len).max().unwrap_or(0);
    for name in store.layer_names() {
        let calls = store.calls(name);
        let invalid = |reason: String| ModelError::InvalidArgument { name: "layers", reason };
        if calls.len() != steps + 1 {
            return Err(invalid(format!(
                "`{name}` ran {} times in {} forwards; capture during generation takes a layer that runs once per forward",
                calls.len(),
                steps + 1
            )));
        }
        for (f, call) in calls.iter().enumerate() {
            let size = call.size();
            let width = if f == 0 {
                lengths.iter().copied().max().unwrap_or(0)
            } else {
                1
            };
            if size.len() < 2 || size[0] != i64::try_from(lengths.len()).unwrap_or(0) || size[1] != width {
                return Err(invalid(format!(
                    "`{name}` gives {size:?}, not `[batch, tokens, ...]`; capture during generation takes layers with one row per token (not attention patterns)"
                )));
            }
        }
        // Every step's column side by side, `[batch, steps, ...]`, in one copy.
        let generated = if steps > 0 {
            Some(Tensor::f_cat(&calls[1..], 1)?)
        } else {
            None
        };
        for (row, (&len, output)) in lengths.iter().zip(outputs).enumerate() {
            let r = i64::try_from(row).unwrap_or(0);
            let prompt = calls[0].f_get(r)?.f_narrow(0, 0, len)?;
            let sequence = match &generated {
                Some(generated) => {
                    let fed = i64::try_from(output.len()).unwrap_or(0);
                    Tensor::f_cat(&[prompt, generated.f_get(r)?.f_narrow(0, 0, fed)?], 0)?
                }
                None => prompt,
            };
            rows[row].push((name.clone(), sequence.f_to_device(tch::Device::Cpu)?));
        }
    }
    Ok(rows)
}

/// One token per row from `logits` `[B, vocab]` (float32).
fn choose(logits: &Tensor, sampling: &Sampling, rngs: &mut [ChaCha8Rng]) -> Result<Vec<i64>> {
    let cpu = tch::Device::Cpu;
    if sampling.is_greedy() {
        return Ok(Vec::<i64>::try_from(logits.f_argmax(-1, false)?.f_to_device(cpu)?)?);
    }
    // Sorted on the device, most probable first; a stable sort keeps equal logits in id order,
    // so a draw is reproducible.
    let scaled = logits.f_to_kind(Kind::Double)? / sampling.temperature;
    let (sorted, ids) = scaled.f_sort_stable(true, -1, true)?;
    let probs = sorted.f_softmax(-1, Kind::Double)?;
    let vocab = usize::try_from(logits.size()[1]).unwrap_or(1).max(1);
    let flat = |t: &Tensor| t.f_to_device(cpu).and_then(|t| t.f_reshape([-1]));
    let sorted = Vec::<f64>::try_from(flat(&sorted)?)?;
    let probs = Vec::<f64>::try_from(flat(&probs)?)?;
    let ids = Vec::<i64>::try_from(flat(&ids)?)?;
    Ok(rngs
        .iter_mut()
        .enumerate()
        .map(|(row, rng)| {
            let at = row * vocab..(row + 1) * vocab;
            let index = sample(&sorted[at.clone()], &probs[at.clone()], sampling, rng);
            ids[at][index]
        })
        .collect())
}

/// The index (into the sorted row) of a token drawn from the probabilities `probs` (of the scaled
/// logits `sorted`, both most probable first), cut to the top `k` and then to the nucleus `p`,
/// with one uniform draw from `rng`.
fn sample(sorted: &[f64], probs: &[f64], sampling: &Sampling, rng: &mut ChaCha8Rng) -> usize {
    let mut keep = probs.len();
    if let Some(k) = sampling.top_k.filter(|&k| k < probs.len()) {
        // As `TopKLogitsWarper`: every token whose logit ties the k-th's stays.
        let kth = sorted[k - 1];
        keep = k + sorted[k..].iter().take_while(|&&v| v >= kth).count();
    }
    let total: f64 = probs[..keep].iter().sum();
    if let Some(p) = sampling.top_p {
        let mut cumulative = 0.0;
        let mut nucleus = 0;
        for w in &probs[..keep] {
            nucleus += 1;
            cumulative += w / total;
            if cumulative >= p {
                break;
            }
        }
        keep = nucleus;
    }
    let total: f64 = probs[..keep].iter().sum();
    // A uniform draw in [0, 1) from the top 53 bits, scaled to the kept mass.
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
    let mut cumulative = 0.0;
    for (index, w) in probs[..keep].iter().enumerate() {
        cumulative += w;
        if u < cumulative {
            return index;
        }
    }
    keep - 1
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
            let mut rngs = [ChaCha8Rng::seed_from_u64(7)];
            let mut counts = [0usize; 5];
            let logits = Tensor::from_slice(&logits).unsqueeze(0);
            for _ in 0..20_000 {
                let id = choose(&logits, &sampling, &mut rngs).unwrap()[0];
                counts[usize::try_from(id).unwrap()] += 1;
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
