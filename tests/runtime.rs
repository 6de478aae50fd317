//! The activation store, extraction and `.npz` files, on small hand-built tch models whose
//! intermediate values the tests compute by hand.
#![allow(clippy::unwrap_used)] // a failing test should fail loudly

use hooks::{
    extract_representations, load_activations, save_activations, ActivationStore, Activations, CaptureMode, Error,
    Hook, HookPoint, Hookable, LayerTree,
};
use tch::nn::{self, Module, ModuleT};
use tch::{Device, Kind, Tensor};

/// Two linear layers with a ReLU between them, its hidden state at a hook point.
#[derive(Debug, Hookable)]
struct Mlp {
    fc1: Hook<nn::Linear>,
    act: HookPoint,
    fc2: Hook<nn::Linear>,
}

impl Mlp {
    fn new(p: &nn::Path, dim: i64) -> Self {
        Mlp {
            fc1: Hook::new(nn::linear(p / "fc1", dim, 2 * dim, Default::default())),
            act: HookPoint::new(),
            fc2: Hook::new(nn::linear(p / "fc2", 2 * dim, dim, Default::default())),
        }
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.act.apply(self.fc1.forward(x).relu());
        self.fc2.forward(&h)
    }
}

/// Token embeddings, a stack of residual MLP blocks, and a mean-pooled head.
#[derive(Debug, Hookable)]
struct Net {
    embed: nn::Embedding,
    layers: Vec<Hook<Mlp>>,
    head: Hook<nn::Linear>,
}

const VOCAB: i64 = 50;
const DIM: i64 = 4;

impl Net {
    fn new(vs: &nn::VarStore, n_layers: usize) -> Self {
        let p = vs.root();
        Net {
            embed: nn::embedding(&p / "embed", VOCAB, DIM, Default::default()),
            layers: (0..n_layers)
                .map(|i| Hook::new(Mlp::new(&(&p / "layers" / i), DIM)))
                .collect(),
            head: Hook::new(nn::linear(&p / "head", DIM, 3, Default::default())),
        }
    }
}

impl ModuleT for Net {
    fn forward_t(&self, ids: &Tensor, _train: bool) -> Tensor {
        let mut x = self.embed.forward(ids);
        for layer in &self.layers {
            x = &x + layer.forward(&x);
        }
        self.head.forward(&x.mean_dim(1, false, Kind::Float))
    }
}

fn net(n_layers: usize) -> (nn::VarStore, Net) {
    tch::manual_seed(7);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Net::new(&vs, n_layers);
    (vs, net)
}

fn var(vs: &nn::VarStore, name: &str) -> Tensor {
    vs.variables()[name].shallow_clone()
}

/// `x @ W^T + b`, from the variables, without tch's `Linear`.
fn linear_by_hand(vs: &nn::VarStore, prefix: &str, x: &Tensor) -> Tensor {
    x.matmul(&var(vs, &format!("{prefix}.weight")).tr()) + var(vs, &format!("{prefix}.bias"))
}

fn ids(rows: i64, len: i64, offset: i64) -> Tensor {
    (Tensor::arange(rows * len, (Kind::Int64, Device::Cpu)) + offset)
        .remainder(VOCAB)
        .reshape([rows, len])
}

#[test]
fn captured_values_equal_the_same_values_computed_by_hand() {
    let (vs, net) = net(2);
    let store = ActivationStore::new(
        &net,
        [
            "layers.0.fc1",
            "layers.0.act",
            "layers.0",
            "layers.1.fc2",
            "layers.1",
            "head",
        ],
    )
    .unwrap();
    store.enable();
    let input = ids(3, 5, 0);
    let _g = tch::no_grad_guard();
    let out = net.forward_t(&input, false);

    // The same forward, by hand, from the weights.
    let x0 = var(&vs, "embed.weight")
        .index_select(0, &input.flatten(0, -1))
        .reshape([3, 5, DIM]);
    let fc1 = linear_by_hand(&vs, "layers.0.fc1", &x0);
    let act = fc1.relu();
    let block0 = linear_by_hand(&vs, "layers.0.fc2", &act);
    let x1 = &x0 + &block0;
    let block1 = linear_by_hand(&vs, "layers.1.fc2", &linear_by_hand(&vs, "layers.1.fc1", &x1).relu());
    let x2 = &x1 + &block1;
    let head = linear_by_hand(&vs, "head", &x2.mean_dim(1, false, Kind::Float));

    let close = |name: &str, want: &Tensor| {
        let got = store.get(name).unwrap_or_else(|| panic!("`{name}` captured nothing"));
        assert_eq!(got.size(), want.size(), "{name}");
        assert_eq!(got.device(), Device::Cpu);
        assert!(!got.requires_grad());
        assert!(got.allclose(want, 1e-6, 1e-6, false), "{name}: {got} vs {want}");
    };
    close("layers.0.fc1", &fc1);
    close("layers.0.act", &act);
    close("layers.0", &block0);
    close("layers.1.fc2", &block1);
    close("layers.1", &block1);
    close("head", &head);
    assert!(out.allclose(&head, 1e-6, 1e-6, false));
    assert_eq!(
        store.layer_names(),
        [
            "layers.0.fc1",
            "layers.0.act",
            "layers.0",
            "layers.1.fc2",
            "layers.1",
            "head"
        ]
    );
}

