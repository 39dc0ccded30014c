import CKernels
/// A dense, row-major float32 tensor: a shape and a flat array of values.
///
/// Value semantics (copy on write through `[Float]`); the model works on batch 1
/// throughout, so most tensors are `[C, H, W]` feature maps or `[N, C]` token rows.
public struct Tensor: Equatable, CustomStringConvertible {
    public var shape: [Int]
    public var data: [Float]

    public init(shape: [Int], data: [Float]) {
        precondition(shape.reduce(1, *) == data.count,
                     "shape \(shape) does not match \(data.count) values")
        self.shape = shape
        self.data = data
    }

    public init(zeros shape: [Int]) {
        self.init(shape: shape, data: [Float](repeating: 0, count: shape.reduce(1, *)))
    }

    public init(repeating value: Float, shape: [Int]) {
        self.init(shape: shape, data: [Float](repeating: value, count: shape.reduce(1, *)))
    }

    public var count: Int { data.count }
    public var rank: Int { shape.count }

    public var description: String { "Tensor\(shape)" }

    /// The same values under another shape (one dimension may be -1).
    public func reshaped(_ newShape: [Int]) -> Tensor {
        var s = newShape
        if let i = s.firstIndex(of: -1) {
            let known = s.enumerated().filter { $0.offset != i }.map(\.element).reduce(1, *)
            s[i] = count / max(known, 1)
        }
        return Tensor(shape: s, data: data)
    }

    /// Row `i` of a 2-D tensor.
    public func row(_ i: Int) -> [Float] {
        let n = shape[shape.count - 1]
        return Array(data[(i * n)..<((i + 1) * n)])
    }

    /// Rows `range` of a 2-D (or higher, along dim 0) tensor.
    public func rows(_ range: Range<Int>) -> Tensor {
        let n = count / shape[0]
        var s = shape
        s[0] = range.count
        return Tensor(shape: s, data: Array(data[(range.lowerBound * n)..<(range.upperBound * n)]))
    }

    /// Columns `range` of a `[rows, n]` tensor.
    public func columns(_ range: Range<Int>) -> Tensor {
        precondition(rank == 2 && range.lowerBound >= 0 && range.upperBound <= shape[1], "columns \(range) of \(shape)")
        let rows = shape[0], n = shape[1], w = range.count
        let out = [Float](unsafeUninitializedCapacity: rows * w) { o, count in
            data.withUnsafeBufferPointer { d in
                for r in 0..<rows { (o.baseAddress! + r * w).update(from: d.baseAddress! + r * n + range.lowerBound, count: w) }
            }
            count = rows * w
        }
        return Tensor(shape: [rows, w], data: out)
    }

    /// Concatenate along dim 0.
    public static func concatRows(_ parts: [Tensor]) -> Tensor {
        precondition(!parts.isEmpty)
        var s = parts[0].shape
        s[0] = parts.reduce(0) { $0 + $1.shape[0] }
        var d = [Float]()
        d.reserveCapacity(s.reduce(1, *))
        for p in parts {
            precondition(Array(p.shape.dropFirst()) == Array(s.dropFirst()), "concat shape mismatch")
            d.append(contentsOf: p.data)
        }
        return Tensor(shape: s, data: d)
    }

    /// Read-only pointers to several tensors' values at once, for kernels with many inputs.
    public static func withPointers<R>(_ tensors: [Tensor], _ body: ([UnsafePointer<Float>]) -> R) -> R {
        func bind(_ i: Int, _ bound: [UnsafePointer<Float>]) -> R {
            if i == tensors.count { return body(bound) }
            return tensors[i].data.withUnsafeBufferPointer { p in
                precondition(p.baseAddress != nil, "withPointers: empty tensor")
                return bind(i + 1, bound + [p.baseAddress!])
            }
        }
        return bind(0, [])
    }

    // MARK: elementwise

    /// One pass writing the sum (no copy of `a` first), split over the cores when large.
    public static func + (a: Tensor, b: Tensor) -> Tensor {
        precondition(a.shape == b.shape, "add: \(a.shape) vs \(b.shape)")
        if a.count == 0 { return a }
        let out = [Float](unsafeUninitializedCapacity: a.count) { o, n in
            a.data.withUnsafeBufferPointer { pa in
                b.data.withUnsafeBufferPointer { pb in
                    let op = o.baseAddress!, ap = pa.baseAddress!, bp = pb.baseAddress!
                    parallelChunks(a.count, minimumChunk: 1 << 16) { r in
                        sam2_add(op + r.lowerBound, ap + r.lowerBound, bp + r.lowerBound, r.count)
                    }
                }
            }
            n = a.count
        }
        return Tensor(shape: a.shape, data: out)
    }

