/* kiln command line: shared types between the parts of the tool.
 *
 *   main.c      argument parsing, help, dispatch, `kiln devices`
 *   util.c      messages, allocation, the clock
 *   table.c     CSV -> typed columns: inference, vocabularies, standardization, split
 *   model.c     the tabular model as a kn_module; saving and loading it with its schema
 *   train.c     training loops and the two recipes
 *   graph_step.c  the captured (CUDA graph) training step
 *   report.c    metrics, confusion matrix, progress bar, JSON
 *   checkpoint.c  `--checkpoint` / `--resume`, Ctrl-C
 *   plot.c      `--plot`: training curves and the confusion matrix as PNG or SVG
 *   predict.c   `kiln eval` and `kiln predict`
 *   cv.c        `kiln train --cv K`: stratified K-fold cross-validation
 *   prepared.c  one run's encoded rows, device copies and class weights (train and --cv)
 *   explain.c   `kiln explain`: permutation feature importance
 *   labels.c    multi-label targets (`--target a,b,c`): the labels, their split strata
 *               and their metrics                                                    */
#ifndef KILN_CLI_H
#define KILN_CLI_H

#include "kiln.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define CLI_MAX_LAYERS 16

/* ---- errors: one line on stderr, "kiln: ..." ---------------------------------- */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cli_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void *cli_alloc(size_t n); /* calloc that reports; NULL on failure */
char *cli_strdup(const char *s);
double cli_now(void); /* seconds, monotonic */

/* ---- the schema: everything needed to turn a CSV row into model inputs ---------- */
typedef enum { COL_CATEGORICAL = 0, COL_NUMERIC = 1 } col_type;

typedef struct {
    char *name;
    col_type type;
    int csv_col; /* column in the CSV being read (not saved) */
    /* categorical: codes 0..n_vocab-1 are the training values in sorted order
     * (missing values are one of them, "" in vocab, when they occurred in
     * training); code n_vocab is "unknown". */
    char **vocab;
    int n_vocab;
    int missing_code; /* -1 when no missing value was seen in training */
    int dim;          /* embedding size */
    int64_t *counts;  /* training rows per code (not saved) */
    /* numeric: standardized with training mean/std; missing -> mean (0), plus
     * a 0/1 missing-indicator input when training had missing values. */
    double mean, std;
    bool indicator;
} feature;

typedef struct {
    char *target;
    /* regression: the target is a number, predicted standardized with the
     * training rows' mean and std (one output); otherwise classes. */
    bool regression;
    double y_mean, y_std;
    char **classes;
    int n_classes;
    feature *f;
    int n_f;
    int n_cat;   /* categorical features = embedding inputs */
    int n_num;   /* numeric model inputs (values + indicators) */
    char delimiter;
    /* multi-label (n_labels >= 2): one logit per label column, trained with
     * binary cross-entropy; target is the list as given ("a,b,c"), classes
     * none. label_values[2 l] is label l's negative value, [2 l + 1] its
     * positive one. */
    int n_labels;
    char **labels;
    char **label_values;
    int n_strata; /* the split's strata (label combinations); not saved */
} schema;

/* Model inputs for n rows. cat: [n, n_cat] codes; num: [n, n_num]; y: [n]
 * class codes (-1: unknown class / no target); yv: [n] regression targets
 * (NaN: none). */
typedef struct {
    int64_t n;
    int64_t *cat;
    float *num;
    int64_t *y;
    double *yv;
    float *ym;         /* multi-label: [n, n_labels] 0/1 targets; y[i] is 0 when row i has every
                        * label with a known value, -1 otherwise */
    int64_t *row;      /* CSV data row of each encoded row */
    int64_t unknown;   /* categorical values not seen in training */
    int64_t imputed;   /* numeric values missing here but never in training */
} encoded;

/* Column-type overrides and inference options from the command line. */
typedef struct {
    const char *categorical; /* comma-separated names */
    const char *numeric;
    const char *ignore;
    int embedding_dim; /* 0: min(50, (n+1)/2) */
    bool quiet;        /* no warnings (cross-validation folds after the first) */
} table_opts;

