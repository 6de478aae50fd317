//! Section 8: a decoder. `hooks extract` (the binary, the whole command) against transformers'
//! Llama with forward hooks (`py/decoder.py extract`, the whole script), on a Llama-shaped model
//! with random weights that transformers makes in the run: equal lengths unpooled, a long-tailed
//! corpus mean-pooled in right-padded batches, and one short input (the start-up alone); then the
//! same sizes shaped as Gemma 2 (sandwich norms, soft-caps, sliding windows on alternating
//! layers), against transformers' eager attention, with and without its soft-caps and windows.
//! Every pair of files is checked to agree: a comparison of different computations would be
//! worthless.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use hooks::load_activations;

use crate::engine::long_tailed;
use crate::stats::{paired_ratios, Summary};
use crate::{hooks_binary, token_ids, write_jsonl, BenchResult, Ctx, Target};

/// The largest difference between the two files a run may show, relative to the largest value
/// of the layer: beyond it the two sides computed different things, and no timing of them means
/// anything.
const AGREEMENT: f64 = 1e-4;

/// The workloads, by index: equal lengths unpooled, the corpus mean-pooled, and one short input
/// (what starting the command costs).
const EQUAL: usize = 0;
const CORPUS: usize = 1;
const START_UP: usize = 2;
/// The start-up run's one input: this many tokens.
const START_UP_LEN: i64 = 8;

/// The model's shape: `decoder.py make`'s flags.
#[derive(Clone, Copy)]
pub struct Arch {
    pub hidden: i64,
    pub intermediate: i64,
    pub layers: usize,
    pub heads: i64,
    pub kv_heads: i64,
    pub vocab: i64,
}

impl Arch {
    /// The benchmark's Llama shape (a real run), or a toy one with the same vocabulary (the smoke
    /// run).
    pub fn llama(full: bool) -> Arch {
        if full {
            Arch {
                hidden: 512,
                intermediate: 1536,
                layers: 8,
                heads: 8,
                kv_heads: 2,
                vocab: 32_000,
            }
        } else {
            Arch {
                hidden: 64,
                intermediate: 128,
                layers: 2,
                heads: 4,
                kv_heads: 2,
                vocab: 32_000,
            }
        }
    }

    /// `LlamaForCausalLM(LlamaConfig(...))` with these fields, as the section texts name it.
    pub fn describe(&self) -> String {
        format!(
            "`LlamaForCausalLM(LlamaConfig(hidden_size={}, intermediate_size={}, \
             num_hidden_layers={}, num_attention_heads={}, num_key_value_heads={}, vocab_size={}))`",
            self.hidden, self.intermediate, self.layers, self.heads, self.kv_heads, self.vocab
        )
    }

    /// Makes the model in `dir` with `decoder.py make` (seeded random weights, f32 safetensors);
    /// the size of its weights file.
    pub fn make(&self, ctx: &Ctx, dir: &Path) -> BenchResult<u64> {
        let mut make = crate::python::command(&ctx.python, ctx.cfg.threads);
        make.arg(script()).arg("make").arg("--out").arg(dir).args(self.flags());
        timed(make, "decoder.py make")?;
        Ok(std::fs::metadata(dir.join("model.safetensors"))?.len())
    }

    /// Makes the Gemma-2-shaped model of these sizes in `dir`: sliding `window` on alternating
    /// layers (0: 2048, wider than any input, so none binds), Gemma 2's soft-caps when `softcap`.
    fn make_gemma2(&self, ctx: &Ctx, dir: &Path, window: i64, softcap: bool) -> BenchResult<()> {
        let mut make = crate::python::command(&ctx.python, ctx.cfg.threads);
        make.arg(script()).arg("make").arg("--out").arg(dir).args(self.flags());
        make.args(["--arch", "gemma2", "--window", &window.to_string()]);
        make.args(["--softcap", if softcap { "1" } else { "0" }]);
        timed(make, "decoder.py make --arch gemma2")?;
        Ok(())
    }

    fn flags(&self) -> Vec<String> {
        [
            ("--hidden", self.hidden),
            ("--intermediate", self.intermediate),
            ("--layers", self.layers as i64),
            ("--heads", self.heads),
            ("--kv-heads", self.kv_heads),
            ("--vocab", self.vocab),
            ("--seed", 0),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_owned(), value.to_string()])
        .collect()
    }
}

