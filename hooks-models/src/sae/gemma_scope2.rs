//! Gemma Scope 2 folders: `params.safetensors` with lowercase keys (`w_enc [d_in, d_sae]`,
//! `w_dec`, `b_enc`, `b_dec`, `threshold`) and `config.json` (`architecture: jump_relu`,
//! `hf_hook_point_in`: the transformers module whose output it reads, `model.layers.12.output`).
//! JumpReLU, `b_dec` not subtracted from the input. Transcoders (`hf_hook_point_out`, an affine
//! skip connection) are refused.
//!
//! Without `config.json`, the hook is read from the folder's name as SAELens does
//! (`resid_post`, `attn_out`, `mlp_out`, and `layer_N`).

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::{Architecture, Format, Read};
use crate::error::{ModelError, Result};

const WEIGHTS: &str = "params.safetensors";
const CONFIG: &str = "config.json";

pub(super) fn read(dir: &Path) -> Result<Read> {
    let bad = |reason: String| ModelError::Sae {
        path: dir.to_owned(),
        reason,
    };
    let weights = dir.join(WEIGHTS);
    let config = dir.join(CONFIG);
    let mut files = vec![weights.clone()];
    let hf_hook_name = if config.is_file() {
        let text = std::fs::read_to_string(&config).map_err(|source| ModelError::Io {
            path: config.clone(),
            source,
        })?;
        let cfg: Value = serde_json::from_str(&text).map_err(|e| bad(format!("`{CONFIG}` is not JSON ({e})")))?;
        match cfg.get("architecture").and_then(Value::as_str) {
            Some("jump_relu" | "jumprelu") | None => {}
            Some(other) => {
                return Err(bad(format!(
                    "its architecture `{other}` is not supported; Gemma Scope 2 SAEs are `jump_relu`"
                )))
            }
        }
        if cfg.get("hf_hook_point_out").is_some_and(|v| !v.is_null()) {
            return Err(bad(
                "it is a transcoder (its config has `hf_hook_point_out`): it reads one layer to predict another, and only SAEs are supported".into(),
            ));
        }
        files.push(config);
        cfg.get("hf_hook_point_in").and_then(Value::as_str).map(str::to_owned)
    } else {
        hook_from_name(dir)
    };
    let stored = crate::weights::read_file(&weights)?;
    let mut tensors = HashMap::new();
    for (name, t) in stored {
        let ours = match name.as_str() {
            "w_enc" => "W_enc",
            "w_dec" => "W_dec",
            "b_enc" | "b_dec" | "threshold" => name.as_str(),
            other => {
                return Err(bad(format!(
                    "`{WEIGHTS}` holds `{other}`, which a Gemma Scope 2 SAE does not have (a transcoder's skip connection?); only SAEs are supported"
                )))
            }
        };
        tensors.insert(ours.to_owned(), t);
    }
    Ok(Read {
        format: Format::GemmaScope2,
        architecture: Architecture::JumpRelu,
        d_in: None,
        d_sae: None,
        apply_b_dec_to_input: false,
        hook_name: None,
        hf_hook_name,
        tensors,
        files,
    })
}

/// The module SAELens infers from a folder such as `resid_post/layer_12_width_16k_l0_small`.
fn hook_from_name(dir: &Path) -> Option<String> {
    let text = dir.to_string_lossy();
    let start = text.rfind("layer_")? + "layer_".len();
    let digits: String = text[start..].chars().take_while(char::is_ascii_digit).collect();
    let layer: usize = digits.parse().ok()?;
    if text.contains("resid_post") {
        Some(format!("model.layers.{layer}.output"))
    } else if text.contains("attn_out") {
        Some(format!("model.layers.{layer}.self_attn.o_proj.input"))
    } else if text.contains("mlp_out") {
        Some(format!("model.layers.{layer}.post_feedforward_layernorm.output"))
    } else {
        None
    }
}
