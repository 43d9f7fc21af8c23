#!/usr/bin/env python3
"""float32 square matmul: kiln on GPU devices (bench/matmul_device.c, built as
bench_matmul_device) against torch.matmul on CUDA, in one run, with ratios.
torch keeps full float32 (TF32 off, its default for matmul), as kiln does.
Usage: matmul_device.py [path/to/bench_matmul_device] [--devices cuda:0,vulkan:0] [--sizes 1024,4096]"""
import argparse
import subprocess
import time

import torch

ap = argparse.ArgumentParser()
ap.add_argument("bench", nargs="?", default="build/bench_matmul_device")
ap.add_argument("--devices", default="cuda:0,vulkan:0")
ap.add_argument("--sizes", default="512,1024,2048,4096")
a = ap.parse_args()
sizes = [int(s) for s in a.sizes.split(",")]
torch.backends.cuda.matmul.allow_tf32 = False


def torch_ms(n):
    x = torch.randn(n, n, device="cuda")
    y = torch.randn(n, n, device="cuda")
    torch.matmul(x, y)
    torch.cuda.synchronize()
    reps, t0 = 0, time.perf_counter()
    while True:
        torch.matmul(x, y)
        reps += 1
        torch.cuda.synchronize()
        t = time.perf_counter() - t0
        if t > 0.5 or reps >= 200:
            return t / reps * 1e3


ref = {n: torch_ms(n) for n in sizes}
print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
print(f"{'n':>6} {'torch ms':>9} {'GFLOP/s':>8}  " + "  ".join(f"{d + ' ms':>12} {'GFLOP/s':>8} {'vs torch':>8}" for d in a.devices.split(",")))
rows = {n: [] for n in sizes}
for dev in a.devices.split(","):
    out = subprocess.run([a.bench, dev] + [str(n) for n in sizes], capture_output=True, text=True)
    if out.returncode:
        print(f"{dev}: {out.stderr.strip()}")
    for line in out.stdout.splitlines():
        f = line.split()
        rows[int(f[1])].append((float(f[2]), float(f[4]), f[7]))
for n in sizes:
    g = 2 * n ** 3 / ref[n] * 1e-6
    cells = "  ".join(f"{ms:12.3f} {gf:8.0f} {ref[n] / ms:8.2f}" for ms, gf, _ in rows[n])
    errs = ", ".join(e for _, _, e in rows[n])
    print(f"{n:6d} {ref[n]:9.3f} {g:8.0f}  {cells}   (max rel err {errs})")
