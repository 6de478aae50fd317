//! Section 5: the extraction engine (`hooks::Extractor`, what `hooks extract` runs) against the
//! Python reference, at 1 and 2 threads: equal lengths, a long-tailed corpus, and the early stop;
//! and the engine alone on short sentences with and without one long document among them.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use hooks::{save_activations, Extractor, Item, Pool};
use hooks_models::TextModel;
use serde_json::json;
use tch::{Device, Kind};

use crate::python::Worker;
use crate::reference::compare;
use crate::stats::{paired_ratios, Summary};
use crate::{token_ids, write_jsonl, BenchResult, Ctx, Target, LAYERS};

/// The thread counts every row is measured at.
const THREADS: [i32; 2] = [1, 2];

/// One row of the table at one thread count.
pub struct Row {
    threads: i32,
    /// Seconds of the numerator and the denominator, and their paired ratio.
    num_s: Summary,
    den_s: Summary,
    ratio: Summary,
}

pub struct Engine {
    inputs: usize,
    len: i64,
    corpus: usize,
    batch: usize,
    rounds: usize,
    /// Padded positions over real tokens of the corpus: in input order, and sorted by length.
    corpus_padding: [f64; 2],
    equal: Vec<Row>,
    long_tail: Vec<Row>,
    stop: Vec<Row>,
    /// Short sentences with one long document among them, over the sentences alone.
    one_long: Vec<Row>,
    /// (sentences, their lengths, the long one's length, positions per real token with and
    /// without it, and what the long one cost when batches only counted items).
    one_long_shape: (usize, (usize, usize), usize, [f64; 2], f64),
    /// Max abs difference between Rust's and Python's files: equal lengths, the corpus.
    max_abs_diff: [f64; 2],
    /// Rust's share of time in forwards, for the corpus (the rest: padding, pooling, copies,
    /// writing).
    forward_share: f64,
}

/// The long-tailed corpus: `n` token-id lists, most of 5–40 tokens, one in ten of 41–256; seeded.
pub fn long_tailed(n: usize, seed: u64) -> Vec<Vec<i64>> {
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    (0..n)
        .map(|_| {
            let len = if next() % 10 == 0 {
                41 + next() % 216
            } else {
                5 + next() % 36
            };
            (0..len).map(|_| 1000 + (next() % 28_000) as i64).collect()
        })
        .collect()
}

/// The short sentences' lengths, in tokens (inclusive).
const SHORT: (usize, usize) = (10, 25);

/// `n` token-id lists of seeded lengths in `range` (inclusive).
fn lengths_between(n: usize, range: (usize, usize), seed: u64) -> Vec<Vec<i64>> {
    let mut state = seed;
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    (0..n)
        .map(|_| {
            let len = range.0 + usize::try_from(next()).unwrap_or(0) % (range.1 - range.0 + 1);
            (0..len).map(|_| 1000 + (next() % 28_000) as i64).collect()
        })
        .collect()
}

/// Padded positions over real tokens when `rows` run in batches of `batch`, in `order`.
fn padding(rows: &[Vec<i64>], order: &[usize], batch: usize) -> f64 {
    let real: usize = rows.iter().map(Vec::len).sum();
    let positions: usize = order
        .chunks(batch)
        .map(|c| c.len() * c.iter().map(|&i| rows[i].len()).max().unwrap_or(0))
        .sum();
    positions as f64 / real as f64
}

/// Rust's run: the engine over `items`, then the file (six layers, as Python writes).
fn rust(
    model: &dyn TextModel,
    items: &[Item],
    layers: &[&str],
    pool: Pool,
    batch: usize,
    out: &Path,
) -> BenchResult<(f64, f64)> {
    let start = Instant::now();
    let extracted = Extractor::new()
        .batch_size(batch)
        .pool(pool)
        .run(model, layers, items)?;
    save_activations(&extracted.activations, out)?;
    Ok((
        start.elapsed().as_secs_f64(),
        extracted.stats.forward_time.as_secs_f64(),
    ))
}

/// Python's run of `cmd` (`extract` or `corpus`) on `input`.
fn python(worker: &mut Worker, request: serde_json::Value, out: &Path) -> BenchResult<f64> {
    let reply = worker.call(&request)?;
    std::fs::File::open(out)?.sync_all()?;
    Ok(reply["seconds"].as_f64().unwrap_or(f64::NAN))
}

