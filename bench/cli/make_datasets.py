#!/usr/bin/env python3
"""Writes the benchmark CSVs that are not stored in data/ into OUTDIR:
scikit-learn's bundled sets (breast cancer, wine, iris, diabetes binned into
three classes, a copy of breast cancer with 10% of its cells blanked) and
digits with a header row (from data/digits/digits.csv.gz).

    /usr/bin/python3 bench/cli/make_datasets.py OUTDIR
"""
import csv
import gzip
import os
import random
import sys

from sklearn import datasets


def write(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def fmt(v):
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


def main():
    out = sys.argv[1]
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    os.makedirs(out, exist_ok=True)
    for name, loader in [("breast_cancer", datasets.load_breast_cancer), ("wine", datasets.load_wine),
                         ("iris", datasets.load_iris)]:
        d = loader()
        names = [n.replace(" ", "_") for n in d.feature_names]
        rows = [[fmt(v) for v in x] + [d.target_names[t]] for x, t in zip(d.data, d.target)]
        write(os.path.join(out, name + ".csv"), names + ["target"], rows)
        if name == "breast_cancer":  # numeric with missing values
            rng = random.Random(0)
            miss = [[("" if rng.random() < 0.1 else v) for v in r[:-1]] + [r[-1]] for r in rows]
            write(os.path.join(out, "breast_cancer_missing.csv"), names + ["target"], miss)
    d = datasets.load_diabetes(scaled=False)
    cut = sorted(d.target)
    lo, hi = cut[len(cut) // 3], cut[2 * len(cut) // 3]
    label = lambda t: "low" if t < lo else ("medium" if t < hi else "high")
    rows = [[fmt(v) for v in x] + [label(t)] for x, t in zip(d.data, d.target)]
    write(os.path.join(out, "diabetes3.csv"), list(d.feature_names) + ["progression"], rows)
    with gzip.open(os.path.join(root, "data", "digits", "digits.csv.gz"), "rt") as f:
        rows = list(csv.reader(f))
    write(os.path.join(out, "digits.csv"), ["p%d" % i for i in range(64)] + ["digit"], rows)


if __name__ == "__main__":
    main()
