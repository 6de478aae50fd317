//! Generation with the KV cache against transformers' `generate` on each prompt alone
//! (`py/generate_reference.py`), on every supported architecture's random configuration, with
//! prompts of mixed lengths batched together.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly by unwrapping")]

#[allow(dead_code, reason = "each test binary uses part of the shared module")]
mod reference;

use std::path::Path;

use hooks::{ActivationStore, Item};
use hooks_models::generate::{generate, FinishReason, GenerateOptions, Generation};
use hooks_models::{KvCache, ModelError, TextModel};
use tch::{Device, Kind, Tensor};

use reference::reference;

/// Prompts of lengths 5, 1, 9, 3, 12, 2 over a vocabulary of 100.
fn prompts() -> Vec<Vec<i64>> {
    [5usize, 1, 9, 3, 12, 2]
        .iter()
        .enumerate()
        .map(|(i, &len)| (0..len).map(|t| ((i * 41 + t * 13 + 3) % 100) as i64).collect())
        .collect()
}

/// transformers' greedy continuations of each prompt alone, for each model: with its KV cache,
/// without, and with an end-of-sequence id (the fourth token of the first prompt's
/// continuation).
struct Greedy {
    cached: Vec<Vec<i64>>,
    uncached: Vec<Vec<i64>>,
    eos: i64,
    with_eos: Vec<Vec<i64>>,
}

