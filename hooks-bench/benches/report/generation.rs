//! Section 10: generation. `hooks generate` (the binary, the whole command) on section 8's
//! Llama-shaped model, against transformers' `generate` (`py/generate.py run`) at batch 1 and 8,
//! and against itself capturing every block output or steering one layer; then, in process, where
//! the time of a decode step goes. Every file of greedy tokens is checked to be the model's own
//! greedy choices (`py/generate.py check`): a comparison of different computations would be
//! worthless.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use hooks::{Intervention, Interventions, Item};
use hooks_models::generate::{generate_timed, GenerateOptions, GenerateStats};
use tch::{Device, Kind, Tensor};

use crate::decoder::{command, timed, Arch};
use crate::stats::{paired_ratios, Summary};
use crate::{hooks_binary, token_ids, write_jsonl, BenchResult, Ctx, Target};

/// The commands timed, by index.
const HOOKS_1: usize = 0;
const PYTHON_1: usize = 1;
const HOOKS_8: usize = 2;
const PYTHON_8: usize = 3;
const CAPTURE_8: usize = 4;
const STEER_8: usize = 5;
const NAMES: [&str; 6] = [
    "`hooks generate`, batch 1",
    "transformers `generate`, batch 1",
    "`hooks generate`, batch 8",
    "transformers `generate`, batch 8",
    "`hooks generate`, batch 8, every block output captured",
    "`hooks generate`, batch 8, one layer steered",
];
/// The targets.
const VS_PYTHON_1: f64 = 0.5;
const VS_PYTHON_8: f64 = 0.8;
const CAPTURE: f64 = 1.10;
const STEER: f64 = 1.02;

/// `generate.py`, next to this crate's manifest.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("py/generate.py")
}

/// One row of the timing table at one thread count.
pub struct Row {
    threads: i32,
    seconds: [Summary; 6],
    /// Per round: hooks over transformers at batch 1 and 8, capture and steering over plain.
    ratios: [Summary; 4],
}

/// One row of the breakdown table: its seconds out of a [`Breakdown`].
type Part = fn(&Breakdown) -> f64;

/// Where the time of one in-process `generate` goes, in seconds.
pub struct Breakdown {
    total: f64,
    /// Prefill and every decode step through the KV cache (its growth included).
    forward: f64,
    /// The final norm and `lm_head` of each step's last positions.
    readout: f64,
    /// The arg-max and the chosen ids' copy to the host.
    choice: f64,
    /// The same call capturing every block output, and the part of it spent assembling each
    /// prompt's captures.
    captured: f64,
    assembling: f64,
    /// The same call steering the middle block.
    steered: f64,
    /// The cache at the end: bytes, on the device.
    cache_bytes: i64,
}

pub struct GenerationBench {
    arch: Arch,
    model_bytes: u64,
    prompts: usize,
    len: i64,
    new_tokens: usize,
    rounds: usize,
    rows: Vec<Row>,
    /// `generate.py check`'s replies: ours at batch 1, at batch 8 (against transformers').
    agreement: [serde_json::Value; 2],
    /// In process: one prompt alone (batch 1), and the prompts in one batch.
    breakdown: Vec<(usize, Breakdown)>,
    breakdown_threads: i32,
    /// What a decode step must read at least: every weight but the embedding's, in bytes; and
    /// this machine's read bandwidth (a libtorch sum over 256 MB of f32), in bytes per second.
    weights_read: f64,
    bandwidth: f64,
    missing_cli: bool,
}

/// The files and commands of the section.
struct Commands<'a> {
    ctx: &'a Ctx,
    hooks: &'a Path,
    model: &'a Path,
    prompts: &'a Path,
    vector: &'a Path,
    /// The steered layer: the middle block.
    steered: String,
    new_tokens: usize,
}

