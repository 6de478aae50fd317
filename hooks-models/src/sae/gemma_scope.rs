//! Gemma Scope's `params.npz`: `W_enc [d_in, d_sae]`, `W_dec [d_sae, d_in]`, `b_enc`, `b_dec`,
//! `threshold`; JumpReLU, `b_dec` not subtracted from the input, no config.
//!
//! The release's own path says where an SAE reads (`gemma-scope-2b-pt-res/layer_12/...`): when
//! `path` still holds a `layer_N` part and a `-res`, `-mlp` or `-att` release name, the hook is
//! taken from them, so that attaching it elsewhere is noted.

use std::path::Path;

use super::{Architecture, Format, Read};
use crate::error::{ModelError, Result};

pub(super) fn read(path: &Path) -> Result<Read> {
    let tensors = hooks::load_numeric(path)
        .map_err(|e| ModelError::Sae {
            path: path.to_owned(),
            reason: format!("cannot read it as a Gemma Scope `params.npz`: {e}"),
        })?
        .into_iter()
        .collect();
    Ok(Read {
        format: Format::GemmaScope,
        architecture: Architecture::JumpRelu,
        d_in: None,
        d_sae: None,
        apply_b_dec_to_input: false,
        hook_name: hook_from_path(path),
        hf_hook_name: None,
        tensors,
        files: vec![path.to_owned()],
    })
}

/// `blocks.N.hook_resid_post` / `hook_mlp_out` / `attn.hook_z` from a path like
/// `gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82/params.npz`.
fn hook_from_path(path: &Path) -> Option<String> {
    let parts: Vec<String> = path
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let layer: usize = parts
        .iter()
        .find_map(|p| p.strip_prefix("layer_").and_then(|n| n.parse().ok()))?;
    let release = parts.iter().find(|p| p.starts_with("gemma-scope"))?;
    let point = if release.contains("-res") {
        "hook_resid_post"
    } else if release.contains("-mlp") {
        "hook_mlp_out"
    } else if release.contains("-att") {
        "attn.hook_z"
    } else {
        return None;
    };
    Some(format!("blocks.{layer}.{point}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_path_names_the_hook() {
        let hook = |p: &str| hook_from_path(Path::new(p));
        assert_eq!(
            hook("/x/gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82/params.npz").as_deref(),
            Some("blocks.12.hook_resid_post")
        );
        assert_eq!(
            hook("gemma-scope-9b-pt-mlp-canonical/layer_3/width_16k/canonical/params.npz").as_deref(),
            Some("blocks.3.hook_mlp_out")
        );
        assert_eq!(
            hook("gemma-scope-2b-pt-att/layer_0/params.npz").as_deref(),
            Some("blocks.0.attn.hook_z")
        );
        assert_eq!(hook("saes/params.npz"), None);
    }
}
