//! SAELens folders: `cfg.json` and `sae_weights.safetensors`, as `SAE.save_model` writes them.
//!
//! Two config layouts: SAELens 6's (`architecture`, `k` for TopK, the hook in
//! `metadata.hook_name`) and the older flat one (`hook_name` or `hook_point` at the top,
//! `activation_fn_str` with `activation_fn_kwargs.k` for TopK under `architecture: standard`).

use std::path::Path;

use serde_json::Value;

use super::{Architecture, Format, Read};
use crate::error::{ModelError, Result};

const CONFIG: &str = "cfg.json";
const WEIGHTS: &str = "sae_weights.safetensors";

pub(super) fn read(dir: &Path) -> Result<Read> {
    let bad = |reason: String| ModelError::Sae {
        path: dir.to_owned(),
        reason,
    };
    let config_path = dir.join(CONFIG);
    let weights_path = dir.join(WEIGHTS);
    for path in [&config_path, &weights_path] {
        if !path.is_file() {
            return Err(bad(format!(
                "has no `{}`; a SAELens folder holds `{CONFIG}` and `{WEIGHTS}`, as `SAE.save_model` writes them",
                path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
            )));
        }
    }
    let text = std::fs::read_to_string(&config_path).map_err(|source| ModelError::Io {
        path: config_path.clone(),
        source,
    })?;
    let cfg: Value = serde_json::from_str(&text).map_err(|e| bad(format!("`{CONFIG}` is not JSON ({e})")))?;
    let settings = Settings::from(&cfg).map_err(&bad)?;
    let tensors = crate::weights::read_file(&weights_path)?;
    Ok(Read {
        format: Format::SaeLens,
        architecture: settings.architecture,
        d_in: settings.d_in,
        d_sae: settings.d_sae,
        apply_b_dec_to_input: settings.apply_b_dec_to_input,
        hook_name: settings.hook_name,
        hf_hook_name: None,
        tensors,
        files: vec![config_path, weights_path],
    })
}

struct Settings {
    architecture: Architecture,
    d_in: Option<i64>,
    d_sae: Option<i64>,
    apply_b_dec_to_input: bool,
    hook_name: Option<String>,
}

impl Settings {
    fn from(cfg: &Value) -> std::result::Result<Settings, String> {
        let str_of = |key: &str| cfg.get(key).and_then(Value::as_str);
        let metadata = cfg.get("metadata");
        let hook_name = metadata
            .and_then(|m| m.get("hook_name"))
            .and_then(Value::as_str)
            .or_else(|| str_of("hook_name"))
            .or_else(|| str_of("hook_point"))
            .map(str::to_owned);
        let int = |key: &str| -> std::result::Result<Option<i64>, String> {
            match cfg.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_i64()
                    .filter(|&n| n > 0)
                    .map(Some)
                    .ok_or_else(|| format!("`{key}` in `{CONFIG}` is {v}; it must be a positive integer")),
            }
        };
        let architecture = match str_of("architecture").unwrap_or("standard") {
            "standard" => match str_of("activation_fn_str").unwrap_or("relu") {
                "relu" => Architecture::Standard,
                "topk" => {
                    let k = cfg
                        .get("activation_fn_kwargs")
                        .and_then(|kw| kw.get("k"))
                        .and_then(Value::as_i64)
                        .ok_or("`activation_fn_str` is `topk` without `activation_fn_kwargs.k`; give the SAE's k")?;
                    Architecture::TopK { k }
                }
                other => {
                    return Err(format!(
                        "its activation function `{other}` is not supported; supported: `relu`, `topk`"
                    ))
                }
            },
            "jumprelu" | "jump_relu" => Architecture::JumpRelu,
            "gated" => Architecture::Gated,
            "topk" => {
                let k = int("k")?.ok_or("a `topk` SAE's config needs `k`")?;
                Architecture::TopK { k }
            }
            other => {
                return Err(format!(
                    "its architecture `{other}` is not supported; supported: `standard`, `jumprelu`, `topk`, `gated`"
                ))
            }
        };
        match cfg.get("normalize_activations") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == "none" => {}
            Some(other) => {
                return Err(format!(
                    "`normalize_activations` is {other}, which rescales the layer's activations by statistics SAELens keeps apart; only `none` is supported (fold the scaling into the weights first)"
                ))
            }
        }
        match cfg.get("reshape_activations") {
            // `hook_z` SAEs read the heads side by side, as the input of the attention's output
            // projection holds them.
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == "none" || s == "hook_z" => {}
            Some(other) => return Err(format!("`reshape_activations` is {other}; supported: `none`, `hook_z`")),
        }
        let head = cfg
            .get("hook_head_index")
            .or_else(|| metadata.and_then(|m| m.get("hook_head_index")));
        if let Some(head) = head.filter(|h| !h.is_null()) {
            return Err(format!(
                "it reads one attention head (`hook_head_index` {head}); SAEs on a single head are not supported"
            ));
        }
        for key in ["rescale_acts_by_decoder_norm", "finetuning_scaling_factor"] {
            if cfg.get(key).and_then(Value::as_bool) == Some(true) {
                return Err(format!(
                    "`{key}` is true; SAEs that rescale their activations are not supported"
                ));
            }
        }
        let apply_b_dec_to_input = match cfg.get("apply_b_dec_to_input") {
            None | Some(Value::Null) => true,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| format!("`apply_b_dec_to_input` is {v}; it must be true or false"))?,
        };
        Ok(Settings {
            architecture,
            d_in: int("d_in")?,
            d_sae: int("d_sae")?,
            apply_b_dec_to_input,
            hook_name,
        })
    }
}
