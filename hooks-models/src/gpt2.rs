//! GPT-2, as transformers' `GPT2Model` computes it, with every module at its PyTorch path.
//!
//! Annotated like [`crate::bert`]; in addition it shows a hand-written module ([`Conv1D`]) that
//! joins the layer tree: derive `Hookable` on it (it has no capture sites of its own) and wrap
//! it in `Hook<...>` where it is used.

use std::path::Path;

use hooks::Hookable;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use crate::activation::Activation;
use crate::attention;
use crate::config::{ConfigFile, Gpt2Config};
use crate::error::Result;
use crate::model::{self, embedding, layer_norm, TextModel};
use crate::weights::Checkpoint;
// `hooks::Hook`; a pass-through under the `uninstrumented` feature, for the benchmark (see lib.rs).
use crate::Hook;

/// How `GPT2LMHeadModel` checkpoints prefix the base model's weights.
const PREFIX: &str = "transformer.";

/// A GPT-2 decoder (transformers' `GPT2Model`): token and position embeddings, `n_layer`
/// blocks and the final LayerNorm.
///
/// Its layers are named as `GPT2Model.named_modules()` names them: `wte`, `wpe`, `h.0`,
/// `h.0.ln_1`, `h.0.attn`, `h.0.attn.c_attn`, `h.0.mlp.c_fc`, ..., `ln_f`; dropouts and the
/// activation function hold no parameters and are not layers.
///
/// ```no_run
/// use hooks::ActivationStore;
/// use hooks_models::{Gpt2, TextModel};
/// use tch::{Device, Kind, Tensor};
///
/// let gpt2 = Gpt2::load("my-gpt2", Device::Cpu, Kind::Float)?;
/// let ids = Tensor::from_slice2(&[[15496i64, 11, 995], [40, 716, 0]]);
/// let mask = Tensor::from_slice2(&[[1i64, 1, 1], [1, 1, 0]]);
/// let store = ActivationStore::new(&gpt2, ["h.*.mlp", "ln_f"])?;
/// store.enable();
/// gpt2.forward(&ids, &mask)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Hookable)]
pub struct Gpt2 {
    /// `wte`: token embeddings.
    pub wte: Hook<nn::Embedding>,
    /// `wpe`: position embeddings; its output is `[1, T, H]`, as in transformers.
    pub wpe: Hook<nn::Embedding>,
    /// `h.N`: the blocks.
    pub h: Vec<Hook<Gpt2Block>>,
    /// `ln_f`: the final LayerNorm, whose output is the model's.
    pub ln_f: Hook<nn::LayerNorm>,
    config: Gpt2Config,
    device: Device,
    kind: Kind,
}

/// `h.N`: pre-LayerNorm attention and MLP, each with a residual connection.
#[derive(Debug, Hookable)]
pub struct Gpt2Block {
    /// `h.N.ln_1`.
    pub ln_1: Hook<nn::LayerNorm>,
    /// `h.N.attn`: its output is after `c_proj`, before the residual.
    pub attn: Hook<Gpt2Attention>,
    /// `h.N.ln_2`.
    pub ln_2: Hook<nn::LayerNorm>,
    /// `h.N.mlp`: its output is before the residual.
    pub mlp: Hook<Gpt2Mlp>,
}

/// `h.N.attn`: causal multi-head self-attention.
#[derive(Debug, Hookable)]
pub struct Gpt2Attention {
    /// `h.N.attn.c_attn`: query, key and value in one projection, `[B, T, 3H]`.
    pub c_attn: Hook<Conv1D>,
    /// `h.N.attn.c_proj`.
    pub c_proj: Hook<Conv1D>,
    heads: i64,
    scaling: f64,
}

/// `h.N.mlp`: `c_proj(act(c_fc(x)))`.
#[derive(Debug, Hookable)]
pub struct Gpt2Mlp {
    /// `h.N.mlp.c_fc`.
    pub c_fc: Hook<Conv1D>,
    /// `h.N.mlp.c_proj`.
    pub c_proj: Hook<Conv1D>,
    act: Activation,
}

/// transformers' `Conv1D`: a linear layer whose weight is stored `[in, out]` (the transpose of
/// `nn.Linear`'s), computed as `addmm(bias, x, weight)`.
#[derive(Debug, Hookable)]
pub struct Conv1D {
    /// `[in, out]`.
    pub weight: Tensor,
    /// `[out]`.
    pub bias: Tensor,
}

impl Conv1D {
    fn new(p: nn::Path<'_>, input: i64, output: i64) -> Hook<Conv1D> {
        // Placeholder values: the checkpoint overwrites them.
        Hook::new(Conv1D {
            weight: p.var("weight", &[input, output], nn::Init::Const(0.0)),
            bias: p.var("bias", &[output], nn::Init::Const(0.0)),
        })
    }
}

impl Module for Conv1D {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let mut size = xs.size();
        let input = size.pop().unwrap_or(0);
        size.push(self.bias.size()[0]);
        self.bias
            .addmm(&xs.reshape([-1, input]), &self.weight)
            .view(size.as_slice())
    }
}

impl Gpt2 {
    /// Loads the GPT-2 in `dir` (`config.json` with `model_type: "gpt2"`, `model.safetensors`)
    /// onto `device` in `kind`. Weights stored under a `transformer.` prefix (a
    /// `GPT2LMHeadModel` checkpoint) load too; other tensors in the file are ignored.
    ///
    /// # Errors
    ///
    /// As [`Model::load`](crate::Model::load); [`ModelError::UnsupportedModelType`](crate::ModelError::UnsupportedModelType)
    /// when the folder holds another architecture.
    pub fn load(dir: impl AsRef<Path>, device: Device, kind: Kind) -> Result<Gpt2> {
        let dir = dir.as_ref();
        let config = model::open(dir, kind)?;
        model::expect_model_type(&config, &["gpt2"])?;
        Gpt2::from_config(dir, &config, device, kind)
    }

