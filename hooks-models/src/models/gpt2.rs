//! GPT-2, as transformers' `GPT2Model` computes it
//! ([`modeling_gpt2.py`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/gpt2/modeling_gpt2.py)),
//! with every module at its PyTorch path.
//!
//! Laid out and annotated like [`crate::bert`]: each module's struct, then its constructor and
//! forward. In addition it shows a hand-written module ([`Conv1D`]) that joins the layer tree:
//! derive `Hookable` on it (it has no capture sites of its own) and wrap it in `Hook<...>` where
//! it is used.

use std::path::Path;

use hooks::Hookable;
use serde::Deserialize;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use crate::activation::Activation;
use crate::attention;
use crate::attention::KvSlot;
use crate::config::{self, ArchConfig, ConfigFile, Invalid};
use crate::error::Result;
use crate::layers::{embedding, layer_norm, linear, Init};
use crate::text_model::{check_inputs, check_step, load_as, to_usize, KvCache, Pretrained, Readout, TextModel};
use crate::weights::Checkpoint;
// `hooks::Hook`; a pass-through under the `uninstrumented` feature, for the benchmark (see lib.rs).
use crate::{Hook, HookPoint};

/// How `GPT2LMHeadModel` checkpoints prefix the base model's weights.
const PREFIX: &str = "transformer.";

/// The hyper-parameters of a GPT-2 decoder: transformers'
/// [`GPT2Config`](https://huggingface.co/docs/transformers/model_doc/gpt2#transformers.GPT2Config),
/// only what the forward pass of `GPT2Model` reads. transformers' generic names (`hidden_size`,
/// ...) are accepted too.
///
/// `Default` gives transformers' defaults (gpt2-small's shape), and a field that `config.json`
/// leaves out takes its default. Build a model of any shape in code:
///
/// ```
/// use hooks::LayerTree;
/// use hooks_models::{Gpt2, Gpt2Config};
/// use tch::{Device, Kind};
///
/// let mut config = Gpt2Config::default();
/// config.n_embd = 32;
/// config.n_layer = 2;
/// config.n_head = 4;
/// let gpt2 = Gpt2::new(&config, Device::Cpu, Kind::Float)?;
/// assert!(gpt2.layer_names().contains(&"h.1.mlp.c_fc".to_owned()));
/// # Ok::<(), hooks_models::ModelError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Gpt2Config {
    /// Rows of `wte`.
    pub vocab_size: i64,
    /// Rows of `wpe`: the longest input.
    #[serde(alias = "max_position_embeddings")]
    pub n_positions: i64,
    /// Width of every hidden state.
    #[serde(alias = "hidden_size")]
    pub n_embd: i64,
    /// Entries of `h`.
    #[serde(alias = "num_hidden_layers")]
    pub n_layer: usize,
    /// Attention heads per block; divides `n_embd`.
    #[serde(alias = "num_attention_heads")]
    pub n_head: i64,
    /// Width of `mlp.c_fc`; `None` means `4 * n_embd`.
    pub n_inner: Option<i64>,
    /// The activation inside the MLP.
    pub activation_function: Activation,
    /// Epsilon of every LayerNorm.
    pub layer_norm_epsilon: f64,
    /// The standard deviation of the random weights of a model built with [`Gpt2::new`].
    pub initializer_range: f64,
    /// Whether attention scores are divided by `sqrt(head_dim)`.
    pub scale_attn_weights: bool,
    /// Whether block `i`'s attention scores are also divided by `i + 1`.
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Cross-attention layers are not implemented.
    pub add_cross_attention: bool,
    /// Whether [`Gpt2LmHead`]'s `lm_head` reuses `wte`'s weight (transformers' default); when
    /// false the checkpoint holds `lm_head.weight`.
    pub tie_word_embeddings: bool,
}

impl Default for Gpt2Config {
    /// transformers' `GPT2Config()` defaults.
    fn default() -> Self {
        Gpt2Config {
            vocab_size: 50257,
            n_positions: 1024,
            n_embd: 768,
            n_layer: 12,
            n_head: 12,
            n_inner: None,
            activation_function: Activation::GeluNew,
            layer_norm_epsilon: 1e-5,
            initializer_range: 0.02,
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            add_cross_attention: false,
            tie_word_embeddings: true,
        }
    }
}

impl ArchConfig for Gpt2Config {
    const ACTIVATION_FIELD: &'static str = "activation_function";

