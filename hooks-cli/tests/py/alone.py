"""transformers on each sample alone: the reference for `hooks extract`'s padded, length-sorted
batches. No batch, so no padding and no mask for anything to get wrong.

Usage: alone.py MODEL_DIR INPUT_JSONL MAX_LENGTH OUT_NPZ [OPTION...] MODULE...

Each line of INPUT_JSONL holds `text` (tokenized alone by the folder's tokenizer, truncated at
MAX_LENGTH) or `input_ids` (cut at MAX_LENGTH). A forward hook on each named module keeps its
output (the first element of a tuple), as PyTorch forward hooks in reference tools do; a module
named `NAME:input` keeps NAME's first input instead, with a forward pre-hook. OUT_NPZ holds
`{module}.{i}`: sample i's output with the batch axis of 1 dropped, float32; and `ids.{i}`.

Interventions, as forward hooks that return the changed output (registered before the capture
hooks, so captures see the change):

    --ablate=NAME               NAME's output becomes zeros
    --mean-ablate=NAME=MEAN.npy NAME's output becomes MEAN at every position
    --scale=NAME@F[:POS]        NAME's output is multiplied by F
    --steer=NAME=VEC.npy@SCALE[:POS]
                                SCALE * VEC is added to NAME's output
    --patch=NAME=CLEAN_JSONL    NAME's output becomes NAME's output on line i of CLEAN_JSONL,
                                run alone first (activation patching)

POS limits a change to some token positions of each sample: Python indexes and slices separated
by commas (`-1`, `3:`, `0,-1`), resolved by Python's own indexing of `range(len(sample))`.
"""
import json
import sys

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

model_dir, input_path, max_length, out, *rest = sys.argv[1:]
options = [a for a in rest if a.startswith("--")]
modules = [a for a in rest if not a.startswith("--")]
max_length = int(max_length)
model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
named = dict(model.named_modules())
captured = {}
tokenizer = None


def first(output):
    return output[0] if isinstance(output, tuple) else output


def with_first(output, tensor):
    return (tensor,) + tuple(output[1:]) if isinstance(output, tuple) else tensor


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def ids_of(line):
    global tokenizer
    if "text" in line:
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_dir)
        return tokenizer(line["text"], truncation=True, max_length=max_length)["input_ids"]
    return line["input_ids"][:max_length]


def run(ids):
    with torch.no_grad():
        model(input_ids=torch.tensor([ids]))


# The patch sources first, before any hook: each clean line's output of the patched module.
patches = {}
for option in options:
    if option.startswith("--patch="):
        name, clean_path = option[len("--patch=") :].split("=", 1)
        sources = []
        handle = named[name].register_forward_hook(lambda _m, _a, o: sources.append(first(o).detach().clone()))
        for line in read_lines(clean_path):
            run(ids_of(line))
        handle.remove()
        patches[name] = sources

def selected(n, spec):
    """The positions of a sample of n tokens that `spec` names, by Python's own indexing."""
    if spec is None:
        return list(range(n))
    chosen = set()
    for entry in spec.split(","):
        if ":" in entry:
            start, stop = (int(e) if e.strip() else None for e in entry.split(":"))
            chosen.update(range(n)[start:stop])
        else:
            chosen.add(range(n)[int(entry)])
    return sorted(chosen)


def edit_at(change, spec):
    """A forward hook applying `change` to the output at the positions of `spec`."""

    def hook(_module, _args, output):
        x = first(output)
        at = selected(x.shape[1], spec)
        changed = x.clone()
        changed[:, at] = change(x[:, at])
        return with_first(output, changed)

    return hook


def number_and_positions(tail):
    number, _, spec = tail.partition(":")
    return float(number), (spec or None)


current = {"i": 0}
for option in options:
    kind, spec = option[2:].split("=", 1)
    if kind == "ablate":
        named[spec].register_forward_hook(lambda _m, _a, o: with_first(o, torch.zeros_like(first(o))))
    elif kind == "mean-ablate":
        name, path = spec.split("=", 1)
        mean = torch.from_numpy(np.load(path))
        named[name].register_forward_hook(edit_at(lambda x, m=mean: torch.zeros_like(x) + m, None))
    elif kind == "scale":
        name, tail = spec.rsplit("@", 1)
        factor, at = number_and_positions(tail)
        named[name].register_forward_hook(edit_at(lambda x, f=factor: x * f, at))
    elif kind == "steer":
        name, rest_ = spec.split("=", 1)
        path, tail = rest_.rsplit("@", 1)
        scale, at = number_and_positions(tail)
        vector = torch.from_numpy(np.load(path)) * scale
        named[name].register_forward_hook(edit_at(lambda x, v=vector: x + v, at))
    elif kind == "patch":
        name = spec.split("=", 1)[0]
        named[name].register_forward_hook(lambda _m, _a, o, n=name: with_first(o, patches[n][current["i"]]))
    else:
        raise ValueError(option)


def keep(name):
    def hook(_module, _args, output):
        assert name not in captured, f"{name} fired twice"
        captured[name] = first(output).detach().float()

    return hook


def keep_input(name):
    def hook(_module, args):
        assert name not in captured, f"{name} fired twice"
        captured[name] = args[0].detach().float()

    return hook


for name in modules:
    if name.endswith(":input"):
        named[name[: -len(":input")]].register_forward_pre_hook(keep_input(name))
    else:
        named[name].register_forward_hook(keep(name))

arrays = {}
lines = read_lines(input_path)
for i, line in enumerate(lines):
    ids = ids_of(line)
    captured.clear()
    current["i"] = i
    run(ids)
    for name in modules:
        output = captured[name]
        assert output.shape[0] == 1, (name, output.shape)
        arrays[f"{name}.{i}"] = output[0].numpy()
    arrays[f"ids.{i}"] = np.array(ids, dtype=np.int64)
np.savez(out, **arrays)
