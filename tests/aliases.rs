//! `#[hook(alias = "...")]`: other names for a field's layers, as `GPT2LMHeadModel`'s
//! `transformer.h.0` is `GPT2Model`'s `h.0`. A toy model whose values are hand arithmetic: what
//! each name lists, captures, changes and extracts, and which name wins a clash.
#![allow(clippy::unwrap_used)] // a failing test should fail loudly

use hooks::{
    ActivationStore, BatchForward, Error, Extractor, Hook, HookPoint, Hookable, Intervention, Interventions, Item,
    LayerTree, Result,
};
use tch::{nn, nn::Module, Kind, Tensor};

/// `fc(x) = 2x + 1`, then `head` as given; `probs` is computed for capture alone, and `head` is
/// a point that clashes with the outer model's own `head` through the empty alias.
#[derive(Hookable)]
struct Body {
    fc: Vec<Hook<nn::Linear>>,
    probs: HookPoint,
    head: HookPoint,
}

/// The body under `transformer`, also reachable without it; the head also as `embed_out`.
#[derive(Hookable)]
struct Model {
    #[hook(alias = "")]
    transformer: Hook<Body>,
    #[hook(alias = "embed_out")]
    head: Hook<nn::Linear>,
}

fn linear(scale: f64, bias: f64) -> nn::Linear {
    nn::Linear {
        ws: Tensor::eye(3, (Kind::Float, tch::Device::Cpu)) * scale,
        bs: Some(Tensor::full([3], bias, (Kind::Float, tch::Device::Cpu))),
    }
}

impl Model {
    fn new() -> Self {
        Model {
            transformer: Hook::new(Body {
                fc: vec![Hook::new(linear(2.0, 1.0)), Hook::new(linear(1.0, 1.0))],
                probs: HookPoint::observer(),
                head: HookPoint::new(),
            }),
            head: Hook::new(linear(10.0, 0.0)),
        }
    }

    /// `x`: `[B, T, 3]` → `10 (2x + 1 + 1)`, with every site on the way.
    fn forward(&self, x: &Tensor) -> Tensor {
        let hidden = self.transformer.call_with(x, |body, x| {
            let h = body
                .fc
                .iter()
                .fold(x.shallow_clone(), |h, fc| fc.call_with(&h, |m, h| m.forward(h)));
            body.probs.observe(&h.softmax(-1, Kind::Float));
            body.head.apply(h)
        });
        self.head.call_with(&hidden, |m, h| m.forward(h))
    }
}

fn x() -> Tensor {
    Tensor::from_slice(&[1.0f32, 2.0, 3.0]).view([1, 1, 3])
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
}

#[test]
fn listings_show_own_names_and_aliases_apart() {
    let model = Model::new();
    assert_eq!(
        model.layer_names(),
        [
            "transformer",
            "transformer.fc.0",
            "transformer.fc.1",
            "transformer.probs",
            "transformer.head",
            "head"
        ]
    );
    // `head` through the empty alias is the outer model's own `head`: that one wins, so the
    // body's point answers only to `transformer.head`.
    assert_eq!(
        model.alias_names(),
        [
            "fc.0",
            "fc.0:input",
            "fc.1",
            "fc.1:input",
            "probs",
            "embed_out",
            "embed_out:input"
        ]
    );
}

#[test]
fn a_store_captures_the_same_tensor_under_either_name_keyed_as_asked() {
    let model = Model::new();
    let store = ActivationStore::new(
        &model,
        [
            "fc.1",
            "transformer.fc.1",
            "embed_out",
            "head",
            "fc.0:input",
            "transformer.head",
        ],
    )
    .unwrap();
    store.enable();
    let _ = model.forward(&x());
    // fc.1(2x + 1) = 2x + 2; head = 10 of that.
    assert_eq!(values(&store.get("fc.1").unwrap()), [4.0, 6.0, 8.0]);
    assert_eq!(values(&store.get("transformer.fc.1").unwrap()), [4.0, 6.0, 8.0]);
    assert_eq!(values(&store.get("embed_out").unwrap()), [40.0, 60.0, 80.0]);
    assert_eq!(values(&store.get("head").unwrap()), [40.0, 60.0, 80.0]);
    assert_eq!(values(&store.get("fc.0:input").unwrap()), [1.0, 2.0, 3.0]);
    assert_eq!(values(&store.get("transformer.head").unwrap()), [4.0, 6.0, 8.0]);
    store.check().unwrap();

    // A glob reaches aliases only when it matches no own name.
    let names = |patterns: &[&str]| ActivationStore::new(&model, patterns).unwrap().layer_names().to_vec();
    assert_eq!(names(&["fc.*"]), ["fc.0", "fc.1"]);
    assert_eq!(names(&["transformer.fc.*"]), ["transformer.fc.0", "transformer.fc.1"]);
    assert_eq!(names(&["*"]), ["transformer", "head"]);

    // A typo is suggested the alias it is closest to.
    let err = ActivationStore::new(&model, ["fx.0"]).err().unwrap().to_string();
    assert!(err.contains("did you mean `fc.0`?"), "{err}");

    // Another instance binds by the alias too.
    let other = Model::new();
    store.attach(&other).unwrap();
    store.clear();
    let _ = other.forward(&(x() * 2.0));
    assert_eq!(values(&store.get("fc.1").unwrap()), [6.0, 10.0, 14.0]);
}