#[test]
fn enable_disable_clear_and_get_behave_like_the_reference() {
    let (_vs, net) = net(1);
    let store = ActivationStore::new(&net, ["head", "layers.0.fc2"]).unwrap();
    let input = ids(2, 3, 1);

    // Created disabled: nothing captured.
    assert!(!store.is_enabled());
    let _ = net.forward_t(&input, false);
    assert!(store.get("head").is_none());
    assert!(store.activations().is_empty());

    // enable() twice is the same as once.
    store.enable();
    store.enable();
    assert!(store.is_enabled());
    let first = net.forward_t(&input, false);
    assert!(store.get("head").unwrap().equal(&first));

    // A second call while enabled replaces (last write wins).
    let other = ids(2, 3, 9);
    let second = net.forward_t(&other, false);
    assert!(store.get("head").unwrap().equal(&second));

    // disable() stops capturing and keeps what was captured.
    store.disable();
    assert!(!store.is_enabled());
    let _ = net.forward_t(&input, false);
    assert!(store.get("head").unwrap().equal(&second));
    store.disable();

    // clear() drops the captures and leaves the store as it was (here: disabled, then enabled).
    store.clear();
    assert!(store.get("head").is_none());
    store.enable();
    store.clear();
    assert!(store.is_enabled());
    let _ = net.forward_t(&input, false);
    let acts = store.activations();
    assert_eq!(acts.names().collect::<Vec<_>>(), ["head", "layers.0.fc2"]);
    assert!(acts.get("head").unwrap().equal(&first));

    // get() of a layer that was not selected.
    assert!(store.get("layers.0.fc1").is_none());
}

#[test]
fn accumulate_mode_appends_along_dim_0() {
    let (_vs, net) = net(1);
    let store = ActivationStore::with_mode(&net, ["head"], CaptureMode::Accumulate { max_rows: None }).unwrap();
    store.enable();
    let outs: Vec<Tensor> = (0..5).map(|i| net.forward_t(&ids(i + 1, 4, i), false)).collect();
    let got = store.get("head").unwrap();
    assert_eq!(got.size(), [15, 3]);
    assert!(got.equal(&Tensor::cat(&outs, 0)));

    // With max_rows, rows past it are dropped.
    let store = ActivationStore::with_mode(&net, ["head"], CaptureMode::Accumulate { max_rows: Some(4) }).unwrap();
    store.enable();
    let a = net.forward_t(&ids(3, 4, 0), false);
    let b = net.forward_t(&ids(3, 4, 5), false);
    assert!(store
        .get("head")
        .unwrap()
        .equal(&Tensor::cat(&[a, b.narrow(0, 0, 1)], 0)));
}

#[test]
fn a_capture_is_a_snapshot_not_a_view() {
    #[derive(Hookable)]
    struct Model {
        point: HookPoint,
    }
    let model = Model {
        point: HookPoint::new(),
    };
    let store = ActivationStore::new(&model, ["point"]).unwrap();
    store.enable();

    let mut source = Tensor::arange(6, (Kind::Float, Device::Cpu)).reshape([2, 3]);
    let passed = model.point.apply(source.shallow_clone());
    source += 100.0;
    assert!(
        passed.equal(&source),
        "apply() must return the very tensor it was given"
    );
    let got = store.get("point").unwrap();
    assert!(
        got.equal(&Tensor::arange(6, (Kind::Float, Device::Cpu)).reshape([2, 3])),
        "capture changed: {got}"
    );

    // Non-contiguous outputs become contiguous copies.
    let base = Tensor::arange(6, (Kind::Float, Device::Cpu)).reshape([2, 3]);
    let transposed = base.tr();
    assert!(!transposed.is_contiguous());
    let _ = model.point.apply(transposed.shallow_clone());
    let got = store.get("point").unwrap();
    assert!(got.is_contiguous());
    assert!(got.equal(&transposed));
}

