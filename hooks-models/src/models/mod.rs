//! One file per architecture: its config (with transformers' defaults) and, for BERT, GPT-2 and
//! GPT-NeoX, its modules; the Llama-like decoders name their type over [`crate::decoder`]'s one
//! computation. Each is re-exported at the crate root (`hooks_models::gemma2`), where `load.rs`'s
//! table finds it.

pub mod bert;
pub mod gemma;
pub mod gemma2;
pub mod gemma3;
pub mod gpt2;
pub mod gpt_neox;
pub mod llama;
pub mod mistral;
pub mod olmo2;
pub mod phi3;
pub mod qwen2;
pub mod qwen3;
