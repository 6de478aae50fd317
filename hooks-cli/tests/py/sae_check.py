"""SAELens' and transformers' side of the `--sae` tests. Steps, separated by `+`:

    build DIR PROMPTS        a random Llama over all-MiniLM-L6-v2's vocabulary in DIR/model, and
                             SAEs on `model.layers.0` (width 32, 64 features) in DIR/saes: each of
                             standard, jumprelu, topk and gated saved by SAELens with
                             apply_b_dec_to_input true (NAME) and false (NAME-nob),
                             `jumprelu-log` (the threshold stored as `log_threshold`), `flat` (the
                             standard one in SAELens' older flat config layout), `gemma-scope`
                             (a Gemma Scope params.npz, by hand) and `gemma-scope-2` (a Gemma Scope
                             2 folder, by hand). Biases and thresholds are set from the layer's
                             activations on PROMPTS so that about a fifth of the features fire.
    points DIR SAE PROMPTS OURS.npz
                             each prompt alone through transformers (a forward hook keeps
                             `model.layers.0`'s output) and the SAE: SAELens' own `SAE` with
                             `use_error_term` for SAELens folders, numpy from the formulas for the
                             Gemma Scope layouts; every point against OURS.npz
                             (`model.layers.0.sae.hook_sae_*`). Prints one JSON line: each point's
                             largest difference, and the share of features that fired
    edited DIR SAE PROMPTS OURS.npz MODE [FEATURE SCALE]
                             each prompt alone, `model.layers.0`'s output replaced (MODE `splice`:
                             by the SAE with the error term; `splice-no-error`: by the
                             reconstruction; `ablate`: with feature FEATURE of hook_sae_acts_post
                             zeroed, error term on; `steer`: SCALE added to it; `none`: nothing),
                             against OURS.npz's `model.layers.1` and `model.norm`. Prints the
                             largest differences, and how far the edit moved `model.norm`
    csr FOLDER DENSE.npz LAYER
                             the folder's LAYER.indptr/.indices/.data through
                             `scipy.sparse.csr_matrix` against DENSE.npz's LAYER: its real-token
                             rows (or, pooled, its rows); prints equal or not, dtypes, nnz
    features DIR SAE PROMPTS STATS.npz K
                             the SAE's hook_sae_acts_post over every real token of every prompt
                             (each alone), reduced in numpy: frequency, max, mean_when_active and
                             the top-K examples, against STATS.npz
"""

import json
import os
import shutil
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import generate_check  # noqa: E402
from sae_lens import SAE  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

LAYER = "model.layers.0"
D_SAE = 64


def prompts_of(path):
    return [line.rstrip("\n") for line in open(path, encoding="utf-8") if line.strip()]


def layer_inputs(model_dir, prompts, layer=LAYER):
    """The layer's output for each prompt alone, [T, d] float32 each."""
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    module = model.get_submodule(layer)
    kept = []
    handle = module.register_forward_hook(lambda _m, _a, out: kept.append((out[0] if isinstance(out, tuple) else out)[0].detach()))
    with torch.no_grad():
        for p in prompts:
            model(**tok(p, return_tensors="pt"))
    handle.remove()
    return kept


