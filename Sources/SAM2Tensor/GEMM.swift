import CBLAS
import CKernels
import Foundation

/// Matrix products on OpenBLAS's `cblas_sgemm`: the one kernel almost all of SAM 2's time goes to.
public enum GEMM {
    /// Floating-point operations issued through sgemm so far (2·m·n·k each), for benchmarks.
    public static var flops: Double {
        get { flopsLock.lock(); defer { flopsLock.unlock() }; return flopCount }
        set { flopsLock.lock(); flopCount = newValue; flopsLock.unlock() }
    }
    nonisolated(unsafe) private static var flopCount: Double = 0
    private static let flopsLock = NSLock()

    /// OpenBLAS runs single-threaded: large products are split across our own threads instead,
    /// so OpenBLAS's spinning workers never compete with the pointwise kernels between calls.
    /// And glibc's malloc keeps freed blocks instead of unmapping them: every frame allocates the
    /// same few hundred MB of activations, and fresh mappings cost a page fault per 4 KB
    /// (a quarter of the image encoder's time before this).
    private static let setUpBLAS: Void = {
        openblas_set_num_threads(1)
        sam2_keep_freed_memory()
    }()

    /// OpenBLAS's kernel set (e.g. "Haswell" for AVX2, "SkylakeX" for AVX-512), for benchmarks:
    /// sgemm's rate depends on it, and OPENBLAS_CORETYPE overrides OpenBLAS's choice.
    public static var kernels: String { sam2_blas_corename().map { String(cString: $0) } ?? "unknown" }

