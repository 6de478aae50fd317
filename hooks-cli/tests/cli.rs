//! The `hooks` command, run as a user runs it: real checkpoints, files, exit codes, messages.
#![allow(clippy::unwrap_used)] // a failing test should fail loudly

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::hooks_cmd;
use hooks::load_activations;
use tch::{Kind, Tensor};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts the command failed with exactly one line on stderr that contains `needle`.
fn fails_with(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "succeeded; stdout: {}", stdout(out));
    assert_eq!(err.lines().count(), 1, "want one line on stderr, got:\n{err}");
    assert!(err.starts_with("error: ") && err.contains(needle), "stderr: {err}");
}

/// The all-MiniLM-L6-v2 folder `make` installs, or `None` (with a note) outside `make`.
fn minilm() -> Option<PathBuf> {
    hooks_test_support::python().map(|python| hooks_test_support::minilm_dir(&python))
}

const SENTENCES: &str =
    "The cat sat on the mat.\nA longer sentence, with punctuation; it pads the others!\nCafé crème in Zürich?\n";

/// A document of about 400 tokens: past all-MiniLM-L6-v2's `max_seq_length` of 256, within its
/// 512 positions. sentence-transformers cuts it at 256, and so must `hooks extract` by default.
fn long_document() -> String {
    let mut doc = String::new();
    for i in 0..40 {
        doc.push_str(&format!("Paragraph {i} goes on about activations and layers. "));
    }
    doc
}

/// The sentences with the long document among them, one per line.
fn sentences_and_a_long_document() -> String {
    format!("{SENTENCES}{}\n", long_document())
}

/// sentence-transformers' embeddings of each line of `input`: before normalisation, or with
/// `full`, `SentenceTransformer.encode`'s (its whole pipeline).
fn sentence_transformers(python: &Path, model: &Path, input: &Path, dir: &Path, full: bool) -> Tensor {
    let reference = dir.join("reference.npz");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/st_reference.py");
    let mut args = vec![
        model.to_str().unwrap(),
        input.to_str().unwrap(),
        reference.to_str().unwrap(),
    ];
    if full {
        args.push("full");
    }
    let _ = hooks_test_support::run_python(python, &script, &args);
    let mut reference = load_activations(&reference).unwrap().into_iter();
    reference.next().unwrap().1
}

/// Runs `hooks extract` of `layers` with `args` added, and reads the file back.
fn extract(model: &Path, input: &Path, layers: &str, out: &Path, args: &[&str]) -> hooks::Activations {
    let mut all = vec![
        "extract",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--layers",
        layers,
        "--out",
        out.to_str().unwrap(),
    ];
    all.extend(args);
    let run = hooks_cmd(&all);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout(&run).starts_with("extracted "), "{}", stdout(&run));
    load_activations(out).unwrap()
}

/// Each row within `1e-4 × max(1, max |want|)` of the reference.
fn assert_close(got: &Tensor, want: &Tensor) {
    assert_eq!(got.size(), want.size());
    let diff = (got - want).abs().max().double_value(&[]);
    let scale = want.abs().max().double_value(&[]).max(1.0);
    assert!(diff <= 1e-4 * scale, "max abs diff {diff}");
}

#[test]
fn mean_pooling_the_last_layer_reproduces_sentence_transformers() {
    let Some(model) = minilm() else { return };
    let python = hooks_test_support::python().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, sentences_and_a_long_document()).unwrap();
    let ours = extract(
        &model,
        &input,
        "encoder.layer.5",
        &dir.path().join("ours.npz"),
        &["--pool", "mean", "--batch-size", "2"],
    );
    let got = ours.get("encoder.layer.5").unwrap();
    assert_eq!(got.size(), [4, 384]);
    assert_close(got, &sentence_transformers(&python, &model, &input, dir.path(), false));
    // The mask and ids come along, so padding is never a guess.
    let mask = ours.get("attention_mask").unwrap();
    assert_eq!(mask.size(), ours.get("input_ids").unwrap().size());
    let lengths = mask.sum_dim_intlist(1, false, Kind::Int64);
    assert_eq!(lengths.size(), [4]);
    assert_eq!(
        lengths.int64_value(&[3]),
        256,
        "the long document is cut at max_seq_length"
    );
    assert!(
        lengths.int64_value(&[1]) > lengths.int64_value(&[0]),
        "the second sentence is longer"
    );
}

