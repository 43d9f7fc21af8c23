/* kiln — data and model formats: CSV, safetensors, .npy; JSON and atomic file writing. */
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
/* A module's state dict (parameters and buffers) in or out. Loading checks
 * every name and shape first and changes nothing on a mismatch; its errors
 * name the file and the missing, extra or mis-shaped tensor. Values are
 * converted to the module's dtypes and copied to its devices. */
kn_status kn_module_save(kn_module *m, const char *path, int n_meta, const kn_meta *meta);
kn_status kn_module_load(kn_module *m, const kn_safetensors *f);
/* kn_module_save's counterpart in one call: open path, load, close. */
kn_status kn_module_load_file(kn_module *m, const char *path);

/* ---- NumPy .npy and .npz -------------------------------------------------------
 * .npy: one array. Saved as version 1.0, little-endian on little-endian
 * machines; bfloat16 (which numpy lacks) is saved as float32, exactly. Read:
 * versions 1-3, either byte order, C or Fortran order, dtypes f2 f4 f8 i4 i8
 * u1 b1. See docs/INTEROP.md. */
kn_status kn_npy_save(const char *path, const kn_tensor *t);
kn_tensor *kn_npy_load(const char *path, kn_device dev);
/* .npz: a ZIP archive of NAME.npy members, as numpy.savez (compress false:
 * stored) and numpy.savez_compressed (true: deflate; needs kiln built with
 * zlib, else refused). Written atomically; ZIP64 where sizes need it. Names
 * are given without ".npy" and may not hold '/' or '\'. */
kn_status kn_npz_save(const char *path, int n, const kn_named_tensor *tensors, bool compress);
/* Reads and checks the whole archive's directory; NULL on error, with a
 * message naming the archive and the member. */
typedef struct kn_npz kn_npz;
kn_npz *kn_npz_open(const char *path);
int kn_npz_count(const kn_npz *f);
/* The i-th array's name, without ".npy" (numpy's NpzFile.files), in archive order. */
const char *kn_npz_name(const kn_npz *f, int i);
/* A new tensor with the array, on dev (inflated and CRC-checked first);
 * NULL when absent. name may carry the ".npy" suffix or not. */
kn_tensor *kn_npz_get(const kn_npz *f, const char *name, kn_device dev);
void kn_npz_close(kn_npz *f);

/* ---- JSON ---------------------------------------------------------------------
 * The strict, bounded reader of safetensors headers, for metadata values
 * that hold JSON: RFC 8259 only (no comments, trailing commas or NaN), valid
 * UTF-8, nesting up to 64 deep. Values belong to their document and live
 * until kn_json_free; of duplicate keys, kn_json_get finds the first. */
typedef enum {
    KN_JSON_NULL = 0,
    KN_JSON_BOOL,
    KN_JSON_NUMBER,
    KN_JSON_STRING,
    KN_JSON_ARRAY,
    KN_JSON_OBJECT
} kn_json_type;
typedef struct kn_json_doc kn_json_doc;
typedef struct kn_json kn_json;
/* Parses text[0, len) (one value, whitespace around it allowed). NULL on
 * error, with "WHAT: byte N: ..." (KN_ERR_FORMAT) naming the text `what`. */
kn_json_doc *kn_json_parse(const char *text, size_t len, const char *what);
void kn_json_free(kn_json_doc *d);
const kn_json *kn_json_root(const kn_json_doc *d);
/* An array's or object's first element or member, and the one after v;
 * NULL at the end. */
const kn_json *kn_json_first(const kn_json_doc *d, const kn_json *v);
const kn_json *kn_json_next(const kn_json_doc *d, const kn_json *v);
/* An object's member by key; NULL when absent or v is not an object. */
const kn_json *kn_json_get(const kn_json_doc *d, const kn_json *v, const char *key);
kn_json_type kn_json_type_of(const kn_json *v);
const char *kn_json_type_name(kn_json_type t); /* "object", "string", ... */
/* A value's contents; a value of another type gives false, 0 or NULL. */
bool kn_json_bool(const kn_json *v);
double kn_json_number(const kn_json *v);
/* A number written as an integer that fits int64_t: true, and *out. */
bool kn_json_int(const kn_json *v, int64_t *out);
/* A string's decoded text, NUL-terminated; its bytes in *len (len may be NULL). */
const char *kn_json_str(const kn_json *v, size_t *len);
int64_t kn_json_count(const kn_json *v); /* an array's elements, an object's members */

/* True when s[0, n) is valid UTF-8 (safetensors metadata must be). */
bool kn_utf8_valid(const char *s, size_t n);

/* ---- files ----------------------------------------------------------------------- */
/* Writes data[0, nbytes) to path atomically, as the savers above do: a
 * temporary file beside it, fsync'ed and renamed over it, so path holds its
 * old contents or all the new ones, never a mix. Errors name path. */
kn_status kn_file_write_atomic(const char *path, const void *data, size_t nbytes);
/* Checks, writing nothing, that a write to path could succeed: refuses what
 * the write would (a directory, a read-only file, ...) and makes and removes
 * a temporary file beside it. Leaves the file system as it was. Call it
 * before long work, so an unwritable output is found first. */
kn_status kn_file_check_writable(const char *path);

#ifdef __cplusplus
}
#endif
#endif
