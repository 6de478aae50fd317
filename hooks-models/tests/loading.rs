//! Loading and input errors, on tiny model folders written here (no Python needed): each bad
//! input is an error naming the problem, never a panic.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly by unwrapping")]

use std::fs;
use std::path::Path;

use hooks::{ActivationStore, LayerTree};
use hooks_models::{
    Bert, BertConfig, Gpt2, Gpt2Config, GptNeox, GptNeoxConfig, Llama, LlamaConfig, ModelError, TextModel, Tokenizer,
};
use tch::{Device, Kind, Tensor};

/// A one-layer BERT with 2 heads of width 2, intermediate 6, vocabulary 10, 8 positions.
fn bert_config() -> serde_json::Value {
    serde_json::json!({
        "model_type": "bert",
        "vocab_size": 10,
        "hidden_size": 4,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 6,
        "max_position_embeddings": 8,
        "type_vocab_size": 2,
        "hidden_act": "gelu",
    })
}

/// The parameters of `bert_config()`, spelled out as transformers stores them.
fn bert_weights() -> Vec<(String, Vec<i64>)> {
    let mut w: Vec<(String, Vec<i64>)> = vec![
        ("embeddings.word_embeddings.weight".into(), vec![10, 4]),
        ("embeddings.position_embeddings.weight".into(), vec![8, 4]),
        ("embeddings.token_type_embeddings.weight".into(), vec![2, 4]),
        ("embeddings.LayerNorm.weight".into(), vec![4]),
        ("embeddings.LayerNorm.bias".into(), vec![4]),
    ];
    let l = "encoder.layer.0";
    for (name, out, inp) in [
        ("attention.self.query", 4, 4),
        ("attention.self.key", 4, 4),
        ("attention.self.value", 4, 4),
        ("attention.output.dense", 4, 4),
        ("intermediate.dense", 6, 4),
        ("output.dense", 4, 6),
    ] {
        w.push((format!("{l}.{name}.weight"), vec![out, inp]));
        w.push((format!("{l}.{name}.bias"), vec![out]));
    }
    for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
        w.push((format!("{l}.{norm}.weight"), vec![4]));
        w.push((format!("{l}.{norm}.bias"), vec![4]));
    }
    w
}

/// Writes `config` and the given weights (random values, each name prefixed) to `dir`.
fn write_model(dir: &Path, config: &serde_json::Value, weights: &[(String, Vec<i64>)], prefix: &str) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let tensors: Vec<(String, Tensor)> = weights
        .iter()
        .map(|(name, shape)| {
            (
                format!("{prefix}{name}"),
                Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu)),
            )
        })
        .collect();
    Tensor::write_safetensors(&tensors, dir.join("model.safetensors")).unwrap();
}

fn load_err(dir: &Path) -> ModelError {
    let err = hooks_models::load(dir, Device::Cpu, Kind::Float).unwrap_err();
    let message = err.to_string();
    assert!(!message.contains('\n'), "one line: {message}");
    assert!(message.starts_with(|c: char| !c.is_uppercase()), "lowercase: {message}");
    err
}

#[test]
fn loads_prefixed_weights_ignoring_buffers_and_heads() {
    let tmp = tempfile::tempdir().unwrap();
    let mut weights = bert_weights();
    weights.push(("cls.predictions.bias".into(), vec![10]));
    write_model(tmp.path(), &bert_config(), &weights, "bert.");
    // A non-float buffer, as BertModel saves `position_ids` in older checkpoints.
    let mut tensors = Tensor::read_safetensors(tmp.path().join("model.safetensors")).unwrap();
    tensors.push((
        "bert.embeddings.position_ids".into(),
        Tensor::arange(8, (Kind::Int64, Device::Cpu)).view([1, 8]),
    ));
    Tensor::write_safetensors(&tensors, tmp.path().join("model.safetensors")).unwrap();
    let stored: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();

    let bert = Bert::load(tmp.path(), Device::Cpu, Kind::Float).unwrap();
    assert!(bert.pooler.is_none(), "no pooler weights, so no pooler layer");
    assert!(!bert.layer_names().iter().any(|n| n.starts_with("pooler")));

    // The word embeddings come from the file: their output rows are the stored rows.
    let store = ActivationStore::new(&bert, ["embeddings.word_embeddings"]).unwrap();
    store.enable();
    let ids = Tensor::from_slice2(&[[3i64, 9, 0]]);
    let out = bert.forward(&ids, &ids.ones_like()).unwrap();
    assert_eq!(out.size(), [1, 3, 4]);
    let table = &stored["bert.embeddings.word_embeddings.weight"];
    let expected = table.index_select(0, &Tensor::from_slice(&[3i64, 9, 0])).unsqueeze(0);
    assert!(store.get("embeddings.word_embeddings").unwrap().equal(&expected));
}

