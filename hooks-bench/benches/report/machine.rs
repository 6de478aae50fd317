//! The machine and software a run measured, and the report's header.

use std::fmt::Write as _;
use std::process::Command;

use crate::{Ctx, Target};

/// `/proc/loadavg`'s one-minute figure: how busy the machine was (other processes' work).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn first_line_of(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        info.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split(':').nth(1))
            .map_or_else(|| "?".to_owned(), |v| v.trim().to_owned())
    };
    format!(
        "{} (family {}, model {})",
        field("model name"),
        field("cpu family"),
        field("model\t")
    )
}

fn memory_gib() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let kib: f64 = s.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.0} GiB", kib / (1024.0 * 1024.0)))
        })
        .unwrap_or_else(|| "?".into())
}

/// Rows of the machine table.
pub fn describe(ctx: &Ctx, load_before: String, seconds: f64) -> Vec<(&'static str, String)> {
    let v = &ctx.versions;
    let s = |key: &str| v[key].as_str().unwrap_or("?").to_owned();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get);
    vec![
        ("CPU", format!("{}, {cores} cores", cpu_model())),
        ("memory", memory_gib()),
        ("OS", format!("Linux {}", first_line_of("uname", &["-r"]))),
        ("Rust", first_line_of("rustc", &["-V"])),
        (
            "libtorch",
            format!(
                "{} (the venv's torch wheel, used by tch 0.24 and by Python alike)",
                s("torch")
            ),
        ),
        (
            "Python side",
            format!(
                "Python {}, torch {}, transformers {}, numpy {}",
                s("python"),
                s("torch"),
                s("transformers"),
                s("numpy")
            ),
        ),
        (
            "threads",
            format!(
                "{} intra-op on both sides (`tch::set_num_threads`: {}; `torch.set_num_threads`: {}; `OMP_NUM_THREADS` for the processes of section 4; sections 5 and 8 measure 1 and 2 threads); set `HOOKS_BENCH_THREADS` to change",
                ctx.cfg.threads,
                tch::get_num_threads(),
                v["threads"]
            ),
        ),
        (
            "model",
            "all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384), f32, CPU; section 8: a Llama-shaped decoder with random weights"
                .into(),
        ),
        (
            "load average",
            format!(
                "{load_before} at the start, {} at the end (other work on the machine)",
                load_average()
            ),
        ),
        ("run time", format!("{seconds:.0} s for `report`, after building")),
    ]
}

/// The title, how to reproduce, the machine, and every target at a glance.
pub fn header(machine: &[(&str, String)], targets: &[Target]) -> String {
    let mut s = String::from(
        "# Benchmarks\n\n\
         Written by `make bench` (`hooks-bench/`): build in release, run the `site` criterion \
         bench, then `report`, which measures everything else in one process (with a Python \
         worker beside it) and writes this file. Benchmarks never fail on timing; `make test` \
         runs each of them once at toy sizes so that they keep working.\n\n\
         Every figure that matters is a ratio measured within one run: variants interleaved \
         round by round after a warm-up, each ratio taken within a round, then the median over \
         rounds with the interquartile range in parentheses.\n\n\
         ## Machine\n\n| | |\n|---|---|\n",
    );
    for (k, v) in machine {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    s.push_str("\n## Targets\n\n| what | target | measured | |\n|---|---|---|---|\n");
    for t in targets {
        let _ = writeln!(s, "| {} | {} | {} | {} |", t.what, t.goal, t.measured, t.verdict);
    }
    s
}