pub fn run(ctx: &mut Ctx) -> BenchResult<Engine> {
    let full = ctx.cfg.full;
    let (inputs, len, corpus_n, batch, rounds) = if full { (512, 64, 2000, 32, 3) } else { (4, 8, 12, 2, 1) };
    let model = hooks_models::load(&ctx.model_dir, Device::Cpu, Kind::Float)?;
    let model: &dyn TextModel = &*model;
    let equal = token_ids(inputs, len, 5);
    let corpus = long_tailed(corpus_n, 6);
    let (equal_in, corpus_in) = (ctx.path("equal.jsonl"), ctx.path("corpus.jsonl"));
    write_jsonl(&equal_in, &equal)?;
    write_jsonl(&corpus_in, &corpus)?;
    let equal_items: Vec<Item> = equal.iter().map(|r| Item::new(r.clone())).collect();
    let corpus_items: Vec<Item> = corpus.iter().map(|r| Item::new(r.clone())).collect();
    let (ours, theirs) = (ctx.path("engine-rust.npz"), ctx.path("engine-python.npz"));
    let input_order: Vec<usize> = (0..corpus.len()).collect();
    let mut sorted = input_order.clone();
    sorted.sort_by_key(|&i| std::cmp::Reverse(corpus[i].len()));
    let corpus_padding = [padding(&corpus, &input_order, batch), padding(&corpus, &sorted, batch)];
    // Short sentences, and the same with one long document in their middle (the field case).
    let (n_short, long_len) = if full { (256, 280) } else { (8, 40) };
    let short = lengths_between(n_short, SHORT, 7);
    let mut with_long = short.clone();
    with_long.insert(n_short / 2, (0..long_len as i64).map(|t| 1000 + t).collect());
    let short_items: Vec<Item> = short.iter().map(|r| Item::new(r.clone())).collect();
    let long_items: Vec<Item> = with_long.iter().map(|r| Item::new(r.clone())).collect();
    let engine_padding = |rows: &[Vec<i64>]| {
        let mut lengths: Vec<usize> = rows.iter().map(Vec::len).collect();
        lengths.sort_by(|a, b| b.cmp(a));
        let positions: usize = hooks::length_batches(&lengths, batch, None)
            .into_iter()
            .map(|run| run.len() * lengths[run.start])
            .sum();
        positions as f64 / lengths.iter().sum::<usize>() as f64
    };
    let one_long_padding = [engine_padding(&with_long), engine_padding(&short)];
    let old_padding = {
        let mut order: Vec<usize> = (0..with_long.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(with_long[i].len()));
        padding(&with_long, &order, batch)
    };

    let mut result = Engine {
        inputs,
        len,
        corpus: corpus_n,
        batch,
        rounds,
        corpus_padding,
        equal: Vec::new(),
        long_tail: Vec::new(),
        stop: Vec::new(),
        one_long: Vec::new(),
        one_long_shape: (short.len(), (SHORT.0, SHORT.1), long_len, one_long_padding, old_padding),
        max_abs_diff: [f64::NAN; 2],
        forward_share: f64::NAN,
    };
    let mut forward_shares = Vec::new();
    for threads in THREADS {
        tch::set_num_threads(threads);
        ctx.worker.call(&json!({"cmd": "threads", "n": threads}))?;
        let (mut eq, mut lt, mut st, mut ol) = (
            [Vec::new(), Vec::new()],
            [Vec::new(), Vec::new()],
            [Vec::new(), Vec::new()],
            [Vec::new(), Vec::new()],
        );
        // A warm-up of each, untimed.
        rust(
            model,
            &equal_items[..batch.min(inputs)],
            &LAYERS,
            Pool::None,
            batch,
            &ours,
        )?;
        for round in 0..rounds {
            let python_first = round % 2 == 1;
            let equal_request = json!({"cmd": "extract", "input": equal_in, "batch": batch, "out": theirs});
            let corpus_request = json!({
                "cmd": "corpus", "input": corpus_in, "batch": batch, "pool": "mean", "layers": LAYERS, "out": theirs,
            });
            // Equal lengths, unpooled.
            if python_first {
                eq[1].push(python(&mut ctx.worker, equal_request, &theirs)?);
                eq[0].push(rust(model, &equal_items, &LAYERS, Pool::None, batch, &ours)?.0);
            } else {
                eq[0].push(rust(model, &equal_items, &LAYERS, Pool::None, batch, &ours)?.0);
                eq[1].push(python(&mut ctx.worker, equal_request, &theirs)?);
            }
            if round == 0 && threads == 1 {
                result.max_abs_diff[0] = compare(&ours, &theirs)?;
            }
            // The long-tailed corpus, mean-pooled: sorted and padded per batch against input
            // order. One round: Python's side takes minutes, and the ratio is far from its target.
            if round == 0 {
                let (seconds, forwards) = rust(model, &corpus_items, &LAYERS, Pool::Mean, batch, &ours)?;
                lt[1].push(python(&mut ctx.worker, corpus_request, &theirs)?);
                lt[0].push(seconds);
                forward_shares.push(forwards / seconds);
                if threads == 1 {
                    result.max_abs_diff[1] = compare(&ours, &theirs)?;
                }
            }
            // One long document among short sentences, against the sentences alone: the engine,
            // default batching, mean-pooled.
            for with in if python_first { [true, false] } else { [false, true] } {
                let items = if with { &long_items } else { &short_items };
                ol[usize::from(!with)].push(rust(model, items, &LAYERS, Pool::Mean, batch, &ours)?.0);
            }
            // The early stop: layer 1 against layer 5, equal lengths.
            let pair = [["encoder.layer.1"], ["encoder.layer.5"]];
            for k in if python_first { [1, 0] } else { [0, 1] } {
                st[k].push(rust(model, &equal_items, &pair[k], Pool::None, batch, &ours)?.0);
            }
        }
        for (rows, samples) in [
            (&mut result.equal, &eq),
            (&mut result.long_tail, &lt),
            (&mut result.stop, &st),
            (&mut result.one_long, &ol),
        ] {
            rows.push(Row {
                threads,
                num_s: Summary::of(&samples[0]),
                den_s: Summary::of(&samples[1]),
                ratio: Summary::of(&paired_ratios(&samples[0], &samples[1])),
            });
        }
    }
    tch::set_num_threads(ctx.cfg.threads);
    ctx.worker.call(&json!({"cmd": "threads", "n": ctx.cfg.threads}))?;
    result.forward_share = Summary::of(&forward_shares).median;
    for path in [&ours, &theirs, &equal_in, &corpus_in] {
        let _ = std::fs::remove_file(path);
    }
    Ok(result)
}

