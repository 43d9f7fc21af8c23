/* kiln command line: `kiln train --checkpoint DIR` and `--resume DIR`.
 *
 * DIR/checkpoint.safetensors is one kn_checkpoint: the model, the optimizer,
 * the global generator (dropout), the best weights so far as extras, and the
 * training loop's own state (epoch, shuffle state, plateau counters, best
 * validation loss) as metadata. It is replaced atomically, so after a crash
 * or a kill the newest complete checkpoint is always there. Beside the state,
 * the file records the data's schema and the options that shape training:
 * a resume with other data or options is refused (only --epochs may change). */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#define CKPT_FILE "checkpoint.safetensors"

char *ckpt_path(const char *opt, const char *dir, bool create) {
    if (!dir || !*dir) return cli_error("%s needs a directory", opt), NULL;
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (errno != ENOENT || !create) return cli_error("%s %s: cannot use the directory: %s", opt, dir, strerror(errno)), NULL;
        if (mkdir(dir, 0777) != 0) return cli_error("%s %s: cannot create the directory: %s", opt, dir, strerror(errno)), NULL;
    } else if (!S_ISDIR(st.st_mode)) {
        return cli_error("%s %s: not a directory", opt, dir), NULL;
    }
    size_t n = strlen(dir) + sizeof CKPT_FILE + 1;
    char *p = cli_alloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, CKPT_FILE);
    return p;
}

char *ckpt_fingerprint(const train_opts *o, const char *class_weight) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return NULL;
    /* %.17g: the same double prints the same text, a different one differs. */
    fprintf(f, "{\"recipe\":\"%s\",\"lr\":%.17g,\"weight_decay\":%.17g,\"batch_size\":%lld,\"patience\":%d,"
               "\"val_split\":%.17g,\"test_split\":%.17g,\"seed\":%" PRIu64 ",\"class_weight\":\"%s\",\"adamw\":%s}",
            o->recipe, o->lr, o->weight_decay, (long long)o->batch_size, o->patience, o->val_split, o->test_split,
            o->seed, class_weight, o->adamw ? "true" : "false");
    bool failed = ferror(f) != 0;
    if (fclose(f) != 0 || failed) {
        free(text);
        return NULL;
    }
    return text;
}

/* The extras: the row order ("order"), the best-weights snapshot, named
 * "best.<state dict name>", and the per-epoch history ("history", when any). */
static kn_named_tensor *extras(kn_module *m, kn_tensor *order, kn_tensor *history, kn_tensor *const *best,
                               int n_best, int *n) {
    *n = 0;
    int count = 0;
    const kn_named_tensor *sd = best ? kn_module_state_dict(m, &count) : NULL;
    if (best && (!sd || count != n_best)) return NULL;
    kn_named_tensor *x = cli_alloc(((size_t)count + 2) * sizeof *x);
    if (!x) return NULL;
    x[0] = (kn_named_tensor){cli_strdup("order"), order};
    for (int i = 0; i < count; i++) {
        size_t len = strlen(sd[i].name) + 6;
        char *name = cli_alloc(len);
        if (name) snprintf(name, len, "best.%s", sd[i].name);
        x[i + 1] = (kn_named_tensor){name, best[i]};
    }
    *n = count + 1;
    if (history) x[(*n)++] = (kn_named_tensor){cli_strdup("history"), history};
    for (int i = 0; i < *n; i++)
        if (!x[i].name) {
            for (int j = 0; j < *n; j++) free((char *)x[j].name);
            free(x);
            *n = 0;
            return NULL;
        }
    return x;
}

static void extras_free(kn_named_tensor *x, int n) {
    for (int i = 0; x && i < n; i++) free((char *)x[i].name);
    free(x);
}

