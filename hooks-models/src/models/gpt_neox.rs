//! GPT-NeoX (Pythia, ...), as transformers' `GPTNeoXForCausalLM` computes it
//! ([`modeling_gpt_neox.py`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/gpt_neox/modeling_gpt_neox.py)),
//! with every module at the path `AutoModelForCausalLM.named_modules()` gives it:
//! `gpt_neox.embed_in`, `gpt_neox.layers.3.attention.query_key_value`, `gpt_neox.final_layer_norm`,
//! `lm_head`.
//!
//! Laid out like [`crate::bert`]: the config, then each module's struct, constructor and forward.
//! Partial rotary embeddings (`rotary_pct`), the fused `query_key_value` projection, parallel or
//! sequential residuals, and an untied head that checkpoints store as `embed_out.weight`.

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
use crate::rope::{RopeParameters, Rotation};
use crate::text_model::{
    check_inputs, check_step, has_head, load_as, residual_stream, to_usize, KvCache, Pretrained, Readout, TextModel,
};
use crate::weights::Checkpoint;
// `hooks::Hook`; a pass-through under the `uninstrumented` feature, for the benchmark (see lib.rs).
use crate::{Hook, HookPoint};

/// The hyper-parameters of a GPT-NeoX decoder: transformers'
/// [`GPTNeoXConfig`](https://huggingface.co/docs/transformers/model_doc/gpt_neox#transformers.GPTNeoXConfig),
/// only what the forward pass reads. `Default` gives transformers' defaults (GPT-NeoX-20B's
/// shape). Both forms of the rotary settings load: `rope_parameters` (with
/// `partial_rotary_factor`), and the older top-level `rotary_pct` and `rotary_emb_base`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct GptNeoxConfig {
    /// Rows of `gpt_neox.embed_in` and of `lm_head`'s output.
    pub vocab_size: i64,
    /// Width of every hidden state.
    pub hidden_size: i64,
    /// Entries of `gpt_neox.layers`.
    pub num_hidden_layers: usize,
    /// Attention heads per layer; divides `hidden_size`.
    pub num_attention_heads: i64,
    /// Width of `mlp.dense_h_to_4h`.
    pub intermediate_size: i64,
    /// The MLP's activation (`gelu`).
    pub hidden_act: Activation,
    /// The longest input.
    pub max_position_embeddings: i64,
    /// The standard deviation of the random weights of a model built with [`GptNeox::new`].
    pub initializer_range: f64,
    /// Epsilon of every LayerNorm.
    pub layer_norm_eps: f64,
    /// Whether `lm_head` reuses `gpt_neox.embed_in`'s weight.
    pub tie_word_embeddings: bool,
    /// `x + attn(ln1(x)) + mlp(ln2(x))` when true; `h = x + attn(ln1(x)); h + mlp(ln2(h))` when
    /// false.
    pub use_parallel_residual: bool,
    /// Biases on `query_key_value` and `dense`.
    pub attention_bias: bool,
    /// transformers 5's rotary settings (with `partial_rotary_factor`).
    pub rope_parameters: Option<RopeParameters>,
    /// The fraction of each head that rotates, in older configs (default 0.25).
    pub rotary_pct: Option<f64>,
    /// The rotary base, in older configs (default 10000).
    pub rotary_emb_base: Option<f64>,
}

impl Default for GptNeoxConfig {
    /// transformers' `GPTNeoXConfig()` defaults.
    fn default() -> Self {
        GptNeoxConfig {
            vocab_size: 50432,
            hidden_size: 6144,
            num_hidden_layers: 44,
            num_attention_heads: 64,
            intermediate_size: 24576,
            hidden_act: Activation::Gelu,
            max_position_embeddings: 2048,
            initializer_range: 0.02,
            layer_norm_eps: 1e-5,
            tie_word_embeddings: false,
            use_parallel_residual: true,
            attention_bias: true,
            rope_parameters: None,
            rotary_pct: None,
            rotary_emb_base: None,
        }
    }
}

