"""kiln's losses, gradient clipping and reduce-on-plateau schedule against
PyTorch, through the shared library and ctypes, on fixed random inputs:

  losses    mse, l1, huber, smooth_l1 (beta 0 too), binary_cross_entropy
            (with a weight; probabilities of exactly 0 and 1, where kiln's
            target gradient is finite and PyTorch's infinite) and
            binary_cross_entropy_with_logits (weight, pos_weight, logits of
            +-200), each reduction, float64 and float32: the loss and the
            gradients of the input and the target;
  clipping  torch.nn.utils.clip_grad_norm_ (norms 2, inf, 1, 3) and
            clip_grad_value_: the returned norm and the clipped gradients;
  plateau   torch.optim.lr_scheduler.ReduceLROnPlateau: the learning rate
            after every step, for min/max, rel/abs, patience, cooldown, min_lr.

    test_python_nn.py LIBKILN_SO     (exit 77: no numpy or torch here,
                                      skipped; under CI=true that fails)
"""
import ctypes
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kt_python import Checks, Device, Scope, helpers, require  # noqa: E402

np, torch = require("python_nn", "numpy", "torch")
F = torch.nn.functional
check = Checks()
skipped = []


class LossOpts(ctypes.Structure):  # kn_loss_opts (include/kiln/ops.h)
    _fields_ = [("weight", ctypes.c_void_p), ("label_smoothing", ctypes.c_double),
                ("reduction", ctypes.c_int), ("ignore_index", ctypes.c_int64),
                ("pos_weight", ctypes.c_void_p), ("delta", ctypes.c_double), ("beta", ctypes.c_double)]


class SgdOpts(ctypes.Structure):  # kn_sgd_opts (include/kiln/optim.h)
    _fields_ = [("lr", ctypes.c_double), ("momentum", ctypes.c_double), ("dampening", ctypes.c_double),
                ("weight_decay", ctypes.c_double), ("nesterov", ctypes.c_bool)]


class PlateauOpts(ctypes.Structure):  # kn_plateau_opts (include/kiln/optim.h)
    _fields_ = [("mode", ctypes.c_int), ("factor", ctypes.c_double), ("patience", ctypes.c_int),
                ("threshold", ctypes.c_double), ("threshold_abs", ctypes.c_bool), ("cooldown", ctypes.c_int),
                ("min_lr", ctypes.c_double), ("eps", ctypes.c_double)]


F32, F64 = 0, 3
NP_OF = {F32: np.float32, F64: np.float64}
TORCH_OF = {F32: torch.float32, F64: torch.float64}
MEAN, SUM, NONE = 0, 1, 2
TORCH_RED = {MEAN: "mean", SUM: "sum", NONE: "none"}

lib = ctypes.CDLL(sys.argv[1])
P, I, D, B = ctypes.c_void_p, ctypes.c_int, ctypes.c_double, ctypes.c_bool
LOSS_ARGS = [P, P, ctypes.POINTER(LossOpts)]
for name, res, args in [
        ("kn_error", ctypes.c_char_p, []), ("kn_release", None, [P]),
        ("kn_from_data", P, [P, I, I, ctypes.POINTER(ctypes.c_int64), Device]),
        ("kn_to_host", I, [P, P, I]), ("kn_numel", ctypes.c_int64, [P]),
        ("kn_live_tensors", ctypes.c_int64, []), ("kn_scope_begin", Scope, []), ("kn_scope_end", None, [Scope]),
        ("kn_requires_grad_", P, [P, B]), ("kn_grad", P, [P]), ("kn_backward", I, [P]),
        ("kn_backward_with", I, [P, P]), ("kn_loss_opts_default", LossOpts, []),
        ("kn_mse_loss_ex", P, LOSS_ARGS), ("kn_l1_loss", P, LOSS_ARGS), ("kn_huber_loss", P, LOSS_ARGS),
        ("kn_smooth_l1_loss", P, LOSS_ARGS), ("kn_bce_loss", P, LOSS_ARGS),
        ("kn_bce_with_logits_loss", P, LOSS_ARGS),
        ("kn_clip_grad_norm", D, [I, ctypes.POINTER(P), D, D, B]),
        ("kn_clip_grad_value", I, [I, ctypes.POINTER(P), D]),
        ("kn_sgd_params", P, [I, ctypes.POINTER(P), SgdOpts]), ("kn_optim_free", None, [P]),
        ("kn_optim_lr", D, [P]), ("kn_plateau_defaults", PlateauOpts, []),
        ("kn_sched_plateau", P, [P, PlateauOpts]), ("kn_sched_plateau_step", D, [P, D]),
        ("kn_sched_free", None, [P])]:
    fn = getattr(lib, name)
    fn.restype, fn.argtypes = res, args
