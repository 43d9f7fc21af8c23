/* .npy: round trips, every descr spelling and the refused ones, files written
 * by numpy, damaged headers. */
#include "kt_formats.h"

/* Files written by numpy 1.24, generated with np.save of: arange(6, f4).reshape(2, 3) / 4;
 * asfortranarray(arange(6, i8).reshape(2, 3)); array([1, -2, 70000], '>i4'); version (2, 0)
 * of array([[1.5], [-2.0]]); array([True, False, True]); array(3.5, f2); array([1+2j], c8). */
static const char py_npy_fortran_i8[] =
    "\223NUMPY\001\000v\000{'descr': '<i8', 'fortran_order': True, 'shape': (2, 3), }    "
    "                                                       \012\000\000\000\000\000\000"
    "\000\000\003\000\000\000\000\000\000\000\001\000\000\000\000\000\000\000\004\000\000"
    "\000\000\000\000\000\002\000\000\000\000\000\000\000\005\000\000\000\000\000\000\000";
static const char py_npy_be_i4[] =
    "\223NUMPY\001\000v\000{'descr': '>i4', 'fortran_order': False, 'shape': (3,), }     "
    "                                                       \012\000\000\000\001\377\377"
    "\377\376\000\001\021p";
static const char py_npy_v2_f8[] =
    "\223NUMPY\002\000t\000\000\000{'descr': '<f8', 'fortran_order': False, 'shape': (2, "
    "1), }                                                        \012\000\000\000\000"
    "\000\000\370\?\000\000\000\000\000\000\000\300";
static const char py_npy_b1[] =
    "\223NUMPY\001\000v\000{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }     "
    "                                                       \012\001\000\001";
static const char py_npy_0d_f2[] =
    "\223NUMPY\001\000v\000{'descr': '<f2', 'fortran_order': False, 'shape': (), }       "
    "                                                       \012\000C";
static const char py_npy_c8[] =
    "\223NUMPY\001\000v\000{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }     "
    "                                                       \012\000\000\200\?\000\000"
    "\000@";

/* ---- .npy ----------------------------------------------------------------------- */

static kn_tensor *npy_from(const char *name, const char *bytes, size_t len) {
    write_file(in_dir(name), bytes, len);
    kn_error_clear();
    return kn_npy_load(in_dir(name), KN_CPU);
}

/* A version 1.0 .npy file with the given header dict and data. */
static kn_tensor *npy_dict(const char *dict, const void *data, size_t len) {
    char buf[512];
    size_t n = strlen(dict);
    memcpy(buf, "\223NUMPY\001\000", 8);
    buf[8] = (char)(n + 1);
    buf[9] = 0;
    memcpy(buf + 10, dict, n);
    buf[10 + n] = '\n';
    memcpy(buf + 11 + n, data, len);
    return npy_from("dict.npy", buf, 11 + n + len);
}