bool ckpt_save(const char *path, kn_module *m, kn_optim *opt, kn_tensor *const *best, int n_best,
               kn_tensor *order, const train_state *ts, const train_opts *o) {
    const train_history *h = ts->history;
    kn_scope hs = kn_scope_begin();
    kn_tensor *hist = h && h->n ? kn_from_data(h->row, KN_F64, KN_SHAPE(h->n, HIST_COLS), KN_CPU) : NULL;
    int n_x = 0;
    kn_named_tensor *x = !h || !h->n || hist ? extras(m, order, hist, best, n_best, &n_x) : NULL;
    if (!x) {
        kn_scope_end(hs);
        return cli_error("%s: out of memory writing the checkpoint", path), false;
    }
    char state[1024]; /* numbers only; -1 stands for "none" (losses are never negative) */
    snprintf(state, sizeof state,
             "{\"epoch\":%d,\"best_epoch\":%d,\"best_loss\":%.17g,\"has_best\":%s,\"since_best\":%d,\"since_lr\":%d,"
             "\"lr\":%.17g,\"shuffle\":\"%" PRIu64 "\",\"rows_seen\":%" PRId64 ",\"train_time\":%.17g,\"stopped\":%s,"
             "\"train_loss\":%.17g,\"val_loss\":%.17g,\"val_accuracy\":%.17g}",
             ts->epoch, ts->best_epoch, isfinite(ts->best_loss) ? ts->best_loss : -1, best ? "true" : "false",
             ts->since_best, ts->since_lr, ts->lr, ts->shuffle, ts->rows_seen, ts->train_time,
             ts->stopped ? "true" : "false", isfinite(ts->train_loss) ? ts->train_loss : -1,
             isfinite(ts->val_loss) ? ts->val_loss : -1, isfinite(ts->val_acc) ? ts->val_acc : -1);
    kn_meta meta[] = {{"kiln_version", KN_VERSION_STRING}, {"kiln_train", state},
                      {"kiln_model", o->schema_json}, {"kiln_options", o->fingerprint}};
    kn_checkpoint c = {m, opt, kn_default_generator(), n_x, x, 4, meta};
    kn_status s = kn_checkpoint_save(path, &c);
    extras_free(x, n_x);
    kn_scope_end(hs);
    if (s != KN_OK) return cli_error("saving the checkpoint: %s", kn_error()), false;
    return true;
}

/* A scalar member's value as text, for messages. */
static void json_value_text(const kn_json *v, char *buf, size_t n) {
    if (!v) snprintf(buf, n, "(none)");
    else if (kn_json_type_of(v) == KN_JSON_NUMBER) snprintf(buf, n, "%g", kn_json_number(v));
    else if (kn_json_type_of(v) == KN_JSON_STRING) snprintf(buf, n, "%s", kn_json_str(v, NULL));
    else if (kn_json_type_of(v) == KN_JSON_BOOL) snprintf(buf, n, "%s", kn_json_bool(v) ? "true" : "false");
    else snprintf(buf, n, "(%s)", kn_json_type_name(kn_json_type_of(v)));
}

static bool get_num(const kn_json_doc *d, const kn_json *o, const char *k, double *v) {
    const kn_json *j = kn_json_get(d, o, k);
    if (!j || kn_json_type_of(j) != KN_JSON_NUMBER) return false;
    *v = kn_json_number(j);
    return true;
}

static bool get_int(const kn_json_doc *d, const kn_json *o, const char *k, int lo, int *v) {
    double x;
    if (!get_num(d, o, k, &x) || x < lo || x > INT_MAX || x != (double)(int)x) return false;
    *v = (int)x;
    return true;
}

static bool get_bool(const kn_json_doc *d, const kn_json *o, const char *k, bool *v) {
    const kn_json *j = kn_json_get(d, o, k);
    if (!j || kn_json_type_of(j) != KN_JSON_BOOL) return false;
    *v = kn_json_bool(j);
    return true;
}

