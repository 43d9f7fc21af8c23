/* Tests of the file formats: the internal JSON reader/writer, safetensors
 * (round trip of every dtype, 0-d and empty tensors, metadata, every kind of
 * damaged file, atomic saves, module save/load), .npy and .npz (round trips,
 * ZIP64, every kind of damaged archive), including files written by Python
 * (numpy 1.24 and the safetensors 0.8 package; the .npz ones are the fuzz
 * corpus, tests/fuzz/corpus_npz). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "io/json.h"
#include "io/npz_internal.h"
#include "io/safetensors_internal.h"
#include "kn_test.h" /* for its kernel-less "test" device; its CHECK is replaced below */

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static int passed, failed;

#undef CHECK
#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (cond) passed++;                                                            \
        else {                                                                         \
            failed++;                                                                  \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
        }                                                                              \
    } while (0)

static void check_error(int line, const char *a, const char *b) {
    const char *e = kn_error();
    if (strstr(e, a) && (!b || strstr(e, b))) {
        passed++;
        return;
    }
    failed++;
    fprintf(stderr, "%s:%d: error \"%s\" lacks \"%s\"%s%s\n", __FILE__, line, e, a,
            b ? "\" or \"" : "", b ? b : "");
}
#define CHECK_ERR(a, b) check_error(__LINE__, a, b)

/* Files written by Python, generated with:
 *   safetensors.numpy.save({"weight": np.arange(6, dtype=np.float32).reshape(2, 3) * 0.5,
 *       "bias": np.array([-1.5, 2.25], np.float16), "ids": np.array([[1, -2], [3, 4e10]],
 *       np.int64), "mask": np.array([True, False, True]), "scalar": np.array(7, np.int32)},
 *       metadata={"format": "np", "note": "café"})
 *   np.save of: arange(6, f4).reshape(2, 3) / 4; asfortranarray(arange(6, i8).reshape(2, 3));
 *   array([1, -2, 70000], '>i4'); version (2, 0) of array([[1.5], [-2.0]]);
 *   array([True, False, True]); array(3.5, f2); array([1+2j], c8). */
static const char py_safetensors[] =
    "X\001\000\000\000\000\000\000{\"__metadata__\":{\"note\":\"caf\303\251\",\"format\":"
    "\"np\"},\"ids\":{\"dtype\":\"I64\",\"shape\":[2,2],\"data_offsets\":[0,32]},\"weight"
    "\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[32,56]},\"scalar\":{\"dtype"
    "\":\"I32\",\"shape\":[],\"data_offsets\":[56,60]},\"bias\":{\"dtype\":\"F16\",\"shap"
    "e\":[2],\"data_offsets\":[60,64]},\"mask\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_"
    "offsets\":[64,67]}} \001\000\000\000\000\000\000\000\376\377\377\377\377\377\377\377"
    "\003\000\000\000\000\000\000\000\000\220/P\011\000\000\000\000\000\000\000\000\000"
    "\000\?\000\000\200\?\000\000\300\?\000\000\000@\000\000 @\007\000\000\000\000\276"
    "\200@\001\000\001";
static const char py_npy_f4[] =
    "\223NUMPY\001\000v\000{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }   "
    "                                                       \012\000\000\000\000\000\000"
    "\200>\000\000\000\?\000\000@\?\000\000\200\?\000\000\240\?";
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

static char dir[64];

static const char *in_dir(const char *name) {
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static void write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    if (len) fwrite(data, 1, len, f);
    fclose(f);
}

static unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    *len = 0;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) n = 0;
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* Files in dir whose name contains ".tmp." (leftovers of a failed save). */
static int temp_files(void) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strstr(e->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    return n;
}

/* The tensor's elements as bytes of its own dtype equal want. */
static bool same_bytes(const kn_tensor *t, const void *want, size_t n) {
    unsigned char buf[256];
    if (!t || n > sizeof buf || kn_to_host(t, buf, kn_dtype_of(t)) != KN_OK) return false;
    return memcmp(buf, want, n) == 0;
}

static bool same_shape(const kn_tensor *t, int ndim, const int64_t *shape) {
    return t && kn_ndim(t) == ndim &&
           (ndim == 0 || !memcmp(kn_shape(t), shape, (size_t)ndim * sizeof *shape));
}

/* ---- JSON ----------------------------------------------------------------------- */

static kn__json_doc *jparse(const char *s) {
    kn_error_clear();
    return kn__json_parse(s, strlen(s), NULL, "t.json");
}

static void json_fails(int line, const char *s, const char *msg) {
    kn__json_doc *d = jparse(s);
    if (d) {
        failed++;
        fprintf(stderr, "%s:%d: JSON '%s' parsed, expected \"%s\"\n", __FILE__, line, s, msg);
        kn__json_free(d);
        return;
    }
    passed++;
    check_error(line, "t.json: byte ", msg);
}
#define JSON_FAILS(s, msg) json_fails(__LINE__, s, msg)