bool is_missing(const char *s);
/* Strict decimal number (no nan/inf/hex); surrounding blanks allowed. */
bool parse_number(const char *s, double *out);

kn_csv *table_read(const char *path, char delimiter);
/* Finds the target column and the rows that have a target, and decides the
 * task (task: "auto", "classification" or "regression"); sets classes.
 * rows/n_rows: the data rows used (rows with a missing target are skipped);
 * ycodes: class codes, or for regression the quantile bin (of REG_STRATA) of
 * each row, so the split is stratified either way. */
#define REG_STRATA 10
bool table_target(const kn_csv *csv, const char *path, const char *target, const char *task, schema *s,
                  int64_t **rows, int64_t *n_rows, int64_t **ycodes);
static inline bool schema_multilabel(const schema *s) { return s->n_labels > 0; }
/* The model's outputs: the classes, the labels, or 1 for regression. */
static inline int schema_outputs(const schema *s) {
    return s->regression ? 1 : s->n_labels ? s->n_labels : s->n_classes;
}
/* The split's strata: classes, target quantile bins or label combinations. */
static inline int schema_strata(const schema *s) {
    return s->regression ? REG_STRATA : s->n_labels ? s->n_strata : s->n_classes;
}
/* Whether column name is the target or one of the labels. */
bool schema_is_target(const schema *s, const char *name);
/* Table helpers shared with labels.c: a column's index by name (-1: none),
 * a cell without surrounding blanks (valid until the next call), the class
 * order (numbers numerically, otherwise bytes), the columns for a message. */
int table_col(const kn_csv *c, const char *name);
const char *cell_trimmed(const char *s);
int cmp_class_name(const void *a, const void *b);
char *table_columns_list(const kn_csv *c);
/* Decides the feature columns and their types (from all rows), then fits
 * vocabularies and statistics on the training rows only. */
bool table_fit(const kn_csv *csv, const char *path, const table_opts *o, const int64_t *train,
               int64_t n_train, schema *s);
/* Encodes the given rows with a fitted schema; csv columns are looked up by
 * name. need_target: the target column must be present and known. */
bool table_encode(const kn_csv *csv, const char *path, schema *s, const int64_t *rows, int64_t n,
                  bool need_target, encoded *out);
void encoded_free(encoded *e);
void schema_free(schema *s);
void schema_print(const schema *s, FILE *f);

/* Stratified, reproducible split of n rows with class codes y into test,
 * validation and train parts (fractions of each class, rounded). */
typedef struct {
    int64_t *train, *val, *test;
    int64_t n_train, n_val, n_test;
} split;
bool split_stratified(const int64_t *rows, const int64_t *y, int64_t n, int n_classes,
                      double test_frac, double val_frac, uint64_t seed, split *out);
void split_free(split *s);
/* splitmix64 / Fisher-Yates, identical in bench/cli/kiln_split.py. */
uint64_t rng_next(uint64_t *state);
void shuffle_i64(int64_t *a, int64_t n, uint64_t *state);

/* ---- the model ----------------------------------------------------------------- */
typedef struct {
    int layers[CLI_MAX_LAYERS];
    int n_layers;
    double dropout, emb_dropout;
} arch;

kn_module *model_build(const schema *s, const arch *a);
/* Forward over model inputs on the model's device. */
kn_tensor *model_forward(kn_module *m, kn_tensor *cat, kn_tensor *num);
/* Sets each embedding's "unknown" row to the training-frequency mean of its
 * other rows, so unseen categories get an average input. */
void model_fill_unknown(kn_module *m, const schema *s);
/* The schema as JSON text (malloc'ed), as saved in the model file. */
char *model_schema_json(const schema *s, const arch *a, const char *recipe);
bool model_save(kn_module *m, const schema *s, const arch *a, const char *recipe, const char *path);
/* Loads a model file; returns the module (on dev) and fills s and a. */
kn_module *model_load(const char *path, kn_device dev, schema *s, arch *a);

