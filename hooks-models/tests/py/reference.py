"""The transformers side of hooks-models' parity tests.

Run by the Rust tests with the interpreter in `HOOKS_PYTHON`. Steps run in order, separated by `+`:

    build ARCH DIR                   save a small random-initialised model of ARCH (a key of
                                     CONFIGS, then optionally `-oldconfig`, then `-bf16`) to DIR
                                     (safetensors)
    tokenize DIR MAX_LEN OUT TEXT..  AutoTokenizer(texts, padding=True, truncation=True, max_length)
                                     -> OUT (.npz with `input_ids`, `attention_mask`, int64)
    capture DIR INPUTS OUT           AutoModel (AutoModelForCausalLM for the decoder LLMs and a
                                     GPT-2 saved as GPT2LMHeadModel) from DIR,
                                     a forward hook on every named module, run on
                                     INPUTS (.npz with `input_ids`, `attention_mask`) -> OUT (.npz,
                                     one array per module that produced a tensor, keyed by its
                                     dotted name) and OUT.modules.json (every `named_modules()`
                                     entry with its class, direct parameter count, child count;
                                     and the same of `base_model`, for a model with a head)

    attentions DIR INPUTS OUT        the same model with `attn_implementation="eager"`, run with
                                     `output_attentions=True` -> OUT (.npz, `attentions.N` for
                                     attention layer N, `[batch, heads, query, key]`)

    intervene DIR INPUTS SPEC OUT    for each case of SPEC (.json, a list), one forward of the model
                                     with that case's interventions as forward hooks that return the
                                     changed output (or forward pre-hooks that return the changed
                                     input), registered before a capture hook on every module (and a
                                     capture pre-hook on each intervened input) -> OUT.N.npz for
                                     case N, keyed as `capture` keys them (`NAME:input` for inputs)

A hook keeps the module's output, or the first element of a tuple or ModelOutput, as PyTorch
forward hooks in reference tools do.
"""

import json
import os
import sys

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    BertConfig,
    BertModel,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GemmaConfig,
    GemmaForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Model,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

SEED = 0


def gpt2_config(**overrides):
    """The small GPT-2 every `gpt2` case builds, with `overrides`."""
    return GPT2Config(
        vocab_size=100,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=64,
        activation_function="gelu_new",
        bos_token_id=0,
        eos_token_id=0,
        **overrides,
    )


def phi3_config(**overrides):
    """The small Phi-3 with longrope every `phi3` case builds, with `overrides`."""
    return Phi3Config(
        vocab_size=100,
        hidden_size=64,
        intermediate_size=80,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        rope_parameters={
            "rope_type": "longrope",
            "rope_theta": 10000.0,
            "partial_rotary_factor": 0.75,
            "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5],
            "long_factor": [1.0, 2.0, 4.0, 8.0, 16.0, 32.0],
        },
        **overrides,
    )


