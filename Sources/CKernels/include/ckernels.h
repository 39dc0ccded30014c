#ifndef SAM2_CKERNELS_H
#define SAM2_CKERNELS_H
#include <stddef.h>

/// Pointwise hot loops in plain C so the compiler vectorises them (AVX2/FMA when the CPU has it).

/// Row softmax in place: `rows` rows of `n` values, each max-subtracted (as PyTorch does).
void sam2_softmax_rows(float *x, size_t rows, size_t n);

/// GELU (erf form) in place, with erf as PyTorch's vectorised CPU kernel computes it
/// (Abramowitz & Stegun 7.1.26).
void sam2_gelu(float *x, size_t n);

#endif
