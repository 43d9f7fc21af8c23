/* `kiln train-images` and `kiln predict-images`, run as a user would, on IDX
 * sets this test writes: the project's 8 x 8 digits (data/digits) and, when
 * Debian's dataset-fashion-mnist is installed, the first 2,000 Fashion-MNIST
 * training images (that part is skipped otherwise). The test accuracy is
 * computed here from predict-images' CSV against the labels written; the
 * --grid PNG is decoded here (signature, chunk CRCs, IHDR, the zlib stream and
 * its Adler-32) and its orange-framed tiles counted against the
 * misclassified images counted from that CSV. */
#ifndef KILN_CLI_PATH
/* Built before tests/CMakeLists.txt gives it the binary's path: skipped. */
#include <stdio.h>
int main(void) {
    puts("cli_images: KILN_CLI_PATH is not set for this test (tests/CMakeLists.txt's CLI list): skipped");
    return 77;
}
#else
#include "kt_cli.h"

#define DIGITS KILN_SOURCE_DIR "/data/digits/digits.csv.gz"
#define FASHION "/usr/share/datasets/fashion-mnist"

/* ---- IDX files ---------------------------------------------------------------------- */
static void put32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16), p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* A uint8 IDX file of nd dims; the data (prod(dims) bytes) follows the header. */
static void write_idx(const char *name, int nd, const uint32_t *dims, const uint8_t *data) {
    unsigned char head[4 + 4 * 4] = {0, 0, 0x08, (unsigned char)nd};
    size_t n = 1;
    for (int k = 0; k < nd; k++) put32(head + 4 + 4 * k, dims[k]), n *= dims[k];
    FILE *f = fopen(path_in(name), "wb");
    if (!f || fwrite(head, 1, 4 + 4 * (size_t)nd, f) != 4 + 4 * (size_t)nd || fwrite(data, 1, n, f) != n) abort();
    fclose(f);
}

typedef struct {
    uint8_t *px, *y;
    int n, h, w;
} images;

/* Writes SUB/{train,t10k}-{images,labels} from images [0, n_train) and [n_train, n). */
static void write_set(const char *sub, const images *im, int n_train) {
    char name[256];
    snprintf(name, sizeof name, "%s", sub);
    mkdir(path_in(name), 0755);
    const char *split[2] = {"train", "t10k"};
    for (int s = 0; s < 2; s++) {
        int from = s ? n_train : 0, n = s ? im->n - n_train : n_train;
        uint32_t d3[3] = {(uint32_t)n, (uint32_t)im->h, (uint32_t)im->w}, d1[1] = {(uint32_t)n};
        snprintf(name, sizeof name, "%s/%s-images-idx3-ubyte", sub, split[s]);
        write_idx(name, 3, d3, im->px + (size_t)from * im->h * im->w);
        snprintf(name, sizeof name, "%s/%s-labels-idx1-ubyte", sub, split[s]);
        write_idx(name, 1, d1, im->y + from);
    }
}

/* data/digits: 1,797 rows of 64 pixels (0..16) and the digit; pixels scaled to 0..240. */
static bool load_digits(images *im) {
    FILE *p = popen("gzip -dc '" DIGITS "'", "r");
    if (!p) return false;
    *im = (images){.px = calloc(2000 * 64, 1), .y = calloc(2000, 1), .h = 8, .w = 8};
    char line[1024];
    while (im->n < 2000 && fgets(line, sizeof line, p)) {
        int v[65], k = 0;
        for (char *s = line, *e; k < 65; k++, s = e + 1) {
            v[k] = (int)strtol(s, &e, 10);
            if (e == s || (k < 64 && *e != ',')) break;
        }
        if (k != 65) continue;
        for (int j = 0; j < 64; j++) im->px[im->n * 64 + j] = (uint8_t)(v[j] * 15);
        im->y[im->n++] = (uint8_t)v[64];
    }
    return pclose(p) == 0 && im->n == 1797;
}