# Small enough to build and run in a second, big enough to exercise every code path: several
# heads, more than one layer, an intermediate size that is not 4 × hidden for BERT. The decoders
# take odd shapes on purpose: grouped-query attention with 3 query heads per key head, a head_dim
# that is not hidden / heads, a non-default rope_theta, and each rope type (llama3's three
# frequency bands all occur with head_dim 12 and original_max_position_embeddings 16).
CONFIGS = {
    "bert": lambda: BertModel(
        BertConfig(
            vocab_size=100,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=48,
            max_position_embeddings=64,
            type_vocab_size=2,
            hidden_act="gelu",
        )
    ),
    "gpt2": lambda: GPT2Model(gpt2_config()),
    # GPT-2 with its head, as the Hub's checkpoints are saved (`architectures: ["GPT2LMHeadModel"]`):
    # tied to `wte`, and untied with its own `lm_head.weight`.
    "gpt2-lmhead": lambda: GPT2LMHeadModel(gpt2_config()),
    "gpt2-lmhead-untied": lambda: GPT2LMHeadModel(gpt2_config(tie_word_embeddings=False)),
    "llama": lambda: LlamaForCausalLM(
        LlamaConfig(
            vocab_size=100,
            hidden_size=48,
            intermediate_size=80,
            num_hidden_layers=2,
            num_attention_heads=6,
            num_key_value_heads=2,
            head_dim=12,
            max_position_embeddings=64,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 50000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        )
    ),
    "llama-tied": lambda: LlamaForCausalLM(
        LlamaConfig(
            vocab_size=100,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
            tie_word_embeddings=True,
            attention_bias=True,
            mlp_bias=True,
            rope_parameters={"rope_type": "linear", "rope_theta": 1000.0, "factor": 2.0},
        )
    ),
    # A window of 3 keys binds within the test's 5 tokens.
    "mistral": lambda: MistralForCausalLM(
        MistralConfig(
            vocab_size=100,
            hidden_size=48,
            intermediate_size=80,
            num_hidden_layers=2,
            num_attention_heads=6,
            num_key_value_heads=3,
            head_dim=10,
            max_position_embeddings=64,
            sliding_window=3,
            rope_parameters={"rope_type": "default", "rope_theta": 20000.0},
        )
    ),
    "qwen2": lambda: Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=100,
            hidden_size=48,
            intermediate_size=80,
            num_hidden_layers=2,
            num_attention_heads=6,
            num_key_value_heads=2,
            max_position_embeddings=64,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        )
    ),
    "qwen3": lambda: Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=100,
            hidden_size=40,
            intermediate_size=72,
            num_hidden_layers=2,
            num_attention_heads=6,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=64,
            tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        )
    ),
    # head_dim 16 with hidden 40 and 4 heads; embeddings scaled by sqrt(40); tied head.
    "gemma": lambda: GemmaForCausalLM(
        GemmaConfig(
            vocab_size=100,
            hidden_size=40,
            intermediate_size=72,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=64,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        )
    ),
    # Three layers: sliding, full, sliding (the default alternation), a window of 3 keys within the
    # test's 5 tokens; head_dim 16 with hidden 48 and 4 heads, query_pre_attn_scalar 20 (not
    # head_dim); both soft-caps small enough to bind on these scores and logits; a tied head.
    "gemma2": lambda: Gemma2ForCausalLM(
        Gemma2Config(
            vocab_size=100,
            hidden_size=48,
            intermediate_size=72,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=64,
            query_pre_attn_scalar=20,
            sliding_window=3,
            attn_logit_softcapping=1.0,
            final_logit_softcapping=2.0,
            rope_parameters={"rope_type": "default", "rope_theta": 5000.0},
        )
    ),
    # Gemma 3's text decoder: layers sliding, full, sliding, with a rope each (the global one
    # scaled), per-head query and key norms, an untied head and a final soft-cap.
    "gemma3_text": lambda: Gemma3ForCausalLM(
        Gemma3TextConfig(
            vocab_size=100,
            hidden_size=48,
            intermediate_size=72,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=64,
            query_pre_attn_scalar=24,
            sliding_window=3,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            final_logit_softcapping=2.0,
            tie_word_embeddings=False,
            rope_parameters={
                "full_attention": {"rope_type": "linear", "rope_theta": 50000.0, "factor": 2.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 1000.0},
            },
        )
    ),
    # Norms after each sublayer only; the query and key norms over the full projections.
    "olmo2": lambda: Olmo2ForCausalLM(
        Olmo2Config(
            vocab_size=100,
            hidden_size=48,
            intermediate_size=80,
            num_hidden_layers=2,
            num_attention_heads=6,
            num_key_value_heads=2,
            max_position_embeddings=64,
            rope_parameters={"rope_type": "default", "rope_theta": 20000.0},
        )
    ),
    # Fused projections, three quarters of each 16-wide head rotating, a window of 3 keys on
    # every layer, and longrope: the tests' rows and generations stay within
    # original_max_position_embeddings (the short factors; `phi3-longrope` takes rows past it),
    # with the attention factor sqrt(1 + ln 2 / ln 32) on cos and sin.
    "phi3": lambda: Phi3ForCausalLM(phi3_config(sliding_window=3, original_max_position_embeddings=32)),
    # Without a window, pre-trained on 16 tokens: rows of up to 24 take the long factors, and the
    # attention factor is sqrt(1 + ln 4 / ln 16).
    "phi3-longrope": lambda: Phi3ForCausalLM(phi3_config(original_max_position_embeddings=16)),
    # Parallel residual, a quarter of each 16-wide head rotating.
    "gpt_neox": lambda: GPTNeoXForCausalLM(
        GPTNeoXConfig(
            vocab_size=100,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=96,
            max_position_embeddings=64,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
        )
    ),
    # Sequential residual, half of each head rotating, another base.
    "gpt_neox-sequential": lambda: GPTNeoXForCausalLM(
        GPTNeoXConfig(
            vocab_size=100,
            hidden_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=80,
            max_position_embeddings=64,
            use_parallel_residual=False,
            rope_parameters={"rope_type": "default", "rope_theta": 2000.0, "partial_rotary_factor": 0.5},
        )
    ),
}

