/* kiln command line: the training loop behind both recipes.
 *
 * tutorial: the seed program's loop (full batch, constant learning rate, no
 *           validation, the last weights kept).
 * default:  shuffled mini-batches, a validation split, the learning rate
 *           halved when the validation loss stalls, early stopping with the
 *           best weights restored, class weights when classes are imbalanced.
 * On a device that can capture graphs, each step is one replayed graph
 * (graph_step.c); elsewhere the same step runs eagerly. */
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static kn_tensor *owned(kn_tensor *t) { /* a tensor in no scope: the caller releases it */
    return kn_retain(t);
}

bool dev_data_make(const encoded *e, const schema *s, kn_device dev, dev_data *out) {
    *out = (dev_data){0};
    out->n = e->n;
    if (e->n == 0) return true;
    kn_scope sc = kn_scope_begin();
    if (s->n_cat) out->cat = owned(kn_to(kn_from_data(e->cat, KN_I64, KN_SHAPE(e->n, s->n_cat), KN_CPU), dev));
    if (s->n_num) out->num = owned(kn_to(kn_from_data(e->num, KN_F32, KN_SHAPE(e->n, s->n_num), KN_CPU), dev));
    if (s->regression) { /* standardized targets, as the model predicts them */
        float *z = cli_alloc((size_t)e->n * sizeof *z);
        for (int64_t i = 0; z && i < e->n; i++) z[i] = (float)((e->yv[i] - s->y_mean) / s->y_std);
        if (z) out->y = owned(kn_to(kn_from_data(z, KN_F32, KN_SHAPE(e->n), KN_CPU), dev));
        free(z);
    } else if (s->n_labels) { /* 0/1 per label, as binary cross-entropy takes them */
        out->y = owned(kn_to(kn_from_data(e->ym, KN_F32, KN_SHAPE(e->n, s->n_labels), KN_CPU), dev));
    } else {
        out->y = owned(kn_to(kn_from_data(e->y, KN_I64, KN_SHAPE(e->n), KN_CPU), dev));
    }
    kn_scope_end(sc);
    if ((s->n_cat && !out->cat) || (s->n_num && !out->num) || !out->y) {
        cli_error("moving the data to %s: %s", kn_device_str(dev), kn_error());
        dev_data_free(out);
        return false;
    }
    return true;
}

void dev_data_free(dev_data *d) {
    kn_release(d->cat);
    kn_release(d->num);
    kn_release(d->y);
    *d = (dev_data){0};
}

static kn_tensor *rows_of(kn_tensor *t, int64_t start, int64_t len) { return t ? kn_narrow(t, 0, start, len) : NULL; }

float *predict_proba(kn_module *m, const dev_data *d, const schema *s) {
    int k = schema_outputs(s);
    float *out = cli_alloc(((size_t)d->n * (size_t)k + 1) * sizeof *out);
    if (!out) return NULL;
    bool was_training = kn_module_training(m);
    kn_module_train(m, false);
    kn_no_grad_begin();
    const int64_t chunk = 8192; /* bounds the activations' memory on large files */
    bool ok = true;
    for (int64_t i = 0; ok && i < d->n; i += chunk) {
        int64_t len = d->n - i < chunk ? d->n - i : chunk;
        kn_scope sc = kn_scope_begin();
        kn_tensor *p = model_forward(m, rows_of(d->cat, i, len), rows_of(d->num, i, len));
        if (s->n_labels) p = kn_sigmoid(p);
        else if (k > 1) p = kn_softmax(p, 1);
        ok = p && kn_to_host(p, out + i * k, KN_F32) == KN_OK;
        kn_scope_end(sc);
    }
    kn_no_grad_end();
    kn_module_train(m, was_training);
    if (!ok) {
        cli_error("running the model: %s", kn_error());
        free(out);
        return NULL;
    }
    return out;
}

/* ---- best weights -------------------------------------------------------------------- */
typedef struct {
    kn_tensor **t;
    int n;
} snapshot;