static void test_npy(void) {
    kn_scope s = kn_scope_begin();
    const char *path = in_dir("t.npy");
    for (int dt = 0; dt < KN_DTYPE_REAL_COUNT; dt++) {
        kn_tensor *t = kn_from_data(values[dt], (kn_dtype)dt, KN_SHAPE(2, 3), KN_CPU);
        CHECK(kn_npy_save(path, t) == KN_OK);
        size_t len;
        unsigned char *raw = read_all(path, &len);
        size_t hlen = raw ? (size_t)(raw[8] | raw[9] << 8) : 0;
        CHECK(raw && raw[6] == 1 && (10 + hlen) % 64 == 0 && raw[10 + hlen - 1] == '\n');
        CHECK(raw && strstr((char *)raw + 10, "'fortran_order': False, 'shape': (2, 3), }"));
        free(raw);
        kn_tensor *u = kn_npy_load(path, KN_CPU);
        if (dt == KN_BF16) { /* saved as float32: exact */
            float want[6];
            for (int k = 0; k < 6; k++) {
                uint32_t bits = (uint32_t)bf16v[k] << 16;
                memcpy(&want[k], &bits, 4);
            }
            CHECK(u && kn_dtype_of(u) == KN_F32 && same_bytes(u, want, sizeof want));
        } else {
            CHECK(u && kn_dtype_of(u) == (kn_dtype)dt && same_shape(u, KN_SHAPE(2, 3)));
            CHECK(same_bytes(u, values[dt], 6 * kn_dtype_size((kn_dtype)dt)));
        }
    }
    const int64_t no_dims[1] = {0};
    CHECK(kn_npy_save(path, kn_from_data(i64v, KN_I64, 0, no_dims, KN_CPU)) == KN_OK);
    kn_tensor *u = kn_npy_load(path, KN_CPU);
    CHECK(u && kn_ndim(u) == 0 && kn_item(u) == 1);
    CHECK(kn_npy_save(path, kn_from_data(f32v, KN_F32, KN_SHAPE(0, 4), KN_CPU)) == KN_OK);
    u = kn_npy_load(path, KN_CPU);
    CHECK(same_shape(u, KN_SHAPE(0, 4)));
    CHECK(kn_npy_save(path, kn_from_data(u8v, KN_U8, KN_SHAPE(6), KN_CPU)) == KN_OK);
    size_t len;
    unsigned char *raw = read_all(path, &len);
    CHECK(raw && strstr((char *)raw + 10,
                        "'descr': '|u1', 'fortran_order': False, 'shape': (6,), }"));
    free(raw);
    kn_tensor *t = kn_transpose(kn_from_data(f32v, KN_F32, KN_SHAPE(2, 3), KN_CPU), 0, 1);
    CHECK(kn_npy_save(path, t) == KN_OK);
    const float tv[6] = {1.5f, 0, -2, 1e-3f, 3.25f, 100};
    u = kn_npy_load(path, KN_CPU);
    CHECK(same_shape(u, KN_SHAPE(3, 2)) && same_bytes(u, tv, sizeof tv));

    /* Files written by numpy. */
    u = npy_from("f4.npy", py_npy_f4, sizeof py_npy_f4 - 1);
    const float f4[6] = {0, 0.25f, 0.5f, 0.75f, 1, 1.25f};
    CHECK(same_shape(u, KN_SHAPE(2, 3)) && same_bytes(u, f4, sizeof f4));
    u = npy_from("fortran.npy", py_npy_fortran_i8, sizeof py_npy_fortran_i8 - 1);
    const int64_t i8[6] = {0, 1, 2, 3, 4, 5};
    CHECK(same_shape(u, KN_SHAPE(2, 3)) && same_bytes(u, i8, sizeof i8));
    u = npy_from("be.npy", py_npy_be_i4, sizeof py_npy_be_i4 - 1);
    const int32_t be[3] = {1, -2, 70000};
    CHECK(u && kn_dtype_of(u) == KN_I32 && same_bytes(u, be, sizeof be));
    u = npy_from("v2.npy", py_npy_v2_f8, sizeof py_npy_v2_f8 - 1);
    const double v2[2] = {1.5, -2};
    CHECK(same_shape(u, KN_SHAPE(2, 1)) && same_bytes(u, v2, sizeof v2));
    u = npy_from("b1.npy", py_npy_b1, sizeof py_npy_b1 - 1);
    CHECK(u && kn_dtype_of(u) == KN_BOOL && same_bytes(u, "\1\0\1", 3));
    u = npy_from("f2.npy", py_npy_0d_f2, sizeof py_npy_0d_f2 - 1);
    CHECK(u && kn_ndim(u) == 0 && kn_dtype_of(u) == KN_F16 && kn_item(u) == 3.5);

    u = npy_from("c8.npy", py_npy_c8, sizeof py_npy_c8 - 1);
    const float c8[2] = {1, 2};
    CHECK(same_shape(u, KN_SHAPE(1)) && kn_dtype_of(u) == KN_C64 && same_bytes(u, c8, sizeof c8));

    /* Errors. */
    CHECK(npy_from("cut.npy", py_npy_f4, sizeof py_npy_f4 - 5) == NULL);
    CHECK_ERR("cut.npy: truncated: shape and dtype '<f4' need 24 bytes of data, file has 20", NULL);
    CHECK(npy_from("cut.npy", py_npy_f4, 50) == NULL);
    CHECK_ERR("cut.npy: truncated: header says 118 bytes, file has 50", NULL);
    CHECK(npy_from("text.npy", "hello world, not numpy", 22) == NULL);
    CHECK_ERR("text.npy: not a .npy file", NULL);
    CHECK(npy_from("empty.npy", "", 0) == NULL);
    CHECK_ERR("empty.npy: not a .npy file", NULL);
    char hdr[sizeof py_npy_f4];
    memcpy(hdr, py_npy_f4, sizeof hdr);
    memcpy(strstr(hdr + 10, "shape"), "shapx", 5);
    CHECK(npy_from("key.npy", hdr, sizeof hdr - 1) == NULL);
    CHECK_ERR("key.npy: bad .npy header (unknown key)", NULL);
    memcpy(hdr, py_npy_f4, sizeof hdr);
    hdr[6] = 9;
    CHECK(npy_from("ver.npy", hdr, sizeof hdr - 1) == NULL);
    CHECK_ERR("ver.npy: unsupported .npy format version 9.0", NULL);
    u = npy_dict("{'shape': (2,), 'fortran_order': False, 'descr': '>f8'}", "@\0\0\0\0\0\0\0"
                 "\300\010\0\0\0\0\0\0", 16); /* keys in any order, big-endian */
    CHECK(u && kn_dtype_of(u) == KN_F64 && same_bytes(u, (double[]){2, -3}, 16));
    CHECK(npy_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, "
                   "1099511627776, 0), }", "", 0) == NULL);
    CHECK_ERR("dict.npy: shape has too many elements", NULL);
    CHECK(npy_dict("{'descr': '|u1', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }",
                   "\1", 1) == NULL);
    CHECK_ERR("dict.npy: array has more than 8 dimensions", NULL);
    CHECK(npy_dict("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", "\0\0\0\0",
                   4) == NULL);
    CHECK_ERR("dict.npy: structured NumPy dtypes are not supported", NULL);
    CHECK(npy_dict("{'descr': '<f4', 'shape': (1,), }", "\0\0\0\0", 4) == NULL);
    CHECK_ERR("descr, fortran_order and shape are all required", NULL);
    CHECK(npy_dict("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,), }", "\0\0\0\0", 4) ==
          NULL);
    CHECK_ERR("fortran_order must be True or False", NULL);
    /* Every byte-order spelling numpy accepts for kiln's dtypes. */
    u = npy_dict("{'descr': '=i4', 'fortran_order': False, 'shape': (1,), }", "\7\0\0\0", 4);
    CHECK(u && kn_dtype_of(u) == KN_I32 && kn_item(u) == 7);
    u = npy_dict("{'descr': 'f2', 'fortran_order': False, 'shape': (), }", "\0\x3c", 2);
    CHECK(u && kn_dtype_of(u) == KN_F16 && kn_item(u) == 1);
    u = npy_dict("{'descr': '<u1', 'fortran_order': True, 'shape': (2, 0), }", "", 0);
    CHECK(same_shape(u, KN_SHAPE(2, 0)) && kn_dtype_of(u) == KN_U8);
    u = npy_dict("{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }", "\0\5", 2);
    CHECK(u && same_bytes(u, "\0\1", 2)); /* any non-zero byte is true, as in numpy */
    static const char *const refused[][2] = {
        {"'|O'", "NumPy dtype '|O' (Python objects, stored pickled) is not supported"},
        {"'<U3'", "NumPy dtype '<U3' (strings) is not supported"},
        {"'<c32'", "NumPy dtype '<c32' (complex) is not supported"},
        {"'<c4'", "NumPy dtype '<c4' (complex) is not supported"},
        {"'<c160'", "NumPy dtype '<c160' (complex) is not supported"},
        {"'<c016'", "NumPy dtype '<c016' (complex) is not supported"},
        {"'<f08'", "NumPy dtype '<f08' is not supported"},
        {"'<i2'", "NumPy dtype '<i2' is not supported"},
        {"'<f16'", "NumPy dtype '<f16' is not supported"},
        {"{'names': ['a'], 'formats': ['<f4']}", "structured NumPy dtypes are not supported"}};
    for (size_t k = 0; k < sizeof refused / sizeof *refused; k++) {
        char dict[160];
        snprintf(dict, sizeof dict, "{'descr': %s, 'fortran_order': False, 'shape': (1,), }",
                 refused[k][0]);
        CHECK(npy_dict(dict, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16) == NULL);
        CHECK_ERR("dict.npy: ", refused[k][1]);
    }
    /* KN_MAX_DIMS dims (the header buffer is sized for 20-digit ones). */
    t = kn_from_data(f32v, KN_F32, KN_SHAPE(1, 1, 1, 1, 1, 1, 1, 1), KN_CPU);
    CHECK(t && kn_ndim(t) == KN_MAX_DIMS && kn_npy_save(path, t) == KN_OK);
    u = kn_npy_load(path, KN_CPU);
    CHECK(u && kn_ndim(u) == KN_MAX_DIMS && same_bytes(u, f32v, 4));
    CHECK(kn_npy_load(in_dir("absent.npy"), KN_CPU) == NULL);
    CHECK_ERR("absent.npy: cannot open: No such file or directory", NULL);
    CHECK(kn_npy_save(in_dir("no/dir/x.npy"), t) == KN_ERR_IO);
    CHECK(temp_files() == 0);
    kn_scope_end(s);
}

