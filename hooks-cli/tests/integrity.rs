//! What is on disk stays what it claims to be: a folder in use is locked, a resume checks every
//! file that shaped the bytes (the tokenizer among them), Ctrl-C during an `.npz` write leaves the
//! previous file, and the small cases a newcomer's trial found (`--input -`, `--out x.NPZ`, a
//! config without `model_type`, `--minibatch` past the rows, the CLI's layer hint).
#![allow(clippy::unwrap_used)] // a failing test should fail loudly

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The all-MiniLM-L6-v2 folder `make` installs, or `None` (with a note) outside `make`.
fn minilm() -> Option<PathBuf> {
    hooks_test_support::python().map(|python| hooks_test_support::minilm_dir(&python))
}

fn hooks_cmd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hooks"));
    cmd.env_remove("LD_LIBRARY_PATH")
        .env_remove("HOOKS_CRASH_AT")
        .env_remove("HOOKS_PAUSE_AT");
    cmd
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The one line of a failed run's stderr, checked to be one line and to contain each of `needles`.
fn fails_with(out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "succeeded: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    for needle in needles {
        assert!(err.contains(needle), "`{needle}` not in: {err}");
    }
    err
}

fn ok(out: &Output) {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Waits until `cond` holds, for at most two minutes.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Two processes on one folder: while the first writes it, a second run on the same folder (the
/// same command, or another with `--overwrite`) is refused with one line naming the folder and
/// the first one's pid, and changes nothing; the first finishes as if alone, and leaves no lock.
#[test]
fn a_second_run_on_a_folder_in_use_is_refused() {
    let Some(model) = minilm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("many.txt");
    std::fs::write(&input, "A sentence to embed, one of many.\n".repeat(400)).unwrap();
    let out = dir.path().join("acts");
    let run = |layers: &str, extra: &[&str]| {
        let mut cmd = hooks_cmd();
        cmd.args([
            "extract",
            "--model",
            arg(&model),
            "--input",
            arg(&input),
            "--layers",
            layers,
        ])
        .args(["--batch-size", "4", "--window", "8", "--out", arg(&out)])
        .args(extra);
        cmd
    };
    let first = run("encoder.layer.1.output", &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the first window", || {
        hooks::read_manifest(&out).is_ok_and(|m| m.done.samples > 0 && !m.complete)
    });
    let pid = first.id().to_string();
    for extra in [&[][..], &["--overwrite"][..]] {
        let second = run("encoder.layer.2.output", extra).output().unwrap();
        fails_with(&second, &[arg(&out), "is in use by another run", &format!("pid {pid}")]);
    }
    let output = first.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let manifest = hooks::read_manifest(&out).unwrap();
    assert!(manifest.complete);
    assert_eq!(manifest.config["layers"], serde_json::json!(["encoder.layer.1.output"]));
    assert!(!out.join(".lock").exists());
    // Free again: the same command finds it complete.
    ok(&run("encoder.layer.1.output", &[]).output().unwrap());
}

/// A copy of the MiniLM folder whose weights are a link to the original (the rest copied, so it
/// can be edited).
fn editable_copy(model: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(model).unwrap() {
        let entry = entry.unwrap();
        let (from, dest) = (entry.path(), to.join(entry.file_name()));
        if from.is_dir() {
            editable_copy(&from, &dest);
        } else if entry.file_name().to_string_lossy().ends_with(".safetensors") {
            std::os::unix::fs::symlink(&from, &dest).unwrap();
        } else {
            std::fs::copy(&from, &dest).unwrap();
        }
    }
}

/// The tokenizer is part of a resume's identity: a run killed part-way, its model folder's
/// `tokenizer.json` edited (the post-processor that adds `[CLS]` and `[SEP]` removed), and the
/// same command again is refused, naming the file; so is a changed sentence-transformers pooling
/// setting. Unchanged, the same command resumes.
#[test]
fn a_changed_tokenizer_is_named_and_not_resumed() {
    let Some(model) = minilm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("minilm");
    editable_copy(&model, &copy);
    let input = dir.path().join("texts.txt");
    std::fs::write(
        &input,
        "One short text.\nAnother, a little longer than it.\nA third.\n".repeat(4),
    )
    .unwrap();
    let out = dir.path().join("acts");
    let run = || {
        let mut cmd = hooks_cmd();
        cmd.args(["extract", "--model", arg(&copy), "--input", arg(&input)])
            .args([
                "--layers",
                "encoder.layer.1.output",
                "--batch-size",
                "2",
                "--window",
                "4",
            ])
            .args(["--out", arg(&out)]);
        cmd
    };
    let killed = run().env("HOOKS_CRASH_AT", "manifest:1").status().unwrap();
    assert!(!killed.success());
    assert!(!hooks::read_manifest(&out).unwrap().complete);

    let tokenizer = copy.join("tokenizer.json");
    let original = std::fs::read(&tokenizer).unwrap();
    let mut json: serde_json::Value = serde_json::from_slice(&original).unwrap();
    json["post_processor"] = serde_json::Value::Null;
    std::fs::write(&tokenizer, serde_json::to_vec(&json).unwrap()).unwrap();
    fails_with(
        &run().output().unwrap(),
        &[
            "holds an extraction with another `model_sha256.tokenizer.json`",
            "--overwrite",
        ],
    );

    std::fs::write(&tokenizer, &original).unwrap();
    let pooling = copy.join("1_Pooling/config.json");
    if pooling.is_file() {
        let before = std::fs::read(&pooling).unwrap();
        std::fs::write(&pooling, [&before[..], b"\n"].concat()).unwrap();
        fails_with(&run().output().unwrap(), &["`model_sha256.1_Pooling/config.json`"]);
        std::fs::write(&pooling, before).unwrap();
    }
    ok(&run().output().unwrap());
    assert!(hooks::read_manifest(&out).unwrap().complete);
}

/// Ctrl-C while the `.npz` is written (held at the moment before its rename): exit 130, the
/// previous file untouched, no temporary left.
#[test]
fn sigint_during_the_npz_write_leaves_the_previous_file() {
    let Some(model) = minilm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("texts.txt");
    std::fs::write(&input, "One text.\nAnother.\n").unwrap();
    let out = dir.path().join("acts.npz");
    std::fs::write(&out, b"the previous run's file").unwrap();
    let child = hooks_cmd()
        .args([
            "extract",
            "--model",
            arg(&model),
            "--input",
            arg(&input),
            "--out",
            arg(&out),
        ])
        .args(["--layers", "encoder.layer.5.output"])
        .env("HOOKS_PAUSE_AT", "npz-rename")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let temporaries = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".tmp"))
            .count()
    };
    // The temporary exists from the start of the write; the pause holds it 2 s past its sync.
    wait_until("the .npz write", || temporaries() > 0);
    std::thread::sleep(Duration::from_millis(500));
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
    assert_eq!(std::fs::read(&out).unwrap(), b"the previous run's file");
    assert_eq!(temporaries(), 0);
}

