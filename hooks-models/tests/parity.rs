//! Every layer of the reference models against transformers' own forward hooks on the same
//! weights and inputs: the layer names must be `named_modules()`'s (less the documented
//! exceptions, in the same order), and each captured tensor must match on non-padding positions.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly by unwrapping")]

mod reference;

use std::time::Instant;

use hooks::{ActivationStore, Hookable, LayerTree};
use hooks_models::{Bert, BertConfig, Gpt2, Gpt2Config, LlamaConfig, TextModel, Tokenizer};
use hooks_test_support::{compare, minilm_dir, python, Comparison};
use tch::{Device, Kind, Tensor};

use reference::{
    capture_all, capture_step, expected_layer_names, is_own_point, is_probabilities, layer_names_of, module_names,
    read_modules, reference, write_inputs,
};

/// Three right-padded rows of different lengths (5, 3 and 1 tokens) over a vocabulary of 100.
fn padded_batch() -> (Tensor, Tensor) {
    let ids = Tensor::from_slice2(&[[7i64, 42, 3, 99, 15], [1, 64, 27, 0, 0], [88, 0, 0, 0, 0]]);
    let mask = Tensor::from_slice2(&[[1i64, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]]);
    (ids, mask)
}

/// Two rows of five tokens, no padding: the attention then runs without a mask tensor, on both
/// sides (transformers drops an all-ones mask too).
fn unpadded_batch() -> (Tensor, Tensor) {
    let ids = Tensor::from_slice2(&[[7i64, 42, 3, 99, 15], [1, 64, 27, 5, 9]]);
    (ids.shallow_clone(), ids.ones_like())
}

/// Builds the random model `arch` (a key of `reference.py`'s `CONFIGS`: a `model_type`, or one
/// with a `-variant`) with transformers, runs both sides on `batch` and compares every layer;
/// returns the folder the model was saved to, for further checks.
fn random_model_parity(arch: &str, batch: fn() -> (Tensor, Tensor)) -> Option<tempfile::TempDir> {
    let start = Instant::now();
    let python = python()?;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(arch);
    let (inputs, capture) = (tmp.path().join("inputs.npz"), tmp.path().join("reference.npz"));
    let (ids, mask) = batch();
    write_inputs(&inputs, &ids, &mask);
    let dir_s = dir.to_str().unwrap();
    let mut steps = vec!["build", arch, dir_s, "+"];
    steps.extend(capture_step(dir_s, &inputs, &capture));
    reference(&python, &steps);

    let model = hooks_models::load(&dir, Device::Cpu, Kind::Float).unwrap();
    assert_eq!(model.model_type(), arch.split('-').next().unwrap());
    if arch.ends_with("-bf16") {
        let stored = Tensor::read_safetensors(dir.join("model.safetensors")).unwrap();
        assert!(stored.iter().all(|(_, t)| t.kind() == Kind::BFloat16), "saved in bf16");
    }
    let modules = read_modules(&capture);
    assert_eq!(module_names(&*model), expected_layer_names(&modules));
    // A model with a head also answers to its base model's names (`AutoModel`'s), and to no
    // other module name.
    let aliases: Vec<String> = model
        .alias_names()
        .into_iter()
        .filter(|n| !n.ends_with(hooks::INPUT_SUFFIX) && !is_own_point(n) && n != "embed_out")
        .collect();
    let base = modules.base_modules.as_deref().map(layer_names_of).unwrap_or_default();
    assert_eq!(aliases, base, "{arch}: aliases");
    let ours = capture_all(&*model, &ids, &mask);
    report(
        arch,
        &compare(&ours, &capture, &mask),
        &modules.attn_implementation,
        start,
    );
    // The logits the model returns (after any final soft-cap): the readout's, from the last
    // hidden state.
    if let Some(readout) = model.readout() {
        let hidden = model.forward(&ids, &mask).unwrap();
        let mut logits = hooks::Activations::new();
        logits.insert("__logits__", readout.logits_of_normed(&hidden));
        let _ = compare(&logits, &capture, &mask);
    }
    Some(tmp)
}