impl GptNeoxConfig {
    /// Width of one head.
    fn head_size(&self) -> i64 {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// The rotary settings, as `GPTNeoXConfig.convert_rope_params_to_dict` fills them: the
    /// base from `rotary_emb_base` and the fraction from `rotary_pct` unless `rope_parameters`
    /// has them, 10000 and 0.25 by default.
    fn rope(&self) -> RopeParameters {
        let mut rope = self
            .rope_parameters
            .clone()
            .unwrap_or_else(|| RopeParameters::default_at(self.rotary_emb_base.unwrap_or(10_000.0)));
        rope.rope_theta = rope.rope_theta.or(self.rotary_emb_base).or(Some(10_000.0));
        rope.partial_rotary_factor = rope.partial_rotary_factor.or(self.rotary_pct).or(Some(0.25));
        rope
    }
}

impl ArchConfig for GptNeoxConfig {
    const ACTIVATION_FIELD: &'static str = "hidden_act";

    fn check(&self) -> std::result::Result<(), Invalid> {
        for (name, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            config::positive(name, value)?;
        }
        config::layers("num_hidden_layers", self.num_hidden_layers)?;
        config::heads_divide(
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
        )?;
        let rope = self.rope();
        let rotary = rope.rotary_dim(self.head_size());
        if rotary < 2 || rotary % 2 != 0 || rotary > self.head_size() {
            return Err(Invalid::Value(format!(
                "the rotary fraction gives {rotary} rotated features of a head of {}; it must give an even number from 2 to the head size",
                self.head_size()
            )));
        }
        rope.inv_freq(rotary, Device::Cpu).map(|_| ())
    }
}

/// A GPT-NeoX decoder with its language-model head: transformers'
/// [`GPTNeoXForCausalLM`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/gpt_neox/modeling_gpt_neox.py).
///
/// Its layers are named as `AutoModelForCausalLM.named_modules()` names them: `gpt_neox`,
/// `gpt_neox.embed_in`, `gpt_neox.layers.N`, `gpt_neox.layers.N.{input,post_attention}_layernorm`,
/// `gpt_neox.layers.N.attention.{query_key_value,dense}`, `gpt_neox.layers.N.mlp.{dense_h_to_4h,dense_4h_to_h}`,
/// `gpt_neox.final_layer_norm` and `lm_head` (the logits, computed only when captured).
/// Dropouts, the activation and the rotary embedding hold no parameters and are not layers.
/// Older names work too: `AutoModel`'s (`layers.0.attention` for `gpt_neox.layers.0.attention`)
/// and `embed_out` for `lm_head`; stores and interventions key what they capture by the name
/// given.
#[derive(Debug, Hookable)]
pub struct GptNeox {
    /// `gpt_neox`: transformers' `GPTNeoXModel`; its output is the last hidden state. Its layers
    /// also answer to `AutoModel`'s names, without `gpt_neox.` (`layers.0.attention`).
    #[hook(alias = "")]
    pub gpt_neox: Hook<GptNeoxModel>,
    /// `lm_head`: the logits (stored in checkpoints as `embed_out.weight`). Also `embed_out`, the
    /// module's name before transformers 5.
    /// `None` for a folder holding the base model alone (`GPTNeoXModel.save_pretrained`) with an
    /// untied head, whose weights are not there.
    #[hook(alias = "embed_out")]
    pub lm_head: Option<Hook<nn::Linear>>,
    config: GptNeoxConfig,
    vs: nn::VarStore,
}

impl GptNeox {
    /// A GPT-NeoX of `config`'s shape with random weights (`N(0, initializer_range²)` matrices
    /// and embeddings, unit LayerNorms, zero biases), on `device` in `kind`. Its variables are
    /// trainable; a loaded model's are frozen.
    ///
    /// # Errors
    ///
    /// [`ModelError::BadConfig`](crate::ModelError::BadConfig) or
    /// [`ModelError::UnsupportedConfig`](crate::ModelError::UnsupportedConfig) for a config it
    /// cannot build, [`ModelError::UnsupportedKind`](crate::ModelError::UnsupportedKind).
    pub fn new(config: &GptNeoxConfig, device: Device, kind: Kind) -> Result<GptNeox> {
        config::check_in_code(config, kind)?;
        let init = Init::Random {
            std: config.initializer_range,
        };
        GptNeox::build(config.clone(), device, kind, init, true)
    }

    /// Loads the GPT-NeoX in `dir` (`config.json` with `model_type: "gpt_neox"`, safetensors
    /// weights) onto `device` in `kind`.
    ///
    /// # Errors
    ///
    /// As [`load`](crate::load); [`ModelError::UnsupportedModelType`](crate::ModelError::UnsupportedModelType)
    /// when the folder holds another architecture.
    pub fn load(dir: impl AsRef<Path>, device: Device, kind: Kind) -> Result<GptNeox> {
        load_as(dir.as_ref(), device, kind)
    }

