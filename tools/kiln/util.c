/* kiln command line: messages, allocation and the clock, shared by every part
 * of the tool (and by the fuzz harness of the model reader, which has no main.c). */
#include "cli.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One line on stderr, after whatever stdout holds so far. */
__attribute__((format(printf, 2, 0))) static void message(const char *prefix, const char *fmt, va_list ap) {
    fflush(stdout);
    fprintf(stderr, "%s", prefix);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
}

void cli_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    message("kiln: ", fmt, ap);
    va_end(ap);
}

void cli_warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    message("kiln: warning: ", fmt, ap);
    va_end(ap);
}

void *cli_alloc(size_t n) {
    void *p = calloc(1, n ? n : 1);
    if (!p) cli_error("out of memory (%zu bytes)", n);
    return p;
}

char *cli_strdup(const char *s) {
    char *p = cli_alloc(strlen(s) + 1);
    if (p) strcpy(p, s);
    return p;
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
