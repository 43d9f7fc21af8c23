#!/usr/bin/env bash
# Everything a change to the CUDA backend needs checked on a GPU machine, in
# one go: a Release build for sm_90 with warnings as errors, the whole test
# suite (ctest, test_cuda included), the benchmark against PyTorch
# (bench/cuda/run.sh), the kernel timeline of one replayed training step
# (bench/cuda/trace.c, with and without programmatic dependent launch) and
# `kiln train` on the car data with both recipes. Logs go to LOG_DIR; the
# summary is printed last.
#
#   bench/cuda/full.sh [build-dir] [log-dir]
set -uo pipefail
cd "$(dirname "$0")/../.."
B=${1:-build-cuda-full}
LOG=${2:-$B/full-log}
mkdir -p "$LOG"
PATH="$PATH:/usr/local/cuda/bin"
summary() { echo "$*" | tee -a "$LOG/summary.txt"; }
: >"$LOG/summary.txt"

summary "gpu: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null)"
if ! { cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DKILN_WERROR=ON &&
       cmake --build "$B" -j "$(nproc)"; } >"$LOG/build.txt" 2>&1; then
  summary "build: FAILED"; tail -30 "$LOG/build.txt"; exit 1
fi
summary "build: ok"

ctest --test-dir "$B" --output-on-failure -j 4 -E '^cuda$' >"$LOG/ctest.txt" 2>&1
summary "ctest (all but cuda): $(grep -E 'tests passed|tests failed' "$LOG/ctest.txt")"
grep -E "Failed|\*\*\*" "$LOG/ctest.txt" | head -10
"$B/tests/test_cuda" >"$LOG/test_cuda.txt" 2>&1
summary "test_cuda: $(tail -1 "$LOG/test_cuda.txt")"
grep FAILED "$LOG/test_cuda.txt" | head -20
for t in test_ops test_grad test_fusion; do
  "$B/tests/$t" 2>&1 | grep -E "cuda|FAILED" | head -8 | while read -r l; do summary "$t: $l"; done
done

bench/cuda/run.sh "$B" "$LOG/bench" >"$LOG/bench.txt" 2>&1
summary "$(tail -16 "$LOG/bench.txt")"

CUPTI=$(ls /usr/local/cuda/lib64/libcupti.so* /usr/local/cuda/extras/CUPTI/lib64/libcupti.so* 2>/dev/null | head -1)
if [ -n "$CUPTI" ] && cc -O2 -shared -fPIC bench/cuda/trace.c -I/usr/local/cuda/include -L"$(dirname "$CUPTI")" \
     -lcupti -o "$B/libtrace.so"; then
  for pdl in 0 1; do
    LD_LIBRARY_PATH="$(dirname "$CUPTI")" LD_PRELOAD="$B/libtrace.so" KILN_CUDA_PDL=$pdl KILN_DEVICE=cuda \
      "$B/car_evaluation" data/car/car.csv --graph --epochs 30 --quiet >"$LOG/trace_pdl$pdl.txt" 2>&1
    summary "trace pdl=$pdl: $(grep 'trace: .* kernels' "$LOG/trace_pdl$pdl.txt")"
  done
fi

# Why the batch-norm kernels take what they take: Nsight Compute's stall reasons for one of each.
if command -v ncu >/dev/null 2>&1; then
  KILN_DEVICE=cuda timeout 180 ncu --clock-control none -k regex:bn_ --launch-skip 6 --launch-count 2 \
    --section LaunchStats --section Occupancy --section SchedulerStats --section WarpStateStats --section SpeedOfLight \
    "$B/car_evaluation" data/car/car.csv --epochs 3 --quiet >"$LOG/ncu_bn.txt" 2>&1
  summary "ncu: $(grep -cE 'bn_(forward|backward)' "$LOG/ncu_bn.txt") batch-norm kernel reports"
fi

for recipe in tutorial default; do
  KILN_DEVICE=cuda "$B/kiln" train data/car/car.csv --target class --recipe $recipe --seed 0 --json \
    --out "$B/car_$recipe.safetensors" >"$LOG/train_$recipe.json" 2>"$LOG/train_$recipe.err"
  summary "kiln train $recipe: $(tr -d '\n' <"$LOG/train_$recipe.json" | grep -oE '"(device|seconds|epochs|accuracy|graph)":[^,}]*' | tr '\n' ' ')"
done
