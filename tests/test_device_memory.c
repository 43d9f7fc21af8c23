/* Device allocators under churn, on every device: tensors of random sizes
 * (tiny, a block's worth, beyond a block) made and released in random order,
 * each filled with its own value and read back after its neighbours came and
 * went; at the end the device's bytes in use are back where they started. A
 * sub-allocator that loses a range, merges wrongly or hands out memory twice
 * fails here. */
#include "kn_test.h"

#include <kiln.h>

#define SLOTS 96
#define ROUNDS 800

static uint64_t rng = 0x243F6A8885A308D3ull;
static uint64_t next(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}

/* Elements of a random size: mostly small, some of a 64 MiB block's scale. */
static int64_t pick_size(void) {
    uint64_t r = next() % 100;
    if (r < 60) return 1 + (int64_t)(next() % 300);
    if (r < 97) return 1 + (int64_t)(next() % 70000);
    return (int64_t)(4 << 20) + (int64_t)(next() % (12 << 20)); /* 16 to 64 MiB of float32 */
}

static bool holds(kn_tensor *t, float v) {
    int64_t n = kn_numel(t);
    float *h = malloc((size_t)n * sizeof *h);
    bool ok = h && kn_to_host(t, h, KN_F32) == KN_OK;
    /* The first, last and a stride of elements: enough to see another tensor's value. */
    for (int64_t i = 0; ok && i < n; i += 1 + n / 64) ok = h[i] == v;
    ok = ok && h[n - 1] == v;
    free(h);
    return ok;
}

static void churn(kn_device dev) {
    kn_memory_stats before = {0}, after = {0};
    bool stats = kn_device_memory_stats(dev, &before) == KN_OK;
    kn_tensor *slot[SLOTS] = {0};
    float val[SLOTS] = {0};
    int64_t bad = 0, made = 0;
    for (int r = 0; r < ROUNDS; r++) {
        int k = (int)(next() % SLOTS);
        if (slot[k]) {
            if (!holds(slot[k], val[k])) bad++;
            kn_release(slot[k]);
            slot[k] = NULL;
        } else {
            int64_t n = pick_size();
            val[k] = (float)(r + 1);
            slot[k] = kn_full(1, &n, val[k], KN_F32, dev);
            if (!slot[k]) {
                CHECK(false, "%s: kn_full of %lld elements failed", kn_device_str(dev), (long long)n);
                break;
            }
            made++;
        }
    }
    for (int k = 0; k < SLOTS; k++)
        if (slot[k]) {
            if (!holds(slot[k], val[k])) bad++;
            kn_release(slot[k]);
        }
    CHECK(bad == 0, "%s: %lld of %lld tensors lost their contents", kn_device_str(dev), (long long)bad,
          (long long)made);
    if (stats && kn_device_synchronize(dev) == KN_OK && kn_device_memory_stats(dev, &after) == KN_OK)
        CHECK(after.in_use == before.in_use, "%s: %zu bytes in use after, %zu before", kn_device_str(dev),
              (size_t)after.in_use, (size_t)before.in_use);
}

int main(void) {
    kn_device devs[16];
    int n = kt_devices(devs, 16);
    for (int i = 0; i < n; i++) {
        churn(devs[i]);
        printf("device_memory: %s checked\n", kn_device_str(devs[i]));
    }
    return kt_finish("device_memory");
}
