/* Built against an installed kiln (pkg-config and find_package) in CI. */
#include <kiln.h>
#include <stdio.h>

int main(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *a = kn_ones(KN_SHAPE(2, 3), KN_F32, KN_CPU);
    double v = kn_item(kn_sum_all(kn_mul_scalar(a, 2)));
    kn_scope_end(s);
    printf("installed kiln %s works: %g\n", KN_VERSION_STRING, v);
    return v == 12 ? 0 : 1;
}
