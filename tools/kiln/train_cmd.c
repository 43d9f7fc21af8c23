/* kiln command line: `kiln train` — options, recipes, data preparation, the
 * report and the saved model. */
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void train_help(void) {
    printf(
        "usage: kiln train FILE.csv --target COLUMN [options]\n\n"
        "Trains a model for COLUMN from the other columns: a classifier, or a regression when\n"
        "COLUMN holds numbers with many distinct values. Categorical columns become embeddings,\n"
        "numeric ones are standardized (statistics from the training rows only). The rows are\n"
        "split into train/validation/test, stratified (by class, or by target quantile), from --seed.\n\n"
        "data:\n"
        "  --target COL           the column to predict (required); a list A,B,C of two-valued\n"
        "                         columns trains one multi-label model (one output per label)\n"
        "  --task T               auto | classification | regression (default auto)\n"
        "  --categorical A,B      treat these columns as categorical\n"
        "  --numeric A,B          treat these columns as numeric (every value must be a number)\n"
        "  --ignore A,B           leave these columns out\n"
        "  --delimiter C          field separator (default ','; 'tab' for tabs)\n"
        "  --test-split F         fraction of rows held out for the test report (default 0.2)\n"
        "  --val-split F          fraction held out for validation (default 0.1; tutorial 0)\n"
        "  --seed N               seed for the split, the initial weights and dropout (default 0)\n"
        "  --cv K                 K-fold cross-validation (2..20) instead of one split: each fold is\n"
        "                         the test rows once; per-fold metrics and their mean and std\n"
        "                         (nothing is saved: no --out, --checkpoint, --resume, --test-split)\n"
        "model and training:\n"
        "  --recipe NAME          default | tutorial (the seed program: Adam 0.001, 500 full-batch\n"
        "                         epochs, layers 200,100,50, dropout 0.4)\n"
        "  --layers 200,100       hidden layer sizes\n"
        "  --dropout P            dropout after each hidden block\n"
        "  --embedding-dropout P  dropout on the embeddings (default: as --dropout)\n"
        "  --embedding-dim N      size of every embedding (default min(50, (values+1)/2))\n"
        "  --epochs N             (maximum) epochs\n"
        "  --batch-size N|full    rows per step (default: by data size; tutorial: full)\n"
        "  --lr X                 learning rate\n"
        "  --weight-decay X       AdamW weight decay (default recipe)\n"
        "  --patience N           early stopping after N epochs without validation improvement\n"
        "                         (0: off); the best weights are restored\n"
        "  --class-weight W       auto | none | balanced (auto: weights when classes are imbalanced;\n"
        "                         multi-label: balanced weighs each label's positives, auto is none)\n"
        "  --device NAME          cpu, cuda, cuda:1, vulkan (default: the best available)\n"
        "  --devices A,B|all      data parallel: each batch split over these devices, gradients\n"
        "                         averaged (NCCL between CUDA devices, else through the host);\n"
        "                         all: every device of the best kind\n"
        "  --no-graph             do not capture the training step as a graph (CUDA)\n"
        "output:\n"
        "  --out MODEL            save the model (one .safetensors file)\n"
        "  --plot FILE.png|.svg   draw the loss and accuracy (regression: R^2) per epoch and the test\n"
        "                         confusion matrix; the format from the extension\n"
        "  --checkpoint DIR       save the training state to DIR/checkpoint.safetensors (atomically)\n"
        "  --every N              ... every N epochs (default 1), and when training stops\n"
        "  --resume DIR           continue from DIR's checkpoint: the same data and options, --epochs\n"
        "                         may grow; keeps checkpointing to DIR (or --checkpoint)\n"
        "  --quiet                only the final report\n"
        "  --json                 only the final metrics and the per-epoch history, as one JSON\n"
        "                         object on stdout\n"
        "  --stats                print the per-op CPU-fallback counters at the end\n");
}

/* Rows per step for the default recipe: about 40 steps per epoch, a power of two
 * between 32 and 512, so small files get enough updates and large ones run fast. */
int64_t auto_batch(int64_t n) {
    int64_t b = 32;
    while (b < 512 && b * 40 < n) b *= 2;
    return b;
}

