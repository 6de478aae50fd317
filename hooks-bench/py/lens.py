"""The transformers side of section 9 of `make bench`: the logit lens `hooks lens` is measured
against, written as a transformers user writes it, and the check that the two files agree.

    lens.py run --model DIR --input IDS.jsonl --batch-size N --top-k K --threads N --out FILE
        AutoModelForCausalLM.from_pretrained(DIR) (its default attention, sdpa), a forward hook
        on `model.embed_tokens` and on each `model.layers.N` keeping `output.detach()`; the lines
        of IDS.jsonl in the batches `hooks lens` makes (`decoder.batches`: sorted by length,
        longest first, right-padded per batch, with the attention mask); per batch the decoder
        stack `model.model(...)` under `no_grad` with `use_cache=False`, then per layer the
        model's own read-out `log_softmax(lm_head(model.model.norm(h)))`, its top K (`topk`), its
        entropy and KL(p_final || p_layer), where p_final is the model's own next-token
        distribution, `log_softmax(lm_head(last_hidden_state))` (the last block's read-out: it is
        computed once). Written with `numpy.savez` and fsynced, as `hooks lens` writes LENS.npz:
        `layers`, `input_ids`, `attention_mask` [N, T], `top_ids` int64 and `top_probs` float32
        [N, L, T, K], `entropy` and `kl_to_final` float32 [N, L, T], zero past each sample's
        length; and `next_prob` [N, L, T], the probability of rank K + 1, which `compare` needs
        to tell a tie from a wrong id.

    lens.py compare --ours LENS.npz --theirs FILE
        Fails (exit 1, the reason on stderr) unless the two agree: the same layers, ids and mask;
        over real tokens, `top_ids` equal wherever `theirs` has no tie at that rank, `top_probs`
        within 1e-4 (and 1e-3 relative: a random-weight model's distributions are flat, its top
        probabilities near 1e-4 themselves), `entropy` and `kl_to_final` within 1e-4 nats
        (relative to max(1, |value|)); every array of `ours` zero past each length. Prints the
        differences as one JSON line.

The caller times the whole `run` process, imports and model load included, as `hooks lens` is
timed.
"""

import argparse
import json
import sys

import numpy as np
import torch

from decoder import batches, in_input_order, read_rows, save

# What `compare` allows: probabilities (absolute and relative), entropy and KL (nats, relative to
# max(1, |value|)), and what makes two ranks a tie (their log-probabilities this close).
PROB_ABS = 1e-4
PROB_REL = 1e-3
NATS = 1e-4
TIE = 1e-4