    pub(crate) fn from_config(dir: &Path, file: &ConfigFile, device: Device, kind: Kind) -> Result<Gpt2> {
        let (config, act) = file.gpt2()?;
        let checkpoint = Checkpoint::read(dir)?;
        let mut vs = nn::VarStore::new(device);
        vs.set_kind(kind);
        let gpt2 = Gpt2::new(&vs.root(), config, act, kind);
        checkpoint.load_into(&mut vs, PREFIX)?;
        Ok(gpt2)
    }

    fn new(p: &nn::Path<'_>, config: Gpt2Config, act: Activation, kind: Kind) -> Gpt2 {
        let h = config.n_embd;
        let eps = config.layer_norm_epsilon;
        let inner = config.n_inner.unwrap_or(4 * h);
        let heads = config.n_head;
        let blocks = p / "h";
        let h_blocks = (0..config.n_layer)
            .map(|i| {
                let b = &blocks / i;
                // transformers computes the scale in double precision too.
                let mut scaling = if config.scale_attn_weights {
                    1.0 / ((h / heads) as f64).sqrt()
                } else {
                    1.0
                };
                if config.scale_attn_by_inverse_layer_idx {
                    scaling /= (i + 1) as f64;
                }
                Hook::new(Gpt2Block {
                    ln_1: layer_norm(&b / "ln_1", h, eps),
                    attn: Hook::new(Gpt2Attention {
                        c_attn: Conv1D::new(&b / "attn" / "c_attn", h, 3 * h),
                        c_proj: Conv1D::new(&b / "attn" / "c_proj", h, h),
                        heads,
                        scaling,
                    }),
                    ln_2: layer_norm(&b / "ln_2", h, eps),
                    mlp: Hook::new(Gpt2Mlp {
                        c_fc: Conv1D::new(&b / "mlp" / "c_fc", h, inner),
                        c_proj: Conv1D::new(&b / "mlp" / "c_proj", inner, h),
                        act,
                    }),
                })
            })
            .collect();
        Gpt2 {
            wte: embedding(p / "wte", config.vocab_size, h),
            wpe: embedding(p / "wpe", config.n_positions, h),
            h: h_blocks,
            ln_f: layer_norm(p / "ln_f", h, eps),
            config,
            device: p.device(),
            kind,
        }
    }

    /// The config the model was built from.
    #[must_use]
    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    /// The forward pass on inputs already checked and on the model's device.
    fn run(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Tensor {
        let _no_grad = tch::no_grad_guard();
        let len = input_ids.size()[1];
        let position_ids = Tensor::arange(len, (Kind::Int64, input_ids.device())).unsqueeze(0);
        let mut hidden = self.wte.forward(input_ids) + self.wpe.forward(&position_ids);
        let mask = attention::causal_padding_mask(attention_mask, self.kind);
        for block in &self.h {
            hidden = block.call(|m| m.forward(&hidden, &mask));
        }
        self.ln_f.forward(&hidden)
    }
}

impl TextModel for Gpt2 {
    fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let (ids, mask) = model::check_inputs(
            input_ids,
            attention_mask,
            self.config.n_positions,
            self.config.vocab_size,
            self.device,
        )?;
        Ok(self.run(&ids, &mask))
    }

    fn max_length(&self) -> usize {
        model::to_usize(self.config.n_positions)
    }

    fn model_type(&self) -> &'static str {
        "gpt2"
    }

    fn hidden_size(&self) -> usize {
        model::to_usize(self.config.n_embd)
    }

    fn device(&self) -> Device {
        self.device
    }

    fn kind(&self) -> Kind {
        self.kind
    }
}

/// The forward on unpadded token ids `[B, T]` (attention mask all ones), returning the last
/// hidden state: what [`hooks::extract_representations`] runs. It panics on ids outside the
/// vocabulary or `T` past [`TextModel::max_length`]; [`TextModel::forward`] reports those as
/// errors instead.
impl nn::ModuleT for Gpt2 {
    fn forward_t(&self, input_ids: &Tensor, _train: bool) -> Tensor {
        let ids = input_ids.to_device(self.device);
        self.run(&ids, &ids.ones_like())
    }
}

impl Gpt2Block {
    fn forward(&self, hidden: &Tensor, mask: &attention::Mask) -> Tensor {
        let attn = self.attn.call(|m| m.forward(&self.ln_1.forward(hidden), mask));
        let hidden = attn + hidden;
        let mlp = self.mlp.call(|m| m.forward(&self.ln_2.forward(&hidden)));
        hidden + mlp
    }
}

impl Gpt2Attention {
    fn forward(&self, hidden: &Tensor, mask: &attention::Mask) -> Tensor {
        let qkv = self.c_attn.forward(hidden);
        let width = qkv.size()[2] / 3;
        let parts = qkv.split(width, 2);
        let [query, key, value] = [&parts[0], &parts[1], &parts[2]].map(|t| attention::split_heads(t, self.heads));
        let context = attention::attend(&query, &key, &value, mask, self.scaling);
        self.c_proj.forward(&context)
    }
}

impl Gpt2Mlp {
    fn forward(&self, hidden: &Tensor) -> Tensor {
        self.c_proj.forward(&self.act.apply(&self.c_fc.forward(hidden)))
    }
}
