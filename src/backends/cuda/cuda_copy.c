/* Copies between the host and a device, and within a device. Host transfers
 * go through two pinned staging buffers used in turn (DMA needs page-locked
 * memory, and the caller's buffer may be freed as soon as we return), so a
 * large copy overlaps the host's memcpy of one chunk with the DMA of the next.
 * Device-to-device copies are queued on the device's stream like kernels;
 * copies between two devices go peer to peer, ordered by events against
 * both streams. */
#include "cuda_internal.h"

#include <string.h>

#define STAGE_SIZE ((size_t)8 << 20)

static kn_status ensure_stage(kc_dev *d, const char *op) {
    if (d->stage[0]) return KN_OK;
    for (int k = 0; k < 2; k++) {
        kn_status s = kc_check(cudaMallocHost(&d->stage[k], STAGE_SIZE), op);
        if (s != KN_OK) return s;
    }
    d->stage_size = STAGE_SIZE;
    return KN_OK;
}

static kc_dev *enter(int index, const char *op, bool host) {
    kc_dev *d = kc_device(index, op);
    if (!d) return NULL;
    if (host && d->capture) {
        kn__err(KN_ERR_INVALID, "%s: host transfers on cuda:%d cannot be captured in a graph "
                "(copy new data into the graph's input tensors before each replay)", op, index);
        return NULL;
    }
    if (kc_adam_flush(d) != KN_OK) return NULL;
    if (host && ensure_stage(d, op) != KN_OK) return NULL;
    return d;
}

kn_status kc_copy_h2d(int index, void *dst, const void *src, size_t n) {
    const char *op = "copy to cuda";
    kc_dev *d = enter(index, op, true);
    if (!d) return kn_error_code();
    for (size_t off = 0; off < n;) {
        size_t len = n - off < d->stage_size ? n - off : d->stage_size;
        int k = d->stage_next;
        d->stage_next ^= 1;
        /* The buffer's previous DMA must be done before we overwrite it. */
        kn_status s = kc_check(cudaEventSynchronize(d->stage_done[k]), op);
        if (s != KN_OK) return s;
        memcpy(d->stage[k], (const char *)src + off, len);
        s = kc_check(cudaMemcpyAsync((char *)dst + off, d->stage[k], len, cudaMemcpyHostToDevice, d->stream), op);
        if (s == KN_OK) s = kc_check(cudaEventRecord(d->stage_done[k], d->stream), op);
        if (s != KN_OK) return s;
        off += len;
    }
    return kc_sync_mode() ? kc_sync(d, op) : KN_OK;
}

kn_status kc_copy_d2h(int index, void *dst, const void *src, size_t n) {
    const char *op = "copy from cuda";
    kc_dev *d = enter(index, op, true);
    if (!d) return kn_error_code();
    size_t chunk = d->stage_size, prev_off = 0, prev_len = 0;
    int prev = -1;
    kn_status s = KN_OK;
    for (size_t off = 0; off < n && s == KN_OK;) {
        size_t len = n - off < chunk ? n - off : chunk;
        int k = d->stage_next;
        d->stage_next ^= 1;
        s = kc_check(cudaEventSynchronize(d->stage_done[k]), op);
        if (s == KN_OK)
            s = kc_check(cudaMemcpyAsync(d->stage[k], (const char *)src + off, len, cudaMemcpyDeviceToHost, d->stream), op);
        if (s == KN_OK) s = kc_check(cudaEventRecord(d->stage_done[k], d->stream), op);
        /* While this chunk moves, the previous one is copied out. */
        if (s == KN_OK && prev >= 0) {
            s = kc_check(cudaEventSynchronize(d->stage_done[prev]), op);
            if (s == KN_OK) memcpy((char *)dst + prev_off, d->stage[prev], prev_len);
        }
        prev = k, prev_off = off, prev_len = len;
        off += len;
    }
    if (s == KN_OK && prev >= 0) {
        s = kc_check(cudaEventSynchronize(d->stage_done[prev]), op);
        if (s == KN_OK) memcpy((char *)dst + prev_off, d->stage[prev], prev_len);
    }
    if (s == KN_OK && n == 0) s = kc_check(cudaStreamSynchronize(d->stream), op);
    /* The data is only good if the kernels that made it did not fail. */
    return s == KN_OK ? kc_fault_check(d) : s;
}

kn_status kc_copy_d2d(int index, void *dst, const void *src, size_t n) {
    const char *op = "copy on cuda";
    kc_dev *d = enter(index, op, false);
    if (!d) return kn_error_code();
    if (!n || dst == src) return KN_OK;
    kn_status s = kc_check(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, d->stream), op);
    return s == KN_OK ? kc_after(d, op) : s;
}

/* dev's peer_done event recorded on its stream (created on first use, on
 * dev, which kc_device makes current). */
static kn_status mark(kc_dev *dev, const char *op) {
    kn_status s = KN_OK;
    if (!dev->peer_done) s = kc_check(cudaEventCreateWithFlags(&dev->peer_done, cudaEventDisableTiming), op);
    return s == KN_OK ? kc_check(cudaEventRecord(dev->peer_done, dev->stream), op) : s;
}

/* Lets dst_index read and write src_index's memory directly where the two
 * GPUs can (NVLink or PCIe peer access); elsewhere cudaMemcpyPeerAsync
 * stages through the host itself. Asked once per pair. */
static void enable_peer(int dst_index, int src_index) {
    enum { MAXD = 16 };
    static bool asked[MAXD][MAXD];
    if (dst_index >= MAXD || src_index >= MAXD || asked[dst_index][src_index]) return;
    asked[dst_index][src_index] = true;
    int can = 0;
    if (cudaDeviceCanAccessPeer(&can, dst_index, src_index) == cudaSuccess && can &&
        cudaDeviceEnablePeerAccess(src_index, 0) != cudaSuccess)
        (void)cudaGetLastError(); /* already enabled, or refused: the copy still works */
}

kn_status kc_copy_peer(int dst_index, void *dst, int src_index, const void *src, size_t n) {
    const char *op = "copy between cuda devices";
    kc_dev *s = enter(src_index, op, false), *d = s ? enter(dst_index, op, false) : NULL;
    if (!d) return kn_error_code();
    if (s->capture || d->capture)
        return kn__err(KN_ERR_INVALID, "%s: cuda:%d to cuda:%d cannot be captured in a graph (capture each device's work "
                       "on its own)", op, src_index, dst_index);
    if (!n) return KN_OK;
    enable_peer(dst_index, src_index); /* dst is current */
    /* dst's stream waits for the work that made src; src's stream then waits
     * for the copy, so nothing later on src overwrites or frees it early. */
    kn_status st = kc_device(src_index, op) ? mark(s, op) : kn_error_code();
    if (st == KN_OK && !kc_device(dst_index, op)) st = kn_error_code();
    if (st == KN_OK) st = kc_check(cudaStreamWaitEvent(d->stream, s->peer_done, 0), op);
    if (st == KN_OK) st = kc_check(cudaMemcpyPeerAsync(dst, dst_index, src, src_index, n, d->stream), op);
    if (st == KN_OK) st = mark(d, op);
    if (st == KN_OK && !kc_device(src_index, op)) st = kn_error_code();
    if (st == KN_OK) st = kc_check(cudaStreamWaitEvent(s->stream, d->peer_done, 0), op);
    return st == KN_OK && kc_sync_mode() ? kc_sync(d, op) : st;
}