    fn check(&self) -> std::result::Result<(), Invalid> {
        if self.add_cross_attention {
            return Err(Invalid::Unsupported {
                setting: "`add_cross_attention` is true".into(),
                hint: "only the decoder-only GPT-2 (`GPT2Model`) is implemented",
            });
        }
        for (name, value) in [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_head", self.n_head),
            ("n_inner", self.n_inner.unwrap_or(1)),
        ] {
            config::positive(name, value)?;
        }
        config::layers("n_layer", self.n_layer)?;
        config::heads_divide(("n_embd", self.n_embd), ("n_head", self.n_head))
    }
}

/// A GPT-2 decoder: transformers' [`GPT2Model`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/gpt2/modeling_gpt2.py). Token and position embeddings, `n_layer`
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
    vs: nn::VarStore,
}

impl Gpt2 {
    /// A GPT-2 of `config`'s shape with random weights, as transformers' `GPT2Model(config)`
    /// builds one, on `device` in `kind`.
    ///
    /// Its variables are trainable (`requires_grad`), as in a fresh transformers model; a loaded
    /// model's are frozen. Either way [`TextModel::var_store`] holds them, by checkpoint name.
    ///
    /// # Errors
    ///
    /// [`ModelError::BadConfig`](crate::ModelError::BadConfig) or
    /// [`ModelError::UnsupportedConfig`](crate::ModelError::UnsupportedConfig) for a config it
    /// cannot build, [`ModelError::UnsupportedKind`](crate::ModelError::UnsupportedKind).
    pub fn new(config: &Gpt2Config, device: Device, kind: Kind) -> Result<Gpt2> {
        config::check_in_code(config, kind)?;
        let init = Init::Random {
            std: config.initializer_range,
        };
        Ok(Gpt2::build(config.clone(), device, kind, init))
    }

    /// Loads the GPT-2 in `dir` (`config.json` with `model_type: "gpt2"`, `model.safetensors`)
    /// onto `device` in `kind`. Weights stored under a `transformer.` prefix (a
    /// `GPT2LMHeadModel` checkpoint) load too; other tensors in the file are ignored.
    ///
    /// # Errors
    ///
    /// As [`load`](crate::load); [`ModelError::UnsupportedModelType`](crate::ModelError::UnsupportedModelType)
    /// when the folder holds another architecture.
    pub fn load(dir: impl AsRef<Path>, device: Device, kind: Kind) -> Result<Gpt2> {
        load_as(dir.as_ref(), device, kind)
    }

    fn build(config: Gpt2Config, device: Device, kind: Kind, init: Init) -> Gpt2 {
        let mut vs = nn::VarStore::new(device);
        vs.set_kind(kind);
        Gpt2::build_in(vs, None, config, init)
    }

    /// The model's modules in `vs`, under `segment` (`transformer`, as `GPT2LMHeadModel` holds
    /// it) or at the root.
    fn build_in(vs: nn::VarStore, segment: Option<&str>, config: Gpt2Config, init: Init) -> Gpt2 {
        let p = match segment {
            Some(segment) => vs.root() / segment,
            None => vs.root(),
        };
        let h = config.n_embd;
        let blocks = (0..config.n_layer)
            .map(|i| Hook::new(Gpt2Block::new(&p / "h" / i, &config, i, init)))
            .collect();
        Gpt2 {
            wte: embedding(&p / "wte", config.vocab_size, h, init),
            wpe: embedding(&p / "wpe", config.n_positions, h, init),
            h: blocks,
            ln_f: layer_norm(&p / "ln_f", h, config.layer_norm_epsilon),
            config,
            vs,
        }
    }