def build(out_dir, prompts_path):
    model_dir = os.path.join(out_dir, "model")
    generate_check.build_tokenized(model_dir)
    xs = torch.cat(layer_inputs(model_dir, prompts_of(prompts_path)))
    from sae_lens import (GatedSAE, GatedSAEConfig, JumpReLUSAE, JumpReLUSAEConfig, StandardSAE,
                          StandardSAEConfig, TopKSAE, TopKSAEConfig)

    saes = os.path.join(out_dir, "saes")
    os.makedirs(saes, exist_ok=True)
    torch.manual_seed(1)
    d_in = xs.shape[1]
    for arch, cls, cfg_cls, extra in [
        ("standard", StandardSAE, StandardSAEConfig, {}),
        ("jumprelu", JumpReLUSAE, JumpReLUSAEConfig, {}),
        ("topk", TopKSAE, TopKSAEConfig, {"k": 6}),
        ("gated", GatedSAE, GatedSAEConfig, {}),
    ]:
        for apply_b_dec in (True, False):
            cfg = cfg_cls(d_in=d_in, d_sae=D_SAE, apply_b_dec_to_input=apply_b_dec, **extra)
            cfg.metadata.hook_name = "blocks.0.hook_resid_post"
            sae = cls(cfg)
            with torch.no_grad():
                sae.b_dec.copy_(xs.mean(0) + 0.1 * torch.randn(d_in))
                sae_in = xs - sae.b_dec * apply_b_dec
                if arch == "gated":
                    sae.r_mag.copy_(0.2 * torch.randn(D_SAE))
                    gate = sae_in @ sae.W_enc
                    # Offsets keep every token clear of a boundary, where float rounding decides.
                    sae.b_gate.copy_(-torch.quantile(gate, 0.8, dim=0) - 1e-3)
                    mag = sae_in @ (sae.W_enc * sae.r_mag.exp())
                    sae.b_mag.copy_(-torch.quantile(mag, 0.3, dim=0))
                else:
                    raw = sae_in @ sae.W_enc
                    if arch == "jumprelu":
                        sae.b_enc.copy_(0.05 * torch.randn(D_SAE))
                        pre = raw + sae.b_enc
                        sae.threshold.copy_(torch.quantile(pre, 0.8, dim=0).clamp(min=0) + 1e-3)
                    else:
                        sae.b_enc.copy_(-torch.quantile(raw, 0.8, dim=0) - 1e-3)
            name = arch if apply_b_dec else f"{arch}-nob"
            sae.save_model(os.path.join(saes, name))
    # The older flat layout: the hook at the top, the activation by name.
    flat = os.path.join(saes, "flat")
    shutil.copytree(os.path.join(saes, "topk"), flat)
    cfg = json.load(open(os.path.join(flat, "cfg.json")))
    hook = cfg.pop("metadata")["hook_name"]
    k = cfg.pop("k")
    cfg.pop("rescale_acts_by_decoder_norm", None)
    cfg.update({"architecture": "standard", "hook_name": hook, "hook_layer": 0, "activation_fn_str": "topk",
                "activation_fn_kwargs": {"k": k}, "finetuning_scaling_factor": False})
    json.dump(cfg, open(os.path.join(flat, "cfg.json"), "w"))
    # An older JumpReLU checkpoint: the threshold's log.
    from safetensors.torch import load_file as load_weights
    old = os.path.join(saes, "jumprelu-log")
    shutil.copytree(os.path.join(saes, "jumprelu"), old)
    weights = load_weights(os.path.join(old, "sae_weights.safetensors"))
    weights["log_threshold"] = weights.pop("threshold").log()
    save_file(weights, os.path.join(old, "sae_weights.safetensors"))
    # Gemma Scope: the jumprelu weights without b_dec on the input, in params.npz.
    from safetensors.torch import load_file
    w = load_file(os.path.join(saes, "jumprelu-nob", "sae_weights.safetensors"))
    gs = os.path.join(saes, "gemma-scope")
    os.makedirs(gs, exist_ok=True)
    np.savez(os.path.join(gs, "params.npz"), **{k: v.numpy() for k, v in w.items()})
    gs2 = os.path.join(saes, "gemma-scope-2")
    os.makedirs(gs2, exist_ok=True)
    save_file({k.lower(): v.contiguous() for k, v in w.items()}, os.path.join(gs2, "params.safetensors"))
    json.dump({"architecture": "jump_relu", "model_name": "gemma-v3-270m-pt", "hf_hook_point_in": f"{LAYER}.output"},
              open(os.path.join(gs2, "config.json"), "w"))
    print(json.dumps({"built": True}))