/// A tensor inside the model that the config does not describe (a second layer where the config
/// has one, a bias on a module without one, a new parameter in a known module) is as much a
/// mismatch as a missing one: loading it would silently compute another model.
#[test]
fn unexpected_weights_inside_the_model_are_named() {
    for (extra, shape) in [
        ("encoder.layer.1.output.dense.weight", vec![4, 8]),
        ("embeddings.word_embeddings.bias", vec![4]),
        ("encoder.layer.0.attention.self.extra.weight", vec![4, 4]),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let mut weights = bert_weights();
        weights.push((extra.into(), shape));
        write_model(tmp.path(), &bert_config(), &weights, "bert.");
        let err = load_err(tmp.path());
        let stored = format!("bert.{extra}");
        assert!(
            matches!(&err, ModelError::UnexpectedWeight { name, .. } if *name == stored),
            "{extra}: {err}"
        );
        assert!(
            err.to_string()
                .contains("is not part of the model `config.json` describes"),
            "{err}"
        );
    }
}

#[test]
fn missing_folder_and_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let gone = tmp.path().join("nowhere");
    assert!(matches!(load_err(&gone), ModelError::MissingFolder { path } if path == gone));
    assert!(matches!(load_err(tmp.path()), ModelError::MissingFile { path, .. } if path.ends_with("config.json")));
    fs::write(tmp.path().join("config.json"), bert_config().to_string()).unwrap();
    let err = load_err(tmp.path());
    assert!(matches!(&err, ModelError::MissingFile { path, .. } if path.ends_with("model.safetensors")));
    assert!(err.to_string().contains("save_pretrained"), "{err}");
}

#[test]
fn unsupported_model_type_names_the_supported_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = bert_config();
    config["model_type"] = "t5".into();
    write_model(tmp.path(), &config, &bert_weights(), "");
    let message = load_err(tmp.path()).to_string();
    assert!(
        message.contains("unsupported model_type `t5`")
            && message.ends_with(&format!(
                "supported: {}",
                hooks_models::SUPPORTED_MODEL_TYPES.map(|t| format!("`{t}`")).join(", ")
            )),
        "{message}"
    );

    // Loading one architecture from another's folder names the one it takes.
    let gpt2_dir = tmp.path().join("gpt2");
    write_model(&gpt2_dir, &serde_json::json!({ "model_type": "gpt2" }), &[], "");
    let err = Bert::load(&gpt2_dir, Device::Cpu, Kind::Float).unwrap_err();
    assert!(
        matches!(&err, ModelError::UnsupportedModelType { found, supported, .. } if found == "gpt2" && supported == &["bert"]),
        "{err}"
    );
}

#[test]
fn missing_weight_names_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let weights: Vec<_> = bert_weights()
        .into_iter()
        .filter(|(n, _)| n != "encoder.layer.0.output.dense.bias")
        .collect();
    write_model(tmp.path(), &bert_config(), &weights, "");
    let err = load_err(tmp.path());
    assert!(
        matches!(&err, ModelError::MissingWeight { name, expected, .. } if name == "encoder.layer.0.output.dense.bias" && expected == &[4]),
        "{err}"
    );
}

#[test]
fn mis_shaped_weight_names_both_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut weights = bert_weights();
    for (name, shape) in &mut weights {
        if name == "encoder.layer.0.output.dense.weight" {
            *shape = vec![4, 5];
        }
    }
    write_model(tmp.path(), &bert_config(), &weights, "");
    let err = load_err(tmp.path());
    assert!(
        matches!(&err, ModelError::WeightShape { name, expected, found, .. }
            if name == "encoder.layer.0.output.dense.weight" && expected == &[4, 6] && found == &[4, 5]),
        "{err}"
    );
    assert!(
        err.to_string().contains("[4, 6]") && err.to_string().contains("[4, 5]"),
        "{err}"
    );
}

