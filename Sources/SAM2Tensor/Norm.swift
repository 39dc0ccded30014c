import Foundation

extension Tensor {
    /// `nn.LayerNorm` over the last dimension.
    public func layerNorm(weight: Tensor, bias: Tensor, eps: Float) -> Tensor {
        let c = shape[shape.count - 1]
        precondition(weight.count == c && bias.count == c, "layerNorm: \(shape) vs \(weight.shape)")
        var out = self
        out.data.withUnsafeMutableBufferPointer { p in
            weight.data.withUnsafeBufferPointer { w in
                bias.data.withUnsafeBufferPointer { b in
                    for r in stride(from: 0, to: p.count, by: c) {
                        var mean: Double = 0
                        for j in 0..<c { mean += Double(p[r + j]) }
                        mean /= Double(c)
                        var varsum: Double = 0
                        for j in 0..<c { let d = Double(p[r + j]) - mean; varsum += d * d }
                        let rstd = Float(1 / (varsum / Double(c) + Double(eps)).squareRoot())
                        let m = Float(mean)
                        for j in 0..<c { p[r + j] = (p[r + j] - m) * rstd * w[j] + b[j] }
                    }
                }
            }
        }
        return out
    }

    /// SAM's `LayerNorm2d`: normalise each pixel of a `[C, H, W]` map over its channels.
    public func layerNorm2d(weight: Tensor, bias: Tensor, eps: Float = 1e-6) -> Tensor {
        let c = shape[0], hw = count / c
        precondition(weight.count == c && bias.count == c)
        var out = self
        var mean = [Double](repeating: 0, count: hw)
        var varsum = [Double](repeating: 0, count: hw)
        out.data.withUnsafeMutableBufferPointer { p in
            for ch in 0..<c { for i in 0..<hw { mean[i] += Double(p[ch * hw + i]) } }
            for i in 0..<hw { mean[i] /= Double(c) }
            for ch in 0..<c { for i in 0..<hw { let d = Double(p[ch * hw + i]) - mean[i]; varsum[i] += d * d } }
            let rstd = varsum.map { Float(1 / ($0 / Double(c) + Double(eps)).squareRoot()) }
            let m = mean.map { Float($0) }
            for ch in 0..<c {
                let w = weight.data[ch], b = bias.data[ch]
                for i in 0..<hw { p[ch * hw + i] = (p[ch * hw + i] - m[i]) * rstd[i] * w + b }
            }
        }
        return out
    }
}
