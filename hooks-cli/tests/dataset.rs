//! `hooks extract --out DIR`: the dataset folder, read by numpy; killed runs resumed to the same
//! bytes; shards merged to the unsharded folder; Ctrl-C and SIGTERM; requests that differ.
#![allow(clippy::unwrap_used)] // a failing test should fail loudly

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The all-MiniLM-L6-v2 folder `make` installs, or `None` (with a note) outside `make`.
fn minilm() -> Option<PathBuf> {
    hooks_test_support::python().map(|python| hooks_test_support::minilm_dir(&python))
}

fn hooks_cmd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hooks"));
    cmd.env_remove("LD_LIBRARY_PATH").env_remove("HOOKS_CRASH_AT");
    cmd
}

/// Eleven texts of varied lengths, one long.
fn write_input(dir: &Path) -> PathBuf {
    let mut lines: Vec<String> = [
        "The cat sat on the mat.",
        "A",
        "Café crème in Zürich?",
        "Sparse autoencoders read activations token by token.",
        "Two words",
        "Probing classifiers need one row per sample.",
        "Short.",
        "The residual stream carries everything forward, layer after layer.",
        "Why?",
        "Shards join in order.",
    ]
    .map(String::from)
    .to_vec();
    lines.insert(3, "Paragraph goes on about layers and tokens. ".repeat(12));
    let path = dir.join("texts.txt");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// `hooks extract` of `input` with `args` added; the output path is in `args`.
fn extract(model: &Path, input: &Path, args: &[&str]) -> Command {
    let mut cmd = hooks_cmd();
    cmd.args([
        "extract",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ])
    .args(args);
    cmd
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every file of a folder, name to bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn assert_same_folder(got: &Path, want: &Path, what: &str) {
    let (got, want) = (files(got), files(want));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: file names"
    );
    for (name, bytes) in &want {
        assert!(got[name] == *bytes, "{what}: `{name}` differs");
    }
}

const LAYERS: &str = "encoder.layer.1.output,encoder.layer.5.output,pooler";

/// `hooks extract` of `LAYERS` unpooled into the folder `out`, in windows of 2 samples and
/// batches of `batch`, with `extra` arguments; stdout discarded, stderr kept.
fn windowed(model: &Path, input: &Path, out: &Path, batch: &str, extra: &[&str]) -> Command {
    let mut args = vec![
        "--layers",
        LAYERS,
        "--window",
        "2",
        "--batch-size",
        batch,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut cmd = extract(model, input, &args);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

/// The folder of an uninterrupted run with windows of 2 samples, unpooled.
fn reference_folder(model: &Path, input: &Path, dir: &Path) -> PathBuf {
    let out = dir.join("reference");
    run_ok(&mut windowed(model, input, &out, "2", &[]));
    out
}

/// numpy opens every array memory-mapped; the token layout agrees with an `.npz` run of the same
/// input (its `attention_mask` and padded rows).
#[test]
fn numpy_maps_every_array_and_the_token_layout_agrees_with_the_npz() {
    let Some(model) = minilm() else { return };
    let python = hooks_test_support::python().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path());
    let folder = reference_folder(&model, &input, dir.path());
    let npz = dir.path().join("padded.npz");
    run_ok(&mut extract(
        &model,
        &input,
        &["--layers", LAYERS, "--out", npz.to_str().unwrap()],
    ));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/dataset_check.py");
    let out = hooks_test_support::run_python(&python, &script, &[folder.to_str().unwrap(), npz.to_str().unwrap()]);
    assert!(out.contains("checked 3 layers of 11 samples"), "{out}");

    // The library opens it too, memory-mapped.
    let dataset = hooks::Dataset::open(&folder).unwrap();
    let offsets = dataset.array("offsets").unwrap();
    let layer = dataset.array("encoder.layer.5.output").unwrap();
    assert_eq!(offsets.size(), [12]);
    assert_eq!(layer.size(), [offsets.int64_value(&[11]), 384]);
    assert_eq!(dataset.array("pooler").unwrap().size(), [11, 384]);
}

/// Killed at each point a crash can land (after a window's data and before the manifest counts
/// it, after the manifest, while finishing, and from outside mid-run), a rerun of the same
/// command finishes the folder byte for byte as an uninterrupted run writes it.
#[test]
fn killed_runs_resume_to_the_same_bytes() {
    let Some(model) = minilm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path());
    let reference = reference_folder(&model, &input, dir.path());
    let command = |out: &Path| windowed(&model, &input, out, "2", &[]);
    for point in ["data:1", "data:3", "manifest:2", "manifest:6", "finish:0"] {
        let out = dir.path().join(point.replace(':', "-"));
        let status = command(&out).env("HOOKS_CRASH_AT", point).status().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "{point}: {status:?}"
        );
        run_ok(&mut command(&out));
        assert_same_folder(&out, &reference, point);
    }

    // From outside, as soon as the first window is on disk: wherever it lands.
    let out = dir.path().join("external");
    let mut child = command(&out).spawn().unwrap();
    let start = Instant::now();
    while hooks::read_manifest(&out).map_or(true, |m| m.done.samples == 0) {
        assert!(start.elapsed() < Duration::from_secs(120), "no window written");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    let _ = child.wait();
    run_ok(&mut command(&out));
    assert_same_folder(&out, &reference, "killed from outside");

    // A finished folder is left alone by a rerun.
    let rerun = run_ok(command(&out).stdout(Stdio::piped()));
    assert!(String::from_utf8_lossy(&rerun.stdout).contains("already complete"));
    assert_same_folder(&out, &reference, "rerun");
}

#[test]
fn shards_merge_into_the_unsharded_folder_and_bad_sets_are_refused() {
    let Some(model) = minilm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path());
    let reference = reference_folder(&model, &input, dir.path());
    let shard = |k: usize| {
        let out = dir.path().join(format!("shard{k}"));
        let spec = format!("{k}/3");
        run_ok(&mut windowed(&model, &input, &out, "2", &["--shard", &spec]));
        out
    };
    let shards: Vec<PathBuf> = (0..3).map(shard).collect();
    // `--shard auto` is K/N from torchrun's RANK and WORLD_SIZE.
    let auto = dir.path().join("auto");
    run_ok(
        windowed(&model, &input, &auto, "2", &["--shard", "auto"])
            .env("RANK", "1")
            .env("WORLD_SIZE", "3"),
    );
    assert_same_folder(&auto, &shards[1], "--shard auto");
    let merged = dir.path().join("merged");
    let merge = |out: &Path, parts: &[&PathBuf]| {
        let mut cmd = hooks_cmd();
        cmd.arg("merge").arg(out).args(parts);
        cmd.output().unwrap()
    };
    let ok = merge(&merged, &[&shards[0], &shards[1], &shards[2]]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_same_folder(&merged, &reference, "merged");

    let refused = |out: Output, needle: &str| {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.lines().count() == 1 && err.contains(needle),
            "{err}"
        );
    };
    refused(
        merge(&dir.path().join("m1"), &[&shards[0], &shards[2]]),
        "2 shard folder(s) given for a run of 3 shards",
    );
    refused(
        merge(&dir.path().join("m2"), &[&shards[1], &shards[0], &shards[2]]),
        "is shard 1/3 but stands at position 0; give the shards in order, 0 to 2",
    );
    refused(
        merge(&dir.path().join("m5"), &[&shards[0], &shards[0], &shards[2]]),
        "is shard 0/3 but stands at position 1",
    );
    // Merging into a folder that holds rows is refused as such.
    refused(merge(&merged, &[&shards[0], &shards[1], &shards[2]]), "invalid `out`");
    refused(
        merge(&dir.path().join("m3"), &[&shards[0], &shards[1]]),
        "give all of them",
    );
    // A shard of other settings.
    let other = dir.path().join("other");
    run_ok(&mut windowed(&model, &input, &other, "4", &["--shard", "2/3"]));
    refused(
        merge(&dir.path().join("m4"), &[&shards[0], &shards[1], &other]),
        "another `settings.batch_size`",
    );
}