#[test]
fn bad_configs_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, serde_json::Value, &str); 4] = [
        ("act", serde_json::json!({ "hidden_act": "softmax" }), "`gelu_new`"),
        ("heads", serde_json::json!({ "num_attention_heads": 3 }), "multiple"),
        ("type", serde_json::json!({ "hidden_size": "wide" }), "hidden_size"),
        (
            "relative",
            serde_json::json!({ "position_embedding_type": "relative_key" }),
            "absolute",
        ),
    ];
    for (case, patch, needle) in cases {
        let mut config = bert_config();
        for (k, v) in patch.as_object().unwrap() {
            config[k] = v.clone();
        }
        let dir = tmp.path().join(case);
        write_model(&dir, &config, &bert_weights(), "");
        let message = load_err(&dir).to_string();
        assert!(message.contains(needle), "{case}: {message}");
    }
    let dir = tmp.path().join("json");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("config.json"), "{ not json").unwrap();
    assert!(matches!(load_err(&dir), ModelError::BadConfig { .. }));

    // An activation transformers has and this crate does not: unsupported, not invalid.
    let mut config = bert_config();
    config["hidden_act"] = "mish".into();
    let dir = tmp.path().join("mish");
    write_model(&dir, &config, &bert_weights(), "");
    let err = load_err(&dir);
    assert!(
        matches!(&err, ModelError::UnsupportedConfig { setting, .. } if setting == "`hidden_act` is `mish`"),
        "{err}"
    );

    // Qwen's sliding window is refused, not run as full attention; off, the config loads as far
    // as its (absent) weights.
    for (model_type, on, needle) in [
        ("qwen2", true, "only full attention is implemented for Qwen2 and Qwen3"),
        ("qwen3", true, "only full attention is implemented for Qwen2 and Qwen3"),
        ("qwen2", false, "model.safetensors` not found"),
    ] {
        let dir = tmp.path().join(format!("{model_type}-{on}"));
        fs::create_dir(&dir).unwrap();
        let config = serde_json::json!({ "model_type": model_type, "use_sliding_window": on });
        fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let message = load_err(&dir).to_string();
        assert!(message.contains(needle), "{model_type} {on}: {message}");
    }
}

/// The later families read `config.json` strictly: a key they neither read nor know to change
/// nothing is refused, naming it (never ignored in silence); so are Gemma 3's attention soft-cap
/// (which transformers' Gemma 3 does not apply), bidirectional attention, an unknown layer type,
/// `longrope` factors of the wrong length, and Gemma 3's multimodal checkpoints. A config with
/// only keys known to be harmless loads as far as its (absent) weights.
#[test]
fn later_families_refuse_what_they_would_ignore() {
    let tmp = tempfile::tempdir().unwrap();
    let phi3_rope = |short: usize| {
        serde_json::json!({
            "type": "longrope",
            "short_factor": vec![1.0; short],
            "long_factor": vec![2.0; 4],
        })
    };
    let cases = [
        (
            "gemma2",
            serde_json::json!({ "quantization_config": { "bits": 4 } }),
            "`quantization_config` is set",
        ),
        ("olmo2", serde_json::json!({ "clip_qkv": 8.0 }), "`clip_qkv` is set"),
        (
            "phi3",
            serde_json::json!({ "attention_bias": true }),
            "`attention_bias` is set",
        ),
        (
            "gemma3_text",
            serde_json::json!({ "attn_logit_softcapping": 50.0 }),
            "does not apply it",
        ),
        (
            "gemma3_text",
            serde_json::json!({ "use_bidirectional_attention": true }),
            "only the causal decoder",
        ),
        (
            "gemma2",
            serde_json::json!({ "layer_types": ["chunked_attention"] }),
            "`chunked_attention`",
        ),
        (
            "phi3",
            serde_json::json!({ "hidden_size": 64, "num_attention_heads": 4, "rope_scaling": phi3_rope(3) }),
            "`short_factor` has 3 values; 16 rotated features need 8",
        ),
        ("gemma3", serde_json::json!({}), "unsupported model_type `gemma3`"),
        // Harmless keys (and nulls) pass; the weights are what is missing.
        (
            "phi3",
            serde_json::json!({ "resid_pdrop": 0.1, "auto_map": {}, "sliding_window": null, "torch_dtype": "bfloat16" }),
            "model.safetensors` not found",
        ),
        (
            "gemma2",
            serde_json::json!({ "hidden_act": "gelu_pytorch_tanh", "cache_implementation": "hybrid" }),
            "model.safetensors` not found",
        ),
    ];
    for (i, (model_type, patch, needle)) in cases.into_iter().enumerate() {
        let dir = tmp.path().join(format!("{i}-{model_type}"));
        fs::create_dir(&dir).unwrap();
        let mut config = patch;
        config["model_type"] = model_type.into();
        fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let message = load_err(&dir).to_string();
        assert!(message.contains(needle), "{model_type} {config}: {message}");
        assert_eq!(message.lines().count(), 1, "{message}");
    }
}