#[test]
fn a_tuple_output_captures_its_first_tensor() {
    let vs = nn::VarStore::new(Device::Cpu);
    #[derive(Hookable)]
    struct Model {
        attn: Hook<nn::Linear>,
    }
    let model = Model {
        attn: Hook::new(nn::linear(vs.root() / "attn", 2, 2, Default::default())),
    };
    let store = ActivationStore::new(&model, ["attn"]).unwrap();
    store.enable();
    let x = Tensor::ones([1, 2], (Kind::Float, Device::Cpu));
    let (out, weights) = model
        .attn
        .call(|m| (m.forward(&x), Tensor::zeros([1, 1], (Kind::Float, Device::Cpu))));
    assert_eq!(weights.size(), [1, 1]);
    assert!(store.get("attn").unwrap().equal(&out));
}

#[test]
fn four_threads_capture_into_one_store_without_losing_any() {
    const THREADS: i64 = 4;
    const FORWARDS: i64 = 25;
    const ROWS: i64 = 2;
    // One model instance per thread (tch tensors are Send, not Sync), all attached to one store.
    // They share one set of weights, copied: other tests draw from the global RNG concurrently,
    // so seeding alone would not make them equal.
    let (vs0, net0) = net(1);
    let copy = || {
        let (mut vs, model) = net(1);
        vs.copy(&vs0).unwrap();
        (vs, model)
    };
    let reference = copy();
    let mut models: Vec<(nn::VarStore, Net)> = (1..THREADS).map(|_| copy()).collect();
    models.insert(0, (vs0, net0));
    let store = ActivationStore::with_mode(
        &models[0].1,
        ["layers.0.act"],
        CaptureMode::Accumulate { max_rows: None },
    )
    .unwrap();
    for (_, model) in &models[1..] {
        store.attach(model).unwrap();
    }
    store.enable();
    std::thread::scope(|s| {
        // Each thread owns its instance: tch tensors are `Send` but not `Sync`.
        for (t, (_vs, model)) in models.into_iter().enumerate() {
            s.spawn(move || {
                let _g = tch::no_grad_guard();
                for _ in 0..FORWARDS {
                    // Thread t always feeds token t, so its rows are recognisable.
                    let input = Tensor::full([ROWS, 3], i64::try_from(t).unwrap(), (Kind::Int64, Device::Cpu));
                    let _ = model.forward_t(&input, false);
                }
            });
        }
    });
    let got = store.get("layers.0.act").unwrap();
    assert_eq!(got.size(), [THREADS * FORWARDS * ROWS, 3, 2 * DIM]);
    // Every thread's rows are all there: all models share weights, so the row for token t is the
    // same whichever instance made it (up to libtorch's thread-dependent summation order, hence
    // allclose).
    let (_vs, reference) = reference;
    let reference_store = ActivationStore::new(&reference, ["layers.0.act"]).unwrap();
    reference_store.enable();
    for t in 0..THREADS {
        let _ = reference.forward_t(&Tensor::full([1, 3], t, (Kind::Int64, Device::Cpu)), false);
        let want = reference_store.get("layers.0.act").unwrap();
        let matches = (0..got.size()[0])
            .filter(|&r| got.get(r).allclose(&want.get(0), 1e-5, 1e-6, false))
            .count();
        assert_eq!(matches as i64, FORWARDS * ROWS, "thread {t}'s rows");
    }
}

