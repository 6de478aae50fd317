//! A small tch model annotated with `#[derive(Hookable)]`: list its layers, capture a few of them
//! during one forward on the CPU, and save them to an `.npz` file that numpy loads.
//!
//! Run with `make demo` (or `cargo run --example demo` with libtorch set up).

use std::error::Error;

use hooks::{save_activations, ActivationStore, Hook, HookPoint, Hookable, LayerTree};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// A pre-norm transformer-style MLP block: `x + fc2(gelu(fc1(ln(x))))`.
#[derive(Debug, Hookable)]
struct Block {
    #[hook(rename = "LayerNorm")]
    layer_norm: Hook<nn::LayerNorm>,
    fc1: Hook<nn::Linear>,
    /// The hidden activation, after the non-linearity.
    hook_act: HookPoint,
    fc2: Hook<nn::Linear>,
}

impl Block {
    fn new(p: &nn::Path, dim: i64) -> Self {
        Block {
            layer_norm: Hook::new(nn::layer_norm(p / "LayerNorm", vec![dim], Default::default())),
            fc1: Hook::new(nn::linear(p / "fc1", dim, 4 * dim, Default::default())),
            hook_act: HookPoint::new(),
            fc2: Hook::new(nn::linear(p / "fc2", 4 * dim, dim, Default::default())),
        }
    }
}

impl Module for Block {
    fn forward(&self, x: &Tensor) -> Tensor {
        let h = self
            .hook_act
            .apply(self.fc1.forward(&self.layer_norm.forward(x)).gelu("none"));
        x + self.fc2.forward(&h)
    }
}

/// Embeddings, a stack of blocks (each capturable as a whole), and the residual stream at the end.
#[derive(Debug, Hookable)]
struct TinyModel {
    embeddings: Hook<nn::Embedding>,
    layer: Vec<Hook<Block>>,
    hook_resid_final: HookPoint,
}

impl TinyModel {
    fn new(p: &nn::Path, vocab: i64, dim: i64, layers: usize) -> Self {
        TinyModel {
            embeddings: Hook::new(nn::embedding(p / "embeddings", vocab, dim, Default::default())),
            layer: (0..layers)
                .map(|i| Hook::new(Block::new(&(p / "layer" / i), dim)))
                .collect(),
            hook_resid_final: HookPoint::new(),
        }
    }

    fn forward(&self, ids: &Tensor) -> Tensor {
        let mut x = self.embeddings.forward(ids);
        for block in &self.layer {
            x = block.forward(&x);
        }
        self.hook_resid_final.apply(x)
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = TinyModel::new(&vs.root(), 1000, 64, 4);

    println!("{} capturable layers, e.g.:", model.layer_names().len());
    for name in model.layer_names().iter().take(7) {
        println!("  {name}");
    }

    // Checked at compile time: a typo here is a compile error, not an empty result.
    let selected = [
        hooks::layer!(TinyModel, "embeddings"),
        hooks::layer!(TinyModel, "layer.0.hook_act"),
        TinyModel::paths().layer(3).fc2().path(),
        hooks::layer!(TinyModel, "hook_resid_final"),
    ];
    let store = ActivationStore::new(&model, &selected)?;
    store.enable();

    let _no_grad = tch::no_grad_guard();
    let ids = Tensor::randint(1000, [8, 16], (Kind::Int64, Device::Cpu));
    let out = model.forward(&ids);
    println!("\nforward on token ids {:?} -> {:?}; captured:", ids.size(), out.size());
    let acts = store.activations();
    for (name, t) in &acts {
        println!(
            "  {name:<20} {:?} mean {:+.4} std {:.4}",
            t.size(),
            t.mean(Kind::Float).double_value(&[]),
            t.std(true).double_value(&[])
        );
    }

    let path = save_activations(&acts, "target/demo/activations")?;
    println!("\nsaved {} arrays to {}", acts.len(), path.display());
    println!("load them in numpy:\n  import numpy as np\n  acts = np.load(\"{}\")\n  print({{k: acts[k].shape for k in acts.files}})", path.display());
    Ok(())
}
