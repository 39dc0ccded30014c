#ifndef _GNU_SOURCE
#define _GNU_SOURCE  // O_DIRECT
#endif
#include "ckernels.h"
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#if defined(__linux__)
#include <dlfcn.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#endif

// ---------------------------------------------------------------------------------------------
// Scalar reference versions (any CPU). exp to about 1 ulp: Cephes' polynomial on [-ln2/2, ln2/2]
// and a 2^n scale built from bits; erf as a rational approximation (below).

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

// erf(u) = u·P(u²)/Q(u²) on |u| ≤ 3.92 (beyond it erf rounds to ±1 in float): a (5, 5) rational
// fitted to erf (relative error 2e-8 in exact arithmetic, 3.5e-7 absolute in float). One division
// and ten FMAs instead of A&S 7.1.26's division, exponential and polynomial: GELU at about half
// the cost, within a few float ulps of the exact value (as A&S is).
#define ERF_LIMIT 3.92f
#define ERF_P5 2.053603339e-06f
#define ERF_P4 2.848193981e-04f
#define ERF_P3 3.756655613e-03f
#define ERF_P2 5.272127688e-02f
#define ERF_P1 1.901789904e-01f
#define ERF_P0 1.128379107e+00f
#define ERF_Q5 3.812493014e-05f
#define ERF_Q4 1.160625834e-03f
#define ERF_Q3 1.495106518e-02f
#define ERF_Q2 1.140175015e-01f
#define ERF_Q1 5.018745065e-01f

static inline float erf_rational(float u) {
    u = u < -ERF_LIMIT ? -ERF_LIMIT : (u > ERF_LIMIT ? ERF_LIMIT : u);
    float t = u * u;
    float p = ((((ERF_P5 * t + ERF_P4) * t + ERF_P3) * t + ERF_P2) * t + ERF_P1) * t + ERF_P0;
    float q = ((((ERF_Q5 * t + ERF_Q4) * t + ERF_Q3) * t + ERF_Q2) * t + ERF_Q1) * t + 1.0f;
    return u * (p / q);
}

static void softmax_rows_generic(float *x, size_t rows, size_t n) {
    for (size_t r = 0; r < rows; r++) {
        float *p = x + r * n;
        float m = p[0];
        for (size_t j = 1; j < n; j++) m = p[j] > m ? p[j] : m;
        float s = 0;
        for (size_t j = 0; j < n; j++) { float e = exp_poly(p[j] - m); p[j] = e; s += e; }
        float inv = 1.0f / s;
        for (size_t j = 0; j < n; j++) p[j] *= inv;
    }
}

static void softmax_interleaved_generic(float *x, size_t rows, size_t groups, size_t count) {
    size_t n = groups * count;
    for (size_t r = 0; r < rows; r++) {
        for (size_t g = 0; g < groups; g++) {
            float *p = x + r * n + g, m = p[0];
            for (size_t j = 1; j < count; j++) m = p[j * groups] > m ? p[j * groups] : m;
            float s = 0;
            for (size_t j = 0; j < count; j++) { float e = exp_poly(p[j * groups] - m); p[j * groups] = e; s += e; }
            float inv = 1.0f / s;
            for (size_t j = 0; j < count; j++) p[j * groups] *= inv;
        }
    }
}

static void online_generic(float *s, size_t rows, size_t n, size_t lds,
                           float *m, float *l, float *o, size_t ldo, size_t dv) {
    for (size_t r = 0; r < rows; r++) {
        float *p = s + r * lds;
        float mx = p[0];
        for (size_t j = 1; j < n; j++) mx = p[j] > mx ? p[j] : mx;
        float mnew = mx > m[r] ? mx : m[r];
        float sum = 0;
        for (size_t j = 0; j < n; j++) { float e = exp_poly(p[j] - mnew); p[j] = e; sum += e; }
        if (mnew > m[r]) {
            float alpha = exp_poly(m[r] - mnew);
            float *orow = o + r * ldo;
            for (size_t j = 0; j < dv; j++) orow[j] *= alpha;  /* dv = 0: no output (o may be NULL) */
            l[r] = l[r] * alpha + sum;
            m[r] = mnew;
        } else {
            l[r] += sum;
        }
    }
}

static void gelu_generic(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = (v * 0.5f) * (1.0f + erf_rational(v * 0.70710678118654752440f));
    }
}

// ---------------------------------------------------------------------------------------------
// AVX2 + FMA versions, chosen at run time when the CPU has them.
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <immintrin.h>
#define AVX2 __attribute__((target("avx2,fma")))

AVX2 static inline __m256 exp8(__m256 v) {
    __m256 x = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    __m256 fx = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fmadd_ps(fx, _mm256_set1_ps(2.12194440e-4f), x);
    __m256 z = _mm256_mul_ps(x, x);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_add_ps(_mm256_fmadd_ps(y, z, x), _mm256_set1_ps(1.0f));
    __m256i n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(n));
}

AVX2 static inline float hmax8(__m256 v) {
    __m128 a = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_max_ps(a, _mm_movehl_ps(a, a));
    a = _mm_max_ss(a, _mm_shuffle_ps(a, a, 1));
    return _mm_cvtss_f32(a);
}

AVX2 static inline float hsum8(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_shuffle_ps(a, a, 1));
    return _mm_cvtss_f32(a);
}

AVX2 static float row_max(const float *p, size_t n) {
    __m256 mv = _mm256_set1_ps(-INFINITY);
    size_t j = 0;
    for (; j + 8 <= n; j += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(p + j));
    float m = hmax8(mv);
    for (; j < n; j++) m = p[j] > m ? p[j] : m;
    return m;
}

/// p[j] = exp(p[j] - m); returns the sum.
AVX2 static float row_exp_sum(float *p, size_t n, float m) {
    __m256 mm = _mm256_set1_ps(m), sv = _mm256_setzero_ps();
    size_t j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p + j), mm));
        _mm256_storeu_ps(p + j, e);
        sv = _mm256_add_ps(sv, e);
    }
    float s = hsum8(sv);
    for (; j < n; j++) { float e = exp_poly(p[j] - m); p[j] = e; s += e; }
    return s;
}

AVX2 static void row_scale(float *p, size_t n, float k) {
    __m256 kv = _mm256_set1_ps(k);
    size_t j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(p + j, _mm256_mul_ps(_mm256_loadu_ps(p + j), kv));
    for (; j < n; j++) p[j] *= k;
}

