/* kiln command line: `kiln train-images DIR` and `kiln predict-images MODEL SRC`.
 *
 * train-images trains the small CNN of examples/fashion_mnist.c (two conv +
 * pool blocks, two linear layers; Adam) on an IDX image set in MNIST's
 * layout, holding out part of the training images for early stopping by
 * validation loss, then reports on the test images and saves the model with
 * its schema (input shape, normalisation, class names). */
#include "images.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/* Epochs that take this CNN past 91 % test accuracy on Fashion-MNIST (docs/IMAGES.md). */
#define DEFAULT_EPOCHS 10
#define DEFAULT_BATCH 64
#define DEFAULT_LR 1e-3
#define DEFAULT_VAL 0.1
#define DEFAULT_PATIENCE 3

static void train_usage(FILE *f) {
    fprintf(f,
            "usage: kiln train-images DIR [options]\n\n"
            "Trains a small CNN (two conv + pool blocks, two linear layers) on an IDX image set in\n"
            "MNIST's layout: DIR holds train-images-idx3-ubyte, train-labels-idx1-ubyte,\n"
            "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each may be .gz). Reports the test\n"
            "accuracy, the confusion matrix and per-class figures.\n\n"
            "  --epochs N          maximum epochs (default %d)\n"
            "  --batch-size B      images per step (default %d)\n"
            "  --lr X              Adam's learning rate (default %g)\n"
            "  --seed N            initial weights, the validation split and the batch order (default 0)\n"
            "  --val-split F       fraction of the training images held out for early stopping\n"
            "                      (default %g; 0: none, every epoch runs)\n"
            "  --patience N        epochs without a better validation loss before stopping (default %d;\n"
            "                      0: never stop early); the best epoch's weights are kept\n"
            "  --limit N           only the first N training images (quick tries)\n"
            "  --classes A,B,...   class names (else DIR/classes.txt, one per line; Fashion-MNIST's\n"
            "                      names when the set is recognised as it; else the label numbers)\n"
            "  --device NAME       cpu, cuda, cuda:1, vulkan (default: the best available)\n"
            "  --out MODEL         save the model (safetensors with its schema)\n"
            "  --grid FILE.png     the misclassified test images (up to %d), true -> predicted\n"
            "  --plot FILE.png|svg the training curves and the test confusion matrix\n"
            "  --quiet             only the final report\n"
            "  --json              only the results, as one JSON object on stdout\n",
            DEFAULT_EPOCHS, DEFAULT_BATCH, DEFAULT_LR, DEFAULT_VAL, DEFAULT_PATIENCE, IMG_GRID_MAX);
}

typedef struct {
    const char *dir, *classes, *device, *out, *grid, *plot;
    int epochs, patience;
    int64_t batch, limit;
    double lr, val;
    uint64_t seed;
    bool quiet, json;
    plot_format plot_fmt;
} train_args;

