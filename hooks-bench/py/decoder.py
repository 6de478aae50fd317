"""The transformers side of section 8 of `make bench`: a Llama-shaped model with random weights
(and Gemma-2-shaped ones), and the extraction `hooks extract` is measured against, written as a
transformers user writes it.

    decoder.py make --out DIR --hidden H --intermediate I --layers L --heads N --kv-heads K
                    --vocab V --seed S [--arch llama|gemma2] [--window W] [--softcap 0|1]
        LlamaForCausalLM(LlamaConfig(...)) with seeded random weights (transformers' own init),
        saved with save_pretrained: config.json and f32 model.safetensors, no tokenizer.
        `--arch gemma2`: Gemma2ForCausalLM(Gemma2Config(...)) of the same sizes (head_dim
        H / N, query_pre_attn_scalar head_dim), its sliding window W on alternating layers
        (0: 2048, wider than any input, so none binds) and, with `--softcap 1`, Gemma 2's soft-caps (50 on attention scores, 30 on
        logits; 0: none).

    decoder.py extract --model DIR --input IDS.jsonl --batch-size N --pool none|mean
                       --threads N --out FILE [--attn sdpa|eager]
        AutoModelForCausalLM.from_pretrained(DIR) (its default attention, sdpa, or the one
        `--attn` names), a forward hook
        on each `model.layers.N` keeping `output.detach().cpu()`; the lines of IDS.jsonl
        (`{"input_ids": [...]}`) in the batches `hooks extract` makes: sorted by length,
        longest first (stable), cut into batches of at most N (and before a row shorter than
        half its batch's width), each right-padded to its own longest with its attention mask. `none` keeps every token (the inputs must then be of one
        length); `mean` averages over real tokens. Each layer's batches are put back in input
        order with `torch.cat`, written with `numpy.savez` and fsynced, as `hooks extract` syncs
        its file.

The forward is the decoder stack, `model.model(...)` (embeddings, layers, final norm), with
`use_cache=False`: the hidden states are what is wanted, so neither the 32000-wide logits of
`lm_head` nor a key-value cache is computed. The caller times the whole process, imports and
model load included, as `hooks extract` is timed.
"""

import argparse
import json
import os

import numpy as np
import torch


def make(args):
    from transformers import Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(args.seed)
    if args.arch == "gemma2":
        head_dim = args.hidden // args.heads
        config = Gemma2Config(
            hidden_size=args.hidden,
            intermediate_size=args.intermediate,
            num_hidden_layers=args.layers,
            num_attention_heads=args.heads,
            num_key_value_heads=args.kv_heads,
            head_dim=head_dim,
            query_pre_attn_scalar=head_dim,
            vocab_size=args.vocab,
            max_position_embeddings=2048,
            # No window: one wider than any input (transformers' Gemma 2 always builds the sliding
            # mask, and refuses a config without a window).
            sliding_window=args.window or 2048,
            attn_logit_softcapping=50.0 if args.softcap else None,
            final_logit_softcapping=30.0 if args.softcap else None,
        )
        model = Gemma2ForCausalLM(config).to(torch.float32).eval()
        model.save_pretrained(args.out, safe_serialization=True)
        return
    config = LlamaConfig(
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        vocab_size=args.vocab,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    model.save_pretrained(args.out, safe_serialization=True)


def read_rows(path):
    """The token-id lists of an IDS.jsonl (`{"input_ids": [...]}` a line)."""
    with open(path) as f:
        return [json.loads(line)["input_ids"] for line in f if line.strip()]


def batches(rows, batch_size):
    """The batches `hooks extract` (and `hooks lens`) make: `rows` sorted by length, longest first
    (stable), cut into runs of at most `batch_size`, and before a row shorter than half its run's
    width (no row padded to more than twice its length), each right-padded to its own longest.
    Yields (the rows' indices in `rows`, ids, attention mask), both `[batch, width]` int64."""
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    runs, start = [], 0
    for at in range(len(order)):
        count, width = at - start, len(rows[order[start]])
        if count == batch_size or (count > 0 and 2 * len(rows[order[at]]) < width):
            runs.append(order[start:at])
            start = at
    runs.append(order[start:])
    for index in runs:
        width = max(len(rows[i]) for i in index)
        ids = torch.zeros(len(index), width, dtype=torch.int64)
        mask = torch.zeros(len(index), width, dtype=torch.int64)
        for j, i in enumerate(index):
            ids[j, : len(rows[i])] = torch.tensor(rows[i])
            mask[j, : len(rows[i])] = 1
        yield index, ids, mask


def in_input_order(arrays, order):
    """`arrays` (row k from input row `order[k]`) with their rows put back in input order."""
    if order == sorted(order):
        return arrays
    inverse = torch.empty(len(order), dtype=torch.int64)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return {name: a[inverse] for name, a in arrays.items()}


def save(path, arrays):
    """`numpy.savez` of `arrays` (tensors or numpy arrays), fsynced, as `hooks` syncs its files."""
    arrays = {k: a.numpy() if isinstance(a, torch.Tensor) else a for k, a in arrays.items()}
    with open(path, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())


def extract(args):
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    rows = read_rows(args.input)
    kwargs = {"attn_implementation": args.attn} if args.attn else {}
    model = AutoModelForCausalLM.from_pretrained(args.model, **kwargs).eval()
    names = [f"model.layers.{i}" for i in range(model.config.num_hidden_layers)]
    modules = dict(model.named_modules())
    kept = {name: [] for name in names}

    def hook(name):
        def keep(_module, _args, output):
            output = output[0] if isinstance(output, (tuple, list)) else output
            kept[name].append(output.detach().cpu())

        return keep

    for name in names:
        modules[name].register_forward_hook(hook(name))

    order = []
    for index, ids, mask in batches(rows, args.batch_size):
        order += index
        with torch.no_grad():
            model.model(input_ids=ids, attention_mask=mask, use_cache=False)
        if args.pool == "mean":
            weights = mask.unsqueeze(-1).float()
            for name in names:
                out = kept[name][-1]
                kept[name][-1] = (out * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        elif not bool(mask.all()):
            raise SystemExit("--pool none needs inputs of one length")

    # Row k of each concatenation is row `order[k]` of the input.
    arrays = in_input_order({name: torch.cat(kept[name]) for name in names}, order)
    save(args.out, arrays)


def main():
    parser = argparse.ArgumentParser(prog="decoder.py")
    commands = parser.add_subparsers(dest="command", required=True)
    m = commands.add_parser("make")
    m.add_argument("--out", required=True)
    for flag in ["hidden", "intermediate", "layers", "heads", "kv-heads", "vocab", "seed"]:
        m.add_argument(f"--{flag}", type=int, required=True)
    m.add_argument("--arch", choices=["llama", "gemma2"], default="llama")
    m.add_argument("--window", type=int, default=0)
    m.add_argument("--softcap", type=int, choices=[0, 1], default=1)
    e = commands.add_parser("extract")
    e.add_argument("--model", required=True)
    e.add_argument("--input", required=True)
    e.add_argument("--batch-size", type=int, required=True)
    e.add_argument("--pool", choices=["none", "mean"], required=True)
    e.add_argument("--threads", type=int, required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--attn", choices=["sdpa", "eager"])
    args = parser.parse_args()
    {"make": make, "extract": extract}[args.command](args)


if __name__ == "__main__":
    main()
