/* The dist layer's group (kiln/dist.h), shared by its files: dist.c (groups,
 * transport, collectives), grads.c (buckets and the module-level broadcast,
 * average and overlapped backward), process.c (groups spread over
 * processes). Internal. */
#ifndef KILN_DIST_INTERNAL_H
#define KILN_DIST_INTERNAL_H

#include "core/backend.h"
#include "core/internal.h"

#include <kiln/dist.h>

#define MAX_RANKS 64

struct kn_dist {
    int n;                    /* ranks in this process: the length of every tensor array */
    int rank0, world;         /* the global rank of local rank 0, and of how many (one process: 0, n) */
    kn_device dev[MAX_RANKS]; /* [local rank] */
    const kn_backend *be;     /* the ranks' backend, when its collectives are used */
    void *comm;               /* its communicator; NULL: the host transport */
    char note[256];           /* why the host, when the backend has collectives */
};

/* t[0..n-1]: present, rank r's on rank r's device, one shape, one dtype
 * (a numeric one where the ranks' values are summed, a float one where they
 * are averaged). */
typedef enum { DIST_ANY, DIST_SUMS, DIST_MEANS } kn__dist_use;
bool kn__dist_check_group(const char *op, const kn_dist *d, kn_tensor *const *t, kn__dist_use use);

/* Every t[r] becomes the sum over all ranks of w[r] * t[r] (w NULL: plain
 * sums), in place; the group passed kn__dist_check_group. */
kn_status kn__dist_reduce(kn_dist *d, kn_tensor *const *t, const double *w);

/* weight[r] for each local rank, or 1/world each when NULL; each finite. */
bool kn__dist_weights(const char *op, const kn_dist *d, const double *weight, double *w);

#endif