/// Rows shorter than 16 (a head's scores over the mask decoder's prompt tokens): each row's max
/// subtracted in scalar, the whole block exponentiated 8 lanes at a time, then each row normalised.
/// Rows of 8..15 are summed in `row_exp_sum`'s order (`hsum8` of the first eight, then the rest in
/// turn), so they get the bits the row-at-a-time path gives them (`exp_poly` inlined here contracts
/// to `exp8`'s FMAs) without its per-row horizontal reductions and scalar exponential.
AVX2 static void softmax_short_rows_avx2(float *x, size_t rows, size_t n) {
    for (size_t r = 0; r < rows; r++) {
        float *p = x + r * n, m = p[0];
        for (size_t j = 1; j < n; j++) m = p[j] > m ? p[j] : m;
        for (size_t j = 0; j < n; j++) p[j] -= m;
    }
    size_t total = rows * n, i = 0;
    for (; i + 8 <= total; i += 8) _mm256_storeu_ps(x + i, exp8(_mm256_loadu_ps(x + i)));
    for (; i < total; i++) x[i] = exp_poly(x[i]);
    for (size_t r = 0; r < rows; r++) {
        float *p = x + r * n, s = 0;
        size_t j = 0;
        if (n >= 8) { s = ((p[0] + p[4]) + (p[2] + p[6])) + ((p[1] + p[5]) + (p[3] + p[7])); j = 8; }
        for (; j < n; j++) s += p[j];
        float inv = 1.0f / s;
        for (j = 0; j < n; j++) p[j] *= inv;
    }
}

AVX2 static void softmax_rows_avx2(float *x, size_t rows, size_t n) {
    if (n < 16) { softmax_short_rows_avx2(x, rows, n); return; }
    for (size_t r = 0; r < rows; r++) {
        float *p = x + r * n;
        float s = row_exp_sum(p, n, row_max(p, n));
        row_scale(p, n, 1.0f / s);
    }
}

/// Eight interleaved groups: each of a row's `count` runs of 8 values holds one value of every
/// group, so the groups are the lanes and every step is one vector operation. Sums go in
/// `softmax_short_rows_avx2`'s order, so each group gets the bits that a contiguous row would.
AVX2 static void softmax_interleaved_avx2(float *x, size_t rows, size_t groups, size_t count) {
    if (groups != 8) { softmax_interleaved_generic(x, rows, groups, count); return; }
    for (size_t r = 0; r < rows; r++) {
        float *p = x + r * 8 * count;
        __m256 m = _mm256_loadu_ps(p);
        for (size_t j = 1; j < count; j++) m = _mm256_max_ps(m, _mm256_loadu_ps(p + 8 * j));
        for (size_t j = 0; j < count; j++) _mm256_storeu_ps(p + 8 * j, exp8(_mm256_sub_ps(_mm256_loadu_ps(p + 8 * j), m)));
        __m256 s = _mm256_setzero_ps();
        size_t j = 0;
        if (count >= 8) {
#define E(i) _mm256_loadu_ps(p + 8 * (i))
            s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(E(0), E(4)), _mm256_add_ps(E(2), E(6))),
                              _mm256_add_ps(_mm256_add_ps(E(1), E(5)), _mm256_add_ps(E(3), E(7))));
#undef E
            j = 8;
        }
        for (; j < count; j++) s = _mm256_add_ps(s, _mm256_loadu_ps(p + 8 * j));
        __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.0f), s);
        for (size_t j = 0; j < count; j++) _mm256_storeu_ps(p + 8 * j, _mm256_mul_ps(_mm256_loadu_ps(p + 8 * j), inv));
    }
}

AVX2 static void online_avx2(float *s, size_t rows, size_t n, size_t lds,
                             float *m, float *l, float *o, size_t ldo, size_t dv) {
    for (size_t r = 0; r < rows; r++) {
        float *p = s + r * lds;
        float mx = row_max(p, n);
        float mnew = mx > m[r] ? mx : m[r];
        float sum = row_exp_sum(p, n, mnew);
        if (mnew > m[r]) {
            float alpha = exp_poly(m[r] - mnew);
            if (dv) row_scale(o + r * ldo, dv, alpha);
            l[r] = l[r] * alpha + sum;
            m[r] = mnew;
        } else {
            l[r] += sum;
        }
    }
}

AVX2 static inline __m256 gelu8(__m256 v) {
    const __m256 lim = _mm256_set1_ps(ERF_LIMIT);
    __m256 u = _mm256_mul_ps(v, _mm256_set1_ps(0.70710678118654752440f));
    u = _mm256_min_ps(_mm256_max_ps(u, _mm256_sub_ps(_mm256_setzero_ps(), lim)), lim);
    __m256 t = _mm256_mul_ps(u, u);
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(ERF_P5), t, _mm256_set1_ps(ERF_P4));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(ERF_P3));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(ERF_P2));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(ERF_P1));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(ERF_P0));
    __m256 q = _mm256_fmadd_ps(_mm256_set1_ps(ERF_Q5), t, _mm256_set1_ps(ERF_Q4));
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(ERF_Q3));
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(ERF_Q2));
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(ERF_Q1));
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(1.0f));
    __m256 erfv = _mm256_mul_ps(u, _mm256_div_ps(p, q));
    return _mm256_mul_ps(_mm256_mul_ps(v, _mm256_set1_ps(0.5f)), _mm256_add_ps(_mm256_set1_ps(1.0f), erfv));
}

AVX2 static void gelu_avx2(float *x, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, gelu8(_mm256_loadu_ps(x + i)));
    gelu_generic(x + i, n - i);
}

static int has_avx2(void) {
    // Kernels are called from several threads at once, the first time too: the cached answer is
    // read and written atomically (every thread computes the same value).
    static int cached = -1;
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v;
}
#define DISPATCH(call_avx2, call_generic) do { if (has_avx2()) { call_avx2; } else { call_generic; } } while (0)
#else
#define DISPATCH(call_avx2, call_generic) do { call_generic; } while (0)
#endif

void sam2_softmax_rows(float *x, size_t rows, size_t n) {
    DISPATCH(softmax_rows_avx2(x, rows, n), softmax_rows_generic(x, rows, n));
}

void sam2_softmax_interleaved(float *x, size_t rows, size_t groups, size_t count) {
    DISPATCH(softmax_interleaved_avx2(x, rows, groups, count), softmax_interleaved_generic(x, rows, groups, count));
}

void sam2_gelu(float *x, size_t n) {
    DISPATCH(gelu_avx2(x, n), gelu_generic(x, n));
}

static void bias_gelu_rows_generic(float *x, size_t rows, size_t n, const float *bias) {
    for (size_t r = 0; r < rows; r++) {
        float *row = x + r * n;
        for (size_t i = 0; i < n; i++) row[i] += bias[r];
        gelu_generic(row, n);
    }
}
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
AVX2 static void bias_gelu_rows_avx2(float *x, size_t rows, size_t n, const float *bias) {
    for (size_t r = 0; r < rows; r++) {
        float *row = x + r * n;
        const __m256 b = _mm256_set1_ps(bias[r]);
        size_t i = 0;
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(row + i, gelu8(_mm256_add_ps(_mm256_loadu_ps(row + i), b)));
        bias_gelu_rows_generic(row + i, 1, n - i, bias + r);
    }
}
#endif

