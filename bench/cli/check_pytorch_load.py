#!/usr/bin/env python3
"""Loads a kiln model with the Python `safetensors` package into the PyTorch
twin of its architecture (torch_train.Model, strict state_dict), runs it on a
CSV with the schema from the file's metadata, and compares the probabilities
with `kiln predict`'s.

    python bench/cli/check_pytorch_load.py MODEL.safetensors FILE.csv PREDS.csv
(needs `pip install safetensors`; PREDS.csv from kiln predict MODEL FILE.csv)
"""
import csv
import json
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_split as ks  # noqa: E402
import torch_train as tt  # noqa: E402


def main():
    model_path, data_path, preds_path = sys.argv[1:4]
    with safe_open(model_path, "pt") as f:
        spec = json.loads(f.metadata()["kiln_model"])
    header, data = tt.read_csv(data_path)
    cats = [(header.index(c["name"]), {v: i for i, v in enumerate(c["vocabulary"])}, c["embedding_dim"])
            for c in spec["categorical"]]
    nums = [(header.index(c["name"]), c["mean"], c["std"], c["missing_indicator"]) for c in spec["numeric"]]
    xc, xn = tt.encode(data, range(len(data)), cats, nums)
    a = spec["architecture"]
    model = tt.Model([(len(v) + 1, d) for (_, v, d) in cats], xn.shape[1], len(spec["classes"]), a["layers"],
                     a["dropout"], a["embedding_dropout"])
    model.load_state_dict(load_file(model_path), strict=True)
    model.eval()
    with torch.no_grad():
        p = torch.softmax(model(xc, xn), 1)
    with open(preds_path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    q = torch.tensor([[float(v) for v in r[1:]] for r in rows])
    diff = (p - q).abs().max().item()
    same = sum(spec["classes"][i] == r[0] for i, r in zip(p.argmax(1).tolist(), rows))
    print(json.dumps({"rows": len(rows), "max_abs_diff": diff, "same_class": same}))
    sys.exit(0 if diff < 1e-4 and same == len(rows) else 1)


if __name__ == "__main__":
    main()
