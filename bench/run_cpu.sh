#!/usr/bin/env bash
# The seed program on the CPU: kiln (examples/car_evaluation) against the same
# program in PyTorch (bench/torch_car.py), on this machine, in one run.
# Usage: bench/run_cpu.sh [build-dir] [epochs] [repeats]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
epochs=${2:-500}
repeats=${3:-3}
py=${PYTHON:-/usr/bin/python3}
[ -x "$build/car_evaluation" ] || { cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build "$build" -j >/dev/null; }

best() { sort -g | head -1; }
per_epoch() { sed -n 's/.*, \([0-9.]*\) ms per epoch/\1/p'; }

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $(date -u +%Y-%m-%d)"
echo "torch: $($py -c 'import torch; print(torch.__version__, "threads", torch.get_num_threads())' 2>/dev/null || echo absent)"
k=$(for i in $(seq "$repeats"); do "$build/car_evaluation" data/car/car.csv --quiet --epochs "$epochs" | per_epoch; done | best)
t=$(for i in $(seq "$repeats"); do $py bench/torch_car.py data/car/car.csv --epochs "$epochs" | per_epoch; done | best)
printf "%-28s %12s\n" "car evaluation, $epochs epochs" "ms per epoch (best of $repeats)"
printf "%-28s %12s\n" "kiln (CPU)" "$k"
printf "%-28s %12s\n" "PyTorch (CPU)" "$t"
printf "%-28s %12s\n" "PyTorch / kiln" "$(echo "$t / $k" | bc -l | xargs printf '%.2f')x"
