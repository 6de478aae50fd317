"""Reads a dataset folder the way a user does, with numpy alone, and checks it against an `.npz`
run of the same input (all samples padded to the longest, with their `attention_mask`).

Usage: dataset_check.py FOLDER NPZ

- every `.npy` opens with `np.load(path, mmap_mode="r")` (a memory map, not a copy);
- `offsets.npy` is int64 [N + 1], from 0, and its differences are the npz's mask sums;
- `input_ids.npy` is each sample's real ids, in order;
- a token-layout layer's rows for sample i equal the npz's row i up to its length, and the
  npz holds zeros past it (no padding was dropped that held data);
- a per-sample layer equals the npz's array, and so do `sample_index` and `meta.*`.
Prints `checked L layers of N samples`.
"""
import json
import os
import sys

import numpy as np

folder, npz_path = sys.argv[1:3]
npz = np.load(npz_path)
with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as f:
    manifest = json.load(f)
assert manifest["complete"], manifest


def mapped(name):
    array = np.load(os.path.join(folder, name), mmap_mode="r")
    assert isinstance(array, np.memmap), (name, type(array))
    return array


lengths = npz["attention_mask"].sum(axis=1)
offsets = mapped("offsets.npy")
assert offsets.dtype == np.int64 and offsets.shape == (len(lengths) + 1,), offsets.shape
assert offsets[0] == 0 and (np.diff(offsets) == lengths).all(), (offsets, lengths)
ids = mapped("input_ids.npy")
assert ids.dtype == np.int64 and ids.shape == (offsets[-1],)
layers = 0
for name, info in manifest["arrays"].items():
    layer = name[: -len(".npy")]
    array = mapped(name)
    padded = npz[layer]
    assert array.dtype == padded.dtype, (layer, array.dtype, padded.dtype)
    if layer == "sample_index" or layer.startswith("meta."):
        # Per-sample columns, not layers: the same values as the npz's.
        assert (np.asarray(array) == padded).all(), layer
        continue
    if info["rows"] == "tokens":
        assert array.shape == (offsets[-1],) + padded.shape[2:], (layer, array.shape)
        for i, n in enumerate(lengths):
            rows = array[offsets[i] : offsets[i + 1]]
            np.testing.assert_allclose(rows, padded[i, :n], rtol=1e-5, atol=1e-5, err_msg=f"{layer} sample {i}")
            assert (padded[i, n:] == 0).all(), (layer, i)
            assert (ids[offsets[i] : offsets[i + 1]] == npz["input_ids"][i, :n]).all(), i
    else:
        assert array.shape == padded.shape, (layer, array.shape, padded.shape)
        np.testing.assert_allclose(array, padded, rtol=1e-5, atol=1e-5, err_msg=layer)
    layers += 1
print(f"checked {layers} layers of {len(lengths)} samples")
