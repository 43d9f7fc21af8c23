/* The autograd tape: nodes recorded by ops, and the reverse walk. */
#include "core/internal.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local int no_grad_depth;

void kn_no_grad_begin(void) { no_grad_depth++; }
void kn_no_grad_end(void) {
    if (no_grad_depth > 0) no_grad_depth--;
}
bool kn_grad_enabled(void) { return no_grad_depth == 0; }

kn_tensor *kn_requires_grad_(kn_tensor *t, bool requires_grad) {
    if (!t) return kn__err_null("requires_grad"), NULL;
    if (t->grad_fn) {
        kn__err(KN_ERR_AUTOGRAD, "requires_grad: only leaf tensors can be marked (this one was made by '%s'); use kn_detach first",
                t->grad_fn->name);
        return NULL;
    }
    /* Complex leaves too: their gradient is the complex tensor whose real view is
     * the gradient of their real view (dL/dRe + i dL/dIm), as in PyTorch. */
    if (requires_grad && !kn_dtype_is_float(t->dtype) && !kn_dtype_is_complex(t->dtype)) {
        kn__err(KN_ERR_DTYPE,
                "requires_grad: only floating-point and complex tensors can require gradients, not %s",
                kn_dtype_name(t->dtype));
        return NULL;
    }
    t->requires_grad = requires_grad;
    return t;
}

bool kn_requires_grad(const kn_tensor *t) { return t && t->requires_grad; }
kn_tensor *kn_grad(const kn_tensor *t) { return t ? t->grad : NULL; }
bool kn_has_grad_fn(const kn_tensor *t) { return t && t->grad_fn; }
const char *kn_grad_fn_name(const kn_tensor *t) { return t && t->grad_fn ? t->grad_fn->name : NULL; }

void kn_zero_grad(kn_tensor *t) {
    if (!t) return;
    kn_release(t->grad);
    t->grad = NULL;
}

kn_tensor *kn_detach(kn_tensor *t) {
    if (!t) return kn__err_null("detach"), NULL;
    return kn__scoped(kn__alias(t, t->ndim, t->shape, t->stride, t->offset));
}

/* ---- nodes -------------------------------------------------------------------------
 * One allocation per node, so recording stays one calloc: the node, in[],
 * room for SAVED_INLINE saved tensors and their versions (as many as kiln's
 * ops save), needs[], and the op's state, aligned for any type. A node that
 * saves more moves saved[] to the heap (capacity a power of two). */
#define SAVED_INLINE 6

typedef struct {
    size_t in, saved, versions, needs, state, total;
} node_layout;

static size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

static node_layout layout_of(int n_in, size_t state_size) {
    node_layout l;
    l.in = align_up(sizeof(kn_node), _Alignof(kn_tensor *));
    l.saved = l.in + (size_t)n_in * sizeof(kn_tensor *);
    l.versions = l.saved + SAVED_INLINE * sizeof(kn_tensor *);
    l.needs = l.versions + SAVED_INLINE * sizeof(uint32_t);
    l.state = align_up(l.needs + (size_t)n_in * sizeof(bool), _Alignof(max_align_t));
    l.total = l.state + state_size;
    return l;
}

static kn_tensor **inline_saved(const kn_node *n) {
    return (kn_tensor **)((char *)n + layout_of(n->n_in, 0).saved);
}

kn_node *kn__record(kn_tensor *out, const char *name, kn_backward_fn backward, int n_in,
                    kn_tensor *const *inputs, size_t state_size) {
    if (!out || no_grad_depth > 0 || n_in < 0) return NULL;
    bool any = false;
    for (int k = 0; k < n_in; k++)
        if (inputs[k] && inputs[k]->requires_grad) any = true;
    if (!any) return NULL;
    node_layout l = layout_of(n_in, state_size);
    kn_node *n = calloc(1, l.total);
    if (!n) {
        kn__err(KN_ERR_OOM, "%s: out of memory for the autograd tape", name);
        return NULL;
    }
    char *base = (char *)n;
    n->name = name;
    n->backward = backward;
    n->n_in = n_in;
    n->in = (kn_tensor **)(base + l.in);
    n->needs = (bool *)(base + l.needs);
    n->saved = (kn_tensor **)(base + l.saved);
    n->saved_version = (uint32_t *)(base + l.versions);
    n->state = state_size ? base + l.state : NULL;
    for (int k = 0; k < n_in; k++) {
        n->in[k] = kn_retain(inputs[k]);
        n->needs[k] = inputs[k] && inputs[k]->requires_grad;
    }
    n->out_ndim = out->ndim;
    memcpy(n->out_shape, out->shape, sizeof out->shape);
    n->out_dtype = out->dtype;
    out->requires_grad = true;
    out->grad_fn = n;
    return n;
}