def reference_sae(sae_dir):
    """SAELens' SAE for its own folders; the formulas in numpy for the Gemma Scope layouts."""
    if os.path.exists(os.path.join(sae_dir, "cfg.json")):
        from safetensors.torch import load_file as load_weights

        state = load_weights(os.path.join(sae_dir, "sae_weights.safetensors"))
        if "log_threshold" in state:
            # An older checkpoint, converted as SAELens' `JumpReLUTrainingSAE` converts it
            # (`threshold = exp(log_threshold)`; `load_from_disk` refuses it).
            from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

            cfg = json.load(open(os.path.join(sae_dir, "cfg.json")))
            sae = JumpReLUSAE(JumpReLUSAEConfig.from_dict(cfg))
            state["threshold"] = torch.exp(state.pop("log_threshold")).contiguous()
            sae.load_state_dict(state)
        else:
            sae = SAE.load_from_disk(sae_dir)
        sae.use_error_term = True
        return sae
    if os.path.exists(os.path.join(sae_dir, "params.npz")):
        p = dict(np.load(os.path.join(sae_dir, "params.npz")))
    else:
        from safetensors.numpy import load_file
        p = {{"w_enc": "W_enc", "w_dec": "W_dec"}.get(k, k): v for k, v in load_file(os.path.join(sae_dir, "params.safetensors")).items()}
    return p


def numpy_points(p, x, edit=None):
    """JumpReLU, b_dec not subtracted (both Gemma Scope layouts), from the formulas."""
    x = x.astype(np.float64)
    pre = x @ p["W_enc"] + p["b_enc"]
    acts = np.maximum(pre, 0) * (pre > p["threshold"])
    clean = acts @ p["W_dec"] + p["b_dec"]
    error = x - clean
    if edit is not None:
        acts = edit(acts)
    recons = acts @ p["W_dec"] + p["b_dec"]
    return {"hook_sae_input": x, "hook_sae_acts_pre": pre, "hook_sae_acts_post": acts, "hook_sae_recons": recons,
            "hook_sae_error": error, "hook_sae_output": recons + error}


def saelens_points(sae, x):
    with torch.no_grad():
        _, cache = sae.run_with_cache(torch.from_numpy(x))
    return {k: v.numpy() for k, v in cache.items()}


def points(out_dir, sae_name, prompts_path, ours_path):
    model_dir = os.path.join(out_dir, "model")
    sae = reference_sae(os.path.join(out_dir, "saes", sae_name))
    ours = np.load(ours_path)
    worst, fired, total = {}, 0, 0
    for i, x in enumerate(layer_inputs(model_dir, prompts_of(prompts_path))):
        x = x.numpy()
        ref = numpy_points(sae, x) if isinstance(sae, dict) else saelens_points(sae, x)
        t = x.shape[0]
        for name, value in ref.items():
            got = ours[f"{LAYER}.sae.{name}"][i, :t]
            worst[name] = max(worst.get(name, 0.0), float(np.abs(got - value).max()))
        fired += int((ref["hook_sae_acts_post"] > 0).sum())
        total += ref["hook_sae_acts_post"].size
    print(json.dumps({"worst": worst, "fired": fired / total}))


def edited(out_dir, sae_name, prompts_path, ours_path, mode, feature=None, scale=None):
    model_dir = os.path.join(out_dir, "model")
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    sae = reference_sae(os.path.join(out_dir, "saes", sae_name))
    feature = None if feature is None else int(feature)
    scale = None if scale is None else float(scale)

    def edit_acts(acts):
        acts = acts.clone() if isinstance(acts, torch.Tensor) else acts.copy()
        if mode == "ablate":
            acts[..., feature] = 0
        else:
            acts[..., feature] += scale
        return acts

    def replace(_m, _a, out):
        if mode == "none":
            return out
        hidden = out[0] if isinstance(out, tuple) else out
        if isinstance(sae, dict):
            ref = numpy_points(sae, hidden[0].numpy(), None if mode.startswith("splice") else edit_acts)
            new = ref["hook_sae_recons"] if mode == "splice-no-error" else ref["hook_sae_output"]
            new = torch.from_numpy(new.astype(np.float32))[None]
        else:
            sae.use_error_term = mode != "splice-no-error"
            sae.reset_hooks()
            if mode in ("ablate", "steer"):
                sae.hook_sae_acts_post.add_hook(lambda acts, hook: edit_acts(acts))
            new = sae(hidden)
            sae.reset_hooks()
        return (new,) + tuple(out[1:]) if isinstance(out, tuple) else new

    kept = {}
    handles = [model.get_submodule(LAYER).register_forward_hook(replace)]
    for name in ("model.layers.1", "model.norm"):
        handles.append(model.get_submodule(name).register_forward_hook(
            lambda _m, _a, out, name=name: kept.__setitem__(name, (out[0] if isinstance(out, tuple) else out)[0].detach().numpy())))
    ours = np.load(ours_path)
    worst, moved = {}, 0.0
    clean = {}
    with torch.no_grad():
        for i, p in enumerate(prompts_of(prompts_path)):
            ids = tok(p, return_tensors="pt")
            model(**ids)
            t = ids["input_ids"].shape[1]
            for name, value in kept.items():
                worst[name] = max(worst.get(name, 0.0), float(np.abs(ours[name][i, :t] - value).max()))
            handles[0].remove()
            model(**ids)
            moved = max(moved, float(np.abs(kept["model.norm"] - ours["model.norm"][i, :t]).max()))
            handles[0] = model.get_submodule(LAYER).register_forward_hook(replace)
    print(json.dumps({"worst": worst, "moved": moved}))