static bool snap_copy(kn_module *m, snapshot *s, bool save) {
    int n = 0;
    const kn_named_tensor *sd = kn_module_state_dict(m, &n);
    if (!sd) return false;
    kn_no_grad_begin();
    bool ok = true;
    if (!s->t) {
        s->t = cli_alloc(((size_t)n + 1) * sizeof *s->t);
        s->n = n;
        kn_scope sc = kn_scope_begin();
        for (int i = 0; s->t && i < n; i++) ok = ok && (s->t[i] = owned(kn_clone(kn_detach(sd[i].tensor))));
        kn_scope_end(sc);
    } else {
        for (int i = 0; i < n && ok; i++)
            ok = (save ? kn_copy_(s->t[i], sd[i].tensor) : kn_copy_(sd[i].tensor, s->t[i])) == KN_OK;
    }
    kn_no_grad_end();
    return ok && s->t;
}

static void snap_free(snapshot *s) {
    for (int i = 0; s->t && i < s->n; i++) kn_release(s->t[i]);
    free(s->t);
    *s = (snapshot){0};
}

static double read_and_zero(kn_tensor *t) {
    double v = kn_item(t);
    kn_fill_(t, 0);
    return v;
}

/* ---- one eager step -------------------------------------------------------------------- */
typedef struct {
    kn_module *m;
    kn_optim *opt;
    const kn_loss_opts *lo;
    kn_tensor *loss_acc, *correct_acc; /* summed on the device, read once an epoch */
    bool regression;                   /* MSE on the standardized target; no accuracy */
    bool multilabel;                   /* BCE with logits; correct counts labels, not rows */
} eager;

/* Forward and backward on bs rows, the loss (times `rows`, the rows it
 * stands for) and the hits added to the epoch's sums; no optimizer step. */
/* Forward, the epoch's sums, and backward; with keep, no backward: the loss
 * is handed back (retained) for the caller's (the data-parallel group's). */
static bool eager_pass(eager *e, kn_tensor *cat, kn_tensor *num, kn_tensor *y, int64_t bs, double rows,
                       kn_tensor **keep) {
    kn_scope sc = kn_scope_begin();
    kn_optim_zero_grad(e->opt);
    kn_tensor *logits = model_forward(e->m, cat, num);
    kn_tensor *loss = e->regression   ? kn_mse_loss(kn_reshape(logits, 1, (int64_t[]){bs}), y, KN_REDUCTION_MEAN)
                      : e->multilabel ? kn_bce_with_logits_loss(logits, y, e->lo)
                                      : kn_cross_entropy_ex(logits, y, e->lo);
    bool ok = loss != NULL;
    if (ok && e->regression) {
        kn_no_grad_begin();
        ok = kn_copy_(e->loss_acc, kn_add(e->loss_acc, kn_mul_scalar(kn_detach(loss), rows))) == KN_OK;
        kn_no_grad_end();
    } else if (ok) {
        kn_no_grad_begin();
        kn_tensor *lg = kn_detach(logits);
        kn_tensor *hit = e->multilabel /* labels predicted right: logit > 0 is the positive value */
                             ? kn_sum_all(kn_cast(kn_eq(kn_cast(kn_gt(lg, kn_zeros_like(lg)), KN_F32), y), KN_F32))
                             : kn_sum_all(kn_cast(kn_eq(kn_argmax(lg, 1, false), y), KN_F32));
        ok = kn_copy_(e->loss_acc, kn_add(e->loss_acc, kn_mul_scalar(kn_detach(loss), rows))) == KN_OK &&
             kn_copy_(e->correct_acc, kn_add(e->correct_acc, hit)) == KN_OK;
        kn_no_grad_end();
    }
    if (ok && keep) *keep = kn_retain(loss);
    else ok = ok && kn_backward(loss) == KN_OK;
    kn_scope_end(sc);
    return ok;
}

static bool eager_step(eager *e, kn_tensor *cat, kn_tensor *num, kn_tensor *y, int64_t bs) {
    return eager_pass(e, cat, num, y, bs, (double)bs, NULL) && kn_optim_step(e->opt) == KN_OK;
}