/* Complex arrays: pairs of floats, written as '<c8'/'<c16' and read in either
 * byte order (each part swapped on its own) and in Fortran order. */
static void test_npy_complex(void) {
    kn_scope s = kn_scope_begin();
    const char *path = in_dir("z.npy");
    /* Specials in both parts: NaN payloads, -0, infinities, subnormals. */
    uint32_t c64[12] = {0x3f800000, 0x40000000, 0x7fc01234, 0x80000000, 0x7f800000, 0xff800000,
                        0x00000001, 0x3eaaaaab, 0xffffffff, 0x7fc00abc, 0xc2f60000, 0x00000000};
    uint64_t c128[12] = {0x3ff8000000000000, 0xbfd0000000000000, 0x7ff8000000000abc, 0x8000000000000000,
                         0x7ff0000000000000, 0x0000000000000001, 0x3fd5555555555555, 0xfff0000000000000,
                         0x7ff4000000000001, 0xc05ec00000000000, 0x0000000000000000, 0x4005bf0a8b145769};
    const kn_dtype dts[2] = {KN_C64, KN_C128};
    const void *vals[2] = {c64, c128};
    const size_t sizes[2] = {sizeof c64, sizeof c128};
    const char *descr[2] = {"'descr': '<c8'", "'descr': '<c16'"};
    for (int k = 0; k < 2; k++) {
        kn_tensor *t = kn_from_data(vals[k], dts[k], KN_SHAPE(2, 3), KN_CPU);
        CHECK(t && kn_npy_save(path, t) == KN_OK);
        size_t len;
        unsigned char *b = read_all(path, &len);
        CHECK(b && len == 128 + sizes[k] && memmem(b, 128, descr[k], strlen(descr[k])) != NULL);
        free(b);
        kn_tensor *u = kn_npy_load(path, KN_CPU);
        CHECK(same_shape(u, KN_SHAPE(2, 3)) && kn_dtype_of(u) == dts[k] && same_bytes(u, vals[k], sizes[k]));
        /* A transposed view is saved in row-major order. */
        CHECK(kn_npy_save(path, kn_transpose(t, 0, 1)) == KN_OK);
        u = kn_npy_load(path, KN_CPU);
        const size_t es = kn_dtype_size(dts[k]);
        unsigned char want[192], got[192];
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 2; j++)
                memcpy(want + (size_t)(i * 2 + j) * es, (const char *)vals[k] + (size_t)(j * 3 + i) * es, es);
        CHECK(same_shape(u, KN_SHAPE(3, 2)) && kn_to_host(u, got, dts[k]) == KN_OK && !memcmp(got, want, sizes[k]));
        /* 0-d and empty. */
        CHECK(kn_npy_save(path, kn_from_data(vals[k], dts[k], 0, NULL, KN_CPU)) == KN_OK);
        u = kn_npy_load(path, KN_CPU);
        CHECK(u && kn_ndim(u) == 0 && kn_dtype_of(u) == dts[k] && same_bytes(u, vals[k], es));
        CHECK(kn_npy_save(path, kn_zeros(KN_SHAPE(0, 4), dts[k], KN_CPU)) == KN_OK);
        u = kn_npy_load(path, KN_CPU);
        CHECK(same_shape(u, KN_SHAPE(0, 4)) && kn_dtype_of(u) == dts[k]);
    }
    /* Big-endian: 1+2j and 1.5-0.25j, each part's bytes reversed on its own. */
    kn_tensor *u = npy_dict("{'descr': '>c8', 'fortran_order': False, 'shape': (1,), }",
                            "\x3f\x80\0\0\x40\0\0\0", 8);
    CHECK(u && kn_dtype_of(u) == KN_C64 && same_bytes(u, c64, 8));
    u = npy_dict("{'descr': '>c16', 'fortran_order': False, 'shape': (), }",
                 "\x3f\xf8\0\0\0\0\0\0\xbf\xd0\0\0\0\0\0\0", 16);
    CHECK(u && kn_dtype_of(u) == KN_C128 && same_bytes(u, c128, 16));
    /* Fortran order: columns first, a whole pair per element. */
    const float fz[8] = {1, 10, 3, 30, 2, 20, 4, 40}; /* [[1+10j, 2+20j], [3+30j, 4+40j]] */
    const float cz[8] = {1, 10, 2, 20, 3, 30, 4, 40};
    u = npy_dict("{'descr': '<c8', 'fortran_order': True, 'shape': (2, 2), }", fz, sizeof fz);
    CHECK(same_shape(u, KN_SHAPE(2, 2)) && kn_dtype_of(u) == KN_C64 && same_bytes(u, cz, sizeof cz));
    /* Sizes come from the shape times 8 or 16 bytes. */
    CHECK(npy_dict("{'descr': '<c16', 'fortran_order': False, 'shape': (2,), }", c128, 16) == NULL);
    CHECK_ERR("dict.npy: truncated: shape and dtype '<c16' need 32 bytes of data, file has 16", NULL);
    CHECK(npy_dict("{'descr': '<c8', 'fortran_order': False, 'shape': (1152921504606846976,), }", c64, 8) == NULL);
    CHECK_ERR("dict.npy: shape has too many elements", NULL);
    kn_scope_end(s);
}

int main(void) {
    void (*const tests[])(void) = {test_npy, test_npy_complex};
    return kt_formats_run("test_formats_npy", (int)(sizeof tests / sizeof *tests), tests);
}