    /// Runs `lm_head` on the last hidden state when a store captures it (nothing reads it
    /// otherwise).
    fn head_if_captured(&self, hidden: &Tensor) {
        if let Some(lm_head) = self.lm_head.as_ref().filter(|head| head.is_capturing()) {
            let _ = lm_head.forward(hidden);
        }
    }

    /// The model; `untied_head` says whether an untied `lm_head` is built (a tied one always is).
    fn build(config: GptNeoxConfig, device: Device, kind: Kind, init: Init, untied_head: bool) -> Result<GptNeox> {
        let mut vs = nn::VarStore::new(device);
        vs.set_kind(kind);
        let p = vs.root();
        let model = GptNeoxModel::new(&p / "gpt_neox", &config, init)?;
        let lm_head = if config.tie_word_embeddings {
            Some(Hook::new(nn::Linear {
                ws: model.embed_in.ws.shallow_clone(),
                bs: None,
            }))
        } else {
            untied_head.then(|| linear(&p / "lm_head", config.hidden_size, config.vocab_size, false, init))
        };
        Ok(GptNeox {
            gpt_neox: Hook::new(model),
            lm_head,
            config,
            vs,
        })
    }

    /// The config the model was built from.
    #[must_use]
    pub fn config(&self) -> &GptNeoxConfig {
        &self.config
    }
}

impl Pretrained for GptNeox {
    const MODEL_TYPE: &'static str = "gpt_neox";

    fn load_from(dir: &Path, file: &ConfigFile, device: Device, kind: Kind) -> Result<GptNeox> {
        let config: GptNeoxConfig = file.config()?;
        let checkpoint = Checkpoint::read(dir)?;
        let head = has_head(file, &checkpoint, &["lm_head.weight", "embed_out.weight"]);
        let (h, p) = (config.hidden_size, "gpt_neox.");
        checkpoint.expect_shape(
            "embed_in.weight",
            p,
            &[config.vocab_size, h],
            "`vocab_size` and `hidden_size`",
        )?;
        checkpoint.expect_blocks("layers", p, config.num_hidden_layers, "`num_hidden_layers`")?;
        if config.num_hidden_layers > 0 {
            let inner = [config.intermediate_size, h];
            checkpoint.expect_shape("layers.0.mlp.dense_h_to_4h.weight", p, &inner, "`intermediate_size`")?;
        }
        let mut model = GptNeox::build(config, device, kind, Init::Placeholder, head)?;
        checkpoint.load_renamed(&mut model.vs, "gpt_neox.", &[("lm_head.weight", "embed_out.weight")])?;
        Ok(model)
    }
}

impl TextModel for GptNeox {
    /// The last hidden state (`gpt_neox.final_layer_norm`'s output); `lm_head` runs only when
    /// captured.
    fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let (ids, mask) = check_inputs(
            input_ids,
            attention_mask,
            self.config.max_position_embeddings,
            self.config.vocab_size,
            self.vs.device(),
        )?;
        let _no_grad = tch::no_grad_guard();
        let hidden = self
            .gpt_neox
            .call_with(&ids, |m, ids| m.forward(ids, &mask, self.vs.kind()));
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
        let (ids, positions, valid) = check_step(
            input_ids,
            positions,
            valid,
            self.config.max_position_embeddings,
            self.config.vocab_size,
            self.vs.device(),
        )?;
        let _no_grad = tch::no_grad_guard();
        let kind = self.vs.kind();
        let mask = cache.step_mask(&positions, &valid, None, kind)?;
        let hidden = self.gpt_neox.call_with(&ids, |m, ids| {
            let rotation = Rotation::at(&m.inv_freq, &positions, kind);
            m.run(ids, &rotation, &mask, Some(cache.slots(m.layers.len())))
        });
        self.head_if_captured(&hidden);
        Ok(hidden)
    }

    fn max_length(&self) -> usize {
        to_usize(self.config.max_position_embeddings)
    }

    fn model_type(&self) -> &'static str {
        Self::MODEL_TYPE
    }

    fn hidden_size(&self) -> usize {
        to_usize(self.config.hidden_size)
    }

    fn vocab_size(&self) -> usize {
        to_usize(self.config.vocab_size)
    }

    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// `gpt_neox.final_layer_norm`, then `lm_head`.
    fn readout(&self) -> Option<Readout<'_>> {
        let head = self.lm_head.as_ref()?;
        Some(Readout::new(
            self.gpt_neox.module().final_layer_norm.module(),
            "gpt_neox.final_layer_norm",
            head.module(),
            None,
        ))
    }

    /// `gpt_neox.embed_in`, `gpt_neox.layers.0`, ..., `gpt_neox.layers.{N-1}`.
    fn residual_layers(&self) -> Vec<String> {
        residual_stream(
            "gpt_neox.embed_in",
            "gpt_neox.layers",
            self.gpt_neox.module().layers.len(),
        )
    }
}

