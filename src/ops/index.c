/* Joining, splitting and indexing: concat, stack, split, index_select,
 * gather, index_add, embedding, masked_select, with their backward rules.
 * Index values are range-checked by the kernels (the op layer cannot read
 * them cheaply on a GPU); kernel errors name the kernel's op, so the ops that
 * reuse a kernel under another name re-label the message. */
#include "ops_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ----------------------------------------------------------------------------------- */
static bool index_dtype_ok(const char *op, const kn_tensor *index) {
    if (index->dtype == KN_I64 || index->dtype == KN_I32 || index->dtype == KN_U8) return true;
    kn__err(KN_ERR_DTYPE, "%s: indices must be int64, int32 or uint8, not %s", op,
            kn_dtype_name(index->dtype));
    return false;
}

/* index as a 1-D raw reference (a 0-d index is one entry). */
static kn_tensor *index_1d(const char *op, kn_tensor *index) {
    if (!index_dtype_ok(op, index)) return NULL;
    if (index->ndim == 1) return kn_retain(index);
    if (index->ndim == 0) return kn__alias(index, 1, (int64_t[]){1}, (int64_t[]){1}, index->offset);
    char s[128];
    kn__err(KN_ERR_SHAPE, "%s: index must be 1-D, got shape %s", op,
            kn__shape_str(index->ndim, index->shape, s, sizeof s));
    return NULL;
}

/* Re-records the pending error "from: ..." as "to: ...". */
static void rename_error(const char *from, const char *to) {
    const char *m = kn_error();
    size_t n = strlen(from);
    if (strncmp(m, from, n) != 0 || m[n] != ':') return;
    char rest[1024];
    snprintf(rest, sizeof rest, "%s", m + n);
    kn__err(kn_error_code(), "%s%s", to, rest);
}

/* dst (any strides) += src at index along dim, in place; src cast to dst's dtype. */
static kn_status index_add_into(kn_tensor *dst, int dim, kn_tensor *index, kn_tensor *src) {
    kn_tensor *s = kn__cast_raw(src, dst->dtype);
    if (!s) return kn_error_code();
    kn_index_add_args a = {.out = kn__view(dst), .src = kn__view(s), .index = kn__view(index), .dim = dim};
    kn_status st = kn__run(KN_OP_INDEX_ADD, dst->storage->device, &a);
    kn_release(s);
    return st;
}

/* a selected at idx (1-D) along d into a new tensor (raw). */
static kn_tensor *select_raw(kn_tensor *a, int d, kn_tensor *idx) {
    int64_t shape[KN_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[d] = idx->shape[0];
    kn_device dev = a->storage->device;
    kn_tensor *out = kn__new(a->ndim, shape, a->dtype, dev);
    if (!out) return NULL;
    kn_index_select_args args = {.out = kn__view(out), .x = kn__view(a), .index = kn__view(idx), .dim = d};
    return kn__run_out(KN_OP_INDEX_SELECT, dev, &args, out);
}

/* The dim of index_select, gather and index_add, for their backward rules. */
typedef struct {
    int dim;
} index_state;

/* "[*, 3]": t's shape with dim d left open. */
static const char *open_shape(const kn_tensor *t, int d, char *buf, size_t cap) {
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int k = 0; k < t->ndim && n < cap; k++) {
        if (k == d) n += (size_t)snprintf(buf + n, cap - n, k ? ", *" : "*");
        else n += (size_t)snprintf(buf + n, cap - n, k ? ", %lld" : "%lld", (long long)t->shape[k]);
    }
    if (n < cap) snprintf(buf + n, cap - n, "]");
    return buf;
}

/* ---- concat ------------------------------------------------------------------------------------ */
typedef struct {
    int dim;
    int64_t len[]; /* [n_in]: each input's size along dim */
} concat_state;

