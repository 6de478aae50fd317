"""numpy's side of the analysis tests: CKA, unbiased CKA, minibatch CKA and SVCCA written from
the papers' definitions, in the n × n (Gram matrix) form the papers state them, never calling the
Rust code.

    analysis_reference.py IN.npz OUT.json [--batch B] [--threshold T] [--mask-from FILE] [--names a,b]

Reads every array of IN.npz (or those named, in that order) as rows: `[N, H]` as is; `[N, T, H]`
with `--mask-from FILE`'s `attention_mask` `[N, T]`, keeping the rows of real tokens only, in
(sample, position) order. Writes, for each metric, the matrix of every array against every
array, as JSON.
"""
import argparse
import json

import numpy as np


def gram(x):
    """The linear kernel's Gram matrix, `K = X Xᵀ`, in float64."""
    x = np.asarray(x, dtype=np.float64)
    return x @ x.T


def hsic_biased(k, l):
    """HSIC₀ (Gretton et al., 2005): tr(K H L H) / (n − 1)², `H = I − 11ᵀ/n` the centering."""
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def hsic_unbiased(k, l):
    """HSIC₁ (Song et al., 2012, eq. 5), on Gram matrices with zeroed diagonals."""
    n = k.shape[0]
    k = k.copy()
    l = l.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    one = np.ones(n)
    return (
        np.trace(k @ l)
        + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ k @ l @ one)
    ) / (n * (n - 3))


def cka(x, y, hsic):
    """Kornblith et al. (2019), eq. 4: HSIC(K, L) / √(HSIC(K, K) HSIC(L, L))."""
    k, l = gram(x), gram(y)
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def minibatch_cka(x, y, batch):
    """Nguyen et al. (2021), eq. 3: HSIC₁ averaged over minibatches, in each of the three terms.
    The rows split in order into max(1, n // batch) batches (np.array_split)."""
    n = x.shape[0]
    parts = np.array_split(np.arange(n), max(1, n // batch))
    xy = np.mean([hsic_unbiased(gram(x[p]), gram(y[p])) for p in parts])
    xx = np.mean([hsic_unbiased(gram(x[p]), gram(x[p])) for p in parts])
    yy = np.mean([hsic_unbiased(gram(y[p]), gram(y[p])) for p in parts])
    return xy / np.sqrt(xx * yy)


def svd_reduce(x, threshold):
    """Raghu et al. (2017), step 1: center; keep the fewest top singular directions whose
    squared singular values reach `threshold` of the total; the data projected on them."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    share = np.cumsum(s**2) / np.sum(s**2)
    k = int(np.searchsorted(share, threshold - 1e-12) + 1)
    return x @ vt[:k].T


def inv_sqrt(c):
    w, v = np.linalg.eigh(c)
    return v @ np.diag(w**-0.5) @ v.T


def cca(x, y):
    """CCA from covariances (Hotelling, 1936): the canonical correlations are the singular values
    of Σxx^{-1/2} Σxy Σyy^{-1/2}."""
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    rho = np.linalg.svd(inv_sqrt(x.T @ x) @ (x.T @ y) @ inv_sqrt(y.T @ y), compute_uv=False)
    return np.clip(rho, 0.0, 1.0)


def svcca(x, y, threshold):
    return float(np.mean(cca(svd_reduce(x, threshold), svd_reduce(y, threshold))))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("input")
    p.add_argument("out")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threshold", type=float, default=0.99)
    p.add_argument("--mask-from")
    p.add_argument("--names")
    args = p.parse_args()
    data = np.load(args.input)
    names = args.names.split(",") if args.names else [
        n for n in data.files if n not in ("input_ids", "attention_mask", "sample_index") and not n.startswith("meta.")
    ]
    mask = np.load(args.mask_from)["attention_mask"].astype(bool) if args.mask_from else None
    rows = {}
    for name in names:
        a = data[name].astype(np.float64)
        if a.ndim == 3:
            a = a[mask]  # [N, T, H] → the real tokens' rows, sample by sample
        rows[name] = a.reshape(a.shape[0], -1)
    metrics = {
        "cka": lambda x, y: cka(x, y, hsic_biased),
        "unbiased": lambda x, y: cka(x, y, hsic_unbiased),
        "minibatch": lambda x, y: minibatch_cka(x, y, args.batch),
        "svcca": lambda x, y: svcca(x, y, args.threshold),
    }
    out = {"names": names}
    for metric, f in metrics.items():
        out[metric] = [[float(f(rows[a], rows[b])) for b in names] for a in names]
    with open(args.out, "w") as fh:
        json.dump(out, fh)


if __name__ == "__main__":
    main()
