//! Section 12: sparse autoencoders. `hooks extract --sae` (the binary, the whole command) of a
//! JumpReLU SAE's feature activations on section 8's Llama-shaped model into a dataset folder
//! (CSR), against the same extraction of the block without the SAE and against the same capture
//! written with transformers and SAELens (`py/sae.py extract`); the CSR folder's size against
//! dense; and `hooks features`' peak RSS at N and 8N inputs. Every pair of outputs is checked to
//! agree (`py/sae.py compare`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::decoder::{command, extract_argv, timed, Arch};
use crate::engine::long_tailed;
use crate::memory::peak_rss;
use crate::stats::{paired_ratios, Summary};
use crate::{hooks_binary, token_ids, write_jsonl, BenchResult, Ctx, Target};

/// The commands timed, by index: with the SAE, without it, the Python capture.
const WITH: usize = 0;
const WITHOUT: usize = 1;
const PYTHON: usize = 2;
/// The workloads: the corpus, and one short input (what starting a command costs).
const CORPUS: usize = 0;
const START_UP: usize = 1;
const START_UP_LEN: i64 = 8;
/// The targets: the SAE run within `SLACK × (1 + SAE FLOPs / model FLOPs)` of the run
/// without it; the CSR folder at most `CSR_SHARE` of dense; `hooks features`' peak RSS at 8N
/// inputs at most `FLAT` × its peak at N; at most `VS_PYTHON` of the Python capture's time.
const SLACK: f64 = 1.1;
const CSR_SHARE: f64 = 1.0 / 20.0;
const FLAT: f64 = 1.1;
const VS_PYTHON: f64 = 0.67;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("py/sae.py")
}

/// One row of the timing table at one thread count.
pub struct Row {
    threads: i32,
    seconds: [Summary; 3],
    vs_without: Summary,
    vs_python: Summary,
}

pub struct SaeBench {
    arch: Arch,
    layer: usize,
    d_sae: i64,
    l0: i64,
    corpus: usize,
    tokens: usize,
    batch: usize,
    rounds: usize,
    whole: Vec<Row>,
    less_start_up: Vec<Row>,
    /// Bytes of the CSR files, and of the same rows dense (`tokens × d_sae × 4`).
    csr_bytes: u64,
    dense_bytes: u64,
    agreement: serde_json::Value,
    /// `hooks features`: (inputs, tokens, peak RSS).
    memory: Vec<(usize, usize, u64)>,
    missing_cli: bool,
}

impl SaeBench {
    /// Per token: one block's FLOPs at the corpus' mean length, the model's up to the SAE's
    /// layer (the engine stops there), and the SAE's: its encoder, `2 × h × d_sae` (the
    /// features alone are captured, so nothing is decoded).
    fn flops(&self) -> (f64, f64, f64) {
        let a = &self.arch;
        let (h, i) = (a.hidden as f64, a.intermediate as f64);
        let kv = (a.kv_heads * (a.hidden / a.heads)) as f64;
        let len = self.tokens as f64 / self.corpus.max(1) as f64;
        let block = 2.0 * (2.0 * h * h + 2.0 * h * kv + 3.0 * h * i) + 4.0 * len * h;
        let model = (self.layer + 1) as f64 * block;
        (block, model, 2.0 * h * self.d_sae as f64)
    }

    fn limit(&self) -> f64 {
        let (_, model, sae) = self.flops();
        ((SLACK * (1.0 + sae / model)) * 100.0).round() / 100.0
    }
}

