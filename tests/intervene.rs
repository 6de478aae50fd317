//! Interventions on a toy model whose every value is hand arithmetic: each kind, positions and
//! feature slices, module inputs, the order of interventions and captures at one site, scope
//! (one instance, one thread, only while enabled; the capture switch is in `switch.rs`), errors, and the engine's
//! interventions and patches.
#![allow(clippy::unwrap_used)] // a failing test should fail loudly

use std::panic::{catch_unwind, AssertUnwindSafe};

use hooks::{
    ActivationStore, BatchForward, Error, Extractor, Hook, HookPoint, Hookable, Intervention, Interventions, Item,
    LayerTree, Result,
};
use tch::{nn, nn::Module, Kind, Tensor};

/// `fc(x) = 2x + 1` on 3 features, `resid` = that, `out(r) = r`: the output is `2x + 1` unless
/// something intervenes. `probs` is computed for capture alone (an observer). `plain` is called
/// with `Hook::call`, so its input is never seen.
#[derive(Hookable)]
struct Net {
    fc: Hook<nn::Linear>,
    resid: HookPoint,
    out: Hook<nn::Linear>,
    probs: HookPoint,
    plain: Hook<nn::Linear>,
}

fn linear(scale: f64, bias: f64) -> nn::Linear {
    nn::Linear {
        ws: Tensor::eye(3, (Kind::Float, tch::Device::Cpu)) * scale,
        bs: Some(Tensor::full([3], bias, (Kind::Float, tch::Device::Cpu))),
    }
}

impl Net {
    fn new() -> Self {
        Net {
            fc: Hook::new(linear(2.0, 1.0)),
            resid: HookPoint::new(),
            out: Hook::new(linear(1.0, 0.0)),
            probs: HookPoint::observer(),
            plain: Hook::new(linear(1.0, 0.0)),
        }
    }

    /// `x`: `[B, T, 3]`.
    fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.fc.forward(x);
        let r = self.resid.apply(h);
        self.probs.observe(&r.softmax(-1, Kind::Float));
        let y = self.out.forward(&r);
        self.plain.call(|m| m.forward(&y))
    }
}

/// `[[1, 2, 3], [4, 5, 6]]` as one sample of two tokens, `[1, 2, 3]`.
fn x() -> Tensor {
    Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).view([1, 2, 3])
}

fn ones(n: i64) -> Tensor {
    Tensor::ones([n], (Kind::Float, tch::Device::Cpu))
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.flatten(0, -1)).unwrap()
}

/// The output with `edit` at `layer`, run through `Interventions::run`.
fn with(layer: &str, edit: Intervention) -> Vec<f32> {
    let net = Net::new();
    let edits = Interventions::new(&net, [(layer, edit)]).unwrap();
    values(&edits.run(|| net.forward(&x())).unwrap())
}

#[test]
fn each_kind_gives_the_hand_computed_output() {
    assert_eq!(values(&Net::new().forward(&x())), [3.0, 5.0, 7.0, 9.0, 11.0, 13.0]);
    assert_eq!(with("fc", Intervention::zero()), [0.0; 6]);
    let mean = Tensor::from_slice(&[10.0f32, 20.0, 30.0]);
    assert_eq!(
        with("fc", Intervention::mean(mean)),
        [10.0, 20.0, 30.0, 10.0, 20.0, 30.0]
    );
    let steer = Tensor::from_slice(&[1.0f32, 0.0, -1.0]);
    assert_eq!(
        with("resid", Intervention::add(steer.shallow_clone(), 2.0)),
        [5.0, 5.0, 5.0, 11.0, 11.0, 11.0]
    );
    // The last position only, counted from the end.
    assert_eq!(
        with("resid", Intervention::add(steer, 2.0).at_positions([-1])),
        [3.0, 5.0, 7.0, 11.0, 11.0, 11.0]
    );
    // A whole tensor of another run, taken at position 0 and features 1..3 only.
    let other = Tensor::from_slice(&[-1.0f32, -2.0, -3.0, -4.0, -5.0, -6.0]).view([1, 2, 3]);
    assert_eq!(
        with(
            "resid",
            Intervention::replace(other).at_positions([0]).on_features(1..3)
        ),
        [3.0, -2.0, -3.0, 9.0, 11.0, 13.0]
    );
    assert_eq!(with("out", Intervention::scale(0.5)), [1.5, 2.5, 3.5, 4.5, 5.5, 6.5]);
    assert_eq!(
        with("resid", Intervention::map(|t| t.clamp_max(6.0) * -1.0)),
        [-3.0, -5.0, -6.0, -6.0, -6.0, -6.0]
    );
}

