/* Capture and replay through the backend's graph slots. */
#include "internal.h"

#include <stdlib.h>

struct kn_graph {
    kn_device dev;
    void *handle;
};

bool kn_graph_supported(kn_device dev) {
    const kn_backend *b = kn__backend(dev.kind);
    return b && kn_device_ok(dev) && b->graph_begin && b->graph_end && b->graph_launch;
}

kn_graph *kn_graph_capture(kn_device dev, kn_step_fn fn, void *ctx) {
    if (!fn) {
        kn__err(KN_ERR_INVALID, "graph_capture: no step function");
        return NULL;
    }
    if (!kn_graph_supported(dev)) {
        kn__err(KN_ERR_UNSUPPORTED, "graph_capture: device %s cannot capture graphs", kn_device_str(dev));
        return NULL;
    }
    const kn_backend *b = kn__backend(dev.kind);
    kn_graph *g = calloc(1, sizeof *g);
    if (!g) {
        kn__err(KN_ERR_OOM, "graph_capture: out of memory");
        return NULL;
    }
    g->dev = dev;
    kn_status s = b->graph_begin(dev.index);
    kn_status fs = s == KN_OK ? fn(ctx) : s;
    kn_status es = KN_OK;
    if (s == KN_OK) g->handle = b->graph_end(dev.index, &es); /* always end what began */
    if (fs != KN_OK || es != KN_OK || !g->handle) {
        if (g->handle && b->graph_free) b->graph_free(dev.index, g->handle);
        free(g);
        if (fs == KN_OK && es == KN_OK) kn__err(KN_ERR_DEVICE, "graph_capture: the backend returned no graph");
        return NULL;
    }
    return g;
}

kn_status kn_graph_replay(kn_graph *g) {
    if (!g) return kn__err_null("graph_replay"), KN_ERR_NULL;
    return kn__backend(g->dev.kind)->graph_launch(g->dev.index, g->handle);
}

void kn_graph_free(kn_graph *g) {
    if (!g) return;
    const kn_backend *b = kn__backend(g->dev.kind);
    if (b && b->graph_free) b->graph_free(g->dev.index, g->handle);
    free(g);
}
