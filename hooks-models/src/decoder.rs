//! The Llama-like decoders (Llama, Mistral, Qwen2, Qwen3, Gemma, Gemma 2, Gemma 3, OLMo 2,
//! Phi-3): one computation, as transformers'
//! [`modeling_llama.py`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py)
//! writes it and the others copy it, with the differences each architecture's config
//! resolves to (`DecoderSpec`): biases, query and key norms per head (Qwen3, Gemma 3) or over
//! the full projection (OLMo 2), a sliding window on every layer (Mistral, Phi-3) or on some
//! (Gemma 2, Gemma 3, with their own rope base on Gemma 3), `(1 + weight)` norms and scaled
//! embeddings (the Gemmas), norms after each sublayer (Gemma 2 and 3 also before: "sandwich";
//! OLMo 2 only after), attention and final-logit soft-caps (Gemma 2), fused projections and
//! `longrope` (Phi-3). Each architecture's own file holds its config and names its model type
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
use crate::layers::{linear, Init, RmsNorm, RmsStyle, TokenEmbedding};
use crate::rope::{LongRope, Rotation};
use crate::text_model::{
    check_inputs, check_step, has_head, load_as, residual_stream, to_usize, KvCache, Pretrained, Readout, TextModel,
};
use crate::weights::Checkpoint;
// `hooks::Hook`; a pass-through under the `uninstrumented` feature, for the benchmark (see lib.rs).
use crate::{Hook, HookPoint};

