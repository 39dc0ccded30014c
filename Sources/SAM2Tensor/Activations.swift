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
            for i in 0..<p.count {
                let v = p[i]
                p[i] = 0.5 * v * (1 + erff(v * 0.70710678118654752440))
            }
        }
        return out
    }

    public func relu() -> Tensor {
        var out = self
        out.data.withUnsafeMutableBufferPointer { p in
            for i in 0..<p.count where p[i] < 0 { p[i] = 0 }
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

/// Softmax of `n` values in place (max-subtracted, as PyTorch does).
@inline(__always)
public func softmaxInPlace(_ p: UnsafeMutablePointer<Float>, _ n: Int) {
    var m = -Float.infinity
    for j in 0..<n where p[j] > m { m = p[j] }
    var s: Float = 0
    for j in 0..<n {
        let e = expf(p[j] - m)
        p[j] = e
        s += e
    }
    let inv = 1 / s
    for j in 0..<n { p[j] *= inv }
}