    /// The config the model was built from.
    #[must_use]
    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    /// The forward pass on inputs already checked and on the model's device.
    fn run(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Tensor {
        let len = input_ids.size()[1];
        let position_ids = Tensor::arange(len, (Kind::Int64, input_ids.device())).unsqueeze(0);
        let mask = attention::causal_padding_mask(attention_mask, self.vs.kind());
        self.run_at(input_ids, &position_ids, &mask, None)
    }

    /// The blocks over `input_ids` at `position_ids` (`[1, T]`, or each row's own `[B, T]`), each
    /// attention appending to its cache slot when given.
    fn run_at(
        &self,
        input_ids: &Tensor,
        position_ids: &Tensor,
        mask: &attention::Mask,
        slots: Option<&mut [KvSlot]>,
    ) -> Tensor {
        let _no_grad = tch::no_grad_guard();
        let mut hidden = self.wte.forward(input_ids) + self.wpe.forward(position_ids);
        let mut slots = slots.map(|s| s.iter_mut());
        for block in &self.h {
            let slot = slots.as_mut().and_then(Iterator::next);
            hidden = block.call_with(&hidden, |m, x| m.forward(x, mask, slot));
        }
        self.ln_f.forward(&hidden)
    }
}

/// The sizes that decide the allocation, against the weights before anything is allocated: the
/// token and position tables, the number of blocks, the first block's MLP (`Conv1D` stores its
/// weight `[in, out]`).
fn check_sizes(checkpoint: &Checkpoint, config: &Gpt2Config) -> Result<()> {
    let h = config.n_embd;
    checkpoint.expect_shape(
        "wte.weight",
        PREFIX,
        &[config.vocab_size, h],
        "`vocab_size` and `n_embd`",
    )?;
    checkpoint.expect_shape("wpe.weight", PREFIX, &[config.n_positions, h], "`n_positions`")?;
    checkpoint.expect_blocks("h", PREFIX, config.n_layer, "`n_layer`")?;
    if config.n_layer == 0 {
        return Ok(());
    }
    let inner = config.n_inner.unwrap_or(4 * h);
    checkpoint.expect_shape("h.0.mlp.c_fc.weight", PREFIX, &[h, inner], "`n_inner`")
}

impl Pretrained for Gpt2 {
    const MODEL_TYPE: &'static str = "gpt2";

    fn load_from(dir: &Path, file: &ConfigFile, device: Device, kind: Kind) -> Result<Gpt2> {
        let config: Gpt2Config = file.config()?;
        let checkpoint = Checkpoint::read(dir)?;
        check_sizes(&checkpoint, &config)?;
        let mut gpt2 = Gpt2::build(config, device, kind, Init::Placeholder);
        checkpoint.load_into(&mut gpt2.vs, PREFIX)?;
        Ok(gpt2)
    }
}

impl TextModel for Gpt2 {
    fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let (ids, mask) = check_inputs(
            input_ids,
            attention_mask,
            self.config.n_positions,
            self.config.vocab_size,
            self.vs.device(),
        )?;
        Ok(self.run(&ids, &mask))
    }

    fn max_length(&self) -> usize {
        to_usize(self.config.n_positions)
    }

    fn model_type(&self) -> &'static str {
        Self::MODEL_TYPE
    }

    fn hidden_size(&self) -> usize {
        to_usize(self.config.n_embd)
    }

    fn vocab_size(&self) -> usize {
        to_usize(self.config.vocab_size)
    }

    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
}

/// The forward on unpadded token ids `[B, T]` (attention mask all ones), returning the last
/// hidden state: what [`hooks::extract_representations`] runs. It panics on ids outside the
/// vocabulary or `T` past [`TextModel::max_length`]; [`TextModel::forward`] reports those as
/// errors instead.
impl nn::ModuleT for Gpt2 {
    fn forward_t(&self, input_ids: &Tensor, _train: bool) -> Tensor {
        let ids = input_ids.to_device(self.vs.device());
        self.run(&ids, &ids.ones_like())
    }
}

/// GPT-2 with its language-model head: transformers' `GPT2LMHeadModel`, what [`load`](crate::load)
/// returns for a folder whose `config.json` names that class in `architectures` (as
/// `GPT2LMHeadModel.save_pretrained` writes it, and as the Hub's GPT-2 checkpoints say).
///
/// Its layers are named as `AutoModelForCausalLM.named_modules()` names them:
/// `transformer`, `transformer.wte`, `transformer.h.N.attn.c_attn`, ..., `transformer.ln_f`
/// and `lm_head` (the logits, `[B, T, vocab]`, computed only when captured). Every layer under
/// `transformer.` also answers to its [`Gpt2`] (`GPT2Model`) name without it, `h.0.mlp` for
/// `transformer.h.0.mlp`: a store or an intervention takes either name, and keys what it
/// captures by the name it was given (see `#[hook(alias = "")]`).
///
/// ```no_run
/// use hooks::ActivationStore;
/// use hooks_models::{Gpt2LmHead, TextModel};
/// use tch::{Device, Kind, Tensor};
///
/// let gpt2 = Gpt2LmHead::load("gpt2", Device::Cpu, Kind::Float)?;
/// let ids = Tensor::from_slice2(&[[15496i64, 11, 995]]);
/// let store = ActivationStore::new(&gpt2, ["transformer.h.0.mlp", "h.0.mlp", "lm_head"])?;
/// store.enable();
/// gpt2.forward(&ids, &ids.ones_like())?;
/// assert_eq!(store.get("h.0.mlp"), store.get("transformer.h.0.mlp"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Hookable)]
pub struct Gpt2LmHead {
    /// `transformer`: the [`Gpt2`] body; its output is the last hidden state.
    #[hook(alias = "")]
    pub transformer: Hook<Gpt2>,
    /// `lm_head`: the logits; its weight is `transformer.wte`'s unless `tie_word_embeddings` is
    /// false.
    pub lm_head: Hook<nn::Linear>,
}

