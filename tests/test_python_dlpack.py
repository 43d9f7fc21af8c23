"""DLPack between kiln (the shared library, through ctypes) and NumPy (and
PyTorch when present), both ways, without a copy:

  kiln -> numpy  kn_to_dlpack's DLManagedTensorVersioned, read by numpy's own
                 np.from_dlpack (NumPy 1.x takes only the unversioned
                 "dltensor" capsule, so a DLManagedTensor wrapping the
                 versioned one is handed over), and by an ndarray built over
                 the struct's data/shape/strides (bool, which NumPy 1.x's
                 DLPack lacks, and NumPy 2.x alike).
  numpy -> kiln  numpy's own arr.__dlpack__() capsule into kn_from_dlpack_legacy,
                 and a DLManagedTensorVersioned built here over an array (with a
                 ctypes deleter holding the array) into kn_from_dlpack.

Zero copy: the data pointers are equal, and a write on either side is read on
the other. Lifetimes: each deleter runs exactly once, after both sides let go,
in either order.

    test_python_dlpack.py LIBKILN_PATH   (exit 77: no numpy here, skipped;
                                          under CI=true a missing numpy fails)
"""
import ctypes
import gc
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kt_python import C64, C128, Checks, Scope, require  # noqa: E402

np = require("python_dlpack", "numpy")
try:
    import torch
    import torch.utils.dlpack
except ImportError:
    torch = None

check = Checks()


# ---- DLPack's structs (include/kiln/vendor/dlpack.h) ---------------------------------
from ctypes import POINTER, Structure, addressof, c_char_p, c_double, c_int, c_int16, c_int32, c_int64, \
    c_uint8, c_uint16, c_uint32, c_uint64, c_void_p  # noqa: E402

kDLCPU, kDLCUDAHost = 1, 3
kDLInt, kDLUInt, kDLFloat, kDLBfloat, kDLComplex, kDLBool = 0, 1, 2, 4, 5, 6
READ_ONLY = 1 << 0
Deleter = ctypes.CFUNCTYPE(None, c_void_p)  # void (*)(DLManagedTensor[Versioned] *)


class DLDevice(Structure):
    _fields_ = [("device_type", c_int32), ("device_id", c_int32)]


class DLDataType(Structure):
    _fields_ = [("code", c_uint8), ("bits", c_uint8), ("lanes", c_uint16)]


class DLTensor(Structure):
    _fields_ = [("data", c_void_p), ("device", DLDevice), ("ndim", c_int32), ("dtype", DLDataType),
                ("shape", POINTER(c_int64)), ("strides", POINTER(c_int64)), ("byte_offset", c_uint64)]


class DLPackVersion(Structure):
    _fields_ = [("major", c_uint32), ("minor", c_uint32)]


class DLManagedTensorVersioned(Structure):
    _fields_ = [("version", DLPackVersion), ("manager_ctx", c_void_p), ("deleter", Deleter),
                ("flags", c_uint64), ("dl_tensor", DLTensor)]


class DLManagedTensor(Structure):
    _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", c_void_p), ("deleter", Deleter)]


# ---- kiln --------------------------------------------------------------------------------
class KnDevice(Structure):
    _fields_ = [("kind", c_int16), ("index", c_int16)]


CPU = KnDevice(0, 0)
KN = {"float32": 0, "float16": 1, "bfloat16": 2, "float64": 3, "int32": 4, "int64": 5, "uint8": 6, "bool": 7}
DL_OF = {"float32": (kDLFloat, 32), "float16": (kDLFloat, 16), "bfloat16": (kDLBfloat, 16),
         "float64": (kDLFloat, 64), "int32": (kDLInt, 32), "int64": (kDLInt, 64), "uint8": (kDLUInt, 8),
         "bool": (kDLBool, 8)}
NUMPY_DTYPES = ["float32", "float16", "float64", "int32", "int64", "uint8", "bool"]  # all but bfloat16

