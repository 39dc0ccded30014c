import CKernels
import Foundation

/// Pointwise nonlinearities, in the exact forms PyTorch uses.
public enum Activation: String, Sendable {
    case relu, gelu

    public func apply(_ x: Tensor) -> Tensor {
        switch self {
        case .relu: return x.relu()
        case .gelu: return x.gelu()
        }
    }
}

extension Tensor {
    /// GELU in PyTorch's default (erf) form: `x/2 · (1 + erf(x/√2))`.
    public func gelu() -> Tensor {
        var out = self
        out.data.withUnsafeMutableBufferPointer { p in
            let base = p.baseAddress!
            parallelChunks(p.count) { r in sam2_gelu(base + r.lowerBound, r.count) }
        }
        return out
    }

    /// `gelu(self + other)` in one pass.
    public func gelu(adding other: Tensor) -> Tensor {
        precondition(shape == other.shape, "gelu(adding:): \(shape) vs \(other.shape)")
        if count == 0 { return self }
        let out = [Float](unsafeUninitializedCapacity: count) { o, n in
            data.withUnsafeBufferPointer { pa in
                other.data.withUnsafeBufferPointer { pb in
                    let op = o.baseAddress!, ap = pa.baseAddress!, bp = pb.baseAddress!
                    parallelChunks(count) { r in
                        sam2_add(op + r.lowerBound, ap + r.lowerBound, bp + r.lowerBound, r.count)
                        sam2_gelu(op + r.lowerBound, r.count)
                    }
                }
            }
            n = count
        }
        return Tensor(shape: shape, data: out)
    }

    public func relu() -> Tensor {
        var out = self
        out.data.withUnsafeMutableBufferPointer { sam2_relu($0.baseAddress!, $0.count) }
        return out
    }

    /// `sigmoid(x)·scale + bias` in one vectorised pass.
    public func sigmoid(scale: Float, bias: Float) -> Tensor {
        var out = self
        out.data.withUnsafeMutableBufferPointer { p in
            let base = p.baseAddress!
            parallelChunks(p.count) { r in sam2_sigmoid_affine(base + r.lowerBound, r.count, scale, bias) }
        }
        return out
    }

    public func sigmoid() -> Tensor {
        var out = self
        out.data.withUnsafeMutableBufferPointer { p in
            for i in 0..<p.count { p[i] = 1 / (1 + expf(-p[i])) }
        }
        return out
    }
}

/// Softmax of each of `rows` rows of `n` values in place (max-subtracted, as PyTorch does).
@inline(__always)
public func softmaxRows(_ p: UnsafeMutablePointer<Float>, _ rows: Int, _ n: Int) {
    sam2_softmax_rows(p, rows, n)
}
