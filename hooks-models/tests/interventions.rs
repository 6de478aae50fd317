//! Every kind of intervention, on every supported architecture, against transformers doing the
//! same with its own hooks: a forward hook that returns the changed output, or a forward
//! pre-hook that returns the changed input (`reference.py intervene`). Every layer is compared
//! on real tokens, within 1e-4 relative: the intervened one (its capture sees the change) and
//! everything downstream.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly by unwrapping")]

#[allow(dead_code, reason = "each test binary uses part of the shared module")]
mod reference;

use std::path::Path;

use hooks::{ActivationStore, Intervention, Interventions, LayerTree};
use hooks_models::TextModel;
use hooks_test_support::{compare, python};
use serde_json::json;
use tch::{Device, Kind, Tensor};

use reference::{capture_all, reference, write_inputs};

/// Three right-padded rows of different lengths (5, 3 and 1 tokens) over a vocabulary of 100.
fn padded_batch() -> (Tensor, Tensor) {
    let ids = Tensor::from_slice2(&[[7i64, 42, 3, 99, 15], [1, 64, 27, 0, 0], [88, 0, 0, 0, 0]]);
    let mask = Tensor::from_slice2(&[[1i64, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]]);
    (ids, mask)
}

/// The modules of one architecture the cases intervene on: a first block, its MLP, its
/// attention, and the output projection of the next block's attention (whose input holds the
/// heads side by side).
struct Sites {
    block: &'static str,
    mlp: &'static str,
    attention: &'static str,
    projection: &'static str,
    next_block: &'static str,
}

fn sites(model_type: &str) -> Sites {
    match model_type {
        "bert" => Sites {
            block: "encoder.layer.0",
            mlp: "encoder.layer.0.intermediate",
            attention: "encoder.layer.0.attention",
            projection: "encoder.layer.1.attention.output.dense",
            next_block: "encoder.layer.1",
        },
        "gpt2" => Sites {
            block: "h.0",
            mlp: "h.0.mlp",
            attention: "h.0.attn",
            projection: "h.1.attn.c_proj",
            next_block: "h.1",
        },
        "gpt_neox" => Sites {
            block: "gpt_neox.layers.0",
            mlp: "gpt_neox.layers.0.mlp",
            attention: "gpt_neox.layers.0.attention",
            projection: "gpt_neox.layers.1.attention.dense",
            next_block: "gpt_neox.layers.1",
        },
        _ => Sites {
            block: "model.layers.0",
            mlp: "model.layers.0.mlp",
            attention: "model.layers.0.self_attn",
            projection: "model.layers.1.self_attn.o_proj",
            next_block: "model.layers.1",
        },
    }
}

/// One case: the intervention on our side, its description for `reference.py`.
struct Case {
    layer: String,
    ours: Intervention,
    spec: serde_json::Value,
}

