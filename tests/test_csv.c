/* Tests of the CSV reader: every RFC 4180 case, every error with its message,
 * row line numbers, and a file of tens of MB. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "kiln.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int passed, failed;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (cond) passed++;                                                            \
        else {                                                                         \
            failed++;                                                                  \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
        }                                                                              \
    } while (0)

#define CHECK_STR(got, want)                                                           \
    do {                                                                               \
        const char *g_ = (got), *w_ = (want);                                          \
        if (g_ && strcmp(g_, w_) == 0) passed++;                                       \
        else {                                                                         \
            failed++;                                                                  \
            fprintf(stderr, "%s:%d: got \"%s\", want \"%s\"\n", __FILE__, __LINE__,    \
                    g_ ? g_ : "(null)", w_);                                           \
        }                                                                              \
    } while (0)

/* The last error contains every one of the given substrings. */
static void check_error(int line, const char *a, const char *b) {
    const char *e = kn_error();
    if (strstr(e, a) && (!b || strstr(e, b))) {
        passed++;
        return;
    }
    failed++;
    fprintf(stderr, "%s:%d: error \"%s\" lacks \"%s\"%s%s\n", __FILE__, line, e, a,
            b ? " or " : "", b ? b : "");
}
#define CHECK_ERR(a, b) check_error(__LINE__, a, b)

static kn_csv *parse(const char *s, char delim, bool header) {
    kn_csv_opts o = kn_csv_opts_default();
    o.delimiter = delim;
    o.has_header = header;
    return kn_csv_parse(s, strlen(s), &o, "t.csv");
}

/* Parses s and checks that it fails with an error containing a and b. */
static void expect_fail(int line, const char *s, size_t len, const char *a, const char *b) {
    kn_error_clear();
    kn_csv *c = kn_csv_parse(s, len, NULL, "t.csv");
    if (c) {
        failed++;
        fprintf(stderr, "%s:%d: parse succeeded, expected \"%s\"\n", __FILE__, line, a);
        kn_csv_free(c);
        return;
    }
    passed++;
    check_error(line, a, b);
}
#define EXPECT_FAIL(s, a, b) expect_fail(__LINE__, s, strlen(s), a, b)

static void test_basic(void) {
    kn_csv_opts d = kn_csv_opts_default();
    CHECK(d.delimiter == ',' && d.has_header);
    kn_csv *c = parse("a,b,c\n1,2,3\n4,5,6\n", ',', true);
    CHECK(c != NULL);
    if (!c) return;
    CHECK(kn_csv_rows(c) == 2);
    CHECK(kn_csv_cols(c) == 3);
    CHECK_STR(kn_csv_header(c, 0), "a");
    CHECK_STR(kn_csv_header(c, 2), "c");
    CHECK(kn_csv_column(c, "b") == 1);
    CHECK(kn_csv_column(c, "z") == -1);
    CHECK_STR(kn_csv_cell(c, 0, 0), "1");
    CHECK_STR(kn_csv_cell(c, 1, 2), "6");
    CHECK(kn_csv_row_line(c, 0) == 2);
    CHECK(kn_csv_row_line(c, 1) == 3);
    kn_error_clear();
    CHECK(kn_csv_cell(c, 2, 0) == NULL);
    CHECK_ERR("out of range", NULL);
    CHECK(kn_csv_cell(c, 0, 3) == NULL);
    CHECK(kn_csv_cell(c, -1, 0) == NULL);
    CHECK(kn_csv_header(c, 3) == NULL);
    CHECK(kn_csv_row_line(c, 2) == -1);
    kn_csv_free(c);
    kn_csv_free(NULL);
}

static void test_line_endings(void) {
    kn_csv *c = parse("a,b\n1,2", ',', true); /* no final newline */
    CHECK(c && kn_csv_rows(c) == 1);
    if (c) CHECK_STR(kn_csv_cell(c, 0, 1), "2");
    kn_csv_free(c);

    c = parse("a,b\r\n1,2\r\n3,4\r\n", ',', true);
    CHECK(c && kn_csv_rows(c) == 2);
    if (c) {
        CHECK_STR(kn_csv_header(c, 1), "b");
        CHECK_STR(kn_csv_cell(c, 0, 1), "2");
        CHECK_STR(kn_csv_cell(c, 1, 1), "4");
        CHECK(kn_csv_row_line(c, 1) == 3);
    }
    kn_csv_free(c);

    c = parse("a,b\r\n1,2", ',', true); /* CRLF, last line without one */
    CHECK(c && kn_csv_rows(c) == 1);
    if (c) CHECK_STR(kn_csv_cell(c, 0, 1), "2");
    kn_csv_free(c);

    c = parse("a,b\r1,2\r3,4", ',', true); /* old Mac line endings */
    CHECK(c && kn_csv_rows(c) == 2);
    if (c) {
        CHECK_STR(kn_csv_cell(c, 1, 0), "3");
        CHECK(kn_csv_row_line(c, 1) == 3);
    }
    kn_csv_free(c);
}

