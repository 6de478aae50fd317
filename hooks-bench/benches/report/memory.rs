//! Section 4: peak RSS of `hooks extract` and of the reference extraction, over N and 4N inputs.

use std::fmt::Write as _;
use std::path::Path;

use crate::stats::Summary;
use crate::{hooks_binary, token_ids, write_jsonl, BenchResult, Config, Ctx, Target, LAYERS};

pub struct Run {
    tool: &'static str,
    inputs: usize,
    peak: u64,
    /// The size of the `.npz` written.
    output: u64,
    seconds: f64,
}

pub struct Memory {
    model: u64,
    /// Per tool, the peak RSS of a process that loads its libraries and does nothing.
    floors: Vec<(&'static str, u64)>,
    runs: Vec<Run>,
    /// The `hooks` binary was not found (only tolerated in the smoke run).
    missing_cli: bool,
}

pub fn run(ctx: &mut Ctx) -> BenchResult<Memory> {
    let model = std::fs::metadata(ctx.model_dir.join("model.safetensors"))?.len();
    let hooks = hooks_binary();
    if hooks.is_none() && ctx.cfg.full {
        return Err("no `hooks` binary next to this one; run `make bench`, which builds it".into());
    }
    let n = ctx.cfg.memory_inputs;
    let batch = ctx.cfg.extract_batch.to_string();
    let layers = LAYERS.join(",");
    // The peak of a process that loads the libraries and exits: libtorch (with its CUDA
    // libraries, as linked for GPU use) and, for Python, the interpreter, torch and transformers.
    // Context for the fixed part of each peak, which no code of the extraction can change.
    let mut floors = Vec::new();
    if let Some(hooks) = &hooks {
        floors.push(("`hooks extract`", vec![hooks.display().to_string(), "--version".into()]));
    }
    floors.push((
        "Python reference",
        vec![
            ctx.python.display().to_string(),
            "-c".into(),
            "import numpy, torch; from transformers import BertModel".into(),
        ],
    ));
    let floors = floors
        .into_iter()
        .map(|(tool, argv)| Ok((tool, peak_rss(ctx, &argv)?["peak_rss"].as_u64().unwrap_or(0))))
        .collect::<BenchResult<Vec<_>>>()?;
    let mut runs = Vec::new();
    for inputs in [n, 4 * n] {
        let input = ctx.path(&format!("memory-{inputs}.jsonl"));
        write_jsonl(&input, &token_ids(inputs, ctx.cfg.extract_len, 5))?;
        let out = ctx.path("memory.npz");
        let model_dir = ctx.model_dir.display().to_string();
        let mut argvs: Vec<(&'static str, Vec<String>)> = Vec::new();
        if let Some(hooks) = &hooks {
            argvs.push((
                "`hooks extract`",
                [
                    hooks.display().to_string(),
                    "extract".into(),
                    "--model".into(),
                    model_dir.clone(),
                ]
                .into_iter()
                .chain([
                    "--input".into(),
                    input.display().to_string(),
                    "--layers".into(),
                    layers.clone(),
                ])
                .chain([
                    "--out".into(),
                    out.display().to_string(),
                    "--batch-size".into(),
                    batch.clone(),
                ])
                .collect(),
            ));
        }
        argvs.push((
            "Python reference",
            [
                ctx.python.display().to_string(),
                crate::python::script().display().to_string(),
            ]
            .into_iter()
            .chain(["extract".into(), "--model".into(), model_dir, "--input".into()])
            .chain([
                input.display().to_string(),
                "--batch-size".into(),
                batch.clone(),
                "--out".into(),
            ])
            .chain([
                out.display().to_string(),
                "--threads".into(),
                ctx.cfg.threads.to_string(),
            ])
            .collect(),
        ));
        for (tool, argv) in argvs {
            let reply = peak_rss(ctx, &argv)?;
            if reply["status"].as_i64() != Some(0) {
                return Err(format!("{tool} failed:\n{}", reply["stderr"].as_str().unwrap_or("")).into());
            }
            let output = std::fs::metadata(&out)?.len();
            std::fs::remove_file(&out)?;
            runs.push(Run {
                tool,
                inputs,
                peak: reply["peak_rss"].as_u64().unwrap_or(0),
                output,
                seconds: reply["seconds"].as_f64().unwrap_or(f64::NAN),
            });
        }
        std::fs::remove_file(&input)?;
    }
    Ok(Memory {
        model,
        floors,
        runs,
        missing_cli: hooks.is_none(),
    })
}

/// Runs `argv` under `py/peak_rss.py` (see there why not from this process); its JSON reply, with
/// the command's stderr added.
pub fn peak_rss(ctx: &Ctx, argv: &[String]) -> BenchResult<serde_json::Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/peak_rss.py");
    let mut cmd = crate::python::command(&ctx.python, ctx.cfg.threads);
    cmd.arg(script).args(argv);
    let out = cmd.output()?;
    let mut reply: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("peak_rss.py: {e}: {}", String::from_utf8_lossy(&out.stderr)))?;
    reply["stderr"] = String::from_utf8_lossy(&out.stderr).into_owned().into();
    Ok(reply)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

impl Memory {
    fn ratio(&self, run: &Run) -> f64 {
        mb(run.peak) / mb(run.output + self.model)
    }