#[test]
fn unsupported_kind_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    write_model(tmp.path(), &bert_config(), &bert_weights(), "");
    let err = hooks_models::load(tmp.path(), Device::Cpu, Kind::Int64).unwrap_err();
    assert!(matches!(err, ModelError::UnsupportedKind { .. }), "{err}");
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    write_model(tmp.path(), &bert_config(), &bert_weights(), "");
    let bert = Bert::load(tmp.path(), Device::Cpu, Kind::Float).unwrap();
    let ok = Tensor::from_slice2(&[[1i64, 2, 3]]);
    let ones = ok.ones_like();
    let cases = [
        (
            "1-d ids",
            Tensor::from_slice(&[1i64, 2]),
            Tensor::from_slice(&[1i64, 1]),
            "shape",
        ),
        (
            "mask shape",
            ok.shallow_clone(),
            Tensor::from_slice2(&[[1i64, 1]]),
            "same shape",
        ),
        ("float ids", ok.to_kind(Kind::Float), ones.shallow_clone(), "integer"),
        (
            "past vocab",
            Tensor::from_slice2(&[[1i64, 10]]),
            Tensor::from_slice2(&[[1i64, 1]]),
            "vocabulary",
        ),
        (
            "negative",
            Tensor::from_slice2(&[[-1i64]]),
            Tensor::from_slice2(&[[1i64]]),
            "vocabulary",
        ),
        (
            "too long",
            Tensor::zeros([1, 9], (Kind::Int64, Device::Cpu)),
            Tensor::ones([1, 9], (Kind::Int64, Device::Cpu)),
            "at most 8",
        ),
        (
            "empty",
            Tensor::zeros([0, 3], (Kind::Int64, Device::Cpu)),
            Tensor::zeros([0, 3], (Kind::Int64, Device::Cpu)),
            "non-empty",
        ),
    ];
    for (case, ids, mask, needle) in cases {
        let err = bert.forward(&ids, &mask).unwrap_err();
        assert!(matches!(err, ModelError::InvalidInput { .. }), "{case}: {err}");
        assert!(err.to_string().contains(needle), "{case}: {err}");
    }
    assert_eq!(bert.forward(&ok, &ones).unwrap().size(), [1, 3, 4]);
}

#[test]
fn tokenizer_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Tokenizer::from_dir(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, ModelError::MissingFile { path, .. } if path.ends_with("tokenizer.json")),
        "{err}"
    );
    fs::write(tmp.path().join("tokenizer.json"), "{}").unwrap();
    assert!(matches!(
        Tokenizer::from_dir(tmp.path()).unwrap_err(),
        ModelError::Tokenizer { .. }
    ));
}

#[test]
fn loads_sharded_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let (single, sharded) = (tmp.path().join("single"), tmp.path().join("sharded"));
    write_model(&single, &bert_config(), &bert_weights(), "");
    let tensors = Tensor::read_safetensors(single.join("model.safetensors")).unwrap();
    fs::create_dir(&sharded).unwrap();
    fs::copy(single.join("config.json"), sharded.join("config.json")).unwrap();
    let (first, second) = tensors.split_at(tensors.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (file, part) in [
        ("model-00001-of-00002.safetensors", first),
        ("model-00002-of-00002.safetensors", second),
    ] {
        Tensor::write_safetensors(part, sharded.join(file)).unwrap();
        for (name, _) in part {
            weight_map.insert(name.clone(), file.into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    fs::write(sharded.join("model.safetensors.index.json"), index.to_string()).unwrap();

    let ids = Tensor::from_slice2(&[[1i64, 5, 7]]);
    let expected = Bert::load(&single, Device::Cpu, Kind::Float)
        .unwrap()
        .forward(&ids, &ids.ones_like());
    let got = Bert::load(&sharded, Device::Cpu, Kind::Float)
        .unwrap()
        .forward(&ids, &ids.ones_like());
    assert!(got.unwrap().equal(&expected.unwrap()));
}

#[test]
fn gpt2_loads_prefixed_weights_and_conv1d_is_input_by_output() {
    let tmp = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "model_type": "gpt2", "vocab_size": 10, "n_positions": 8, "n_embd": 4, "n_layer": 1, "n_head": 2,
    });
    let mut weights: Vec<(String, Vec<i64>)> =
        vec![("wte.weight".into(), vec![10, 4]), ("wpe.weight".into(), vec![8, 4])];
    for (name, shape) in [
        ("ln_1.weight", vec![4]),
        ("ln_1.bias", vec![4]),
        ("attn.c_attn.weight", vec![4, 12]),
        ("attn.c_attn.bias", vec![12]),
        ("attn.c_proj.weight", vec![4, 4]),
        ("attn.c_proj.bias", vec![4]),
        ("ln_2.weight", vec![4]),
        ("ln_2.bias", vec![4]),
        ("mlp.c_fc.weight", vec![4, 16]),
        ("mlp.c_fc.bias", vec![16]),
        ("mlp.c_proj.weight", vec![16, 4]),
        ("mlp.c_proj.bias", vec![4]),
    ] {
        weights.push((format!("h.0.{name}"), shape));
    }
    weights.extend([("ln_f.weight".into(), vec![4]), ("ln_f.bias".into(), vec![4])]);
    // The causal-mask buffer old checkpoints carry: not a parameter, ignored.
    weights.push(("h.0.attn.bias".into(), vec![1, 1, 8, 8]));
    write_model(tmp.path(), &config, &weights, "transformer.");
    let stored: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(tmp.path().join("model.safetensors"))
            .unwrap()
            .into_iter()
            .collect();

    let gpt2 = Gpt2::load(tmp.path(), Device::Cpu, Kind::Float).unwrap();
    let store = ActivationStore::new(&gpt2, ["h.0.ln_1", "h.0.attn.c_attn"]).unwrap();
    store.enable();
    let ids = Tensor::from_slice2(&[[2i64, 4, 6], [1, 3, 0]]);
    let mask = Tensor::from_slice2(&[[1i64, 1, 1], [1, 1, 0]]);
    assert_eq!(gpt2.forward(&ids, &mask).unwrap().size(), [2, 3, 4]);
    // `c_attn(x) = x W + b` with W stored [in, out].
    let x = store.get("h.0.ln_1").unwrap();
    let w = &stored["transformer.h.0.attn.c_attn.weight"];
    let b = &stored["transformer.h.0.attn.c_attn.bias"];
    let manual = x.matmul(w) + b;
    let diff = (store.get("h.0.attn.c_attn").unwrap() - manual)
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff < 1e-5, "{diff}");
}

