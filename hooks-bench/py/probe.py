"""The scikit-learn side of section 11 of `make bench`: the probe a researcher writes by hand, on
the folds `hooks probe` chose, as `hooks probe --control shuffle` runs it.

    probe.py FEATURES.npz LABELS.txt FOLDS.npy
        For the one array `h` of FEATURES.npz ([n, h] float32) and the labels of LABELS.txt (one
        per line): for each fold, StandardScaler fitted on the training rows and
        LogisticRegression() (lbfgs, C=1, its default tolerance) on them, scored on the test
        rows; the same for the labels permuted by a seeded generator (the shuffle control); then
        one fit on every row (the direction). Prints one JSON line: the mean accuracy and the
        control's.

The caller times the whole process, imports and loading included, as `hooks probe` is timed.
Threads follow OMP_NUM_THREADS / OPENBLAS_NUM_THREADS, which the caller sets.
"""
import json
import sys

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler


def main():
    features, labels, folds = sys.argv[1:4]
    x = np.load(features)["h"].astype(np.float64)
    y_raw = np.array([line.strip() for line in open(labels, encoding="utf-8") if line.strip()])
    y = np.searchsorted(np.unique(y_raw), y_raw)
    folds = np.load(folds)

    def cross_validate(labels):
        accuracies = []
        for fold in range(folds.max() + 1):
            train, test = folds != fold, folds == fold
            scaler = StandardScaler().fit(x[train])
            model = LogisticRegression(C=1.0).fit(scaler.transform(x[train]), labels[train])
            accuracies.append(np.mean(model.predict(scaler.transform(x[test])) == labels[test]))
        return float(np.mean(accuracies))

    accuracy = cross_validate(y)
    control = cross_validate(np.random.default_rng(0).permutation(y))
    scaler = StandardScaler().fit(x)
    LogisticRegression(C=1.0).fit(scaler.transform(x), y)
    print(json.dumps({"accuracy": accuracy, "control_accuracy": control}))


if __name__ == "__main__":
    main()
