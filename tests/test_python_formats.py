"""kiln's file formats against numpy and PyTorch, both ways, compared bit for
bit (NaN payloads, infinities, -0.0, float16 subnormals: every float16 bit
pattern), through the shared library and ctypes:

  .npy  numpy writes (little- and big-endian, C and Fortran order,
        non-contiguous sources, 0-d, empty, header versions 1, 2 and 3) ->
        kn_npy_load -> kn_npy_save -> numpy reads and compares;
  .npz  numpy.savez and numpy.savez_compressed (and ZIP64 archives) ->
        kn_npz_open / kn_npz_get -> kn_npz_save stored and deflated (and
        ZIP64) -> numpy reads, Python's zipfile checks every CRC;
  safetensors  torch tensors of every kiln dtype (bfloat16 and bool too),
        written by a small independent implementation of the published
        format -> kn_safetensors_open / get; kiln tensors made from torch
        memory -> kn_safetensors_save -> the same Python reader. With the
        `safetensors` package installed, its files are used as well.

    test_python_formats.py LIBKILN_SO     (exit 77: no numpy or torch here,
                                           skipped; under CI=true that fails)
"""
import ctypes
import json
import os
import struct
import sys
import tempfile
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kt_python import BF16, BOOL, C64, C128, CPU, F16, F32, F64, I32, I64, U8, Checks, Device, helpers, \
    require  # noqa: E402

np, torch = require("python_formats", "numpy", "torch")
check = Checks()
HAVE_ZLIB = True  # found out in test_npz


# ---- the C API through ctypes ----------------------------------------------------------

class NamedTensor(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("tensor", ctypes.c_void_p)]


class Meta(ctypes.Structure):
    _fields_ = [("key", ctypes.c_char_p), ("value", ctypes.c_char_p)]


NP_OF = {F32: np.float32, F16: np.float16, F64: np.float64, I32: np.int32, I64: np.int64,
         U8: np.uint8, BOOL: np.bool_, C64: np.complex64, C128: np.complex128}
KN_OF = {np.dtype(v).char: k for k, v in NP_OF.items()}
TORCH_OF = {F32: torch.float32, F16: torch.float16, BF16: torch.bfloat16, F64: torch.float64,
            I32: torch.int32, I64: torch.int64, U8: torch.uint8, BOOL: torch.bool, C64: torch.complex64,
            C128: torch.complex128}
ST_NAME = {F32: "F32", F16: "F16", BF16: "BF16", F64: "F64", I32: "I32", I64: "I64", U8: "U8",
           BOOL: "BOOL", C64: "C64"}  # safetensors has no complex128
SIZE = {F32: 4, F16: 2, BF16: 2, F64: 8, I32: 4, I64: 8, U8: 1, BOOL: 1, C64: 8, C128: 16}

lib = ctypes.CDLL(sys.argv[1])
P, S, I = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
for name, res, args in [
        ("kn_error", S, []), ("kn_error_clear", None, []),
        ("kn_from_data", P, [P, I, I, ctypes.POINTER(ctypes.c_int64), Device]),
        ("kn_to_host", I, [P, P, I]), ("kn_ndim", I, [P]),
        ("kn_shape", ctypes.POINTER(ctypes.c_int64), [P]), ("kn_numel", ctypes.c_int64, [P]),
        ("kn_dtype_of", I, [P]), ("kn_release", None, [P]), ("kn_transpose", P, [P, I, I]),
        ("kn_live_tensors", ctypes.c_int64, []),
        ("kn_npy_save", I, [S, P]), ("kn_npy_load", P, [S, Device]),
        ("kn_npz_save", I, [S, I, ctypes.POINTER(NamedTensor), ctypes.c_bool]),
        ("kn_npz_open", P, [S]), ("kn_npz_count", I, [P]), ("kn_npz_name", S, [P, I]),
        ("kn_npz_get", P, [P, S, Device]), ("kn_npz_close", None, [P]),
        ("kn_safetensors_save", I, [S, I, ctypes.POINTER(NamedTensor), I, ctypes.POINTER(Meta)]),
        ("kn_safetensors_open", P, [S]), ("kn_safetensors_count", I, [P]),
        ("kn_safetensors_name", S, [P, I]), ("kn_safetensors_get", P, [P, S, Device]),
        ("kn_safetensors_meta", S, [P, S]), ("kn_safetensors_close", None, [P])]:
    fn = getattr(lib, name)
    fn.restype, fn.argtypes = res, args
