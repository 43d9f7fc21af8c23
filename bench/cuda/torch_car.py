"""The seed program in PyTorch, on the GPU, for the ratio against kiln: the
tutorial's model for the UCI Car Evaluation data (embeddings, Linear -> ReLU
-> BatchNorm1d -> Dropout(0.4) blocks of 200, 100, 50, Linear to 4 classes),
Adam (lr 0.001), full batch on the first 80 % of the rows, as
examples/car_evaluation.c does it.

Two ways: eager, and the whole step captured in one CUDA graph (Adam with
capturable=True, PyTorch's documented whole-network capture). Prints
   torch_car <mode> <total ms> <ms per epoch> <final loss> <test accuracy>
where for the graph the total includes warm-up and capture and the per-epoch
figure is the replays alone."""
import csv
import sys
import time

import torch
import torch.nn as nn

COLUMNS = ["buying", "maint", "doors", "persons", "lug_boot", "safety"]


def load(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    codes = []
    for col in COLUMNS + ["class"]:
        vocab = sorted({r[col] for r in rows})  # pandas' category codes
        codes.append([vocab.index(r[col]) for r in rows])
    x = torch.tensor(list(zip(*codes[:6])), dtype=torch.int64)
    y = torch.tensor(codes[6], dtype=torch.int64)
    cards = [max(c) + 1 for c in codes[:6]]
    return x, y, cards, max(codes[6]) + 1


class Model(nn.Module):
    def __init__(self, cards, out, layers, p=0.4):
        super().__init__()
        sizes = [(n, min(50, (n + 1) // 2)) for n in cards]
        self.all_embeddings = nn.ModuleList([nn.Embedding(n, d) for n, d in sizes])
        self.embedding_dropout = nn.Dropout(p)
        inp, seq = sum(d for _, d in sizes), []
        for width in layers:
            seq += [nn.Linear(inp, width), nn.ReLU(inplace=True), nn.BatchNorm1d(width), nn.Dropout(p)]
            inp = width
        seq.append(nn.Linear(inp, out))
        self.layers = nn.Sequential(*seq)

    def forward(self, x):
        h = torch.cat([e(x[:, i]) for i, e in enumerate(self.all_embeddings)], 1)
        return self.layers(self.embedding_dropout(h))


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    model.train()
    return acc


def run(mode, path, epochs):
    torch.manual_seed(0)
    x, y, cards, classes = load(path)
    n_test = int(len(x) * 0.2)
    dev = torch.device("cuda")
    x_train, y_train = x[:-n_test].to(dev), y[:-n_test].to(dev)
    x_test, y_test = x[-n_test:].to(dev), y[-n_test:].to(dev)
    model = Model(cards, classes, [200, 100, 50]).to(dev)
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=0.001, capturable=mode == "graph")
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    if mode == "eager":
        for _ in range(epochs):
            loss = loss_fn(model(x_train), y_train)
            opt.zero_grad()
            loss.backward()
            opt.step()
        torch.cuda.synchronize()
        total = (time.perf_counter() - t0) * 1e3
        per = total / epochs
    else:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        warm = 3
        with torch.cuda.stream(side):  # warm-up on a side stream, as documented
            for _ in range(warm):
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(x_train), y_train)
                loss.backward()
                opt.step()
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(g):
            loss = loss_fn(model(x_train), y_train)
            loss.backward()
            opt.step()
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        for _ in range(epochs - warm):
            g.replay()
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        total = (t2 - t0) * 1e3
        per = (t2 - t1) * 1e3 / (epochs - warm)
    final = loss.item()
    print(f"torch_car {mode} {total:.1f} {per:.4f} {final:.6f} {accuracy(model, x_test, y_test):.4f}", flush=True)


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else "data/car/car.csv"
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    for mode in ("eager", "graph"):
        run(mode, path, epochs)