static void test_json(void) {
    kn__json_doc *d = jparse(" {\"a\": [1, -2, 3.5, 1e3, 9223372036854775807, "
                             "-9223372036854775808, 9223372036854775808], "
                             "\"s\": \"q\\\"\\\\\\/\\n\\t\\u00e9\\ud83d\\ude00\", "
                             "\"t\": true, \"f\": false, \"n\": null, \"o\": {}, \"e\": []} ");
    CHECK(d != NULL);
    if (d) {
        const kn__json *r = kn__json_root(d);
        CHECK(r->type == KN__JSON_OBJECT && r->count == 7);
        const kn__json *a = kn__json_get(d, r, "a");
        CHECK(a && a->type == KN__JSON_ARRAY && a->count == 7);
        const kn__json *v = kn__json_first(d, a);
        CHECK(v->is_int && v->integer == 1);
        v = kn__json_next(d, v);
        CHECK(v->is_int && v->integer == -2);
        v = kn__json_next(d, v);
        CHECK(!v->is_int && v->number == 3.5);
        v = kn__json_next(d, v);
        CHECK(!v->is_int && v->number == 1000);
        v = kn__json_next(d, v);
        CHECK(v->is_int && v->integer == INT64_MAX);
        v = kn__json_next(d, v);
        CHECK(v->is_int && v->integer == INT64_MIN);
        v = kn__json_next(d, v);
        CHECK(!v->is_int && v->number > 9.2e18); /* too big for int64 */
        CHECK(kn__json_next(d, v) == NULL);
        const kn__json *s = kn__json_get(d, r, "s");
        CHECK(s && s->type == KN__JSON_STRING &&
              strcmp(s->str, "q\"\\/\n\t\xc3\xa9\xf0\x9f\x98\x80") == 0 && s->len == 12);
        CHECK(kn__json_get(d, r, "t")->boolean && !kn__json_get(d, r, "f")->boolean);
        CHECK(kn__json_get(d, r, "n")->type == KN__JSON_NULL);
        CHECK(kn__json_get(d, r, "o")->count == 0 && !kn__json_first(d, kn__json_get(d, r, "o")));
        CHECK(kn__json_get(d, r, "missing") == NULL);
        kn__json_free(d);
    }
    JSON_FAILS("", "expected a JSON value");
    JSON_FAILS("[1,]", "expected a JSON value");
    JSON_FAILS("{\"a\":1,}", "expected a string key");
    JSON_FAILS("[01]", "leading zero");
    JSON_FAILS("[1.]", "digit expected");
    JSON_FAILS("\"abc", "unterminated string");
    JSON_FAILS("\"a\nb\"", "control character");
    JSON_FAILS("\"\xff\"", "invalid UTF-8");
    JSON_FAILS("\"\xc0\xaf\"", "invalid UTF-8"); /* overlong '/' */
    JSON_FAILS("\"\\ud800\"", "surrogate");
    JSON_FAILS("\"\\udc00\"", "surrogate");
    JSON_FAILS("\"\\u0000\"", "\\u0000");
    JSON_FAILS("\"\\x\"", "invalid escape");
    JSON_FAILS("{} x", "unexpected data after");
    JSON_FAILS("{\"a\" 1}", "expected ':'");
    JSON_FAILS("tru", "invalid literal");
    JSON_FAILS("NaN", "expected a JSON value");
    char deep[200];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    kn__json_doc *dd = kn__json_parse(deep, 200, NULL, "t.json");
    CHECK(dd == NULL);
    CHECK_ERR("nesting deeper than 64", NULL);
    dd = kn__json_parse(deep + 40, 120, NULL, "t.json"); /* 60 levels is fine */
    CHECK(dd != NULL);
    kn__json_free(dd);
    kn__json_limits lim = {4, 10};
    CHECK(kn__json_parse("[1, 2, 3, 4]", 12, &lim, "t.json") == NULL);
    CHECK_ERR("exceeds the limit", NULL);

    kn__json_buf b = {0};
    CHECK(kn__json_string(&b, "a\"b\\c\n\x01\xc3\xa9", 9));
    CHECK(b.data && strcmp(b.data, "\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\"") == 0);
    CHECK(!kn__json_string(&b, "\xff", 1));
    kn__json_raw(&b, ",", 1);
    kn__json_int(&b, -42);
    CHECK(strcmp(b.data, "\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\",-42") == 0);
    d = kn__json_parse(b.data, strchr(b.data, ',') - b.data, NULL, "t.json");
    CHECK(d && strcmp(kn__json_root(d)->str, "a\"b\\c\n\x01\xc3\xa9") == 0);
    kn__json_free(d);
    kn__json_buf_free(&b);
}

/* ---- safetensors ---------------------------------------------------------------- */

/* A file of an 8-byte length (hlen, or strlen(json) when hlen is 0), json and
 * data_len bytes of data; parsed from memory. */
static kn_safetensors *st_bytes(const char *json, uint64_t hlen, size_t data_len) {
    size_t jl = strlen(json), len = 8 + jl + data_len;
    unsigned char *b = calloc(1, len);
    if (!hlen) hlen = jl;
    for (int k = 0; k < 8; k++) b[k] = (unsigned char)(hlen >> (8 * k));
    memcpy(b + 8, json, jl);
    kn_error_clear();
    kn_safetensors *f = kn__safetensors_parse(b, len, "x.safetensors");
    free(b);
    return f;
}

static void st_fails(int line, const char *json, uint64_t hlen, size_t data_len, const char *a,
                     const char *b) {
    kn_safetensors *f = st_bytes(json, hlen, data_len);
    if (f) {
        failed++;
        fprintf(stderr, "%s:%d: parse succeeded, expected \"%s\"\n", __FILE__, line, a);
        kn_safetensors_close(f);
        return;
    }
    passed++;
    check_error(line, a, b);
}
#define ST_FAILS(json, hlen, n, a, b) st_fails(__LINE__, json, hlen, n, a, b)

static const float f32v[6] = {1.5f, -2, 3.25f, 0, 1e-3f, 100};
static const uint16_t f16v[6] = {0x3c00, 0xc000, 0x3555, 0, 0x7bff, 0x0001};
static const uint16_t bf16v[6] = {0x3f80, 0xc000, 0x4049, 0x8000, 0x7f7f, 0x0001};
static const double f64v[6] = {1.0 / 3, -2e300, 0, 5e-324, 7, -0.5};
static const int32_t i32v[6] = {1, -2, INT32_MAX, INT32_MIN, 0, 42};
static const int64_t i64v[6] = {1, -2, INT64_MAX, INT64_MIN, 1LL << 40, 42};
static const uint8_t u8v[6] = {0, 1, 255, 128, 7, 9};
static const uint8_t boolv[6] = {1, 0, 1, 1, 0, 0};
static const void *const values[KN_DTYPE_REAL_COUNT] = {f32v, f16v, bf16v, f64v, i32v, i64v, u8v, boolv};