/* 0: go on; otherwise the exit status. */
static int parse_train(int argc, char **argv, train_args *a) {
    *a = (train_args){.epochs = DEFAULT_EPOCHS, .patience = DEFAULT_PATIENCE, .batch = DEFAULT_BATCH,
                      .lr = DEFAULT_LR, .val = DEFAULT_VAL};
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i], *v;
        long long n;
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) return train_usage(stdout), -1;
        if (!strcmp(s, "--quiet") || !strcmp(s, "-q")) a->quiet = true;
        else if (!strcmp(s, "--json")) a->json = true;
        else if (opt_is(s, "--epochs", &v, &i, argc, argv)) {
            if (!parse_int_opt("--epochs", v, 1, 100000, &n)) return 2;
            a->epochs = (int)n;
        } else if (opt_is(s, "--batch-size", &v, &i, argc, argv)) {
            if (!parse_int_opt("--batch-size", v, 1, 1 << 20, &n)) return 2;
            a->batch = n;
        } else if (opt_is(s, "--lr", &v, &i, argc, argv)) {
            if (!parse_double_opt("--lr", v, 1e-12, 10, &a->lr)) return 2;
        } else if (opt_is(s, "--seed", &v, &i, argc, argv)) {
            if (!parse_int_opt("--seed", v, 0, INT64_MAX, &n)) return 2;
            a->seed = (uint64_t)n;
        } else if (opt_is(s, "--val-split", &v, &i, argc, argv)) {
            if (!parse_double_opt("--val-split", v, 0, 0.9, &a->val)) return 2;
        } else if (opt_is(s, "--patience", &v, &i, argc, argv)) {
            if (!parse_int_opt("--patience", v, 0, 100000, &n)) return 2;
            a->patience = (int)n;
        } else if (opt_is(s, "--limit", &v, &i, argc, argv)) {
            if (!parse_int_opt("--limit", v, 1, INT64_MAX, &n)) return 2;
            a->limit = n;
        } else if (opt_is(s, "--classes", &v, &i, argc, argv)) { if (!(a->classes = v)) return 2; }
        else if (opt_is(s, "--device", &v, &i, argc, argv)) { if (!(a->device = v)) return 2; }
        else if (opt_is(s, "--out", &v, &i, argc, argv)) { if (!(a->out = v)) return 2; }
        else if (opt_is(s, "--grid", &v, &i, argc, argv)) { if (!(a->grid = v)) return 2; }
        else if (opt_is(s, "--plot", &v, &i, argc, argv)) {
            if (!(a->plot = v) || !plot_format_of("--plot", v, &a->plot_fmt)) return 2;
        } else if (s[0] == '-' && s[1]) {
            return cli_error("train-images: unknown option '%s' (see kiln train-images --help)", s), 2;
        } else if (a->dir) {
            return cli_error("train-images: one directory only ('%s' and '%s')", a->dir, s), 2;
        } else {
            a->dir = s;
        }
    }
    if (!a->dir) return cli_error("train-images: no directory given (see kiln train-images --help)"), 2;
    if (a->grid) {
        size_t n = strlen(a->grid);
        if (n < 4 || strcasecmp(a->grid + n - 4, ".png"))
            return cli_error("--grid %s: the grid is a PNG file (name it .png)", a->grid), 2;
    }
    /* Two outputs into one file would leave only the last. */
    const char *outs[3] = {a->out, a->grid, a->plot}, *names[3] = {"--out", "--grid", "--plot"};
    for (int p = 0; p < 3; p++)
        for (int q = p + 1; q < 3; q++)
            if (outs[p] && outs[q] && !strcmp(outs[p], outs[q]))
                return cli_error("%s and %s name the same file %s", names[p], names[q], outs[p]), 2;
    return 0;
}

/* Per-channel mean and std of the pixels (/255) of the given rows. */
static void pixel_stats(const img_set *t, const int64_t *rows, int64_t n, img_schema *s) {
    size_t plane = (size_t)t->h * t->w;
    for (int c = 0; c < t->c; c++) {
        double sum = 0, sq = 0;
        for (int64_t i = 0; i < n; i++) {
            const uint8_t *p = img_pixels(t, rows[i]) + (size_t)c * plane;
            uint64_t a = 0, b = 0; /* exact per image */
            for (size_t j = 0; j < plane; j++) a += p[j], b += (uint64_t)p[j] * p[j];
            sum += (double)a, sq += (double)b;
        }
        double cnt = (double)n * (double)plane, m = sum / cnt / 255, var = sq / cnt / (255.0 * 255) - m * m;
        s->mean[c] = m;
        s->std[c] = var > 1e-12 ? sqrt(var) : 1; /* a constant channel: left unscaled */
    }
}

/* Copies of the state dict (keep: true saves into them, false restores). */
typedef struct {
    kn_tensor **t;
    int n;
} snapshot;

