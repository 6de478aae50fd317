//! The Llama-like decoders (Llama, Mistral, Qwen2, Qwen3, Gemma): one computation, as transformers'
//! [`modeling_llama.py`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py)
//! writes it and the others copy it, with the differences each architecture's config
//! resolves to (`DecoderSpec`): biases, per-head query and key norms (Qwen3), a sliding window
//! (Mistral), `(1 + weight)` norms and scaled embeddings (Gemma). Each architecture's own file holds its config and names its model type
//! (`pub type Llama = CausalLm<LlamaConfig>`).
//!
//! Every module sits at the path `AutoModelForCausalLM.named_modules()` gives it:
//! `model.embed_tokens`, `model.layers.3.self_attn.q_proj`, `model.norm`, `lm_head`. Laid out
//! like [`crate::bert`]: each module's struct, constructor and forward together.

use std::fmt;
use std::path::Path;

use hooks::Hookable;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use crate::activation::Activation;
use crate::attention;
use crate::attention::KvSlot;
use crate::config::{self, ConfigFile};
use crate::error::Result;
use crate::layers::{linear, Init, RmsNorm, TokenEmbedding};
use crate::rope::Rotation;
use crate::text_model::{
    check_inputs, check_step, has_head, load_as, residual_stream, to_usize, KvCache, Pretrained, Readout, TextModel,
};
use crate::weights::Checkpoint;
// `hooks::Hook`; a pass-through under the `uninstrumented` feature, for the benchmark (see lib.rs).
use crate::{Hook, HookPoint};

pub(crate) use sealed::DecoderSpec;

/// The configs of the Llama-like decoders: [`LlamaConfig`](crate::LlamaConfig),
/// [`MistralConfig`](crate::MistralConfig), [`Qwen2Config`](crate::Qwen2Config),
/// [`Qwen3Config`](crate::Qwen3Config), [`GemmaConfig`](crate::GemmaConfig). Sealed: a [`CausalLm`] of another config would have
/// no loader.
pub trait DecoderConfig: sealed::Sealed + Clone + fmt::Debug + Send + 'static {
    /// `config.json`'s `model_type`.
    const MODEL_TYPE: &'static str;
}

/// Items `pub` in a crate-private module: nameable in this crate only, so that the public
/// `DecoderConfig` can build on them while no other crate can implement it.
pub(crate) mod sealed {
    use tch::Device;

    use crate::activation::Activation;
    use crate::config::{self, Invalid};
    use crate::rope::RopeParameters;

    /// Resolves a config to what the computation needs.
    pub trait Sealed: crate::config::ArchConfig {
        fn spec(&self) -> DecoderSpec;
    }

    /// What a Llama-like decoder's config resolves to: every size with its implied value written
    /// out, and the architecture's fixed choices (which projections have biases, ...).
    #[derive(Debug, Clone, PartialEq)]
    pub struct DecoderSpec {
        pub vocab_size: i64,
        pub hidden_size: i64,
        pub intermediate_size: i64,
        pub num_hidden_layers: usize,
        pub heads: i64,
        pub kv_heads: i64,
        pub head_dim: i64,
        pub act: Activation,
        pub rms_norm_eps: f64,
        pub max_position_embeddings: i64,
        pub initializer_range: f64,
        pub tie_word_embeddings: bool,
        /// Biases on `q_proj`, `k_proj`, `v_proj`.
        pub qkv_bias: bool,
        /// A bias on `o_proj`.
        pub o_bias: bool,
        /// Biases on the MLP's projections.
        pub mlp_bias: bool,
        /// Qwen3's `q_norm` and `k_norm`: an RMS norm over each head's query and key.
        pub qk_norm: bool,
        /// Mistral's: a query attends to at most this many keys, itself included.
        pub sliding_window: Option<i64>,
        /// Gemma's: RMS norms of `x * (1 + weight)` in f32, and embeddings scaled by `√hidden`.
        pub gemma: bool,
        pub rope: RopeParameters,
    }

