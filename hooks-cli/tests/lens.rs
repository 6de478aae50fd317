//! `hooks lens`, run as a user runs it, against the logit lens computed by transformers itself:
//! forward hooks on the embedding and each block, then the model's own final-norm module and
//! `lm_head`, each sample alone (`tests/py/lens_reference.py`).
#![allow(clippy::unwrap_used)] // a failing test should fail loudly

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::hooks_cmd;
use serde_json::Value;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Token-id lines of `lengths` over a vocabulary of `vocab` ids, and one target line per input:
/// a single id for odd lengths, a list of one id per token for even ones.
fn inputs(dir: &Path, lengths: &[usize], vocab: usize) -> (PathBuf, PathBuf) {
    let (mut input, mut targets) = (String::new(), String::new());
    for (i, &len) in lengths.iter().enumerate() {
        let ids: Vec<usize> = (0..len).map(|t| (i * 37 + t * 11 + 5) % vocab).collect();
        input.push_str(&format!("{}\n", serde_json::json!({ "input_ids": ids })));
        if len % 2 == 1 {
            targets.push_str(&format!("{}\n", (i * 13 + 1) % vocab));
        } else {
            let per: Vec<usize> = (0..len).map(|t| (i + t * 3) % vocab).collect();
            targets.push_str(&format!("{}\n", serde_json::json!(per)));
        }
    }
    let (input_path, targets_path) = (dir.join("ids.jsonl"), dir.join("targets.txt"));
    std::fs::write(&input_path, input).unwrap();
    std::fs::write(&targets_path, targets).unwrap();
    (input_path, targets_path)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The default layers of a causal LM: the residual entering the first block, then each block's
/// output (`reference.py`'s models have 2 blocks).
fn default_layers(model_type: &str, layers: usize) -> Vec<String> {
    let (first, block) = match model_type {
        "gpt2" => ("transformer.h.0:input", "transformer.h"),
        "gpt_neox" => ("gpt_neox.embed_in", "gpt_neox.layers"),
        _ => ("model.embed_tokens", "model.layers"),
    };
    let blocks = (0..layers).map(|i| format!("{block}.{i}"));
    std::iter::once(first.to_owned()).chain(blocks).collect()
}

/// Every supported `model_type` (its random configuration in `reference.py`, as the parity tests
/// build it) and a few variants, small, with prompts of mixed lengths batched together: the lens
/// equals transformers' on each sample alone, and its last layer is the model's own next-token
/// distribution. The model types without an unembedding (BERT, and GPT-2 saved as `GPT2Model`)
/// are refused; GPT-2's variants saved as `GPT2LMHeadModel` are read.
#[test]
fn lens_matches_transformers_on_every_causal_architecture() {
    let Some(python) = hooks_test_support::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Besides each model type: Llama tied with biases, GPT-2 with its head, tied and untied.
    let variants = ["llama-tied", "gpt2-lmhead", "gpt2-lmhead-untied"];
    let archs: Vec<&str> = hooks_models::SUPPORTED_MODEL_TYPES
        .iter()
        .copied()
        .chain(variants)
        .collect();
    let mut build = Vec::new();
    for arch in &archs {
        let folder = dir.path().join(arch);
        build.extend([
            "+".to_owned(),
            "build".to_owned(),
            (*arch).to_owned(),
            arg(&folder).to_owned(),
        ]);
    }
    let build: Vec<&str> = build.iter().map(String::as_str).collect();
    let _ = hooks_test_support::run_python(&python, &script("../hooks-models/tests/py/reference.py"), &build);
    // Batches of 4 mix lengths 1 to 23 (padding past each).
    let (input, targets) = inputs(dir.path(), &[5, 12, 1, 9, 23, 2, 7, 16, 3], 100);
    let mut compare = Vec::new();
    let mut read = Vec::new();
    for arch in &archs {
        let model = dir.path().join(arch);
        let out = dir.path().join(format!("{arch}.npz"));
        let plot = dir.path().join(format!("{arch}.png"));
        let run = hooks_cmd(&[
            "lens",
            "--model",
            arg(&model),
            "--input",
            arg(&input),
            "--out",
            arg(&out),
            "--top-k",
            "5",
            "--targets",
            arg(&targets),
            "--batch-size",
            "4",
            "--plot",
            arg(&plot),
            "--plot-sample",
            "4",
        ]);
        if ["bert", "gpt2"].contains(arch) {
            let err = stderr(&run);
            assert!(
                !run.status.success() && err.contains("has no unembedding"),
                "{arch}: {err}"
            );
            assert!(!out.exists() && !plot.exists(), "{arch}: a refused run wrote a file");
            continue;
        }
        assert!(run.status.success(), "{arch}: {}", stderr(&run));
        assert!(std::fs::metadata(&plot).unwrap().len() > 1000, "{arch}: no figure");
        read.push(*arch);
        compare.extend([
            "+".to_owned(),
            "compare".to_owned(),
            arg(&model).to_owned(),
            arg(&input).to_owned(),
            arg(&out).to_owned(),
            "5".to_owned(),
            "-".to_owned(),
            arg(&targets).to_owned(),
        ]);
    }
    assert!(read.len() >= 9, "every causal architecture and variant: {read:?}");
    let compare: Vec<&str> = compare.iter().map(String::as_str).collect();
    let reports = hooks_test_support::run_python(&python, &script("tests/py/lens_reference.py"), &compare);
    let reports: Vec<Value> = reports.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(reports.len(), read.len());
    for (arch, r) in read.iter().zip(&reports) {
        let model_type = if arch.starts_with("gpt2") {
            "gpt2"
        } else {
            arch.split('-').next().unwrap()
        };
        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(arch).join("config.json")).unwrap()).unwrap();
        let layers = config["num_hidden_layers"]
            .as_u64()
            .or_else(|| config["n_layer"].as_u64())
            .unwrap();
        assert_eq!(
            r["layers"],
            serde_json::json!(default_layers(model_type, usize::try_from(layers).unwrap())),
            "{arch}: the default layers"
        );
        assert!(r["layers_dtype"].as_str().unwrap().starts_with("<U"), "{arch}: {r}");
        let dtypes = &r["dtypes"];
        for (name, dtype) in [
            ("input_ids", "<i8"),
            ("attention_mask", "<i8"),
            ("top_ids", "<i8"),
            ("top_probs", "<f4"),
            ("entropy", "<f4"),
            ("kl_to_final", "<f4"),
            ("target_prob", "<f4"),
            ("target_rank", "<i8"),
        ] {
            assert_eq!(dtypes[name], dtype, "{arch}: {name}");
        }
        // The embedding and each block.
        let read = u64::try_from(default_layers(model_type, usize::try_from(layers).unwrap()).len()).unwrap();
        assert_eq!(r["shapes"]["top_ids"], serde_json::json!([9, read, 23, 5]), "{arch}");
        assert_eq!(r["shapes"]["entropy"], serde_json::json!([9, read, 23]), "{arch}");
        assert_eq!(r["input_ids_equal"], true, "{arch}: {r}");
        let count = |key: &str| r[key].as_u64().unwrap();
        let value = |key: &str| r[key].as_f64().unwrap();
        // Every real position of every layer read: 78 tokens each.
        assert_eq!(
            count("top_ids_checked") + count("top_ids_tied_skipped"),
            78 * read,
            "{arch}"
        );
        assert!(
            count("top_ids_tied_skipped") <= 3,
            "{arch}: too many ties to check: {r}"
        );
        assert_eq!(count("top_ids_mismatch"), 0, "{arch}: {r}");
        for key in [
            "max_top_probs_diff",
            "max_entropy_diff",
            "max_kl_diff",
            "max_target_prob_diff",
        ] {
            assert!(value(key) <= 1e-4, "{arch}: {key} {r}");
        }
        assert_eq!(count("target_rank_mismatch"), 0, "{arch}: {r}");
        assert_eq!(count("nonzero_past_length"), 0, "{arch}: values past a sample's length");
        // The last block read through the lens is the model's own next-token distribution.
        assert!(value("max_last_layer_vs_model") <= 1e-5, "{arch}: {r}");
        assert!(value("max_last_layer_kl") <= 1e-5, "{arch}: {r}");
        // And the first read is not: the comparison above is not vacuous.
        assert!(value("min_kl_first_layer") > 1e-3, "{arch}: {r}");
    }
}