static bool snap(kn_module *m, snapshot *s, bool keep) {
    int n = 0;
    const kn_named_tensor *sd = kn_module_state_dict(m, &n);
    if (!sd) return cli_error("%s", kn_error()), false;
    bool ok = true;
    kn_no_grad_begin();
    if (!s->t) {
        ok = (s->t = cli_alloc(((size_t)n + 1) * sizeof *s->t)) != NULL;
        s->n = n;
        kn_scope sc = kn_scope_begin();
        for (int i = 0; ok && i < n; i++) ok = (s->t[i] = kn_retain(kn_clone(kn_detach(sd[i].tensor)))) != NULL;
        kn_scope_end(sc);
    } else {
        for (int i = 0; ok && i < n; i++)
            ok = (keep ? kn_copy_(s->t[i], sd[i].tensor) : kn_copy_(sd[i].tensor, s->t[i])) == KN_OK;
    }
    kn_no_grad_end();
    if (!ok && kn_error()[0]) cli_error("keeping the best weights: %s", kn_error());
    return ok;
}

static void snap_free(snapshot *s) {
    for (int i = 0; s->t && i < s->n; i++) kn_release(s->t[i]);
    free(s->t);
    *s = (snapshot){0};
}

typedef struct {
    int epochs_run, best_epoch;
    bool interrupted;
    double seconds, rows_per_s;
    train_history h;
} run_result;

/* One epoch of Adam over the batches: mean loss and accuracy. */
static bool run_epoch(kn_module *m, kn_optim *opt, kn_batches *b, kn_device dev, double *loss, double *acc) {
    kn_scope all = kn_scope_begin();
    kn_tensor *ls = kn_scalar(0, KN_F32, dev), *hits = kn_scalar(0, KN_I64, dev), *t[2];
    int64_t rows, seen = 0;
    bool ok = ls && hits;
    kn_module_train(m, true);
    while (ok) {
        kn_scope sc = kn_scope_begin();
        if ((rows = kn_batches_next(b, t)) <= 0) {
            ok = rows == 0;
            kn_scope_end(sc);
            break;
        }
        kn_tensor *logits = kn_module_forward(m, t[0]), *l = kn_cross_entropy(logits, t[1]);
        kn_optim_zero_grad(opt);
        ok = l && kn_backward(l) == KN_OK && kn_optim_step(opt) == KN_OK;
        kn_no_grad_begin();
        ok = ok && kn_copy_(ls, kn_add(ls, kn_mul_scalar(kn_detach(l), (double)rows))) == KN_OK &&
             kn_copy_(hits, kn_add(hits, kn_sum_all(kn_eq(kn_argmax(logits, 1, false), t[1])))) == KN_OK;
        kn_no_grad_end();
        seen += rows;
        kn_scope_end(sc);
    }
    if (ok) {
        *loss = kn_item(ls) / (double)(seen ? seen : 1);
        *acc = kn_item(hits) / (double)(seen ? seen : 1);
    } else {
        cli_error("training: %s", kn_error());
    }
    kn_scope_end(all);
    return ok;
}

/* The training loop: epochs with early stopping on the validation loss
 * (xval NULL: none); the best epoch's weights are restored at the end. */