/// What transformers' tokenizer writes with `padding=True` (ids, token types and the mask, padded
/// to the longest line), saved with a byte-order mark: the padding must be neither attended nor
/// pooled nor marked real in the file, and the mark must not make the first line text.
#[test]
fn tokenized_jsonl_with_a_mask_and_a_byte_order_mark_reproduces_sentence_transformers() {
    let Some(model) = minilm() else { return };
    let python = hooks_test_support::python().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("in.txt");
    std::fs::write(&text, sentences_and_a_long_document()).unwrap();
    let jsonl = dir.path().join("tokenized.jsonl");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/tokenized_jsonl.py");
    let _ = hooks_test_support::run_python(
        &python,
        &script,
        &[model.to_str().unwrap(), text.to_str().unwrap(), jsonl.to_str().unwrap()],
    );
    assert!(std::fs::read(&jsonl).unwrap().starts_with(b"\xEF\xBB\xBF{"));

    let ours = extract(
        &model,
        &jsonl,
        "encoder.layer.5",
        &dir.path().join("ours.npz"),
        &["--pool", "model"],
    );
    // `--pool model` is the model's own pipeline: mean pooling, then its `Normalize`.
    assert_close(
        ours.get("encoder.layer.5").unwrap(),
        &sentence_transformers(&python, &model, &text, dir.path(), true),
    );
    let lengths = ours
        .get("attention_mask")
        .unwrap()
        .sum_dim_intlist(1, false, Kind::Int64);
    let reals: Vec<i64> = Vec::try_from(&lengths).unwrap();
    // The mask the tokenizer wrote: [CLS] ... [SEP], the long document at 256.
    assert_eq!(reals[3], 256);
    assert!(reals[..3].iter().all(|&n| n < 30), "{reals:?}");
}

#[test]
fn layers_lists_paths_with_shapes() {
    let Some(model) = minilm() else { return };
    let out = hooks_cmd(&["layers", "--model", model.to_str().unwrap()]);
    assert!(out.status.success());
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6 * 15 + 5 + 1 + 2, "{text}");
    assert!(
        lines[0].starts_with("embeddings ") && lines[0].ends_with("[1, 12, 384]"),
        "{}",
        lines[0]
    );
    assert!(text.contains("encoder.layer.5.intermediate.dense") && text.contains("[1, 12, 1536]"));
    // The attention probabilities: 12 heads, 12 queries, 12 keys.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("encoder.layer.0.attention.self.attn_weights ") && l.ends_with("[1, 12, 12, 12]")),
        "{text}"
    );
}

#[test]
fn token_ids_in_jsonl_work_and_inspect_shows_the_file() {
    let Some(model) = minilm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("ids.jsonl");
    std::fs::write(
        &input,
        "{\"input_ids\": [101, 7592, 2088, 102]}\n{\"input_ids\": [101, 102]}\n",
    )
    .unwrap();
    let acts = extract(
        &model,
        &input,
        "embeddings.word_embeddings",
        &dir.path().join("ids.npz"),
        &[],
    );
    assert_eq!(
        acts.get("input_ids").unwrap(),
        &Tensor::from_slice(&[101i64, 7592, 2088, 102, 101, 102, 0, 0]).view([2, 4])
    );
    assert_eq!(
        acts.get("attention_mask").unwrap(),
        &Tensor::from_slice(&[1i64, 1, 1, 1, 1, 1, 0, 0]).view([2, 4])
    );
    assert_eq!(acts.get("embeddings.word_embeddings").unwrap().size(), [2, 4, 384]);

    let out = hooks_cmd(&["inspect", dir.path().join("ids.npz").to_str().unwrap()]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("embeddings.word_embeddings  float32 [2, 4, 384]"),
        "{text}"
    );
    assert!(text.contains("input_ids") && text.contains("int64"), "{text}");
}

#[test]
fn bad_input_gets_one_line_and_no_output_file() {
    let Some(model) = minilm() else { return };
    let model = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.npz");
    let out = out_path.to_str().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };

    fails_with(
        &hooks_cmd(&["extract", "--model", "/no/such/folder", "--layers", "x", "--out", out]),
        "/no/such/folder",
    );
    let no_config = dir.path().join("empty-model");
    std::fs::create_dir(&no_config).unwrap();
    fails_with(
        &hooks_cmd(&[
            "extract",
            "--model",
            no_config.to_str().unwrap(),
            "--layers",
            "x",
            "--out",
            out,
        ]),
        "config.json",
    );
    let no_weights = dir.path().join("no-weights");
    std::fs::create_dir(&no_weights).unwrap();
    std::fs::copy(Path::new(model).join("config.json"), no_weights.join("config.json")).unwrap();
    fails_with(
        &hooks_cmd(&[
            "extract",
            "--model",
            no_weights.to_str().unwrap(),
            "--layers",
            "x",
            "--out",
            out,
        ]),
        "model.safetensors",
    );
    let t5 = dir.path().join("t5");
    std::fs::create_dir(&t5).unwrap();
    std::fs::write(t5.join("config.json"), r#"{"model_type": "t5"}"#).unwrap();
    fails_with(
        &hooks_cmd(&[
            "extract",
            "--model",
            t5.to_str().unwrap(),
            "--layers",
            "x",
            "--out",
            out,
        ]),
        "unsupported model_type `t5`",
    );

    let empty = write("empty.txt", "\n\n");
    fails_with(
        &hooks_cmd(&[
            "extract", "--model", model, "--input", &empty, "--layers", "pooler", "--out", out,
        ]),
        "has no samples",
    );
    let broken = write("broken.jsonl", "{\"text\": \"fine\"}\n{\"text\": \n");
    fails_with(
        &hooks_cmd(&[
            "extract", "--model", model, "--input", &broken, "--layers", "pooler", "--out", out,
        ]),
        "broken.jsonl`, line 2: invalid JSON",
    );
    let unknown_key = write(
        "key.jsonl",
        "{\"text\": \"fine\"}\n{\"input_ids\": [101, 102], \"labels\": [0]}\n",
    );
    fails_with(
        &hooks_cmd(&[
            "extract",
            "--model",
            model,
            "--input",
            &unknown_key,
            "--layers",
            "pooler",
            "--out",
            out,
        ]),
        "key.jsonl`, line 2: unknown key `labels`",
    );
    let left_padded = write(
        "left.jsonl",
        "{\"input_ids\": [0, 101, 102], \"attention_mask\": [0, 1, 1]}\n",
    );
    fails_with(
        &hooks_cmd(&[
            "extract",
            "--model",
            model,
            "--input",
            &left_padded,
            "--layers",
            "pooler",
            "--out",
            out,
        ]),
        "left.jsonl`, line 1: `attention_mask` is left-padded (a 1 follows a 0)",
    );
    // MiniLM's vocabulary has 30522 ids.
    let past_vocab = write(
        "vocab.jsonl",
        "{\"input_ids\": [101, 102]}\n\n{\"input_ids\": [101, 30522, 102]}\n",
    );
    fails_with(
        &hooks_cmd(&[
            "extract",
            "--model",
            model,
            "--input",
            &past_vocab,
            "--layers",
            "pooler",
            "--out",
            out,
        ]),
        "vocab.jsonl`, line 3: `input_ids` holds 30522, outside the model's vocabulary 0..30522",
    );
    let ok = write("ok.txt", "hello\n");
    fails_with(
        &hooks_cmd(&[
            "extract",
            "--model",
            model,
            "--input",
            &ok,
            "--layers",
            "encoder.layer.0.attention.slef",
            "--out",
            out,
        ]),
        "unknown layer `encoder.layer.0.attention.slef` (did you mean `encoder.layer.0.attention.self`?)",
    );
    fails_with(
        &hooks_cmd(&[
            "extract", "--model", model, "--input", &ok, "--layers", "pooler", "--device", "cuda", "--out", out,
        ]),
        "CUDA is not available",
    );
    assert!(!out_path.exists(), "a failed run left an output file");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        leftovers.iter().all(|n| !n.to_string_lossy().ends_with(".tmp")),
        "{leftovers:?}"
    );
}

