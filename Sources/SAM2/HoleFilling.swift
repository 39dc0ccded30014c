import SAM2Tensor

/// The official post-processing of low-resolution mask logits on the CPU. The official code
/// labels connected components with a CUDA kernel (`sam2._C.get_connected_componnets`,
/// 8-connectivity) and silently skips this step without CUDA; here it runs everywhere.
public enum HoleFilling {
    /// `fill_holes_in_mask_scores` (video predictor): background regions (logits <= 0) of at most
    /// `maxArea` pixels become foreground (logit 0.1). Regions touching the border count too.
    public static func fill(_ logits: Tensor, maxArea: Int) -> Tensor {
        var out = logits
        let (h, w) = (logits.shape[logits.shape.count - 2], logits.shape[logits.shape.count - 1])
        for plane in 0..<(logits.count / (h * w)) {
            let base = plane * h * w
            let small = smallComponents(width: w, height: h, maxArea: maxArea) { logits.data[base + $0] <= 0 }
            for p in small { out.data[base + p] = 0.1 }
        }
        return out
    }

    /// `SAM2Transforms.postprocess_masks`' first step (image predictor): on each `[h, w]` plane, holes
    /// (components of logits <= `threshold` with area <= `maxHoleArea`) get `threshold + 10` and
    /// sprinkles (components of logits > `threshold` with area <= `maxSprinkleArea`) `threshold - 10`.
    /// Both sets are found on the input logits, as the official code does (sprinkles are not looked
    /// for in the hole-filled mask).
    public static func fillHolesAndSprinkles(_ logits: Tensor, threshold: Float, maxHoleArea: Int, maxSprinkleArea: Int) -> Tensor {
        var out = logits
        let (h, w) = (logits.shape[logits.shape.count - 2], logits.shape[logits.shape.count - 1])
        for plane in 0..<(logits.count / (h * w)) {
            let base = plane * h * w
            let holes = maxHoleArea > 0
                ? smallComponents(width: w, height: h, maxArea: maxHoleArea) { logits.data[base + $0] <= threshold } : []
            let sprinkles = maxSprinkleArea > 0
                ? smallComponents(width: w, height: h, maxArea: maxSprinkleArea) { logits.data[base + $0] > threshold } : []
            for p in holes { out.data[base + p] = threshold + 10 }
            for p in sprinkles { out.data[base + p] = threshold - 10 }
        }
        return out
    }

    /// The pixels (row-major indices) of every 8-connected component of member pixels whose area is
    /// at most `maxArea`.
    static func smallComponents(width w: Int, height h: Int, maxArea: Int, isMember: (Int) -> Bool) -> [Int] {
        let (labels, areas) = connectedComponents(width: w, height: h, isMember: isMember)
        var out = [Int]()
        for p in 0..<(w * h) where labels[p] >= 0 && areas[Int(labels[p])] <= maxArea { out.append(p) }
        return out
    }

    /// 8-connected components of the member pixels of a `h x w` grid: a label per pixel (-1 for
    /// non-members, else 0, 1, ... in order of first pixel) and each label's area.
    public static func connectedComponents(width w: Int, height h: Int, isMember: (Int) -> Bool) -> (labels: [Int32], areas: [Int]) {
        var labels = [Int32](repeating: -1, count: w * h)
        var member = [Bool](repeating: false, count: w * h)
        for p in 0..<(w * h) { member[p] = isMember(p) }
        var areas = [Int]()
        var stack = [Int]()
        for start in 0..<(w * h) where member[start] && labels[start] < 0 {
            let label = Int32(areas.count)
            var area = 0
            labels[start] = label
            stack.append(start)
            while let p = stack.popLast() {
                area += 1
                let y = p / w, x = p % w
                for ny in max(y - 1, 0)...min(y + 1, h - 1) {
                    for nx in max(x - 1, 0)...min(x + 1, w - 1) {
                        let q = ny * w + nx
                        if member[q] && labels[q] < 0 {
                            labels[q] = label
                            stack.append(q)
                        }
                    }
                }
            }
            areas.append(area)
        }
        return (labels, areas)
    }
}