/* The first n_train training and n_test test images of the installed Fashion-MNIST. */
static bool load_fashion(images *im, int n_train, int n_test) {
    if (!exists(FASHION "/train-images-idx3-ubyte.gz") || !exists(FASHION "/t10k-images-idx3-ubyte.gz")) return false;
    *im = (images){.px = calloc((size_t)(n_train + n_test) * 784, 1), .y = calloc((size_t)(n_train + n_test), 1),
                   .n = n_train + n_test, .h = 28, .w = 28};
    const char *files[4] = {FASHION "/train-images-idx3-ubyte.gz", FASHION "/train-labels-idx1-ubyte.gz",
                            FASHION "/t10k-images-idx3-ubyte.gz", FASHION "/t10k-labels-idx1-ubyte.gz"};
    bool ok = true;
    for (int k = 0; k < 4 && ok; k++) {
        kn_tensor *t = kn_idx_load(files[k], KN_CPU);
        int n = k < 2 ? n_train : n_test;
        uint8_t *dst = k % 2 ? im->y + (k < 2 ? 0 : n_train) : im->px + (size_t)(k < 2 ? 0 : n_train) * 784;
        kn_tensor *head = t ? kn_narrow(t, 0, 0, n) : NULL; /* a view: holds t's storage */
        ok = head && kn_to_host(head, dst, KN_U8) == KN_OK;
        kn_release(head);
        kn_release(t);
    }
    return ok;
}

/* ---- predictions ---------------------------------------------------------------------- */
/* class_index of each row of predict-images' CSV into pred[n]; false on any malformed row. */
static bool read_predictions(const char *path, int64_t *pred, int n) {
    FILE *f = fopen(path, "r");
    char line[512];
    if (!f || !fgets(line, sizeof line, f) || strcmp(line, "index,class_index,class,probability\n")) {
        if (f) fclose(f);
        return false;
    }
    int i = 0;
    while (fgets(line, sizeof line, f)) {
        long long idx, c;
        if (i >= n || sscanf(line, "%lld,%lld,", &idx, &c) != 2 || idx != i) break;
        pred[i++] = c;
    }
    fclose(f);
    return i == n;
}

/* A number at a dotted path of a JSON text ("schema.input.height"); NaN when absent. */
static double json_at(const char *text, const char *path) {
    kn__json_doc *d = kn__json_parse(text, strlen(text), NULL, "kiln --json output");
    const kn__json *v = d ? kn__json_root(d) : NULL;
    char key[64];
    for (const char *p = path; v && *p;) {
        size_t n = strcspn(p, ".");
        snprintf(key, sizeof key, "%.*s", (int)n, p);
        v = kn__json_get(d, v, key);
        p += n + (p[n] == '.');
    }
    double x = v && v->type == KN__JSON_NUMBER ? v->number : NAN;
    kn__json_free(d);
    return x;
}

/* Whole files a and b hold the same bytes (and are not empty). */
static bool same_file(const char *a, const char *b) {
    static char fa[1 << 20], fb[1 << 20];
    size_t na = read_file(a, fa, sizeof fa), nb = read_file(b, fb, sizeof fb);
    return na > 0 && na == nb && !memcmp(fa, fb, na);
}

/* The parameters of train-images' CNN (conv 32 and 64 of 3 x 3, linear 128,
 * then k outputs), counted here from the layer sizes. */
static double cnn_params(int c, int h, int w, int k) {
    return (c * 32 * 9 + 32) + (32 * 64 * 9 + 64) + ((double)64 * (h / 4) * (w / 4) * 128 + 128) + (128 * k + k);
}

