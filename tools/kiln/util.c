/* kiln command line: messages, allocation and the clock, shared by every part
 * of the tool (and by the fuzz harness of the model reader, which has no main.c). */
#include "cli.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void cli_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fflush(stdout);
    fprintf(stderr, "kiln: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

void cli_warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fflush(stdout);
    fprintf(stderr, "kiln: warning: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
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
