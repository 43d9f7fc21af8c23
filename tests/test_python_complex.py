"""Gradients of complex leaves in kiln (the shared library, through ctypes)
against torch.autograd's for the same functions of the same inputs.

PyTorch's convention, which kiln follows: for a real loss L of a complex leaf
z = x + iy, z.grad is dL/dx + i dL/dy (twice the conjugate Wirtinger
derivative dL/d(conj z)). Each case is a real loss, sum(W * view_as_real(f(z)))
for a complex f(z) and sum(W * f(z)) for a real one, with fixed weights W, so
that every part of the output counts. Every op kiln has on complex tensors is
covered: view_as_real/view_as_complex, real/imag/complex/conj/abs (0 included),
+, - (complex and real operands), negation, scaling, views, and
fft/ifft/fft2/ifft2/irfft with their lengths and norms, in complex128 and
complex64.

    test_python_complex.py LIBKILN_SO     (exit 77: no numpy or torch here,
                                           skipped; under CI=true that fails)
"""
import ctypes
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kt_python import C64, C128, F32, F64, Checks, Scope, helpers, host_reader, require  # noqa: E402

np, torch = require("python_complex", "numpy", "torch")
check = Checks()

NP_OF = {F32: np.float32, F64: np.float64, C64: np.complex64, C128: np.complex128}
TORCH_OF = {C64: torch.complex64, C128: torch.complex128}
NORMS = {"backward": 0, "ortho": 1, "forward": 2}

lib = ctypes.CDLL(sys.argv[1])
P, I, I64, B, D = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_bool, ctypes.c_double
PI64, PI = ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_int)
for name, res, args in [
        ("kn_to_host", I, [P, P, I]), ("kn_numel", I64, [P]), ("kn_ndim", I, [P]), ("kn_shape", PI64, [P]),
        ("kn_dtype_of", I, [P]), ("kn_live_tensors", I64, []), ("kn_scope_begin", Scope, []),
        ("kn_scope_end", None, [Scope]), ("kn_requires_grad_", P, [P, B]), ("kn_grad", P, [P]),
        ("kn_backward", I, [P]), ("kn_view_as_real", P, [P]), ("kn_view_as_complex", P, [P]),
        ("kn_real", P, [P]), ("kn_imag", P, [P]), ("kn_complex", P, [P, P]), ("kn_conj", P, [P]),
        ("kn_abs", P, [P]), ("kn_add", P, [P, P]), ("kn_sub", P, [P, P]), ("kn_mul", P, [P, P]),
        ("kn_neg", P, [P]), ("kn_mul_scalar", P, [P, D]), ("kn_sum", P, [P, I, PI, B]),
        ("kn_transpose", P, [P, I, I]), ("kn_narrow", P, [P, I, I64, I64]), ("kn_contiguous", P, [P]),
        ("kn_fft", P, [P, I64, I, I]), ("kn_ifft", P, [P, I64, I, I]), ("kn_irfft", P, [P, I64, I, I]),
        ("kn_fft2", P, [P, PI64, PI, I]), ("kn_ifft2", P, [P, PI64, PI, I])]:
    fn = getattr(lib, name)
    fn.restype, fn.argtypes = res, args
err, kt = helpers(lib, NP_OF)

host = host_reader(lib, err)


class K:
    """The ops of one case in kiln (tensors in the open scope)."""
    view_as_real, view_as_complex = lib.kn_view_as_real, lib.kn_view_as_complex
    real, imag, conj, abs, neg = lib.kn_real, lib.kn_imag, lib.kn_conj, lib.kn_abs, lib.kn_neg
    add, sub, mul, complex = lib.kn_add, lib.kn_sub, lib.kn_mul, lib.kn_complex
    transpose, narrow, contiguous = lib.kn_transpose, lib.kn_narrow, lib.kn_contiguous

    @staticmethod
    def scale(a, s):
        return lib.kn_mul_scalar(a, s)

    @staticmethod
    def is_complex(a):
        return lib.kn_dtype_of(a) in (C64, C128)

    @staticmethod
    def fft(a, n, dim, norm):
        return lib.kn_fft(a, -1 if n is None else n, dim, NORMS[norm])

    @staticmethod
    def ifft(a, n, dim, norm):
        return lib.kn_ifft(a, -1 if n is None else n, dim, NORMS[norm])

    @staticmethod
    def irfft(a, n, dim, norm):
        return lib.kn_irfft(a, n, dim, NORMS[norm])

    @staticmethod
    def fft2(a, s, norm):
        return lib.kn_fft2(a, None if s is None else (ctypes.c_int64 * 2)(*s), None, NORMS[norm])

    @staticmethod
    def ifft2(a, s, norm):
        return lib.kn_ifft2(a, None if s is None else (ctypes.c_int64 * 2)(*s), None, NORMS[norm])


class T:
    """The same ops in torch."""
    view_as_real, view_as_complex = torch.view_as_real, torch.view_as_complex
    real, imag, abs, neg = torch.real, torch.imag, torch.abs, torch.neg
    add, sub, mul, complex = torch.add, torch.sub, torch.mul, torch.complex
    conj = torch.conj_physical  # torch.conj is a lazy view that view_as_real refuses

    @staticmethod
    def scale(a, s):
        return a * s

    @staticmethod
    def is_complex(a):
        return a.is_complex()

    @staticmethod
    def transpose(a, d0, d1):
        return a.transpose(d0, d1)

    @staticmethod
    def narrow(a, d, start, length):
        return a.narrow(d, start, length)

    @staticmethod
    def contiguous(a):
        return a.contiguous()

    @staticmethod
    def fft(a, n, dim, norm):
        return torch.fft.fft(a, n, dim, norm)

    @staticmethod
    def ifft(a, n, dim, norm):
        return torch.fft.ifft(a, n, dim, norm)

    @staticmethod
    def irfft(a, n, dim, norm):
        return torch.fft.irfft(a, n, dim, norm)

    @staticmethod
    def fft2(a, s, norm):
        return torch.fft.fft2(a, s, norm=norm)

    @staticmethod
    def ifft2(a, s, norm):
        return torch.fft.ifft2(a, s, norm=norm)