static bool train_loop(kn_module *m, const img_schema *s, const train_args *a, kn_tensor *xtr, kn_tensor *ytr,
                       kn_tensor *xval, const int64_t *yval, kn_device dev, run_result *r) {
    *r = (run_result){0};
    r->h.from = 1;
    kn_optim *opt = kn_adam(m, kn_adam_defaults(a->lr));
    kn_batches *b = opt ? kn_batches_new(2, (kn_tensor *[]){xtr, ytr}, a->batch, true, false, a->seed) : NULL;
    if (!opt || !b) {
        kn_optim_free(opt);
        return cli_error("%s", kn_error()), false;
    }
    int64_t n_train = kn_shape(xtr)[0], n_val = xval ? kn_shape(xval)[0] : 0;
    snapshot best = {0};
    progress p = {0};
    progress_begin(&p, a->epochs, a->quiet || a->json);
    interrupt_watch();
    double start = cli_now(), best_loss = INFINITY, train_time = 0;
    int since_best = 0;
    bool ok = true;
    for (int epoch = 1; ok && epoch <= a->epochs; epoch++) {
        double t0 = cli_now(), loss = NAN, acc = NAN, vloss = NAN, vacc = NAN;
        ok = run_epoch(m, opt, b, dev, &loss, &acc);
        train_time += cli_now() - t0;
        if (ok && !isfinite(loss)) {
            cli_error("training diverged at epoch %d (the loss is %g); try a smaller --lr than %g", epoch, loss, a->lr);
            ok = false;
        }
        bool improved = false;
        if (ok && n_val) {
            float *pr = img_proba(m, s, xval);
            metrics vm;
            ok = pr && metrics_compute(pr, yval, n_val, s->k, NULL, &vm);
            free(pr);
            if (ok) {
                vloss = vm.loss, vacc = (double)vm.correct / (double)vm.n;
                metrics_free(&vm);
                if ((improved = vloss < best_loss)) {
                    best_loss = vloss, since_best = 0, r->best_epoch = epoch;
                    ok = snap(m, &best, true);
                } else {
                    since_best++;
                }
            }
        }
        if (!ok) break;
        if (!n_val) r->best_epoch = epoch;
        r->epochs_run = epoch;
        double row[HIST_COLS] = {epoch, loss, acc, vloss, vacc, NAN, a->lr, cli_now() - start};
        ok = history_add(&r->h, row);
        p.stop_in = n_val && a->patience ? a->patience - since_best : -1;
        progress_update(&p, epoch, loss, acc, vloss, vacc, (double)n_train * epoch / train_time, improved);
        if (n_val && a->patience && since_best >= a->patience) {
            if (!p.quiet) printf("%searly stop at epoch %d: no better validation loss for %d epochs\n",
                                 p.tty ? "\n" : "", epoch, a->patience);
            p.tty = false; /* the line is ended */
            break;
        }
        if (interrupt_requested()) {
            r->interrupted = true;
            break;
        }
    }
    progress_end(&p);
    if (ok && best.t && r->best_epoch != r->epochs_run) ok = snap(m, &best, false);
    r->seconds = cli_now() - start;
    r->rows_per_s = train_time > 0 ? (double)n_train * r->epochs_run / train_time : 0;
    snap_free(&best);
    kn_batches_free(b);
    kn_optim_free(opt);
    return ok;
}

static void json_array(FILE *f, const double *v, int n) {
    fputc('[', f);
    for (int i = 0; i < n; i++) fprintf(f, "%s%.9g", i ? "," : "", v[i]);
    fputc(']', f);
}