/// One workload: its input file, how the layers are pooled.
struct Workload {
    input: PathBuf,
    pool: &'static str,
}

/// The Gemma-2-shaped variants: what they keep of Gemma 2 (a window on alternating layers, in
/// tokens, 0 for none; the soft-caps).
struct Gemma2Variant {
    label: &'static str,
    window: i64,
    softcap: bool,
}

const GEMMA2_VARIANTS: [Gemma2Variant; 3] = [
    Gemma2Variant {
        label: "Gemma 2: windows, soft-caps",
        window: 64,
        softcap: true,
    },
    Gemma2Variant {
        label: "windows, no soft-caps",
        window: 64,
        softcap: false,
    },
    Gemma2Variant {
        label: "windows wider than the inputs, no soft-caps",
        window: 0,
        softcap: false,
    },
];

/// One row of the table at one thread count.
pub struct Row {
    threads: i32,
    hooks_s: Summary,
    python_s: Summary,
    ratio: Summary,
}

/// How far apart the two files are: over every layer, the largest absolute difference, and the
/// largest one relative to the largest absolute value of its layer.
#[derive(Clone, Copy)]
struct Agreement {
    max_abs: f64,
    max_rel: f64,
}

pub struct Decoder {
    arch: Arch,
    model_bytes: u64,
    inputs: usize,
    len: i64,
    corpus: usize,
    /// Real tokens of the corpus, and padded positions per real token in the engine's batches.
    corpus_tokens: usize,
    corpus_padding: f64,
    batch: usize,
    rounds: usize,
    equal: Vec<Row>,
    /// Equal lengths less each round's start-up run, on both sides.
    less_start_up: Vec<Row>,
    long_tail: Vec<Row>,
    start_up: Vec<Row>,
    /// Equal lengths, the corpus.
    agreement: [Agreement; 2],
    /// The `hooks` binary was not found (only tolerated in the smoke run).
    missing_cli: bool,
    /// What attention patterns cost, in process, on the same model.
    patterns: crate::patterns::PatternCost,
    /// The Gemma-2-shaped rows, equal lengths: each variant's label and its row per thread count.
    gemma2: Vec<(&'static str, Row)>,
    /// Over every Gemma-2-shaped pair of files.
    gemma2_agreement: Agreement,
}

/// `decoder.py`, next to this crate's manifest.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("py/decoder.py")
}

/// Runs `cmd` to its end: the seconds from spawning it to its exit, as a user waits for it.
pub fn timed(mut cmd: Command, what: &str) -> BenchResult<f64> {
    let start = Instant::now();
    let out = cmd.output()?;
    let seconds = start.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!("{what} failed:\n{}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(seconds)
}

/// The command line of `hooks extract`: `layers` of each input of `input` (JSONL), pooled by
/// `pool`, in batches of `batch`, into `out`.
pub fn extract_argv(
    hooks: &Path,
    model: &Path,
    input: &Path,
    layers: &str,
    pool: &str,
    batch: usize,
    out: &Path,
) -> Vec<String> {
    let path = |p: &Path| p.display().to_string();
    [
        path(hooks),
        "extract".into(),
        "--model".into(),
        path(model),
        "--input".into(),
        path(input),
    ]
    .into_iter()
    .chain(["--input-format", "jsonl", "--layers", layers, "--pool", pool].map(str::to_owned))
    .chain(["--batch-size".into(), batch.to_string(), "--out".into(), path(out)])
    .collect()
}

/// `argv` as a command at `threads` intra-op threads (libtorch reads `OMP_NUM_THREADS`, as torch
/// does).
pub fn command(argv: &[String], threads: i32) -> Command {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).env("OMP_NUM_THREADS", threads.to_string());
    cmd
}

/// `hooks extract` of `work` into `out`, at `threads`.
fn hooks_extract(
    hooks: &Path,
    model: &Path,
    work: &Workload,
    batch: usize,
    threads: i32,
    out: &Path,
) -> BenchResult<f64> {
    let argv = extract_argv(hooks, model, &work.input, "model.layers.*", work.pool, batch, out);
    timed(command(&argv, threads), "hooks extract")
}