impl Commands<'_> {
    fn out(&self, which: usize) -> PathBuf {
        self.ctx.path(&format!("generate-{which}.jsonl"))
    }

    /// Runs command `which` at `threads`: its seconds.
    fn time(&self, which: usize, threads: i32) -> BenchResult<f64> {
        let out = self.out(which);
        let path = |p: &Path| p.display().to_string();
        if which == PYTHON_1 || which == PYTHON_8 {
            let mut cmd = crate::python::command(&self.ctx.python, threads);
            cmd.arg(script()).arg("run").arg("--model").arg(self.model);
            cmd.arg("--input").arg(self.prompts).arg("--out").arg(&out);
            let batch = if which == PYTHON_1 { "1" } else { "8" };
            cmd.args(["--batch-size", batch, "--threads", &threads.to_string()]);
            cmd.args(["--max-new-tokens", &self.new_tokens.to_string()]);
            return timed(cmd, "generate.py run");
        }
        let mut argv: Vec<String> = vec![
            path(self.hooks),
            "generate".into(),
            "--model".into(),
            path(self.model),
            "--input".into(),
            path(self.prompts),
            "--input-format".into(),
            "jsonl".into(),
            "--max-new-tokens".into(),
            self.new_tokens.to_string(),
            "--batch-size".into(),
            if which == HOOKS_1 { "1" } else { "8" }.into(),
            "--out".into(),
            path(&out),
        ];
        if which == CAPTURE_8 {
            let acts = self.ctx.path("generate-acts.npz");
            argv.extend([
                "--layers".into(),
                "model.layers.*".into(),
                "--activations".into(),
                path(&acts),
            ]);
        }
        if which == STEER_8 {
            argv.extend(["--steer".into(), format!("{}={}@4", self.steered, path(self.vector))]);
        }
        timed(command(&argv, threads), "hooks generate")
    }

    /// `generate.py check` of command `ours`' file (and `theirs`'): its reply, or an error when a
    /// token is not the model's greedy choice.
    fn check(&self, ours: usize, theirs: Option<usize>) -> BenchResult<serde_json::Value> {
        let mut cmd = crate::python::command(&self.ctx.python, self.ctx.cfg.threads);
        cmd.arg(script())
            .arg("check")
            .arg("--model")
            .arg(self.model)
            .arg("--ours")
            .arg(self.out(ours));
        if let Some(theirs) = theirs {
            cmd.arg("--theirs").arg(self.out(theirs));
        }
        let out = cmd.output()?;
        if !out.status.success() {
            return Err(format!("generate.py check: {}", String::from_utf8_lossy(&out.stderr).trim()).into());
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }
}

