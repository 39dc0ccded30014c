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

    /// Depthwise convolution (groups = C), stride 1; `weight` is `[C, 1, k, k]`.
    public static func depthwiseConv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, padding: Int) -> Tensor {
        let c = x.shape[0], h = x.shape[1], w = x.shape[2], k = weight.shape[2]
        precondition(weight.shape[0] == c && weight.shape[1] == 1)
        let ho = h + 2 * padding - k + 1, wo = w + 2 * padding - k + 1
        var out = [Float](repeating: 0, count: c * ho * wo)
        x.data.withUnsafeBufferPointer { src in
            weight.data.withUnsafeBufferPointer { wt in
                out.withUnsafeMutableBufferPointer { dst in
                    for ch in 0..<c {
                        let b = bias?.data[ch] ?? 0
                        let s = src.baseAddress! + ch * h * w
                        let d = dst.baseAddress! + ch * ho * wo
                        let kw = wt.baseAddress! + ch * k * k
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
                    }
                }
            }
        }
        return Tensor(shape: [c, ho, wo], data: out)
    }

    /// `nn.ConvTranspose2d(kernel_size=2, stride=2)`: each input pixel writes its own 2x2 block,
    /// so it is one sgemm followed by a scatter. `weight` is `[Cin, Cout, 2, 2]`.
    public static func convTranspose2x2(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
        convTranspose2x2(x, channelsLast: false, height: x.shape[1], width: x.shape[2], weight: weight, bias: bias)
    }

    /// The same on `[H*W, C]` token rows (the mask decoder's transformer output), saving a transpose.
    public static func convTranspose2x2(tokens x: Tensor, height h: Int, width w: Int, weight: Tensor, bias: Tensor?) -> Tensor {
        convTranspose2x2(x, channelsLast: true, height: h, width: w, weight: weight, bias: bias)
    }

    /// One product `[H*W, Cin] · [Cin, Cout*4]` (every pixel's four outputs), then each output
    /// channel scattered into its 2x2 blocks.
    private static func convTranspose2x2(_ x: Tensor, channelsLast: Bool, height h: Int, width w: Int,
                                         weight: Tensor, bias: Tensor?) -> Tensor {
        let cin = weight.shape[0], cout = weight.shape[1]
        precondition(weight.shape[2] == 2 && weight.shape[3] == 2 && x.count == cin * h * w, "convTranspose2x2: \(x.shape) vs \(weight.shape)")
        let n = h * w, m = cout * 4
        var tmp = [Float](unsafeUninitializedCapacity: n * m) { _, c in c = n * m }
        weight.data.withUnsafeBufferPointer { pw in
            x.data.withUnsafeBufferPointer { px in
                tmp.withUnsafeMutableBufferPointer { pt in
                    GEMM.sgemm(transA: !channelsLast, m: n, n: m, k: cin, a: px.baseAddress!, lda: channelsLast ? cin : n,
                               b: pw.baseAddress!, ldb: m, c: pt.baseAddress!, ldc: m)
                }
            }
        }
        let wo = 2 * w
        let out = [Float](unsafeUninitializedCapacity: cout * 4 * n) { o, count in
            tmp.withUnsafeBufferPointer { t in
                let tp = t.baseAddress!, op = o.baseAddress!
                (bias?.data ?? [Float](repeating: 0, count: cout)).withUnsafeBufferPointer { pb in
                    let bp = pb.baseAddress!
                    // By input row: each pixel's outputs are read once, contiguously.
                    parallelFor(h) { y in
                        for xx in 0..<w {
                            let v = tp + (y * w + xx) * m  // per channel: (i, j) = (0,0) (0,1) (1,0) (1,1)
                            for co in 0..<cout {
                                let top = op + co * 4 * n + 2 * y * wo + 2 * xx, b = bp[co], u = v + 4 * co
                                top[0] = u[0] + b; top[1] = u[1] + b
                                top[wo] = u[2] + b; top[wo + 1] = u[3] + b
                            }
                        }
                    }
                }
            }
            count = cout * 4 * n
        }
        return Tensor(shape: [cout, 2 * h, 2 * w], data: out)
    }
}

extension Tensor {
    /// 2x2 max-pool with stride 2 (floor) over the spatial dims of `[B, H, W, C]` channel-last tokens.
    public func maxPool2x2ChannelsLast() -> Tensor {
        let b = shape[0], h = shape[1], w = shape[2], c = shape[3]
        let ho = h / 2, wo = w / 2
        var out = [Float](repeating: 0, count: b * ho * wo * c)
        data.withUnsafeBufferPointer { s in
            out.withUnsafeMutableBufferPointer { d in
                for bi in 0..<b {
                    for y in 0..<ho {
                        for x in 0..<wo {
                            let o = ((bi * ho + y) * wo + x) * c
                            let i00 = ((bi * h + 2 * y) * w + 2 * x) * c
                            let i01 = i00 + c, i10 = i00 + w * c, i11 = i10 + c
                            for ch in 0..<c {
                                d[o + ch] = Swift.max(Swift.max(s[i00 + ch], s[i01 + ch]), Swift.max(s[i10 + ch], s[i11 + ch]))
                            }
                        }
                    }
                }
            }
        }
        return Tensor(shape: [b, ho, wo, c], data: out)
    }
}