/// `SCRIPT SUB --model MODEL --input INPUT --out OUT --batch-size B --threads N` at `threads`, as
/// the Python sides of sections 8 and 9 take their work; the caller adds its own flags.
pub fn python_side(
    ctx: &Ctx,
    script: &Path,
    sub: &str,
    [model, input, out]: [&Path; 3],
    batch: usize,
    threads: i32,
) -> Command {
    let mut cmd = crate::python::command(&ctx.python, threads);
    cmd.arg(script)
        .arg(sub)
        .arg("--model")
        .arg(model)
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out);
    cmd.args(["--batch-size", &batch.to_string(), "--threads", &threads.to_string()]);
    cmd
}

/// `decoder.py extract` of `work` into `out`, at `threads`.
fn python_extract(
    ctx: &Ctx,
    model: &Path,
    work: &Workload,
    batch: usize,
    threads: i32,
    out: &Path,
) -> BenchResult<f64> {
    python_extract_with(ctx, model, work, batch, threads, out, None)
}

/// `decoder.py extract` with the attention `attn` names (`eager`), or transformers' default.
fn python_extract_with(
    ctx: &Ctx,
    model: &Path,
    work: &Workload,
    batch: usize,
    threads: i32,
    out: &Path,
    attn: Option<&str>,
) -> BenchResult<f64> {
    let mut cmd = python_side(ctx, &script(), "extract", [model, &work.input, out], batch, threads);
    cmd.args(["--pool", work.pool]);
    if let Some(attn) = attn {
        cmd.args(["--attn", attn]);
    }
    timed(cmd, "decoder.py extract")
}

/// The two files, layer by layer (every array of Python's; `hooks extract` adds `input_ids` and
/// `attention_mask`). Every row holds real tokens only: equal lengths, or pooled.
fn compare(ours: &Path, theirs: &Path, layers: usize) -> BenchResult<Agreement> {
    let (ours, theirs) = (load_activations(ours)?, load_activations(theirs)?);
    let mut agreement = Agreement {
        max_abs: 0.0,
        max_rel: 0.0,
    };
    for i in 0..layers {
        let layer = format!("model.layers.{i}");
        let (Some(a), Some(b)) = (ours.get(&layer), theirs.get(&layer)) else {
            return Err(format!("`{layer}` is missing from an extraction").into());
        };
        if a.size() != b.size() {
            return Err(format!("`{layer}`: hooks {:?}, Python {:?}", a.size(), b.size()).into());
        }
        let max_abs = (a - b).abs().max().double_value(&[]);
        let scale = b.abs().max().double_value(&[]);
        let max_rel = max_abs / scale;
        // A NaN anywhere is a disagreement too.
        if max_rel.is_nan() || max_rel > AGREEMENT {
            return Err(format!(
                "`hooks extract` and transformers disagree on `{layer}`: max abs difference \
                 {max_abs:.3e}, {max_rel:.3e} of the layer's largest |value| {scale:.3e} (allowed: \
                 {AGREEMENT:e}); the benchmark would compare different computations"
            )
            .into());
        }
        agreement.max_abs = agreement.max_abs.max(max_abs);
        agreement.max_rel = agreement.max_rel.max(max_rel);
    }
    Ok(agreement)
}

