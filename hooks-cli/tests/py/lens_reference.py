"""The transformers side of the `hooks lens` tests: the logit lens computed independently, each
sample alone, and compared with the `.npz` that `hooks lens` wrote. Steps run in order, separated
by `+`:

    compare MODEL_DIR INPUT.jsonl OURS.npz K LAYERS [TARGETS]
                             prints one JSON line (below); LAYERS `-` reads the layers OURS
                             names
    wide-vocab DIR           saves a random Llama with a 50,000-token vocabulary and 12 layers
    base-model SRC DIR       copies the causal-LM folder SRC as `LlamaModel.save_pretrained`
                             writes a base model: no `lm_head.weight`, no `model.` prefix,
                             `architectures: ["LlamaModel"]`

`compare`:

MODEL_DIR is loaded with AutoModelForCausalLM in float32. INPUT.jsonl holds `{"input_ids": [...]}`
lines. LAYERS is a comma-separated list of module names whose output is read (or `NAME:input`
for a module's first input, through a forward pre-hook). For each sample alone, a forward hook on
each of those modules keeps its output; each is read through the model's own final norm module
and `lm_head` (`get_output_embeddings()`) and, where the config has one, the soft-cap
`final_logit_softcapping` the model's forward applies, in torch, then in float64: `log_softmax`, top-k,
entropy, KL(p_final || p_layer) with p_final the softmax of the logits the model itself returns,
and, with TARGETS (one id or JSON list per line), the target's probability and rank (how many
tokens are strictly more probable).

Prints one JSON object with the largest differences found and the counts of mismatches; the Rust
test asserts on them.
"""

import json
import os
import shutil
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

# The final norm module of each architecture, as transformers names it.
FINAL_NORM = {
    "gpt2": "transformer.ln_f",
    "gpt_neox": "gpt_neox.final_layer_norm",
}


def final_norm(model):
    name = FINAL_NORM.get(model.config.model_type, "model.norm")
    return model.get_submodule(name)


def read_targets(path, lengths):
    targets = []
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    for line, n in zip(lines, lengths):
        value = json.loads(line)
        targets.append(np.full(n, value) if isinstance(value, int) else np.array(value))
    return targets


