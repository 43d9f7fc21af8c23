#!/usr/bin/env python3
"""The PyTorch equivalent of `kiln train`, step for step, for the benchmark:
the same split (kiln_split.py), column typing, vocabularies, standardization,
missing-value handling, model, recipes and training loop. Prints one JSON
line with the test accuracy and the training time.

    /usr/bin/python3 bench/cli/torch_train.py FILE.csv --target COL
        [--recipe default|tutorial] [--seed N] [--threads N]
"""
import argparse
import csv
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_split as ks  # noqa: E402


def read_csv(path):
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f) if r]
    return rows[0], rows[1:]


def fit_columns(header, data, target, train):
    """Feature columns as kiln's table_fit: categorical first, then numeric."""
    cats, nums = [], []
    for j, name in enumerate(header):
        if name == target:
            continue
        vals = [r[j] for r in data]
        present = [v for v in vals if not ks.is_missing(v)]
        if not present:
            continue
        if all(ks.parse_number(v) is not None for v in present):
            xs = [ks.parse_number(data[i][j]) for i in train]
            xs_ok = [x for x in xs if x is not None]
            mean = sum(xs_ok) / len(xs_ok) if xs_ok else 0.0
            std = math.sqrt(sum((x - mean) ** 2 for x in xs_ok) / len(xs_ok)) if xs_ok else 0.0
            if not (std > 1e-12 * (1 + abs(mean))) or not math.isfinite(std):
                std = 1.0
            nums.append((j, mean, std, len(xs_ok) < len(xs)))
        else:
            key = lambda v: "" if ks.is_missing(v) else v.strip(" \t")
            vocab = sorted({key(data[i][j]) for i in train})
            if len(vocab) > 50 and len(vocab) * 10 > len(train) * 9:
                continue  # an identifier column
            cats.append((j, {v: c for c, v in enumerate(vocab)}, min(50, (len(vocab) + 1) // 2)))
    return cats, nums


def encode(data, rows, cats, nums):
    xc = [[0] * len(cats) for _ in rows]
    xn = [[0.0] * sum(1 + ind for (_, _, _, ind) in nums) for _ in rows]
    for k, i in enumerate(rows):
        r = data[i]
        for c, (j, vocab, _) in enumerate(cats):
            v = r[j]
            xc[k][c] = vocab.get("" if ks.is_missing(v) else v.strip(" \t"), len(vocab))
        q = 0
        for (j, mean, std, ind) in nums:
            v = ks.parse_number(r[j]) if not ks.is_missing(r[j]) else None
            xn[k][q] = ((v if v is not None else mean) - mean) / std
            q += 1
            if ind:
                xn[k][q] = 1.0 if v is None else 0.0
                q += 1
    width = sum(1 + ind for (_, _, _, ind) in nums)
    return (torch.tensor(xc, dtype=torch.long).reshape(len(rows), len(cats)),
            torch.tensor(xn, dtype=torch.float32).reshape(len(rows), width))


class Model(nn.Module):
    """The tutorial's model; the same state_dict names as kiln's."""

    def __init__(self, emb_sizes, n_num, out, layers, p, p_emb):
        super().__init__()
        self.all_embeddings = nn.ModuleList([nn.Embedding(n, d) for n, d in emb_sizes])
        self.embedding_dropout = nn.Dropout(p_emb)
        mods, d_in = [], sum(d for _, d in emb_sizes) + n_num
        for h in layers:
            mods += [nn.Linear(d_in, h), nn.ReLU(), nn.BatchNorm1d(h), nn.Dropout(p)]
            d_in = h
        mods.append(nn.Linear(d_in, out))
        self.layers = nn.Sequential(*mods)
        self.n_cat, self.n_num = len(emb_sizes), n_num

    def forward(self, xc, xn):
        parts = []
        if self.n_cat:
            parts.append(self.embedding_dropout(torch.cat([e(xc[:, i]) for i, e in enumerate(self.all_embeddings)], 1)))
        if self.n_num:
            parts.append(xn)
        return self.layers(torch.cat(parts, 1))


def auto_batch(n):
    b = 32
    while b < 512 and b * 40 < n:
        b *= 2
    return b


def class_weights(y, k):
    cnt = [0] * k
    for t in y:
        cnt[t] += 1
    nz = [c for c in cnt if c]
    if max(cnt) <= 3 * min(nz):
        return None
    n = len(y)
    w = [math.sqrt(n / (k * c)) if c else 1.0 for c in cnt]
    norm = sum(c / n * wi for c, wi in zip(cnt, w))
    return torch.tensor([wi / norm for wi in w], dtype=torch.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--target", required=True)
    ap.add_argument("--recipe", default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--epochs", type=int)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    tut = a.recipe == "tutorial"
    header, data = read_csv(a.file)
    tcol = header.index(a.target)
    rows, y_all, classes = ks.target_codes([r[tcol] for r in data])
    k = len(classes)
    train, val, test = ks.stratified_split(rows, y_all, k, 0.2, 0.0 if tut else 0.1, a.seed)
    code = dict(zip(rows, y_all))
    cats, nums = fit_columns(header, data, a.target, train)
    sets = {}
    for name, rs in (("train", train), ("val", val), ("test", test)):
        xc, xn = encode(data, rs, cats, nums)
        sets[name] = (xc, xn, torch.tensor([code[i] for i in rs], dtype=torch.long))
    n_num = sets["train"][1].shape[1]
    layers = [200, 100, 50] if tut else [256, 128]
    p = 0.4 if tut else 0.1
    model = Model([(len(v) + 1, d) for (_, v, d) in cats], n_num, k, layers, p, 0.4 if tut else 0.05)
    lr = 0.001 if tut else 0.003
    opt = torch.optim.Adam(model.parameters(), lr=lr) if tut else torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    epochs = a.epochs or (500 if tut else 300)
    cw = None if tut else class_weights(sets["train"][2].tolist(), k)
    xc, xn, y = sets["train"]
    n = len(y)
    bs = n if tut else auto_batch(n)
    rng = ks.Rng(a.seed ^ 0x6B696C6E2D626174)
    perm = list(range(n))
    best, best_loss, since_best, since_lr, cur_lr, patience = None, math.inf, 0, 0, lr, 0 if tut else 20
    t0 = time.perf_counter()
    epoch = 0
    for epoch in range(1, epochs + 1):
        model.train()
        if bs < n:
            rng.shuffle(perm)
        for i in range(0, n, bs):
            idx = torch.tensor(perm[i:i + bs]) if bs < n else slice(None)
            if bs < n and len(perm[i:i + bs]) < 2:
                break
            opt.zero_grad()
            loss = F.cross_entropy(model(xc[idx], xn[idx]), y[idx], weight=cw)
            loss.backward()
            opt.step()
        if tut:
            continue
        model.eval()
        with torch.no_grad():
            vl = F.cross_entropy(model(sets["val"][0], sets["val"][1]), sets["val"][2], weight=cw).item()
        if vl < best_loss - 1e-4 * abs(best_loss) or math.isinf(best_loss):
            best_loss, since_best, since_lr = vl, 0, 0
            best = {kk: v.clone() for kk, v in model.state_dict().items()}
        else:
            since_best += 1
            since_lr += 1
        if since_best >= patience:
            break
        if since_lr >= max(patience // 3, 2) and cur_lr > lr / 64:
            cur_lr *= 0.5
            for g in opt.param_groups:
                g["lr"] = cur_lr
            since_lr = 0
    if best is not None:
        model.load_state_dict(best)
    seconds = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        pred = model(sets["test"][0], sets["test"][1]).argmax(1)
    acc = (pred == sets["test"][2]).float().mean().item()
    print(json.dumps({"accuracy": acc, "seconds": seconds, "epochs": epoch, "train": len(train),
                      "validation": len(val), "test": len(test), "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
