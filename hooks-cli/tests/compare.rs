//! `hooks compare`, run as a user runs it, its CSV read back and checked against the numpy
//! reference of `tests/py/analysis_reference.py` (written from the papers, not from our code).
#![allow(clippy::unwrap_used)] // a failing test should fail loudly

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::hooks_cmd;
use hooks::{save_activations, Activations};
use tch::{Device, Kind, Tensor};

fn ok(out: &Output) {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The command failed with one line on stderr containing every needle, and left no file in
/// `dir` but the inputs.
fn fails_with(out: &Output, needles: &[&str], dir: &Path, inputs: usize) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "succeeded");
    assert_eq!(err.lines().count(), 1, "want one line on stderr, got:\n{err}");
    for needle in needles {
        assert!(
            err.starts_with("error: ") && err.contains(needle),
            "`{needle}` not in: {err}"
        );
    }
    let files = std::fs::read_dir(dir).unwrap().count();
    assert_eq!(files, inputs, "an output or temporary was left behind");
}

/// The numpy reference's matrices over every array of `npz` (token-level ones cut by
/// `mask_from`'s attention_mask).
fn reference(npz: &Path, mask_from: Option<&Path>) -> Option<serde_json::Value> {
    let python = hooks_test_support::python()?;
    let out = npz.with_extension("json");
    let script = hooks_test_support::workspace_root().join("tests/py/analysis_reference.py");
    let mut args = vec![npz.to_str().unwrap(), out.to_str().unwrap(), "--batch", "16"];
    if let Some(m) = mask_from {
        args.extend(["--mask-from", m.to_str().unwrap()]);
    }
    let _ = hooks_test_support::run_python(&python, &script, &args);
    Some(serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap())
}

fn matrix(reference: &serde_json::Value, metric: &str) -> Vec<Vec<f64>> {
    serde_json::from_value(reference[metric].clone()).unwrap()
}

/// A CSV file's records, RFC 4180 quoting undone.
fn read_csv(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut records = vec![];
    let (mut record, mut field, mut quoted, mut chars) = (vec![], String::new(), false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => record.push(std::mem::take(&mut field)),
            ('\n', false) => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (c, _) => field.push(c),
        }
    }
    records
}

/// The CSV's column names, row names and values.
fn parse(path: &Path) -> (Vec<String>, Vec<String>, Vec<Vec<f64>>) {
    let records = read_csv(path);
    assert_eq!(records[0][0], "", "the header starts with an empty cell");
    let columns = records[0][1..].to_vec();
    let rows = records[1..].iter().map(|r| r[0].clone()).collect();
    let values = records[1..]
        .iter()
        .map(|r| {
            assert_eq!(r.len(), columns.len() + 1, "{r:?}");
            r[1..].iter().map(|v| v.parse::<f64>().unwrap()).collect()
        })
        .collect();
    (columns, rows, values)
}

fn assert_close(ours: &[Vec<f64>], theirs: &[Vec<f64>], tol: f64) {
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().flatten().zip(theirs.iter().flatten()) {
        assert!(
            (a - b).abs() <= tol,
            "ours {a}, numpy {b}\nours {ours:?}\nnumpy {theirs:?}"
        );
    }
}

const WEIRD: &str = "odd,name \"quoted\"";

/// Layers over 40 samples, different from one another, in `a.npz`; `b.npz` a second file over
/// the same samples; `reference/all.npz` every layer of both, for the reference.
fn files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    tch::manual_seed(5);
    let f = (Kind::Float, Device::Cpu);
    let x = Tensor::randn([40, 8], f);
    let y = (x.matmul(&Tensor::randn([8, 6], f))).tanh() + Tensor::randn([40, 6], f) * 0.5;
    let z = x.narrow(1, 0, 5).square() + Tensor::randn([40, 5], f) * 0.2;
    let w = &x.narrow(1, 0, 7) * 2.0 + Tensor::randn([40, 7], f);
    let ids = Tensor::zeros([40, 3], (Kind::Int64, Device::Cpu));
    let mut a = Activations::new();
    a.insert("l0", x.shallow_clone());
    a.insert("l1", y.shallow_clone());
    a.insert(WEIRD, z.shallow_clone());
    a.insert("input_ids", ids);
    let mut b = Activations::new();
    b.insert("m0", w.shallow_clone());
    let mut all = Activations::new();
    for (n, t) in [("l0", x), ("l1", y), (WEIRD, z), ("m0", w)] {
        all.insert(n, t);
    }
    let pa = save_activations(&a, dir.join("a.npz")).unwrap();
    let pb = save_activations(&b, dir.join("b.npz")).unwrap();
    let pall = save_activations(&all, dir.join("reference/all.npz")).unwrap();
    (pa, pb, pall)
}

