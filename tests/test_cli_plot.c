/* `kiln train --plot FILE` and the --json history, run as a user would: what
 * is refused before any training (a format other than .png/.svg, a directory,
 * a place that cannot take the file, one of the run's own files), a picture
 * that cannot be written leaves the old file as it was, and the history has
 * one entry per epoch, with null where a run has no validation. The pictures'
 * contents are decoded and checked by test_plot.py. */
#include "kt_cli.h"

#include <dirent.h>

/* 300 rows: numeric x, categorical color, a label decided by both; deterministic. */
static void make_data(const char *name) {
    static char buf[1 << 15];
    size_t n = (size_t)snprintf(buf, sizeof buf, "x,color,label\n");
    static const char *colors[] = {"red", "green", "blue"};
    uint64_t s = 4242;
    for (int i = 0; i < 300; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        double x = (double)((s >> 33) % 1000) / 100.0 - 5;
        int c = (int)((s >> 20) % 3);
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%.2f,%s,%s\n", x, colors[c],
                              x + (c == 0 ? 2 : c == 1 ? -2 : 0) > 0 ? "yes" : "no");
    }
    write_file(name, buf, n);
}

static int temporaries(void) {
    DIR *d = opendir(dir);
    int tmp = 0;
    for (struct dirent *e; d && (e = readdir(d));) tmp += strstr(e->d_name, ".tmp") != NULL;
    if (d) closedir(d);
    return tmp;
}

/* Refused in one line, before any work: nothing on stdout (not even the
 * device line), so no training ran. */
#define REFUSED(what, ...)                                                                          \
    do {                                                                                           \
        CHECK_FAILS(RUN("train", path_in("data.csv"), "--target", "label", __VA_ARGS__), what);   \
        CHECK(out_buf[0] == 0, "refused before training (%s): stdout %s", what, out_buf);          \
    } while (0)

static void test_refused(void) {
    int rc = RUN("train", path_in("data.csv"), "--target", "label", "--plot", path_in("curves.jpg"));
    CHECK(rc == 2, "--plot x.jpg is a command-line mistake: exit %d", rc);
    REFUSED(".png or .svg", "--plot", path_in("curves.jpg"));
    REFUSED("curves.jpg", "--plot", path_in("curves.jpg"));
    REFUSED(".png or .svg", "--plot", path_in("curves"));
    REFUSED(".png or .svg", "--plot", path_in("curves.png.txt"));
    REFUSED(".png or .svg", "--plot", path_in("dir.png/curves"));
    REFUSED("--plot", "--plot");
    /* A directory of a picture's name, and a directory that is not there. */
    CHECK(mkdir(path_in("pics.png"), 0755) == 0, "mkdir pics.png");
    REFUSED("--plot", "--plot", path_in("pics.png"));
    REFUSED("pics.png", "--plot", path_in("pics.png"));
    REFUSED("no/dir/c.svg", "--plot", path_in("no/dir/c.svg"));
    /* The run's own files: the data, the model, the checkpoint. */
    write_text("data.svg", "x,color,label\n");
    CHECK_FAILS(RUN("train", path_in("data.svg"), "--target", "label", "--plot", path_in("data.svg")),
                "that is the input");
    CHECK(out_buf[0] == 0, "the data file as --plot: refused before training");
    REFUSED("--plot", "--plot", path_in("both.png"), "--out", path_in("both.png"));
    REFUSED("--plot", "--cv", "3", "--plot", path_in("cv.svg"));
    CHECK(!exists(path_in("curves.jpg")) && !exists(path_in("both.png")) && !exists(path_in("cv.svg")),
          "nothing written by a refused run");
}

