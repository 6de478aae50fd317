//! `--sae`, feature interventions and `hooks features`, run as a user runs them, against
//! SAELens' own `SAE` class (for SAEs SAELens saved) and numpy from SAELens' formulas (for the
//! Gemma Scope layouts, written by hand), on a random Llama whose layer activations come from
//! transformers hooks on each sample alone (`tests/py/sae_check.py`).
#![allow(clippy::unwrap_used)] // a failing test should fail loudly

mod common;

use std::path::{Path, PathBuf};

use common::hooks_cmd;
use serde_json::Value;

const LAYER: &str = "model.layers.0";

/// Every SAE `sae_check.py build` writes: SAELens' four architectures with `b_dec` subtracted
/// from the input or not, a JumpReLU threshold stored as its log, the older flat config, and
/// both Gemma Scope layouts.
const SAES: [&str; 12] = [
    "standard",
    "standard-nob",
    "jumprelu",
    "jumprelu-nob",
    "jumprelu-log",
    "topk",
    "topk-nob",
    "gated",
    "gated-nob",
    "flat",
    "gemma-scope",
    "gemma-scope-2",
];

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/sae_check.py")
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The Python steps' JSON lines.
fn check(python: &Path, steps: &[&str]) -> Vec<Value> {
    let out = hooks_test_support::run_python(python, &script(), steps);
    out.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn hooks_ok(args: &[&str]) -> String {
    let run = hooks_cmd(args);
    assert!(
        run.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    String::from_utf8_lossy(&run.stderr).into_owned()
}

/// The one line `hooks` prints on stderr for a refused command line.
fn refused(args: &[&str]) -> String {
    let run = hooks_cmd(args);
    assert!(!run.status.success(), "{args:?} was accepted");
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    stderr
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    prompts: PathBuf,
    python: PathBuf,
}

impl Fixture {
    fn new() -> Option<Fixture> {
        let python = hooks_test_support::python()?;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let prompts = root.join("prompts.txt");
        // A long sentence among short ones, so that batches are padded.
        std::fs::write(
            &prompts,
            "The cat sat on the mat.\nWater boils at a lower temperature on a mountaintop, where the air is thin.\nWhy?\nA long sentence about rivers and the sea and the mountains and the sky above them all, and more.\n",
        )
        .unwrap();
        let _ = check(&python, &["build", arg(&root), arg(&prompts)]);
        Some(Fixture {
            _dir: dir,
            root,
            prompts,
            python,
        })
    }

    fn model(&self) -> String {
        self.root.join("model").to_str().unwrap().to_owned()
    }

    fn sae(&self, name: &str) -> String {
        format!("{LAYER}={}", self.root.join("saes").join(name).display())
    }

    fn out(&self, name: &str) -> String {
        self.root.join(name).to_str().unwrap().to_owned()
    }

    /// `hooks extract` over the prompts with `sae` attached, in batches of 3 (padded).
    fn extract(&self, sae: &str, layers: &str, extra: &[&str], out: &str) {
        let (model, sae, prompts) = (self.model(), self.sae(sae), self.prompts.to_str().unwrap().to_owned());
        let mut args = vec![
            "extract",
            "--model",
            &model,
            "--input",
            &prompts,
            "--sae",
            &sae,
            "--layers",
            layers,
            "--out",
            out,
            "--batch-size",
            "3",
        ];
        args.extend(extra);
        hooks_ok(&args);
    }
}

/// Every capture point of every format and architecture, `apply_b_dec_to_input` both ways,
/// equals SAELens (or numpy from its formulas) within 1e-4, and each SAE fires on some but not
/// all of the (token, feature) pairs.
#[test]
fn every_point_of_every_format_matches_saelens() {
    let Some(f) = Fixture::new() else { return };
    let mut steps: Vec<String> = Vec::new();
    for sae in SAES {
        let out = f.out(&format!("points-{sae}.npz"));
        f.extract(sae, &format!("{LAYER}.sae.*"), &[], &out);
        steps.extend([
            "points".into(),
            arg(&f.root).into(),
            sae.into(),
            arg(&f.prompts).into(),
            out,
            "+".into(),
        ]);
    }
    // Without the error term (read-only): the output is the reconstruction, and the error is
    // still captured, as with it.
    let no_error = f.out("points-no-error.npz");
    f.extract("jumprelu", &format!("{LAYER}.sae.*"), &["--sae-no-error"], &no_error);
    let (plain, no_error) = (
        hooks::load_numeric(f.out("points-jumprelu.npz")).unwrap(),
        hooks::load_numeric(&no_error).unwrap(),
    );
    let get = |a: &hooks::Activations, point: &str| a.get(&format!("{LAYER}.sae.{point}")).unwrap().shallow_clone();
    assert!(get(&no_error, "hook_sae_output").equal(&get(&no_error, "hook_sae_recons")));
    assert!(get(&no_error, "hook_sae_error").equal(&get(&plain, "hook_sae_error")));
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
    let results = check(&f.python, &steps);
    assert_eq!(results.len(), SAES.len());
    for (sae, result) in SAES.iter().zip(&results) {
        let worst = result["worst"].as_object().unwrap();
        assert_eq!(worst.len(), 6, "{sae}: {result}");
        for (point, diff) in worst {
            assert!(diff.as_f64().unwrap() < 1e-4, "{sae} {point}: {result}");
        }
        let fired = result["fired"].as_f64().unwrap();
        assert!(fired > 0.02 && fired < 0.5, "{sae}: fired {fired}");
    }
}

/// Read-only leaves the model unchanged, bit for bit against the same run without the SAE;
/// splicing with the error term changes it only by
/// rounding; without it, and with a feature ablated or steered, downstream layers equal
/// transformers with the SAE (SAELens' forward, or numpy) spliced in by a forward hook, and
/// the edit moved them.
#[test]
fn splice_ablation_and_steering_match_the_hooked_reference() {
    let Some(f) = Fixture::new() else { return };
    let downstream = "model.layers.1,model.norm";
    let bare = f.out("bare.npz");
    let (model, prompts) = (f.model(), f.prompts.to_str().unwrap().to_owned());
    hooks_ok(&[
        "extract",
        "--model",
        &model,
        "--input",
        &prompts,
        "--layers",
        downstream,
        "--out",
        &bare,
        "--batch-size",
        "3",
    ]);
    let bare = hooks::load_numeric(&bare).unwrap();
    let mut steps: Vec<String> = Vec::new();
    let mut runs = Vec::new();
    for sae in ["jumprelu", "gemma-scope", "topk-nob"] {
        let cases: [(&str, &[&str], &[&str]); 5] = [
            ("none", &[], &[]),
            ("splice", &["--sae-splice"], &[]),
            ("splice-no-error", &["--sae-splice", "--sae-no-error"], &[]),
            ("ablate", &["--ablate-feature", "model.layers.0.sae:5"], &["5"]),
            ("steer", &["--steer-feature", "model.layers.0.sae:7@3.5"], &["7", "3.5"]),
        ];
        for (mode, flags, extra) in cases {
            let out = f.out(&format!("edited-{sae}-{mode}.npz"));
            f.extract(sae, downstream, flags, &out);
            if mode == "none" {
                let ours = hooks::load_numeric(&out).unwrap();
                for layer in ["model.layers.1", "model.norm"] {
                    assert!(
                        ours.get(layer).unwrap().equal(bare.get(layer).unwrap()),
                        "{sae}: read-only changed `{layer}`"
                    );
                }
            }
            steps.extend(["edited", arg(&f.root), sae, arg(&f.prompts), &out, mode].map(String::from));
            steps.extend(extra.iter().map(|e| (*e).to_owned()));
            steps.push("+".into());
            runs.push((sae, mode));
        }
    }
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
    let results = check(&f.python, &steps);
    assert_eq!(results.len(), runs.len());
    for ((sae, mode), result) in runs.iter().zip(&results) {
        for (layer, diff) in result["worst"].as_object().unwrap() {
            assert!(diff.as_f64().unwrap() < 1e-4, "{sae} {mode} {layer}: {result}");
        }
        let moved = result["moved"].as_f64().unwrap();
        match *mode {
            // (transformers runs each sample alone, and ours in padded batches: rounding.)
            "none" | "splice" => assert!(moved < 1e-4, "{sae} {mode}: {result}"),
            // The edits are not vacuous: the features fire, and the model moved.
            _ => assert!(moved > 1e-2, "{sae} {mode} changed nothing: {result}"),
        }
    }
}

/// `hooks features` equals numpy over the dense reference activations: frequency, max, mean when
/// active (NaN where a feature never fires), the top-K examples with their samples and
/// positions; in batches of 2 and with K past some features' firing counts.
#[test]
fn feature_statistics_match_numpy() {
    let Some(f) = Fixture::new() else { return };
    let cases = [("jumprelu", "5"), ("gemma-scope", "40"), ("topk", "3")];
    let mut steps: Vec<String> = Vec::new();
    for (sae, k) in cases {
        let out = f.out(&format!("stats-{sae}.npz"));
        let (model, spec, prompts) = (f.model(), f.sae(sae), f.prompts.to_str().unwrap().to_owned());
        hooks_ok(&[
            "features",
            "--model",
            &model,
            "--input",
            &prompts,
            "--sae",
            &spec,
            "--out",
            &out,
            "--top-examples",
            k,
            "--batch-size",
            "2",
        ]);
        steps.extend(["features", arg(&f.root), sae, arg(&f.prompts), &out, k, "+"].map(String::from));
    }
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
    let results = check(&f.python, &steps);
    assert_eq!(results.len(), cases.len());
    for ((sae, _), result) in cases.iter().zip(&results) {
        for (name, diff) in result["worst"].as_object().unwrap() {
            assert!(diff.as_f64().unwrap() < 1e-4, "{sae} {name}: {result}");
        }
        assert_eq!(result["nan_same"], true, "{sae}: {result}");
        assert_eq!(result["top_ok"], true, "{sae}: {result}");
        assert_eq!(result["tokens"], result["expected_tokens"], "{sae}: {result}");
    }
}

/// A steered feature composes with `generate`: the text changes, and the captured
/// `hook_sae_acts_post` holds the feature raised by the steering at every real position.
#[test]
fn a_steered_feature_changes_what_is_generated() {
    let Some(f) = Fixture::new() else { return };
    let prompts = f.out("prompts.jsonl");
    std::fs::write(
        &prompts,
        "{\"text\": \"The cat sat on the mat.\"}\n{\"text\": \"Why?\"}\n",
    )
    .unwrap();
    let (model, spec) = (f.model(), f.sae("jumprelu"));
    let (plain, steered, acts) = (f.out("plain.jsonl"), f.out("steered.jsonl"), f.out("gen.npz"));
    let base = [
        "generate",
        "--model",
        &model,
        "--input",
        &prompts,
        "--max-new-tokens",
        "6",
        "--sae",
        &spec,
    ];
    let mut args = base.to_vec();
    args.extend(["--out", &plain]);
    hooks_ok(&args);
    let mut args = base.to_vec();
    args.extend([
        "--out",
        &steered,
        "--steer-feature",
        "model.layers.0.sae:7@40",
        "--layers",
        "model.layers.0.sae.hook_sae_acts_post",
        "--activations",
        &acts,
    ]);
    hooks_ok(&args);
    let ids = |path: &str| -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["output_ids"].clone())
            .collect()
    };
    assert_ne!(ids(&plain), ids(&steered));
    let code = format!(
        "import numpy as np; a = np.load({acts:?}); x = a['model.layers.0.sae.hook_sae_acts_post'][..., 7]; m = a['attention_mask'] == 1; print(float(x[m].min()))"
    );
    let out = hooks_test_support::python_command(&f.python)
        .args(["-c", &code])
        .output()
        .unwrap();
    let least: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(least >= 40.0, "the steered feature is {least} somewhere");
}

