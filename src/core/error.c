/* Errors: a thread-local last error and an optional user handler. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

static _Thread_local kn_status last_status = KN_OK;
static _Thread_local char last_msg[1024];
static _Thread_local uint64_t err_seq; /* errors recorded on this thread */
static kn_error_handler handler;
static void *handler_user;

const char *kn_error(void) { return last_msg; }
kn_status kn_error_code(void) { return last_status; }

void kn_error_clear(void) {
    last_status = KN_OK;
    last_msg[0] = 0;
}

void kn_set_error_handler(kn_error_handler h, void *user) {
    handler = h;
    handler_user = user;
}

const char *kn_status_name(kn_status s) {
    switch (s) {
    case KN_OK: return "ok";
    case KN_ERR_INVALID: return "invalid argument";
    case KN_ERR_SHAPE: return "shape mismatch";
    case KN_ERR_DTYPE: return "unsupported dtype";
    case KN_ERR_DEVICE: return "device error";
    case KN_ERR_OOM: return "out of memory";
    case KN_ERR_IO: return "I/O error";
    case KN_ERR_FORMAT: return "malformed data";
    case KN_ERR_AUTOGRAD: return "autograd error";
    case KN_ERR_UNSUPPORTED: return "unsupported";
    case KN_ERR_NULL: return "NULL input";
    }
    return "unknown status";
}

kn_status kn__err(kn_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_msg, sizeof last_msg, fmt, ap);
    va_end(ap);
    last_status = s;
    err_seq++;
    if (handler) handler(s, last_msg, handler_user);
    return s;
}

uint64_t kn__err_seq(void) { return err_seq; }

static _Thread_local const kn_fault_context *fault_context;

const kn_fault_context *kn__fault_context_set(const kn_fault_context *c) {
    const kn_fault_context *prev = fault_context;
    fault_context = c;
    return prev;
}

const kn_fault_context *kn__fault_context(void) { return fault_context; }

bool kn__fault_context_get(const char **op, const char **item, const char **range) {
    if (!fault_context) return false;
    *op = fault_context->op;
    *item = fault_context->item;
    *range = fault_context->range;
    return true;
}

void kn__err_null(const char *op) {
    /* Keep the first cause: a NULL usually comes from an earlier failed op. */
    if (last_status == KN_OK) kn__err(KN_ERR_NULL, "%s: an input is NULL", op);
}