static void test_safetensors_roundtrip(void) {
    kn_scope s = kn_scope_begin();
    const char *names[KN_DTYPE_REAL_COUNT] = {"f32", "f16", "bf16", "f64", "i32", "i64", "u8", "bool"};
    kn_named_tensor nt[KN_DTYPE_REAL_COUNT + 3];
    for (int dt = 0; dt < KN_DTYPE_REAL_COUNT; dt++) {
        nt[dt].name = names[dt];
        nt[dt].tensor = kn_from_data(values[dt], (kn_dtype)dt, KN_SHAPE(2, 3), KN_CPU);
    }
    const double scalar = -7.25;
    const int64_t no_dims[1] = {0};
    nt[8] = (kn_named_tensor){"scalar", kn_from_data(&scalar, KN_F64, 0, no_dims, KN_CPU)};
    nt[9] = (kn_named_tensor){"empty", kn_from_data(f32v, KN_F32, KN_SHAPE(0, 4), KN_CPU)};
    /* A transposed (non-contiguous) view is saved as its contiguous values. */
    nt[10] = (kn_named_tensor){"layers.0.weight.T", kn_transpose(nt[0].tensor, 0, 1)};
    const kn_meta meta[2] = {{"format", "pt"}, {"note", "caf\xc3\xa9 \"quoted\"\n"}};
    const char *path = in_dir("rt.safetensors");
    CHECK(kn_safetensors_save(path, 11, nt, 2, meta) == KN_OK);
    CHECK(temp_files() == 0);

    size_t len;
    unsigned char *raw = read_all(path, &len);
    uint64_t hlen = 0;
    for (int k = 7; raw && k >= 0; k--) hlen = hlen << 8 | raw[k];
    CHECK(raw && hlen % 8 == 0 && hlen + 8 < len && raw[8] == '{');
    CHECK(raw && memcmp(raw + 8, "{\"__metadata__\":{\"format\":\"pt\"", 30) == 0);
    free(raw);

    kn_safetensors *f = kn_safetensors_open(path);
    CHECK(f != NULL);
    if (f) {
        CHECK(kn_safetensors_count(f) == 11);
        for (int k = 0; k < 11; k++) CHECK(strcmp(kn_safetensors_name(f, k), nt[k].name) == 0);
        CHECK(kn_safetensors_name(f, 11) == NULL);
        CHECK(strcmp(kn_safetensors_meta(f, "note"), meta[1].value) == 0);
        CHECK(kn_safetensors_meta(f, "absent") == NULL);
        for (int dt = 0; dt < KN_DTYPE_REAL_COUNT; dt++) {
            kn_tensor *t = kn_safetensors_get(f, names[dt], KN_CPU);
            CHECK(t && kn_dtype_of(t) == (kn_dtype)dt && same_shape(t, KN_SHAPE(2, 3)));
            CHECK(same_bytes(t, values[dt], 6 * kn_dtype_size((kn_dtype)dt)));
        }
        kn_tensor *t = kn_safetensors_get(f, "scalar", KN_CPU);
        CHECK(t && kn_ndim(t) == 0 && kn_item(t) == scalar);
        t = kn_safetensors_get(f, "empty", KN_CPU);
        CHECK(same_shape(t, KN_SHAPE(0, 4)) && kn_numel(t) == 0);
        t = kn_safetensors_get(f, "layers.0.weight.T", KN_CPU);
        const float tv[6] = {1.5f, 0, -2, 1e-3f, 3.25f, 100};
        CHECK(same_shape(t, KN_SHAPE(3, 2)) && same_bytes(t, tv, sizeof tv));
        kn_error_clear();
        CHECK(kn_safetensors_get(f, "nope", KN_CPU) == NULL);
        CHECK_ERR("rt.safetensors: no tensor named 'nope'", NULL);
        kn_safetensors_close(f);
    }
    /* No tensors at all is a valid file too. */
    CHECK(kn_safetensors_save(in_dir("none.safetensors"), 0, NULL, 0, NULL) == KN_OK);
    f = kn_safetensors_open(in_dir("none.safetensors"));
    CHECK(f && kn_safetensors_count(f) == 0);
    kn_safetensors_close(f);
    kn_scope_end(s);
}

static void test_safetensors_python(void) {
    kn_scope s = kn_scope_begin();
    kn_safetensors *f = kn__safetensors_parse(py_safetensors, sizeof py_safetensors - 1, "py");
    CHECK(f && kn_safetensors_count(f) == 5);
    if (f) {
        CHECK(strcmp(kn_safetensors_meta(f, "note"), "caf\xc3\xa9") == 0);
        CHECK(strcmp(kn_safetensors_meta(f, "format"), "np") == 0);
        kn_tensor *w = kn_safetensors_get(f, "weight", KN_CPU);
        const float wv[6] = {0, 0.5f, 1, 1.5f, 2, 2.5f};
        CHECK(kn_dtype_of(w) == KN_F32 && same_shape(w, KN_SHAPE(2, 3)) && same_bytes(w, wv, 24));
        float bias[2] = {0};
        kn_tensor *b = kn_safetensors_get(f, "bias", KN_CPU);
        CHECK(kn_dtype_of(b) == KN_F16 && kn_to_host(b, bias, KN_F32) == KN_OK);
        CHECK(bias[0] == -1.5f && bias[1] == 2.25f);
        const int64_t ids[4] = {1, -2, 3, 40000000000};
        CHECK(same_bytes(kn_safetensors_get(f, "ids", KN_CPU), ids, sizeof ids));
        const uint8_t mask[3] = {1, 0, 1};
        kn_tensor *m = kn_safetensors_get(f, "mask", KN_CPU);
        CHECK(kn_dtype_of(m) == KN_BOOL && same_bytes(m, mask, 3));
        kn_tensor *sc = kn_safetensors_get(f, "scalar", KN_CPU);
        CHECK(kn_ndim(sc) == 0 && kn_dtype_of(sc) == KN_I32 && kn_item(sc) == 7);
    }
    kn_safetensors_close(f);
    kn_scope_end(s);
}