/// `--input -` reads standard input (the manifest says so, with its bytes' sha256); `--out x.NPZ`
/// writes `x.NPZ`; a config without `model_type` says so; `--minibatch` at or past the row count
/// is noted; an unknown layer's hint names the command, not the Rust API.
#[test]
fn small_cases_say_what_they_do() {
    let Some(model) = minilm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let text = "A sentence from standard input.\nAnd a second one.\nA third.\nThe fourth and\nfifth lines.\n";
    let input = dir.path().join("texts.txt");
    std::fs::write(&input, text).unwrap();
    let (from_file, from_stdin) = (dir.path().join("file.NPZ"), dir.path().join("stdin"));
    ok(&hooks_cmd()
        .args([
            "extract",
            "--model",
            arg(&model),
            "--input",
            arg(&input),
            "--pool",
            "mean",
        ])
        .args(["--layers", "encoder.layer.4.output,encoder.layer.5.output"])
        .args(["--out", arg(&from_file)])
        .output()
        .unwrap());
    assert!(from_file.is_file(), "`--out x.NPZ` writes x.NPZ");
    assert!(!dir.path().join("file.NPZ.npz").exists());
    let mut child = hooks_cmd()
        .args(["extract", "--model", arg(&model), "--input", "-", "--pool", "mean"])
        .args(["--layers", "encoder.layer.4.output,encoder.layer.5.output"])
        .args(["--out", arg(&from_stdin)])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    drop(child.stdin.take());
    ok(&child.wait_with_output().unwrap());
    let manifest = hooks::read_manifest(&from_stdin).unwrap();
    assert_eq!(manifest.config["input"]["path"], "standard input");
    let sha: String = sha2::Digest::finalize(sha2::Digest::chain_update(
        <sha2::Sha256 as sha2::Digest>::new(),
        text.as_bytes(),
    ))
    .iter()
    .map(|b| format!("{b:02x}"))
    .collect();
    assert_eq!(manifest.config["input"]["sha256"], sha.as_str());
    let npz = hooks::load_activations(&from_file).unwrap();
    let folder = hooks::Dataset::open(&from_stdin).unwrap();
    let ours = folder.array("encoder.layer.5.output").unwrap();
    let theirs = npz.get("encoder.layer.5.output").unwrap();
    assert!(ours.equal(theirs), "standard input and the file give the same rows");

    let bare = dir.path().join("bare");
    std::fs::create_dir(&bare).unwrap();
    std::fs::write(bare.join("config.json"), r#"{"hidden_size": 8}"#).unwrap();
    fails_with(
        &hooks_cmd().args(["layers", "--model", arg(&bare)]).output().unwrap(),
        &["has no `model_type`"],
    );

    let cmp = hooks_cmd()
        .args([
            "compare",
            arg(&from_file),
            "--layers-a",
            "encoder.layer.4.output,encoder.layer.5.output",
        ])
        .args(["--minibatch", "64", "--out", arg(&dir.path().join("m.csv"))])
        .output()
        .unwrap();
    ok(&cmp);
    let err = String::from_utf8_lossy(&cmp.stderr);
    assert!(
        err.contains("note: `--minibatch 64` leaves one minibatch of the"),
        "{err}"
    );

    let err = fails_with(
        &hooks_cmd()
            .args(["extract", "--model", arg(&model), "--layers", "encoder.layr.1.output"])
            .args(["--out", arg(&dir.path().join("x.npz"))])
            .output()
            .unwrap(),
        &["did you mean `encoder.layer.1.output`", "`hooks layers --model DIR`"],
    );
    assert!(!err.contains("layer_names()"), "{err}");
}

/// A folder killed part-way (as a running one stands at each manifest commit) opens in numpy:
/// every `.npy`, memory-mapped, has the rows the manifest counts, equal to the first rows of the
/// finished run's; `hooks inspect DIR` describes it.
#[test]
fn a_killed_folder_reads_in_numpy_as_the_rows_so_far() {
    let Some(model) = minilm() else { return };
    let python = hooks_test_support::python().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("texts.jsonl");
    let lines: Vec<String> = (0..12)
        .map(|i| {
            format!(
                r#"{{"text": "Sentence number {i} {}", "label": {}}}"#,
                "and more ".repeat(i % 5),
                i % 3
            )
        })
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let run = |out: &Path| {
        let mut cmd = hooks_cmd();
        cmd.args([
            "extract",
            "--model",
            arg(&model),
            "--input",
            arg(&input),
            "--keep-keys",
            "label",
        ])
        .args([
            "--layers",
            "encoder.layer.1.output,pooler",
            "--batch-size",
            "2",
            "--window",
            "4",
        ])
        .args(["--out", arg(out)]);
        cmd
    };
    let (whole, killed) = (dir.path().join("whole"), dir.path().join("killed"));
    ok(&run(&whole).output().unwrap());
    let status = run(&killed).env("HOOKS_CRASH_AT", "manifest:2").status().unwrap();
    assert!(!status.success());
    let manifest = hooks::read_manifest(&killed).unwrap();
    // Two windows (of at most 4 samples and 32 token positions each) counted, of 12 samples.
    let done = manifest.done.samples;
    assert!(!manifest.complete && done > 0 && done < 12, "{done}");
    let script = r#"
import json, os, sys
import numpy as np
killed, whole = sys.argv[1], sys.argv[2]
m = json.load(open(os.path.join(killed, "manifest.json")))
samples, tokens = m["done"]["samples"], m["done"]["tokens"]
names = sorted(n for n in os.listdir(whole) if n.endswith(".npy"))
assert names == sorted(n for n in os.listdir(killed) if n.endswith(".npy")), names
for name in names:
    a = np.load(os.path.join(killed, name), mmap_mode="r")
    b = np.load(os.path.join(whole, name))
    rows = m["arrays"][name]["rows"] if name in m["arrays"] else None
    want = {"offsets.npy": samples + 1, "input_ids.npy": tokens}.get(name, tokens if rows == "tokens" else samples)
    assert a.shape[0] == want, (name, a.shape, want)
    assert a.dtype == b.dtype and a.shape[1:] == b.shape[1:], name
    assert np.array_equal(np.asarray(a), b[: a.shape[0]]), name
print(len(names))
"#;
    let out = hooks_test_support::python_command(&python)
        .args(["-c", script, arg(&killed), arg(&whole)])
        .output()
        .unwrap();
    ok(&out);
    let checked: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(checked, 6, "two layers, offsets, input_ids, sample_index, meta.label");

    let inspect = hooks_cmd().args(["inspect", arg(&killed)]).output().unwrap();
    ok(&inspect);
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        text.contains(&format!("in progress (or stopped), {done} of 12 samples")),
        "{text}"
    );
    assert!(text.contains("meta.label.npy"), "{text}");
}