/// Every kind, with positions and feature slices, on outputs and inputs. Given tensors are
/// seeded random values of the width each site has (read from a plain run).
fn cases(sites: &Sites, plain: &hooks::Activations, inputs: &hooks::Activations, dir: &Path) -> Vec<Case> {
    tch::manual_seed(7);
    let width = |acts: &hooks::Activations, layer: &str| *acts.get(layer).unwrap().size().last().unwrap();
    let shape = |acts: &hooks::Activations, layer: &str| acts.get(layer).unwrap().size();
    let save = |name: &str, t: &Tensor| {
        let path = dir.join(format!("{name}.npy"));
        t.write_npy(&path).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let random = |shape: &[i64]| Tensor::randn(shape, (Kind::Float, Device::Cpu));
    let mean = random(&[width(plain, sites.mlp)]);
    let vector = random(&[width(plain, sites.block)]);
    let other = random(&shape(plain, sites.attention));
    let heads = random(&shape(inputs, &format!("{}:input", sites.projection)));
    let head_width = width(inputs, &format!("{}:input", sites.projection));
    let head = [head_width / 4, head_width / 2];
    let case = |layer: &str, ours: Intervention, spec: serde_json::Value| {
        let mut spec = spec;
        spec["layer"] = json!(layer);
        Case {
            layer: layer.to_owned(),
            ours,
            spec,
        }
    };
    vec![
        case(sites.mlp, Intervention::zero(), json!({"kind": "zero"})),
        case(
            sites.mlp,
            Intervention::mean(mean.shallow_clone()),
            json!({"kind": "mean", "value": save("mean", &mean)}),
        ),
        case(
            sites.block,
            Intervention::add(vector.shallow_clone(), 4.0),
            json!({"kind": "add", "scale": 4.0, "value": save("vector", &vector)}),
        ),
        case(
            sites.block,
            Intervention::add(vector.shallow_clone(), -2.5).at_positions([1, -1]),
            json!({"kind": "add", "scale": -2.5, "value": save("vector", &vector), "positions": [1, -1]}),
        ),
        case(
            sites.attention,
            Intervention::replace(other.shallow_clone()).at_positions([0, 2]),
            json!({"kind": "replace", "value": save("other", &other), "positions": [0, 2]}),
        ),
        case(
            sites.attention,
            Intervention::scale(0.5),
            json!({"kind": "scale", "scale": 0.5}),
        ),
        case(sites.block, Intervention::map(Tensor::tanh), json!({"kind": "tanh"})),
        case(
            &format!("{}:input", sites.projection),
            Intervention::replace(heads.shallow_clone()).on_features(head[0]..head[1]),
            json!({"kind": "replace", "value": save("heads", &heads), "features": head}),
        ),
        case(
            &format!("{}:input", sites.mlp),
            Intervention::scale(2.0),
            json!({"kind": "scale", "scale": 2.0}),
        ),
        case(
            &format!("{}:input", sites.next_block),
            Intervention::scale(-1.0).at_positions([0]),
            json!({"kind": "scale", "scale": -1.0, "positions": [0]}),
        ),
    ]
}

#[test]
fn every_kind_matches_transformers_hooks_on_every_architecture() {
    let Some(python) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (ids, mask) = padded_batch();
    let inputs_path = tmp.path().join("inputs.npz");
    write_inputs(&inputs_path, &ids, &mask);
    let inputs_s = inputs_path.to_str().unwrap();
    let dirs: Vec<String> = hooks_models::SUPPORTED_MODEL_TYPES
        .iter()
        .map(|t| tmp.path().join(t).to_str().unwrap().to_owned())
        .collect();
    // Two runs of Python in all (its start-up is most of the time): build every model, then run
    // every case.
    let mut steps = Vec::new();
    for (model_type, dir) in hooks_models::SUPPORTED_MODEL_TYPES.iter().zip(&dirs) {
        steps.extend(["build", model_type, dir, "+"]);
    }
    reference(&python, &steps);

    let mut runs = Vec::new();
    for (model_type, dir) in hooks_models::SUPPORTED_MODEL_TYPES.iter().zip(&dirs) {
        let model = hooks_models::load(dir, Device::Cpu, Kind::Float).unwrap();
        let sites = sites(model_type);
        let plain = capture_all(&*model, &ids, &mask);
        let input_names: Vec<String> = [sites.projection, sites.mlp, sites.next_block]
            .iter()
            .map(|l| format!("{l}:input"))
            .collect();
        let inputs = capture(&*model, &input_names, &ids, &mask);
        let values = Path::new(dir).join("values");
        std::fs::create_dir(&values).unwrap();
        let cases = cases(&sites, &plain, &inputs, &values);
        let spec = format!("{dir}/spec.json");
        let specs: Vec<_> = cases.iter().map(|c| c.spec.clone()).collect();
        std::fs::write(&spec, serde_json::to_string(&specs).unwrap()).unwrap();
        runs.push((model_type, dir, model, plain, cases, spec));
    }
    let mut steps = Vec::new();
    for (_, dir, _, _, _, spec) in &runs {
        steps.extend(["intervene", dir.as_str(), inputs_s, spec.as_str(), dir.as_str(), "+"]);
    }
    reference(&python, &steps);

    for (model_type, dir, model, plain, cases, _) in runs {
        let last = model
            .layer_names()
            .into_iter()
            .rfind(|n| plain.get(n).is_some())
            .unwrap();
        for (n, case) in cases.into_iter().enumerate() {
            let what = format!("{model_type} case {n} ({} at `{}`)", case.spec["kind"], case.layer);
            let edits = Interventions::new(&*model, [(case.layer.as_str(), case.ours)]).unwrap();
            let mut ours = edits.run(|| capture_all(&*model, &ids, &mask)).unwrap();
            if case.layer.ends_with(":input") {
                let input = capture(&*model, std::slice::from_ref(&case.layer), &ids, &mask);
                ours.insert(case.layer.clone(), input.get(&case.layer).unwrap().shallow_clone());
            }
            drop(edits);
            let reference = format!("{dir}.{n}.npz");
            let comparison = std::panic::catch_unwind(|| compare(&ours, Path::new(&reference), &mask))
                .unwrap_or_else(|_| panic!("{what}: differs from transformers (above)"));
            assert!(comparison.diffs.len() >= plain.len(), "{what}: every layer compared");
            // Not vacuous: the last layer moved.
            let moved = (ours.get(&last).unwrap() - plain.get(&last).unwrap())
                .abs()
                .max()
                .double_value(&[]);
            // A scaled sublayer output that an RMS norm follows (Gemma 2 and 3's, OLMo 2's post
            // norms) moves nothing downstream: the norm undoes the scale, in transformers too.
            let renormed = case.spec["kind"] == "scale"
                && model
                    .layer_names()
                    .iter()
                    .any(|n| n.ends_with(".post_feedforward_layernorm"));
            assert!(renormed || moved > 1e-3, "{what}: `{last}` did not change ({moved})");
            eprintln!(
                "{what}: {} layers, max abs diff {:e}, `{last}` moved by {moved:.3}",
                comparison.diffs.len(),
                comparison.max_abs()
            );
        }
    }
}

/// Runs `model` once with a store on `layers` (outputs or `:input` points).
fn capture(model: &dyn TextModel, layers: &[String], ids: &Tensor, mask: &Tensor) -> hooks::Activations {
    let store = ActivationStore::new(model, layers).unwrap();
    store.enable();
    let _ = model.forward(ids, mask).unwrap();
    assert!(store.never_fired().is_empty(), "{:?}", store.never_fired());
    store.activations()
}