/// The README's table of supported architectures is the loader's list, in order: it cannot drift.
#[test]
fn readme_lists_exactly_the_supported_architectures() {
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let section = readme
        .split("## Supported architectures")
        .nth(1)
        .expect("README has a `## Supported architectures` section");
    // The section's first table (another, of TransformerLens' names, follows).
    let listed: Vec<&str> = section
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .filter(|name| *name != "model_type")
        .collect();
    assert_eq!(listed, hooks_models::SUPPORTED_MODEL_TYPES);
}

/// The standard deviation of a tensor's values, in f64.
fn std_of(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double).std(true).double_value(&[])
}

/// `Bert::new` draws weights as transformers' `BertModel(config)` does: `N(0, 0.02²)` matrices and
/// embeddings, the padding row zero, zero biases, unit LayerNorm weights, all trainable.
#[test]
fn bert_built_in_code_is_initialised_like_transformers() {
    let mut config = BertConfig::default();
    config.vocab_size = 1000;
    config.hidden_size = 64;
    config.num_hidden_layers = 2;
    config.num_attention_heads = 4;
    config.intermediate_size = 128;
    let bert = Bert::new(&config, Device::Cpu, Kind::Float).unwrap();
    let vars = bert.var_store().variables();
    let words = &vars["embeddings.word_embeddings.weight"];
    assert_eq!(words.size(), [1000, 64]);
    assert!((std_of(&words.narrow(0, 1, 999)) - 0.02).abs() < 0.002);
    assert_eq!(words.get(0).abs().max().double_value(&[]), 0.0, "pad_token_id 0's row");
    let query = &vars["encoder.layer.1.attention.self.query.weight"];
    assert!((std_of(query) - 0.02).abs() < 0.002);
    assert_eq!(
        vars["encoder.layer.1.attention.self.query.bias"]
            .abs()
            .max()
            .double_value(&[]),
        0.0
    );
    let norm = &vars["encoder.layer.0.output.LayerNorm.weight"];
    assert!(norm.eq(1.0).all().int64_value(&[]) == 1);
    assert!(vars.values().all(Tensor::requires_grad));
    assert!(bert.layer_names().contains(&"pooler.dense".to_owned()));
    // And it runs.
    let ids = Tensor::from_slice2(&[[5i64, 6, 7]]);
    assert_eq!(bert.forward(&ids, &ids.ones_like()).unwrap().size(), [1, 3, 64]);

    config.num_attention_heads = 5;
    let err = Bert::new(&config, Device::Cpu, Kind::Float).unwrap_err();
    assert!(
        matches!(&err, ModelError::BadConfig { path: None, .. }) && err.to_string().contains("not a multiple"),
        "{err}"
    );
}

