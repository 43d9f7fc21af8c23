/* The `kiln` command line, run as a user would: train/eval/predict round trips,
 * --json output, and every bad input ending in one clear line on stderr, a
 * non-zero exit and no half-written file. The binary's path comes from CMake
 * (KILN_CLI_PATH); fixtures are written into a fresh temporary directory. */
#include "kt_cli.h"

#include <dirent.h>

/* 300 rows: numeric x1 (some '?'), x2 (some empty), categorical color (some NA),
 * a binary label decided by x1 + color; deterministic. */
static void make_mixed(const char *name, int rows, bool extra_color) {
    static char buf[1 << 16];
    size_t n = (size_t)snprintf(buf, sizeof buf, "x1,color,x2,label\n");
    static const char *colors[] = {"red", "green", "blue", "NA"};
    uint64_t s = 12345;
    for (int i = 0; i < rows; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        double x1 = (double)((s >> 33) % 1000) / 100.0 - 5;
        int c = (int)((s >> 20) % 4);
        double x2 = (double)((s >> 13) % 100);
        const char *color = extra_color && i % 7 == 0 ? "purple" : colors[c];
        bool pos = x1 + (c == 0 ? 3 : c == 1 ? -3 : 0) > 0;
        char x1s[32], x2s[32];
        snprintf(x1s, sizeof x1s, "%.2f", x1);
        snprintf(x2s, sizeof x2s, "%.0f", x2);
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s,%s,%s,%s\n", i % 17 == 3 ? "?" : x1s, color,
                              i % 11 == 5 ? "" : x2s, pos ? "yes" : "no");
    }
    write_file(name, buf, n);
}

static void test_basics(void) {
    CHECK(RUN("--version") == 0 && strstr(out_buf, "kiln " KN_VERSION_STRING), "--version: %s", out_buf);
    CHECK(RUN("--help") == 0 && strstr(out_buf, "train"), "--help");
    static const char *cmds[] = {"train", "eval", "predict", "devices"};
    for (int i = 0; i < 4; i++)
        CHECK(RUN(cmds[i], "--help") == 0 && strstr(out_buf, "usage: kiln"), "%s --help", cmds[i]);
    CHECK(RUN("devices") == 0 && strstr(out_buf, "cpu") && strstr(out_buf, "default"), "devices: %s", out_buf);
    CHECK(RUN("devices", "--stats") == 0 && strstr(out_buf, "CPU fallbacks"), "devices --stats: %s", out_buf);
    CHECK_FAILS(RUN("bake"), "unknown command 'bake'");
    CHECK_FAILS(RUN("train", path_in("mixed.csv")), "--target");
    CHECK_FAILS(RUN("train", path_in("mixed.csv"), "--target", "label", "--epochs", "many"), "--epochs");
    CHECK_FAILS(RUN("train", path_in("mixed.csv"), "--target", "label", "--frobnicate"), "--frobnicate");
    CHECK_FAILS(RUN("train", path_in("mixed.csv"), "--target", "label", "--device", "cuda:7"), "cuda:7");
    CHECK_FAILS(RUN("eval", path_in("model.safetensors")), "needs a model file and a data file");
}