# The `model_type`s whose names are `AutoModelForCausalLM`'s (`model.layers.0...`, `lm_head`).
CAUSAL_LM = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gpt_neox", "gemma2", "gemma3_text", "olmo2", "phi3"}


def build(arch, out_dir):
    torch.manual_seed(SEED)
    # `ARCH-bf16`: the model of ARCH, saved in bfloat16 as many Hub checkpoints are.
    # `ARCH-oldconfig`: its config.json rewritten in the form Hub checkpoints carry.
    # `ARCH-tiedconfig`: its config.json rewritten to say `tie_word_embeddings: true` over the
    # untied head its weights store (a config that contradicts its weights).
    base, bf16, old, tied_config = arch, False, False, False
    if base.endswith("-tiedconfig"):
        base, tied_config = base[: -len("-tiedconfig")], True
    if base.endswith("-bf16"):
        base, bf16 = base[: -len("-bf16")], True
    if base.endswith("-oldconfig"):
        base, old = base[: -len("-oldconfig")], True
    model = CONFIGS[base]()
    # Random init puts LayerNorm at weight 1, bias 0 and linear biases at 0; perturb every
    # parameter so that a swapped or skipped weight changes the outputs.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    if bf16:
        model = model.to(torch.bfloat16)
    model.save_pretrained(out_dir, safe_serialization=True)
    if old:
        to_old_config(os.path.join(out_dir, "config.json"))
    if tied_config:
        path = os.path.join(out_dir, "config.json")
        with open(path) as f:
            config = json.load(f)
        assert not config.get("tie_word_embeddings", True), "the model must store its own head"
        config["tie_word_embeddings"] = True
        with open(path, "w") as f:
            json.dump(config, f, indent=2)


def to_old_config(path):
    """Rewrites a transformers 5 `config.json` in the older form: `rope_theta` beside the config,
    `rope_scaling` (with `type`) only for a rope type other than `default`, `torch_dtype`, and
    GPT-NeoX's `rotary_pct` and `rotary_emb_base`. transformers reads both forms alike."""
    with open(path) as f:
        config = json.load(f)
    if "dtype" in config:
        config["torch_dtype"] = config.pop("dtype")
    if config["model_type"] == "gemma3_text":
        # The Hub's Gemma 3 form: the global rope's base and scaling at the top, the local base as
        # `rope_local_base_freq`, and `sliding_window_pattern` instead of `layer_types`.
        config.pop("_sliding_window_pattern", None)
        ropes = config.pop("rope_parameters")
        full, local = dict(ropes["full_attention"]), ropes["sliding_attention"]
        config["rope_theta"] = full.pop("rope_theta")
        config["rope_local_base_freq"] = local["rope_theta"]
        if full.pop("rope_type") != "default":
            config["rope_scaling"] = {"rope_type": "linear", **full}
        types = config.pop("layer_types")
        assert types == ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(len(types))]
        config["sliding_window_pattern"] = 2
        with open(path, "w") as f:
            json.dump(config, f, indent=2)
        return
    if config["model_type"] == "gemma2":
        # The Hub's Gemma 2 configs predate `layer_types` (the alternation is the default) and
        # carry `hidden_act` beside `hidden_activation`.
        types = config.pop("layer_types")
        assert types == ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(len(types))]
        config["hidden_act"] = config["hidden_activation"]
        config["cache_implementation"] = "hybrid"
    rope = dict(config.pop("rope_parameters"))
    theta = rope.pop("rope_theta")
    fraction = rope.pop("partial_rotary_factor", None)
    if config["model_type"] == "gpt_neox":
        config["rotary_emb_base"] = theta
        config["rotary_pct"] = fraction if fraction is not None else 1.0
    else:
        config["rope_theta"] = theta
        if fraction is not None and fraction != 1.0:
            config["partial_rotary_factor"] = fraction
    if config["model_type"] == "phi3":
        # Phi-3 keeps the pre-training length at the top level.
        rope.pop("original_max_position_embeddings", None)
    rope_type = rope.pop("rope_type")
    if rope_type != "default":
        config["rope_scaling"] = {"type": rope_type, **rope}
    with open(path, "w") as f:
        json.dump(config, f, indent=2)