static void test_quotes(void) {
    kn_csv *c = parse("a,b\n\"x,y\",\"he said \"\"hi\"\"\"\n", ',', true);
    CHECK(c && kn_csv_rows(c) == 1);
    if (c) {
        CHECK_STR(kn_csv_cell(c, 0, 0), "x,y");
        CHECK_STR(kn_csv_cell(c, 0, 1), "he said \"hi\"");
    }
    kn_csv_free(c);

    /* Newlines inside quotes: the row after starts two lines later. */
    c = parse("a,b\n\"line1\nline2\",z\n3,4\n", ',', true);
    CHECK(c && kn_csv_rows(c) == 2);
    if (c) {
        CHECK_STR(kn_csv_cell(c, 0, 0), "line1\nline2");
        CHECK_STR(kn_csv_cell(c, 0, 1), "z");
        CHECK(kn_csv_row_line(c, 0) == 2);
        CHECK(kn_csv_row_line(c, 1) == 4);
    }
    kn_csv_free(c);

    c = parse("a\r\n\"x\r\ny\"\r\n", ',', true); /* CRLF inside quotes is kept */
    CHECK(c && kn_csv_rows(c) == 1);
    if (c) CHECK_STR(kn_csv_cell(c, 0, 0), "x\r\ny");
    kn_csv_free(c);

    c = parse("\"quoted header\",\"h,2\"\n\"\",\"\"\"\"\n", ',', true);
    CHECK(c && kn_csv_rows(c) == 1);
    if (c) {
        CHECK_STR(kn_csv_header(c, 0), "quoted header");
        CHECK(kn_csv_column(c, "h,2") == 1);
        CHECK_STR(kn_csv_cell(c, 0, 0), "");
        CHECK_STR(kn_csv_cell(c, 0, 1), "\"");
    }
    kn_csv_free(c);

    c = parse("a,b\n\"  spaced  \" ,y\n", ',', true); /* nothing trimmed inside quotes */
    CHECK(c != NULL);
    if (c) {
        CHECK_STR(kn_csv_cell(c, 0, 0), "  spaced  ");
        CHECK_STR(kn_csv_cell(c, 0, 1), "y");
    }
    kn_csv_free(c);

    c = parse("a,b\nab\"c,d\n", ',', true); /* a quote inside an unquoted field is kept */
    CHECK(c != NULL);
    if (c) CHECK_STR(kn_csv_cell(c, 0, 0), "ab\"c");
    kn_csv_free(c);

    c = parse("a,b\n1,\"last\"", ',', true); /* quoted last field at end of data */
    CHECK(c != NULL);
    if (c) CHECK_STR(kn_csv_cell(c, 0, 1), "last");
    kn_csv_free(c);
}

static void test_fields(void) {
    kn_csv *c = parse("a,b,c\n,,\n", ',', true);
    CHECK(c && kn_csv_rows(c) == 1 && kn_csv_cols(c) == 3);
    if (c) CHECK_STR(kn_csv_cell(c, 0, 2), "");
    kn_csv_free(c);

    c = parse("a,b\n1,", ',', true); /* empty last field, no newline */
    CHECK(c && kn_csv_rows(c) == 1);
    if (c) CHECK_STR(kn_csv_cell(c, 0, 1), "");
    kn_csv_free(c);

    c = parse("a,b\n a , b \n", ',', true); /* unquoted fields are kept exactly */
    CHECK(c != NULL);
    if (c) {
        CHECK_STR(kn_csv_cell(c, 0, 0), " a ");
        CHECK_STR(kn_csv_cell(c, 0, 1), " b ");
    }
    kn_csv_free(c);

    c = parse("x\n\"\"\n7\n", ',', true); /* one column: an empty value needs quotes */
    CHECK(c && kn_csv_rows(c) == 2 && kn_csv_cols(c) == 1);
    if (c) CHECK_STR(kn_csv_cell(c, 0, 0), "");
    kn_csv_free(c);

    c = parse("name,city\n\xe6\x97\xa5\xe6\x9c\xac,Z\xc3\xbcrich\n", ',', true); /* UTF-8 */
    CHECK(c != NULL);
    if (c) CHECK_STR(kn_csv_cell(c, 0, 1), "Z\xc3\xbcrich");
    kn_csv_free(c);
}

