#ifndef SAM2_CKERNELS_H
#define SAM2_CKERNELS_H
#include <stddef.h>

/// Pointwise hot loops in plain C so the compiler vectorises them (AVX2/FMA when the CPU has it).

/// Row softmax in place: `rows` rows of `n` values, each max-subtracted (as PyTorch does).
void sam2_softmax_rows(float *x, size_t rows, size_t n);

/// Softmax within `groups` interleaved groups of `count` values in each of `rows` rows: value j of
/// group g at `j·groups + g` (the mask decoder's image → token scores, heads interleaved).
void sam2_softmax_interleaved(float *x, size_t rows, size_t groups, size_t count);

/// GELU (erf form, as `nn.GELU()`) in place; erf by a rational approximation accurate to a few
/// float ulps.
void sam2_gelu(float *x, size_t n);
/// `x[r, i] = gelu(x[r, i] + bias[r])` on `rows` rows of `n` values, each row while it is in L1.
void sam2_bias_gelu_rows(float *x, size_t rows, size_t n, const float *bias);
/// `x[r, i] = x[r, i]·scale[r] + shift[r]` (without `scale` when it is NULL) on `rows` rows of
/// `n` values, `stride` apart: a per-channel gate and bias in one pass.
void sam2_scale_shift_rows(float *x, size_t rows, size_t n, size_t stride, const float *scale, const float *shift);
/// ReLU in place.
void sam2_relu(float *x, size_t n);
/// `x = sigmoid(x)·scale + bias` in place (the mask as the memory encoder takes it).
void sam2_sigmoid_affine(float *x, size_t n, float scale, float bias);

/// Pillow's 8-bit resampling passes, bit for bit. `bounds` holds per output pixel (or row) its
/// first source pixel (row) and tap count, `weights` `ksize` fixed-point taps each (`bits`
/// fractional bits). Horizontal: `rows` rows of packed RGB, `src_width` → `out_width` pixels.
/// Vertical: rows of `row_bytes` bytes, `out_rows` of them out.
void sam2_resample_horizontal_rgb(const unsigned char *src, size_t rows, size_t src_width, unsigned char *out,
                                  size_t out_width, const int *bounds, const int *weights, size_t ksize, int bits);
void sam2_resample_vertical(const unsigned char *src, size_t row_bytes, unsigned char *out, size_t out_rows,
                            const int *bounds, const int *weights, size_t ksize, int bits);

/// `open(path, O_RDWR | O_DIRECT)`: writes that bypass the page cache (the device copies them,
/// not the CPU). -1 where the platform or the file system has no direct I/O.
int sam2_open_direct(const char *path);

#endif

#ifndef SAM2_CKERNELS_ONLINE
#define SAM2_CKERNELS_ONLINE
/// One key block of online ("flash") softmax for `rows` query rows. `s` holds the block's scaled
/// scores (`rows x n`, row stride `lds`) and is replaced by exp(s - new max). Per row: running
/// max `m`, running sum `l`, and the output row `o` (`dv` values, row stride `ldo`) is rescaled
/// when the max grows. The caller then adds `s · V_block` to `o`.
void sam2_online_softmax_block(float *s, size_t rows, size_t n, size_t lds,
                               float *m, float *l, float *o, size_t ldo, size_t dv);
#endif

#ifndef SAM2_CKERNELS_NORM
#define SAM2_CKERNELS_NORM
/// LayerNorm over each row of `rows x n` values in place (mean and variance accumulated in double).
void sam2_layernorm_rows(float *x, size_t rows, size_t n, const float *w, const float *b, float eps);
/// The same after a residual, `x = LN(residual + x)`, and when `pe` is not NULL also
/// `with_pe = x + pe` (the next attention's keys), each row while it is in cache.
void sam2_residual_layernorm_rows(float *x, const float *residual, size_t rows, size_t n, const float *w, const float *b,
                                  float eps, const float *pe, float *with_pe);
/// LayerNorm2d: normalise each of `hw` pixels over `c` channels in place; channel rows are
/// `stride` floats apart (the map's pixel count; `hw` may be a slice of them). Then GELU when `gelu`.
void sam2_layernorm_channels(float *x, size_t c, size_t hw, size_t stride, const float *w, const float *b, float eps, int gelu);
#endif

