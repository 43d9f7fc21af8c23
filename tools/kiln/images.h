/* kiln command line: image classification from IDX files (MNIST layout).
 *
 *   images.c       `kiln train-images DIR` and `kiln predict-images MODEL SRC`
 *   images_data.c  the IDX image sets, class names, the CNN and its model file
 *   images_grid.c  `--grid FILE.png`: the misclassified test images
 *   images_info.c  `kiln info` of an image model                             */
#ifndef KILN_IMAGES_H
#define KILN_IMAGES_H

#include "cli.h"

int cmd_train_images(int argc, char **argv);
int cmd_predict_images(int argc, char **argv);

#define IMG_MAX_CHANNELS 4
#define IMG_MIN_SIDE 4    /* two 2x2 pools */
#define IMG_MAX_SIDE 4096
#define IMG_MAX_CLASSES 1000

/* Images as the file holds them: px, uint8 [n, c, h, w] on the host;
 * labels y, [n] (NULL: none). img_set_free frees them. */
typedef struct {
    uint8_t *px;
    int64_t *y;
    int64_t n;
    int c, h, w;
    char *images_path, *labels_path;
} img_set;

/* DIR/SPLIT-images-idx3-ubyte (or .gz) and, when labels is not NULL, the
 * labels beside it (malloc'ed); false with a message naming what is missing. */
bool img_find(const char *dir, const char *split, char **images, char **labels);
/* Loads images (and labels when labels_path is not NULL), the first `limit`
 * of them when limit > 0; every shape, count and label checked. */
bool img_load(const char *images_path, const char *labels_path, int64_t limit, img_set *s);
void img_set_free(img_set *s);
/* The pixels of image i (c * h * w bytes, row-major). */
const uint8_t *img_pixels(const img_set *s, int64_t i);

/* What a saved image model needs to run: the input, its normalisation, the classes. */
typedef struct {
    int c, h, w, k;
    double mean[IMG_MAX_CHANNELS], std[IMG_MAX_CHANNELS];
    char **classes;
    int conv1, conv2, hidden;
} img_schema;
void img_schema_free(img_schema *s);

/* Class names: --classes a,b,... (list), else DIR/classes.txt, else
 * Fashion-MNIST's names when the set is recognised as it, else "0".."k-1".
 * max_label: the largest label seen. Fills s->classes and s->k. */
bool img_classes(const char *list, const char *dir, const img_set *train, int max_label, img_schema *s,
                 const char **source);

kn_module *img_model_build(const img_schema *s);
/* The schema as JSON (malloc'ed); training (NULL: none) is a JSON object
 * describing the run, kept as the member "training" for `kiln info`. */
char *img_schema_json(const img_schema *s, const char *training);
bool img_model_save(kn_module *m, const img_schema *s, const char *training, const char *path);
kn_module *img_model_load(const char *path, kn_device dev, img_schema *s);
/* Whether path is a safetensors file with an image model's metadata (false
 * when it cannot be read: the caller's own loader then says why). */
bool img_model_is(const char *path);

/* `kiln predict-images` after its arguments (also `kiln predict` given an
 * image model): the exit status. */
int img_predict_run(const char *model, const char *src, const char *out, const char *device);
/* `kiln info` of an image model (images_info.c): the exit status. */
int img_info(const char *model, bool json);

/* Images rows[0 .. n) of set (all when rows is NULL) -> normalised float32
 * [n, c, h, w] on dev (a tensor of the current scope). */
kn_tensor *img_normalize(const img_schema *s, const img_set *set, const int64_t *rows, int64_t n, kn_device dev);
/* Class probabilities [n, k] on the host (malloc'ed) for normalised images
 * x on the model's device, in eval mode, in chunks; NULL with a message. */
float *img_proba(kn_module *m, const img_schema *s, kn_tensor *x);
/* The same for a whole image set, normalised chunk by chunk. */
float *img_proba_set(kn_module *m, const img_schema *s, const img_set *set, kn_device dev);
/* Rows per forward chunk for images of this size (about 128 MB of the first conv's output). */
int64_t img_chunk_rows(const img_schema *s);

/* The misclassified images (idx[0 .. n_mis), test rows) as a PNG grid of at
 * most IMG_GRID_MAX tiles, each framed in orange and labelled true -> predicted. */
#define IMG_GRID_MAX 64
bool img_grid_write(const char *path, const img_set *test, const int64_t *idx, int64_t n_mis,
                    const int64_t *pred, char *const *classes);

#endif
