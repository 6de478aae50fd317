//! Section 11: probes. `hooks probe` (the binary, the whole command) against the same probe in
//! scikit-learn (`py/probe.py`: StandardScaler + LogisticRegression, lbfgs) on the folds
//! `hooks probe` wrote, over MiniLM token rows: 5-fold logistic with a shuffle control and the
//! fit on every row, at the same thread count.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use tch::Kind;

use crate::decoder::timed;
use crate::stats::{paired_ratios, Summary};
use crate::{hooks_binary, BenchResult, Ctx, Target};

/// The targets.
const VS_SKLEARN: f64 = 0.5;
const ACCURACY_DIFFERENCE: f64 = 0.002;

/// `probe.py`, next to this crate's manifest.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("py/probe.py")
}

/// One thread count's timings.
pub struct Row {
    threads: i32,
    ours: Summary,
    theirs: Summary,
    ratio: Summary,
}

pub struct ProbeBench {
    rows: i64,
    hidden: i64,
    rounds: usize,
    /// At the configured thread count, then at 2 (the machine's cores) when that differs.
    timings: Vec<Row>,
    /// Mean fold accuracy: ours, scikit-learn's; and the controls'.
    accuracy: (f64, f64),
    control: (f64, f64),
}

pub fn run(ctx: &mut Ctx) -> BenchResult<ProbeBench> {
    let Some(hooks) = hooks_binary() else {
        return Err("no `hooks` binary next to this one; run `make bench`, which builds it".into());
    };
    let (rows, rounds, copies, samples) = if ctx.cfg.full {
        (20_000i64, 3, 7, "100000")
    } else {
        (300, 1, 1, "40")
    };
    // MiniLM token rows of block 3 over the bundled sentences (repeated to reach `rows`), and a
    // property of each token its representation holds: whether it lies in its sentence's first
    // half (position, which the model reads from its position embeddings and context).
    let sentences = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/sentences.txt"))?;
    let input = ctx.path("probe-input.txt");
    std::fs::write(&input, sentences.repeat(copies))?;
    let folder = ctx.path("probe-rows");
    let status = std::process::Command::new(&hooks)
        .args(["extract", "--model"])
        .arg(&ctx.model_dir)
        .arg("--input")
        .arg(&input)
        .args(["--layers", "encoder.layer.3", "--max-samples", samples, "--out"])
        .arg(&folder)
        .output()?;
    if !status.status.success() {
        return Err(format!("hooks extract failed:\n{}", String::from_utf8_lossy(&status.stderr)).into());
    }
    let dataset = hooks::Dataset::open(&folder)?;
    let layer = dataset.array("encoder.layer.3")?;
    let offsets = Vec::<i64>::try_from(dataset.array("offsets")?)?;
    let rows = rows.min(layer.size()[0]);
    let hidden = layer.size()[1];
    let features = layer.narrow(0, 0, rows).to_kind(Kind::Float).contiguous();
    let mut labels = String::new();
    for w in offsets.windows(2) {
        for t in 0..w[1] - w[0] {
            labels.push_str(if 2 * t < w[1] - w[0] { "1\n" } else { "0\n" });
        }
    }
    let labels: String = labels.lines().take(rows as usize).map(|l| format!("{l}\n")).collect();
    let (npz, label_file, csv) = (
        ctx.path("probe.npz"),
        ctx.path("probe-labels.txt"),
        ctx.path("probe.csv"),
    );
    hooks::save_activations([("h", &features)], &npz)?;
    std::fs::write(&label_file, labels)?;
    std::fs::remove_dir_all(&folder)?;
    let folds = ctx.path("probe.folds.npy");
    let ours_cmd = |threads: &str| {
        let mut cmd = std::process::Command::new(&hooks);
        cmd.arg("probe")
            .arg("--activations")
            .arg(&npz)
            .arg("--labels")
            .arg(&label_file)
            .arg("--out")
            .arg(&csv)
            .args(["--control", "shuffle"])
            .env("OMP_NUM_THREADS", threads);
        cmd
    };
    let theirs_cmd = |threads: &str| {
        let mut cmd = std::process::Command::new(&ctx.python);
        cmd.arg(script())
            .arg(&npz)
            .arg(&label_file)
            .arg(&folds)
            .env("OMP_NUM_THREADS", threads)
            .env("OPENBLAS_NUM_THREADS", threads)
            .env("MKL_NUM_THREADS", threads);
        cmd
    };
    let mut timings = Vec::new();
    let mut counts = vec![ctx.cfg.threads];
    if ctx.cfg.full && ctx.cfg.threads != 2 {
        counts.push(2);
    }
    for threads in counts {
        let t = threads.to_string();
        // A warm-up of each (page cache, the folds file), then rounds back to back.
        let _ = timed(ours_cmd(&t), "hooks probe")?;
        let _ = timed(theirs_cmd(&t), "probe.py")?;
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            ours.push(timed(ours_cmd(&t), "hooks probe")?);
            theirs.push(timed(theirs_cmd(&t), "probe.py")?);
        }
        timings.push(Row {
            threads,
            ratio: Summary::of(&paired_ratios(&ours, &theirs)),
            ours: Summary::of(&ours),
            theirs: Summary::of(&theirs),
        });
    }
    let text = std::fs::read_to_string(&csv)?;
    let fields: Vec<f64> = text
        .lines()
        .nth(1)
        .unwrap_or("")
        .split(',')
        .map(|f| f.parse().unwrap_or(f64::NAN))
        .collect();
    let out = theirs_cmd(&ctx.cfg.threads.to_string()).output()?;
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let get = |k: &str| reply[k].as_f64().unwrap_or(f64::NAN);
    let result = ProbeBench {
        rows,
        hidden,
        rounds,
        timings,
        accuracy: (fields.get(2).copied().unwrap_or(f64::NAN), get("accuracy")),
        control: (fields.get(5).copied().unwrap_or(f64::NAN), get("control_accuracy")),
    };
    for path in [&npz, &label_file, &csv, &folds, &input] {
        let _ = std::fs::remove_file(path);
    }
    Ok(result)
}