// `?` on the Python lookup: the tests return early (and pass) where there is no Python, unless
// `HOOKS_REQUIRE_PYTHON=1` (as `make test` sets it) makes a missing Python fail them.
macro_rules! or_skip {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return,
        }
    };
}

#[test]
fn random_bert_matches_transformers_on_every_layer() {
    let tmp = or_skip!(random_model_parity("bert", padded_batch));
    let bert = Bert::load(tmp.path().join("bert"), Device::Cpu, Kind::Float).unwrap();
    assert!(bert.layer_names().contains(&"pooler.dense".to_owned()));

    // The half-precision kinds run the same forward: close to f32 at their own precision.
    let (ids, mask) = padded_batch();
    let keep = mask.unsqueeze(-1).to_kind(Kind::Float);
    let reference = bert.forward(&ids, &mask).unwrap() * &keep;
    for kind in [Kind::Half, Kind::BFloat16] {
        let low = Bert::load(tmp.path().join("bert"), Device::Cpu, kind).unwrap();
        let out = low.forward(&ids, &mask).unwrap();
        assert_eq!(out.kind(), kind);
        let diff = (out.to_kind(Kind::Float) * &keep - &reference)
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 0.1, "{kind:?} differs from f32 by {diff}");
    }
}

#[test]
fn random_gpt2_matches_transformers_on_every_layer() {
    let tmp = or_skip!(random_model_parity("gpt2", padded_batch));
    let gpt2 = Gpt2::load(tmp.path().join("gpt2"), Device::Cpu, Kind::Float).unwrap();

    // Causal: a row's hidden states do not depend on what follows, padding or not.
    let (ids, mask) = padded_batch();
    let full = gpt2.forward(&ids, &mask).unwrap();
    let prefix = gpt2.forward(&ids.narrow(1, 0, 3), &mask.narrow(1, 0, 3)).unwrap();
    let diff = (full.narrow(1, 0, 3) - prefix).abs().max().double_value(&[]);
    assert!(diff < 1e-5, "causal mask leaks the future: {diff}");
}

/// A GPT-2 saved as `GPT2LMHeadModel`, with a tied and an untied head: its layers are
/// `AutoModelForCausalLM`'s (`transformer.h.0.mlp`, `lm_head`: the logits) and match them
/// (`random_model_parity`); each layer under `transformer.` also answers to its `GPT2Model` name,
/// with the same values, keyed as asked; and the folder loaded as `Gpt2` has `GPT2Model`'s names.
#[test]
fn random_gpt2_lm_head_has_both_classes_names() {
    for arch in ["gpt2-lmhead", "gpt2-lmhead-untied"] {
        let tmp = or_skip!(random_model_parity(arch, padded_batch));
        let dir = tmp.path().join(arch);
        let model = hooks_models::load(&dir, Device::Cpu, Kind::Float).unwrap();
        let names = model.layer_names();
        assert_eq!(names.first().map(String::as_str), Some("transformer"), "{arch}");
        assert_eq!(names.last().map(String::as_str), Some("lm_head"), "{arch}");

        let base: Vec<String> = names
            .iter()
            .filter_map(|n| n.strip_prefix("transformer."))
            .filter(|n| !is_own_point(n))
            .map(String::from)
            .collect();
        let (ids, mask) = padded_batch();
        let store = ActivationStore::new(&*model, &base).unwrap();
        store.enable();
        let _ = model.forward(&ids, &mask).unwrap();
        store.check().unwrap();
        assert_eq!(store.layer_names(), base, "{arch}: keyed as asked");
        let mut renamed = hooks::Activations::new();
        for name in &base {
            renamed.insert(format!("transformer.{name}"), store.get(name).unwrap());
        }
        report(
            &format!("{arch} under GPT2Model's names"),
            &compare(&renamed, &tmp.path().join("reference.npz"), &mask),
            "sdpa",
            Instant::now(),
        );

        let gpt2 = Gpt2::load(&dir, Device::Cpu, Kind::Float).unwrap();
        assert_eq!(module_names(&gpt2), base, "{arch}");
    }
}