pub(crate) use sealed::{DecoderSpec, Features, NormPlacement, QkNorm};

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
    use crate::layers::RmsStyle;
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
        /// The RMS norms' form; Gemma's also scales the embeddings by `√hidden`.
        pub norm: RmsStyle,
        pub rope: RopeParameters,
        /// What the later families add; `Features::default()` is Llama's.
        pub features: Features,
    }

    /// Where a decoder layer's norms sit.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub enum NormPlacement {
        /// Llama's: `input_layernorm` before the attention, `post_attention_layernorm` before the
        /// MLP.
        #[default]
        Pre,
        /// Gemma 2's and 3's: a norm before and after each sublayer (`input_layernorm`,
        /// `post_attention_layernorm`, `pre_feedforward_layernorm`, `post_feedforward_layernorm`),
        /// the residual added after the second.
        Sandwich,
        /// OLMo 2's: `post_attention_layernorm` and `post_feedforward_layernorm` on each
        /// sublayer's output, before the residual; nothing before.
        Post,
    }

    /// Where `q_norm` and `k_norm` normalise (with `qk_norm` on).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub enum QkNorm {
        /// Qwen3's and Gemma 3's: each head, on `[B, T, heads, head_dim]`. (Gemma 3 normalises
        /// after the heads' transpose, `[B, heads, T, head_dim]`: the same values, but its
        /// captures here keep the token axis at dim 1, as every output the engine pools and
        /// pads has it.)
        #[default]
        PerHead,
        /// OLMo 2's: the full projection `[B, T, heads × head_dim]`, before the heads split.
        FullWidth,
    }

    /// The differences of the later families, each off by default.
    #[derive(Debug, Clone, PartialEq, Default)]
    pub struct Features {
        pub norms: NormPlacement,
        pub qk_norm: QkNorm,
        /// Phi-3's `qkv_proj` and `gate_up_proj` in place of the separate projections.
        pub fused: bool,
        /// Gemma 2's and 3's: the scores are scaled by `query_pre_attn_scalar^-0.5`, not
        /// `head_dim^-0.5`.
        pub query_pre_attn_scalar: Option<f64>,
        /// Gemma 2's `tanh(scores / cap) · cap` before the mask.
        pub attn_logit_softcapping: Option<f64>,
        /// Gemma 2's (and 3's, when set) soft-cap on the logits the model returns.
        pub final_logit_softcapping: Option<f64>,
        /// Which layers use `sliding_window` (`true`: sliding); `None`: every layer, when a
        /// window is set.
        pub sliding_layers: Option<Vec<bool>>,
        /// Gemma 3's: the rope of the sliding layers (the others take `rope`).
        pub local_rope: Option<RopeParameters>,
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
            config::layers("num_hidden_layers", self.num_hidden_layers)?;
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
            if let Some(layers) = &self.features.sliding_layers {
                if layers.len() != self.num_hidden_layers {
                    return Err(Invalid::Value(format!(
                        "`layer_types` has {} entries for {} layers",
                        layers.len(),
                        self.num_hidden_layers
                    )));
                }
            }
            for (name, cap) in [
                ("attn_logit_softcapping", self.features.attn_logit_softcapping),
                ("final_logit_softcapping", self.features.final_logit_softcapping),
                ("query_pre_attn_scalar", self.features.query_pre_attn_scalar),
            ] {
                if let Some(value) = cap.filter(|v| !(v.is_finite() && *v > 0.0)) {
                    return Err(Invalid::Value(format!("`{name}` is {value}; it must be positive")));
                }
            }
            // Builds the inverse frequencies once, on the CPU, to report a bad rope type here.
            let dim = self.rope.rotary_dim(self.head_dim);
            let _ = self.rope.inv_freq(dim, Device::Cpu)?;
            self.rope.longrope(dim, self.max_position_embeddings, Device::Cpu)?;
            if let Some(local) = &self.features.local_rope {
                let _ = local.inv_freq(local.rotary_dim(self.head_dim), Device::Cpu)?;
            }
            Ok(())
        }

        /// Whether layer `i` attends within the sliding window.
        pub fn is_sliding(&self, i: usize) -> bool {
            self.sliding_window.is_some()
                && self
                    .features
                    .sliding_layers
                    .as_ref()
                    .is_none_or(|layers| layers.get(i).copied().unwrap_or(false))
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
    /// What loading noticed ([`TextModel::notes`]).
    #[hook(skip)]
    notes: Vec<String>,
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
            notes: Vec::new(),
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
        let mut spec = config.spec();
        let mut notes = Vec::new();
        // A config that ties the head to the embeddings over weights that store a head of its
        // own: the stored head wins, as transformers 5 decides (and warns).
        if spec.tie_word_embeddings && checkpoint.differ("lm_head.weight", "embed_tokens.weight", "model.") {
            spec.tie_word_embeddings = false;
            notes.push(format!(
                "`{}` says `tie_word_embeddings: true`, but the weights store an `lm_head.weight` that differs from the embeddings; the stored head is used, as transformers uses it (set `tie_word_embeddings` to false to silence this)",
                file.path.display()
            ));
        }
        check_sizes(&checkpoint, &spec)?;
        let mut model = Self::build(config.clone(), &spec, device, kind, Init::Placeholder, head)?;
        // A checkpoint of the base model alone (`AutoModel.save_pretrained`) lacks the `model.`.
        checkpoint.load_into(&mut model.vs, "model.")?;
        model.notes = notes;
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
        let m = self.model.module();
        // A row's `longrope` factors are chosen once, by its prompt's length at the prefill, and
        // kept while it generates, so that its cached keys and new queries rotate alike.
        let long_rows = m
            .longrope
            .as_ref()
            .map(|rope| cache.rows_state(|| rope.long_rows(&valid.ne(0).sum_dim_intlist(1, false, Kind::Int64))));
        if let (Some(rope), Some(long_rows)) = (&m.longrope, &long_rows) {
            check_longrope_step(rope, long_rows, &positions, &valid)?;
        }
        let global = m.rotation_at(&positions, long_rows.as_ref(), kind);
        let local = m.local_inv_freq.as_ref().map(|inv| Rotation::at(inv, &positions, kind));
        let (full, sliding) = cache.step_masks(&positions, &valid, m.sliding_window, m.any_sliding(), kind)?;
        let context = Context {
            global: (&global, &full),
            local: (local.as_ref().unwrap_or(&global), sliding.as_ref().unwrap_or(&full)),
        };
        let hidden = self
            .model
            .call_with(&ids, |m, ids| m.run(ids, &context, Some(cache.slots(m.layers.len()))));
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
            self.config.spec().features.final_logit_softcapping,
        ))
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    /// `model.embed_tokens`, `model.layers.0`, ..., `model.layers.{N-1}`.
    fn residual_layers(&self) -> Vec<String> {
        residual_stream("model.embed_tokens", "model.layers", self.model.module().layers.len())
    }
}