fn transformers_greedy(python: &Path, models: &[(String, std::path::PathBuf)], dir: &Path) -> Vec<Greedy> {
    let prompts_path = dir.join("prompts.json");
    std::fs::write(&prompts_path, serde_json::to_string(&prompts()).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/generate_reference.py");
    let mut args = Vec::new();
    let outs: Vec<_> = models
        .iter()
        .map(|(arch, _)| dir.join(format!("{arch}.json")))
        .collect();
    for ((_, model), out) in models.iter().zip(&outs) {
        args.extend([
            "+".to_owned(),
            model.to_str().unwrap().to_owned(),
            prompts_path.to_str().unwrap().to_owned(),
            "10".to_owned(),
            out.to_str().unwrap().to_owned(),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _ = hooks_test_support::run_python(python, &script, &args);
    outs.iter()
        .map(|out| {
            let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
            let ids = |key: &str| -> Vec<Vec<i64>> { serde_json::from_value(json[key].clone()).unwrap() };
            Greedy {
                cached: ids("cached"),
                uncached: ids("uncached"),
                eos: json["eos"].as_i64().unwrap(),
                with_eos: ids("with_eos"),
            }
        })
        .collect()
}

fn run(model: &dyn TextModel, options: &GenerateOptions) -> Vec<Generation> {
    let items: Vec<Item> = prompts().into_iter().map(Item::new).collect();
    let mut streamed = vec![Vec::new(); items.len()];
    let out = generate(model, &items, options, &mut |i, id| streamed[i].push(id)).unwrap();
    for (generation, streamed) in out.iter().zip(&streamed) {
        assert_eq!(
            &generation.output_ids, streamed,
            "the callback saw every token in order"
        );
    }
    out
}

/// Greedy output ids equal transformers' `generate(do_sample=False)` on each prompt alone, with
/// and without its cache, however the prompts are batched; an end-of-sequence id stops a prompt
/// and is kept. Models that cannot generate are refused.
#[test]
fn greedy_generation_matches_transformers_on_every_causal_architecture() {
    let Some(python) = hooks_test_support::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let archs: Vec<String> = hooks_models::SUPPORTED_MODEL_TYPES
        .iter()
        .map(|&t| t.to_owned())
        .chain(["gpt2-lmhead".to_owned(), "llama-tied".to_owned()])
        .collect();
    let mut build = Vec::new();
    for arch in &archs {
        build.extend([
            "+".to_owned(),
            "build".to_owned(),
            arch.clone(),
            dir.path().join(arch).to_str().unwrap().to_owned(),
        ]);
    }
    reference(&python, &build.iter().map(String::as_str).collect::<Vec<_>>());
    let mut causal = Vec::new();
    for arch in &archs {
        let model = hooks_models::load(dir.path().join(arch), Device::Cpu, Kind::Float).unwrap();
        if model.readout().is_none() {
            let err = generate(
                &*model,
                &[Item::new(vec![1, 2])],
                &GenerateOptions::default(),
                &mut |_, _| {},
            )
            .unwrap_err();
            assert!(matches!(err, ModelError::NoReadout { .. }), "{arch}: {err}");
            assert!(["bert", "gpt2"].contains(&arch.as_str()), "{arch} cannot generate");
            continue;
        }
        causal.push((arch.clone(), dir.path().join(arch)));
    }
    assert_eq!(causal.len(), 12, "{causal:?}");
    let want = transformers_greedy(&python, &causal, dir.path());
    for ((arch, folder), want) in causal.iter().zip(&want) {
        assert_eq!(
            want.cached, want.uncached,
            "{arch}: transformers with and without its cache"
        );
        let model = hooks_models::load(folder, Device::Cpu, Kind::Float).unwrap();
        for batch_size in [1, 4, 6] {
            let options = GenerateOptions {
                max_new_tokens: 10,
                batch_size,
                ..GenerateOptions::default()
            };
            let got = run(&*model, &options);
            for (i, (generation, want)) in got.iter().zip(&want.cached).enumerate() {
                assert_eq!(generation.prompt_ids, prompts()[i]);
                assert_eq!(
                    &generation.output_ids, want,
                    "{arch}, prompt {i}, batches of {batch_size}"
                );
                assert_eq!(generation.finish_reason, FinishReason::Length);
            }
        }
        let options = GenerateOptions {
            max_new_tokens: 10,
            batch_size: 4,
            eos: vec![want.eos],
            ..GenerateOptions::default()
        };
        let got = run(&*model, &options);
        for (i, generation) in got.iter().enumerate() {
            assert_eq!(
                generation.output_ids, want.with_eos[i],
                "{arch}, prompt {i}, eos {}",
                want.eos
            );
            let stopped = generation.output_ids.last() == Some(&want.eos);
            assert_eq!(
                generation.finish_reason == FinishReason::Eos,
                stopped,
                "{arch}, prompt {i}"
            );
        }
        let first = want.cached[0].iter().position(|&id| id == want.eos).unwrap();
        assert_eq!(
            got[0].output_ids,
            want.cached[0][..=first],
            "{arch}: stops at the first eos, and keeps it"
        );
        assert_eq!(got[0].finish_reason, FinishReason::Eos);
    }
}

/// A prefill and one token at a time through the cache give every token the hidden state of one
/// forward over the whole sequence, in every layer (the capture sites fire on each step).
#[test]
fn cached_steps_equal_one_forward_over_the_sequence() {
    let Some(python) = hooks_test_support::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let archs = [
        "mistral",
        "gpt_neox",
        "gpt2-lmhead",
        "gemma",
        "gemma2",
        "gemma3_text",
        "olmo2",
        "phi3",
    ];
    let mut build = Vec::new();
    for arch in archs {
        build.extend(["+", "build", arch, dir.path().join(arch).to_str().unwrap()].map(str::to_owned));
    }
    reference(&python, &build.iter().map(String::as_str).collect::<Vec<_>>());
    for arch in archs {
        let model = hooks_models::load(dir.path().join(arch), Device::Cpu, Kind::Float).unwrap();
        let layers = model.residual_layers();
        // Two rows, right-padded: 6 and 3 prompt tokens, then 4 steps each.
        let full = [
            vec![5i64, 17, 3, 88, 41, 9, 60, 2, 33, 71],
            vec![12, 7, 95, 30, 44, 8, 19],
        ];
        let store = ActivationStore::new(&*model, &layers).unwrap();
        store.enable();
        let mut whole = Vec::new();
        for row in &full {
            let ids = Tensor::from_slice(row).unsqueeze(0);
            let _ = model.forward(&ids, &ids.ones_like()).unwrap();
            whole.push(layers.iter().map(|l| store.get(l).unwrap()).collect::<Vec<_>>());
        }
        let mut cache = KvCache::new();
        let ids = Tensor::from_slice2(&[[5i64, 17, 3, 88, 41, 9], [12, 7, 95, 0, 0, 0]]);
        let valid = Tensor::from_slice2(&[[1i64, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]]);
        let positions = Tensor::arange(6, (Kind::Int64, Device::Cpu))
            .unsqueeze(0)
            .repeat([2, 1]);
        let _ = model.forward_cached(&ids, &positions, &valid, &mut cache).unwrap();
        let prefill: Vec<Tensor> = layers.iter().map(|l| store.get(l).unwrap()).collect();
        for (l, layer) in layers.iter().enumerate() {
            for (row, len) in [(0i64, 6i64), (1, 3)] {
                let got = prefill[l].get(row).narrow(0, 0, len);
                let want = whole[usize::try_from(row).unwrap()][l].get(0).narrow(0, 0, len);
                let diff = (got - want).abs().max().double_value(&[]);
                assert!(diff < 1e-5, "{arch} {layer} row {row}: prefill differs by {diff}");
            }
        }
        for step in 0..4i64 {
            let ids = Tensor::from_slice2(&[
                [full[0][usize::try_from(6 + step).unwrap()]],
                [full[1][usize::try_from(3 + step).unwrap()]],
            ]);
            let positions = Tensor::from_slice2(&[[6 + step], [3 + step]]);
            let _ = model
                .forward_cached(&ids, &positions, &positions.ones_like(), &mut cache)
                .unwrap();
            for (l, layer) in layers.iter().enumerate() {
                let got = store.get(layer).unwrap();
                assert_eq!(got.size()[..2], [2, 1], "{arch} {layer}: one token per row");
                for (row, at) in [(0usize, 6 + step), (1, 3 + step)] {
                    let want = whole[row][l].get(0).get(at);
                    // Float rounding, relative to the values' scale (Phi-3's residuals reach 10).
                    let scale = want.abs().max().double_value(&[]).max(1.0);
                    let diff = (got.get(i64::try_from(row).unwrap()).get(0) - want)
                        .abs()
                        .max()
                        .double_value(&[]);
                    assert!(
                        diff < 1e-5 * scale,
                        "{arch} {layer} row {row} step {step}: differs by {diff} (scale {scale})"
                    );
                }
            }
        }
        assert_eq!(cache.len(), 10);
        // A step past the model's positions is refused, not run.
        let far = Tensor::from_slice2(&[[64i64], [64]]);
        let err = model
            .forward_cached(&ids_of(2), &far, &far.ones_like(), &mut cache)
            .unwrap_err();
        assert!(err.to_string().contains("positions run from 64 to 64"), "{arch}: {err}");
    }
}

fn ids_of(rows: i64) -> Tensor {
    Tensor::ones([rows, 1], (Kind::Int64, Device::Cpu))
}

/// Phi-3's `longrope`: a prompt past `original_max_position_embeddings` (16) generates with the
/// long factors; a short prompt whose continuation would grow past it is refused with one line
/// (transformers recomputes the whole sequence with the long factors there; a KV cache of keys
/// rotated with the short ones cannot), and within it generates.
#[test]
fn a_short_prompt_may_not_decode_past_longrope_s_original_length() {
    let Some(python) = hooks_test_support::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("phi3-longrope");
    reference(&python, &["build", "phi3-longrope", folder.to_str().unwrap()]);
    let model = hooks_models::load(&folder, Device::Cpu, Kind::Float).unwrap();
    let options = |max_new_tokens| GenerateOptions {
        max_new_tokens,
        ..GenerateOptions::default()
    };
    let prompt = |len: i64| Item::new((0..len).map(|t| (t * 7 + 3) % 100).collect::<Vec<i64>>());
    let long = generate(&*model, &[prompt(20)], &options(6), &mut |_, _| {}).unwrap();
    assert_eq!(long[0].output_ids.len(), 6);
    let within = generate(&*model, &[prompt(10)], &options(7), &mut |_, _| {}).unwrap();
    assert_eq!(within[0].output_ids.len(), 7);
    let err = generate(&*model, &[prompt(10), prompt(3)], &options(12), &mut |_, _| {}).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("grows past `original_max_position_embeddings` (16 tokens)"),
        "{message}"
    );
    assert!(message.contains("lower --max-new-tokens"), "{message}");
    assert_eq!(message.lines().count(), 1);
}