# The writer's ZIP64 threshold (src/io/npz_internal.h): lowered to force ZIP64 fields.
zip64_limit = ctypes.c_uint64.in_dll(lib, "kn__npz_zip64_limit")
err, _ = helpers(lib, NP_OF)


def kiln_bytes(t):
    """A kiln tensor's dtype, shape and row-major bytes (kn_to_host, its own dtype)."""
    dt = lib.kn_dtype_of(t)
    shape = tuple(lib.kn_shape(t)[d] for d in range(lib.kn_ndim(t)))
    buf = ctypes.create_string_buffer(max(1, lib.kn_numel(t) * SIZE[dt]))
    if lib.kn_to_host(t, buf, dt) != 0:
        raise RuntimeError(err())
    return dt, shape, buf.raw[:lib.kn_numel(t) * SIZE[dt]]


def canon(a):
    """a as C-order, machine-order bytes, moved without arithmetic (NaN payloads kept)."""
    a = np.array(a, order="C")  # not ascontiguousarray: it makes a 0-d array 1-d
    if a.dtype.byteorder == ">":
        a = a.byteswap().view(a.dtype.newbyteorder("<"))
    return a


def same_array(got, want, what):
    """numpy's array equals want bit for bit: dtype (machine order), shape, bytes."""
    w = canon(want)
    check(got.dtype == w.dtype and got.dtype.byteorder in "=|<", f"{what}: dtype {got.dtype} vs {want.dtype}")
    check(got.shape == w.shape, f"{what}: shape {got.shape} vs {w.shape}")
    check(canon(got).tobytes() == w.tobytes(), f"{what}: bytes differ")


def same_tensor(t, want, what):
    """A kiln tensor equals numpy array want bit for bit."""
    if not t:
        check(False, f"{what}: NULL tensor: {err()}")
        return
    dt, shape, raw = kiln_bytes(t)
    w = canon(want)
    check(dt == KN_OF[w.dtype.char], f"{what}: kiln dtype {dt}, numpy {w.dtype}")
    check(shape == w.shape, f"{what}: kiln shape {shape}, numpy {w.shape}")
    check(raw == w.tobytes(), f"{what}: kiln's bytes differ from numpy's")


def from_numpy(a):
    a = canon(a)
    shape = (ctypes.c_int64 * max(1, a.ndim))(*a.shape)
    t = lib.kn_from_data(a.ctypes.data, KN_OF[a.dtype.char], a.ndim, shape, CPU)
    if not t:
        raise RuntimeError(err())
    return t


# ---- values: every special a dtype has, plus random bit patterns -------------------------

rng = np.random.default_rng(20240607)


def bits(kind, n, specials):
    u = {4: np.uint32, 8: np.uint64}[kind]
    r = rng.integers(0, np.iinfo(u).max, size=n, dtype=u, endpoint=True)
    return np.concatenate([np.array(specials, u), r])


F32_SPECIAL = [0, 0x80000000, 0x3F800000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000,
               0x7FC00001, 0x7F800001, 0xFFBFFFFF, 0x7F7FFFFF, 0x00800000, 0x00000001, 0x807FFFFF]
F64_SPECIAL = [0, 1 << 63, 0x3FF0000000000000, 0x7FF0000000000000, 0xFFF0000000000000,
               0x7FF8000000000000, 0xFFF8000000000001, 0x7FF0000000000001, 0x7FEFFFFFFFFFFFFF,
               0x0010000000000000, 1, 0x800FFFFFFFFFFFFF]


