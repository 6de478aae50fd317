//! Section 8's second part: what attention patterns cost, in process, on the Llama-shaped model.
//! Five variants of one forward: (a) hooks-models built without capture sites, (b) with them and
//! nothing captured, (c) capturing the last block, (d) that and one layer's `attn_weights`, (e)
//! that and every layer's. (b)/(a) is what keeping the fused kernel costs when nothing is
//! selected; (d) − (c) is one layer's probabilities, (e) − (c) all of them.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use hooks::ActivationStore;
use tch::{Device, Kind, Tensor};

use crate::stats::{paired_ratios, Summary};
use crate::{ids_tensor, token_ids, BenchResult, Ctx, Target};

/// The variants, in the order of the table.
const VARIANTS: [&str; 5] = [
    "(a) uninstrumented",
    "(b) instrumented, nothing captured",
    "(c) capturing the last block",
    "(d) (c) and one layer's `attn_weights`",
    "(e) (c) and every layer's `attn_weights`",
];

pub struct PatternCost {
    batch: i64,
    len: i64,
    layers: usize,
    rounds: usize,
    block: usize,
    /// Milliseconds per forward, per variant.
    ms: [Summary; 5],
    b_over_a: Summary,
    /// (d) − (c) and ((e) − (c)) / layers, per round, in milliseconds.
    one_layer_ms: Summary,
    per_layer_ms: Summary,
    /// (a) and (b) gave bitwise-equal outputs.
    same_output: bool,
}

/// The layers each variant captures (none for (a) and (b)).
fn selection(variant: usize, layers: usize) -> Vec<String> {
    let last = format!("model.layers.{}", layers - 1);
    let pattern = |i: usize| format!("model.layers.{i}.self_attn.attn_weights");
    match variant {
        2 => vec![last],
        3 => vec![last, pattern(layers / 2)],
        4 => std::iter::once(last).chain((0..layers).map(pattern)).collect(),
        _ => Vec::new(),
    }
}

pub fn run(ctx: &Ctx, model_dir: &Path, layers: usize) -> BenchResult<PatternCost> {
    let full = ctx.cfg.full;
    // Long inputs, where a layer's probabilities (`[2, 8, 512, 512]` f32: 16 MB, and T² work
    // per head) are large enough to measure beside the projections; two forwards per block.
    let (batch, len, rounds, block) = if full { (2, 512, 9, 2) } else { (2, 8, 1, 1) };
    let plain = hooks_models_uninstrumented::load(model_dir, Device::Cpu, Kind::Float)?;
    let llama = hooks_models::load(model_dir, Device::Cpu, Kind::Float)?;
    share_weights(plain.var_store(), llama.var_store())?;
    let ids = ids_tensor(&token_ids(usize::try_from(batch)?, len, 11));
    let mask = ids.ones_like();
    let forward = |variant: usize| -> BenchResult<Tensor> {
        Ok(if variant == 0 {
            plain.forward(&ids, &mask)?
        } else {
            llama.forward(&ids, &mask)?
        })
    };
    // `block` forwards of a variant, in seconds per forward. Its store is made and enabled
    // outside the timed region, and dropped after: a store bound but disabled would still make
    // the model compute the probabilities it selected whenever another store is on.
    let time = |variant: usize| -> BenchResult<f64> {
        let names = selection(variant, layers);
        let store = if names.is_empty() {
            None
        } else {
            let store = ActivationStore::new(&*llama, &names)?;
            store.enable();
            Some(store)
        };
        let start = Instant::now();
        for _ in 0..block {
            let _ = forward(variant)?;
        }
        let seconds = start.elapsed().as_secs_f64() / block as f64;
        if let Some(store) = store {
            store.check()?;
        }
        Ok(seconds)
    };
    let same_output = forward(0)?.equal(&forward(1)?);
    for variant in 0..VARIANTS.len() {
        time(variant)?;
    }
    let mut seconds: [Vec<f64>; 5] = Default::default();
    for round in 0..rounds {
        for k in 0..VARIANTS.len() {
            let variant = (round + k) % VARIANTS.len();
            seconds[variant].push(time(variant)?);
        }
    }
    let per_round = |f: &dyn Fn(usize) -> f64| -> Vec<f64> { (0..rounds).map(f).collect() };
    let one_layer = per_round(&|r| (seconds[3][r] - seconds[2][r]) * 1e3);
    let per_layer = per_round(&|r| (seconds[4][r] - seconds[2][r]) * 1e3 / layers as f64);
    Ok(PatternCost {
        batch,
        len,
        layers,
        rounds,
        block,
        ms: seconds.each_ref().map(|s| Summary::of(s).scaled(1e3)),
        b_over_a: Summary::of(&paired_ratios(&seconds[1], &seconds[0])),
        one_layer_ms: Summary::of(&one_layer),
        per_layer_ms: Summary::of(&per_layer),
        same_output,
    })
}

/// Points every variable of `plain` at the tensor of the same name in `ours`, so that (a) and the
/// others read the very same memory (see section 1's `share_weights`).
fn share_weights(plain: &tch::nn::VarStore, ours: &tch::nn::VarStore) -> BenchResult<()> {
    let ours = ours.variables();
    for (name, mut variable) in plain.variables() {
        let Some(theirs) = ours.get(&name) else {
            return Err(format!("the uninstrumented model has `{name}` and the other has not").into());
        };
        variable.f_set_data(theirs)?;
        if variable.data_ptr() != theirs.data_ptr() {
            return Err(format!("`{name}` is not shared").into());
        }
    }
    Ok(())
}

impl PatternCost {
    pub fn targets(&self) -> Vec<Target> {
        vec![Target::at_most(
            "8. b/a (Llama-shaped decoder: nothing captured vs no sites)",
            1.01,
            &self.b_over_a,
            3,
        )]
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\n### Attention patterns\n\n\
             The same model, in this process: forwards of {}×{} tokens, {} rounds of {} per \
             variant, the variants' order rotated each round. (a) is hooks-models built with the \
             `uninstrumented` feature (no capture sites), sharing the very weights of the others; \
             each other variant has a store selecting what it names, made before the timed \
             forward. (a) and (b) give bitwise-equal outputs: {}.\n\n\
             | variant | ms per forward |\n|---|---|",
            self.batch,
            self.len,
            self.rounds,
            self.block,
            if self.same_output { "yes" } else { "**no**" },
        );
        for (name, ms) in VARIANTS.iter().zip(&self.ms) {
            let _ = writeln!(s, "| {name} | {} |", ms.show(1));
        }
        let _ = writeln!(
            s,
            "\n(b)/(a): {} (per-round ratios). One layer's probabilities, (d) − (c): {} ms; every \
             layer's, ((e) − (c)) / {}: {} ms per layer. Attention stays the fused kernel where \
             no `attn_weights` is selected; a selected layer computes its probabilities once more, \
             unfused, beside it, and no other layer changes.",
            self.b_over_a.show(3),
            self.one_layer_ms.show(1),
            self.layers,
            self.per_layer_ms.show(1),
        );
        s
    }
}