/// transformers run on each line of `input` alone (`tests/py/alone.py`): `{module}.{i}` and
/// `ids.{i}` per sample.
fn each_alone(model: &Path, input: &Path, max_length: usize, modules: &[&str], dir: &Path) -> hooks::Activations {
    each_alone_with(model, input, max_length, &[], modules, dir)
}

/// [`each_alone`], with `alone.py`'s intervention `options` (`--ablate=...`).
fn each_alone_with(
    model: &Path,
    input: &Path,
    max_length: usize,
    options: &[&str],
    modules: &[&str],
    dir: &Path,
) -> hooks::Activations {
    let python = hooks_test_support::python().unwrap();
    let out = dir.join("alone.npz");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/alone.py");
    let max_length = max_length.to_string();
    let mut args = vec![
        model.to_str().unwrap(),
        input.to_str().unwrap(),
        max_length.as_str(),
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(options);
    args.extend_from_slice(modules);
    let _ = hooks_test_support::run_python(&python, &script, &args);
    load_activations(&out).unwrap()
}

/// `|got - want| <= 1e-5 * max(|want|, 1)` elementwise over the whole array.
fn assert_within(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.size(), want.size(), "{what}");
    let scale = want.abs().max().double_value(&[]).max(1.0);
    let diff = (got.to_kind(Kind::Double) - want.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff <= 1e-5 * scale, "{what}: max abs diff {diff} (scale {scale})");
}

/// Runs `hooks extract` with each batching in `batchings`, unpooled and mean-pooled, and checks
/// every row of every layer against transformers on that sample alone: padding, sorting by
/// length, broadcasting `[1, T, H]` outputs and input order must change nothing.
fn rows_match_each_sample_alone(model: &Path, input: &Path, max_length: usize, layers: &[&str], batchings: &[&[&str]]) {
    let dir = tempfile::tempdir().unwrap();
    let alone = each_alone(model, input, max_length, layers, dir.path());
    let samples = alone.names().filter(|n| n.starts_with("ids.")).count();
    let joined = layers.join(",");
    for batching in batchings {
        for pool in ["none", "mean"] {
            let mut args = batching.to_vec();
            args.extend(["--pool", pool]);
            let ours = extract(model, input, &joined, &dir.path().join("ours.npz"), &args);
            let mask = ours.get("attention_mask").unwrap();
            for i in 0..samples {
                let row = i64::try_from(i).unwrap();
                let ids = alone.get(&format!("ids.{i}")).unwrap();
                let len = ids.size()[0];
                let what = format!("{batching:?} --pool {pool}, sample {i}");
                assert_eq!(mask.get(row).sum(Kind::Int64).int64_value(&[]), len, "{what}");
                assert_eq!(
                    &ours.get("input_ids").unwrap().get(row).narrow(0, 0, len),
                    ids,
                    "{what}"
                );
                for layer in layers {
                    let want = alone.get(&format!("{layer}.{i}")).unwrap();
                    let got = ours.get(layer).unwrap().get(row);
                    let what = format!("{what}, `{layer}`");
                    if pool == "mean" {
                        assert_within(&got, &want.mean_dim(0, false, Kind::Float), &what);
                    } else {
                        assert_within(&got.narrow(0, 0, len), want, &what);
                        let past = got.narrow(0, len, got.size()[0] - len);
                        assert_eq!(
                            past.abs().sum(Kind::Double).double_value(&[]),
                            0.0,
                            "{what}: padding rows"
                        );
                    }
                }
            }
        }
    }
}

