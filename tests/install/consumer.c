/* Built against an installed kiln (pkg-config static and shared, and
 * find_package) by check.sh: computes on the CPU, prints the devices it
 * sees, and fails if a machine without a CUDA device has cuBLASLt mapped
 * (the CUDA backend opens it only at a device's first GEMM). */
#include <kiln.h>
#include <stdio.h>
#include <string.h>

/* Whether a file whose name contains `part` is mapped; -1 when unknown. */
static int mapped(const char *part) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return -1;
    char line[4096]; /* a longer line is read in pieces; a name split across two is missed, rare enough */
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) found = strstr(line, part) != NULL;
    fclose(f);
    return found;
}

int main(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *a = kn_ones(KN_SHAPE(2, 3), KN_F32, KN_CPU);
    double v = kn_item(kn_sum_all(kn_mul_scalar(a, 2)));
    kn_scope_end(s);
    printf("installed kiln %s works: %g\n", KN_VERSION_STRING, v);
    printf("devices:");
    for (int k = 0; k < KN_DEVICE_KIND_COUNT; k++)
        printf(" %s=%d", kn_device_kind_name((kn_device_kind)k), kn_device_count((kn_device_kind)k));
    kn_device d = kn_device_default();
    printf("; default %s\n", kn_device_ok(d) ? kn_device_str(d) : "(none)");
    int lt = mapped("libcublasLt");
    if (lt == 1 && kn_device_count(KN_DEVICE_CUDA) == 0) {
        fprintf(stderr, "FAIL: libcublasLt is mapped although there is no CUDA device\n");
        return 1;
    }
    printf("cuBLASLt mapped: %s\n", lt < 0 ? "unknown (no /proc/self/maps)" : lt ? "yes" : "no");
    return v == 12 ? 0 : 1;
}