impl Gpt2LmHead {
    /// Runs `lm_head` on the last hidden state when a store captures it (nothing reads it
    /// otherwise).
    fn head_if_captured(&self, hidden: &Tensor) {
        if self.lm_head.is_capturing() {
            let _no_grad = tch::no_grad_guard();
            let _ = self.lm_head.forward(hidden);
        }
    }

    /// A `GPT2LMHeadModel` of `config`'s shape with random weights, as [`Gpt2::new`] builds
    /// its body.
    ///
    /// # Errors
    ///
    /// As [`Gpt2::new`].
    pub fn new(config: &Gpt2Config, device: Device, kind: Kind) -> Result<Gpt2LmHead> {
        config::check_in_code(config, kind)?;
        let init = Init::Random {
            std: config.initializer_range,
        };
        let (transformer, lm_head) = Gpt2LmHead::build(config.clone(), device, kind, init);
        Ok(Gpt2LmHead {
            transformer: Hook::new(transformer),
            lm_head,
        })
    }

    /// Loads the GPT-2 in `dir` (`config.json` with `model_type: "gpt2"`, `model.safetensors`)
    /// onto `device` in `kind`, weights stored with or without the `transformer.` prefix.
    ///
    /// # Errors
    ///
    /// As [`Gpt2::load`]; [`ModelError::MissingWeight`](crate::ModelError::MissingWeight) for an
    /// untied head whose `lm_head.weight` is absent.
    pub fn load(dir: impl AsRef<Path>, device: Device, kind: Kind) -> Result<Gpt2LmHead> {
        load_as(dir.as_ref(), device, kind)
    }

    /// The body (which holds every variable) and the head.
    fn build(config: Gpt2Config, device: Device, kind: Kind, init: Init) -> (Gpt2, Hook<nn::Linear>) {
        let mut vs = nn::VarStore::new(device);
        vs.set_kind(kind);
        let untied = (!config.tie_word_embeddings)
            .then(|| linear(vs.root() / "lm_head", config.n_embd, config.vocab_size, false, init));
        let transformer = Gpt2::build_in(vs, Some("transformer"), config, init);
        let lm_head = untied.unwrap_or_else(|| {
            // The head's weight is the embedding table itself, as transformers ties them.
            Hook::new(nn::Linear {
                ws: transformer.wte.ws.shallow_clone(),
                bs: None,
            })
        });
        (transformer, lm_head)
    }

    /// The config the model was built from.
    #[must_use]
    pub fn config(&self) -> &Gpt2Config {
        &self.transformer.config
    }
}

impl Pretrained for Gpt2LmHead {
    const MODEL_TYPE: &'static str = "gpt2";

    fn load_from(dir: &Path, file: &ConfigFile, device: Device, kind: Kind) -> Result<Gpt2LmHead> {
        let config: Gpt2Config = file.config()?;
        let checkpoint = Checkpoint::read(dir)?;
        check_sizes(&checkpoint, &config)?;
        let (mut transformer, lm_head) = Gpt2LmHead::build(config, device, kind, Init::Placeholder);
        checkpoint.load_into(&mut transformer.vs, PREFIX)?;
        Ok(Gpt2LmHead {
            transformer: Hook::new(transformer),
            lm_head,
        })
    }
}

/// What [`load`](crate::load) makes of a `gpt2` folder: [`Gpt2LmHead`] when `config.json`'s
/// `architectures` names `GPT2LMHeadModel`, [`Gpt2`] otherwise (a `GPT2Model`, or a head this
/// crate does not build, whose body loads).
pub(crate) fn load_by_class(dir: &Path, file: &ConfigFile, device: Device, kind: Kind) -> Result<Box<dyn TextModel>> {
    if file.architectures().contains(&LM_HEAD_CLASS) {
        Ok(Box::new(Gpt2LmHead::load_from(dir, file, device, kind)?))
    } else {
        Ok(Box::new(Gpt2::load_from(dir, file, device, kind)?))
    }
}