static bool parse_layers(const char *v, arch *a) {
    a->n_layers = 0;
    const char *p = v;
    while (p && *p) {
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p || x < 1 || x > 65536 || (*end && *end != ',') || a->n_layers == CLI_MAX_LAYERS) {
            cli_error("--layers: '%s' is not a list of up to %d sizes like 200,100,50", v, CLI_MAX_LAYERS);
            return false;
        }
        a->layers[a->n_layers++] = (int)x;
        p = *end ? end + 1 : end;
    }
    if (!v || !*v) return cli_error("--layers needs sizes like 200,100,50"), false;
    return true;
}

typedef struct {
    const char *file, *out, *device, *devices, *cw, *ckpt_dir, *resume_dir, *task;
    long long every, cv;
    const char *plot; /* --plot FILE, in plot_fmt */
    plot_format plot_fmt;
    table_opts t;
    train_opts o;
    char delimiter;
    bool set_lr, set_epochs, set_batch, set_layers, set_dropout, set_edrop, set_val, set_pat, set_wd, set_test;
} train_args;

static int parse_args(int argc, char **argv, train_args *a, const char **target) {
    const char *v = NULL, *recipe = "default";
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i];
        long long n;
        double x;
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
            train_help();
            return 0;
        }
        if (!strcmp(s, "--quiet") || !strcmp(s, "-q")) a->o.quiet = true;
        else if (!strcmp(s, "--json")) a->o.json = true;
        else if (!strcmp(s, "--stats")) a->o.stats = true;
        else if (!strcmp(s, "--no-graph")) a->o.no_graph = true;
        else if (opt_is(s, "--target", &v, &i, argc, argv)) { if (!(*target = v)) return 2; }
        else if (opt_is(s, "--recipe", &v, &i, argc, argv)) {
            if (!v) return 2;
            if (strcmp(v, "default") && strcmp(v, "tutorial"))
                return cli_error("--recipe: '%s' is not a recipe (default, tutorial)", v), 2;
            recipe = v;
        } else if (opt_is(s, "--out", &v, &i, argc, argv)) { if (!(a->out = v)) return 2; }
        else if (opt_is(s, "--plot", &v, &i, argc, argv)) {
            if (!(a->plot = v) || !plot_format_of("--plot", v, &a->plot_fmt)) return 2;
        }
        else if (opt_is(s, "--checkpoint", &v, &i, argc, argv)) { if (!(a->ckpt_dir = v)) return 2; }
        else if (opt_is(s, "--task", &v, &i, argc, argv)) {
            if (!v || (strcmp(v, "auto") && strcmp(v, "classification") && strcmp(v, "regression")))
                return cli_error("--task: '%s' is not auto, classification or regression", v ? v : ""), 2;
            a->task = v;
        }
        else if (opt_is(s, "--resume", &v, &i, argc, argv)) { if (!(a->resume_dir = v)) return 2; }
        else if (opt_is(s, "--every", &v, &i, argc, argv)) { if (!parse_int_opt("--every", v, 1, 1000000, &a->every)) return 2; }
        else if (opt_is(s, "--device", &v, &i, argc, argv)) { if (!(a->device = v)) return 2; }
        else if (opt_is(s, "--devices", &v, &i, argc, argv)) { if (!(a->devices = v)) return 2; }
        else if (opt_is(s, "--categorical", &v, &i, argc, argv)) { if (!(a->t.categorical = v)) return 2; }
        else if (opt_is(s, "--numeric", &v, &i, argc, argv)) { if (!(a->t.numeric = v)) return 2; }
        else if (opt_is(s, "--ignore", &v, &i, argc, argv)) { if (!(a->t.ignore = v)) return 2; }
        else if (opt_is(s, "--class-weight", &v, &i, argc, argv)) {
            if (!v || (strcmp(v, "auto") && strcmp(v, "none") && strcmp(v, "balanced")))
                return cli_error("--class-weight: '%s' is not auto, none or balanced", v ? v : ""), 2;
            a->cw = v;
        } else if (opt_is(s, "--delimiter", &v, &i, argc, argv)) { if (!parse_delimiter(v, &a->delimiter)) return 2; }
        else if (opt_is(s, "--layers", &v, &i, argc, argv)) {
            if (!v || !parse_layers(v, &a->o.arch)) return 2;
            a->set_layers = true;
        } else if (opt_is(s, "--epochs", &v, &i, argc, argv)) {
            if (!parse_int_opt("--epochs", v, 1, 1000000, &n)) return 2;
            a->o.epochs = (int)n, a->set_epochs = true;
        } else if (opt_is(s, "--batch-size", &v, &i, argc, argv)) {
            if (v && !strcmp(v, "full")) n = 0;
            else if (!parse_int_opt("--batch-size", v, 2, 1LL << 40, &n)) return 2;
            a->o.batch_size = n, a->set_batch = true;
        } else if (opt_is(s, "--embedding-dim", &v, &i, argc, argv)) {
            if (!parse_int_opt("--embedding-dim", v, 1, 4096, &n)) return 2;
            a->t.embedding_dim = (int)n;
        } else if (opt_is(s, "--patience", &v, &i, argc, argv)) {
            if (!parse_int_opt("--patience", v, 0, 1000000, &n)) return 2;
            a->o.patience = (int)n, a->set_pat = true;
        } else if (opt_is(s, "--seed", &v, &i, argc, argv)) {
            if (!parse_int_opt("--seed", v, 0, INT64_MAX, &n)) return 2;
            a->o.seed = (uint64_t)n;
        } else if (opt_is(s, "--lr", &v, &i, argc, argv)) {
            if (!parse_double_opt("--lr", v, 1e-12, 100, &x)) return 2;
            a->o.lr = x, a->set_lr = true;
        } else if (opt_is(s, "--weight-decay", &v, &i, argc, argv)) {
            if (!parse_double_opt("--weight-decay", v, 0, 10, &x)) return 2;
            a->o.weight_decay = x, a->set_wd = true;
        } else if (opt_is(s, "--dropout", &v, &i, argc, argv)) {
            if (!parse_double_opt("--dropout", v, 0, 0.99, &x)) return 2;
            a->o.arch.dropout = x, a->set_dropout = true;
        } else if (opt_is(s, "--embedding-dropout", &v, &i, argc, argv)) {
            if (!parse_double_opt("--embedding-dropout", v, 0, 0.99, &x)) return 2;
            a->o.arch.emb_dropout = x, a->set_edrop = true;
        } else if (opt_is(s, "--test-split", &v, &i, argc, argv)) {
            if (!parse_double_opt("--test-split", v, 0, 0.9, &x)) return 2;
            a->o.test_split = x, a->set_test = true;
        } else if (opt_is(s, "--cv", &v, &i, argc, argv)) {
            if (!parse_int_opt("--cv", v, 2, 20, &a->cv)) return 2;
        } else if (opt_is(s, "--val-split", &v, &i, argc, argv)) {
            if (!parse_double_opt("--val-split", v, 0, 0.9, &x)) return 2;
            a->o.val_split = x, a->set_val = true;
        } else if (s[0] == '-' && s[1]) return cli_error("train: unknown option '%s' (see kiln train --help)", s), 2;
        else if (!a->file) a->file = s;
        else return cli_error("train: unexpected argument '%s' (one data file)", s), 2;
    }
    if (!a->file) return cli_error("train: no data file (kiln train FILE.csv --target COLUMN)"), 2;
    if (!*target) return cli_error("train: --target COLUMN is required (the column to predict)"), 2;
    if (a->every && !a->ckpt_dir && !a->resume_dir) return cli_error("--every needs --checkpoint DIR"), 2;
    if (a->cv && a->plot)
        return cli_error("--cv %lld: --plot does not go with cross-validation (it trains one model per fold); "
                         "train without --cv for the curves", a->cv), 2;
    if (a->cv) { /* K models estimate how well the recipe does; none of them is the model to keep */
        const char *no = a->out ? "--out" : a->ckpt_dir ? "--checkpoint" : a->resume_dir ? "--resume"
                       : a->set_test ? "--test-split" : NULL;
        if (no)
            return cli_error("--cv %lld: %s does not go with cross-validation (%s)", a->cv, no,
                             a->set_test ? "each fold is the test rows once" :
                             "it trains one model per fold and saves none; train without --cv to save a model"), 2;
        a->o.test_split = 0;
    }
    if (a->o.test_split + (a->set_val ? a->o.val_split : 0) >= 0.95)
        return cli_error("--test-split plus --val-split leave too few training rows"), 2;
    a->o.recipe = recipe;
    bool tut = !strcmp(recipe, "tutorial");
    /* Recipes: the explicit options above override these. */
    if (!a->set_layers) {
        static const int tl[] = {200, 100, 50}, dl[] = {256, 128};
        a->o.arch.n_layers = tut ? 3 : 2;
        for (int i = 0; i < a->o.arch.n_layers; i++) a->o.arch.layers[i] = tut ? tl[i] : dl[i];
    }
    if (!a->set_dropout) a->o.arch.dropout = tut ? 0.4 : 0.1;
    if (!a->set_edrop) a->o.arch.emb_dropout = tut || a->set_dropout ? a->o.arch.dropout : 0.05;
    if (!a->set_lr) a->o.lr = tut ? 0.001 : 0.003;
    if (!a->set_epochs) a->o.epochs = tut ? 500 : 300;
    if (!a->set_val) a->o.val_split = tut ? 0 : 0.1;
    if (!a->set_pat) a->o.patience = tut ? 0 : 20;
    if (!a->set_wd) a->o.weight_decay = tut ? 0 : 1e-4;
    a->o.adamw = !tut;
    if (!a->set_batch) a->o.batch_size = tut ? 0 : -1; /* -1: chosen from the data size */
    if (!a->cw) a->cw = tut ? "none" : "auto";
    return -1;
}

