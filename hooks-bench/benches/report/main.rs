//! `make bench`: what capture costs, and how the Rust path compares with the Python one, measured
//! side by side in one run, written to BENCHMARKS.md.
//!
//! Run by `cargo bench -p hooks-bench --bench report` (after the `site` bench, whose criterion
//! estimates it reads). Without `--bench`, as `cargo test` runs it, every section runs once at toy
//! sizes and the report goes to a temporary file: a smoke run that keeps this harness working.
//! Nothing here fails on a timing; a target missed is reported, not raised.
//!
//! Method, in every section: the same thread count on both sides, warm-up first, variants
//! interleaved round by round (their order rotated), and each ratio taken within a round, so
//! that load from other processes hits both sides of a ratio alike. Tables give the median over
//! rounds and, in parentheses, the interquartile range.

mod analysis;
mod capture;
mod decoder;
mod engine;
mod folder;
mod generation;
mod lens;
mod machine;
mod memory;
mod patterns;
mod probe;
mod python;
mod reference;
mod sae;
mod sites;
mod stats;
mod writing;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use python::Worker;

/// Errors end the run with a message: a benchmark that cannot run has nothing to report.
type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// The six block outputs every section captures.
const LAYERS: [&str; 6] = [
    "encoder.layer.0",
    "encoder.layer.1",
    "encoder.layer.2",
    "encoder.layer.3",
    "encoder.layer.4",
    "encoder.layer.5",
];

/// Everything hand-written in BENCHMARKS.md sits below this line; a run keeps it.
const NOTES_MARKER: &str =
    "<!-- Hand-written below this line: `make bench` rewrites everything above it and keeps the rest. -->";

/// One promise and how this run did against it, judged on the median.
#[derive(Clone)]
struct Target {
    what: String,
    goal: String,
    measured: String,
    verdict: String,
}

impl Target {
    /// `measured` must be at most `limit`.
    fn at_most(what: impl Into<String>, limit: f64, measured: &stats::Summary, digits: usize) -> Target {
        Target::new(
            what,
            format!("≤ {limit}"),
            measured,
            digits,
            |m| m <= limit,
            |m| m / limit - 1.0,
        )
    }

    /// `measured` must be at least `limit`.
    fn at_least(what: impl Into<String>, limit: f64, measured: &stats::Summary, digits: usize) -> Target {
        Target::new(
            what,
            format!("≥ {limit}"),
            measured,
            digits,
            |m| m >= limit,
            |m| 1.0 - m / limit,
        )
    }

    /// `met` when `ok(median)`, else missed by `shortfall(median)` (a fraction of the limit).
    fn new(
        what: impl Into<String>,
        goal: String,
        measured: &stats::Summary,
        digits: usize,
        ok: impl Fn(f64) -> bool,
        shortfall: impl Fn(f64) -> f64,
    ) -> Target {
        let m = measured.median;
        Target {
            what: what.into(),
            goal,
            measured: measured.show(digits),
            verdict: if m.is_nan() {
                "not measured".into()
            } else if ok(m) {
                "met".into()
            } else {
                format!("**missed** by {:.1}%", shortfall(m) * 100.0)
            },
        }
    }
}

/// `[batch, tokens]` of a forward.
#[derive(Clone, Copy, Debug)]
struct Shape {
    batch: i64,
    len: i64,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}×{}", self.batch, self.len)
    }
}

/// How much of each measurement to do.
#[derive(Debug)]
struct Config {
    /// A real run (`--bench`), or the smoke run `cargo test` does.
    full: bool,
    threads: i32,
    /// The forward shapes of sections 1 and 2: small (latency-bound) and large (compute-bound).
    shapes: [Shape; 2],
    /// Per shape: warm-up forwards per variant, rounds, and forwards per variant per round.
    warmup: [usize; 2],
    rounds: [usize; 2],
    block: [usize; 2],
    /// Section 2's whole extraction: inputs, their length, batch size, rounds.
    extract_inputs: usize,
    extract_len: i64,
    extract_batch: usize,
    extract_rounds: usize,
    /// Section 3: rows of each of the six `[rows, 64, 384]` arrays, rounds.
    write_rows: i64,
    write_rounds: usize,
    /// Section 4: N (and 4N) inputs of `extract_len` tokens; large enough that the result, not
    /// transients such as loading the model, makes the peak.
    memory_inputs: usize,
}