def values(dt, n=240):
    """n values of kiln dtype dt as a 1-d numpy array (float16: cycles all patterns)."""
    if dt == F32:
        return bits(4, n - len(F32_SPECIAL), F32_SPECIAL).view(np.float32)
    if dt == F64:
        return bits(8, n - len(F64_SPECIAL), F64_SPECIAL).view(np.float64)
    if dt == F16:  # 0x0001..0x03ff are the subnormals, 0x7c01.. the NaNs
        return (np.arange(n, dtype=np.uint16) * 273 + 1).view(np.float16)
    if dt in (I32, I64):
        t = NP_OF[dt]
        info = np.iinfo(t)
        sp = np.array([0, 1, -1, info.min, info.max, info.min + 1, info.max - 1], t)
        return np.concatenate([sp, rng.integers(info.min, info.max, n - len(sp), t, endpoint=True)])
    if dt == U8:
        return np.resize(np.arange(256, dtype=np.uint8), n)
    if dt in (C64, C128):  # pairs of the float specials and random patterns, in either part
        return values(F32 if dt == C64 else F64, 2 * n).view(NP_OF[dt])
    return rng.integers(0, 2, n).astype(np.bool_)


def big_endian(a):
    """a stored big-endian: the same values, bytes swapped by hand (no conversion)."""
    if a.dtype.itemsize == 1:
        return a
    return np.frombuffer(a.byteswap().tobytes(), a.dtype.newbyteorder(">")).reshape(a.shape)


def cases():
    """(name, array) pairs: every dtype in every layout numpy writes."""
    out = [("f16_all_bit_patterns", np.arange(65536, dtype=np.uint16).view(np.float16))]
    for dt, np_t in NP_OF.items():
        n = np.dtype(np_t).name
        a = values(dt).reshape(12, 20)
        out += [(f"{n}_c", a), (f"{n}_big_endian", big_endian(a)),
                (f"{n}_fortran", np.asfortranarray(a)),
                (f"{n}_fortran_big_endian", np.asfortranarray(big_endian(a))),
                (f"{n}_strided", a[::2, ::-3]), (f"{n}_3d_fortran", np.asfortranarray(a.reshape(4, 6, 10))),
                (f"{n}_0d", a.reshape(-1)[5:6].reshape(())), (f"{n}_empty", a[:0]),
                (f"{n}_empty3", values(dt)[:0].reshape(3, 0, 2)), (f"{n}_1d", a.reshape(-1))]
    return out


# ---- .npy --------------------------------------------------------------------------------

def npy_header(path):
    with open(path, "rb") as f:
        major, minor = np.lib.format.read_magic(f)
        # Public readers (numpy 2 hides the private one): 2.0's reads 3.0's header too.
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
    return (major, minor), fortran


def test_npy(tmp):
    for name, a in cases():
        for version in [None, (1, 0), (2, 0), (3, 0)]:
            src = os.path.join(tmp, f"np_{name}.npy")
            if version is None:
                np.save(src, a)
            else:
                with open(src, "wb") as f:
                    np.lib.format.write_array(f, a, version=version)
            what = f".npy {name} v{version}"
            t = lib.kn_npy_load(src.encode(), CPU)
            same_tensor(t, a, what + ": numpy -> kiln")
            if not t:
                continue
            out = os.path.join(tmp, f"kn_{name}.npy")
            check(lib.kn_npy_save(out.encode(), t) == 0, f"{what}: kn_npy_save: {err()}")
            same_array(np.load(out), a, what + ": kiln -> numpy")
            check(npy_header(out) == ((1, 0), False), f"{what}: kiln wrote {npy_header(out)}")
            lib.kn_release(t)
    # A kiln view that is not contiguous is saved in row-major order.
    a = values(F64).reshape(12, 20)
    t = from_numpy(a)
    tt = lib.kn_transpose(t, 0, 1)
    out = os.path.join(tmp, "kn_transposed.npy")
    check(lib.kn_npy_save(out.encode(), tt) == 0, f"transposed: {err()}")
    same_array(np.load(out), a.T, ".npy kiln transpose -> numpy")
    lib.kn_release(tt)
    lib.kn_release(t)
    # bfloat16, which numpy lacks, is saved as float32: exactly its value (bits << 16).
    bf = np.arange(65536, dtype=np.uint16)
    t = lib.kn_from_data(bf.ctypes.data, BF16, 1, (ctypes.c_int64 * 1)(65536), CPU)
    check(lib.kn_npy_save(out.encode(), t) == 0, f"bf16: {err()}")
    got = np.load(out)
    check(got.dtype == np.float32 and (got.view(np.uint32) == bf.astype(np.uint32) << 16).all(),
          ".npy bfloat16 -> numpy float32 bits")
    lib.kn_release(t)