impl ProbeBench {
    pub fn targets(&self) -> Vec<Target> {
        let difference = (self.accuracy.0 - self.accuracy.1).abs();
        let mut targets: Vec<Target> = self
            .timings
            .iter()
            .map(|row| {
                let plural = if row.threads == 1 { "" } else { "s" };
                Target::at_most(
                    format!(
                        "11. `hooks probe` / scikit-learn, same folds, {} thread{plural}",
                        row.threads
                    ),
                    VS_SKLEARN,
                    &row.ratio,
                    2,
                )
            })
            .collect();
        targets.push(Target::at_most(
            "11. probe accuracy, hooks − scikit-learn, absolute",
            ACCURACY_DIFFERENCE,
            &Summary::of(&[difference]),
            5,
        ));
        targets
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## 11. Probes\n\n\
             `make bench` (section 11 of the report; `HOOKS_BENCH_SECTIONS=11` runs it alone)\n\n\
             {rows} MiniLM token rows × {hidden} (`encoder.layer.3`, `--pool none`, over the bundled \
             sentences repeated), labelled by whether each token lies in the first half of its \
             sentence. `hooks probe --control shuffle` (release build; 5 stratified folds, \
             logistic with C = 1, the shuffle control on the same folds, the fit on every row) \
             against `py/probe.py`: scikit-learn's StandardScaler + LogisticRegression (lbfgs, its \
             default tolerance) on the folds `hooks probe` wrote, the same control and full fit. \
             Each side is a whole process (imports, loading the features), at the same thread \
             count (`OMP_NUM_THREADS`, and `OPENBLAS_NUM_THREADS` for numpy); {rounds} rounds \
             after a warm-up, back to back, at each thread count (median, interquartile range in \
             parentheses):\n",
            rows = self.rows,
            hidden = self.hidden,
            rounds = self.rounds
        );
        s.push_str("| threads | `hooks probe`, s | scikit-learn, s | ratio (paired per round) |\n|---|---|---|---|\n");
        for row in &self.timings {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                row.threads,
                row.ours.show(2),
                row.theirs.show(2),
                row.ratio.show(3)
            );
        }
        let _ = writeln!(
            s,
            "\nMean fold accuracy: hooks {:.5}, scikit-learn {:.5} (control: {:.5} and {:.5}). \
             hooks solves to the optimum (Newton's method; its tests match scikit-learn run to a \
             tolerance of 1e-12 prediction for prediction); lbfgs' default tolerance stops short of \
             it, which is the difference here.",
            self.accuracy.0, self.accuracy.1, self.control.0, self.control.1
        );
        s
    }
}