    impl DecoderSpec {
        /// Whether the forward can run with these values.
        pub fn check(&self) -> std::result::Result<(), Invalid> {
            for (name, value) in [
                ("vocab_size", self.vocab_size),
                ("hidden_size", self.hidden_size),
                ("intermediate_size", self.intermediate_size),
                ("num_attention_heads", self.heads),
                ("num_key_value_heads", self.kv_heads),
                ("head_dim", self.head_dim),
                ("max_position_embeddings", self.max_position_embeddings),
                ("sliding_window", self.sliding_window.unwrap_or(1)),
            ] {
                config::positive(name, value)?;
            }
            config::heads_divide(
                ("num_attention_heads", self.heads),
                ("num_key_value_heads", self.kv_heads),
            )?;
            if self.head_dim % 2 != 0 {
                return Err(Invalid::Value(format!(
                    "`head_dim` is {}; rotary embeddings need an even width",
                    self.head_dim
                )));
            }
            // Builds the inverse frequencies once, on the CPU, to report a bad rope type here.
            self.rope
                .inv_freq(self.rope.rotary_dim(self.head_dim), Device::Cpu)
                .map(|_| ())
        }
    }
}

/// Qwen2's and Qwen3's sliding-window attention (on the layers past `max_window_layers`) is not
/// implemented: a config that turns it on is refused rather than run with full attention.
pub(crate) fn full_attention_only(
    use_sliding_window: bool,
    layer_types: Option<&[String]>,
) -> std::result::Result<(), config::Invalid> {
    let sliding_layers = layer_types.into_iter().flatten().any(|t| t == "sliding_attention");
    if use_sliding_window || sliding_layers {
        return Err(config::Invalid::Unsupported {
            setting: "`use_sliding_window` is true (or a layer type is `sliding_attention`)".into(),
            hint: "only full attention is implemented for Qwen2 and Qwen3, as the released checkpoints use it (`use_sliding_window: false`)",
        });
    }
    Ok(())
}

/// A Llama-like decoder with its language-model head: transformers' `LlamaForCausalLM`,
/// `MistralForCausalLM`, `Qwen2ForCausalLM` or `Qwen3ForCausalLM`, as `C` says.
///
/// Its layers are named as `AutoModelForCausalLM.named_modules()` names them: `model`,
/// `model.embed_tokens`, `model.layers.N`, `model.layers.N.self_attn.{q,k,v,o}_proj` (and
/// Qwen3's `q_norm`, `k_norm`), `model.layers.N.mlp.{gate,up,down}_proj`,
/// `model.layers.N.{input,post_attention}_layernorm`, `model.norm` and `lm_head` (the logits,
/// `[B, T, vocab]`, computed only when captured). The rotary embedding and the activation hold
/// no parameters and are not layers. Each attention also offers
/// `model.layers.N.self_attn.attn_weights`. The layers under `model.` also answer to the base
/// model's (`AutoModel`'s) names without it, `layers.3.mlp` for `model.layers.3.mlp`: stores
/// and interventions take either, and key what they capture by the name given.
///
/// ```no_run
/// use hooks::ActivationStore;
/// use hooks_models::{Llama, TextModel};
/// use tch::{Device, Kind, Tensor};
///
/// let llama = Llama::load("my-llama", Device::Cpu, Kind::BFloat16)?;
/// let ids = Tensor::from_slice2(&[[1i64, 450, 4996, 17354], [1, 450, 0, 0]]);
/// let mask = Tensor::from_slice2(&[[1i64, 1, 1, 1], [1, 1, 0, 0]]);
/// let store = ActivationStore::new(&llama, ["model.layers.*", "model.layers.0.self_attn.attn_weights"])?;
/// store.enable();
/// llama.forward(&ids, &mask)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Hookable)]
pub struct CausalLm<C: DecoderConfig> {
    /// `model`: transformers' `LlamaModel` (or its copy); its output is the last hidden state.
    /// Its layers also answer to `AutoModel`'s names, without `model.` (`layers.3.mlp`).
    #[hook(alias = "")]
    pub model: Hook<DecoderModel>,
    /// `lm_head`: the logits. `None` for a folder holding the base model alone
    /// (`LlamaModel.save_pretrained`) with an untied head, whose weights are not there.
    pub lm_head: Option<Hook<nn::Linear>>,
    #[hook(skip)]
    config: C,
    vs: nn::VarStore,
}

