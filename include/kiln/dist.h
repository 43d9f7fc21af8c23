/* Data-parallel training over several devices of one process, as PyTorch's
 * DistributedDataParallel does it: one replica of the model per device (a
 * rank), parameters broadcast from rank 0, each rank runs its shard of the
 * batch, gradients averaged over the ranks in buckets, then the same
 * optimizer step everywhere. N ranks then give the losses of one device on
 * the whole batch, up to the order of the float sums (docs/DIST.md).
 *
 * The transport: for ranks all on CUDA devices, NCCL (opened at run time;
 * each collective queued on every rank's stream, so it is captured in a
 * graph too); otherwise, or where NCCL cannot be loaded, the host: each
 * rank's bucket is read back, summed in double in rank order and written to
 * every rank. The host works for any mix of devices (cpu with vulkan:0,
 * say), which is how the tests run several ranks on a machine without GPUs.
 * KILN_DIST_TRANSPORT=host or =nccl forces one (docs/DIST.md).
 */
#ifndef KILN_DIST_H
#define KILN_DIST_H

#include "core.h"
#include "device.h"
#include "nn.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kn_dist kn_dist;

/* A group of n ranks on devices[0..n-1], all in this process: each device
 * once, each present. */
kn_dist *kn_dist_new(int n, const kn_device *devices);
void kn_dist_free(kn_dist *d);
/* The ranks in this process: the length of every tensor array below (n for
 * kn_dist_new, 1 for a rank of a multi-process group). */
int kn_dist_size(const kn_dist *d);
/* Local rank r's device. */
kn_device kn_dist_device(const kn_dist *d, int rank);
/* The group's ranks over all processes, and the global rank of this
 * process's first (kn_dist_new: n and 0). */
int kn_dist_world_size(const kn_dist *d);
int kn_dist_rank(const kn_dist *d);

/* ---- groups over several processes (or hosts), one rank each, as torchrun
 * starts them. Needs a backend with collectives across processes: CUDA,
 * through NCCL. The processes find each other through an id that rank 0
 * makes (NCCL's unique id, as hex digits). Each call returns once every
 * rank has joined. */
#define KN_DIST_ID_CHARS 257 /* 256 hex digits and the NUL */
/* A fresh id, made on rank 0 and handed to the other ranks by any means. */
kn_status kn_dist_unique_id(kn_device dev, char id[KN_DIST_ID_CHARS]);
/* This process as rank `rank` of `world` on dev; id NULL: KILN_DIST_ID. */
kn_dist *kn_dist_new_rank(kn_device dev, int rank, int world, const char *id);
/* The same with the id passed by a file (NULL: KILN_DIST_ID_FILE): rank 0
 * makes the id and writes the file, which must not exist yet (one left by
 * an earlier run is refused, not reused); the other ranks wait for it, up
 * to KILN_DIST_TIMEOUT seconds (300 by default). Rank 0 removes it once
 * every rank has joined. */
kn_dist *kn_dist_new_rank_file(kn_device dev, int rank, int world, const char *path);
/* From KILN_RANK, KILN_WORLD_SIZE and KILN_DIST_ID or KILN_DIST_ID_FILE. */
kn_dist *kn_dist_from_env(kn_device dev);
/* "nccl" or "host". */
const char *kn_dist_transport(const kn_dist *d);
/* Why the host carries a group whose backend has collectives of its own
 * ("nccl: cannot load libnccl.so.2 ..."); "" otherwise. */
const char *kn_dist_transport_note(const kn_dist *d);

typedef enum { KN_DIST_SUM, KN_DIST_MEAN } kn_dist_op;

/* t[r] lives on local rank r's device; all of one shape and dtype. Each
 * becomes the sum (any dtype but bool; integers wrap as in C) or the mean
 * (float and complex dtypes) over all the group's ranks, in place. */
kn_status kn_dist_all_reduce(kn_dist *d, kn_tensor *const *t, kn_dist_op op);
/* Every t[r] becomes a copy of the tensor of global rank root (any dtype). */
kn_status kn_dist_broadcast(kn_dist *d, kn_tensor *const *t, int root);

/* Buckets for n tensors taken in reverse order (the last layers' gradients
 * are ready first in backward): consecutive tensors of one dtype while the
 * bucket stays within cap bytes; a tensor larger than cap is a bucket of its
 * own. bucket[i] gets tensor i's bucket (0 first); returns the number of
 * buckets, or -1 on error. */
int kn_dist_buckets(int n, kn_tensor *const *tensors, size_t cap, int *bucket);

/* PyTorch DDP's default bucket size, 25 MiB. */
#define KN_DIST_BUCKET_BYTES ((size_t)25 << 20)

/* replicas[r] on rank r's device, all with the same parameters (names,
 * shapes, dtypes). Copies rank 0's parameters and buffers to every rank. */
kn_status kn_dist_broadcast_module(kn_dist *d, kn_module *const *replicas);

/* After each rank's backward: every parameter's gradient becomes
 * sum over the ranks of weight[r] * grad_r (weight[r] for each local rank;
 * NULL: 1/world each; for shards of unequal sizes pass rows_r / rows, so
 * the result is the whole batch's mean gradient). Bucketed as kn_dist_buckets (cap 0: KN_DIST_BUCKET_BYTES). A
 * parameter without a gradient on some rank is an error naming it. */
kn_status kn_dist_average_gradients(kn_dist *d, kn_module *const *replicas, const double *weight, size_t cap);

/* Backward of every rank's scalar loss (losses[r] on rank r's device) and
 * then the average of kn_dist_average_gradients (same weights, same
 * buckets), with each bucket's all-reduce overlapping the rest of backward,
 * as DDP's hooks do: the ranks' tapes are walked in lockstep, and a bucket
 * is reduced as soon as its gradients are final on every rank (on NCCL, on
 * a stream of the communicator's own while backward goes on). On return
 * every rank holds the averaged gradients. On an error, every tape that
 * was begun is spent. */
kn_status kn_dist_backward(kn_dist *d, kn_module *const *replicas, kn_tensor *const *losses, const double *weight,
                           size_t cap);

#ifdef __cplusplus
}
#endif

#endif