static void test_safetensors_damaged(void) {
    const char *good = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    kn_safetensors *f = st_bytes(good, 0, 8);
    CHECK(f && kn_safetensors_count(f) == 1);
    kn_safetensors_close(f);

    /* Truncated copies of a real file, at every interesting length. */
    size_t len;
    unsigned char *raw = read_all(in_dir("rt.safetensors"), &len);
    const char *cut = in_dir("cut.safetensors");
    write_file(cut, raw, 0);
    kn_error_clear();
    CHECK(kn_safetensors_open(cut) == NULL);
    CHECK_ERR("cut.safetensors: empty file", NULL);
    write_file(cut, raw, 5);
    CHECK(kn_safetensors_open(cut) == NULL);
    CHECK_ERR("cut.safetensors: not a safetensors file (5 bytes", NULL);
    write_file(cut, raw, 100);
    CHECK(kn_safetensors_open(cut) == NULL);
    CHECK_ERR("cut.safetensors: truncated: header says ", "file has 100");
    write_file(cut, raw, len - 10);
    CHECK(kn_safetensors_open(cut) == NULL);
    CHECK_ERR("run past the end of the data", "truncated file?");
    free(raw);

    /* Another program's file. */
    char text[1234];
    memset(text, 'x', sizeof text);
    memcpy(text, "hello, world", 12);
    write_file(cut, text, sizeof text);
    CHECK(kn_safetensors_open(cut) == NULL);
    CHECK_ERR("not a safetensors file (header length ", "exceeds file size 1234)");
    CHECK(kn_safetensors_open(in_dir("absent.safetensors")) == NULL);
    CHECK_ERR("absent.safetensors: cannot open: No such file or directory", NULL);

    /* Wrong header lengths. */
    ST_FAILS(good, strlen(good) + 1, 8, "x.safetensors: header: byte", "unexpected data after");
    ST_FAILS(good, strlen(good) - 1, 8, "x.safetensors: header: byte", "expected ',' or '}'");
    ST_FAILS(good, 1, 8, "not a safetensors file", NULL);
    ST_FAILS("[1]", 0, 0, "not a safetensors file (the header is not a JSON object)", NULL);
    /* A header over the 100 MB limit, in a sparse file that is big enough. */
    unsigned char huge[9] = {0x00, 0xa3, 0xe1, 0x11, 0, 0, 0, 0, '{'}; /* 300,000,000 */
    write_file(cut, huge, sizeof huge);
    if (truncate(cut, 400000000) == 0) {
        CHECK(kn_safetensors_open(cut) == NULL);
        CHECK_ERR("header length 300000000 exceeds the limit of 100000000", NULL);
    }
    unlink(cut);

    /* Bad entries. */
    ST_FAILS("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
             "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
             0, 12, "tensors 'a' and 'b' overlap", "[0, 8) and [4, 12)");
    ST_FAILS("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", 0, 12,
             "tensor 'a': shape [2, 2] of F32 needs 16 bytes", "[0, 12] hold 12");
    ST_FAILS("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],"
             "\"data_offsets\":[0,0]}}", 0, 0, "has too many elements", NULL);
    ST_FAILS("{\"a\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776,0],"
             "\"data_offsets\":[0,0]}}", 0, 0,
             "shape [1099511627776, 1099511627776, 0] has too many elements", NULL);
    ST_FAILS("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 0, 8,
             "end before they begin", NULL);
    ST_FAILS("{\"a\":{\"dtype\":\"Q7\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8,
             "tensor 'a' has unknown dtype 'Q7'", NULL);
    ST_FAILS("{\"a\":{\"dtype\":\"I16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 0, 4,
             "tensor 'a' has dtype I16, which kiln does not support", NULL);
    ST_FAILS("{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8,
             "tensor 'a': missing \"dtype\"", NULL);
    ST_FAILS("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 0, 8,
             "shape must hold non-negative integers", NULL);
    ST_FAILS("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 0, 8,
             "data_offsets must be two non-negative integers", NULL);
    ST_FAILS("{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 0, 8,
             "\"shape\" is a number, expected an array", NULL);
    ST_FAILS("{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 0,
             1, "has 9 dimensions", NULL);
    ST_FAILS("{\"a\":[]}", 0, 0, "tensor 'a': expected an object, found a array", NULL);
    ST_FAILS("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
             "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
             0, 2, "tensor 'a' appears twice", NULL);
    ST_FAILS("{\"__metadata__\":{\"k\":1}}", 0, 0, "__metadata__ value for 'k' is a number", NULL);
    ST_FAILS("{\"__metadata__\":[]}", 0, 0, "__metadata__ is a array", NULL);
    /* Empty tensors may sit anywhere, even inside another's range. */
    f = st_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]}}", 0, 8);
    CHECK(f != NULL);
    kn_safetensors_close(f);
}

static bool file_is(const char *path, const unsigned char *want, size_t want_len) {
    size_t len;
    unsigned char *b = read_all(path, &len);
    bool ok = b && len == want_len && memcmp(b, want, len) == 0;
    free(b);
    return ok;
}

static void test_safetensors_atomic(void) {
    kn_scope s = kn_scope_begin();
    const char *path = in_dir("atomic.safetensors");
    kn_named_tensor one = {"w", kn_from_data(f32v, KN_F32, KN_SHAPE(6), KN_CPU)};
    CHECK(kn_safetensors_save(path, 1, &one, 0, NULL) == KN_OK);
    size_t len;
    unsigned char *before = read_all(path, &len);

    kn_named_tensor dup[2] = {one, {"w", one.tensor}};
    kn_error_clear();
    CHECK(kn_safetensors_save(path, 2, dup, 0, NULL) == KN_ERR_INVALID);
    CHECK_ERR("atomic.safetensors: tensor name 'w' is used twice", NULL);
    CHECK(file_is(path, before, len) && temp_files() == 0);
    const kn_meta meta2[2] = {{"k", "1"}, {"k", "2"}};
    CHECK(kn_safetensors_save(path, 1, &one, 2, meta2) == KN_ERR_INVALID);
    CHECK_ERR("metadata key 'k' is used twice", NULL);
    kn_named_tensor bad = {"bad", NULL};
    CHECK(kn_safetensors_save(path, 1, &bad, 0, NULL) < 0);
    CHECK_ERR("tensor 'bad' is NULL", NULL);
    kn_named_tensor badname = {"\xff", one.tensor};
    CHECK(kn_safetensors_save(path, 1, &badname, 0, NULL) < 0);
    CHECK_ERR("not valid UTF-8", NULL);
    CHECK(file_is(path, before, len) && temp_files() == 0);

    /* A real write failure half way: the file size limit stops the write. */
    kn_named_tensor big = {"big", kn_zeros(KN_SHAPE(1 << 20), KN_F32, KN_CPU)};
    struct rlimit old, small;
    getrlimit(RLIMIT_FSIZE, &old);
    small = old;
    small.rlim_cur = 65536;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    if (setrlimit(RLIMIT_FSIZE, &small) == 0) {
        kn_error_clear();
        kn_status st = kn_safetensors_save(path, 1, &big, 0, NULL);
        setrlimit(RLIMIT_FSIZE, &old);
        CHECK(st == KN_ERR_IO);
        CHECK_ERR("atomic.safetensors: cannot write: File too large", "old file");
        CHECK(file_is(path, before, len) && temp_files() == 0);
    }
    signal(SIGXFSZ, prev);
    CHECK(kn_safetensors_save(in_dir("no/such/dir.safetensors"), 1, &one, 0, NULL) == KN_ERR_IO);
    CHECK_ERR("cannot create temporary file: No such file or directory", NULL);
    /* The writer refuses a header the reader would refuse (control characters
     * escape to six bytes each: 17e6 of them make 102 MB), before touching the
     * file; one just under the limit saves and loads back. */
    for (int under = 0; under < 2; under++) {
        size_t n = under ? 16600000 : 17000000;
        char *v = malloc(n + 1);
        CHECK(v != NULL);
        if (!v) break;
        memset(v, 1, n);
        v[n] = 0;
        const kn_meta m1 = {"long", v};
        kn_error_clear();
        kn_status st = kn_safetensors_save(path, 1, &one, 1, &m1);
        if (!under) {
            CHECK(st == KN_ERR_INVALID);
            CHECK_ERR("atomic.safetensors: the header would take 102", "over the 100000000 that readers accept");
            CHECK(file_is(path, before, len) && temp_files() == 0);
        } else {
            CHECK(st == KN_OK);
            kn_safetensors *f = kn_safetensors_open(path);
            const char *got = f ? kn_safetensors_meta(f, "long") : NULL;
            CHECK(got && strlen(got) == n && !memcmp(got, v, n));
            kn_safetensors_close(f);
            CHECK(kn_safetensors_save(path, 1, &one, 0, NULL) == KN_OK);
        }
        free(v);
    }
    /* And a successful save replaces the file. */
    CHECK(kn_safetensors_save(path, 1, &big, 0, NULL) == KN_OK);
    CHECK(!file_is(path, before, len) && temp_files() == 0);
    free(before);
    kn_scope_end(s);
}

