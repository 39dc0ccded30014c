import CKernels

extension Tensor {
    /// `nn.LayerNorm` over the last dimension.
    public func layerNorm(weight: Tensor, bias: Tensor, eps: Float) -> Tensor {
        let c = shape[shape.count - 1]
        precondition(weight.count == c && bias.count == c, "layerNorm: \(shape) vs \(weight.shape)")
        var out = self
        let rows = count / max(c, 1)
        out.data.withUnsafeMutableBufferPointer { p in
            weight.data.withUnsafeBufferPointer { w in
                bias.data.withUnsafeBufferPointer { b in
                    let base = p.baseAddress!, wp = w.baseAddress!, bp = b.baseAddress!
                    parallelChunks(rows, minimumChunk: max(1, 16384 / max(c, 1))) { r in
                        sam2_layernorm_rows(base + r.lowerBound * c, r.count, c, wp, bp, eps)
                    }
                }
            }
        }
        return out
    }

    /// SAM's `LayerNorm2d`: normalise each pixel of a `[C, H, W]` map over its channels; with
    /// `thenGELU`, GELU follows in the same pass.
    public func layerNorm2d(weight: Tensor, bias: Tensor, eps: Float = 1e-6, thenGELU: Bool = false) -> Tensor {
        let c = shape[0], hw = count / c
        precondition(weight.count == c && bias.count == c)
        var out = self
        out.data.withUnsafeMutableBufferPointer { p in
            weight.data.withUnsafeBufferPointer { w in
                bias.data.withUnsafeBufferPointer { b in
                    let base = p.baseAddress!, wp = w.baseAddress!, bp = b.baseAddress!
                    parallelChunks(hw, minimumChunk: max(256, 65536 / max(c, 1))) { r in
                        sam2_layernorm_channels(base + r.lowerBound, c, r.count, hw, wp, bp, eps, thenGELU ? 1 : 0)
                    }
                }
            }
        }
        return out
    }
}

/// LayerNorm2d of `pixels` pixels over `channels` channel rows `channelStride` floats apart, in place, on this
/// thread; then GELU with `thenGELU`.
@inline(__always)
public func layerNormChannelsInPlace(_ x: UnsafeMutablePointer<Float>, channels: Int, pixels: Int, channelStride: Int,
                                     weight: UnsafePointer<Float>, bias: UnsafePointer<Float>, eps: Float, thenGELU: Bool = false) {
    sam2_layernorm_channels(x, channels, pixels, channelStride, weight, bias, eps, thenGELU ? 1 : 0)
}