static void test_round_trip(void) {
    const char *model = path_in("model.safetensors");
    int rc = RUN("train", path_in("mixed.csv"), "--target", "label", "--out", model, "--json", "--seed", "3");
    CHECK(rc == 0, "train --json exit %d: %s", rc, err_buf);
    double acc = json_number(out_buf, "test", "accuracy");
    CHECK(acc >= 0.85, "mixed test accuracy %.3f: %s", acc, out_buf);
    CHECK(json_number(out_buf, "rows", "train") + json_number(out_buf, "rows", "validation") +
                  json_number(out_buf, "rows", "test") == 300, "rows add up: %s", out_buf);
    CHECK(json_number(out_buf, "rows", "test") == 60, "a 20%% stratified test split");
    CHECK(exists(model), "model written");
    /* Same seed, same split and same result. */
    static char first[sizeof out_buf];
    memcpy(first, out_buf, sizeof first);
    rc = RUN("train", path_in("mixed.csv"), "--target", "label", "--json", "--seed", "3");
    CHECK(rc == 0 && json_number(out_buf, "test", "accuracy") == acc, "reproducible from --seed: %s vs %s",
          out_buf, first);

    /* The file: PyTorch state_dict names and kiln's metadata. */
    kn_safetensors *f = kn_safetensors_open(model);
    CHECK(f != NULL, "model opens as safetensors");
    if (f) {
        bool emb = false, lin = false, bn = false;
        for (int i = 0; i < kn_safetensors_count(f); i++) {
            const char *nm = kn_safetensors_name(f, i);
            emb |= !strcmp(nm, "all_embeddings.0.weight");
            lin |= !strcmp(nm, "layers.0.weight");
            bn |= !strcmp(nm, "layers.2.running_mean");
        }
        CHECK(emb && lin && bn, "state_dict names");
        const char *meta = kn_safetensors_meta(f, "kiln_model");
        CHECK(meta && strstr(meta, "\"target\":\"label\"") && strstr(meta, "\"vocabulary\"") &&
                  strstr(meta, "\"mean\""), "kiln_model metadata: %s", meta ? meta : "(none)");
        CHECK(kn_safetensors_meta(f, "kiln_version") != NULL, "kiln_version metadata");
        kn_safetensors_close(f);
    }

    rc = RUN("eval", model, path_in("mixed.csv"), "--json");
    CHECK(rc == 0 && json_number(out_buf, "accuracy", NULL) >= 0.85, "eval --json: %s %s", out_buf, err_buf);
    rc = RUN("eval", model, path_in("mixed.csv"));
    CHECK(rc == 0 && strstr(out_buf, "confusion matrix") && strstr(out_buf, "macro avg") &&
              strstr(out_buf, "weighted avg"), "eval report: %s", out_buf);

    /* predict: unseen category 'purple' -> warning; one line per row; probabilities sum to 1. */
    make_mixed("new.csv", 40, true);
    rc = RUN("predict", model, path_in("new.csv"), "--out", path_in("preds.csv"));
    CHECK(rc == 0, "predict exit %d: %s", rc, err_buf);
    CHECK(strstr(err_buf, "not seen in training") != NULL, "unknown-category warning: %s", err_buf);
    static char preds[1 << 16];
    read_file(path_in("preds.csv"), preds, sizeof preds);
    CHECK(!strncmp(preds, "prediction,prob_no,prob_yes\n", 28), "predictions header: %.60s", preds);
    CHECK(lines(preds) == 41, "one line per row: %d", lines(preds));
    char *line = strchr(preds, '\n');
    int good = 0;
    while (line && line[1]) {
        char cls[16];
        double p0, p1;
        if (sscanf(line + 1, "%15[^,],%lf,%lf", cls, &p0, &p1) == 3 && fabs(p0 + p1 - 1) < 1e-4 &&
            (!strcmp(cls, "yes") == (p1 > p0)))
            good++;
        line = strchr(line + 1, '\n');
    }
    CHECK(good == 40, "rows with a class and probabilities summing to 1: %d", good);
    rc = RUN("predict", model, path_in("new.csv"));
    CHECK(rc == 0 && lines(out_buf) == 41, "predict to stdout");

    /* The tutorial recipe and type overrides. */
    rc = RUN("train", path_in("mixed.csv"), "--target", "label", "--recipe", "tutorial", "--epochs", "3", "--quiet");
    CHECK(rc == 0 && strstr(out_buf, "test accuracy"), "tutorial recipe: %s", err_buf);
    rc = RUN("train", path_in("mixed.csv"), "--target", "label", "--categorical", "x2", "--epochs", "3", "--json");
    CHECK(rc == 0, "--categorical override: %s", err_buf);
    rc = RUN("train", path_in("mixed.csv"), "--target", "label", "--batch-size", "full", "--layers", "16,8",
             "--dropout", "0", "--epochs", "3", "--quiet");
    CHECK(rc == 0, "options: %s", err_buf);
    /* The human report, with plain progress lines (stdout is not a terminal). */
    rc = RUN("train", path_in("mixed.csv"), "--target", "label", "--epochs", "4", "--out", path_in("m2.safetensors"));
    CHECK(rc == 0 && strstr(out_buf, "Using CPU device") && strstr(out_buf, "model on cpu") &&
              strstr(out_buf, "epoch 1/4 loss") && strstr(out_buf, "ETA") && strstr(out_buf, "confusion matrix") &&
              strstr(out_buf, "precision") && strstr(out_buf, "model saved to") && !strchr(out_buf, '\r'),
          "train report: %s", out_buf);
    /* Another delimiter, quoted fields holding it; the model remembers the delimiter. */
    write_text("semi.csv", "size;\"kind; of\";label\n1;\"a;b\";p\n2;c;q\n3;\"a;b\";p\n4;c;q\n5;\"a;b\";p\n"
                           "6;c;q\n7;\"a;b\";p\n8;c;q\n9;\"a;b\";p\n10;c;q\n");
    rc = RUN("train", path_in("semi.csv"), "--target", "label", "--delimiter", ";", "--test-split", "0", "--epochs",
             "30", "--out", path_in("semi.safetensors"), "--quiet");
    CHECK(rc == 0, "--delimiter ';': %s", err_buf);
    rc = RUN("predict", path_in("semi.safetensors"), path_in("semi.csv"));
    CHECK(rc == 0 && lines(out_buf) == 11 && strstr(out_buf, "prediction,prob_p,prob_q"), "predict ';' file: %s %s",
          out_buf, err_buf);
    /* A model column missing from the data. */
    write_text("nocolor.csv", "x1,x2,label\n1,2,yes\n");
    CHECK_FAILS(RUN("predict", model, path_in("nocolor.csv")), "column 'color' is missing");
}