/* ---- training -------------------------------------------------------------------- */
typedef struct {
    const char *recipe; /* "default" or "tutorial" */
    int epochs;         /* maximum epochs */
    int64_t batch_size; /* 0: full batch */
    double lr, weight_decay;
    double val_split, test_split;
    int patience;       /* epochs without validation improvement; 0: no early stopping */
    bool class_weights;
    bool adamw;
    arch arch;
    uint64_t seed;
    bool quiet, json, stats, no_graph;
    /* checkpoints (checkpoint.c): saved to ckpt every `every` epochs;
     * resume_from: the checkpoint to continue from. schema_json and
     * fingerprint identify the run (data and options) for that check. */
    const char *ckpt, *resume_from;
    bool resume_has_best; /* the checkpoint holds best weights (ckpt_peek) */
    int every;
    const char *schema_json, *fingerprint;
    /* --devices: data parallel over dist's ranks (rank 0 is the model's
     * device); NULL: one device. */
    kn_dist *dist;
} train_opts;

/* The per-epoch history (--json "history", --plot), kept in the checkpoint as
 * the F64 extra "history" [epochs, HIST_COLS] so a resumed run has all of it.
 * NaN: none (no validation rows; accuracy of a regression; RMSE of a classifier). */
enum { H_EPOCH, H_TRAIN_LOSS, H_TRAIN_ACC, H_VAL_LOSS, H_VAL_METRIC /* accuracy, or R^2 */, H_VAL_RMSE, H_LR,
       H_SECONDS /* since the run's start, counting the runs before a resume */, HIST_COLS };
typedef struct {
    double (*row)[HIST_COLS];
    int n, cap;
    int from; /* the first epoch held: 1, or after a resume from a checkpoint without history, its epoch + 1 */
} train_history;
bool history_add(train_history *h, const double row[HIST_COLS]);
void history_free(train_history *h);
/* "history_from":N,"history":[{...}, ...] written into an open object. */
void history_json(const train_history *h, bool regression, FILE *f);

/* The training loop's own state, as a checkpoint holds it. */
typedef struct {
    int epoch, best_epoch, since_best, since_lr;
    double best_loss, lr, train_time;
    double train_loss, val_loss, val_acc; /* of the last epoch, for people reading the file */
    uint64_t shuffle;
    int64_t rows_seen;
    bool has_best, stopped;
    train_history *history; /* saved with the rest; filled by ckpt_load (NULL: not kept) */
} train_state;

/* DIR/checkpoint.safetensors (malloc'ed), after checking DIR is a directory
 * (made when create and absent); NULL with a message naming opt. */
char *ckpt_path(const char *opt, const char *dir, bool create);
/* The options that shape training, as JSON text (malloc'ed). */
char *ckpt_fingerprint(const train_opts *o, const char *class_weight);
/* order: the row order [n] (I64, CPU), saved and restored with the rest. */
bool ckpt_save(const char *path, kn_module *m, kn_optim *opt, kn_tensor *const *best, int n_best,
               kn_tensor *order, const train_state *ts, const train_opts *o);
/* Checks the checkpoint is this run's, then restores everything; leaves all
 * as it was on failure. best: the snapshot to fill (NULL when none). */
bool ckpt_load(const char *path, kn_module *m, kn_optim *opt, kn_tensor *const *best, int n_best,
               kn_tensor *order, train_state *ts, const train_opts *o);
/* Whether the checkpoint holds best weights (to make the snapshot first);
 * also the early check that --resume names a checkpoint of kiln train. */
bool ckpt_peek(const char *path, bool *has_best);
/* Ctrl-C: the first one asks training to stop after the current epoch. */
void interrupt_watch(void);
bool interrupt_requested(void);

/* Host copy of model inputs moved to a device. */
typedef struct {
    kn_tensor *cat, *num, *y;
    int64_t n;
} dev_data;
bool dev_data_make(const encoded *e, const schema *s, kn_device dev, dev_data *out);
void dev_data_free(dev_data *d);

typedef struct {
    int epochs_run, best_epoch;
    double seconds, best_val_loss;
    double samples_per_s;
    bool graph_used;
    bool interrupted; /* stopped by Ctrl-C */
    int resumed_from; /* the checkpoint's epoch, 0 when not resumed */
    double replica_spread; /* --devices: the largest parameter difference between rank 0 and another */
    train_history history; /* the caller frees it (history_free), also after a failure */
} train_result;

