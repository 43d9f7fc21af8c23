/* kiln — data and model formats: CSV, safetensors, .npy. */
#ifndef KILN_IO_H
#define KILN_IO_H

#include "nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- CSV (RFC 4180: quotes, embedded delimiters/quotes/newlines, CRLF/LF) -- */
typedef struct kn_csv kn_csv;
typedef struct {
    char delimiter;  /* ',' by default */
    bool has_header; /* true by default */
} kn_csv_opts;
kn_csv_opts kn_csv_opts_default(void);
/* NULL on error, with a message naming the file and line. */
kn_csv *kn_csv_read(const char *path, const kn_csv_opts *opts);
/* name is used in error messages. */
kn_csv *kn_csv_parse(const char *data, size_t len, const kn_csv_opts *opts, const char *name);
int64_t kn_csv_rows(const kn_csv *c); /* data rows, without the header */
int kn_csv_cols(const kn_csv *c);
const char *kn_csv_header(const kn_csv *c, int col);
int kn_csv_column(const kn_csv *c, const char *name); /* -1 when absent */
const char *kn_csv_cell(const kn_csv *c, int64_t row, int col);
/* Line number in the file where a data row starts (for messages). */
int64_t kn_csv_row_line(const kn_csv *c, int64_t row);
void kn_csv_free(kn_csv *c);

/* ---- safetensors ------------------------------------------------------------ */
typedef struct {
    const char *key, *value;
} kn_meta;
/* Writes atomically (temporary file, fsync, rename): a failure never leaves a
 * half-written file or destroys an existing one. */
kn_status kn_safetensors_save(const char *path, int n, const kn_named_tensor *tensors,
                              int n_meta, const kn_meta *meta);
typedef struct kn_safetensors kn_safetensors;
kn_safetensors *kn_safetensors_open(const char *path);
int kn_safetensors_count(const kn_safetensors *f);
const char *kn_safetensors_name(const kn_safetensors *f, int i);
/* A new tensor with the stored data, on dev; NULL when absent. */
kn_tensor *kn_safetensors_get(const kn_safetensors *f, const char *name, kn_device dev);
/* The __metadata__ value for key, or NULL. */
const char *kn_safetensors_meta(const kn_safetensors *f, const char *key);
void kn_safetensors_close(kn_safetensors *f);
/* A module's state dict in or out. Loading checks every name and shape. */
kn_status kn_module_save(kn_module *m, const char *path, int n_meta, const kn_meta *meta);
kn_status kn_module_load(kn_module *m, const kn_safetensors *f);

/* ---- NumPy .npy ----------------------------------------------------------- */
kn_status kn_npy_save(const char *path, const kn_tensor *t);
kn_tensor *kn_npy_load(const char *path, kn_device dev);

#ifdef __cplusplus
}
#endif
#endif