/// `gpt_neox`: embeddings, layers and the final LayerNorm (transformers'
/// [`GPTNeoXModel`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/gpt_neox/modeling_gpt_neox.py)).
#[derive(Debug, Hookable)]
pub struct GptNeoxModel {
    /// `gpt_neox.embed_in`.
    pub embed_in: Hook<nn::Embedding>,
    /// `gpt_neox.layers.N`.
    pub layers: Vec<Hook<GptNeoxLayer>>,
    /// `gpt_neox.final_layer_norm`.
    pub final_layer_norm: Hook<nn::LayerNorm>,
    /// The rotary embedding's inverse frequencies for the rotated features (`rotary_emb`, which
    /// has buffers and no parameters, so it is not a layer).
    inv_freq: Tensor,
}

impl GptNeoxModel {
    fn new(p: nn::Path<'_>, config: &GptNeoxConfig, init: Init) -> Result<Self> {
        let rope = config.rope();
        let inv_freq = rope
            .inv_freq(rope.rotary_dim(config.head_size()), p.device())
            .map_err(|invalid| invalid.into_error(None))?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| Hook::new(GptNeoxLayer::new(&p / "layers" / i, config, init)))
            .collect();
        Ok(GptNeoxModel {
            embed_in: embedding(&p / "embed_in", config.vocab_size, config.hidden_size, init),
            layers,
            final_layer_norm: layer_norm(&p / "final_layer_norm", config.hidden_size, config.layer_norm_eps),
            inv_freq,
        })
    }

    fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor, kind: Kind) -> Tensor {
        let rotation = Rotation::new(&self.inv_freq, input_ids.size()[1], kind);
        let mask = attention::causal_padding_mask(attention_mask, kind);
        self.run(input_ids, &rotation, &mask, None)
    }

    /// The layers over `input_ids`, each attention appending to its cache slot when given.
    fn run(
        &self,
        input_ids: &Tensor,
        rotation: &Rotation,
        mask: &attention::Mask,
        slots: Option<&mut [KvSlot]>,
    ) -> Tensor {
        let mut hidden = self.embed_in.forward(input_ids);
        let mut slots = slots.map(|s| s.iter_mut());
        for layer in &self.layers {
            let slot = slots.as_mut().and_then(Iterator::next);
            hidden = layer.call_with(&hidden, |m, x| m.forward(x, rotation, mask, slot));
        }
        self.final_layer_norm.forward(&hidden)
    }
}

/// `gpt_neox.layers.N`: attention and MLP, on parallel or sequential residuals (transformers'
/// [`GPTNeoXLayer`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/gpt_neox/modeling_gpt_neox.py)).
#[derive(Debug, Hookable)]
pub struct GptNeoxLayer {
    /// `...input_layernorm`: before the attention.
    pub input_layernorm: Hook<nn::LayerNorm>,
    /// `...post_attention_layernorm`: before the MLP.
    pub post_attention_layernorm: Hook<nn::LayerNorm>,
    /// `...attention`: its output is after `dense`, before the residual.
    pub attention: Hook<GptNeoxAttention>,
    /// `...mlp`: its output is before the residual.
    pub mlp: Hook<GptNeoxMlp>,
    parallel_residual: bool,
}

impl GptNeoxLayer {
    fn new(p: nn::Path<'_>, config: &GptNeoxConfig, init: Init) -> Self {
        let (h, eps) = (config.hidden_size, config.layer_norm_eps);
        GptNeoxLayer {
            input_layernorm: layer_norm(&p / "input_layernorm", h, eps),
            post_attention_layernorm: layer_norm(&p / "post_attention_layernorm", h, eps),
            attention: Hook::new(GptNeoxAttention::new(&p / "attention", config, init)),
            mlp: Hook::new(GptNeoxMlp::new(&p / "mlp", config, init)),
            parallel_residual: config.use_parallel_residual,
        }
    }