static void scale_shift_rows_generic(float *x, size_t rows, size_t n, size_t stride, const float *scale, const float *shift) {
    for (size_t r = 0; r < rows; r++) {
        float *row = x + r * stride;
        const float g = scale ? scale[r] : 1.0f, b = shift[r];
        for (size_t i = 0; i < n; i++) { float v = scale ? row[i] * g : row[i]; row[i] = v + b; }
    }
}
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
AVX2 static void scale_shift_rows_avx2(float *x, size_t rows, size_t n, size_t stride, const float *scale, const float *shift) {
    for (size_t r = 0; r < rows; r++) {
        float *row = x + r * stride;
        const __m256 g = _mm256_set1_ps(scale ? scale[r] : 1.0f), b = _mm256_set1_ps(shift[r]);
        size_t i = 0;
        if (scale) for (; i + 8 <= n; i += 8) _mm256_storeu_ps(row + i, _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(row + i), g), b));
        else for (; i + 8 <= n; i += 8) _mm256_storeu_ps(row + i, _mm256_add_ps(_mm256_loadu_ps(row + i), b));
        scale_shift_rows_generic(row + i, 1, n - i, stride, scale ? scale + r : NULL, shift + r);
    }
}
#endif

void sam2_scale_shift_rows(float *x, size_t rows, size_t n, size_t stride, const float *scale, const float *shift) {
    DISPATCH(scale_shift_rows_avx2(x, rows, n, stride, scale, shift), scale_shift_rows_generic(x, rows, n, stride, scale, shift));
}

static void relu_generic(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = x[i] < 0 ? 0 : x[i];  // NaN stays NaN, as in PyTorch
}
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
AVX2 static void relu_avx2(float *x, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_max_ps(_mm256_setzero_ps(), _mm256_loadu_ps(x + i)));  // NaN: the second operand
    relu_generic(x + i, n - i);
}
#endif

void sam2_relu(float *x, size_t n) {
    DISPATCH(relu_avx2(x, n), relu_generic(x, n));
}

static void sigmoid_affine_generic(float *x, size_t n, float scale, float bias) {
    for (size_t i = 0; i < n; i++) x[i] = 1.0f / (1.0f + expf(-x[i])) * scale + bias;
}
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
AVX2 static void sigmoid_affine_avx2(float *x, size_t n, float scale, float bias) {
    const __m256 one = _mm256_set1_ps(1.0f), s = _mm256_set1_ps(scale), b = _mm256_set1_ps(bias);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_loadu_ps(x + i)));
        __m256 sig = _mm256_div_ps(one, _mm256_add_ps(one, e));
        _mm256_storeu_ps(x + i, _mm256_add_ps(_mm256_mul_ps(sig, s), b));
    }
    sigmoid_affine_generic(x + i, n - i, scale, bias);
}
#endif

void sam2_sigmoid_affine(float *x, size_t n, float scale, float bias) {
    DISPATCH(sigmoid_affine_avx2(x, n, scale, bias), sigmoid_affine_generic(x, n, scale, bias));
}

void sam2_bias_gelu_rows(float *x, size_t rows, size_t n, const float *bias) {
    DISPATCH(bias_gelu_rows_avx2(x, rows, n, bias), bias_gelu_rows_generic(x, rows, n, bias));
}

void sam2_online_softmax_block(float *s, size_t rows, size_t n, size_t lds,
                               float *m, float *l, float *o, size_t ldo, size_t dv) {
    DISPATCH(online_avx2(s, rows, n, lds, m, l, o, ldo, dv), online_generic(s, rows, n, lds, m, l, o, ldo, dv));
}

// ---------------------------------------------------------------------------------------------
// Layer norms. Sums in double (four independent accumulators, so the loops pipeline).

static void layernorm_rows_generic(float *x, const float *residual, size_t rows, size_t n, const float *w, const float *b,
                                   float eps, const float *pe, float *with_pe) {
    for (size_t r = 0; r < rows; r++) {
        float *p = x + r * n;
        if (residual) for (size_t j = 0; j < n; j++) p[j] = residual[r * n + j] + p[j];
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        size_t j = 0;
        for (; j + 4 <= n; j += 4) { s0 += p[j]; s1 += p[j + 1]; s2 += p[j + 2]; s3 += p[j + 3]; }
        for (; j < n; j++) s0 += p[j];
        double mean = (s0 + s1 + s2 + s3) / (double)n;
        double v0 = 0, v1 = 0, v2 = 0, v3 = 0;
        for (j = 0; j + 4 <= n; j += 4) {
            double d0 = p[j] - mean, d1 = p[j + 1] - mean, d2 = p[j + 2] - mean, d3 = p[j + 3] - mean;
            v0 += d0 * d0; v1 += d1 * d1; v2 += d2 * d2; v3 += d3 * d3;
        }
        for (; j < n; j++) { double d = p[j] - mean; v0 += d * d; }
        float rstd = (float)(1.0 / sqrt((v0 + v1 + v2 + v3) / (double)n + (double)eps));
        float m = (float)mean;
        for (j = 0; j < n; j++) p[j] = (p[j] - m) * rstd * w[j] + b[j];
        if (pe) for (j = 0; j < n; j++) with_pe[r * n + j] = p[j] + pe[r * n + j];
    }
}

static void layernorm_channels_generic(float *x, size_t c, size_t hw, size_t stride, const float *w, const float *b, float eps,
                                       int gelu) {
    // Blocks of pixels so the per-pixel statistics stay in cache while channels stream by.
    enum { B = 256 };
    double mean[B], var[B];
    float m[B], rstd[B];
    for (size_t p0 = 0; p0 < hw; p0 += B) {
        size_t np = hw - p0 < B ? hw - p0 : B;
        for (size_t i = 0; i < np; i++) { mean[i] = 0; var[i] = 0; }
        for (size_t ch = 0; ch < c; ch++) {
            const float *row = x + ch * stride + p0;
            for (size_t i = 0; i < np; i++) mean[i] += row[i];
        }
        for (size_t i = 0; i < np; i++) mean[i] /= (double)c;
        for (size_t ch = 0; ch < c; ch++) {
            const float *row = x + ch * stride + p0;
            for (size_t i = 0; i < np; i++) { double d = row[i] - mean[i]; var[i] += d * d; }
        }
        for (size_t i = 0; i < np; i++) {
            m[i] = (float)mean[i];
            rstd[i] = (float)(1.0 / sqrt(var[i] / (double)c + (double)eps));
        }
        for (size_t ch = 0; ch < c; ch++) {
            float *row = x + ch * stride + p0;
            float wc = w[ch], bc = b[ch];
            for (size_t i = 0; i < np; i++) row[i] = (row[i] - m[i]) * rstd[i] * wc + bc;
            if (gelu) gelu_generic(row, np);
        }
    }
}