/// Batchings that put different samples together and pad them differently.
const BATCHINGS: [&[&str]; 4] = [
    &["--batch-size", "1"],
    &["--batch-size", "4"],
    &["--batch-size", "9"],
    &["--batch-size", "9", "--batch-tokens", "80"],
];

#[test]
fn bert_rows_match_transformers_on_each_text_alone_however_batched() {
    let Some(model) = minilm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("texts.jsonl");
    let mut lines: Vec<String> = SENTENCES.lines().map(str::to_owned).collect();
    lines.push(long_document());
    lines.extend(
        [
            "Hi.",
            "A",
            "Two words",
            "The fourth layer of the encoder, read token by token.",
        ]
        .map(String::from),
    );
    let jsonl: String = lines
        .iter()
        .map(|t| format!("{}\n", serde_json::json!({ "text": t })))
        .collect();
    std::fs::write(&input, jsonl).unwrap();
    rows_match_each_sample_alone(
        &model,
        &input,
        256,
        &[
            "embeddings.position_embeddings",
            "encoder.layer.0.attention.self",
            "encoder.layer.5.output",
        ],
        &BATCHINGS,
    );
}

/// The random GPT-2 `arch` of `reference.py` (`gpt2`, `gpt2-lmhead`) saved in `dir/gpt2`, and an
/// input `dir/ids.jsonl` of token-id lines of `lengths` over its 100-id vocabulary; `None`
/// without Python.
fn random_gpt2(arch: &str, dir: &Path, lengths: &[usize]) -> Option<(PathBuf, PathBuf)> {
    let python = hooks_test_support::python()?;
    let model = dir.join("gpt2");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hooks-models/tests/py/reference.py");
    let _ = hooks_test_support::run_python(&python, &script, &["build", arch, model.to_str().unwrap()]);
    let input = dir.join("ids.jsonl");
    let jsonl: String = lengths
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let ids: Vec<usize> = (0..len).map(|t| (i * 31 + t * 7) % 100).collect();
            format!("{}\n", serde_json::json!({ "input_ids": ids }))
        })
        .collect();
    std::fs::write(&input, jsonl).unwrap();
    Some((model, input))
}

#[test]
fn gpt2_rows_match_transformers_on_each_sample_alone_however_batched() {
    let dir = tempfile::tempdir().unwrap();
    // Lengths from 1 to the 64 positions, in no order.
    let lengths = [7, 1, 64, 3, 30, 12, 12, 2, 45, 5, 19, 1];
    let Some((model, input)) = random_gpt2("gpt2", dir.path(), &lengths) else {
        return;
    };
    rows_match_each_sample_alone(&model, &input, 64, &["wpe", "h.0.attn", "h.1", "ln_f"], &BATCHINGS);
}

/// A GPT-2 saved as `GPT2LMHeadModel`: `hooks layers` lists `AutoModelForCausalLM`'s names and
/// notes the others; `hooks extract` also takes `GPT2Model`'s names, checked against transformers'
/// `AutoModel` (which names them so) on each sample alone, keeps each name as given, and
/// `--ablate` by either name is the same run.
#[test]
fn gpt2_lm_head_takes_both_classes_names() {
    let dir = tempfile::tempdir().unwrap();
    let Some((model, input)) = random_gpt2("gpt2-lmhead", dir.path(), &[7, 1, 12, 3, 5]) else {
        return;
    };

    let listed = hooks_cmd(&["layers", "--model", model.to_str().unwrap()]);
    assert!(listed.status.success());
    let text = stdout(&listed);
    let names: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(names.first(), Some(&"transformer"), "{text}");
    assert_eq!(names.last(), Some(&"lm_head"), "{text}");
    assert!(text.contains("lm_head") && text.contains("[1, 8, 100]"), "{text}");
    assert!(
        names
            .iter()
            .skip(1)
            .take(names.len() - 2)
            .all(|n| n.starts_with("transformer.")),
        "{text}"
    );
    // Under `transformer.`: wte, wpe, ln_f, and ten in each of the two blocks.
    let note = String::from_utf8_lossy(&listed.stderr);
    assert!(
        note.contains("note: 23 of these layers also answer to another name")
            && note.contains("(`wte` for `transformer.wte`)"),
        "{note}"
    );

    rows_match_each_sample_alone(
        &model,
        &input,
        64,
        &["wpe", "h.0.attn", "h.1", "ln_f"],
        &BATCHINGS[1..2],
    );

    let out = |name: &str| dir.path().join(name);
    let both = extract(&model, &input, "h.1,transformer.h.1,lm_head", &out("both.npz"), &[]);
    let names: Vec<&str> = both.names().collect();
    assert_eq!(
        names,
        [
            "h.1",
            "transformer.h.1",
            "lm_head",
            "input_ids",
            "attention_mask",
            "sample_index"
        ]
    );
    assert!(both.get("h.1").unwrap().equal(both.get("transformer.h.1").unwrap()));
    assert_eq!(both.get("lm_head").unwrap().size(), [5, 12, 100]);

    // Position ids, `wpe`'s input: `[N, T]` like the mask, zeros past each length, and kept
    // whole under --pool (ids have no mean).
    let positions = extract(&model, &input, "wpe:input", &out("positions.npz"), &["--pool", "mean"]);
    let mask = positions.get("attention_mask").unwrap();
    let want = Tensor::arange(12, (Kind::Int64, tch::Device::Cpu)).unsqueeze(0) * mask;
    assert!(positions.get("wpe:input").unwrap().equal(&want));

    let plain = both.get("lm_head").unwrap();
    let short = extract(&model, &input, "lm_head", &out("short.npz"), &["--ablate", "h.0.mlp"]);
    let long = extract(
        &model,
        &input,
        "lm_head",
        &out("long.npz"),
        &["--ablate", "transformer.h.0.mlp"],
    );
    assert!(short.get("lm_head").unwrap().equal(long.get("lm_head").unwrap()));
    assert!(!short.get("lm_head").unwrap().equal(plain));
}

