import CKernels

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

    /// Resize packed RGB (`height x width x 3`) to `outWidth x outHeight`: horizontal pass first
    /// into an 8-bit intermediate over the rows the vertical pass needs, then the vertical pass
    /// (Pillow's order and integer arithmetic, in C: 26 ms a 720p frame in Swift, ~4 ms there).
    public static func resizeRGB(_ rgb: [UInt8], width: Int, height: Int, outWidth: Int, outHeight: Int) -> [UInt8] {
        let needH = outWidth != width, needV = outHeight != height
        let v = coefficients(inSize: height, outSize: outHeight)
        var src = rgb
        var vBounds = v.bounds
        if needH {
            let h = coefficients(inSize: width, outSize: outWidth)
            let first = v.bounds[0].0
            let last = v.bounds[outHeight - 1].0 + v.bounds[outHeight - 1].1
            if needV { vBounds = v.bounds.map { ($0.0 - first, $0.1) } }
            let rows = needV ? last - first : height, offset = needV ? first : 0
            let bounds = flat(h.bounds)
            src = [UInt8](unsafeUninitializedCapacity: rows * outWidth * 3) { out, n in
                rgb.withUnsafeBufferPointer { s in
                    sam2_resample_horizontal_rgb(s.baseAddress! + offset * width * 3, rows, width, out.baseAddress!, outWidth,
                                                 bounds, h.weights, h.ksize, Int32(precisionBits))
                }
                n = rows * outWidth * 3
            }
        }
        guard needV else { return src }
        let rowBytes = outWidth * 3, bounds = flat(vBounds)
        return [UInt8](unsafeUninitializedCapacity: outHeight * rowBytes) { out, n in
            src.withUnsafeBufferPointer { s in
                sam2_resample_vertical(s.baseAddress!, rowBytes, out.baseAddress!, outHeight, bounds, v.weights, v.ksize,
                                       Int32(precisionBits))
            }
            n = outHeight * rowBytes
        }
    }

    /// Bounds as the C passes take them: first source index and tap count, interleaved.
    private static func flat(_ bounds: [(Int, Int)]) -> [Int32] { bounds.flatMap { [Int32($0.0), Int32($0.1)] } }
}