int cmd_train_images(int argc, char **argv) {
    train_args a;
    int rc = parse_train(argc, argv, &a);
    if (rc) return rc < 0 ? 0 : rc;
    rc = 1;
    img_set tr = {0}, te = {0};
    img_schema s = {.conv1 = 32, .conv2 = 64, .hidden = 128};
    char *tri = NULL, *trl = NULL, *tei = NULL, *tel = NULL, *cfile = NULL;
    int64_t *order = NULL, *pred = NULL, *mis = NULL, *yval = NULL;
    float *proba = NULL;
    kn_module *m = NULL;
    metrics tm = {0};
    run_result res = {0};
    kn_scope sc = kn_scope_begin();
    bool talk = !a.quiet && !a.json;
    if (!img_find(a.dir, "train", &tri, &trl) || !img_find(a.dir, "t10k", &tei, &tel)) goto done;
    size_t dl = strlen(a.dir) + 16;
    if (!(cfile = cli_alloc(dl))) goto done;
    snprintf(cfile, dl, "%s/classes.txt", a.dir);
    const char *inputs[] = {tri, trl, tei, tel, cfile};
    if ((a.out && !out_path_ok("--out", a.out, inputs, 5)) || (a.grid && !out_path_ok("--grid", a.grid, inputs, 5)) ||
        (a.plot && !out_path_ok("--plot", a.plot, inputs, 5)))
        goto done;
    kn_device dev;
    if (!pick_device(a.device, &dev)) goto done;
    if (!img_load(tri, trl, a.limit, &tr) || !img_load(tei, tel, 0, &te)) goto done;
    if (te.c != tr.c || te.h != tr.h || te.w != tr.w) {
        cli_error("%s holds %d x %d x %d images, %s %d x %d x %d: they must be the same size", tri, tr.c, tr.h, tr.w,
                  tei, te.c, te.h, te.w);
        goto done;
    }
    s.c = tr.c, s.h = tr.h, s.w = tr.w;
    int max_label = 0;
    for (int64_t i = 0; i < tr.n; i++) max_label = tr.y[i] > max_label ? (int)tr.y[i] : max_label;
    for (int64_t i = 0; i < te.n; i++) max_label = te.y[i] > max_label ? (int)te.y[i] : max_label;
    const char *csrc = NULL;
    if (!img_classes(a.classes, a.dir, &tr, max_label, &s, &csrc)) goto done;

    /* The validation rows: a seeded shuffle of the (limited) training images. */
    int64_t n_val = (int64_t)floor((double)tr.n * a.val + 0.5);
    if (a.val > 0 && n_val == 0 && tr.n >= 2) n_val = 1;
    if (n_val >= tr.n) n_val = tr.n - 1;
    int64_t n_train = tr.n - n_val;
    if (!(order = cli_alloc((size_t)tr.n * sizeof *order)) || !(yval = cli_alloc((size_t)n_val * sizeof *yval + 1)))
        goto done;
    for (int64_t i = 0; i < tr.n; i++) order[i] = i;
    uint64_t st = a.seed ^ 0x696d61676573ull; /* "images": apart from the batch order's stream */
    if (n_val) shuffle_i64(order, tr.n, &st);
    const int64_t *train_rows = order + n_val;
    for (int64_t i = 0; i < n_val; i++) yval[i] = tr.y[order[i]];
    pixel_stats(&tr, train_rows, n_train, &s);

    int64_t *ytr_h = cli_alloc((size_t)n_train * sizeof *ytr_h);
    if (!ytr_h) goto done;
    for (int64_t i = 0; i < n_train; i++) ytr_h[i] = tr.y[train_rows[i]];
    kn_tensor *ytr = kn_from_data(ytr_h, KN_I64, KN_SHAPE(n_train), dev);
    free(ytr_h);
    kn_tensor *xtr = img_normalize(&s, &tr, train_rows, n_train, dev);
    kn_tensor *xval = n_val ? img_normalize(&s, &tr, order, n_val, dev) : NULL;
    if (!xtr || !ytr || (n_val && !xval)) {
        if (kn_error()[0]) cli_error("moving the images to %s: %s", kn_device_str(dev), kn_error());
        goto done;
    }
    kn_manual_seed(a.seed);
    if (!(m = img_model_build(&s)) || kn_module_to(m, dev) != KN_OK) {
        cli_error("building the model: %s", kn_error());
        goto done;
    }
    if (talk) {
        printf("Using %s device (%s)\n", kn_device_str(dev), kn_device_description(dev));
        printf("%lld training images (%lld held out for validation), %lld test images, %d x %d x %d, %d classes "
               "(names from %s)\n", (long long)n_train, (long long)n_val, (long long)te.n, s.c, s.h, s.w, s.k, csrc);
        printf("model: conv %d-%d, hidden %d, %lld parameters; Adam lr %g, batches of %lld, up to %d epochs\n",
               s.conv1, s.conv2, s.hidden, (long long)kn_module_num_params(m), a.lr, (long long)a.batch, a.epochs);
    }
    if (!train_loop(m, &s, &a, xtr, ytr, n_val ? xval : NULL, yval, dev, &res)) goto done;
    if (talk && n_val && res.best_epoch != res.epochs_run)
        printf("best epoch %d (validation loss) restored\n", res.best_epoch);

    if (!(proba = img_proba_set(m, &s, &te, dev)) || !metrics_compute(proba, te.y, te.n, s.k, NULL, &tm)) goto done;
    if (!(pred = cli_alloc((size_t)te.n * sizeof *pred)) || !(mis = cli_alloc((size_t)te.n * sizeof *mis))) goto done;
    int64_t n_mis = 0;
    for (int64_t i = 0; i < te.n; i++) {
        const float *p = proba + i * s.k;
        int bst = 0;
        for (int c = 1; c < s.k; c++)
            if (p[c] > p[bst]) bst = c;
        pred[i] = bst;
        if (bst != te.y[i]) mis[n_mis++] = i;
    }
    if (!a.json) report_print(&tm, s.classes, stdout);
    if (a.out) {
        /* What `kiln info` reports of the run that made the model. */
        char training[1024]; /* fixed-size numbers and keys only: fits */
        snprintf(training, sizeof training,
                 "{\"epochs\":%d,\"best_epoch\":%d,\"batch_size\":%lld,\"optimizer\":\"adam\",\"lr\":%.9g,"
                 "\"seed\":%llu,\"val_split\":%.9g,\"patience\":%d,\"rows\":{\"train\":%lld,\"validation\":%lld,"
                 "\"test\":%lld},\"test_accuracy\":%.9g,\"interrupted\":%s}",
                 res.epochs_run, res.best_epoch, (long long)a.batch, a.lr, (unsigned long long)a.seed, a.val,
                 a.patience, (long long)n_train, (long long)n_val, (long long)te.n,
                 tm.n ? (double)tm.correct / (double)tm.n : 0.0, res.interrupted ? "true" : "false");
        if (!img_model_save(m, &s, training, a.out)) goto done;
        if (talk) printf("\nmodel saved to %s\n", a.out);
    }
    if (a.grid) {
        if (!img_grid_write(a.grid, &te, mis, n_mis, pred, s.classes)) goto done;
        if (talk)
            printf("%s%lld misclassified test images drawn in %s\n", a.out ? "" : "\n",
                   (long long)(n_mis < IMG_GRID_MAX ? n_mis : IMG_GRID_MAX), a.grid);
    }
    if (a.plot) {
        const char *base = strrchr(a.dir, '/');
        schema ps = {.target = (char *)(base && base[1] ? base + 1 : a.dir), .classes = s.classes,
                     .n_classes = s.k};
        if (!plot_write(a.plot, a.plot_fmt, &ps, &res.h, &tm)) goto done;
        if (talk) printf("training curves drawn in %s\n", a.plot);
    }
    if (a.json) {
        printf("{\"kiln_version\":\"%s\",\"command\":\"train-images\",\"dir\":", KN_VERSION_STRING);
        json_str(stdout, a.dir);
        printf(",\"device\":\"%s\",\"seed\":%llu,\"image\":{\"channels\":%d,\"height\":%d,\"width\":%d},",
               kn_device_str(dev), (unsigned long long)a.seed, s.c, s.h, s.w);
        printf("\"normalization\":{\"mean\":");
        json_array(stdout, s.mean, s.c);
        printf(",\"std\":");
        json_array(stdout, s.std, s.c);
        printf("},\"class_names_from\":");
        json_str(stdout, csrc);
        printf(",\"rows\":{\"train\":%lld,\"validation\":%lld,\"test\":%lld},", (long long)n_train, (long long)n_val,
               (long long)te.n);
        printf("\"training\":{\"epochs\":%d,\"best_epoch\":%d,\"seconds\":%.4f,\"rows_per_second\":%.1f,"
               "\"batch_size\":%lld,\"lr\":%g,\"interrupted\":%s},\"test\":{",
               res.epochs_run, res.best_epoch, res.seconds, res.rows_per_s, (long long)a.batch, a.lr,
               res.interrupted ? "true" : "false");
        report_json_metrics(&tm, s.classes, stdout);
        printf("},\"misclassified\":%lld,\"model\":", (long long)n_mis);
        if (a.out) json_str(stdout, a.out);
        else printf("null");
        printf(",");
        history_json(&res.h, false, stdout);
        printf("}\n");
    }
    rc = res.interrupted ? 130 : 0;
done:
    kn_scope_end(sc);
    metrics_free(&tm);
    history_free(&res.h);
    kn_module_free(m);
    img_schema_free(&s);
    img_set_free(&tr);
    img_set_free(&te);
    free(tri), free(trl), free(tei), free(tel), free(cfile);
    free(order), free(yval), free(proba), free(pred), free(mis);
    return rc;
}