/* ---- data parallel (--devices) ---------------------------------------------------------
 * As PyTorch's DDP: a replica of the model on every rank (rank 0's is the
 * model itself), rank 0's weights broadcast to the others, each batch split
 * into one contiguous shard of its rows per rank, the gradients averaged
 * with each shard's share of the batch's loss as its weight, and the same
 * optimizer step on every rank. Validation and the final model are rank
 * 0's; batch norm normalizes by each shard's own statistics, as in DDP. */
enum { DP_MAX = 64 };
typedef struct {
    kn_dist *d;
    int n;
    kn_module *rep[DP_MAX];
    kn_optim *opt[DP_MAX];
    kn_loss_opts lo[DP_MAX];
    eager e[DP_MAX];
    dev_data data[DP_MAX]; /* ranks 1..: copies of the training rows (rank 0 uses the caller's) */
    const dev_data *tr[DP_MAX];
    int64_t *label;        /* the classes on the host, for class-weighted shares; NULL: rows */
    const float *cw;
} dp_group;

static void dp_free(dp_group *g) {
    for (int r = 1; r < g->n; r++) {
        kn_optim_free(g->opt[r]);
        kn_module_free(g->rep[r]);
        dev_data_free(&g->data[r]);
        kn_release(g->lo[r].weight ? g->lo[r].weight : g->lo[r].pos_weight);
        kn_release(g->e[r].loss_acc);
        kn_release(g->e[r].correct_acc);
    }
    free(g->label);
}

/* Rank 0 is (m, opt, e0) on the caller's data; the other ranks are made here. */
static bool dp_init(dp_group *g, kn_dist *d, kn_module *m, const eager *e0, const schema *s, const train_opts *o,
                    const kn_adam_opts *ao, const dev_data *tr, const float *cw) {
    *g = (dp_group){.d = d, .n = kn_dist_size(d), .cw = cw};
    g->rep[0] = m, g->opt[0] = e0->opt, g->e[0] = *e0, g->tr[0] = tr;
    bool ok = g->n <= DP_MAX;
    /* The replicas' initial weights are replaced by rank 0's: their draws
     * must not move the generator, or a resumed run (whose generator the
     * checkpoint restored before this) would draw other dropout masks than
     * the run it continues. */
    kn_generator *gen = kn_default_generator(), saved = *gen;
    kn_scope sc = kn_scope_begin();
    for (int r = 1; ok && r < g->n; r++) {
        kn_device dev = kn_dist_device(d, r);
        ok = (g->rep[r] = model_build(s, &o->arch)) && kn_module_to(g->rep[r], dev) == KN_OK &&
             (g->opt[r] = o->adamw ? kn_adamw(g->rep[r], *ao) : kn_adam(g->rep[r], *ao));
        g->lo[r] = *e0->lo;
        kn_tensor *w = e0->lo->weight ? e0->lo->weight : e0->lo->pos_weight;
        kn_tensor *wr = w ? kn_retain(kn_to(w, dev)) : NULL;
        if (e0->lo->weight) g->lo[r].weight = wr;
        else if (e0->lo->pos_weight) g->lo[r].pos_weight = wr;
        g->e[r] = (eager){g->rep[r], g->opt[r], &g->lo[r], kn_retain(kn_zeros(0, NULL, KN_F32, dev)),
                          kn_retain(kn_zeros(0, NULL, KN_F32, dev)), e0->regression, e0->multilabel};
        g->data[r] = (dev_data){.n = tr->n};
        if (tr->cat) g->data[r].cat = kn_retain(kn_to(tr->cat, dev));
        if (tr->num) g->data[r].num = kn_retain(kn_to(tr->num, dev));
        g->data[r].y = kn_retain(kn_to(tr->y, dev));
        g->tr[r] = &g->data[r];
        ok = ok && (!w || wr) && g->e[r].loss_acc && g->e[r].correct_acc && g->data[r].y &&
             (!tr->cat || g->data[r].cat) && (!tr->num || g->data[r].num);
    }
    kn_scope_end(sc);
    *gen = saved;
    if (ok && cw && !s->regression && !s->n_labels) { /* class weights: a shard's share is its weight sum */
        g->label = cli_alloc(((size_t)tr->n + 1) * sizeof *g->label);
        ok = g->label && kn_to_host(tr->y, g->label, KN_I64) == KN_OK;
    }
    ok = ok && kn_dist_broadcast_module(d, g->rep) == KN_OK;
    /* A resumed run: every rank's optimizer takes the checkpoint's state
     * (rank 0's was restored with the model), so the ranks go on taking
     * the same steps. The saved state is rank 0's, which is every rank's. */
    for (int r = 1; ok && o->resume_from && r < g->n; r++) {
        kn_safetensors *f = kn_checkpoint_load(o->resume_from, &(kn_checkpoint){.model = g->rep[r], .optim = g->opt[r]});
        ok = f != NULL;
        kn_safetensors_close(f);
    }
    if (!ok) {
        cli_error("setting up data-parallel training: %s", kn_error()[0] ? kn_error() : "out of memory");
        dp_free(g);
    }
    return ok;
}