/// The class `config.json`'s `architectures` names for a GPT-2 with its language-model head.
const LM_HEAD_CLASS: &str = "GPT2LMHeadModel";

impl TextModel for Gpt2LmHead {
    /// The last hidden state (`transformer.ln_f`'s output); `lm_head` runs only when captured.
    fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let gpt2 = &self.transformer;
        let (ids, mask) = check_inputs(
            input_ids,
            attention_mask,
            gpt2.config.n_positions,
            gpt2.config.vocab_size,
            gpt2.vs.device(),
        )?;
        let hidden = self.transformer.call_with(&ids, |m, ids| m.run(ids, &mask));
        self.head_if_captured(&hidden);
        Ok(hidden)
    }

    fn forward_cached(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        valid: &Tensor,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let gpt2 = &self.transformer;
        let (ids, positions, valid) = check_step(
            input_ids,
            positions,
            valid,
            gpt2.config.n_positions,
            gpt2.config.vocab_size,
            gpt2.vs.device(),
        )?;
        let mask = cache.step_mask(&positions, &valid, None, gpt2.vs.kind())?;
        let hidden = self.transformer.call_with(&ids, |m, ids| {
            m.run_at(ids, &positions, &mask, Some(cache.slots(m.h.len())))
        });
        self.head_if_captured(&hidden);
        Ok(hidden)
    }

    fn max_length(&self) -> usize {
        self.transformer.max_length()
    }

    fn model_type(&self) -> &'static str {
        Self::MODEL_TYPE
    }

    fn hidden_size(&self) -> usize {
        self.transformer.hidden_size()
    }

    fn vocab_size(&self) -> usize {
        self.transformer.vocab_size()
    }

    /// The variables, named as `GPT2LMHeadModel` saves them (`transformer.h.0.attn.c_attn.weight`,
    /// and `lm_head.weight` when untied).
    fn var_store(&self) -> &nn::VarStore {
        &self.transformer.vs
    }

    /// `transformer.ln_f`, then `lm_head`.
    fn readout(&self) -> Option<Readout<'_>> {
        Some(Readout::new(
            self.transformer.module().ln_f.module(),
            "transformer.ln_f",
            self.lm_head.module(),
            None,
        ))
    }

    /// `transformer.h.0:input` (the token and position embeddings summed: GPT-2's residual
    /// entering the first block, which no module outputs), `transformer.h.0`, ...,
    /// `transformer.h.{N-1}`.
    fn residual_layers(&self) -> Vec<String> {
        let blocks = (0..self.transformer.module().h.len()).map(|i| format!("transformer.h.{i}"));
        std::iter::once(format!("transformer.h.0{}", hooks::INPUT_SUFFIX))
            .chain(blocks)
            .collect()
    }
}

/// `h.N`: pre-LayerNorm attention and MLP, each with a residual connection (transformers' [`GPT2Block`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/gpt2/modeling_gpt2.py)).
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

impl Gpt2Block {
    /// Block `index` (its attention scaling may depend on it).
    fn new(p: nn::Path<'_>, config: &Gpt2Config, index: usize, init: Init) -> Self {
        let (h, eps) = (config.n_embd, config.layer_norm_epsilon);
        Gpt2Block {
            ln_1: layer_norm(&p / "ln_1", h, eps),
            attn: Hook::new(Gpt2Attention::new(&p / "attn", config, index, init)),
            ln_2: layer_norm(&p / "ln_2", h, eps),
            mlp: Hook::new(Gpt2Mlp::new(&p / "mlp", config, init)),
        }
    }

    fn forward(&self, hidden: &Tensor, mask: &attention::Mask, slot: Option<&mut KvSlot>) -> Tensor {
        let attn = self
            .attn
            .call_with(&self.ln_1.forward(hidden), |m, x| m.forward(x, mask, slot));
        let hidden = attn + hidden;
        let mlp = self.mlp.call_with(&self.ln_2.forward(&hidden), |m, x| m.forward(x));
        hidden + mlp
    }
}