def tokenize(model_dir, max_length, out, *texts):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=int(max_length), return_tensors="np")
    np.savez(
        out,
        input_ids=enc["input_ids"].astype(np.int64),
        attention_mask=enc["attention_mask"].astype(np.int64),
    )


def first_tensor(output):
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) or hasattr(output, "to_tuple"):
        return output[0] if len(output) else None
    return None


def token_major(model, name, tensor):
    """Gemma 3's `q_norm` and `k_norm` output `[batch, heads, tokens, head_dim]`; hooks keeps their
    token axis at dim 1, `[batch, tokens, heads, head_dim]` (the same values, transposed)."""
    if model.config.model_type == "gemma3_text" and name.endswith(("self_attn.q_norm", "self_attn.k_norm")):
        return tensor.transpose(1, 2)
    return tensor


def capture(model_dir, inputs, out):
    # In float32 whatever the checkpoint's dtype, as the Rust side loads it with Kind::Float.
    model = auto_class(model_dir).from_pretrained(model_dir, dtype=torch.float32).eval()
    captured = {}

    def hook_for(name):
        def hook(_module, _args, output):
            tensor = first_tensor(output)
            if tensor is not None:
                captured[name] = token_major(model, name, tensor).detach().cpu().numpy().copy()

        return hook

    def entry(name, module):
        return {
            "name": name,
            "class": type(module).__name__,
            "parameters": sum(1 for _ in module.parameters(recurse=False)),
            "children": sum(1 for _ in module.children()),
        }

    modules = []
    for name, module in model.named_modules():
        modules.append(entry(name, module))
        if name:
            module.register_forward_hook(hook_for(name))
    # The base model's own names (`AutoModel`'s: `layers.0.mlp`), where the model has a head.
    base = model.base_model
    base_modules = [entry(name, module) for name, module in base.named_modules()] if base is not model else None

    data = np.load(inputs)
    input_ids = torch.from_numpy(data["input_ids"]).long()
    attention_mask = torch.from_numpy(data["attention_mask"]).long()
    with torch.no_grad():
        output = model(input_ids=input_ids, attention_mask=attention_mask)
    # The logits the model returns (after any final soft-cap), beside the modules' outputs.
    if getattr(output, "logits", None) is not None:
        captured["__logits__"] = output.logits.detach().cpu().numpy().copy()

    np.savez(out, **captured)
    with open(out + ".modules.json", "w") as f:
        json.dump(
            {"attn_implementation": model.config._attn_implementation, "modules": modules, "base_modules": base_modules},
            f,
            indent=1,
        )


def auto_class(model_dir):
    """The class whose names the Rust side uses: `AutoModelForCausalLM`'s for the decoder LLMs and
    for a GPT-2 saved with its head, `AutoModel`'s (the base model's) otherwise."""
    config = AutoConfig.from_pretrained(model_dir)
    with_head = config.model_type in CAUSAL_LM or "GPT2LMHeadModel" in (config.architectures or [])
    return AutoModelForCausalLM if with_head else AutoModel


