//! Section 2: the Rust path against the Python reference (transformers' `BertModel` with forward
//! hooks doing `detach().cpu()`), same weights, same token ids, same thread count.

use std::fmt::Write as _;
use std::time::Instant;

use hooks::{extract_representations, load_activations, save_activations, ActivationStore};
use hooks_models::{Bert, TextModel as _};
use serde_json::json;
use tch::{Device, Kind};

use crate::python::Worker;
use crate::stats::{mean, paired_ratios, Summary};
use crate::{ids_tensor, token_ids, write_jsonl, BenchResult, Config, Ctx, Shape, Target, LAYERS};

pub struct ForwardResult {
    shape: Shape,
    rust_ms: Summary,
    python_ms: Summary,
    ratio: Summary,
}

pub struct Reference {
    forwards: Vec<ForwardResult>,
    /// Seconds: the whole extraction, its forwards (and for Python the `torch.cat`), its save.
    extract_rust_s: [Summary; 3],
    extract_python_s: [Summary; 3],
    extract_ratio: Summary,
    /// The largest difference between the two extractions' outputs.
    max_abs_diff: f64,
    attn_implementation: String,
}

pub fn run(ctx: &mut Ctx) -> BenchResult<Reference> {
    let bert = Bert::load(&ctx.model_dir, Device::Cpu, Kind::Float)?;
    let mut forwards = Vec::new();
    {
        let store = ActivationStore::new(&bert, LAYERS)?;
        store.enable();
        for (i, &shape) in ctx.cfg.shapes.iter().enumerate() {
            let rows = token_ids(usize::try_from(shape.batch)?, shape.len, 2);
            let ids = ids_tensor(&rows);
            let mask = ids.ones_like();
            let (block, rounds) = (ctx.cfg.block[i], ctx.cfg.rounds[i]);
            // Each block starts with one untimed forward: the first forward of a process after
            // the other side has run is slower (by about 8% for Python at 32×64 here: caches and
            // freed memory gone cold), and that start-up is not what is being compared.
            let rust = |n: usize| -> BenchResult<f64> {
                let _ = bert.forward(&ids, &mask)?;
                let start = Instant::now();
                for _ in 0..n {
                    let _ = bert.forward(&ids, &mask)?;
                }
                Ok(start.elapsed().as_secs_f64() / n as f64)
            };
            let worker = &mut ctx.worker;
            let mut python = |n: usize| -> BenchResult<f64> {
                let reply = worker.call(&json!({"cmd": "forward", "ids": rows, "reps": n + 1}))?;
                Ok(mean(&Worker::seconds(&reply)[1..]))
            };
            rust(ctx.cfg.warmup[i])?;
            python(ctx.cfg.warmup[i])?;
            let (mut r, mut p) = (Vec::new(), Vec::new());
            for round in 0..rounds {
                if round % 2 == 0 {
                    r.push(rust(block)?);
                    p.push(python(block)?);
                } else {
                    p.push(python(block)?);
                    r.push(rust(block)?);
                }
            }
            forwards.push(ForwardResult {
                shape,
                rust_ms: Summary::of(&r).scaled(1e3),
                python_ms: Summary::of(&p).scaled(1e3),
                ratio: Summary::of(&paired_ratios(&r, &p)),
            });
        }
    }

    // The whole extraction: from token ids in memory to the .npz on disk.
    let cfg = &ctx.cfg;
    let rows = token_ids(cfg.extract_inputs, cfg.extract_len, 3);
    let input = ctx.path("extract.jsonl");
    write_jsonl(&input, &rows)?;
    let (rust_out, python_out) = (ctx.path("extract-rust.npz"), ctx.path("extract-python.npz"));
    // Each returns [total, forwards (with capture, and for Python its `torch.cat`), save].
    let rust = || -> BenchResult<[f64; 3]> {
        let start = Instant::now();
        let acts = extract_representations(&bert, &rows, &LAYERS, Device::Cpu, cfg.extract_batch, None)?;
        let extracted = start.elapsed().as_secs_f64();
        save_activations(&acts, &rust_out)?;
        let total = start.elapsed().as_secs_f64();
        Ok([total, extracted, total - extracted])
    };
    let python = |worker: &mut Worker| -> BenchResult<[f64; 3]> {
        let reply = worker.call(&json!({
            "cmd": "extract", "input": input, "batch": cfg.extract_batch, "out": python_out,
        }))?;
        let phase = |name: &str| reply[name].as_f64().unwrap_or(f64::NAN);
        // Untimed: flush numpy's file to disk now, or the next fsync (ours, in the same
        // filesystem journal) would pay for writing it.
        std::fs::File::open(&python_out)?.sync_all()?;
        Ok([phase("seconds"), phase("forwards") + phase("cat"), phase("save")])
    };
    let (mut r, mut p) = (Vec::new(), Vec::new());
    let mut max_abs_diff = f64::NAN;
    for round in 0..cfg.extract_rounds {
        if round % 2 == 0 {
            r.push(rust()?);
            p.push(python(&mut ctx.worker)?);
        } else {
            p.push(python(&mut ctx.worker)?);
            r.push(rust()?);
        }
        if round == 0 {
            max_abs_diff = compare(&rust_out, &python_out)?;
        }
        std::fs::remove_file(&rust_out)?;
        std::fs::remove_file(&python_out)?;
    }
    std::fs::remove_file(&input)?;
    Ok(Reference {
        forwards,
        extract_rust_s: phases(&r),
        extract_python_s: phases(&p),
        extract_ratio: Summary::of(&paired_ratios(&column(&r, 0), &column(&p, 0))),
        max_abs_diff,
        attn_implementation: ctx.versions["attn_implementation"].as_str().unwrap_or("?").to_owned(),
    })
}