# ---- .npz --------------------------------------------------------------------------------

def zlib_built_in(tmp):
    """Whether kiln has zlib: without it, compressed saves are refused, saying so."""
    out = os.path.join(tmp, "probe.npz").encode()
    if lib.kn_npz_save(out, 0, None, True) == 0:
        return True
    check("built without zlib" in err(), f"compressed save refused for another reason: {err()}")
    return False


def kiln_npz_roundtrip(src, arrays, what, tmp, deflated):
    """kiln reads src, then writes it stored and deflated; numpy and zipfile check both.
    Without zlib, a deflated src and compressed saves must be refused clearly."""
    f = lib.kn_npz_open(src.encode())
    check(bool(f), f"{what}: kn_npz_open: {err()}")
    if not f:
        return
    names = [lib.kn_npz_name(f, i).decode() for i in range(lib.kn_npz_count(f))]
    check(names == list(np.load(src).files), f"{what}: names {names[:4]}... not numpy's order")
    tensors = []
    for n in names:
        t = lib.kn_npz_get(f, n.encode(), CPU)
        if deflated and not HAVE_ZLIB:
            check(not t and "built without zlib" in err(), f"{what} {n}: {err()}")
            t = from_numpy(arrays[n])  # still check kiln's stored writer
        else:
            same_tensor(t, arrays[n], f"{what} {n}: numpy -> kiln")
        if t:
            tensors.append(NamedTensor(n.encode(), t))
    lib.kn_npz_close(f)
    nt = (NamedTensor * len(tensors))(*tensors)
    for compress in (False, True):
        out = os.path.join(tmp, f"kn_{compress}.npz")
        ok = lib.kn_npz_save(out.encode(), len(tensors), nt, compress) == 0
        if compress and not HAVE_ZLIB:
            check(not ok and "built without zlib" in err(), f"{what}: compressed save: {err()}")
            continue
        check(ok, f"{what}: kn_npz_save: {err()}")
        with zipfile.ZipFile(out) as z:
            check(z.testzip() is None, f"{what}: zipfile finds a bad CRC in kiln's archive")
            want = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
            check(all(i.compress_type == want for i in z.infolist()), f"{what}: compression")
        with np.load(out) as d:
            check(d.files == names, f"{what}: numpy lists {d.files[:4]}...")
            for n in names:
                same_array(d[n], arrays[n], f"{what} {n}: kiln (compress={compress}) -> numpy")
    for t in tensors:
        lib.kn_release(t.tensor)


def test_npz(tmp):
    global HAVE_ZLIB
    HAVE_ZLIB = zlib_built_in(tmp)
    arrays = dict(cases())
    for writer in (np.savez, np.savez_compressed):
        src = os.path.join(tmp, f"np_{writer.__name__}.npz")
        writer(src, **arrays)
        kiln_npz_roundtrip(src, arrays, f".npz {writer.__name__}", tmp,
                           writer is np.savez_compressed)
    # ZIP64 both ways (as in archives over 2 GiB): Python's zipfile told to use it for
    # everything, and kiln's writer likewise.
    small = {k: v for k, v in arrays.items() if k.endswith(("_c", "_0d", "_empty", "_big_endian"))}
    old = zipfile.ZIP64_LIMIT
    zipfile.ZIP64_LIMIT = 0
    try:
        src = os.path.join(tmp, "np_zip64.npz")
        np.savez_compressed(src, **small)
    finally:
        zipfile.ZIP64_LIMIT = old
    with open(src, "rb") as fh:
        check(b"PK\x06\x06" in fh.read(), "numpy's archive has no ZIP64 end record")
    zip64_limit.value = 0
    try:
        kiln_npz_roundtrip(src, small, ".npz ZIP64", tmp, True)
        with open(os.path.join(tmp, "kn_True.npz" if HAVE_ZLIB else "kn_False.npz"), "rb") as fh:
            check(b"PK\x06\x06" in fh.read(), "kiln's archive has no ZIP64 end record")
    finally:
        zip64_limit.value = 0x7FFFFFFF