/// `--layers` takes globs and names; what it reads is listed in the file, in the order asked.
#[test]
fn chosen_layers_are_read_and_named_in_order() {
    let Some(python) = hooks_test_support::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("qwen3");
    let _ = hooks_test_support::run_python(
        &python,
        &script("../hooks-models/tests/py/reference.py"),
        &["build", "qwen3", arg(&model)],
    );
    let (input, _) = inputs(dir.path(), &[4, 6, 1], 100);
    let out = dir.path().join("lens.npz");
    let run = hooks_cmd(&[
        "lens",
        "--model",
        arg(&model),
        "--input",
        arg(&input),
        "--out",
        arg(&out),
        "--layers",
        "model.layers.1, model.norm, model.layers.1:input",
        "--top-k",
        "100",
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    // `hooks inspect` shows the names as numpy does.
    let inspect = hooks_cmd(&["inspect", arg(&out)]);
    let listing = String::from_utf8_lossy(&inspect.stdout);
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("layers") && l.contains("<U20") && l.contains("[3]")),
        "{listing}"
    );
    let layers = "model.layers.1,model.norm,model.layers.1:input";
    let report = hooks_test_support::run_python(
        &python,
        &script("tests/py/lens_reference.py"),
        &["compare", arg(&model), arg(&input), arg(&out), "100", layers],
    );
    let r: Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(
        r["layers"],
        serde_json::json!(["model.layers.1", "model.norm", "model.layers.1:input"])
    );
    assert_eq!(r["shapes"]["top_probs"], serde_json::json!([3, 3, 6, 100]));
    // The final norm's output is the model's own distribution (read through the head alone).
    assert!(r["max_kl_final_norm"].as_f64().unwrap() < 1e-5, "{r}");
    // The whole vocabulary, sorted: the probabilities of every token, each within 1e-4.
    assert!(r["max_top_probs_diff"].as_f64().unwrap() <= 1e-4, "{r}");
    assert!(r["max_entropy_diff"].as_f64().unwrap() <= 1e-4, "{r}");
}