impl<C: DecoderConfig> CausalLm<C> {
    /// A model of `config`'s shape with random weights (`N(0, initializer_range²)` matrices and
    /// embeddings, unit norms, zero biases), on `device` in `kind`. Its variables are trainable;
    /// a loaded model's are frozen.
    ///
    /// # Errors
    ///
    /// [`ModelError::BadConfig`](crate::ModelError::BadConfig) or
    /// [`ModelError::UnsupportedConfig`](crate::ModelError::UnsupportedConfig) for a config it
    /// cannot build, [`ModelError::UnsupportedKind`](crate::ModelError::UnsupportedKind).
    pub fn new(config: &C, device: Device, kind: Kind) -> Result<Self> {
        config::check_in_code(config, kind)?;
        let spec = config.spec();
        let init = Init::Random {
            std: spec.initializer_range,
        };
        Self::build(config.clone(), &spec, device, kind, init, true)
    }

    /// Loads the model in `dir` (`config.json` of this `model_type`, safetensors weights named
    /// as the `...ForCausalLM` class saves them) onto `device` in `kind`.
    ///
    /// # Errors
    ///
    /// As [`load`](crate::load); [`ModelError::UnsupportedModelType`](crate::ModelError::UnsupportedModelType)
    /// when the folder holds another architecture.
    pub fn load(dir: impl AsRef<Path>, device: Device, kind: Kind) -> Result<Self> {
        load_as(dir.as_ref(), device, kind)
    }

    /// The model; `untied_head` says whether an untied `lm_head` is built (a tied one always is).
    fn build(config: C, spec: &DecoderSpec, device: Device, kind: Kind, init: Init, untied_head: bool) -> Result<Self> {
        let mut vs = nn::VarStore::new(device);
        vs.set_kind(kind);
        let p = vs.root();
        let model = DecoderModel::new(&p / "model", spec, init)?;
        let lm_head = if spec.tie_word_embeddings {
            // The head's weight is the embedding table itself, as transformers ties them.
            Some(Hook::new(nn::Linear {
                ws: model.embed_tokens.ws.shallow_clone(),
                bs: None,
            }))
        } else {
            untied_head.then(|| linear(&p / "lm_head", spec.hidden_size, spec.vocab_size, false, init))
        };
        Ok(CausalLm {
            model: Hook::new(model),
            lm_head,
            config,
            vs,
        })
    }

    /// The config the model was built from.
    #[must_use]
    pub fn config(&self) -> &C {
        &self.config
    }

    /// Runs `lm_head` on the last hidden state when a store captures it (nothing reads it
    /// otherwise).
    fn head_if_captured(&self, hidden: &Tensor) {
        if let Some(lm_head) = self.lm_head.as_ref().filter(|head| head.is_capturing()) {
            let _ = lm_head.forward(hidden);
        }
    }
}

impl<C: DecoderConfig> Pretrained for CausalLm<C> {
    const MODEL_TYPE: &'static str = C::MODEL_TYPE;

    fn load_from(dir: &Path, file: &ConfigFile, device: Device, kind: Kind) -> Result<Self> {
        let config: C = file.config()?;
        let checkpoint = Checkpoint::read(dir)?;
        let head = has_head(file, &checkpoint, &["lm_head.weight"]);
        let mut model = Self::build(config.clone(), &config.spec(), device, kind, Init::Placeholder, head)?;
        // A checkpoint of the base model alone (`AutoModel.save_pretrained`) lacks the `model.`.
        checkpoint.load_into(&mut model.vs, "model.")?;
        Ok(model)
    }
}