/// The Llama-like decoders: grouped-query attention (3 query heads per key head), head widths
/// that are not hidden / heads, llama3 and linear rotary scaling, tied and untied heads, every
/// bias (Llama tied), Qwen2's query/key/value biases, Qwen3's per-head norms, Mistral's sliding
/// window binding inside the batch, Gemma's `(1 + weight)` norms and scaled embeddings; Gemma 2's
/// sandwich norms, soft-caps, alternating windows and `query_pre_attn_scalar`; Gemma 3's per-head
/// norms after the transpose and two ropes; OLMo 2's post norms and full-width query and key
/// norms; Phi-3's fused projections, window and `longrope` attention factor; and GPT-NeoX's
/// partial rotary, fused projection, parallel and sequential residuals.
#[test]
fn random_decoders_match_transformers_on_every_layer() {
    for arch in [
        "llama",
        "llama-tied",
        "mistral",
        "qwen2",
        "qwen3",
        "gemma",
        "gemma2",
        "gemma3_text",
        "olmo2",
        "phi3",
        "gpt_neox",
        "gpt_neox-sequential",
    ] {
        let tmp = or_skip!(random_model_parity(arch, padded_batch));
        let llama = hooks_models::load(tmp.path().join(arch), Device::Cpu, Kind::Float).unwrap();
        // Causal: a row's hidden states do not depend on what follows.
        let (ids, mask) = padded_batch();
        let full = llama.forward(&ids, &mask).unwrap();
        let prefix = llama.forward(&ids.narrow(1, 0, 3), &mask.narrow(1, 0, 3)).unwrap();
        let diff = (full.narrow(1, 0, 3) - prefix).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{arch}: causal mask leaks the future: {diff}");
        // The head's input alone runs the head: it is the final norm's output.
        let store = ActivationStore::new(&*llama, ["lm_head:input"]).unwrap();
        store.enable();
        let hidden = llama.forward(&ids, &mask).unwrap();
        assert!(store.get("lm_head:input").unwrap().equal(&hidden), "{arch}");
        drop(store);
        if arch.starts_with("gpt_neox") {
            // The head's name before transformers 5.
            let store = ActivationStore::new(&*llama, ["embed_out", "lm_head"]).unwrap();
            store.enable();
            let _ = llama.forward(&ids, &mask).unwrap();
            assert_eq!(store.get("embed_out").unwrap().size(), [3, 5, 100]);
            assert!(store.get("embed_out").unwrap().equal(&store.get("lm_head").unwrap()));
        }
    }
}