fn column(rows: &[[f64; 3]], i: usize) -> Vec<f64> {
    rows.iter().map(|r| r[i]).collect()
}

/// Summaries of each phase's seconds.
fn phases(rows: &[[f64; 3]]) -> [Summary; 3] {
    [0, 1, 2].map(|i| Summary::of(&column(rows, i)))
}

/// The largest absolute difference between the same-named arrays of two files; an error when
/// their names or shapes differ (then the two sides did not do the same work).
pub fn compare(ours: &std::path::Path, theirs: &std::path::Path) -> BenchResult<f64> {
    let (ours, theirs) = (load_activations(ours)?, load_activations(theirs)?);
    let mut max = 0.0f64;
    for layer in LAYERS {
        let (Some(a), Some(b)) = (ours.get(layer), theirs.get(layer)) else {
            return Err(format!("`{layer}` is missing from an extraction").into());
        };
        if a.size() != b.size() {
            return Err(format!("`{layer}`: Rust {:?}, Python {:?}", a.size(), b.size()).into());
        }
        max = max.max((a - b).abs().max().double_value(&[]));
    }
    Ok(max)
}

impl Reference {
    pub fn targets(&self) -> Vec<Target> {
        let limits = [0.5, 1.0];
        let mut targets: Vec<Target> = self
            .forwards
            .iter()
            .zip(limits)
            .map(|(f, limit)| {
                Target::at_most(
                    format!("2. Rust/Python, forward with capture, {}", f.shape),
                    limit,
                    &f.ratio,
                    3,
                )
            })
            .collect();
        targets.push(Target::at_most(
            "2. Rust/Python, whole extraction to .npz",
            0.8,
            &self.extract_ratio,
            3,
        ));
        targets
    }

    pub fn markdown(&self, cfg: &Config) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## 2. Against the Python reference\n\n\
             `make bench` (section 2 of `cargo bench -p hooks-bench --bench report`; the Python side \
             is `hooks-bench/py/reference.py`)\n\n\
             Rust: `hooks_models::Bert` with an `ActivationStore` on the six block outputs. Python: \
             transformers' `BertModel` (attention: `{}`) with a forward hook on each of them doing \
             `output[0].detach().cpu()`, as the reference `ActivationStore` does, under \
             `torch.no_grad()`. Same weights, same token ids, {} intra-op thread(s) on both sides; \
             Python times itself around the forward only, so the pipe between the two is not \
             counted. Each side's block of forwards starts with one untimed forward (the first one \
             after the other side ran is slower, for Python by about 8% at 32×64).\n",
            self.attn_implementation, cfg.threads
        );
        s.push_str(
            "| forward with capture | rounds × forwards | Rust ms | Python ms | Rust/Python |\n|---|---|---|---|---|\n",
        );
        for (i, f) in self.forwards.iter().enumerate() {
            let _ = writeln!(
                s,
                "| {} | {} × {} | {} | {} | {} |",
                f.shape,
                cfg.rounds[i],
                cfg.block[i],
                f.rust_ms.show(2),
                f.python_ms.show(2),
                f.ratio.show(3)
            );
        }
        let (r, p) = (&self.extract_rust_s, &self.extract_python_s);
        let _ = writeln!(
            s,
            "\n| whole extraction: {} inputs × {} tokens, batch {}, six layers → .npz, {} rounds | Rust s | Python s | Rust/Python |\n|---|---|---|---|\n\
             | **total** | {} | {} | {} |\n\
             | forwards with capture (Python: and `torch.cat`) | {} | {} | |\n\
             | save (Rust: `save_activations`, with fsync; Python: `numpy.savez`) | {} | {} | |\n",
            cfg.extract_inputs,
            cfg.extract_len,
            cfg.extract_batch,
            cfg.extract_rounds,
            r[0].show(2),
            p[0].show(2),
            self.extract_ratio.show(3),
            r[1].show(2),
            p[1].show(2),
            r[2].show(2),
            p[2].show(2),
        );
        let _ = writeln!(
            s,
            "Whole extraction, Rust: `extract_representations` (rows copied into one buffer per \
             layer, allocated once) then `save_activations` (atomic: temporary file, fsync, \
             rename). Python: keep every batch's capture, `torch.cat` per layer, `numpy.savez` (no \
             fsync). Both are timed from token ids in memory to the file on disk. The two files \
             agree to {:.1e} (max abs difference over the six layers).",
            self.max_abs_diff
        );
        s
    }
}