impl<C: DecoderConfig> TextModel for CausalLm<C> {
    /// The last hidden state (`model.norm`'s output); `lm_head` runs only when captured.
    fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let spec = self.config.spec();
        let (ids, mask) = check_inputs(
            input_ids,
            attention_mask,
            spec.max_position_embeddings,
            spec.vocab_size,
            self.vs.device(),
        )?;
        let _no_grad = tch::no_grad_guard();
        let hidden = self
            .model
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
        let spec = self.config.spec();
        let (ids, positions, valid) = check_step(
            input_ids,
            positions,
            valid,
            spec.max_position_embeddings,
            spec.vocab_size,
            self.vs.device(),
        )?;
        let _no_grad = tch::no_grad_guard();
        let kind = self.vs.kind();
        let mask = cache.step_mask(&positions, &valid, spec.sliding_window, kind)?;
        let hidden = self.model.call_with(&ids, |m, ids| {
            let rotation = Rotation::at(&m.inv_freq, &positions, kind);
            m.run(ids, &rotation, &mask, Some(cache.slots(m.layers.len())))
        });
        self.head_if_captured(&hidden);
        Ok(hidden)
    }

    fn max_length(&self) -> usize {
        to_usize(self.config.spec().max_position_embeddings)
    }

    fn model_type(&self) -> &'static str {
        C::MODEL_TYPE
    }

    fn hidden_size(&self) -> usize {
        to_usize(self.config.spec().hidden_size)
    }

    fn vocab_size(&self) -> usize {
        to_usize(self.config.spec().vocab_size)
    }

    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// `model.norm`, then `lm_head`.
    fn readout(&self) -> Option<Readout<'_>> {
        let head = self.lm_head.as_ref()?;
        Some(Readout::new(
            self.model.module().norm.module(),
            "model.norm",
            head.module(),
            None,
        ))
    }

    /// `model.embed_tokens`, `model.layers.0`, ..., `model.layers.{N-1}`.
    fn residual_layers(&self) -> Vec<String> {
        residual_stream("model.embed_tokens", "model.layers", self.model.module().layers.len())
    }
}

/// `model`: embeddings, decoder layers and the final norm (transformers'
/// [`LlamaModel`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py)
/// and its copies).
#[derive(Debug, Hookable)]
pub struct DecoderModel {
    /// `model.embed_tokens` (Gemma's output carries the `√hidden` scale, as transformers').
    pub embed_tokens: Hook<TokenEmbedding>,
    /// `model.layers.N`.
    pub layers: Vec<Hook<DecoderLayer>>,
    /// `model.norm`.
    pub norm: Hook<RmsNorm>,
    /// The rotary embedding's inverse frequencies, `[head_dim / 2]` f32 (`model.rotary_emb`,
    /// which has buffers and no parameters, so it is not a layer).
    inv_freq: Tensor,
    sliding_window: Option<i64>,
}

impl DecoderModel {
    fn new(p: nn::Path<'_>, spec: &DecoderSpec, init: Init) -> Result<Self> {
        let inv_freq = spec
            .rope
            .inv_freq(spec.rope.rotary_dim(spec.head_dim), p.device())
            .map_err(|invalid| invalid.into_error(None))?;
        let layers = (0..spec.num_hidden_layers)
            .map(|i| Hook::new(DecoderLayer::new(&p / "layers" / i, spec, init)))
            .collect();
        let scale = spec.gemma.then(|| (spec.hidden_size as f64).sqrt());
        Ok(DecoderModel {
            embed_tokens: TokenEmbedding::new(&p / "embed_tokens", spec.vocab_size, spec.hidden_size, scale, init),
            layers,
            norm: RmsNorm::with_style(&p / "norm", spec.hidden_size, spec.rms_norm_eps, spec.gemma),
            inv_freq,
            sliding_window: spec.sliding_window,
        })
    }

    fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor, kind: Kind) -> Tensor {
        let rotation = Rotation::new(&self.inv_freq, input_ids.size()[1], kind);
        let mask = match self.sliding_window {
            None => attention::causal_padding_mask(attention_mask, kind),
            Some(window) => attention::sliding_window_mask(attention_mask, kind, window),
        };
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
        let mut hidden = self.embed_tokens.forward(input_ids);
        let mut slots = slots.map(|s| s.iter_mut());
        for layer in &self.layers {
            let slot = slots.as_mut().and_then(Iterator::next);
            hidden = layer.call_with(&hidden, |m, x| m.forward(x, rotation, mask, slot));
        }
        self.norm.forward(&hidden)
    }
}

/// `model.layers.N`: pre-norm attention and MLP, each with a residual connection (transformers'
/// [`LlamaDecoderLayer`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py)
/// and its copies).
#[derive(Debug, Hookable)]
pub struct DecoderLayer {
    /// `...self_attn`: its output is after `o_proj`, before the residual.
    pub self_attn: Hook<DecoderAttention>,
    /// `...mlp`: its output is before the residual.
    pub mlp: Hook<DecoderMlp>,
    /// `...input_layernorm`.
    pub input_layernorm: Hook<RmsNorm>,
    /// `...post_attention_layernorm`.
    pub post_attention_layernorm: Hook<RmsNorm>,
}

impl DecoderLayer {
    fn new(p: nn::Path<'_>, spec: &DecoderSpec, init: Init) -> Self {
        let (h, eps) = (spec.hidden_size, spec.rms_norm_eps);
        DecoderLayer {
            self_attn: Hook::new(DecoderAttention::new(&p / "self_attn", spec, init)),
            mlp: Hook::new(DecoderMlp::new(&p / "mlp", spec, init)),
            input_layernorm: RmsNorm::with_style(&p / "input_layernorm", h, eps, spec.gemma),
            post_attention_layernorm: RmsNorm::with_style(&p / "post_attention_layernorm", h, eps, spec.gemma),
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
        let hidden = hidden
            + self
                .self_attn
                .call_with(&normed, |m, x| m.forward(x, rotation, mask, slot));
        let normed = self.post_attention_layernorm.forward(&hidden);
        &hidden + self.mlp.call_with(&normed, |m, x| m.forward(x))
    }
}

/// `model.layers.N.self_attn`: grouped-query attention with rotary embeddings on queries and
/// keys (transformers' [`LlamaAttention`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py)
/// and its copies, with their default `sdpa` attention).
#[derive(Debug, Hookable)]
pub struct DecoderAttention {
    /// `...q_proj`: `[B, T, heads × head_dim]`.
    pub q_proj: Hook<nn::Linear>,
    /// `...k_proj`: `[B, T, kv_heads × head_dim]`.
    pub k_proj: Hook<nn::Linear>,
    /// `...v_proj`: `[B, T, kv_heads × head_dim]`.
    pub v_proj: Hook<nn::Linear>,
    /// `...o_proj`: its input holds the heads' outputs side by side.
    pub o_proj: Hook<nn::Linear>,
    /// `...q_norm` (Qwen3): each head's query normalised, `[B, T, heads, head_dim]`.
    pub q_norm: Option<Hook<RmsNorm>>,
    /// `...k_norm` (Qwen3): each head's key normalised, `[B, T, kv_heads, head_dim]`.
    pub k_norm: Option<Hook<RmsNorm>>,
    /// `...self_attn.attn_weights`: the attention probabilities `[B, heads, T, T]`, as
    /// `output_attentions=True` gives them (0 on future and padding keys). Computed, unfused,
    /// only when captured; the output always comes from the fused kernel.
    pub attn_weights: HookPoint,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
    scaling: f64,
}

impl DecoderAttention {
    fn new(p: nn::Path<'_>, spec: &DecoderSpec, init: Init) -> Self {
        let (h, heads, kv_heads, d) = (spec.hidden_size, spec.heads, spec.kv_heads, spec.head_dim);
        let norm = |name: &str| spec.qk_norm.then(|| RmsNorm::new(&p / name, d, spec.rms_norm_eps));
        DecoderAttention {
            q_proj: linear(&p / "q_proj", h, heads * d, spec.qkv_bias, init),
            k_proj: linear(&p / "k_proj", h, kv_heads * d, spec.qkv_bias, init),
            v_proj: linear(&p / "v_proj", h, kv_heads * d, spec.qkv_bias, init),
            o_proj: linear(&p / "o_proj", heads * d, h, spec.o_bias, init),
            q_norm: norm("q_norm"),
            k_norm: norm("k_norm"),
            attn_weights: HookPoint::observer(),
            heads,
            kv_heads,
            head_dim: d,
            // transformers' `head_dim**-0.5`, in double precision too: the same bits.
            scaling: (d as f64).powf(-0.5),
        }
    }