def compare(model_dir, inputs, ours_path, k, layers, targets_path=None):
    k = int(k)
    ours = np.load(ours_path)
    # `-`: the layers the file says it read (their values are still computed here).
    layers = [str(x) for x in ours["layers"]] if layers == "-" else layers.split(",")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    with open(inputs) as f:
        samples = [json.loads(line)["input_ids"] for line in f if line.strip()]
    lengths = [len(s) for s in samples]
    targets = read_targets(targets_path, lengths) if targets_path else None
    norm, head = final_norm(model), model.get_output_embeddings()

    report = {
        "layers": [str(x) for x in ours["layers"]],
        "layers_dtype": ours["layers"].dtype.str,
        "shapes": {name: list(ours[name].shape) for name in ours.files},
        "dtypes": {name: ours[name].dtype.str for name in ours.files},
        "top_ids_checked": 0,
        "top_ids_tied_skipped": 0,
        "top_ids_mismatch": 0,
        "max_top_probs_diff": 0.0,
        "max_entropy_diff": 0.0,
        "max_kl_diff": 0.0,
        "max_target_prob_diff": 0.0,
        "target_rank_mismatch": 0,
        "nonzero_past_length": 0,
        "max_last_layer_vs_model": 0.0,
        "max_last_layer_kl": 0.0,
        "input_ids_equal": True,
        "min_kl_first_layer": float("inf"),
        "max_kl_final_norm": 0.0,
    }
    for i, ids in enumerate(samples):
        n = len(ids)
        captured = {}
        handles = []
        for name in layers:
            if name.endswith(":input"):
                module = model.get_submodule(name[: -len(":input")])

                def pre(_m, args, name=name):
                    captured[name] = args[0]

                handles.append(module.register_forward_pre_hook(pre))
            else:
                module = model.get_submodule(name)

                def hook(_m, _args, output, name=name):
                    captured[name] = output[0] if isinstance(output, tuple) else output

                handles.append(module.register_forward_hook(hook))
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0].double()
            final_logp = torch.log_softmax(logits, -1)
            final_p = final_logp.exp()
            for l, name in enumerate(layers):
                # The final norm's own output is normalised already: the head alone reads it.
                is_norm = ":" not in name and model.get_submodule(name) is norm
                read = head(captured[name]) if is_norm else head(norm(captured[name]))
                # The model's own soft-cap on the logits it returns (Gemma 2), as its forward applies it.
                cap = getattr(model.config, "final_logit_softcapping", None)
                if cap is not None:
                    read = torch.tanh(read / cap) * cap
                layer_logits = read[0].double()
                if is_norm:
                    report["max_kl_final_norm"] = max(
                        report["max_kl_final_norm"], float(np.abs(ours["kl_to_final"][i, l, :n]).max())
                    )
                logp = torch.log_softmax(layer_logits, -1)
                p = logp.exp()
                top_logp, top_ids = torch.topk(logp, k + 1 if k < logp.shape[-1] else k, -1)
                probs = top_logp.exp().numpy()
                entropy = -(p * logp).sum(-1).numpy()
                kl = (final_p * (final_logp - logp)).sum(-1).numpy()
                got_ids = ours["top_ids"][i, l, :n]
                got_probs = ours["top_probs"][i, l, :n].astype(np.float64)
                report["max_top_probs_diff"] = max(
                    report["max_top_probs_diff"], float(np.abs(got_probs - probs[:, :k]).max())
                )
                for t in range(n):
                    # The order is defined only where neighbouring probabilities differ.
                    gaps = np.diff(-probs[t])
                    if (gaps > 1e-6).all():
                        report["top_ids_checked"] += 1
                        if not (got_ids[t] == top_ids[t, :k].numpy()).all():
                            report["top_ids_mismatch"] += 1
                    else:
                        report["top_ids_tied_skipped"] += 1
                report["max_entropy_diff"] = max(
                    report["max_entropy_diff"], float(np.abs(ours["entropy"][i, l, :n] - entropy).max())
                )
                report["max_kl_diff"] = max(
                    report["max_kl_diff"], float(np.abs(ours["kl_to_final"][i, l, :n] - kl).max())
                )
                if l == 0:
                    report["min_kl_first_layer"] = min(report["min_kl_first_layer"], float(kl.min()))
                if l == len(layers) - 1:
                    model_top = torch.topk(final_logp, k, -1).values.exp().numpy()
                    report["max_last_layer_vs_model"] = max(
                        report["max_last_layer_vs_model"], float(np.abs(got_probs - model_top).max())
                    )
                    report["max_last_layer_kl"] = max(
                        report["max_last_layer_kl"], float(np.abs(ours["kl_to_final"][i, l, :n]).max())
                    )
                if targets is not None:
                    target = torch.tensor(targets[i]).unsqueeze(-1)
                    target_logp = logp.gather(-1, target)
                    rank = (logp > target_logp).sum(-1).numpy()
                    report["max_target_prob_diff"] = max(
                        report["max_target_prob_diff"],
                        float(np.abs(ours["target_prob"][i, l, :n] - target_logp.exp()[:, 0].numpy()).max()),
                    )
                    report["target_rank_mismatch"] += int((ours["target_rank"][i, l, :n] != rank).sum())
        for handle in handles:
            handle.remove()
        if not (ours["input_ids"][i, :n] == np.array(ids)).all() or not (ours["attention_mask"][i, :n] == 1).all():
            report["input_ids_equal"] = False
        if (ours["attention_mask"][i, n:] != 0).any():
            report["input_ids_equal"] = False
        for name in ("top_ids", "top_probs", "entropy", "kl_to_final", "target_prob", "target_rank"):
            if name in ours.files:
                report["nonzero_past_length"] += int(np.count_nonzero(ours[name][i, :, n:]))
    print(json.dumps(report))


def wide_vocab(out_dir):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=50_000,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=12,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=128,
    )
    LlamaForCausalLM(config).save_pretrained(out_dir, safe_serialization=True)


def base_model(src, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    weights = load_file(os.path.join(src, "model.safetensors"))
    kept = {k.removeprefix("model."): v for k, v in weights.items() if k != "lm_head.weight"}
    save_file(kept, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(src, "config.json")) as f:
        config = json.load(f)
    config["architectures"] = ["LlamaModel"]
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f)


STEPS = {"compare": compare, "wide-vocab": wide_vocab, "base-model": base_model}


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
