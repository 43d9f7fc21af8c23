#!/usr/bin/env python3
"""A reference for `kiln train`'s regression: scikit-learn's MLPRegressor
(hidden layers 256,128 as kiln's default recipe, Adam, early stopping on its
own 10 % of the fitting rows) on exactly kiln's split: the rows are stratified
by the target's quantile bin as table.c does (kiln_split.py), the training and
validation rows fit, the test rows score. Categorical columns one-hot, numeric
ones standardized with the fitting rows' statistics (missing: the mean plus an
indicator). Prints R^2 per seed for scikit-learn and for kiln, and the mean.

    /usr/bin/python3 bench/cli/sklearn_regression.py KILN FILE.csv --target COL [--seeds 3]

Needs scikit-learn (Debian: python3-sklearn); from PyPI, install it in a virtual
environment: PyPI's wheels bring a numpy 2 that Debian's torch 1.13 cannot load.
"""
import argparse
import bisect
import json
import os
import subprocess
import sys

import numpy as np
from sklearn.metrics import r2_score
from sklearn.neural_network import MLPRegressor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_split as ks  # noqa: E402
import torch_train as tt  # noqa: E402

STRATA = 10  # REG_STRATA in tools/kiln/cli.h


def quantile_bins(values):
    s = sorted(values)
    return [bisect.bisect_left(s, v) * STRATA // len(values) for v in values]


def features(data, rows, cats, nums):
    cols = sum(len(v) + 1 for _, v, _ in cats) + sum(1 + ind for (_, _, _, ind) in nums)
    x = np.zeros((len(rows), cols))
    for k, i in enumerate(rows):
        c = 0
        for j, vocab, _ in cats:
            v = data[i][j]
            x[k, c + vocab.get("" if ks.is_missing(v) else v.strip(" \t"), len(vocab))] = 1
            c += len(vocab) + 1
        for j, mean, std, ind in nums:
            v = None if ks.is_missing(data[i][j]) else ks.parse_number(data[i][j])
            x[k, c] = 0 if v is None else (v - mean) / std
            c += 1
            if ind:
                x[k, c] = v is None
                c += 1
    return x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kiln")
    ap.add_argument("file")
    ap.add_argument("--target", required=True)
    ap.add_argument("--seeds", type=int, default=3)
    a = ap.parse_args()
    header, data = tt.read_csv(a.file)
    tcol = header.index(a.target)
    rows = [i for i, r in enumerate(data) if not ks.is_missing(r[tcol])]
    y = {i: ks.parse_number(data[i][tcol]) for i in rows}
    bins = quantile_bins([y[i] for i in rows])
    sk, kn = [], []
    for seed in range(a.seeds):
        train, val, test = ks.stratified_split(rows, bins, STRATA, 0.2, 0.1, seed)
        fit = train + val
        cats, nums = tt.fit_columns(header, data, a.target, fit)
        ym = np.mean([y[i] for i in fit])
        ys = np.std([y[i] for i in fit])
        model = MLPRegressor(hidden_layer_sizes=(256, 128), early_stopping=True, max_iter=300, random_state=seed)
        model.fit(features(data, fit, cats, nums), (np.array([y[i] for i in fit]) - ym) / ys)
        pred = model.predict(features(data, test, cats, nums)) * ys + ym
        sk.append(r2_score([y[i] for i in test], pred))
        out = subprocess.run([a.kiln, "train", a.file, "--target", a.target, "--task", "regression", "--seed",
                              str(seed), "--json"], capture_output=True, text=True, check=True)
        kn.append(json.loads(out.stdout)["test"]["r2"])
        print(f"seed {seed}: scikit-learn MLPRegressor R^2 {sk[-1]:.4f}, kiln R^2 {kn[-1]:.4f}")
    print(f"mean over {a.seeds} seeds: scikit-learn {np.mean(sk):.4f}, kiln {np.mean(kn):.4f}, "
          f"difference {np.mean(kn) - np.mean(sk):+.4f}")


if __name__ == "__main__":
    main()
