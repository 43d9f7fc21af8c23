"""The CNN of examples/fashion_mnist.c in PyTorch, eager, for the same-machine
comparison: two conv(3x3, pad 1) + ReLU + max-pool(2) blocks (1->32->64), then
Linear(3136, 128) + ReLU + Linear(128, 10); Adam 1e-3, shuffled batches of 64,
the loss read back every step as the kiln program does.

    python3 bench/vision/fashion_mnist.py DIR [--epochs N] [--device cuda|cpu]
"""
import argparse, gzip, struct, time

import numpy as np
import torch
from torch import nn


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(d, split, dev):
    x = torch.tensor(idx(f"{d}/{split}-images-idx3-ubyte.gz"), dtype=torch.float32).unsqueeze(1) / 255
    y = torch.tensor(idx(f"{d}/{split}-labels-idx1-ubyte.gz"), dtype=torch.int64)
    return ((x - 0.2860) / 0.3530).to(dev), y.to(dev)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    torch.manual_seed(0)
    xtr, ytr = load(a.dir, "train", a.device)
    xte, yte = load(a.dir, "t10k", a.device)
    model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10)).to(a.device)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    lossf = nn.CrossEntropyLoss()
    print(f"torch {torch.__version__} on {a.device}")
    for epoch in range(1, a.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(len(xtr), device=a.device)
        total = 0.0
        for i in range(0, len(xtr), 64):
            j = perm[i:i + 64]
            loss = lossf(model(xtr[j]), ytr[j])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(j)
        dt = time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            right = sum(int((model(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum()) for i in range(0, len(xte), 1000))
        print(f"epoch {epoch}: train loss {total / len(xtr):.4f}, test accuracy {right / len(xte):.4f}, {dt:.1f} s")


if __name__ == "__main__":
    main()
