import Foundation

/// Resampling of `[C, H, W]` maps, matching `F.interpolate` (align_corners=False) tap for tap:
/// the same source coordinates, weights and summation order (height taps outer, width taps inner).
public enum Interpolate {
    /// `mode="bilinear", align_corners=False`.
    public static func bilinear(_ x: Tensor, height oh: Int, width ow: Int) -> Tensor {
        let c = x.shape[0], ih = x.shape[1], iw = x.shape[2]
        if ih == oh && iw == ow { return x }
        var out = [Float](unsafeUninitializedCapacity: c * oh * ow) { _, n in n = c * oh * ow }
        out.withUnsafeMutableBufferPointer { d in
            let dp = d.baseAddress!
            forEachBilinearRow(x, height: oh, width: ow) { row, compute in compute(dp + row * ow) }
        }
        return Tensor(shape: [c, oh, ow], data: out)
    }

    /// `bilinear(x) > threshold` for a one-channel map, as bytes (1 or 0): a mask at another
    /// resolution without writing out the upsampled logits.
    public static func bilinearMask(_ x: Tensor, height oh: Int, width ow: Int, threshold: Float = 0) -> [UInt8] {
        precondition(x.rank == 3 && x.shape[0] == 1, "bilinearMask: one channel, got \(x.shape)")
        var out = [UInt8](unsafeUninitializedCapacity: oh * ow) { _, n in n = oh * ow }
        out.withUnsafeMutableBufferPointer { d in
            let dp = d.baseAddress!
            forEachBilinearRow(x, height: oh, width: ow) { row, compute in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: ow) { t in
                    compute(t.baseAddress!)
                    for i in 0..<ow { dp[row * ow + i] = t[i] > threshold ? 1 : 0 }
                }
            }
        }
        return out
    }

    /// Hands each output row (channel·oh + y) of `mode="bilinear", align_corners=False` to `body`
    /// with a function that computes it into a buffer, rows split over the cores.
    private static func forEachBilinearRow(_ x: Tensor, height oh: Int, width ow: Int,
                                           _ body: (Int, (UnsafeMutablePointer<Float>) -> Void) -> Void) {
        let c = x.shape[0], ih = x.shape[1], iw = x.shape[2]
        let sh = Float(ih) / Float(oh), sw = Float(iw) / Float(ow)
        func taps(_ o: Int, _ scale: Float, _ n: Int) -> (Int, Int, Float, Float) {
            let real = max(scale * (Float(o) + 0.5) - 0.5, 0)
            let i0 = Int(real)
            let i1 = i0 < n - 1 ? i0 + 1 : i0
            let l1 = min(max(real - Float(i0), 0), 1)
            return (i0, i1, 1 - l1, l1)
        }
        let ty = (0..<oh).map { taps($0, sh, ih) }
        let tx = (0..<ow).map { taps($0, sw, iw) }
        // Each input row interpolated along x once (upsampling reuses it for several output
        // rows); then every output row is a two-term blend of those, in the same arithmetic.
        let across = UnsafeMutablePointer<Float>.allocate(capacity: c * ih * ow)
        defer { across.deallocate() }
        x.data.withUnsafeBufferPointer { s in
            tx.withUnsafeBufferPointer { txp in
                parallelFor(c * ih, minimumPerThread: max(1, 16384 / max(ow, 1))) { row in
                    let r = s.baseAddress! + row * iw, d = across + row * ow
                    for ox in 0..<ow {
                        let (x0, x1, wx0, wx1) = txp[ox]
                        d[ox] = wx0 * r[x0] + wx1 * r[x1]
                    }
                }
            }
        }
        parallelFor(c * oh, minimumPerThread: max(1, 16384 / max(ow, 1))) { row in
            let ch = row / oh, oy = row % oh
            let (y0, y1, wy0, wy1) = ty[oy]
            let a = across + (ch * ih + y0) * ow, b = across + (ch * ih + y1) * ow
            body(row) { drow in
                for ox in 0..<ow { drow[ox] = a[ox] * wy0 + b[ox] * wy1 }
            }
        }
    }

    /// `mode="bilinear", align_corners=False, antialias=True`: a triangle filter widened by the
    /// downscale factor; width pass first, then height, like PyTorch's separable CPU kernel.
    public static func bilinearAntialiased(_ x: Tensor, height oh: Int, width ow: Int) -> Tensor {
        let c = x.shape[0], ih = x.shape[1], iw = x.shape[2]
        if ih == oh && iw == ow { return x }
        func weights(input: Int, output: Int) -> [(Int, [Float])] {
            let scale = Float(input) / Float(output)
            let support: Float = scale >= 1 ? scale : 1
            let invscale: Float = scale >= 1 ? 1 / scale : 1
            return (0..<output).map { i in
                let center = scale * (Float(i) + 0.5)
                let xmin = max(Int(center - support + 0.5), 0)
                let xsize = min(Int(center + support + 0.5), input) - xmin
                var w = (0..<max(xsize, 0)).map { j -> Float in
                    let t = abs((Float(j + xmin) - center + 0.5) * invscale)
                    return t < 1 ? 1 - t : 0
                }
                let total = w.reduce(0, +)
                if total != 0 { w = w.map { $0 / total } }
                return (xmin, w)
            }
        }
        var cur = x
        if ow != iw {
            let wx = weights(input: iw, output: ow)
            var out = [Float](repeating: 0, count: c * ih * ow)
            for r in 0..<(c * ih) {
                for o in 0..<ow {
                    let (x0, w) = wx[o]
                    var acc: Float = 0
                    for j in 0..<w.count { acc += cur.data[r * iw + x0 + j] * w[j] }
                    out[r * ow + o] = acc
                }
            }
            cur = Tensor(shape: [c, ih, ow], data: out)
        }
        if oh != ih {
            let wy = weights(input: ih, output: oh)
            let w2 = cur.shape[2]
            var out = [Float](repeating: 0, count: c * oh * w2)
            for ch in 0..<c {
                for o in 0..<oh {
                    let (y0, w) = wy[o]
                    for xx in 0..<w2 {
                        var acc: Float = 0
                        for j in 0..<w.count { acc += cur.data[(ch * ih + y0 + j) * w2 + xx] * w[j] }
                        out[(ch * oh + o) * w2 + xx] = acc
                    }
                }
            }
            cur = Tensor(shape: [c, oh, w2], data: out)
        }
        return cur
    }

    /// `mode="bicubic", align_corners=False` (A = -0.75, border-clamped taps).
    public static func bicubic(_ x: Tensor, height oh: Int, width ow: Int) -> Tensor {
        let c = x.shape[0], ih = x.shape[1], iw = x.shape[2]
        let a: Float = -0.75
        func cc1(_ t: Float) -> Float { ((a + 2) * t - (a + 3)) * t * t + 1 }
        func cc2(_ t: Float) -> Float { ((a * t - 5 * a) * t + 8 * a) * t - 4 * a }
        func taps(_ o: Int, _ inSize: Int, _ outSize: Int) -> ([Int], [Float]) {
            let scale = Float(inSize) / Float(outSize)
            let real = scale * (Float(o) + 0.5) - 0.5
            let i = Int(floorf(real))
            let t = real - Float(i)
            let w = [cc2(t + 1), cc1(t), cc1(1 - t), cc2(2 - t)]
            let idx = (-1...2).map { min(max(i + $0, 0), inSize - 1) }
            return (idx, w)
        }
        let ty = (0..<oh).map { taps($0, ih, oh) }
        let tx = (0..<ow).map { taps($0, iw, ow) }
        var out = [Float](repeating: 0, count: c * oh * ow)
        for ch in 0..<c {
            let base = ch * ih * iw
            for oy in 0..<oh {
                let (yi, wy) = ty[oy]
                for ox in 0..<ow {
                    let (xi, wx) = tx[ox]
                    var acc: Float = 0
                    for p in 0..<4 {
                        let row = base + yi[p] * iw
                        var r: Float = 0
                        for q in 0..<4 { r += x.data[row + xi[q]] * wx[q] }
                        acc += r * wy[p]
                    }
                    out[(ch * oh + oy) * ow + ox] = acc
                }
            }
        }
        return Tensor(shape: [c, oh, ow], data: out)
    }

    /// `mode="nearest", scale_factor=2`.
    public static func nearest2x(_ x: Tensor) -> Tensor {
        let c = x.shape[0], h = x.shape[1], w = x.shape[2]
        var out = [Float](repeating: 0, count: c * 4 * h * w)
        for ch in 0..<c {
            for y in 0..<(2 * h) {
                for xx in 0..<(2 * w) {
                    out[(ch * 2 * h + y) * 2 * w + xx] = x.data[(ch * h + y / 2) * w + xx / 2]
                }
            }
        }
        return Tensor(shape: [c, 2 * h, 2 * w], data: out)
    }
}