/* ---- modules -------------------------------------------------------------------- */

static kn_module *mlp(int64_t in, int64_t hidden, int64_t out) {
    kn_module *layers[2] = {kn_nn_linear(in, hidden, true), kn_nn_linear(hidden, out, true)};
    return kn_nn_sequential(2, layers);
}

/* Every state-dict tensor of a and b holds the same values (as float64). */
static bool same_state(kn_module *a, kn_module *b) {
    int na = 0, nb = 0;
    const kn_named_tensor *sa = kn_module_state_dict(a, &na), *sb = kn_module_state_dict(b, &nb);
    if (!sa || !sb || na != nb) return false;
    for (int k = 0; k < na; k++) {
        int64_t n = kn_numel(sa[k].tensor);
        double *x = calloc((size_t)n + 1, 8), *y = calloc((size_t)n + 1, 8);
        bool ok = n == kn_numel(sb[k].tensor) && kn_to_host(sa[k].tensor, x, KN_F64) == KN_OK &&
                  kn_to_host(sb[k].tensor, y, KN_F64) == KN_OK;
        for (int64_t i = 0; ok && i < n; i++) ok = (float)x[i] == (float)y[i];
        free(x);
        free(y);
        if (!ok) return false;
    }
    return true;
}

static void test_module(void) {
    kn_scope s = kn_scope_begin();
    const char *path = in_dir("model.safetensors");
    kn_module *a = mlp(3, 4, 2), *b = mlp(3, 4, 2);
    CHECK(a && b && !same_state(a, b));
    const kn_meta meta[1] = {{"epoch", "3"}};
    CHECK(kn_module_save(a, path, 1, meta) == KN_OK);
    kn_safetensors *f = kn_safetensors_open(path);
    CHECK(f && kn_safetensors_count(f) == 4);
    if (!f) goto done;
    CHECK(strcmp(kn_safetensors_name(f, 0), "0.weight") == 0);
    CHECK(strcmp(kn_safetensors_meta(f, "epoch"), "3") == 0);
    CHECK(kn_module_load(b, f) == KN_OK);
    CHECK(same_state(a, b));

    /* c0: a copy of c, to see that a failed load leaves c as it was. */
    kn_module *c = mlp(3, 5, 2), *c0 = mlp(3, 5, 2);
    CHECK(kn_module_save(c, in_dir("c.safetensors"), 0, NULL) == KN_OK);
    kn_safetensors *fc = kn_safetensors_open(in_dir("c.safetensors"));
    CHECK(kn_module_load(c0, fc) == KN_OK && same_state(c, c0));
    kn_error_clear();
    CHECK(kn_module_load(c, f) == KN_ERR_SHAPE);
    CHECK_ERR("model.safetensors: tensor '0.weight' has shape [4, 3], the model expects [5, 3]",
              NULL);
    CHECK(same_state(c, c0)); /* a failed load changes nothing */

    kn_module *layers3[3] = {kn_nn_linear(3, 4, true), kn_nn_linear(4, 2, true),
                             kn_nn_linear(2, 2, false)};
    kn_module *d = kn_nn_sequential(3, layers3);
    CHECK(kn_module_load(d, f) == KN_ERR_FORMAT);
    CHECK_ERR("model.safetensors: tensor '2.weight' is missing (the model expects shape [2, 2])",
              NULL);
    kn_module *e = kn_nn_sequential(1, (kn_module *[]){kn_nn_linear(3, 4, true)});
    CHECK(kn_module_load(e, f) == KN_ERR_FORMAT);
    CHECK_ERR("tensor '1.weight' is not part of the model", NULL);

    /* Floats load into a model of another float dtype, converted. */
    CHECK(kn_module_to_dtype(b, KN_F64) == KN_OK);
    CHECK(kn_module_load(b, f) == KN_OK && same_state(a, b));
    kn_module_free(c);
    kn_module_free(c0);
    kn_module_free(d);
    kn_module_free(e);
    kn_safetensors_close(fc);
done:
    kn_safetensors_close(f);
    kn_module_free(a);
    kn_module_free(b);
    kn_scope_end(s);
}

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

    /* Errors. */
    CHECK(npy_from("c8.npy", py_npy_c8, sizeof py_npy_c8 - 1) == NULL);
    CHECK_ERR("c8.npy: NumPy dtype '<c8' (complex) is not supported", NULL);
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
        {"'<c16'", "NumPy dtype '<c16' (complex) is not supported"},
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

/* ---- .npz ----------------------------------------------------------------------- */

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void put16(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}
static void put32(unsigned char *p, uint32_t v) {
    put16(p, v);
    put16(p + 2, v >> 16);
}