static bool parse_state(const char *path, const char *text, train_state *ts) {
    kn_json_doc *d = text ? kn_json_parse(text, strlen(text), path) : NULL;
    const kn_json *r = d ? kn_json_root(d) : NULL;
    const kn_json *sh = r ? kn_json_get(d, r, "shuffle") : NULL;
    double rows = 0;
    bool ok = r && get_int(d, r, "epoch", 0, &ts->epoch) && get_int(d, r, "best_epoch", 0, &ts->best_epoch) &&
              get_num(d, r, "best_loss", &ts->best_loss) && get_bool(d, r, "has_best", &ts->has_best) &&
              get_int(d, r, "since_best", 0, &ts->since_best) && get_int(d, r, "since_lr", 0, &ts->since_lr) &&
              get_num(d, r, "lr", &ts->lr) && get_num(d, r, "rows_seen", &rows) &&
              get_num(d, r, "train_time", &ts->train_time) && get_bool(d, r, "stopped", &ts->stopped) && sh &&
              kn_json_type_of(sh) == KN_JSON_STRING && ts->lr > 0 && rows >= 0;
    if (ok) {
        char *end;
        const char *s = kn_json_str(sh, NULL);
        errno = 0;
        ts->shuffle = strtoull(s, &end, 10);
        ok = *s >= '0' && *s <= '9' && !*end && errno == 0;
        ts->rows_seen = (int64_t)rows;
        if (ts->best_loss < 0) ts->best_loss = INFINITY; /* none yet */
    }
    kn_json_free(d);
    if (!ok && !text) cli_error("--resume: %s is not a checkpoint of kiln train (no training state)", path);
    else if (!ok) cli_error("--resume: %s: the checkpoint's training state is malformed", path);
    return ok;
}

/* One line: "... was made with --lr 0.003 (this run: 0.01), --seed 3 (this run: 4); ...". */
static void report_option_change(const char *path, const char *was, const char *now) {
    static const char *const keys[] = {"recipe", "lr", "weight_decay", "batch_size", "patience", "val_split",
                                       "test_split", "seed", "class_weight", "adamw"};
    kn_json_doc *a = kn_json_parse(was, strlen(was), path), *b = kn_json_parse(now, strlen(now), "options");
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    int said = 0;
    for (size_t k = 0; f && a && b && k < sizeof keys / sizeof *keys; k++) {
        char x[64], y[64];
        json_value_text(kn_json_get(a, kn_json_root(a), keys[k]), x, sizeof x);
        json_value_text(kn_json_get(b, kn_json_root(b), keys[k]), y, sizeof y);
        if (strcmp(x, y) == 0) continue;
        char opt[64];
        snprintf(opt, sizeof opt, "--%s", keys[k]);
        for (char *c = opt; *c; c++) *c = *c == '_' ? '-' : *c; /* val_split -> --val-split */
        if (!strcmp(keys[k], "adamw")) snprintf(opt, sizeof opt, "AdamW"); /* set by the recipe */
        fprintf(f, "%s%s %s (this run: %s)", said++ ? ", " : "", opt, x, y);
    }
    if (f) fclose(f);
    cli_error("--resume: %s was made with %s; use its options (only --epochs may change) or another --checkpoint "
              "directory", path, said && text ? text : "other training options");
    free(text);
    kn_json_free(a);
    kn_json_free(b);
}

/* The checkpoint's history (NULL, *ok kept, when it has none: one written
 * before kiln kept it): [rows, HIST_COLS] F64, the epochs up to the
 * checkpoint's, one after another. rows: the host copy (malloc'ed). */
static kn_tensor *history_of(const kn_safetensors *f, const char *path, int epoch, double **rows, bool *ok) {
    *rows = NULL;
    bool present = false;
    for (int k = 0; k < kn_safetensors_count(f) && !present; k++)
        present = !strcmp(kn_safetensors_name(f, k), "extra.history");
    if (!present) return NULL;
    kn_tensor *t = kn_safetensors_get(f, "extra.history", KN_CPU);
    int64_t n = t && kn_ndim(t) == 2 && kn_shape(t)[1] == HIST_COLS ? kn_shape(t)[0] : 0;
    bool good = t && kn_dtype_of(t) == KN_F64 && n >= 1 && n <= epoch;
    if (good && (*rows = cli_alloc((size_t)n * HIST_COLS * sizeof **rows)) && kn_to_host(t, *rows, KN_F64) == KN_OK)
        for (int64_t i = 0; i < n && good; i++) good = (*rows)[i * HIST_COLS + H_EPOCH] == (double)(epoch - n + 1 + i);
    else
        good = false;
    if (!good) {
        cli_error("--resume: %s: the checkpoint's training history is malformed", path);
        free(*rows);
        *rows = NULL;
        *ok = false;
        return NULL;
    }
    return t;
}