static int64_t saved_capacity(const kn_node *n) {
    if (n->saved == inline_saved(n)) return SAVED_INLINE;
    int64_t cap = 8;
    while (cap < n->n_saved) cap *= 2;
    return cap;
}

/* Makes slots [0, want) exist (new ones NULL); false (with an error) when out of memory. */
static bool grow_saved(kn_node *n, int want) {
    int64_t cap = saved_capacity(n);
    if (want > cap) {
        int64_t ncap = 8;
        while (ncap < want) ncap *= 2;
        /* saved[] and saved_version[] share one block. */
        char *block = calloc((size_t)ncap, sizeof(kn_tensor *) + sizeof(uint32_t));
        if (!block) {
            kn__err(KN_ERR_OOM, "%s: out of memory for the autograd tape", n->name);
            return false;
        }
        kn_tensor **saved = (kn_tensor **)block;
        uint32_t *version = (uint32_t *)(block + (size_t)ncap * sizeof(kn_tensor *));
        if (n->n_saved) {
            memcpy(saved, n->saved, (size_t)n->n_saved * sizeof *saved);
            memcpy(version, n->saved_version, (size_t)n->n_saved * sizeof *version);
        }
        if (n->saved != inline_saved(n)) free(n->saved);
        else memset(n->saved, 0, SAVED_INLINE * (sizeof(kn_tensor *) + sizeof(uint32_t)));
        n->saved = saved;
        n->saved_version = version;
    }
    n->n_saved = want; /* slots past the old count are zero: calloc, or cleared by drop_saved */
    return true;
}

void kn__save(kn_node *node, int k, kn_tensor *t) {
    if (!node || k < 0) return;
    /* A NULL t still makes slot k exist, so a rule may read saved[k] of any slot it saved. */
    if (k >= node->n_saved && !grow_saved(node, k + 1)) {
        node->backward = NULL; /* a backward through it fails instead of reading past saved[] */
        return;
    }
    if (!t) return;
    /* An alias, not t itself: saving an op's own output must not make a cycle. */
    kn_release(node->saved[k]);
    node->saved[k] = kn__alias(t, t->ndim, t->shape, t->stride, t->offset);
    node->saved_version[k] = t->storage->version;
}

static void drop_saved(kn_node *n) {
    for (int k = 0; k < n->n_saved; k++) {
        kn_release(n->saved[k]);
        n->saved[k] = NULL;
        n->saved_version[k] = 0;
    }
    n->n_saved = 0;
    kn_tensor **in_node = inline_saved(n);
    if (n->saved != in_node) {
        free(n->saved);
        n->saved = in_node;
        n->saved_version = (uint32_t *)(in_node + SAVED_INLINE);
    }
}

void kn__node_free(kn_node *n) {
    drop_saved(n);
    for (int k = 0; k < n->n_in; k++) kn_release(n->in[k]);
    kn_release(n->grad_acc);
    free(n);
}

/* ---- backward -------------------------------------------------------------------- */
/* acc (owned, may be NULL) + g (owned) -> owned sum, in dtype dt. A leaf's
 * gradient is stored dense (broadcast views with stride 0 would surprise
 * optimizers and users); gradients flowing between nodes stay views, which
 * every op accepts, so no copy is made on the way. */
static kn_tensor *accumulate(kn_tensor *acc, kn_tensor *g, kn_dtype dt, bool leaf) {
    kn_scope s = kn_scope_begin();
    kn_tensor *r = g->dtype == dt ? g : kn_cast(g, dt);
    if (acc) r = kn_add(acc, r);
    /* A leaf's gradient must be its own: not a view, and not a tensor that
     * another leaf or the caller also holds (pass-through rules such as add
     * hand the same gradient to several inputs). */
    if (leaf && r && (!kn__is_contiguous(r) || (r == g && (g->refcount > 1 || g->storage->refcount > 1))))
        r = kn_clone(r);
    kn_retain(r);
    kn_scope_end(s);
    kn_release(acc);
    kn_release(g);
    return r;
}

typedef struct {
    kn_node **items;
    int64_t len, cap;
} node_list;