/// `Gpt2::new` draws the projections back into the residual stream with `0.02 / √(2 n_layer)`,
/// GPT-2's scheme, and the rest with 0.02.
#[test]
fn gpt2_built_in_code_is_initialised_like_transformers() {
    let mut config = Gpt2Config::default();
    config.vocab_size = 1000;
    config.n_embd = 64;
    config.n_layer = 8;
    config.n_head = 4;
    let gpt2 = Gpt2::new(&config, Device::Cpu, Kind::Float).unwrap();
    let vars = gpt2.var_store().variables();
    let scaled = 0.02 / 4.0; // √(2 × 8)
    for name in ["h.3.attn.c_proj.weight", "h.3.mlp.c_proj.weight"] {
        assert!(
            (std_of(&vars[name]) - scaled).abs() < scaled * 0.1,
            "{name}: {}",
            std_of(&vars[name])
        );
    }
    for name in [
        "h.3.attn.c_attn.weight",
        "h.3.mlp.c_fc.weight",
        "wte.weight",
        "wpe.weight",
    ] {
        assert!(
            (std_of(&vars[name]) - 0.02).abs() < 0.002,
            "{name}: {}",
            std_of(&vars[name])
        );
    }
    let ids = Tensor::from_slice2(&[[5i64, 6, 7]]);
    assert_eq!(gpt2.forward(&ids, &ids.ones_like()).unwrap().size(), [1, 3, 64]);
}

/// transformers 5 writes `rope_parameters` and `dtype`; Hub checkpoints carry the older
/// `rope_theta` + `rope_scaling` (with `type`) and `torch_dtype`. Both forms give one model.
#[test]
fn llama_configs_old_and_new_read_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let common = serde_json::json!({
        "model_type": "llama", "vocab_size": 50, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 32,
    });
    let with = |extra: serde_json::Value| {
        let mut config = common.clone();
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        config
    };
    let new = with(serde_json::json!({
        "dtype": "float32",
        "rope_parameters": {"rope_type": "llama3", "rope_theta": 5000.0, "factor": 4.0,
            "low_freq_factor": 1.0, "high_freq_factor": 2.0, "original_max_position_embeddings": 8},
    }));
    let old = with(serde_json::json!({
        "torch_dtype": "float32",
        "rope_theta": 5000.0,
        "rope_scaling": {"type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
            "high_freq_factor": 2.0, "original_max_position_embeddings": 8},
    }));
    let plain = with(serde_json::json!({ "rope_theta": 5000.0 }));

    let config: LlamaConfig = serde_json::from_value(new.clone()).unwrap();
    let source = Llama::new(&config, Device::Cpu, Kind::Float).unwrap();
    let ids = Tensor::from_slice2(&[[3i64, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 3]]);
    let mask = ids.ones_like();
    let mut outputs = Vec::new();
    for (name, config) in [("new", &new), ("old", &old), ("plain", &plain)] {
        let dir = tmp.path().join(name);
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("config.json"), config.to_string()).unwrap();
        source.var_store().save(dir.join("model.safetensors")).unwrap();
        let llama = Llama::load(&dir, Device::Cpu, Kind::Float).unwrap();
        outputs.push(llama.forward(&ids, &mask).unwrap());
    }
    assert!(outputs[0].equal(&outputs[1]), "rope_scaling reads as rope_parameters");
    // llama3 scaling changes the low frequencies, and so every position past the first.
    assert!(!outputs[0].equal(&outputs[2]), "the llama3 scaling is applied");

    let dir = tmp.path().join("dynamic");
    fs::create_dir(&dir).unwrap();
    let dynamic = with(serde_json::json!({ "rope_scaling": {"rope_type": "dynamic", "factor": 2.0} }));
    fs::write(dir.join("config.json"), dynamic.to_string()).unwrap();
    source.var_store().save(dir.join("model.safetensors")).unwrap();
    let err = load_err(&dir);
    assert!(
        matches!(&err, ModelError::UnsupportedConfig { setting, .. } if setting == "the rope type `dynamic`"),
        "{err}"
    );
}

/// Writes `tensors` under the names `rename` gives them, with `config`, as a model folder.
fn write_renamed(
    dir: &Path,
    config: &serde_json::Value,
    tensors: &[(String, Tensor)],
    rename: impl Fn(&str) -> String,
) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let renamed: Vec<(String, Tensor)> = tensors.iter().map(|(n, t)| (rename(n), t.shallow_clone())).collect();
    Tensor::write_safetensors(&renamed, dir.join("model.safetensors")).unwrap();
}

