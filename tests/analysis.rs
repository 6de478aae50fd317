//! `hooks::analysis` against numpy implementations written from the papers' definitions
//! (`tests/py/analysis_reference.py`, in the n × n Gram-matrix form), and the invariances the
//! papers prove.
#![allow(clippy::unwrap_used)] // a failing test should fail loudly

use hooks::analysis::{
    compare, linear_cka, minibatch_cka, svcca, unbiased_cka, CompareOptions, Layer, Metric, RowSource, Similarity,
};
use hooks::{save_activations, Activations, Error};
use tch::{Device, Kind, Tensor};

const N: i64 = 240;

fn cpu(kind: Kind) -> (Kind, Device) {
    (kind, Device::Cpu)
}

/// Four layers over the same 240 rows, unlike one another: anisotropic Gaussian features, a
/// nonlinear map of them, a nearly low-rank layer, and one in f64.
fn layers() -> Vec<(&'static str, Tensor)> {
    tch::manual_seed(7);
    let scales = Tensor::linspace(0.2, 3.0, 24, cpu(Kind::Float));
    let x = Tensor::randn([N, 24], cpu(Kind::Float)) * scales;
    let y = (x.matmul(&Tensor::randn([24, 16], cpu(Kind::Float))) * 0.3).tanh()
        + Tensor::randn([N, 16], cpu(Kind::Float)) * 0.3;
    let z = Tensor::randn([N, 3], cpu(Kind::Float)).matmul(&Tensor::randn([3, 10], cpu(Kind::Float)))
        + Tensor::randn([N, 10], cpu(Kind::Float)) * 0.05
        + 4.0;
    let w = (x.narrow(1, 0, 8).to_kind(Kind::Double) + Tensor::randn([N, 8], cpu(Kind::Double))).square();
    vec![("x", x), ("y", y), ("z", z), ("w", w)]
}

/// The reference's matrices, by metric name.
fn reference(layers: &[(&str, Tensor)], batch: i64) -> Option<serde_json::Value> {
    let python = hooks_test_support::python()?;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("layers.npz");
    let acts: Activations = layers
        .iter()
        .map(|(n, t)| ((*n).to_owned(), t.shallow_clone()))
        .collect();
    save_activations(&acts, &input).unwrap();
    let out = dir.path().join("reference.json");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/analysis_reference.py");
    let _ = hooks_test_support::run_python(
        &python,
        &script,
        &[
            input.to_str().unwrap(),
            out.to_str().unwrap(),
            "--batch",
            &batch.to_string(),
        ],
    );
    Some(serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap())
}

