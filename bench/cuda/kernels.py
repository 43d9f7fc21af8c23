"""Per-kernel GPU times of a few training steps of the car program, from
Nsight Compute (ncu), for finding where a step's time goes:

    python3 bench/cuda/kernels.py BUILD_DIR [skip] [count]

Runs ncu on car_evaluation (eager; a graph replays the same kernels),
skipping the first `skip` launches, and prints each kernel's duration in
launch order and a total."""
import csv
import io
import subprocess
import sys

build = sys.argv[1] if len(sys.argv) > 1 else "build"
skip = sys.argv[2] if len(sys.argv) > 2 else "200"
count = sys.argv[3] if len(sys.argv) > 3 else "120"
cmd = ["ncu", "--clock-control", "none", "--cache-control", "none", "--metrics", "gpu__time_duration.sum",
       "--csv", "--launch-skip", skip, "--launch-count", count,
       f"{build}/car_evaluation", "data/car/car.csv", "--epochs", "30", "--quiet"]
out = subprocess.run(cmd, capture_output=True, text=True, env={**__import__("os").environ, "KILN_DEVICE": "cuda"})
text = out.stdout[out.stdout.find('"ID"'):]
total = 0.0
by_name = {}
for row in csv.DictReader(io.StringIO(text)):
    if row.get("Metric Name") != "gpu__time_duration.sum":
        continue
    v, unit = float(row["Metric Value"].replace(",", "")), row["Metric Unit"]
    us = v / 1000.0 if unit in ("nsecond", "ns") else v * 1000.0 if unit in ("msecond", "ms") else v
    name = row["Kernel Name"].split("(")[0][:60]
    print(f"{us:8.2f} us  {row['Grid Size']:>16} {row['Block Size']:>14}  {name}")
    total += us
    c, t = by_name.get(name, (0, 0.0))
    by_name[name] = (c + 1, t + us)
print(f"total {total:.1f} us over {sum(c for c, _ in by_name.values())} kernels")
for name, (c, t) in sorted(by_name.items(), key=lambda kv: -kv[1][1])[:25]:
    print(f"{t:8.1f} us {c:4d}x  {name}")
if out.returncode:
    print(out.stderr[-2000:])
