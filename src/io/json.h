/* kiln — a minimal, strict, bounded JSON reader and writer, enough for
 * safetensors headers. Internal; kiln/io.h has the reader's public face.
 *
 * Reading builds a small tree: every value is a node in one array, linked to
 * its first child and next sibling, with strings decoded (escapes, \uXXXX
 * pairs to UTF-8) into one arena. Strict: RFC 8259 grammar only (no comments,
 * trailing commas, NaN, leading zeros), valid UTF-8, no raw control
 * characters, no \u0000 (strings are C strings), bounded depth and size.
 * Duplicate object keys are kept; kn__json_get returns the first. */
#ifndef KILN_IO_JSON_H
#define KILN_IO_JSON_H

#include "core/internal.h"

/* The public kn_json_type (kiln/io.h) under this code's names. */
typedef enum {
    KN__JSON_NULL = KN_JSON_NULL,
    KN__JSON_BOOL = KN_JSON_BOOL,
    KN__JSON_NUMBER = KN_JSON_NUMBER,
    KN__JSON_STRING = KN_JSON_STRING,
    KN__JSON_ARRAY = KN_JSON_ARRAY,
    KN__JSON_OBJECT = KN_JSON_OBJECT
} kn__json_type;

/* The public kn_json and kn_json_doc are these (their accessors: json.c). */
typedef struct kn_json {
    kn__json_type type;
    bool boolean;      /* BOOL */
    bool is_int;       /* NUMBER written as an integer that fits in int64 */
    int64_t integer;   /* NUMBER with is_int */
    double number;     /* NUMBER (always set) */
    const char *str;   /* STRING: decoded, NUL-terminated */
    size_t len;        /* STRING: bytes in str */
    const char *key;   /* member of an OBJECT: its decoded key, else NULL */
    size_t key_len;
    int64_t count;     /* ARRAY / OBJECT: number of elements / members */
    int64_t first;     /* index of the first child, -1 when none */
    int64_t next;      /* index of the next sibling, -1 when none */
    size_t pos;        /* byte offset of the value in the text (for messages) */
} kn__json;

typedef struct kn_json_doc kn__json_doc;

typedef struct {
    int max_depth;  /* nesting of arrays and objects */
    size_t max_len; /* bytes of text */
} kn__json_limits;

#define KN__JSON_DEFAULT_DEPTH 64
#define KN__JSON_DEFAULT_MAX_LEN ((size_t)256 << 20)

/* Parses text[0, len) (whitespace around the one value is allowed). On error
 * returns NULL and records KN_ERR_FORMAT "WHAT: byte N: ..." (KN_ERR_OOM when
 * memory runs out). limits may be NULL for the defaults. */
kn__json_doc *kn__json_parse(const char *text, size_t len, const kn__json_limits *limits,
                             const char *what);
void kn__json_free(kn__json_doc *d);

const kn__json *kn__json_root(const kn__json_doc *d);
/* First element / member of an array / object; NULL when empty. */
const kn__json *kn__json_first(const kn__json_doc *d, const kn__json *v);
const kn__json *kn__json_next(const kn__json_doc *d, const kn__json *v);
/* Member of an object by key; NULL when absent or v is not an object. */
const kn__json *kn__json_get(const kn__json_doc *d, const kn__json *v, const char *key);
const char *kn__json_type_name(kn__json_type t); /* "object", "string", ... */

/* True when s[0, n) is valid UTF-8 (no overlongs, surrogates or > U+10FFFF). */
bool kn__json_utf8_valid(const char *s, size_t n);

/* ---- writer ----------------------------------------------------------------
 * Appends to a growing buffer; an allocation failure sets oom and later
 * appends do nothing, so a writer checks once at the end. */
typedef struct {
    char *data; /* NUL-terminated when len > 0 */
    size_t len, cap;
    bool oom;
} kn__json_buf;

void kn__json_raw(kn__json_buf *b, const char *s, size_t n);
void kn__json_cstr(kn__json_buf *b, const char *s); /* raw, strlen(s) bytes */
/* A quoted, escaped JSON string. false (and nothing appended) when s is not
 * valid UTF-8 or contains a NUL. */
bool kn__json_string(kn__json_buf *b, const char *s, size_t n);
void kn__json_int(kn__json_buf *b, int64_t v);
void kn__json_buf_free(kn__json_buf *b);

#endif