/// Every `attn_weights` capture point equals transformers' eager attention probabilities
/// (`output_attentions=True`) on real query rows, where it is exactly 0 on padding keys;
/// capturing them changes no other layer's value.
#[test]
fn attention_probabilities_match_output_attentions() {
    for arch in hooks_models::SUPPORTED_MODEL_TYPES {
        let python = or_skip!(python());
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(arch);
        let (inputs, attentions) = (tmp.path().join("inputs.npz"), tmp.path().join("attentions.npz"));
        let (ids, mask) = padded_batch();
        write_inputs(&inputs, &ids, &mask);
        let dir_s = dir.to_str().unwrap();
        let (inputs_s, attentions_s) = (inputs.to_str().unwrap(), attentions.to_str().unwrap());
        reference(
            &python,
            &["build", arch, dir_s, "+", "attentions", dir_s, inputs_s, attentions_s],
        );

        let model = hooks_models::load(&dir, Device::Cpu, Kind::Float).unwrap();
        let names: Vec<String> = model
            .layer_names()
            .into_iter()
            .filter(|n| is_probabilities(n))
            .collect();
        let store = ActivationStore::new(&*model, &names).unwrap();
        let plain = model.forward(&ids, &mask).unwrap();
        store.enable();
        let with_probabilities = model.forward(&ids, &mask).unwrap();
        assert!(
            plain.equal(&with_probabilities),
            "{arch}: capturing probabilities changed the output"
        );
        let theirs = hooks::load_activations(&attentions).unwrap();
        assert_eq!(
            theirs.len(),
            names.len(),
            "{arch}: one capture point per attention layer"
        );
        let real_rows = mask.ne(0).view([3, 1, 5, 1]);
        let padding_keys = mask.eq(0).view([3, 1, 1, 5]);
        for (i, name) in names.iter().enumerate() {
            let ours = store.get(name).unwrap();
            let want = theirs.get(&format!("attentions.{i}")).unwrap();
            assert_eq!(ours.size(), want.size(), "{name}");
            let diff = (&ours - want).abs().masked_fill(&real_rows.logical_not(), 0.0);
            let diff = diff.max().double_value(&[]);
            assert!(diff < 1e-5, "{arch} `{name}`: max abs diff {diff} on real query rows");
            // A padded query row may have no key left (Mistral's window past a short row): its
            // probabilities are uniform there, as transformers' are; only real rows must ignore
            // padding.
            let real_query_padding_key = real_rows.logical_and(&padding_keys).expand_as(&ours);
            let leaked = ours
                .masked_select(&real_query_padding_key)
                .abs()
                .max()
                .double_value(&[]);
            assert_eq!(leaked, 0.0, "{arch} `{name}`: probability on a padding key");
        }
    }
}

/// Hub checkpoints carry the older config form: `rope_theta` beside the config (with no
/// `rope_scaling` for the default rope type), `rope_scaling` with `type`, `torch_dtype`, and
/// GPT-NeoX's `rotary_pct` and `rotary_emb_base`. transformers reads it as the new form, and so
/// must we: every base here but Gemma's is not the default 10000.
#[test]
fn old_form_configs_match_transformers() {
    for arch in [
        "llama-oldconfig",
        "llama-tied-oldconfig",
        "mistral-oldconfig",
        "qwen2-oldconfig",
        "qwen3-oldconfig",
        "gemma-oldconfig",
        "gemma2-oldconfig",
        "gemma3_text-oldconfig",
        "olmo2-oldconfig",
        "phi3-oldconfig",
        "gpt_neox-sequential-oldconfig",
    ] {
        let tmp = or_skip!(random_model_parity(arch, padded_batch));
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(tmp.path().join(arch).join("config.json")).unwrap()).unwrap();
        assert!(config.get("rope_parameters").is_none(), "{arch}: {config}");
        assert!(config.get("torch_dtype").is_some(), "{arch}: {config}");
    }
}

/// A checkpoint saved in bfloat16, as many on the Hub are, loads upcast to f32 and matches
/// transformers loading the same file in f32.
#[test]
fn a_bf16_checkpoint_matches_transformers() {
    for arch in ["llama-bf16", "gemma3_text-bf16", "olmo2-bf16"] {
        or_skip!(random_model_parity(arch, padded_batch));
    }
}

/// A `config.json` that says `tie_word_embeddings: true` over weights that store a head of their
/// own: the stored head is used, as transformers 5 uses it (its logits and `lm_head` match), and
/// the model says so in a note.
#[test]
fn a_tied_config_over_a_stored_head_uses_the_stored_head() {
    let tmp = or_skip!(random_model_parity("llama-tiedconfig", padded_batch));
    let model = hooks_models::load(tmp.path().join("llama-tiedconfig"), Device::Cpu, Kind::Float).unwrap();
    let notes = model.notes();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("the stored head is used, as transformers uses it"),
        "{notes:?}"
    );
    // Without the contradiction, no note.
    let plain = or_skip!(random_model_parity("llama-tied", padded_batch));
    let tied = hooks_models::load(plain.path().join("llama-tied"), Device::Cpu, Kind::Float).unwrap();
    assert!(tied.notes().is_empty());
}

