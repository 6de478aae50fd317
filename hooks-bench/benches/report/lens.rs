//! Section 9: the logit lens. `hooks lens` (the binary, the whole command) on section 8's
//! Llama-shaped model, against one plain forward of the same batches (`hooks extract` of the last
//! block's last token) and against the same lens written with transformers (`py/lens.py run`);
//! then its peak RSS at two top-K and two input counts. Every pair of lens files is checked to
//! agree (`py/lens.py compare`): a comparison of different computations would be worthless.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::decoder::{command, extract_argv, python_side, timed, Arch};
use crate::engine::long_tailed;
use crate::memory::peak_rss;
use crate::stats::{paired_ratios, Summary};
use crate::{hooks_binary, token_ids, write_jsonl, BenchResult, Ctx, Target};

/// The three commands timed, by index: `hooks lens`, `lens.py run`, `hooks extract`.
const LENS: usize = 0;
const PYTHON: usize = 1;
const PLAIN: usize = 2;
/// The workloads, by index: the prompts, and one short input (what starting a command costs).
const PROMPTS: usize = 0;
const START_UP: usize = 1;
/// The start-up run's one input: this many tokens.
const START_UP_LEN: i64 = 8;
/// The top K of the timed runs (`hooks lens`' default), and the larger one of the memory runs.
const K: usize = 10;
const LARGE_K: usize = 100;
/// The targets: `hooks lens` within `1 + SLACK × (read-outs × unembedding share)` of one
/// plain forward, and at most this fraction of the transformers lens' time.
const SLACK: f64 = 1.2;
const VS_PYTHON: f64 = 0.8;
/// What an added input may add to the peak RSS, as a fraction of its `[L, T, vocab]` f32
/// read-outs: a lens that kept every distribution would add all of it.
const PER_INPUT: f64 = 0.01;

/// `lens.py`, next to this crate's manifest.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("py/lens.py")
}

/// The FLOP model of the section, per token of a `[batch, len]` forward.
#[derive(Clone, Copy)]
pub struct Flops {
    /// One decoder block: its projections (2 FLOPs per weight) and attention over `len` positions.
    block: f64,
    /// One plain forward: every block (`hooks extract` stops after the last; no final norm, no
    /// unembedding).
    plain: f64,
    /// One read-out's unembedding, `2 × hidden × vocab`.
    readout: f64,
    /// Read-outs per token: the embedding's and every block's.
    readouts: usize,
}

impl Flops {
    fn of(arch: &Arch, len: i64) -> Flops {
        let (h, i) = (arch.hidden as f64, arch.intermediate as f64);
        let kv = (arch.kv_heads * (arch.hidden / arch.heads)) as f64;
        // q and o are h × h, k and v h × kv, the gated MLP three h × i; QKᵀ and the weighted sum
        // of values 2 × len × h each (unmasked, as SDPA computes it under a padding mask).
        let block = 2.0 * (2.0 * h * h + 2.0 * h * kv + 3.0 * h * i) + 4.0 * len as f64 * h;
        Flops {
            block,
            plain: arch.layers as f64 * block,
            readout: 2.0 * h * arch.vocab as f64,
            readouts: arch.layers + 1,
        }
    }

    /// The unembedding's FLOPs over one plain forward's.
    fn share(&self) -> f64 {
        self.readout / self.plain
    }

    /// What the model predicts for lens time over plain-forward time.
    fn predicted(&self) -> f64 {
        1.0 + self.readouts as f64 * self.share()
    }

    /// The target, rounded to two decimals: `1 + SLACK × read-outs × share`.
    fn limit(&self) -> f64 {
        ((1.0 + SLACK * self.readouts as f64 * self.share()) * 100.0).round() / 100.0
    }
}

