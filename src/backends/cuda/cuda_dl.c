#include "cuda_dl.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *kc_vformat(const char *fmt, va_list ap) {
  va_list again;
  va_copy(again, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  char *s = n < 0 ? NULL : malloc((size_t)n + 1);
  if (s)
    vsnprintf(s, (size_t)n + 1, fmt, again);
  va_end(again);
  return s;
}

static char *format(const char *fmt, ...) KN_PRINTF(1, 2);
static char *format(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = kc_vformat(fmt, ap);
  va_end(ap);
  return s;
}

kc_dl kc_dl_open(const char *env, const char *soname, const char *build_path) {
  const char *value = getenv(env);
  kc_dl l = {NULL, soname, value && *value, NULL};
  if (l.named)
    l.path = value;
  l.handle = dlopen(l.path, RTLD_NOW | RTLD_LOCAL);
  if (l.handle)
    return l;
  const char *e = dlerror();
  char *why = format("%s", e ? e : "dlopen failed");
  if (!l.named && build_path && *build_path) {
    l.handle = dlopen(build_path, RTLD_NOW | RTLD_LOCAL);
    if (l.handle) {
      free(why);
      l.path = build_path;
      return l;
    }
    l.error = format("%s (also looked in %s)", why ? why : "dlopen failed",
                     build_path);
    free(why);
  } else {
    l.error = why;
  }
  return l;
}

char *kc_dl_shown(const kc_dl *l, const char *env) {
  return l->named ? format("%s=%s", env, l->path) : format("%s", l->path);
}