static void test_written(void) {
    /* The extension in any case; the message says where the picture went. */
    int rc = RUN("train", path_in("data.csv"), "--target", "label", "--epochs", "3", "--plot", path_in("c.PNG"));
    CHECK(rc == 0 && strstr(out_buf, "training curves drawn in") && strstr(out_buf, "c.PNG"), "--plot c.PNG: %s %s",
          out_buf, err_buf);
    static char buf[1 << 22];
    size_t n = read_file(path_in("c.PNG"), buf, sizeof buf);
    CHECK(n > 1000 && !memcmp(buf, "\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16), "a PNG file (%zu bytes)", n);
    rc = RUN("train", path_in("data.csv"), "--target", "label", "--epochs", "3", "--plot", path_in("c.svg"), "--quiet");
    n = read_file(path_in("c.svg"), buf, sizeof buf);
    CHECK(rc == 0 && n > 1000 && !strncmp(buf, "<?xml", 5) && strstr(buf, "<svg") && strstr(buf, "</svg>\n"),
          "an SVG file: %.60s", buf);
    CHECK(!strstr(out_buf, "training curves drawn"), "--quiet: no word about the picture");

    /* A write that fails (file size limit) leaves the old picture whole, and no temporary. */
    static char before[1 << 22];
    size_t m = read_file(path_in("c.svg"), before, sizeof before);
    const char *const args[] = {"train", path_in("data.csv"), "--target", "label", "--epochs", "3", "--quiet",
                                "--plot", path_in("c.svg"), NULL};
    rc = run_limited(4096, args);
    CHECK(rc != 0 && rc < 128 && strstr(err_buf, "c.svg") && lines(err_buf) == 1, "a failed write: exit %d, %s", rc,
          err_buf);
    n = read_file(path_in("c.svg"), buf, sizeof buf);
    CHECK(n == m && !memcmp(buf, before, n), "the old picture is intact");
    CHECK(temporaries() == 0, "no temporary file left behind");
}

/* The history in --json: one entry per epoch; a run without validation rows
 * has null there, and a classifier has no RMSE, a regression no accuracy. */
static void test_history(void) {
    int rc = RUN("train", path_in("data.csv"), "--target", "label", "--recipe", "tutorial", "--epochs", "4", "--json");
    CHECK(rc == 0, "tutorial --json: %s", err_buf);
    kn__json_doc *d = kn__json_parse(out_buf, strlen(out_buf), NULL, "kiln --json output");
    CHECK(d != NULL, "one JSON object: %s", out_buf);
    if (!d) return;
    const kn__json *r = kn__json_root(d), *h = kn__json_get(d, r, "history");
    const kn__json *from = kn__json_get(d, r, "history_from");
    CHECK(from && from->type == KN__JSON_NUMBER && from->number == 1, "history_from 1");
    CHECK(h && h->type == KN__JSON_ARRAY && h->count == 4 && json_number(out_buf, "training", "epochs") == 4,
          "4 entries for 4 epochs");
    int e = 0;
    for (const kn__json *x = h ? kn__json_first(d, h) : NULL; x; x = kn__json_next(d, x)) {
        const kn__json *ep = kn__json_get(d, x, "epoch"), *tl = kn__json_get(d, x, "train_loss");
        const kn__json *vl = kn__json_get(d, x, "val_loss"), *lr = kn__json_get(d, x, "lr");
        e++;
        CHECK(ep && ep->type == KN__JSON_NUMBER && ep->number == e, "entry %d: its epoch", e);
        CHECK(tl && tl->type == KN__JSON_NUMBER && isfinite(tl->number) && tl->number > 0, "entry %d: train loss", e);
        CHECK(vl && vl->type == KN__JSON_NULL, "entry %d: val_loss null without validation rows", e);
        CHECK(lr && lr->type == KN__JSON_NUMBER && lr->number == 0.001, "entry %d: the tutorial's lr 0.001", e);
        CHECK(!kn__json_get(d, x, "val_rmse") && kn__json_get(d, x, "train_accuracy"), "entry %d: classifier keys", e);
    }
    kn__json_free(d);
}

int main(void) {
    kt_cli_begin();
    make_data("data.csv");
    test_refused();
    test_written();
    test_history();
    return kt_cli_end("cli_plot");
}