/// One row of the timing table at one thread count.
pub struct Row {
    threads: i32,
    /// Seconds of `hooks lens`, `lens.py run` and `hooks extract`.
    seconds: [Summary; 3],
    /// `hooks lens` over `lens.py run`, and over `hooks extract`, per round.
    vs_python: Summary,
    vs_plain: Summary,
}

/// One run under `peak_rss.py`.
pub struct MemoryRun {
    what: &'static str,
    inputs: usize,
    /// The top K of a lens run; none for the plain forward.
    k: Option<usize>,
    peak: u64,
    output: u64,
}

pub struct LensBench {
    arch: Arch,
    flops: Flops,
    model_bytes: u64,
    inputs: usize,
    len: i64,
    batch: usize,
    rounds: usize,
    whole: Vec<Row>,
    /// Each command less the same round's start-up run of it.
    less_start_up: Vec<Row>,
    start_up: Vec<Row>,
    /// `lens.py compare`'s reply on the prompts (first round), and on the long-tailed corpus.
    agreement: serde_json::Value,
    corpus_agreement: serde_json::Value,
    corpus: usize,
    corpus_batch: usize,
    memory: Vec<MemoryRun>,
    /// The thread count of the memory runs (the report's).
    memory_threads: i32,
    /// The `hooks` binary was not found (only tolerated in the smoke run).
    missing_cli: bool,
}

/// The command line of `hooks lens` over `input` into `out`.
fn lens_argv(hooks: &Path, model: &Path, input: &Path, batch: usize, k: usize, out: &Path) -> Vec<String> {
    let path = |p: &Path| p.display().to_string();
    [
        path(hooks),
        "lens".into(),
        "--model".into(),
        path(model),
        "--input".into(),
        path(input),
    ]
    .into_iter()
    .chain([
        "--top-k".into(),
        k.to_string(),
        "--batch-size".into(),
        batch.to_string(),
    ])
    .chain(["--out".into(), path(out)])
    .collect()
}

/// `lens.py run` over `input` into `out`, at `threads`: its seconds.
fn python_lens(ctx: &Ctx, model: &Path, input: &Path, batch: usize, threads: i32, out: &Path) -> BenchResult<f64> {
    let mut cmd = python_side(ctx, &script(), "run", [model, input, out], batch, threads);
    cmd.args(["--top-k", &K.to_string()]);
    timed(cmd, "lens.py run")
}

/// `lens.py compare` of the two files: its reply, or an error when they disagree.
fn compare(ctx: &Ctx, ours: &Path, theirs: &Path) -> BenchResult<serde_json::Value> {
    let mut cmd = crate::python::command(&ctx.python, 1);
    cmd.arg(script())
        .arg("compare")
        .arg("--ours")
        .arg(ours)
        .arg("--theirs")
        .arg(theirs);
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned().into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The commands of the section, over any input.
#[derive(Clone)]
struct Commands<'a> {
    hooks: &'a Path,
    model: &'a Path,
    batch: usize,
    last_block: String,
}

impl Commands<'_> {
    fn lens(&self, input: &Path, k: usize, out: &Path) -> Vec<String> {
        lens_argv(self.hooks, self.model, input, self.batch, k, out)
    }

    fn plain(&self, input: &Path, out: &Path) -> Vec<String> {
        extract_argv(self.hooks, self.model, input, &self.last_block, "last", self.batch, out)
    }

    /// Runs command `which` over `input` at `threads`: its seconds.
    fn time(&self, ctx: &Ctx, which: usize, input: &Path, threads: i32) -> BenchResult<f64> {
        let out = ctx.path(["lens-hooks.npz", "lens-python.npz", "plain.npz"][which]);
        match which {
            LENS => timed(command(&self.lens(input, K, &out), threads), "hooks lens"),
            PYTHON => python_lens(ctx, self.model, input, self.batch, threads, &out),
            _ => timed(command(&self.plain(input, &out), threads), "hooks extract"),
        }
    }
}