/// `h.N.attn`: causal multi-head self-attention (transformers' [`GPT2Attention`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/gpt2/modeling_gpt2.py), with transformers' default
/// `sdpa` attention).
#[derive(Debug, Hookable)]
pub struct Gpt2Attention {
    /// `h.N.attn.c_attn`: query, key and value in one projection, `[B, T, 3H]`.
    pub c_attn: Hook<Conv1D>,
    /// `h.N.attn.c_proj`.
    pub c_proj: Hook<Conv1D>,
    /// `h.N.attn.attn_weights`: the attention probabilities `[B, heads, T, T]`, as
    /// `output_attentions=True` gives them (0 on future and padding keys). Computed, unfused,
    /// only when captured; the output always comes from the fused kernel.
    pub attn_weights: HookPoint,
    heads: i64,
    scaling: f64,
}

impl Gpt2Attention {
    fn new(p: nn::Path<'_>, config: &Gpt2Config, index: usize, init: Init) -> Self {
        let (h, heads) = (config.n_embd, config.n_head);
        // transformers' `head_dim**-0.5`, in double precision too: the same bits.
        let mut scaling = if config.scale_attn_weights {
            ((h / heads) as f64).powf(-0.5)
        } else {
            1.0
        };
        if config.scale_attn_by_inverse_layer_idx {
            scaling /= (index + 1) as f64;
        }
        Gpt2Attention {
            c_attn: Conv1D::new(&p / "c_attn", h, 3 * h, init),
            c_proj: Conv1D::new(&p / "c_proj", h, h, residual_init(config, init)),
            attn_weights: HookPoint::observer(),
            heads,
            scaling,
        }
    }

    fn forward(&self, hidden: &Tensor, mask: &attention::Mask, slot: Option<&mut KvSlot>) -> Tensor {
        let qkv = self.c_attn.forward(hidden);
        let width = qkv.size()[2] / 3;
        let parts = qkv.split(width, 2);
        let [query, key, value] = [&parts[0], &parts[1], &parts[2]].map(|t| attention::split_heads(t, self.heads));
        let (key, value) = attention::with_cache(slot, key, value);
        if self.attn_weights.is_capturing() {
            self.attn_weights
                .observe(&attention::probabilities(&query, &key, mask, self.scaling, false));
        }
        let context = attention::attend(&query, &key, &value, mask, self.scaling);
        self.c_proj.forward(&context)
    }
}

/// `h.N.mlp`: `c_proj(act(c_fc(x)))` (transformers' [`GPT2MLP`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/gpt2/modeling_gpt2.py)).
#[derive(Debug, Hookable)]
pub struct Gpt2Mlp {
    /// `h.N.mlp.c_fc`.
    pub c_fc: Hook<Conv1D>,
    /// `h.N.mlp.c_proj`.
    pub c_proj: Hook<Conv1D>,
    act: Activation,
}

impl Gpt2Mlp {
    fn new(p: nn::Path<'_>, config: &Gpt2Config, init: Init) -> Self {
        let h = config.n_embd;
        let inner = config.n_inner.unwrap_or(4 * h);
        Gpt2Mlp {
            c_fc: Conv1D::new(&p / "c_fc", h, inner, init),
            c_proj: Conv1D::new(&p / "c_proj", inner, h, residual_init(config, init)),
            act: config.activation_function,
        }
    }

    fn forward(&self, hidden: &Tensor) -> Tensor {
        self.c_proj.forward(&self.act.apply(&self.c_fc.forward(hidden)))
    }
}

/// GPT-2's init of the projections back into the residual stream (`attn.c_proj`, `mlp.c_proj`):
/// `initializer_range / √(2 n_layer)`, as `GPT2PreTrainedModel._init_weights` draws them.
fn residual_init(config: &Gpt2Config, init: Init) -> Init {
    init.scaled((2.0 * config.n_layer as f64).sqrt())
}

/// transformers' [`Conv1D`](https://github.com/huggingface/transformers/blob/main/src/transformers/pytorch_utils.py): a linear layer whose weight is stored
/// `[in, out]` (the transpose of `nn.Linear`'s), computed as `addmm(bias, x, weight)`.
#[derive(Debug, Hookable)]
pub struct Conv1D {
    /// `[in, out]`.
    pub weight: Tensor,
    /// `[out]`.
    pub bias: Tensor,
}

impl Conv1D {
    fn new(p: nn::Path<'_>, input: i64, output: i64, init: Init) -> Hook<Conv1D> {
        Hook::new(Conv1D {
            weight: p.var("weight", &[input, output], init.weight()),
            bias: p.var("bias", &[output], nn::Init::Const(0.0)),
        })
    }
}

/// `[..., in]` → `[..., out]`.
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