    fn runs_of(&self, tool: &str) -> Vec<&Run> {
        self.runs.iter().filter(|r| r.tool == tool).collect()
    }

    /// The line through the N and 4N runs, `peak = fixed + per_byte × output`: `per_byte` is what
    /// each byte of output costs at the peak, `fixed` (MB) everything else (libraries, runtime,
    /// the model, transients).
    fn fit(&self, tool: &str) -> Option<(f64, f64)> {
        let [small, large] = self.runs_of(tool)[..] else {
            return None;
        };
        let per_byte = (mb(large.peak) - mb(small.peak)) / (mb(large.output) - mb(small.output));
        Some((per_byte, mb(small.peak) - per_byte * mb(small.output)))
    }

    pub fn targets(&self) -> Vec<Target> {
        let tool = "`hooks extract`";
        let one = |x: f64| Summary {
            median: x,
            p25: x,
            p75: x,
            n: 1,
        };
        let largest = self.runs_of(tool).last().copied();
        let inputs = largest.map_or(0, |r| r.inputs);
        vec![
            Target::at_most(
                format!("4. {tool} peak RSS / (output + model), {inputs} inputs"),
                1.1,
                &one(largest.map_or(f64::NAN, |r| self.ratio(r))),
                2,
            ),
            Target::at_most(
                format!("4. {tool} extra peak RSS per extra output byte, N → 4N"),
                1.1,
                &one(self.fit(tool).map_or(f64::NAN, |(per_byte, _)| per_byte)),
                2,
            ),
        ]
    }

    pub fn markdown(&self, cfg: &Config) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## 4. Memory\n\n\
             `make bench` (section 4 of `cargo bench -p hooks-bench --bench report`)\n\n\
             Peak RSS (`wait4`'s `ru_maxrss`, taken by `hooks-bench/py/peak_rss.py`) of one process \
             extracting the six block outputs of N and 4N inputs of {} tokens, batch {}, no \
             pooling, from a JSONL of token ids: `hooks extract --layers \
             encoder.layer.0,…,encoder.layer.5` (release build) and `reference.py extract` (keep \
             every batch, `torch.cat`, `numpy.savez`). Model: `model.safetensors`, {:.1} MB.\n",
            cfg.extract_len,
            cfg.extract_batch,
            mb(self.model)
        );
        s.push_str(
            "| tool | inputs | output .npz MB | peak RSS MB | peak / (output + model) | seconds |\n|---|---|---|---|---|---|\n",
        );
        for r in &self.runs {
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {:.1} | {:.2} | {:.1} |",
                r.tool,
                r.inputs,
                mb(r.output),
                mb(r.peak),
                self.ratio(r),
                r.seconds
            );
        }
        if self.missing_cli {
            s.push_str("\n(`hooks` binary not built: its rows are missing.)\n");
        }
        s.push_str(
            "\n| tool | extra peak RSS per extra output byte, N → 4N | fixed part of the peak, MB | peak RSS of a process that only loads its libraries, MB |\n|---|---|---|---|\n",
        );
        for tool in ["`hooks extract`", "Python reference"] {
            let floor = self.floors.iter().find(|(t, _)| *t == tool).map(|&(_, f)| mb(f));
            if let Some((per_byte, fixed)) = self.fit(tool) {
                let _ = writeln!(
                    s,
                    "| {tool} | {per_byte:.2} | {fixed:.0} | {} |",
                    floor.map_or_else(|| "?".to_owned(), |f| format!("{f:.0}"))
                );
            }
        }
        s.push_str(
            "\nThe second table fits `peak = fixed + per_byte × output` through the two runs of \
             each tool. `per_byte` is what the extraction holds per byte of result at its peak: \
             1.0 means the result is held once, 2.0 twice. `fixed` is everything else: the \
             libraries (the last column: `hooks --version`, or `import numpy, torch; from \
             transformers import BertModel`, which loads them and exits; libtorch here comes with \
             its CUDA libraries, as linked for GPU use), the model and any transient. \
             `peak / (output + model)` counts both, so it falls towards `per_byte` as the output \
             grows. `hooks extract` holds the result in memory until it writes the file (one \
             buffer per layer, allocated once): an `.npz` is written whole, so its peak grows with \
             the output. A dataset folder (`--out DIR`, section 6) does not.\n",
        );
        s
    }
}