/* ---- kiln predict-images ---------------------------------------------------------------------- */
static void predict_usage(FILE *f) {
    fprintf(f, "usage: kiln predict-images MODEL DIR|IMAGES.idx [--out FILE.csv] [--device NAME]\n\n"
               "The predicted class of every image, as CSV: index,class_index,class,probability (one row\n"
               "per image, in file order). A directory means its t10k-images-idx3-ubyte[.gz]; a file is\n"
               "any IDX file of uint8 images [N, H, W] or [N, C, H, W] of the model's size.\n"
               "  --out FILE.csv   write there (atomically) instead of stdout\n"
               "  --device NAME    cpu, cuda, cuda:1, vulkan (default: the best available)\n");
}

/* A CSV field: quoted when it holds a delimiter, a quote or a line break. */
static void csv_field(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

int cmd_predict_images(int argc, char **argv) {
    const char *model = NULL, *src = NULL, *out = NULL, *device = NULL, *v;
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) return predict_usage(stdout), 0;
        if (opt_is(s, "--out", &v, &i, argc, argv)) { if (!(out = v)) return 2; }
        else if (opt_is(s, "--device", &v, &i, argc, argv)) { if (!(device = v)) return 2; }
        else if (s[0] == '-' && s[1]) return cli_error("predict-images: unknown option '%s'", s), 2;
        else if (!model) model = s;
        else if (!src) src = s;
        else return cli_error("predict-images: too many arguments ('%s')", s), 2;
    }
    if (!model || !src) return cli_error("predict-images: needs MODEL and DIR or IDX file (see --help)"), 2;
    return img_predict_run(model, src, out, device);
}

