//! `--sae LAYER=PATH` (with `--sae-splice`, `--sae-no-error`) for `layers`, `extract`,
//! `generate` and `features`.

use std::path::PathBuf;

use hooks_models::sae::{Sae, SaeOptions, WithSaes};
use hooks_models::TextModel;
use serde_json::json;

use crate::error::CliError;

/// The SAE options of a command.
#[derive(Debug, Default, clap::Args)]
pub struct SaeArgs {
    /// Attach the sparse autoencoder at PATH to LAYER (a module's output, or `LAYER:input`):
    /// a SAELens folder (cfg.json + sae_weights.safetensors), a Gemma Scope params.npz, or a
    /// Gemma Scope 2 folder (params.safetensors + config.json). Its points are then layers:
    /// `LAYER.sae.hook_sae_input`, `.hook_sae_acts_pre`, `.hook_sae_acts_post`,
    /// `.hook_sae_recons`, `.hook_sae_error`, `.hook_sae_output`. Read-only: the model's
    /// forward is unchanged unless --sae-splice is given or a feature is ablated or steered.
    /// Repeatable, one per layer.
    #[arg(long, value_name = "LAYER=PATH")]
    pub sae: Vec<String>,
    /// Replace each SAE's layer output with its `hook_sae_output` (the reconstruction plus the
    /// error term, or the reconstruction alone with --sae-no-error).
    #[arg(long)]
    pub sae_splice: bool,
    /// Leave out the error term (input − reconstruction): a spliced or edited SAE then gives
    /// the model its reconstruction alone.
    #[arg(long)]
    pub sae_no_error: bool,
}

impl SaeArgs {
    /// The options.
    fn options(&self) -> SaeOptions {
        SaeOptions {
            splice: self.sae_splice,
            error_term: !self.sae_no_error,
        }
    }

    /// The `(LAYER, PATH)` pairs.
    pub(crate) fn pairs(&self) -> Result<Vec<(String, PathBuf)>, CliError> {
        if self.sae.is_empty() && (self.sae_splice || self.sae_no_error) {
            let flag = if self.sae_splice {
                "--sae-splice"
            } else {
                "--sae-no-error"
            };
            return Err(CliError::Usage(format!(
                "`{flag}` acts on attached SAEs, and none is given; add --sae LAYER=PATH"
            )));
        }
        self.sae
            .iter()
            .map(|spec| {
                let (layer, path) = spec
                    .split_once('=')
                    .filter(|(l, p)| !l.trim().is_empty() && !p.trim().is_empty())
                    .ok_or_else(|| {
                        CliError::Usage(format!(
                            "invalid `--sae {spec}`; write LAYER=PATH, like model.layers.12=gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82/params.npz"
                        ))
                    })?;
                if layer.contains('*') {
                    return Err(CliError::Usage(format!(
                        "invalid `--sae {spec}`: an SAE attaches to one layer, named in full, not a pattern; give one --sae per layer"
                    )));
                }
                Ok((layer.trim().to_owned(), PathBuf::from(path.trim())))
            })
            .collect()
    }

    /// `model` with the SAEs attached (itself when none is given).
    pub fn attach(&self, model: Box<dyn TextModel>) -> Result<Box<dyn TextModel>, CliError> {
        let pairs = self.pairs()?;
        if pairs.is_empty() {
            return Ok(model);
        }
        let saes = pairs
            .into_iter()
            .map(|(layer, path)| Ok((layer, Sae::load(&path)?)))
            .collect::<Result<Vec<_>, CliError>>()?;
        Ok(Box::new(WithSaes::attach(model, saes, self.options())?))
    }

    /// What a dataset folder's request records of them: per layer, the SAE's files by name
    /// (their sha256, so that a changed file is named), and the options.
    pub fn record(&self) -> Result<serde_json::Value, CliError> {
        let mut saes = serde_json::Map::new();
        for (layer, path) in self.pairs()? {
            let sae = Sae::load(&path)?;
            let mut files = serde_json::Map::new();
            for file in sae.files() {
                let name = file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                files.insert(name, json!(crate::folder::sha256(file)?));
            }
            let folder = sae.path().canonicalize().unwrap_or_else(|_| sae.path().to_owned());
            saes.insert(layer, json!({"path": folder, "sha256": files}));
        }
        Ok(json!({"saes": saes, "splice": self.sae_splice, "error_term": !self.sae_no_error}))
    }
}