// The same with AVX2, to the bit: each double lane is one of the four accumulators above, and
// nothing is fused into an FMA, so every value sees the same operations in the same order.
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
/// `R` rows at once: each row's sums are one dependent chain of adds (four lanes = the scalar
/// code's four accumulators), so interleaving rows is what lets them pipeline.
AVX2 static inline void layernorm_rows_block_avx2(float *x, const float *residual, size_t R, size_t n, const float *w,
                                                  const float *b, float eps, const float *pe, float *with_pe) {
#ifdef __clang__
#pragma clang fp contract(off)
#endif
    __m256d acc[4];
    double mean[4];
    float m[4], rstd[4];
    size_t j, r;
    if (residual) {
        for (r = 0; r < R; r++) {
            float *p = x + r * n;
            const float *q = residual + r * n;
            for (j = 0; j + 8 <= n; j += 8) _mm256_storeu_ps(p + j, _mm256_add_ps(_mm256_loadu_ps(q + j), _mm256_loadu_ps(p + j)));
            for (; j < n; j++) p[j] = q[j] + p[j];
        }
    }
    for (r = 0; r < R; r++) acc[r] = _mm256_setzero_pd();
    for (j = 0; j + 4 <= n; j += 4)
        for (r = 0; r < R; r++) acc[r] = _mm256_add_pd(acc[r], _mm256_cvtps_pd(_mm_loadu_ps(x + r * n + j)));
    for (r = 0; r < R; r++) {
        double s[4];
        _mm256_storeu_pd(s, acc[r]);
        for (size_t t = j; t < n; t++) s[0] += x[r * n + t];
        mean[r] = (s[0] + s[1] + s[2] + s[3]) / (double)n;
        acc[r] = _mm256_setzero_pd();
    }
    for (j = 0; j + 4 <= n; j += 4)
        for (r = 0; r < R; r++) {
            __m256d d = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + r * n + j)), _mm256_set1_pd(mean[r]));
            acc[r] = _mm256_add_pd(acc[r], _mm256_mul_pd(d, d));
        }
    for (r = 0; r < R; r++) {
        double s[4];
        _mm256_storeu_pd(s, acc[r]);
        for (size_t t = j; t < n; t++) { double d = x[r * n + t] - mean[r]; s[0] += d * d; }
        rstd[r] = (float)(1.0 / sqrt((s[0] + s[1] + s[2] + s[3]) / (double)n + (double)eps));
        m[r] = (float)mean[r];
    }
    for (r = 0; r < R; r++) {
        float *p = x + r * n;
        const __m256 m8 = _mm256_set1_ps(m[r]), r8 = _mm256_set1_ps(rstd[r]);
        for (j = 0; j + 8 <= n; j += 8) {
            __m256 t = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(p + j), m8), r8);
            _mm256_storeu_ps(p + j, _mm256_add_ps(_mm256_mul_ps(t, _mm256_loadu_ps(w + j)), _mm256_loadu_ps(b + j)));
        }
        for (; j < n; j++) p[j] = (p[j] - m[r]) * rstd[r] * w[j] + b[j];
        if (pe) {
            const float *e = pe + r * n;
            float *o = with_pe + r * n;
            for (j = 0; j + 8 <= n; j += 8) _mm256_storeu_ps(o + j, _mm256_add_ps(_mm256_loadu_ps(p + j), _mm256_loadu_ps(e + j)));
            for (; j < n; j++) o[j] = p[j] + e[j];
        }
    }
}

AVX2 static void layernorm_rows_avx2(float *x, const float *residual, size_t rows, size_t n, const float *w, const float *b,
                                    float eps, const float *pe, float *with_pe) {
    size_t r = 0;
    for (; r + 4 <= rows; r += 4)
        layernorm_rows_block_avx2(x + r * n, residual ? residual + r * n : NULL, 4, n, w, b, eps,
                                  pe ? pe + r * n : NULL, pe ? with_pe + r * n : NULL);
    for (; r < rows; r++)
        layernorm_rows_block_avx2(x + r * n, residual ? residual + r * n : NULL, 1, n, w, b, eps,
                                  pe ? pe + r * n : NULL, pe ? with_pe + r * n : NULL);
}

AVX2 static void layernorm_channels_avx2(float *x, size_t c, size_t hw, size_t stride, const float *w, const float *b, float eps,
                                        int gelu) {
#ifdef __clang__
#pragma clang fp contract(off)
#endif
    enum { B = 256 };
    double mean[B], var[B];
    float m[B], rstd[B];
    for (size_t p0 = 0; p0 < hw; p0 += B) {
        size_t np = hw - p0 < B ? hw - p0 : B, i;
        for (i = 0; i < np; i++) { mean[i] = 0; var[i] = 0; }
        for (size_t ch = 0; ch < c; ch++) {
            const float *row = x + ch * stride + p0;
            for (i = 0; i + 4 <= np; i += 4)
                _mm256_storeu_pd(mean + i, _mm256_add_pd(_mm256_loadu_pd(mean + i), _mm256_cvtps_pd(_mm_loadu_ps(row + i))));
            for (; i < np; i++) mean[i] += row[i];
        }
        const __m256d cd = _mm256_set1_pd((double)c);
        for (i = 0; i + 4 <= np; i += 4) _mm256_storeu_pd(mean + i, _mm256_div_pd(_mm256_loadu_pd(mean + i), cd));
        for (; i < np; i++) mean[i] /= (double)c;
        for (size_t ch = 0; ch < c; ch++) {
            const float *row = x + ch * stride + p0;
            for (i = 0; i + 4 <= np; i += 4) {
                __m256d d = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(row + i)), _mm256_loadu_pd(mean + i));
                _mm256_storeu_pd(var + i, _mm256_add_pd(_mm256_loadu_pd(var + i), _mm256_mul_pd(d, d)));
            }
            for (; i < np; i++) { double d = row[i] - mean[i]; var[i] += d * d; }
        }
        // Four pixels' statistics at a time (a scalar square root and two divisions per pixel
        // cost more than the rest when there are only 4 or 16 channels); same operations, same bits.
        const __m256d one = _mm256_set1_pd(1.0), epsd = _mm256_set1_pd((double)eps);
        for (i = 0; i + 4 <= np; i += 4) {
            _mm_storeu_ps(m + i, _mm256_cvtpd_ps(_mm256_loadu_pd(mean + i)));
            __m256d v = _mm256_add_pd(_mm256_div_pd(_mm256_loadu_pd(var + i), cd), epsd);
            _mm_storeu_ps(rstd + i, _mm256_cvtpd_ps(_mm256_div_pd(one, _mm256_sqrt_pd(v))));
        }
        for (; i < np; i++) {
            m[i] = (float)mean[i];
            rstd[i] = (float)(1.0 / sqrt(var[i] / (double)c + (double)eps));
        }
        for (size_t ch = 0; ch < c; ch++) {
            float *row = x + ch * stride + p0;
            const __m256 wc = _mm256_set1_ps(w[ch]), bc = _mm256_set1_ps(b[ch]);
            for (i = 0; i + 8 <= np; i += 8) {
                __m256 t = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(row + i), _mm256_loadu_ps(m + i)), _mm256_loadu_ps(rstd + i));
                _mm256_storeu_ps(row + i, _mm256_add_ps(_mm256_mul_ps(t, wc), bc));
            }
            for (; i < np; i++) row[i] = (row[i] - m[i]) * rstd[i] * w[ch] + b[ch];
            if (gelu) gelu_avx2(row, np);  // while the row is in L1
        }
    }
}
#endif

