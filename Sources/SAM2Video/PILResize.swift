/// Pillow's `Image.resize(size)` (bicubic, a = -0.5, antialiased when shrinking) on 8-bit RGB,
/// reproduced to the bit: the official loader resizes every frame this way, and with it our model
/// inputs equal the official ones exactly (swscale's bicubic differs by about one grey level,
/// which moves masks measurably).
public enum PILResize {
    static let precisionBits = 32 - 8 - 2

    static func bicubic(_ x: Double) -> Double {
        let a = -0.5
        let x = abs(x)
        if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
        if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
        return 0
    }

    /// `precompute_coeffs` + `normalize_coeffs_8bpc`: per output pixel, the first source pixel,
    /// the tap count, and fixed-point weights.
    static func coefficients(inSize: Int, outSize: Int) -> (ksize: Int, bounds: [(Int, Int)], weights: [Int32]) {
        let scale = Double(inSize) / Double(outSize)
        let filterScale = max(scale, 1)
        let support = 2.0 * filterScale
        let ksize = Int(support.rounded(.up)) * 2 + 1
        var bounds = [(Int, Int)]()
        var weights = [Int32](repeating: 0, count: outSize * ksize)
        for xx in 0..<outSize {
            let center = (Double(xx) + 0.5) * scale
            let ss = 1 / filterScale
            let xmin = max(Int(center - support + 0.5), 0)
            let xmax = min(Int(center + support + 0.5), inSize) - xmin
            var k = [Double](repeating: 0, count: ksize)
            var ww = 0.0
            for x in 0..<max(xmax, 0) {
                let w = bicubic((Double(x + xmin) - center + 0.5) * ss)
                k[x] = w
                ww += w
            }
            for x in 0..<max(xmax, 0) where ww != 0 { k[x] /= ww }
            let one = Double(1 << precisionBits)
            for x in 0..<ksize {
                weights[xx * ksize + x] = Int32(k[x] < 0 ? (-0.5 + k[x] * one) : (0.5 + k[x] * one))
            }
            bounds.append((xmin, max(xmax, 0)))
        }
        return (ksize, bounds, weights)
    }

    @inline(__always)
    static func clip8(_ v: Int32) -> UInt8 {
        let s = v >> Int32(precisionBits)
        return s < 0 ? 0 : (s > 255 ? 255 : UInt8(s))
    }

    /// Resize packed RGB (`height x width x 3`) to `outWidth x outHeight`: horizontal pass first
    /// into an 8-bit intermediate over the rows the vertical pass needs, then the vertical pass.
    public static func resizeRGB(_ rgb: [UInt8], width: Int, height: Int, outWidth: Int, outHeight: Int) -> [UInt8] {
        let needH = outWidth != width, needV = outHeight != height
        let v = coefficients(inSize: height, outSize: outHeight)
        let h = coefficients(inSize: width, outSize: outWidth)
        let half = Int32(1 << (precisionBits - 1))
        var src = rgb, srcW = width, srcRows = height
        var vBounds = v.bounds
        if needH {
            let first = v.bounds[0].0
            let last = v.bounds[outHeight - 1].0 + v.bounds[outHeight - 1].1
            if needV { vBounds = v.bounds.map { ($0.0 - first, $0.1) } }
            let rows = needV ? last - first : height
            let offset = needV ? first : 0
            var tmp = [UInt8](repeating: 0, count: rows * outWidth * 3)
            rgb.withUnsafeBufferPointer { s in
                h.weights.withUnsafeBufferPointer { k in
                    for yy in 0..<rows {
                        let row = (yy + offset) * width * 3
                        for xx in 0..<outWidth {
                            let (xmin, xmax) = h.bounds[xx]
                            var s0 = half, s1 = half, s2 = half
                            for x in 0..<xmax {
                                let w = k[xx * h.ksize + x]
                                let p = row + (x + xmin) * 3
                                s0 &+= Int32(s[p]) &* w; s1 &+= Int32(s[p + 1]) &* w; s2 &+= Int32(s[p + 2]) &* w
                            }
                            let o = (yy * outWidth + xx) * 3
                            tmp[o] = clip8(s0); tmp[o + 1] = clip8(s1); tmp[o + 2] = clip8(s2)
                        }
                    }
                }
            }
            src = tmp
            srcW = outWidth
            srcRows = rows
        }
        guard needV else { return src }
        _ = srcRows
        var out = [UInt8](repeating: 0, count: outHeight * srcW * 3)
        src.withUnsafeBufferPointer { s in
            v.weights.withUnsafeBufferPointer { k in
                for yy in 0..<outHeight {
                    let (ymin, ymax) = vBounds[yy]
                    for xx in 0..<srcW {
                        var s0 = half, s1 = half, s2 = half
                        for y in 0..<ymax {
                            let w = k[yy * v.ksize + y]
                            let p = ((y + ymin) * srcW + xx) * 3
                            s0 &+= Int32(s[p]) &* w; s1 &+= Int32(s[p + 1]) &* w; s2 &+= Int32(s[p + 2]) &* w
                        }
                        let o = (yy * srcW + xx) * 3
                        out[o] = clip8(s0); out[o + 1] = clip8(s1); out[o + 2] = clip8(s2)
                    }
                }
            }
        }
        return out
    }
}