#[test]
fn csv_holds_every_layer_against_every_layer_as_numpy_computes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, all) = files(dir.path());
    let Some(reference) = reference(&all, None) else {
        return;
    };
    let out = dir.path().join("m.csv");
    let (a, b, out_s) = (a.to_str().unwrap(), b.to_str().unwrap(), out.to_str().unwrap());
    for (args, metric) in [
        (vec![], "cka"),
        (vec!["--unbiased"], "unbiased"),
        (vec!["--minibatch", "16"], "minibatch"),
        (vec!["--metric", "svcca"], "svcca"),
    ] {
        // One file: its layers with one another, input_ids left out.
        let mut cmd = vec!["compare", a, "--out", out_s];
        cmd.extend(&args);
        ok(&hooks_cmd(&cmd));
        let (columns, rows, values) = parse(&out);
        assert_eq!(columns, ["l0", "l1", WEIRD]);
        assert_eq!(rows, columns);
        let want = matrix(&reference, metric);
        let want: Vec<Vec<f64>> = want[..3].iter().map(|r| r[..3].to_vec()).collect();
        assert_close(&values, &want, 1e-9);

        // Two files: a's layers × b's.
        let mut cmd = vec!["compare", a, b, "--out", out_s];
        cmd.extend(&args);
        ok(&hooks_cmd(&cmd));
        let (columns, rows, values) = parse(&out);
        assert_eq!(
            (columns, rows),
            (vec!["m0".to_owned()], vec!["l0".to_owned(), "l1".into(), WEIRD.into()])
        );
        let want = matrix(&reference, metric);
        assert_close(&values, &[vec![want[0][3]], vec![want[1][3]], vec![want[2][3]]], 1e-9);
    }
    // The values differ from layer to layer (so a constant would not pass).
    let cka = matrix(&reference, "cka");
    assert!(cka[0][1] < 0.9 && (cka[0][1] - cka[0][2]).abs() > 0.05, "{cka:?}");

    // --layers-a / --layers-b pick and order rows and columns.
    ok(&hooks_cmd(&[
        "compare",
        a,
        "--layers-a",
        "l1,l0",
        "--layers-b",
        "l0",
        "--out",
        out_s,
    ]));
    let (columns, rows, values) = parse(&out);
    assert_eq!(
        (columns, rows),
        (vec!["l0".to_owned()], vec!["l1".to_owned(), "l0".into()])
    );
    assert_close(&values, &[vec![cka[1][0]], vec![1.0]], 1e-9);
    // Every value has at least 6 significant digits.
    let text = std::fs::read_to_string(&out).unwrap();
    let first = text.lines().nth(1).unwrap().split(',').nth(1).unwrap();
    assert!(first.trim_start_matches("0.").len() >= 6, "{first}");
}

#[test]
fn token_level_arrays_use_real_tokens_only() {
    let dir = tempfile::tempdir().unwrap();
    tch::manual_seed(9);
    let f = (Kind::Float, Device::Cpu);
    let lengths = [9i64, 3, 7, 5, 9, 2, 6, 8];
    let mask = Tensor::stack(
        &lengths
            .iter()
            .map(|&l| Tensor::arange(9, (Kind::Int64, Device::Cpu)).lt(l).to_kind(Kind::Int64))
            .collect::<Vec<_>>(),
        0,
    );
    let x = Tensor::randn([8, 9, 6], f);
    let y = x.matmul(&Tensor::randn([6, 4], f)).relu() + Tensor::randn([8, 9, 4], f) * 0.3;
    // Padding holds large values: counting it would change every number.
    let pad = mask.eq(0).unsqueeze(-1);
    let (x, y) = (x.masked_fill(&pad, 50.0), y.masked_fill(&pad, -30.0));
    let mut acts = Activations::new();
    acts.insert("x", x);
    acts.insert("y", y);
    acts.insert("attention_mask", mask);
    let npz = save_activations(&acts, dir.path().join("tokens.npz")).unwrap();
    let Some(reference) = reference(&npz, Some(&npz)) else {
        return;
    };
    let out = dir.path().join("m.csv");
    for (flag, metric) in [(None, "cka"), (Some("--unbiased"), "unbiased")] {
        let mut cmd = vec!["compare", npz.to_str().unwrap(), "--out", out.to_str().unwrap()];
        cmd.extend(flag);
        ok(&hooks_cmd(&cmd));
        let (_, _, values) = parse(&out);
        assert_close(&values, &matrix(&reference, metric), 1e-9);
    }
}