pub fn run(ctx: &mut Ctx) -> BenchResult<LensBench> {
    let full = ctx.cfg.full;
    let arch = Arch::llama(full);
    // Per thread count: a warm-up of each command, then `rounds` of the prompts and of the
    // start-up input. Every Python process pays seconds of imports, so the smoke run does one
    // round of the prompts at one thread count, no warm-up.
    let (inputs, len, batch, rounds) = if full { (64, 64, 32, 3) } else { (4, 8, 2, 1) };
    let threads: &[i32] = if full { &[1, 2] } else { &[1] };
    let measured: &[usize] = if full { &[PROMPTS, START_UP] } else { &[PROMPTS] };
    let (corpus, corpus_batch) = if full { (32, 8) } else { (4, 2) };
    let hooks = hooks_binary();
    if hooks.is_none() && full {
        return Err("no `hooks` binary next to this one; run `make bench`, which builds it".into());
    }

    let model = ctx.path("lens-llama");
    let model_bytes = arch.make(ctx, &model)?;
    let inputs_of = [ctx.path("lens-prompts.jsonl"), ctx.path("lens-start-up.jsonl")];
    write_jsonl(&inputs_of[PROMPTS], &token_ids(inputs, len, 11))?;
    write_jsonl(&inputs_of[START_UP], &token_ids(1, START_UP_LEN, 12))?;

    let mut result = LensBench {
        arch,
        flops: Flops::of(&arch, len),
        model_bytes,
        inputs,
        len,
        batch,
        rounds,
        whole: Vec::new(),
        less_start_up: Vec::new(),
        start_up: Vec::new(),
        agreement: serde_json::Value::Null,
        corpus_agreement: serde_json::Value::Null,
        corpus,
        corpus_batch,
        memory: Vec::new(),
        memory_threads: ctx.cfg.threads,
        missing_cli: hooks.is_none(),
    };
    let Some(hooks) = hooks else {
        let _ = std::fs::remove_dir_all(&model);
        return Ok(result);
    };
    let cmds = Commands {
        hooks: &hooks,
        model: &model,
        batch,
        last_block: format!("model.layers.{}", arch.layers - 1),
    };
    let (ours, theirs) = (ctx.path("lens-hooks.npz"), ctx.path("lens-python.npz"));

    // Agreement where padding and reordering matter: a long-tailed corpus in small batches.
    let corpus_input = ctx.path("lens-corpus.jsonl");
    write_jsonl(&corpus_input, &long_tailed(corpus, 13))?;
    let corpus_cmds = Commands {
        batch: corpus_batch,
        ..cmds.clone()
    };
    for which in [LENS, PYTHON] {
        corpus_cmds.time(ctx, which, &corpus_input, threads[threads.len() - 1])?;
    }
    result.corpus_agreement = compare(ctx, &ours, &theirs)?;

    for &n in threads {
        // A warm-up of each command, untimed: the first run after another's pays for pages the
        // other evicted (libraries, the model file).
        if full {
            for which in [LENS, PYTHON, PLAIN] {
                cmds.time(ctx, which, &inputs_of[START_UP], n)?;
            }
        }
        // Per workload, per command, the seconds of each round.
        let mut samples: [[Vec<f64>; 3]; 2] = Default::default();
        for round in 0..rounds {
            for &w in measured {
                // Which command goes first rotates, by round and by workload.
                let mut order = [LENS, PYTHON, PLAIN];
                order.rotate_left((round + w) % 3);
                for which in order {
                    samples[w][which].push(cmds.time(ctx, which, &inputs_of[w], n)?);
                }
                // Every pair of lens files is checked; the first round's figures are reported.
                let agreement = compare(ctx, &ours, &theirs)?;
                if round == 0 && n == threads[0] && w == PROMPTS {
                    result.agreement = agreement;
                }
            }
        }
        let less: [Vec<f64>; 3] = std::array::from_fn(|which| {
            let (whole, start_up) = (&samples[PROMPTS][which], &samples[START_UP][which]);
            whole.iter().zip(start_up).map(|(w, s)| w - s).collect()
        });
        for (rows, s) in [
            (&mut result.whole, &samples[PROMPTS]),
            (&mut result.less_start_up, &less),
            (&mut result.start_up, &samples[START_UP]),
        ] {
            if s[LENS].is_empty() {
                continue;
            }
            rows.push(Row {
                threads: n,
                seconds: [Summary::of(&s[LENS]), Summary::of(&s[PYTHON]), Summary::of(&s[PLAIN])],
                vs_python: Summary::of(&paired_ratios(&s[LENS], &s[PYTHON])),
                vs_plain: Summary::of(&paired_ratios(&s[LENS], &s[PLAIN])),
            });
        }
    }

    // Peak RSS, at the report's thread count: the lens at K and a larger K, at 4× the inputs, and
    // the plain forward.
    let more = ctx.path("lens-more.jsonl");
    write_jsonl(&more, &token_ids(4 * inputs, len, 14))?;
    // Per run: what, inputs, the top K of a lens run (none: the plain forward).
    let runs = [
        ("`hooks lens`", inputs, Some(K)),
        ("`hooks lens`", inputs, Some(LARGE_K)),
        ("`hooks lens`", 4 * inputs, Some(K)),
        ("plain forward (`hooks extract`)", inputs, None),
    ];
    for (what, n, k) in runs {
        let input = if n == inputs { &inputs_of[PROMPTS] } else { &more };
        let argv = match k {
            Some(k) => cmds.lens(input, k, &ours),
            None => cmds.plain(input, &ours),
        };
        let reply = peak_rss(ctx, &argv)?;
        if reply["status"].as_i64() != Some(0) {
            return Err(format!("{what} failed:\n{}", reply["stderr"].as_str().unwrap_or("")).into());
        }
        result.memory.push(MemoryRun {
            what,
            inputs: n,
            k,
            peak: reply["peak_rss"].as_u64().unwrap_or(0),
            output: std::fs::metadata(&ours)?.len(),
        });
    }

    for path in [&ours, &theirs, &ctx.path("plain.npz"), &corpus_input, &more]
        .into_iter()
        .chain(&inputs_of)
    {
        let _ = std::fs::remove_file(path);
    }
    let _ = std::fs::remove_dir_all(&model);
    Ok(result)
}

