//! `hooks generate`, run as a user runs it, against transformers' `generate` on each prompt alone
//! (`tests/py/generate_check.py`): greedy ids and decoded text, steering at every position and
//! on generated positions only, captures over the final sequence, sampling's distribution, and
//! every refusal.
#![allow(clippy::unwrap_used)] // a failing test should fail loudly

mod common;

use std::path::{Path, PathBuf};

use common::hooks_cmd;
use serde_json::Value;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn check(python: &Path, steps: &[&str]) -> Vec<Value> {
    let out = hooks_test_support::run_python(python, &script("tests/py/generate_check.py"), steps);
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Runs `hooks generate` with `args` and returns its JSON lines.
fn generate(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["generate"];
    all.extend(args);
    let run = hooks_cmd(&all);
    assert!(
        run.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out = args[args.iter().position(|a| *a == "--out").unwrap() + 1];
    std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A float32 vector of `width` values in `path`, written by numpy.
fn vector(python: &Path, path: &Path, width: usize, scale: f64) {
    let code = format!(
        "import numpy as np; np.save({:?}, (np.sin(np.arange({width})) * {scale}).astype(np.float32))",
        arg(path)
    );
    let out = hooks_test_support::python_command(python)
        .args(["-c", &code])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Greedy ids and the decoded text equal transformers' on each prompt alone; text prompts,
/// mixed lengths in a batch. Steering a block at every position, and on generated positions
/// only, equals `generate` with the matching forward hook, changes the text, and the captures
/// equal one hooked forward over the final sequence.
#[test]
fn generate_matches_transformers_steered_or_not() {
    let Some(python) = hooks_test_support::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = d.join("llama");
    let _ = check(&python, &["build-tokenized", arg(&model)]);
    let prompts = d.join("prompts.txt");
    std::fs::write(
        &prompts,
        "The cat sat on the mat.\nWater boils at a lower temperature on a mountaintop.\nWhy?\n",
    )
    .unwrap();
    let prompts_jsonl = d.join("prompts.jsonl");
    std::fs::write(
        &prompts_jsonl,
        "{\"text\": \"The cat sat on the mat.\"}\n{\"text\": \"Water boils at a lower temperature on a mountaintop.\"}\n{\"text\": \"Why?\"}\n",
    )
    .unwrap();
    let vec = d.join("vec.npy");
    vector(&python, &vec, 32, 1.0);
    let plain = d.join("plain.jsonl");
    let lines = generate(&[
        "--model",
        arg(&model),
        "--input",
        arg(&prompts),
        "--max-new-tokens",
        "8",
        "--out",
        arg(&plain),
        "--batch-size",
        "2",
    ]);
    assert_eq!(lines.len(), 3);
    assert!(lines
        .iter()
        .all(|l| l["finish_reason"] == "length" && l["output_ids"].as_array().unwrap().len() == 8));
    let r = &check(
        &python,
        &["compare", arg(&model), arg(&prompts_jsonl), arg(&plain), "8"],
    )[0];
    assert_eq!(r["ids_equal"], true, "{r}");
    assert_eq!(r["has_text"], true, "{r}");
    assert_eq!(r["text_equal"], true, "{r}");
    let layers = "model.layers.0,model.layers.1";
    // Every position, the generated ones, and positions over the prompt then its output: the
    // prompt's last token onwards, and two prompt positions alone.
    for (i, mode) in ["all", "generated", "-1:", "0,-2"].into_iter().enumerate() {
        let out = d.join(format!("steered-{i}.jsonl"));
        let acts = d.join(format!("acts-{i}.npz"));
        let (steer, on) = match mode {
            "all" | "generated" => (format!("model.layers.0={}@4", arg(&vec)), mode),
            positions => (format!("model.layers.0={}@4:{positions}", arg(&vec)), "all"),
        };
        let steered = generate(&[
            "--model",
            arg(&model),
            "--input",
            arg(&prompts),
            "--max-new-tokens",
            "8",
            "--out",
            arg(&out),
            "--steer",
            &steer,
            "--intervene-on",
            on,
            "--layers",
            layers,
            "--activations",
            arg(&acts),
        ]);
        let r = &check(
            &python,
            &[
                "compare",
                arg(&model),
                arg(&prompts_jsonl),
                arg(&out),
                "8",
                arg(&acts),
                layers,
                "steer",
                "model.layers.0",
                arg(&vec),
                "4",
                mode,
            ],
        )[0];
        assert_eq!(r["ids_equal"], true, "{mode}: {r}");
        assert_eq!(r["text_equal"], true, "{mode}: {r}");
        for layer in layers.split(',') {
            let diff = r["max_diff"][layer].as_f64().unwrap();
            assert!(diff < 1e-4, "{mode}: {layer} differs by {diff}");
        }
        // Not vacuous: the steered text is not the plain one.
        let changed = steered
            .iter()
            .zip(&lines)
            .filter(|(s, p)| s["output_ids"] != p["output_ids"])
            .count();
        assert!(changed >= 2, "{mode}: steering changed {changed} of 3 outputs");
    }
}

/// Sampling: the first token's frequencies over 2,000 draws follow softmax(logits / T) (a
/// chi-square test against transformers' logits); top-p never leaves the nucleus; the same seed
/// gives the same output however batched; --top-k 1 and --temperature 0 are greedy.
#[test]
fn sampling_follows_the_models_distribution() {
    let Some(python) = hooks_test_support::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = d.join("llama");
    let script_ref = script("../hooks-models/tests/py/reference.py");
    let _ = hooks_test_support::run_python(&python, &script_ref, &["build", "llama", arg(&model)]);
    let prompt = "{\"input_ids\": [5, 17, 3, 88]}\n";
    let one = d.join("one.jsonl");
    std::fs::write(&one, prompt).unwrap();
    let many = d.join("many.jsonl");
    std::fs::write(&many, prompt.repeat(2000)).unwrap();
    let draws = d.join("draws.jsonl");
    let base = |out: &Path, input: &Path, n: &str| -> Vec<String> {
        [
            "--model",
            arg(&model),
            "--input",
            arg(input),
            "--max-new-tokens",
            n,
            "--out",
            arg(out),
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let with = |mut args: Vec<String>, more: &[&str]| {
        args.extend(more.iter().map(|s| (*s).to_owned()));
        args
    };
    let run = |args: Vec<String>| generate(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let _ = run(with(
        base(&draws, &many, "1"),
        &["--temperature", "1.5", "--seed", "11", "--batch-size", "500"],
    ));
    let r = &check(&python, &["sample", arg(&model), arg(&one), arg(&draws), "1.5", "1"])[0];
    assert!(r["bins"].as_u64().unwrap() >= 5, "{r}");
    assert!(r["chi2"].as_f64().unwrap() < r["critical"].as_f64().unwrap(), "{r}");

    // Top-p: every token of every line inside its prefix's nucleus.
    let nucleus = d.join("nucleus.jsonl");
    let few = d.join("few.jsonl");
    std::fs::write(&few, prompt.repeat(40)).unwrap();
    let lines = run(with(
        base(&nucleus, &few, "4"),
        &["--top-p", "0.6", "--temperature", "1.2", "--seed", "3"],
    ));
    assert!(
        lines.iter().any(|l| l["output_ids"] != lines[0]["output_ids"]),
        "top-p 0.6 drew one sequence only"
    );
    let r = &check(
        &python,
        &["sample", arg(&model), arg(&one), arg(&nucleus), "1.2", "0.6"],
    )[0];
    assert_eq!(r["outside_nucleus"], 0, "{r}");

    // The same seed, other batches: the same draws; another seed: others.
    let again = d.join("again.jsonl");
    let same = run(with(
        base(&again, &few, "4"),
        &[
            "--top-p",
            "0.6",
            "--temperature",
            "1.2",
            "--seed",
            "3",
            "--batch-size",
            "3",
        ],
    ));
    assert_eq!(same, lines);
    let other = run(with(
        base(&again, &few, "4"),
        &["--top-p", "0.6", "--temperature", "1.2", "--seed", "4"],
    ));
    assert_ne!(other, lines);

    // Greedy three ways.
    let greedy: Vec<Vec<Value>> = [&[][..], &["--temperature", "0"], &["--top-k", "1", "--seed", "9"]]
        .iter()
        .map(|more| {
            let out = d.join("greedy.jsonl");
            run(with(base(&out, &one, "6"), more))
        })
        .collect();
    assert_eq!(greedy[0], greedy[1]);
    assert_eq!(greedy[0], greedy[2]);
}

/// Each wrong input gets one line and no file.
#[test]
fn wrong_inputs_get_one_line_and_no_file() {
    let Some(python) = hooks_test_support::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let script_ref = script("../hooks-models/tests/py/reference.py");
    let _ = hooks_test_support::run_python(
        &python,
        &script_ref,
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
    let input = d.join("in.jsonl");
    std::fs::write(&input, "{\"input_ids\": [1, 2, 3]}\n").unwrap();
    let long = d.join("long.jsonl");
    let ids: Vec<usize> = (0..64).collect();
    std::fs::write(&long, format!("{}\n", serde_json::json!({ "input_ids": ids }))).unwrap();
    let vec = d.join("vec.npy");
    vector(&python, &vec, 7, 1.0);
    let out = d.join("out.jsonl");
    let acts = d.join("acts.npz");
    let llama = d.join("llama");
    let steer = format!("model.layers.0={}@2", arg(&vec));
    let wide = d.join("wide.npy");
    vector(&python, &wide, 48, 1.0);
    let before_start = format!("model.layers.0={}@2:-4", arg(&wide));
    let folder = d.join("acts-dir");
    let busy = d.join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), "mine").unwrap();
    let base = |model: &Path, input: &Path| -> Vec<String> {
        [
            "generate",
            "--model",
            arg(model),
            "--input",
            arg(input),
            "--out",
            arg(&out),
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let cases: Vec<(Vec<String>, Vec<&str>, &str)> = vec![
        (base(&d.join("bert"), &input), vec![], "is not a causal language model"),
        (
            base(&llama, &input),
            vec!["--max-new-tokens", "0"],
            "`--max-new-tokens 0` generates nothing",
        ),
        (
            base(&llama, &input),
            vec!["--temperature", "-1"],
            "`--temperature -1`: give 0 (greedy) or a positive number",
        ),
        (
            base(&llama, &input),
            vec!["--top-p", "0"],
            "`--top-p 0`: give a value in (0, 1]",
        ),
        (
            base(&llama, &input),
            vec!["--top-p", "1.5"],
            "`--top-p 1.5`: give a value in (0, 1]",
        ),
        (base(&llama, &input), vec!["--top-k", "0"], "`--top-k 0` keeps no token"),
        (
            base(&llama, &input),
            vec!["--activations", arg(&acts)],
            "needs --layers",
        ),
        (
            base(&llama, &input),
            vec!["--layers", "model.layers.0"],
            "needs --activations",
        ),
        (
            base(&llama, &long),
            vec![],
            "has 64 tokens, and the model takes 64 in all",
        ),
        (
            base(&llama, &input),
            vec!["--steer", &steer],
            "holds 7 values, and `model.layers.0` has 48 features",
        ),
        (
            base(&llama, &input),
            vec![
                "--layers",
                "model.layers.0.self_attn.attn_weights",
                "--activations",
                arg(&acts),
            ],
            "not attention patterns",
        ),
        (
            base(&llama, &input),
            vec![
                "--layers",
                "model.layers.0.self_attn.attn_weights",
                "--activations",
                arg(&folder),
            ],
            "not attention patterns",
        ),
        (
            base(&llama, &input),
            vec![
                "--layers",
                "model.layers.0",
                "--activations",
                arg(&acts),
                "--window",
                "2",
            ],
            "`--window` is for a dataset folder",
        ),
        (
            base(&llama, &input),
            vec!["--overwrite"],
            "`--overwrite` applies to the captures",
        ),
        (
            base(&llama, &input),
            vec!["--pool", "mean"],
            "`--pool` applies to the captures",
        ),
        (
            vec![
                "generate",
                "--model",
                arg(&llama),
                "--input",
                arg(&input),
                "--out",
                arg(&input),
            ]
            .into_iter()
            .map(str::to_owned)
            .collect(),
            vec![],
            "`--out` is the input file",
        ),
        (
            base(&llama, &input),
            vec!["--layers", "model.layers.0", "--activations", arg(&vec)],
            "is a file; a dataset folder needs a folder path",
        ),
        (
            base(&llama, &input),
            vec!["--layers", "model.layers.0", "--activations", arg(&busy)],
            "holds files and no manifest.json",
        ),
        (
            base(&llama, &input),
            vec!["--steer", &before_start],
            "prompt 1: position -4 counts back past the start of a prompt of 3 tokens",
        ),
    ];
    for (mut args, more, needle) in cases {
        if !more.contains(&"--max-new-tokens") {
            args.extend(["--max-new-tokens".to_owned(), "4".to_owned()]);
        }
        args.extend(more.iter().map(|s| (*s).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = hooks_cmd(&args);
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{args:?} succeeded");
        assert_eq!(err.lines().count(), 1, "{args:?}: want one line, got:\n{err}");
        assert!(err.starts_with("error: ") && err.contains(needle), "{args:?}: {err}");
        assert!(
            !out.exists() && !acts.exists() && !folder.exists(),
            "{args:?} left a file"
        );
    }
    // Positions that `--intervene-on generated` leaves empty: it runs, and says so.
    let noop = hooks_cmd(&[
        "generate",
        "--model",
        arg(&llama),
        "--input",
        arg(&input),
        "--out",
        arg(&out),
        "--max-new-tokens",
        "2",
        "--steer",
        &format!("model.layers.0={}@4:-1", arg(&wide)),
        "--intervene-on",
        "generated",
    ]);
    let err = String::from_utf8_lossy(&noop.stderr);
    assert!(noop.status.success(), "{err}");
    assert!(
        err.contains("note: the interventions on `model.layers.0` changed nothing")
            && err.contains("prompt positions are never changed"),
        "{err}"
    );
    std::fs::remove_file(&out).unwrap();
    // Nothing was replaced or written into.
    assert_eq!(std::fs::read_to_string(&input).unwrap(), "{\"input_ids\": [1, 2, 3]}\n");
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1);
}

/// `--chat`: the prompt ids equal transformers' `apply_chat_template(messages,
/// add_generation_prompt=True, tokenize=True)` with the folder's template, from
/// `tokenizer_config.json` (special tokens, `trim`, a Python string method) or from
/// `chat_template.jinja` (block tags on their own lines, `loop.first`); the rendered text is
/// transformers' too. A role the template refuses, and a folder without a template, get one line.
#[test]
fn chat_prompts_equal_apply_chat_template() {
    let Some(python) = hooks_test_support::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = d.join("tk");
    let _ = check(
        &python,
        &["build-tokenized", arg(&model), "+", "chat-templates", arg(&model)],
    );
    let conversations = d.join("chat.jsonl");
    std::fs::write(
        &conversations,
        concat!(
            "{\"messages\": [{\"role\": \"system\", \"content\": \"  Be brief.  \"}, {\"role\": \"user\", \"content\": \" What is the capital of France? \"}]}\n",
            "\n",
            "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello!\"}, {\"role\": \"user\", \"content\": \"How are you?\"}]}\n",
        ),
    )
    .unwrap();
    let jinja = d.join("tk-jinja");
    for folder in [&model, &jinja] {
        let out = d.join("chat-out.jsonl");
        let lines = generate(&[
            "--model",
            arg(folder),
            "--input",
            arg(&conversations),
            "--chat",
            "--max-new-tokens",
            "2",
            "--out",
            arg(&out),
        ]);
        let want = &check(&python, &["chat-ids", arg(folder), arg(&conversations)])[0];
        let prompts: Vec<Value> = lines.iter().map(|l| l["prompt_ids"].clone()).collect();
        assert_eq!(Value::from(prompts), want["ids"], "{}", folder.display());
        let template = hooks_models::ChatTemplate::from_dir(folder).unwrap();
        let text = std::fs::read_to_string(&conversations).unwrap();
        let rendered: Vec<String> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let line: Value = serde_json::from_str(l).unwrap();
                template.render(&line["messages"]).unwrap()
            })
            .collect();
        assert_eq!(Value::from(rendered), want["text"], "{}", folder.display());
    }
    let out = d.join("refused.jsonl");
    let tool = d.join("tool.jsonl");
    std::fs::write(&tool, "{\"messages\": [{\"role\": \"tool\", \"content\": \"x\"}]}\n").unwrap();
    let plain = d.join("plain");
    std::fs::create_dir(&plain).unwrap();
    for name in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(model.join(name), plain.join(name)).unwrap();
    }
    for (folder, input, needle) in [
        (&model, &tool, "Conversation roles must be system, user or assistant"),
        (&plain, &conversations, "the folder has no chat template"),
    ] {
        let run = hooks_cmd(&[
            "generate",
            "--model",
            arg(folder),
            "--input",
            arg(input),
            "--chat",
            "--max-new-tokens",
            "2",
            "--out",
            arg(&out),
        ]);
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
        assert!(!out.exists());
    }
}

/// `examples/contrastive_steering.sh`, run as the README runs it: its vector equals the
/// difference of transformers' last-token means over the two sets, its steered continuations equal
/// `generate` with a forward hook adding that vector, and they differ from the plain ones.
#[test]
fn the_contrastive_steering_example_steers_with_the_mean_difference() {
    let Some(python) = hooks_test_support::python() else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = d.join("llama");
    let _ = check(&python, &["build-tokenized", arg(&model)]);
    let out = d.join("steering");
    let layer = "model.layers.0";
    let run = std::process::Command::new(root.join("examples/contrastive_steering.sh"))
        .args([arg(&model), layer, "8", arg(&out)])
        .env("HOOKS", env!("CARGO_BIN_EXE_hooks"))
        .env("PYTHON", &python)
        .env("NEW_TOKENS", "8")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}\n{}",
        stdout,
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(stdout.matches("steered x8:").count(), 4, "{stdout}");

    let data = root.join("data/steering");
    let theirs = d.join("theirs.npy");
    let _ = check(
        &python,
        &[
            "contrast",
            arg(&model),
            arg(&data.join("happy.txt")),
            arg(&data.join("sad.txt")),
            layer,
            arg(&theirs),
        ],
    );
    let ours = tch::Tensor::read_npy(out.join("vector.npy")).unwrap();
    let theirs = tch::Tensor::read_npy(&theirs).unwrap();
    let diff = (&ours - &theirs).abs().max().double_value(&[]);
    let norm = theirs.norm().double_value(&[]);
    assert!(
        diff < 1e-5 * norm.max(1.0),
        "the vector differs by {diff} (norm {norm})"
    );

    let prompts = d.join("prompts.jsonl");
    let text = std::fs::read_to_string(data.join("prompts.txt")).unwrap();
    let jsonl: String = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("{}\n", serde_json::json!({ "text": l })))
        .collect();
    std::fs::write(&prompts, jsonl).unwrap();
    let vector = out.join("vector.npy");
    let steered = out.join("steered.jsonl");
    let r = &check(
        &python,
        &[
            "compare",
            arg(&model),
            arg(&prompts),
            arg(&steered),
            "8",
            "steer",
            layer,
            arg(&vector),
            "8",
            "all",
        ],
    )[0];
    assert_eq!(r["ids_equal"], true, "{r}");
    assert_eq!(r["text_equal"], true, "{r}");
    let read = |path: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (plain, steered) = (read(&out.join("plain.jsonl")), read(&steered));
    let changed = plain
        .iter()
        .zip(&steered)
        .filter(|(p, s)| p["output_ids"] != s["output_ids"])
        .count();
    assert!(changed >= 2, "steering changed {changed} of 4 outputs");
}

/// `--activations DIR`: a dataset folder written window by window holds what the `.npz` of one
/// window holds (numpy reads both; ids exactly, activations to 1e-6 of their largest value, since
/// the windows batch the prompts differently), sampled outputs do not depend on the windows (each prompt
/// keeps its random stream), and a folder already there is refused unless `--overwrite`.
#[test]
fn activations_into_a_dataset_folder_equal_the_npz() {
    let Some(python) = hooks_test_support::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = d.join("llama");
    let _ = check(&python, &["build-tokenized", arg(&model)]);
    // JSON lines with keys to keep, and a blank line: `sample_index` and `meta.*` travel with
    // each prompt into the JSON lines, the .npz and the folder.
    let prompts = d.join("prompts.jsonl");
    let texts = [
        "The cat sat on the mat.",
        "Why?",
        "Water boils at a lower temperature on a mountaintop.",
        "A dog.",
        "One more line here.",
    ];
    let mut lines = String::new();
    for (i, text) in texts.iter().enumerate() {
        if i == 2 {
            lines.push('\n');
        }
        lines.push_str(&serde_json::json!({"text": text, "id": 10 + i, "tag": format!("t{i}é")}).to_string());
        lines.push('\n');
    }
    std::fs::write(&prompts, lines).unwrap();
    let layers = "model.layers.0,model.layers.1.mlp";
    let common = [
        "--model",
        arg(&model),
        "--input",
        arg(&prompts),
        "--max-new-tokens",
        "6",
        "--top-k",
        "20",
        "--seed",
        "7",
        "--batch-size",
        "2",
        "--layers",
        layers,
        "--keep-keys",
        "id,tag",
    ];
    let (npz, folder) = (d.join("acts.npz"), d.join("acts"));
    let (one, windows) = (d.join("one.jsonl"), d.join("windows.jsonl"));
    let mut args = common.to_vec();
    args.extend(["--out", arg(&one), "--activations", arg(&npz)]);
    let whole = generate(&args);
    let mut args = common.to_vec();
    args.extend(["--out", arg(&windows), "--activations", arg(&folder), "--window", "2"]);
    let windowed = generate(&args);
    assert_eq!(whole, windowed, "windows of 2 prompts give what one window gives");
    for (i, line) in whole.iter().enumerate() {
        assert_eq!(line["sample_index"], if i < 2 { i } else { i + 1 }, "{line}");
        assert_eq!(line["id"], 10 + i, "{line}");
        assert_eq!(line["tag"], format!("t{i}é"), "{line}");
    }

    let code = format!(
        r#"
import json, numpy as np
a = np.load({npz:?})
lengths = a["attention_mask"].sum(1)
report = {{}}
for name in {layers:?}.split(",") + ["input_ids"]:
    rows = np.concatenate([a[name][i, :n] for i, n in enumerate(lengths)])
    f = np.load({folder:?} + "/" + name + ".npy", mmap_mode="r")
    report[name] = [list(f.shape) == list(rows.shape), float(np.abs(f - rows).max() / max(1.0, np.abs(rows).max()))]
offsets = np.load({folder:?} + "/offsets.npy")
report["offsets"] = offsets.tolist() == [0] + np.cumsum(lengths).tolist()
for name in ["sample_index", "meta.id", "meta.tag"]:
    f = np.load({folder:?} + "/" + name + ".npy")
    report[name] = [a[name].tolist(), f.tolist(), str(a[name].dtype), str(f.dtype)]
print(json.dumps(report))
"#,
        npz = arg(&npz),
        folder = arg(&folder),
    );
    let out = hooks_test_support::python_command(&python)
        .args(["-c", &code])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    for name in layers.split(',').chain(["input_ids"]) {
        assert_eq!(report[name][0], true, "{name}: shapes, {report}");
        // The windows batch the prompts differently, so the padded widths differ: float noise,
        // relative to the array's largest value.
        let diff = report[name][1].as_f64().unwrap();
        let limit = if name == "input_ids" { 0.0 } else { 1e-6 };
        assert!(diff <= limit, "{name}: values differ by {diff}, {report}");
    }
    assert_eq!(report["offsets"], true, "{report}");
    assert_eq!(
        report["sample_index"],
        serde_json::json!([[0, 1, 3, 4, 5], [0, 1, 3, 4, 5], "int64", "int64"])
    );
    assert_eq!(
        report["meta.id"],
        serde_json::json!([[10, 11, 12, 13, 14], [10, 11, 12, 13, 14], "int64", "int64"])
    );
    assert_eq!(
        report["meta.tag"],
        serde_json::json!([
            ["t0é", "t1é", "t2é", "t3é", "t4é"],
            ["t0é", "t1é", "t2é", "t3é", "t4é"],
            "<U3",
            "<U3"
        ])
    );

    // A folder already there: refused without --overwrite (nothing changes), replaced with it.
    let mut args = vec!["generate"];
    args.extend(common);
    args.extend(["--out", arg(&windows), "--activations", arg(&folder)]);
    let before = std::fs::read(folder.join("manifest.json")).unwrap();
    let refused = hooks_cmd(&args);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("already holds a dataset folder") && stderr.contains("--overwrite"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(folder.join("manifest.json")).unwrap(), before);
    args.push("--overwrite");
    let replaced = hooks_cmd(&args);
    assert!(
        replaced.status.success(),
        "{}",
        String::from_utf8_lossy(&replaced.stderr)
    );
    assert_ne!(std::fs::read(folder.join("manifest.json")).unwrap(), before);
}
