/* kiln command line: one training run's data, prepared the same way by
 * `kiln train` (train_cmd.c) and by each fold of `kiln train --cv` (cv.c):
 * the train, validation and test rows encoded with the fitted schema, their
 * copies on the device and the class (or label) weights. */
#include "cli.h"

#include <stdlib.h>

bool prepared_run_encode(prepared_run *r, const kn_csv *csv, const char *path, schema *s, const int64_t *train,
                         int64_t n_train, const int64_t *val, int64_t n_val, const int64_t *test, int64_t n_test) {
    return table_encode(csv, path, s, train, n_train, true, &r->etr) &&
           table_encode(csv, path, s, val, n_val, true, &r->eva) &&
           table_encode(csv, path, s, test, n_test, true, &r->ete);
}

void prepared_run_weights(prepared_run *r, const schema *s, const char *mode, const char **desc) {
    *desc = "none";
    if (s->n_labels) r->cw = label_pos_weights(mode, &r->etr, s->n_labels, desc);
    else if (!s->regression) r->cw = class_weights(mode, r->etr.y, r->etr.n, s->n_classes, desc);
}

bool prepared_run_to_device(prepared_run *r, const schema *s, kn_device dev) {
    return dev_data_make(&r->etr, s, dev, &r->dtr) && dev_data_make(&r->eva, s, dev, &r->dva) &&
           dev_data_make(&r->ete, s, dev, &r->dte);
}

void prepared_run_free(prepared_run *r) {
    free(r->cw);
    dev_data_free(&r->dtr);
    dev_data_free(&r->dva);
    dev_data_free(&r->dte);
    encoded_free(&r->etr);
    encoded_free(&r->eva);
    encoded_free(&r->ete);
    *r = (prepared_run){0};
}