impl Engine {
    pub fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        for (what, rows, limit) in [
            (
                "5. `hooks extract` engine/Python, equal lengths, whole run",
                &self.equal,
                0.9,
            ),
            (
                "5. engine/Python, long-tailed corpus, mean-pooled",
                &self.long_tail,
                0.35,
            ),
            ("5. early stop: `encoder.layer.1`/`encoder.layer.5`", &self.stop, 0.45),
            (
                "5. one long document among short sentences: with it / without",
                &self.one_long,
                1.5,
            ),
        ] {
            for row in rows {
                targets.push(Target::at_most(
                    format!("{what}, {} thread(s)", row.threads),
                    limit,
                    &row.ratio,
                    3,
                ));
            }
        }
        targets
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## 5. The extraction engine\n\n\
             `make bench` (section 5 of the report; Python: `corpus` and `extract` in \
             `hooks-bench/py/reference.py`)\n\n\
             Rust: `hooks::Extractor` on `hooks_models::load`'s model (what `hooks extract` runs), \
             then `save_activations`; timed from token ids in memory to the file on disk. \
             Python: transformers' `BertModel` with forward hooks, every batch kept, `torch.cat`, \
             `numpy.savez`. {} rounds (the corpus: one), sides interleaved, at each thread count \
             on both sides; batch {}.\n\n\
             - **equal lengths**: {} inputs × {} tokens, the six block outputs unpooled. Files agree \
             to {:.1e}.\n\
             - **long-tailed corpus**: {} token-id lists from a seeded generator \
             (`engine::long_tailed`: nine in ten of 5–40 tokens, the rest 41–256), the six block \
             outputs mean-pooled over real tokens. Python runs them in input order, each batch \
             padded to its longest (as the seed's `extract_representations` did): {:.2} positions \
             per real token. The engine sorts by length: {:.2}. Files agree to {:.1e}.\n\
             - **early stop**: the engine capturing `encoder.layer.1` against capturing \
             `encoder.layer.5`, equal lengths: the forward stops after the last selected layer.\n\
             - **one long document**: the engine alone, default batching (batch {}), the six block \
             outputs mean-pooled: {} sentences of {}–{} tokens with one document of {} tokens \
             among them, against the sentences alone. The engine never pads an item to more than \
             twice its length, so the document runs alone: {:.2} positions per real token with \
             it, {:.2} without. Batches cut by count alone (before) gave {:.2}.\n",
            self.rounds,
            self.batch,
            self.inputs,
            self.len,
            self.max_abs_diff[0],
            self.corpus,
            self.corpus_padding[0],
            self.corpus_padding[1],
            self.max_abs_diff[1],
            self.batch,
            self.one_long_shape.0,
            self.one_long_shape.1 .0,
            self.one_long_shape.1 .1,
            self.one_long_shape.2,
            self.one_long_shape.3[0],
            self.one_long_shape.3[1],
            self.one_long_shape.4,
        );
        s.push_str("| row | threads | numerator s | denominator s | ratio |\n|---|---|---|---|---|\n");
        for (name, rows) in [
            ("equal lengths: engine / Python", &self.equal),
            ("long-tailed corpus: engine / Python", &self.long_tail),
            ("early stop: layer 1 / layer 5", &self.stop),
            ("one long document: with / without", &self.one_long),
        ] {
            for row in rows {
                let _ = writeln!(
                    s,
                    "| {name} | {} | {} | {} | {} |",
                    row.threads,
                    row.num_s.show(3),
                    row.den_s.show(3),
                    row.ratio.show(3)
                );
            }
        }
        let _ = writeln!(
            s,
            "\nWhere the engine's time goes on the corpus: {:.0}% in the forwards; the rest pads \
             batches, pools, copies rows into place and writes the file.",
            self.forward_share * 100.0
        );
        s
    }
}
