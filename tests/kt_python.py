"""What the Python tests share: the modules they need, a counting check, and
the ctypes view of kiln's C API (Device, Scope, the dtype codes, err, kt).

CI installs numpy and torch, so there a missing one is a broken setup and the
test fails; elsewhere it is skipped (exit 77, which CTest reports as skipped).
"""
import ctypes
import importlib
import os
import sys


def require(test, *modules):
    """The modules, imported; exits 1 under CI=true or 77 when one is missing."""
    out = []
    for name in modules:
        try:
            out.append(importlib.import_module(name))
        except ImportError:
            if os.environ.get("CI") == "true":
                print(f"{test}: {name} is not installed, and CI=true needs it")
                sys.exit(1)
            print(f"{test}: {name} is not installed; skipped")
            sys.exit(77)
    return out[0] if len(out) == 1 else out


class Checks:
    """check(ok, what): counts the checks and prints each failure."""

    def __init__(self):
        self.count = 0
        self.failed = 0

    def __call__(self, ok, what):
        self.count += 1
        if not ok:
            self.failed += 1
            print("FAILED:", what)


# ---- the C API's types and the helpers every ctypes test uses ------------------------


class Device(ctypes.Structure):  # kn_device (include/kiln/device.h)
    _fields_ = [("kind", ctypes.c_int16), ("index", ctypes.c_int16)]


class Scope(ctypes.Structure):  # kn_scope (include/kiln/core.h)
    _fields_ = [("depth", ctypes.c_int)]


CPU = Device(0, 0)
# kn_dtype (include/kiln/core.h)
F32, F16, BF16, F64, I32, I64, U8, BOOL, C64, C128 = range(10)


def helpers(lib, np_of):
    """err() and kt(a, dt) for the shared library lib (a ctypes.CDLL).

    err() is kn_error()'s text. kt(a, dt) is a kiln CPU tensor, in the open
    scope, holding array a's values converted to np_of[dt] (a numpy dtype).
    """
    lib.kn_error.restype, lib.kn_error.argtypes = ctypes.c_char_p, []
    lib.kn_from_data.restype = ctypes.c_void_p
    lib.kn_from_data.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int64),
                                 Device]
    np = importlib.import_module("numpy")

    def err():
        return lib.kn_error().decode(errors="replace")

    def kt(a, dt):
        a = np.ascontiguousarray(a, dtype=np_of[dt])
        shape = (ctypes.c_int64 * max(1, a.ndim))(*a.shape)
        t = lib.kn_from_data(a.ctypes.data, dt, a.ndim, shape, CPU)
        if not t:
            raise RuntimeError(err())
        return t

    return err, kt


def host_reader(lib, err):
    """host(t): a kiln tensor's values as a numpy array (complex128 for a
    complex tensor, else float64), shaped. lib must have kn_to_host,
    kn_numel, kn_ndim, kn_shape and kn_dtype_of declared."""
    np = importlib.import_module("numpy")

    def host(t):
        if not t:
            raise RuntimeError(err())
        cplx = lib.kn_dtype_of(t) in (C64, C128)
        shape = tuple(lib.kn_shape(t)[d] for d in range(lib.kn_ndim(t)))
        out = np.zeros(max(1, lib.kn_numel(t)), dtype=np.complex128 if cplx else np.float64)
        if lib.kn_to_host(t, out.ctypes.data, C128 if cplx else F64) != 0:
            raise RuntimeError(err())
        return out[:lib.kn_numel(t)].reshape(shape)

    return host