void sam2_layernorm_rows(float *x, size_t rows, size_t n, const float *w, const float *b, float eps) {
    DISPATCH(layernorm_rows_avx2(x, NULL, rows, n, w, b, eps, NULL, NULL),
             layernorm_rows_generic(x, NULL, rows, n, w, b, eps, NULL, NULL));
}

void sam2_residual_layernorm_rows(float *x, const float *residual, size_t rows, size_t n, const float *w, const float *b,
                                  float eps, const float *pe, float *with_pe) {
    DISPATCH(layernorm_rows_avx2(x, residual, rows, n, w, b, eps, pe, with_pe),
             layernorm_rows_generic(x, residual, rows, n, w, b, eps, pe, with_pe));
}

void sam2_layernorm_channels(float *x, size_t c, size_t hw, size_t stride, const float *w, const float *b, float eps, int gelu) {
    DISPATCH(layernorm_channels_avx2(x, c, hw, stride, w, b, eps, gelu), layernorm_channels_generic(x, c, hw, stride, w, b, eps, gelu));
}

// Plain loops the compiler vectorises; compiled twice, for AVX2 and for any x86-64/other CPU.
#define INTERLEAVE_BODY                                                                              \
    size_t n = rows * w, wo = 2 * w;                                                                 \
    for (size_t co = 0; co < cout; co++) {                                                           \
        float b = bias[co];                                                                          \
        for (size_t y = 0; y < rows; y++) {                                                          \
            for (size_t i = 0; i < 2; i++) {                                                         \
                const float *even = products + ((i * 2) * cout + co) * n + y * w;    /* j = 0 */     \
                const float *odd = products + ((i * 2 + 1) * cout + co) * n + y * w; /* j = 1 */     \
                float *restrict o = out + co * out_stride + (2 * y + i) * wo;                        \
                if (skip) {                                                                          \
                    const float *s = skip + co * skip_stride + (2 * y + i) * wo;                     \
                    for (size_t x = 0; x < w; x++) {                                                 \
                        o[2 * x] = (even[x] + b) + s[2 * x];                                         \
                        o[2 * x + 1] = (odd[x] + b) + s[2 * x + 1];                                  \
                    }                                                                                \
                } else {                                                                             \
                    for (size_t x = 0; x < w; x++) { o[2 * x] = even[x] + b; o[2 * x + 1] = odd[x] + b; } \
                }                                                                                    \
                if (gelu) GELU(o, wo);  /* while the row is in L1 */                                 \
            }                                                                                        \
        }                                                                                            \
    }
#define ADD_BODY for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
#define ADD_THEN_ADD_BODY for (size_t i = 0; i < n; i++) { float s = a[i] + b[i]; sum[i] = s; sum_c[i] = s + c[i]; }

#define GELU gelu_generic
static void interleave_generic(const float *products, size_t cout, size_t rows, size_t w, const float *bias,
                               const float *skip, size_t skip_stride, float *out, size_t out_stride, int gelu) { INTERLEAVE_BODY }
#undef GELU
static void add_generic(float *out, const float *a, const float *b, size_t n) { ADD_BODY }
static void add_then_add_generic(float *sum, float *sum_c, const float *a, const float *b, const float *c, size_t n) { ADD_THEN_ADD_BODY }
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define GELU gelu_avx2
AVX2 static void interleave_avx2(const float *products, size_t cout, size_t rows, size_t w, const float *bias,
                                 const float *skip, size_t skip_stride, float *out, size_t out_stride, int gelu) { INTERLEAVE_BODY }
#undef GELU
AVX2 static void add_avx2(float *out, const float *a, const float *b, size_t n) { ADD_BODY }
AVX2 static void add_then_add_avx2(float *sum, float *sum_c, const float *a, const float *b, const float *c, size_t n) { ADD_THEN_ADD_BODY }
#endif

void sam2_interleave2x2(const float *products, size_t cout, size_t rows, size_t w, const float *bias,
                        const float *skip, size_t skip_stride, float *out, size_t out_stride, int gelu) {
    DISPATCH(interleave_avx2(products, cout, rows, w, bias, skip, skip_stride, out, out_stride, gelu),
             interleave_generic(products, cout, rows, w, bias, skip, skip_stride, out, out_stride, gelu));
}

void sam2_add(float *out, const float *a, const float *b, size_t n) {
    DISPATCH(add_avx2(out, a, b, n), add_generic(out, a, b, n));
}

void sam2_add_then_add(float *sum, float *sum_c, const float *a, const float *b, const float *c, size_t n) {
    DISPATCH(add_then_add_avx2(sum, sum_c, a, b, c, n), add_then_add_generic(sum, sum_c, a, b, c, n));
}

// ---------------------------------------------------------------------------------------------
// A linear layer on a few rows (the mask decoder's prompt tokens): y = x Wᵀ + b with W [out, in]
// as stored. Dot products along `in`, four outputs for two rows at a time: the weight streams
// through once (its four rows stay in cache while the input rows pass), with no packing (a BLAS
// call copies the whole weight into its panel layout first, which for 9 rows costs more than the
// arithmetic).

