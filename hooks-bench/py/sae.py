"""The Python side of section 12 of `make bench`: a JumpReLU SAE saved by SAELens, and the
capture `hooks extract --sae` is measured against, written as a SAELens user writes it.

    sae.py make --model DIR --layer L --d-sae N --l0 K --input IDS.jsonl --out SAE --seed S
        A SAELens `JumpReLUSAE` (d_in the model's width, N features, `apply_b_dec_to_input`
        false, as Gemma Scope's) with seeded random weights, `b_dec` the mean of
        `model.layers.L`'s output over the real tokens of IDS.jsonl, and each feature's threshold
        the quantile of its pre-activation over those tokens that makes it fire on K / N of them:
        an average L0 of about K, as released SAEs have. Saved with `sae.save_model(SAE)`.

    sae.py extract --model DIR --sae SAE --layer L --input IDS.jsonl --batch-size N
                   --threads N --out FILE.npz
        `AutoModelForCausalLM.from_pretrained(DIR)`, `SAE.load_from_disk(SAE)`, a forward hook
        on `model.layers.L` that runs `sae.encode` on the output, keeps the real tokens' feature
        activations as a `scipy.sparse.csr_matrix` and stops the forward (an exception caught
        around it, as `hooks` stops after the last selected layer); the batches `hooks extract`
        makes (decoder.py's); `scipy.sparse.vstack` in input order and `save_npz`, fsynced.

    sae.py compare --ours FOLDER --layer L --theirs FILE.npz
        The folder's `model.layers.L.sae.hook_sae_acts_post` CSR files against FILE.npz: the
        same nonzero pattern and values within 1e-4 (× max(1, |value|)); prints one JSON line
        (max difference, nnz, rows, mean L0), or fails.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from decoder import batches, read_rows  # noqa: E402


class Stop(Exception):
    """Raised by the hook once the layer is captured: the rest of the model is not needed."""


def layer_outputs(model, layer, rows, batch_size):
    """`model.layers.L`'s output over the real tokens of `rows`, `[tokens, d]`."""
    kept = []
    module = model.get_submodule(f"model.layers.{layer}")

    def hook(_m, _a, out):
        kept.append(out[0] if isinstance(out, tuple) else out)
        raise Stop

    handle = module.register_forward_hook(hook)
    out = []
    for _, ids, mask in batches(rows, batch_size):
        try:
            with torch.no_grad():
                model.model(input_ids=ids, attention_mask=mask, use_cache=False)
        except Stop:
            pass
        out.append(kept.pop()[mask.bool()])
    handle.remove()
    return torch.cat(out)


def make(args):
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
    from transformers import AutoModelForCausalLM

    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    x = layer_outputs(model, args.layer, read_rows(args.input), 16)
    cfg = JumpReLUSAEConfig(d_in=x.shape[1], d_sae=args.d_sae, apply_b_dec_to_input=False)
    cfg.metadata.hook_name = f"blocks.{args.layer}.hook_resid_post"
    sae = JumpReLUSAE(cfg)
    with torch.no_grad():
        sae.b_dec.copy_(x.mean(0))
        sae.b_enc.zero_()
        pre = x @ sae.W_enc
        q = 1.0 - args.l0 / args.d_sae
        sae.threshold.copy_(torch.quantile(pre, q, dim=0).clamp(min=1e-3))
    sae.save_model(args.out)


def extract(args):
    import scipy.sparse as sp
    from sae_lens import SAE
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    rows = read_rows(args.input)
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    sae = SAE.load_from_disk(args.sae)
    module = model.get_submodule(f"model.layers.{args.layer}")
    state = {}

    def hook(_m, _a, out):
        hidden = out[0] if isinstance(out, tuple) else out
        acts = sae.encode(hidden[state["mask"]])
        state["parts"].append(sp.csr_matrix(acts.numpy()))
        raise Stop

    module.register_forward_hook(hook)
    parts, order = [], []
    for index, ids, mask in batches(rows, args.batch_size):
        state.update(mask=mask.bool(), parts=[])
        try:
            with torch.no_grad():
                model.model(input_ids=ids, attention_mask=mask, use_cache=False)
        except Stop:
            pass
        # Split the batch's rows back per sample, to put them in input order.
        lengths = mask.sum(1).tolist()
        bounds = np.cumsum([0] + lengths)
        batch = state["parts"][0]
        for j, i in enumerate(index):
            parts.append((i, batch[bounds[j] : bounds[j + 1]]))
        order += index
    parts.sort(key=lambda p: p[0])
    matrix = sp.vstack([p for _, p in parts], format="csr")
    with open(args.out, "wb") as f:
        sp.save_npz(f, matrix)
        f.flush()
        os.fsync(f.fileno())


def compare(args):
    import scipy.sparse as sp

    base = os.path.join(args.ours, f"model.layers.{args.layer}.sae.hook_sae_acts_post")
    indptr, indices, data = (np.load(f"{base}.{part}.npy") for part in ("indptr", "indices", "data"))
    theirs = sp.load_npz(args.theirs).tocsr()
    theirs.sort_indices()
    ours = sp.csr_matrix((data, indices, indptr), shape=theirs.shape)
    same_pattern = np.array_equal(ours.indptr, theirs.indptr) and np.array_equal(ours.indices, theirs.indices)
    if not same_pattern:
        sys.exit(f"the nonzero patterns differ: {ours.nnz} and {theirs.nnz} values")
    diff = np.abs(ours.data - theirs.data) / np.maximum(1.0, np.abs(theirs.data))
    if diff.size and diff.max() > 1e-4:
        sys.exit(f"values differ by up to {diff.max():.2e}")
    print(json.dumps({"max_diff": float(diff.max()) if diff.size else 0.0, "nnz": int(ours.nnz),
                      "rows": int(ours.shape[0]), "mean_l0": float(ours.nnz / max(1, ours.shape[0]))}))


def main():
    parser = argparse.ArgumentParser(prog="sae.py")
    commands = parser.add_subparsers(dest="command", required=True)
    m = commands.add_parser("make")
    for flag in ["model", "input", "out"]:
        m.add_argument(f"--{flag}", required=True)
    for flag in ["layer", "d-sae", "l0", "seed"]:
        m.add_argument(f"--{flag}", type=int, required=True)
    e = commands.add_parser("extract")
    for flag in ["model", "sae", "input", "out"]:
        e.add_argument(f"--{flag}", required=True)
    for flag in ["layer", "batch-size", "threads"]:
        e.add_argument(f"--{flag}", type=int, required=True)
    c = commands.add_parser("compare")
    c.add_argument("--ours", required=True)
    c.add_argument("--theirs", required=True)
    c.add_argument("--layer", type=int, required=True)
    args = parser.parse_args()
    {"make": make, "extract": extract, "compare": compare}[args.command](args)


if __name__ == "__main__":
    main()
