"""torch.matmul on the GPU, for the ratio against kiln: one line per case,
   torch_gemm <dtype> <n> <ms> <TFLOP/s>
(dtype f32 = full FP32, tf32 = FP32 inputs on TF32 tensor cores, bf16).
The time is the median of 5 runs of `iterations` products, timed with events."""
import sys

import torch


def bench(dtype, n, iters):
    torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
    t = torch.bfloat16 if dtype == "bf16" else torch.float16 if dtype == "f16" else torch.float32
    g = torch.Generator(device="cuda").manual_seed(1)
    a = torch.randn(n, n, device="cuda", dtype=t, generator=g)
    b = torch.randn(n, n, device="cuda", dtype=t, generator=g)
    for _ in range(3):
        torch.matmul(a, b)
    runs = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            torch.matmul(a, b)
        end.record()
        torch.cuda.synchronize()
        runs.append(start.elapsed_time(end) / iters)
    ms = sorted(runs)[2]
    print(f"torch_gemm {dtype} {n} {ms:.4f} {2 * n ** 3 / ms / 1e9:.1f}", flush=True)


if __name__ == "__main__":
    sizes = [int(s) for s in sys.argv[1:]] or [4096, 8192]
    for n in sizes:
        for dtype in ("f32", "tf32", "bf16"):
            bench(dtype, n, 20 if n <= 4096 else 5)
