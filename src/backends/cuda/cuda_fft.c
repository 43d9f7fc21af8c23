/* FFT on CUDA through cuFFT (to be filled in). Until then every call is
 * declined and the op runs as its composite. */
#include "cuda_internal.h"

bool kc_fft_supports(int index, const void *args) {
    (void)index;
    (void)args;
    return false;
}

kn_status kn__cuda_fft(int device, const void *args) {
    (void)device;
    (void)args;
    return kn__err(KN_ERR_UNSUPPORTED, "fft: no CUDA kernel");
}