# PyDLL keeps the GIL during calls: a kiln release may run numpy's or our deleter.
lib = ctypes.PyDLL(sys.argv[1])
T = c_void_p  # kn_tensor *
for name, res, args in [
    ("kn_from_data", T, [c_void_p, c_int, c_int, POINTER(c_int64), KnDevice]),
    ("kn_reshape", T, [T, c_int, POINTER(c_int64)]),
    ("kn_transpose", T, [T, c_int, c_int]),
    ("kn_slice", T, [T, c_int, c_int64, c_int64, c_int64]),
    ("kn_get", c_double, [T, POINTER(c_int64)]),
    ("kn_fill_", c_int, [T, c_double]),
    ("kn_release", None, [T]),
    ("kn_error", c_char_p, []),
    ("kn_error_clear", None, []),
    ("kn_live_tensors", c_int64, []),
    ("kn_to_dlpack", POINTER(DLManagedTensorVersioned), [T]),
    ("kn_to_host", c_int, [T, c_void_p, c_int]),
    ("kn_dtype_of", c_int, [T]),
    ("kn_neg", T, [T]),
    ("kn_copy_", c_int, [T, T]),
    ("kn_scope_begin", Scope, []),
    ("kn_scope_end", None, [Scope]),
    ("kn_from_dlpack", T, [POINTER(DLManagedTensorVersioned)]),
    ("kn_from_dlpack_legacy", T, [c_void_p]),
]:
    f = getattr(lib, name)
    f.restype, f.argtypes = res, args


def i64s(vals):
    return (c_int64 * max(len(vals), 1))(*vals)


def kget(t, *index):
    return lib.kn_get(t, i64s(index))


def kiln_tensor(arr):
    """A kiln CPU tensor with a copy of a contiguous numpy array."""
    arr = np.ascontiguousarray(arr)
    t = lib.kn_from_data(arr.ctypes.data, KN[arr.dtype.name], arr.ndim, i64s(arr.shape), CPU)
    check(t, f"kn_from_data: {lib.kn_error()}")
    return t


def error():
    return lib.kn_error().decode()


# ---- kiln -> numpy ----------------------------------------------------------------------
deleted = {"kiln": 0, "ours": 0}
keep = {}  # our structs, by address, alive until their deleter runs


def call_kiln_deleter(mp):
    deleted["kiln"] += 1
    mp.contents.deleter(addressof(mp.contents))


@Deleter
def legacy_wrapper_deleter(addr):
    """The deleter of the DLManagedTensor handed to numpy: runs kiln's once."""
    _, mp = keep.pop(addr)
    call_kiln_deleter(mp)


pythonapi = ctypes.pythonapi
pythonapi.PyCapsule_New.restype = ctypes.py_object
pythonapi.PyCapsule_New.argtypes = [c_void_p, c_char_p, c_void_p]
pythonapi.PyCapsule_GetPointer.restype = c_void_p
pythonapi.PyCapsule_GetPointer.argtypes = [ctypes.py_object, c_char_p]
pythonapi.PyCapsule_SetName.restype = c_int
pythonapi.PyCapsule_SetName.argtypes = [ctypes.py_object, c_char_p]
DLTENSOR, USED = b"dltensor", b"used_dltensor"  # kept alive: capsules keep the pointer


class LegacyCapsule:
    """What np.from_dlpack and torch.utils.dlpack.from_dlpack take: an object
    whose __dlpack__ gives a "dltensor" capsule. Its DLManagedTensor shares the
    versioned struct's DLTensor (the same data, shape and strides arrays)."""

    def __init__(self, mp):
        legacy = DLManagedTensor(dl_tensor=mp.contents.dl_tensor, manager_ctx=None, deleter=legacy_wrapper_deleter)
        self.key = addressof(legacy)
        keep[self.key] = (legacy, mp)
        self.capsule = pythonapi.PyCapsule_New(addressof(legacy), DLTENSOR, None)  # consumed below

    def __dlpack__(self, stream=None):
        return self.capsule

    def __dlpack_device__(self):
        return (kDLCPU, 0)


def numpy_dtype(dl):
    code_bits = (dl.code, dl.bits)
    for name, cb in DL_OF.items():
        if cb == code_bits and name != "bfloat16":
            return np.dtype(name)
    raise ValueError(f"no numpy dtype for DLPack code {dl.code}, {dl.bits} bits")


def ndarray_from_fields(mp):
    """An ndarray over a versioned struct's memory, built from its fields. The
    memory's owner object runs the deleter when the last array over it goes."""
    t = mp.contents.dl_tensor
    dt = numpy_dtype(t.dtype)
    shape = tuple(t.shape[d] for d in range(t.ndim))
    strides = tuple(t.strides[d] for d in range(t.ndim))
    span = (sum((n - 1) * s for n, s in zip(shape, strides)) + 1) * dt.itemsize if all(shape) else 0

    class Owner(ctypes.c_char * max(span, 1)):
        def __del__(self):
            call_kiln_deleter(mp)

    buf = Owner.from_address(t.data + t.byte_offset)
    return np.ndarray(shape, dt, buffer=buf, strides=tuple(s * dt.itemsize for s in strides))