/* auto: sqrt of the balanced weights when the largest class has over 3x the rows
 * of the smallest (a compromise between accuracy and the rare classes' recall). */
float *class_weights(const char *mode, const int64_t *y, int64_t n, int k, const char **desc) {
    *desc = "none";
    if (!strcmp(mode, "none")) return NULL;
    int64_t *cnt = cli_alloc((size_t)k * sizeof *cnt), lo = INT64_MAX, hi = 0;
    float *w = cli_alloc((size_t)k * sizeof *w);
    if (!cnt || !w) return free(cnt), free(w), NULL;
    for (int64_t i = 0; i < n; i++) cnt[y[i]]++;
    for (int c = 0; c < k; c++) {
        if (cnt[c] && cnt[c] < lo) lo = cnt[c];
        if (cnt[c] > hi) hi = cnt[c];
    }
    bool balanced = !strcmp(mode, "balanced");
    if (!balanced && hi <= 3 * lo) {
        free(cnt);
        free(w);
        return NULL;
    }
    double norm = 0;
    for (int c = 0; c < k; c++) {
        double b = cnt[c] ? (double)n / ((double)k * (double)cnt[c]) : 1;
        w[c] = (float)(balanced ? b : sqrt(b));
        norm += (double)cnt[c] / (double)n * w[c];
    }
    for (int c = 0; c < k; c++) w[c] = (float)(w[c] / norm); /* mean weight per row 1 */
    *desc = balanced ? "balanced" : "sqrt-balanced (classes are imbalanced)";
    free(cnt);
    return w;
}

