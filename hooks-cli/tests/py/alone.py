"""transformers on each sample alone: the reference for `hooks extract`'s padded, length-sorted
batches. No batch, so no padding and no mask for anything to get wrong.

Usage: alone.py MODEL_DIR INPUT_JSONL MAX_LENGTH OUT_NPZ MODULE...

Each line of INPUT_JSONL holds `text` (tokenized alone by the folder's tokenizer, truncated at
MAX_LENGTH) or `input_ids` (cut at MAX_LENGTH). A forward hook on each named module keeps its
output (the first element of a tuple), as PyTorch forward hooks in reference tools do. OUT_NPZ
holds `{module}.{i}`: sample i's output with the batch axis of 1 dropped, float32; and `ids.{i}`.
"""
import json
import sys

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

model_dir, input_path, max_length, out, *modules = sys.argv[1:]
max_length = int(max_length)
model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
named = dict(model.named_modules())
captured = {}


def keep(name):
    def hook(_module, _args, output):
        tensor = output[0] if isinstance(output, tuple) else output
        assert name not in captured, f"{name} fired twice"
        captured[name] = tensor.detach().float()

    return hook


for name in modules:
    named[name].register_forward_hook(keep(name))

tokenizer = None
arrays = {}
with open(input_path, encoding="utf-8") as f:
    lines = [json.loads(line) for line in f if line.strip()]
for i, line in enumerate(lines):
    if "text" in line:
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_dir)
        ids = tokenizer(line["text"], truncation=True, max_length=max_length)["input_ids"]
    else:
        ids = line["input_ids"][:max_length]
    captured.clear()
    with torch.no_grad():
        model(input_ids=torch.tensor([ids]))
    for name in modules:
        output = captured[name]
        assert output.shape[0] == 1, (name, output.shape)
        arrays[f"{name}.{i}"] = output[0].numpy()
    arrays[f"ids.{i}"] = np.array(ids, dtype=np.int64)
np.savez(out, **arrays)
