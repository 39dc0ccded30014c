import CKernels

/// The transformer feed-forward sublayer with its pre-norm and residual, fused:
/// `x += act(LN(x) W1ᵀ + b1) W2ᵀ + b2`. Rows go one fixed 256-row slab at a time, so the
/// normalised rows and the (4x wider) hidden activations stay in cache: one pass over `x`
/// instead of five passes over buffers of up to 100 MB (Hiera's first stage at 1024).
public enum FeedForward {
    public static func residual(_ x: inout Tensor, normWeight: Tensor, normBias: Tensor, eps: Float,
                                w1: Tensor, b1: Tensor, activation: Activation, w2: Tensor, b2: Tensor) {
        let dim = w1.shape[1], hidden = w1.shape[0]
        precondition(x.shape.last == dim && w2.shape == [dim, hidden] && normWeight.count == dim
                     && b1.count == hidden && b2.count == dim, "feed-forward: \(x.shape), \(w1.shape), \(w2.shape)")
        let rows = x.count / dim
        GEMM.countFlops(4 * Double(rows) * Double(dim) * Double(hidden))
        Tensor.withPointers([normWeight, normBias, w1, b1, w2, b2]) { p in
            let weights = Weights(normWeight: p[0], normBias: p[1], eps: eps, w1: p[2], b1: p[3], w2: p[4], b2: p[5],
                                  dim: dim, hidden: hidden, activation: activation)
            x.data.withUnsafeMutableBufferPointer { px in
                let xp = px.baseAddress!
                GEMM.forEachRowSlab(rows, work: Double(rows) * Double(dim) * Double(hidden)) { r0, n in
                    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: n * (dim + hidden))
                    defer { scratch.deallocate() }
                    residualRows(xp + r0 * dim, rows: n, weights, scratch: scratch)
                }
            }
        }
    }

    /// A feed-forward sublayer's parameters as raw pointers, for `residualRows`.
    public struct Weights {
        public let normWeight, normBias: UnsafePointer<Float>, eps: Float
        public let w1, b1, w2, b2: UnsafePointer<Float>
        public let dim, hidden: Int, activation: Activation
        public init(normWeight: UnsafePointer<Float>, normBias: UnsafePointer<Float>, eps: Float, w1: UnsafePointer<Float>,
                    b1: UnsafePointer<Float>, w2: UnsafePointer<Float>, b2: UnsafePointer<Float>, dim: Int, hidden: Int,
                    activation: Activation) {
            self.normWeight = normWeight; self.normBias = normBias; self.eps = eps
            self.w1 = w1; self.b1 = b1; self.w2 = w2; self.b2 = b2
            self.dim = dim; self.hidden = hidden; self.activation = activation
        }
    }

    /// `residual` on `rows` contiguous rows, on this thread, for kernels that fuse it into their
    /// own slabs; `scratch` holds `rows·(dim + hidden)` floats. Counts no FLOPs (the caller does).
    public static func residualRows(_ xs: UnsafeMutablePointer<Float>, rows n: Int, _ p: Weights,
                                    scratch t: UnsafeMutablePointer<Float>) {
        let dim = p.dim, hidden = p.hidden
        let h = t + n * dim
        t.update(from: xs, count: n * dim)
        sam2_layernorm_rows(t, n, dim, p.normWeight, p.normBias, p.eps)
        // The bias as the product's starting value, like PyTorch's addmm (the sum's rounding follows).
        GEMM.linearRows(t, rows: n, inDim: dim, outDim: hidden, weight: p.w1, bias: p.b1, accumulate: false, into: h)
        switch p.activation {
        case .gelu: sam2_gelu(h, n * hidden)
        case .relu: sam2_relu(h, n * hidden)
        }
        // The residual is the second product's starting value: x + b2, then += h W2ᵀ.
        for r in 0..<n {
            for c in 0..<dim { xs[r * dim + c] += p.b2[c] }
        }
        GEMM.linearRows(h, rows: n, inDim: hidden, outDim: dim, weight: p.w2, bias: nil, accumulate: true, into: xs)
    }
}