/* ---- PNG -------------------------------------------------------------------------------- */
static uint32_t be(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t crc32_of(const unsigned char *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xffffffffu;
}

/* A zlib stream of stored deflate blocks (what kiln's writer makes) into out;
 * its header check and Adler-32 verified. Other block types are reported. */
static bool inflate_stored(const unsigned char *z, size_t n, unsigned char *out, size_t cap, size_t *len) {
    if (n < 6 || (z[0] & 0x0f) != 8 || ((unsigned)z[0] << 8 | z[1]) % 31) return false;
    size_t p = 2, o = 0;
    bool last = false;
    while (!last) {
        if (p + 5 > n) return false;
        last = z[p] & 1;
        int type = (z[p] >> 1) & 3;
        CHECK(type == 0, "deflate block type %d: this test reads stored blocks only", type);
        if (type != 0) return false;
        size_t l = z[p + 1] | (size_t)z[p + 2] << 8, nl = z[p + 3] | (size_t)z[p + 4] << 8;
        if ((l ^ nl) != 0xffff || p + 5 + l > n || o + l > cap) return false;
        memcpy(out + o, z + p + 5, l);
        o += l, p += 5 + l;
    }
    uint32_t a = 1, b = 0;
    for (size_t i = 0; i < o; i++) a = (a + out[i]) % 65521, b = (b + a) % 65521;
    if (p + 4 != n || be(z + p) != (b << 16 | a)) return false;
    *len = o;
    return true;
}

/* Decodes a palette PNG; returns the tiles: orange (230, 110, 10) frames, each
 * counted at its top-left outer corner. -1 when the file is not a valid PNG. */
static int grid_tiles(const char *path, int *width, int *height) {
    static unsigned char file[1 << 23], z[1 << 23], raw[1 << 23];
    size_t n = read_file(path, (char *)file, sizeof file), zn = 0;
    CHECK(n > 8 && !memcmp(file, "\x89PNG\r\n\x1a\n", 8), "%s: the PNG signature", path);
    if (n <= 8 || memcmp(file, "\x89PNG\r\n\x1a\n", 8)) return -1;
    uint32_t w = 0, h = 0;
    unsigned char pal[256][3];
    int n_pal = 0;
    bool ihdr = false, iend = false;
    for (size_t p = 8; p + 12 <= n && !iend;) {
        uint32_t l = be(file + p);
        if (p + 12 + l > n) {
            CHECK(false, "%s: a chunk runs past the end", path);
            return -1;
        }
        const unsigned char *type = file + p + 4, *d = file + p + 8;
        CHECK(crc32_of(type, l + 4) == be(d + l), "the CRC of chunk %.4s", (const char *)type);
        if (!memcmp(type, "IHDR", 4)) {
            ihdr = l == 13;
            w = be(d), h = be(d + 4);
            CHECK(l == 13 && d[8] == 8 && d[9] == 3 && !d[10] && !d[11] && !d[12], "IHDR: 8-bit palette, no interlace");
        } else if (!memcmp(type, "PLTE", 4)) {
            n_pal = (int)(l / 3);
            memcpy(pal, d, l <= sizeof pal ? l : sizeof pal);
        } else if (!memcmp(type, "IDAT", 4)) {
            if (zn + l > sizeof z) return -1;
            memcpy(z + zn, d, l), zn += l;
        } else if (!memcmp(type, "IEND", 4)) {
            iend = true;
        }
        p += 12 + l;
    }
    CHECK(ihdr && iend && n_pal > 0 && w > 0 && h > 0 && w < 20000 && h < 20000, "IHDR, PLTE and IEND present");
    size_t rn = 0;
    bool inflated = ihdr && inflate_stored(z, zn, raw, sizeof raw, &rn);
    CHECK(inflated && rn == (size_t)h * (w + 1), "the zlib stream inflates to %u rows of %u pixels", h, w);
    if (!inflated || rn != (size_t)h * (w + 1)) return -1;
    *width = (int)w, *height = (int)h;
    int orange = -1;
    for (int i = 0; i < n_pal; i++)
        if (pal[i][0] == 230 && pal[i][1] == 110 && pal[i][2] == 10) orange = i;
    CHECK(orange >= 0, "the palette holds the tile frames' orange");
    int tiles = 0;
#define PX(x, y) ((x) >= 0 && (y) >= 0 && (x) < (int)w && (y) < (int)h && raw[(size_t)(y) * (w + 1) + 1 + (x)] == orange)
    for (uint32_t y = 0; y < h; y++) CHECK(raw[(size_t)y * (w + 1)] == 0, "row %u's filter byte", y);
    for (int y = 0; y < (int)h; y++)
        for (int x = 0; x < (int)w; x++)
            tiles += PX(x, y) && PX(x + 1, y) && PX(x, y + 1) && !PX(x - 1, y) && !PX(x, y - 1);
#undef PX
    return tiles;
}

/* ---- the tests -------------------------------------------------------------------------- */
/* `kiln predict` and `kiln info` on the image model mp: predict writes what
 * predict-images wrote (cp, from the test images in dp), info describes the
 * model and the run; epochs, best and acc: the epochs run and kept that
 * train-images reported, the test accuracy counted from cp. */
static void check_image_model(const char *sub, const images *im, int n_train, const char *mp, const char *dp,
                              const char *cp, double epochs, double best, double acc) {
    char p2[64];
    snprintf(p2, sizeof p2, "%s_pred2.csv", sub);
    int rc = RUN("predict", mp, dp, "--out", path_in(p2));
    CHECK(rc == 0 && same_file(cp, path_in(p2)),
          "%s: kiln predict on an image model writes predict-images' CSV (exit %d: %s)", sub, rc, err_buf);
    rc = RUN("predict", mp, dp);
    CHECK(rc == 0 && same_file(cp, path_in(".stdout")), "%s: kiln predict to stdout is predict-images' CSV", sub);
    CHECK_FAILS(RUN("predict", mp, dp, "--proba"), "--proba does not apply to an image model");
    CHECK_FAILS(RUN("eval", mp, dp), "an image model of kiln train-images");
    rc = RUN("info", mp, "--json");
    CHECK(rc == 0, "%s: info --json: exit %d: %s", sub, rc, err_buf);
    int n_test = im->n - n_train;
    CHECK(json_at(out_buf, "parameters") == cnn_params(1, im->h, im->w, 10), "%s: info's parameters %g, counted %g", sub,
          json_at(out_buf, "parameters"), cnn_params(1, im->h, im->w, 10));
    CHECK(json_at(out_buf, "schema.input.height") == im->h && json_at(out_buf, "schema.input.width") == im->w &&
              json_at(out_buf, "schema.input.channels") == 1, "%s: info's input is 1 x %d x %d", sub, im->h, im->w);
    CHECK(json_at(out_buf, "schema.training.epochs") == epochs && json_at(out_buf, "schema.training.best_epoch") == best,
          "%s: info's training epochs %g (best %g), train-images said %g (best %g)", sub,
          json_at(out_buf, "schema.training.epochs"), json_at(out_buf, "schema.training.best_epoch"), epochs, best);
    CHECK(json_at(out_buf, "schema.training.rows.test") == n_test &&
              fabs(json_at(out_buf, "schema.training.test_accuracy") - acc) < 1e-6,
          "%s: info's test rows and accuracy are the %d images and the %.6f counted from the predictions", sub, n_test,
          acc);
    rc = RUN("info", mp);
    char want[64];
    snprintf(want, sizeof want, "input: 1 x %d x %d ", im->h, im->w);
    CHECK(rc == 0 && strstr(out_buf, "kiln image model") && strstr(out_buf, want) && strstr(out_buf, "classes (10)") &&
              strstr(out_buf, "Conv2d(32, 64"), "%s: info describes the image model: %s", sub, out_buf);
    snprintf(want, sizeof want, "; %.0f parameters", cnn_params(1, im->h, im->w, 10));
    CHECK(strstr(out_buf, want) != NULL, "%s: info says '%s': %s", sub, want, out_buf);
}

/* ---- the drivers -------------------------------------------------------------------------- */
/* Trains on SUB, predicts its test images, and checks accuracy, JSON and grid. */
static void train_and_check(const char *sub, const images *im, int n_train, const char *epochs, double min_acc) {
    char mdl[64], grid[64], csv[64], d[64];
    snprintf(d, sizeof d, "%s", sub);
    snprintf(mdl, sizeof mdl, "%s.safetensors", sub);
    snprintf(grid, sizeof grid, "%s_grid.png", sub);
    snprintf(csv, sizeof csv, "%s_pred.csv", sub);
    const char *dp = path_in(d), *mp = path_in(mdl), *gp = path_in(grid), *cp = path_in(csv);
    int rc = RUN("train-images", dp, "--epochs", epochs, "--batch-size", "32", "--seed", "1", "--val-split", "0.1",
                 "--out", mp, "--grid", gp, "--json");
    CHECK(rc == 0, "%s: train-images: exit %d: %s", sub, rc, err_buf);
    if (rc) return;
    double json_acc = json_number(out_buf, "test", "accuracy"), json_mis = json_number(out_buf, "misclassified", NULL);
    double json_epochs = json_number(out_buf, "training", "epochs"), json_best = json_number(out_buf, "training", "best_epoch");
    int n_test = im->n - n_train;
    CHECK(json_number(out_buf, "rows", "test") == n_test, "%s: %d test rows in the JSON", sub, n_test);
    CHECK(json_number(out_buf, "rows", "train") + json_number(out_buf, "rows", "validation") == n_train,
          "%s: train + validation rows are the %d training images", sub, n_train);
    rc = RUN("predict-images", mp, dp, "--out", cp);
    CHECK(rc == 0, "%s: predict-images: exit %d: %s", sub, rc, err_buf);
    int64_t *pred = calloc((size_t)n_test, sizeof *pred);
    bool read = rc == 0 && read_predictions(cp, pred, n_test);
    CHECK(read, "%s: one prediction per test image in %s", sub, cp);
    if (read) {
        int right = 0, wrong = 0;
        for (int i = 0; i < n_test; i++) right += pred[i] == im->y[n_train + i], wrong += pred[i] != im->y[n_train + i];
        double acc = (double)right / n_test;
        CHECK(acc >= min_acc, "%s: test accuracy %.4f from the predictions (chance 0.1), want >= %.2f", sub, acc, min_acc);
        CHECK(fabs(acc - json_acc) < 1e-9, "%s: the saved model's accuracy %.6f is the reported %.6f", sub, acc, json_acc);
        CHECK(json_mis == wrong, "%s: %d misclassified, the JSON says %g", sub, wrong, json_mis);
        int gw = 0, gh = 0, tiles = grid_tiles(gp, &gw, &gh);
        int want = wrong < 64 ? wrong : 64;
        CHECK(tiles == want, "%s: %d tiles in the grid, %d misclassified images (up to 64)", sub, tiles, want);
        check_image_model(sub, im, n_train, mp, dp, cp, json_epochs, json_best, acc);
    }
    free(pred);
}

static void test_digits(void) {
    images im = {0};
    if (!load_digits(&im)) {
        printf("SKIP digits: %s could not be read through gzip -dc\n", DIGITS);
        free(im.px), free(im.y);
        return;
    }
    write_set("digits", &im, 1297);
    train_and_check("digits", &im, 1297, "8", 0.85);
    /* Class names from classes.txt reach the CSV. */
    write_text("digits/classes.txt", "zero\none\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\n");
    int rc = RUN("train-images", path_in("digits"), "--epochs", "1", "--limit", "300", "--out", path_in("n.safetensors"),
                 "--quiet");
    CHECK(rc == 0 && strstr(out_buf, "seven") && strstr(out_buf, "test accuracy"), "classes.txt: %s %s", out_buf,
          err_buf);
    rc = RUN("predict-images", path_in("n.safetensors"), path_in("digits/t10k-images-idx3-ubyte"));
    CHECK(rc == 0 && !strncmp(out_buf, "index,class_index,class,probability\n", 36) && lines(out_buf) == 501,
          "predict-images to stdout: %d lines", lines(out_buf));
    /* Images of another size than the model's. */
    rc = RUN("predict-images", path_in("n.safetensors"), FASHION "/t10k-images-idx3-ubyte.gz");
    if (exists(FASHION "/t10k-images-idx3-ubyte.gz")) CHECK_FAILS(rc, "the model takes 1 x 8 x 8");
    remove(path_in("digits/classes.txt"));
    free(im.px), free(im.y);
}

static void test_fashion(void) {
    images im = {0};
    if (!load_fashion(&im, 2000, 500)) {
        printf("SKIP fashion: %s is not installed (Debian's dataset-fashion-mnist)\n", FASHION);
        free(im.px), free(im.y);
        return;
    }
    write_set("fashion", &im, 2000);
    train_and_check("fashion", &im, 2000, "3", 0.65);
    /* Recognised as Fashion-MNIST by its labels: the names are in the report. */
    int rc = RUN("train-images", path_in("fashion"), "--epochs", "1", "--limit", "64", "--val-split", "0", "--quiet");
    CHECK(rc == 0 && strstr(out_buf, "Ankle boot") && strstr(out_buf, "T-shirt/top"), "Fashion-MNIST's names: %s %s",
          out_buf, err_buf);
    free(im.px), free(im.y);
}

/* A small valid set in SUB: n images of 8 x 8 and m labels. */
static void tiny_set(const char *sub, uint32_t n, uint32_t m) {
    uint8_t px[64 * 64] = {0}, y[64] = {0};
    for (uint32_t i = 0; i < 64; i++) y[i] = (uint8_t)(i % 3), px[i * 64 + i] = 200;
    char name[128];
    snprintf(name, sizeof name, "%s", sub);
    mkdir(path_in(name), 0755);
    for (int s = 0; s < 2; s++) {
        const char *sp = s ? "t10k" : "train";
        snprintf(name, sizeof name, "%s/%s-images-idx3-ubyte", sub, sp);
        write_idx(name, 3, (const uint32_t[]){n, 8, 8}, px);
        snprintf(name, sizeof name, "%s/%s-labels-idx1-ubyte", sub, sp);
        write_idx(name, 1, (const uint32_t[]){s ? n : m}, y);
    }
}

static void test_errors(void) {
    mkdir(path_in("empty"), 0755);
    CHECK_FAILS(RUN("train-images", path_in("empty")), "no train-images-idx3-ubyte or train-images-idx3-ubyte.gz");
    CHECK_FAILS(RUN("train-images", path_in("nowhere")), "not a directory");
    tiny_set("ok", 40, 40);
    int rc = RUN("train-images", path_in("ok"), "--epochs", "1", "--quiet");
    CHECK(rc == 0, "a tiny valid set trains: %s", err_buf);
    tiny_set("counts", 40, 39);
    CHECK_FAILS(RUN("train-images", path_in("counts"), "--epochs", "1"), "counts must match");
    tiny_set("magic", 40, 40);
    write_text("magic/train-images-idx3-ubyte", "\x89PNG\r\n\x1a\n not an idx file");
    CHECK_FAILS(RUN("train-images", path_in("magic"), "--epochs", "1"), "not an IDX file");
    CHECK_FAILS(RUN("train-images", path_in("ok"), "--limit", "0"), "--limit");
    CHECK_FAILS(RUN("train-images", path_in("ok"), "--out", path_in("ok/train-labels-idx1-ubyte")), "that is the input");
    CHECK_FAILS(RUN("train-images", path_in("ok"), "--grid", path_in("ok/t10k-images-idx3-ubyte")), "");
    CHECK_FAILS(RUN("train-images", path_in("ok"), "--grid", path_in("g.png"), "--out", path_in("g.png")),
                "the same file");
    CHECK_FAILS(RUN("train-images", path_in("ok"), "--classes", "a,b"), "labels go up to 2");
    CHECK_FAILS(RUN("train-images", path_in("ok"), "--bogus"), "unknown option");
    CHECK_FAILS(RUN("predict-images", path_in("ok/train-images-idx3-ubyte"), path_in("ok")), "");
    CHECK(!exists(path_in("g.png")), "nothing written by failed runs");
}

int main(void) {
    kt_cli_begin();
    test_errors();
    test_digits();
    test_fashion();
    return kt_cli_end("cli_images");
}
#endif