err, kt = helpers(lib, NP_OF)


def host(t):
    """A kiln tensor's values as float64 (flattened)."""
    n = lib.kn_numel(t)
    out = np.zeros(max(1, n), dtype=np.float64)
    if lib.kn_to_host(t, out.ctypes.data, F64) != 0:
        raise RuntimeError(err())
    return out[:n]


def close(got, want, tol, what):
    want = np.asarray(want, dtype=np.float64).ravel()
    ok = got.shape == want.shape and np.allclose(got, want, rtol=tol, atol=tol, equal_nan=False)
    worst = float(np.max(np.abs(got - want))) if got.shape == want.shape and got.size else 0.0
    check(ok, f"{what}: max difference {worst:g} (tolerance {tol:g})")


rng = np.random.default_rng(20250101)

# ---- losses -------------------------------------------------------------------------------------

# name, kiln function, torch function of (x, y, weight, pos_weight, reduction), inputs
LOSSES = [
    ("mse", lib.kn_mse_loss_ex, lambda x, y, w, p, r: F.mse_loss(x, y, reduction=r), "reg"),
    ("l1", lib.kn_l1_loss, lambda x, y, w, p, r: F.l1_loss(x, y, reduction=r), "reg"),
    ("huber", lib.kn_huber_loss, lambda x, y, w, p, r: F.huber_loss(x, y, reduction=r, delta=0.7), "reg"),
    ("smooth_l1", lib.kn_smooth_l1_loss, lambda x, y, w, p, r: F.smooth_l1_loss(x, y, reduction=r, beta=0.5),
     "reg"),
    ("smooth_l1 beta 0", lib.kn_smooth_l1_loss,
     lambda x, y, w, p, r: F.smooth_l1_loss(x, y, reduction=r, beta=0.0), "reg"),
    ("bce", lib.kn_bce_loss, lambda x, y, w, p, r: F.binary_cross_entropy(x, y, weight=w, reduction=r), "prob"),
    ("bce_with_logits", lib.kn_bce_with_logits_loss,
     lambda x, y, w, p, r: F.binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=p, reduction=r), "logit"),
]


def inputs(kind):
    x = rng.uniform(-2, 2, (6, 4))
    y = rng.uniform(-2, 2, (6, 4))
    if kind == "prob":
        x = rng.uniform(0.02, 0.98, (6, 4))
        x[0, :] = [0.0, 1.0, 0.0, 1.0]  # the clamped logs
        y = rng.uniform(0, 1, (6, 4))
    elif kind == "logit":
        x = rng.uniform(-8, 8, (6, 4))
        x[0, :] = [-200, 200, 30, -30]  # no overflow
        y = rng.uniform(0, 1, (6, 4))
    return x, y


def kiln_loss(fn, x, y, w, p, red, beta, dt, g_none):
    """kiln's loss and the gradients of x and y (backward of loss, or of
    loss * g_none for reduction none)."""
    s = lib.kn_scope_begin()
    try:
        X = lib.kn_requires_grad_(kt(x, dt), True)
        Y = lib.kn_requires_grad_(kt(y, dt), True)
        o = lib.kn_loss_opts_default()
        o.reduction, o.delta, o.beta = red, 0.7, beta
        if w is not None:
            o.weight = kt(w, dt)
        if p is not None:
            o.pos_weight = kt(p, dt)
        L = fn(X, Y, ctypes.byref(o))
        if not L:
            raise RuntimeError(err())
        value = host(L)
        st = lib.kn_backward_with(L, kt(g_none, dt)) if red == NONE else lib.kn_backward(L)
        if st != 0:
            raise RuntimeError(err())
        return value, host(lib.kn_grad(X)), host(lib.kn_grad(Y))
    finally:
        lib.kn_scope_end(s)


