import CKernels

/// The per-mask loops of mask post-processing (binary masks as one byte per pixel, row-major):
/// counting, thresholding, bounding boxes and column-major run lengths. The automatic mask
/// generator runs them on thousands of masks per image.
public enum MaskOps {
    /// How many values exceed `t`.
    public static func countAbove(_ x: [Float], _ t: Float) -> Int {
        x.withUnsafeBufferPointer { sam2_count_above($0.baseAddress!, $0.count, t) }
    }

    /// 1 where `x > t`, else 0.
    public static func threshold(_ x: [Float], above t: Float) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: x.count) { out, n in
            x.withUnsafeBufferPointer { p in
                for i in 0..<p.count { out[i] = p[i] > t ? 1 : 0 }
            }
            n = x.count
        }
    }

    /// `batched_mask_to_box` for one mask: `[x0, y0, x1, y1]` of the first and last set column and
    /// row (the right and bottom edges are pixel indices, not +1); `[0, 0, 0, 0]` when empty.
    public static func boundingBox(_ bits: [UInt8], width w: Int, height h: Int) -> [Int] {
        var (left, top, right, bottom) = (w, h, -1, -1)
        bits.withUnsafeBufferPointer { b in
            for y in 0..<h {
                let row = b.baseAddress! + y * w
                var first = -1, last = -1
                for x in 0..<w where row[x] != 0 {
                    if first < 0 { first = x }
                    last = x
                }
                guard first >= 0 else { continue }
                left = min(left, first); right = max(right, last)
                if top > y { top = y }
                bottom = y
            }
        }
        return right < 0 ? [0, 0, 0, 0] : [left, top, right, bottom]
    }

    /// Column-major (Fortran order) run lengths of a `width x height` mask, starting with a
    /// background run (possibly 0), as pycocotools encodes them. The mask may be a `w x h` patch at
    /// (`x0`, `y0`) of an otherwise empty `width x height` one (`uncrop_masks` without the padding).
    public static func rleCounts(_ bits: [UInt8], width w: Int, height h: Int,
                                 placedAt x0: Int = 0, _ y0: Int = 0, inWidth width: Int? = nil, height: Int? = nil) -> [Int] {
        let fullW = width ?? w, fullH = height ?? h
        var counts = [Int]()
        var current: UInt8 = 0
        var run = 0
        bits.withUnsafeBufferPointer { b in
            for x in 0..<fullW {
                let px = x - x0
                guard px >= 0 && px < w else {  // a column outside the patch: all background
                    if current == 0 { run += fullH } else { counts.append(run); run = fullH; current = 0 }
                    continue
                }
                for y in 0..<fullH {
                    let py = y - y0
                    let v: UInt8 = py >= 0 && py < h && b[py * w + px] != 0 ? 1 : 0
                    if v != current { counts.append(run); run = 0; current = v }
                    run += 1
                }
            }
        }
        counts.append(run)
        return counts
    }
}
