"""The reference for `hooks probe`: scikit-learn (StandardScaler fitted on each training fold,
LogisticRegression, RidgeClassifier) and numpy (the mass-mean probe), on the folds `hooks probe`
wrote, so that both sides fit the same rows.

    probe_reference.py task DIR
        writes DIR/task.jsonl: short review sentences with a `sentiment` (0/1, 15% flipped so
        that no layer is perfect), a `topic` (3 classes, 15% reassigned) and blank lines between
        some, and DIR/expected_lines.json: each sample's 0-based line.

    probe_reference.py check ACTS.npz LABELS FOLDS.npy OUT.json --method M [--C C] [--alpha A]
            [--tokens]
        for every layer of ACTS.npz (pooled [N, h], or with --tokens the real-token rows of
        [N, T, h]), each fold's test accuracy and AUROC and the probe fitted on every row's
        direction in the raw feature space, unit length. LABELS is `meta.KEY` of the .npz or a
        text file of one label per row.
"""
import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

POSITIVE = ["wonderful", "great", "delightful", "excellent", "lovely", "superb", "pleasant", "fine"]
NEGATIVE = ["terrible", "awful", "horrible", "dreadful", "poor", "disappointing", "nasty", "dull"]
TOPICS = {
    "food": ["pasta", "soup", "bread", "cake", "salad"],
    "sport": ["match", "race", "tournament", "final", "training"],
    "weather": ["rain", "storm", "sunshine", "wind", "fog"],
}
OPENINGS = ["The", "Honestly, the", "I thought the", "Everyone said the", "Yesterday the"]


def task(out: Path) -> None:
    rng = random.Random(1234)
    lines, expected = [], []
    for i in range(240):
        sentiment = rng.random() < 0.5
        topic = rng.choice(sorted(TOPICS))
        text = f"{rng.choice(OPENINGS)} {rng.choice(TOPICS[topic])} was {rng.choice(POSITIVE if sentiment else NEGATIVE)}."
        if rng.random() < 0.15:
            sentiment = not sentiment
        if rng.random() < 0.15:
            topic = rng.choice(sorted(TOPICS))
        if i % 50 == 7:
            lines.append("")
        expected.append(len(lines))
        lines.append(json.dumps({"text": text, "sentiment": int(sentiment), "topic": topic}))
    (out / "task.jsonl").write_text("\n".join(lines) + "\n")
    (out / "expected_lines.json").write_text(json.dumps(expected))


def rows(acts, name, tokens):
    x = acts[name].astype(np.float64)
    if tokens:
        mask = acts["attention_mask"].astype(bool)
        return x[mask]
    return x


def labels_of(acts, spec):
    if spec.startswith("meta."):
        return np.asarray(acts[spec])
    return np.array([line.strip() for line in Path(spec).read_text().splitlines()])


def check(args) -> None:
    acts = np.load(args.acts)
    y_raw = labels_of(acts, args.labels)
    classes = np.unique(y_raw)
    try:
        order = np.argsort(classes.astype(np.float64), kind="stable")
    except ValueError:
        order = np.argsort(classes, kind="stable")
    classes = classes[order]
    y = np.searchsorted(classes, y_raw, sorter=np.argsort(classes)) if False else np.array([int(np.where(classes == v)[0][0]) for v in y_raw])
    folds = np.load(args.folds)
    names = [n for n in acts.files if n not in ("input_ids", "attention_mask", "sample_index") and not n.startswith("meta.")]
    result = {}
    for name in names:
        x = rows(acts, name, args.tokens)
        assert len(x) == len(y) == len(folds), (name, x.shape, len(y), len(folds))
        accuracies, aurocs = [], []
        for fold in range(folds.max() + 1):
            train, test = folds != fold, folds == fold
            predict, score = fit(x[train], y[train], args)
            accuracies.append(float(np.mean(predict(x[test]) == y[test])))
            if len(classes) == 2:
                aurocs.append(float(roc_auc_score(y[test], score(x[test]))))
        direction = fit(x, y, args, direction=True)
        result[name] = {"fold_accuracies": accuracies, "aurocs": aurocs, "direction": direction.tolist()}
    Path(args.out).write_text(json.dumps(result))


def fit(x, y, args, direction=False):
    if args.method == "mean-diff":
        m0, m1 = x[y == 0].mean(0), x[y == 1].mean(0)
        d = m1 - m0
        threshold = (m0 + m1) / 2 @ d
        if direction:
            return d / np.linalg.norm(d)
        return (lambda z: (z @ d - threshold > 0).astype(int)), (lambda z: z @ d - threshold)
    scaler = StandardScaler().fit(x)
    if args.method == "logistic":
        # To the optimum, as hooks solves it (lbfgs' default tolerance stops short of it).
        model = LogisticRegression(C=args.C, tol=1e-12, max_iter=100000)
    else:
        model = RidgeClassifier(alpha=args.alpha)
    model.fit(scaler.transform(x), y)
    if direction:
        raw = np.atleast_2d(model.coef_) / scaler.scale_
        raw = raw / np.linalg.norm(raw, axis=1, keepdims=True)
        return raw[0] if raw.shape[0] == 1 else raw
    return (lambda z: model.predict(scaler.transform(z))), (lambda z: model.decision_function(scaler.transform(z)))


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("task")
    t.add_argument("dir")
    c = sub.add_parser("check")
    c.add_argument("acts")
    c.add_argument("labels")
    c.add_argument("folds")
    c.add_argument("out")
    c.add_argument("--method", default="logistic")
    c.add_argument("--C", type=float, default=1.0)
    c.add_argument("--alpha", type=float, default=1.0)
    c.add_argument("--tokens", action="store_true")
    args = parser.parse_args()
    if args.mode == "task":
        task(Path(args.dir))
    else:
        check(args)


if __name__ == "__main__":
    sys.exit(main())