static bool push(node_list *l, kn_node *n) {
    if (l->len == l->cap) {
        int64_t cap = l->cap ? 2 * l->cap : 64;
        kn_node **items = realloc(l->items, (size_t)cap * sizeof *items);
        if (!items) return false;
        l->items = items;
        l->cap = cap;
    }
    l->items[l->len++] = n;
    return true;
}

/* Post-order DFS without recursion (graphs can be thousands of nodes deep). */
static kn_status topo_sort(kn_node *root, node_list *order) {
    static _Atomic uint64_t stamp_counter;
    uint64_t stamp = ++stamp_counter;
    node_list stack = {0};
    node_list child_idx = {0}; /* parallel stack of next-child indices, stored as pointers */
    kn_status s = KN_OK;
    root->visit = stamp;
    if (!push(&stack, root) || !push(&child_idx, NULL)) s = KN_ERR_OOM;
    while (s == KN_OK && stack.len) {
        kn_node *n = stack.items[stack.len - 1];
        intptr_t k = (intptr_t)child_idx.items[child_idx.len - 1];
        if (k < n->n_in) {
            child_idx.items[child_idx.len - 1] = (kn_node *)(k + 1);
            kn_tensor *in = n->in[k];
            if (n->needs[k] && in && in->grad_fn && in->grad_fn->visit != stamp) {
                in->grad_fn->visit = stamp;
                if (!push(&stack, in->grad_fn) || !push(&child_idx, NULL)) s = KN_ERR_OOM;
            }
        } else {
            stack.len--;
            child_idx.len--;
            if (!push(order, n)) s = KN_ERR_OOM;
        }
    }
    free(stack.items);
    free(child_idx.items);
    return s == KN_OK ? s : kn__err(s, "backward: out of memory");
}

/* ---- the walk, node by node ------------------------------------------------------- */
/* A leaf that requires grad and is an input of some node: its gradient is
 * final once the last of those nodes (the smallest index of `order`, which
 * is walked from its end) has run. */
typedef struct {
    kn_tensor *leaf;
    int64_t last; /* index in order of the last node feeding it */
    int slot;     /* which input of that node it is */
    bool got;     /* a gradient reached it in this backward */
} leaf_use;

struct kn__backward {
    node_list order;
    int64_t i;             /* the next node: order.items[i], walked down to 0 */
    kn_grad_ready_fn ready; /* NULL: no hook, no bookkeeping */
    void *ctx;
    leaf_use *uses; /* sorted by leaf, one each */
    int64_t n_uses;
    int64_t *fire; /* indices into uses, by decreasing last */
    int64_t next_fire;
    kn_status status;
};

static int cmp_use_leaf(const void *a, const void *b) {
    const leaf_use *x = a, *y = b;
    uintptr_t p = (uintptr_t)x->leaf, q = (uintptr_t)y->leaf;
    if (p != q) return p < q ? -1 : 1;
    if (x->last != y->last) return x->last < y->last ? -1 : 1;
    return x->slot < y->slot ? -1 : x->slot > y->slot;
}

static _Thread_local const leaf_use *fire_sort_base;
/* By decreasing last, then by input slot: an order that depends on the
 * graph only, not on where the tensors are in memory, so replicas of one
 * model in several processes see the same sequence. */
static int cmp_fire(const void *a, const void *b) {
    const leaf_use *x = fire_sort_base + *(const int64_t *)a, *y = fire_sort_base + *(const int64_t *)b;
    if (x->last != y->last) return x->last > y->last ? -1 : 1;
    return x->slot < y->slot ? -1 : x->slot > y->slot;
}

/* Each leaf's last node and the order in which the leaves become final. */
static kn_status plan_hooks(kn__backward *b) {
    int64_t n = 0, cap = 0;
    leaf_use *u = NULL;
    for (int64_t i = 0; i < b->order.len; i++) {
        kn_node *nd = b->order.items[i];
        for (int k = 0; k < nd->n_in; k++) {
            kn_tensor *in = nd->in[k];
            if (!nd->needs[k] || !in || in->grad_fn || !in->requires_grad) continue;
            if (n == cap) {
                int64_t c = cap ? 2 * cap : 32;
                leaf_use *nu = realloc(u, (size_t)c * sizeof *nu);
                if (!nu) return free(u), kn__err(KN_ERR_OOM, "backward: out of memory");
                u = nu, cap = c;
            }
            u[n++] = (leaf_use){in, i, k, false};
        }
    }
    if (n) qsort(u, (size_t)n, sizeof *u, cmp_use_leaf);
    int64_t m = 0; /* one per leaf: its smallest index comes first */
    for (int64_t j = 0; j < n; j++)
        if (m == 0 || u[m - 1].leaf != u[j].leaf) u[m++] = u[j];
    b->uses = u, b->n_uses = m;
    if (m && !(b->fire = malloc((size_t)m * sizeof *b->fire))) return kn__err(KN_ERR_OOM, "backward: out of memory");
    for (int64_t j = 0; j < m; j++) b->fire[j] = j;
    fire_sort_base = u; /* qsort has no context argument in C11 */
    if (m) qsort(b->fire, (size_t)m, sizeof *b->fire, cmp_fire);
    return KN_OK;
}

