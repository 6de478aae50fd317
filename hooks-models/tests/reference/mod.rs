//! The parity tests' side of `py/reference.py` (transformers with its own forward hooks): running
//! it, reading what it reports of `named_modules()`, and capturing every layer on our side.
//! Specific to hooks-models' architectures, so it lives here; finding Python, the MiniLM folder and
//! the closeness report are the workspace's (`hooks-test-support`).

use std::path::{Path, PathBuf};

use hooks::{save_activations, ActivationStore, Activations};
use hooks_models::TextModel;
use tch::Tensor;

/// Runs `reference.py` with `steps` (separated by `+`), panicking with its stderr on failure.
pub fn reference(python: &Path, steps: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/reference.py");
    let _ = hooks_test_support::run_python(python, &script, steps);
}

/// The `reference.py` step that runs the model in `dir` on the batch in `inputs` and writes every
/// module's output to `capture`.
pub fn capture_step<'a>(dir: &'a str, inputs: &'a Path, capture: &'a Path) -> [&'a str; 4] {
    ["capture", dir, inputs.to_str().unwrap(), capture.to_str().unwrap()]
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
    /// `base_model.named_modules()`, for a model with a head (`AutoModel`'s names).
    pub base_modules: Option<Vec<PyModule>>,
}

pub fn read_modules(capture: &Path) -> PyModules {
    let path = PathBuf::from(format!("{}.modules.json", capture.display()));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The layer paths hooks-models promises: every `named_modules()` name but the root, the list
/// containers and the modules with neither parameters nor children (dropouts, activations).
pub fn expected_layer_names(modules: &PyModules) -> Vec<String> {
    layer_names_of(&modules.modules)
}

/// [`expected_layer_names`] of any `named_modules()` list.
pub fn layer_names_of(modules: &[PyModule]) -> Vec<String> {
    modules
        .iter()
        .filter(|m| !m.name.is_empty() && m.class != "ModuleList" && !(m.parameters == 0 && m.children == 0))
        .map(|m| m.name.clone())
        .collect()
}

/// Whether `name` is the attention probabilities' capture point (compared with
/// `output_attentions` instead).
pub fn is_probabilities(name: &str) -> bool {
    name.ends_with(".attn_weights")
}

/// Whether `name` is a capture point of ours that is no module of transformers': the attention
/// probabilities, and an RMS norm's `normalized` (checked by its definition).
pub fn is_own_point(name: &str) -> bool {
    is_probabilities(name) || name.ends_with(".normalized")
}

/// `model`'s layers that are transformers' modules, in order.
pub fn module_names(model: &dyn TextModel) -> Vec<String> {
    model.layer_names().into_iter().filter(|n| !is_own_point(n)).collect()
}

/// Runs `model` on the batch with every layer that is a transformers module captured.
pub fn capture_all(model: &dyn TextModel, input_ids: &Tensor, attention_mask: &Tensor) -> Activations {
    let names = module_names(model);
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
