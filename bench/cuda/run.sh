#!/usr/bin/env bash
# kiln against PyTorch on this machine's GPU, in one run: builds kiln
# (Release, sm_90), trains the car tutorial model 500 epochs on CUDA eagerly
# and with the step replayed as a CUDA graph, the same in PyTorch (eager and
# whole-step CUDA graph with capturable Adam), then GEMM through kiln and
# torch.matmul, taking turns in one process, for fp32, TF32 and bf16 at
# 4096^3 and 8192^3; prints a table.
#
#   bench/cuda/run.sh [build-dir] [log-dir]
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${1:-build-bench-cuda}
LOG=${2:-$B/bench-log}
mkdir -p "$LOG"
PATH="$PATH:/usr/local/cuda/bin"
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 >"$LOG/cmake.txt"
cmake --build "$B" -j "$(nproc)" --target car_evaluation kiln_gemm_bench >>"$LOG/cmake.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$LOG/gpu.txt" || echo unknown >"$LOG/gpu.txt"

export KILN_DEVICE=cuda
"$B/car_evaluation" data/car/car.csv --quiet | tee "$LOG/kiln_eager.txt"
"$B/car_evaluation" data/car/car.csv --quiet --graph | tee "$LOG/kiln_graph.txt"
python3 bench/cuda/torch_car.py data/car/car.csv 500 2>/dev/null | tee "$LOG/torch_car.txt"

# GEMM: kiln and torch.matmul take turns in one process (see gemm.py).
python3 bench/cuda/gemm.py "$B/libkiln_gemm_bench.so" 4096 8192 | tee "$LOG/gemm.txt"
grep '^kiln_gemm' "$LOG/gemm.txt" >"$LOG/kiln_gemm.txt" || true
grep '^torch_gemm' "$LOG/gemm.txt" >"$LOG/torch_gemm.txt" || true
python3 bench/cuda/table.py "$LOG" | tee "$LOG/table.txt"
