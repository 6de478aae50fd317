"""numpy's side of the .npz interop test.

check DIR:  loads the files the Rust test wrote and checks dtype, shape and values against
            arrays computed here with numpy, independently of the Rust code.
write DIR:  writes numpy.npz (np.savez) for the Rust test to read back.
strings DIR: checks strings.npz (save_npz's unicode arrays) against numpy's own `np.array(list)`,
            and writes numpy_strings.npz for the Rust test to read back.
"""
import sys

import numpy as np


def expected():
    # The same formulas the Rust test used to build its tensors.
    a = np.arange(24).reshape(2, 3, 4)
    return {
        "f32": (a / 8).astype(np.float32),
        "f64": (a / 3).astype(np.float64),
        "f16": (a / 4 - 2).astype(np.float16),
        # bf16 values that are exact in bf16, written as float32.
        "bf16": (a / 4 - 2).astype(np.float32),
        "i64": (a * 1_000_000_007 - 3).astype(np.int64),
        "i32": (a - 12).astype(np.int32),
        "u8": (a * 10).astype(np.uint8),
        "bool": (a % 3 == 0),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 5), dtype=np.float32),
        "encoder.layer.0.output": np.arange(6, dtype=np.float32).reshape(2, 3).T,
    }


def check(directory):
    with np.load(f"{directory}/dtypes.npz") as f:
        want = expected()
        assert sorted(f.files) == sorted(want), (sorted(f.files), sorted(want))
        for name, w in want.items():
            got = f[name]
            assert got.dtype == w.dtype, (name, got.dtype, w.dtype)
            assert got.shape == w.shape, (name, got.shape, w.shape)
            assert np.array_equal(got, w), (name, got, w)
    print("numpy read", len(want), "arrays exactly")


def write(directory):
    a = np.arange(12).reshape(3, 4)
    np.savez(
        f"{directory}/numpy.npz",
        f32=(a / 2).astype(np.float32),
        f64=(a / 7).astype(np.float64),
        f16=(a / 4).astype(np.float16),
        i64=(a - 5).astype(np.int64),
        i32=(a * 3).astype(np.int32),
        u8=a.astype(np.uint8),
        mask=(a % 2 == 1),
        fortran=np.asfortranarray((a / 2).astype(np.float32)),
    )
    np.savez_compressed(f"{directory}/compressed.npz", x=(a / 2).astype(np.float32))


# What the Rust test writes with `save_npz`, and what numpy makes of the same lists.
STRINGS = ["model.embed_tokens", "", "héllo wörld", "🎉 emoji", "tab\there"]


def strings(directory):
    with np.load(f"{directory}/strings.npz") as f:
        assert f.files == ["layers", "values", "empty"], f.files
        want = np.array(STRINGS)
        assert f["layers"].dtype == want.dtype, (f["layers"].dtype, want.dtype)
        assert f["layers"].tolist() == STRINGS, f["layers"]
        assert f["values"].dtype == np.float32 and f["values"].tolist() == [0.5, 0.25]
        assert f["empty"].dtype == np.array(["", ""]).dtype and f["empty"].tolist() == ["", ""]
    np.savez(
        f"{directory}/numpy_strings.npz",
        names=np.array(STRINGS),
        grid=np.array([["a", "bc"], ["def", ""]]),
        padded=np.array(["x", "y"], dtype="<U7"),
    )
    print("numpy read the strings exactly")


if __name__ == "__main__":
    {"check": check, "write": write, "strings": strings}[sys.argv[1]](sys.argv[2])