/* The n-th record with signature "PK" c d (central entries 1 2, end 5 6). */
static unsigned char *zip_rec(unsigned char *b, size_t len, char c, char d, int n) {
    const char sig[4] = {'P', 'K', c, d};
    for (unsigned char *p = b; (p = memmem(p, len - (size_t)(p - b), sig, 4)); p++)
        if (n-- == 0) return p;
    return NULL;
}

/* Replaces every occurrence of the name a by b (same length). */
static void rename_member(unsigned char *buf, size_t len, const char *a, const char *b) {
    for (unsigned char *p = buf; (p = memmem(p, len - (size_t)(p - buf), a, strlen(a)));)
        memcpy(p, b, strlen(b));
}

static kn_npz *npz_from(const char *name, const void *bytes, size_t len) {
    write_file(in_dir(name), bytes, len);
    kn_error_clear();
    return kn_npz_open(in_dir(name));
}

/* Damaged archive bytes: kn_npz_open (member NULL), else kn_npz_get(member),
 * must fail with msg. */
static void npz_fails(int line, const char *name, const void *bytes, size_t len,
                      const char *member, const char *msg) {
    kn_npz *f = npz_from(name, bytes, len);
    bool ok = member ? f && !kn_npz_get(f, member, KN_CPU) : !f;
    char who[96];
    snprintf(who, sizeof who, member ? "%s: member '%s.npy': " : "%s: ", name, member);
    if (ok) check_error(line, who, msg);
    else failed++, fprintf(stderr, "%s:%d: %s: expected \"%s\"\n", __FILE__, line, name, msg);
    kn_npz_close(f);
}
#define NPZ_REFUSED(name, b, len, msg) npz_fails(__LINE__, name, b, len, NULL, msg)
#define NPZ_GET_FAILS(name, b, len, m, msg) npz_fails(__LINE__, name, b, len, m, msg)

/* The archive's arrays equal what a round trip of tensor want must give. */
static bool npz_has(const kn_npz *f, const char *name, const kn_tensor *want) {
    kn_tensor *t = kn_npz_get(f, name, KN_CPU);
    kn_dtype dt = kn_dtype_of(want) == KN_BF16 ? KN_F32 : kn_dtype_of(want);
    size_t n = (size_t)kn_numel(want) * kn_dtype_size(dt);
    unsigned char a[256], b[256];
    return t && kn_dtype_of(t) == dt && same_shape(t, kn_ndim(want), kn_shape(want)) &&
           n <= sizeof a && kn_to_host(want, a, dt) == KN_OK && kn_to_host(t, b, dt) == KN_OK &&
           memcmp(a, b, n) == 0;
}

/* An archive of the fuzz corpus (numpy wrote it). */
static kn_npz *corpus(const char *name) {
    char p[512];
    snprintf(p, sizeof p, "%s/tests/fuzz/corpus_npz/%s", KILN_SOURCE_DIR, name);
    return kn_npz_open(p);
}