/// A model folder whose generation never stops early: no end-of-sequence id in either config.
fn without_eos(dir: &Path) -> BenchResult<()> {
    for name in ["config.json", "generation_config.json"] {
        let path = dir.join(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let mut json: serde_json::Value = serde_json::from_str(&text)?;
        json["eos_token_id"] = serde_json::Value::Null;
        std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}

pub fn run(ctx: &mut Ctx) -> BenchResult<GenerationBench> {
    let full = ctx.cfg.full;
    let arch = Arch::llama(full);
    let (prompts, len, new_tokens, rounds) = if full { (8, 32, 128, 3) } else { (8, 4, 4, 1) };
    let threads: &[i32] = if full { &[1, 2] } else { &[1] };
    let hooks = hooks_binary();
    if hooks.is_none() && full {
        return Err("no `hooks` binary next to this one; run `make bench`, which builds it".into());
    }
    let model = ctx.path("generate-llama");
    let model_bytes = arch.make(ctx, &model)?;
    without_eos(&model)?;
    let input = ctx.path("generate-prompts.jsonl");
    let rows = token_ids(prompts, len, 21);
    write_jsonl(&input, &rows)?;
    let vector = ctx.path("generate-vector.npy");
    Tensor::randn([arch.hidden], (Kind::Float, Device::Cpu)).write_npy(&vector)?;

    let mut result = GenerationBench {
        arch,
        model_bytes,
        prompts,
        len,
        new_tokens,
        rounds,
        rows: Vec::new(),
        agreement: [serde_json::Value::Null, serde_json::Value::Null],
        breakdown: Vec::new(),
        breakdown_threads: ctx.cfg.threads,
        weights_read: model_bytes as f64 - (arch.vocab * arch.hidden * 4) as f64,
        bandwidth: f64::NAN,
        missing_cli: hooks.is_none(),
    };
    if let Some(hooks) = &hooks {
        let cmds = Commands {
            ctx,
            hooks,
            model: &model,
            prompts: &input,
            vector: &vector,
            steered: format!("model.layers.{}", arch.layers / 2),
            new_tokens,
        };
        for &n in threads {
            // A warm-up of each command, untimed.
            if full {
                for which in 0..NAMES.len() {
                    cmds.time(which, n)?;
                }
            }
            let mut samples: [Vec<f64>; 6] = Default::default();
            for round in 0..rounds {
                let mut order: Vec<usize> = (0..NAMES.len()).collect();
                order.rotate_left(round % NAMES.len());
                for which in order {
                    samples[which].push(cmds.time(which, n)?);
                }
                if round == 0 && n == threads[0] {
                    result.agreement = [cmds.check(HOOKS_1, None)?, cmds.check(HOOKS_8, Some(PYTHON_8))?];
                }
            }
            result.rows.push(Row {
                threads: n,
                seconds: std::array::from_fn(|which| Summary::of(&samples[which])),
                ratios: [
                    Summary::of(&paired_ratios(&samples[HOOKS_1], &samples[PYTHON_1])),
                    Summary::of(&paired_ratios(&samples[HOOKS_8], &samples[PYTHON_8])),
                    Summary::of(&paired_ratios(&samples[CAPTURE_8], &samples[HOOKS_8])),
                    Summary::of(&paired_ratios(&samples[STEER_8], &samples[HOOKS_8])),
                ],
            });
        }
    }
    for batch in [&rows[..1], &rows[..]] {
        result
            .breakdown
            .push((batch.len(), breakdown(&arch, &model, batch, new_tokens)?));
    }
    result.bandwidth = read_bandwidth();
    let _ = std::fs::remove_dir_all(&model);
    Ok(result)
}

/// Where the time of `generate` goes, in this process: `generate_timed` plain (its own timers
/// split the call), capturing every block output, and steering the middle block; the best of
/// three of each.
fn breakdown(arch: &Arch, dir: &Path, prompts: &[Vec<i64>], new_tokens: usize) -> BenchResult<Breakdown> {
    let kv_values = i64::try_from(arch.layers)? * arch.kv_heads * (arch.hidden / arch.heads);
    let model = hooks_models::load(dir, Device::Cpu, Kind::Float)?;
    let items: Vec<Item> = prompts.iter().map(|p| Item::new(p.clone())).collect();
    let options = GenerateOptions {
        max_new_tokens: new_tokens,
        batch_size: items.len(),
        ..GenerateOptions::default()
    };
    let best = |options: &GenerateOptions| -> BenchResult<(f64, GenerateStats)> {
        let mut best = (f64::INFINITY, GenerateStats::default());
        for _ in 0..3 {
            let start = Instant::now();
            let (_, stats) = generate_timed(&*model, &items, options, &mut |_, _| {})?;
            let seconds = start.elapsed().as_secs_f64();
            if seconds < best.0 {
                best = (seconds, stats);
            }
        }
        Ok(best)
    };
    let (total, stats) = best(&options)?;
    let captured = best(&GenerateOptions {
        layers: vec!["model.layers.*".into()],
        ..options.clone()
    })?;
    let vector = Tensor::randn([arch.hidden], (Kind::Float, Device::Cpu));
    let steering = Interventions::new(
        &*model,
        [(
            format!("model.layers.{}", arch.layers / 2),
            Intervention::add(vector, 4.0),
        )],
    )?;
    let steered = best(&GenerateOptions {
        interventions: Some(Arc::new(steering)),
        ..options.clone()
    })?;
    let tokens = i64::try_from(prompts[0].len() + new_tokens)?;
    Ok(Breakdown {
        total,
        forward: stats.forward.as_secs_f64(),
        readout: stats.readout.as_secs_f64(),
        choice: stats.choice.as_secs_f64(),
        captured: captured.0,
        assembling: captured.1.captures.as_secs_f64(),
        steered: steered.0,
        // Keys and values, f32: 2 × layers × B × kv heads × tokens × head dim.
        cache_bytes: 2 * kv_values * i64::try_from(items.len())? * tokens * 4,
    })
}

/// Bytes per second a libtorch sum reads over 256 MB of f32 (best of five): the memory bandwidth a
/// batch-1 decode step, which reads every weight once, is bound by.
fn read_bandwidth() -> f64 {
    let n: i64 = 64 << 20;
    let a = Tensor::ones([n], (Kind::Float, Device::Cpu));
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        let _ = a.sum(Kind::Float).double_value(&[]);
        best = best.min(start.elapsed().as_secs_f64());
    }
    (n * 4) as f64 / best
}

impl GenerationBench {
    pub fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        for row in &self.rows {
            let n = row.threads;
            targets.push(Target::at_most(
                format!("10. `hooks generate`/transformers `generate`, batch 1, {n} thread(s)"),
                VS_PYTHON_1,
                &row.ratios[0],
                3,
            ));
            targets.push(Target::at_most(
                format!("10. `hooks generate`/transformers `generate`, batch 8, {n} thread(s)"),
                VS_PYTHON_8,
                &row.ratios[1],
                3,
            ));
            targets.push(Target::at_most(
                format!("10. generation capturing every block output/capturing nothing, {n} thread(s)"),
                CAPTURE,
                &row.ratios[2],
                3,
            ));
            targets.push(Target::at_most(
                format!("10. generation steering one layer/none, {n} thread(s)"),
                STEER,
                &row.ratios[3],
                3,
            ));
        }
        targets
    }

    pub fn markdown(&self) -> String {
        let a = &self.arch;
        let agreement = |v: &serde_json::Value| {
            if v.is_null() {
                return "not measured".to_owned();
            }
            let gap = v["largest_gap"].as_f64().unwrap_or(f64::NAN);
            let mut text = format!(
                "{} of {} tokens are the arg-max of transformers' logits over the same prefix",
                v["argmax"], v["tokens"]
            );
            if gap > 0.0 {
                let _ = write!(text, ", the others within {gap:.1e} of it in log-probability (ties)");
            }
            if v.get("alike").is_some() {
                let _ = write!(
                    text,
                    "; {} of {} tokens equal transformers' own `generate`",
                    v["alike"], v["theirs_tokens"]
                );
            }
            text
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## 10. Generation\n\n\
             `make bench` (section 10 of the report; `HOOKS_BENCH_SECTIONS=10` runs it alone; \
             Python: `hooks-bench/py/generate.py`)\n\n\
             The model: section 8's, transformers' {} with seeded random weights ({:.1} MB of f32 \
             safetensors), its `eos_token_id` removed so that every prompt runs to the end. The \
             input: {} prompts × {} random token ids (one length: no padding on either side), {} \
             new tokens each, greedy.\n\n\
             Each command is timed whole, from process start to its file written: `hooks \
             generate --model DIR --input IDS.jsonl --max-new-tokens {} --batch-size B --out \
             OUT.jsonl` (release build), with `--layers 'model.layers.*' --activations A.npz` \
             (every block output over prompt and output) or `--steer model.layers.{}=v.npy@4` (a random normal vector); \
             and `generate.py run`: `AutoModelForCausalLM.from_pretrained` (attention: `sdpa`), \
             `model.generate(do_sample=False, max_new_tokens={})` per batch under `no_grad` (its \
             KV cache on), the ids written as JSON lines. Threads: `OMP_NUM_THREADS` for both, and \
             `torch.set_num_threads`. At each thread count a warm-up run of each, then {} round(s), \
             the order rotating; ratios per round.\n\n\
             **Agreement** (`generate.py check`, which fails the run on a token that is not the \
             model's greedy choice): batch 1: {}. Batch 8: {}.\n",
            a.describe(),
            self.model_bytes as f64 / 1e6,
            self.prompts,
            self.len,
            self.new_tokens,
            self.new_tokens,
            self.arch.layers / 2,
            self.new_tokens,
            self.rounds,
            agreement(&self.agreement[0]),
            agreement(&self.agreement[1]),
        );
        if self.missing_cli {
            s.push_str("No `hooks` binary was found next to this benchmark: not measured.\n");
        } else {
            s.push_str("| command | threads | seconds |\n|---|---|---|\n");
            for row in &self.rows {
                for (name, seconds) in NAMES.iter().zip(&row.seconds) {
                    let _ = writeln!(s, "| {name} | {} | {} |", row.threads, seconds.show(2));
                }
            }
            s.push_str(
                "\n| threads | hooks/transformers, batch 1 | hooks/transformers, batch 8 | capture/none | steer/none |\n\
                 |---|---|---|---|---|\n",
            );
            for row in &self.rows {
                let cells: Vec<String> = row.ratios.iter().map(|r| r.show(3)).collect();
                let _ = writeln!(s, "| {} | {} |", row.threads, cells.join(" | "));
            }
        }
        if !self.breakdown.is_empty() {
            let steps = self.new_tokens as f64;
            let _ = write!(
                s,
                "\n**Where a decode step goes** (in process, `generate_timed` of one prompt alone and of \
                 the {} prompts in one batch, {} thread(s), its own timers splitting the call; best of \
                 three each), in ms per step of the {} (the prefill spread over them) and as a share \
                 of the plain call:\n\n| part |",
                self.prompts, self.breakdown_threads, self.new_tokens,
            );
            for (batch, _) in &self.breakdown {
                let _ = write!(s, " batch {batch} ms | share |");
            }
            s.push_str("\n|---|");
            s.push_str(&"---|---|".repeat(self.breakdown.len()));
            s.push('\n');
            let parts: [(&str, Part); 8] = [
                (
                    "the forward through the KV cache (prefill and steps; the cache's growth included)",
                    |b| b.forward,
                ),
                (
                    "the read-out (final norm, `lm_head`) of each row's last position",
                    |b| b.readout,
                ),
                ("the choice (arg-max, the ids' copy to the host)", |b| b.choice),
                ("the rest (the loop, its small tensors, streaming)", |b| {
                    b.total - b.forward - b.readout - b.choice
                }),
                ("**`generate`, whole**", |b| b.total),
                (
                    "capturing every block output (the same call with `layers`), added",
                    |b| b.captured - b.total,
                ),
                ("… of which assembling each prompt's captures", |b| b.assembling),
                ("steering the middle block (`Intervention::add`), added", |b| {
                    b.steered - b.total
                }),
            ];
            for (name, part) in parts {
                let _ = write!(s, "| {name} |");
                for (_, b) in &self.breakdown {
                    let x = part(b);
                    let _ = write!(s, " {:.2} | {:.0}% |", x / steps * 1e3, x / b.total * 100.0);
                }
                s.push('\n');
            }
            let cache: Vec<String> = self
                .breakdown
                .iter()
                .map(|(batch, b)| format!("{:.1} MB at batch {batch}", b.cache_bytes as f64 / 1e6))
                .collect();
            if let Some((_, one)) = self.breakdown.first() {
                let per_step = (one.forward + one.readout) / steps;
                let _ = writeln!(
                    s,
                    "\n**What bounds batch 1.** A decode step reads every weight but the embedding's \
                     once: {:.0} MB. This machine reads memory at {:.1} GB/s (a libtorch sum over \
                     256 MB of f32, best of five), so a step cannot take less than {:.1} ms; the \
                     forward and read-out of batch 1 take {:.1} ms, reading the weights at {:.1} \
                     GB/s ({:.0}% of that bandwidth).",
                    self.weights_read / 1e6,
                    self.bandwidth / 1e9,
                    self.weights_read / self.bandwidth * 1e3,
                    per_step * 1e3,
                    self.weights_read / per_step / 1e9,
                    self.weights_read / per_step / self.bandwidth * 100.0,
                );
            }
            let _ = writeln!(
                s,
                "\nThe cache never leaves the device: no step copies it to the host. At the end it \
                 holds {} (keys and values of every layer, `[batch, kv heads, tokens, head dim]` \
                 f32); each step appends one position per layer with `torch.cat`, inside the forward \
                 above.",
                cache.join(", ")
            );
        }
        s
    }
}