static leaf_use *find_use(kn__backward *b, kn_tensor *leaf) {
    int64_t lo = 0, hi = b->n_uses;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if ((uintptr_t)b->uses[mid].leaf < (uintptr_t)leaf) lo = mid + 1;
        else hi = mid;
    }
    return lo < b->n_uses && b->uses[lo].leaf == leaf ? &b->uses[lo] : NULL;
}

/* The hooks of the leaves whose last node was order[i] (or an earlier one, skipped). */
static kn_status fire_ready(kn__backward *b, int64_t i) {
    kn_status s = KN_OK;
    while (s == KN_OK && b->next_fire < b->n_uses && b->uses[b->fire[b->next_fire]].last >= i) {
        leaf_use *u = &b->uses[b->fire[b->next_fire++]];
        if (u->got && u->leaf->grad) {
            s = b->ready(u->leaf, b->ctx);
            if (s != KN_OK && kn_error_code() == KN_OK) s = kn__err(s, "backward: a gradient hook failed");
        }
    }
    return s;
}

/* Runs order[i]: its backward, and its input gradients accumulated. */
static kn_status run_node(kn__backward *b, kn_node *n) {
    if (!n->grad_acc) return KN_OK;
    if (n->consumed)
        return kn__err(KN_ERR_AUTOGRAD, "backward: the tape of '%s' was already used by an earlier backward", n->name);
    if (!n->backward) return kn__err(KN_ERR_AUTOGRAD, "backward: '%s' is not differentiable", n->name);
    for (int k = 0; k < n->n_saved; k++)
        if (n->saved[k] && n->saved[k]->storage->version != n->saved_version[k])
            return kn__err(KN_ERR_AUTOGRAD, "backward: a tensor that '%s' saved for its gradient was modified in place (copy_/fill_) after the op ran; write into a copy instead",
                           n->name);
    kn_tensor *gin_small[8], **gin = gin_small;
    if (n->n_in > 8 && !(gin = malloc((size_t)n->n_in * sizeof *gin))) return kn__err(KN_ERR_OOM, "backward: out of memory");
    for (int k = 0; k < n->n_in; k++) gin[k] = NULL;
    kn_scope sc = kn_scope_begin();
    kn_status s = n->backward(n, n->grad_acc, gin);
    for (int k = 0; k < n->n_in; k++) {
        if (s != KN_OK || !n->needs[k]) gin[k] = NULL;
        kn_retain(gin[k]);
    }
    kn_scope_end(sc);
    if (s != KN_OK && kn_error_code() == KN_OK) s = kn__err(s, "backward: '%s' failed", n->name);
    for (int k = 0; k < n->n_in; k++) {
        kn_tensor *in = n->in[k], *g = gin[k];
        if (!g) continue;
        if (in->grad_fn) {
            in->grad_fn->grad_acc = accumulate(in->grad_fn->grad_acc, g, in->dtype, false);
            if (!in->grad_fn->grad_acc && s == KN_OK) s = kn_error_code();
        } else if (in->requires_grad) {
            in->grad = accumulate(in->grad, g, in->dtype, true);
            if (!in->grad && s == KN_OK) s = kn_error_code();
            leaf_use *u = b->ready ? find_use(b, in) : NULL;
            if (u) u->got = true;
        } else {
            kn_release(g);
        }
    }
    if (gin != gin_small) free(gin);
    kn_release(n->grad_acc);
    n->grad_acc = NULL;
    return s;
}