fn mb(bytes: f64) -> f64 {
    bytes / 1e6
}

impl LensBench {
    /// Bytes of `[n, L, T, vocab]` float32: every read-out's whole distribution.
    fn distributions(&self, n: usize) -> f64 {
        (n * self.flops.readouts) as f64 * self.len as f64 * self.arch.vocab as f64 * 4.0
    }

    /// What each input beyond the first `inputs` added to the peak, over its own `[L, T, vocab]`
    /// float32 read-outs.
    fn per_input(&self) -> Summary {
        let peak = |n: usize| {
            self.memory
                .iter()
                .find(|r| r.inputs == n && r.k == Some(K))
                .map_or(f64::NAN, |r| r.peak as f64)
        };
        let (n, big) = (self.inputs, 4 * self.inputs);
        let added = (peak(big) - peak(n)) / (big - n) as f64;
        Summary::of(&[added / self.distributions(1)])
    }

    pub fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        for row in &self.less_start_up {
            targets.push(Target::at_most(
                format!(
                    "9. `hooks lens`/one plain forward (`hooks extract`), less start-up, {} thread(s)",
                    row.threads
                ),
                self.flops.limit(),
                &row.vs_plain,
                2,
            ));
        }
        for row in &self.whole {
            targets.push(Target::at_most(
                format!("9. `hooks lens`/the transformers lens, {} thread(s)", row.threads),
                VS_PYTHON,
                &row.vs_python,
                3,
            ));
        }
        if !self.memory.is_empty() {
            targets.push(Target::at_most(
                "9. `hooks lens` peak RSS per added input / its `[L, T, vocab]` f32 read-outs",
                PER_INPUT,
                &self.per_input(),
                4,
            ));
        }
        targets
    }

    pub fn markdown(&self) -> String {
        let (a, f) = (&self.arch, &self.flops);
        let agreement = |v: &serde_json::Value| {
            if v.is_null() {
                return "not measured".to_owned();
            }
            let x = |key: &str| v[key].as_f64().unwrap_or(f64::NAN);
            format!(
                "top-{} probabilities to {:.1e} ({:.1e} of their value), entropy to {:.1e} and KL to \
                 {:.1e} nats; {} of {} top ids differ, all at ties",
                K,
                x("top_probs_max_abs"),
                x("top_probs_max_rel"),
                x("entropy_max_diff"),
                x("kl_to_final_max_diff"),
                v["top_ids_differing"],
                x("positions") * K as f64,
            )
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## 9. The logit lens\n\n\
             `make bench` (section 9 of the report; `HOOKS_BENCH_SECTIONS=9` runs it alone; \
             Python: `hooks-bench/py/lens.py`)\n\n\
             The model: section 8's, transformers' {} with seeded random weights ({:.1} MB of f32 \
             safetensors), made by `decoder.py make` in this run. The input: {} prompts × {} \
             random token ids (JSONL `{{\"input_ids\": [...]}}`), batches of {}. Read-outs: the \
             default layers, `model.embed_tokens` and every `model.layers.N`: L = {}.\n\n\
             Each command is timed whole, from process start to its file written:\n\n\
             - `hooks lens --model DIR --input IDS.jsonl --top-k {K} --batch-size {} --out \
             LENS.npz` (release build);\n\
             - the transformers lens, `lens.py run`: `AutoModelForCausalLM.from_pretrained` \
             (attention: `sdpa`), forward hooks on the same layers keeping `output.detach()`, \
             the same batches (sorted by length, right-padded, with the attention mask), \
             `model.model(...)` under `no_grad` with `use_cache=False`, then per layer \
             `log_softmax(lm_head(model.model.norm(h)))`, `topk`, the entropy and KL(p_final || \
             p_layer), p_final the model's own distribution (`lm_head` of `last_hidden_state`, \
             the last block's read-out, computed once); `numpy.savez` and an fsync;\n\
             - one plain forward of the same batches: `hooks extract --layers model.layers.{} \
             --pool last --batch-size {}` (the engine stops after that block: no final norm, no \
             unembedding).\n\n\
             Threads: `OMP_NUM_THREADS` for all three, and `torch.set_num_threads`. At each \
             thread count a warm-up run of each, then {} rounds of every row, the order of the \
             three rotating; ratios per round. **less start-up**: each command less the same \
             round's run of it on one input of {START_UP_LEN} tokens.\n\n\
             **The FLOP model** (per token, multiply-add = 2 FLOPs): a block is {:.2} MFLOP (q, \
             o: h×h; k, v: h×{}; gated MLP: 3×h×{}; attention scores and weighted values over \
             {} positions, 4×T×h), so one plain forward is {} × {:.2} = {:.2} MFLOP; one \
             read-out's unembedding is 2×h×vocab = {:.2} MFLOP, a share of {:.3} of the plain \
             forward. The lens is the forward plus L read-outs: predicted lens / plain forward = \
             1 + L × share = 1 + {} × {:.3} = {:.2}; the target is 1 + 1.2 × L × share = {:.2}, \
             held on the less-start-up ratio (start-up is no part of the model). Not counted: \
             each read-out's RMSNorm (O(h)) and its O(vocab) element-wise work (log-softmax, \
             exp, entropy, KL, top-K: about 10 × vocab operations, ~1% of the unembedding's \
             FLOPs, though memory-bound: each `[batch, T, vocab]` f32 tensor is {:.0} MB).\n\n\
             **Agreement**: every pair of lens files goes through `lens.py compare`, and a \
             difference fails the run: the same layers, `input_ids` and `attention_mask`; over \
             real tokens, `top_probs` within 1e-4 and 1e-3 of their value (the random model's \
             distributions are flat: its largest probabilities are near 1e-4 themselves), \
             `entropy` and `kl_to_final` within 1e-4 nats (× max(1, |value|)), `top_ids` equal \
             wherever Python's probabilities at that rank and a neighbouring one differ by more \
             than 1e-4 in log-probability (Python also writes the K+1-th probability for that); \
             every array zero past each sample's length; the dtypes and shapes of the \
             interface. On the prompts (first round): {}. On {} long-tailed inputs \
             (`engine::long_tailed`, 5–256 tokens, batches of {}: padding and reordering): {}.\n",
            a.describe(),
            self.model_bytes as f64 / 1e6,
            self.inputs,
            self.len,
            self.batch,
            f.readouts,
            self.batch,
            a.layers - 1,
            self.batch,
            self.rounds,
            f.block / 1e6,
            a.kv_heads * (a.hidden / a.heads),
            a.intermediate,
            self.len,
            a.layers,
            f.block / 1e6,
            f.plain / 1e6,
            f.readout / 1e6,
            f.share(),
            f.readouts,
            f.share(),
            f.predicted(),
            f.limit(),
            mb(self.batch as f64 * self.len as f64 * a.vocab as f64 * 4.0),
            agreement(&self.agreement),
            self.corpus,
            self.corpus_batch,
            agreement(&self.corpus_agreement),
        );
        if self.missing_cli {
            s.push_str("No `hooks` binary was found next to this benchmark: not measured.\n");
            return s;
        }
        s.push_str(
            "| row | threads | `hooks lens` s | transformers lens s | plain forward s | lens / transformers | \
             lens / plain forward |\n|---|---|---|---|---|---|---|\n",
        );
        let rows = [
            ("whole command", &self.whole),
            ("less start-up", &self.less_start_up),
            ("start-up", &self.start_up),
        ];
        for (name, row) in rows
            .into_iter()
            .flat_map(|(name, rows)| rows.iter().map(move |r| (name, r)))
        {
            let mut cells = vec![name.to_owned(), row.threads.to_string()];
            cells.extend(row.seconds.iter().map(|x| x.show(2)));
            cells.extend([row.vs_python.show(3), row.vs_plain.show(2)]);
            let _ = writeln!(s, "| {} |", cells.join(" | "));
        }
        let _ = writeln!(
            s,
            "\n**Peak RSS** (`py/peak_rss.py`, one run each, {} thread(s)): what the lens holds \
             grows with K and the inputs' length, not with the vocabulary. `[N, L, T, vocab]` f32 \
             is what keeping every read-out's distribution would take.\n\n\
             | run | inputs N | K | peak RSS MB | LENS.npz MB | `[N, L, T, vocab]` f32 MB |\n\
             |---|---|---|---|---|---|",
            self.memory_threads
        );
        for r in &self.memory {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.0} | {:.1} | {:.0} |",
                r.what,
                r.inputs,
                r.k.map_or_else(|| "–".to_owned(), |k| k.to_string()),
                mb(r.peak as f64),
                mb(r.output as f64),
                mb(self.distributions(r.inputs)),
            );
        }
        let _ = writeln!(
            s,
            "\nFrom {} to {} inputs the peak grew by {:.3} MB per added input, {:.4} of that \
             input's `[L, T, vocab]` f32 read-outs ({:.1} MB; the target holds it to ≤ {PER_INPUT}).",
            self.inputs,
            4 * self.inputs,
            self.per_input().median * self.distributions(1) / 1e6,
            self.per_input().median,
            mb(self.distributions(1)),
        );
        s
    }
}