    /// `[B, T, heads × d]` → `[B, heads, T, d]`, through `norm` per head when there is one.
    fn heads_of(&self, x: &Tensor, heads: i64, norm: Option<&Hook<RmsNorm>>) -> Tensor {
        let size = x.size();
        let x = x.view([size[0], size[1], heads, self.head_dim]);
        let x = norm.map_or(x.shallow_clone(), |norm| norm.forward(&x));
        x.transpose(1, 2)
    }

    fn forward(
        &self,
        hidden: &Tensor,
        rotation: &Rotation,
        mask: &attention::Mask,
        slot: Option<&mut KvSlot>,
    ) -> Tensor {
        let query = self.heads_of(&self.q_proj.forward(hidden), self.heads, self.q_norm.as_ref());
        let key = self.heads_of(&self.k_proj.forward(hidden), self.kv_heads, self.k_norm.as_ref());
        let value = self.heads_of(&self.v_proj.forward(hidden), self.kv_heads, None);
        let (query, key) = (rotation.apply(&query), rotation.apply(&key));
        let (key, value) = attention::with_cache(slot, key, value);
        let groups = self.heads / self.kv_heads;
        let (key, value) = (repeat_kv(&key, groups), repeat_kv(&value, groups));
        if self.attn_weights.is_capturing() {
            self.attn_weights
                .observe(&attention::probabilities(&query, &key, mask, self.scaling, true));
        }
        let context = attention::attend(&query, &key, &value, mask, self.scaling);
        self.o_proj.forward(&context)
    }
}

/// transformers' `repeat_kv`: each of the `kv_heads` key or value heads serves `groups` query
/// heads, `[B, kv_heads, T, d]` → `[B, kv_heads × groups, T, d]`.
fn repeat_kv(x: &Tensor, groups: i64) -> Tensor {
    if groups == 1 {
        return x.shallow_clone();
    }
    let size = x.size();
    let (batch, kv_heads, len, d) = (size[0], size[1], size[2], size[3]);
    x.unsqueeze(2)
        .expand([batch, kv_heads, groups, len, d], false)
        .reshape([batch, kv_heads * groups, len, d])
}

/// `model.layers.N.mlp`: `down_proj(act(gate_proj(x)) * up_proj(x))` (transformers'
/// [`LlamaMLP`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py)
/// and its copies).
#[derive(Debug, Hookable)]
pub struct DecoderMlp {
    /// `...mlp.gate_proj`.
    pub gate_proj: Hook<nn::Linear>,
    /// `...mlp.up_proj`.
    pub up_proj: Hook<nn::Linear>,
    /// `...mlp.down_proj`.
    pub down_proj: Hook<nn::Linear>,
    act: Activation,
}

impl DecoderMlp {
    fn new(p: nn::Path<'_>, spec: &DecoderSpec, init: Init) -> Self {
        let (h, inner, bias) = (spec.hidden_size, spec.intermediate_size, spec.mlp_bias);
        DecoderMlp {
            gate_proj: linear(&p / "gate_proj", h, inner, bias, init),
            up_proj: linear(&p / "up_proj", h, inner, bias, init),
            down_proj: linear(&p / "down_proj", inner, h, bias, init),
            act: spec.act,
        }
    }

    fn forward(&self, hidden: &Tensor) -> Tensor {
        let gated = self.act.apply(&self.gate_proj.forward(hidden)) * self.up_proj.forward(hidden);
        self.down_proj.forward(&gated)
    }
}
