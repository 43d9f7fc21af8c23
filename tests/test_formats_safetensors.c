/* safetensors: the internal JSON reader and writer of its header, round trips of
 * every dtype (0-d and empty tensors, metadata), a file written by the
 * safetensors package, every kind of damaged file, atomic saves, module
 * save/load, and tensors on another device. */
#include "kt_formats.h"

/* Files written by Python, generated with:
 *   safetensors.numpy.save({"weight": np.arange(6, dtype=np.float32).reshape(2, 3) * 0.5,
 *       "bias": np.array([-1.5, 2.25], np.float16), "ids": np.array([[1, -2], [3, 4e10]],
 *       np.int64), "mask": np.array([True, False, True]), "scalar": np.array(7, np.int32)},
 *       metadata={"format": "np", "note": "café"})
 */
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

/* Complex: complex64 is safetensors' C64 (two little-endian float32); the
 * format has no complex128, so saving one is refused and writes nothing. */
static void test_safetensors_complex(void) {
    kn_scope s = kn_scope_begin();
    const uint32_t zv[8] = {0x3f800000, 0x40000000, 0x7fc01234, 0x80000000,
                            0xff800000, 0x00000001, 0xffffffff, 0x7fc00abc};
    kn_tensor *z = kn_from_data(zv, KN_C64, KN_SHAPE(2, 2), KN_CPU);
    kn_named_tensor nt[3] = {{"z", z}, {"zt", kn_transpose(z, 0, 1)},
                             {"z0", kn_from_data(zv, KN_C64, 0, NULL, KN_CPU)}};
    const char *path = in_dir("c.safetensors");
    CHECK(kn_safetensors_save(path, 3, nt, 0, NULL) == KN_OK);
    size_t len;
    unsigned char *raw = read_all(path, &len);
    const char *want = "\"z\":{\"dtype\":\"C64\",\"shape\":[2,2],\"data_offsets\":[0,32]}";
    CHECK(raw && len > 8 && memmem(raw, len, want, strlen(want)) != NULL);
    free(raw);
    kn_safetensors *f = kn_safetensors_open(path);
    CHECK(f != NULL);
    kn_tensor *t = kn_safetensors_get(f, "z", KN_CPU);
    CHECK(same_shape(t, KN_SHAPE(2, 2)) && kn_dtype_of(t) == KN_C64 && same_bytes(t, zv, sizeof zv));
    const uint32_t tv[8] = {zv[0], zv[1], zv[4], zv[5], zv[2], zv[3], zv[6], zv[7]};
    t = kn_safetensors_get(f, "zt", KN_CPU);
    CHECK(same_shape(t, KN_SHAPE(2, 2)) && same_bytes(t, tv, sizeof tv));
    t = kn_safetensors_get(f, "z0", KN_CPU);
    CHECK(t && kn_ndim(t) == 0 && kn_dtype_of(t) == KN_C64 && same_bytes(t, zv, 8));
    kn_safetensors_close(f);
    /* The byte range must match the shape x 8 bytes. */
    ST_FAILS("{\"a\":{\"dtype\":\"C64\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8,
             "tensor 'a': shape [2] of C64 needs 16 bytes, but data_offsets [0, 8] hold 8", NULL);
    ST_FAILS("{\"a\":{\"dtype\":\"C128\",\"shape\":[1],\"data_offsets\":[0,16]}}", 0, 16,
             "tensor 'a' has unknown dtype 'C128'", NULL);
    /* complex128 is refused by name, before anything is written. */
    kn_named_tensor bad[2] = {{"ok", z}, {"w", kn_cast(z, KN_C128)}};
    kn_error_clear();
    CHECK(kn_safetensors_save(path, 2, bad, 0, NULL) == KN_ERR_DTYPE);
    CHECK_ERR("c.safetensors: tensor 'w' is complex128, and safetensors has no dtype for it", "nothing written");
    f = kn_safetensors_open(path); /* the earlier file is intact */
    CHECK(f && kn_safetensors_count(f) == 3);
    kn_safetensors_close(f);
    CHECK(temp_files() == 0);
    kn_scope_end(s);
}

int main(void) {
    void (*const tests[])(void) = {test_json, test_safetensors_roundtrip, test_safetensors_complex,
                                   test_safetensors_python, test_safetensors_damaged, test_safetensors_atomic,
                                   test_module, test_other_device};
    return kt_formats_run("test_formats_safetensors", (int)(sizeof tests / sizeof *tests), tests);
}