extension FeedForward {
    /// The same shape of computation with a grouped softmax as the activation and the norm after
    /// the residual: `y = LN(x + softmax(q W1ᵀ + b1) W2ᵀ + b2)` with `q = x + pe` given (as
    /// `xPlusPE`), the softmax within each of `softmaxGroups` interleaved groups of hidden values
    /// (value j of group g at `j·softmaxGroups + g`); returns `y` and
    /// `y + pe`. This is attention from many rows (queries `x + pe`) to a few keys once the
    /// projections are folded into `W1` and `W2` (the mask decoder's image → token attention),
    /// and `y + pe` is what the next attention reads. Fused per 256-row slab, the scores and
    /// attention output stay in cache.
    public static func postNormSoftmaxResidual(_ x: Tensor, xPlusPE: Tensor, pe: Tensor, w1: Tensor, b1: Tensor, softmaxGroups: Int,
                                               w2: Tensor, b2: Tensor, normWeight: Tensor, normBias: Tensor,
                                               eps: Float) -> (y: Tensor, yPlusPE: Tensor) {
        let dim = w1.shape[1], hidden = w1.shape[0]
        precondition(x.shape == xPlusPE.shape && x.shape.last == dim && b1.count == hidden && w2.shape == [dim, hidden],
                     "softmax feed-forward: \(x.shape), \(xPlusPE.shape), \(w1.shape), \(w2.shape)")
        GEMM.countFlops(2 * Double(x.count) * Double(hidden))
        return Tensor.withPointers([xPlusPE, w1, b1]) { p in
            postNormSoftmaxResidual(x, pe: pe, softmaxGroups: softmaxGroups, w2: w2, b2: b2, normWeight: normWeight,
                                    normBias: normBias, eps: eps) { r0, n, h in
                GEMM.linearRows(p[0] + r0 * dim, rows: n, inDim: dim, outDim: hidden, weight: p[1], bias: p[2],
                                accumulate: false, into: h)
            }
        }
    }

    /// The same with the scores given by `scores(firstRow, rows, into)`, which writes `rows` rows
    /// of `w2.shape[1]` pre-softmax values (and counts its own FLOPs): for queries whose
    /// projection is already at hand.
    public static func postNormSoftmaxResidual(_ x: Tensor, pe: Tensor, softmaxGroups: Int, w2: Tensor, b2: Tensor,
                                               normWeight: Tensor, normBias: Tensor, eps: Float,
                                               scores: (Int, Int, UnsafeMutablePointer<Float>) -> Void) -> (y: Tensor, yPlusPE: Tensor) {
        let dim = w2.shape[0], hidden = w2.shape[1]
        precondition(x.shape == pe.shape && x.shape.last == dim && b2.count == dim && normWeight.count == dim
                     && hidden % softmaxGroups == 0, "softmax feed-forward: \(x.shape), \(pe.shape), \(w2.shape)")
        let rows = x.count / dim
        GEMM.countFlops(2 * Double(rows) * Double(dim) * Double(hidden))
        var withPE = [Float](unsafeUninitializedCapacity: x.count) { _, n in n = x.count }
        let out = [Float](unsafeUninitializedCapacity: x.count) { o, count in
            withPE.withUnsafeMutableBufferPointer { wpe in
                Tensor.withPointers([x, pe, w2, b2, normWeight, normBias]) { p in
                    let (xp, pep, w2p, b2p, nw, nb) = (p[0], p[1], p[2], p[3], p[4], p[5])
                    let op = o.baseAddress!, wp = wpe.baseAddress!
                    GEMM.forEachRowSlab(rows, work: Double(rows) * Double(dim) * Double(hidden)) { r0, n in
                        let h = UnsafeMutablePointer<Float>.allocate(capacity: n * hidden)
                        defer { h.deallocate() }
                        let at = r0 * dim
                        scores(r0, n, h)
                        sam2_softmax_interleaved(h, n, softmaxGroups, hidden / softmaxGroups)
                        GEMM.linearRows(h, rows: n, inDim: hidden, outDim: dim, weight: w2p, bias: b2p, accumulate: false, into: op + at)
                        sam2_residual_layernorm_rows(op + at, xp + at, n, dim, nw, nb, eps, pep + at, wp + at)
                    }
                }
            }
            count = x.count
        }
        return (Tensor(shape: x.shape, data: out), Tensor(shape: x.shape, data: withPE))
    }
}