/// Phi-3's `longrope` takes each row's factors by the row's own length: a row of 24 tokens
/// (past the 16 of pre-training: the long factors) and one of 6 (the short ones), batched, each
/// match transformers run on that row alone, on every layer. (transformers, batching them, would
/// give the short row the long factors.)
#[test]
fn longrope_takes_each_rows_own_factors() {
    let python = or_skip!(python());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("phi3-longrope");
    let dir_s = dir.to_str().unwrap();
    let long: Vec<i64> = (0..24).map(|t| (t * 37 + 11) % 100).collect();
    let short: Vec<i64> = long[..6].iter().map(|t| (t + 50) % 100).collect();
    let rows = [long.clone(), short.clone()];
    let mut steps = vec!["build".to_owned(), "phi3-longrope".to_owned(), dir_s.to_owned()];
    for (i, row) in rows.iter().enumerate() {
        let ids = Tensor::from_slice(row).unsqueeze(0);
        let inputs = tmp.path().join(format!("row{i}.npz"));
        write_inputs(&inputs, &ids, &ids.ones_like());
        let capture = tmp.path().join(format!("row{i}.ref.npz"));
        steps.push("+".to_owned());
        steps.extend(capture_step(dir_s, &inputs, &capture).map(str::to_owned));
    }
    reference(&python, &steps.iter().map(String::as_str).collect::<Vec<_>>());

    let model = hooks_models::load(&dir, Device::Cpu, Kind::Float).unwrap();
    let mut padded = short.clone();
    padded.resize(24, 0);
    let ids = Tensor::from_slice2(&[long.as_slice(), padded.as_slice()]);
    let mask = Tensor::from_slice2(&[[1i64; 24], std::array::from_fn(|t| i64::from(t < 6))]);
    let ours = capture_all(&*model, &ids, &mask);
    for (i, len) in [(0i64, 24i64), (1, 6)] {
        let mut row = hooks::Activations::new();
        for (name, tensor) in &ours {
            row.insert(name, tensor.narrow(0, i, 1).narrow(1, 0, len));
        }
        let capture = tmp.path().join(format!("row{i}.ref.npz"));
        let alone = Tensor::ones([1, len], (Kind::Int64, Device::Cpu));
        report(
            &format!("phi3 longrope, row of {len} batched"),
            &compare(&row, &capture, &alone),
            "sdpa",
            Instant::now(),
        );
    }
}

/// Each RMS norm's `normalized` point is `x / sqrt(mean(x²) + eps)` of its input (TransformerLens'
/// `hook_normalized`, before the weight), and the norm's output is that times its weight in the
/// architecture's form: `(1 + w)` for Gemma 2, `w` for OLMo 2 and Llama.
#[test]
fn the_normalized_point_is_the_norm_before_its_weight() {
    for (arch, norm, gemma) in [
        ("gemma2", "model.layers.1.pre_feedforward_layernorm", true),
        ("olmo2", "model.layers.0.post_feedforward_layernorm", false),
        ("llama", "model.layers.1.input_layernorm", false),
    ] {
        let python = or_skip!(python());
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(arch);
        reference(&python, &["build", arch, dir.to_str().unwrap()]);
        let model = hooks_models::load(&dir, Device::Cpu, Kind::Float).unwrap();
        let (ids, mask) = padded_batch();
        let (input, normalized) = (format!("{norm}:input"), format!("{norm}.normalized"));
        let store = ActivationStore::new(&*model, [input.as_str(), normalized.as_str(), norm]).unwrap();
        store.enable();
        let _ = model.forward(&ids, &mask).unwrap();
        let x = store.get(&input).unwrap().to_kind(Kind::Double);
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        let eps = config["rms_norm_eps"].as_f64().unwrap();
        let want = &x / (x.square().mean_dim(-1, true, Kind::Double) + eps).sqrt();
        let got = store.get(&normalized).unwrap().to_kind(Kind::Double);
        let diff = (&got - &want).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{arch} `{normalized}`: differs from x / rms(x) by {diff}");
        let weight = Tensor::read_safetensors(dir.join("model.safetensors"))
            .unwrap()
            .into_iter()
            .find(|(name, _)| name == &format!("{norm}.weight"))
            .unwrap()
            .1
            .to_kind(Kind::Double);
        let gain = if gemma { weight + 1.0 } else { weight };
        let out = store.get(norm).unwrap().to_kind(Kind::Double);
        let diff = (out - want * gain).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{arch} `{norm}`: differs from normalized × gain by {diff}");
    }
}