#[test]
fn another_request_on_the_same_folder_is_refused_unless_overwritten() {
    let Some(model) = minilm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path());
    let out = dir.path().join("acts");
    let out_s = out.to_str().unwrap();
    run_ok(&mut extract(&model, &input, &["--layers", "pooler", "--out", out_s]));
    let refused = extract(
        &model,
        &input,
        &["--layers", "pooler", "--pool", "mean", "--out", out_s],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert_eq!(
        err.trim(),
        format!(
            "error: `{out_s}` holds an extraction with another `settings.pool` (\"none\" there, \"mean\" now); run the same command to resume it, choose another folder, or pass --overwrite to start it again"
        )
    );
    run_ok(&mut extract(
        &model,
        &input,
        &[
            "--layers",
            "encoder.layer.0.output",
            "--pool",
            "mean",
            "--overwrite",
            "--out",
            out_s,
        ],
    ));
    let manifest = hooks::read_manifest(&out).unwrap();
    assert!(manifest.complete);
    assert_eq!(
        manifest.arrays.keys().collect::<Vec<_>>(),
        ["encoder.layer.0.output.npy", "sample_index.npy"]
    );
    assert!(!out.join("pooler.npy").exists(), "the old run's files are gone");

    // A folder that is not a dataset is never written into.
    let stranger = dir.path().join("stranger");
    std::fs::create_dir(&stranger).unwrap();
    std::fs::write(stranger.join("notes.txt"), "mine").unwrap();
    let refused = extract(
        &model,
        &input,
        &["--layers", "pooler", "--overwrite", "--out", stranger.to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not a dataset folder"));
    assert_eq!(std::fs::read_dir(&stranger).unwrap().count(), 1);

    // Attention patterns go to a folder too, one [heads, T, T] block per sample (see
    // tests/integrity.rs); a folder made empty beforehand is used as a new one.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for folder in [dir.path().join("patterns"), empty.clone()] {
        let folder_s = folder.to_str().unwrap();
        let patterns = "encoder.layer.0.output,encoder.layer.0.attention.self.attn_weights";
        run_ok(&mut extract(&model, &input, &["--layers", patterns, "--out", folder_s]));
        let manifest = hooks::read_manifest(&folder).unwrap();
        assert!(manifest.complete);
        assert_eq!(
            manifest.arrays["encoder.layer.0.attention.self.attn_weights.npy"].rows,
            hooks::Rows::Patterns
        );
    }
}

/// Waits until process `pid` catches signal `number` (its handler is installed), from the
/// `SigCgt` mask Linux shows in `/proc/PID/status`.
fn wait_for_handler(pid: u32, number: u32) {
    let start = Instant::now();
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .unwrap_or(0);
        if caught & (1 << (number - 1)) != 0 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no handler for signal {number}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Ctrl-C (SIGINT) and SIGTERM stop between batches: exit 130 or 143, a consistent folder that a
/// rerun finishes to the same bytes; an `.npz` run leaves no file and no temporary.
#[test]
fn signals_stop_cleanly_with_their_exit_codes() {
    let Some(model) = minilm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path());
    let reference = reference_folder(&model, &input, dir.path());
    for (signal, code) in [("INT", 130), ("TERM", 143)] {
        let out = dir.path().join(format!("sig{signal}"));
        let command = || windowed(&model, &input, &out, "2", &[]);
        let child = command().spawn().unwrap();
        let start = Instant::now();
        while hooks::read_manifest(&out).map_or(true, |m| m.done.samples == 0) {
            assert!(start.elapsed() < Duration::from_secs(120), "no window written");
            std::thread::sleep(Duration::from_millis(5));
        }
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let output = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        let manifest = hooks::read_manifest(&out).unwrap();
        if manifest.complete {
            // The signal came after the last window: the run finished, and says it was stopped.
            assert_eq!(output.status.code(), Some(code), "{err}");
        } else {
            assert_eq!(output.status.code(), Some(code), "{err}");
            assert!(err.contains("run the same command again to resume"), "{err}");
        }
        assert!(!files(&out).keys().any(|n| n.ends_with(".tmp")));
        run_ok(&mut command());
        assert_same_folder(&out, &reference, signal);
    }

    // An .npz run stopped mid-way writes nothing.
    let npz = dir.path().join("stopped.npz");
    let many = dir.path().join("many.txt");
    std::fs::write(&many, "A sentence to embed, one of many.\n".repeat(3000)).unwrap();
    let child = extract(
        &model,
        &many,
        &["--layers", LAYERS, "--batch-size", "4", "--out", npz.to_str().unwrap()],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Not a fixed sleep: on a loaded machine the start-up (libtorch, the model, 3000 texts) can
    // outlast it, and SIGINT's default action then kills the process with no exit code.
    wait_for_handler(child.id(), 2);
    std::thread::sleep(Duration::from_millis(300));
    assert!(Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted by SIGINT (Ctrl-C); nothing was written"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        !npz.exists() && !left.iter().any(|n| n.to_string_lossy().ends_with(".tmp")),
        "{left:?}"
    );
}

/// `examples/slurm/`: three array tasks (run here one after another, on the CPU) and the merge
/// step give the folder of one unsharded run.
#[test]
fn the_slurm_example_runs_as_an_array_and_merges() {
    let Some(model) = minilm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path());
    let reference = reference_folder(&model, &input, dir.path());
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/slurm");
    let bin = Path::new(env!("CARGO_BIN_EXE_hooks")).parent().unwrap().to_owned();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let prefix = dir.path().join("acts");
    let sbatch = |script: &str, args: &[&str], task: Option<usize>| {
        let mut cmd = Command::new("bash");
        cmd.arg(examples.join(script))
            .args(args)
            .env("PATH", &path)
            .env("HOOKS_MODEL", &model)
            .env("HOOKS_LAYERS", LAYERS)
            .env("HOOKS_DEVICE", "cpu")
            .env("HOOKS_DTYPE", "f32")
            .env("HOOKS_EXTRA_ARGS", "--window 2 --batch-size 2")
            .env_remove("LD_LIBRARY_PATH");
        if let Some(k) = task {
            cmd.env("SLURM_ARRAY_TASK_ID", k.to_string())
                .env("SLURM_ARRAY_TASK_COUNT", "3");
        }
        run_ok(&mut cmd);
    };
    for k in 0..3 {
        sbatch(
            "extract.sbatch",
            &[input.to_str().unwrap(), prefix.to_str().unwrap()],
            Some(k),
        );
    }
    sbatch("merge.sbatch", &[prefix.to_str().unwrap(), "3"], None);
    assert_same_folder(&prefix, &reference, "the SLURM example");
}

/// Options that only a dataset folder has are refused with an `.npz` output, not ignored (a
/// SLURM task given `--shard` would otherwise write the whole corpus); a long text cut to the
/// model folder's `max_seq_length` says so.
#[test]
fn folder_options_with_an_npz_are_refused_and_cut_texts_are_noted() {
    let Some(model) = minilm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path());
    let npz = dir.path().join("x.npz");
    for flag in [&["--shard", "0/2"][..], &["--window", "8"], &["--overwrite"]] {
        let mut args = vec!["--layers", "pooler", "--out", npz.to_str().unwrap()];
        args.extend_from_slice(flag);
        let out = extract(&model, &input, &args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag:?}");
        assert!(
            err.trim()
                .starts_with(&format!("error: `{}` is for dataset folders, but `--out", flag[0])),
            "{err}"
        );
        assert!(!npz.exists());
    }
    let long = dir.path().join("long.txt");
    std::fs::write(&long, format!("short\n{}\n", "word ".repeat(400))).unwrap();
    let out = run_ok(&mut extract(
        &model,
        &long,
        &["--layers", "pooler", "--out", npz.to_str().unwrap()],
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("note: 1 of 2 texts were longer than 256 tokens and were cut to it (`max_seq_length` of the folder's sentence_bert_config.json"),
        "{err}"
    );
}