/// The sizes that decide the allocation, against the weights before anything is allocated: the
/// embedding table, the number of blocks, the first block's attention and MLP.
fn check_sizes(checkpoint: &Checkpoint, spec: &DecoderSpec) -> Result<()> {
    let (h, d, p) = (spec.hidden_size, spec.head_dim, "model.");
    checkpoint.expect_shape(
        "embed_tokens.weight",
        p,
        &[spec.vocab_size, h],
        "`vocab_size` and `hidden_size`",
    )?;
    checkpoint.expect_blocks("layers", p, spec.num_hidden_layers, "`num_hidden_layers`")?;
    if spec.num_hidden_layers == 0 {
        return Ok(());
    }
    let heads = "`num_attention_heads` and `head_dim`";
    checkpoint.expect_shape("layers.0.self_attn.o_proj.weight", p, &[h, spec.heads * d], heads)?;
    let inner = "`intermediate_size`";
    if spec.features.fused {
        let qkv = [(spec.heads + 2 * spec.kv_heads) * d, h];
        checkpoint.expect_shape("layers.0.self_attn.qkv_proj.weight", p, &qkv, "`num_key_value_heads`")?;
        checkpoint.expect_shape(
            "layers.0.mlp.gate_up_proj.weight",
            p,
            &[2 * spec.intermediate_size, h],
            inner,
        )
    } else {
        let kv = [spec.kv_heads * d, h];
        checkpoint.expect_shape("layers.0.self_attn.k_proj.weight", p, &kv, "`num_key_value_heads`")?;
        checkpoint.expect_shape("layers.0.mlp.down_proj.weight", p, &[h, spec.intermediate_size], inner)
    }
}

/// A cached step must not take a row that rotates with the short `longrope` factors past
/// `original_max_position_embeddings`: its cached keys would need the long ones.
fn check_longrope_step(rope: &LongRope, long_rows: &Tensor, positions: &Tensor, valid: &Tensor) -> Result<()> {
    let limit = rope.original_max_position_embeddings;
    let short = long_rows.logical_not().unsqueeze(1);
    let past = positions.ge(limit).logical_and(&valid.ne(0)).logical_and(&short);
    if past.any().int64_value(&[]) == 0 {
        return Ok(());
    }
    Err(crate::error::ModelError::InvalidInput {
        reason: format!(
            "a sequence grows past `original_max_position_embeddings` ({limit} tokens) while decoding, but its prompt (of at most {limit} tokens) chose the short `longrope` factors and hooks does not recompute the cache with the long ones as transformers does; lower --max-new-tokens so that no prompt grows past {limit} tokens, or give prompts longer than {limit} tokens"
        ),
    })
}

/// The rotations and masks of one forward: the full-attention layers' and the sliding
/// layers' (the same, where a model has one kind).
struct Context<'a> {
    global: (&'a Rotation, &'a attention::Mask),
    local: (&'a Rotation, &'a attention::Mask),
}

/// `model`: embeddings, decoder layers and the final norm (transformers'
/// [`LlamaModel`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py)
/// and its copies).
#[derive(Debug, Hookable)]
pub struct DecoderModel {
    /// `model.embed_tokens` (the Gemmas' output carries the `√hidden` scale, as transformers').
    pub embed_tokens: Hook<TokenEmbedding>,
    /// `model.layers.N`.
    pub layers: Vec<Hook<DecoderLayer>>,
    /// `model.norm`.
    pub norm: Hook<RmsNorm>,
    /// The rotary embedding's inverse frequencies, `[rotary_dim / 2]` f32 (`model.rotary_emb`,
    /// which has buffers and no parameters, so it is not a layer); `longrope`'s short ones.
    inv_freq: Tensor,
    /// Gemma 3's sliding layers' own frequencies.
    local_inv_freq: Option<Tensor>,
    /// Phi-3's `longrope`: both sets of frequencies, chosen per row.
    longrope: Option<LongRope>,
    sliding_window: Option<i64>,
}