# ---- safetensors: the published format, written and read here ------------------------------

def torch_raw(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes() if t.numel() else b""


def st_write(path, tensors, metadata):
    """An 8-byte little-endian header length, the JSON header, the bytes in order."""
    header, data = {"__metadata__": metadata}, b""
    for name, t in tensors.items():
        raw = torch_raw(t)
        dt = next(k for k, v in TORCH_OF.items() if v == t.dtype)
        header[name] = {"dtype": ST_NAME[dt], "shape": list(t.shape),
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def st_read(path):
    """{name: (dtype name, shape, bytes)} and the metadata, checking the layout."""
    with open(path, "rb") as f:
        b = f.read()
    (n,) = struct.unpack("<Q", b[:8])
    header = json.loads(b[8:8 + n].decode("utf-8"))
    data = b[8 + n:]
    meta = header.pop("__metadata__", {})
    out, end = {}, 0
    for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"]):
        lo, hi = e["data_offsets"]
        check(lo == end and hi <= len(data), f"safetensors {name}: offsets {lo}, {hi}")
        end = hi
        out[name] = (e["dtype"], tuple(e["shape"]), data[lo:hi])
    check(end == len(data), "safetensors: bytes after the last tensor")
    return out, meta


def torch_cases():
    out = {"bf16_all_bit_patterns":
           torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)}
    for dt, tt in TORCH_OF.items():
        if dt not in ST_NAME:  # complex128: refused, see test_safetensors_complex128
            continue
        if dt == BF16:
            base = torch.from_numpy(bits(4, 226, F32_SPECIAL).astype(np.uint32).view(np.int32))
            base = (base >> 16).to(torch.int16).view(torch.bfloat16)
        else:
            base = torch.from_numpy(values(dt).copy())
        check(base.dtype == tt, f"torch dtype {base.dtype} for {tt}")
        n = str(tt).replace("torch.", "")
        out[f"{n}.matrix"] = base.reshape(12, 20)
        out[f"{n}.scalar"] = base[7].clone()
        out[f"{n}.empty"] = base[:0].reshape(0, 3)
        out[f"{n}.strided"] = base.reshape(12, 20)[::3, 1::2]  # written contiguous
    return out


def test_safetensors(tmp):
    tensors = torch_cases()
    meta = {"format": "pt", "note": "caf\u00e9 \u2615", "empty": ""}
    src = os.path.join(tmp, "py.safetensors")
    st_write(src, tensors, meta)
    sources = [("python writer", src)]
    try:
        import safetensors.torch as st_pkg
        # Releases before 0.6 have no C64: their part leaves complex64 out.
        pkg_has = {k: v for k, v in tensors.items()
                   if v.dtype != torch.complex64 or "C64" in getattr(st_pkg, "_TYPES", {})}
        pkg = os.path.join(tmp, "pkg.safetensors")
        st_pkg.save_file({k: v.contiguous() for k, v in pkg_has.items()}, pkg, metadata=meta)
        sources.append(("safetensors package", pkg))
    except ImportError:
        st_pkg, pkg_has = None, {}
    for who, path in sources:
        f = lib.kn_safetensors_open(path.encode())
        check(bool(f), f"{who}: kn_safetensors_open: {err()}")
        if not f:
            continue
        names = {lib.kn_safetensors_name(f, i).decode() for i in range(lib.kn_safetensors_count(f))}
        expected = pkg_has if path != src else tensors
        check(names == set(expected), f"{who}: names differ")
        for k, v in meta.items():
            got = lib.kn_safetensors_meta(f, k.encode())
            check(got is not None and got.decode() == v, f"{who}: metadata {k}: {got}")
        for name, t in expected.items():
            kt = lib.kn_safetensors_get(f, name.encode(), CPU)
            if not kt:
                check(False, f"{who} {name}: {err()}")
                continue
            dt, shape, raw = kiln_bytes(kt)
            check(TORCH_OF[dt] == t.dtype and shape == tuple(t.shape) and raw == torch_raw(t),
                  f"{who} {name}: torch -> kiln differs")
            lib.kn_release(kt)
        lib.kn_safetensors_close(f)

    # kiln tensors made from torch's memory, saved by kiln, read here (and by the package).
    made, keep = [], []
    for name, t in tensors.items():
        c = t.contiguous()
        keep.append(c)
        dt = next(k for k, v in TORCH_OF.items() if v == c.dtype)
        shape = (ctypes.c_int64 * max(1, c.dim()))(*c.shape)
        kt = lib.kn_from_data(c.data_ptr() if c.numel() else None, dt, c.dim(), shape, CPU)
        check(bool(kt), f"kn_from_data {name}: {err()}")
        if kt:
            made.append(NamedTensor(name.encode(), kt))
    m = (Meta * len(meta))(*[Meta(k.encode(), v.encode()) for k, v in meta.items()])
    out = os.path.join(tmp, "kiln.safetensors")
    check(lib.kn_safetensors_save(out.encode(), len(made), (NamedTensor * len(made))(*made),
                                  len(meta), m) == 0, f"kn_safetensors_save: {err()}")
    got, got_meta = st_read(out)
    check(got_meta == meta, f"kiln's metadata {got_meta}")
    check(set(got) == set(tensors), "kiln's tensor names")
    for name, t in tensors.items():
        dt = next(k for k, v in TORCH_OF.items() if v == t.dtype)
        check(got.get(name) == (ST_NAME[dt], tuple(t.shape), torch_raw(t)),
              f"kiln -> python reader {name}: differs")
    if st_pkg and len(pkg_has) == len(tensors):  # an old package cannot load kiln's C64 tensors
        loaded = st_pkg.load_file(out)
        for name, t in tensors.items():
            check(torch_raw(loaded[name]) == torch_raw(t) and loaded[name].dtype == t.dtype,
                  f"kiln -> safetensors package {name}")
    for t in made:
        lib.kn_release(t.tensor)
    return st_pkg is not None


def test_safetensors_complex128(tmp):
    """safetensors defines no complex128: kiln refuses to save one, naming it, and
    reads "C128" as an unknown dtype."""
    z = np.array([1 + 2j, -0.5j], np.complex128)
    t = from_numpy(z)
    out = os.path.join(tmp, "c128.safetensors")
    nt = (NamedTensor * 1)(NamedTensor(b"z", t))
    check(lib.kn_safetensors_save(out.encode(), 1, nt, 0, None) != 0 and
          "tensor 'z' is complex128, and safetensors has no dtype for it" in err() and
          not os.path.exists(out), f"complex128 save: {err()}")
    lib.kn_release(t)
    raw = z.tobytes()
    h = json.dumps({"z": {"dtype": "C128", "shape": [2], "data_offsets": [0, len(raw)]}}).encode()
    h += b" " * (-len(h) % 8)
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + raw)
    f = lib.kn_safetensors_open(out.encode())
    check(not f and "unknown dtype 'C128'" in err(), f"C128 read: {err()}")
    if f:
        lib.kn_safetensors_close(f)


def main():
    live = lib.kn_live_tensors()
    with tempfile.TemporaryDirectory() as tmp:
        test_npy(tmp)
        test_npz(tmp)
        pkg = test_safetensors(tmp)
        test_safetensors_complex128(tmp)
    check(lib.kn_live_tensors() == live, f"{lib.kn_live_tensors() - live} kiln tensors leaked")
    print(f"python_formats: numpy {np.__version__}, torch {torch.__version__}, safetensors "
          f"package {'used' if pkg else 'absent (the format written here instead)'}, kiln "
          f"{'with' if HAVE_ZLIB else 'without'} zlib")
    print(f"python_formats: {check.count - check.failed} passed, {check.failed} failed")
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