static kn_status concat_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    const concat_state *st = KN_STATE(n, concat_state);
    int dim = st->dim;
    int64_t off = 0;
    for (int k = 0; k < n->n_in; k++) {
        int64_t len = st->len[k];
        if (n->needs[k] && !(gin[k] = kn_narrow(g, dim, off, len))) return kn_error_code();
        off += len;
    }
    return KN_OK;
}

/* One allocation; each input is copied into its slice of it, so any backend
 * with a COPY kernel runs it. Checked inputs; raw result, recorded. */
static kn_tensor *concat_run(int n, kn_tensor *const *ts, int d, kn_dtype dt) {
    int nd = ts[0]->ndim;
    int64_t shape[KN_MAX_DIMS];
    memcpy(shape, ts[0]->shape, sizeof shape);
    shape[d] = 0;
    for (int k = 0; k < n; k++) shape[d] += ts[k]->shape[d];
    kn_device dev = ts[0]->storage->device;
    kn_tensor *out = kn__new(nd, shape, dt, dev);
    if (!out) return NULL;
    int64_t off = 0;
    for (int k = 0; k < n; k++) {
        int64_t len = ts[k]->shape[d];
        if (kn_numel(ts[k]) > 0) {
            /* Input k's slice of out, a strided view. */
            kn_copy_args a = {.out = kn__view(out), .x = kn__view(ts[k])};
            a.out.data = (char *)a.out.data + (size_t)(off * out->stride[d]) * kn_dtype_size(dt);
            a.out.shape[d] = len;
            if (kn__run(KN_OP_COPY, dev, &a) != KN_OK) {
                kn_release(out);
                return NULL;
            }
        }
        off += len;
    }
    kn_node *node = kn__record(out, "concat", concat_backward, n, ts,
                               sizeof(concat_state) + (size_t)n * sizeof(int64_t));
    if (node) {
        concat_state *st = KN_STATE(node, concat_state);
        st->dim = d;
        for (int k = 0; k < n; k++) st->len[k] = ts[k]->shape[d];
    }
    return out;
}

kn_tensor *kn_concat(int n, kn_tensor *const *ts, int dim) {
    if (n <= 0 || !ts) {
        kn__err(KN_ERR_INVALID, "concat: expected at least one tensor, got %d", n);
        return NULL;
    }
    for (int k = 0; k < n; k++)
        if (!ts[k]) return kn__err_null("concat"), NULL;
    if (!kn__same_device("concat", n, ts)) return NULL;
    const kn_tensor *t0 = ts[0];
    if (t0->ndim == 0) {
        kn__err(KN_ERR_SHAPE, "concat: tensor 0 is 0-d; only tensors with dims can be concatenated (kn_stack joins 0-d tensors)");
        return NULL;
    }
    int d = kn__dim("concat", dim, t0->ndim);
    if (d < 0) return NULL;
    kn_dtype dt = t0->dtype;
    for (int k = 0; k < n; k++) {
        const kn_tensor *t = ts[k];
        bool ok = t->ndim == t0->ndim;
        for (int e = 0; ok && e < t->ndim; e++) ok = e == d || t->shape[e] == t0->shape[e];
        if (!ok) {
            char a[128], b[128];
            kn__err(KN_ERR_SHAPE, "concat: tensor %d has shape %s, expected %s (sizes must match tensor 0's except along dim %d)",
                    k, kn__shape_str(t->ndim, t->shape, a, sizeof a), open_shape(t0, d, b, sizeof b), d);
            return NULL;
        }
        dt = kn_dtype_promote(dt, t->dtype);
    }
    return kn__scoped(concat_run(n, ts, d, dt));
}

