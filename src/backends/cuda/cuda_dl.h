/* Opening the CUDA libraries kiln loads at run time (cuBLASLt, cuFFT,
 * cuDNN): one search order and one way of saying what went wrong, so each
 * loader keeps only its symbols and version checks. */
#ifndef KILN_CUDA_DL_H
#define KILN_CUDA_DL_H

#include "core/backend.h"

#include <stdarg.h>
#include <stdbool.h>

#define KC_STR_(x) #x
#define KC_STR(x) KC_STR_(x)

typedef struct {
  void *handle;     /* NULL when nothing could be opened */
  const char *path; /* the file opened (or, on failure, the one asked for) */
  bool named;       /* path came from the environment variable */
  char *error; /* on failure: dlerror's text and where else it looked (malloc'd;
                  NULL on OOM) */
} kc_dl;

/* The file in the environment variable env when it is set and not empty;
 * else soname through the dynamic linker's search, then build_path (where
 * CMake found the library at build time; NULL for none). */
kc_dl kc_dl_open(const char *env, const char *soname, const char *build_path);

/* The name to show in messages: "ENV=path" when the user named the file. */
char *kc_dl_shown(const kc_dl *l, const char *env);

/* A malloc'd formatted string, NULL when out of memory. */
char *kc_vformat(const char *fmt, va_list ap);

#endif