bool ckpt_load(const char *path, kn_module *m, kn_optim *opt, kn_tensor *const *best, int n_best,
               kn_tensor *order, train_state *ts, const train_opts *o) {
    /* The run's identity first: a checkpoint of other data or options would
     * resume into a different model without a word. */
    kn_safetensors *f = kn_safetensors_open(path);
    if (!f) return cli_error("--resume: %s", kn_error()), false;
    const char *sj = kn_safetensors_meta(f, "kiln_model"), *fp = kn_safetensors_meta(f, "kiln_options");
    const char *tx = kn_safetensors_meta(f, "kiln_train");
    bool ok = true;
    if (!sj || !fp || !tx) {
        cli_error("--resume: %s is not a checkpoint of kiln train", path);
        ok = false;
    } else if (strcmp(sj, o->schema_json) != 0) {
        cli_error("--resume: %s was made from other data or columns (its schema differs from this run's); "
                  "use the same file and column options, or another --checkpoint directory", path);
        ok = false;
    } else if (strcmp(fp, o->fingerprint) != 0) {
        report_option_change(path, fp, o->fingerprint);
        ok = false;
    }
    ok = ok && parse_state(path, tx, ts);
    if (ok && ts->has_best != (best != NULL)) {
        cli_error("--resume: %s: the checkpoint's best weights do not match this run", path);
        ok = false;
    }
    kn_scope hs = kn_scope_begin();
    double *rows = NULL;
    kn_tensor *hist = ok ? history_of(f, path, ts->epoch, &rows, &ok) : NULL;
    int n_x = 0;
    kn_named_tensor *x = ok ? extras(m, order, hist, best, n_best, &n_x) : NULL;
    if (ok && !x) {
        cli_error("%s: out of memory reading the checkpoint", path);
        ok = false;
    }
    kn_checkpoint c = {m, opt, kn_default_generator(), n_x, x, 0, NULL};
    if (ok && kn_checkpoint_restore(f, &c) != KN_OK) { /* the same open file: read once */
        cli_error("--resume: %s", kn_error());
        ok = false;
    }
    extras_free(x, n_x);
    if (ok && hist && ts->history) { /* the epochs before this run's */
        history_free(ts->history);
        ts->history->row = (double(*)[HIST_COLS])rows;
        ts->history->n = ts->history->cap = (int)kn_shape(hist)[0];
        ts->history->from = (int)rows[H_EPOCH];
        rows = NULL;
    }
    free(rows);
    kn_scope_end(hs);
    kn_safetensors_close(f);
    return ok;
}

bool ckpt_peek(const char *path, bool *has_best) {
    kn_safetensors *f = kn_safetensors_open(path);
    if (!f) return cli_error("--resume: %s", kn_error()), false;
    train_state ts = {0};
    bool ok = parse_state(path, kn_safetensors_meta(f, "kiln_train"), &ts);
    kn_safetensors_close(f);
    *has_best = ts.has_best;
    return ok;
}

/* ---- Ctrl-C ------------------------------------------------------------------------ */

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
    static const char msg[] = "\nkiln: stopping after this epoch (Ctrl-C again to quit now)\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1); /* async-signal-safe, unlike stdio */
    (void)w;
}

void interrupt_watch(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND; /* the second Ctrl-C kills, as usual */
    sigaction(SIGINT, &sa, NULL);
}

bool interrupt_requested(void) { return interrupted != 0; }