def test_kiln_to_numpy():
    live = lib.kn_live_tensors()
    ref = np.arange(24, dtype=np.float32).reshape(4, 6)
    views = {"contiguous": (lambda t: t, ref), "transposed": (lambda t: lib.kn_transpose(t, 0, 1), ref.T),
             "sliced": (lambda t: lib.kn_slice(t, 1, 1, 6, 2), ref[:, 1:6:2])}
    for how in ("numpy's from_dlpack", "fields"):
        for name, (make, expect) in views.items():
            what = f"kiln -> numpy ({how}), {name}"
            base = kiln_tensor(ref)
            t = make(base)
            deleted["kiln"] = 0
            mp = lib.kn_to_dlpack(t)
            check(mp, f"kn_to_dlpack {name}: {error()}")
            m = mp.contents
            check(m.version.major == 1 and m.flags == 0, f"{what}: version {m.version.major}.{m.version.minor}")
            a = np.from_dlpack(LegacyCapsule(mp)) if how != "fields" else ndarray_from_fields(mp)
            check(a.ctypes.data == m.dl_tensor.data, f"{what}: the same data pointer")
            check(a.shape == expect.shape and a.strides == expect.strides,
                  f"{what}: shape {a.shape} strides {a.strides}, expected {expect.strides}")
            check(np.array_equal(a, expect), f"{what}: values")
            # numpy writes, kiln reads (NumPy 1.x's from_dlpack arrays are read-only:
            # the fields-built array is the writable one); kiln writes, numpy reads.
            check(a.flags.writeable or how != "fields", f"{what}: writable")
            if a.flags.writeable:
                a[1, 1] = 1000
                check(kget(t, 1, 1) == 1000, f"{what}: numpy's write read by kiln")
            lib.kn_fill_(t, 7)
            check(bool((a == 7).all()), f"{what}: kiln's write read by numpy")
            if t != base:
                lib.kn_release(t)
            lib.kn_release(base)
            gc.collect()
            check(deleted["kiln"] == 0 and bool((a == 7).all()), f"{what}: the array outlives the kiln tensors")
            if a.flags.writeable:
                a[0, 0] = 1  # still writable: kiln's memory lives on
            del a
            gc.collect()
            check(deleted["kiln"] == 1, f"{what}: the deleter ran once when the array went ({deleted['kiln']})")

    # The kiln tensor goes first: the array still reads and writes kiln's memory.
    t = kiln_tensor(np.arange(6, dtype=np.float64))
    deleted["kiln"] = 0
    a = np.from_dlpack(LegacyCapsule(lib.kn_to_dlpack(t)))
    v = a[2:]  # a view of the array keeps it too
    lib.kn_release(t)
    del a
    gc.collect()
    check(deleted["kiln"] == 0 and list(v) == [2, 3, 4, 5], "the array outlives the kiln tensor")
    if v.flags.writeable:
        v[0] = 9
    del v
    gc.collect()
    check(deleted["kiln"] == 1, f"deleter once after the tensor, then the array ({deleted['kiln']})")

    # Every kiln dtype numpy has (bool through the fields: numpy 1.x's DLPack has no bool).
    deleted["kiln"], paths = 0, []
    for name in NUMPY_DTYPES:
        vals = np.array([0, 1, 2, 3, 4, 5], dtype=name).reshape(2, 3)
        t = kiln_tensor(vals)
        mp = lib.kn_to_dlpack(t)
        code_bits = (mp.contents.dl_tensor.dtype.code, mp.contents.dl_tensor.dtype.bits)
        check(code_bits == DL_OF[name], f"{name}: exported as {code_bits}, expected {DL_OF[name]}")
        wrapper = LegacyCapsule(mp)
        try:
            a, how = np.from_dlpack(wrapper), "numpy's from_dlpack"
        except (BufferError, RuntimeError, TypeError):
            keep.pop(wrapper.key)  # numpy refused it: the wrapper is ours to drop, kiln's struct is not deleted
            a, how = ndarray_from_fields(mp), "fields"
        del wrapper
        paths.append(f"{name} ({how})")
        lib.kn_release(t)
        check(a.dtype == vals.dtype and np.array_equal(a, vals), f"kiln -> numpy {name} ({how}): {a}")
        check(a.ctypes.data == mp.contents.dl_tensor.data, f"kiln -> numpy {name}: the same data pointer")
        del a
    gc.collect()
    check(deleted["kiln"] == len(NUMPY_DTYPES), f"one deleter call per dtype ({deleted['kiln']})")
    print("python_dlpack: kiln -> numpy dtypes:", ", ".join(paths))
    check(lib.kn_live_tensors() == live, f"kiln -> numpy: no kiln tensor leaked ({lib.kn_live_tensors()} vs {live})")