def test_losses():
    target_grads = {}
    for name, fn, tfn, kind in LOSSES:
        beta = 0.0 if name.endswith("beta 0") else 0.5
        for dt in (F64, F32):
            for red in (MEAN, SUM, NONE):
                for weighted in ((False, True) if kind != "reg" else (False,)):
                    x, y = inputs(kind)
                    w = rng.uniform(0.5, 2, (4,)) if weighted else None
                    p = rng.uniform(0.3, 3, (4,)) if weighted and kind == "logit" else None
                    g_none = rng.uniform(-1, 1, (6, 4))
                    what = f"{name} {TORCH_RED[red]}{' weighted' if weighted else ''} {'f64' if dt == F64 else 'f32'}"
                    try:
                        value, gx, gy = kiln_loss(fn, x, y, w, p, red, beta, dt, g_none)
                    except RuntimeError as e:
                        check(False, f"{what}: {e}")
                        continue
                    tt = TORCH_OF[dt]
                    X = torch.tensor(x, dtype=tt, requires_grad=True)
                    Y = torch.tensor(y, dtype=tt, requires_grad=True)
                    W = torch.tensor(w, dtype=tt) if w is not None else None
                    PW = torch.tensor(p, dtype=tt) if p is not None else None
                    L = tfn(X, Y, W, PW, TORCH_RED[red])
                    (L * torch.tensor(g_none, dtype=tt)).sum().backward() if red == NONE else L.backward()
                    # float32: sums of 24 terms and losses of 200 (relative 1e-7 each)
                    tol = 1e-10 if dt == F64 else 2e-5
                    close(value, L.detach().numpy(), tol, f"{what}: loss")
                    close(gx, X.grad.numpy(), tol, f"{what}: input gradient")
                    if Y.grad is None:
                        target_grads[name] = False
                    elif kind == "prob":
                        # Row 0 holds probabilities of 0 and 1, where PyTorch's target gradient
                        # (of unclamped logs) is infinite and kiln's (of the clamped loss) finite.
                        tg = Y.grad.numpy()
                        close(gy.reshape(6, 4)[1:].ravel(), tg[1:], tol, f"{what}: target gradient")
                        check(np.all(np.isinf(tg[0])) and np.all(np.isfinite(gy.reshape(6, 4)[0])),
                              f"{what}: target gradient at 0 and 1: torch inf, kiln finite")
                    else:
                        close(gy, Y.grad.numpy(), tol, f"{what}: target gradient")
    for name, has in target_grads.items():
        if not has:
            skipped.append(f"{name}: this torch has no target gradient to compare")


def test_huber_joint():
    """At |d| = delta both pieces agree; PyTorch's gradient there is delta * sign(d)."""
    x, y = np.array([0.7, -0.7, 0.5]), np.zeros(3)
    value, gx, _ = kiln_loss(lib.kn_huber_loss, x, y, None, None, NONE, 0.5, F64, np.ones(3))
    X = torch.tensor(x, requires_grad=True)
    L = F.huber_loss(X, torch.tensor(y), reduction="none", delta=0.7)
    L.sum().backward()
    close(value, L.detach().numpy(), 1e-15, "huber at |d| = delta: loss")
    close(gx, X.grad.numpy(), 1e-15, "huber at |d| = delta: gradient")


# ---- clipping -------------------------------------------------------------------------------------

def test_clip():
    shapes = [(5,), (3, 4), (2, 2, 2)]
    for norm_type in (2.0, float("inf"), 1.0, 3.0):
        for max_norm in (0.5, 1e3):
            for dt in (F64, F32):
                grads = [rng.normal(0, 1, s) for s in shapes]
                s = lib.kn_scope_begin()
                try:
                    params = []
                    for g in grads:  # d/dp sum(p * g) = g
                        p = lib.kn_requires_grad_(kt(np.zeros(g.shape), dt), True)
                        params.append(p)
                        lib.kn_backward(lib_sum_mul(p, kt(g, dt)))
                    arr = (P * 3)(*params)
                    norm = lib.kn_clip_grad_norm(3, arr, max_norm, norm_type, True)
                    got = [host(lib.kn_grad(p)) for p in params]
                finally:
                    lib.kn_scope_end(s)
                tt = TORCH_OF[dt]
                tp = [torch.zeros(g.shape, dtype=tt, requires_grad=True) for g in grads]
                for p, g in zip(tp, grads):
                    p.grad = torch.tensor(g, dtype=tt)
                tnorm = torch.nn.utils.clip_grad_norm_(tp, max_norm, norm_type=norm_type)
                tol = 1e-12 if dt == F64 else 1e-5
                what = f"clip_grad_norm p={norm_type} max {max_norm} {'f64' if dt == F64 else 'f32'}"
                close(np.array([norm]), [float(tnorm)], tol, f"{what}: norm")
                for k, p in enumerate(tp):
                    close(got[k], p.grad.numpy(), tol, f"{what}: gradient {k}")
    # clip_grad_value_
    g = rng.normal(0, 2, (4, 5))
    s = lib.kn_scope_begin()
    p = lib.kn_requires_grad_(kt(np.zeros(g.shape), F64), True)
    lib.kn_backward(lib_sum_mul(p, kt(g, F64)))
    arr = (P * 1)(p)
    check(lib.kn_clip_grad_value(1, arr, 1.25) == 0, f"clip_grad_value: {err()}")
    got = host(lib.kn_grad(p))
    lib.kn_scope_end(s)
    tpar = torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
    tpar.grad = torch.tensor(g)
    torch.nn.utils.clip_grad_value_([tpar], 1.25)
    close(got, tpar.grad.numpy(), 0, "clip_grad_value")


