import CKernels

/// Convolutions on `[C, H, W]` maps (batch 1), as `nn.Conv2d` / `nn.ConvTranspose2d` compute them.
public enum Conv {
    /// Dense 2-D convolution (groups = 1): im2col, then one sgemm.
    /// `weight` is `[Cout, Cin, kh, kw]`.
    public static func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?,
                              stride: Int = 1, padding: Int = 0) -> Tensor {
        let cin = x.shape[0], h = x.shape[1], w = x.shape[2]
        let cout = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3]
        precondition(weight.shape[1] == cin, "conv2d: input \(x.shape) vs weight \(weight.shape)")
        let ho = (h + 2 * padding - kh) / stride + 1
        let wo = (w + 2 * padding - kw) / stride + 1
        let kdim = cin * kh * kw, n = ho * wo

        // A 1x1, stride-1 convolution needs no im2col: the map already is the column matrix.
        let cols: [Float]
        if kh == 1 && kw == 1 && stride == 1 && padding == 0 {
            cols = x.data
        } else {
            var c = [Float](repeating: 0, count: kdim * n)
            x.data.withUnsafeBufferPointer { src in
                c.withUnsafeMutableBufferPointer { dst in
                    for ci in 0..<cin {
                        for ky in 0..<kh {
                            for kx in 0..<kw {
                                let row = (ci * kh + ky) * kw + kx
                                let d = dst.baseAddress! + row * n
                                for oy in 0..<ho {
                                    let iy = oy * stride - padding + ky
                                    if iy < 0 || iy >= h { continue }
                                    let srow = src.baseAddress! + (ci * h + iy) * w
                                    let drow = d + oy * wo
                                    for ox in 0..<wo {
                                        let ix = ox * stride - padding + kx
                                        if ix >= 0 && ix < w { drow[ox] = srow[ix] }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            cols = c
        }
        var out = [Float](repeating: 0, count: cout * n)
        if let bias {
            for co in 0..<cout { let b = bias.data[co]; for i in 0..<n { out[co * n + i] = b } }
        }
        weight.data.withUnsafeBufferPointer { pw in
            cols.withUnsafeBufferPointer { pc in
                out.withUnsafeMutableBufferPointer { po in
                    GEMM.sgemm(m: cout, n: n, k: kdim, a: pw.baseAddress!, lda: kdim,
                               b: pc.baseAddress!, ldb: n, beta: bias == nil ? 0 : 1,
                               c: po.baseAddress!, ldc: n)
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
        let c = x.shape[0], h = x.shape[1], w = x.shape[2], k = weight.shape[2]
        precondition(weight.shape[0] == c && weight.shape[1] == 1)
        let ho = (h + 2 * padding - k) / stride + 1, wo = (w + 2 * padding - k) / stride + 1
        var out = [Float](repeating: 0, count: c * ho * wo)
        x.data.withUnsafeBufferPointer { src in
            weight.data.withUnsafeBufferPointer { wt in
                out.withUnsafeMutableBufferPointer { dst in
                    let s0 = src.baseAddress!, w0 = wt.baseAddress!, d0 = dst.baseAddress!
                    parallelFor(c) { ch in
                        let s = s0 + ch * h * w, kw = w0 + ch * k * k, d = d0 + ch * ho * wo
                        let b = bias?.data[ch] ?? 0
                        if stride == 1 {
                            // Whole rows per tap: unit-stride loops the compiler vectorises.
                            for i in 0..<(ho * wo) { d[i] = b }
                            for ky in 0..<k {
                                for kx in 0..<k {
                                    let wv = kw[ky * k + kx]
                                    for oy in 0..<ho {
                                        let iy = oy - padding + ky
                                        if iy < 0 || iy >= h { continue }
                                        let x0 = max(0, padding - kx), x1 = min(wo, w + padding - kx)
                                        if x0 >= x1 { continue }
                                        let srow = s + iy * w - padding + kx
                                        let drow = d + oy * wo
                                        for ox in x0..<x1 { drow[ox] += wv * srow[ox] }
                                    }
                                }
                            }
                        } else {
                            // Strided (RepViT's spatial downsampling): one output at a time.
                            for oy in 0..<ho {
                                for ox in 0..<wo {
                                    var acc: Float = 0
                                    for ky in 0..<k {
                                        let iy = oy * stride - padding + ky
                                        if iy < 0 || iy >= h { continue }
                                        for kx in 0..<k {
                                            let ix = ox * stride - padding + kx
                                            if ix >= 0 && ix < w { acc += kw[ky * k + kx] * s[iy * w + ix] }
                                        }
                                    }
                                    d[oy * wo + ox] = acc + b
                                }
                            }
                        }
                    }
                }
            }
        }
        return Tensor(shape: [c, ho, wo], data: out)
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
