"""kiln's FFT ops against numpy.fft, through the shared library and ctypes,
on fixed random inputs: fft, ifft, rfft, irfft (n given, cropped, padded and
the default; every norm; every dim, negative too; odd, prime and Bluestein
lengths) and the 2-D forms with their axes, in complex128 and complex64; and
the gradients of rfft and irfft against torch.fft's.

    test_python_fft.py LIBKILN_SO     (exit 77: no numpy or torch here,
                                       skipped; under CI=true that fails)
"""
import ctypes
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kt_python import Checks, Device, Scope, helpers, host_reader, require  # noqa: E402

np, torch = require("python_fft", "numpy", "torch")
check = Checks()


F32, F64, C64, C128 = 0, 3, 8, 9
NORMS = {"backward": 0, "ortho": 1, "forward": 2}
NP_OF = {F32: np.float32, F64: np.float64, C64: np.complex64, C128: np.complex128}

lib = ctypes.CDLL(sys.argv[1])
P, I, I64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
PI64, PI = ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_int)
for name, res, args in [
        ("kn_error", ctypes.c_char_p, []), ("kn_from_data", P, [P, I, I, PI64, Device]),
        ("kn_to_host", I, [P, P, I]), ("kn_numel", I64, [P]), ("kn_ndim", I, [P]), ("kn_shape", PI64, [P]),
        ("kn_dtype_of", I, [P]), ("kn_live_tensors", I64, []), ("kn_scope_begin", Scope, []),
        ("kn_scope_end", None, [Scope]), ("kn_requires_grad_", P, [P, ctypes.c_bool]), ("kn_grad", P, [P]),
        ("kn_backward_with", I, [P, P]),
        ("kn_fft", P, [P, I64, I, I]), ("kn_ifft", P, [P, I64, I, I]), ("kn_rfft", P, [P, I64, I, I]),
        ("kn_irfft", P, [P, I64, I, I]), ("kn_fft2", P, [P, PI64, PI, I]), ("kn_ifft2", P, [P, PI64, PI, I]),
        ("kn_rfft2", P, [P, PI64, PI, I]), ("kn_irfft2", P, [P, PI64, PI, I])]:
    fn = getattr(lib, name)
    fn.restype, fn.argtypes = res, args
err, kt = helpers(lib, NP_OF)

host = host_reader(lib, err)


def close(got, want, tol, what):
    ok = got.shape == want.shape and np.allclose(got, want, rtol=tol, atol=tol * max(1.0, np.abs(want).max()))
    worst = float(np.abs(got - want).max()) if got.shape == want.shape and got.size else float("nan")
    check(ok, f"{what}: shape {got.shape} vs {want.shape}, worst error {worst:.3g}")


rng = np.random.default_rng(1234)


def rand(shape, cplx):
    a = rng.uniform(-1, 1, shape)
    return a + 1j * rng.uniform(-1, 1, shape) if cplx else a


def test_1d():
    for n_len in (1, 2, 5, 8, 12, 17, 97, 360, 1009, 4099):
        for dt in (C128, C64):
            tol = 1e-12 if dt == C128 else 2e-5
            x = rand((3, n_len), True)
            xt = kt(x, dt)
            for norm in NORMS:
                for fname, ref in (("fft", np.fft.fft), ("ifft", np.fft.ifft)):
                    got = host(getattr(lib, "kn_" + fname)(xt, -1, -1, NORMS[norm]))
                    close(got, ref(x.astype(NP_OF[dt]), axis=-1, norm=norm), tol, f"{fname} {n_len} {norm} {dt}")
            xr = x.real.copy()
            rdt = F64 if dt == C128 else F32
            r = kt(xr, rdt)
            close(host(lib.kn_rfft(r, -1, 1, 0)), np.fft.rfft(xr, axis=1), tol, f"rfft {n_len}")
            spec = np.fft.rfft(xr, axis=1)
            for n in (-1, n_len, n_len + 3, max(1, n_len - 1)):
                if n == -1 and spec.shape[1] == 1:
                    continue
                want = np.fft.irfft(spec, n=None if n == -1 else n, axis=1, norm="ortho")
                got = host(lib.kn_irfft(kt(spec, dt), n, 1, NORMS["ortho"]))
                close(got, want, tol, f"irfft {n_len} -> {n}")