kn_tensor *kn_stack(int n, kn_tensor *const *ts, int dim) {
    if (n <= 0 || !ts) {
        kn__err(KN_ERR_INVALID, "stack: expected at least one tensor, got %d", n);
        return NULL;
    }
    for (int k = 0; k < n; k++)
        if (!ts[k]) return kn__err_null("stack"), NULL;
    if (!kn__same_device("stack", n, ts)) return NULL;
    const kn_tensor *t0 = ts[0];
    if (t0->ndim == KN_MAX_DIMS) {
        kn__err(KN_ERR_SHAPE, "stack: the result would have %d dims; tensors have at most %d",
                KN_MAX_DIMS + 1, KN_MAX_DIMS);
        return NULL;
    }
    int d = kn__dim("stack", dim, t0->ndim + 1);
    if (d < 0) return NULL;
    for (int k = 1; k < n; k++) {
        const kn_tensor *t = ts[k];
        if (t->ndim != t0->ndim || memcmp(t->shape, t0->shape, (size_t)t->ndim * sizeof *t->shape)) {
            char a[128], b[128];
            kn__err(KN_ERR_SHAPE, "stack: tensor %d has shape %s, expected %s (all tensors must have the same shape)",
                    k, kn__shape_str(t->ndim, t->shape, a, sizeof a),
                    kn__shape_str(t0->ndim, t0->shape, b, sizeof b));
            return NULL;
        }
    }
    kn_tensor **us = malloc((size_t)n * sizeof *us);
    if (!us) {
        kn__err(KN_ERR_OOM, "stack: out of host memory");
        return NULL;
    }
    /* Unsqueezed views joined by concat: the backward (narrow, then squeeze)
     * comes from the tape. */
    kn_scope s = kn_scope_begin();
    bool ok = true;
    for (int k = 0; k < n && ok; k++) ok = (us[k] = kn_unsqueeze(ts[k], d)) != NULL;
    kn_tensor *r = ok ? kn_keep(kn_concat(n, us, d)) : NULL;
    kn_scope_end(s);
    free(us);
    return r;
}

/* ---- split -------------------------------------------------------------------------------------- */
int kn_split(kn_tensor *t, int64_t split_size, int dim, kn_tensor **out, int cap) {
    if (!t) return kn__err_null("split"), -1;
    if (t->ndim == 0) {
        kn__err(KN_ERR_SHAPE, "split: cannot split a 0-d tensor");
        return -1;
    }
    int d = kn__dim("split", dim, t->ndim);
    if (d < 0) return -1;
    if (split_size <= 0) {
        kn__err(KN_ERR_INVALID, "split: split_size must be positive, got %lld", (long long)split_size);
        return -1;
    }
    int64_t size = t->shape[d], count = size == 0 ? 1 : (size + split_size - 1) / split_size;
    if (!out || count > cap) {
        kn__err(KN_ERR_INVALID, "split: dim %d of size %lld makes %lld pieces of %lld, but out holds %d",
                dim, (long long)size, (long long)count, (long long)split_size, out ? cap : 0);
        return -1;
    }
    /* Narrowed views: their slice backward gives the gradient. */
    kn_scope s = kn_scope_begin();
    bool ok = true;
    for (int64_t k = 0; k < count && ok; k++) {
        int64_t start = k * split_size, len = size - start < split_size ? size - start : split_size;
        ok = (out[k] = kn_narrow(t, d, start, len)) != NULL;
    }
    for (int64_t k = 0; k < count && ok; k++) kn_keep(out[k]);
    kn_scope_end(s);
    if (!ok) {
        for (int64_t k = 0; k < count; k++) out[k] = NULL;
        return -1;
    }
    return (int)count;
}

/* ---- index_select ---------------------------------------------------------------------------- */
/* index_state; saved[0] = the 1-D index. Scatter-add into zeros: correct
 * with repeated indices. */
static kn_status index_select_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    kn_tensor *a = n->in[0];
    kn_tensor *z = kn_zeros(a->ndim, a->shape, g->dtype, g->storage->device);
    if (!z) return kn_error_code();
    gin[0] = z;
    return index_add_into(z, KN_STATE(n, index_state)->dim, n->saved[0], g);
}

