#!/usr/bin/env python3
"""conv2d: kiln (bench/conv.c, built as bench_conv) against PyTorch on the
same shapes, float32, in one run. Times are medians of repeats, forward and
forward + backward (gradients of input, weight and bias).
Usage: conv.py [path/to/bench_conv] [--reps N] [--threads T] [--device cuda] [--tf32 0|1|both] [--check]
--device cuda: kiln on cuda:0 and torch on cuda, each repeat 10 calls then a
synchronize (ms per call); float32 runs once in full FP32 (KILN_ALLOW_TF32=0,
torch.backends.cudnn.allow_tf32 = False) and once with TF32 allowed on both
sides (torch's default), unless --tf32 picks one.
--check compares kiln's results with torch's on the ops' corner cases instead."""
import argparse
import os
import subprocess
import time

import torch
import torch.nn.functional as F

ap = argparse.ArgumentParser()
ap.add_argument("bench", nargs="?", default="build/bench_conv")
ap.add_argument("--reps", type=int, default=7)
ap.add_argument("--threads", type=int, default=0, help="both sides (0: all cores)")
ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where both sides run")
ap.add_argument("--tf32", default="both", choices=["0", "1", "both"], help="GPU float32 precision (both sides)")
ap.add_argument("--check", action="store_true", help="compare results with torch's instead of timing")
a = ap.parse_args()


def check():
    """kiln's results (bench_conv --check) against torch.nn.functional's, float64."""
    import tempfile

    import numpy as np

    torch.manual_seed(0)
    x = torch.randn(2, 4, 10, 11, dtype=torch.float64)
    w = torch.randn(6, 2, 4, 3, dtype=torch.float64)  # groups 2
    b = torch.randn(6, dtype=torch.float64)
    wt = torch.randn(4, 3, 3, 2, dtype=torch.float64)  # transposed: in 4, out 3 * 2
    ref = {
        "same": F.conv2d(x, w, b, padding="same", dilation=(2, 1), groups=2),
        "strided": F.conv2d(x, w, b, stride=(2, 3), padding=(1, 2), dilation=(1, 2), groups=2),
        "convt": F.conv_transpose2d(x, wt, None, stride=(2, 3), padding=(1, 0), output_padding=(1, 2), groups=2),
        "maxceil": F.max_pool2d(x, (3, 2), stride=2, padding=1, dilation=(2, 1), ceil_mode=True),
        "avgceil": F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        "avgceil_inc": F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=True),
        "adaptive": F.adaptive_avg_pool2d(x, (7, 5)),
        "nearest": F.interpolate(x, size=(5, 4), mode="nearest"),
        "nearest_up": F.interpolate(x, size=(23, 17), mode="nearest"),
        "bilinear": F.interpolate(x, size=(17, 23), mode="bilinear", align_corners=False),
        "bilinear_ac": F.interpolate(x, size=(7, 19), mode="bilinear", align_corners=True),
        "nearest_s": F.interpolate(x, scale_factor=1.7, mode="nearest"),
        "bilinear_s": F.interpolate(x, scale_factor=(0.6, 1.3), mode="bilinear", align_corners=False),
    }
    bad = 0
    with tempfile.TemporaryDirectory() as d:
        for name, t in (("x", x), ("w", w), ("b", b), ("wt", wt)):
            np.save(os.path.join(d, name + ".npy"), t.numpy())
        subprocess.run([a.bench, "--check", d], check=True)
        for name, want in ref.items():
            got = np.load(os.path.join(d, name + ".npy"))
            e = float("inf") if got.shape != tuple(want.shape) else float(np.abs(got - want.numpy()).max())
            bad += not e <= 1e-9
            print(f"{name:12s} {str(tuple(want.shape)):16s} max |kiln - torch| {e:.2e}")
    print("conv.py --check:", "all equal" if not bad else f"{bad} differ")
    raise SystemExit(1 if bad else 0)


if a.check:
    check()
gpu = a.device == "cuda"
threads = a.threads or os.cpu_count()
torch.set_num_threads(threads)
INNER = 10 if gpu else 1  # as bench_conv: on a GPU a repeat is INNER calls, then a synchronize
dev = torch.device(a.device)


def sync():
    if gpu:
        torch.cuda.synchronize()


def median_ms(fn):
    ts = []
    sync()
    for r in range(a.reps + 2):  # two warm-ups
        t0 = time.perf_counter()
        for _ in range(INNER):
            fn()
        sync()
        if r >= 2:
            ts.append((time.perf_counter() - t0) / INNER)
    ts.sort()
    return ts[len(ts) // 2] * 1e3


def bench(tf32):
    env = dict(os.environ, KILN_THREADS=str(threads))
    cmd = [a.bench, "--reps", str(a.reps)]
    if gpu:
        env["KILN_ALLOW_TF32"] = "1" if tf32 else "0"
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        cmd += ["--device", "cuda:0"]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    print(out.splitlines()[0])
    if gpu:
        print(f"# torch {torch.__version__} on {torch.cuda.get_device_name(0)}, cuDNN {torch.backends.cudnn.version()},"
              f" allow_tf32 {torch.backends.cudnn.allow_tf32}, benchmark {torch.backends.cudnn.benchmark}")
    else:
        print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, mkldnn {torch.backends.mkldnn.is_available()}")
    print(f"{'shape':14s} {'N,C->K,HxW,k':22s} {'kiln fwd':>9s} {'torch fwd':>9s} {'ratio':>6s}"
          f" {'kiln f+b':>9s} {'torch f+b':>9s} {'ratio':>6s}   (ms; ratio = torch / kiln, > 1: kiln faster)")
    for line in out.splitlines()[1:]:
        name, N, C, K, H, W, k, kf, kfb = line.split()
        N, C, K, H, W, k = map(int, (N, C, K, H, W, k))
        kf, kfb = float(kf), float(kfb)
        g = torch.Generator().manual_seed(1)
        x, w, b, gy = (torch.randn(*s, generator=g).to(dev) for s in ((N, C, H, W), (K, C, k, k), (K,), (N, K, H, W)))
        with torch.no_grad():
            tf = median_ms(lambda: F.conv2d(x, w, b, padding=k // 2))
        xr, wr, br = (t.clone().requires_grad_() for t in (x, w, b))

        def fb():
            for t in (xr, wr, br):
                t.grad = None
            F.conv2d(xr, wr, br, padding=k // 2).backward(gy)

        tfb = median_ms(fb)
        print(f"{name:14s} {f'{N},{C}->{K},{H}x{W},{k}':22s} {kf:9.3f} {tf:9.3f} {tf / kf:6.2f}"
              f" {kfb:9.3f} {tfb:9.3f} {tfb / kfb:6.2f}")


settings = [False] if not gpu else {"0": [False], "1": [True], "both": [False, True]}[a.tf32]
for i, tf32 in enumerate(settings):
    if i:
        print()
    bench(tf32)
