//! [`load`]: a Hugging Face folder's model, whatever its architecture, chosen by `config.json`'s
//! `model_type` from one table.

use std::path::Path;

use tch::{Device, Kind};

use crate::bert::Bert;
use crate::config::ConfigFile;
use crate::error::{ModelError, Result};
use crate::gemma::Gemma;
use crate::gemma2::Gemma2;
use crate::gemma3::Gemma3;
use crate::gpt2::Gpt2;
use crate::gpt_neox::GptNeox;
use crate::llama::Llama;
use crate::mistral::Mistral;
use crate::olmo2::Olmo2;
use crate::phi3::Phi3;
use crate::qwen2::Qwen2;
use crate::qwen3::Qwen3;
use crate::text_model::{Pretrained, TextModel};

/// Loads a folder as one architecture, given its parsed `config.json`.
type LoadFn = fn(&Path, &ConfigFile, Device, Kind) -> Result<Box<dyn TextModel>>;

/// One architecture [`load`] knows.
struct Architecture {
    model_type: &'static str,
    load: LoadFn,
}

const fn architecture<M: Pretrained>() -> Architecture {
    Architecture {
        model_type: M::MODEL_TYPE,
        load: |dir, file, device, kind| Ok(Box::new(M::load_from(dir, file, device, kind)?)),
    }
}

/// Every architecture [`load`] loads. Adding one takes its own file and one line here; nothing
/// else in the workspace (commands, writers, tests) names architectures.
const ARCHITECTURES: &[Architecture] = &[
    architecture::<Bert>(),
    // `GPT2LMHeadModel`'s names when the folder says it was saved so, `GPT2Model`'s otherwise.
    Architecture {
        model_type: <Gpt2 as Pretrained>::MODEL_TYPE,
        load: crate::gpt2::load_by_class,
    },
    architecture::<Llama>(),
    architecture::<Mistral>(),
    architecture::<Qwen2>(),
    architecture::<Qwen3>(),
    architecture::<Gemma>(),
    architecture::<GptNeox>(),
    architecture::<Gemma2>(),
    architecture::<Gemma3>(),
    architecture::<Olmo2>(),
    architecture::<Phi3>(),
];

/// The `model_type`s of `config.json` that [`load`] loads, in the order they were added.
pub const SUPPORTED_MODEL_TYPES: [&str; ARCHITECTURES.len()] = {
    let mut names = [""; ARCHITECTURES.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = ARCHITECTURES[i].model_type;
        i += 1;
    }
    names
};

/// Loads the model in `dir` (`config.json` and `model.safetensors` or a sharded
/// `model.safetensors.index.json`, as `save_pretrained` writes them), picking the architecture
/// from `config.json`'s `model_type`, onto `device` in `kind` (`Kind::Float`, `Kind::Half` or
/// `Kind::BFloat16`).
///
/// The model comes as a `Box<dyn TextModel>`: bind an [`ActivationStore`](hooks::ActivationStore)
/// to `&*model` and run [`TextModel::forward`] without knowing the architecture. To use one
/// architecture's own API, load it by type ([`Bert::load`], [`Gpt2::load`]).
///
/// ```no_run
/// use hooks::LayerTree;
/// use tch::{Device, Kind};
///
/// let model = hooks_models::load("all-MiniLM-L6-v2", Device::Cpu, Kind::Float)?;
/// println!("a {} with {} layers", model.model_type(), model.layer_names().len());
/// # Ok::<(), hooks_models::ModelError>(())
/// ```
///
/// # Errors
///
/// [`ModelError::MissingFolder`], [`ModelError::MissingFile`], [`ModelError::BadConfig`],
/// [`ModelError::UnsupportedModelType`] (naming [`SUPPORTED_MODEL_TYPES`]),
/// [`ModelError::UnsupportedConfig`], [`ModelError::UnsupportedKind`],
/// [`ModelError::BadWeights`], [`ModelError::MissingWeight`], [`ModelError::WeightShape`],
/// [`ModelError::Io`] for a file that cannot be read, [`ModelError::Torch`] from libtorch.
pub fn load(dir: impl AsRef<Path>, device: Device, kind: Kind) -> Result<Box<dyn TextModel>> {
    let dir = dir.as_ref();
    let file = ConfigFile::open(dir, kind)?;
    let Some(architecture) = ARCHITECTURES.iter().find(|a| a.model_type == file.model_type) else {
        return Err(ModelError::UnsupportedModelType {
            path: file.path.clone(),
            found: file.model_type.clone(),
            supported: SUPPORTED_MODEL_TYPES.to_vec(),
        });
    };
    (architecture.load)(dir, &file, device, kind)
}
