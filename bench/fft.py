#!/usr/bin/env python3
"""FFT: kiln (bench/fft.c, built as bench_fft) against the same transforms in
one run, with ratios (above 1: kiln is faster).
  --device cpu (default): numpy.fft and torch.fft on the CPU, medians of
    single calls.
  --device cuda:0: torch.fft on that GPU; a repeat is a burst of calls ended
    by torch.cuda.synchronize, divided by its length (as bench_fft does with
    kn_device_synchronize), median of repeats.
Usage: fft.py [path/to/bench_fft] [--device D] [--reps N] [--threads T]"""
import argparse
import os
import subprocess
import time

import numpy as np
import torch

ap = argparse.ArgumentParser()
ap.add_argument("bench", nargs="?", default="build/bench_fft")
ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
ap.add_argument("--reps", type=int, default=9)
ap.add_argument("--threads", type=int, default=0, help="kiln and torch on the CPU (0: all cores)")
a = ap.parse_args()
gpu = a.device != "cpu"
if gpu and not torch.cuda.is_available():
    raise SystemExit(f"fft.py: torch sees no CUDA device for --device {a.device}")
tdev = torch.device(a.device if ":" in a.device or not gpu else "cuda:0")

env = dict(os.environ)
if a.threads:
    env["KILN_THREADS"] = str(a.threads)
    torch.set_num_threads(a.threads)
run = subprocess.run([a.bench, "--reps", str(a.reps), "--device", a.device], env=env, capture_output=True, text=True)
if run.returncode:
    raise SystemExit(f"fft.py: {a.bench} failed: {run.stderr.strip()}")

NP = {"complex64": np.complex64, "complex128": np.complex128, "float32": np.float32}


def median_cpu(f):
    f()
    f()
    ts = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2] * 1e3


def median_gpu(f):
    for _ in range(3):
        f()
    torch.cuda.synchronize(tdev)
    t0 = time.perf_counter()
    for _ in range(3):
        f()
    torch.cuda.synchronize(tdev)
    per = (time.perf_counter() - t0) / 3
    burst = max(10, min(2000, int(0.02 / per) if per > 0 else 1000))
    ts = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        for _ in range(burst):
            f()
        torch.cuda.synchronize(tdev)
        ts.append((time.perf_counter() - t0) / burst)
    return sorted(ts)[len(ts) // 2] * 1e3


TORCH = {
    "fft": lambda x: torch.fft.fft(x, dim=-1),
    "fft0": lambda x: torch.fft.fft(x, dim=0),
    "ifft": lambda x: torch.fft.ifft(x, dim=-1),
    "rfft": lambda x: torch.fft.rfft(x, dim=-1),
    "irfft": lambda x, n: torch.fft.irfft(x, n, dim=-1),
    "fft2": lambda x: torch.fft.fft2(x),
}
NUMPY = {
    "fft": lambda x: np.fft.fft(x, axis=-1),
    "fft0": lambda x: np.fft.fft(x, axis=0),
    "ifft": lambda x: np.fft.ifft(x, axis=-1),
    "rfft": lambda x: np.fft.rfft(x, axis=-1),
    "irfft": lambda x, n: np.fft.irfft(x, n, axis=-1),
    "fft2": lambda x: np.fft.fft2(x),
}

rng = np.random.default_rng(0)
if gpu:
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(tdev)}; kiln on {a.device}")
    print(f"{'transform':<38} {'kiln ms':>9} {'torch ms':>9} {'torch/kiln':>10}")
else:
    print(f"{'transform':<38} {'kiln ms':>9} {'numpy ms':>9} {'torch ms':>9} {'np/kiln':>8} {'torch/kiln':>10}")
for line in run.stdout.split("\n"):
    if not line.strip():
        continue
    kind, dt, rows, cols, ms = line.split()
    rows, cols, ms = int(rows), int(cols), float(ms)
    width = cols // 2 + 1 if kind == "irfft" else cols  # irfft: the bins of cols reals
    x = rng.standard_normal((rows, width))
    if kind != "rfft":
        x = x + 1j * rng.standard_normal((rows, width))
    x = x.astype(NP[dt])
    tx = torch.from_numpy(x)
    name = f"{kind} {dt} [{rows}, {width}]" + (f" -> {cols}" if kind == "irfft" else "")
    args = (cols,) if kind == "irfft" else ()
    if gpu:
        tx = tx.to(tdev)
        t_torch = median_gpu(lambda: TORCH[kind](tx, *args))
        print(f"{name:<38} {ms:9.4f} {t_torch:9.4f} {t_torch / ms:10.2f}")
    else:
        t_np = median_cpu(lambda: NUMPY[kind](x, *args))
        t_torch = median_cpu(lambda: TORCH[kind](tx, *args))
        print(f"{name:<38} {ms:9.3f} {t_np:9.3f} {t_torch:9.3f} {t_np / ms:8.2f} {t_torch / ms:10.2f}")
