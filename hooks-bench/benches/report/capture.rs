//! Section 1: what capture sites cost in a real forward, off and on.
//!
//! Three builds of the same forward, in one process: (a) hooks-models built with the
//! `uninstrumented` feature (`hooks_models_uninstrumented`, pass-through wrappers, no capture
//! sites), (b) hooks-models with the switch off, (c) hooks-models capturing the six block outputs.

use std::fmt::Write as _;
use std::time::Instant;

use hooks::{switch, ActivationStore};
use hooks_models::{Bert, TextModel as _};
use hooks_models_uninstrumented::{Bert as PlainBert, TextModel as _};
use tch::{Device, Kind, Tensor};

use crate::stats::{paired_ratios, Summary};
use crate::{ids_tensor, token_ids, BenchResult, Config, Ctx, Shape, Target, LAYERS};

/// The variants, in the order of the tables.
const VARIANTS: [&str; 3] = [
    "(a) uninstrumented",
    "(b) instrumented, switch off",
    "(c) capturing 6 block outputs",
];

pub struct ShapeResult {
    shape: Shape,
    /// Milliseconds per forward, per variant.
    ms: [Summary; 3],
    b_over_a: Summary,
    c_over_b: Summary,
    /// (a) and (b) gave bitwise-equal outputs.
    same_output: bool,
}

pub struct CaptureCost {
    shapes: Vec<ShapeResult>,
}

pub fn run(ctx: &Ctx) -> BenchResult<CaptureCost> {
    let cfg = &ctx.cfg;
    let plain = PlainBert::load(&ctx.model_dir, Device::Cpu, Kind::Float)?;
    let bert = Bert::load(&ctx.model_dir, Device::Cpu, Kind::Float)?;
    let store = ActivationStore::new(&bert, LAYERS)?;
    store.enable();
    let mut shapes = Vec::new();
    for (i, &shape) in cfg.shapes.iter().enumerate() {
        let ids = ids_tensor(&token_ids(usize::try_from(shape.batch)?, shape.len, 1));
        let mask = ids.ones_like();
        let forward = |variant: usize| -> BenchResult<Tensor> {
            Ok(match variant {
                0 => plain.forward(&ids, &mask)?,
                _ => bert.forward(&ids, &mask)?,
            })
        };
        // One block of `n` forwards of a variant, in seconds per forward. The switch is set
        // outside the timed region: it is the state being measured, not part of it.
        let time = |variant: usize, n: usize| -> BenchResult<f64> {
            switch::set(variant == 2);
            let start = Instant::now();
            for _ in 0..n {
                let _ = forward(variant)?;
            }
            Ok(start.elapsed().as_secs_f64() / n as f64)
        };

        let same_output = {
            switch::set(false);
            forward(0)?.equal(&forward(1)?)
        };
        for variant in 0..3 {
            time(variant, cfg.warmup[i])?;
        }
        let mut seconds: [Vec<f64>; 3] = Default::default();
        for round in 0..cfg.rounds[i] {
            for k in 0..3 {
                let variant = (round + k) % 3;
                seconds[variant].push(time(variant, cfg.block[i])?);
            }
        }
        switch::set(true);
        if store
            .get(LAYERS[5])
            .is_none_or(|t| t.size()[..2] != [shape.batch, shape.len])
        {
            return Err("variant (c) captured nothing".into());
        }
        shapes.push(ShapeResult {
            shape,
            ms: seconds.each_ref().map(|s| Summary::of(s).scaled(1e3)),
            b_over_a: Summary::of(&paired_ratios(&seconds[1], &seconds[0])),
            c_over_b: Summary::of(&paired_ratios(&seconds[2], &seconds[1])),
            same_output,
        });
    }
    Ok(CaptureCost { shapes })
}

impl CaptureCost {
    pub fn targets(&self) -> Vec<Target> {
        let Some(large) = self.shapes.last() else {
            return Vec::new();
        };
        vec![
            Target::at_most(
                format!("1. b/a (switch off vs no sites), {}", large.shape),
                1.01,
                &large.b_over_a,
                3,
            ),
            Target::at_most(
                format!("1. c/b (capturing vs off), {}", large.shape),
                1.05,
                &large.c_over_b,
                3,
            ),
        ]
    }

    pub fn markdown(&self, cfg: &Config) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## 1. Capture cost\n\n\
             `make bench` (section 1 of `cargo bench -p hooks-bench --bench report`)\n\n\
             all-MiniLM-L6-v2 forward (`TextModel::forward`), f32, CPU. (a) the same source built \
             with pass-through wrappers instead of capture sites (`hooks-models` feature \
             `uninstrumented`, linked into the same process as `hooks_models_uninstrumented`); \
             (b) the instrumented model with `switch::set(false)`; (c) the instrumented model \
             capturing `encoder.layer.0` … `encoder.layer.5` (a store in `Replace` mode, so each \
             forward makes six detached CPU copies).\n"
        );
        let _ = writeln!(
            s,
            "| shape | rounds × forwards | {} ms | {} ms | {} ms | b/a | c/b | (a) = (b) bitwise |\n|---|---|---|---|---|---|---|---|",
            VARIANTS[0], VARIANTS[1], VARIANTS[2]
        );
        for (i, r) in self.shapes.iter().enumerate() {
            let _ = writeln!(
                s,
                "| {} | {} × {} | {} | {} | {} | {} | {} | {} |",
                r.shape,
                cfg.rounds[i],
                cfg.block[i],
                r.ms[0].show(2),
                r.ms[1].show(2),
                r.ms[2].show(2),
                r.b_over_a.show(3),
                r.c_over_b.show(3),
                if r.same_output { "yes" } else { "**no**" },
            );
        }
        let _ = writeln!(
            s,
            "\nRatios are per round (each round runs the three variants back to back, order \
             rotated), then the median and interquartile range over rounds. A disabled capture \
             site is one relaxed load and a branch (per-site cost below), and BERT-6 has about \
             100 of them per forward: b/a can only differ from 1 by noise. c/b is the cost of six \
             copies of `[B, T, 384]` floats (0.15 MB at 1×16, 19 MB at 32×64) and the store's \
             bookkeeping; the Python reference's `.detach().cpu()` makes no copy on CPU (it shares \
             storage, so a later in-place op changes what it captured), which is why we copy."
        );
        s
    }
}
