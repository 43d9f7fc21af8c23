/* kiln — checkpoints: a model, its optimizer, the random generator and any
 * other tensors and strings, saved together so training can stop and resume
 * exactly where it was (to the bit on the CPU). */
#ifndef KILN_CHECKPOINT_H
#define KILN_CHECKPOINT_H

#include "io.h"
#include "optim.h"
#include "random.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What a checkpoint holds; NULL (or 0) members are left out. In the file
 * (one safetensors file):
 *   model.<name>                 the model's state dict (kn_module_state_dict)
 *   optim.state.<i>.exp_avg      Adam/AdamW first moment of parameter i
 *   optim.state.<i>.exp_avg_sq   Adam/AdamW second moment
 *   optim.state.<i>.momentum_buffer   SGD with momentum
 *   extra.<name>                 the extra tensors (e.g. the best weights so far)
 * and the metadata "kiln_checkpoint" (JSON: format version, the optimizer's
 * kind, learning rate and step count, the generator's seed and offset) beside
 * the caller's strings (epoch, metrics, ...). */
typedef struct {
    kn_module *model;
    kn_optim *optim;
    kn_generator *generator; /* e.g. kn_default_generator() */
    int n_extra;
    const kn_named_tensor *extra;
    int n_meta;
    const kn_meta *meta; /* keys other than "kiln_checkpoint" */
} kn_checkpoint;

/* Writes atomically (temporary file, fsync, rename, fsync of the directory):
 * after a crash at any moment, path holds the previous checkpoint or this one. */
kn_status kn_checkpoint_save(const char *path, const kn_checkpoint *c);

/* Restores the checkpoint into c's members, which must be built the same way
 * as the ones saved (the same model structure, the same kind of optimizer
 * over the same parameters, extras of the same names and shapes). All or
 * nothing: every tensor is read and checked before anything is changed, so a
 * file that does not match leaves them as they were. The optimizer takes the
 * file's learning rate and step count; its other options stay the caller's.
 * Returns the open file, for kn_safetensors_meta (close it), or NULL with an
 * error naming the file and what does not match. */
kn_safetensors *kn_checkpoint_load(const char *path, const kn_checkpoint *c);
/* The same from a file already open (kn_safetensors_open), e.g. after its
 * metadata was checked; KN_OK, or the error with nothing changed. */
kn_status kn_checkpoint_restore(const kn_safetensors *f, const kn_checkpoint *c);

#ifdef __cplusplus
}
#endif
#endif