static void linear_few_rows_generic(const float *x, size_t rows, size_t in, const float *w, const float *bias,
                                    size_t o0, size_t o1, size_t out, float *y) {
    for (size_t r = 0; r < rows; r++)
        for (size_t o = o0; o < o1; o++) {
            const float *wr = w + o * in, *xr = x + r * in;
            float acc = 0;
            for (size_t k = 0; k < in; k++) acc += xr[k] * wr[k];
            y[r * out + o] = (bias ? bias[o] : 0) + acc;
        }
}

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
/// Eight lane-sums of eight vectors, as one vector: [Σa0, Σa1, ..., Σa7].
AVX2 static inline __m256 hsum8x8(const __m256 *a) {
    __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
    __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
    __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

AVX2 static void linear_few_rows_avx2(const float *x, size_t rows, size_t in, const float *w, const float *bias,
                                      size_t o0, size_t o1, size_t out, float *y) {
    // Tiles of two rows x four outputs: eight accumulators, six loads per eight FMAs.
    size_t o = o0;
    for (; o + 4 <= o1; o += 4) {
        const float *wr = w + o * in;
        const __m128 b = bias ? _mm_loadu_ps(bias + o) : _mm_setzero_ps();
        for (size_t r = 0; r < rows; r += 2) {
            const int pair = r + 1 < rows;
            __m256 a[8];
            for (int j = 0; j < 8; j++) a[j] = _mm256_setzero_ps();
            const float *x0 = x + r * in, *x1 = pair ? x0 + in : x0;
            for (size_t k = 0; k < in; k += 8) {
                __m256 v0 = _mm256_loadu_ps(x0 + k), v1 = _mm256_loadu_ps(x1 + k);
                for (int j = 0; j < 4; j++) {
                    __m256 wv = _mm256_loadu_ps(wr + j * in + k);
                    a[j] = _mm256_fmadd_ps(v0, wv, a[j]);
                    a[4 + j] = _mm256_fmadd_ps(v1, wv, a[4 + j]);
                }
            }
            __m256 sums = hsum8x8(a);
            _mm_storeu_ps(y + r * out + o, _mm_add_ps(b, _mm256_castps256_ps128(sums)));
            if (pair) _mm_storeu_ps(y + (r + 1) * out + o, _mm_add_ps(b, _mm256_extractf128_ps(sums, 1)));
        }
    }
    if (o < o1) linear_few_rows_generic(x, rows, in, w, bias, o, o1, out, y);
}
#endif

void sam2_linear_few_rows(const float *x, size_t rows, size_t in, const float *w, const float *bias,
                          size_t o0, size_t o1, size_t out, float *y) {
    if (in % 8) { linear_few_rows_generic(x, rows, in, w, bias, o0, o1, out, y); return; }
    DISPATCH(linear_few_rows_avx2(x, rows, in, w, bias, o0, o1, out, y),
             linear_few_rows_generic(x, rows, in, w, bias, o0, o1, out, y));
}

// ---------------------------------------------------------------------------------------------
// How many of `n` values exceed `t` (a mask's area at a threshold, for its stability score).

#define COUNT_ABOVE_BODY { size_t c = 0; for (size_t i = 0; i < n; i++) c += x[i] > t; return c; }
static size_t count_above_generic(const float *x, size_t n, float t) COUNT_ABOVE_BODY
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
AVX2 static size_t count_above_avx2(const float *x, size_t n, float t) COUNT_ABOVE_BODY
#endif

size_t sam2_count_above(const float *x, size_t n, float t) {
    size_t c;
    DISPATCH(c = count_above_avx2(x, n, t), c = count_above_generic(x, n, t));
    return c;
}

void sam2_keep_freed_memory(void) {
#if defined(__GLIBC__)
    mallopt(M_MMAP_MAX, 0);               // large blocks come from the heap too...
    mallopt(M_TRIM_THRESHOLD, 0x7fffffff); // ...and stay there when freed
#endif
}

const char *sam2_blas_corename(void) {
#if defined(__linux__)
    // Looked up rather than linked: only OpenBLAS's DYNAMIC_ARCH builds have it.
    const char *(*corename)(void) = (const char *(*)(void))dlsym(RTLD_DEFAULT, "gotoblas_corename");
    return corename ? corename() : NULL;
#else
    return NULL;
#endif
}

// ---------------------------------------------------------------------------------------------
// Work sharing: the next index of a loop shared by several threads.

size_t sam2_next_index(size_t *counter) {
    return __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
}

// The worker pool. A loop is published as one 64-bit ticket, (count << 32) | next: claiming an
// index is one fetch-add on it, and a claim is always on the loop that is current when it lands
// (its acquire pairs with the release that published that loop's function and context), so a
// worker that arrives late cannot run a finished loop's task. `done` counts finished indices.
// Between loops workers spin (a model pass runs hundreds of short loops with little serial work
// between them; a sleeping worker costs a wake-up each time, and when another process holds the
// core, a whole scheduler slice), then sleep on a futex.

#if defined(__linux__)
static struct {
    uint64_t ticket;
    long done;
    sam2_task_fn fn;
    void *context;
    uint32_t seq;       // futex word: bumped on every publish
    int sleepers;
    int busy;           // a loop is running (nested and concurrent callers run inline)
    int workers;
    long spin_ns;
} pool;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static int pool_wanted;

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)t.tv_sec * 1000000000L + t.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
}

static inline int pool_has_work(void) {
    uint64_t t = __atomic_load_n(&pool.ticket, __ATOMIC_SEQ_CST);
    return (t & 0xffffffffu) < (t >> 32);
}

// Claim and run indices of the current loop until none is left.
static void pool_drain(void) {
    for (;;) {
        uint64_t t = __atomic_fetch_add(&pool.ticket, 1, __ATOMIC_ACQ_REL);
        long i = (long)(t & 0xffffffffu), count = (long)(t >> 32);
        if (i >= count) return;
        pool.fn(pool.context, i);
        __atomic_fetch_add(&pool.done, 1, __ATOMIC_RELEASE);
    }
}

static void *pool_worker(void *unused) {
    (void)unused;
    for (;;) {
        long start = now_ns();
        for (int n = 0; !pool_has_work(); n++) {
            cpu_relax();
            if ((n & 63) == 63 && now_ns() - start > pool.spin_ns) {
                uint32_t seq = __atomic_load_n(&pool.seq, __ATOMIC_SEQ_CST);
                __atomic_fetch_add(&pool.sleepers, 1, __ATOMIC_SEQ_CST);
                if (!pool_has_work()) syscall(SYS_futex, &pool.seq, FUTEX_WAIT_PRIVATE, seq, NULL, NULL, 0);
                __atomic_fetch_sub(&pool.sleepers, 1, __ATOMIC_SEQ_CST);
                start = now_ns();
                n = 0;
            }
        }
        pool_drain();
    }
    return NULL;
}

static void pool_start(void) {
    const char *spin = getenv("SAM2_SPIN_US");
    pool.spin_ns = 1000L * (spin ? atol(spin) : 1000);  // $SAM2_SPIN_US, default 1 ms
    for (int i = 0; i < pool_wanted - 1; i++) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 8u << 20);
        if (pthread_create(&thread, &attr, pool_worker, NULL) == 0) {
            pthread_detach(thread);
            pool.workers++;
        }
        pthread_attr_destroy(&attr);
    }
}

int sam2_pool_run(long count, int threads, sam2_task_fn fn, void *context) {
    if (count <= 0) return 1;
    if (count > 0x7fffffffL || __atomic_exchange_n(&pool.busy, 1, __ATOMIC_ACQUIRE)) return 0;
    pool_wanted = threads;
    pthread_once(&pool_once, pool_start);
    pool.fn = fn;
    pool.context = context;
    __atomic_store_n(&pool.done, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&pool.ticket, (uint64_t)count << 32, __ATOMIC_SEQ_CST);
    __atomic_fetch_add(&pool.seq, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&pool.sleepers, __ATOMIC_SEQ_CST) > 0)
        syscall(SYS_futex, &pool.seq, FUTEX_WAKE_PRIVATE, pool.workers, NULL, NULL, 0);
    pool_drain();
    while (__atomic_load_n(&pool.done, __ATOMIC_ACQUIRE) < count) cpu_relax();
    __atomic_store_n(&pool.busy, 0, __ATOMIC_RELEASE);
    return 1;
}
#else
int sam2_pool_run(long count, int threads, sam2_task_fn fn, void *context) {
    (void)count; (void)threads; (void)fn; (void)context;
    return -1;  // no pool here (it sleeps on a Linux futex): the caller uses its own threads
}
#endif

