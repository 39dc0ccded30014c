import CBLAS

/// Matrix products on OpenBLAS's `cblas_sgemm`: the one kernel almost all of SAM 2's time goes to.
public enum GEMM {
    /// Floating-point operations issued through sgemm so far (2·m·n·k each), for benchmarks.
    nonisolated(unsafe) public static var flops: Double = 0

    /// `C[m,n] = alpha * op(A) · op(B) + beta * C`, row-major, on raw pointers with leading dimensions.
    @inline(__always)
    public static func sgemm(transA: Bool = false, transB: Bool = false,
                             m: Int, n: Int, k: Int, alpha: Float = 1,
                             a: UnsafePointer<Float>, lda: Int,
                             b: UnsafePointer<Float>, ldb: Int,
                             beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        flops += 2 * Double(m) * Double(n) * Double(k)
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

    /// `nn.Linear` on token rows: `x[N, in] · Wᵀ + b` with `W[out, in]`.
    public static func linear(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
        let inDim = weight.shape[1], outDim = weight.shape[0]
        precondition(x.shape.last == inDim, "linear: input \(x.shape) vs weight \(weight.shape)")
        let rows = x.count / inDim
        var out = [Float](repeating: 0, count: rows * outDim)
        if let bias {
            // Start from the bias so sgemm accumulates onto it (beta = 1).
            out.withUnsafeMutableBufferPointer { o in
                bias.data.withUnsafeBufferPointer { b in
                    for r in 0..<rows { (o.baseAddress! + r * outDim).update(from: b.baseAddress!, count: outDim) }
                }
            }
        }
        if rows > 0 {
            x.data.withUnsafeBufferPointer { px in
                weight.data.withUnsafeBufferPointer { pw in
                    out.withUnsafeMutableBufferPointer { po in
                        sgemm(transB: true, m: rows, n: outDim, k: inDim,
                              a: px.baseAddress!, lda: inDim, b: pw.baseAddress!, ldb: inDim,
                              beta: bias == nil ? 0 : 1, c: po.baseAddress!, ldc: outDim)
                    }
                }
            }
        }
        var shape = x.shape
        shape[shape.count - 1] = outDim
        return Tensor(shape: shape, data: out)
    }

    /// Use `n` OpenBLAS threads.
    public static func setThreads(_ n: Int) {
        if n > 0 { openblas_set_num_threads(Int32(n)) }
    }

    public static var threads: Int { Int(openblas_get_num_threads()) }
}