#[test]
fn errors_are_one_line_and_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _, _) = files(dir.path());
    let f = (Kind::Float, Device::Cpu);
    let mut c = Activations::new();
    c.insert("n0", Tensor::randn([30, 4], f));
    let c = save_activations(&c, dir.path().join("c.npz")).unwrap();
    let mut one = Activations::new();
    one.insert("n0", Tensor::randn([1, 4], f));
    let one = save_activations(&one, dir.path().join("one.npz")).unwrap();
    let mut two = Activations::new();
    two.insert("n0", Tensor::randn([2, 4], f));
    two.insert("n1", Tensor::randn([2, 4], f));
    let two = save_activations(&two, dir.path().join("two.npz")).unwrap();
    let inputs = 6; // a.npz, b.npz, reference/, c.npz, one.npz, two.npz
    let (a, c, one) = (a.to_str().unwrap(), c.to_str().unwrap(), one.to_str().unwrap());
    let two = two.to_str().unwrap();
    let (out_path, png_path) = (dir.path().join("m.csv"), dir.path().join("m.png"));
    let (out, png) = (out_path.to_str().unwrap(), png_path.to_str().unwrap());
    let run = |cmd: Vec<&str>| hooks_cmd(&[cmd, vec!["--out", out, "--plot", png]].concat());
    fails_with(
        &run(vec!["compare", a, c]),
        &["40 samples", "30", "a.npz", "c.npz"],
        dir.path(),
        inputs,
    );
    fails_with(
        &run(vec!["compare", a, "--layers-a", "l0,l3"]),
        &["no array `l3`", "did you mean `l0` or `l1`?"],
        dir.path(),
        inputs,
    );
    fails_with(
        &run(vec!["compare", one]),
        &["CKA needs at least 3 rows", "got 1"],
        dir.path(),
        inputs,
    );
    // Two centered rows span one direction: CKA would be 1 whatever the layers.
    fails_with(
        &run(vec!["compare", two]),
        &["CKA needs at least 3 rows", "got 2"],
        dir.path(),
        inputs,
    );
    // The outputs never overwrite an input or each other, and the plot is a PNG.
    let only = |args: Vec<&str>| hooks_cmd(&args);
    fails_with(
        &only(vec!["compare", a, "--out", a]),
        &["is the input", "which it would overwrite"],
        dir.path(),
        inputs,
    );
    fails_with(
        &only(vec!["compare", a, "--out", out, "--plot", a]),
        &["is the input"],
        dir.path(),
        inputs,
    );
    fails_with(
        &only(vec!["compare", a, "--out", out, "--plot", out]),
        &["are both"],
        dir.path(),
        inputs,
    );
    let jpg = dir.path().join("m.jpg");
    fails_with(
        &only(vec!["compare", a, "--out", out, "--plot", jpg.to_str().unwrap()]),
        &["ending in .png"],
        dir.path(),
        inputs,
    );
    let folder = dir.path().join("reference");
    fails_with(
        &only(vec!["compare", a, "--out", out, "--plot", folder.to_str().unwrap()]),
        &["is a folder"],
        dir.path(),
        inputs,
    );
    fails_with(
        &run(vec!["compare", a, "--metric", "svcca", "--unbiased"]),
        &["--metric cka"],
        dir.path(),
        inputs,
    );
}