#[test]
fn unknown_layers_are_errors_with_suggestions() {
    let (_vs, net) = net(2);
    let err = ActivationStore::new(&net, ["layers.0.fc3"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown layer `layers.0.fc3` (did you mean `layers.0.fc1` or `layers.0.fc2`?); \
         list every layer with `layer_names()` on the model or `hooks layers`"
    );
    // Vec indices are checked against this instance.
    let err = ActivationStore::new(&net, ["layers.2.fc1"]).unwrap_err();
    assert!(matches!(err, Error::UnknownLayer { .. }), "{err}");
    assert!(err.to_string().contains("did you mean `layers.0.fc1`"), "{err}");
    // A plain module field (no Hook) is not a layer.
    assert!(ActivationStore::new(&net, ["embed"]).is_err());
    let err = ActivationStore::new(&net, ["layers.*.fc9"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the pattern `layers.*.fc9` matches no layer; list every layer with `layer_names()` on the model or `hooks layers`"
    );
    let none: [&str; 0] = [];
    assert_eq!(
        ActivationStore::new(&net, none).unwrap_err().to_string(),
        "no layers selected; pass at least one layer path or pattern"
    );
}

#[test]
fn globs_select_in_model_order() {
    let (_vs, net) = net(3);
    let store = ActivationStore::new(&net, ["head", "layers.*.fc2", "layers.1.fc2"]).unwrap();
    assert_eq!(
        store.layer_names(),
        ["head", "layers.0.fc2", "layers.1.fc2", "layers.2.fc2"]
    );
}

#[test]
fn extraction_truncates_to_max_samples_and_matches_one_big_forward() {
    let (_vs, net) = net(2);
    let dataset: Vec<Tensor> = (0..10).map(|i| ids(1, 6, i * 3).squeeze_dim(0)).collect();
    let acts = extract_representations(&net, &dataset, &["layers.1", "head"], Device::Cpu, 4, Some(7)).unwrap();

    // Reference: one forward over the first 7 items, captured with a plain store.
    let store = ActivationStore::new(&net, ["layers.1", "head"]).unwrap();
    store.enable();
    let _ = net.forward_t(&Tensor::stack(&dataset[..7], 0), false);
    for name in ["layers.1", "head"] {
        let got = acts.get(name).unwrap();
        let want = store.get(name).unwrap();
        assert_eq!(got.size()[0], 7, "{name}");
        assert!(got.allclose(&want, 1e-6, 1e-6, false), "{name}");
    }
    assert_eq!(acts.names().collect::<Vec<_>>(), ["layers.1", "head"]);

    // All items when max_samples is None, with a last partial batch.
    let acts = extract_representations(&net, &dataset, &["head"], Device::Cpu, 3, None).unwrap();
    assert_eq!(acts.get("head").unwrap().size(), [10, 3]);
}

#[test]
fn extraction_reports_empty_datasets_and_layers_that_never_fired() {
    let (_vs, net) = net(1);
    let empty: Vec<Tensor> = Vec::new();
    let err = extract_representations(&net, &empty, &["head"], Device::Cpu, 2, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the dataset is empty; give extraction at least one item"
    );

    /// A model whose forward skips one of its capture sites.
    #[derive(Debug, Hookable)]
    struct Skips {
        used: HookPoint,
        unused: HookPoint,
    }
    impl Module for Skips {
        fn forward(&self, x: &Tensor) -> Tensor {
            self.used.apply(x.to_kind(Kind::Float))
        }
    }
    let model = Skips {
        used: HookPoint::new(),
        unused: HookPoint::new(),
    };
    let data = [vec![1i64, 2], vec![3, 4]];
    let err = extract_representations(&model, &data, &["used", "unused"], Device::Cpu, 1, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "selected layers produced no output: `unused`; check that forward() calls their capture sites"
    );
    // Items of unequal length run in batches of their own length: nothing padded is attended,
    // and each row holds its item's values, then zeros.
    let ragged = [vec![1i64, 2], vec![3], vec![4, 5, 6], vec![7]];
    let acts = extract_representations(&model, &ragged, &["used"], Device::Cpu, 8, None).unwrap();
    let want = Tensor::from_slice(&[1.0f32, 2., 0., 3., 0., 0., 4., 5., 6., 7., 0., 0.]).view([4, 3]);
    assert_eq!(acts.get("used").unwrap(), &want);
    let err = extract_representations(&model, &data, &["used"], Device::Cpu, 0, None).unwrap_err();
    assert_eq!(err.to_string(), "invalid `batch_size`: must be at least 1");
}

/// The arrays of `tests/py/npz_interop.py`'s `expected()`, built with tch.
fn dtype_arrays() -> Activations {
    let a = Tensor::arange(24, (Kind::Int64, Device::Cpu)).reshape([2, 3, 4]);
    let f = a.to_kind(Kind::Double);
    let mut acts = Activations::new();
    acts.insert("f32", (&f / 8.0).to_kind(Kind::Float));
    acts.insert("f64", &f / 3.0);
    acts.insert("f16", (&f / 4.0 - 2.0).to_kind(Kind::Half));
    acts.insert("bf16", (&f / 4.0 - 2.0).to_kind(Kind::BFloat16));
    acts.insert("i64", &a * 1_000_000_007i64 - 3);
    acts.insert("i32", (&a - 12).to_kind(Kind::Int));
    acts.insert("u8", (&a * 10).to_kind(Kind::Uint8));
    acts.insert("bool", a.remainder(3).eq(0));
    acts.insert("scalar", Tensor::from(2.5f32));
    acts.insert("empty", Tensor::zeros([0, 5], (Kind::Float, Device::Cpu)));
    // Non-contiguous: written as its logical (row-major) values.
    acts.insert(
        "encoder.layer.0.output",
        Tensor::arange(6, (Kind::Float, Device::Cpu)).reshape([2, 3]).tr(),
    );
    acts
}

#[test]
fn npz_files_round_trip_every_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let acts = dtype_arrays();
    let path = save_activations(&acts, dir.path().join("nested/dir/dtypes")).unwrap();
    assert_eq!(path, dir.path().join("nested/dir/dtypes.npz"));
    let back = load_activations(&path).unwrap();
    assert_eq!(back.names().collect::<Vec<_>>(), acts.names().collect::<Vec<_>>());
    for (name, want) in &acts {
        let got = back.get(name).unwrap();
        let want = if want.kind() == Kind::BFloat16 {
            want.to_kind(Kind::Float)
        } else {
            want.shallow_clone()
        };
        assert_eq!(got.kind(), want.kind(), "{name}");
        assert_eq!(got.size(), want.size(), "{name}");
        assert!(got.equal(&want), "{name}: {got} vs {want}");
    }
}

#[test]
fn numpy_reads_our_files_and_we_read_numpys() {
    let Some(python) = hooks_test_support::python() else {
        return;
    };
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/npz_interop.py");
    let dir = tempfile::tempdir().unwrap();
    save_activations(&dtype_arrays(), dir.path().join("dtypes.npz")).unwrap();
    let dir_str = dir.path().to_str().unwrap();
    let _ = hooks_test_support::run_python(&python, &script, &["check", dir_str]);

    let _ = hooks_test_support::run_python(&python, &script, &["write", dir_str]);
    let back = load_activations(dir.path().join("numpy.npz")).unwrap();
    let a = Tensor::arange(12, (Kind::Int64, Device::Cpu)).reshape([3, 4]);
    let f = a.to_kind(Kind::Double);
    let want = [
        ("f32", (&f / 2.0).to_kind(Kind::Float)),
        ("f64", &f / 7.0),
        ("f16", (&f / 4.0).to_kind(Kind::Half)),
        ("i64", &a - 5),
        ("i32", (&a * 3).to_kind(Kind::Int)),
        ("u8", a.to_kind(Kind::Uint8)),
        ("mask", a.remainder(2).eq(1)),
        ("fortran", (&f / 2.0).to_kind(Kind::Float)),
    ];
    assert_eq!(
        back.names().collect::<Vec<_>>(),
        want.iter().map(|(n, _)| *n).collect::<Vec<_>>()
    );
    for (name, want) in &want {
        let got = back.get(name).unwrap();
        assert_eq!(got.kind(), want.kind(), "{name}");
        assert!(got.equal(want), "{name}: {got} vs {want}");
    }
    let compressed = load_activations(dir.path().join("compressed.npz")).unwrap();
    assert!(compressed.get("x").unwrap().equal(&(&f / 2.0).to_kind(Kind::Float)));
}

#[test]
fn bad_names_and_dtypes_are_rejected_before_any_file_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tensor::zeros([2], (Kind::Float, Device::Cpu));
    let path = dir.path().join("out.npz");
    let err = save_activations([("encoder/layer", &t)], &path).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid array name `encoder/layer`: numpy cannot load a key containing `/` or `\\`; use `.` to separate path segments"
    );
    let c = Tensor::zeros([2], (Kind::ComplexFloat, Device::Cpu));
    let err = save_activations([("ok", &t), ("c", &c)], &path).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("layer `c` has dtype ComplexFloat, which numpy cannot store"),
        "{err}"
    );
    let err = save_activations([("a", &t), ("a", &t)], &path).unwrap_err();
    assert!(err.to_string().contains("appears twice"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing may be written"
    );

    let err = load_activations(dir.path().join("missing.npz")).unwrap_err();
    assert!(err.to_string().starts_with("cannot open `"), "{err}");
    std::fs::write(&path, b"not a zip").unwrap();
    let err = load_activations(&path).unwrap_err();
    assert!(err.to_string().contains("not an .npz file"), "{err}");
}