rng = np.random.default_rng(31337)
SHAPE = (3, 4)
W_OTHER = rng.standard_normal(SHAPE) + 1j * rng.standard_normal(SHAPE)  # a second complex operand
W_REAL = rng.standard_normal(SHAPE)

# (name, f(ops, z, w, r)): w a complex constant, r a real one (each a tensor of the ops' world).
CASES = [
    ("view_as_real", lambda o, z, w, r: o.view_as_real(z)),
    ("view_as_complex", lambda o, z, w, r: o.view_as_complex(o.scale(o.view_as_real(z), 3.0))),
    ("real", lambda o, z, w, r: o.real(z)),
    ("imag", lambda o, z, w, r: o.mul(o.imag(z), o.imag(z))),
    ("abs", lambda o, z, w, r: o.abs(z)),
    ("conj", lambda o, z, w, r: o.conj(z)),
    ("add/sub/neg/scale", lambda o, z, w, r: o.sub(o.neg(o.add(z, o.scale(w, 2.5))), o.scale(z, -0.5))),
    ("with a real operand", lambda o, z, w, r: o.sub(o.add(z, r), o.scale(r, 2.0))),
    ("complex(im, re^2)", lambda o, z, w, r: o.complex(o.imag(z), o.mul(o.real(z), o.real(z)))),
    ("transpose/narrow", lambda o, z, w, r: o.contiguous(o.narrow(o.transpose(z, 0, 1), 0, 1, 2))),
    ("fft", lambda o, z, w, r: o.fft(z, None, 1, "backward")),
    ("fft padded, ortho", lambda o, z, w, r: o.fft(z, 6, 0, "ortho")),
    ("ifft cropped, forward", lambda o, z, w, r: o.ifft(z, 3, -1, "forward")),
    ("abs(ifft)", lambda o, z, w, r: o.abs(o.ifft(z, None, 0, "backward"))),
    ("fft2 ortho", lambda o, z, w, r: o.fft2(z, None, "ortho")),
    ("ifft2 padded", lambda o, z, w, r: o.ifft2(z, (4, 5), "backward")),
    ("irfft", lambda o, z, w, r: o.irfft(z, 6, 1, "backward")),
]


def weights_for(shape, salt):
    return np.sin(0.37 * np.arange(int(np.prod(shape)), dtype=np.float64) + salt).reshape(shape) + 0.25


def torch_loss(y, salt):
    r = torch.view_as_real(y) if y.is_complex() else y
    return (r * torch.from_numpy(weights_for(tuple(r.shape), salt)).to(r.dtype)).sum()


def kiln_loss(y, salt):
    r = lib.kn_view_as_real(y) if K.is_complex(y) else y
    shape = tuple(lib.kn_shape(r)[d] for d in range(lib.kn_ndim(r)))
    dt = lib.kn_dtype_of(r)
    return lib.kn_sum(lib.kn_mul(r, kt(weights_for(shape, salt), dt)), 0, None, False)


def test_gradients():
    for dt in (C128, C64):
        tol = 1e-10 if dt == C128 else 1e-4
        real_dt = F64 if dt == C128 else F32
        for salt, (name, f) in enumerate(CASES):
            z0 = (rng.standard_normal(SHAPE) + 1j * rng.standard_normal(SHAPE)).astype(NP_OF[dt])
            if name == "abs":
                z0[1, 2] = 0  # |z| has no derivative at 0: both take 0
            what = f"{name} ({np.dtype(NP_OF[dt]).name})"
            # torch
            z = torch.from_numpy(z0.copy()).requires_grad_(True)
            w, r = torch.from_numpy(W_OTHER.astype(NP_OF[dt])), torch.from_numpy(W_REAL.astype(NP_OF[real_dt]))
            torch_loss(f(T, z, w, r), salt).backward()
            want = z.grad.numpy().astype(np.complex128)
            # kiln
            scope = lib.kn_scope_begin()
            try:
                kz = lib.kn_requires_grad_(kt(z0, dt), True)
                check(bool(kz), f"{what}: requires_grad: {err()}")
                loss = kiln_loss(f(K, kz, kt(W_OTHER, dt), kt(W_REAL, real_dt)), salt)
                ok = bool(loss) and lib.kn_backward(loss) == 0
                check(ok, f"{what}: backward: {err()}")
                if ok:
                    g = lib.kn_grad(kz)
                    check(bool(g) and lib.kn_dtype_of(g) == dt, f"{what}: the gradient's dtype")
                    got = host(g)
                    scale = max(1.0, float(np.abs(want).max()))
                    worst = float(np.abs(got - want).max())
                    check(got.shape == want.shape and worst <= tol * scale,
                          f"{what}: kiln's gradient differs from torch's by {worst:.3g}\n kiln {got}\n torch {want}")
            finally:
                lib.kn_scope_end(scope)


def main():
    live = lib.kn_live_tensors()
    test_gradients()
    check(lib.kn_live_tensors() == live, f"{lib.kn_live_tensors() - live} kiln tensors leaked")
    print(f"python_complex: numpy {np.__version__}, torch {torch.__version__}: "
          f"{check.count - check.failed} passed, {check.failed} failed")
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
