import CKernels

/// Convolutions on `[C, H, W]` maps (batch 1), as `nn.Conv2d` / `nn.ConvTranspose2d` compute them.
public enum Conv {
    /// Dense 2-D convolution (groups = 1), then GELU with `thenGELU`. `weight` is `[Cout, Cin, kh, kw]`.
    /// A 1x1 stride-1 convolution is one sgemm on the map itself; any other is split into slabs of
    /// output rows, each an im2col that stays in cache and one sgemm, spread over the cores (the
    /// slabs depend only on the shapes, so the sums are the same on any core count).
    public static func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?,
                              stride: Int = 1, padding: Int = 0, thenGELU: Bool = false) -> Tensor {
        let cin = x.shape[0], h = x.shape[1], w = x.shape[2]
        let cout = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3]
        precondition(weight.shape[1] == cin, "conv2d: input \(x.shape) vs weight \(weight.shape)")
        let ho = (h + 2 * padding - kh) / stride + 1
        let wo = (w + 2 * padding - kw) / stride + 1
        let kdim = cin * kh * kw, n = ho * wo
        // Every output is written: the bias first (by each slab, while its rows are in cache), or
        // the product alone (beta 0).
        var out = [Float](unsafeUninitializedCapacity: cout * n) { _, count in count = cout * n }
        let pointwise = kh == 1 && kw == 1 && stride == 1 && padding == 0
        // Output rows per slab: an im2col of about 64 K floats (L2-resident), at least one row.
        let slabRows = pointwise ? ho : max(1, min(ho, 65_536 / max(1, kdim * wo)))
        let slabs = (ho + slabRows - 1) / slabRows
        x.data.withUnsafeBufferPointer { src in
            weight.data.withUnsafeBufferPointer { pw in
                out.withUnsafeMutableBufferPointer { po in
                    let s0 = src.baseAddress!, w0 = pw.baseAddress!, o0 = po.baseAddress!
                    let beta: Float = bias == nil ? 0 : 1
                    /// The bias into output columns `c0..<c0+count` of every channel.
                    func fillBias(_ c0: Int, _ count: Int) {
                        guard let bias else { return }
                        for co in 0..<cout { (o0 + co * n + c0).update(repeating: bias.data[co], count: count) }
                    }
                    if pointwise {
                        fillBias(0, n)
                        GEMM.sgemm(m: cout, n: n, k: kdim, a: w0, lda: kdim, b: s0, ldb: n, beta: beta, c: o0, ldc: n)
                        if thenGELU { sam2_gelu(o0, cout * n) }
                        return
                    }
                    parallelFor(slabs) { t in
                        let y0 = t * slabRows, rows = min(slabRows, ho - y0), cols = rows * wo
                        let c = UnsafeMutablePointer<Float>.allocate(capacity: kdim * cols)
                        defer { c.deallocate() }
                        for ci in 0..<cin {
                            for ky in 0..<kh {
                                for kx in 0..<kw {
                                    let d = c + ((ci * kh + ky) * kw + kx) * cols
                                    // Output columns whose input column lies inside the map.
                                    let x0 = min(wo, max(0, (padding - kx + stride - 1) / stride))
                                    let last = w - 1 + padding - kx
                                    let x1 = last < 0 ? x0 : max(x0, min(wo, last / stride + 1))
                                    for r in 0..<rows {
                                        let iy = (y0 + r) * stride - padding + ky
                                        let drow = d + r * wo
                                        if iy < 0 || iy >= h { drow.update(repeating: 0, count: wo); continue }
                                        let srow = s0 + (ci * h + iy) * w - padding + kx
                                        if x0 > 0 { drow.update(repeating: 0, count: x0) }
                                        if stride == 1 {
                                            (drow + x0).update(from: srow + x0, count: x1 - x0)
                                        } else if stride == 2 {
                                            sam2_gather_stride2(drow + x0, srow + 2 * x0, x1 - x0)
                                        } else {
                                            for ox in x0..<x1 { drow[ox] = srow[ox * stride] }
                                        }
                                        if x1 < wo { (drow + x1).update(repeating: 0, count: wo - x1) }
                                    }
                                }
                            }
                        }
                        let o = o0 + y0 * wo
                        fillBias(y0 * wo, cols)
                        GEMM.sgemm(m: cout, n: cols, k: kdim, a: w0, lda: kdim, b: c, ldb: cols, beta: beta,
                                   c: o, ldc: n, serial: true)
                        if thenGELU { for co in 0..<cout { sam2_gelu(o + co * n, cols) } }
                    }
                }
            }
        }
        return Tensor(shape: [cout, ho, wo], data: out)
    }

    /// A 1x1 convolution of a `[Cin, H, W]` map straight into `[H*W, Cout]` token rows: a linear
    /// layer on the (narrow) map's pixels, so each slab of the wide output is written once, in cache.
    public static func pointwiseToTokens(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
        let cin = x.shape[0], cout = weight.shape[0]
        precondition(weight.count == cout * cin, "pointwiseToTokens: input \(x.shape) vs weight \(weight.shape)")
        return GEMM.linear(x.chwToTokens(), weight: weight.reshaped([cout, cin]), bias: bias)
    }

    /// Depthwise convolution (groups = C); `weight` is `[C, 1, k, k]`. Channels are independent,
    /// so they are split over the cores (the same sums in any split).
    public static func depthwiseConv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int = 1, padding: Int) -> Tensor {
        depthwise(x, weight: weight, bias: bias, stride: stride, padding: padding, means: false).output
    }

    /// A depthwise convolution and the mean of each output channel (squeeze-excite's pooling),
    /// taken while each row is in cache.
    public static func depthwiseConv2dAndMeans(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int = 1,
                                               padding: Int) -> (output: Tensor, means: [Float]) {
        let r = depthwise(x, weight: weight, bias: bias, stride: stride, padding: padding, means: true)
        return (r.output, r.means)
    }

    private static func depthwise(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int, padding: Int,
                                  means: Bool) -> (output: Tensor, means: [Float]) {
        let c = x.shape[0], h = x.shape[1], w = x.shape[2], k = weight.shape[2]
        precondition(weight.shape[0] == c && weight.shape[1] == 1 && k <= 16 && stride >= 1)
        let ho = (h + 2 * padding - k) / stride + 1, wo = (w + 2 * padding - k) / stride + 1
        // Every output is written by the kernel.
        var out = [Float](unsafeUninitializedCapacity: c * ho * wo) { _, n in n = c * ho * wo }
        var sums = [Double](repeating: 0, count: means ? c : 0)
        x.data.withUnsafeBufferPointer { src in
            weight.data.withUnsafeBufferPointer { wt in
                out.withUnsafeMutableBufferPointer { dst in
                    sums.withUnsafeMutableBufferPointer { ps in
                        let s0 = src.baseAddress!, w0 = wt.baseAddress!, d0 = dst.baseAddress!
                        let sum0 = means ? ps.baseAddress : nil  // an empty array may still have an address
                        parallelFor(c) { ch in
                            sam2_depthwise_plane(s0 + ch * h * w, h, w, w0 + ch * k * k, k, stride, padding,
                                                 bias?.data[ch] ?? 0, d0 + ch * ho * wo, ho, wo, sum0.map { $0 + ch })
                        }
                    }
                }
            }
        }
        let n = Double(ho * wo)
        return (Tensor(shape: [c, ho, wo], data: out), sums.map { Float($0 / n) })
    }
}