#ifndef SAM2_CKERNELS_FEWROWS
#define SAM2_CKERNELS_FEWROWS
/// `y[r, o] = bias[o] + Σ_k x[r, k]·w[o, k]` for outputs `o0..<o1` of `out` (rows of `y` are `out`
/// long): a linear layer on a few input rows, reading the weight `[out, in]` as stored.
void sam2_linear_few_rows(const float *x, size_t rows, size_t in, const float *w, const float *bias,
                          size_t o0, size_t o1, size_t out, float *y);
#endif

#ifndef SAM2_CKERNELS_COUNT
#define SAM2_CKERNELS_COUNT
/// How many of `n` values are greater than `t`.
size_t sam2_count_above(const float *x, size_t n, float t);
#endif

#ifndef SAM2_CKERNELS_ALLOC
#define SAM2_CKERNELS_ALLOC
/// Ask the C allocator to keep freed memory for reuse instead of unmapping it (glibc only;
/// a no-op elsewhere). Every frame allocates the same activations again, and fresh mappings
/// cost a page fault per 4 KB.
void sam2_keep_freed_memory(void);
/// The name of the kernel set OpenBLAS chose for this CPU (or OPENBLAS_CORETYPE named), e.g.
/// "Haswell" (AVX2) or "SkylakeX" (AVX-512); NULL when the BLAS does not tell.
const char *sam2_blas_corename(void);
#endif

#ifndef SAM2_CKERNELS_UPSCALE
#define SAM2_CKERNELS_UPSCALE
/// The scatter of a 2x2 stride-2 transposed convolution whose products are laid out by output
/// offset: `products` rows `(i*2 + j)*cout + co`, each `rows*w` input pixels long. Writes
/// `out[co, 2y+i, 2x+j] = products + bias[co]`, then `+ skip` at the same position when `skip`
/// is not NULL, then GELU when `gelu`; channels of `out` and `skip` are `out_stride` / `skip_stride` floats apart.
void sam2_interleave2x2(const float *products, size_t cout, size_t rows, size_t w, const float *bias,
                        const float *skip, size_t skip_stride, float *out, size_t out_stride, int gelu);
/// `out = a + b`, `n` values (`out` may be `a` or `b`).
void sam2_add(float *out, const float *a, const float *b, size_t n);
/// `sum = a + b` and `sum_c = sum + c` in one pass.
void sam2_add_then_add(float *sum, float *sum_c, const float *a, const float *b, const float *c, size_t n);
/// Claim the next index of a loop shared by several threads (a relaxed atomic increment).
size_t sam2_next_index(size_t *counter);
/// A task of a shared loop: `fn(context, index)`.
typedef void (*sam2_task_fn)(void *context, long index);
/// Run `fn(context, i)` for every i in 0..<count on the calling thread and the pool's
/// `threads - 1` workers (started on first use), each taking the next index when it is free.
/// Returns 1 once every index is done. Idle workers spin ($SAM2_SPIN_US, default 1000 µs) before
/// they sleep, so the back-to-back loops of a model pass do not pay a thread wake-up each. Returns
/// 0 without running anything when the pool is already running a loop (a nested or concurrent
/// call: run it inline), and -1 where there is no pool (not Linux).
int sam2_pool_run(long count, int threads, sam2_task_fn fn, void *context);
#endif
#ifndef SAM2_CKERNELS_DEPTHWISE
#define SAM2_CKERNELS_DEPTHWISE
/// One channel of a depthwise convolution: the `h x w` plane `src`, `k x k` taps `wt`, stride
/// `stride`, zero padding `pad`, plus `bias`, into the `ho x wo` plane `dst`. Each output is
/// `bias + Σ taps` in row-major tap order. When `sum` is not NULL it receives the sum of the
/// outputs (accumulated in double).
void sam2_depthwise_plane(const float *src, size_t h, size_t w, const float *wt, size_t k, size_t stride,
                          size_t pad, float bias, float *dst, size_t ho, size_t wo, double *sum);
#endif
#ifndef SAM2_CKERNELS_GATHER
#define SAM2_CKERNELS_GATHER
/// `dst[i] = src[2i]` for i in 0..<n (reads no further than `src[2(n-1)]`).
void sam2_gather_stride2(float *dst, const float *src, size_t n);
#endif