static void test_npz(void) {
    kn_scope s = kn_scope_begin();
    CHECK(kn__crc32(0, "123456789", 9) == 0xCBF43926u); /* the check value of CRC-32 */
    CHECK(kn__crc32(kn__crc32(0, "1234", 4), "56789", 5) == 0xCBF43926u);

    /* Round trips of every dtype, 0-d, empty and a strided view, stored and
     * deflated (bfloat16 comes back as float32, exactly). */
    const char *path = in_dir("t.npz");
    static const char *const names[] = {"f32", "f16", "bf16", "f64", "i32", "i64", "u8",
                                        "bool", "scalar", "empty", "x.T"};
    kn_named_tensor nt[11];
    for (int dt = 0; dt < KN_DTYPE_REAL_COUNT; dt++)
        nt[dt] = (kn_named_tensor){names[dt],
                                   kn_from_data(values[dt], (kn_dtype)dt, KN_SHAPE(2, 3), KN_CPU)};
    nt[8] = (kn_named_tensor){names[8], kn_from_data(i64v, KN_I64, 0, NULL, KN_CPU)};
    nt[9] = (kn_named_tensor){names[9], kn_from_data(f32v, KN_F32, KN_SHAPE(0, 4), KN_CPU)};
    nt[10] = (kn_named_tensor){names[10], kn_transpose(nt[0].tensor, 0, 1)};
    kn_error_clear();
    const bool zlib = kn_npz_save(in_dir("z.npz"), 1, nt, true) == KN_OK;
    if (!zlib) CHECK_ERR("z.npz: a compressed .npz needs zlib", "built without zlib");
    for (int compress = 0; compress <= (int)zlib; compress++) {
        CHECK(kn_npz_save(path, 11, nt, compress) == KN_OK);
        size_t len;
        unsigned char *raw = read_all(path, &len);
        CHECK(raw && len > 30 && raw[8] == (compress ? 8 : 0) && !memcmp(raw + 30, "f32.npy", 7));
        free(raw);
        kn_npz *f = kn_npz_open(path);
        CHECK(f && kn_npz_count(f) == 11);
        for (int k = 0; f && k < 11; k++) {
            CHECK(kn_npz_name(f, k) && !strcmp(kn_npz_name(f, k), names[k]));
            CHECK(npz_has(f, names[k], nt[k].tensor));
        }
        CHECK(npz_has(f, "u8.npy", nt[KN_U8].tensor)); /* the member's name works too */
        CHECK(f && kn_npz_get(f, "nope", KN_CPU) == NULL);
        CHECK_ERR("t.npz: no array named 'nope'", NULL);
        CHECK(f && kn_npz_name(f, 11) == NULL);
        CHECK_ERR("t.npz: array index 11 out of range [0, 11)", NULL);
        kn_npz_close(f);
    }
    /* ZIP64 everywhere (as for archives over 2 GiB): sizes, offsets, end records. */
    kn__npz_zip64_limit = 0;
    for (int compress = 0; compress <= (int)zlib; compress++) {
        CHECK(kn_npz_save(path, 11, nt, compress) == KN_OK);
        size_t len;
        unsigned char *raw = read_all(path, &len);
        CHECK(raw && zip_rec(raw, len, 6, 6, 0) && zip_rec(raw, len, 6, 7, 0));
        free(raw);
        kn_npz *f = kn_npz_open(path);
        CHECK(f && kn_npz_count(f) == 11);
        for (int k = 0; f && k < 11; k++) CHECK(npz_has(f, names[k], nt[k].tensor));
        kn_npz_close(f);
    }
    kn__npz_zip64_limit = 0x7FFFFFFF;
    CHECK(kn_npz_save(path, 0, NULL, false) == KN_OK);
    kn_npz *f = kn_npz_open(path);
    CHECK(f && kn_npz_count(f) == 0);
    kn_npz_close(f);

    /* Archives numpy wrote: savez, savez_compressed, ZIP64, orders, no arrays. */
    const float fa[6] = {0, 0.25f, 0.5f, 0.75f, 1, 1.25f};
    static const char *const corp[] = {"stored.npz", "deflated.npz", "zip64.npz"};
    for (int k = 0; k < 3; k++) {
        f = corpus(corp[k]);
        if (k && !zlib) {
            kn_tensor *t = kn_npz_get(f, "a", KN_CPU);
            CHECK(f && !t);
            CHECK_ERR("member 'a.npy': deflate-compressed", "built without zlib");
        } else {
            kn_tensor *a = f ? kn_npz_get(f, "a", KN_CPU) : NULL, *b = kn_npz_get(f, "b", KN_CPU);
            CHECK(kn_npz_count(f) == (k == 2 ? 2 : 3) && !strcmp(kn_npz_name(f, 1), "b"));
            CHECK(same_shape(a, KN_SHAPE(2, 3)) && same_bytes(a, fa, sizeof fa));
            CHECK(b && kn_dtype_of(b) == KN_BOOL && same_bytes(b, "\1\0\1", 3));
            if (k < 2) CHECK(kn_item(kn_npz_get(f, "c", KN_CPU)) == 3.5);
        }
        kn_npz_close(f);
    }
    f = corpus("orders.npz");
    const int64_t i8[6] = {0, 1, 2, 3, 4, 5};
    CHECK(same_bytes(kn_npz_get(f, "f", KN_CPU), i8, sizeof i8));
    CHECK(same_bytes(kn_npz_get(f, "be", KN_CPU), (double[]){1.5, -2}, 16));
    CHECK(same_shape(kn_npz_get(f, "e", KN_CPU), KN_SHAPE(0, 4)));
    kn_npz_close(f);
    f = corpus("empty.npz");
    CHECK(f && kn_npz_count(f) == 0);
    kn_npz_close(f);

    /* Damaged archives: a stored one of QA (float32 [2, 3]) and QB (int64 [6]). */
    kn_named_tensor two[2] = {{"QA", nt[0].tensor}, {"QB", nt[KN_I64].tensor}};
    CHECK(kn_npz_save(path, 2, two, false) == KN_OK);
    size_t len;
    unsigned char *good = read_all(path, &len), *b = malloc(len);
    if (!good || !b || !zip_rec(good, len, 5, 6, 0)) {
        CHECK(!"archive written");
        goto done;
    }
    const size_t cd0 = (size_t)(zip_rec(good, len, 1, 2, 0) - good),
                 end = (size_t)(zip_rec(good, len, 5, 6, 0) - good);
#define FRESH() memcpy(b, good, len)
    FRESH(), rename_member(b, len, "QA.npy", "Q/.npy");
    NPZ_REFUSED("dir.npz", b, len, "member 'Q/.npy' is in a directory");
    FRESH(), rename_member(b, len, "QA.npy", "...npy");
    NPZ_REFUSED("dots.npz", b, len, "member '...npy' is not a valid array name");
    FRESH(), rename_member(b, len, "QB.npy", "QA.npy");
    NPZ_REFUSED("dup.npz", b, len, "member 'QA.npy' appears twice");
    FRESH(), rename_member(b, len, "QA.npy", "QA.txt");
    NPZ_REFUSED("txt.npz", b, len, "member 'QA.txt' is not a .npy array");
    FRESH(), rename_member(b, len, "QA.npy", "Q\001.npy");
    NPZ_REFUSED("ctl.npz", b, len, "member 0 has a name with control characters");
    FRESH(), memcpy(b + cd0 + 46, "QC", 2);
    NPZ_REFUSED("other.npz", b, len, "member 'QC.npy' has a local header that names another");
    FRESH(), put32(b + cd0 + 42, 0x7FFFFFF0);
    NPZ_REFUSED("off.npz", b, len, "member 'QA.npy' has no local header at offset 2147483632");
    FRESH(), put32(b + cd0 + 20, le32(b + cd0 + 20) + 40);
    put32(b + cd0 + 24, le32(b + cd0 + 24) + 40);
    NPZ_REFUSED("overlap.npz", b, len, "members 'QA.npy' and 'QB.npy' overlap");
    FRESH(), put32(b + cd0 + 24, le32(b + cd0 + 24) + 1);
    NPZ_REFUSED("sizes.npz", b, len, "member 'QA.npy' is stored uncompressed, yet its sizes");
    FRESH(), put32(b + cd0 + 20, 0x7FFFFFF0), put32(b + cd0 + 24, 0x7FFFFFF0);
    NPZ_REFUSED("big.npz", b, len, "member 'QA.npy' claims 2147483632 compressed bytes");
    FRESH(), put16(b + 8, 12), put16(b + cd0 + 10, 12);
    NPZ_REFUSED("bz2.npz", b, len, "member 'QA.npy' uses ZIP compression method 12");
    FRESH(), put16(b + cd0 + 8, 1);
    NPZ_REFUSED("enc.npz", b, len, "member 'QA.npy' is encrypted");
    FRESH(), put16(b + end + 8, 60000), put16(b + end + 10, 60000);
    NPZ_REFUSED("count.npz", b, len, "the archive claims 60000 members, but its central directory");
    FRESH(), put32(b + end + 16, 0x10000000);
    NPZ_REFUSED("cd.npz", b, len, "the central directory (");
    FRESH(), put16(b + end + 4, 1);
    NPZ_REFUSED("disk.npz", b, len, "split (multi-disk) ZIP archives are not supported");
    NPZ_REFUSED("cut.npz", good, len - 10, "not a .npz file (no ZIP end of central directory");
    NPZ_REFUSED("short.npz", "PK\3\4", 4, "not a .npz file (4 bytes, too short");
    NPZ_REFUSED("npy.npz", py_npy_f4, sizeof py_npy_f4 - 1, "a .npy file, not a .npz archive");
    CHECK(kn_npz_open(in_dir("absent.npz")) == NULL);
    CHECK_ERR("absent.npz: cannot open", NULL);
    /* Damage found when a member is read: its CRC, then the .npy inside. */
    const size_t qa = 36, qa_len = le32(good + cd0 + 24); /* after the 30 + 6 byte header */
    FRESH(), b[qa + qa_len - 1] ^= 1;
    NPZ_GET_FAILS("crc.npz", b, len, "QA", "CRC-32 mismatch");
    FRESH(), rename_member(b, len, "'<f4'", "'<c8'");
    put32(b + cd0 + 16, kn__crc32(0, b + qa, qa_len));
    NPZ_GET_FAILS("c8.npz", b, len, "QA", "NumPy dtype '<c8' (complex) is not supported");
    if (zlib) { /* the same, deflated: sizes against the stream */
        CHECK(kn_npz_save(path, 2, two, true) == KN_OK);
        free(good);
        good = read_all(path, &len);
        unsigned char *nb = good ? realloc(b, len) : NULL;
        if (!nb) goto done;
        b = nb;
        const size_t c0 = (size_t)(zip_rec(good, len, 1, 2, 0) - good);
        const uint32_t us = le32(good + c0 + 24);
        FRESH(), put32(b + c0 + 24, 0x7FFFFFFF);
        NPZ_REFUSED("bomb.npz", b, len, "more than deflate can produce");
        FRESH(), put32(b + c0 + 24, us - 1);
        NPZ_GET_FAILS("more.npz", b, len, "QA", "inflates to more bytes than the");
        FRESH(), put32(b + c0 + 24, us + 1);
        NPZ_GET_FAILS("fewer.npz", b, len, "QA", "inflates to fewer bytes than the");
        FRESH(), b[qa] = 0xFF; /* block type 3: reserved */
        NPZ_GET_FAILS("bad.npz", b, len, "QA", "corrupt deflate data");
        FRESH(), put32(b + c0 + 20, le32(b + c0 + 20) - 8);
        NPZ_GET_FAILS("trunc.npz", b, len, "QA", "the deflate data ends early");
    }
#undef FRESH

    /* The writer refuses names a reader would, before writing anything. */
    kn_named_tensor bad[2] = {{"a/b", nt[0].tensor}, {"ok", nt[1].tensor}};
    CHECK(kn_npz_save(in_dir("w.npz"), 2, bad, false) == KN_ERR_INVALID);
    CHECK_ERR("w.npz: array name 'a/b' is in a directory", "nothing written");
    bad[0].name = "..";
    CHECK(kn_npz_save(in_dir("w.npz"), 2, bad, false) == KN_ERR_INVALID);
    CHECK_ERR("w.npz: array name '..' is not a valid array name", NULL);
    bad[0].name = "ok";
    CHECK(kn_npz_save(in_dir("w.npz"), 2, bad, false) == KN_ERR_INVALID);
    CHECK_ERR("w.npz: array name 'ok' is used twice", NULL);
    bad[0] = (kn_named_tensor){"n", NULL};
    CHECK(kn_npz_save(in_dir("w.npz"), 2, bad, false) == KN_ERR_NULL);
    CHECK_ERR("w.npz: array 'n' is NULL", NULL);
    CHECK(access(in_dir("w.npz"), F_OK) != 0 && temp_files() == 0);
done:
    free(good);
    free(b);
    kn_scope_end(s);
}