    /// `(a + b, (a + b) + c)` in one pass (each chunk of the sum is reused while in cache).
    public static func sums(_ a: Tensor, _ b: Tensor, thenPlus c: Tensor) -> (Tensor, Tensor) {
        precondition(a.shape == b.shape && a.shape == c.shape, "add: \(a.shape) vs \(b.shape) vs \(c.shape)")
        var withC = [Float](unsafeUninitializedCapacity: a.count) { _, n in n = a.count }
        let sum = [Float](unsafeUninitializedCapacity: a.count) { o, n in
            withC.withUnsafeMutableBufferPointer { w in
                withPointers([a, b, c]) { p in
                    let op = o.baseAddress!, wp = w.baseAddress!
                    parallelChunks(a.count, minimumChunk: 1 << 16) { r in
                        let i = r.lowerBound
                        sam2_add_then_add(op + i, wp + i, p[0] + i, p[1] + i, p[2] + i, r.count)
                    }
                }
            }
            n = a.count
        }
        return (Tensor(shape: a.shape, data: sum), Tensor(shape: a.shape, data: withC))
    }

    public static func += (a: inout Tensor, b: Tensor) {
        precondition(a.shape == b.shape, "add: \(a.shape) vs \(b.shape)")
        if a.count == 0 { return }
        a.data.withUnsafeMutableBufferPointer { o in
            b.data.withUnsafeBufferPointer { pb in
                let op = o.baseAddress!, bp = pb.baseAddress!
                parallelChunks(o.count, minimumChunk: 1 << 16) { r in
                    sam2_add(op + r.lowerBound, op + r.lowerBound, bp + r.lowerBound, r.count)
                }
            }
        }
    }

    /// `self + scale * other`.
    public func adding(_ other: Tensor, scaledBy scale: Float) -> Tensor {
        precondition(shape == other.shape)
        var out = self
        out.data.withUnsafeMutableBufferPointer { o in
            other.data.withUnsafeBufferPointer { b in
                for i in 0..<o.count { o[i] += scale * b[i] }
            }
        }
        return out
    }

    public func map(_ f: (Float) -> Float) -> Tensor {
        Tensor(shape: shape, data: data.map(f))
    }

    /// Add a per-row vector to every row of a `[N, C]` tensor (broadcast over rows).
    public func addingRow(_ v: [Float]) -> Tensor {
        let c = shape[shape.count - 1]
        precondition(v.count == c, "addingRow: \(v.count) vs \(c)")
        if count == 0 { return self }
        let out = [Float](unsafeUninitializedCapacity: count) { o, n in
            data.withUnsafeBufferPointer { pa in
                v.withUnsafeBufferPointer { pv in
                    let op = o.baseAddress!, ap = pa.baseAddress!, vp = pv.baseAddress!
                    parallelChunks(count / c, minimumChunk: max(1, (1 << 16) / c)) { rows in
                        for r in rows { for j in 0..<c { op[r * c + j] = ap[r * c + j] + vp[j] } }
                    }
                }
            }
            n = count
        }
        return Tensor(shape: shape, data: out)
    }

    /// Add a per-channel value to a `[C, H, W]` map.
    public func addingPerChannel(_ v: [Float]) -> Tensor {
        let c = shape[0], hw = count / c
        precondition(v.count == c)
        var out = self
        out.data.withUnsafeMutableBufferPointer { o in
            for ch in 0..<c { for i in 0..<hw { o[ch * hw + i] += v[ch] } }
        }
        return out
    }

    // MARK: layout

    /// Transpose a 2-D tensor.
    public func transposed() -> Tensor {
        precondition(rank == 2)
        let r = shape[0], c = shape[1]
        let out = [Float](unsafeUninitializedCapacity: count) { o, n in
            data.withUnsafeBufferPointer { s in
                let sp = s.baseAddress!, op = o.baseAddress!
                // Blocked so both sides stay in cache; row blocks shared among the cores.
                let bs = 32
                parallelFor((r + bs - 1) / bs, minimumPerThread: max(1, 8192 / max(c * bs, 1))) { bi in
                    let i0 = bi * bs
                    for j0 in stride(from: 0, to: c, by: bs) {
                        for i in i0..<min(i0 + bs, r) {
                            for j in j0..<min(j0 + bs, c) { op[j * r + i] = sp[i * c + j] }
                        }
                    }
                }
            }
            n = count
        }
        return Tensor(shape: [c, r], data: out)
    }

    /// `[C, H, W]` feature map to `[H*W, C]` token rows.
    public func chwToTokens() -> Tensor {
        precondition(rank == 3)
        return reshaped([shape[0], shape[1] * shape[2]]).transposed()
    }

    /// `[H*W, C]` token rows to a `[C, H, W]` feature map.
    public func tokensToCHW(height h: Int, width w: Int) -> Tensor {
        precondition(rank == 2 && shape[0] == h * w)
        return transposed().reshaped([shape[1], h, w])
    }

    /// Channel `c` of a `[C, ...]` tensor as a flat array.
    public func channel(_ c: Int) -> [Float] {
        let n = count / shape[0]
        return Array(data[(c * n)..<((c + 1) * n)])
    }
}

/// Round float32 values to bfloat16 (round to nearest, ties to even) and back,
/// as the official predictor does when it stores memory features.
public func roundToBFloat16(_ x: Float) -> Float {
    if x.isNaN { return x }
    let bits = x.bitPattern
    let lsb = (bits >> 16) & 1
    let rounded = bits &+ 0x7FFF &+ lsb
    return Float(bitPattern: rounded & 0xFFFF_0000)
}