static int64_t count_unknown(const encoded *e) { return e->unknown; }

/* --devices A,B,... or all (every device of the default one's kind): the
 * data-parallel group, its first device the model's. NULL after an error. */
static kn_dist *pick_devices(const char *list, kn_device *first) {
    kn_device devs[64];
    int n = 0;
    if (!strcmp(list, "all")) {
        kn_device d = kn_device_default();
        n = kn_device_count((kn_device_kind)d.kind);
        if (n > 64) n = 64;
        for (int i = 0; i < n; i++) devs[i] = (kn_device){d.kind, (int16_t)i};
    } else {
        for (const char *p = list; *p;) {
            size_t len = strcspn(p, ",");
            char name[64];
            if (len == 0 || len >= sizeof name || n == 64) {
                cli_error("--devices: '%s' is not a list of up to 64 device names like cuda:0,cuda:1", list);
                return NULL;
            }
            memcpy(name, p, len);
            name[len] = 0;
            if (!pick_device(name, &devs[n++])) return NULL;
            p += len + (p[len] == ',');
        }
    }
    if (n == 0) {
        cli_error("--devices: '%s' names no device", list);
        return NULL;
    }
    kn_dist *d = kn_dist_new(n, devs);
    if (!d) cli_error("--devices %s: %s", list, kn_error());
    else *first = devs[0];
    return d;
}

static int train_main(train_args *ap, const char *target, kn_device dev);