extension FeedForward {
    /// LayerNorm2d's parameters, for a map normalised over its channels on the way in.
    public struct ChannelNorm {
        public let weight: Tensor, bias: Tensor, eps: Float
        public init(weight: Tensor, bias: Tensor, eps: Float) { self.weight = weight; self.bias = bias; self.eps = eps }
    }

    /// A 1x1-convolution MLP on a `[C, H, W]` map with its residual, fused:
    /// `x += W2·gelu(W1·u + b1) + b2`, where `u` is `input` (default: `x` itself), first scaled
    /// per channel by `scale` (RepViT's squeeze-excite gate) or layer-normalised over its
    /// channels by `norm` (ConvNeXt's `CXBlock`); `input` is consumed (changed in place).
    /// Pixels go one fixed slab of columns at a time, so the wider hidden activations stay in
    /// cache: one pass over the map instead of four (and no map-sized buffers). Same sums
    /// whatever the core count. (The slabs' products count their own FLOPs.)
    public static func channelsResidual(_ x: inout Tensor, input: consuming Tensor? = nil, norm: ChannelNorm? = nil,
                                        scale: [Float]? = nil, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) {
        var source = input
        let c = x.shape[0], hidden = w1.shape[0], pixels = x.count / c
        precondition(w1.count == hidden * c && w2.count == c * hidden && b1.count == hidden && b2.count == c
                     && (source?.shape ?? x.shape) == x.shape && (scale == nil || source == nil),
                     "channel MLP: \(x.shape), \(w1.shape), \(w2.shape)")
        // 512 columns (best measured for RepViT's 96-768 hidden channels); fewer for wider ones.
        let slab = hidden <= 768 ? 512 : 256
        // The gate scales the MLP's input and the residual: folded into W1's columns for the
        // first, applied with the bias in one pass for the second.
        var gatedW1 = w1
        if let scale {
            for o in 0..<hidden { for i in 0..<c { gatedW1.data[o * c + i] *= scale[i] } }
        }
        Tensor.withPointers([gatedW1, b1, w2, b2] + (norm.map { [$0.weight, $0.bias] } ?? [])) { p in
            x.data.withUnsafeMutableBufferPointer { px in
                let xp = px.baseAddress!
                /// The MLP on every slab of `up`'s pixels (`x` itself, or the separate input).
                func run(_ up: UnsafeMutablePointer<Float>) {
                    GEMM.forEachRowSlab(pixels, slab: slab, work: Double(pixels) * Double(c) * Double(hidden)) { p0, n in
                        if let norm {
                            layerNormChannelsInPlace(up + p0, channels: c, pixels: n, channelStride: pixels, weight: p[4], bias: p[5],
                                                     eps: norm.eps)
                        }
                        let h = UnsafeMutablePointer<Float>.allocate(capacity: hidden * n)
                        defer { h.deallocate() }
                        GEMM.sgemm(m: hidden, n: n, k: c, a: p[0], lda: c, b: up + p0, ldb: pixels, c: h, ldc: n, serial: true)
                        sam2_bias_gelu_rows(h, hidden, n, p[1])
                        sam2_scale_shift_rows(xp + p0, c, n, pixels, scale, p[3])
                        GEMM.sgemm(m: c, n: n, k: hidden, a: p[2], lda: hidden, b: h, ldb: n, beta: 1, c: xp + p0, ldc: pixels,
                                   serial: true)
                    }
                }
                if source != nil {
                    source!.data.withUnsafeMutableBufferPointer { run($0.baseAddress!) }
                } else {
                    run(xp)
                }
            }
        }
    }
}
