"""Data-parallel scaling, kiln against PyTorch's DistributedDataParallel, in
one run on one machine: the same model, batch per rank, loss and optimizer
(Adam) on 1, 2, 4... GPUs (weak scaling: the batch per GPU stays fixed).
kiln's side is bench_dist_step (bench/dist_step.c): one process driving
every GPU, kn_dist_backward over NCCL. PyTorch's is one process per GPU
(torch.multiprocessing), DDP over NCCL, timed the same way: warm-up, then N
steps with one synchronisation at the end. Scaling efficiency is the
throughput on n GPUs over n times the throughput on one; the n = 1 rows
also give each side's plain step (no group, no DDP), so the cost of the
data-parallel machinery on one GPU shows.

Both sides compute in FP32: TF32 is off in PyTorch here, as in kiln by
default (KILN_ALLOW_TF32=1 turns it on).

    python3 bench/dist_step.py BUILD/bench_dist_step [--model cnn|mlp] [--batch 256] [--steps 50] [--gpus 1,2,4,8]
"""
import argparse, os, subprocess, tempfile, time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn


def make_model(name):
    if name == "mlp":
        return nn.Sequential(nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(),
                             nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 10))
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def worker(rank, world, args, init_file, out):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.cuda.set_device(rank)
    dev = f"cuda:{rank}"
    plain = world == 0  # no group: the plain step on one GPU
    if not plain:
        dist.init_process_group("nccl", init_method=f"file://{init_file}", rank=rank, world_size=world,
                                device_id=torch.device(dev))
    torch.manual_seed(0)
    model = make_model(args.model).to(dev)
    if not plain:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[rank])
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    lossf = nn.CrossEntropyLoss()
    g = torch.Generator(device=dev).manual_seed(7 + rank)
    shape = (args.batch, 1, 28, 28) if args.model == "cnn" else (args.batch, 1024)
    x = torch.randn(shape, device=dev, generator=g)
    y = torch.randint(0, 10, (args.batch,), device=dev, generator=g)

    def step():
        opt.zero_grad()
        lossf(model(x), y).backward()
        opt.step()

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    if not plain:
        dist.barrier()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) * 1e3 / args.steps
    if not plain:
        t = torch.tensor([ms], device=dev)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)  # the slowest rank sets the pace
        ms = t.item()
        dist.destroy_process_group()
    if rank == 0:
        out.put(ms)


def torch_ms(args, world):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        init = os.path.join(tmp, "init")
        mp.spawn(worker, args=(world, args, init, q), nprocs=max(world, 1), join=True)
    return q.get()


def kiln_ms(args, n, plain=False):
    devices = ",".join(f"cuda:{i}" for i in range(n))
    cmd = [args.kiln, devices, "--model", args.model, "--batch", str(args.batch), "--steps", str(args.steps)]
    if plain:
        cmd.append("--plain")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()
    f = dict(zip(out[::2], out[1::2]))
    return float(f["ms"]), f["transport"]


def main():
    # NVLink multicast off on both sides (kiln sets the first itself unless it is set)
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    ap = argparse.ArgumentParser()
    ap.add_argument("kiln")
    ap.add_argument("--model", default="cnn", choices=["cnn", "mlp"])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--gpus", default="1,2,4,8")
    args = ap.parse_args()
    have = torch.cuda.device_count()
    counts = [n for n in (int(s) for s in args.gpus.split(",")) if 1 <= n <= have]
    print(f"torch {torch.__version__}, {have} x {torch.cuda.get_device_name(0)}; model {args.model}, "
          f"batch {args.batch} per GPU, {args.steps} steps; FP32")
    kp, _ = kiln_ms(args, 1, plain=True)
    tp = torch_ms(args, 0)
    print(f"plain step on one GPU: kiln {kp:.3f} ms, torch {tp:.3f} ms, torch/kiln {tp / kp:.2f}x")
    print(f"{'gpus':>4} {'kiln ms':>9} {'kiln eff':>8} {'torch ms':>9} {'torch eff':>9} {'torch/kiln':>10}  transport")
    k1 = t1 = None
    for n in counts:
        k, transport = kiln_ms(args, n)
        t = torch_ms(args, n)
        k1, t1 = k1 or k, t1 or t
        # weak scaling: n times the samples in the step's time
        print(f"{n:>4} {k:>9.3f} {k1 / k:>8.2f} {t:>9.3f} {t1 / t:>9.2f} {t / k:>10.2f}x  {transport}")
    skipped = [s for s in args.gpus.split(",") if int(s) > have]
    if skipped:
        print(f"not run (this machine has {have} GPU(s)): {', '.join(skipped)} GPUs")


if __name__ == "__main__":
    main()