/* ---- another device ------------------------------------------------------------- */

/* Tensors on a device other than the CPU are saved through kn_to_host and
 * loaded straight onto their device. */
static void test_other_device(void) {
    kn_scope s = kn_scope_begin();
    kn_device dev = kt_register_test_device();
    kn_named_tensor nt[2] = {{"dev", kn_from_data(f32v, KN_F32, KN_SHAPE(2, 3), dev)},
                             {"bf", kn_from_data(bf16v, KN_BF16, KN_SHAPE(6), dev)}};
    const char *path = in_dir("dev.safetensors");
    CHECK(nt[0].tensor && kn_safetensors_save(path, 2, nt, 0, NULL) == KN_OK);
    kn_safetensors *f = kn_safetensors_open(path);
    kn_tensor *t = kn_safetensors_get(f, "dev", dev);
    CHECK(t && kn_device_equal(kn_device_of(t), dev) && same_bytes(t, f32v, sizeof f32v));
    t = kn_safetensors_get(f, "bf", KN_CPU);
    CHECK(t && kn_dtype_of(t) == KN_BF16 && same_bytes(t, bf16v, sizeof bf16v));
    kn_safetensors_close(f);

    CHECK(kn_npy_save(in_dir("dev.npy"), nt[1].tensor) == KN_OK); /* bf16 -> float32 */
    t = kn_npy_load(in_dir("dev.npy"), dev);
    CHECK(t && kn_dtype_of(t) == KN_F32 && kn_device_equal(kn_device_of(t), dev));
    float back[6] = {0};
    CHECK(t && kn_to_host(t, back, KN_F32) == KN_OK && back[0] == 1.0f && back[1] == -2.0f);

    kn_module *a = mlp(3, 4, 2), *b = mlp(3, 4, 2);
    CHECK(kn_module_to(b, dev) == KN_OK);
    CHECK(kn_module_save(a, in_dir("m.safetensors"), 0, NULL) == KN_OK);
    f = kn_safetensors_open(in_dir("m.safetensors"));
    CHECK(kn_module_load(b, f) == KN_OK && same_state(a, b));
    CHECK(kn_device_equal(kn_module_device(b), dev));
    kn_safetensors_close(f);
    kn_module_free(a);
    kn_module_free(b);
    kn_scope_end(s);
}

static void remove_dir(void) {
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));)
        if (e->d_name[0] != '.') unlink(in_dir(e->d_name));
    if (d) closedir(d);
    rmdir(dir);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/kiln_test_formats_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    int64_t live = kn_live_tensors();
    test_json();
    test_safetensors_roundtrip();
    test_safetensors_python();
    test_safetensors_damaged();
    test_safetensors_atomic();
    test_module();
    test_npy();
    test_npz();
    test_other_device();
    CHECK(kn_live_tensors() == live);
    remove_dir();
    printf("test_formats: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