def lib_sum_mul(a, b):
    """sum(a * b) through kiln (the one reduction these tests need)."""
    return lib_sum(lib_mul(a, b))


for _name, _res, _args in [("kn_mul", P, [P, P]), ("kn_sum_all", P, [P])]:
    _fn = getattr(lib, _name)
    _fn.restype, _fn.argtypes = _res, _args
lib_mul, lib_sum = lib.kn_mul, lib.kn_sum_all


# ---- reduce on plateau --------------------------------------------------------------------------------

def test_plateau():
    configs = [
        dict(mode="min", factor=0.5, patience=2, threshold=1e-2, threshold_mode="rel", cooldown=0, min_lr=0.0),
        dict(mode="min", factor=0.1, patience=0, threshold=1e-4, threshold_mode="rel", cooldown=2, min_lr=1e-4),
        dict(mode="max", factor=0.3, patience=3, threshold=0.02, threshold_mode="abs", cooldown=1, min_lr=0.0),
        dict(mode="min", factor=0.5, patience=1, threshold=0.05, threshold_mode="abs", cooldown=0, min_lr=0.01),
        dict(mode="max", factor=0.5, patience=1, threshold=0.1, threshold_mode="rel", cooldown=0, min_lr=0.0),
    ]
    for ci, c in enumerate(configs):
        # A noisy metric that improves, then stalls (positive, as losses and accuracies are).
        n = 60
        trend = np.concatenate([np.linspace(1.0, 0.3, n // 2), np.full(n - n // 2, 0.3)])
        metric = trend * (1 + 0.05 * rng.standard_normal(n)) + 0.01
        if c["mode"] == "max":
            metric = 1.5 - metric
        w = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([w], lr=0.2)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **c)
        s = lib.kn_scope_begin()
        kw = lib.kn_requires_grad_(kt(np.zeros(1), F32), True)
        ko = lib.kn_sgd_params(1, (P * 1)(kw), SgdOpts(0.2, 0, 0, 0, False))
        lib.kn_scope_end(s)  # the parameter lives on in the optimizer
        po = lib.kn_plateau_defaults()
        po.mode = 0 if c["mode"] == "min" else 1
        po.factor, po.patience, po.threshold = c["factor"], c["patience"], c["threshold"]
        po.threshold_abs = c["threshold_mode"] == "abs"
        po.cooldown, po.min_lr = c["cooldown"], c["min_lr"]
        ks = lib.kn_sched_plateau(ko, po)
        check(bool(ks), f"plateau config {ci}: {err()}")
        if not ks:
            continue
        cuts, same = 0, True
        for e, m in enumerate(metric):
            sched.step(float(m))
            klr, tlr = lib.kn_sched_plateau_step(ks, float(m)), opt.param_groups[0]["lr"]
            if abs(klr - tlr) > 1e-12 * tlr:
                check(False, f"plateau config {ci} epoch {e + 1}: kiln lr {klr}, torch {tlr}")
                same = False
                break
            cuts += klr < 0.2
        check(same, f"plateau config {ci}: the same lr every epoch")
        check(cuts > 0, f"plateau config {ci} made at least one cut (a test that can fail)")
        lib.kn_sched_free(ks)
        lib.kn_optim_free(ko)


def main():
    live = lib.kn_live_tensors()
    test_losses()
    test_huber_joint()
    test_clip()
    test_plateau()
    check(lib.kn_live_tensors() == live, f"{lib.kn_live_tensors() - live} kiln tensors leaked")
    for s in skipped:
        print(f"python_nn: skipped: {s}")
    print(f"python_nn: torch {torch.__version__}: {check.count - check.failed} passed, {check.failed} failed, "
          f"{len(skipped)} skipped")
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