# ---- numpy -> kiln ---------------------------------------------------------------------
@Deleter
def our_versioned_deleter(addr):
    deleted["ours"] += 1
    keep.pop(addr)  # drops the array reference


def versioned_of(arr):
    """A DLManagedTensorVersioned over a numpy array, holding the array."""
    item = arr.dtype.itemsize
    check(all(s % item == 0 for s in arr.strides), "element strides")
    shape, strides = i64s(arr.shape), i64s([s // item for s in arr.strides])
    code, bits = DL_OF[arr.dtype.name]
    m = DLManagedTensorVersioned(
        version=DLPackVersion(1, 1), manager_ctx=None, deleter=our_versioned_deleter,
        flags=0 if arr.flags.writeable else READ_ONLY,
        dl_tensor=DLTensor(arr.ctypes.data, DLDevice(kDLCPU, 0), arr.ndim, DLDataType(code, bits, 1), shape,
                           strides, 0))
    keep[addressof(m)] = (m, shape, strides, arr)
    return m


def from_numpy_capsule(arr):
    """numpy's own legacy capsule into kiln, by the protocol: renamed when taken."""
    cap = arr.__dlpack__()
    t = lib.kn_from_dlpack_legacy(pythonapi.PyCapsule_GetPointer(cap, DLTENSOR))
    if t:
        pythonapi.PyCapsule_SetName(cap, USED)  # kiln owns it now: the capsule must not delete it
    return t


def test_numpy_to_kiln():
    live = lib.kn_live_tensors()
    for how in ("numpy's __dlpack__", "versioned struct"):
        for name in NUMPY_DTYPES:
            if how == "numpy's __dlpack__" and name == "bool":
                continue  # numpy 1.x exports no bool (BufferError)
            base = np.arange(12).astype(name).reshape(3, 4)
            for view_name, a in (("contiguous", base), ("transposed", base.T), ("sliced", base[:, 1::2])):
                what = f"numpy -> kiln ({how}) {name} {view_name}"
                refs = sys.getrefcount(a)
                deleted["ours"] = 0
                if how == "versioned struct":
                    m = versioned_of(a)
                    t = lib.kn_from_dlpack(ctypes.byref(m))
                    del m
                else:
                    t = from_numpy_capsule(a)
                check(t, f"{what}: {error()}")
                if not t:
                    continue
                check(sys.getrefcount(a) > refs, f"{what}: kiln holds the array")
                ok = all(kget(t, *ix) == float(a[ix]) for ix in np.ndindex(*a.shape))
                check(ok, f"{what}: kiln reads numpy's elements")
                lib.kn_fill_(t, 1)  # kiln writes, numpy reads
                check(bool((a == 1).all()), f"{what}: kiln's write read by numpy")
                a[0, 0] = 0  # numpy writes, kiln reads
                check(kget(t, 0, 0) == 0, f"{what}: numpy's write read by kiln")
                lib.kn_release(t)
                gc.collect()
                check(sys.getrefcount(a) == refs,
                      f"{what}: the deleter ran once when kiln let go (refs {sys.getrefcount(a)} vs {refs})")
                if how == "versioned struct":
                    check(deleted["ours"] == 1, f"{what}: our deleter ran {deleted['ours']} times")

    # The numpy side goes first: kiln's tensor keeps the memory.
    a = np.arange(5, dtype=np.float32)
    t = from_numpy_capsule(a[1:])
    del a
    gc.collect()
    check(kget(t, 3) == 4, "kiln reads after numpy dropped its array")
    lib.kn_release(t)

    # Read-only: refused, nothing taken; the caller runs the deleter.
    ro = np.arange(4, dtype=np.float64)
    ro.flags.writeable = False
    deleted["ours"] = 0
    m = versioned_of(ro)
    lib.kn_error_clear()
    t = lib.kn_from_dlpack(ctypes.byref(m))
    check(not t and "read-only" in error(), f"a read-only array is refused: {error()}")
    check(deleted["ours"] == 0, "refused: kiln did not call the deleter")
    m.deleter(addressof(m))
    check(deleted["ours"] == 1, "refused: the caller's deleter call")
    # Another refusal (a device kiln does not take): the struct stays ours.
    d = versioned_of(np.arange(2, dtype=np.float32))
    d.dl_tensor.device = DLDevice(kDLCUDAHost, 0)
    t = lib.kn_from_dlpack(ctypes.byref(d))
    check(not t and "kDLCUDAHost" in error(), f"kDLCUDAHost refused: {error()}")
    d.deleter(addressof(d))
    check(lib.kn_live_tensors() == live, "numpy -> kiln: no kiln tensor leaked")


# ---- torch (bfloat16 is the dtype numpy lacks) -------------------------------------------
def test_torch():
    if torch is None:
        if os.environ.get("CI") == "true":
            check(False, "torch is not installed, and CI=true needs it")
        else:
            print("python_dlpack: torch is not installed; its part is skipped")
        return
    for name, tdt in (("bfloat16", torch.bfloat16), ("float32", torch.float32), ("int64", torch.int64)):
        # torch -> kiln: torch's legacy capsule.
        x = torch.arange(12, dtype=tdt).reshape(3, 4).t()
        cap = torch.utils.dlpack.to_dlpack(x)
        t = lib.kn_from_dlpack_legacy(pythonapi.PyCapsule_GetPointer(cap, DLTENSOR))
        check(t, f"torch -> kiln {name}: {error()}")
        if not t:
            continue
        pythonapi.PyCapsule_SetName(cap, USED)
        check(kget(t, 2, 1) == 6, f"torch -> kiln {name}: strided read")
        lib.kn_fill_(t, 3)
        check(bool((x == 3).all()), f"torch -> kiln {name}: kiln's write read by torch")
        lib.kn_release(t)
        del cap

        # kiln -> torch: a kiln tensor of that dtype (bfloat16 given as its bits).
        want = torch.arange(6, dtype=tdt).reshape(2, 3)
        raw = (want.view(torch.int16) if tdt == torch.bfloat16 else want).numpy()
        k = lib.kn_from_data(raw.ctypes.data, KN[name], 2, i64s([2, 3]), CPU)
        deleted["kiln"] = 0
        kt = lib.kn_transpose(k, 0, 1)
        mp = lib.kn_to_dlpack(kt)
        check(mp.contents.dl_tensor.dtype.code == DL_OF[name][0], f"kiln -> torch {name}: DLPack code")
        y = torch.utils.dlpack.from_dlpack(LegacyCapsule(mp).capsule)
        check(y.dtype == tdt and torch.equal(y, want.t()) and y.stride() == (1, 3), f"kiln -> torch {name}: {y}")
        check(y.data_ptr() == mp.contents.dl_tensor.data, f"kiln -> torch {name}: the same data pointer")
        y[2, 1] = 40
        check(kget(k, 1, 2) == 40, f"kiln -> torch {name}: torch's write read by kiln")
        lib.kn_fill_(k, -2)
        check(bool((y == -2).all()), f"kiln -> torch {name}: kiln's write read by torch")
        lib.kn_release(kt)
        lib.kn_release(k)
        check(deleted["kiln"] == 0 and float(y[0, 0]) == -2, f"kiln -> torch {name}: torch outlives kiln")
        del y
        gc.collect()
        check(deleted["kiln"] == 1, f"kiln -> torch {name}: the deleter ran once ({deleted['kiln']})")


def kiln_complex(t, shape, npdt):
    """A complex kiln tensor's elements (row-major, in its own dtype npdt) as a numpy array."""
    out = np.zeros(shape, dtype=npdt)
    check(lib.kn_to_host(t, out.ctypes.data, C64 if npdt == np.complex64 else C128) == 0,
          f"kn_to_host: {error()}")
    return out


def same_bits(a, b):
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def complex_values(npdt, shape, rng):
    """Random pairs with the specials (infinities, -0, NaN with a payload, subnormals) in either part."""
    real = np.float32 if npdt == np.complex64 else np.float64
    v = rng.standard_normal(shape + (2,)).astype(real)
    flat = v.reshape(-1)
    specials = [np.inf, -np.inf, -0.0, np.finfo(real).tiny / 4, np.finfo(real).max]
    flat[:len(specials)] = specials
    bits = flat.view(np.uint32 if real == np.float32 else np.uint64)
    bits[len(specials)] = 0x7FC01234 if real == np.float32 else 0x7FF8000000000ABC  # a quiet NaN, payload
    return v.view(npdt)[..., 0]


def test_complex():
    """complex64/complex128 both ways: torch.utils.dlpack (to_dlpack's capsule into
    kiln, kiln's tensor into from_dlpack) and numpy's __dlpack__; the bits of both
    parts exact, zero copy, writes seen on the other side, the deleter once."""
    rng = np.random.default_rng(7)
    for npdt, kn, bits in ((np.complex64, C64, 64), (np.complex128, C128, 128)):
        name = np.dtype(npdt).name
        scope = lib.kn_scope_begin()
        # numpy -> kiln (numpy's own capsule), a transposed view.
        a = complex_values(npdt, (3, 4), rng).T
        cap = a.__dlpack__()
        t = lib.kn_from_dlpack_legacy(pythonapi.PyCapsule_GetPointer(cap, DLTENSOR))
        check(t and lib.kn_dtype_of(t) == kn, f"numpy -> kiln {name}: {error()}")
        if t:
            pythonapi.PyCapsule_SetName(cap, USED)
            check(same_bits(kiln_complex(t, a.shape, npdt), a), f"numpy -> kiln {name}: the bits of both parts")
        del cap
        if torch is not None:
            tdt = torch.complex64 if npdt == np.complex64 else torch.complex128
            # torch -> kiln: to_dlpack's capsule of a transposed tensor.
            x = torch.from_numpy(complex_values(npdt, (3, 4), rng)).t()
            want = x.numpy().copy()
            cap = torch.utils.dlpack.to_dlpack(x)
            t = lib.kn_from_dlpack_legacy(pythonapi.PyCapsule_GetPointer(cap, DLTENSOR))
            check(t and lib.kn_dtype_of(t) == kn, f"torch -> kiln {name}: {error()}")
            if t:
                pythonapi.PyCapsule_SetName(cap, USED)
                check(same_bits(kiln_complex(t, tuple(x.shape), npdt), want), f"torch -> kiln {name}: bits")
                check(lib.kn_copy_(t, lib.kn_neg(t)) == 0, f"torch -> kiln {name}: kiln writes: {error()}")
                real = torch.view_as_real(x)
                wr = torch.view_as_real(torch.from_numpy(want))
                check(bool(((real == -wr) | torch.isnan(wr)).all()), f"torch -> kiln {name}: kiln's -x read by torch")
            del cap
            # kiln -> torch: a transposed kiln tensor, through a "dltensor" capsule.
            src = complex_values(npdt, (2, 3), rng)
            shape = (c_int64 * 2)(2, 3)
            k = lib.kn_from_data(src.ctypes.data, kn, 2, shape, CPU)
            kt = lib.kn_transpose(k, 0, 1)
            deleted["kiln"] = 0
            mp = lib.kn_to_dlpack(kt)
            dl = mp.contents.dl_tensor.dtype
            check((dl.code, dl.bits, dl.lanes) == (kDLComplex, bits, 1), f"kiln -> torch {name}: DLPack dtype")
            y = torch.utils.dlpack.from_dlpack(LegacyCapsule(mp).capsule)
            check(y.dtype == tdt and y.stride() == (1, 3) and y.data_ptr() == mp.contents.dl_tensor.data,
                  f"kiln -> torch {name}: {y.dtype}, strides {y.stride()}, zero copy")
            check(same_bits(y.numpy(), src.T), f"kiln -> torch {name}: the bits of both parts")
            y[2, 1] = complex(40, -0.5)
            got = kiln_complex(k, (2, 3), npdt)
            check(got[1, 2] == complex(40, -0.5), f"kiln -> torch {name}: torch's write read by kiln ({got[1, 2]})")
            lib.kn_scope_end(scope)  # releases k, kt and the imports above
            check(deleted["kiln"] == 0, f"kiln -> torch {name}: torch outlives kiln")
            del y
            gc.collect()
            check(deleted["kiln"] == 1, f"kiln -> torch {name}: the deleter ran once ({deleted['kiln']})")
        else:
            lib.kn_scope_end(scope)


test_kiln_to_numpy()
test_numpy_to_kiln()
test_torch()
test_complex()
gc.collect()
check(not keep, f"{len(keep)} structs were never deleted")
print(f"python_dlpack: numpy {np.__version__}" + (f", torch {torch.__version__}" if torch else "") +
      (f": {check.count} checks passed" if not check.failed else f": {check.failed} of {check.count} checks failed"))
sys.exit(1 if check.failed else 0)