#[test]
fn layer_names_walk_the_instance_in_field_order() {
    let (_vs, net) = net(2);
    assert_eq!(
        net.layer_names(),
        [
            "layers.0",
            "layers.0.fc1",
            "layers.0.act",
            "layers.0.fc2",
            "layers.1",
            "layers.1.fc1",
            "layers.1.act",
            "layers.1.fc2",
            "head"
        ]
    );
}

/// A model asks `is_capturing` before computing what only a capture uses (attention
/// probabilities, logits); the answer must be exact, or a store dropped or disabled would keep
/// that work going while another store is on.
#[test]
fn is_capturing_counts_only_enabled_live_stores() {
    #[derive(Hookable)]
    struct Points {
        probs: HookPoint,
        other: HookPoint,
    }
    let points = Points {
        probs: HookPoint::observer(),
        other: HookPoint::new(),
    };
    let other = ActivationStore::new(&points, ["other"]).unwrap();
    other.enable();
    let probs = ActivationStore::new(&points, ["probs"]).unwrap();
    assert!(!points.probs.is_capturing(), "bound, not enabled");
    probs.enable();
    assert!(points.probs.is_capturing());
    probs.disable();
    assert!(!points.probs.is_capturing(), "disabled while another store is on");
    probs.enable();
    drop(probs);
    assert!(!points.probs.is_capturing(), "dropped while another store is on");
    assert!(points.other.is_capturing());
}