/* One step on the batch rows[0..len): rank r on shard r. */
static bool dp_step(dp_group *g, const int64_t *rows, int64_t len) {
    double w[DP_MAX], total = 0;
    int64_t at[DP_MAX + 1];
    for (int r = 0; r <= g->n; r++) at[r] = len * r / g->n;
    for (int r = 0; r < g->n; r++) {
        w[r] = (double)(at[r + 1] - at[r]);
        if (g->label) { /* cross-entropy with class weights is a weighted mean: its share is the weights' */
            w[r] = 0;
            for (int64_t i = at[r]; i < at[r + 1]; i++) w[r] += g->cw[g->label[rows[i]]];
        }
        total += w[r];
    }
    bool ok = total > 0;
    kn_tensor *loss[DP_MAX] = {0};
    for (int r = 0; ok && r < g->n; r++) {
        w[r] /= total;
        kn_device dev = kn_dist_device(g->d, r);
        int64_t cnt = at[r + 1] - at[r];
        kn_scope sc = kn_scope_begin();
        kn_tensor *idx = kn_to(kn_from_data(rows + at[r], KN_I64, KN_SHAPE(cnt), KN_CPU), dev);
        const dev_data *t = g->tr[r];
        ok = eager_pass(&g->e[r], t->cat ? kn_index_select(t->cat, 0, idx) : NULL,
                        t->num ? kn_index_select(t->num, 0, idx) : NULL, kn_index_select(t->y, 0, idx), cnt,
                        w[r] * (double)len, &loss[r]);
        kn_scope_end(sc);
    }
    /* Every rank's backward, each bucket's all-reduce started as soon as it is ready. */
    ok = ok && kn_dist_backward(g->d, g->rep, loss, w, 0) == KN_OK;
    for (int r = 0; r < g->n; r++) kn_release(loss[r]);
    for (int r = 0; ok && r < g->n; r++) ok = kn_optim_step(g->opt[r]) == KN_OK;
    return ok;
}

/* The largest difference between a parameter of rank 0 and the same
 * parameter of another rank: the ranks take the same steps, so this stays
 * at rounding level unless something desynchronized them. */
static double dp_spread(dp_group *g) {
    int np = 0;
    const kn_named_tensor *p0 = kn_module_parameters(g->rep[0], &np);
    double worst = 0;
    for (int r = 1; p0 && r < g->n; r++) {
        int nr = 0;
        const kn_named_tensor *pr = kn_module_parameters(g->rep[r], &nr);
        for (int i = 0; pr && i < np && i < nr; i++) {
            kn_scope sc = kn_scope_begin();
            kn_tensor *a = kn_detach(p0[i].tensor), *b = kn_to(kn_detach(pr[i].tensor), kn_device_of(a));
            double d = kn_numel(a) ? kn_item(kn_max(kn_abs(kn_sub(a, b)), 0, NULL, false)) : 0;
            kn_scope_end(sc);
            worst = isnan(d) || d > worst ? d : worst;
        }
    }
    return worst;
}