impl DecoderModel {
    fn new(p: nn::Path<'_>, spec: &DecoderSpec, init: Init) -> Result<Self> {
        let invalid = |invalid: config::Invalid| invalid.into_error(None);
        let dim = spec.rope.rotary_dim(spec.head_dim);
        let inv_freq = spec.rope.inv_freq(dim, p.device()).map_err(invalid)?;
        let longrope = spec
            .rope
            .longrope(dim, spec.max_position_embeddings, p.device())
            .map_err(invalid)?;
        let local_inv_freq = match &spec.features.local_rope {
            Some(local) => Some(
                local
                    .inv_freq(local.rotary_dim(spec.head_dim), p.device())
                    .map_err(invalid)?,
            ),
            None => None,
        };
        let layers = (0..spec.num_hidden_layers)
            .map(|i| Hook::new(DecoderLayer::new(&p / "layers" / i, spec, init, spec.is_sliding(i))))
            .collect();
        let scale = (spec.norm == RmsStyle::Gemma).then(|| (spec.hidden_size as f64).sqrt());
        Ok(DecoderModel {
            embed_tokens: TokenEmbedding::new(&p / "embed_tokens", spec.vocab_size, spec.hidden_size, scale, init),
            layers,
            norm: RmsNorm::with_style(&p / "norm", spec.hidden_size, spec.rms_norm_eps, spec.norm),
            inv_freq,
            local_inv_freq,
            longrope,
            sliding_window: spec.sliding_window,
        })
    }

    /// Whether any layer attends within a sliding window.
    fn any_sliding(&self) -> bool {
        self.layers.iter().any(|layer| layer.module().sliding)
    }

    /// The full-attention layers' rotation at `positions` `[B, T]` (or `[1, T]`): with
    /// `longrope`, each row's factors as `long_rows` `[B]` says, and its attention factor.
    fn rotation_at(&self, positions: &Tensor, long_rows: Option<&Tensor>, kind: Kind) -> Rotation {
        match (&self.longrope, long_rows) {
            (Some(rope), Some(long_rows)) => {
                Rotation::scaled(&rope.per_row(long_rows), positions, rope.attention_factor, kind)
            }
            _ => Rotation::at(&self.inv_freq, positions, kind),
        }
    }

    fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor, kind: Kind) -> Tensor {
        let len = input_ids.size()[1];
        let global = match &self.longrope {
            // Each row by its own length: its real tokens.
            Some(rope) => {
                let lengths = attention_mask.ne(0).sum_dim_intlist(1, false, Kind::Int64);
                let positions = Tensor::arange(len, (Kind::Int64, input_ids.device())).unsqueeze(0);
                self.rotation_at(&positions, Some(&rope.long_rows(&lengths)), kind)
            }
            None => Rotation::new(&self.inv_freq, len, kind),
        };
        let local = self.local_inv_freq.as_ref().map(|inv| Rotation::new(inv, len, kind));
        let full = attention::causal_padding_mask(attention_mask, kind);
        let sliding = match self.sliding_window {
            Some(window) if self.any_sliding() => Some(attention::sliding_window_mask(attention_mask, kind, window)),
            _ => None,
        };
        let context = Context {
            global: (&global, &full),
            local: (local.as_ref().unwrap_or(&global), sliding.as_ref().unwrap_or(&full)),
        };
        self.run(input_ids, &context, None)
    }

    /// The layers over `input_ids`, each attention appending to its cache slot when given.
    fn run(&self, input_ids: &Tensor, context: &Context<'_>, slots: Option<&mut [KvSlot]>) -> Tensor {
        let mut hidden = self.embed_tokens.forward(input_ids);
        let mut slots = slots.map(|s| s.iter_mut());
        for layer in &self.layers {
            let slot = slots.as_mut().and_then(Iterator::next);
            let (rotation, mask) = if layer.module().sliding {
                context.local
            } else {
                context.global
            };
            hidden = layer.call_with(&hidden, |m, x| m.forward(x, rotation, mask, slot));
        }
        self.norm.forward(&hidden)
    }
}

