"""Reads the logs of bench/cuda/run.sh and prints one table: milliseconds
and the ratio PyTorch / kiln (above 1: kiln is faster) or, for GEMM,
kiln's share of PyTorch's throughput."""
import re
import sys

log = sys.argv[1]


def lines(name):
    try:
        with open(f"{log}/{name}") as f:
            return f.read().splitlines()
    except OSError:
        return []


def kiln_car(name):
    per, graph_per, loss, acc = None, None, None, None
    for ln in lines(name):
        if m := re.match(r"training: ([\d.]+) ms, ([\d.]+) ms per epoch", ln):
            per = float(m.group(2))
        if m := re.match(r"graph: captured in [\d.]+ ms, replays ([\d.]+) ms per epoch", ln):
            graph_per = float(m.group(1))
        if m := re.match(r"epoch: +\d+ loss: ([\d.]+)", ln):
            loss = float(m.group(1))
        if m := re.match(r"test accuracy: ([\d.]+)", ln):
            acc = float(m.group(1))
    return per, graph_per, loss, acc


torch_car = {}
for ln in lines("torch_car.txt"):
    p = ln.split()
    if p and p[0] == "torch_car":
        torch_car[p[1]] = (float(p[3]), float(p[4]), float(p[5]), float(p[2]) / 500)
ke, _, ke_loss, ke_acc = kiln_car("kiln_eager.txt")
kg, kg_replay, kg_loss, kg_acc = kiln_car("kiln_graph.txt")

gpu = " ".join(lines("gpu.txt")).strip()
print(f"\nkiln vs PyTorch on {gpu}\n")
print(f"{'benchmark':44} {'kiln':>10} {'PyTorch':>10} {'ratio':>8}")


def row(name, k, t, unit="ms", higher_better=False):
    if k is None or t is None:
        print(f"{name:44} {'-' if k is None else f'{k:.4f}':>10} {'-' if t is None else f'{t:.4f}':>10} {'-':>8}")
        return
    ratio = k / t if higher_better else t / k
    print(f"{name:44} {k:>10.4f} {t:>10.4f} {ratio:>7.2f}x")


te = torch_car.get("eager")
tg = torch_car.get("graph")
row("car, 500 epochs, eager (ms/epoch)", ke, te and te[0])
row("car, graph replay (ms/epoch)", kg_replay, tg and tg[0])
row("car, graph, whole loop with capture (ms/epoch)", kg, tg and tg[3])
for label, k, t in (("eager", (ke_loss, ke_acc), te), ("graph", (kg_loss, kg_acc), tg)):
    if t:
        print(f"  {label}: final loss kiln {k[0]} / PyTorch {t[1]:.4f}; test accuracy kiln {k[1]} / PyTorch {t[2]:.4f}")

kg_rows = {}
for ln in lines("kiln_gemm.txt"):
    p = ln.split()
    if p and p[0] == "kiln_gemm":
        kg_rows[(p[1], int(p[2]))] = (float(p[3]), float(p[4]), p[5])
tg_rows = {}
for ln in lines("torch_gemm.txt"):
    p = ln.split()
    if p and p[0] == "torch_gemm":
        tg_rows[(p[1], int(p[2]))] = (float(p[3]), float(p[4]))
print(f"\n{'GEMM (TFLOP/s; ratio = kiln / torch.matmul)':44} {'kiln':>10} {'PyTorch':>10} {'ratio':>8}")
for key in sorted(set(kg_rows) | set(tg_rows), key=lambda k: (k[1], k[0])):
    k, t = kg_rows.get(key), tg_rows.get(key)
    row(f"{key[0]} {key[1]}^3" + (f" (err {k[2]})" if k else ""), k and k[1], t and t[1], higher_better=True)
spreads = [ln.split() for ln in lines("gemm.txt") if ln.startswith("spread ")]
if spreads:
    print("  TFLOP/s over the alternating rounds (slowest-fastest):")
    for p in spreads:
        print(f"    {p[1]} {p[2]}^3: kiln {p[4]}, torch.matmul {p[6]}")
