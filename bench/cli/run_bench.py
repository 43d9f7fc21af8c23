#!/usr/bin/env python3
"""`kiln train` against the equivalent PyTorch script (torch_train.py) on the
same machine, data, split and recipe: time to train, peak memory (from
/usr/bin/time -v) and test accuracy, with ratios.

    /usr/bin/python3 bench/cli/run_bench.py [--kiln build/kiln] [--threads 1]
        [--car-seeds 10] [--seeds 3] [--quick] [--markdown OUT.md]

Time to train is what each program measures around its training loop (data
loading and process start excluded); wall is the whole process.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def timed(cmd, env):
    """(stdout, peak RSS in MiB, wall seconds) of cmd under /usr/bin/time -v."""
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), p.returncode, p.stderr[-2000:]))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1)) / 1024
    m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", p.stderr)
    wall = int(m.group(1) or 0) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    return p.stdout, rss, wall


def run_kiln(kiln, path, target, recipe, seed, env):
    out, rss, wall = timed([kiln, "train", path, "--target", target, "--recipe", recipe, "--seed", str(seed),
                            "--json", "--device", "cpu"], env)
    d = json.loads(out)
    return {"acc": d["test"]["accuracy"], "train_s": d["training"]["seconds"], "rss": rss, "wall": wall,
            "epochs": d["training"]["epochs"]}


def run_torch(path, target, recipe, seed, threads, env):
    out, rss, wall = timed([sys.executable, os.path.join(HERE, "torch_train.py"), path, "--target", target,
                            "--recipe", recipe, "--seed", str(seed), "--threads", str(threads)], env)
    d = json.loads(out)
    return {"acc": d["accuracy"], "train_s": d["seconds"], "rss": rss, "wall": wall, "epochs": d["epochs"]}


def summary(rs, key):
    v = [r[key] for r in rs]
    return statistics.mean(v), min(v), max(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default=os.path.join(ROOT, "build", "kiln"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--car-seeds", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="one seed everywhere (a smoke run)")
    ap.add_argument("--markdown")
    a = ap.parse_args()
    if a.quick:
        a.car_seeds = a.seeds = 1
    env = dict(os.environ, KILN_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads))
    tmp = tempfile.mkdtemp(prefix="kiln_bench_")
    subprocess.run([sys.executable, os.path.join(HERE, "make_datasets.py"), tmp], check=True)
    d = lambda *p: os.path.join(ROOT, "data", *p)
    runs = [
        ("car", d("car", "car.csv"), "class", "tutorial", a.car_seeds),
        ("car", d("car", "car.csv"), "class", "default", a.car_seeds),
        ("adult", d("adult", "adult_train.csv"), "income", "default", a.seeds),
        ("nursery", d("nursery", "nursery.csv"), "class", "default", a.seeds),
        ("digits", os.path.join(tmp, "digits.csv"), "digit", "default", a.seeds),
        ("breast_cancer_missing", os.path.join(tmp, "breast_cancer_missing.csv"), "target", "default", a.seeds),
        ("wine", os.path.join(tmp, "wine.csv"), "target", "default", a.seeds),
    ]
    rows = []
    for name, path, target, recipe, seeds in runs:
        k = [run_kiln(a.kiln, path, target, recipe, s, env) for s in range(seeds)]
        t = [run_torch(path, target, recipe, s, a.threads, env) for s in range(seeds)]
        rows.append((name, recipe, seeds, k, t))
        ka, kl, kh = summary(k, "acc")
        ta, tl, th = summary(t, "acc")
        print("%-22s %-8s seeds %2d  acc kiln %.4f [%.4f-%.4f] torch %.4f [%.4f-%.4f]  train s kiln %.2f torch %.2f  "
              "RSS MiB kiln %.0f torch %.0f" % (name, recipe, seeds, ka, kl, kh, ta, tl, th, summary(k, "train_s")[0],
                                                 summary(t, "train_s")[0], summary(k, "rss")[0], summary(t, "rss")[0]),
              flush=True)
    lines = ["| data | recipe | seeds | test acc kiln (min-max) | test acc PyTorch (min-max) | train s kiln | "
             "train s PyTorch | time ratio PyTorch/kiln | wall s kiln / PyTorch | peak RSS MiB kiln / PyTorch | "
             "memory ratio PyTorch/kiln |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, recipe, seeds, k, t in rows:
        ka, kl, kh = summary(k, "acc")
        ta, tl, th = summary(t, "acc")
        ks, ts = summary(k, "train_s")[0], summary(t, "train_s")[0]
        kr, tr = summary(k, "rss")[0], summary(t, "rss")[0]
        lines.append("| %s | %s | %d | %.4f (%.4f-%.4f) | %.4f (%.4f-%.4f) | %.2f | %.2f | %.2f | %.1f / %.1f | %.0f / %.0f | %.1f |"
                     % (name, recipe, seeds, ka, kl, kh, ta, tl, th, ks, ts, ts / ks, summary(k, "wall")[0],
                        summary(t, "wall")[0], kr, tr, tr / kr))
    table = "\n".join(lines)
    print()
    print(table)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(table + "\n")
            f.write("\nper-seed test accuracy:\n\n")
            for name, recipe, seeds, k, t in rows:
                f.write("- %s %s: kiln %s; PyTorch %s\n" % (name, recipe, " ".join("%.4f" % r["acc"] for r in k),
                                                           " ".join("%.4f" % r["acc"] for r in t)))


if __name__ == "__main__":
    main()
