/* Scopes: every tensor handed out by the API is owned by the innermost open
 * scope, which releases it at kn_scope_end unless it was kept. */
#include "internal.h"

#include <stdlib.h>

#define MAX_DEPTH 256

typedef struct {
    kn_tensor **items;
    int64_t len, cap;
} tensor_list;

static _Thread_local tensor_list owned;  /* all scopes' tensors, innermost last */
static _Thread_local tensor_list kept;   /* tensors leaving a scope at its end */
static _Thread_local int64_t marks[MAX_DEPTH + 1];
static _Thread_local int64_t kept_marks[MAX_DEPTH + 1];
static _Thread_local int depth;

static void push(tensor_list *l, kn_tensor *t) {
    if (l->len == l->cap) {
        int64_t cap = l->cap ? l->cap * 2 : 256;
        kn_tensor **items = realloc(l->items, (size_t)cap * sizeof *items);
        if (!items) abort(); /* internal invariant: bookkeeping must not fail */
        l->items = items;
        l->cap = cap;
    }
    l->items[l->len++] = t;
}

static void maybe_free_lists(void) {
    if (depth == 0) {
        free(owned.items);
        free(kept.items);
        owned = (tensor_list){0};
        kept = (tensor_list){0};
    }
}

kn_scope kn_scope_begin(void) {
    if (depth >= MAX_DEPTH) {
        kn__err(KN_ERR_INVALID, "kn_scope_begin: more than %d nested scopes", MAX_DEPTH);
        return (kn_scope){-1}; /* a handle kn_scope_end ignores: ending it frees nothing */
    }
    depth++;
    marks[depth] = owned.len;
    kept_marks[depth] = kept.len;
    return (kn_scope){depth};
}

void kn_scope_end(kn_scope s) {
    if (s.depth <= 0) return;
    while (depth >= s.depth && depth > 0) {
        int64_t mark = marks[depth];
        /* Release in reverse creation order: later tensors may view earlier ones. */
        for (int64_t i = owned.len - 1; i >= mark; i--) kn_release(owned.items[i]);
        owned.len = mark;
        int64_t kmark = kept_marks[depth];
        depth--;
        for (int64_t i = kmark; i < kept.len; i++)
            if (depth > 0) push(&owned, kept.items[i]); /* else the caller owns it */
        kept.len = kmark;
    }
    maybe_free_lists();
}

kn_tensor *kn__scoped(kn_tensor *t) {
    if (t && depth > 0) push(&owned, t);
    return t;
}

kn_tensor *kn_keep(kn_tensor *t) {
    if (!t || depth == 0) return t;
    kn_retain(t);
    push(&kept, t);
    return t;
}