impl Config {
    fn full() -> Config {
        let threads = std::env::var("HOOKS_BENCH_THREADS")
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(1);
        Config {
            full: true,
            threads,
            shapes: [Shape { batch: 1, len: 16 }, Shape { batch: 32, len: 64 }],
            warmup: [20, 2],
            rounds: [40, 20],
            block: [10, 1],
            extract_inputs: 512,
            extract_len: 64,
            extract_batch: 32,
            extract_rounds: 5,
            write_rows: 512,
            write_rounds: 5,
            memory_inputs: 512,
        }
    }

    fn smoke() -> Config {
        Config {
            full: false,
            threads: 1,
            shapes: [Shape { batch: 1, len: 4 }, Shape { batch: 2, len: 8 }],
            warmup: [1, 1],
            rounds: [2, 2],
            block: [1, 1],
            extract_inputs: 4,
            extract_len: 8,
            extract_batch: 2,
            extract_rounds: 1,
            write_rows: 2,
            write_rounds: 1,
            memory_inputs: 2,
        }
    }
}

/// What every section needs: the config, the model folder, the Python worker, a scratch folder.
struct Ctx {
    cfg: Config,
    model_dir: PathBuf,
    python: PathBuf,
    worker: Worker,
    /// What the Python side runs: its versions, threads and attention implementation.
    versions: serde_json::Value,
    /// Scratch files (deleted as soon as measured; the folder on exit).
    work: tempfile::TempDir,
}

impl Ctx {
    /// A scratch path.
    fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }
}

/// `n` rows of `len` token ids, the same on every run (a fixed linear congruential sequence over
/// ordinary vocabulary ids): what the tokens are does not change the work.
fn token_ids(n: usize, len: i64, seed: u64) -> Vec<Vec<i64>> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..n)
        .map(|_| {
            (0..len)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    1000 + ((state >> 33) % 28_000) as i64
                })
                .collect()
        })
        .collect()
}

/// The same ids as a `[n, len]` tensor.
fn ids_tensor(rows: &[Vec<i64>]) -> tch::Tensor {
    let flat: Vec<i64> = rows.iter().flatten().copied().collect();
    let n = i64::try_from(rows.len()).unwrap_or(i64::MAX);
    tch::Tensor::from_slice(&flat).view([n, -1])
}

/// Writes rows as JSONL `{"input_ids": [...]}`, the input `hooks extract` and the reference read.
fn write_jsonl(path: &Path, rows: &[Vec<i64>]) -> BenchResult<()> {
    let mut text = String::new();
    for row in rows {
        writeln!(text, "{}", serde_json::json!({ "input_ids": row }))?;
    }
    std::fs::write(path, text)?;
    Ok(())
}