/// Older BERT checkpoints name LayerNorm parameters `gamma` and `beta`; transformers loads them
/// as `weight` and `bias`, and so do we: the same weights, the same outputs.
#[test]
fn legacy_layer_norm_names_load_as_transformers_loads_them() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = BertConfig::default();
    config.vocab_size = 50;
    config.hidden_size = 16;
    config.num_hidden_layers = 1;
    config.num_attention_heads = 2;
    config.intermediate_size = 32;
    let source = Bert::new(&config, Device::Cpu, Kind::Float).unwrap();
    let json = serde_json::json!({
        "model_type": "bert", "vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 32,
    });
    let tensors: Vec<(String, Tensor)> = source.var_store().variables().into_iter().collect();
    let legacy = |n: &str| {
        n.replace("LayerNorm.weight", "LayerNorm.gamma")
            .replace("LayerNorm.bias", "LayerNorm.beta")
    };
    write_renamed(&tmp.path().join("legacy"), &json, &tensors, legacy);
    assert!(legacy("encoder.layer.0.output.LayerNorm.weight").ends_with("LayerNorm.gamma"));
    let loaded = Bert::load(tmp.path().join("legacy"), Device::Cpu, Kind::Float).unwrap();
    let ids = Tensor::from_slice2(&[[3i64, 14, 15, 9]]);
    let (want, got) = (
        source.forward(&ids, &ids.ones_like()).unwrap(),
        loaded.forward(&ids, &ids.ones_like()).unwrap(),
    );
    assert!(got.equal(&want));
}

/// A decoder saved as its base model (`AutoModel.save_pretrained`: no `model.` in the names)
/// loads into the causal LM, as transformers loads it; with an untied head there is no `lm_head`
/// to load, and that is an error naming it rather than a random head.
#[test]
fn a_base_model_checkpoint_loads_into_the_causal_lm() {
    let tmp = tempfile::tempdir().unwrap();
    let mut json = serde_json::json!({
        "model_type": "llama", "vocab_size": 50, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
        "tie_word_embeddings": true,
    });
    let config: LlamaConfig = serde_json::from_value(json.clone()).unwrap();
    let source = Llama::new(&config, Device::Cpu, Kind::Float).unwrap();
    let tensors: Vec<(String, Tensor)> = source.var_store().variables().into_iter().collect();
    let base = |n: &str| n.strip_prefix("model.").unwrap_or(n).to_owned();
    write_renamed(&tmp.path().join("tied"), &json, &tensors, base);
    let loaded = Llama::load(tmp.path().join("tied"), Device::Cpu, Kind::Float).unwrap();
    let ids = Tensor::from_slice2(&[[3i64, 14, 15, 9]]);
    let (want, got) = (
        source.forward(&ids, &ids.ones_like()).unwrap(),
        loaded.forward(&ids, &ids.ones_like()).unwrap(),
    );
    assert!(got.equal(&want));

    // Untied, the head's weight is not in a base model's file. Without word of what the folder
    // holds, that is a missing weight; `architectures: ["LlamaModel"]`, as
    // `LlamaModel.save_pretrained` writes it, says there is no head: the model loads without
    // `lm_head`, and its base-model names answer as its own.
    json["tie_word_embeddings"] = false.into();
    let body: Vec<(String, Tensor)> = tensors
        .iter()
        .filter(|(n, _)| n != "lm_head.weight")
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    write_renamed(&tmp.path().join("untied"), &json, &body, base);
    let err = load_err(&tmp.path().join("untied"));
    assert!(
        matches!(&err, ModelError::MissingWeight { name, .. } if name == "lm_head.weight"),
        "{err}"
    );
    json["architectures"] = serde_json::json!(["LlamaModel"]);
    write_renamed(&tmp.path().join("base"), &json, &body, base);
    let loaded = Llama::load(tmp.path().join("base"), Device::Cpu, Kind::Float).unwrap();
    assert!(loaded.lm_head.is_none());
    assert!(!loaded.layer_names().iter().any(|n| n == "lm_head"));
    let store = ActivationStore::new(&loaded, ["layers.0", "norm"]).unwrap();
    store.enable();
    let got = loaded.forward(&ids, &ids.ones_like()).unwrap();
    assert!(got.equal(&want), "the same body as the tied source");
    assert!(store.get("norm").unwrap().equal(&want));
    // A folder saved from the causal LM must hold its head.
    json["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
    write_renamed(&tmp.path().join("lm"), &json, &body, base);
    assert!(matches!(
        load_err(&tmp.path().join("lm")),
        ModelError::MissingWeight { .. }
    ));
}

/// GPT-NeoX checkpoints on the Hub (Pythia) carry `rotary_pct` and `rotary_emb_base` at the top
/// level; transformers 5 writes them into `rope_parameters`. Both give one model, and a config
/// with neither takes transformers' 0.25 and 10000.
#[test]
fn gpt_neox_rotary_settings_old_and_new_read_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let common = serde_json::json!({
        "model_type": "gpt_neox", "vocab_size": 50, "hidden_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 48,
    });
    let with = |extra: serde_json::Value| {
        let mut config = common.clone();
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        config
    };
    let new = with(serde_json::json!({
        "rope_parameters": {"rope_type": "default", "rope_theta": 5000.0, "partial_rotary_factor": 0.5},
    }));
    let old = with(serde_json::json!({ "rotary_pct": 0.5, "rotary_emb_base": 5000.0 }));
    let config: GptNeoxConfig = serde_json::from_value(new.clone()).unwrap();
    let source = GptNeox::new(&config, Device::Cpu, Kind::Float).unwrap();
    let tensors: Vec<(String, Tensor)> = source.var_store().variables().into_iter().collect();
    let ids = Tensor::from_slice2(&[[3i64, 14, 15, 9, 26, 5]]);
    let mut outputs = Vec::new();
    for (name, config) in [("new", &new), ("old", &old), ("neither", &common)] {
        // Stored as GPT-NeoX checkpoints store the head.
        write_renamed(&tmp.path().join(name), config, &tensors, |n| {
            n.replace("lm_head.", "embed_out.")
        });
        let model = GptNeox::load(tmp.path().join(name), Device::Cpu, Kind::Float).unwrap();
        outputs.push(model.forward(&ids, &ids.ones_like()).unwrap());
    }
    assert!(
        outputs[0].equal(&outputs[1]),
        "rotary_pct and rotary_emb_base read as rope_parameters"
    );
    assert!(!outputs[0].equal(&outputs[2]), "the defaults are another rotation");
}