/// Memory grows with K, not with the vocabulary: a 50,000-token vocabulary and 12 layers on
/// 16 × 64 tokens, where `[N, L, T, vocab]` in float32 would be 2.66 GB, peaks well under 1 GiB
/// (about 0.2 GB above `hooks extract` of the same model here).
#[test]
fn a_large_vocabulary_never_materialises_every_layers_logits() {
    let Some(python) = hooks_test_support::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("wide");
    let _ = hooks_test_support::run_python(
        &python,
        &script("tests/py/lens_reference.py"),
        &["wide-vocab", arg(&model)],
    );
    let input = dir.path().join("wide.jsonl");
    let lines: String = (0..16)
        .map(|i| {
            let ids: Vec<usize> = (0..64).map(|t| (i * 7919 + t * 104_729) % 50_000).collect();
            format!("{}\n", serde_json::json!({ "input_ids": ids }))
        })
        .collect();
    std::fs::write(&input, lines).unwrap();
    let dense: u64 = 16 * 13 * 64 * 50_000 * 4;
    assert!(dense > 2_000_000_000);
    let out = dir.path().join("lens.npz");
    let peak = hooks_test_support::run_python(
        &python,
        &hooks_test_support::workspace_root().join("hooks-bench/py/peak_rss.py"),
        &[
            env!("CARGO_BIN_EXE_hooks"),
            "lens",
            "--model",
            arg(&model),
            "--input",
            arg(&input),
            "--out",
            arg(&out),
        ],
    );
    let peak: Value = serde_json::from_str(peak.trim()).unwrap();
    assert_eq!(peak["status"], 0, "{peak}");
    let rss = peak["peak_rss"].as_u64().unwrap();
    assert!(rss < 1 << 30, "peak RSS {rss} bytes; [N, L, T, vocab] would be {dense}");
    assert!(out.is_file());
}

