#!/usr/bin/env python3
"""CPU FFT: kiln (bench/fft.c, built as bench_fft) against numpy.fft and
torch.fft on the same transforms, in one run. Times are medians of repeats.
Usage: fft.py [path/to/bench_fft] [--reps N] [--threads T]"""
import argparse
import os
import subprocess
import time

import numpy as np
import torch

ap = argparse.ArgumentParser()
ap.add_argument("bench", nargs="?", default="build/bench_fft")
ap.add_argument("--reps", type=int, default=9)
ap.add_argument("--threads", type=int, default=0, help="kiln and torch (0: all cores)")
a = ap.parse_args()

env = dict(os.environ)
if a.threads:
    env["KILN_THREADS"] = str(a.threads)
    torch.set_num_threads(a.threads)
out = subprocess.run([a.bench, "--reps", str(a.reps)], env=env, check=True, capture_output=True, text=True).stdout

NP = {"complex64": np.complex64, "complex128": np.complex128, "float32": np.float32}


def median(f):
    f()
    f()
    ts = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2] * 1e3


rng = np.random.default_rng(0)
print(f"{'transform':<34} {'kiln ms':>9} {'numpy ms':>9} {'torch ms':>9} {'np/kiln':>8} {'torch/kiln':>10}")
for line in out.split("\n"):
    if not line.strip():
        continue
    kind, dt, batch, n, ms = line.split()
    batch, n, ms = int(batch), int(n), float(ms)
    x = rng.standard_normal((batch, n))
    if kind == "fft":
        x = x + 1j * rng.standard_normal((batch, n))
    x = x.astype(NP[dt])
    tx = torch.from_numpy(x)
    np_fn = np.fft.fft if kind == "fft" else np.fft.rfft
    t_fn = torch.fft.fft if kind == "fft" else torch.fft.rfft
    t_np = median(lambda: np_fn(x, axis=-1))
    t_torch = median(lambda: t_fn(tx, dim=-1))
    name = f"{kind} {dt} [{batch}, {n}]"
    print(f"{name:<34} {ms:9.3f} {t_np:9.3f} {t_torch:9.3f} {t_np / ms:8.2f} {t_torch / ms:10.2f}")