def features(out_dir, sae_name, prompts_path, stats_path, k):
    k = int(k)
    sae = reference_sae(os.path.join(out_dir, "saes", sae_name))
    rows, where = [], []
    for i, x in enumerate(layer_inputs(os.path.join(out_dir, "model"), prompts_of(prompts_path))):
        x = x.numpy()
        acts = numpy_points(sae, x)["hook_sae_acts_post"] if isinstance(sae, dict) else saelens_points(sae, x)["hook_sae_acts_post"]
        rows.append(acts)
        where += [(i, t) for t in range(x.shape[0])]
    acts = np.concatenate(rows).astype(np.float64)
    where = np.array(where)
    stats = np.load(stats_path)
    fired = acts > 0
    ref = {
        "frequency": fired.mean(0),
        "max": acts.max(0),
        "mean_when_active": np.array([acts[fired[:, f], f].mean() if fired[:, f].any() else np.nan for f in range(acts.shape[1])]),
    }
    worst = {name: float(np.nanmax(np.abs(stats[name] - value))) for name, value in ref.items()}
    nan_same = bool((np.isnan(stats["mean_when_active"]) == np.isnan(ref["mean_when_active"])).all())
    top_ok = True
    for f in range(acts.shape[1]):
        active = np.nonzero(fired[:, f])[0]
        # Largest first; ties: the earlier sample, then the earlier position (the token order).
        order = active[np.lexsort((active, -acts[active, f]))][:k]
        n = len(order)
        top_ok &= bool(np.allclose(stats["top_values"][f, :n], acts[order, f], atol=1e-5))
        top_ok &= bool((stats["top_sample"][f, :n] == where[order, 0]).all())
        top_ok &= bool((stats["top_position"][f, :n] == where[order, 1]).all())
        top_ok &= bool((stats["top_sample"][f, n:] == -1).all() and (stats["top_position"][f, n:] == -1).all())
    print(json.dumps({"worst": worst, "nan_same": nan_same, "top_ok": top_ok, "tokens": int(stats["tokens"][0]),
                      "expected_tokens": len(where), "fired": float(fired.mean())}))


def csr(folder, dense_path, layer):
    import scipy.sparse as sp

    dense = np.load(dense_path)
    rows = dense[layer]
    if rows.ndim == 3:
        rows = rows[dense["attention_mask"].astype(bool)]
    base = os.path.join(folder, layer)
    indptr, indices = np.load(base + ".indptr.npy"), np.load(base + ".indices.npy")
    data = np.load(base + ".data.npy", mmap_mode="r")
    matrix = sp.csr_matrix((data, indices, indptr), shape=rows.shape)
    print(json.dumps({"equal": bool(np.array_equal(matrix.toarray(), rows)), "dtypes": [str(indptr.dtype), str(indices.dtype), str(data.dtype)],
                      "nnz": int(matrix.nnz), "zeros_stored": int((data == 0).sum()), "rows": rows.shape[0]}))


STEPS = {"build": build, "csr": csr, "points": points, "edited": edited, "features": features}


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