    fn forward(
        &self,
        hidden: &Tensor,
        rotation: &Rotation,
        mask: &attention::Mask,
        slot: Option<&mut KvSlot>,
    ) -> Tensor {
        let normed = self.input_layernorm.forward(hidden);
        let attn = self
            .attention
            .call_with(&normed, |m, x| m.forward(x, rotation, mask, slot));
        if self.parallel_residual {
            let mlp = self
                .mlp
                .call_with(&self.post_attention_layernorm.forward(hidden), |m, x| m.forward(x));
            mlp + attn + hidden
        } else {
            let attn = attn + hidden;
            let mlp = self
                .mlp
                .call_with(&self.post_attention_layernorm.forward(&attn), |m, x| m.forward(x));
            mlp + attn
        }
    }
}

/// `gpt_neox.layers.N.attention`: multi-head attention from one fused projection, rotary on the
/// first features of each query and key head (transformers'
/// [`GPTNeoXAttention`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/gpt_neox/modeling_gpt_neox.py),
/// with its default `sdpa` attention).
#[derive(Debug, Hookable)]
pub struct GptNeoxAttention {
    /// `...attention.query_key_value`: `[B, T, 3H]`, each head's query, key and value side by
    /// side (`[..., heads, 3 × head_size]`).
    pub query_key_value: Hook<nn::Linear>,
    /// `...attention.dense`: its input holds the heads' outputs side by side.
    pub dense: Hook<nn::Linear>,
    /// `...attention.attn_weights`: the attention probabilities `[B, heads, T, T]`, as
    /// `output_attentions=True` gives them (0 on future and padding keys). Computed, unfused,
    /// only when captured; the output always comes from the fused kernel.
    pub attn_weights: HookPoint,
    heads: i64,
    head_size: i64,
    scaling: f64,
}

impl GptNeoxAttention {
    fn new(p: nn::Path<'_>, config: &GptNeoxConfig, init: Init) -> Self {
        let (h, bias) = (config.hidden_size, config.attention_bias);
        GptNeoxAttention {
            query_key_value: linear(&p / "query_key_value", h, 3 * h, bias, init),
            dense: linear(&p / "dense", h, h, bias, init),
            attn_weights: HookPoint::observer(),
            heads: config.num_attention_heads,
            head_size: config.head_size(),
            // transformers' `head_size**-0.5`, in double precision too: the same bits.
            scaling: (config.head_size() as f64).powf(-0.5),
        }
    }

    fn forward(
        &self,
        hidden: &Tensor,
        rotation: &Rotation,
        mask: &attention::Mask,
        slot: Option<&mut KvSlot>,
    ) -> Tensor {
        let qkv = self.query_key_value.forward(hidden);
        let size = qkv.size();
        let qkv = qkv
            .view([size[0], size[1], self.heads, 3 * self.head_size])
            .transpose(1, 2);
        let parts = qkv.chunk(3, -1);
        let (query, key) = (rotation.apply(&parts[0]), rotation.apply(&parts[1]));
        let (key, value) = attention::with_cache(slot, key, parts[2].shallow_clone());
        let value = &value;
        if self.attn_weights.is_capturing() {
            self.attn_weights
                .observe(&attention::probabilities(&query, &key, mask, self.scaling, true));
        }
        let context = attention::attend(&query, &key, value, mask, self.scaling);
        self.dense.forward(&context)
    }
}

/// `gpt_neox.layers.N.mlp`: `dense_4h_to_h(act(dense_h_to_4h(x)))` (transformers'
/// [`GPTNeoXMLP`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/gpt_neox/modeling_gpt_neox.py)).
#[derive(Debug, Hookable)]
pub struct GptNeoxMlp {
    /// `...mlp.dense_h_to_4h`.
    pub dense_h_to_4h: Hook<nn::Linear>,
    /// `...mlp.dense_4h_to_h`.
    pub dense_4h_to_h: Hook<nn::Linear>,
    act: Activation,
}

impl GptNeoxMlp {
    fn new(p: nn::Path<'_>, config: &GptNeoxConfig, init: Init) -> Self {
        let (h, inner) = (config.hidden_size, config.intermediate_size);
        GptNeoxMlp {
            dense_h_to_4h: linear(&p / "dense_h_to_4h", h, inner, true, init),
            dense_4h_to_h: linear(&p / "dense_4h_to_h", inner, h, true, init),
            act: config.hidden_act,
        }
    }

    fn forward(&self, hidden: &Tensor) -> Tensor {
        self.dense_4h_to_h
            .forward(&self.act.apply(&self.dense_h_to_4h.forward(hidden)))
    }
}
