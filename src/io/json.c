/* kiln — a minimal, strict, bounded JSON reader and writer (see json.h).
 * Recursive descent with an explicit depth limit, so hostile input can neither
 * overflow the stack nor make it allocate more than a small multiple of its
 * own size. */
#include "io/json.h"

#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct kn_json_doc {
    kn__json *nodes;
    int64_t n, cap;
    char *arena; /* decoded strings; sized len + 1 up front so it never moves */
};

typedef struct {
    const unsigned char *s;
    size_t len, i;
    kn__json_doc *d;
    size_t apos; /* next free byte in d->arena */
    int depth, max_depth;
    const char *what;
} parser;

static int64_t fail(parser *p, size_t at, const char *msg) {
    kn__err(KN_ERR_FORMAT, "%s: byte %zu: %s", p->what, at, msg);
    return -1;
}

static void skip_ws(parser *p) {
    while (p->i < p->len) {
        unsigned char c = p->s[p->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->i++;
    }
}

static int64_t new_node(parser *p, kn__json_type t, size_t pos) {
    kn__json_doc *d = p->d;
    if (d->n == d->cap) {
        int64_t cap = d->cap ? d->cap * 2 : 64;
        kn__json *nodes = realloc(d->nodes, (size_t)cap * sizeof *nodes);
        if (!nodes) {
            kn__err(KN_ERR_OOM, "%s: out of memory parsing JSON", p->what);
            return -1;
        }
        d->nodes = nodes;
        d->cap = cap;
    }
    kn__json *v = &d->nodes[d->n];
    memset(v, 0, sizeof *v);
    v->type = t;
    v->first = v->next = -1;
    v->pos = pos;
    return d->n++;
}

/* Length of the valid UTF-8 sequence at s (n bytes available), 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    uint32_t cp, min;
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07, min = 0x10000;
    else return 0;
    if (n < len) return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

bool kn__json_utf8_valid(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(u + i, n - i);
        if (!k) return false;
        i += k;
    }
    return true;
}

static int hex4(const unsigned char *s, uint32_t *out) {
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
        unsigned char c = s[k];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

/* Decodes the string at p->i (an opening quote) into the arena. */
static int parse_string(parser *p, const char **out, size_t *out_len) {
    size_t start = p->i++;
    char *o = p->d->arena + p->apos, *o0 = o;
    for (;;) {
        if (p->i >= p->len) return (int)fail(p, start, "unterminated string");
        unsigned char c = p->s[p->i];
        if (c == '"') {
            p->i++;
            break;
        }
        if (c == '\\') {
            size_t esc = p->i;
            if (p->i + 1 >= p->len) return (int)fail(p, esc, "unterminated string");
            unsigned char e = p->s[p->i + 1];
            p->i += 2;
            switch (e) {
            case '"': *o++ = '"'; continue;
            case '\\': *o++ = '\\'; continue;
            case '/': *o++ = '/'; continue;
            case 'b': *o++ = '\b'; continue;
            case 'f': *o++ = '\f'; continue;
            case 'n': *o++ = '\n'; continue;
            case 'r': *o++ = '\r'; continue;
            case 't': *o++ = '\t'; continue;
            case 'u': break;
            default: return (int)fail(p, esc, "invalid escape in string");
            }
            uint32_t cp, lo;
            if (p->i + 4 > p->len || hex4(p->s + p->i, &cp))
                return (int)fail(p, esc, "\\u must be followed by 4 hex digits");
            p->i += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return (int)fail(p, esc, "lone low surrogate in \\u escape");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (p->i + 6 > p->len || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u' ||
                    hex4(p->s + p->i + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                    return (int)fail(p, esc, "high surrogate not followed by a low one");
                p->i += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp == 0) return (int)fail(p, esc, "\\u0000 is not allowed in strings");
            if (cp < 0x80) {
                *o++ = (char)cp;
            } else if (cp < 0x800) {
                *o++ = (char)(0xC0 | (cp >> 6));
                *o++ = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                *o++ = (char)(0xE0 | (cp >> 12));
                *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                *o++ = (char)(0x80 | (cp & 0x3F));
            } else {
                *o++ = (char)(0xF0 | (cp >> 18));
                *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
                *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                *o++ = (char)(0x80 | (cp & 0x3F));
            }
            continue;
        }
        if (c < 0x20) return (int)fail(p, p->i, "control character in string (must be escaped)");
        size_t k = utf8_seq(p->s + p->i, p->len - p->i);
        if (!k) return (int)fail(p, p->i, "invalid UTF-8 in string");
        memcpy(o, p->s + p->i, k);
        o += k;
        p->i += k;
    }
    *o++ = '\0';
    *out = o0;
    *out_len = (size_t)(o - o0) - 1;
    p->apos += (size_t)(o - o0);
    return 0;
}

static bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static int64_t parse_number(parser *p) {
    size_t start = p->i, i = p->i;
    const unsigned char *s = p->s;
    bool neg = false, integral = true;
    if (i < p->len && s[i] == '-') neg = true, i++;
    if (i >= p->len || !is_digit(s[i])) return fail(p, start, "invalid number");
    if (s[i] == '0') {
        i++;
        if (i < p->len && is_digit(s[i])) return fail(p, start, "leading zero in number");
    } else {
        while (i < p->len && is_digit(s[i])) i++;
    }
    if (i < p->len && s[i] == '.') {
        integral = false;
        i++;
        if (i >= p->len || !is_digit(s[i])) return fail(p, start, "digit expected after '.'");
        while (i < p->len && is_digit(s[i])) i++;
    }
    if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
        integral = false;
        i++;
        if (i < p->len && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= p->len || !is_digit(s[i])) return fail(p, start, "digit expected in exponent");
        while (i < p->len && is_digit(s[i])) i++;
    }
    int64_t idx = new_node(p, KN__JSON_NUMBER, start);
    if (idx < 0) return -1;
    kn__json *v = &p->d->nodes[idx];
    size_t n = i - start;
    if (integral) { /* exact, with overflow detection (accumulate negatively) */
        int64_t acc = 0;
        bool ok = true;
        for (size_t k = start + (neg ? 1 : 0); k < i; k++) {
            int dig = s[k] - '0';
            if (acc < (INT64_MIN + dig) / 10) {
                ok = false;
                break;
            }
            acc = acc * 10 - dig;
        }
        if (ok && !neg && acc == INT64_MIN) ok = false;
        if (ok) {
            v->is_int = true;
            v->integer = neg ? acc : -acc;
        }
    }
    /* strtod follows LC_NUMERIC: swap '.' for the locale's decimal point. */
    char small[128], *buf = n < sizeof small ? small : malloc(n + 1);
    if (!buf) {
        kn__err(KN_ERR_OOM, "%s: out of memory parsing JSON", p->what);
        return -1;
    }
    memcpy(buf, s + start, n);
    buf[n] = '\0';
    const char *dp = localeconv()->decimal_point;
    char *dot = strchr(buf, '.');
    if (dot && dp && dp[0] && !dp[1]) *dot = dp[0];
    v->number = strtod(buf, NULL);
    if (buf != small) free(buf);
    p->i = i;
    return idx;
}

static int64_t parse_value(parser *p);

static int64_t parse_container(parser *p, bool object) {
    size_t start = p->i++;
    if (++p->depth > p->max_depth) {
        char msg[64];
        snprintf(msg, sizeof msg, "nesting deeper than %d levels", p->max_depth);
        return fail(p, start, msg);
    }
    int64_t idx = new_node(p, object ? KN__JSON_OBJECT : KN__JSON_ARRAY, start);
    if (idx < 0) return -1;
    const char close = object ? '}' : ']';
    int64_t last = -1, count = 0;
    skip_ws(p);
    if (p->i < p->len && p->s[p->i] == close) {
        p->i++;
        p->depth--;
        return idx;
    }
    for (;;) {
        const char *key = NULL;
        size_t key_len = 0;
        skip_ws(p);
        if (object) {
            if (p->i >= p->len || p->s[p->i] != '"')
                return fail(p, p->i, "expected a string key in object");
            if (parse_string(p, &key, &key_len)) return -1;
            skip_ws(p);
            if (p->i >= p->len || p->s[p->i] != ':')
                return fail(p, p->i, "expected ':' after object key");
            p->i++;
        }
        int64_t child = parse_value(p);
        if (child < 0) return -1;
        kn__json *nodes = p->d->nodes;
        nodes[child].key = key;
        nodes[child].key_len = key_len;
        if (last < 0) nodes[idx].first = child;
        else nodes[last].next = child;
        last = child;
        count++;
        skip_ws(p);
        if (p->i < p->len && p->s[p->i] == ',') {
            p->i++;
            continue;
        }
        if (p->i < p->len && p->s[p->i] == close) {
            p->i++;
            break;
        }
        return fail(p, p->i,
                    object ? "expected ',' or '}' in object" : "expected ',' or ']' in array");
    }
    p->d->nodes[idx].count = count;
    p->depth--;
    return idx;
}

static int64_t parse_literal(parser *p, const char *word, kn__json_type t, bool b) {
    size_t n = strlen(word);
    if (p->len - p->i < n || memcmp(p->s + p->i, word, n) != 0)
        return fail(p, p->i, "invalid literal (expected a JSON value)");
    int64_t idx = new_node(p, t, p->i);
    if (idx < 0) return -1;
    p->d->nodes[idx].boolean = b;
    p->i += n;
    return idx;
}

static int64_t parse_value(parser *p) {
    skip_ws(p);
    if (p->i >= p->len) return fail(p, p->i, "expected a JSON value, found the end of the text");
    unsigned char c = p->s[p->i];
    switch (c) {
    case '{': return parse_container(p, true);
    case '[': return parse_container(p, false);
    case '"': {
        int64_t idx = new_node(p, KN__JSON_STRING, p->i);
        if (idx < 0) return -1;
        const char *str;
        size_t len;
        if (parse_string(p, &str, &len)) return -1;
        p->d->nodes[idx].str = str;
        p->d->nodes[idx].len = len;
        return idx;
    }
    case 't': return parse_literal(p, "true", KN__JSON_BOOL, true);
    case 'f': return parse_literal(p, "false", KN__JSON_BOOL, false);
    case 'n': return parse_literal(p, "null", KN__JSON_NULL, false);
    default:
        if (c == '-' || is_digit(c)) return parse_number(p);
        return fail(p, p->i, "expected a JSON value");
    }
}

kn__json_doc *kn__json_parse(const char *text, size_t len, const kn__json_limits *limits,
                             const char *what) {
    if (!what) what = "JSON";
    int max_depth = limits && limits->max_depth > 0 ? limits->max_depth : KN__JSON_DEFAULT_DEPTH;
    size_t max_len = limits && limits->max_len > 0 ? limits->max_len : KN__JSON_DEFAULT_MAX_LEN;
    if (!text && len) {
        kn__err(KN_ERR_NULL, "%s: JSON text is NULL", what);
        return NULL;
    }
    if (len > max_len) {
        kn__err(KN_ERR_FORMAT, "%s: JSON text of %zu bytes exceeds the limit of %zu", what, len,
                max_len);
        return NULL;
    }
    kn__json_doc *d = calloc(1, sizeof *d);
    if (d) d->arena = malloc(len + 1);
    if (!d || !d->arena) {
        kn__json_free(d);
        kn__err(KN_ERR_OOM, "%s: out of memory parsing JSON", what);
        return NULL;
    }
    parser p = {(const unsigned char *)text, len, 0, d, 0, 0, max_depth, what};
    if (parse_value(&p) < 0) {
        kn__json_free(d);
        return NULL;
    }
    skip_ws(&p);
    if (p.i != len) {
        fail(&p, p.i, "unexpected data after the JSON value");
        kn__json_free(d);
        return NULL;
    }
    return d;
}

void kn__json_free(kn__json_doc *d) {
    if (!d) return;
    free(d->nodes);
    free(d->arena);
    free(d);
}

const kn__json *kn__json_root(const kn__json_doc *d) { return d && d->n ? &d->nodes[0] : NULL; }

const kn__json *kn__json_first(const kn__json_doc *d, const kn__json *v) {
    return d && v && v->first >= 0 ? &d->nodes[v->first] : NULL;
}

const kn__json *kn__json_next(const kn__json_doc *d, const kn__json *v) {
    return d && v && v->next >= 0 ? &d->nodes[v->next] : NULL;
}

const kn__json *kn__json_get(const kn__json_doc *d, const kn__json *v, const char *key) {
    if (!v || v->type != KN__JSON_OBJECT || !key) return NULL;
    for (const kn__json *m = kn__json_first(d, v); m; m = kn__json_next(d, m))
        if (strcmp(m->key, key) == 0) return m;
    return NULL;
}

const char *kn__json_type_name(kn__json_type t) {
    static const char *names[] = {"null", "boolean", "number", "string", "array", "object"};
    return (unsigned)t < sizeof names / sizeof *names ? names[t] : "?";
}

/* ---- the public reader (kiln/io.h) ------------------------------------------- */

kn_json_doc *kn_json_parse(const char *text, size_t len, const char *what) {
    return kn__json_parse(text, len, NULL, what);
}
void kn_json_free(kn_json_doc *d) { kn__json_free(d); }
const kn_json *kn_json_root(const kn_json_doc *d) { return kn__json_root(d); }
const kn_json *kn_json_first(const kn_json_doc *d, const kn_json *v) { return kn__json_first(d, v); }
const kn_json *kn_json_next(const kn_json_doc *d, const kn_json *v) { return kn__json_next(d, v); }
const kn_json *kn_json_get(const kn_json_doc *d, const kn_json *v, const char *key) {
    return kn__json_get(d, v, key);
}
kn_json_type kn_json_type_of(const kn_json *v) { return v ? (kn_json_type)v->type : KN_JSON_NULL; }
const char *kn_json_type_name(kn_json_type t) { return kn__json_type_name((kn__json_type)t); }
bool kn_json_bool(const kn_json *v) { return v && v->type == KN__JSON_BOOL && v->boolean; }
double kn_json_number(const kn_json *v) { return v && v->type == KN__JSON_NUMBER ? v->number : 0; }
bool kn_json_int(const kn_json *v, int64_t *out) {
    if (!v || v->type != KN__JSON_NUMBER || !v->is_int) return false;
    if (out) *out = v->integer;
    return true;
}
const char *kn_json_str(const kn_json *v, size_t *len) {
    bool s = v && v->type == KN__JSON_STRING;
    if (len) *len = s ? v->len : 0;
    return s ? v->str : NULL;
}
int64_t kn_json_count(const kn_json *v) {
    return v && (v->type == KN__JSON_ARRAY || v->type == KN__JSON_OBJECT) ? v->count : 0;
}
bool kn_utf8_valid(const char *s, size_t n) { return (s || !n) && kn__json_utf8_valid(s, n); }

/* ---- writer ---------------------------------------------------------------- */

void kn__json_raw(kn__json_buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) {
            if (cap > SIZE_MAX / 2) {
                b->oom = true;
                return;
            }
            cap *= 2;
        }
        char *data = realloc(b->data, cap);
        if (!data) {
            b->oom = true;
            return;
        }
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void kn__json_cstr(kn__json_buf *b, const char *s) { kn__json_raw(b, s, strlen(s)); }

bool kn__json_string(kn__json_buf *b, const char *s, size_t n) {
    if (!kn__json_utf8_valid(s, n) || memchr(s, '\0', n)) return false;
    kn__json_raw(b, "\"", 1);
    size_t run = 0; /* bytes copied as they are, flushed before each escape */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[8];
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if (c == '\r') esc = "\\r";
        else if (c == '\t') esc = "\\t";
        else if (c == '\b') esc = "\\b";
        else if (c == '\f') esc = "\\f";
        else if (c < 0x20 || c == 0x7F) {
            snprintf(u, sizeof u, "\\u%04x", c);
            esc = u;
        }
        if (!esc) {
            run++;
            continue;
        }
        kn__json_raw(b, s + i - run, run);
        run = 0;
        kn__json_cstr(b, esc);
    }
    kn__json_raw(b, s + n - run, run);
    kn__json_raw(b, "\"", 1);
    return true;
}

void kn__json_int(kn__json_buf *b, int64_t v) {
    char s[32];
    int n = snprintf(s, sizeof s, "%lld", (long long)v);
    kn__json_raw(b, s, (size_t)n);
}

void kn__json_buf_free(kn__json_buf *b) {
    if (!b) return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->oom = false;
}
