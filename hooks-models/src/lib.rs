//! Reference transformers for `hooks`: BERT, GPT-2, Llama, Mistral, Qwen2, Qwen3, Gemma and
//! GPT-NeoX in tch, loaded from Hugging Face model folders, with every module capturable under the
//! path PyTorch's `named_modules()` gives it.
//!
//! They serve two purposes. They are ready to use: [`load`] reads a folder written by
//! `save_pretrained` (`config.json`, `model.safetensors`), [`Tokenizer`] reads its
//! `tokenizer.json`, and an [`ActivationStore`](hooks::ActivationStore) captures any layer by the
//! name you would use in Python. And they show how to annotate your own model: read
//! [`bert`] (the source) for `#[derive(Hookable)]`, `Hook<...>`, `#[hook(rename)]` and
//! [`Hook::call`](hooks::Hook::call) on a real architecture.
//!
//! Each captured output equals what a PyTorch forward hook on the transformers model captures
//! (the output, or the first element of a tuple or `ModelOutput`), to float rounding; the tests
//! check every layer against transformers itself. Layers are the modules of `BertModel`,
//! `GPT2Model` and the decoders' `...ForCausalLM`, except the root, the list containers
//! (`encoder.layer`, `h`, `model.layers`) and modules without parameters (dropouts, activation
//! functions, rotary embeddings); every attention module adds `attn_weights`, its probabilities.
//!
//! Every architecture implements [`TextModel`], so a command or an experiment holds whichever
//! one a folder holds as a `Box<dyn TextModel>`, with no `match` on architectures.
//!
//! ```no_run
//! use hooks::ActivationStore;
//! use hooks_models::{TextModel, Tokenizer};
//! use tch::{Device, Kind};
//!
//! let dir = std::path::Path::new("all-MiniLM-L6-v2");
//! let model = hooks_models::load(dir, Device::Cpu, Kind::Float)?;
//! let (ids, mask) = Tokenizer::from_dir(dir)?.encode_batch(&["The cat sat."], model.max_length())?;
//! let store = ActivationStore::new(&*model, ["encoder.layer.*.output", "pooler"])?;
//! store.enable();
//! model.forward(&ids, &mask)?;
//! for (layer, tensor) in store.activations() {
//!     println!("{layer}: {:?}", tensor.size());
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod activation;
mod attention;
mod chat;
mod config;
pub mod decoder;
mod error;
pub mod generate;
mod layers;
pub mod lens;
mod load;
mod models;
mod rope;
pub mod sae;
mod text_model;
mod tokenizer;
#[cfg(feature = "uninstrumented")]
pub mod uninstrumented;
mod weights;

pub use models::{bert, gemma, gemma2, gemma3, gpt2, gpt_neox, llama, mistral, olmo2, phi3, qwen2, qwen3};

// The wrapper every capture site of the models is built with. The `uninstrumented` feature swaps
// in a pass-through with the same forward and no capture site, so the benchmark can compare the
// same model with and without capture sites (see BENCHMARKS.md); everything else uses `hooks::Hook`.
#[cfg(not(feature = "uninstrumented"))]
use hooks::{Hook, HookPoint};
#[cfg(feature = "uninstrumented")]
use uninstrumented::{Hook, HookPoint};

pub use activation::Activation;
pub use bert::{Bert, BertConfig};
pub use chat::ChatTemplate;
pub use decoder::{CausalLm, DecoderConfig};
pub use error::{ModelError, Result};
pub use gemma::{Gemma, GemmaConfig};
pub use gemma2::{Gemma2, Gemma2Config};
pub use gemma3::{Gemma3, Gemma3TextConfig};
pub use gpt2::{Gpt2, Gpt2Config, Gpt2LmHead};
pub use gpt_neox::{GptNeox, GptNeoxConfig};
pub use layers::{RmsNorm, TokenEmbedding};
pub use llama::{Llama, LlamaConfig};
pub use load::{load, SUPPORTED_MODEL_TYPES};
pub use mistral::{Mistral, MistralConfig};
pub use olmo2::{Olmo2, Olmo2Config};
pub use phi3::{Phi3, Phi3Config};
pub use qwen2::{Qwen2, Qwen2Config};
pub use qwen3::{Qwen3, Qwen3Config};
pub use rope::RopeParameters;
pub use text_model::{KvCache, Readout, TextModel};
pub use tokenizer::Tokenizer;