static void test_bad_input(void) {
    char out[512];
    snprintf(out, sizeof out, "%s", path_in("bad.safetensors"));
#define TRAIN_FAILS(file, what, ...)                                                               \
    do {                                                                                           \
        CHECK_FAILS(RUN("train", path_in(file), "--target", "label", "--out", out, ##__VA_ARGS__), what); \
        CHECK(!exists(out), "no model left behind (%s)", file);                                    \
    } while (0)
    TRAIN_FAILS("missing.csv", "missing.csv: cannot open");
    write_text("empty.csv", "");
    TRAIN_FAILS("empty.csv", "empty.csv: empty file");
    write_text("header.csv", "a,b,label\n");
    TRAIN_FAILS("header.csv", "header.csv: no data rows");
    write_text("ragged.csv", "a,b,label\n1,2,x\n3,4\n5,6,y\n");
    TRAIN_FAILS("ragged.csv", "ragged.csv:3: row has 2 fields");
    write_text("one.csv", "a,b,label\n1,2,x\n3,4,x\n5,6,x\n");
    TRAIN_FAILS("one.csv", "only one class");
    CHECK_FAILS(RUN("train", path_in("mixed.csv"), "--target", "nope"), "no column 'nope'");
    write_text("text.csv", "a,b,label\n1,2,x\n3,oops,y\n5,6,x\n7,8,y\n");
    TRAIN_FAILS("text.csv", "text.csv:3: column 'b': 'oops' is not a number", "--numeric", "b");
    CHECK_FAILS(RUN("train", path_in("text.csv"), "--target", "label", "--numeric", "zz"), "'zz'");
    unsigned char junk[4096];
    uint64_t s = 7;
    for (size_t i = 0; i < sizeof junk; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        junk[i] = (unsigned char)(s >> 56);
    }
    write_file("junk.csv", junk, sizeof junk);
    CHECK_FAILS(RUN("train", path_in("junk.csv"), "--target", "label", "--out", out), "junk.csv");
    CHECK(!exists(out), "no model from junk");
    for (size_t i = 0; i < sizeof junk; i++) /* no NUL, no line breaks: not UTF-8 */
        if (junk[i] < 0x80) junk[i] = 0xC3 + (junk[i] & 1) * 0x30;
    write_file("junk2.csv", junk, sizeof junk);
    CHECK_FAILS(RUN("train", path_in("junk2.csv"), "--target", "label"), "junk2.csv");

    /* Model files: truncated, another program's safetensors, not safetensors at all. */
    static char model[1 << 20];
    size_t n = read_file(path_in("model.safetensors"), model, sizeof model);
    CHECK(n > 1000, "model read");
    write_file("cut.safetensors", model, n / 2);
    CHECK_FAILS(RUN("eval", path_in("cut.safetensors"), path_in("mixed.csv")), "cut.safetensors");
    write_file("cut2.safetensors", model, 100);
    CHECK_FAILS(RUN("predict", path_in("cut2.safetensors"), path_in("mixed.csv")), "cut2.safetensors: truncated");
    kn_scope sc = kn_scope_begin();
    kn_named_tensor t = {"weight", kn_ones(KN_SHAPE(2, 2), KN_F32, KN_CPU)};
    kn_meta meta = {"format", "pt"};
    CHECK(kn_safetensors_save(path_in("other.safetensors"), 1, &t, 1, &meta) == KN_OK, "other model saved");
    kn_scope_end(sc);
    CHECK_FAILS(RUN("predict", path_in("other.safetensors"), path_in("mixed.csv")), "other.safetensors: not a kiln model");
    CHECK_FAILS(RUN("eval", path_in("mixed.csv"), path_in("mixed.csv")), "mixed.csv: not a safetensors file");
    CHECK_FAILS(RUN("eval", path_in("nomodel.safetensors"), path_in("mixed.csv")), "nomodel.safetensors");
    /* predict into a directory that does not exist: nothing written. */
    CHECK_FAILS(RUN("predict", path_in("model.safetensors"), path_in("mixed.csv"), "--out", path_in("no/dir/p.csv")),
                "no/dir/p.csv");
    CHECK_FAILS(RUN("train", path_in("mixed.csv"), "--target", "label", "--out", path_in("no/dir/m.safetensors")),
                "no/dir/m.safetensors: cannot write: No such file or directory");
}

/* A save that fails (file size limit) leaves the existing model byte for byte. */
static void test_failed_save(void) {
    static char before[1 << 20], after[1 << 20];
    size_t n = read_file(path_in("model.safetensors"), before, sizeof before);
    const char *const args[] = {"train", path_in("mixed.csv"), "--target", "label", "--epochs", "2", "--quiet",
                                "--out", path_in("model.safetensors"), NULL};
    int rc = run_limited(8192, args);
    CHECK(rc != 0 && rc < 128, "a failed save exits non-zero: %d", rc);
    CHECK(strstr(err_buf, "model.safetensors") != NULL && lines(err_buf) == 1, "failed save message: %s", err_buf);
    size_t m = read_file(path_in("model.safetensors"), after, sizeof after);
    CHECK(m == n && !memcmp(before, after, n), "the existing model is intact");
    DIR *d = opendir(dir);
    int tmp = 0;
    for (struct dirent *e; d && (e = readdir(d));) tmp += strstr(e->d_name, ".tmp") != NULL;
    if (d) closedir(d);
    CHECK(tmp == 0, "no temporary file left behind");
    CHECK(RUN("eval", path_in("model.safetensors"), path_in("mixed.csv"), "--quiet") == 0, "the model still loads");
}

static bool same_file(const char *path, const char *data, size_t n) {
    static char buf[1 << 20];
    size_t m = read_file(path, buf, sizeof buf);
    return m == n && !memcmp(buf, data, n);
}

/* A copy of model.safetensors whose kiln_model metadata has `from` replaced
 * by `to` (once), and whose tensor `nan_in` (when given) holds a NaN. */
static void craft_model(const char *name, const char *from, const char *to, const char *nan_in) {
    kn_scope sc = kn_scope_begin();
    kn_safetensors *f = kn_safetensors_open(path_in("model.safetensors"));
    CHECK(f != NULL, "model opens: %s", kn_error());
    if (!f) return;
    int n = kn_safetensors_count(f);
    kn_named_tensor *t = calloc((size_t)n, sizeof *t);
    for (int i = 0; i < n; i++) {
        t[i].name = kn_safetensors_name(f, i);
        t[i].tensor = kn_safetensors_get(f, t[i].name, KN_CPU);
        if (nan_in && !strcmp(t[i].name, nan_in)) ((float *)kn__data(t[i].tensor))[0] = NAN;
    }
    const char *meta = kn_safetensors_meta(f, "kiln_model");
    const char *at = from ? strstr(meta, from) : NULL;
    CHECK(!from || at, "metadata holds %s", from);
    size_t len = strlen(meta) + (to ? strlen(to) : 0) + 1;
    char *m2 = malloc(len);
    if (at) snprintf(m2, len, "%.*s%s%s", (int)(at - meta), meta, to, at + strlen(from));
    else snprintf(m2, len, "%s", meta);
    kn_meta md[3] = {{"format", "pt"}, {"kiln_version", KN_VERSION_STRING}, {"kiln_model", m2}};
    CHECK(kn_safetensors_save(path_in(name), n, t, 3, md) == KN_OK, "crafted %s: %s", name, kn_error());
    free(m2);
    free(t);
    kn_safetensors_close(f);
    kn_scope_end(sc);
}

/* The classes of data loss and silent failure: outputs that would replace
 * their inputs, checks after the work, lost stdout, repeated options, cut
 * values, statistics near the float limits, model files that ask for more
 * than they hold, duplicate names, non-finite weights. */
static void test_robust(void) {
    static char model[1 << 20], csv[1 << 16];
    const char *mp = path_in("model.safetensors"), *cp = path_in("mixed.csv");
    size_t nm = read_file(mp, model, sizeof model), nc = read_file(cp, csv, sizeof csv);
    CHECK(nm > 1000 && nc > 1000, "fixtures read");

    /* An output that is an input, directly or through a link, is refused first. */
    CHECK_FAILS(RUN("predict", mp, cp, "--out", mp), "that is the input");
    CHECK_FAILS(RUN("predict", mp, cp, "--out", cp), "that is the input");
    CHECK(symlink(mp, path_in("link.safetensors")) == 0, "symlink");
    CHECK_FAILS(RUN("predict", mp, cp, "--out", path_in("link.safetensors")), "that is the input");
    CHECK_FAILS(RUN("train", cp, "--target", "label", "--out", cp), "that is the input");
    CHECK(same_file(mp, model, nm) && same_file(cp, csv, nc), "inputs unchanged");
    /* Through a symlink to another file: the target is written, the link stays. */
    write_text("target.csv", "old\n");
    CHECK(symlink(path_in("target.csv"), path_in("preds-link.csv")) == 0, "symlink");
    CHECK(RUN("predict", mp, cp, "--out", path_in("preds-link.csv"), "--quiet") == 0, "predict via link: %s", err_buf);
    struct stat st;
    CHECK(lstat(path_in("preds-link.csv"), &st) == 0 && S_ISLNK(st.st_mode), "the link is still a link");
    static char got[1 << 16];
    CHECK(read_file(path_in("target.csv"), got, sizeof got) > 100 && !strncmp(got, "prediction,", 11),
          "the link's target holds the predictions");
    /* Unwritable outputs are found before training: nothing trained, one line. */
    const char *bad_outs[] = {"", path_in("no/such/dir/m.safetensors"), path_in("mixed.csv/x")};
    for (int k = 0; k < 3; k++) {
        CHECK_FAILS(RUN("train", cp, "--target", "label", "--out", bad_outs[k]), "--out");
        CHECK(!strstr(out_buf, "accuracy"), "no training before failing on --out '%s'", bad_outs[k]);
    }
    char long_name[400];
    memset(long_name, 'n', 300);
    snprintf(long_name + 300, sizeof long_name - 300, ".safetensors");
    CHECK_FAILS(RUN("train", cp, "--target", "label", "--out", path_in(long_name)), "name too long");
    CHECK(!strstr(out_buf, "accuracy"), "no training before failing on a long --out");

    /* A report that cannot be written is a failure. */
    stdout_to = "/dev/full";
    CHECK_FAILS(RUN("eval", mp, cp), "writing to stdout failed");
    CHECK_FAILS(RUN("train", cp, "--target", "label", "--epochs", "2"), "writing to stdout failed");
    stdout_to = NULL;

    /* Options given twice, and a device mistake, are command-line errors (2). */
    int rc = RUN("train", cp, "--target", "label", "--target", "x1");
    CHECK(rc == 2 && strstr(err_buf, "--target is given twice"), "repeated option: %d %s", rc, err_buf);
    rc = RUN("predict", mp, cp, "--out=a.csv", "--out", "b.csv");
    CHECK(rc == 2 && strstr(err_buf, "--out is given twice"), "repeated --out: %d %s", rc, err_buf);
    rc = RUN("eval", mp, cp, "--device", "nonsense");
    CHECK(rc == 2 && lines(err_buf) == 1, "a bad --device exits 2: %d %s", rc, err_buf);
    rc = RUN("train", cp, "--target", "label", "--device", "nonsense");
    CHECK(rc == 2 && lines(err_buf) == 1, "a bad --device exits 2 for train: %d %s", rc, err_buf);

    /* Long, padded values stay whole: classes that differ after 300 bytes stay two. */
    static char text[1 << 16], pad[301];
    memset(pad, 'v', 300);
    size_t n = (size_t)snprintf(text, sizeof text, "x,label\n");
    for (int i = 0; i < 200; i++)
        n += (size_t)snprintf(text + n, sizeof text - n, "%d,  %s%c  \n", i % 2 ? 5 + i % 7 : -5 - i % 7, pad,
                              i % 2 ? 'B' : 'A');
    write_file("long.csv", text, n);
    CHECK(RUN("train", path_in("long.csv"), "--target", "label", "--epochs", "30", "--recipe", "tutorial", "--out",
              path_in("long.safetensors"), "--quiet") == 0, "train on long labels: %s", err_buf);
    CHECK(RUN("predict", path_in("long.safetensors"), path_in("long.csv"), "--quiet") == 0, "predict: %s", err_buf);
    char want_a[320], want_b[320];
    snprintf(want_a, sizeof want_a, "prob_%sA", pad);
    snprintf(want_b, sizeof want_b, "prob_%sB", pad);
    CHECK(strstr(out_buf, want_a) && strstr(out_buf, want_b), "two whole class names in the predictions");

    /* Values near the limits of a double: finite statistics, a model that learns. */
    n = (size_t)snprintf(text, sizeof text, "x,c,label\n");
    for (int i = 0; i < 300; i++)
        n += (size_t)snprintf(text + n, sizeof text - n, "%.6e,7,%s\n", (i % 2 ? 1 : -1) * (1 + i % 5) * 1.5e307,
                              i % 2 ? "pos" : "neg");
    write_file("huge.csv", text, n);
    rc = RUN("train", path_in("huge.csv"), "--target", "label", "--json", "--seed", "3");
    double acc = json_number(out_buf, "test", "accuracy");
    CHECK(rc == 0 && acc >= 0.9, "values near DBL_MAX: accuracy %.3f (%s)", acc, err_buf);
    CHECK(strstr(err_buf, "column 'c' has one value in every training row"), "constant column warned: %s", err_buf);

    /* Model files: a network larger than the file, duplicate names, NaN weights. */
    craft_model("huge.safetensors", "\"embedding_dim\":", "\"embedding_dim\":1000000, \"x\":", NULL);
    CHECK_FAILS(RUN("eval", path_in("huge.safetensors"), cp), "more than the file's");
    craft_model("dupclass.safetensors", "\"classes\":[\"no\",\"yes\"]", "\"classes\":[\"no\",\"no\"]", NULL);
    CHECK_FAILS(RUN("eval", path_in("dupclass.safetensors"), cp), "class 'no' appears twice");
    craft_model("dupvocab.safetensors", "\"blue\",", "\"green\",", NULL);
    CHECK_FAILS(RUN("predict", path_in("dupvocab.safetensors"), cp), "appears twice in the vocabulary");
    craft_model("nan.safetensors", NULL, NULL, "layers.0.weight");
    CHECK_FAILS(RUN("predict", path_in("nan.safetensors"), cp), "'layers.0.weight' holds 1 NaN or infinite");

    /* 100,000 columns, one name twice: found (by a hash, not a quadratic scan). */
    size_t cap = 100000 * 12 + 64, len = 0; /* "c99999," and "1," per column */
    char *wide = malloc(cap);
    for (int j = 0; j < 100000; j++) len += (size_t)snprintf(wide + len, cap - len, "%sc%d", j ? "," : "", j == 99999 ? 7 : j);
    len += (size_t)snprintf(wide + len, cap - len, "\n");
    for (int j = 0; j < 100000; j++) len += (size_t)snprintf(wide + len, cap - len, "%s1", j ? "," : "");
    len += (size_t)snprintf(wide + len, cap - len, "\n");
    write_file("wide.csv", wide, len);
    free(wide);
    CHECK_FAILS(RUN("train", path_in("wide.csv"), "--target", "c0"), "column name 'c7' appears twice (columns 8 and 100000)");
}

/* The real data: car through the default recipe. */
static void test_car(void) {
    int rc = RUN("train", KILN_SOURCE_DIR "/data/car/car.csv", "--target", "class", "--json", "--seed", "1");
    double acc = json_number(out_buf, "test", "accuracy");
    CHECK(rc == 0 && acc >= 0.95, "car default recipe accuracy %.4f (%s)", acc, err_buf);
}

/* --devices: data parallel over the devices named; its mistakes fail
 * before any work. Two ranks need two devices: the CPU and Vulkan's (lavapipe
 * in CI); without Vulkan that part is skipped and not counted. */
static void test_devices(void) {
    const char *csv = path_in("mixed.csv");
    CHECK_FAILS(RUN("train", csv, "--target", "label", "--devices", "cpu,cpu"), "device cpu is named twice (ranks 0 and 1)");
    CHECK_FAILS(RUN("train", csv, "--target", "label", "--devices", "cpu,cuda:7"), "cuda:7");
    CHECK_FAILS(RUN("train", csv, "--target", "label", "--devices", "cpu,,cpu"), "is not a list of up to 64 device names");
    CHECK_FAILS(RUN("train", csv, "--target", "label", "--devices", "cpu", "--device", "cpu"), "--devices: not with --device");
    CHECK_FAILS(RUN("train", csv, "--target", "label", "--devices", "cpu", "--cv", "3"), "--devices: not with --cv");
    int rc = RUN("train", csv, "--target", "label", "--devices", "cpu", "--epochs", "2");
    CHECK(rc == 0 && strstr(out_buf, "Using 1 device: cpu (data parallel, gradients averaged through host)"),
          "one rank: %s %s", out_buf, err_buf);
    RUN("devices");
    if (!strstr(out_buf, "vulkan:0")) {
        printf("SKIP --devices cpu,vulkan:0 (not counted): no Vulkan device\n");
        return;
    }
    rc = RUN("train", csv, "--target", "label", "--devices", "cpu,vulkan:0", "--epochs", "6", "--seed", "3", "--json");
    double acc = json_number(out_buf, "test", "accuracy");
    CHECK(rc == 0 && acc >= 0.85 && strstr(out_buf, "\"devices\":[\"cpu\",\"vulkan:0\"],\"transport\":\"host\""),
          "two ranks, cpu and vulkan:0: accuracy %.3f (%s %s)", acc, out_buf, err_buf);
    /* The ranks took the same steps: their weights agree to rounding. */
    double spread = json_number(out_buf, "replica_spread", NULL);
    CHECK(spread >= 0 && spread <= 1e-4, "the replicas' weights agree after training: %g", spread);
    /* Stopped after 2 epochs and resumed to 4: every rank's optimizer takes
     * the checkpoint's state, so the model is the one of the run that was
     * not stopped, byte for byte. */
    const char *ref = path_in("dp_ref.safetensors"), *res = path_in("dp_res.safetensors"), *ck = path_in("dp_ck");
    rc = RUN("train", csv, "--target", "label", "--devices", "cpu,vulkan:0", "--epochs", "4", "--seed", "3", "--out", ref,
             "--quiet");
    CHECK(rc == 0, "two ranks, 4 epochs: %s", err_buf);
    rc = RUN("train", csv, "--target", "label", "--devices", "cpu,vulkan:0", "--epochs", "2", "--seed", "3",
             "--checkpoint", ck, "--quiet");
    CHECK(rc == 0, "two ranks, 2 epochs and a checkpoint: %s", err_buf);
    rc = RUN("train", csv, "--target", "label", "--devices", "cpu,vulkan:0", "--epochs", "4", "--seed", "3", "--resume", ck,
             "--out", res, "--quiet");
    CHECK(rc == 0 && same_bytes(ref, res), "two ranks stopped and resumed: the same model file, byte for byte (%s)",
          err_buf);
}

/* A numeric target with many values: regression, chosen by itself, with
 * RMSE/MAE/R^2 in the report and values in predict; the task can be forced
 * either way, and the mistakes fail clearly. */
static void test_regression(void) {
    static char buf[1 << 16];
    size_t n = (size_t)snprintf(buf, sizeof buf, "x1,color,x2,price\n");
    uint64_t s = 99;
    for (int i = 0; i < 400; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        double x1 = (double)((s >> 33) % 1000) / 100.0 - 5, x2 = (double)((s >> 13) % 100) / 10.0;
        int c = (int)((s >> 20) % 3);
        double noise = (double)((s >> 40) % 100) / 100.0 - 0.5;
        double price = 50 + 6 * x1 - 2 * x2 + (c == 0 ? 10 : c == 1 ? -5 : 0) + noise;
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%.2f,%s,%.1f,%.2f\n", x1,
                              c == 0 ? "red" : c == 1 ? "green" : "blue", x2, price);
    }
    write_file("reg.csv", buf, n);
    const char *csv = path_in("reg.csv"), *model = path_in("reg.safetensors"), *preds = path_in("reg_pred.csv");
    int rc = RUN("train", csv, "--target", "price", "--json", "--out", model);
    double r2 = json_number(out_buf, "test", "r2"), rmse = json_number(out_buf, "test", "rmse");
    CHECK(rc == 0 && strstr(out_buf, "\"task\":\"regression\"") && r2 > 0.95 && rmse > 0 && rmse < 3,
          "regression inferred and learned: R^2 %.4f, RMSE %.4f (%s)", r2, rmse, err_buf);
    rc = RUN("train", csv, "--target", "price", "--epochs", "5");
    CHECK(rc == 0 && strstr(out_buf, "task: regression") && strstr(out_buf, "RMSE") && strstr(out_buf, "residuals"),
          "the text report: %s", out_buf);
    rc = RUN("eval", model, csv, "--json");
    CHECK(rc == 0 && json_number(out_buf, "r2", NULL) > 0.95, "eval of a regression model: %s %s", out_buf, err_buf);
    rc = RUN("predict", model, csv, "--out", preds);
    static char p[1 << 16];
    read_file(preds, p, sizeof p);
    double first = NAN;
    CHECK(rc == 0 && !strncmp(p, "prediction\n", 11) && sscanf(p + 11, "%lf", &first) == 1 && lines(p) == 401,
          "predict writes one value per row: %.60s", p);
    /* The first data row's price: its last field. */
    const char *row = strchr(buf, '\n') + 1, *end = strchr(row, '\n'), *last = row;
    for (const char *q = row; q < end; q++)
        if (*q == ',') last = q + 1;
    double want = atof(last);
    CHECK(fabs(first - want) < 3, "the predicted value is in the target's units: %g for %g", first, want);
    /* Forced tasks, and what they refuse. */
    rc = RUN("train", csv, "--target", "price", "--task", "classification", "--epochs", "2", "--quiet");
    CHECK(rc == 0 && strstr(err_buf, "looks like a quantity"), "forced classification warns: %s", err_buf);
    CHECK_FAILS(RUN("train", KILN_SOURCE_DIR "/data/car/car.csv", "--target", "class", "--task", "regression"),
                "not a number");
    int rc2 = RUN("train", csv, "--target", "price", "--class-weight", "balanced");
    CHECK_FAILS(rc2, "no classes to weigh");
    CHECK(rc2 == 2, "a command-line mistake exits 2 (%d)", rc2);
    CHECK_FAILS(RUN("train", csv, "--target", "price", "--task", "ordinal"), "--task");

    /* kiln info: what the saved model is, in text and JSON; refusals. */
    rc = RUN("info", model);
    CHECK(rc == 0 && strstr(out_buf, "regression (mean") && strstr(out_buf, "color") && strstr(out_buf, "parameters"),
          "kiln info: %s %s", out_buf, err_buf);
    rc = RUN("info", model, "--json");
    kn__json_doc *d = rc == 0 ? kn__json_parse(out_buf, strlen(out_buf), NULL, "info --json") : NULL;
    const kn__json *sc = d ? kn__json_get(d, kn__json_root(d), "schema") : NULL;
    const kn__json *task = sc ? kn__json_get(d, sc, "task") : NULL;
    CHECK(task && task->type == KN__JSON_STRING && !strcmp(task->str, "regression") && json_number(out_buf, "parameters", NULL) > 0,
          "kiln info --json: the schema with its task, and the parameter count: %s", out_buf);
    kn__json_free(d);
    CHECK_FAILS(RUN("info", csv), "reg.csv");
    CHECK_FAILS(RUN("info"), "needs a model file");
}

int main(void) {
    kt_cli_begin();
    make_mixed("mixed.csv", 300, false);
    test_basics();
    test_round_trip();
    test_bad_input();
    test_failed_save();
    test_robust();
    test_car();
    test_devices();
    test_regression();
    return kt_cli_end("cli");
}