/// Bad SAEs and bad flags are one-line errors naming the problem and the fix, and write nothing.
#[test]
fn bad_saes_and_flags_are_refused_in_one_line() {
    let Some(f) = Fixture::new() else { return };
    let (model, prompts) = (f.model(), f.prompts.to_str().unwrap().to_owned());
    let saes = f.root.join("saes");
    let out = f.out("refused.npz");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "extract",
            "--model",
            &model,
            "--input",
            &prompts,
            "--out",
            &out,
            "--layers",
            "model.norm",
        ];
        args.extend(extra);
        refused(&args)
    };
    // Another architecture, named.
    let odd = saes.join("odd");
    std::fs::create_dir(&odd).unwrap();
    std::fs::copy(
        saes.join("standard/sae_weights.safetensors"),
        odd.join("sae_weights.safetensors"),
    )
    .unwrap();
    let cfg = std::fs::read_to_string(saes.join("standard/cfg.json")).unwrap();
    std::fs::write(
        odd.join("cfg.json"),
        cfg.replace("\"standard\"", "\"matryoshka_batchtopk\""),
    )
    .unwrap();
    let e = run(&["--sae", &format!("{LAYER}={}", odd.display())]);
    assert!(e.contains("`matryoshka_batchtopk` is not supported"), "{e}");
    // Normalised activations.
    std::fs::write(odd.join("cfg.json"), cfg.replace("\"none\"", "\"layer_norm\"")).unwrap();
    let e = run(&["--sae", &format!("{LAYER}={}", odd.display())]);
    assert!(e.contains("normalize_activations"), "{e}");
    // d_in against the layer's width, both named.
    let e = run(&[
        "--sae",
        &format!("model.layers.0.mlp.up_proj={}", saes.join("jumprelu").display()),
    ]);
    assert!(e.contains("reads 32 features") && e.contains("gives 64"), "{e}");
    // Not an SAE.
    let e = run(&["--sae", &format!("{LAYER}={}", f.prompts.display())]);
    assert!(e.contains("is a file"), "{e}");
    // A feature past d_sae; a feature of a layer with no SAE; splice without an SAE.
    let e = run(&["--sae", &f.sae("jumprelu"), "--ablate-feature", "model.layers.0.sae:64"]);
    assert!(e.contains("has 64 features"), "{e}");
    let e = run(&["--ablate-feature", "model.layers.0.sae:3"]);
    assert!(e.contains("no SAE is attached to `model.layers.0`"), "{e}");
    let e = run(&["--sae-splice"]);
    assert!(e.contains("--sae LAYER=PATH"), "{e}");
    assert!(!Path::new(&out).exists());
    // Globs, where one layer is meant.
    let e = run(&["--sae", &format!("model.layers.*={}", saes.join("jumprelu").display())]);
    assert!(e.contains("not a pattern"), "{e}");
    let e = run(&["--sae", &f.sae("jumprelu"), "--ablate-feature", "model.layers.*.sae:3"]);
    assert!(e.contains("is a pattern"), "{e}");
    // A file of an SAE folder stands for the folder; the block after the SAE's layer reads the
    // same tensor at its input, so no note.
    let cfg = format!("model.layers.1:input={}", saes.join("jumprelu/cfg.json").display());
    let stderr = hooks_ok(&[
        "extract",
        "--model",
        &model,
        "--input",
        &prompts,
        "--out",
        &out,
        "--layers",
        "model.norm",
        "--sae",
        &cfg,
    ]);
    assert!(!stderr.contains("trained on"), "{stderr}");
    // A layer other than the one the config names: a note, and the run goes on.
    let other = format!("model.layers.1={}", saes.join("jumprelu").display());
    let stderr = hooks_ok(&[
        "extract",
        "--model",
        &model,
        "--input",
        &prompts,
        "--out",
        &out,
        "--layers",
        "model.norm",
        "--sae",
        &other,
    ]);
    assert!(
        stderr.contains("trained on `blocks.0.hook_resid_post`, which is `model.layers.0` here"),
        "{stderr}"
    );
    // A Gemma Scope release path naming a block this model lacks.
    let release = f.root.join("gemma-scope-2b-pt-res/layer_5/width_16k");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::copy(saes.join("gemma-scope/params.npz"), release.join("params.npz")).unwrap();
    let other = format!("{LAYER}={}", release.display());
    let stderr = hooks_ok(&[
        "extract",
        "--model",
        &model,
        "--input",
        &prompts,
        "--out",
        &out,
        "--layers",
        "model.norm",
        "--sae",
        &other,
    ]);
    assert!(
        stderr.contains("`model.layers.5` in this architecture, which this model does not have"),
        "{stderr}"
    );
}

