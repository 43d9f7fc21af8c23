/* kiln command line: the training step captured once and replayed (CUDA
 * graphs), used automatically where kn_graph_supported(dev).
 *
 * The step reads fixed input tensors and writes its loss and hit count into
 * preallocated ones. Full batch: the inputs are the training tensors
 * themselves. Mini-batches: each batch is copied into fixed-size buffers
 * before the replay and the last partial batch is dropped. The learning rate
 * is baked into the recording, so a change of it needs a new capture.
 * One eager step runs first, so the optimizer's lazily made state exists
 * before the capture; with a full batch it counts as the first epoch's step
 * (so the tutorial recipe takes exactly its 500 steps), with mini-batches it
 * is one extra step on the first batch of rows (not on a resume: the state is
 * there). Any failure returns NULL / false: the caller trains
 * eagerly instead. */
#include "cli.h"

#include <math.h>
#include <stdlib.h>

struct graph_trainer {
    kn_module *m;
    kn_optim *opt;
    const kn_loss_opts *lo;
    const dev_data *tr;
    int64_t bs;
    bool full;
    bool warm_pending; /* full batch: the warm-up step was the first epoch's step */
    kn_tensor *cat, *num, *y;          /* step inputs */
    kn_tensor *loss_out, *correct_out; /* step outputs */
    kn_tensor *loss_acc, *correct_acc; /* summed over an epoch, outside the graph */
    kn_graph *graph;
};

static kn_status step(void *p) {
    graph_trainer *g = p;
    kn_scope sc = kn_scope_begin();
    kn_optim_zero_grad(g->opt);
    kn_tensor *logits = model_forward(g->m, g->cat, g->num);
    kn_tensor *loss = kn_cross_entropy_ex(logits, g->y, g->lo);
    kn_status st = loss ? kn_backward(loss) : kn_error_code();
    if (st == KN_OK) st = kn_optim_step(g->opt);
    if (st == KN_OK) {
        kn_no_grad_begin();
        kn_tensor *hit = kn_sum_all(kn_cast(kn_eq(kn_argmax(kn_detach(logits), 1, false), g->y), KN_F32));
        st = kn_copy_(g->loss_out, kn_detach(loss));
        if (st == KN_OK) st = hit ? kn_copy_(g->correct_out, hit) : kn_error_code();
        kn_no_grad_end();
    }
    kn_scope_end(sc);
    return st;
}

/* Copies the batch perm[start, start + bs) into the input buffers. */
static bool load_batch(graph_trainer *g, const int64_t *perm, int64_t start) {
    if (g->full) return true;
    kn_device dev = kn_module_device(g->m);
    kn_scope sc = kn_scope_begin();
    kn_tensor *idx = kn_to(kn_from_data(perm + start, KN_I64, KN_SHAPE(g->bs), KN_CPU), dev);
    bool ok = idx && kn_copy_(g->y, kn_index_select(g->tr->y, 0, idx)) == KN_OK;
    if (ok && g->cat) ok = kn_copy_(g->cat, kn_index_select(g->tr->cat, 0, idx)) == KN_OK;
    if (ok && g->num) ok = kn_copy_(g->num, kn_index_select(g->tr->num, 0, idx)) == KN_OK;
    kn_scope_end(sc);
    return ok;
}

static kn_tensor *keep_new(kn_tensor *t) { return kn_retain(t); }

graph_trainer *graph_trainer_new(kn_module *m, kn_optim *opt, const kn_loss_opts *lo, const dev_data *tr,
                                 int64_t bs, int n_classes) {
    (void)n_classes;
    kn_device dev = kn_module_device(m);
    graph_trainer *g = calloc(1, sizeof *g);
    if (!g || bs < 2 || bs > tr->n) {
        free(g);
        return NULL;
    }
    *g = (graph_trainer){.m = m, .opt = opt, .lo = lo, .tr = tr, .bs = bs, .full = bs == tr->n};
    kn_scope sc = kn_scope_begin();
    if (g->full) {
        g->cat = kn_retain(tr->cat);
        g->num = kn_retain(tr->num);
        g->y = kn_retain(tr->y);
    } else {
        if (tr->cat) g->cat = keep_new(kn_empty(KN_SHAPE(bs, kn_size(tr->cat, 1)), KN_I64, dev));
        if (tr->num) g->num = keep_new(kn_empty(KN_SHAPE(bs, kn_size(tr->num, 1)), KN_F32, dev));
        g->y = keep_new(kn_empty(KN_SHAPE(bs), KN_I64, dev));
    }
    g->loss_out = keep_new(kn_zeros(0, NULL, KN_F32, dev));
    g->correct_out = keep_new(kn_zeros(0, NULL, KN_F32, dev));
    g->loss_acc = keep_new(kn_zeros(0, NULL, KN_F32, dev));
    g->correct_acc = keep_new(kn_zeros(0, NULL, KN_F32, dev));
    kn_scope_end(sc);
    int64_t *first = malloc((size_t)bs * sizeof *first);
    bool ok = first && g->y && g->loss_out && g->correct_out && g->loss_acc && g->correct_acc;
    for (int64_t i = 0; ok && i < bs; i++) first[i] = i;
    /* A resumed run's optimizer has its state already: no warm-up step, which
     * would be a step the uninterrupted run never took. */
    bool warm = kn_optim_steps(opt) == 0;
    ok = ok && (!warm || (load_batch(g, first, 0) && step(g) == KN_OK)); /* the warm-up step */
    free(first);
    if (ok) ok = graph_trainer_recapture(g);
    g->warm_pending = g->full && warm;
    if (!ok) {
        graph_trainer_free(g);
        return NULL;
    }
    return g;
}

bool graph_trainer_recapture(graph_trainer *g) {
    kn_graph_free(g->graph);
    g->graph = kn_graph_capture(kn_module_device(g->m), step, g);
    return g->graph != NULL;
}

bool graph_trainer_epoch(graph_trainer *g, const int64_t *perm, int64_t n, double *loss_sum, int64_t *correct,
                         int64_t *seen) {
    *seen = 0;
    for (int64_t i = 0; i + g->bs <= n; i += g->bs) {
        if (g->warm_pending) g->warm_pending = false; /* its outputs are already there */
        else if (!load_batch(g, perm, i) || kn_graph_replay(g->graph) != KN_OK) return false;
        kn_scope sc = kn_scope_begin();
        bool ok = kn_copy_(g->loss_acc, kn_add(g->loss_acc, kn_mul_scalar(g->loss_out, (double)g->bs))) == KN_OK &&
                  kn_copy_(g->correct_acc, kn_add(g->correct_acc, g->correct_out)) == KN_OK;
        kn_scope_end(sc);
        if (!ok) return false;
        *seen += g->bs;
    }
    *loss_sum = kn_item(g->loss_acc);
    *correct = (int64_t)llround(kn_item(g->correct_acc));
    kn_fill_(g->loss_acc, 0);
    kn_fill_(g->correct_acc, 0);
    return isfinite(*loss_sum);
}

void graph_trainer_free(graph_trainer *g) {
    if (!g) return;
    kn_graph_free(g->graph);
    kn_release(g->cat);
    kn_release(g->num);
    kn_release(g->y);
    kn_release(g->loss_out);
    kn_release(g->correct_out);
    kn_release(g->loss_acc);
    kn_release(g->correct_acc);
    free(g);
}