int cmd_train(int argc, char **argv) {
    train_args a = {0};
    a.delimiter = ',';
    a.o.test_split = 0.2;
    const char *target = NULL;
    int rc = parse_args(argc, argv, &a, &target);
    if (rc >= 0) return rc;
    train_opts *o = &a.o;
    kn_device dev;
    if (a.devices) {
        const char *other = a.device ? "--device" : a.cv ? "--cv" : NULL;
        if (other) {
            cli_error("--devices: not with %s (%s)", other,
                      a.device ? "--devices names the devices itself" : "data-parallel runs do not support it yet");
            return 2;
        }
        if (!(o->dist = pick_devices(a.devices, &dev))) return 2;
    } else if (!pick_device(a.device, &dev)) {
        return 2;
    }
    rc = train_main(&a, target, dev);
    kn_dist_free(o->dist);
    return rc;
}

/* cmd_train once the devices are known. */
static int train_main(train_args *ap, const char *target, kn_device dev) {
    train_args a = *ap;
    train_opts *o = &a.o;
    bool talk = !o->quiet && !o->json;
    int rc;
    if (a.cv) return cv_run(&(cv_job){a.file, target, a.task, a.cw, a.delimiter, (int)a.cv, a.t, a.o}, dev);
    if (a.out && !out_path_ok("--out", a.out, (const char *[]){a.file}, 1)) return 1;
    /* The checkpoint's place is checked before any work, like --out. */
    char *ckpt = NULL, *resume_from = NULL;
    if (a.resume_dir && !(resume_from = ckpt_path("--resume", a.resume_dir, false))) return 1;
    if (a.ckpt_dir || a.resume_dir) {
        ckpt = ckpt_path(a.ckpt_dir ? "--checkpoint" : "--resume", a.ckpt_dir ? a.ckpt_dir : a.resume_dir, true);
        const char *inputs[] = {a.file, a.out ? a.out : a.file};
        if (ckpt && a.out && !out_path_ok("--out", a.out, (const char *[]){ckpt}, 1)) { /* --out DIR/checkpoint... */
            free(ckpt);
            free(resume_from);
            return 1;
        }
        if (!ckpt || !out_path_ok(a.ckpt_dir ? "--checkpoint" : "--resume", ckpt, inputs, 2)) {
            free(ckpt);
            free(resume_from);
            return 1;
        }
    }
    /* The picture is written after training: its place is checked now, like --out's. */
    if (a.plot && !out_path_ok("--plot", a.plot, (const char *[]){a.file, a.out, ckpt}, 3)) {
        free(ckpt);
        free(resume_from);
        return 1;
    }
    bool has_best = false;
    if (resume_from && !ckpt_peek(resume_from, &has_best)) {
        free(ckpt);
        free(resume_from);
        return 1;
    }
    o->ckpt = ckpt;
    o->resume_from = resume_from;
    o->resume_has_best = resume_from && has_best;
    o->every = a.every ? (int)a.every : 1;
    if (talk && o->dist) {
        printf("Using %d device%s:", kn_dist_size(o->dist), kn_dist_size(o->dist) == 1 ? "" : "s");
        for (int r = 0; r < kn_dist_size(o->dist); r++)
            printf("%s %s", r ? "," : "", kn_device_str(kn_dist_device(o->dist, r)));
        const char *note = kn_dist_transport_note(o->dist);
        printf(" (data parallel, gradients averaged through %s%s%s)\n", kn_dist_transport(o->dist), *note ? "; " : "",
               note);
    } else if (talk) {
        printf("Using %s device\n", kn_device_kind_name((kn_device_kind)dev.kind));
    }

    rc = 1;
    char *schema_json = NULL, *fingerprint = NULL;
    schema s = {0};
    s.delimiter = a.delimiter;
    prepared_run pr = {0};
    split sp = {0};
    int64_t *rows = NULL, *ys = NULL, n_rows = 0;
    float *proba = NULL;
    kn_module *m = NULL;
    metrics tm = {0};
    ml_metrics mm = {0};
    train_result tr = {0};
    kn_csv *csv = table_read(a.file, a.delimiter);
    if (!csv || !table_target(csv, a.file, target, a.task ? a.task : "auto", &s, &rows, &n_rows, &ys)) goto done;
    if (!split_stratified(rows, ys, n_rows, schema_strata(&s), o->test_split, o->val_split, o->seed, &sp))
        goto done;
    if (sp.n_train < 2) {
        cli_error("%s: only %lld training rows after the split; need at least 2", a.file, (long long)sp.n_train);
        goto done;
    }
    if (!table_fit(csv, a.file, &a.t, sp.train, sp.n_train, &s)) goto done;
    if (!prepared_run_encode(&pr, csv, a.file, &s, sp.train, sp.n_train, sp.val, sp.n_val, sp.test, sp.n_test))
        goto done;
    if (o->batch_size < 0) o->batch_size = auto_batch(sp.n_train);
    const char *cw_desc;
    if (s.regression && a.cw && strcmp(a.cw, "auto") && strcmp(a.cw, "none")) {
        cli_error("--class-weight %s: the target is a number (regression), there are no classes to weigh", a.cw);
        rc = 2; /* a command-line mistake, found once the data showed the task */
        goto done;
    }
    prepared_run_weights(&pr, &s, a.cw, &cw_desc);

    kn_manual_seed(o->seed);
    m = model_build(&s, &o->arch);
    if (!m) goto done;
    if (kn_module_to(m, dev) != KN_OK) {
        cli_error("moving the model to %s: %s", kn_device_str(dev), kn_error());
        goto done;
    }
    if (!prepared_run_to_device(&pr, &s, dev)) goto done;
    if (talk) {
        printf("data: %s: %lld rows, %d columns; train %lld, validation %lld, test %lld (stratified, seed %llu)\n",
               a.file, (long long)kn_csv_rows(csv), kn_csv_cols(csv), (long long)sp.n_train, (long long)sp.n_val,
               (long long)sp.n_test, (unsigned long long)o->seed);
        schema_print(&s, stdout);
        printf("model on %s; x_train on %s, y_train on %s, x_test on %s, y_test on %s\n",
               kn_device_str(kn_module_device(m)), kn_device_str(kn_device_of(pr.dtr.cat ? pr.dtr.cat : pr.dtr.num)),
               kn_device_str(kn_device_of(pr.dtr.y)),
               pr.dte.y ? kn_device_str(kn_device_of(pr.dte.cat ? pr.dte.cat : pr.dte.num)) : "-",
               pr.dte.y ? kn_device_str(kn_device_of(pr.dte.y)) : "-");
        kn_module_print(m, stdout);
        if (s.regression && !a.task)
            printf("task: regression, as '%s' holds numbers with many distinct values (--task classification to "
                   "classify); loss: mean squared error of the standardized target\n", s.target);
        printf("recipe %s: %s lr %g", o->recipe, o->adamw ? "AdamW" : "Adam", o->lr);
        if (o->weight_decay > 0) printf(" weight decay %g", o->weight_decay);
        printf(", %s, %s%d epochs, ", o->batch_size ? "mini-batches" : "full batch", o->patience ? "up to " : "",
               o->epochs);
        if (o->batch_size) printf("batch %lld, ", (long long)o->batch_size);
        if (o->patience) printf("early stopping (patience %d) on validation loss, lr halved on plateaus, ", o->patience);
        if (s.n_labels) printf("loss: binary cross-entropy per label; label weights: %s; ", cw_desc);
        else if (!s.regression) printf("class weights: %s; ", cw_desc);
        printf("%lld parameters\n", (long long)kn_module_num_params(m));
    }
    int64_t unk = count_unknown(&pr.eva) + count_unknown(&pr.ete);
    if (unk && !o->json)
        cli_warn("%lld categorical values in the validation/test rows were not seen in training (mapped to 'unknown')",
                 (long long)unk);

    if (o->ckpt && (!(schema_json = model_schema_json(&s, &o->arch, o->recipe)) ||
                    !(fingerprint = ckpt_fingerprint(o, a.cw)))) {
        cli_error("out of memory");
        goto done;
    }
    o->schema_json = schema_json;
    o->fingerprint = fingerprint;

    if (!train_run(m, &s, o, &pr.dtr, sp.n_val ? &pr.dva : NULL, pr.cw, &tr)) goto done;
    if (talk && tr.resumed_from)
        printf("resumed from %s at epoch %d\n", o->resume_from, tr.resumed_from);
    model_fill_unknown(m, &s);
    if (talk)
        printf("training: %.2f s, %d epochs, %.0f rows/s%s\n", tr.seconds, tr.epochs_run, tr.samples_per_s,
               tr.graph_used ? ", captured step replayed (graph)" : "");
    reg_metrics rm = {0};
    if (sp.n_test && s.n_labels) {
        if (!(proba = predict_proba(m, &pr.dte, &s)) ||
            !ml_metrics_compute(proba, pr.ete.ym, pr.ete.y, pr.ete.n, s.n_labels, NULL, &mm))
            goto done;
        if (!o->json) ml_report_print(&mm, &s, "test", stdout);
    } else if (sp.n_test && s.regression) {
        if (!(proba = predict_proba(m, &pr.dte, &s)) ||
            !reg_metrics_compute(proba, pr.ete.yv, pr.ete.n, s.y_mean, s.y_std, &rm))
            goto done;
        if (!o->json) reg_report_print(&rm, "test", s.target, stdout);
    } else if (sp.n_test) {
        if (!(proba = predict_proba(m, &pr.dte, &s)) ||
            !metrics_compute(proba, pr.ete.y, pr.ete.n, s.n_classes, NULL, &tm))
            goto done;
        if (!o->json) report_print(&tm, s.classes, stdout);
    } else if (!o->json) {
        printf("no test rows (--test-split %g of %lld rows): no test report\n", o->test_split, (long long)n_rows);
    }
    if (a.out) {
        if (!model_save(m, &s, &o->arch, o->recipe, a.out)) goto done;
        if (talk) printf("\nmodel saved to %s\n", a.out);
    }
    if (a.plot) {
        if (!plot_write(a.plot, a.plot_fmt, &s, &tr.history, sp.n_test && !s.regression && !s.n_labels ? &tm : NULL))
            goto done;
        if (talk) printf("%straining curves drawn in %s\n", a.out ? "" : "\n", a.plot);
    }
    if (o->json) {
        printf("{\"kiln_version\":\"%s\",\"command\":\"train\",\"file\":", KN_VERSION_STRING);
        json_str(stdout, a.file);
        printf(",\"target\":");
        json_str(stdout, s.target);
        printf(",\"task\":\"%s\",\"device\":\"%s\",\"recipe\":\"%s\",\"seed\":%llu,",
               s.regression ? "regression" : s.n_labels ? "multilabel" : "classification", kn_device_str(dev), o->recipe, (unsigned long long)o->seed);
        if (o->dist) {
            printf("\"devices\":[");
            for (int r = 0; r < kn_dist_size(o->dist); r++)
                printf("%s\"%s\"", r ? "," : "", kn_device_str(kn_dist_device(o->dist, r)));
            printf("],\"transport\":\"%s\",\"replica_spread\":%.3g,", kn_dist_transport(o->dist), tr.replica_spread);
        }
        printf("\"rows\":{\"train\":%lld,\"validation\":%lld,\"test\":%lld},", (long long)sp.n_train,
               (long long)sp.n_val, (long long)sp.n_test);
        printf("\"training\":{\"epochs\":%d,\"best_epoch\":%d,\"seconds\":%.4f,\"rows_per_second\":%.1f,"
               "\"batch_size\":%lld,\"graph\":%s,\"resumed_from_epoch\":%d,\"interrupted\":%s},",
               tr.epochs_run, tr.best_epoch, tr.seconds, tr.samples_per_s, (long long)o->batch_size,
               tr.graph_used ? "true" : "false", tr.resumed_from, tr.interrupted ? "true" : "false");
        printf("\"unknown_categories\":%lld,\"test\":", (long long)unk);
        if (sp.n_test) {
            printf("{");
            if (s.n_labels) ml_report_json(&mm, &s, stdout);
            else if (s.regression) reg_report_json(&rm, stdout);
            else report_json_metrics(&tm, s.classes, stdout);
            printf("}");
        } else {
            printf("null");
        }
        printf(",\"model\":");
        if (a.out) json_str(stdout, a.out);
        else printf("null");
        printf(",");
        history_json(&tr.history, s.regression, stdout);
        printf("}\n");
    }
    if (o->stats) print_fallback_stats(o->json ? stderr : stdout);
    rc = 0;
    if (tr.interrupted) rc = 130; /* what a shell reports for Ctrl-C: the run did not finish */
done:
    free(schema_json);
    free(fingerprint);
    free(ckpt);
    free(resume_from);
    metrics_free(&tm);
    ml_metrics_free(&mm);
    history_free(&tr.history);
    free(proba);
    prepared_run_free(&pr);
    kn_module_free(m);
    split_free(&sp);
    free(rows);
    free(ys);
    schema_free(&s);
    kn_csv_free(csv);
    fflush(stdout);
    return rc;
}