/// `nn.ConvTranspose2d(kernel_size=2, stride=2)`: each input pixel writes its own 2x2 block.
/// The weight is kept by output offset, rows `(i·2 + j)·Cout + co`, so the whole layer is one
/// product `[4·Cout, Cin] · [Cin, pixels]` whose rows are already the output's channel rows for
/// one offset; the scatter then only interleaves rows, with unit-stride reads and writes.
public struct ConvTranspose2x2 {
    public let inChannels: Int, outChannels: Int
    let byOffset: Tensor   // [4·Cout, Cin]
    let bias: Tensor       // [Cout]

    /// `weight` as PyTorch stores it, `[Cin, Cout, 2, 2]`.
    public init(weight: Tensor, bias: Tensor) {
        precondition(weight.rank == 4 && weight.shape[2] == 2 && weight.shape[3] == 2 && bias.count == weight.shape[1],
                     "ConvTranspose2x2: weight \(weight.shape), bias \(bias.shape)")
        inChannels = weight.shape[0]; outChannels = weight.shape[1]
        let cin = inChannels, cout = outChannels
        var w = [Float](repeating: 0, count: 4 * cout * cin)
        for ci in 0..<cin {
            for co in 0..<cout {
                for q in 0..<4 { w[(q * cout + co) * cin + ci] = weight.data[(ci * cout + co) * 4 + q] }
            }
        }
        byOffset = Tensor(shape: [4 * cout, cin], data: w)
        self.bias = bias
    }

    /// Upscale `rows x width` input pixels on this thread. `x` holds them channel-major (`[Cin, pixels]`,
    /// channel rows `inStride` apart) or, with `tokens`, as `[pixels, Cin]` rows. Writes
    /// `out[co, 2y+i, 2x+j] = conv + bias[co] (+ skip at the same position)`, output and skip channels
    /// `outStride` and `skipStride` floats apart, rows `2·width` apart; then GELU with `thenGELU`.
    public func apply(_ x: UnsafePointer<Float>, tokens: Bool, inStride: Int = 0, rows: Int, width: Int,
                      skip: UnsafePointer<Float>? = nil, skipStride: Int = 0,
                      into out: UnsafeMutablePointer<Float>, outStride: Int, thenGELU: Bool = false) {
        let pixels = rows * width
        let products = UnsafeMutablePointer<Float>.allocate(capacity: 4 * outChannels * pixels)
        defer { products.deallocate() }
        byOffset.data.withUnsafeBufferPointer { w in
            GEMM.sgemm(transB: tokens, m: 4 * outChannels, n: pixels, k: inChannels, a: w.baseAddress!, lda: inChannels,
                       b: x, ldb: tokens ? inChannels : inStride, c: products, ldc: pixels, serial: true)
        }
        bias.data.withUnsafeBufferPointer { b in
            sam2_interleave2x2(products, outChannels, rows, width, b.baseAddress!, skip, skipStride, out, outStride, thenGELU ? 1 : 0)
        }
    }

    /// The whole map: `[Cin, H, W]` → `[Cout, 2H, 2W]`, split by input rows over the cores.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        let h = x.shape[1], w = x.shape[2], plane = 4 * h * w
        precondition(x.rank == 3 && x.shape[0] == inChannels, "ConvTranspose2x2: input \(x.shape)")
        var out = [Float](unsafeUninitializedCapacity: outChannels * plane) { _, n in n = outChannels * plane }
        x.data.withUnsafeBufferPointer { px in
            out.withUnsafeMutableBufferPointer { po in
                let xp = px.baseAddress!, op = po.baseAddress!
                Parallelism.independentTasks((h + 7) / 8) { t in
                    let y0 = 8 * t, rows = min(8, h - y0)
                    apply(xp + y0 * w, tokens: false, inStride: h * w, rows: rows, width: w,
                          into: op + 4 * y0 * w, outStride: plane)
                }
            }
        }
        return Tensor(shape: [outChannels, 2 * h, 2 * w], data: out)
    }
}