// ---------------------------------------------------------------------------------------------
// Depthwise convolution, one channel plane at a time, one output row at a time: every tap of a
// row is summed while the row is in registers or L1. 3x3 kernels (RepViT's token mixers and its
// stride-2 downsampling) have their nine taps unrolled; interior columns run branch-free and
// vectorised across the row, the few edge columns check bounds, and rows above or below the map
// read a zero row. Other kernels at stride 1 go through DEPTHWISE_PADDED_BODY below.

#define DEPTHWISE_BODY                                                                               \
    float *zero = calloc(w + 2 * pad + k, sizeof(float));                                           \
    double total = 0;                                                                                \
    /* Interior output columns: every tap inside the row. */                                         \
    size_t x0 = (pad + stride - 1) / stride;                                                         \
    size_t x1 = (w + pad >= k) ? (w + pad - k) / stride + 1 : 0;                                     \
    if (x1 > wo) x1 = wo;                                                                            \
    if (x0 > x1) x0 = x1;                                                                            \
    const float *rows[16];                                                                           \
    for (size_t oy = 0; oy < ho; oy++) {                                                             \
        float *restrict d = dst + oy * wo;                                                           \
        for (size_t ky = 0; ky < k; ky++) {                                                          \
            long iy = (long)(oy * stride + ky) - (long)pad;                                          \
            rows[ky] = (iy < 0 || iy >= (long)h) ? zero + pad : src + (size_t)iy * w;                \
        }                                                                                            \
        for (size_t ox = 0; ox < wo; ox++) {                                                         \
            if (ox == x0 && x1 > x0) { ox = x1 - 1; continue; }                                      \
            float acc = bias;                                                                        \
            for (size_t ky = 0; ky < k; ky++)                                                        \
                for (size_t kx = 0; kx < k; kx++) {                                                  \
                    long ix = (long)(ox * stride + kx) - (long)pad;                                  \
                    if (ix >= 0 && ix < (long)w) acc += wt[ky * k + kx] * rows[ky][ix];              \
                }                                                                                    \
            d[ox] = acc;                                                                             \
        }                                                                                            \
        if (k == 3 && stride == 1) {                                                                 \
            const float *r0 = rows[0] - pad, *r1 = rows[1] - pad, *r2 = rows[2] - pad;               \
            float w0 = wt[0], w1 = wt[1], w2 = wt[2], w3 = wt[3], w4 = wt[4];                        \
            float w5 = wt[5], w6 = wt[6], w7 = wt[7], w8 = wt[8];                                    \
            for (size_t ox = x0; ox < x1; ox++) {                                                    \
                float acc = bias;                                                                    \
                acc += w0 * r0[ox]; acc += w1 * r0[ox + 1]; acc += w2 * r0[ox + 2];                  \
                acc += w3 * r1[ox]; acc += w4 * r1[ox + 1]; acc += w5 * r1[ox + 2];                  \
                acc += w6 * r2[ox]; acc += w7 * r2[ox + 1]; acc += w8 * r2[ox + 2];                  \
                d[ox] = acc;                                                                         \
            }                                                                                        \
        } else if (k == 3 && stride == 2) {                                                          \
            const float *r0 = rows[0] - pad, *r1 = rows[1] - pad, *r2 = rows[2] - pad;               \
            float w0 = wt[0], w1 = wt[1], w2 = wt[2], w3 = wt[3], w4 = wt[4];                        \
            float w5 = wt[5], w6 = wt[6], w7 = wt[7], w8 = wt[8];                                    \
            for (size_t ox = x0; ox < x1; ox++) {                                                    \
                size_t i = 2 * ox;                                                                   \
                float acc = bias;                                                                    \
                acc += w0 * r0[i]; acc += w1 * r0[i + 1]; acc += w2 * r0[i + 2];                     \
                acc += w3 * r1[i]; acc += w4 * r1[i + 1]; acc += w5 * r1[i + 2];                     \
                acc += w6 * r2[i]; acc += w7 * r2[i + 1]; acc += w8 * r2[i + 2];                     \
                d[ox] = acc;                                                                         \
            }                                                                                        \
        } else {                                                                                     \
            for (size_t ox = x0; ox < x1; ox++) {                                                    \
                float acc = bias;                                                                    \
                for (size_t ky = 0; ky < k; ky++) {                                                  \
                    const float *r = rows[ky] + ox * stride - pad;                                   \
                    for (size_t kx = 0; kx < k; kx++) acc += wt[ky * k + kx] * r[kx];                \
                }                                                                                    \
                d[ox] = acc;                                                                         \
            }                                                                                        \
        }                                                                                            \
        if (sum) {                                                                                   \
            double lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                              \
            size_t i = 0;                                                                            \
            for (; i + 8 <= wo; i += 8)                                                              \
                for (size_t j = 0; j < 8; j++) lanes[j] += d[i + j];                                 \
            for (; i < wo; i++) lanes[0] += d[i];                                                    \
            for (size_t j = 0; j < 8; j++) total += lanes[j];                                        \
        }                                                                                            \
    }                                                                                                \
    if (sum) *sum = total;                                                                           \
    free(zero);

// Other kernels at stride 1 (the memory encoder's 7x7): the plane is copied once into a
// zero-padded buffer, so every output column is an interior one and each tap is one
// vectorised pass over the output row (which stays in L1).
#define DEPTHWISE_PADDED_BODY                                                                        \
    size_t wp = w + 2 * pad, hp = h + 2 * pad;                                                       \
    float *padded = calloc(wp * hp, sizeof(float));                                                  \
    for (size_t y = 0; y < h; y++) memcpy(padded + (y + pad) * wp + pad, src + y * w, w * sizeof(float)); \
    double total = 0;                                                                                \
    for (size_t oy = 0; oy < ho; oy++) {                                                             \
        float *restrict d = dst + oy * wo;                                                           \
        for (size_t ox = 0; ox < wo; ox++) d[ox] = bias;                                             \
        for (size_t ky = 0; ky < k; ky++)                                                            \
            for (size_t kx = 0; kx < k; kx++) {                                                      \
                const float *r = padded + (oy + ky) * wp + kx;                                       \
                float wv = wt[ky * k + kx];                                                          \
                for (size_t ox = 0; ox < wo; ox++) d[ox] += wv * r[ox];                              \
            }                                                                                        \
        if (sum) for (size_t ox = 0; ox < wo; ox++) total += d[ox];                                  \
    }                                                                                                \
    if (sum) *sum = total;                                                                           \
    free(padded);

static void depthwise_padded_generic(const float *src, size_t h, size_t w, const float *wt, size_t k, size_t pad,
                                     float bias, float *dst, size_t ho, size_t wo, double *sum) { DEPTHWISE_PADDED_BODY }
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
AVX2 static void depthwise_padded_avx2(const float *src, size_t h, size_t w, const float *wt, size_t k, size_t pad,
                                       float bias, float *dst, size_t ho, size_t wo, double *sum) { DEPTHWISE_PADDED_BODY }
#endif