/* Forward in eval mode, in chunks, on the host: class probabilities [n, k];
 * multi-label: each label's probability of its positive value [n, L];
 * regression: the raw output, standardized [n]. */
float *predict_proba(kn_module *m, const dev_data *d, const schema *s);

/* The full `kiln train` after data preparation. */
bool train_run(kn_module *m, const schema *s, const train_opts *o, const dev_data *train,
               const dev_data *val, const float *class_weight, train_result *r);

/* The captured step (graph_step.c). Returns false when capture is not possible
 * or failed (the caller then trains eagerly). */
typedef struct graph_trainer graph_trainer;
graph_trainer *graph_trainer_new(kn_module *m, kn_optim *opt, const kn_loss_opts *lo,
                                 const dev_data *train, int64_t batch, int n_classes);
/* One epoch: the rows in perm (n of them) in batches of the captured size;
 * accumulates the loss sum and correct count on the device. */
bool graph_trainer_epoch(graph_trainer *g, const int64_t *perm, int64_t n, double *loss_sum,
                         int64_t *correct, int64_t *seen);
/* Recapture after the learning rate changed (it is baked into the graph). */
bool graph_trainer_recapture(graph_trainer *g);
void graph_trainer_free(graph_trainer *g);

/* ---- reports ----------------------------------------------------------------------- */
typedef struct {
    int k;
    int64_t *cm; /* k x k, rows true, columns predicted */
    int64_t n, correct;
    double loss;
    double *precision, *recall, *f1;
    int64_t *support;
    double macro[3], weighted[3];
    double auc; /* k == 2: ROC AUC (roc_auc); NaN otherwise */
} metrics;

/* Multi-label metrics (labels.c) at threshold 0.5, over the rows with every
 * label known. */
typedef struct {
    int L;
    int64_t n;
    int64_t *tp, *fp, *fn, *tn;
    double *precision, *recall, *f1, *accuracy, *pos_rate, *pred_rate;
    double micro_f1, macro_f1, subset_accuracy, hamming_loss, mean_accuracy, loss;
} ml_metrics;
/* proba [n, L]; ym [n, L] 0/1 targets, y[i] < 0: row left out; pos_weight [L]
 * weighs the positive terms of the loss (NULL: 1). */
bool ml_metrics_compute(const float *proba, const float *ym, const int64_t *y, int64_t n, int L,
                        const float *pos_weight, ml_metrics *m);
void ml_metrics_free(ml_metrics *m);
void ml_report_print(const ml_metrics *m, const schema *s, const char *what, FILE *f);
/* JSON members written into an open object. */
void ml_report_json(const ml_metrics *m, const schema *s, FILE *f);
/* table_target for a list of >= 2 columns (labels.c); ys: strata codes. */
bool table_labels(const kn_csv *csv, const char *path, const char *list, schema *s, int64_t **rows, int64_t *n_rows,
                  int64_t **ys);
/* --class-weight balanced for labels: each label's negatives over positives
 * in the training rows (NULL: none, or out of memory with a message). */
float *label_pos_weights(const char *mode, const encoded *e, int L, const char **desc);

/* The two-class report's extras (k == 2): the ROC AUC of the scores of class
 * 1, ties counted by average rank (NaN when one class is absent); the same
 * for either class. */
double roc_auc(const float *score, int stride, const int64_t *y, int64_t n, int64_t pos_code);
/* Which of two values is the positive one: the one that reads as true (1,
 * true, yes, y, t, positive, pos; any case) when exactly one does, else the
 * second (v[1], the later in class order). */
int positive_of(const char *const v[2]);

/* Regression metrics in the target's units. */
typedef struct {
    int64_t n;
    double rmse, mae, r2, mse_std; /* mse_std: in standardized units (the training loss) */
    double resid_q[5];             /* residual (actual - predicted) min, 25 %, median, 75 %, max */
} reg_metrics;
/* pred: standardized outputs; y: targets (NaN: skipped). */
bool reg_metrics_compute(const float *pred, const double *y, int64_t n, double mean, double std, reg_metrics *m);
void reg_report_print(const reg_metrics *m, const char *what, const char *target, FILE *f);
void reg_report_json(const reg_metrics *m, FILE *f);