/// The target folder, from this binary's path (`target/<profile>/deps/report-…`).
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// The `hooks` binary of the same profile as this one (`make bench` builds it first; under
/// `cargo test` hooks-cli's tests have built it).
fn hooks_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("hooks");
    bin.is_file().then_some(bin)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let cfg = if full { Config::full() } else { Config::smoke() };
    if let Err(e) = run(cfg) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(cfg: Config) -> BenchResult<()> {
    // Without Python the smoke run (in `cargo test`) is skipped with a note, or fails under
    // `HOOKS_REQUIRE_PYTHON=1` as `make test` sets it; the full run needs it.
    let Some(python) = hooks_test_support::python() else {
        if cfg.full {
            return Err("no Python with torch and transformers: run `make setup` or set HOOKS_PYTHON".into());
        }
        return Ok(());
    };
    let started = Instant::now();
    tch::set_num_threads(cfg.threads);
    let model_dir = hooks_test_support::minilm_dir(&python);
    let work = if cfg.full {
        // The real disk, as an extraction writes to, not a RAM-backed /tmp.
        let dir = target_dir().join("bench-scratch");
        std::fs::create_dir_all(&dir)?;
        tempfile::tempdir_in(dir)?
    } else {
        tempfile::tempdir()?
    };
    let mut worker = Worker::start(&python, cfg.threads)?;
    let versions = worker.call(&serde_json::json!({
        "cmd": "setup", "model": model_dir, "threads": cfg.threads,
    }))?;
    let mut ctx = Ctx {
        cfg,
        model_dir,
        python,
        worker,
        versions,
        work,
    };
    let load_before = machine::load_average();

    // `HOOKS_BENCH_SECTIONS=7` (or `5,7`) runs only those sections and replaces only their text
    // (and their rows of the targets table) in the existing report.
    let only: Option<Vec<u32>> = std::env::var("HOOKS_BENCH_SECTIONS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect());
    let wants = |n: u32| only.as_ref().is_none_or(|o| o.contains(&n));
    let step = |name: &str| eprintln!("[{:>5.0} s] {name}", started.elapsed().as_secs_f64());
    // Per section run: its number, its markdown, its targets.
    let mut parts: Vec<(u32, String, Vec<Target>)> = Vec::new();
    if wants(1) {
        step("1. capture cost");
        let capture = capture::run(&ctx)?;
        step("1. per-site cost (criterion estimates)");
        let sites = sites::read(&target_dir());
        let text = format!("{}\n{}", capture.markdown(&ctx.cfg), sites::markdown(sites.as_ref()));
        parts.push((1, text, [capture.targets(), sites::targets(sites.as_ref())].concat()));
    }
    if wants(2) {
        step("2. against the Python reference");
        let reference = reference::run(&mut ctx)?;
        parts.push((2, reference.markdown(&ctx.cfg), reference.targets()));
    }
    if wants(3) {
        step("3. writing");
        let writing = writing::run(&mut ctx)?;
        parts.push((3, writing.markdown(&ctx.cfg), writing.targets()));
    }
    if wants(4) {
        step("4. memory");
        let memory = memory::run(&mut ctx)?;
        parts.push((4, memory.markdown(&ctx.cfg), memory.targets()));
    }
    if wants(5) {
        step("5. the extraction engine");
        let engine = engine::run(&mut ctx)?;
        parts.push((5, engine.markdown(), engine.targets()));
    }
    if wants(6) {
        step("6. the dataset folder");
        let folder = folder::run(&mut ctx)?;
        parts.push((6, folder.markdown(), folder.targets()));
    }
    if wants(7) {
        step("7. analysis");
        let analysis = analysis::run(&ctx)?;
        parts.push((7, analysis.markdown(), analysis.targets()));
    }
    if wants(8) {
        step("8. a decoder (Llama-shaped)");
        let decoder = decoder::run(&mut ctx)?;
        parts.push((8, decoder.markdown(), decoder.targets()));
    }
    if wants(9) {
        step("9. the logit lens");
        let lens = lens::run(&mut ctx)?;
        parts.push((9, lens.markdown(), lens.targets()));
    }
    if wants(10) {
        step("10. generation");
        let generation = generation::run(&mut ctx)?;
        parts.push((10, generation.markdown(), generation.targets()));
    }
    if wants(11) {
        step("11. probes");
        let probe = probe::run(&mut ctx)?;
        parts.push((11, probe.markdown(), probe.targets()));
    }
    if wants(12) {
        step("12. sparse autoencoders");
        let sae = sae::run(&mut ctx)?;
        parts.push((12, sae.markdown(), sae.targets()));
    }
    let elapsed = started.elapsed().as_secs_f64();
    step("done");

    // `HOOKS_BENCH_OUT` redirects the report (to look at a smoke run's, say).
    let path = match std::env::var_os("HOOKS_BENCH_OUT") {
        Some(path) => PathBuf::from(path),
        None if ctx.cfg.full => Path::new(env!("CARGO_MANIFEST_DIR")).join("../BENCHMARKS.md"),
        None => ctx.path("BENCHMARKS.md"),
    };
    let old = std::fs::read_to_string(&path).ok();
    let notes = old
        .as_deref()
        .and_then(|old| old.find(NOTES_MARKER).map(|i| old[i..].to_owned()))
        .unwrap_or_else(|| format!("{NOTES_MARKER}\n"));
    let report = match (&only, old.as_deref()) {
        (Some(_), Some(old)) if old.contains(NOTES_MARKER) => splice(old, &parts)?,
        _ => {
            let machine = machine::describe(&ctx, load_before, elapsed);
            let targets: Vec<Target> = parts.iter().flat_map(|(_, _, t)| t.iter().cloned()).collect();
            let mut out = String::new();
            writeln!(out, "{}", machine::header(&machine, &targets))?;
            for (_, text, _) in &parts {
                writeln!(out, "{text}")?;
            }
            format!("{}\n{notes}", out.trim_end())
        }
    };
    std::fs::write(&path, report)?;
    if ctx.cfg.full {
        eprintln!("wrote {} in {elapsed:.0} s", path.display());
    } else {
        // The smoke run checks that each section produced its table, not what is in it.
        let text = std::fs::read_to_string(&path)?;
        for heading in [
            "## 1.", "## 2.", "## 3.", "## 4.", "## 5.", "## 6.", "## 7.", "## 8.", "## 9.", "## 10.", "## 11.",
            "## 12.",
        ] {
            if !text.contains(heading) {
                return Err(format!("the report lacks `{heading}`").into());
            }
        }
        eprintln!("benchmark smoke run: every section ran ({elapsed:.0} s)");
    }
    Ok(())
}

/// `old` (a whole report) with the sections of `parts` replaced (or, when new, put before the
/// hand-written notes) and their rows of the targets table replaced; the rest kept as it was.
fn splice(old: &str, parts: &[(u32, String, Vec<Target>)]) -> BenchResult<String> {
    let marker = old.find(NOTES_MARKER).ok_or("no notes marker")?;
    let (mut report, notes) = (old[..marker].to_owned(), &old[marker..]);
    for (n, text, targets) in parts {
        let heading = format!("## {n}. ");
        let text = format!("{}\n\n", text.trim_end());
        match report.find(&heading) {
            Some(start) => {
                let end = report[start + heading.len()..]
                    .find("\n## ")
                    .map_or(report.len(), |i| start + heading.len() + i + 1);
                report.replace_range(start..end, &text);
            }
            None => {
                let trimmed = report.trim_end().len();
                report.truncate(trimmed);
                report.push_str("\n\n");
                report.push_str(&text);
            }
        }
        // Targets: drop this section's rows, add the new ones where the section's number puts
        // them (before the first row of a later section, else after the table's last row).
        let prefix = format!("| {n}. ");
        let mut lines: Vec<String> = report.lines().map(str::to_owned).collect();
        lines.retain(|l| !l.starts_with(&prefix));
        let table = lines.iter().position(|l| l == "## Targets").ok_or("no targets table")?;
        let section_of = |line: &str| {
            line.strip_prefix("| ")
                .and_then(|rest| rest.split_once(". "))
                .and_then(|(k, _)| k.parse::<u32>().ok())
        };
        let mut at = table + 1;
        while at < lines.len() && (lines[at].is_empty() || lines[at].starts_with('|')) {
            if lines[at].is_empty() && at > table + 1 && lines[at - 1].starts_with('|') {
                break;
            }
            if section_of(&lines[at]).is_some_and(|k| k > *n) {
                break;
            }
            at += 1;
        }
        for t in targets {
            lines.insert(
                at,
                format!("| {} | {} | {} | {} |", t.what, t.goal, t.measured, t.verdict),
            );
            at += 1;
        }
        report = lines.join("\n") + "\n";
    }
    Ok(format!("{}\n{notes}", report.trim_end()))
}