    /// `C[m,n] = alpha * op(A) · op(B) + beta * C`, row-major, on raw pointers with leading dimensions.
    /// Products of more than ~2 MFLOP are split into fixed slabs of C (256 rows, or when C is short,
    /// 4096, 512 or 128 columns by its width), shared among the cores, each an independent
    /// single-threaded sgemm.
    /// `serial`: one sgemm on this thread (for callers that split the work themselves).
    public static func sgemm(transA: Bool = false, transB: Bool = false,
                             m: Int, n: Int, k: Int, alpha: Float = 1,
                             a: UnsafePointer<Float>, lda: Int,
                             b: UnsafePointer<Float>, ldb: Int,
                             beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int, serial: Bool = false) {
        countFlops(2 * Double(m) * Double(n) * Double(k))
        if serial {
            blas(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
            return
        }
        // Fixed slabs of rows (or, for short wide products such as convolutions, of columns),
        // whatever the number of threads, so results do not depend on the core count.
        // Short products (a few prompt tokens against the image) split their columns finely.
        let rowSlab = 256, colSlab = n >= 8192 ? 4096 : (n >= 1024 ? 512 : 128)
        let byRows = m >= 2 * rowSlab
        if Double(m) * Double(n) * Double(k) < 2_000_000 || (!byRows && n < 2 * colSlab) {
            blas(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
            return
        }
        let slabs = byRows ? (m + rowSlab - 1) / rowSlab : (n + colSlab - 1) / colSlab
        parallelFor(slabs) { t in
            if byRows {
                let r0 = t * rowSlab, rows = min(rowSlab, m - r0)
                blas(transA, transB, rows, n, k, alpha, transA ? a + r0 : a + r0 * lda, lda, b, ldb, beta, c + r0 * ldc, ldc)
            } else {
                let c0 = t * colSlab, cols = min(colSlab, n - c0)
                blas(transA, transB, m, cols, k, alpha, a, lda, transB ? b + c0 * ldb : b + c0, ldb, beta, c + c0, ldc)
            }
        }
    }

    @inline(__always)
    static func blas(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
                             _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                             _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        _ = setUpBLAS
        // For beta = 0 OpenBLAS first clears C with a scalar loop, about a store per cycle: 10% of
        // an attention score product (k = 96). Clearing it with memset and accumulating (beta = 1)
        // is the same arithmetic to the bit, since its kernels always add the product to C.
        var beta = beta
        if beta == 0 && m > 0 && n > 0 {
            if ldc == n { c.update(repeating: 0, count: m * n) } else { for r in 0..<m { (c + r * ldc).update(repeating: 0, count: n) } }
            beta = 1
        }
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// `A[m,k] · B[k,n]` (or with either transposed) on 2-D tensors.
    public static func matmul(_ a: Tensor, _ b: Tensor, transA: Bool = false, transB: Bool = false) -> Tensor {
        precondition(a.rank == 2 && b.rank == 2)
        let m = transA ? a.shape[1] : a.shape[0]
        let k = transA ? a.shape[0] : a.shape[1]
        let n = transB ? b.shape[0] : b.shape[1]
        precondition((transB ? b.shape[1] : b.shape[0]) == k, "matmul: \(a.shape) x \(b.shape)")
        var out = [Float](repeating: 0, count: m * n)
        a.data.withUnsafeBufferPointer { pa in
            b.data.withUnsafeBufferPointer { pb in
                out.withUnsafeMutableBufferPointer { pc in
                    sgemm(transA: transA, transB: transB, m: m, n: n, k: k,
                          a: pa.baseAddress!, lda: a.shape[1], b: pb.baseAddress!, ldb: b.shape[1],
                          c: pc.baseAddress!, ldc: n)
                }
            }
        }
        return Tensor(shape: [m, n], data: out)
    }

    /// `nn.Linear` on token rows: `x[N, in] · Wᵀ + b` with `W[out, in]`. Rows go in the same fixed
    /// slabs as `sgemm`; each slab's output starts as the bias, written just before its sgemm while
    /// it is in cache (a separate pass over a large output costs more than the product when `in` is small).
    /// Up to 16 rows (the mask decoder's prompt tokens) skip BLAS: packing the weight for so few rows
    /// costs more than the product, so a dot-product kernel reads it as stored.
    public static func linear(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
        let inDim = weight.shape[1], outDim = weight.shape[0]
        precondition(x.shape.last == inDim, "linear: input \(x.shape) vs weight \(weight.shape)")
        let rows = x.count / inDim
        var shape = x.shape
        shape[shape.count - 1] = outDim
        guard rows > 0 else { return Tensor(shape: shape, data: []) }
        let out = [Float](unsafeUninitializedCapacity: rows * outDim) { buffer, initialized in
            let c = buffer.baseAddress!
            x.data.withUnsafeBufferPointer { px in
                weight.data.withUnsafeBufferPointer { pw in
                    (bias?.data ?? []).withUnsafeBufferPointer { pb in
                        let b = bias == nil ? nil : pb.baseAddress
                        if rows <= 16 {
                            // Outputs split over the cores when the weight is large (the MLP's 256 x 2048).
                            countFlops(2 * Double(rows) * Double(outDim) * Double(inDim))
                            let xp = px.baseAddress!, wp = pw.baseAddress!, slab = 128
                            let slabs = rows * outDim * inDim >= 1 << 20 ? (outDim + slab - 1) / slab : 1
                            parallelFor(slabs) { t in
                                let o0 = t * slab, o1 = slabs == 1 ? outDim : min(outDim, o0 + slab)
                                sam2_linear_few_rows(xp, rows, inDim, wp, b, o0, o1, outDim, c)
                            }
                            return
                        }
                        if rows < 2 * 256 {
                            // Fewer rows than two slabs: split the weight's rows (output columns) over the
                            // cores instead, as `sgemm` does for short products.
                            if let b { for r in 0..<rows { (c + r * outDim).update(from: b, count: outDim) } }
                            sgemm(transB: true, m: rows, n: outDim, k: inDim, a: px.baseAddress!, lda: inDim, b: pw.baseAddress!,
                                  ldb: inDim, beta: b == nil ? 0 : 1, c: c, ldc: outDim)  // (counts its FLOPs)
                            return
                        }
                        countFlops(2 * Double(rows) * Double(outDim) * Double(inDim))
                        forEachRowSlab(rows, work: Double(rows) * Double(outDim) * Double(inDim)) { r0, n in
                            linearRows(px.baseAddress! + r0 * inDim, rows: n, inDim: inDim, outDim: outDim,
                                       weight: pw.baseAddress!, bias: b, accumulate: false, into: c + r0 * outDim)
                        }
                    }
                }
            }
            initialized = rows * outDim
        }
        return Tensor(shape: shape, data: out)
    }

    /// `c[rows, out] = x[rows, in] · Wᵀ + bias` on this thread, or with `accumulate` (and no bias)
    /// `c += x · Wᵀ`: the building block of `linear` and the fused row-slab kernels. Counts no FLOPs
    /// (the caller does).
    public static func linearRows(_ x: UnsafePointer<Float>, rows: Int, inDim: Int, outDim: Int, weight: UnsafePointer<Float>,
                           bias: UnsafePointer<Float>?, accumulate: Bool, into c: UnsafeMutablePointer<Float>) {
        _ = setUpBLAS
        if let bias { for r in 0..<rows { (c + r * outDim).update(from: bias, count: outDim) } }
        if rows == 1 {  // one token: a matrix-vector product reads the weight once, without packing it
            cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(outDim), Int32(inDim), 1, weight, Int32(inDim), x, 1,
                        bias != nil || accumulate ? 1 : 0, c, 1)
            return
        }
        blas(false, true, rows, outDim, inDim, 1, x, inDim, weight, inDim, bias != nil || accumulate ? 1 : 0, c, outDim)
    }

    /// Adds to `flops` the products a fused kernel ran itself (through `linearRows` or a serial sgemm).
    public static func countFlops(_ f: Double) { flopsLock.lock(); flopCount += f; flopsLock.unlock() }

    /// Run `body(firstRow, rowCount)` over fixed `slab`-row slabs, on all cores when the work is
    /// large (else as one piece).
    static func forEachRowSlab(_ rows: Int, slab: Int = 256, work: Double, _ body: (Int, Int) -> Void) {
        guard work >= 4_000_000 && rows >= 2 * slab else { body(0, rows); return }
        parallelFor((rows + slab - 1) / slab) { t in body(t * slab, min(slab, rows - t * slab)) }
    }
}
