//! Section 7: analysis. CKA, unbiased CKA and SVCCA over seven `[300, 384]` layers shaped like
//! the demo's output (in this process), and CKA over a dataset folder of 1M token rows × 384
//! through `hooks compare` (in a child process, for its peak RSS).

use std::fmt::Write as _;
use std::time::Instant;

use hooks::analysis::{compare, CompareOptions, Layer, Metric, RowSource};
use hooks::{ActivationSink, Activations, Chunk, DatasetWriter};
use tch::{Device, Kind, Tensor};

use crate::memory::peak_rss;
use crate::stats::Summary;
use crate::{hooks_binary, BenchResult, Ctx, Target};

pub struct Analysis {
    /// The in-memory matrix: samples, hidden size, layers.
    shape: (i64, i64, usize),
    /// Per metric, the rows of each layer and the seconds for the whole layer × layer matrix.
    matrix: Vec<(String, i64, Summary)>,
    /// The folder: token rows, hidden size, bytes on disk.
    folder: (i64, i64, u64),
    /// Per `hooks compare` run: its flags, peak RSS bytes, seconds.
    runs: Vec<(String, u64, f64)>,
    /// Peak RSS of `hooks --version`: the libraries alone.
    floor: u64,
}

/// Seven layers over the same samples, each a noisy mix of the one before, as a model's blocks
/// are: random data, shaped like `make demo`'s output (six blocks and the pooler, mean-pooled).
fn demo_like(samples: i64, hidden: i64) -> Vec<Tensor> {
    tch::manual_seed(1);
    let mut layers = vec![Tensor::randn([samples, hidden], (Kind::Float, Device::Cpu))];
    for _ in 1..7 {
        let last = layers
            .last()
            .map(Tensor::shallow_clone)
            .unwrap_or_else(|| Tensor::zeros([1], (Kind::Float, Device::Cpu)));
        layers.push(last * 0.8 + Tensor::randn([samples, hidden], (Kind::Float, Device::Cpu)) * 0.6);
    }
    layers
}