#[test]
fn random_models_without_padding_match_transformers() {
    // Without padding the attention takes its unmasked (BERT) and causal-only (GPT-2) paths.
    // Every architecture the loader knows: one without a `reference.py build` config fails here.
    for arch in hooks_models::SUPPORTED_MODEL_TYPES {
        or_skip!(random_model_parity(arch, unpadded_batch));
    }
}

const SENTENCES: [&str; 3] = [
    "The quick brown fox jumps over the lazy dog.",
    "Activations, captured by layer path!",
    "Hooks work in Rust too.",
];

#[test]
fn minilm_tokenizer_and_every_layer_match_transformers() {
    let start = Instant::now();
    let python = or_skip!(python());
    let dir = minilm_dir(&python);
    let tmp = tempfile::tempdir().unwrap();
    let (tokens, inputs, capture) = (
        tmp.path().join("tokens.npz"),
        tmp.path().join("inputs.npz"),
        tmp.path().join("reference.npz"),
    );

    // Our tokenizer's batch is what both sides run on; Python's tokenization is checked against it.
    let tokenizer = Tokenizer::from_dir(&dir).unwrap();
    let model = Bert::load(&dir, Device::Cpu, Kind::Float).unwrap();
    let (ids, mask) = tokenizer.encode_batch(&SENTENCES, model.max_length()).unwrap();
    write_inputs(&inputs, &ids, &mask);
    let dir_s = dir.to_str().unwrap();
    let mut steps = vec!["tokenize", dir_s, "512", tokens.to_str().unwrap()];
    steps.extend(SENTENCES);
    steps.push("+");
    steps.extend(capture_step(dir_s, &inputs, &capture));
    reference(&python, &steps);

    let theirs = hooks::load_activations(&tokens).unwrap();
    assert!(
        ids.equal(theirs.get("input_ids").unwrap()),
        "input_ids differ from AutoTokenizer's"
    );
    assert!(
        mask.equal(theirs.get("attention_mask").unwrap()),
        "attention_mask differs from AutoTokenizer's"
    );
    assert!(
        mask.sum(Kind::Int64).int64_value(&[]) < mask.numel() as i64,
        "the batch should need padding"
    );

    let modules = read_modules(&capture);
    assert_eq!(module_names(&model), expected_layer_names(&modules));
    assert!(model.pooler.is_some(), "MiniLM's weights have a pooler");
    let ours = capture_all(&model, &ids, &mask);
    report(
        "minilm",
        &compare(&ours, &capture, &mask),
        &modules.attn_implementation,
        start,
    );
}