static void test_bom_blank_delim_header(void) {
    kn_csv *c = parse("\xEF\xBB\xBFname,age\nbob,3\n", ',', true);
    CHECK(c != NULL);
    if (c) {
        CHECK_STR(kn_csv_header(c, 0), "name");
        CHECK(kn_csv_column(c, "name") == 0);
    }
    kn_csv_free(c);

    c = parse("a,b\n\n1,2\n\r\n\n3,4\n\n", ',', true);
    CHECK(c && kn_csv_rows(c) == 2);
    if (c) {
        CHECK(kn_csv_row_line(c, 0) == 3);
        CHECK(kn_csv_row_line(c, 1) == 6);
        CHECK_STR(kn_csv_cell(c, 1, 1), "4");
    }
    kn_csv_free(c);

    c = parse("\n\na,b\n1,2\n", ',', true); /* blank lines before the header */
    CHECK(c && kn_csv_rows(c) == 1);
    if (c) CHECK(kn_csv_row_line(c, 0) == 4);
    kn_csv_free(c);

    c = parse("a;b\n1,5;2\n", ';', true);
    CHECK(c && kn_csv_cols(c) == 2);
    if (c) CHECK_STR(kn_csv_cell(c, 0, 0), "1,5");
    kn_csv_free(c);

    c = parse("a\tb\n\"x\ty\"\t2\n", '\t', true);
    CHECK(c && kn_csv_cols(c) == 2);
    if (c) CHECK_STR(kn_csv_cell(c, 0, 0), "x\ty");
    kn_csv_free(c);

    c = parse("1,2\n3,4\n", ',', false); /* no header: every row is data */
    CHECK(c && kn_csv_rows(c) == 2 && kn_csv_cols(c) == 2);
    if (c) {
        CHECK_STR(kn_csv_cell(c, 0, 0), "1");
        CHECK(kn_csv_row_line(c, 0) == 1);
        CHECK(kn_csv_column(c, "1") == -1);
        CHECK(kn_csv_header(c, 0) == NULL);
    }
    kn_csv_free(c);

    c = parse("a,b,c\n", ',', true); /* header only: 0 rows, not an error */
    CHECK(c && kn_csv_rows(c) == 0 && kn_csv_cols(c) == 3);
    kn_csv_free(c);
    c = parse("a,b,c", ',', true);
    CHECK(c && kn_csv_rows(c) == 0 && kn_csv_cols(c) == 3);
    kn_csv_free(c);
}

static void test_errors(void) {
    EXPECT_FAIL("a,b\n1,\"abc\n2,3\n", "t.csv:2: unterminated quoted field", NULL);
    EXPECT_FAIL("a,b,c\n1,2,3\n4,5\n", "t.csv:3: row has 2 fields, header has 3", NULL);
    EXPECT_FAIL("a,b\n1,2\n\n3,4,5,6\n", "t.csv:4: row has 4 fields, header has 2", NULL);
    EXPECT_FAIL("a,b\n\"x\ny\",z\n1\n", "t.csv:4: row has 1 field, header has 2", NULL);
    EXPECT_FAIL("a,b\n \n", "t.csv:2: row has 1 field, header has 2", NULL); /* not blank */
    EXPECT_FAIL("a,b\n\"ab\"c,d\n", "t.csv:2:", "after a closing quote");
    expect_fail(__LINE__, "a,b\n1,2\n3,\0\n", 11, "t.csv:3: binary data (NUL byte)", NULL);
    expect_fail(__LINE__, "a,b\n\"1\0\",2\n", 11, "t.csv:2: binary data (NUL byte)", NULL);
    expect_fail(__LINE__, "\x7f" "ELF\x02\x01\x01\0\0\0", 10, "t.csv:1: binary data", NULL);
    EXPECT_FAIL("", "t.csv: empty file", NULL);
    EXPECT_FAIL("\xEF\xBB\xBF", "t.csv: empty file", NULL);
    EXPECT_FAIL("\n\r\n\n", "t.csv: empty file", NULL);
    expect_fail(__LINE__, "\xFF\xFE" "a\0,\0b\0", 8, "t.csv: UTF-16", NULL);

    kn_csv_opts o = kn_csv_opts_default();
    o.delimiter = '"';
    kn_error_clear();
    CHECK(kn_csv_parse("a", 1, &o, "t.csv") == NULL);
    CHECK_ERR("t.csv: invalid CSV delimiter", NULL);

    kn_error_clear();
    CHECK(kn_csv_read("/nonexistent-dir/x.csv", NULL) == NULL);
    CHECK_ERR("/nonexistent-dir/x.csv: cannot open: No such file or directory", NULL);
    CHECK(kn_error_code() == KN_ERR_IO);
    kn_error_clear();
    CHECK(kn_csv_read("/tmp", NULL) == NULL);
    CHECK_ERR("/tmp: cannot read: Is a directory", NULL);
    kn_error_clear();
    CHECK(kn_csv_rows(NULL) == -1);
}