#[test]
fn interventions_bind_by_either_name() {
    let model = Model::new();
    for name in ["fc.0", "transformer.fc.0"] {
        let edits = Interventions::new(&model, [(name, Intervention::scale(0.5))]).unwrap();
        // fc.0 = (2x + 1) / 2, fc.1 adds 1, head multiplies by 10.
        let out = edits.run(|| model.forward(&x())).unwrap();
        assert_eq!(values(&out), [25.0, 35.0, 45.0], "{name}");
    }
    // Both names of one point: two edits at one site, in binding order.
    let edits = Interventions::new(
        &model,
        [
            (
                "embed_out:input",
                Intervention::add(Tensor::ones([3], (Kind::Float, tch::Device::Cpu)), 1.0),
            ),
            ("head:input", Intervention::scale(2.0)),
        ],
    )
    .unwrap();
    let out = edits.run(|| model.forward(&x())).unwrap();
    assert_eq!(values(&out), [100.0, 140.0, 180.0]);
    drop(edits);
    assert_eq!(values(&model.forward(&x())), [40.0, 60.0, 80.0]);

    // An observer stays unchangeable under its alias.
    let err = Interventions::new(&model, [("probs", Intervention::zero())])
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::NotEditable { layer, .. } if layer == "probs"),
        "{err}"
    );
}

/// The engine's model: each id `i` becomes the features `[i, i, i]`.
#[derive(Hookable)]
struct Seq {
    #[hook(alias = "")]
    model: Model,
}

impl BatchForward for Seq {
    fn forward_batch(&self, ids: &Tensor, _mask: &Tensor) -> Result<()> {
        let x = ids.to_kind(Kind::Float).unsqueeze(-1).expand([-1, -1, 3], false);
        let _ = self.model.forward(&x);
        Ok(())
    }

    fn pad_id(&self) -> Option<i64> {
        Some(0)
    }
}

#[test]
fn the_engine_names_arrays_as_asked_and_patches_through_an_alias() {
    let seq = Seq { model: Model::new() };
    let items = vec![Item::new([1, 2]), Item::new([3])];
    // Aliases nest: `Seq`'s empty alias over `Model`'s gives `fc.1` and `embed_out` at the root.
    // An empty alias never names the aliased field's own output: `model` is not `transformer`.
    // `head` through both empty aliases would be the body's point, and through one `Model`'s
    // head: a name two aliases give two points names neither.
    let aliases = seq.alias_names();
    for name in [
        "fc.1",
        "embed_out",
        "transformer.fc.1",
        "model.fc.1",
        "transformer.head",
    ] {
        assert!(aliases.iter().any(|a| a == name), "{name}: {aliases:?}");
    }
    for name in ["model", "head"] {
        assert!(!aliases.iter().any(|a| a == name), "{name}: {aliases:?}");
    }
    let err = ActivationStore::new(&seq, ["head"]).err().unwrap();
    assert!(matches!(err, Error::UnknownLayer { .. }), "{err}");
    let run = Extractor::new()
        .batch_size(2)
        .run(&seq, &["fc.1", "model.transformer.fc.1", "embed_out"], &items)
        .unwrap();
    let names: Vec<&str> = run.activations.names().collect();
    assert_eq!(names, ["fc.1", "model.transformer.fc.1", "embed_out"]);
    let fc1 = run.activations.get("fc.1").unwrap();
    assert_eq!(values(&fc1.select(2, 0)), [4.0, 6.0, 8.0, 0.0]);
    assert!(fc1.equal(run.activations.get("model.transformer.fc.1").unwrap()));

    // A patch through the alias: `fc.0` replaced by 0 everywhere makes `head` = 10 × 1.
    let zeros = Tensor::zeros([2, 2, 3], (Kind::Float, tch::Device::Cpu));
    let patched = Extractor::new()
        .batch_size(2)
        .patch("fc.0", zeros)
        .run(&seq, &["embed_out"], &items)
        .unwrap();
    assert_eq!(
        values(&patched.activations.get("embed_out").unwrap().select(2, 0)),
        [10.0, 10.0, 10.0, 0.0]
    );
}
