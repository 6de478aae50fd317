//! `hooks probe` and `extract --keep-keys`, run as a user runs them on a real MiniLM extraction
//! of a labelled task, checked against scikit-learn and numpy on the same folds
//! (`tests/py/probe_reference.py`).
#![allow(clippy::unwrap_used)] // a failing test should fail loudly

mod common;

use std::path::Path;
use std::process::Output;

use common::hooks_cmd;
use hooks::NpzValue;
use tch::Tensor;

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn script() -> std::path::PathBuf {
    hooks_test_support::workspace_root().join("hooks-cli/tests/py/probe_reference.py")
}

/// `task.jsonl` (with blank lines) and the lines its samples are on; `None` without Python.
fn task(dir: &Path) -> Option<(std::path::PathBuf, std::path::PathBuf, Vec<i64>)> {
    let python = hooks_test_support::python()?;
    let _ = hooks_test_support::run_python(&python, &script(), &["task", dir.to_str().unwrap()]);
    let lines: Vec<i64> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected_lines.json")).unwrap()).unwrap();
    Some((python, dir.join("task.jsonl"), lines))
}

/// The CSV's rows after the header, as `(layer, fields)`.
fn rows(csv: &Path) -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "layer,method,accuracy,accuracy_std,auroc,control_accuracy,selectivity,n"
    );
    lines
        .map(|l| {
            let fields: Vec<String> = l.split(',').map(str::to_owned).collect();
            (fields[0].clone(), fields[1..].to_vec())
        })
        .collect()
}

fn num(field: &str) -> f64 {
    field.parse().unwrap()
}

