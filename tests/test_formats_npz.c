/* .npz: round trips (stored, deflated, forced ZIP64), the archives numpy wrote
 * (the fuzz corpus, tests/fuzz/corpus_npz), the CRC-32 check value, and every
 * kind of damaged archive, made by patching a valid one. */
#include "kt_formats.h"

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
    FRESH(), rename_member(b, len, "'<f4'", "'<U4'");
    put32(b + cd0 + 16, kn__crc32(0, b + qa, qa_len));
    NPZ_GET_FAILS("u4.npz", b, len, "QA", "NumPy dtype '<U4' (strings) is not supported");
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
/* Complex members ('<c8', '<c16'), stored and deflated, and a transposed view. */
static void test_npz_complex(void) {
    kn_scope s = kn_scope_begin();
    const double zv[12] = {1.5, -0.25, 0.0, -0.0, 1e308, -5e-324, 3, 4, -1, 2, 7.5, -8};
    kn_tensor *z128 = kn_from_data(zv, KN_C128, KN_SHAPE(2, 3), KN_CPU);
    kn_named_tensor nt[3] = {{"z128", z128}, {"z64", kn_cast(z128, KN_C64)}, {"zT", kn_transpose(z128, 0, 1)}};
    const char *path = in_dir("c.npz");
    for (int compress = 0; compress <= 1; compress++) {
        kn_error_clear();
        kn_status st = kn_npz_save(path, 3, nt, compress);
        if (compress && st != KN_OK) { /* a build without zlib */
            CHECK_ERR("a compressed .npz needs zlib", NULL);
            break;
        }
        CHECK(st == KN_OK);
        kn_npz *f = kn_npz_open(path);
        CHECK(f && kn_npz_count(f) == 3);
        for (int k = 0; f && k < 3; k++) CHECK(npz_has(f, nt[k].name, nt[k].tensor));
        kn_npz_close(f);
    }
    kn_scope_end(s);
}

int main(void) {
    void (*const tests[])(void) = {test_npz, test_npz_complex};
    return kt_formats_run("test_formats_npz", (int)(sizeof tests / sizeof *tests), tests);
}