#[test]
fn minilm_truncation_matches_transformers() {
    let python = or_skip!(python());
    let dir = minilm_dir(&python);
    let tmp = tempfile::tempdir().unwrap();
    let tokens = tmp.path().join("tokens.npz");
    let long = "a sentence long enough to be cut at eight tokens, special ones included";
    let texts = [long, "short"];
    let (ids, mask) = Tokenizer::from_dir(&dir).unwrap().encode_batch(&texts, 8).unwrap();
    assert_eq!(ids.size(), [2, 8]);
    reference(
        &python,
        &[
            "tokenize",
            dir.to_str().unwrap(),
            "8",
            tokens.to_str().unwrap(),
            long,
            "short",
        ],
    );
    let theirs = hooks::load_activations(&tokens).unwrap();
    assert!(ids.equal(theirs.get("input_ids").unwrap()));
    assert!(mask.equal(theirs.get("attention_mask").unwrap()));
}

/// `Default` of each config is transformers' own default config, field for field.
#[test]
fn config_defaults_are_transformers_defaults() {
    let python = or_skip!(python());
    let script = "import json\nfrom transformers import BertConfig, GPT2Config, LlamaConfig\n\
                  print(json.dumps({'bert': BertConfig().to_dict(), 'gpt2': GPT2Config().to_dict(), \
                  'llama': LlamaConfig().to_dict()}))";
    let out = hooks_test_support::python_command(&python)
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let theirs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bert: BertConfig = serde_json::from_value(theirs["bert"].clone()).unwrap();
    assert_eq!(bert, BertConfig::default());
    let gpt2: Gpt2Config = serde_json::from_value(theirs["gpt2"].clone()).unwrap();
    assert_eq!(gpt2, Gpt2Config::default());
    // transformers writes out the values it implies (kv heads, head_dim, rope_parameters).
    let llama: LlamaConfig = serde_json::from_value(theirs["llama"].clone()).unwrap();
    assert_eq!(llama, LlamaConfig::default().resolved());
}

#[test]
fn layer_templates_read_like_pytorch() {
    // Independent of Python: the paths spelled out as `named_modules()` lists them.
    let attention = [
        "attention",
        "attention.self",
        "attention.self.query",
        "attention.self.key",
    ];
    let rest = [
        "attention.self.value",
        "attention.self.attn_weights",
        "attention.output",
        "attention.output.dense",
        "attention.output.LayerNorm",
        "intermediate",
        "intermediate.dense",
        "output",
        "output.dense",
        "output.LayerNorm",
    ];
    let mut bert: Vec<String> = [
        "embeddings",
        "embeddings.word_embeddings",
        "embeddings.position_embeddings",
        "embeddings.token_type_embeddings",
        "embeddings.LayerNorm",
        "encoder",
        "encoder.layer.*",
    ]
    .map(String::from)
    .into();
    bert.extend(attention.iter().chain(&rest).map(|s| format!("encoder.layer.*.{s}")));
    bert.extend(["pooler".to_owned(), "pooler.dense".to_owned()]);
    assert_eq!(<Bert as Hookable>::SCHEMA.templates(), bert);

    let block = [
        "ln_1",
        "attn",
        "attn.c_attn",
        "attn.c_proj",
        "attn.attn_weights",
        "ln_2",
        "mlp",
        "mlp.c_fc",
        "mlp.c_proj",
    ];
    let mut gpt2: Vec<String> = ["wte", "wpe", "h.*"].map(String::from).into();
    gpt2.extend(block.iter().map(|s| format!("h.*.{s}")));
    gpt2.push("ln_f".to_owned());
    assert_eq!(<Gpt2 as Hookable>::SCHEMA.templates(), gpt2);
}

/// Prints how close the captures came to transformers' (the test has already asserted they match).
fn report(label: &str, comparison: &Comparison, attention: &str, start: Instant) {
    let (layer, diff, scale) = comparison.worst();
    eprintln!(
        "{label}: {} layers match transformers ({attention} attention); max abs diff {:.2e}; closest to tolerance: max abs diff {diff:.2e} at `{layer}` (max |ref| {scale:.2}); {:.1} s",
        comparison.diffs.len(),
        comparison.max_abs(),
        start.elapsed().as_secs_f64()
    );
}
