import Foundation
import SAM2Tensor

/// The position encodings of SAM 2, computed in float32 with the same operations as the
/// official code so they agree to the last few bits.
enum PositionEncoding {
    private static let sineCache = Memo<[Float], Tensor>()

    /// `PositionEmbeddingSine` (normalised, scale 2π) for an `h x w` map: `[numPosFeats, h, w]`,
    /// y channels first, then x; within each, sin/cos interleaved. It depends on the shape only,
    /// so each shape is computed once.
    static func sine(numPosFeats: Int, height h: Int, width w: Int, temperature: Float = 10000) -> Tensor {
        sineCache.value(for: [Float(numPosFeats), Float(h), Float(w), temperature]) {
            computeSine(numPosFeats: numPosFeats, height: h, width: w, temperature: temperature)
        }
    }

    private static func computeSine(numPosFeats: Int, height h: Int, width w: Int, temperature: Float) -> Tensor {
        let npf = numPosFeats / 2
        let scale = Float(2 * Double.pi)
        let eps: Float = 1e-6
        let dimT = (0..<npf).map { k in powf(temperature, 2 * Float(k / 2) / Float(npf)) }
        let ys = (0..<h).map { Float($0 + 1) / (Float(h) + eps) * scale }
        let xs = (0..<w).map { Float($0 + 1) / (Float(w) + eps) * scale }
        var out = [Float](repeating: 0, count: 2 * npf * h * w)
        for k in 0..<npf {
            for y in 0..<h {
                for x in 0..<w {
                    let py = ys[y] / dimT[k], px = xs[x] / dimT[k]
                    out[(k * h + y) * w + x] = k % 2 == 0 ? sinf(py) : cosf(py)
                    out[((npf + k) * h + y) * w + x] = k % 2 == 0 ? sinf(px) : cosf(px)
                }
            }
        }
        return Tensor(shape: [2 * npf, h, w], data: out)
    }

    /// `get_1d_sine_pe`: `[positions.count, dim]`, all sines then all cosines.
    static func sine1D(_ positions: [Float], dim: Int, temperature: Float = 10000) -> Tensor {
        let pe = dim / 2
        let dimT = (0..<pe).map { k in powf(temperature, 2 * Float(k / 2) / Float(pe)) }
        var out = [Float](repeating: 0, count: positions.count * dim)
        for (i, p) in positions.enumerated() {
            for k in 0..<pe {
                out[i * dim + k] = sinf(p / dimT[k])
                out[i * dim + pe + k] = cosf(p / dimT[k])
            }
        }
        return Tensor(shape: [positions.count, dim], data: out)
    }
}

/// `PositionEmbeddingRandom`: random Fourier features of normalised coordinates.
struct RandomFourierEncoding {
    let gaussian: Tensor  // [2, F]

    var numFeats: Int { gaussian.shape[1] }

    /// Encode coordinates already normalised to [0, 1]: `[N, 2F]` as [sin | cos].
    func encode(_ coords: [(x: Float, y: Float)]) -> Tensor {
        let f = numFeats
        let twoPi = Float(2 * Double.pi)
        var out = [Float](repeating: 0, count: coords.count * 2 * f)
        for (i, c) in coords.enumerated() {
            let x = 2 * c.x - 1, y = 2 * c.y - 1
            for j in 0..<f {
                let v = twoPi * (x * gaussian.data[j] + y * gaussian.data[f + j])
                out[i * 2 * f + j] = sinf(v)
                out[i * 2 * f + f + j] = cosf(v)
            }
        }
        return Tensor(shape: [coords.count, 2 * f], data: out)
    }

    /// The dense encoding of an `h x w` grid of pixel centres: `[2F, h, w]`.
    func dense(height h: Int, width w: Int) -> Tensor {
        var coords = [(x: Float, y: Float)]()
        coords.reserveCapacity(h * w)
        for y in 0..<h { for x in 0..<w { coords.append(((Float(x + 1) - 0.5) / Float(w), (Float(y + 1) - 0.5) / Float(h))) } }
        return encode(coords).tokensToCHW(height: h, width: w)
    }
}

/// Axial rotary position encoding (`compute_axial_cis` / `apply_rotary_enc`) for a square token grid.
struct AxialRoPE {
    let cos: [Float]  // [positions, dim/2]
    let sin: [Float]
    let positions: Int
    let pairs: Int

    init(dim: Int, side: Int, theta: Float) {
        let quarter = dim / 4
        let freqs = (0..<quarter).map { i in 1 / powf(theta, Float(4 * i) / Float(dim)) }
        positions = side * side
        pairs = dim / 2
        var c = [Float](repeating: 0, count: positions * pairs), s = c
        for t in 0..<positions {
            let tx = Float(t % side), ty = Float(t / side)
            for i in 0..<quarter {
                let ax = tx * freqs[i], ay = ty * freqs[i]
                c[t * pairs + i] = cosf(ax); s[t * pairs + i] = sinf(ax)
                c[t * pairs + quarter + i] = cosf(ay); s[t * pairs + quarter + i] = sinf(ay)
            }
        }
        cos = c
        sin = s
    }

    /// Rotate the first `count` rows of `x` (`[N, heads*dim]`) in place; row `r` takes position
    /// `r % positions`, which is how keys repeated over several memory frames are encoded.
    func apply(_ x: inout Tensor, rows count: Int, heads: Int) {
        apply(&x, rows: 0..<count, heads: heads)
    }

    /// Rotate rows `range` of `x`, the first of them at position 0 (`apply_rotary_enc_v2` on one
    /// memory frame's 2D latents).
    func apply(_ x: inout Tensor, rows range: Range<Int>, heads: Int) {
        let width = x.shape[1], hd = width / heads
        x.data.withUnsafeMutableBufferPointer { buffer in
            let p = buffer.baseAddress!
            cos.withUnsafeBufferPointer { cosines in
                sin.withUnsafeBufferPointer { sines in
                    parallelChunks(range.count, minimumChunk: 256) { chunk in
                        for r in (range.lowerBound + chunk.lowerBound)..<(range.lowerBound + chunk.upperBound) {
                            let pos = ((r - range.lowerBound) % positions) * pairs
                            for h in 0..<heads {
                                let base = r * width + h * hd
                                for i in 0..<pairs {
                                    let a = p[base + 2 * i], b = p[base + 2 * i + 1]
                                    let c = cosines[pos + i], s = sines[pos + i]
                                    p[base + 2 * i] = a * c - b * s
                                    p[base + 2 * i + 1] = a * s + b * c
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A small thread-safe memo table for values that depend only on a key (position encodings).
final class Memo<Key: Hashable, Value>: @unchecked Sendable {
    private var table = [Key: Value]()
    private let lock = NSLock()

    func value(for key: Key, _ make: () -> Value) -> Value {
        lock.lock()
        if let v = table[key] { lock.unlock(); return v }
        lock.unlock()
        let v = make()
        lock.lock()
        table[key] = v
        lock.unlock()
        return v
    }
}