fn as_layers<'a>(layers: &'a [(&'static str, Tensor)]) -> Vec<Layer<'a>> {
    layers.iter().map(|(n, t)| (*n, t as &dyn RowSource)).collect()
}

fn assert_close(ours: &Similarity, theirs: &serde_json::Value, tol: f64) {
    let theirs: Vec<Vec<f64>> = serde_json::from_value(theirs.clone()).unwrap();
    assert_eq!(ours.values.len(), theirs.len());
    for (i, (a, b)) in ours.values.iter().zip(&theirs).enumerate() {
        for (j, (a, b)) in a.iter().zip(b).enumerate() {
            assert!(
                (a - b).abs() <= tol,
                "{}: [{i}][{j}] ours {a} numpy {b}",
                ours.metric.label()
            );
        }
    }
}

#[test]
fn every_metric_matches_numpy_from_the_papers() {
    let data = layers();
    let Some(reference) = reference(&data, 64) else {
        return;
    };
    let layers = as_layers(&data);
    // Chunks of 37 rows, so that the accumulation crosses chunk boundaries unevenly.
    let chunked = CompareOptions {
        chunk_rows: 37,
        ..CompareOptions::default()
    };
    for (metric, key) in [
        (Metric::Cka, "cka"),
        (Metric::UnbiasedCka, "unbiased"),
        (Metric::MinibatchCka { batch: 64 }, "minibatch"),
        (Metric::Svcca { threshold: 0.99 }, "svcca"),
    ] {
        for options in [CompareOptions::default(), chunked] {
            let ours = compare(&layers, None, metric, &options).unwrap();
            assert_eq!(ours.rows, ["x", "y", "z", "w"]);
            assert_close(&ours, &reference[key], 1e-10);
        }
    }
    // The values are not all alike (a vacuous pass would need them to be).
    let cka: Vec<Vec<f64>> = serde_json::from_value(reference["cka"].clone()).unwrap();
    let unbiased: Vec<Vec<f64>> = serde_json::from_value(reference["unbiased"].clone()).unwrap();
    assert!(cka[0][1] < 0.95 && cka[0][2] < 0.5, "{cka:?}");
    assert!((cka[0][1] - unbiased[0][1]).abs() > 1e-3, "{cka:?} {unbiased:?}");
    // A row input against a column input: the same values as the square matrix's block.
    let two = compare(&layers[..2], Some(&layers[2..]), Metric::UnbiasedCka, &chunked).unwrap();
    assert_eq!(
        (two.rows.clone(), two.columns.clone()),
        (vec!["x".into(), "y".into()], vec!["z".into(), "w".into()])
    );
    for (ours, theirs) in two.values.iter().zip(&unbiased) {
        for (a, b) in ours.iter().zip(&theirs[2..]) {
            assert!((a - b).abs() < 1e-10, "{a} vs {b}");
        }
    }
}

#[test]
fn streaming_cka_equals_cka_over_all_rows_at_once() {
    let data = layers();
    let layers = as_layers(&data);
    for metric in [Metric::Cka, Metric::UnbiasedCka] {
        let whole = CompareOptions {
            chunk_rows: N,
            ..CompareOptions::default()
        };
        let full = compare(&layers, None, metric, &whole).unwrap();
        for chunk_rows in [1, 5, 100] {
            let options = CompareOptions {
                chunk_rows,
                ..CompareOptions::default()
            };
            let streamed = compare(&layers, None, metric, &options).unwrap();
            for (a, b) in full.values.iter().flatten().zip(streamed.values.iter().flatten()) {
                assert!((a - b).abs() < 1e-12, "{metric:?} chunk {chunk_rows}: {a} vs {b}");
            }
        }
    }
    // Minibatch CKA over one batch holding every row is the unbiased CKA.
    let (x, y) = (&data[0].1, &data[1].1);
    let one_batch = minibatch_cka(x, y, N).unwrap();
    assert!((one_batch - unbiased_cka(x, y).unwrap()).abs() < 1e-12);
    // With smaller batches it is an estimate: close, not equal.
    let small = minibatch_cka(x, y, 16).unwrap();
    assert!(
        (small - one_batch).abs() > 1e-6 && (small - one_batch).abs() < 0.1,
        "{small} vs {one_batch}"
    );
}

#[test]
fn cka_has_the_invariances_kornblith_et_al_prove() {
    let data = layers();
    let (x, y) = (&data[0].1, &data[1].1);
    tch::manual_seed(11);
    let q = Tensor::linalg_qr(&Tensor::randn([24, 24], cpu(Kind::Double)), "reduced")
        .0
        .to_kind(Kind::Float);
    let rotated = x.matmul(&q) * 2.5 + 1.0;
    // A linear map that is neither orthogonal nor isotropic.
    let stretched = x * Tensor::linspace(0.1, 10.0, 24, cpu(Kind::Float));
    for f in [linear_cka, unbiased_cka] {
        assert!((f(x, x).unwrap() - 1.0).abs() < 1e-12);
        assert!(
            (f(x, &rotated).unwrap() - 1.0).abs() < 1e-6,
            "orthogonal transform and isotropic scaling"
        );
        assert!((f(y, &rotated).unwrap() - f(y, x).unwrap()).abs() < 1e-6);
        let c = f(x, &stretched).unwrap();
        assert!(c < 0.99, "not invariant to an arbitrary linear map: {c}");
    }
    assert!((minibatch_cka(x, x, 32).unwrap() - 1.0).abs() < 1e-12);
}

#[test]
fn svcca_is_one_for_an_invertible_map_of_the_kept_subspace() {
    tch::manual_seed(3);
    // Rank 5 in 20 features: the 99% subspace is exactly those 5 directions.
    let x = Tensor::randn([300, 5], cpu(Kind::Double)).matmul(&Tensor::randn([5, 20], cpu(Kind::Double)));
    let a = Tensor::randn([20, 20], cpu(Kind::Double)) + Tensor::eye(20, cpu(Kind::Double)) * 5.0;
    let y = x.matmul(&a) + 3.0;
    assert!((svcca(&x, &y, 0.99).unwrap() - 1.0).abs() < 1e-10);
    // Independent data is far from 1.
    let other = Tensor::randn([300, 20], cpu(Kind::Double));
    let s = svcca(&x, &other, 0.99).unwrap();
    assert!(s < 0.5, "{s}");
}

#[test]
fn bad_inputs_are_one_line_errors() {
    let x = Tensor::randn([10, 4], cpu(Kind::Float));
    let short = Tensor::randn([9, 4], cpu(Kind::Float));
    let err = linear_cka(&x, &short).unwrap_err();
    assert!(
        matches!(
            err,
            Error::RowCountMismatch {
                left_rows: 10,
                right_rows: 9,
                ..
            }
        ),
        "{err}"
    );
    let one = Tensor::randn([1, 4], cpu(Kind::Float));
    let err = linear_cka(&one, &one).unwrap_err();
    assert_eq!(
        err.to_string(),
        "CKA needs at least 3 rows (samples, or real tokens) and got 1; compare more samples"
    );
    let three = Tensor::randn([3, 4], cpu(Kind::Float));
    assert!(matches!(
        unbiased_cka(&three, &three).unwrap_err(),
        Error::TooFewRows { needed: 4, .. }
    ));
    let nan = x.copy();
    let _ = nan.get(3).get(1).fill_(f64::NAN);
    assert!(matches!(linear_cka(&x, &nan).unwrap_err(), Error::NotFinite { ref layer } if layer == "y"));
    assert!(matches!(svcca(&nan, &x, 0.99).unwrap_err(), Error::NotFinite { .. }));
    let constant = Tensor::ones([10, 4], cpu(Kind::Float));
    for err in [
        linear_cka(&x, &constant).unwrap_err(),
        unbiased_cka(&constant, &x).unwrap_err(),
        svcca(&x, &constant, 0.9).unwrap_err(),
    ] {
        assert!(matches!(err, Error::NoVariance { .. }), "{err}");
    }
    // 10 rows of 8 features: about 8 directions kept of each, 16 in all, in 9 dimensions.
    let wide = Tensor::randn([10, 8], cpu(Kind::Float));
    let err = svcca(&wide, &wide, 0.99).unwrap_err();
    assert!(matches!(err, Error::SvccaRank { rows: 10, .. }), "{err}");
    assert!(matches!(
        minibatch_cka(&x, &x, 3).unwrap_err(),
        Error::InvalidArgument { name: "batch", .. }
    ));
    assert!(matches!(
        svcca(&x, &x, 1.5).unwrap_err(),
        Error::InvalidArgument { name: "threshold", .. }
    ));
    for err in [
        linear_cka(&x, &short).unwrap_err(),
        svcca(&wide, &wide, 0.99).unwrap_err(),
    ] {
        assert_eq!(err.to_string().lines().count(), 1);
    }
}