/// Attention patterns go to a dataset folder: each sample's `[heads, T_i, T_i]` of real queries
/// and keys, flattened one after another, equal to the padded `.npz`'s values there (to float
/// rounding: the folder's windows batch samples otherwise) (which says
/// in a note what padding cost); numpy reads a sample with the documented recipe, memory-mapped.
#[test]
fn attention_patterns_in_a_folder_equal_the_npz() {
    let Some(model) = minilm() else { return };
    let python = hooks_test_support::python().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("texts.txt");
    std::fs::write(
        &input,
        "Short.\nA sentence of middling length, with commas.\nTwo words\nThe longest sentence here goes on for a while, past the others, to pad them.\nAnd one more.\n",
    )
    .unwrap();
    let pattern = "encoder.layer.0.attention.self.attn_weights";
    let layers = format!("{pattern},encoder.layer.1.output");
    let run = |out: &Path, extra: &[&str]| {
        let mut cmd = hooks_cmd();
        cmd.args([
            "extract",
            "--model",
            arg(&model),
            "--input",
            arg(&input),
            "--layers",
            &layers,
        ])
        .args(["--batch-size", "2", "--out", arg(out)])
        .args(extra);
        cmd.output().unwrap()
    };
    let (npz, folder) = (dir.path().join("acts.npz"), dir.path().join("acts"));
    let out = run(&npz, &[]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("`{pattern}` holds attention patterns, padded in an .npz")),
        "{err}"
    );
    ok(&run(&folder, &["--window", "2"]));

    let padded = hooks::load_activations(&npz).unwrap();
    let padded = padded.get(pattern).unwrap();
    let dataset = hooks::Dataset::open(&folder).unwrap();
    let info = &dataset.manifest().arrays[&format!("{pattern}.npy")];
    assert_eq!(info.rows, hooks::Rows::Patterns);
    let heads = info.row_shape[0];
    let flat = dataset.array(pattern).unwrap();
    let offsets = Vec::<i64>::try_from(dataset.array("offsets").unwrap()).unwrap();
    let mut start = 0;
    for (i, w) in offsets.windows(2).enumerate() {
        let t = w[1] - w[0];
        let block = flat.narrow(0, start, heads * t * t).view([heads, t, t]);
        let want = padded.get(i64::try_from(i).unwrap()).narrow(1, 0, t).narrow(2, 0, t);
        // Windows batch the folder's samples otherwise than the one .npz run: float rounding.
        let diff = (&block - want).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "sample {i}: {diff}");
        start += heads * t * t;
    }
    assert_eq!(start, flat.size()[0], "no element beyond the last sample's block");

    let script = r#"
