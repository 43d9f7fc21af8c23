#!/usr/bin/env python3
"""The seed program in PyTorch, step for step as examples/car_evaluation.c
(same data, codes, split, model, optimizer and epochs), timing the training
loop. Usage: torch_car.py [car.csv] [--epochs N] [--seed S] [--device cpu|cuda]
Prints 'training: X ms, Y ms per epoch' and 'test accuracy: A' like kiln."""
import argparse
import csv
import time

import torch
import torch.nn as nn

ap = argparse.ArgumentParser()
ap.add_argument("path", nargs="?", default="data/car/car.csv")
ap.add_argument("--epochs", type=int, default=500)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--device", default="cpu")
ap.add_argument("--threads", type=int, default=0)
a = ap.parse_args()
torch.manual_seed(a.seed)
if a.threads:
    torch.set_num_threads(a.threads)
dev = torch.device(a.device)

with open(a.path) as f:
    rows = list(csv.reader(f))
header, rows = rows[0], rows[1:]
cols = ["buying", "maint", "doors", "persons", "lug_boot", "safety"]
codes = []
for c in cols + ["class"]:
    j = header.index(c)
    vocab = sorted({r[j] for r in rows})  # pandas' category codes are sorted
    codes.append([vocab.index(r[j]) for r in rows])
sizes = [len(set(c)) for c in codes[:-1]]
x = torch.tensor(list(zip(*codes[:-1])), dtype=torch.int64)
y = torch.tensor(codes[-1], dtype=torch.int64)
n_test = int(len(rows) * 0.2)
n_train = len(rows) - n_test
x_train, y_train = x[:n_train].to(dev), y[:n_train].to(dev)
x_test, y_test = x[n_train:].to(dev), y[n_train:].to(dev)


class Model(nn.Module):
    def __init__(self, embedding_size, output_size, layers, p=0.4):
        super().__init__()
        self.all_embeddings = nn.ModuleList([nn.Embedding(ni, nf) for ni, nf in embedding_size])
        self.embedding_dropout = nn.Dropout(p)
        all_layers = []
        input_size = sum(nf for _, nf in embedding_size)
        for i in layers:
            all_layers += [nn.Linear(input_size, i), nn.ReLU(inplace=True), nn.BatchNorm1d(i), nn.Dropout(p)]
            input_size = i
        all_layers.append(nn.Linear(layers[-1], output_size))
        self.layers = nn.Sequential(*all_layers)

    def forward(self, x_categorical):
        x = torch.cat([e(x_categorical[:, i]) for i, e in enumerate(self.all_embeddings)], 1)
        return self.layers(self.embedding_dropout(x))


model = Model([(s, min(50, (s + 1) // 2)) for s in sizes], 4, [200, 100, 50], p=0.4).to(dev)
loss_function = nn.CrossEntropyLoss()
optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
t0 = time.perf_counter()
for i in range(a.epochs):
    y_pred = model(x_train)
    single_loss = loss_function(y_pred, y_train)
    optimizer.zero_grad()
    single_loss.backward()
    optimizer.step()
if dev.type == "cuda":
    torch.cuda.synchronize()
ms = (time.perf_counter() - t0) * 1e3
print(f"training: {ms:.1f} ms, {ms / max(a.epochs, 1):.3f} ms per epoch")
model.eval()
with torch.no_grad():
    acc = (model(x_test).argmax(1) == y_test).float().mean().item()
print(f"test accuracy: {acc:.4f}")
