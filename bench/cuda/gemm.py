"""GEMM through kiln and torch.matmul in one process, alternately.

A large GEMM on an H100/H200 runs at the card's power limit: its clock, and
so its speed, depends on how hot the chip is and what ran just before. Two
separate programs run one after the other measure different conditions, so
kiln (through the shared library built from bench/cuda/gemm_cuda.c) and
PyTorch take turns here: rounds of `iterations` products each, kiln first in
even rounds and PyTorch first in odd ones, on the same GPU.

    python3 bench/cuda/gemm.py path/to/libkiln_gemm_bench.so [n ...]

Prints, per dtype (f32 = full FP32, tf32 = FP32 inputs on TF32 tensor cores,
bf16) and size, the median ms per product over the rounds:
    kiln_gemm <dtype> <n> <ms> <TFLOP/s> <kiln's max relative error on a sample>
    torch_gemm <dtype> <n> <ms> <TFLOP/s>
    spread <dtype> <n> kiln <min>-<max> torch <min>-<max>   (TFLOP/s over the rounds)
"""
import ctypes
import statistics
import sys
import time

import torch

ROUNDS = 10


def torch_time(a, b, calls):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        torch.matmul(a, b)
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3 / calls


def main():
    lib = ctypes.CDLL(sys.argv[1])
    lib.kgb_open.argtypes = [ctypes.c_char_p, ctypes.c_longlong]
    lib.kgb_time.argtypes = [ctypes.c_int]
    lib.kgb_time.restype = ctypes.c_double
    lib.kgb_error.restype = ctypes.c_double
    sizes = [int(s) for s in sys.argv[2:]] or [4096, 8192]
    for n in sizes:
        calls = 20 if n <= 4096 else 5
        flop = 2 * n ** 3
        for dtype in ("f32", "tf32", "bf16"):
            torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
            t = torch.bfloat16 if dtype == "bf16" else torch.float32
            g = torch.Generator(device="cuda").manual_seed(1)
            a = torch.randn(n, n, device="cuda", dtype=t, generator=g)
            b = torch.randn(n, n, device="cuda", dtype=t, generator=g)
            for _ in range(3):
                torch.matmul(a, b)
            if lib.kgb_open(dtype.encode(), n) != 0:
                sys.exit(f"gemm.py: kiln could not set up {dtype} {n}")
            kiln, ref = [], []
            for r in range(ROUNDS):
                for side in ((0, 1) if r % 2 == 0 else (1, 0)):
                    if side == 0:
                        kiln.append(lib.kgb_time(calls))
                    else:
                        ref.append(torch_time(a, b, calls))
            err = lib.kgb_error()
            lib.kgb_close()
            del a, b
            torch.cuda.empty_cache()
            km, tm = statistics.median(kiln), statistics.median(ref)
            print(f"kiln_gemm {dtype} {n} {km:.4f} {flop / km / 1e9:.1f} {err:.2e}")
            print(f"torch_gemm {dtype} {n} {tm:.4f} {flop / tm / 1e9:.1f}")
            print(f"spread {dtype} {n} kiln {flop / max(kiln) / 1e9:.0f}-{flop / min(kiln) / 1e9:.0f} "
                  f"torch {flop / max(ref) / 1e9:.0f}-{flop / min(ref) / 1e9:.0f}", flush=True)


if __name__ == "__main__":
    main()