kn_tensor *kn_index_select(kn_tensor *a, int dim, kn_tensor *index) {
    if (!a || !index) return kn__err_null("index_select"), NULL;
    kn_tensor *both[2] = {a, index};
    if (!kn__same_device("index_select", 2, both)) return NULL;
    if (a->ndim == 0) {
        kn__err(KN_ERR_SHAPE, "index_select: cannot index a 0-d tensor");
        return NULL;
    }
    int d = kn__dim("index_select", dim, a->ndim);
    kn_tensor *idx = d < 0 ? NULL : index_1d("index_select", index);
    if (!idx) return NULL;
    kn_tensor *out = select_raw(a, d, idx);
    if (out) {
        kn_node *node = kn__record(out, "index_select", index_select_backward, 1, &a, sizeof(index_state));
        if (node) {
            KN_STATE(node, index_state)->dim = d;
            kn__save(node, 0, idx);
        }
    } else {
        rename_error("gather", "index_select"); /* from the composite, where the backend has no kernel */
    }
    kn_release(idx);
    return kn__scoped(out);
}

/* ---- gather -------------------------------------------------------------------------------------- */
/* index_state; saved[0] = index. The gradient is scatter-added into zeros
 * at the same index (g has the index's shape). */
static kn_status gather_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    kn_tensor *a = n->in[0], *index = n->saved[0];
    if (a->ndim == 0) { /* a 0-d gather is the identity */
        gin[0] = g;
        return KN_OK;
    }
    kn_device dev = g->storage->device;
    kn_tensor *z = kn_zeros(a->ndim, a->shape, g->dtype, dev);
    if (!z) return kn_error_code();
    gin[0] = z;
    if (kn_numel(index) == 0) return KN_OK;
    kn_scatter_add_args s = {.out = kn__view(z), .src = kn__view(g), .index = kn__view(index),
                             .dim = KN_STATE(n, index_state)->dim};
    return kn__run(KN_OP_SCATTER_ADD, dev, &s);
}

kn_tensor *kn_gather(kn_tensor *a, int dim, kn_tensor *index) {
    if (!a || !index) return kn__err_null("gather"), NULL;
    kn_tensor *both[2] = {a, index};
    if (!kn__same_device("gather", 2, both) || !index_dtype_ok("gather", index)) return NULL;
    if (index->ndim != a->ndim) {
        kn__err(KN_ERR_SHAPE, "gather: index has %d dims but the input has %d; they must match",
                index->ndim, a->ndim);
        return NULL;
    }
    int d = kn__dim("gather", dim, a->ndim);
    if (d < 0) return NULL;
    for (int e = 0; e < a->ndim; e++)
        if (e != d && index->shape[e] > a->shape[e]) {
            char si[128], sa[128];
            kn__err(KN_ERR_SHAPE, "gather: index of shape %s does not fit the input of shape %s at dim %d (only dim %d may be larger)",
                    kn__shape_str(index->ndim, index->shape, si, sizeof si),
                    kn__shape_str(a->ndim, a->shape, sa, sizeof sa), e, d);
            return NULL;
        }
    kn_device dev = a->storage->device;
    kn_tensor *out = kn__new(index->ndim, index->shape, a->dtype, dev);
    if (!out) return NULL;
    kn_gather_args args = {.out = kn__view(out), .x = kn__view(a), .index = kn__view(index), .dim = d};
    if (a->ndim == 0) { /* seen by the kernel as [1], so no kernel needs a 0-d case */
        kn_operand *vs[3] = {&args.out, &args.x, &args.index};
        for (int k = 0; k < 3; k++) {
            vs[k]->ndim = 1;
            vs[k]->shape[0] = 1;
            vs[k]->stride[0] = 1;
        }
    }
    if (!(out = kn__run_out(KN_OP_GATHER, dev, &args, out))) return NULL;
    kn_node *node = kn__record(out, "gather", gather_backward, 1, &a, sizeof(index_state));
    if (node) {
        KN_STATE(node, index_state)->dim = d;
        kn__save(node, 0, index);
    }
    return kn__scoped(out);
}