def attentions(model_dir, inputs, out):
    model = auto_class(model_dir).from_pretrained(model_dir, attn_implementation="eager").eval()
    data = np.load(inputs)
    input_ids = torch.from_numpy(data["input_ids"]).long()
    attention_mask = torch.from_numpy(data["attention_mask"]).long()
    with torch.no_grad():
        output = model(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True)
    np.savez(out, **{f"attentions.{i}": a.numpy() for i, a in enumerate(output.attentions)})


def edited(case, tensor):
    """What `case` makes of `tensor`, from its definition: the kind's result, kept only at the
    given positions (dim 1) and features (a slice of the last dim) when those are given."""
    kind = case["kind"]
    value = torch.from_numpy(np.load(case["value"])).to(tensor.dtype) if case.get("value") else None
    if kind == "zero":
        new = torch.zeros_like(tensor)
    elif kind in ("mean", "replace"):
        new = torch.broadcast_to(value, tensor.shape).clone()
    elif kind == "add":
        new = tensor + case["scale"] * value
    elif kind == "scale":
        new = tensor * case["scale"]
    elif kind == "tanh":
        new = torch.tanh(tensor)
    else:
        raise ValueError(kind)
    positions, features = case.get("positions"), case.get("features")
    if positions is None and features is None:
        return new
    out = tensor.clone()
    lo, hi = features if features is not None else (0, tensor.shape[-1])
    for p in positions if positions is not None else range(tensor.shape[1]):
        out[:, p, ..., lo:hi] = new[:, p, ..., lo:hi]
    return out


def first_input(args, kwargs):
    """The module's first input: its first positional argument, or `hidden_states` where the
    caller passes it by keyword (transformers' decoder layers call their attention so)."""
    return args[0] if args else kwargs["hidden_states"]


def with_first_input(args, kwargs, new):
    if args:
        return (new,) + tuple(args[1:]), kwargs
    return args, {**kwargs, "hidden_states": new}


def intervene(model_dir, inputs, spec, out):
    model = auto_class(model_dir).from_pretrained(model_dir, dtype=torch.float32).eval()
    modules = dict(model.named_modules())
    data = np.load(inputs)
    input_ids = torch.from_numpy(data["input_ids"]).long()
    attention_mask = torch.from_numpy(data["attention_mask"]).long()
    with open(spec) as f:
        cases = json.load(f)
    for n, case in enumerate(cases):
        captured, handles = {}, []
        layer = case["layer"]
        if layer.endswith(":input"):
            module = modules[layer[: -len(":input")]]

            def edit_input(_module, args, kwargs, case=case):
                return with_first_input(args, kwargs, edited(case, first_input(args, kwargs)))

            def keep_input(_module, args, kwargs, layer=layer):
                captured[layer] = first_input(args, kwargs).detach().numpy().copy()

            handles.append(module.register_forward_pre_hook(edit_input, with_kwargs=True))
            handles.append(module.register_forward_pre_hook(keep_input, with_kwargs=True))
        else:

            def edit_output(_module, _args, output, case=case):
                if isinstance(output, torch.Tensor):
                    return edited(case, output)
                return (edited(case, output[0]),) + tuple(output[1:])

            handles.append(modules[layer].register_forward_hook(edit_output))

        def keep(name):
            def hook(_module, _args, output):
                tensor = first_tensor(output)
                if tensor is not None:
                    captured[name] = token_major(model, name, tensor).detach().numpy().copy()

            return hook

        for name, module in modules.items():
            if name:
                handles.append(module.register_forward_hook(keep(name)))
        with torch.no_grad():
            model(input_ids=input_ids, attention_mask=attention_mask)
        for handle in handles:
            handle.remove()
        np.savez(f"{out}.{n}.npz", **captured)


STEPS = {
    "build": build,
    "tokenize": tokenize,
    "capture": capture,
    "attentions": attentions,
    "intervene": intervene,
}


def main(argv):
    step = []
    for arg in argv + ["+"]:
        if arg == "+":
            if step:
                STEPS[step[0]](*step[1:])
            step = []
        else:
            step.append(arg)


if __name__ == "__main__":
    main(sys.argv[1:])