static void depthwise_generic(const float *src, size_t h, size_t w, const float *wt, size_t k, size_t stride,
                              size_t pad, float bias, float *dst, size_t ho, size_t wo, double *sum) { DEPTHWISE_BODY }
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
AVX2 static void depthwise_avx2(const float *src, size_t h, size_t w, const float *wt, size_t k, size_t stride,
                                size_t pad, float bias, float *dst, size_t ho, size_t wo, double *sum) { DEPTHWISE_BODY }
#endif

void sam2_depthwise_plane(const float *src, size_t h, size_t w, const float *wt, size_t k, size_t stride,
                          size_t pad, float bias, float *dst, size_t ho, size_t wo, double *sum) {
    if (stride == 1 && k != 3) {
        DISPATCH(depthwise_padded_avx2(src, h, w, wt, k, pad, bias, dst, ho, wo, sum),
                 depthwise_padded_generic(src, h, w, wt, k, pad, bias, dst, ho, wo, sum));
        return;
    }
    DISPATCH(depthwise_avx2(src, h, w, wt, k, stride, pad, bias, dst, ho, wo, sum),
             depthwise_generic(src, h, w, wt, k, stride, pad, bias, dst, ho, wo, sum));
}

// ---------------------------------------------------------------------------------------------
// Every other value of a row (the im2col of a stride-2 convolution): dst[i] = src[2i].

static void gather_stride2_generic(float *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = src[2 * i];
}
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
AVX2 static void gather_stride2_avx2(float *dst, const float *src, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        // Reads src[2i .. 2i+15]; the vector that would read past the last value used,
        // src[2n-2], is left to the scalar loop.
        if (2 * i + 15 > 2 * n - 2) break;
        __m256 a = _mm256_loadu_ps(src + 2 * i), b = _mm256_loadu_ps(src + 2 * i + 8);
        __m256 even = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));  // a0 a2 b0 b2 | a4 a6 b4 b6
        _mm256_storeu_ps(dst + i, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(even), _MM_SHUFFLE(3, 1, 2, 0))));
    }
    gather_stride2_generic(dst + i, src + 2 * i, n - i);
}
#endif

void sam2_gather_stride2(float *dst, const float *src, size_t n) {
    DISPATCH(gather_stride2_avx2(dst, src, n), gather_stride2_generic(dst, src, n));
}

// ---------------------------------------------------------------------------------------------
// Pillow's 8-bit resampling passes (ImagingResampleHorizontal_8bpc / Vertical_8bpc), same
// integer arithmetic, so the same bytes.

static inline uint8_t clip8(int32_t v, int bits) {
    int32_t s = v >> bits;
    return s < 0 ? 0 : (s > 255 ? 255 : (uint8_t)s);
}

#define RESAMPLE_HORIZONTAL_BODY                                                                     \
    const int32_t half = 1 << (bits - 1);                                                            \
    for (size_t y = 0; y < rows; y++) {                                                              \
        const uint8_t *row = src + y * src_width * 3;                                                \
        uint8_t *o = out + y * out_width * 3;                                                        \
        for (size_t xx = 0; xx < out_width; xx++) {                                                 \
            const int32_t n = bounds[2 * xx + 1], *k = weights + xx * ksize;                         \
            const uint8_t *p = row + (size_t)bounds[2 * xx] * 3;                                     \
            int32_t s0 = half, s1 = half, s2 = half;                                                 \
            for (int32_t x = 0; x < n; x++) {                                                        \
                s0 += p[3 * x] * k[x]; s1 += p[3 * x + 1] * k[x]; s2 += p[3 * x + 2] * k[x];         \
            }                                                                                        \
            o[3 * xx] = clip8(s0, bits); o[3 * xx + 1] = clip8(s1, bits); o[3 * xx + 2] = clip8(s2, bits); \
        }                                                                                            \
    }

// Each output row: a chunk of it at a time in 32-bit sums (vector lanes across the row).
#define RESAMPLE_VERTICAL_BODY                                                                       \
    const int32_t half = 1 << (bits - 1);                                                            \
    int32_t acc[1024];                                                                               \
    for (size_t yy = 0; yy < out_rows; yy++) {                                                       \
        const int32_t ymin = bounds[2 * yy], n = bounds[2 * yy + 1], *k = weights + yy * ksize;      \
        uint8_t *o = out + yy * row_bytes;                                                           \
        for (size_t x0 = 0; x0 < row_bytes; x0 += 1024) {                                            \
            const size_t m = row_bytes - x0 < 1024 ? row_bytes - x0 : 1024;                          \
            for (size_t i = 0; i < m; i++) acc[i] = half;                                            \
            for (int32_t y = 0; y < n; y++) {                                                        \
                const uint8_t *p = src + (size_t)(ymin + y) * row_bytes + x0;                        \
                const int32_t w = k[y];                                                              \
                for (size_t i = 0; i < m; i++) acc[i] += p[i] * w;                                   \
            }                                                                                        \
            for (size_t i = 0; i < m; i++) o[x0 + i] = clip8(acc[i], bits);                          \
        }                                                                                            \
    }

#define RESAMPLE_HORIZONTAL_ARGS const uint8_t *src, size_t rows, size_t src_width, uint8_t *out, size_t out_width, \
                                 const int32_t *bounds, const int32_t *weights, size_t ksize, int bits
#define RESAMPLE_VERTICAL_ARGS const uint8_t *src, size_t row_bytes, uint8_t *out, size_t out_rows, \
                               const int32_t *bounds, const int32_t *weights, size_t ksize, int bits
static void resample_horizontal_generic(RESAMPLE_HORIZONTAL_ARGS) { RESAMPLE_HORIZONTAL_BODY }
static void resample_vertical_generic(RESAMPLE_VERTICAL_ARGS) { RESAMPLE_VERTICAL_BODY }
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
AVX2 static void resample_horizontal_avx2(RESAMPLE_HORIZONTAL_ARGS) { RESAMPLE_HORIZONTAL_BODY }
AVX2 static void resample_vertical_avx2(RESAMPLE_VERTICAL_ARGS) { RESAMPLE_VERTICAL_BODY }
#endif

void sam2_resample_horizontal_rgb(RESAMPLE_HORIZONTAL_ARGS) {
    DISPATCH(resample_horizontal_avx2(src, rows, src_width, out, out_width, bounds, weights, ksize, bits),
             resample_horizontal_generic(src, rows, src_width, out, out_width, bounds, weights, ksize, bits));
}

void sam2_resample_vertical(RESAMPLE_VERTICAL_ARGS) {
    DISPATCH(resample_vertical_avx2(src, row_bytes, out, out_rows, bounds, weights, ksize, bits),
             resample_vertical_generic(src, row_bytes, out, out_rows, bounds, weights, ksize, bits));
}

// ---------------------------------------------------------------------------------------------
// Spill files.

int sam2_open_direct(const char *path) {
#if defined(O_DIRECT)
    return open(path, O_RDWR | O_DIRECT);
#else
    (void)path;
    return -1;
#endif
}