pub fn run(ctx: &mut Ctx) -> BenchResult<Decoder> {
    let full = ctx.cfg.full;
    let arch = Arch::llama(full);
    // Per thread count: a warm-up, then `rounds` of each workload. Every Python process pays
    // seconds of imports, so the smoke run does one round of the corpus (the workload that takes
    // more of each side's code: padding, pooling, reordering) at one thread count, no warm-up.
    let (inputs, len, corpus_n, batch, rounds) = if full { (256, 128, 256, 32, 3) } else { (4, 8, 4, 2, 1) };
    let threads: &[i32] = if full { &[1, 2] } else { &[1] };
    let measured: &[usize] = if full { &[EQUAL, CORPUS, START_UP] } else { &[CORPUS] };
    let hooks = hooks_binary();
    if hooks.is_none() && full {
        return Err("no `hooks` binary next to this one; run `make bench`, which builds it".into());
    }

    let model = ctx.path("llama");
    let model_bytes = arch.make(ctx, &model)?;
    // In process, before the processes below, at the report's thread count.
    let patterns = crate::patterns::run(ctx, &model, arch.layers)?;

    let equal = token_ids(inputs, len, 8);
    let corpus = long_tailed(corpus_n, 9);
    let mut lengths: Vec<usize> = corpus.iter().map(Vec::len).collect();
    lengths.sort_by(|a, b| b.cmp(a));
    let corpus_tokens: usize = lengths.iter().sum();
    let positions: usize = hooks::length_batches(&lengths, batch, None)
        .into_iter()
        .map(|run| run.len() * lengths[run.start])
        .sum();
    let workloads = [
        Workload {
            input: ctx.path("decoder-equal.jsonl"),
            pool: "none",
        },
        Workload {
            input: ctx.path("decoder-corpus.jsonl"),
            pool: "mean",
        },
        Workload {
            input: ctx.path("decoder-start-up.jsonl"),
            pool: "none",
        },
    ];
    write_jsonl(&workloads[EQUAL].input, &equal)?;
    write_jsonl(&workloads[CORPUS].input, &corpus)?;
    write_jsonl(&workloads[START_UP].input, &token_ids(1, START_UP_LEN, 10))?;

    let mut result = Decoder {
        arch,
        model_bytes,
        inputs,
        len,
        corpus: corpus_n,
        corpus_tokens,
        corpus_padding: positions as f64 / corpus_tokens as f64,
        batch,
        rounds,
        equal: Vec::new(),
        less_start_up: Vec::new(),
        long_tail: Vec::new(),
        start_up: Vec::new(),
        agreement: [Agreement {
            max_abs: f64::NAN,
            max_rel: f64::NAN,
        }; 2],
        missing_cli: hooks.is_none(),
        patterns,
        gemma2: Vec::new(),
        gemma2_agreement: Agreement {
            max_abs: 0.0,
            max_rel: 0.0,
        },
    };
    let Some(hooks) = hooks else {
        return Ok(result);
    };
    let (ours, theirs) = (ctx.path("decoder-hooks.npz"), ctx.path("decoder-python.npz"));
    for &n in threads {
        // A warm-up of each side, untimed: the first run after the other side's pays for pages
        // the other evicted (libraries, the model file).
        if full {
            hooks_extract(&hooks, &model, &workloads[START_UP], batch, n, &ours)?;
            python_extract(ctx, &model, &workloads[START_UP], batch, n, &theirs)?;
        }
        // Per workload, the seconds of hooks and of Python.
        let mut samples: [[Vec<f64>; 2]; 3] = Default::default();
        for round in 0..rounds {
            for &w in measured {
                let work = &workloads[w];
                // Which side goes first alternates, by round and by workload.
                let python_first = (round + w) % 2 == 1;
                for side in if python_first { [1, 0] } else { [0, 1] } {
                    let seconds = if side == 0 {
                        hooks_extract(&hooks, &model, work, batch, n, &ours)?
                    } else {
                        python_extract(ctx, &model, work, batch, n, &theirs)?
                    };
                    samples[w][side].push(seconds);
                }
                // Every file is checked against its pair; the first round's figures are reported.
                let agreement = compare(&ours, &theirs, arch.layers)?;
                if round == 0 && n == threads[0] && w != START_UP {
                    result.agreement[w] = agreement;
                }
            }
        }
        // Equal lengths less the same round's start-up run: from the model loaded to the file
        // written, near enough (the start-up run's forward of 8 tokens is a few milliseconds).
        let less: [Vec<f64>; 2] = std::array::from_fn(|side| {
            let (whole, start_up) = (&samples[EQUAL][side], &samples[START_UP][side]);
            whole.iter().zip(start_up).map(|(w, s)| w - s).collect()
        });
        for (rows, [ours_s, theirs_s]) in [
            (&mut result.equal, &samples[EQUAL]),
            (&mut result.less_start_up, &less),
            (&mut result.long_tail, &samples[CORPUS]),
            (&mut result.start_up, &samples[START_UP]),
        ] {
            if ours_s.is_empty() {
                continue;
            }
            rows.push(Row {
                threads: n,
                hooks_s: Summary::of(ours_s),
                python_s: Summary::of(theirs_s),
                ratio: Summary::of(&paired_ratios(ours_s, theirs_s)),
            });
        }
    }
    // The Gemma-2-shaped variants, equal lengths, transformers' eager attention (the one that
    // applies the soft-cap). The smoke run makes the first variant, with a window that binds in
    // its 8 tokens, and runs it once.
    let variants = if full {
        &GEMMA2_VARIANTS[..]
    } else {
        &GEMMA2_VARIANTS[..1]
    };
    for variant in variants {
        let dir = ctx.path("gemma2");
        let window = if full { variant.window } else { variant.window.min(4) };
        arch.make_gemma2(ctx, &dir, window, variant.softcap)?;
        for &n in threads {
            let work = &workloads[EQUAL];
            if full {
                hooks_extract(&hooks, &dir, work, batch, n, &ours)?;
                python_extract_with(ctx, &dir, work, batch, n, &theirs, Some("eager"))?;
            }
            let mut samples: [Vec<f64>; 2] = Default::default();
            for round in 0..rounds {
                for side in if round % 2 == 1 { [1, 0] } else { [0, 1] } {
                    samples[side].push(if side == 0 {
                        hooks_extract(&hooks, &dir, work, batch, n, &ours)?
                    } else {
                        python_extract_with(ctx, &dir, work, batch, n, &theirs, Some("eager"))?
                    });
                }
                let agreement = compare(&ours, &theirs, arch.layers)?;
                result.gemma2_agreement.max_abs = result.gemma2_agreement.max_abs.max(agreement.max_abs);
                result.gemma2_agreement.max_rel = result.gemma2_agreement.max_rel.max(agreement.max_rel);
            }
            result.gemma2.push((
                variant.label,
                Row {
                    threads: n,
                    hooks_s: Summary::of(&samples[0]),
                    python_s: Summary::of(&samples[1]),
                    ratio: Summary::of(&paired_ratios(&samples[0], &samples[1])),
                },
            ));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    for path in [&ours, &theirs].into_iter().chain(workloads.iter().map(|w| &w.input)) {
        let _ = std::fs::remove_file(path);
    }
    let _ = std::fs::remove_dir_all(&model);
    Ok(result)
}

impl Decoder {
    /// The issue sets no number: `≤ 1.0` says only that the engine should not be slower than
    /// transformers on the same work; the ratio itself is the information.
    pub fn targets(&self) -> Vec<Target> {
        let mut targets: Vec<Target> = self
            .equal
            .iter()
            .map(|row| {
                Target::at_most(
                    format!(
                        "8. `hooks extract`/transformers, Llama-shaped decoder, equal lengths, {} thread(s)",
                        row.threads
                    ),
                    1.0,
                    &row.ratio,
                    3,
                )
            })
            .collect();
        targets.extend(self.patterns.targets());
        targets
    }

    pub fn markdown(&self) -> String {
        let a = &self.arch;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## 8. A decoder (Llama-shaped)\n\n\
             `make bench` (section 8 of the report; `HOOKS_BENCH_SECTIONS=8` runs it alone; \
             Python: `hooks-bench/py/decoder.py`)\n\n\
             The model: transformers' {} with seeded random weights, made by \
             `decoder.py make` in this run and saved with `save_pretrained`: f32 safetensors of \
             {:.1} MB, no tokenizer, so both sides read token ids.\n\n\
             Each side is timed as a whole command, from process start to the file synced on \
             disk, so both pay their start-up (libraries, for Python the interpreter, torch and \
             transformers, and the model):\n\n\
             - `hooks extract --model DIR --input IDS.jsonl --input-format jsonl --layers \
             'model.layers.*' --batch-size {} [--pool mean] --out X.npz` (release build);\n\
             - `decoder.py extract`: `AutoModelForCausalLM.from_pretrained` (attention: `sdpa`), \
             a forward hook on each `model.layers.N` keeping `output.detach().cpu()`, the \
             engine's batches (sorted by length, longest first, each right-padded to its own \
             longest, with its attention mask), the decoder stack `model.model(...)` under \
             `no_grad` with `use_cache=False` (no logits, no key-value cache: the engine stops \
             after the last block too), `torch.cat`, `numpy.savez` and an fsync, as `hooks \
             extract` syncs its file.\n\n\
             Threads: `OMP_NUM_THREADS` on both sides, and `torch.set_num_threads`. At each \
             thread count a warm-up run of each side, then {} rounds of every row, which side goes \
             first alternating; ratios per round.\n\n\
             - **equal lengths**: {} inputs × {} tokens, the {} block outputs unpooled (`[{}, {}, \
             {}]` each). Files agree to {:.1e} (max abs difference; {:.1e} of the layer's largest \
             |value|).\n\
             - **less start-up**: the same, less the same round's start-up run on each side: \
             from the model loaded to the file written.\n\
             - **long-tailed corpus**: {} token-id lists from `engine::long_tailed` (nine in ten \
             of 5–40 tokens, the rest 41–256; {} real tokens, {:.2} positions per real token in \
             these batches), the {} block outputs mean-pooled over real tokens. Files agree to \
             {:.1e} ({:.1e} relative).\n\
             - **start-up**: one input of {START_UP_LEN} tokens: loading the libraries and the \
             model, and writing a small file.\n\n\
             A run fails when any pair of files differs by more than {AGREEMENT:e} of a layer's \
             largest |value|: the sides would not be computing the same thing.\n",
            a.describe(),
            self.model_bytes as f64 / 1e6,
            self.batch,
            self.rounds,
            self.inputs,
            self.len,
            a.layers,
            self.inputs,
            self.len,
            a.hidden,
            self.agreement[EQUAL].max_abs,
            self.agreement[EQUAL].max_rel,
            self.corpus,
            self.corpus_tokens,
            self.corpus_padding,
            a.layers,
            self.agreement[CORPUS].max_abs,
            self.agreement[CORPUS].max_rel,
        );
        if self.missing_cli {
            s.push_str("No `hooks` binary was found next to this benchmark: not measured.\n");
            s.push_str(&self.patterns.markdown());
            return s;
        }
        s.push_str(
            "| row | threads | `hooks extract` s | transformers s | hooks / transformers |\n|---|---|---|---|---|\n",
        );
        for (name, rows) in [
            ("equal lengths", &self.equal),
            ("equal lengths, less start-up", &self.less_start_up),
            ("long-tailed corpus", &self.long_tail),
            ("start-up", &self.start_up),
        ] {
            for row in rows {
                let _ = writeln!(
                    s,
                    "| {name} | {} | {} | {} | {} |",
                    row.threads,
                    row.hooks_s.show(2),
                    row.python_s.show(2),
                    row.ratio.show(3)
                );
            }
        }
        let _ = writeln!(
            s,
            "\nThe issue sets no number for this ratio; the targets table holds the equal-lengths \
             row to ≤ 1.0 (not slower than transformers on the same work)."
        );
        let _ = writeln!(
            s,
            "\n### Gemma-2-shaped\n\n\
             The same sizes as `Gemma2ForCausalLM(Gemma2Config(...))` (`decoder.py make --arch \
             gemma2`: `head_dim` {}, `query_pre_attn_scalar` {}, a norm before and after each \
             sublayer, `(1 + w)` norms, scaled embeddings), the equal-lengths workload ({} inputs \
             × {} tokens, unpooled), transformers with `attn_implementation=\"eager\"` (the \
             attention that applies the soft-cap; `sdpa` would drop it). `hooks` runs a \
             soft-capped layer on its own eager path (libtorch's fused kernel has no soft-cap) \
             and the others on the fused kernel, so the rows without soft-caps are eager against \
             fused. Sliding windows of 64 keys (of the {} tokens) on alternating layers, the \
             first sliding; soft-caps 50 on attention scores, 30 on logits (the logits are not \
             computed here). Files agree to {:.1e} ({:.1e} relative).\n\n\
             | variant | threads | `hooks extract` s | transformers (eager) s | hooks / transformers |\n\
             |---|---|---|---|---|",
            a.hidden / a.heads,
            a.hidden / a.heads,
            self.inputs,
            self.len,
            self.len,
            self.gemma2_agreement.max_abs,
            self.gemma2_agreement.max_rel,
        );
        for (label, row) in &self.gemma2 {
            let _ = writeln!(
                s,
                "| {label} | {} | {} | {} | {} |",
                row.threads,
                row.hooks_s.show(2),
                row.python_s.show(2),
                row.ratio.show(3)
            );
        }
        let _ = writeln!(
            s,
            "\nWhat each costs `hooks`: the first row against the second is the soft-cap (the \
             eager path and the tanh), the second against the third the windows (a second \
             mask)."
        );
        s.push_str(&self.patterns.markdown());
        s
    }
}