def run(args):
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    rows = read_rows(args.input)
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    blocks = model.config.num_hidden_layers
    names = ["model.embed_tokens"] + [f"model.layers.{i}" for i in range(blocks)]
    last = f"model.layers.{blocks - 1}"
    modules = dict(model.named_modules())
    kept = {}

    def hook(name):
        def keep(_module, _args, output):
            output = output[0] if isinstance(output, (tuple, list)) else output
            kept[name] = output.detach()

        return keep

    for name in names:
        modules[name].register_forward_hook(hook(name))

    k = args.top_k
    width = max(len(r) for r in rows)
    order, parts = [], {key: [] for key in ["top_ids", "top_probs", "entropy", "kl", "next"]}
    for index, ids, mask in batches(rows, args.batch_size):
        order += index
        with torch.no_grad():
            out = model.model(input_ids=ids, attention_mask=mask, use_cache=False)
            final = torch.log_softmax(model.lm_head(out.last_hidden_state), dim=-1)
            p_final = final.exp()
            per_layer = {key: [] for key in parts}
            for name in names:
                if name == last:
                    logp = final
                else:
                    logp = torch.log_softmax(model.lm_head(model.model.norm(kept[name])), dim=-1)
                top = logp.topk(k + 1, dim=-1)
                per_layer["top_ids"].append(top.indices[..., :k])
                per_layer["top_probs"].append(top.values[..., :k].exp())
                per_layer["next"].append(top.values[..., k].exp())
                per_layer["entropy"].append(-(logp.exp() * logp).sum(-1))
                per_layer["kl"].append((p_final * (final - logp)).sum(-1))
        # [B, L, T, ...], zero past each length, padded to the longest input.
        real = mask.bool()[:, None, :]
        for key, xs in per_layer.items():
            x = torch.stack(xs, dim=1)
            x = x * (real[..., None] if x.dim() == 4 else real)
            pad = [0, 0] * (x.dim() - 3) + [0, width - x.shape[2]]
            parts[key].append(torch.nn.functional.pad(x, pad))
        kept.clear()

    ids = torch.zeros(len(rows), width, dtype=torch.int64)
    mask = torch.zeros(len(rows), width, dtype=torch.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    # Row j of each concatenation is input row `order[j]`.
    arrays = in_input_order({key: torch.cat(xs) for key, xs in parts.items()}, order)
    save(
        args.out,
        {
            "layers": np.array(names),
            "input_ids": ids,
            "attention_mask": mask,
            "top_ids": arrays["top_ids"],
            "top_probs": arrays["top_probs"].float(),
            "entropy": arrays["entropy"].float(),
            "kl_to_final": arrays["kl"].float(),
            "next_prob": arrays["next"].float(),
        },
    )


class Disagreement(Exception):
    pass


def check(ok, what):
    if not ok:
        raise Disagreement(what)


def agreement(ours, theirs):
    """The differences between LENS.npz files `ours` (hooks) and `theirs` (this script's), or
    `Disagreement` with the first reason they are not the same computation."""
    for key in ["layers", "input_ids", "attention_mask", "top_ids", "top_probs", "entropy", "kl_to_final"]:
        check(key in ours.files, f"`{key}` is missing from the hooks file (it has {ours.files})")
    layers = [str(x) for x in ours["layers"]]
    check(layers == [str(x) for x in theirs["layers"]], f"layers: hooks {layers}, Python {theirs['layers']}")
    for key in ["input_ids", "attention_mask"]:
        a, b = ours[key], theirs[key]
        check(a.dtype == np.int64, f"`{key}` is {a.dtype}, not int64")
        check(a.shape == b.shape and (a == b).all(), f"`{key}` differs (hooks {a.shape}, Python {b.shape})")
    n, t = theirs["input_ids"].shape
    big_l, k = theirs["top_ids"].shape[1], theirs["top_ids"].shape[3]
    dtypes = {"top_ids": np.int64, "top_probs": np.float32, "entropy": np.float32, "kl_to_final": np.float32}
    for key, dtype in dtypes.items():
        shape = (n, big_l, t, k) if key.startswith("top_") else (n, big_l, t)
        check(ours[key].shape == shape, f"`{key}` has shape {ours[key].shape}, not {shape}")
        check(ours[key].dtype == dtype, f"`{key}` is {ours[key].dtype}, not {np.dtype(dtype)}")
    real = theirs["attention_mask"].astype(bool)[:, None, :]  # [N, 1, T]
    pad = np.broadcast_to(~real, (n, big_l, t))
    for key in dtypes:
        a = ours[key]
        check(not a[pad].any(), f"`{key}` is not zero past a sample's length")
        check(np.isfinite(a).all(), f"`{key}` has values that are not finite")
    report = {"positions": int(real.sum()) * big_l, "k": k}

    # Probabilities, rank by rank (sorted values agree whether or not ids tie).
    p_ours, p_theirs = ours["top_probs"].astype(np.float64), theirs["top_probs"].astype(np.float64)
    diff = np.abs(p_ours - p_theirs)[~pad]
    rel = (np.abs(p_ours - p_theirs) / np.maximum(p_theirs, 1e-30))[~pad]
    report["top_probs_max_abs"] = float(diff.max(initial=0.0))
    report["top_probs_max_rel"] = float(rel.max(initial=0.0))
    worst, worst_rel = report["top_probs_max_abs"], report["top_probs_max_rel"]
    check(worst <= PROB_ABS, f"top_probs differ by {worst:.3e} (allowed {PROB_ABS})")
    check(worst_rel <= PROB_REL, f"top_probs differ by {worst_rel:.3e} of their value (allowed {PROB_REL})")
    # Descending, as top-K is.
    check((np.diff(ours["top_probs"], axis=-1) <= 1e-7).all(), "top_probs are not in descending order")

    # Ids: a difference at rank r is allowed only where Python's rank r ties with rank r - 1 or
    # r + 1 (rank K + 1 from `next_prob`): there, which id comes first is rounding.
    logp = np.log(np.maximum(np.concatenate([p_theirs, theirs["next_prob"][..., None]], axis=-1), 1e-30))
    gap = np.abs(np.diff(logp, axis=-1))  # [N, L, T, K]: between rank r and r + 1
    tie_below = gap[..., :k] <= TIE
    tie_above = np.concatenate([np.zeros_like(tie_below[..., :1]), gap[..., : k - 1] <= TIE], axis=-1)
    tied = tie_below | tie_above
    differ = (ours["top_ids"] != theirs["top_ids"]) & ~np.broadcast_to(pad[..., None], ours["top_ids"].shape)
    report["top_ids_differing"] = int(differ.sum())
    report["top_ids_differing_untied"] = int((differ & ~tied).sum())
    if report["top_ids_differing_untied"]:
        i, layer, pos, rank = (int(x) for x in np.argwhere(differ & ~tied)[0])
        at = (i, layer, pos)
        raise Disagreement(
            f"top_ids differ where Python has no tie: sample {i}, layer {layers[layer]}, position {pos}, "
            f"rank {rank}: hooks {ours['top_ids'][at].tolist()} {ours['top_probs'][at].tolist()}, "
            f"Python {theirs['top_ids'][at].tolist()} {theirs['top_probs'][at].tolist()}"
        )

    for key in ["entropy", "kl_to_final"]:
        a, b = ours[key].astype(np.float64), theirs[key].astype(np.float64)
        d = (np.abs(a - b) / np.maximum(1.0, np.abs(b)))[~pad]
        worst = report[f"{key}_max_diff"] = float(d.max(initial=0.0))
        check(worst <= NATS, f"`{key}` differs by {worst:.3e} nats (allowed {NATS}, times max(1, |value|))")
    return report


def compare(args):
    with np.load(args.ours) as ours, np.load(args.theirs) as theirs:
        try:
            report = agreement(ours, theirs)
        except Disagreement as e:
            sys.exit(f"`hooks lens` and transformers disagree: {e}; the timings would compare different work")
    print(json.dumps(report))


def main():
    parser = argparse.ArgumentParser(prog="lens.py")
    commands = parser.add_subparsers(dest="command", required=True)
    r = commands.add_parser("run")
    r.add_argument("--model", required=True)
    r.add_argument("--input", required=True)
    r.add_argument("--batch-size", type=int, required=True)
    r.add_argument("--top-k", type=int, required=True)
    r.add_argument("--threads", type=int, required=True)
    r.add_argument("--out", required=True)
    c = commands.add_parser("compare")
    c.add_argument("--ours", required=True)
    c.add_argument("--theirs", required=True)
    args = parser.parse_args()
    {"run": run, "compare": compare}[args.command](args)


if __name__ == "__main__":
    main()