/* ---- index_add ------------------------------------------------------------------------------------ */
/* index_state; saved[0] = the 1-D index. */
static kn_status index_add_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    if (n->needs[0]) gin[0] = g;
    if (n->needs[1] && !(gin[1] = kn_index_select(g, KN_STATE(n, index_state)->dim, n->saved[0])))
        return kn_error_code();
    return KN_OK;
}

kn_tensor *kn_index_add(kn_tensor *a, int dim, kn_tensor *index, kn_tensor *src) {
    if (!a || !index || !src) return kn__err_null("index_add"), NULL;
    kn_tensor *all[3] = {a, index, src};
    if (!kn__same_device("index_add", 3, all)) return NULL;
    if (a->ndim == 0) {
        kn__err(KN_ERR_SHAPE, "index_add: cannot index a 0-d tensor");
        return NULL;
    }
    int d = kn__dim("index_add", dim, a->ndim);
    kn_tensor *idx = d < 0 ? NULL : index_1d("index_add", index);
    if (!idx) return NULL;
    int64_t want[KN_MAX_DIMS];
    memcpy(want, a->shape, sizeof want);
    want[d] = idx->shape[0];
    if (src->ndim != a->ndim || memcmp(src->shape, want, (size_t)a->ndim * sizeof *want)) {
        char s1[128], s2[128];
        kn__err(KN_ERR_SHAPE, "index_add: source has shape %s, expected %s (the input's shape with dim %d of the index's length %lld)",
                kn__shape_str(src->ndim, src->shape, s1, sizeof s1),
                kn__shape_str(a->ndim, want, s2, sizeof s2), d, (long long)want[d]);
        kn_release(idx);
        return NULL;
    }
    kn_dtype dt = kn_dtype_promote(a->dtype, src->dtype);
    kn_device dev = a->storage->device;
    kn_tensor *out = kn__new(a->ndim, a->shape, dt, dev);
    kn_copy_args cp = {.out = kn__view(out), .x = kn__view(a)};
    bool ok = out && kn__run(KN_OP_COPY, dev, &cp) == KN_OK && index_add_into(out, d, idx, src) == KN_OK;
    if (ok) {
        kn_tensor *ins[2] = {a, src};
        kn_node *node = kn__record(out, "index_add", index_add_backward, 2, ins, sizeof(index_state));
        if (node) {
            KN_STATE(node, index_state)->dim = d;
            kn__save(node, 0, idx);
        }
    } else {
        rename_error("scatter_add", "index_add"); /* from the composite, where the backend has no kernel */
        kn_release(out);
        out = NULL;
    }
    kn_release(idx);
    return kn__scoped(out);
}

/* ---- embedding --------------------------------------------------------------------------------------- */
/* saved[0] = the flat indices. Scatter-add of the rows: repeated indices sum. */
static kn_status embedding_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    kn_tensor *w = n->in[0], *idx = n->saved[0];
    kn_tensor *z = kn_zeros(2, w->shape, g->dtype, g->storage->device);
    kn_tensor *g2 = kn_reshape(g, KN_SHAPE(idx->shape[0], w->shape[1]));
    if (!z || !g2) return kn_error_code();
    gin[0] = z;
    return index_add_into(z, 0, idx, g2);
}