/// Ours, unpooled, against transformers on each sample alone with the same hooks: every real
/// token of every layer.
fn assert_rows_match(ours: &hooks::Activations, alone: &hooks::Activations, layers: &[&str], what: &str) {
    let samples = alone.names().filter(|n| n.starts_with("ids.")).count();
    assert!(samples > 1, "{what}: several samples");
    for i in 0..samples {
        let row = i64::try_from(i).unwrap();
        let len = alone.get(&format!("ids.{i}")).unwrap().size()[0];
        for layer in layers {
            let want = alone.get(&format!("{layer}.{i}")).unwrap();
            let got = ours.get(layer).unwrap().get(row).narrow(0, 0, len);
            assert_within(&got, want, &format!("{what}, sample {i}, `{layer}`"));
        }
    }
}

/// `--ablate`, `--steer`, `--patch` and `LAYER:input` on all-MiniLM-L6-v2, batched and padded,
/// against transformers' own forward hooks (and pre-hooks) on each sample alone.
#[test]
fn interventions_match_transformers_hooks_on_each_sample_alone() {
    let Some(model) = minilm() else { return };
    let python = hooks_test_support::python().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let texts = dir.path().join("texts.jsonl");
    let jsonl: String = format!("{SENTENCES}Hi.\nTwo words\n")
        .lines()
        .map(|t| format!("{}\n", serde_json::json!({ "text": t })))
        .collect();
    std::fs::write(&texts, jsonl).unwrap();
    let vector = path("steer.npy");
    let _ = hooks_test_support::run_python(
        &python,
        Path::new("-c"),
        &[&format!(
            "import numpy as np; np.save('{vector}', np.random.default_rng(0).normal(size=384).astype(np.float32))"
        )],
    );

    // Ablation and steering together, and a module input captured after them.
    let layers = [
        "encoder.layer.2.output",
        "encoder.layer.4.attention.output.dense:input",
        "encoder.layer.5.output",
    ];
    let steer = format!("encoder.layer.3.output={vector}@2.5");
    let ours = extract(
        &model,
        &texts,
        &layers.join(","),
        &dir.path().join("edited.npz"),
        &[
            "--ablate",
            "encoder.layer.1.attention",
            "--steer",
            &steer,
            "--batch-size",
            "2",
        ],
    );
    let alone = each_alone_with(
        &model,
        &texts,
        256,
        &["--ablate=encoder.layer.1.attention", &format!("--steer={steer}")],
        &layers,
        dir.path(),
    );
    assert_rows_match(&ours, &alone, &layers, "--ablate and --steer");
    let plain = extract(&model, &texts, &layers.join(","), &dir.path().join("plain.npz"), &[]);
    let moved = (ours.get(layers[2]).unwrap() - plain.get(layers[2]).unwrap())
        .abs()
        .max()
        .double_value(&[]);
    assert!(moved > 0.1, "the interventions changed the last layer ({moved})");

    // Patching one attention output from clean prompts into corrupted ones of the same token
    // lengths (ids given, so the lengths are exact).
    let prompts = |name: &str, shift: usize| {
        let jsonl: String = [5usize, 9, 3, 7]
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let mut ids = vec![101usize];
                ids.extend((0..len).map(|t| 2000 + (i * 97 + t * 13 + shift) % 5000));
                ids.push(102);
                format!("{}\n", serde_json::json!({ "input_ids": ids }))
            })
            .collect();
        std::fs::write(dir.path().join(name), jsonl).unwrap();
        dir.path().join(name)
    };
    let (clean, corrupt) = (prompts("clean.jsonl", 0), prompts("corrupt.jsonl", 1234));
    let patched_layer = "encoder.layer.2.attention";
    let _ = extract(
        &model,
        &clean,
        patched_layer,
        &dir.path().join("clean.npz"),
        &["--pool", "none"],
    );
    let patch = format!("{patched_layer}={}", path("clean.npz"));
    let layers = ["encoder.layer.2.attention", "encoder.layer.4.output"];
    let ours = extract(
        &model,
        &corrupt,
        &layers.join(","),
        &dir.path().join("patched.npz"),
        &["--patch", &patch, "--batch-size", "3"],
    );
    let alone = each_alone_with(
        &model,
        &corrupt,
        256,
        &[&format!("--patch={patched_layer}={}", clean.display())],
        &layers,
        dir.path(),
    );
    assert_rows_match(&ours, &alone, &layers, "--patch");

    // The second of two shards into a dataset folder: its samples take the patch rows of their
    // place in the whole input, as the unsharded run's do.
    let shard = dir.path().join("shard1");
    let run = hooks_cmd(&[
        "extract",
        "--model",
        model.to_str().unwrap(),
        "--input",
        corrupt.to_str().unwrap(),
        "--layers",
        layers[1],
        "--patch",
        &patch,
        "--window",
        "2",
        "--shard",
        "1/2",
        "--out",
        shard.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let folder = hooks::Dataset::open(&shard).unwrap();
    let rows = folder.array(layers[1]).unwrap();
    let mask = ours.get("attention_mask").unwrap();
    let whole = ours.get(layers[1]).unwrap();
    let wanted: Vec<Tensor> = (2..4)
        .map(|i| {
            let len = mask.get(i).sum(Kind::Int64).int64_value(&[]);
            whole.get(i).narrow(0, 0, len)
        })
        .collect();
    assert_within(&rows, &Tensor::cat(&wanted, 0), "--patch in shard 1/2");
    let unpatched = extract(
        &model,
        &corrupt,
        &layers.join(","),
        &dir.path().join("corrupt.npz"),
        &[],
    );
    let moved = (ours.get(layers[1]).unwrap() - unpatched.get(layers[1]).unwrap())
        .abs()
        .max()
        .double_value(&[]);
    assert!(moved > 0.1, "the patch changed what follows it ({moved})");
}

/// `--mean-ablate`, `--scale` and `--steer` limited to positions, interleaved, on
/// all-MiniLM-L6-v2 in padded batches of mixed lengths: positions count within each sample (`-1`
/// is its last real token, never padding), as Python indexes each sample alone, and the flags
/// apply in the order given.
#[test]
fn positioned_interventions_count_within_each_sample() {
    let Some(model) = minilm() else { return };
    let python = hooks_test_support::python().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let texts = dir.path().join("texts.jsonl");
    let jsonl: String = format!("{SENTENCES}Hi.\nTwo words\n")
        .lines()
        .map(|t| format!("{}\n", serde_json::json!({ "text": t })))
        .collect();
    std::fs::write(&texts, jsonl).unwrap();
    let (vector, mean) = (path("steer.npy"), path("mean.npy"));
    let _ = hooks_test_support::run_python(
        &python,
        Path::new("-c"),
        &[&format!(
            "import numpy as np; r = np.random.default_rng(1); np.save('{vector}', r.normal(size=384).astype(np.float32)); np.save('{mean}', r.normal(size=384).astype(np.float32))"
        )],
    );
    let layers = ["encoder.layer.3.output", "encoder.layer.5.output"];
    let flags = [
        "--scale=encoder.layer.1.output@-0.5:0,-1".to_owned(),
        format!("--steer=encoder.layer.2.output={vector}@3:-1"),
        format!("--mean-ablate=encoder.layer.2.attention={mean}"),
        format!("--steer=encoder.layer.2.output={vector}@-2:2:"),
        "--scale=encoder.layer.3.output@2:-2:".to_owned(),
    ];
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend(["--batch-size", "3"]);
    let ours = extract(&model, &texts, &layers.join(","), &dir.path().join("edited.npz"), &args);
    let options: Vec<&str> = flags.iter().map(String::as_str).collect();
    let alone = each_alone_with(&model, &texts, 256, &options, &layers, dir.path());
    assert_rows_match(&ours, &alone, &layers, "positioned interventions");
    let plain = extract(&model, &texts, &layers.join(","), &dir.path().join("plain.npz"), &[]);
    let moved = (ours.get(layers[1]).unwrap() - plain.get(layers[1]).unwrap())
        .abs()
        .max()
        .double_value(&[]);
    assert!(moved > 0.1, "the interventions changed the last layer ({moved})");
}

/// Every bad `--ablate`, `--steer` and `--patch`: one line naming the problem, exit 1, and no
/// output file or folder.
#[test]
fn bad_interventions_get_one_line_and_no_output() {
    let Some(model) = minilm() else { return };
    let python = hooks_test_support::python().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let texts = dir.path().join("texts.txt");
    std::fs::write(&texts, SENTENCES).unwrap();
    let (short, wide, good) = (path("short.npy"), path("f64.npy"), path("good.npy"));
    let _ = hooks_test_support::run_python(
        &python,
        Path::new("-c"),
        &[&format!(
            "import numpy as np; np.save('{short}', np.ones(300, np.float32)); np.save('{wide}', np.ones(384)); np.save('{good}', np.ones(384, np.float32))"
        )],
    );
    let model_s = model.to_str().unwrap();
    let texts_s = texts.to_str().unwrap();
    let layer = "encoder.layer.3.output";
    let _ = extract(&model, &texts, layer, &dir.path().join("src.npz"), &[]);
    let _ = extract(
        &model,
        &texts,
        layer,
        &dir.path().join("pooled.npz"),
        &["--pool", "mean"],
    );
    let positions = "embeddings.position_embeddings";
    let _ = extract(&model, &texts, positions, &dir.path().join("positions.npz"), &[]);
    let two = dir.path().join("two.txt");
    std::fs::write(&two, "The cat sat on the mat.\nA dog.\n").unwrap();
    let _ = extract(&model, &two, layer, &dir.path().join("two.npz"), &[]);
    let other_lengths = dir.path().join("other.txt");
    std::fs::write(&other_lengths, "One.\nTwo.\nThree.\n").unwrap();
    let _ = extract(&model, &other_lengths, layer, &dir.path().join("other.npz"), &[]);

    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--steer".into(), format!("{layer}={short}@2")],
            "holds 300 values, and `encoder.layer.3.output` has 384 features",
        ),
        (
            vec!["--steer".into(), format!("{layer}={wide}@2")],
            "holds float64 values of shape [384]",
        ),
        (vec!["--steer".into(), format!("{layer}={short}")], "no `@SCALE`"),
        (
            vec!["--steer".into(), format!("{layer}={short}@inf")],
            "not a finite number",
        ),
        (
            vec!["--steer".into(), format!("{layer}={}@1", path("nope.npy"))],
            "does not exist",
        ),
        (
            vec!["--ablate".into(), "encoder.layer.3.outptu".into()],
            "did you mean `encoder.layer.3.output`?",
        ),
        (
            vec!["--ablate".into(), "encoder.layer.0.attention.self.attn_weights".into()],
            "cannot intervene on",
        ),
        (
            vec!["--patch".into(), format!("encoder.layer.4.output={}", path("src.npz"))],
            "holds no array `encoder.layer.4.output`",
        ),
        (
            vec!["--patch".into(), format!("{layer}={}", path("pooled.npz"))],
            "pooled or without a token axis",
        ),
        (
            vec!["--patch".into(), format!("{layer}={}", path("two.npz"))],
            "holds 2 samples, and this run has 3",
        ),
        (
            vec!["--patch".into(), format!("{layer}={}", path("other.npz"))],
            "tokens in",
        ),
        (
            vec!["--patch".into(), format!("encoder.layer.*.output={}", path("src.npz"))],
            "not a pattern",
        ),
        // `[1, T, H]` for a whole batch: one sample's rows cannot replace it.
        (
            vec!["--patch".into(), format!("{positions}={}", path("positions.npz"))],
            "`embeddings.position_embeddings` has no batch axis",
        ),
        (
            vec![
                "--patch".into(),
                format!("{layer}={}", path("src.npz")),
                "--patch".into(),
                format!("{layer}={}", path("src.npz")),
            ],
            "is given twice",
        ),
        (
            vec!["--patch".into(), format!("{layer}={}", dir.path().display())],
            "is a folder",
        ),
        (
            vec!["--steer".into(), format!("{layer}={}@1", dir.path().display())],
            "is a folder",
        ),
        (
            vec!["--steer".into(), format!("{layer}={good}@2:99")],
            "input 1: position 99 is out of range for a sample of",
        ),
        (
            vec!["--steer".into(), format!("{layer}={good}@2:-99")],
            "position -99 is out of range",
        ),
        (
            vec!["--steer".into(), format!("{layer}={good}@2:1:2:3")],
            "the positions `1:2:3` are not Python indexes and slices",
        ),
        (
            vec!["--steer".into(), format!("{layer}={good}@2:300:")],
            "the positions hold no token of any input",
        ),
        (
            vec!["--scale".into(), layer.into()],
            "invalid `--scale encoder.layer.3.output`",
        ),
        (
            vec!["--scale".into(), format!("{layer}@x")],
            "`x` is not a finite number",
        ),
        (
            vec!["--scale".into(), format!("{layer}@2:")],
            "the positions `` are not",
        ),
        (
            vec!["--mean-ablate".into(), format!("{layer}={short}")],
            "`--mean-ablate`: `",
        ),
        (vec!["--mean-ablate".into(), layer.into()], "invalid `--mean-ablate"),
        // `[1, T, H]` for a whole batch of 3: its positions are not any one sample's.
        (
            vec!["--scale".into(), format!("{positions}@2:0")],
            "positions count over the batch's 3 samples",
        ),
    ];
    for (args, needle) in &cases {
        for out in ["out.npz", "folder"] {
            let out = dir.path().join(out);
            let mut all = vec![
                "extract",
                "--model",
                model_s,
                "--input",
                texts_s,
                "--layers",
                "encoder.layer.5.output",
                "--out",
                out.to_str().unwrap(),
            ];
            all.extend(args.iter().map(String::as_str));
            fails_with(&hooks_cmd(&all), needle);
            assert!(!out.exists(), "{args:?} left {}", out.display());
        }
    }
}