#[test]
fn plot_is_a_png_of_sane_size() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _, _) = files(dir.path());
    let out = dir.path().join("m.csv");
    let png = dir.path().join("m.png");
    ok(&hooks_cmd(&[
        "compare",
        a.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--plot",
        png.to_str().unwrap(),
    ]));
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert!(
        (300..3000).contains(&width) && (300..3000).contains(&height),
        "{width}×{height}"
    );
    // Text, cells and a colour bar make a PNG of some size; a blank one compresses to little.
    assert!(bytes.len() > 10_000, "{} bytes", bytes.len());
    // Nothing else was left beside it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3 + 2);
}

/// A real extraction, unpooled, written as an .npz and as a dataset folder: the folder gives the
/// matrix the .npz gives (and numpy on real tokens), and the two compare as the same layers.
#[test]
fn a_dataset_folder_compares_like_the_npz_of_the_same_extraction() {
    let Some(python) = hooks_test_support::python() else {
        return;
    };
    let model = hooks_test_support::minilm_dir(&python);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "The cat sat on the mat.\nA longer sentence, with some punctuation; it pads the others!\nCafé crème in Zürich?\nShort one.\nLayers compare with CKA.\n").unwrap();
    let npz = dir.path().join("x.npz");
    let folder = format!("{}/", dir.path().join("x").display());
    for out in [npz.to_str().unwrap(), folder.as_str()] {
        ok(&hooks_cmd(&[
            "extract",
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--layers",
            "encoder.layer.0.output,encoder.layer.3.output,encoder.layer.5.output",
            "--out",
            out,
        ]));
    }
    let Some(reference) = reference(&npz, Some(&npz)) else {
        return;
    };
    let csv = dir.path().join("m.csv");
    let csv_s = csv.to_str().unwrap();
    ok(&hooks_cmd(&["compare", &folder, "--unbiased", "--out", csv_s]));
    let (columns, _, from_folder) = parse(&csv);
    assert_eq!(
        columns,
        [
            "encoder.layer.0.output",
            "encoder.layer.3.output",
            "encoder.layer.5.output"
        ]
    );
    assert_close(&from_folder, &matrix(&reference, "unbiased"), 1e-9);
    assert!(from_folder[0][2] < 0.95, "{from_folder:?}");
    ok(&hooks_cmd(&[
        "compare",
        npz.to_str().unwrap(),
        "--unbiased",
        "--out",
        csv_s,
    ]));
    assert_close(&parse(&csv).2, &from_folder, 1e-9);
    // The folder against the .npz: the same rows, so each layer against itself is 1.
    ok(&hooks_cmd(&["compare", &folder, npz.to_str().unwrap(), "--out", csv_s]));
    let (_, _, across) = parse(&csv);
    for (i, row) in across.iter().enumerate() {
        assert!((row[i] - 1.0).abs() < 1e-9, "{across:?}");
    }
}

/// `--layers-a` takes `*` globs within a segment, trims spaces and keeps each layer once; an
/// attention pattern `[N, heads, T, T]` is left out of the default selection, with a note.
#[test]
fn layer_lists_take_globs_and_attention_patterns_are_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let f = (Kind::Float, Device::Cpu);
    let mut acts = Activations::new();
    acts.insert("enc.0.out", Tensor::randn([6, 4, 3], f));
    acts.insert("enc.1.out", Tensor::randn([6, 4, 3], f));
    acts.insert("enc.0.attn_weights", Tensor::rand([6, 2, 4, 4], f));
    acts.insert("attention_mask", Tensor::ones([6, 4], (Kind::Int64, Device::Cpu)));
    let npz = save_activations(&acts, dir.path().join("t.npz")).unwrap();
    let out = dir.path().join("m.csv");
    let (npz, out_s) = (npz.to_str().unwrap(), out.to_str().unwrap());

    let run = hooks_cmd(&["compare", npz, "--out", out_s]);
    ok(&run);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("left out `enc.0.attn_weights`"), "{stderr}");
    let (columns, rows, _) = parse(&out);
    assert_eq!(columns, ["enc.0.out", "enc.1.out"]);
    assert_eq!(rows, columns);

    ok(&hooks_cmd(&[
        "compare",
        npz,
        "--layers-a",
        "enc.*.out, enc.1.out ,enc.0.out",
        "--out",
        out_s,
    ]));
    let (_, rows, values) = parse(&out);
    assert_eq!(rows, ["enc.0.out", "enc.1.out"], "globbed, trimmed, each once");
    assert!((values[0][0] - 1.0).abs() < 1e-12);
}
