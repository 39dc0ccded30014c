#include "ckernels.h"
#include <stdint.h>
#include <string.h>

// exp to about 1 ulp: Cephes' polynomial on [-ln2/2, ln2/2] and a 2^n scale built from bits.
// Branch-free so the loops below vectorise.
static inline float exp_poly(float v) {
    float x = v < -87.3f ? -87.3f : (v > 88.3f ? 88.3f : v);
    float fx = x * 1.44269504088896341f + 0.5f;
    int32_t i = (int32_t)fx;
    i -= (fx < (float)i);  // floor
    fx = (float)i;
    x = x - fx * 0.693359375f + fx * 2.12194440e-4f;
    float z = x * x;
    float y = 1.9875691500e-4f;
    y = y * x + 1.3981999507e-3f;
    y = y * x + 8.3334519073e-3f;
    y = y * x + 4.1665795894e-2f;
    y = y * x + 1.6666665459e-1f;
    y = y * x + 5.0000001201e-1f;
    y = y * z + x + 1.0f;
    uint32_t bits = (uint32_t)(i + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return y * scale;
}

static inline float erf_as(float v) {
    float a = v < 0 ? -v : v;
    float t = 1.0f / (a * 0.3275911f + 1.0f);
    float r = t * 1.061405429f - 1.453152027f;
    r = r * t + 1.421413741f;
    r = r * t - 0.284496736f;
    r = r * t + 0.254829592f;
    float e = 1.0f - r * t * exp_poly(-(v * v));
    return v < 0 ? -e : e;
}

#define KERNELS(SUFFIX, ATTR)                                                      \
    ATTR static void softmax_rows_##SUFFIX(float *x, size_t rows, size_t n) {       \
        for (size_t r = 0; r < rows; r++) {                                         \
            float *p = x + r * n;                                                   \
            float m = p[0];                                                         \
            for (size_t j = 1; j < n; j++) m = p[j] > m ? p[j] : m;                 \
            float s = 0;                                                            \
            for (size_t j = 0; j < n; j++) { float e = exp_poly(p[j] - m); p[j] = e; s += e; } \
            float inv = 1.0f / s;                                                   \
            for (size_t j = 0; j < n; j++) p[j] *= inv;                             \
        }                                                                           \
    }                                                                               \
    ATTR static void gelu_##SUFFIX(float *x, size_t n) {                            \
        for (size_t i = 0; i < n; i++) {                                            \
            float v = x[i];                                                         \
            x[i] = v * 0.5f * (1.0f + erf_as(v * 0.70710678118654752440f));        \
        }                                                                           \
    }

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
KERNELS(avx2, __attribute__((target("avx2,fma"))))
static int has_avx2(void) {
    static int cached = -1;
    if (cached < 0) { __builtin_cpu_init(); cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
    return cached;
}
#endif
KERNELS(generic, )

void sam2_softmax_rows(float *x, size_t rows, size_t n) {
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
    if (has_avx2()) { softmax_rows_avx2(x, rows, n); return; }
#endif
    softmax_rows_generic(x, rows, n);
}

void sam2_gelu(float *x, size_t n) {
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
    if (has_avx2()) { gelu_avx2(x, n); return; }
#endif
    gelu_generic(x, n);
}
