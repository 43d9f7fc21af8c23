#!/usr/bin/env python3
"""A reference point for `kiln train`'s accuracy that is not a neural network:
scikit-learn's HistGradientBoostingClassifier (categorical columns as native
categories, numeric columns as they are, missing values left missing) on
exactly kiln's split (kiln_split.py, the training and validation rows for
training, the test rows for the score; 100 boosting rounds, no early stopping).

    /usr/bin/python3 bench/cli/sklearn_reference.py FILE.csv --target COL [--seeds 3]
"""
import argparse
import json
import os
import sys

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_split as ks  # noqa: E402
import torch_train as tt  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--target", required=True)
    ap.add_argument("--seeds", type=int, default=3)
    a = ap.parse_args()
    header, data = tt.read_csv(a.file)
    tcol = header.index(a.target)
    rows, y_all, classes = ks.target_codes([r[tcol] for r in data])
    code = dict(zip(rows, y_all))
    accs = []
    for seed in range(a.seeds):
        train, val, test = ks.stratified_split(rows, y_all, len(classes), 0.2, 0.1, seed)
        fit = train + val
        cats, nums = tt.fit_columns(header, data, a.target, fit)

        def matrix(rs):
            x = np.full((len(rs), len(cats) + len(nums)), np.nan)
            for k, i in enumerate(rs):
                for c, (j, vocab, _) in enumerate(cats):
                    v = data[i][j]
                    x[k, c] = vocab.get("" if ks.is_missing(v) else v.strip(" \t"), np.nan)
                for q, (j, _, _, _) in enumerate(nums):
                    v = ks.parse_number(data[i][j]) if not ks.is_missing(data[i][j]) else None
                    x[k, len(cats) + q] = np.nan if v is None else v
            return x

        mask = [c < len(cats) for c in range(len(cats) + len(nums))]
        cat_ok = all(len(v) <= 255 for (_, v, _) in cats)
        m = HistGradientBoostingClassifier(categorical_features=mask if any(mask) and cat_ok else None,
                                           early_stopping=False, random_state=seed)
        m.fit(matrix(fit), [code[i] for i in fit])
        accs.append(float((m.predict(matrix(test)) == np.array([code[i] for i in test])).mean()))
    print(json.dumps({"file": a.file, "accuracy_mean": sum(accs) / len(accs), "accuracy": accs}))


if __name__ == "__main__":
    main()