int img_predict_run(const char *model, const char *src, const char *out, const char *device) {
    int rc = 1;
    char *images = NULL, *text = NULL;
    size_t len = 0;
    img_set set = {0};
    img_schema s = {0};
    kn_module *m = NULL;
    float *proba = NULL;
    FILE *f = NULL;
    struct stat st;
    if (!stat(src, &st) && S_ISDIR(st.st_mode)) {
        if (!img_find(src, "t10k", &images, NULL)) goto done;
    } else if (!(images = cli_strdup(src))) {
        goto done;
    }
    if (out) {
        const char *inputs[] = {model, images};
        if (!out_path_ok("--out", out, inputs, 2)) goto done;
    }
    kn_device dev;
    if (!pick_device(device, &dev) || !(m = img_model_load(model, dev, &s)) || !img_load(images, NULL, 0, &set))
        goto done;
    if (set.c != s.c || set.h != s.h || set.w != s.w) {
        cli_error("%s holds %d x %d x %d images; the model takes %d x %d x %d", images, set.c, set.h, set.w, s.c, s.h,
                  s.w);
        goto done;
    }
    if (!(proba = img_proba_set(m, &s, &set, dev))) goto done;
    if (!(f = open_memstream(&text, &len))) {
        cli_error("out of memory");
        goto done;
    }
    fprintf(f, "index,class_index,class,probability\n");
    for (int64_t i = 0; i < set.n; i++) {
        const float *p = proba + i * s.k;
        int b = 0;
        for (int c = 1; c < s.k; c++)
            if (p[c] > p[b]) b = c;
        fprintf(f, "%lld,%d,", (long long)i, b);
        csv_field(f, s.classes[b]);
        fprintf(f, ",%.6g\n", (double)p[b]);
    }
    bool bad = ferror(f) != 0;
    if (fclose(f) || bad) {
        f = NULL;
        cli_error("out of memory writing the predictions");
        goto done;
    }
    f = NULL;
    if (out) {
        if (kn_file_write_atomic(out, text, len) != KN_OK) {
            cli_error("--out: %s", kn_error());
            goto done;
        }
    } else if (fwrite(text, 1, len, stdout) != len) {
        cli_error("writing to stdout failed");
        goto done;
    }
    rc = 0;
done:
    free(text);
    free(proba);
    kn_module_free(m);
    img_schema_free(&s);
    img_set_free(&set);
    free(images);
    return rc;
}