/// The activation-patching example, run as the README runs it: at the last layer, whose output is
/// the last hidden state, a patch's effect is plain arithmetic on the clean and corrupted runs'
/// hidden states (`hooks extract`), which this test redoes: the corrupted states with one
/// position's row taken from the clean run, mean-pooled, cosine to the clean embedding.
#[test]
fn the_patching_example_writes_the_effect_of_each_patch() {
    let Some(model) = minilm() else { return };
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/activation_patching");
    assert!(
        example.is_file(),
        "`cargo test` builds the examples; {} is missing",
        example.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("patching");
    let (clean, corrupt) = ("The cat sat on the mat.", "The dog sat on the mat.");
    let run = Command::new(&example)
        .args([
            "--model",
            model.to_str().unwrap(),
            "--clean",
            clean,
            "--corrupt",
            corrupt,
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let png = std::fs::read(dir.path().join("patching.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a drawn PNG");
    let effect = load_activations(dir.path().join("patching.npz")).unwrap();
    let effect = effect.get("effect").unwrap();
    assert_eq!(effect.size(), [6, 9], "6 blocks x 9 tokens");

    let texts = dir.path().join("texts.txt");
    std::fs::write(&texts, format!("{clean}\n{corrupt}\n")).unwrap();
    let last = "encoder.layer.5.output";
    let hidden = extract(&model, &texts, last, &dir.path().join("hidden.npz"), &[]);
    let hidden = hidden.get(last).unwrap().to_kind(Kind::Double);
    let (clean, corrupt) = (hidden.get(0), hidden.get(1));
    let embed = |h: &Tensor| h.mean_dim(0, false, Kind::Double);
    let cosine = |a: &Tensor, b: &Tensor| (a.dot(b) / (a.norm() * b.norm())).double_value(&[]);
    let reference = embed(&clean);
    let m_corrupt = cosine(&embed(&corrupt), &reference);
    for p in 0..9 {
        let patched = corrupt.copy();
        patched.get(p).copy_(&clean.get(p));
        let want = (cosine(&embed(&patched), &reference) - m_corrupt) / (1.0 - m_corrupt);
        let got = effect.double_value(&[5, p]);
        assert!((got - want).abs() < 1e-4, "position {p}: {got} vs {want}");
    }
    // The token that differs carries the effect at the first layer.
    let first: Vec<f64> = (0..9).map(|p| effect.double_value(&[0, p])).collect();
    let top = (0..9).max_by(|&a, &b| first[a].total_cmp(&first[b])).unwrap();
    assert_eq!(top, 2, "`cat`/`dog` is token 2: {first:?}");
}

/// Command lines clap refuses are one line too, naming the option and pointing at `--help`.
#[test]
fn refused_command_lines_are_one_line() {
    fails_with(
        &hooks_cmd(&["extract", "--layers", "pooler", "--batch-size", "0", "--out", "x.npz"]),
        "invalid value '0' for '--batch-size <BATCH_SIZE>'",
    );
    fails_with(&hooks_cmd(&["extract", "--out", "x.npz"]), "--layers <LIST>");
    fails_with(
        &hooks_cmd(&["compare", "a.npz", "--minibatch", "2", "--out", "m.csv"]),
        "--minibatch",
    );
    let help = hooks_cmd(&["extract", "--help"]);
    assert!(
        help.status.success() && stdout(&help).contains("--ablate"),
        "{}",
        stdout(&help)
    );
}

/// `--ablate` and `--steer` apply in the order given on the command line: ablating a layer then
/// steering it leaves the steering vector at every position; the other way round leaves zeros.
#[test]
fn interventions_apply_in_the_order_given() {
    let Some(python) = hooks_test_support::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("llama");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hooks-models/tests/py/reference.py");
    let _ = hooks_test_support::run_python(&python, &script, &["build", "llama", model.to_str().unwrap()]);
    let input = dir.path().join("ids.jsonl");
    std::fs::write(&input, "{\"input_ids\": [5, 17, 3]}\n{\"input_ids\": [8, 2]}\n").unwrap();
    let vec = dir.path().join("vec.npy");
    let values: Vec<f32> = (0..48).map(|i| i as f32 / 8.0 - 3.0).collect();
    Tensor::from_slice(&values).write_npy(&vec).unwrap();
    let steer = format!("model.layers.0={}@2", vec.display());
    let layer = "model.layers.0";
    let (model_s, input_s) = (model.to_str().unwrap(), input.to_str().unwrap());
    let run = |name: &str, edits: &[&str]| {
        let out = dir.path().join(name);
        let mut args = vec![
            "extract", "--model", model_s, "--input", input_s, "--layers", layer, "--out",
        ];
        let out_s = out.to_str().unwrap().to_owned();
        args.push(&out_s);
        args.extend(edits);
        let run = hooks_cmd(&args);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        load_activations(&out).unwrap().get(layer).unwrap().shallow_clone()
    };
    let want = Tensor::from_slice(&values) * 2.0;
    let steered_last = run("a.npz", &["--ablate", layer, "--steer", &steer]);
    for (row, len) in [(0, 3), (1, 2)] {
        for t in 0..len {
            let diff = (steered_last.get(row).get(t) - &want).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "ablate then steer: row {row} token {t} differs by {diff}");
        }
    }
    let ablated_last = run("b.npz", &["--steer", &steer, "--ablate", layer]);
    assert_eq!(
        ablated_last.abs().max().double_value(&[]),
        0.0,
        "steer then ablate leaves zeros"
    );
}