kn_tensor *kn_embedding(kn_tensor *weight, kn_tensor *indices) {
    if (!weight || !indices) return kn__err_null("embedding"), NULL;
    kn_tensor *both[2] = {weight, indices};
    if (!kn__same_device("embedding", 2, both) || !index_dtype_ok("embedding", indices)) return NULL;
    char s[128];
    if (weight->ndim != 2) {
        kn__err(KN_ERR_SHAPE, "embedding: weight must be 2-D [num_embeddings, embedding_dim], got shape %s",
                kn__shape_str(weight->ndim, weight->shape, s, sizeof s));
        return NULL;
    }
    if (indices->ndim == KN_MAX_DIMS) {
        kn__err(KN_ERR_SHAPE, "embedding: indices of shape %s would give more than %d dims",
                kn__shape_str(indices->ndim, indices->shape, s, sizeof s), KN_MAX_DIMS);
        return NULL;
    }
    /* Flat indices: 1-D ones as they are (kernels take strides), others
     * through a contiguous copy when needed. */
    kn_tensor *flat;
    if (indices->ndim <= 1) {
        flat = index_1d("embedding", indices);
    } else {
        int64_t n = kn_numel(indices);
        kn_tensor *ic = kn__contiguous_raw(indices);
        flat = ic ? kn__view_raw(ic, 1, &n) : NULL;
        kn_release(ic);
    }
    kn_tensor *out = flat ? select_raw(weight, 0, flat) : NULL;
    if (!out) {
        rename_error("index_select", "embedding");
        rename_error("gather", "embedding"); /* from index_select's composite */
    }
    if (out && indices->ndim != 1) { /* [n, dim] viewed as indices.shape + [dim] */
        int64_t shape[KN_MAX_DIMS];
        memcpy(shape, indices->shape, sizeof shape);
        shape[indices->ndim] = weight->shape[1];
        kn_tensor *v = kn__view_raw(out, indices->ndim + 1, shape);
        kn_release(out);
        out = v;
    }
    if (out) {
        kn_node *node = kn__record(out, "embedding", embedding_backward, 1, &weight, 0);
        if (node) kn__save(node, 0, flat);
    }
    kn_release(flat);
    return kn__scoped(out);
}

/* ---- embedding_cat ---------------------------------------------------------------------------------
 * Many tables, one lookup each, joined: one kernel each way instead of a
 * lookup per table, a copy per table into the join, and a zeroing and a
 * scatter per table backward. saved[0] = the codes [N, T]; T = n_in. */
static kn_status embedding_cat_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    int T = n->n_in;
    kn_device dev = g->storage->device;
    kn_operand *grads = malloc((size_t)T * sizeof *grads);
    if (!grads) return kn__err(KN_ERR_OOM, "embedding_cat: out of host memory");
    kn_status s = KN_OK;
    /* Every table's gradient is written (the kernel writes them whole); scoped. */
    for (int k = 0; k < T && s == KN_OK; k++) {
        if ((gin[k] = kn__scoped(kn__new(2, n->in[k]->shape, g->dtype, dev)))) grads[k] = kn__view(gin[k]);
        else s = kn_error_code();
    }
    if (s == KN_OK) {
        kn_embedding_cat_backward_args a = {.grads = grads, .n_tables = T, .grad = kn__view(g),
                                            .codes = kn__view(n->saved[0])};
        s = kn__run(KN_OP_EMBEDDING_CAT_BACKWARD, dev, &a);
    }
    free(grads);
    return s;
}

/* T checked tables (dtype dt) into a new [N, sum D] (raw). */
static kn_tensor *embedding_cat_run(int T, kn_tensor *const *w, kn_tensor *codes, kn_dtype dt) {
    int64_t D = 0;
    for (int k = 0; k < T; k++) D += w[k]->shape[1];
    kn_device dev = codes->storage->device;
    kn_operand *tables = malloc((size_t)T * sizeof *tables);
    if (!tables) {
        kn__err(KN_ERR_OOM, "embedding_cat: out of host memory");
        return NULL;
    }
    /* The tables in dt, contiguous: scoped temporaries. */
    kn_scope s = kn_scope_begin();
    bool ok = true;
    for (int k = 0; k < T && ok; k++) {
        kn_tensor *cw = kn__scoped(kn__cast_raw(w[k], dt));
        kn_tensor *c = cw ? kn__scoped(kn__contiguous_raw(cw)) : NULL;
        if ((ok = c != NULL)) tables[k] = kn__view(c);
    }
    kn_tensor *out = ok ? kn__new(2, (int64_t[]){codes->shape[0], D}, dt, dev) : NULL;
    if (out) {
        kn_embedding_cat_args a = {.out = kn__view(out), .codes = kn__view(codes), .tables = tables,
                                   .n_tables = T};
        out = kn__run_out(KN_OP_EMBEDDING_CAT, dev, &a, out);
    }
    kn_scope_end(s);
    free(tables);
    if (!out) return NULL;
    kn_node *node = kn__record(out, "embedding_cat", embedding_cat_backward, T, w, 0);
    if (node) kn__save(node, 0, codes);
    return out;
}

