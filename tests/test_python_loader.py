"""python/kiln_loader.py against the kiln binary, both ways: a model kiln
trained gives the same probabilities in PyTorch as in `kiln predict`, and a
model PyTorch changed and saved gives the same in `kiln predict` as in
PyTorch. Data: a generated table with numeric columns (some missing), a
categorical one (some NA) and, at predict time, categories never seen.

    test_python_loader.py KILN_BINARY    (exit 77: no torch here, skipped;
                                          under CI=true a missing torch fails)
"""
import csv
import io
import os
import random
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
sys.path.insert(0, os.path.join(here, "..", "python"))
from kt_python import Checks, require  # noqa: E402

torch = require("python_loader", "torch")
import kiln_loader  # noqa: E402

check = Checks()


def table(path, rows, seed, unseen):
    rng = random.Random(seed)
    colors = ["red", "green", "blue", "NA"] + (["violet"] if unseen else [])
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["x1", "color", "x2", "size", "label"])
        for i in range(rows):
            x1 = rng.uniform(-5, 5)
            c = rng.choice(colors)
            x2 = rng.uniform(0, 100)
            size = rng.choice(["S", "M", "L"])
            y = "hi" if x1 + (2 if c == "red" else -1 if c == "blue" else 0) + (x2 - 50) / 30 > 0 else "lo"
            if x1 > 3 and size == "L":
                y = "mid"
            w.writerow(["?" if i % 13 == 4 else f"{x1:.3f}", c, "" if i % 9 == 2 else f"{x2:.1f}", size, y])


def kiln_predict(kiln, model, data):
    out = subprocess.run([kiln, "predict", model, data, "--quiet"], capture_output=True, text=True,
                         env=dict(os.environ, KILN_DEVICE="cpu"))
    check(out.returncode == 0, f"kiln predict {model}: {out.stderr}")
    return list(csv.reader(io.StringIO(out.stdout)))


def torch_predict(model, data):
    with open(data, newline="") as f:
        rows = list(csv.DictReader(f))
    p = model.predict_proba(rows)
    return [[model.schema["classes"][int(q.argmax())]] + q.tolist() for q in p]


def compare(kiln_rows, torch_rows, what):
    check(kiln_rows[0][0] == "prediction" and len(kiln_rows) - 1 == len(torch_rows), f"{what}: row count")
    worst, differ = 0.0, 0
    for k, t in zip(kiln_rows[1:], torch_rows):
        probs = [float(x) for x in k[1:]]
        worst = max(worst, max(abs(a - b) for a, b in zip(probs, t[1:])))
        differ += k[0] != t[0] and sorted(t[1:])[-1] - sorted(t[1:])[-2] > 1e-5  # not a near tie
    # kiln prints 6 significant digits; the two run the same float32 network.
    check(worst < 2e-5, f"{what}: largest probability difference {worst:.3g}")
    check(differ == 0, f"{what}: {differ} predictions differ")
    print(f"python_loader: {what}: {len(torch_rows)} rows, largest difference {worst:.2g}")


def main():
    kiln = sys.argv[1]
    with tempfile.TemporaryDirectory() as d:
        train, new = os.path.join(d, "train.csv"), os.path.join(d, "new.csv")
        table(train, 400, 1, False)
        table(new, 150, 2, True)
        model = os.path.join(d, "m.safetensors")
        r = subprocess.run([kiln, "train", train, "--target", "label", "--epochs", "40", "--seed", "4",
                            "--quiet", "--out", model], capture_output=True, text=True,
                           env=dict(os.environ, KILN_DEVICE="cpu"))
        check(r.returncode == 0, f"kiln train: {r.stderr}")
        m = kiln_loader.load(model)
        check(isinstance(m, torch.nn.Module) and not m.training, "a torch module in eval mode")
        check(len(m.schema["numeric"]) == 2 and len(m.schema["categorical"]) == 2, "schema columns")
        compare(kiln_predict(kiln, model, new), torch_predict(m, new), "kiln model in PyTorch")

        # The reverse: PyTorch changes the weights and saves; kiln reads them.
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, p in m.state_dict().items():
                if p.dtype == torch.float32 and "running" not in name:
                    p.add_(0.3 * torch.randn(p.shape, generator=g))
        changed = os.path.join(d, "torch.safetensors")
        m.save(changed)
        kiln_rows = kiln_predict(kiln, changed, new)
        compare(kiln_rows, torch_predict(m, new), "PyTorch-written model in kiln")
        before = kiln_predict(kiln, model, new)
        check(any(a[1:] != b[1:] for a, b in zip(before[1:], kiln_rows[1:])), "the changed weights are used")
        # A regression model: kiln's predicted values and PyTorch's agree.
        reg = os.path.join(d, "reg.csv")
        rng = random.Random(5)
        with open(reg, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["x1", "color", "price"])
            for i in range(300):
                x1, c = rng.uniform(-2, 2), rng.choice(["red", "green", "blue"])
                w.writerow([f"{x1:.3f}", c, f"{100 + 20 * x1 + (15 if c == 'red' else 0) + rng.gauss(0, 2):.2f}"])
        rmodel = os.path.join(d, "reg.safetensors")
        r = subprocess.run([kiln, "train", reg, "--target", "price", "--epochs", "30", "--quiet", "--out", rmodel],
                           capture_output=True, text=True, env=dict(os.environ, KILN_DEVICE="cpu"))
        check(r.returncode == 0, f"kiln train (regression): {r.stderr}")
        rm = kiln_loader.load(rmodel)
        check(rm.regression, "the regression model loads as one")
        with open(reg, newline="") as f:
            values = rm.predict(list(csv.DictReader(f))).tolist()
        kv = [float(row[0]) for row in kiln_predict(kiln, rmodel, reg)[1:]]
        worst = max(abs(a - b) / max(1.0, abs(b)) for a, b in zip(kv, values))
        check(len(kv) == len(values) and worst < 1e-5, f"regression values differ by up to {worst:.3g} (relative)")
        print(f"python_loader: regression: {len(kv)} rows, largest relative difference {worst:.2g}")
    print(f"python_loader: {'FAILED' if check.failed else 'passed'}")
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