kn__backward *kn__backward_begin(kn_tensor *root, kn_tensor *grad, kn_grad_ready_fn ready, void *ctx) {
    if (!root) return kn__err_null("backward"), NULL;
    if (!root->requires_grad)
        return kn__err(KN_ERR_AUTOGRAD, "backward: the tensor does not require grad (no input of the ops that made it requires grad)"), NULL;
    /* A gradient of 1 is defined for a real loss only (PyTorch: "grad can be
     * implicitly created only for real scalar outputs"). */
    if (!grad && kn_dtype_is_complex(root->dtype))
        return kn__err(KN_ERR_AUTOGRAD, "backward: the tensor is %s; backward starts from a real loss (take kn_real, "
                       "kn_abs or kn_view_as_real of it first), or pass its gradient to kn_backward_with",
                       kn_dtype_name(root->dtype)), NULL;
    kn__backward *b = calloc(1, sizeof *b);
    if (!b) return kn__err(KN_ERR_OOM, "backward: out of memory"), NULL;
    b->ready = ready, b->ctx = ctx;
    b->i = -1; /* no node yet */
    kn_scope outer = kn_scope_begin();
    kn_tensor *g0 = grad ? grad : kn_ones_like(root);
    if (!g0) {
        kn_scope_end(outer);
        return free(b), NULL;
    }
    if (g0->ndim != root->ndim || memcmp(g0->shape, root->shape, (size_t)root->ndim * 8)) {
        char x[96], y[96];
        kn_scope_end(outer);
        kn__err(KN_ERR_SHAPE, "backward: gradient of shape %s for a tensor of shape %s",
                kn__shape_str(g0->ndim, g0->shape, x, sizeof x), kn__shape_str(root->ndim, root->shape, y, sizeof y));
        return free(b), NULL;
    }
    kn_retain(g0);
    kn_scope_end(outer);
    kn_no_grad_begin(); /* until kn__backward_end */
    if (!root->grad_fn) { /* a leaf: its gradient is final at once */
        root->grad = accumulate(root->grad, g0, root->dtype, true);
        b->status = root->grad ? KN_OK : kn_error_code();
        if (b->status == KN_OK && ready) b->status = ready(root, ctx);
        return b;
    }
    kn_status s = topo_sort(root->grad_fn, &b->order);
    if (s == KN_OK && root->grad_fn->consumed)
        s = kn__err(KN_ERR_AUTOGRAD, "backward: trying to backward through the graph a second time (the tape of '%s' was freed after the first backward)",
                    root->grad_fn->name);
    if (s == KN_OK && ready) s = plan_hooks(b);
    if (s != KN_OK) {
        kn_no_grad_end();
        kn_release(g0);
        free(b->order.items);
        free(b->uses);
        free(b->fire);
        return free(b), NULL;
    }
    root->grad_fn->grad_acc = accumulate(root->grad_fn->grad_acc, g0, root->dtype, false);
    b->i = b->order.len - 1;
    return b;
}

kn_status kn__backward_step(kn__backward *b, bool *done) {
    if (b->status == KN_OK && b->i >= 0) {
        int64_t i = b->i--;
        b->status = run_node(b, b->order.items[i]);
        if (b->status == KN_OK && b->ready) b->status = fire_ready(b, i);
    }
    *done = b->status != KN_OK || b->i < 0;
    return b->status;
}

kn_status kn__backward_end(kn__backward *b) {
    if (!b) return kn_error_code();
    bool done = false;
    while (!done) kn__backward_step(b, &done);
    kn_status s = b->status;
    /* The tape is spent: saved activations go now, not when the output dies. */
    for (int64_t i = 0; i < b->order.len; i++) {
        kn_node *n = b->order.items[i];
        kn_release(n->grad_acc);
        n->grad_acc = NULL;
        drop_saved(n);
        n->consumed = true;
    }
    kn_no_grad_end();
    free(b->order.items);
    free(b->uses);
    free(b->fire);
    free(b);
    return s;
}

kn_status kn_backward_hooked(kn_tensor *root, kn_tensor *grad, kn_grad_ready_fn ready, void *ctx) {
    kn__backward *b = kn__backward_begin(root, grad, ready, ctx);
    return b ? kn__backward_end(b) : kn_error_code();
}

kn_status kn_backward_with(kn_tensor *root, kn_tensor *grad) { return kn_backward_hooked(root, grad, NULL, NULL); }

kn_status kn_backward(kn_tensor *root) {
    if (root && kn_numel(root) != 1)
        return kn__err(KN_ERR_SHAPE, "backward: the tensor has %lld elements; call kn_backward_with and a gradient for non-scalar outputs",
                       (long long)kn_numel(root));
    return kn_backward_with(root, NULL);
}
