/* CPU kernels for randomness (Philox), dropout and the optimizer updates. */
#include "cpu_internal.h"

#include <math.h>

typedef struct {
    const kn_call *c;
    char *out;
    kn_dtype dt;
} rand_ctx;

static void rand_range(int64_t b, int64_t e, void *p) {
    const rand_ctx *r = p;
    const kn_call *c = r->c;
    size_t es = kn_dtype_size(r->dt);
    for (int64_t k = b; k < e; k++) {
        double v = kn__random_value((int)c->i[0], (uint64_t)c->i[1], (uint64_t)c->i[2], k, c->f[0], c->f[1]);
        if (c->i[0] == KN_RANDOM_INT || c->i[0] == KN_RANDOM_BITS)
            kn__store_i64(r->out + (size_t)k * es, r->dt, (int64_t)v);
        else
            kn__store(r->out + (size_t)k * es, r->dt, v);
    }
}

kn_status kn__cpu_random(const kn_call *c) {
    kn_tensor *t = c->out[0];
    rand_ctx r = {c, kn__data(t), t->dtype};
    kn__parallel_for(kn__numel_shape(t->ndim, t->shape), 16384, rand_range, &r);
    return KN_OK;
}

typedef struct {
    const kn_call *c;
} drop_ctx;

static void drop_range(int64_t b, int64_t e, void *p) {
    const kn_call *c = ((drop_ctx *)p)->c;
    const kn_tensor *x = c->in[0];
    kn_tensor *y = c->out[0], *mask = c->out[1];
    double keep_p = 1 - c->f[0], scale = keep_p > 0 ? 1 / keep_p : 0;
    uint64_t seed = (uint64_t)c->i[1], off = (uint64_t)c->i[2];
    const char *xs = kn__data(x);
    char *ys = kn__data(y);
    uint8_t *m = mask ? kn__data(mask) : NULL;
    size_t es = kn_dtype_size(x->dtype);
    /* Counter k/4 gives words for 4 consecutive elements. */
    for (int64_t k0 = b - b % 4; k0 < e; k0 += 4) {
        uint32_t w[4];
        kn__random_block(seed, off + (uint64_t)(k0 / 4), w);
        for (int j = 0; j < 4; j++) {
            int64_t k = k0 + j;
            if (k < b || k >= e) continue;
            bool keep = (double)(w[j] >> 8) * (1.0 / 16777216.0) >= c->f[0];
            if (m) m[k] = keep;
            if (x->dtype == KN_F32)
                ((float *)ys)[k] = keep ? ((const float *)xs)[k] * (float)scale : 0.0f;
            else
                kn__store(ys + (size_t)k * es, x->dtype, keep ? kn__load(xs + (size_t)k * es, x->dtype) * scale : 0);
        }
    }
}

kn_status kn__cpu_dropout(const kn_call *c) {
    /* The op layer passes contiguous x and outputs. */
    drop_ctx d = {c};
    kn__parallel_for(kn__numel_shape(c->in[0]->ndim, c->in[0]->shape), 16384, drop_range, &d);
    return KN_OK;
}

kn_status kn__cpu_adam(const kn_call *c) {
    kn_tensor *p = c->out[0], *m = c->out[1], *v = c->out[2];
    const kn_tensor *g = c->in[0];
    int64_t n = kn__numel_shape(p->ndim, p->shape);
    double lr = c->f[0], b1 = c->f[1], b2 = c->f[2], eps = c->f[3], wd = c->f[4];
    double t = kn__load(kn__data(c->in[1]), c->in[1]->dtype);
    double bc1 = 1 - pow(b1, t), bc2 = 1 - pow(b2, t);
    bool adamw = c->i[0];
    if (p->dtype == KN_F32 && g->dtype == KN_F32 && m->dtype == KN_F32) {
        float *P = kn__data(p), *M = kn__data(m), *V = kn__data(v);
        const float *G = kn__data(g);
        float step = (float)(lr / bc1), sb2 = (float)(1 / sqrt(bc2)), fb1 = (float)b1, fb2 = (float)b2;
        float decay = adamw ? (float)(1 - lr * wd) : 1, l2 = adamw ? 0 : (float)wd, feps = (float)eps;
        for (int64_t i = 0; i < n; i++) {
            float gi = G[i] + l2 * P[i];
            M[i] = fb1 * M[i] + (1 - fb1) * gi;
            V[i] = fb2 * V[i] + (1 - fb2) * gi * gi;
            P[i] = P[i] * decay - step * M[i] / (sqrtf(V[i]) * sb2 + feps);
        }
        return KN_OK;
    }
    char *P = kn__data(p), *M = kn__data(m), *V = kn__data(v);
    const char *G = kn__data(g);
    size_t ep = kn_dtype_size(p->dtype), em = kn_dtype_size(m->dtype), eg = kn_dtype_size(g->dtype);
    for (int64_t i = 0; i < n; i++) {
        double pi = kn__load(P + i * ep, p->dtype), gi = kn__load(G + i * eg, g->dtype);
        double mi = kn__load(M + i * em, m->dtype), vi = kn__load(V + i * em, m->dtype);
        if (!adamw) gi += wd * pi;
        else pi *= 1 - lr * wd;
        mi = b1 * mi + (1 - b1) * gi;
        vi = b2 * vi + (1 - b2) * gi * gi;
        pi -= lr / bc1 * mi / (sqrt(vi) / sqrt(bc2) + eps);
        kn__store(P + i * ep, p->dtype, pi);
        kn__store(M + i * em, m->dtype, mi);
        kn__store(V + i * em, m->dtype, vi);
    }
    return KN_OK;
}

kn_status kn__cpu_sgd(const kn_call *c) {
    kn_tensor *p = c->out[0], *buf = c->out[1];
    const kn_tensor *g = c->in[0];
    int64_t n = kn__numel_shape(p->ndim, p->shape);
    double lr = c->f[0], mom = c->f[1], damp = c->f[2], wd = c->f[3];
    bool nesterov = c->i[0], fresh = c->i[1];
    char *P = kn__data(p), *B = buf ? kn__data(buf) : NULL;
    const char *G = kn__data(g);
    size_t ep = kn_dtype_size(p->dtype), eg = kn_dtype_size(g->dtype), eb = buf ? kn_dtype_size(buf->dtype) : 0;
    for (int64_t i = 0; i < n; i++) {
        double pi = kn__load(P + i * ep, p->dtype), d = kn__load(G + i * eg, g->dtype) + wd * pi;
        if (B) {
            double b = fresh ? d : mom * kn__load(B + i * eb, buf->dtype) + (1 - damp) * d;
            kn__store(B + i * eb, buf->dtype, b);
            d = nesterov ? d + mom * b : b;
        }
        kn__store(P + i * ep, p->dtype, pi - lr * d);
    }
    return KN_OK;
}