/// `model.layers.N`: attention and MLP, each with a residual connection and norms where
/// [`NormPlacement`] says (transformers'
/// [`LlamaDecoderLayer`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py)
/// and its copies, `Gemma2DecoderLayer`, `Gemma3DecoderLayer`, `Olmo2DecoderLayer`).
#[derive(Debug, Hookable)]
pub struct DecoderLayer {
    /// `...self_attn`: its output is after `o_proj`, before any post norm and the residual.
    pub self_attn: Hook<DecoderAttention>,
    /// `...mlp`: its output is before any post norm and the residual.
    pub mlp: Hook<DecoderMlp>,
    /// `...input_layernorm`: before the attention (none in OLMo 2).
    pub input_layernorm: Option<Hook<RmsNorm>>,
    /// `...post_attention_layernorm`: before the MLP in Llama and its copies; on the attention's
    /// output in Gemma 2, Gemma 3 and OLMo 2 (TransformerLens' `hook_attn_out` there).
    pub post_attention_layernorm: Hook<RmsNorm>,
    /// `...pre_feedforward_layernorm` (Gemma 2, 3): before the MLP (TransformerLens' `ln2`).
    pub pre_feedforward_layernorm: Option<Hook<RmsNorm>>,
    /// `...post_feedforward_layernorm` (Gemma 2, 3, OLMo 2): on the MLP's output
    /// (TransformerLens' `hook_mlp_out` there).
    pub post_feedforward_layernorm: Option<Hook<RmsNorm>>,
    norms: NormPlacement,
    /// Whether the layer attends within the sliding window.
    sliding: bool,
}

impl DecoderLayer {
    fn new(p: nn::Path<'_>, spec: &DecoderSpec, init: Init, sliding: bool) -> Self {
        let (h, eps, style) = (spec.hidden_size, spec.rms_norm_eps, spec.norm);
        let norm = |name: &str| RmsNorm::with_style(&p / name, h, eps, style);
        let norms = spec.features.norms;
        DecoderLayer {
            self_attn: Hook::new(DecoderAttention::new(&p / "self_attn", spec, init)),
            mlp: Hook::new(DecoderMlp::new(&p / "mlp", spec, init)),
            input_layernorm: (norms != NormPlacement::Post).then(|| norm("input_layernorm")),
            post_attention_layernorm: norm("post_attention_layernorm"),
            pre_feedforward_layernorm: (norms == NormPlacement::Sandwich).then(|| norm("pre_feedforward_layernorm")),
            post_feedforward_layernorm: (norms != NormPlacement::Pre).then(|| norm("post_feedforward_layernorm")),
            norms,
            sliding,
        }
    }

    fn forward(
        &self,
        hidden: &Tensor,
        rotation: &Rotation,
        mask: &attention::Mask,
        slot: Option<&mut KvSlot>,
    ) -> Tensor {
        let through = |norm: &Option<Hook<RmsNorm>>, x: Tensor| match norm {
            Some(norm) => norm.forward(&x),
            None => x,
        };
        let attend = |x: &Tensor| self.self_attn.call_with(x, |m, x| m.forward(x, rotation, mask, slot));
        match self.norms {
            NormPlacement::Pre => {
                let normed = through(&self.input_layernorm, hidden.shallow_clone());
                let hidden = hidden + attend(&normed);
                let normed = self.post_attention_layernorm.forward(&hidden);
                &hidden + self.mlp.call_with(&normed, |m, x| m.forward(x))
            }
            NormPlacement::Sandwich | NormPlacement::Post => {
                let normed = through(&self.input_layernorm, hidden.shallow_clone());
                let hidden = hidden + self.post_attention_layernorm.forward(&attend(&normed));
                let normed = through(&self.pre_feedforward_layernorm, hidden.shallow_clone());
                let out = self.mlp.call_with(&normed, |m, x| m.forward(x));
                &hidden + through(&self.post_feedforward_layernorm, out)
            }
        }
    }
}