/* The epoch's loss and hits summed over the ranks (rank 0's sums are the caller's). */
static void dp_epoch_sums(dp_group *g, double *loss, double *correct) {
    for (int r = 1; r < g->n; r++) {
        *loss += read_and_zero(g->e[r].loss_acc);
        *correct += read_and_zero(g->e[r].correct_acc);
    }
}


bool train_run(kn_module *m, const schema *s, const train_opts *o, const dev_data *tr, const dev_data *va,
               const float *cw, train_result *r) {
    *r = (train_result){0};
    kn_device dev = kn_module_device(m);
    kn_adam_opts ao = kn_adam_defaults(o->lr);
    ao.weight_decay = o->weight_decay;
    int64_t n = tr->n;
    int64_t *perm = cli_alloc(((size_t)n + 1) * sizeof *perm);
    if (!perm) return false;
    kn_optim *opt = o->adamw ? kn_adamw(m, ao) : kn_adam(m, ao);
    kn_scope data_scope = kn_scope_begin();
    kn_loss_opts lo = kn_loss_opts_default();
    /* cw: per-class weights, or for multi-label each label's positive weight. */
    kn_tensor *cwt = cw ? kn_to(kn_from_data(cw, KN_F32, KN_SHAPE(schema_outputs(s)), KN_CPU), dev) : NULL;
    if (s->n_labels) lo.pos_weight = cwt;
    else lo.weight = cwt;
    eager e = {m, opt, &lo, kn_zeros(0, NULL, KN_F32, dev), kn_zeros(0, NULL, KN_F32, dev), s->regression,
               s->n_labels > 0};
    if (!opt || (cw && !cwt) || !e.loss_acc || !e.correct_acc) {
        cli_error("setting up training: %s", kn_error());
        kn_scope_end(data_scope);
        kn_optim_free(opt);
        free(perm);
        return false;
    }
    bool full = o->batch_size <= 0 || o->batch_size >= n;
    int64_t bs = full ? n : o->batch_size;
    /* BatchNorm needs two rows: a last batch of one is dropped, and with
     * fixed-size captured steps every partial batch is. */
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    train_state ts = {.best_loss = INFINITY, .lr = o->lr, .shuffle = o->seed ^ 0x6b696c6e2d626174ULL};
    snapshot best = {0};
    r->history.from = 1;
    ts.history = &r->history; /* a resume brings the epochs before it */
    /* The row order is shuffled in place epoch after epoch, so it is part of
     * the state a checkpoint keeps (an extra beside the best weights). */
    if (o->resume_from) {
        kn_scope rs = kn_scope_begin();
        kn_tensor *order = kn_empty(KN_SHAPE(n), KN_I64, KN_CPU);
        bool loaded = order && (!o->resume_has_best || snap_copy(m, &best, true)) &&
                      ckpt_load(o->resume_from, m, opt, best.t, best.n, order, &ts, o) &&
                      kn_to_host(order, perm, KN_I64) == KN_OK;
        kn_scope_end(rs);
        if (!loaded) {
            snap_free(&best);
            kn_scope_end(data_scope);
            kn_optim_free(opt);
            free(perm);
            return false;
        }
        r->resumed_from = ts.epoch;
        r->best_epoch = ts.best_epoch;
        if (!r->history.n) r->history.from = ts.epoch + 1; /* a checkpoint without history */
    }
    uint64_t rng = ts.shuffle;

    /* --devices: the other ranks; data-parallel steps run eagerly. */
    dp_group dp = {0};
    bool par = o->dist && kn_dist_size(o->dist) > 1;
    if (par && !dp_init(&dp, o->dist, m, &e, s, o, &ao, tr, cw)) {
        snap_free(&best);
        kn_scope_end(data_scope);
        kn_optim_free(opt);
        free(perm);
        return false;
    }
    graph_trainer *g = NULL;
    /* The captured step is the (single-target) classifier's: cross-entropy
     * and argmax are baked into the graph, so regression and multi-label
     * (binary cross-entropy, a float target per label) train eagerly. */
    if (!par && !o->no_graph && !s->regression && !s->n_labels && kn_graph_supported(dev)) {
        g = graph_trainer_new(m, opt, &lo, tr, bs, s->n_classes);
        if (!g && !o->quiet && !o->json) cli_warn("graph capture failed (%s); training eagerly", kn_error());
    }
    r->graph_used = g != NULL;

    bool validate = va && va->n > 0;
    int64_t *vy = validate && !s->regression ? cli_alloc(((size_t)va->n + 1) * sizeof *vy) : NULL;
    float *vym = validate && s->n_labels ? cli_alloc(((size_t)va->n * (size_t)s->n_labels + 1) * sizeof *vym) : NULL;
    double *vyv = validate && s->regression ? cli_alloc((size_t)va->n * sizeof *vyv) : NULL;
    float *vz = vyv ? cli_alloc((size_t)va->n * sizeof *vz) : NULL;
    bool vy_ok = !validate || (s->regression ? vyv && vz && kn_to_host(va->y, vz, KN_F32) == KN_OK
                               : s->n_labels ? vy && vym && kn_to_host(va->y, vym, KN_F32) == KN_OK
                                             : vy && kn_to_host(va->y, vy, KN_I64) == KN_OK);
    for (int64_t i = 0; vy_ok && vym && i < va->n; i++) vy[i] = 0; /* training data has every label */
    for (int64_t i = 0; vy_ok && vyv && i < va->n; i++) vyv[i] = vz[i] * s->y_std + s->y_mean;
    free(vz);
    if (!vy_ok) {
        free(vym);
        free(vyv);
        free(vy);
        free(perm);
        snap_free(&best);
        graph_trainer_free(g);
        if (par) dp_free(&dp);
        kn_scope_end(data_scope);
        kn_optim_free(opt);
        return false;
    }
    double best_loss = ts.best_loss, lr = ts.lr;
    int since_best = ts.since_best, since_lr = ts.since_lr;
    progress pg = {0};
    progress_begin(&pg, o->epochs, o->quiet || o->json);
    pg.metric = s->regression ? "r2" : s->n_labels ? "label acc" : "acc";
    double t0 = cli_now(), train_time = ts.train_time;
    int64_t rows_seen = ts.rows_seen;
    bool ok = true, said = false; /* said: the failure's message is out already */
    /* The learning rate halves when the validation loss stalls: a plateau
     * schedule that goes on from the checkpoint's counters. */
    kn_plateau_opts po = kn_plateau_defaults();
    po.factor = 0.5;
    po.patience = (o->patience / 3 > 2 ? o->patience / 3 : 2) - 1;
    po.min_lr = o->lr / 64;
    po.eps = 0;
    kn_sched *plateau = validate && o->patience > 0 ? kn_sched_plateau(opt, po) : NULL;
    kn_plateau_state pst = {.best = best_loss, .num_bad_epochs = since_lr};
    if (validate && o->patience > 0 && (!plateau || kn_sched_plateau_set_state(plateau, &pst) != KN_OK)) ok = false;
    int epoch = ts.epoch + 1;
    /* The history's clock goes on from the last run's. */
    double secs0 = r->history.n ? r->history.row[r->history.n - 1][H_SECONDS] : ts.train_time;
    if (ts.stopped && !o->quiet && !o->json)
        printf("the checkpoint's run had stopped early at epoch %d; best epoch %d restored\n", ts.epoch, ts.best_epoch);
    interrupt_watch();
    for (; ok && !ts.stopped && epoch <= o->epochs; epoch++) {
        double te = cli_now();
        double loss_sum = 0;
        int64_t correct = 0, seen = 0;
        if (!full) shuffle_i64(perm, n, &rng);
        kn_module_train(m, true);
        if (g) {
            ok = graph_trainer_epoch(g, perm, n, &loss_sum, &correct, &seen);
        } else if (par && full) {
            ok = dp_step(&dp, perm, n);
            seen = n;
        } else if (par) { /* every shard of a batch needs two rows for batch norm */
            for (int64_t i = 0; ok && i + 2 * dp.n <= n; i += bs) {
                int64_t len = n - i < bs ? n - i : bs;
                if (len < 2 * dp.n) break;
                ok = dp_step(&dp, perm + i, len);
                seen += len;
            }
        } else if (full) {
            ok = eager_step(&e, tr->cat, tr->num, tr->y, n);
            seen = n;
        } else {
            for (int64_t i = 0; ok && i < n; i += bs) {
                int64_t len = n - i < bs ? n - i : bs;
                if (len < 2) break;
                kn_scope sc = kn_scope_begin();
                kn_tensor *idx = kn_to(kn_from_data(perm + i, KN_I64, KN_SHAPE(len), KN_CPU), dev);
                kn_tensor *cat = tr->cat ? kn_index_select(tr->cat, 0, idx) : NULL;
                kn_tensor *num = tr->num ? kn_index_select(tr->num, 0, idx) : NULL;
                ok = eager_step(&e, cat, num, kn_index_select(tr->y, 0, idx), len);
                kn_scope_end(sc);
                seen += len;
            }
        }
        if (!g && ok) {
            loss_sum = read_and_zero(e.loss_acc);
            double hits = read_and_zero(e.correct_acc);
            if (par) dp_epoch_sums(&dp, &loss_sum, &hits);
            correct = (int64_t)llround(hits);
        }
        if (!ok) break;
        rows_seen += seen;
        train_time += cli_now() - te;
        /* Multi-label: correct counts labels, so the accuracy is the mean label accuracy. */
        double per_row = s->n_labels ? (double)s->n_labels : 1;
        double tl = seen ? loss_sum / (double)seen : NAN,
               ta = seen && !s->regression ? (double)correct / ((double)seen * per_row) : NAN;
        if (!isfinite(tl)) {
            cli_error("training diverged at epoch %d (loss is %g); try a smaller --lr", epoch, tl);
            ok = false;
            said = true;
            break;
        }
        double vl = NAN, vacc = NAN, vrmse = NAN;
        bool improved = false;
        if (validate) {
            float *p = predict_proba(m, va, s);
            metrics vm;
            reg_metrics rm;
            ml_metrics mm;
            if (!p) {
                ok = false;
                said = true;
                break;
            }
            ok = s->regression ? reg_metrics_compute(p, vyv, va->n, s->y_mean, s->y_std, &rm)
                 : s->n_labels ? ml_metrics_compute(p, vym, vy, va->n, s->n_labels, cw, &mm)
                               : metrics_compute(p, vy, va->n, s->n_classes, cw, &vm);
            free(p);
            if (!ok) {
                said = true;
                break;
            }
            if (s->regression) {
                vl = rm.mse_std; /* the training loss's units */
                vacc = rm.r2;
                vrmse = rm.rmse;
            } else if (s->n_labels) { /* the loss (as trained, with pos_weight) and the mean label accuracy */
                vl = mm.loss;
                vacc = mm.mean_accuracy;
                ml_metrics_free(&mm);
            } else {
                vl = vm.loss;
                vacc = vm.n ? (double)vm.correct / (double)vm.n : NAN;
                metrics_free(&vm);
            }
            improved = isinf(best_loss) ? isfinite(vl) : vl < best_loss - 1e-4 * fabs(best_loss);
            if (improved) {
                best_loss = vl;
                r->best_epoch = epoch;
                since_best = since_lr = 0;
                if (!snap_copy(m, &best, true)) {
                    cli_error("keeping the best weights: %s", kn_error());
                    ok = false;
                    said = true;
                    break;
                }
            } else {
                since_best++;
                since_lr++;
            }
        }
        pg.stop_in = validate && o->patience > 0 ? o->patience - since_best : -1;
        progress_update(&pg, epoch, tl, ta, vl, vacc, (double)seen / (cli_now() - te), improved);
        /* lr: the rate this epoch ran with (a plateau halves it below, for the next). */
        if (!history_add(&r->history, (double[HIST_COLS]){[H_EPOCH] = epoch, [H_TRAIN_LOSS] = tl, [H_TRAIN_ACC] = ta,
                                                         [H_VAL_LOSS] = vl, [H_VAL_METRIC] = vacc,
                                                         [H_VAL_RMSE] = vrmse, [H_LR] = lr,
                                                         [H_SECONDS] = secs0 + cli_now() - t0})) {
            ok = false;
            said = true;
            break;
        }
        bool early = validate && o->patience > 0 && since_best >= o->patience;
        if (early && !o->quiet && !o->json) {
            progress_end(&pg);
            printf("early stop at epoch %d: no validation improvement for %d epochs; best epoch %d "
                   "(val loss %.4f) restored\n", epoch, o->patience, r->best_epoch, best_loss);
            pg.quiet = true;
        } else if (validate && o->patience > 0) {
            double before = lr;
            lr = kn_sched_plateau_step(plateau, vl);
            for (int k = 1; par && k < dp.n; k++) kn_optim_set_lr(dp.opt[k], lr); /* every rank steps alike */
            ok = kn_sched_plateau_state(plateau, &pst) == KN_OK;
            since_lr = pst.num_bad_epochs;
            if (lr != before && g && !graph_trainer_recapture(g)) {
                graph_trainer_free(g);
                g = NULL;
            }
        }
        bool stop = early || interrupt_requested();
        if (stop && !early) {
            r->interrupted = true;
            if (!o->quiet && !o->json) {
                progress_end(&pg);
                printf("interrupted: training stopped after epoch %d%s\n", epoch,
                       best.t ? "; the best weights so far restored" : "");
                pg.quiet = true;
            }
        }
        /* At the end of the epoch everything is consistent: the checkpoint
         * holds exactly what the next epoch starts from. */
        if (o->ckpt && (epoch % o->every == 0 || stop || epoch == o->epochs)) {
            ts = (train_state){.epoch = epoch, .best_epoch = r->best_epoch, .since_best = since_best,
                               .since_lr = since_lr, .best_loss = best_loss, .lr = lr,
                               .train_time = train_time, .train_loss = tl, .val_loss = vl, .val_acc = vacc,
                               .shuffle = rng, .rows_seen = rows_seen, .stopped = early,
                               .history = &r->history};
            kn_scope cs = kn_scope_begin();
            kn_tensor *order = kn_from_data(perm, KN_I64, KN_SHAPE(n), KN_CPU);
            if (!order) cli_error("saving the checkpoint: %s", kn_error());
            bool saved = order && ckpt_save(o->ckpt, m, opt, best.t, best.n, order, &ts, o);
            kn_scope_end(cs);
            if (!saved) {
                ok = false;
                said = true;
                break;
            }
            ts.stopped = false;
        }
        if (stop) {
            epoch++;
            break;
        }
    }
    r->epochs_run = epoch - 1;
    progress_end(&pg);
    /* Before rank 0 gets its best weights back. */
    r->replica_spread = par && ok ? dp_spread(&dp) : 0;
    if (par && ok && !(r->replica_spread <= 1e-3) && !o->json)
        cli_warn("the ranks' weights differ by up to %g after training: the replicas went apart", r->replica_spread);
    if (ok && validate && best.t && !snap_copy(m, &best, false)) {
        cli_error("restoring the best weights: %s", kn_error());
        ok = false;
        said = true;
    }
    if (ok) kn_device_synchronize(dev);
    r->seconds = cli_now() - t0;

    r->samples_per_s = train_time > 0 ? (double)rows_seen / train_time : 0;
    r->best_val_loss = best_loss;
    if (!ok && !said) cli_error("training at epoch %d: %s", epoch, kn_error()[0] ? kn_error() : "failed");
    kn_sched_free(plateau);
    graph_trainer_free(g);
    if (par) dp_free(&dp);
    snap_free(&best);
    free(perm);
    free(vy);
    free(vym);
    free(vyv);
    kn_scope_end(data_scope);
    kn_optim_free(opt);
    kn_module_train(m, false);
    return ok;
}