#[test]
fn module_inputs_are_captured_and_changed_before_the_module_runs() {
    // `out:input` scaled by 10: out(10 r) = 10 (2x + 1).
    assert_eq!(
        with("out:input", Intervention::scale(10.0)),
        [30.0, 50.0, 70.0, 90.0, 110.0, 130.0]
    );
    // `fc:input` zeroed: fc(0) = 1 everywhere.
    assert_eq!(with("fc:input", Intervention::zero()), [1.0; 6]);

    // A store captures the input as the module receives it, and the output after the edits.
    let net = Net::new();
    let edits = Interventions::new(&net, [("fc:input", Intervention::scale(-1.0))]).unwrap();
    let store = ActivationStore::new(&net, ["fc:input", "fc", "out:input"]).unwrap();
    store.enable();
    let _ = edits.run(|| net.forward(&x())).unwrap();
    assert_eq!(
        values(&store.get("fc:input").unwrap()),
        [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0]
    );
    assert_eq!(values(&store.get("fc").unwrap()), [-1.0, -3.0, -5.0, -7.0, -9.0, -11.0]);
    assert_eq!(
        values(&store.get("out:input").unwrap()),
        values(&store.get("fc").unwrap())
    );

    // Globs reach inputs only when they say `:input`; the module tree lists no inputs.
    assert!(ActivationStore::new(&net, ["*:input"]).unwrap().layer_names().len() == 3);
    assert!(!net.layer_names().iter().any(|n| n.contains(":input")));
    assert_eq!(Net::paths().fc().input().as_str(), "fc:input");
}

#[test]
fn a_capture_at_the_site_sees_the_changed_tensor_and_interventions_apply_in_order() {
    let net = Net::new();
    let add = Interventions::new(&net, [("resid", Intervention::add(ones(3), 1.0))]).unwrap();
    let scale = Interventions::new(&net, [("resid", Intervention::scale(10.0))]).unwrap();
    let store = ActivationStore::new(&net, ["resid"]).unwrap();
    store.enable();
    let _ = net.forward(&x());
    // (2x + 1 + 1) × 10: bound first, applied first.
    assert_eq!(
        values(&store.get("resid").unwrap()),
        [40.0, 60.0, 80.0, 100.0, 120.0, 140.0]
    );
    drop((add, scale));

    // Within one list, in list order.
    let both = Interventions::new(
        &net,
        [
            ("resid", Intervention::scale(10.0)),
            ("resid", Intervention::add(ones(3), 1.0)),
        ],
    )
    .unwrap();
    let _ = net.forward(&x());
    assert_eq!(
        values(&store.get("resid").unwrap()),
        [31.0, 51.0, 71.0, 91.0, 111.0, 131.0]
    );
    drop(both);
}

#[test]
fn interventions_apply_while_enabled_and_go_when_dropped() {
    let net = Net::new();
    let plain = values(&net.forward(&x()));
    let edits = Interventions::new(&net, [("fc", Intervention::zero())]).unwrap();
    assert!(edits.is_enabled(), "a new list applies at once");
    assert_eq!(values(&net.forward(&x())), [0.0; 6]);
    edits.disable();
    assert_eq!(values(&net.forward(&x())), plain);
    edits.enable();
    assert_eq!(values(&net.forward(&x())), [0.0; 6]);
    drop(edits);
    assert_eq!(values(&net.forward(&x())), plain);
}

#[test]
fn interventions_change_only_their_own_instance_on_any_thread() {
    let edited = Net::new();
    let _edits = Interventions::new(&edited, [("resid", Intervention::scale(0.0))]).unwrap();
    std::thread::scope(|scope| {
        let other = scope.spawn(|| {
            let net = Net::new();
            (0..200).all(|_| values(&net.forward(&x())) == [3.0, 5.0, 7.0, 9.0, 11.0, 13.0])
        });
        let mine = (0..200).all(|_| values(&edited.forward(&x())) == [0.0; 6]);
        assert!(mine, "the bound instance is changed in every forward");
        assert!(other.join().unwrap(), "another instance, on another thread, never is");
    });
}