kn_tensor *kn_embedding_cat(int n, kn_tensor *const *weights, kn_tensor *indices) {
    const char *op = "embedding_cat";
    if (n <= 0 || !weights) {
        kn__err(KN_ERR_INVALID, "%s: expected at least one table, got %d", op, n);
        return NULL;
    }
    if (!indices) return kn__err_null(op), NULL;
    for (int k = 0; k < n; k++)
        if (!weights[k]) return kn__err_null(op), NULL;
    if (!kn__same_device(op, n, weights) || !kn__same_device(op, 2, (kn_tensor *[]){weights[0], indices}) ||
        !index_dtype_ok(op, indices))
        return NULL;
    char s[128];
    if (indices->ndim != 2 || indices->shape[1] != n) {
        kn__err(KN_ERR_SHAPE, "%s: indices must be [N, %d] (one column per table), got %s", op, n,
                kn__shape_str(indices->ndim, indices->shape, s, sizeof s));
        return NULL;
    }
    kn_dtype dt = weights[0]->dtype;
    for (int k = 0; k < n; k++) {
        const kn_tensor *w = weights[k];
        if (w->ndim != 2 || !kn_dtype_is_float(w->dtype)) {
            kn__err(KN_ERR_SHAPE, "%s: table %d must be a 2-D floating [num_embeddings, embedding_dim], got %s %s", op,
                    k, kn_dtype_name(w->dtype), kn__shape_str(w->ndim, w->shape, s, sizeof s));
            return NULL;
        }
        dt = kn_dtype_promote(dt, w->dtype);
    }
    return kn__scoped(embedding_cat_run(n, weights, indices, dt));
}

/* ---- masked_select --------------------------------------------------------------------------------- */
/* The output size depends on the mask's values, so the mask is read on the
 * host (one synchronization); the selection runs as an index_select on the
 * tensor's device, which also makes it differentiable. */
kn_tensor *kn_masked_select(kn_tensor *a, kn_tensor *mask) {
    if (!a || !mask) return kn__err_null("masked_select"), NULL;
    kn_tensor *both[2] = {a, mask};
    if (!kn__same_device("masked_select", 2, both)) return NULL;
    if (mask->dtype != KN_BOOL && mask->dtype != KN_U8) {
        kn__err(KN_ERR_DTYPE, "masked_select: mask must be bool (or uint8), not %s", kn_dtype_name(mask->dtype));
        return NULL;
    }
    int64_t shape[KN_MAX_DIMS];
    int nd = kn__broadcast("masked_select", a->ndim, a->shape, mask->ndim, mask->shape, shape);
    if (nd < 0) return NULL;
    int64_t total = kn__numel_shape(nd, shape), k = 0;
    uint8_t *m = malloc((size_t)(total ? total : 1));
    int64_t *pos = malloc((size_t)(total ? total : 1) * sizeof *pos);
    kn_tensor *r = NULL;
    if (!m || !pos) {
        kn__err(KN_ERR_OOM, "masked_select: out of host memory");
    } else {
        kn_scope s = kn_scope_begin();
        kn_tensor *me = kn_expand(mask, nd, shape);
        if (me && kn_to_host(me, m, KN_BOOL) == KN_OK) {
            for (int64_t i = 0; i < total; i++)
                if (m[i]) pos[k++] = i;
            kn_tensor *flat = kn_reshape(kn_expand(a, nd, shape), KN_SHAPE(total));
            kn_tensor *ix = kn_from_data(pos, KN_I64, 1, &k, a->storage->device);
            r = kn_keep(kn_index_select(flat, 0, ix));
        }
        kn_scope_end(s);
    }
    free(m);
    free(pos);
    return r;
}