pub fn run(ctx: &Ctx) -> BenchResult<Analysis> {
    let (samples, hidden, rounds) = if ctx.cfg.full { (300, 384, 5) } else { (40, 16, 1) };
    let layers = demo_like(samples, hidden);
    let names: Vec<String> = (0..6)
        .map(|i| format!("encoder.layer.{i}.output"))
        .chain(["pooler".into()])
        .collect();
    let named: Vec<Layer<'_>> = names
        .iter()
        .zip(&layers)
        .map(|(n, t)| (n.as_str(), t as &dyn RowSource))
        .collect();
    // SVCCA needs more rows than the two layers keep directions together (random data keeps
    // about 250 of 384 at 0.99): token rows, as it is run on.
    let svcca_rows = if ctx.cfg.full { 3000 } else { samples };
    let svcca_layers = demo_like(svcca_rows, hidden);
    let svcca_named: Vec<Layer<'_>> = names
        .iter()
        .zip(&svcca_layers)
        .map(|(n, t)| (n.as_str(), t as &dyn RowSource))
        .collect();
    let mut matrix = Vec::new();
    for metric in [Metric::Cka, Metric::UnbiasedCka, Metric::Svcca { threshold: 0.99 }] {
        let (named, rows) = match metric {
            Metric::Svcca { .. } => (&svcca_named, svcca_rows),
            _ => (&named, samples),
        };
        let mut seconds = Vec::new();
        // One warm-up, then the rounds.
        for round in 0..=rounds {
            let start = Instant::now();
            let _ = compare(named, None, metric, &CompareOptions::default())?;
            if round > 0 {
                seconds.push(start.elapsed().as_secs_f64());
            }
        }
        matrix.push((metric.label(), rows, Summary::of(&seconds)));
    }

    // The folder: 1M token rows of two layers, the second a noisy mix of the first.
    let (tokens, folder_hidden) = if ctx.cfg.full {
        (1_000_000i64, 384i64)
    } else {
        (4_000, 16)
    };
    let (per_sample, window) = (100i64, if ctx.cfg.full { 100i64 } else { 10 });
    let samples_in_folder = tokens / per_sample;
    let dir = ctx.path("analysis-folder");
    let mut writer = DatasetWriter::create(&dir, serde_json::json!({}), None, samples_in_folder as usize, false)?;
    let mask = Tensor::ones([window, per_sample], (Kind::Int64, Device::Cpu));
    let ids = Tensor::zeros([window, per_sample], (Kind::Int64, Device::Cpu));
    tch::manual_seed(2);
    for w in 0..samples_in_folder / window {
        let a = Tensor::randn([window, per_sample, folder_hidden], (Kind::Float, Device::Cpu));
        let b = &a * 0.7 + Tensor::randn([window, per_sample, folder_hidden], (Kind::Float, Device::Cpu)) * 0.7;
        let mut acts = Activations::new();
        acts.insert("layer.a", a);
        acts.insert("layer.b", b);
        writer.write(&Chunk {
            first: (w * window) as usize,
            activations: &acts,
            input_ids: &ids,
            attention_mask: &mask,
        })?;
    }
    writer.finish()?;
    let mut bytes = 0;
    for entry in std::fs::read_dir(&dir)? {
        bytes += entry?.metadata()?.len();
    }
    let mut runs = Vec::new();
    let mut floor = 0;
    if let Some(hooks) = hooks_binary() {
        floor = peak_rss(ctx, &[hooks.display().to_string(), "--version".into()])?["peak_rss"]
            .as_u64()
            .unwrap_or(0);
        let csv = ctx.path("analysis.csv");
        let folder_arg = format!("{}/", dir.display());
        for flags in [
            vec!["--metric", "cka"],
            vec!["--unbiased"],
            vec!["--unbiased", "--minibatch", "1024"],
        ] {
            let argv: Vec<String> = [hooks.display().to_string(), "compare".into(), folder_arg.clone()]
                .into_iter()
                .chain(flags.iter().map(|f| (*f).to_owned()))
                .chain(["--out".into(), csv.display().to_string()])
                .collect();
            let reply = peak_rss(ctx, &argv)?;
            if reply["status"].as_i64() != Some(0) {
                return Err(format!("hooks compare failed:\n{}", reply["stderr"].as_str().unwrap_or("")).into());
            }
            runs.push((
                flags.join(" "),
                reply["peak_rss"].as_u64().unwrap_or(0),
                reply["seconds"].as_f64().unwrap_or(f64::NAN),
            ));
        }
    } else if ctx.cfg.full {
        return Err("no `hooks` binary next to this one; run `make bench`, which builds it".into());
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(Analysis {
        shape: (samples, hidden, layers.len()),
        matrix,
        folder: (tokens, folder_hidden, bytes),
        runs,
        floor,
    })
}

impl Analysis {
    pub fn targets(&self) -> Vec<Target> {
        let cka = self.matrix.iter().find(|(m, _, _)| m == "CKA").map(|(_, _, s)| *s);
        cka.map(|s| {
            vec![Target::at_most(
                "7. CKA, 7 × 7 layers of [300, 384], seconds",
                5.0,
                &s,
                3,
            )]
        })
        .unwrap_or_default()
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let (samples, hidden, layers) = self.shape;
        let _ = writeln!(
            s,
            "## 7. Analysis (CKA, SVCCA)\n\n\
             `make bench` (section 7 of the report; `HOOKS_BENCH_SECTIONS=7` runs it alone)\n\n\
             The whole {layers} × {layers} matrix over {layers} layers of `[rows, {hidden}]` f32, shaped like \
             `make demo`'s output (`[{samples}, {hidden}]`; random data: each layer a noisy mix of the one before), with \
             `hooks::analysis::compare` on the CPU, in this process (median of rounds, \
             interquartile range in parentheses):\n"
        );
        s.push_str("| metric | rows | seconds |\n|---|---|---|\n");
        for (metric, rows, seconds) in &self.matrix {
            let _ = writeln!(s, "| {metric} | {rows} | {} |", seconds.show(4));
        }
        s.push_str(
            "\nSVCCA runs on 3000 rows (token rows, as it is used): it needs more rows than the two \
             layers keep directions together, and random data keeps about 250 of 384 at 0.99.\n",
        );
        let (tokens, hidden, bytes) = self.folder;
        let _ = writeln!(
            s,
            "\nA dataset folder of two layers, {tokens} token rows × {hidden} f32 each ({:.0} MB on \
             disk; random data, the second layer a noisy mix of the first), compared by \
             `hooks compare DIR/ ...` (release build) under `py/peak_rss.py`, one run each. The \
             folder is read a chunk of rows at a time; CKA and unbiased CKA are exact over all \
             rows, minibatch CKA is Nguyen et al.'s estimator over batches of at least 1024 rows:\n",
            bytes as f64 / 1e6
        );
        s.push_str("| `hooks compare` flags | peak RSS MB | seconds |\n|---|---|---|\n");
        for (flags, peak, seconds) in &self.runs {
            let _ = writeln!(s, "| `{flags}` | {:.1} | {seconds:.1} |", *peak as f64 / 1e6);
        }
        if self.runs.is_empty() {
            s.push_str("\n(`hooks` binary not built: no runs.)\n");
        } else {
            let _ = writeln!(
                s,
                "\nFor scale: `hooks --version`, which loads the libraries and exits, peaks at {:.1} MB; \
                 the folder's arrays are {:.0} MB.",
                self.floor as f64 / 1e6,
                bytes as f64 / 1e6
            );
        }
        s
    }
}