/// `model.layers.N.self_attn`: grouped-query attention with rotary embeddings on queries and
/// keys (transformers' [`LlamaAttention`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py)
/// and its copies, with their default `sdpa` attention; Gemma 2's soft-capped attention computed
/// as its `eager_attention_forward`, since the fused kernel has no soft-cap).
#[derive(Debug, Hookable)]
pub struct DecoderAttention {
    /// `...q_proj`: `[B, T, heads × head_dim]` (none in Phi-3).
    pub q_proj: Option<Hook<nn::Linear>>,
    /// `...k_proj`: `[B, T, kv_heads × head_dim]` (none in Phi-3).
    pub k_proj: Option<Hook<nn::Linear>>,
    /// `...v_proj`: `[B, T, kv_heads × head_dim]` (none in Phi-3).
    pub v_proj: Option<Hook<nn::Linear>>,
    /// `...o_proj`: its input holds the heads' outputs side by side.
    pub o_proj: Hook<nn::Linear>,
    /// `...qkv_proj` (Phi-3): queries, keys and values side by side,
    /// `[B, T, (heads + 2 × kv_heads) × head_dim]`.
    pub qkv_proj: Option<Hook<nn::Linear>>,
    /// `...q_norm` (Qwen3, Gemma 3, OLMo 2): the queries normalised, per head (Qwen3, Gemma 3:
    /// `[B, T, heads, head_dim]`; transformers' Gemma 3 module outputs them transposed,
    /// `[B, heads, T, head_dim]`, and its capture here keeps the token axis at dim 1 instead, as
    /// every output the engine pools and pads has it) or over the full projection (OLMo 2,
    /// `[B, T, heads × head_dim]`).
    pub q_norm: Option<Hook<RmsNorm>>,
    /// `...k_norm`: the keys, as `q_norm`.
    pub k_norm: Option<Hook<RmsNorm>>,
    /// `...self_attn.attn_weights`: the attention probabilities `[B, heads, T, T]`, as
    /// `output_attentions=True` gives them (0 on future and padding keys, and outside a sliding
    /// window). Computed, unfused, only when captured; the output comes from the fused kernel,
    /// except under a soft-cap, where both come from one eager computation.
    pub attn_weights: HookPoint,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
    scaling: f64,
    qk_norm: QkNorm,
    softcap: Option<f64>,
}

impl DecoderAttention {
    fn new(p: nn::Path<'_>, spec: &DecoderSpec, init: Init) -> Self {
        let (h, heads, kv_heads, d) = (spec.hidden_size, spec.heads, spec.kv_heads, spec.head_dim);
        let features = &spec.features;
        let norm = |name: &str, width: i64| {
            spec.qk_norm
                .then(|| RmsNorm::with_style(&p / name, width, spec.rms_norm_eps, spec.norm))
        };
        let (q_width, k_width) = match features.qk_norm {
            QkNorm::FullWidth => (heads * d, kv_heads * d),
            QkNorm::PerHead => (d, d),
        };
        let separate =
            |name: &str, width: i64| (!features.fused).then(|| linear(&p / name, h, width, spec.qkv_bias, init));
        DecoderAttention {
            q_proj: separate("q_proj", heads * d),
            k_proj: separate("k_proj", kv_heads * d),
            v_proj: separate("v_proj", kv_heads * d),
            o_proj: linear(&p / "o_proj", heads * d, h, spec.o_bias, init),
            qkv_proj: features
                .fused
                .then(|| linear(&p / "qkv_proj", h, (heads + 2 * kv_heads) * d, spec.qkv_bias, init)),
            q_norm: norm("q_norm", q_width),
            k_norm: norm("k_norm", k_width),
            attn_weights: HookPoint::observer(),
            heads,
            kv_heads,
            head_dim: d,
            // transformers' `head_dim**-0.5` (Gemma 2's and 3's `query_pre_attn_scalar**-0.5`),
            // in double precision too: the same bits.
            scaling: features.query_pre_attn_scalar.unwrap_or(d as f64).powf(-0.5),
            qk_norm: features.qk_norm,
            softcap: features.attn_logit_softcapping,
        }
    }

    /// `[B, T, heads × d]` → `[B, heads, T, d]`, through `norm` as [`QkNorm`] says.
    fn heads_of(&self, x: &Tensor, heads: i64, norm: Option<&Hook<RmsNorm>>) -> Tensor {
        let size = x.size();
        let split = |x: &Tensor| x.view([size[0], size[1], heads, self.head_dim]);
        let Some(norm) = norm else {
            return split(x).transpose(1, 2);
        };
        match self.qk_norm {
            QkNorm::PerHead => norm.forward(&split(x)).transpose(1, 2),
            QkNorm::FullWidth => split(&norm.forward(x)).transpose(1, 2),
        }
    }