bool metrics_compute(const float *proba, const int64_t *y, int64_t n, int k, const float *class_weight,
                     metrics *m);
void metrics_free(metrics *m);
void report_print(const metrics *m, char *const *classes, FILE *f);
/* JSON: {"accuracy":..., ...} members written into an open object. */
void report_json_metrics(const metrics *m, char *const *classes, FILE *f);
void json_str(FILE *f, const char *s);

typedef struct {
    bool tty, quiet;
    const char *metric; /* "acc", or "r2" for regression */
    int total_epochs;
    int stop_in;        /* epochs before early stopping would end the run; -1: none */
    double start, last_draw;
    int last_logged;
} progress;
void progress_begin(progress *p, int total_epochs, bool quiet);
void progress_update(progress *p, int epoch, double loss, double train_acc, double val_loss,
                     double val_acc, double rows_per_s, bool improved);
void progress_end(progress *p);

/* Shared by `kiln train` and its cross-validation (train_cmd.c): the default
 * recipe's batch size for n training rows, and the class weights (NULL: none). */
int64_t auto_batch(int64_t n);
float *class_weights(const char *mode, const int64_t *y, int64_t n, int k, const char **desc);

/* One training run's data (prepared.c), shared by `kiln train` and each
 * cross-validation fold: the train, validation and test rows encoded with
 * the fitted schema, then on the device, and the class or label weights
 * (cw, NULL: none). Zero-initialise it; prepared_run_free frees it all,
 * also after a failure part way. */
typedef struct {
    encoded etr, eva, ete;
    dev_data dtr, dva, dte;
    float *cw;
} prepared_run;
bool prepared_run_encode(prepared_run *r, const kn_csv *csv, const char *path, schema *s, const int64_t *train,
                         int64_t n_train, const int64_t *val, int64_t n_val, const int64_t *test, int64_t n_test);
/* mode: --class-weight's value; desc: what was applied ("none" when nothing). */
void prepared_run_weights(prepared_run *r, const schema *s, const char *mode, const char **desc);
bool prepared_run_to_device(prepared_run *r, const schema *s, kn_device dev);
void prepared_run_free(prepared_run *r);

/* ---- cross-validation (cv.c): `kiln train --cv K` ------------------------------------ */
typedef struct {
    const char *file, *target, *task, *cw; /* task, cw: NULL for the defaults */
    char delimiter;
    int k;        /* folds */
    table_opts t;
    train_opts o; /* the recipe applied, as a normal run's (batch_size -1: by data size) */
} cv_job;
int cv_run(const cv_job *j, kn_device dev);

/* ---- pictures (plot.c) ------------------------------------------------------------------ */
typedef enum { PLOT_PNG, PLOT_SVG } plot_format;
/* The format from path's extension (.png or .svg, any case); false with a message naming opt. */
bool plot_format_of(const char *opt, const char *path, plot_format *fmt);
/* The training curves and, when test is not NULL (a classifier's test
 * metrics), the test confusion matrix, written atomically to path. */
bool plot_write(const char *path, plot_format fmt, const schema *s, const train_history *h, const metrics *test);

/* ---- commands ------------------------------------------------------------------------ */
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_explain(int argc, char **argv); /* explain.c: permutation feature importance */
int cmd_devices(int argc, char **argv);

/* Option helpers (main.c). */
bool opt_is(const char *arg, const char *name, const char **value, int *i, int argc, char **argv);
bool parse_int_opt(const char *name, const char *v, long long lo, long long hi, long long *out);
bool parse_double_opt(const char *name, const char *v, double lo, double hi, double *out);
bool parse_delimiter(const char *v, char *out);
bool pick_device(const char *name, kn_device *dev);
/* Before any work: out (given by option opt) is none of the inputs (the same
 * file, through any link) and can be written (kn_file_check_writable). */
bool out_path_ok(const char *opt, const char *out, const char *const *inputs, int n_inputs);
void print_fallback_stats(FILE *f);

#endif