/// Asserts the command failed with one line on stderr containing `needle`, and wrote nothing.
fn refused(args: &[&str], needle: &str, outputs: &[&Path]) {
    let run = hooks_cmd(args);
    let err = stderr(&run);
    assert!(!run.status.success(), "{args:?} succeeded");
    assert_eq!(err.lines().count(), 1, "{args:?}: want one line, got:\n{err}");
    assert!(err.starts_with("error: ") && err.contains(needle), "{args:?}: {err}");
    for out in outputs {
        assert!(!out.exists(), "{args:?} left `{}`", out.display());
    }
}

/// Each wrong input gets one line and no file: no unembedding (BERT, a base-model folder), a
/// `--top-k` of 0 or past the vocabulary, targets that do not fit, a layer that is not a
/// residual, a bad output path.
#[test]
fn wrong_inputs_get_one_line_and_no_file() {
    let Some(python) = hooks_test_support::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _ = hooks_test_support::run_python(
        &python,
        &script("../hooks-models/tests/py/reference.py"),
        &[
            "build",
            "llama",
            arg(&d.join("llama")),
            "+",
            "build",
            "bert",
            arg(&d.join("bert")),
        ],
    );
    let _ = hooks_test_support::run_python(
        &python,
        &script("tests/py/lens_reference.py"),
        &["base-model", arg(&d.join("llama")), arg(&d.join("base"))],
    );
    let (input, targets) = inputs(d, &[3, 4], 100);
    let out = d.join("lens.npz");
    let plot = d.join("lens.png");
    let write = |name: &str, text: &str| {
        let path = d.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let too_few = write("too_few.txt", "5\n");
    let wrong_length = write("wrong_length.txt", "5\n[1, 2, 3]\n");
    let outside = write("outside.txt", "5\n100\n");
    let words = write("words.txt", "5\nthe\n");
    let lens = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["lens", "--input", arg(&input), "--out", arg(&out)]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let llama = d.join("llama");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            lens(&["--model", arg(&d.join("bert"))]),
            "`bert` model has no unembedding",
        ),
        (
            lens(&["--model", arg(&d.join("base"))]),
            "`llama` model has no unembedding",
        ),
        (
            lens(&["--model", arg(&llama), "--top-k", "0"]),
            "`--top-k 0`: give a K from 1 to the model's vocabulary size, 100",
        ),
        (
            lens(&["--model", arg(&llama), "--top-k", "101"]),
            "`--top-k 101`: give a K from 1 to the model's vocabulary size, 100",
        ),
        (
            lens(&["--model", arg(&llama), "--targets", arg(&too_few)]),
            "has 1 non-blank lines for 2 input samples",
        ),
        (
            lens(&["--model", arg(&llama), "--targets", arg(&wrong_length)]),
            "line 2: 3 ids for the 4 tokens of input line 2; give one id per token",
        ),
        (
            lens(&["--model", arg(&llama), "--targets", arg(&outside)]),
            "line 2: the id 100 is outside the model's vocabulary 0..100",
        ),
        (
            lens(&["--model", arg(&llama), "--targets", arg(&words)]),
            "line 2: `the` is neither a token id nor a JSON list of ids",
        ),
        (
            lens(&["--model", arg(&llama), "--layers", "model.layers.0.mlp.gate_proj"]),
            "`model.layers.0.mlp.gate_proj` is not on the residual stream",
        ),
        (
            lens(&["--model", arg(&llama), "--layers", "model.layrs.0"]),
            "did you mean",
        ),
        (
            lens(&["--model", arg(&llama), "--plot", arg(&d.join("lens.svg"))]),
            "give a file path ending in .png",
        ),
        (
            lens(&["--model", arg(&llama), "--plot", arg(&plot), "--plot-sample", "2"]),
            "has 2 samples, numbered from 0",
        ),
    ];
    for (args, needle) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&args, needle, &[&out, &plot]);
    }
    // Folders, an unwritable place, and --plot-sample alone: refused before any work.
    let npz_folder = d.join("folder.npz");
    std::fs::create_dir(&npz_folder).unwrap();
    for (extra, needle) in [
        (
            vec!["--out", arg(&npz_folder)],
            "is a folder; give a file path ending in .npz",
        ),
        (vec!["--out", "/proc/hooks-lens-test/x.npz"], "cannot"),
        (vec!["--out", arg(&out), "--plot-sample", "1"], "give --plot P.png too"),
        (vec!["--out", arg(&out), "--layers", " , "], "`--layers` names no layer"),
    ] {
        let mut args = vec!["lens", "--model", arg(&llama), "--input", arg(&input)];
        args.extend(extra);
        refused(&args, needle, &[&out, &plot]);
    }
    let folder_out = d.join("acts");
    refused(
        &[
            "lens",
            "--model",
            arg(&llama),
            "--input",
            arg(&input),
            "--out",
            arg(&folder_out),
        ],
        "give a file path ending in .npz",
        &[&folder_out],
    );
    // The same targets file in order is taken.
    let run = hooks_cmd(&[
        "lens",
        "--model",
        arg(&llama),
        "--input",
        arg(&input),
        "--out",
        arg(&out),
        "--targets",
        arg(&targets),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
}

/// Odd input reads as the clean prompts it holds: a byte-order mark, CRLF line ends, a blank line,
/// and a row given with its own right-padded `attention_mask`; the values are transformers' on the
/// real ids alone.
#[test]
fn odd_input_reads_as_its_real_tokens() {
    let Some(python) = hooks_test_support::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("llama");
    let _ = hooks_test_support::run_python(
        &python,
        &script("../hooks-models/tests/py/reference.py"),
        &["build", "llama", arg(&model)],
    );
    let odd = dir.path().join("odd.jsonl");
    std::fs::write(
        &odd,
        "\u{feff}{\"input_ids\": [5, 17, 3, 88]}\r\n\r\n{\"input_ids\": [9, 2, 0, 0, 0], \"attention_mask\": [1, 1, 0, 0, 0]}\r\n{\"input_ids\": [41]}\r\n",
    )
    .unwrap();
    let clean = dir.path().join("clean.jsonl");
    std::fs::write(
        &clean,
        "{\"input_ids\": [5, 17, 3, 88]}\n{\"input_ids\": [9, 2]}\n{\"input_ids\": [41]}\n",
    )
    .unwrap();
    let out = dir.path().join("lens.npz");
    let run = hooks_cmd(&[
        "lens",
        "--model",
        arg(&model),
        "--input",
        arg(&odd),
        "--out",
        arg(&out),
        "--top-k",
        "4",
        "--batch-size",
        "3",
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let report = hooks_test_support::run_python(
        &python,
        &script("tests/py/lens_reference.py"),
        &["compare", arg(&model), arg(&clean), arg(&out), "4", "-"],
    );
    let r: Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(r["shapes"]["top_ids"], serde_json::json!([3, 3, 4, 4]), "{r}");
    assert_eq!(r["input_ids_equal"], true, "{r}");
    assert_eq!(r["top_ids_mismatch"], 0, "{r}");
    assert_eq!(r["nonzero_past_length"], 0, "{r}");
    for key in ["max_top_probs_diff", "max_entropy_diff", "max_kl_diff"] {
        assert!(r[key].as_f64().unwrap() <= 1e-4, "{key}: {r}");
    }
}