/// String arrays (the layer names a lens file carries) are numpy's own `<U{n}`, both ways; a
/// file with strings is refused by `load_activations` with a pointer to `load_npz`.
#[test]
fn npz_string_arrays_are_numpy_unicode() {
    let Some(python) = hooks_test_support::python() else {
        return;
    };
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/npz_interop.py");
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = ["model.embed_tokens", "", "héllo wörld", "🎉 emoji", "tab\there"]
        .map(String::from)
        .to_vec();
    let values = Tensor::from_slice(&[0.5f32, 0.25]);
    let empty = vec![String::new(), String::new()];
    let path = hooks::save_npz(
        [
            ("layers", hooks::NpzArray::Strings(&names)),
            ("values", hooks::NpzArray::Tensor(&values)),
            ("empty", hooks::NpzArray::Strings(&empty)),
        ],
        dir.path().join("strings.npz"),
    )
    .unwrap();
    let dir_str = dir.path().to_str().unwrap();
    let _ = hooks_test_support::run_python(&python, &script, &["strings", dir_str]);

    let back = hooks::load_npz(&path).unwrap();
    assert!(matches!(&back[0].1, hooks::NpzValue::Strings { strings, width: 18, .. } if *strings == names));
    let err = load_activations(&path).unwrap_err().to_string();
    assert!(
        err.contains("array `layers` holds strings") && err.contains("load_npz"),
        "{err}"
    );

    let numpy = hooks::load_npz(dir.path().join("numpy_strings.npz")).unwrap();
    let strings = |i: usize| match &numpy[i].1 {
        hooks::NpzValue::Strings { shape, width, strings } => (shape.clone(), *width, strings.clone()),
        hooks::NpzValue::Tensor(t) => panic!("{}: a tensor {t}", numpy[i].0),
    };
    assert_eq!(strings(0), (vec![5], 18, names));
    let grid = ["a", "bc", "def", ""].map(String::from).to_vec();
    assert_eq!(strings(1), (vec![2, 2], 3, grid));
    assert_eq!(strings(2), (vec![2], 7, vec!["x".to_owned(), "y".to_owned()]));
    // A NUL would not read back: refused before any file is made.
    let nul = vec!["a\0b".to_owned()];
    let err = hooks::save_npz([("x", hooks::NpzArray::Strings(&nul))], dir.path().join("nul.npz")).unwrap_err();
    assert!(err.to_string().contains("NUL"), "{err}");
    assert!(!dir.path().join("nul.npz").exists());
}