def test_dims_and_lengths():
    x = rand((4, 6, 5), True)
    xt = kt(x, C128)
    for dim in (-3, -2, -1, 0, 1, 2):
        for n in (-1, 3, 7, 16):
            want = np.fft.fft(x, n=None if n == -1 else n, axis=dim)
            close(host(lib.kn_fft(xt, n, dim, 0)), want, 1e-12, f"fft dim {dim} n {n}")
            wr = np.fft.rfft(x.real, n=None if n == -1 else n, axis=dim)
            close(host(lib.kn_rfft(kt(x.real, F64), n, dim, 2)), wr / (x.shape[dim] if n == -1 else n), 1e-12,
                  f"rfft dim {dim} n {n} norm forward")


def test_2d():
    x = rand((3, 6, 10), True)
    xt = kt(x, C128)
    for axes in ((-2, -1), (0, 2), (2, 0)):
        dims = (ctypes.c_int * 2)(*axes)
        for s in (None, (4, 12)):
            sp = (ctypes.c_int64 * 2)(*s) if s else None
            close(host(lib.kn_fft2(xt, sp, dims, 0)), np.fft.fft2(x, s=s, axes=axes), 1e-12, f"fft2 {axes} {s}")
            close(host(lib.kn_ifft2(xt, sp, dims, 1)), np.fft.ifft2(x, s=s, axes=axes, norm="ortho"), 1e-12,
                  f"ifft2 {axes} {s}")
            xr = x.real.copy()
            r2 = np.fft.rfft2(xr, s=s, axes=axes)
            close(host(lib.kn_rfft2(kt(xr, F64), sp, dims, 0)), r2, 1e-12, f"rfft2 {axes} {s}")
            close(host(lib.kn_irfft2(kt(r2, C128), sp, dims, 0)), np.fft.irfft2(r2, s=s, axes=axes), 1e-12,
                  f"irfft2 {axes} {s}")


def test_gradients():
    """d sum(w * f(x)) / dx for rfft and irfft, against torch.fft's autograd."""
    for n_len in (6, 7):
        x = rng.uniform(-1, 1, (2, n_len))
        w = rand((2, n_len // 2 + 1), True)
        t = lib.kn_requires_grad_(kt(x, F64), True)
        y = lib.kn_rfft(t, -1, 1, 1)
        # kn_backward_with's grad for a complex y is dL/dRe + i dL/dIm: for L = Re(sum conj(w) y), w.
        lib.kn_backward_with(y, kt(w, C128))
        tx = torch.tensor(x, requires_grad=True)
        torch.real((torch.conj(torch.tensor(w)) * torch.fft.rfft(tx, norm="ortho")).sum()).backward()
        close(host(lib.kn_grad(t)), tx.grad.numpy(), 1e-12, f"rfft gradient {n_len}")
        for n in (n_len, n_len + 1):
            spec = rand((2, 4), True)
            # The complex leaf is held as its real pairs (kiln's leaves are real).
            pairs = lib.kn_requires_grad_(kt(np.stack([spec.real, spec.imag], -1), F64), True)
            lib.kn_view_as_complex.restype, lib.kn_view_as_complex.argtypes = P, [P]
            out = lib.kn_irfft(lib.kn_view_as_complex(pairs), n, 1, 0)
            wr = rng.uniform(-1, 1, (2, n))
            lib.kn_backward_with(out, kt(wr, F64))
            ts = torch.tensor(spec, requires_grad=True)
            (torch.tensor(wr) * torch.fft.irfft(ts, n=n)).sum().backward()
            g = host(lib.kn_grad(pairs))
            close(g[..., 0] + 1j * g[..., 1], ts.grad.numpy(), 1e-12, f"irfft gradient {n} from 4 bins")


def main():
    live = lib.kn_live_tensors()
    s = lib.kn_scope_begin()
    test_1d()
    test_dims_and_lengths()
    test_2d()
    test_gradients()
    lib.kn_scope_end(s)
    check(lib.kn_live_tensors() == live, f"{lib.kn_live_tensors() - live} kiln tensors leaked")
    print(f"python_fft: numpy {np.__version__}, torch {torch.__version__}: {check.count - check.failed} passed, "
          f"{check.failed} failed")
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