/// A dataset folder writes `hook_sae_acts_post` sparse: `NAME.indptr.npy` (int64),
/// `NAME.indices.npy` (int32) and `NAME.data.npy` (float32), which scipy's `csr_matrix` reads
/// equal to the dense `.npz` of the same run (real tokens unpooled, samples pooled); the library
/// reads them back dense; shards merge byte for byte into the unsharded folder.
#[test]
fn folders_write_sae_features_as_csr() {
    let Some(f) = Fixture::new() else { return };
    let point = "model.layers.0.sae.hook_sae_acts_post";
    let layers = format!("{point},model.layers.0.sae.hook_sae_recons");
    let mut steps: Vec<String> = Vec::new();
    for pool in ["none", "mean"] {
        let (dense, folder) = (f.out(&format!("dense-{pool}.npz")), f.out(&format!("folder-{pool}")));
        f.extract("jumprelu", &layers, &["--pool", pool], &dense);
        // (One window, so that the batches, and so the rounding, are the .npz run's.)
        f.extract("jumprelu", &layers, &["--pool", pool], &folder);
        let names: Vec<String> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n == &format!("{point}.npy")), "{names:?}");
        let dataset = hooks::Dataset::open(&folder).unwrap();
        assert!(
            dataset.layers().any(|l| l == point),
            "{:?}",
            dataset.layers().collect::<Vec<_>>()
        );
        let ours = hooks::load_numeric(&dense).unwrap();
        let mut rows = ours.get(point).unwrap().shallow_clone();
        if pool == "none" {
            let mask = ours.get("attention_mask").unwrap().to_kind(tch::Kind::Bool);
            rows = rows.index(&[Some(mask)]);
        }
        assert!(dataset.array(point).unwrap().equal(&rows), "{pool}: read back dense");
        let reader = dataset.reader(point).unwrap();
        assert!(
            reader.read_rows(1, 2).unwrap().equal(&rows.narrow(0, 1, 2)),
            "{pool}: rows 1..3"
        );
        steps.extend(["csr", &folder, &dense, point, "+"].map(String::from));
    }
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
    for result in check(&f.python, &steps) {
        assert_eq!(result["equal"], true, "{result}");
        assert_eq!(
            result["dtypes"],
            serde_json::json!(["int64", "int32", "float32"]),
            "{result}"
        );
        assert_eq!(result["zeros_stored"], 0, "{result}");
        assert!(result["nnz"].as_i64().unwrap() > 0, "{result}");
    }
    // Shards, merged, are the whole run's folder byte for byte.
    let whole = f.out("whole");
    f.extract("jumprelu", &layers, &["--pool", "none", "--window", "2"], &whole);
    let parts: Vec<String> = (0..2).map(|k| f.out(&format!("shard-{k}"))).collect();
    for (k, part) in parts.iter().enumerate() {
        let shard = format!("{k}/2");
        f.extract(
            "jumprelu",
            &layers,
            &["--pool", "none", "--window", "2", "--shard", &shard],
            part,
        );
    }
    let merged = f.out("merged");
    hooks_ok(&["merge", &merged, &parts[0], &parts[1]]);
    // A run killed after a window's files, before its manifest, resumes to the same bytes.
    let resumed = f.out("resumed");
    let (model, spec, prompts) = (f.model(), f.sae("jumprelu"), f.prompts.to_str().unwrap().to_owned());
    let args = [
        "extract",
        "--model",
        &model,
        "--input",
        &prompts,
        "--sae",
        &spec,
        "--layers",
        &layers,
        "--out",
        &resumed,
        "--batch-size",
        "3",
        "--pool",
        "none",
        "--window",
        "2",
    ];
    let killed = std::process::Command::new(env!("CARGO_BIN_EXE_hooks"))
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .env("HOOKS_CRASH_AT", "data:2")
        .output()
        .unwrap();
    assert!(!killed.status.success());
    hooks_ok(&args);
    for other in [&merged, &resumed] {
        for entry in std::fs::read_dir(&whole).unwrap() {
            let name = entry.unwrap().file_name();
            if name.to_string_lossy().ends_with(".npy") {
                let (a, b) = (Path::new(&whole).join(&name), Path::new(other).join(&name));
                assert_eq!(
                    std::fs::read(&a).unwrap(),
                    std::fs::read(&b).unwrap(),
                    "{}",
                    b.display()
                );
            }
        }
    }
}