    /// The queries, keys and values `[B, T, width]`, from the separate projections or Phi-3's
    /// fused one.
    fn project(&self, hidden: &Tensor) -> (Tensor, Tensor, Tensor) {
        let (q, kv) = (self.heads * self.head_dim, self.kv_heads * self.head_dim);
        match (&self.qkv_proj, &self.q_proj, &self.k_proj, &self.v_proj) {
            (Some(qkv), ..) => {
                let qkv = qkv.forward(hidden);
                (qkv.narrow(-1, 0, q), qkv.narrow(-1, q, kv), qkv.narrow(-1, q + kv, kv))
            }
            (None, Some(q), Some(k), Some(v)) => (q.forward(hidden), k.forward(hidden), v.forward(hidden)),
            _ => unreachable!("built with either the fused or the separate projections"),
        }
    }

    fn forward(
        &self,
        hidden: &Tensor,
        rotation: &Rotation,
        mask: &attention::Mask,
        slot: Option<&mut KvSlot>,
    ) -> Tensor {
        let (query, key, value) = self.project(hidden);
        let query = self.heads_of(&query, self.heads, self.q_norm.as_ref());
        let key = self.heads_of(&key, self.kv_heads, self.k_norm.as_ref());
        let value = self.heads_of(&value, self.kv_heads, None);
        let (query, key) = (rotation.apply(&query), rotation.apply(&key));
        let (key, value) = attention::with_cache(slot, key, value);
        let groups = self.heads / self.kv_heads;
        let (key, value) = (repeat_kv(&key, groups), repeat_kv(&value, groups));
        let context = if self.softcap.is_some() {
            let probabilities = attention::capped_probabilities(&query, &key, mask, self.scaling, self.softcap, true);
            if self.attn_weights.is_capturing() {
                self.attn_weights.observe(&probabilities);
            }
            attention::attend_eager(&probabilities, &value)
        } else {
            if self.attn_weights.is_capturing() {
                self.attn_weights
                    .observe(&attention::probabilities(&query, &key, mask, self.scaling, true));
            }
            attention::attend(&query, &key, &value, mask, self.scaling)
        };
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

/// `model.layers.N.mlp`: `down_proj(act(gate) * up)` (transformers'
/// [`LlamaMLP`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py)
/// and its copies; Phi-3's `Phi3MLP`, whose `gate_up_proj` holds the gate's and the up
/// projection's outputs side by side).
#[derive(Debug, Hookable)]
pub struct DecoderMlp {
    /// `...mlp.gate_proj` (none in Phi-3).
    pub gate_proj: Option<Hook<nn::Linear>>,
    /// `...mlp.up_proj` (none in Phi-3).
    pub up_proj: Option<Hook<nn::Linear>>,
    /// `...mlp.gate_up_proj` (Phi-3): `[B, T, 2 × intermediate]`, the gate's half first.
    pub gate_up_proj: Option<Hook<nn::Linear>>,
    /// `...mlp.down_proj`.
    pub down_proj: Hook<nn::Linear>,
    act: Activation,
}

impl DecoderMlp {
    fn new(p: nn::Path<'_>, spec: &DecoderSpec, init: Init) -> Self {
        let (h, inner, bias, fused) = (
            spec.hidden_size,
            spec.intermediate_size,
            spec.mlp_bias,
            spec.features.fused,
        );
        let separate = |name: &str| (!fused).then(|| linear(&p / name, h, inner, bias, init));
        DecoderMlp {
            gate_proj: separate("gate_proj"),
            up_proj: separate("up_proj"),
            gate_up_proj: fused.then(|| linear(&p / "gate_up_proj", h, 2 * inner, bias, init)),
            down_proj: linear(&p / "down_proj", inner, h, bias, init),
            act: spec.act,
        }
    }

    fn forward(&self, hidden: &Tensor) -> Tensor {
        let (gate, up) = match (&self.gate_up_proj, &self.gate_proj, &self.up_proj) {
            (Some(gate_up), ..) => {
                let both = gate_up.forward(hidden);
                let inner = both.size()[2] / 2;
                (both.narrow(-1, 0, inner), both.narrow(-1, inner, inner))
            }
            (None, Some(gate), Some(up)) => (gate.forward(hidden), up.forward(hidden)),
            _ => unreachable!("built with either the fused or the separate projections"),
        };
        self.down_proj.forward(&(self.act.apply(&gate) * up))
    }
}