/// Runs the reference on `acts` with the folds `hooks probe` wrote beside `csv`.
fn reference(python: &Path, acts: &Path, labels: &str, csv: &Path, extra: &[&str]) -> serde_json::Value {
    let out = csv.with_extension("reference.json");
    let folds = csv.with_file_name(format!("{}.folds.npy", csv.file_stem().unwrap().to_str().unwrap()));
    let mut args = vec![
        "check",
        acts.to_str().unwrap(),
        labels,
        folds.to_str().unwrap(),
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    let _ = hooks_test_support::run_python(python, &script(), &args);
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// Every row of the CSV against the reference: the same fold accuracies (the same predictions),
/// AUROC within 1e-6, and each direction's cosine with scikit-learn's ≥ 0.999.
fn agrees(csv: &Path, directions: &Path, reference: &serde_json::Value, classes: usize) {
    let dirs: Vec<(String, NpzValue)> = hooks::load_npz(directions).unwrap();
    let rows = rows(csv);
    assert_eq!(rows.len(), reference.as_object().unwrap().len());
    for (layer, fields) in rows {
        let want = &reference[&layer];
        let folds: Vec<f64> = serde_json::from_value(want["fold_accuracies"].clone()).unwrap();
        let mean = folds.iter().sum::<f64>() / folds.len() as f64;
        let std = (folds.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / folds.len() as f64).sqrt();
        assert!(
            (num(&fields[1]) - mean).abs() < 1e-12,
            "{layer}: accuracy {} vs sklearn {mean}",
            fields[1]
        );
        assert!(
            (num(&fields[2]) - std).abs() < 1e-12,
            "{layer}: std {} vs {std}",
            fields[2]
        );
        if classes == 2 {
            let aurocs: Vec<f64> = serde_json::from_value(want["aurocs"].clone()).unwrap();
            let auroc = aurocs.iter().sum::<f64>() / aurocs.len() as f64;
            assert!(
                (num(&fields[3]) - auroc).abs() < 1e-6,
                "{layer}: auroc {} vs {auroc}",
                fields[3]
            );
        } else {
            assert_eq!(fields[3], "", "no AUROC for {classes} classes");
        }
        let NpzValue::Tensor(ours) = &dirs.iter().find(|(n, _)| *n == layer).unwrap().1 else {
            panic!()
        };
        assert_eq!(ours.kind(), tch::Kind::Float);
        let ours: Vec<f64> = Vec::try_from(ours.to_kind(tch::Kind::Double).reshape([-1])).unwrap();
        let theirs: Vec<f64> = match classes {
            2 => serde_json::from_value(want["direction"].clone()).unwrap(),
            _ => serde_json::from_value::<Vec<Vec<f64>>>(want["direction"].clone())
                .unwrap()
                .concat(),
        };
        assert_eq!(ours.len(), theirs.len());
        let h = ours.len() / if classes == 2 { 1 } else { classes };
        for (a, b) in ours.chunks(h).zip(theirs.chunks(h)) {
            let norm = a.iter().map(|x| x * x).sum::<f64>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{layer}: a direction of norm {norm}");
            assert!(cosine(a, b) >= 0.999, "{layer}: cosine {}", cosine(a, b));
        }
    }
}

/// Pooled layers of a labelled task: `--keep-keys` and `sample_index` over blank lines, then
/// each probe against scikit-learn (two and three classes), and the control task at chance.
#[test]
fn probes_match_scikit_learn_on_the_same_folds() {
    let dir = tempfile::tempdir().unwrap();
    let Some((python, input, lines)) = task(dir.path()) else {
        return;
    };
    let acts = dir.path().join("acts.npz");
    ok(&hooks_cmd(&[
        "extract",
        "--input",
        input.to_str().unwrap(),
        "--keep-keys",
        "sentiment,topic",
        "--layers",
        "encoder.layer.0,encoder.layer.3,encoder.layer.5",
        "--pool",
        "mean",
        "--out",
        acts.to_str().unwrap(),
    ]));
    let arrays = hooks::load_npz(&acts).unwrap();
    let get = |name: &str| &arrays.iter().find(|(n, _)| n == name).unwrap().1;
    let NpzValue::Tensor(index) = get("sample_index") else {
        panic!()
    };
    assert_eq!(index.kind(), tch::Kind::Int64);
    assert_eq!(
        Vec::<i64>::try_from(index).unwrap(),
        lines,
        "sample_index skips the blank lines"
    );
    let NpzValue::Tensor(sentiment) = get("meta.sentiment") else {
        panic!()
    };
    assert_eq!(sentiment.kind(), tch::Kind::Int64);
    let NpzValue::Strings { strings, .. } = get("meta.topic") else {
        panic!()
    };
    assert_eq!(strings.len(), lines.len());
    let text = std::fs::read_to_string(&input).unwrap();
    let nth: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (i, value) in nth.iter().enumerate() {
        assert_eq!(strings[i], value["topic"].as_str().unwrap());
        assert_eq!(sentiment.int64_value(&[i as i64]), value["sentiment"].as_i64().unwrap());
    }

    let csv = dir.path().join("results.csv");
    let dirs = dir.path().join("dirs.npz");
    let (a, c, d) = (acts.to_str().unwrap(), csv.to_str().unwrap(), dirs.to_str().unwrap());
    for (method, extra) in [
        ("logistic", vec!["--C", "0.5"]),
        ("ridge", vec!["--alpha", "3"]),
        ("mean-diff", vec![]),
    ] {
        let mut args = vec!["probe", "--activations", a, "--labels", "meta.sentiment", "--out", c];
        args.extend([
            "--method",
            method,
            "--control",
            "shuffle",
            "--directions",
            d,
            "--seed",
            "3",
        ]);
        args.extend(&extra);
        ok(&hooks_cmd(&args));
        let mut flags = vec!["--method", method];
        flags.extend(&extra);
        agrees(
            &csv,
            &dirs,
            &reference(&python, &acts, "meta.sentiment", &csv, &flags),
            2,
        );
        for (layer, fields) in rows(&csv) {
            let (accuracy, control) = (num(&fields[1]), num(&fields[4]));
            assert_eq!(fields[0], method);
            assert!(accuracy > 0.7, "{method} {layer}: the task is learnable ({accuracy})");
            assert!(
                (0.3..=0.7).contains(&control),
                "{method} {layer}: control {control} is not at chance"
            );
            assert!((num(&fields[5]) - (accuracy - control)).abs() < 1e-15);
            assert_eq!(fields[6], "240");
        }
    }
    let folds = Tensor::read_npy(dir.path().join("results.folds.npy")).unwrap();
    assert_eq!((folds.kind(), folds.size()), (tch::Kind::Int64, vec![240]));

    // The direction steers as it stands: `--steer LAYER=DIRS.npz:LAYER@S` adds S × it to the
    // layer's output, so the mean-pooled last block moves by exactly that.
    ok(&hooks_cmd(&[
        "probe",
        "--activations",
        a,
        "--labels",
        "meta.sentiment",
        "--out",
        c,
        "--directions",
        d,
    ]));
    let steered = dir.path().join("steered.npz");
    let steer = format!("encoder.layer.5={d}:encoder.layer.5@3");
    ok(&hooks_cmd(&[
        "extract",
        "--input",
        input.to_str().unwrap(),
        "--keep-keys",
        "sentiment,topic",
        "--layers",
        "encoder.layer.5",
        "--pool",
        "mean",
        "--steer",
        &steer,
        "--out",
        steered.to_str().unwrap(),
    ]));
    let plain = hooks::load_numeric(&acts).unwrap();
    let moved = hooks::load_numeric(&steered).unwrap();
    let NpzValue::Tensor(direction) = &hooks::load_npz(&dirs)
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == "encoder.layer.5")
        .unwrap()
        .1
    else {
        panic!()
    };
    let shift = moved.get("encoder.layer.5").unwrap() - plain.get("encoder.layer.5").unwrap();
    let error = (shift - direction.unsqueeze(0) * 3.0).abs().max().double_value(&[]);
    assert!(
        error < 1e-5,
        "the steered output moved by 3 × the direction, off by {error}"
    );

    // Three classes: multinomial logistic and one-vs-all ridge.
    for method in ["logistic", "ridge"] {
        ok(&hooks_cmd(&[
            "probe",
            "--activations",
            a,
            "--labels",
            "meta.topic",
            "--out",
            c,
            "--method",
            method,
            "--directions",
            d,
        ]));
        agrees(
            &csv,
            &dirs,
            &reference(&python, &acts, "meta.topic", &csv, &["--method", method]),
            3,
        );
    }
}

/// A token-level probe from a dataset folder (one label per real token, from a file), with the
/// type control; the same rows from an `.npz` give the same CSV.
#[test]
fn token_level_probes_read_folders_and_use_the_type_control() {
    let dir = tempfile::tempdir().unwrap();
    let Some((python, input, _)) = task(dir.path()) else {
        return;
    };
    let (folder, npz) = (dir.path().join("acts"), dir.path().join("acts.npz"));
    for out in [&folder, &npz] {
        ok(&hooks_cmd(&[
            "extract",
            "--input",
            input.to_str().unwrap(),
            "--keep-keys",
            "sentiment,topic",
            "--layers",
            "encoder.layer.4",
            "--max-samples",
            "120",
            "--out",
            out.to_str().unwrap(),
        ]));
    }
    // Each token carries its sentence's sentiment: a label only context tells.
    let dataset = hooks::Dataset::open(&folder).unwrap();
    let offsets = Vec::<i64>::try_from(dataset.array("offsets").unwrap()).unwrap();
    let hooks::SampleColumn::Int64(sentiment) = dataset.column("meta.sentiment").unwrap() else {
        panic!()
    };
    let mut labels = String::new();
    for (i, s) in sentiment.iter().enumerate() {
        for _ in offsets[i]..offsets[i + 1] {
            labels.push_str(if *s == 1 { "pos\n" } else { "neg\n" });
        }
    }
    let label_file = dir.path().join("token_labels.txt");
    std::fs::write(&label_file, labels).unwrap();
    let l = label_file.to_str().unwrap();
    let (csv, csv2, dirs) = (
        dir.path().join("t.csv"),
        dir.path().join("t2.csv"),
        dir.path().join("t.npz"),
    );
    ok(&hooks_cmd(&[
        "probe",
        "--activations",
        folder.to_str().unwrap(),
        "--labels",
        l,
        "--out",
        csv.to_str().unwrap(),
        "--control",
        "type",
        "--directions",
        dirs.to_str().unwrap(),
    ]));
    agrees(&csv, &dirs, &reference(&python, &npz, l, &csv, &["--tokens"]), 2);
    let rows1 = rows(&csv);
    let (accuracy, control) = (num(&rows1[0].1[1]), num(&rows1[0].1[4]));
    // The task has a few dozen token types, each given one random label: a linear probe
    // memorises them (Hewitt & Liang's point), so the type control scores high where a shuffle
    // of the same labels stays at chance.
    assert!(
        accuracy > 0.7 && control > 0.9,
        "accuracy {accuracy}, type control {control}"
    );
    assert!((num(&rows1[0].1[5]) - (accuracy - control)).abs() < 1e-15);
    ok(&hooks_cmd(&[
        "probe",
        "--activations",
        folder.to_str().unwrap(),
        "--labels",
        l,
        "--out",
        csv2.to_str().unwrap(),
        "--control",
        "shuffle",
    ]));
    let shuffled = num(&rows(&csv2)[0].1[4]);
    assert!((0.35..=0.65).contains(&shuffled), "shuffle control {shuffled}");
    assert_eq!(rows1[0].1[6], offsets.last().unwrap().to_string());
    ok(&hooks_cmd(&[
        "probe",
        "--activations",
        npz.to_str().unwrap(),
        "--labels",
        l,
        "--out",
        csv2.to_str().unwrap(),
        "--control",
        "type",
    ]));
    assert_eq!(rows(&csv2), rows1, "the folder and the .npz are the same rows");
    // Per-sample labels do not fit token rows.
    let out = hooks_cmd(&[
        "probe",
        "--activations",
        folder.to_str().unwrap(),
        "--labels",
        "meta.sentiment",
        "--out",
        csv2.to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("one label per sample"),
        "{out:?}"
    );
}

/// Each refusal is one line, and nothing is written.
#[test]
fn bad_labels_and_features_are_one_line_errors_that_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let f = (tch::Kind::Float, tch::Device::Cpu);
    let x = Tensor::randn([30, 4], f);
    let bad = Tensor::randn([30, 4], f);
    let _ = bad.get(3).get(1).fill_(f64::NAN);
    let acts = dir.path().join("acts.npz");
    hooks::save_npz(
        [
            ("h", hooks::NpzArray::Tensor(&x)),
            ("nan", hooks::NpzArray::Tensor(&bad)),
        ],
        &acts,
    )
    .unwrap();
    let write = |name: &str, labels: &[&str]| {
        let path = dir.path().join(name);
        std::fs::write(&path, labels.join("\n") + "\n").unwrap();
        path.to_str().unwrap().to_owned()
    };
    let two: Vec<&str> = (0..30).map(|i| if i % 2 == 0 { "a" } else { "b" }).collect();
    let three: Vec<&str> = (0..30).map(|i| ["a", "b", "c"][i % 3]).collect();
    let few: Vec<&str> = (0..30).map(|i| if i < 3 { "a" } else { "b" }).collect();
    let cases = [
        (
            write("short.txt", &two[..29]),
            "h",
            vec![],
            "holds 29 labels and the layers have 30 rows",
        ),
        (write("one.txt", &["a"; 30]), "h", vec![], "two classes"),
        (
            write("few.txt", &few),
            "h",
            vec![],
            "class `a` has 3 row(s), fewer than the 5 folds",
        ),
        (write("two.txt", &two), "nan", vec![], "NaN or infinite"),
        (
            write("three.txt", &three),
            "h",
            vec!["--method", "mean-diff"],
            "binary probe and the labels have 3 classes",
        ),
    ];
    let before = std::fs::read_dir(dir.path()).unwrap().count();
    for (labels, layer, extra, needle) in cases {
        let mut args = vec![
            "probe",
            "--activations",
            acts.to_str().unwrap(),
            "--labels",
            &labels,
            "--layers",
            layer,
            "--out",
        ];
        let (out_path, plot, dirs) = (
            dir.path().join("r.csv"),
            dir.path().join("p.png"),
            dir.path().join("d.npz"),
        );
        let (out_s, plot_s, dirs_s) = (
            out_path.to_str().unwrap(),
            plot.to_str().unwrap(),
            dirs.to_str().unwrap(),
        );
        args.extend([out_s, "--plot", plot_s, "--directions", dirs_s, "--control", "shuffle"]);
        args.extend(&extra);
        let out = hooks_cmd(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.lines().count() == 1 && err.contains(needle),
            "{needle}: {err}"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            before,
            "{needle}: a file was left"
        );
    }
}
