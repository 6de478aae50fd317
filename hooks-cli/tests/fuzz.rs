//! Mutational fuzzing of every reader of files a user hands `hooks`: `.npz`, `.npy`, a dataset
//! folder's `manifest.json` and arrays, `config.json`, the safetensors header, and JSONL input.
//! Each reader gets seeded mutations of a valid file (bytes flipped, cut, inserted, repeated;
//! header lengths and JSON values set to extremes), a fixed count, from a fixed seed: the run is
//! the same every time and takes seconds. Any panic, signal, or error of more than one line fails.
#![allow(clippy::unwrap_used)] // a failing test should fail loudly

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;

use tch::{Device, Kind, Tensor};

/// SplitMix64: a small, well-known generator, so that every case is reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap()
    }
}

/// Values that break assumptions: huge, negative, zero, fractional, of another type.
fn extreme(rng: &mut Rng) -> serde_json::Value {
    let values = [
        serde_json::json!(1_i64 << 40),
        serde_json::json!(-1),
        serde_json::json!(0),
        serde_json::json!(1e308),
        serde_json::json!(-7.5),
        serde_json::json!(u64::MAX),
        serde_json::json!("x"),
        serde_json::Value::Null,
        serde_json::json!([]),
        serde_json::json!({}),
        serde_json::json!(true),
        serde_json::json!([1, -1, 1_i64 << 40]),
    ];
    values[rng.below(values.len())].clone()
}

/// One mutation of `bytes`.
fn mutate(bytes: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let len = out.len().max(1);
    match rng.below(7) {
        0 => {
            for _ in 0..=rng.below(4) {
                let at = rng.below(len);
                if let Some(b) = out.get_mut(at) {
                    *b ^= 1 << rng.below(8);
                }
            }
        }
        1 => out.truncate(rng.below(len)),
        2 => {
            let at = rng.below(len);
            let junk: Vec<u8> = (0..=rng.below(16)).map(|_| rng.next() as u8).collect();
            out.splice(at.min(out.len())..at.min(out.len()), junk);
        }
        3 => {
            let (a, b) = (rng.below(len), rng.below(len));
            let (a, b) = (a.min(b).min(out.len()), a.max(b).min(out.len()));
            let chunk = out[a..b].to_vec();
            out.splice(b..b, chunk);
        }
        4 => {
            // A little-endian length field (npy's, safetensors') set to an extreme.
            let at = rng.below(len.min(16));
            let value = [u64::MAX, 1 << 40, 0, u64::from(u32::MAX)][rng.below(4)];
            for (i, b) in value.to_le_bytes().iter().enumerate() {
                if let Some(slot) = out.get_mut(at + i) {
                    *slot = *b;
                }
            }
        }
        5 => {
            let (a, b) = (rng.below(len), rng.below(len));
            for slot in out.iter_mut().take(a.max(b)).skip(a.min(b)) {
                *slot = 0;
            }
        }
        _ => {
            // Digits changed inside a text header: shapes, offsets, lengths.
            let digits: Vec<usize> = out
                .iter()
                .enumerate()
                .filter(|(_, b)| b.is_ascii_digit())
                .map(|(i, _)| i)
                .collect();
            if !digits.is_empty() {
                let at = digits[rng.below(digits.len())];
                let replacement = ["9999999999999", "0", "-1", "4"][rng.below(4)];
                out.splice(at..=at, replacement.bytes());
            }
        }
    }
    out
}

/// The JSON pointers of `value`'s objects and arrays, to depth 3.
fn containers(value: &serde_json::Value, path: &str, depth: usize, out: &mut Vec<String>) {
    let children: Vec<(String, &serde_json::Value)> = match value {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.replace('~', "~0").replace('/', "~1"), v))
            .collect(),
        serde_json::Value::Array(items) => items.iter().enumerate().map(|(i, v)| (i.to_string(), v)).collect(),
        _ => return,
    };
    out.push(path.to_owned());
    if depth < 3 {
        for (key, child) in children {
            containers(child, &format!("{path}/{key}"), depth + 1, out);
        }
    }
}

/// A JSON value with, in one of its objects or arrays, one entry replaced by an extreme or (an
/// object's) removed.
fn mutate_json(value: &serde_json::Value, rng: &mut Rng) -> serde_json::Value {
    let mut value = value.clone();
    let mut paths = Vec::new();
    containers(&value, "", 0, &mut paths);
    if paths.is_empty() {
        return extreme(rng);
    }
    let path = paths[rng.below(paths.len())].clone();
    let remove = rng.below(6) == 0;
    let replacement = extreme(rng);
    let pick = rng.next();
    match value.pointer_mut(&path) {
        Some(serde_json::Value::Object(map)) if !map.is_empty() => {
            let key = map
                .keys()
                .nth(usize::try_from(pick % map.len() as u64).unwrap())
                .cloned()
                .unwrap();
            if remove {
                map.remove(&key);
            } else {
                map.insert(key, replacement);
            }
        }
        Some(serde_json::Value::Array(items)) if !items.is_empty() => {
            let i = usize::try_from(pick % items.len() as u64).unwrap();
            items[i] = replacement;
        }
        Some(other) => *other = replacement,
        None => {}
    }
    value
}

