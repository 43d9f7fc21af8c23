"""One training step of the Fashion-MNIST CNN, kiln against PyTorch eager, in
one run on one machine. kiln's side is bench_cnn_step (bench/cnn_step.c):
eager, and captured once then replayed (CUDA graphs). PyTorch's side is the
same network, loss and optimizer, eager, timed the same way: warm-up, then N
steps with one synchronisation at the end.

PyTorch's convolutions use TF32 by default on NVIDIA GPUs, kiln's do not
unless KILN_ALLOW_TF32=1; this script sets PyTorch to match kiln (both
flags), so both sides do the same arithmetic. --torch-defaults keeps
PyTorch's own defaults instead (printed).

    python3 bench/cnn_step.py BUILD/bench_cnn_step [--device cuda] [--batch 256] [--steps 200]
"""
import argparse, os, subprocess, time

import torch
from torch import nn


def torch_step_ms(dev, batch, steps):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10)).to(dev)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    lossf = nn.CrossEntropyLoss()
    x = torch.randn(batch, 1, 28, 28, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)

    def step():
        opt.zero_grad()
        loss = lossf(model(x), y)
        loss.backward()
        opt.step()

    sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
    for _ in range(20):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - t0) * 1e3 / steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kiln")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--torch-defaults", action="store_true")
    a = ap.parse_args()
    kdev = "cuda:0" if a.device == "cuda" else a.device
    if not a.torch_defaults:
        tf32 = os.environ.get("KILN_ALLOW_TF32", "0") not in ("", "0")
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
    out = subprocess.run([a.kiln, kdev, "--batch", str(a.batch), "--steps", str(a.steps)], check=True,
                         capture_output=True, text=True).stdout.split()
    k = dict(zip(out[0::2], map(float, out[1::2])))
    t = torch_step_ms(a.device, a.batch, a.steps)
    print(f"torch {torch.__version__} on {a.device}, cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
          f"matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}; batch {a.batch}, {a.steps} steps")
    print(f"{'':24} {'ms/step':>9} {'vs torch eager':>15}")
    print(f"{'torch eager':24} {t:9.3f} {1.0:15.2f}")
    print(f"{'kiln eager':24} {k['eager_ms']:9.3f} {t / k['eager_ms']:15.2f}")
    if k["graph_ms"] == k["graph_ms"]:  # not NaN: the device captured
        print(f"{'kiln graph replay':24} {k['graph_ms']:9.3f} {t / k['graph_ms']:15.2f}")
        print(f"(checked with deterministic algorithms: replayed losses within {k['max_loss_diff']:.2g} of the "
              f"eager ones over 20 steps, two eager runs within {k['eager_repeat_diff']:.2g})")


if __name__ == "__main__":
    main()
