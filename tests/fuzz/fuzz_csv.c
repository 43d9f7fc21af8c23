/* libFuzzer harness for the CSV reader: parses the input with the default
 * options and again with a delimiter and header mode picked by its last byte,
 * then reads every cell and checks the reader's invariants. */
#include "kiln.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static void check(const uint8_t *data, size_t size, const kn_csv_opts *o) {
    kn_csv *c = kn_csv_parse((const char *)data, size, o, "fuzz.csv");
    if (!c) {
        if (kn_error()[0] == '\0') __builtin_trap(); /* a failure must say why */
        kn_error_clear();
        return;
    }
    int64_t rows = kn_csv_rows(c), prev_line = 0;
    int cols = kn_csv_cols(c);
    if (rows < 0 || cols < 1) __builtin_trap();
    size_t total = 0;
    for (int j = 0; o->has_header && j < cols; j++) {
        const char *h = kn_csv_header(c, j);
        if (!h) __builtin_trap();
        total += strlen(h);
    }
    for (int64_t r = 0; r < rows; r++) {
        int64_t line = kn_csv_row_line(c, r);
        if (line <= prev_line) __builtin_trap(); /* rows start on increasing lines */
        prev_line = line;
        for (int j = 0; j < cols; j++) {
            const char *cell = kn_csv_cell(c, r, j);
            if (!cell) __builtin_trap();
            total += strlen(cell) + 1;
        }
    }
    if (total > size + 1) __builtin_trap(); /* decoded text never outgrows the input */
    if (kn_csv_cell(c, rows, 0) || kn_csv_cell(c, 0, cols)) __builtin_trap();
    kn_csv_free(c);
    kn_error_clear();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kn_csv_opts o = kn_csv_opts_default();
    check(data, size, &o);
    if (size > 0) {
        static const char delims[] = {',', ';', '\t', '|', ' '};
        uint8_t last = data[size - 1];
        o.delimiter = delims[last % sizeof delims];
        o.has_header = !(last & 0x80);
        check(data, size, &o);
    }
    return 0;
}