/// A weights file cut short (an interrupted download) says so, on one line, rather than naming a
/// parser's internal error.
#[test]
fn a_truncated_weights_file_is_named_as_cut_short() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bert");
    write_model(&dir, &bert_config(), &bert_weights(), "");
    let file = dir.join("model.safetensors");
    let len = fs::metadata(&file).unwrap().len();
    for keep in [len - 1, len / 2, 20] {
        let bytes = fs::read(&file).unwrap();
        let cut = dir.with_file_name(format!("cut-{keep}"));
        fs::create_dir_all(&cut).unwrap();
        fs::copy(dir.join("config.json"), cut.join("config.json")).unwrap();
        fs::write(cut.join("model.safetensors"), &bytes[..usize::try_from(keep).unwrap()]).unwrap();
        let message = load_err(&cut).to_string();
        assert!(message.contains("the file is cut short"), "{keep}: {message}");
        assert!(message.contains(&format!("{keep} bytes of the")), "{keep}: {message}");
        assert_eq!(message.lines().count(), 1);
    }
}

/// Sizes that would decide the allocation are checked before it: against real models' bounds
/// (2⁴⁰ is an error, not an abort), and against the weights' shapes (a vocabulary, an MLP width
/// or a layer count the weights do not have is named with the tensor, before any tensor of the
/// model exists).
#[test]
fn absurd_or_contradicted_sizes_are_refused_before_allocating() {
    let tmp = tempfile::tempdir().unwrap();
    let huge = 1_i64 << 40;
    for (key, value, needle) in [
        ("vocab_size", serde_json::json!(huge), "`vocab_size` is 1099511627776, beyond any model's"),
        ("intermediate_size", serde_json::json!(huge), "`intermediate_size` is 1099511627776"),
        ("max_position_embeddings", serde_json::json!(huge), "`max_position_embeddings` is 1099511627776"),
        ("type_vocab_size", serde_json::json!(huge), "`type_vocab_size` is 1099511627776"),
        ("num_hidden_layers", serde_json::json!(huge), "`num_hidden_layers` is 1099511627776"),
        ("vocab_size", serde_json::json!(5000), "`vocab_size` and `hidden_size` give `embeddings.word_embeddings.weight` the shape [5000, 4], but it is stored as [10, 4]"),
        ("intermediate_size", serde_json::json!(4096), "`intermediate_size` give `encoder.layer.0.intermediate.dense.weight` the shape [4096, 4]"),
        ("num_hidden_layers", serde_json::json!(3), "`num_hidden_layers` is 3, but the weights hold 1 blocks"),
        ("max_position_embeddings", serde_json::json!(4096), "`max_position_embeddings` give `embeddings.position_embeddings.weight`"),
    ] {
        let mut config = bert_config();
        config[key] = value;
        let dir = tmp.path().join(format!("{key}-{}", config[key]));
        write_model(&dir, &config, &bert_weights(), "");
        let message = load_err(&dir).to_string();
        assert!(message.contains(needle), "{key}: {message}");
        assert_eq!(message.lines().count(), 1);
    }
}