static void test_read_file(void) {
    char path[] = "/tmp/kiln_test_csv_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    const char *text = "id,note\n1,\"multi\nline\"\n2,plain\n3,\"x\"\"y\"\n";
    CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    kn_csv *c = kn_csv_read(path, NULL);
    CHECK(c && kn_csv_rows(c) == 3);
    if (c) {
        CHECK_STR(kn_csv_cell(c, 0, 1), "multi\nline");
        CHECK_STR(kn_csv_cell(c, 2, 1), "x\"y");
        CHECK(kn_csv_row_line(c, 1) == 4);
        CHECK(kn_csv_row_line(c, 2) == 5);
    }
    kn_csv_free(c);

    /* The error names the file and line. */
    FILE *f = fopen(path, "w");
    fputs("a,b\n1,2\n3\n", f);
    fclose(f);
    kn_error_clear();
    CHECK(kn_csv_read(path, NULL) == NULL);
    char want[64];
    snprintf(want, sizeof want, "%s:3: row has 1 field, header has 2", path);
    CHECK_ERR(want, NULL);
    CHECK(kn_error_code() == KN_ERR_FORMAT);

    f = fopen(path, "w"); /* empty file on disk */
    fclose(f);
    kn_error_clear();
    CHECK(kn_csv_read(path, NULL) == NULL);
    snprintf(want, sizeof want, "%s: empty file", path);
    CHECK_ERR(want, NULL);
    unlink(path);
}

/* About 32 MB: 1,000,000 rows of 6 fields, some quoted. */
static void test_large(void) {
    const int64_t n = 1000000;
    size_t cap = (size_t)n * 40 + 64, len = 0;
    char *buf = malloc(cap);
    CHECK(buf != NULL);
    if (!buf) return;
    len += (size_t)sprintf(buf + len, "a,b,c,d,e,label\n");
    for (int64_t r = 0; r < n; r++)
        len += (size_t)sprintf(buf + len, "%lld,%.3f,x%d,\"q,%d\",,%s\n", (long long)r,
                               (double)r * 0.5, (int)(r % 97), (int)(r % 13), r % 2 ? "yes" : "no");
    clock_t t0 = clock();
    kn_csv *c = kn_csv_parse(buf, len, NULL, "big.csv");
    double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    CHECK(c && kn_csv_rows(c) == n && kn_csv_cols(c) == 6);
    if (c) {
        CHECK_STR(kn_csv_cell(c, n - 1, 0), "999999");
        CHECK_STR(kn_csv_cell(c, n - 1, 3), "q,0"); /* 999999 = 13 * 76923 */
        CHECK_STR(kn_csv_cell(c, n - 1, 5), "yes");
        CHECK(kn_csv_row_line(c, n - 1) == n + 1);
    }
    printf("test_csv: parsed %.1f MB in %.3f s\n", (double)len / 1e6, secs);
    CHECK(secs < 5.0);
    kn_csv_free(c);
    free(buf);
}

int main(void) {
    test_basic();
    test_line_endings();
    test_quotes();
    test_fields();
    test_bom_blank_delim_header();
    test_errors();
    test_read_file();
    test_large();
    printf("test_csv: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