pub fn run(ctx: &mut Ctx) -> BenchResult<SaeBench> {
    let full = ctx.cfg.full;
    let arch = Arch::llama(full);
    let (corpus, batch, rounds, d_sae, l0) = if full {
        (128, 32, 3, 16_384, 64)
    } else {
        (4, 2, 1, 64, 8)
    };
    let threads: &[i32] = if full { &[1, 2] } else { &[1] };
    let measured: &[usize] = if full { &[CORPUS, START_UP] } else { &[CORPUS] };
    let layer = arch.layers / 2 - 1;
    let hooks = hooks_binary();
    if hooks.is_none() && full {
        return Err("no `hooks` binary next to this one; run `make bench`, which builds it".into());
    }
    let model = ctx.path("sae-llama");
    arch.make(ctx, &model)?;
    let rows = long_tailed(corpus, 21);
    let tokens: usize = rows.iter().map(Vec::len).sum();
    let inputs = [ctx.path("sae-corpus.jsonl"), ctx.path("sae-start-up.jsonl")];
    write_jsonl(&inputs[CORPUS], &rows)?;
    write_jsonl(&inputs[START_UP], &token_ids(1, START_UP_LEN, 22))?;
    let sae = ctx.path("sae");
    let mut make = crate::python::command(&ctx.python, ctx.cfg.threads);
    make.arg(script())
        .arg("make")
        .arg("--model")
        .arg(&model)
        .arg("--input")
        .arg(&inputs[CORPUS]);
    make.arg("--out").arg(&sae);
    make.args(["--layer", &layer.to_string(), "--d-sae", &d_sae.to_string()]);
    make.args(["--l0", &l0.to_string(), "--seed", "0"]);
    timed(make, "sae.py make")?;

    let mut result = SaeBench {
        arch,
        layer,
        d_sae,
        l0,
        corpus,
        tokens,
        batch,
        rounds,
        whole: Vec::new(),
        less_start_up: Vec::new(),
        csr_bytes: 0,
        dense_bytes: 0,
        agreement: serde_json::Value::Null,
        memory: Vec::new(),
        missing_cli: hooks.is_none(),
    };
    let Some(hooks) = hooks else {
        let _ = std::fs::remove_dir_all(&model);
        return Ok(result);
    };
    let block = format!("model.layers.{layer}");
    let point = format!("{block}.sae.hook_sae_acts_post");
    let attach = format!("{block}={}", sae.display());
    let (with_dir, without_dir, theirs) = (
        ctx.path("sae-with"),
        ctx.path("sae-without"),
        ctx.path("sae-python.npz"),
    );
    let time = |which: usize, input: &Path, n: i32| -> BenchResult<f64> {
        match which {
            WITH | WITHOUT => {
                let (layers, out) = if which == WITH {
                    (&point, &with_dir)
                } else {
                    (&block, &without_dir)
                };
                let _ = std::fs::remove_dir_all(out);
                let mut argv = extract_argv(&hooks, &model, input, layers, "none", batch, out);
                if which == WITH {
                    argv.extend(["--sae".to_owned(), attach.clone()]);
                }
                timed(command(&argv, n), "hooks extract")
            }
            _ => {
                let mut cmd = crate::python::command(&ctx.python, n);
                cmd.arg(script())
                    .arg("extract")
                    .arg("--model")
                    .arg(&model)
                    .arg("--sae")
                    .arg(&sae);
                cmd.arg("--input").arg(input).arg("--out").arg(&theirs);
                cmd.args(["--layer", &layer.to_string(), "--batch-size", &batch.to_string()]);
                cmd.args(["--threads", &n.to_string()]);
                timed(cmd, "sae.py extract")
            }
        }
    };
    let compare = || -> BenchResult<serde_json::Value> {
        let mut cmd = crate::python::command(&ctx.python, 1);
        cmd.arg(script())
            .arg("compare")
            .arg("--ours")
            .arg(&with_dir)
            .arg("--theirs")
            .arg(&theirs);
        cmd.args(["--layer", &layer.to_string()]);
        let out = cmd.output()?;
        if !out.status.success() {
            return Err(format!("sae.py compare: {}", String::from_utf8_lossy(&out.stderr).trim()).into());
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    };

    for &n in threads {
        if full {
            for which in [WITH, WITHOUT, PYTHON] {
                time(which, &inputs[START_UP], n)?;
            }
        }
        let mut samples: [[Vec<f64>; 3]; 2] = Default::default();
        for round in 0..rounds {
            for &w in measured {
                let mut order = [WITH, WITHOUT, PYTHON];
                order.rotate_left((round + w) % 3);
                for which in order {
                    samples[w][which].push(time(which, &inputs[w], n)?);
                }
                if w == CORPUS {
                    let agreement = compare()?;
                    if round == 0 && n == threads[0] {
                        result.agreement = agreement;
                        result.csr_bytes = ["indptr", "indices", "data"]
                            .iter()
                            .map(|part| {
                                std::fs::metadata(with_dir.join(format!("{point}.{part}.npy"))).map_or(0, |m| m.len())
                            })
                            .sum();
                        result.dense_bytes = tokens as u64 * d_sae as u64 * 4;
                    }
                }
            }
        }
        let less: [Vec<f64>; 3] = std::array::from_fn(|which| {
            let (whole, start_up) = (&samples[CORPUS][which], &samples[START_UP][which]);
            whole.iter().zip(start_up).map(|(w, s)| w - s).collect()
        });
        for (rows, s) in [
            (&mut result.whole, &samples[CORPUS]),
            (&mut result.less_start_up, &less),
        ] {
            if s[WITH].is_empty() {
                continue;
            }
            rows.push(Row {
                threads: n,
                seconds: [Summary::of(&s[WITH]), Summary::of(&s[WITHOUT]), Summary::of(&s[PYTHON])],
                vs_without: Summary::of(&paired_ratios(&s[WITH], &s[WITHOUT])),
                vs_python: Summary::of(&paired_ratios(&s[WITH], &s[PYTHON])),
            });
        }
    }

    // `hooks features` at N and 8N inputs, at the report's thread count.
    let stats = ctx.path("sae-stats.npz");
    for (k, seed) in [(1, 23), (8, 24)] {
        let rows = long_tailed(k * corpus, seed);
        let input = ctx.path(&format!("sae-features-{k}.jsonl"));
        write_jsonl(&input, &rows)?;
        let path = |p: &Path| p.display().to_string();
        let argv: Vec<String> = [
            path(&hooks),
            "features".into(),
            "--model".into(),
            path(&model),
            "--input".into(),
            path(&input),
            "--input-format".into(),
            "jsonl".into(),
            "--sae".into(),
            attach.clone(),
            "--batch-size".into(),
            batch.to_string(),
            "--out".into(),
            path(&stats),
        ]
        .into();
        let reply = peak_rss(ctx, &argv)?;
        if reply["status"].as_i64() != Some(0) {
            return Err(format!("hooks features failed:\n{}", reply["stderr"].as_str().unwrap_or("")).into());
        }
        let tokens = rows.iter().map(Vec::len).sum();
        result
            .memory
            .push((k * corpus, tokens, reply["peak_rss"].as_u64().unwrap_or(0)));
        let _ = std::fs::remove_file(&input);
    }
    for dir in [&with_dir, &without_dir, &sae, &model] {
        let _ = std::fs::remove_dir_all(dir);
    }
    for file in [&theirs, &stats].into_iter().chain(&inputs) {
        let _ = std::fs::remove_file(file);
    }
    Ok(result)
}

impl SaeBench {
    fn memory_ratio(&self) -> Summary {
        match self.memory.as_slice() {
            [(_, _, small), (_, _, big)] => Summary::of(&[*big as f64 / *small as f64]),
            _ => Summary::of(&[f64::NAN]),
        }
    }

    fn csr_share(&self) -> Summary {
        Summary::of(&[self.csr_bytes as f64 / self.dense_bytes.max(1) as f64])
    }

    pub fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        for row in &self.less_start_up {
            targets.push(Target::at_most(
                format!(
                    "12. SAE acts captured / the same extraction without the SAE, less start-up, {} thread(s)",
                    row.threads
                ),
                self.limit(),
                &row.vs_without,
                2,
            ));
        }
        if self.csr_bytes > 0 {
            targets.push(Target::at_most(
                "12. CSR folder size / dense size",
                (CSR_SHARE * 1000.0).round() / 1000.0,
                &self.csr_share(),
                4,
            ));
        }
        if !self.memory.is_empty() {
            targets.push(Target::at_most(
                "12. `hooks features` peak RSS at 8N inputs / at N",
                FLAT,
                &self.memory_ratio(),
                3,
            ));
        }
        // As section 9 judges its lens against Python's: whole commands, what a user waits for
        // (the less-start-up ratios are in the section's table).
        for row in &self.whole {
            targets.push(Target::at_most(
                format!(
                    "12. `hooks extract --sae` / transformers + SAELens, whole commands, {} thread(s)",
                    row.threads
                ),
                VS_PYTHON,
                &row.vs_python,
                3,
            ));
        }
        targets
    }

    pub fn markdown(&self) -> String {
        let (block, model, sae) = self.flops();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## 12. Sparse autoencoders\n\n\
             `make bench` (section 12 of the report; `HOOKS_BENCH_SECTIONS=12` runs it alone; \
             Python: `hooks-bench/py/sae.py`)\n\n\
             The model: section 8's {} with seeded random weights. The SAE: a SAELens \
             `JumpReLUSAE` of {} features on `model.layers.{}` (d_in {}), saved by SAELens, \
             `b_dec` the layer's mean and each threshold the quantile of its pre-activation that \
             makes it fire on {} / {} of the corpus' tokens (a mean L0 of about {}). The input: \
             {} long-tailed inputs (`engine::long_tailed`, 5–256 tokens), {} tokens, batches of \
             {}.\n\n\
             Each command is timed whole, from process start to its output synced:\n\n\
             - with the SAE: `hooks extract --sae model.layers.{}=SAE --layers \
             model.layers.{}.sae.hook_sae_acts_post --pool none --out DIR` (a dataset folder: the \
             features in CSR; release build);\n\
             - without it: `hooks extract --layers model.layers.{} --pool none --out DIR` (the \
             block's dense rows);\n\
             - transformers + SAELens (`sae.py extract`): `AutoModelForCausalLM.from_pretrained`, \
             `SAE.load_from_disk`, a forward hook on the block running `sae.encode` on the real \
             tokens, keeping them as a `scipy.sparse.csr_matrix` and stopping the forward there \
             (as the engine stops after the last selected layer), the same batches, \
             `scipy.sparse.save_npz` and an fsync.\n\n\
             At each thread count a warm-up run of each, then {} rounds, the order rotating; \
             ratios per round. **less start-up**: each command less the same round's run on one \
             input of {START_UP_LEN} tokens.\n\n\
             **The FLOP model** (per token): a block is {:.2} MFLOP at the corpus' mean length, \
             and the engine runs {} of them: {:.2} MFLOP. The SAE adds its encoder, 2 × d_in × d_sae = {:.2} \
             MFLOP (only the features are captured, so nothing is decoded; the relu, the \
             threshold and the CSR work are O(d_sae) and not counted). Predicted ratio 1 + {:.2} / {:.2} = {:.2}; the target {} × that = {:.2}.\n\n\
             **Agreement** (`sae.py compare`, first round; a difference fails the run): {}.\n",
            self.arch.describe(),
            self.d_sae,
            self.layer,
            self.arch.hidden,
            self.l0,
            self.d_sae,
            self.l0,
            self.corpus,
            self.tokens,
            self.batch,
            self.layer,
            self.layer,
            self.layer,
            self.rounds,
            block / 1e6,
            self.layer + 1,
            model / 1e6,
            sae / 1e6,
            sae / 1e6,
            model / 1e6,
            1.0 + sae / model,
            SLACK,
            self.limit(),
            if self.agreement.is_null() {
                "not measured".to_owned()
            } else {
                format!(
                    "the same nonzero pattern ({} values over {} tokens, mean L0 {:.1}), values within {:.1e}",
                    self.agreement["nnz"],
                    self.agreement["rows"],
                    self.agreement["mean_l0"].as_f64().unwrap_or(f64::NAN),
                    self.agreement["max_diff"].as_f64().unwrap_or(f64::NAN)
                )
            }
        );
        if self.missing_cli {
            let _ = writeln!(s, "Not measured: no `hooks` binary was built next to the benchmark.\n");
            return s;
        }
        for (title, rows) in [("whole commands", &self.whole), ("less start-up", &self.less_start_up)] {
            let _ = writeln!(
                s,
                "| {title} | threads | with the SAE (s) | without (s) | transformers + SAELens (s) | with / without | with / Python |\n|---|---|---|---|---|---|---|"
            );
            for r in rows {
                let _ = writeln!(
                    s,
                    "| | {} | {} | {} | {} | {} | {} |",
                    r.threads,
                    r.seconds[WITH].show(2),
                    r.seconds[WITHOUT].show(2),
                    r.seconds[PYTHON].show(2),
                    r.vs_without.show(2),
                    r.vs_python.show(3)
                );
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(
            s,
            "**On disk**: the CSR files hold {:.2} MB; the same rows dense would be {:.1} MB ({} tokens × {} × 4 bytes): a share of {:.4}.\n",
            self.csr_bytes as f64 / 1e6,
            self.dense_bytes as f64 / 1e6,
            self.tokens,
            self.d_sae,
            self.csr_share().median
        );
        let _ = writeln!(
            s,
            "**`hooks features`** (`--top-examples 20`, batches of {}), peak RSS under `peak_rss.py`:\n\n| inputs | tokens | peak RSS (MB) |\n|---|---|---|",
            self.batch
        );
        for (inputs, tokens, peak) in &self.memory {
            let _ = writeln!(s, "| {inputs} | {tokens} | {:.1} |", *peak as f64 / 1e6);
        }
        let _ = writeln!(s, "\nRatio 8N / N: {}.\n", self.memory_ratio().show(3));
        s
    }
}
