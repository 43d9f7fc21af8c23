"""Load a model saved by `kiln train --out` into PyTorch, and back.

A kiln model file is a safetensors file: the tensors are the state dict of
the PyTorch module below (all_embeddings.N.weight, layers.N.weight, ...) and
the metadata key "kiln_model" holds the schema as JSON (columns, vocabularies,
statistics, classes, architecture). Nothing to build: needs torch only.

    from kiln_loader import load
    model = load("car.safetensors")          # a torch.nn.Module, in eval mode
    probs = model.predict_proba(rows)        # rows: dicts of column -> text
    model.save("car2.safetensors")           # readable by `kiln predict`

    python3 kiln_loader.py MODEL FILE.csv    # the CSV `kiln predict` writes
"""
import csv
import json
import math
import struct
import sys

import torch
from torch import nn

FORMAT = "kiln-tabular"
MISSING = {"", "?", "NA", "N/A", "na", "n/a", "NaN", "nan", "null", "NULL", "None"}
DTYPES = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8, "BOOL": torch.bool}
NAMES = {v: k for k, v in DTYPES.items()}
HEADER_LIMIT = 100_000_000  # the readers' limit, kiln's included


def read_safetensors(path):
    """(tensors by name, metadata dict) of a safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: not a safetensors file (too short)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > HEADER_LIMIT or 8 + n > len(data):
        raise ValueError(f"{path}: not a safetensors file (header length {n})")
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    body = memoryview(data)[8 + n:]
    tensors = {}
    for name, e in header.items():
        dt = DTYPES[e["dtype"]]
        a, b = e["data_offsets"]
        buf = bytearray(body[a:b])
        t = torch.frombuffer(buf, dtype=dt) if b > a else torch.empty(0, dtype=dt)
        tensors[name] = t.reshape(e["shape"])
    return tensors, meta


def write_safetensors(path, tensors, meta):
    """Writes tensors (name -> tensor) and metadata (str -> str), 8-byte aligned."""
    header, parts, offset = {"__metadata__": meta}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        parts.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    if len(text) > HEADER_LIMIT:
        raise ValueError(f"{path}: header of {len(text)} bytes is over the limit")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(parts))


class TabularModel(nn.Module):
    """kiln's tabular classifier: an embedding per categorical column (one
    extra row for unknown values), joined with the standardized numeric
    inputs, then Linear -> ReLU -> BatchNorm1d -> Dropout blocks and a Linear."""

    def __init__(self, schema):
        super().__init__()
        self.schema = schema
        arch = schema["architecture"]
        cats, nums = schema["categorical"], schema["numeric"]
        self.all_embeddings = nn.ModuleList(
            nn.Embedding(len(c["vocabulary"]) + 1, c["embedding_dim"]) for c in cats)
        self.embedding_dropout = nn.Dropout(arch["embedding_dropout"])
        width = sum(c["embedding_dim"] for c in cats) + sum(1 + n["missing_indicator"] for n in nums)
        layers = []
        for size in arch["layers"]:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.BatchNorm1d(size), nn.Dropout(arch["dropout"])]
            width = size
        self.regression = schema.get("task") == "regression"
        layers.append(nn.Linear(width, 1 if self.regression else len(schema["classes"])))
        self.layers = nn.Sequential(*layers)
        self.codes = [{v: i for i, v in enumerate(c["vocabulary"])} for c in cats]

    def forward(self, cat, num):
        parts = []
        if self.all_embeddings:
            parts.append(self.embedding_dropout(
                torch.cat([e(cat[:, i]) for i, e in enumerate(self.all_embeddings)], 1)))
        if num.shape[1]:
            parts.append(num)
        return self.layers(torch.cat(parts, 1))

    def encode(self, rows):
        """Category codes [N, C] and numeric inputs [N, K] of rows (dicts of
        column name -> cell text), as kiln encodes them."""
        cats, nums = self.schema["categorical"], self.schema["numeric"]
        n_num = sum(1 + f["missing_indicator"] for f in nums)
        cat = torch.zeros(len(rows), len(cats), dtype=torch.int64)
        num = torch.zeros(len(rows), n_num, dtype=torch.float32)
        for r, row in enumerate(rows):
            for i, f in enumerate(cats):
                v = row[f["name"]].strip(" \t")
                if v in MISSING:
                    code = f["missing_index"] if f["missing_index"] >= 0 else f["unknown_index"]
                else:
                    code = self.codes[i].get(v, f["unknown_index"])
                cat[r, i] = code
            k = 0
            for f in nums:
                v = row[f["name"]].strip(" \t")
                miss = v in MISSING
                x = f["mean"] if miss else float(v)
                z = (0.5 * x - 0.5 * f["mean"]) / (0.5 * f["std"])
                num[r, k] = max(-1e6, min(1e6, z))
                k += 1
                if f["missing_indicator"]:
                    num[r, k] = 1.0 if miss else 0.0
                    k += 1
        return cat, num

    @torch.no_grad()
    def predict_proba(self, rows):
        """Class probabilities [N, classes] of a classifier."""
        if self.regression:
            raise ValueError("a regression model predicts values: use predict()")
        self.eval()
        return torch.softmax(self(*self.encode(rows)).double(), 1)

    @torch.no_grad()
    def predict(self, rows):
        """A regression model's values [N], in the target's units (the network
        predicts the standardized target); a classifier's class names."""
        self.eval()
        out = self(*self.encode(rows)).double()
        if self.regression:
            return out[:, 0] * self.schema["target_std"] + self.schema["target_mean"]
        return [self.schema["classes"][i] for i in out.argmax(1).tolist()]

    def save(self, path):
        write_safetensors(path, self.state_dict(), {
            "format": "pt", "kiln_version": "python", "kiln_model": json.dumps(self.schema)})


def load(path):
    """The model in `path` as a TabularModel in eval mode."""
    tensors, meta = read_safetensors(path)
    if "kiln_model" not in meta:
        raise ValueError(f"{path}: not a kiln model (no kiln_model metadata)")
    schema = json.loads(meta["kiln_model"])
    if schema.get("format") != FORMAT:
        raise ValueError(f"{path}: not a kiln tabular model")
    if schema.get("format_version", 1) > 2:
        raise ValueError(f"{path}: model format version {schema['format_version']} is newer than this loader reads")
    model = TabularModel(schema)
    model.load_state_dict(tensors, strict=True)
    return model.eval()


def main(argv):
    if len(argv) != 3:
        print("usage: kiln_loader.py MODEL FILE.csv", file=sys.stderr)
        return 2
    model = load(argv[1])
    delim = model.schema.get("delimiter", ",")
    with open(argv[2], newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f, delimiter=delim))
    out = csv.writer(sys.stdout, lineterminator="\n")
    if model.regression:
        out.writerow(["prediction"])
        for v in model.predict(rows).tolist():
            out.writerow([f"{v:.9g}"])
        return 0
    probs = model.predict_proba(rows)
    classes = model.schema["classes"]
    out.writerow(["prediction"] + [f"prob_{c}" for c in classes])
    for p in probs.tolist():
        best = max(range(len(p)), key=lambda c: (p[c], -c))
        out.writerow([classes[best]] + [f"{q:.6g}" for q in p])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
