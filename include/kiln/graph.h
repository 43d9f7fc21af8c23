/* kiln — capture and replay: a step whose shapes do not change is recorded
 * once and replayed with one launch (CUDA graphs on NVIDIA GPUs). */
#ifndef KILN_GRAPH_H
#define KILN_GRAPH_H

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kn_graph kn_graph;
typedef kn_status (*kn_step_fn)(void *ctx);

/* True when dev can capture (a CUDA device, and KILN_CUDA_GRAPHS is not 0). */
bool kn_graph_supported(kn_device dev);
/* Runs fn(ctx) once while recording every op it enqueues on dev, and returns
 * the recording. fn must use tensors made before the capture for its inputs
 * and outputs (copy new data into them before each replay, read results
 * after); what it allocates inside stays reserved for the graph. fn must not
 * read values back to the host. NULL with an error when dev cannot capture:
 * the caller then calls fn itself each step. */
kn_graph *kn_graph_capture(kn_device dev, kn_step_fn fn, void *ctx);
/* Enqueues the whole recorded step again. */
kn_status kn_graph_replay(kn_graph *g);
void kn_graph_free(kn_graph *g);

#ifdef __cplusplus
}
#endif
#endif