/// Runs `read` on a mutated file: it may succeed or fail, but not panic, and a failure is one
/// line.
fn check<T, E: std::fmt::Display>(what: &str, case: usize, read: impl FnOnce() -> Result<T, E>) {
    match catch_unwind(AssertUnwindSafe(read)) {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            let message = e.to_string();
            assert_eq!(message.lines().count(), 1, "{what}, case {case}: {message}");
        }
        Err(_) => panic!("{what}, case {case}: the reader panicked"),
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn npz_and_npy_readers_survive_mutations() {
    let tmp = tempfile::tempdir().unwrap();
    let f = Tensor::arange(24, (Kind::Float, Device::Cpu)).view([2, 3, 4]);
    let i = Tensor::from_slice(&[1i64, -2, 3]);
    let strings = vec!["a".to_owned(), "ünï".to_owned()];
    let npz = hooks::save_npz(
        [
            ("f", hooks::NpzArray::Tensor(&f)),
            ("i", hooks::NpzArray::Tensor(&i)),
            ("s", hooks::NpzArray::Strings(&strings)),
        ],
        tmp.path().join("seed.npz"),
    )
    .unwrap();
    let npz = std::fs::read(npz).unwrap();
    // A lone `.npy` as numpy writes one: a float32 [2, 3], its header padded to 64 bytes.
    let npy = {
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        let mut header = dict.to_owned();
        while !(10 + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&u16::try_from(header.len()).unwrap().to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        for v in 0..6u8 {
            bytes.extend_from_slice(&f32::from(v).to_le_bytes());
        }
        bytes
    };
    let mut rng = Rng(0x5EED_0001);
    for case in 0..400 {
        let path = write(tmp.path(), "case.npz", &mutate(&npz, &mut rng));
        check("npz", case, || hooks::load_npz(&path));
        check("npz numbers", case, || hooks::load_numeric(&path));
        let path = write(tmp.path(), "case.npy", &mutate(&npy, &mut rng));
        check("npy", case, || hooks::load_npy(&path));
    }
}

/// A finished dataset folder, written with the library, then its manifest and arrays mutated:
/// reading it (opening, each array memory-mapped, each array's rows) never panics.
#[test]
fn dataset_folder_readers_survive_mutations() {
    let tmp = tempfile::tempdir().unwrap();
    let seed = tmp.path().join("seed");
    let mut writer = hooks::DatasetWriter::create(&seed, serde_json::json!({"fuzz": 1}), None, 3, false).unwrap();
    let mut acts = hooks::Activations::new();
    acts.insert(
        "layer.a",
        Tensor::arange(3 * 4 * 2, (Kind::Float, Device::Cpu)).view([3, 4, 2]),
    );
    acts.insert("pooled", Tensor::ones([3, 5], (Kind::Float, Device::Cpu)));
    let ids = Tensor::from_slice2(&[[1i64, 2, 3, 4], [5, 6, 0, 0], [7, 0, 0, 0]]);
    let mask = ids.ne(0).to_kind(Kind::Int64);
    hooks::ActivationSink::write(
        &mut writer,
        &hooks::Chunk {
            first: 0,
            activations: &acts,
            input_ids: &ids,
            attention_mask: &mask,
        },
    )
    .unwrap();
    writer.finish().unwrap();
    drop(writer);
    let names: Vec<String> = std::fs::read_dir(&seed)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(seed.join("manifest.json")).unwrap()).unwrap();
    let mut rng = Rng(0x5EED_0002);
    for case in 0..250 {
        let dir = tmp.path().join(format!("case{case}"));
        std::fs::create_dir(&dir).unwrap();
        for name in &names {
            std::fs::copy(seed.join(name), dir.join(name)).unwrap();
        }
        if rng.below(2) == 0 {
            let text = serde_json::to_vec(&mutate_json(&manifest, &mut rng)).unwrap();
            write(&dir, "manifest.json", &text);
        } else {
            let name = &names[rng.below(names.len())];
            let bytes = std::fs::read(dir.join(name)).unwrap();
            write(&dir, name, &mutate(&bytes, &mut rng));
        }
        check("dataset folder", case, || -> Result<(), hooks::Error> {
            let dataset = hooks::Dataset::open(&dir)?;
            let layers: Vec<String> = dataset.layers().map(str::to_owned).collect();
            for layer in layers {
                let _ = dataset.array(&layer)?;
                let reader = dataset.reader(&layer)?;
                let rows = reader.shape().first().copied().unwrap_or(0);
                let _ = reader.read_rows(0, rows.min(2))?;
            }
            Ok(())
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// A tiny BERT folder (config.json and model.safetensors), its config's values and the weights'
/// bytes mutated: loading never panics or aborts.
#[test]
fn model_folder_readers_survive_mutations() {
    let tmp = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "model_type": "bert", "vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 6, "max_position_embeddings": 8,
        "type_vocab_size": 2, "hidden_act": "gelu",
    });
    let mut shapes: Vec<(String, Vec<i64>)> = vec![
        ("embeddings.word_embeddings.weight".into(), vec![10, 4]),
        ("embeddings.position_embeddings.weight".into(), vec![8, 4]),
        ("embeddings.token_type_embeddings.weight".into(), vec![2, 4]),
        ("embeddings.LayerNorm.weight".into(), vec![4]),
        ("embeddings.LayerNorm.bias".into(), vec![4]),
    ];
    for (name, out, inp) in [
        ("attention.self.query", 4, 4),
        ("attention.self.key", 4, 4),
        ("attention.self.value", 4, 4),
        ("attention.output.dense", 4, 4),
        ("intermediate.dense", 6, 4),
        ("output.dense", 4, 6),
    ] {
        shapes.push((format!("encoder.layer.0.{name}.weight"), vec![out, inp]));
        shapes.push((format!("encoder.layer.0.{name}.bias"), vec![out]));
    }
    for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
        shapes.push((format!("encoder.layer.0.{norm}.weight"), vec![4]));
        shapes.push((format!("encoder.layer.0.{norm}.bias"), vec![4]));
    }
    let tensors: Vec<(String, Tensor)> = shapes
        .iter()
        .map(|(n, s)| (n.clone(), Tensor::ones(s.as_slice(), (Kind::Float, Device::Cpu))))
        .collect();
    let weights_path = tmp.path().join("seed.safetensors");
    Tensor::write_safetensors(&tensors, &weights_path).unwrap();
    let weights = std::fs::read(&weights_path).unwrap();
    let dir = tmp.path().join("model");
    std::fs::create_dir(&dir).unwrap();
    let mut rng = Rng(0x5EED_0003);
    for case in 0..300 {
        let (config, weights) = if rng.below(2) == 0 {
            (mutate_json(&config, &mut rng), weights.clone())
        } else {
            (config.clone(), mutate(&weights, &mut rng))
        };
        write(&dir, "config.json", &serde_json::to_vec(&config).unwrap());
        write(&dir, "model.safetensors", &weights);
        check("model folder", case, || {
            hooks_models::load(&dir, Device::Cpu, Kind::Float)
        });
    }
}

/// JSONL input read by the command (its reader lives there): mutated lines, over a model with
/// its tokenizer, exit 0 or 1 with one line, never a panic (101) or a signal.
#[test]
fn jsonl_input_survives_mutations() {
    let Some(python) = hooks_test_support::python() else {
        return;
    };
    let model = hooks_test_support::minilm_dir(&python);
    let tmp = tempfile::tempdir().unwrap();
    let seed = [
        r#"{"text": "A sentence.", "label": 1}"#,
        r#"{"input_ids": [101, 7592, 102], "attention_mask": [1, 1, 1], "label": 2}"#,
        r#"{"text": "Another one, with ünïcode.", "label": 3}"#,
    ];
    let mut rng = Rng(0x5EED_0004);
    for case in 0..20 {
        let lines: Vec<String> = seed
            .iter()
            .map(|line| {
                if rng.below(2) == 0 {
                    let value: serde_json::Value = serde_json::from_str(line).unwrap();
                    serde_json::to_string(&mutate_json(&value, &mut rng)).unwrap()
                } else {
                    String::from_utf8_lossy(&mutate(line.as_bytes(), &mut rng)).into_owned()
                }
            })
            .collect();
        let input = write(tmp.path(), "case.jsonl", (lines.join("\n") + "\n").as_bytes());
        let out = Command::new(env!("CARGO_BIN_EXE_hooks"))
            .args([
                "extract",
                "--model",
                model.to_str().unwrap(),
                "--input",
                input.to_str().unwrap(),
            ])
            .args(["--keep-keys", "label", "--layers", "pooler", "--out"])
            .arg(tmp.path().join("out.npz"))
            .env_remove("LD_LIBRARY_PATH")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => {}
            Some(1) => assert_eq!(err.trim_end().lines().count(), 1, "case {case} ({lines:?}): {err}"),
            other => panic!("case {case} ({lines:?}): exit {other:?}: {err}"),
        }
    }
}
