/* Convolution and pooling on CUDA (to be filled in). Until then every call
 * is declined and the op runs as its composite. */
#include "cuda_internal.h"

bool kc_vision_supports(int index, kn_op op, const void *args) {
    (void)index;
    (void)op;
    (void)args;
    return false;
}

#define KC_DECLINED(name)                                                                                    \
    kn_status kn__cuda_##name(int device, const void *args) {                                                \
        (void)device;                                                                                        \
        (void)args;                                                                                          \
        return kn__err(KN_ERR_UNSUPPORTED, #name ": no CUDA kernel");                                        \
    }
KC_DECLINED(conv2d)
KC_DECLINED(conv2d_backward)
KC_DECLINED(max_pool2d)
KC_DECLINED(max_pool2d_backward)
KC_DECLINED(avg_pool2d)
KC_DECLINED(avg_pool2d_backward)
