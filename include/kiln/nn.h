/* kiln — modules: named parameters and buffers, children, train/eval mode,
 * moving to a device; the usual layers. */
#ifndef KILN_NN_H
#define KILN_NN_H

#include "ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kn_module kn_module;

/* forward(self, n, inputs): most modules take one input. */
typedef kn_tensor *(*kn_forward_fn)(kn_module *self, int n, kn_tensor *const *inputs);

/* A custom module: type name, forward, and state_size bytes of zeroed state
 * for the caller (kn_module_state); free_state (may be NULL) runs at free. */
kn_module *kn_module_new(const char *type, kn_forward_fn forward, size_t state_size,
                         void (*free_state)(void *state));
void *kn_module_state(kn_module *m);
const char *kn_module_type(const kn_module *m);
/* Registers a trainable parameter (requires_grad is set; the module keeps a
 * reference). Returns t. */
kn_tensor *kn_module_add_param(kn_module *m, const char *name, kn_tensor *t);
/* Registers a buffer (state that is saved but not trained, e.g. running_mean). */
kn_tensor *kn_module_add_buffer(kn_module *m, const char *name, kn_tensor *t);
/* Adds a child, which the module then owns. Returns child. */
kn_module *kn_module_add(kn_module *m, const char *name, kn_module *child);
kn_module *kn_module_child(const kn_module *m, const char *name);
kn_module *kn_module_child_at(const kn_module *m, int i);
int kn_module_num_children(const kn_module *m);
/* Own (not children's) parameter or buffer by name. */
kn_tensor *kn_module_get(const kn_module *m, const char *name);

kn_tensor *kn_module_forward(kn_module *m, kn_tensor *x);
kn_tensor *kn_module_forward_n(kn_module *m, int n, kn_tensor *const *inputs);

/* Moves every parameter and buffer to dev in place (tensor handles stay valid,
 * so optimizers keep working). */
kn_status kn_module_to(kn_module *m, kn_device dev);
/* Converts floating-point parameters and buffers to dt. */
kn_status kn_module_to_dtype(kn_module *m, kn_dtype dt);
kn_device kn_module_device(const kn_module *m);
void kn_module_train(kn_module *m, bool training); /* recursive */
bool kn_module_training(const kn_module *m);

typedef struct {
    const char *name; /* "blocks.0.weight", PyTorch's state_dict naming */
    kn_tensor *tensor;
} kn_named_tensor;
/* Every parameter, depth first, with dotted names. The array belongs to m and
 * stays valid until the module's structure changes. */
const kn_named_tensor *kn_module_parameters(kn_module *m, int *count);
/* Parameters and buffers (what a checkpoint holds). */
const kn_named_tensor *kn_module_state_dict(kn_module *m, int *count);
int64_t kn_module_num_params(kn_module *m); /* number of scalars */
void kn_module_zero_grad(kn_module *m);
void kn_module_print(kn_module *m, FILE *f);
void kn_module_free(kn_module *m);

/* ---- layers --------------------------------------------------------------
 * Initialised like PyTorch's (Linear: U(-1/sqrt(in), 1/sqrt(in)); Embedding:
 * N(0, 1)) from the global generator, on the CPU in float32. */
kn_module *kn_nn_linear(int64_t in_features, int64_t out_features, bool bias);
kn_module *kn_nn_embedding(int64_t num_embeddings, int64_t dim);
kn_module *kn_nn_batch_norm1d(int64_t features); /* eps 1e-5, momentum 0.1 */
kn_module *kn_nn_layer_norm(int64_t features);   /* eps 1e-5 */
kn_module *kn_nn_dropout(double p);
kn_module *kn_nn_relu(void);
kn_module *kn_nn_leaky_relu(double negative_slope);
kn_module *kn_nn_gelu(void);
kn_module *kn_nn_sigmoid(void);
kn_module *kn_nn_tanh(void);
/* Children "0", "1", ... applied in order. */
kn_module *kn_nn_sequential(int n, kn_module *const *modules);
kn_module *kn_nn_sequential_append(kn_module *seq, kn_module *m);

/* ---- mini-batches ------------------------------------------------------------
 * The rows of n tensors with one first dim N, batch by batch, as a PyTorch
 * DataLoader over a TensorDataset. In order, a batch is views (no copy);
 * shuffled, gathered copies on the tensors' device (they must share one). The
 * order of each epoch comes from seed alone: the same run on every device. */
typedef struct kn_batches kn_batches;
kn_batches *kn_batches_new(int n, kn_tensor *const *tensors, int64_t batch_size, bool shuffle, bool drop_last,
                           uint64_t seed);
/* Fills out[0 .. n) with the next batch (tensors of the current scope) and
 * returns its rows; 0 at the end of an epoch (the next call starts the next
 * epoch, in a new order); -1 on error. drop_last leaves out a short last batch. */
int64_t kn_batches_next(kn_batches *b, kn_tensor **out);
int64_t kn_batches_count(const kn_batches *b); /* batches in an epoch */
int64_t kn_batches_epoch(const kn_batches *b); /* epochs finished (0 at first) */
void kn_batches_reset(kn_batches *b);          /* back to the first epoch and its order */
void kn_batches_free(kn_batches *b);

#ifdef __cplusplus
}
#endif
#endif
