import Foundation
import SAM2Tensor

/// SAM's `Attention`: q/k/v projections (optionally to a downsampled internal width),
/// multi-head scaled dot-product attention, output projection.
struct ProjectedAttention {
    let qProj: Linear, kProj: Linear, vProj: Linear, outProj: Linear
    let heads: Int

    init(_ w: WeightStore, _ prefix: String, dim: Int, heads: Int, downsampleRate: Int = 1, kvInDim: Int? = nil) throws {
        let internalDim = dim / downsampleRate
        qProj = try Linear(w, "\(prefix).q_proj", dim, internalDim)
        kProj = try Linear(w, "\(prefix).k_proj", kvInDim ?? dim, internalDim)
        vProj = try Linear(w, "\(prefix).v_proj", kvInDim ?? dim, internalDim)
        outProj = try Linear(w, "\(prefix).out_proj", internalDim, dim)
        self.heads = heads
    }

    func callAsFunction(q: Tensor, k: Tensor, v: Tensor) -> Tensor {
        let o = Attention.scaledDotProduct(q: qProj(q), k: kProj(k), v: vProj(v), heads: heads)
        return outProj(o)
    }
}

/// `RoPEAttention`: the same with axial rotary encoding of queries and of all keys but the
/// last `excludedKeys` (the object-pointer tokens); keys repeat the query grid's positions.
struct RoPEAttention {
    let base: ProjectedAttention
    let theta: Float
    let internalDim: Int
    /// The rotation tables depend only on the grid: built once per size, not per call.
    private static let ropeTables = Memo<[Float], AxialRoPE>()

    init(_ w: WeightStore, _ prefix: String, dim: Int, heads: Int, downsampleRate: Int, kvInDim: Int?, theta: Float) throws {
        base = try ProjectedAttention(w, prefix, dim: dim, heads: heads, downsampleRate: downsampleRate, kvInDim: kvInDim)
        self.theta = theta
        internalDim = dim / downsampleRate
    }

    func rope(queries: Int) -> AxialRoPE {
        let side = Int(Double(queries).squareRoot().rounded())
        let dim = internalDim / base.heads
        return Self.ropeTables.value(for: [Float(dim), Float(side), theta]) { AxialRoPE(dim: dim, side: side, theta: theta) }
    }

    func callAsFunction(q: Tensor, k: Tensor, v: Tensor, excludedKeys: Int = 0, rope: AxialRoPE) -> Tensor {
        var qp = base.qProj(q), kp = base.kProj(k)
        rope.apply(&qp, rows: qp.shape[0], heads: base.heads)
        rope.apply(&kp, rows: kp.shape[0] - excludedKeys, heads: base.heads)
        let o: Tensor
        if base.heads == 1 && v.shape[1] < internalDim {
            // Values are not rotated and each softmax row sums to one, so
            // softmax(q kᵀ)·(v Wᵀ + b) = (softmax(q kᵀ)·v)·Wᵀ + b: attending over the narrow memory
            // rows (64 wide) and projecting afterwards does a quarter of the value-side work.
            o = base.vProj(Attention.scaledDotProduct(q: qp, k: kp, v: v, heads: 1))
        } else {
            o = Attention.scaledDotProduct(q: qp, k: kp, v: base.vProj(v), heads: base.heads)
        }
        return base.outProj(o)
    }
}