#[test]
fn errors_name_the_layer_and_the_fix() {
    let net = Net::new();
    let err = Interventions::new(&net, [("rsid", Intervention::zero())]).unwrap_err();
    assert!(err.to_string().contains("did you mean `resid`?"), "{err}");
    let err = Interventions::new(&net, [("probs", Intervention::zero())]).unwrap_err();
    assert!(matches!(err, Error::NotEditable { .. }), "{err}");
    assert!(err.to_string().starts_with("cannot intervene on `probs`"), "{err}");
    let err = Interventions::new(&net, [("fc", Intervention::scale(f64::NAN))]).unwrap_err();
    assert!(err.to_string().contains("not finite"), "{err}");

    // A vector of the wrong width: an error from `run`, and the forward stops there.
    let edits = Interventions::new(&net, [("resid", Intervention::add(ones(4), 1.0))]).unwrap();
    let err = edits.run(|| net.forward(&x())).unwrap_err();
    assert!(matches!(err, Error::EditMismatch { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "the intervention on `resid` does not fit its tensor of shape [1, 2, 3]: the vector has shape [4], \
         which does not broadcast to it; give a tensor of its shape or of its last dims"
    );
    // Called directly, the forward panics with the same message rather than go on unchanged.
    let panic = catch_unwind(AssertUnwindSafe(|| net.forward(&x()))).unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(
        message.starts_with("the intervention on `resid` does not fit"),
        "{message}"
    );
    drop(edits);

    let edits = Interventions::new(&net, [("resid", Intervention::zero().at_positions([2]))]).unwrap();
    let err = edits.run(|| net.forward(&x())).unwrap_err();
    assert!(
        err.to_string()
            .contains("position 2 is out of range for a sample of 2 tokens"),
        "{err}"
    );
    drop(edits);

    // `plain` is called without its input: an intervention there never applies, and says so.
    let edits = Interventions::new(&net, [("plain:input", Intervention::zero())]).unwrap();
    let err = edits.run(|| net.forward(&x())).unwrap_err();
    assert!(
        matches!(&err, Error::NeverApplied { layers } if layers == &["plain:input"]),
        "{err}"
    );
    assert!(err.to_string().contains("`Hook::call_with`"), "{err}");
}

/// The engine's model: each id `i` becomes the features `[i, i, i]`, then as [`Net`]; padding
/// is id 0.
#[derive(Hookable)]
struct Seq {
    net: Net,
}

impl BatchForward for Seq {
    fn forward_batch(&self, ids: &Tensor, _mask: &Tensor) -> Result<()> {
        let x = ids.to_kind(Kind::Float).unsqueeze(-1).expand([-1, -1, 3], false);
        let _ = self.net.forward(&x);
        Ok(())
    }

    fn pad_id(&self) -> Option<i64> {
        Some(0)
    }
}

#[test]
fn the_engine_applies_interventions_and_patches_per_item() {
    let model = Seq { net: Net::new() };
    let clean = vec![Item::new([1, 2, 3]), Item::new([4]), Item::new([5, 6])];
    let corrupt = vec![Item::new([7, 8, 9]), Item::new([10]), Item::new([11, 12])];
    let layers = ["net.resid", "net.out"];
    let engine = Extractor::new().batch_size(2);

    // Steering at every position: `out` = 2 id + 1 + 3 × 1.
    let steered = engine
        .clone()
        .intervene("net.resid", Intervention::add(ones(3), 3.0))
        .run(&model, &layers, &clean)
        .unwrap();
    let out = steered.activations.get("net.out").unwrap();
    assert_eq!(
        values(&out.select(2, 0)),
        [6.0, 8.0, 10.0, 12.0, 0.0, 0.0, 14.0, 16.0, 0.0]
    );

    // Patching `resid` from the clean run into the corrupted one: `out` is the clean run's, row
    // for row, although the engine batches the items in another order.
    let reference = engine.run(&model, &layers, &clean).unwrap();
    let source = reference.activations.get("net.resid").unwrap().shallow_clone();
    let patched = engine
        .clone()
        .patch("net.resid", source.shallow_clone())
        .run(&model, &layers, &corrupt)
        .unwrap();
    assert!(patched
        .activations
        .get("net.out")
        .unwrap()
        .equal(reference.activations.get("net.out").unwrap()));
    let unpatched = engine.run(&model, &layers, &corrupt).unwrap();
    assert!(!unpatched
        .activations
        .get("net.out")
        .unwrap()
        .equal(reference.activations.get("net.out").unwrap()));

    // A source with other rows, too few positions, or another width fails before any row.
    let err = engine
        .clone()
        .patch("net.resid", source.narrow(0, 0, 2))
        .run(&model, &layers, &corrupt)
        .unwrap_err();
    assert!(err.to_string().contains("needs `[3, tokens, ...]`"), "{err}");
    let err = engine
        .clone()
        .patch("net.resid", source.narrow(1, 0, 2))
        .run(&model, &layers, &corrupt)
        .unwrap_err();
    assert!(
        err.to_string().contains("holds 2 token positions, and a batch needs 3"),
        "{err}"
    );
    let err = engine
        .clone()
        .patch("net.resid", source.narrow(2, 0, 2))
        .run(&model, &layers, &corrupt)
        .unwrap_err();
    assert!(matches!(err, Error::EditMismatch { .. }), "{err}");

    // An intervention that never applies fails the run, early stop or not.
    for stop_early in [true, false] {
        let err = engine
            .clone()
            .stop_early(stop_early)
            .intervene("net.plain:input", Intervention::zero())
            .run(&model, &layers, &clean)
            .unwrap_err();
        assert!(matches!(err, Error::NeverApplied { .. }), "{err}");
    }
}

/// A module called twice in one forward (a shared point) is changed at each call, as a PyTorch
/// forward hook runs at each call: `((x × 2) + 1) × 2` by hand.
#[test]
fn a_shared_site_is_changed_at_every_call() {
    #[derive(Hookable)]
    struct Shared {
        point: HookPoint,
    }
    let model = Shared {
        point: HookPoint::new(),
    };
    let edits = Interventions::new(&model, [("point", Intervention::scale(2.0))]).unwrap();
    let x = Tensor::from_slice(&[1.0f32, 3.0]);
    let y = edits
        .run(|| {
            let once = model.point.apply(x.shallow_clone());
            model.point.apply(once + 1.0)
        })
        .unwrap();
    assert_eq!(values(&y), [6.0, 14.0]);
}

/// Slices and per-sample positions, by hand: `-1` is each sample's last real token once the run
/// says where its tokens sit, `1:` skips the first, and a list whose positions no tensor held is
/// reported as having changed nothing.
#[test]
fn positions_count_within_each_sample_and_a_no_op_is_reported() {
    let net = Net::new();
    // Two samples right-padded to 3 tokens: lengths 3 and 2; fc gives 2x + 1.
    let x = Tensor::from_slice(&[
        1.0f32, 1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 4.0, 4.0, 5.0, 5.0, 5.0, 0.0, 0.0, 0.0,
    ])
    .view([2, 3, 3]);
    let edits = Interventions::new(
        &net,
        [(
            "resid",
            Intervention::zero().at_positions("-1".parse::<hooks::Positions>().unwrap()),
        )],
    )
    .unwrap();
    edits.set_positions(Some(hooks::TokenPositions::right_padded(&[3, 2], 3)));
    let y = values(&edits.run(|| net.forward(&x)).unwrap());
    // Per token, the first feature: 2x + 1 unless zeroed; sample 2's last real token is its 2nd.
    let first: Vec<f32> = y.chunks(3).map(|t| t[0]).collect();
    assert_eq!(first, [3.0, 5.0, 0.0, 9.0, 0.0, 1.0]);
    assert!(edits.untouched().is_empty());
    drop(edits);

    // Within the tensor (no layout): `1:` is columns 1 and 2 of both rows.
    let edits = Interventions::new(
        &net,
        [(
            "resid",
            Intervention::zero().at_positions("1:".parse::<hooks::Positions>().unwrap()),
        )],
    )
    .unwrap();
    let y = values(&edits.run(|| net.forward(&x)).unwrap());
    let first: Vec<f32> = y.chunks(3).map(|t| t[0]).collect();
    assert_eq!(first, [3.0, 0.0, 0.0, 9.0, 0.0, 0.0]);
    drop(edits);

    // `5:` holds no column of a 3-token tensor: nothing changes, and the list says so.
    let edits = Interventions::new(
        &net,
        [(
            "resid",
            Intervention::zero().at_positions("5:".parse::<hooks::Positions>().unwrap()),
        )],
    )
    .unwrap();
    let y = values(&edits.run(|| net.forward(&x)).unwrap());
    assert_eq!(y, values(&net.forward(&x)));
    assert_eq!(edits.untouched(), ["resid"]);
}