import json, os, sys
import numpy as np
folder, npz, name, i = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
heads = json.load(open(os.path.join(folder, "manifest.json")))["arrays"][name + ".npy"]["row_shape"][0]
p = np.load(os.path.join(folder, name + ".npy"), mmap_mode="r")
offsets = np.load(os.path.join(folder, "offsets.npy"))
t = np.diff(offsets)
starts = np.concatenate([[0], np.cumsum(heads * t**2)])
sample = p[starts[i]:starts[i + 1]].reshape(heads, t[i], t[i])
want = np.load(npz)[name][i, :, : t[i], : t[i]]
assert sample.shape == want.shape and np.allclose(sample, want, rtol=0, atol=1e-6)
print("ok")
"#;
    let out = hooks_test_support::python_command(&python)
        .args(["-c", script, arg(&folder), arg(&npz), pattern, "3"])
        .output()
        .unwrap();
    ok(&out);
}

/// A `.npy` header of `descr` and `shape` (numpy's format 1.0, padded to 64 bytes).
fn npy_bytes(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&u16::try_from(header.len()).unwrap().to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

/// Files whose headers lie are refused with one line before anything is allocated or read past
/// the data: a steering vector cut short (its header says 384 floats, it holds 10), a negative
/// shape, an `.npz` whose array claims 10⁹ rows, a unicode width of 2⁴⁰; and a finished folder
/// damaged since (a file cut short, a manifest edited) is refused by the same command, never
/// "nothing to do".
#[test]
fn lying_headers_and_damaged_folders_are_refused() {
    let Some(model) = minilm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let floats: Vec<u8> = (0..10).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let input = dir.path().join("texts.txt");
    std::fs::write(&input, "One text.\nAnother one.\nA third.\n").unwrap();
    let steer = |file: &Path| {
        hooks_cmd()
            .args(["extract", "--model", arg(&model), "--input", arg(&input)])
            .args([
                "--layers",
                "encoder.layer.1.output",
                "--out",
                arg(&dir.path().join("s.npz")),
            ])
            .arg("--steer")
            .arg(format!("encoder.layer.0.output={}@1", file.display()))
            .output()
            .unwrap()
    };
    let cut = write(dir.path(), "cut.npy", &npy_bytes("<f4", "(384,)", &floats));
    fails_with(
        &steer(&cut),
        &[
            "cut.npy",
            "its header describes 1536 bytes of data, but the file holds 40",
        ],
    );
    let negative = write(dir.path(), "neg.npy", &npy_bytes("<f4", "(-5,)", &floats));
    fails_with(&steer(&negative), &["neg.npy", "its shape holds -5"]);
    assert!(!dir.path().join("s.npz").exists());

    for (name, descr, shape) in [
        ("rows.npz", "<f4", "(1000000000, 384)"),
        ("wide.npz", "<U1099511627776", "(2,)"),
    ] {
        let npz = dir.path().join(name);
        let file = std::fs::File::create(&npz).unwrap();
        let mut zip = zip::ZipWriter::new(file);
        zip.start_file("a.npy", zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut zip, &npy_bytes(descr, shape, &floats)).unwrap();
        zip.finish().unwrap();
        fails_with(
            &hooks_cmd().args(["inspect", arg(&npz)]).output().unwrap(),
            &[name, "array `a.npy`"],
        );
    }

    let out = dir.path().join("acts");
    let run = || {
        hooks_cmd()
            .args(["extract", "--model", arg(&model), "--input", arg(&input)])
            .args(["--layers", "encoder.layer.1.output", "--out", arg(&out)])
            .output()
            .unwrap()
    };
    ok(&run());
    let layer = out.join("encoder.layer.1.output.npy");
    let bytes = std::fs::read(&layer).unwrap();
    std::fs::write(&layer, &bytes[..bytes.len() - 100]).unwrap();
    fails_with(
        &run(),
        &[
            "encoder.layer.1.output.npy",
            "the folder was damaged after it was written",
        ],
    );
    std::fs::write(&layer, &bytes).unwrap();
    let manifest_path = out.join("manifest.json");
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    json["done"]["samples"] = serde_json::json!(5);
    std::fs::write(&manifest_path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    fails_with(&run(), &["manifest.json", "it was changed after the run wrote it"]);
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}
