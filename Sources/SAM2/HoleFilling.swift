import SAM2Tensor

/// `fill_holes_in_mask_scores` on the CPU: background regions (logits <= 0, 8-connected like
/// OpenCV's connected components in the official CUDA kernel) of at most `maxArea` pixels
/// inside a mask become foreground (logit 0.1), as the official post-processing does.
public enum HoleFilling {
    public static func fill(_ logits: Tensor, maxArea: Int) -> Tensor {
        let h = logits.shape[0], w = logits.shape[1]
        var label = [Int](repeating: -1, count: h * w)
        var out = logits
        var stack = [Int]()
        for start in 0..<(h * w) where label[start] < 0 && logits.data[start] <= 0 {
            // Flood-fill one background component.
            var members = [start]
            label[start] = start
            stack.append(start)
            while let p = stack.popLast() {
                let y = p / w, x = p % w
                for dy in -1...1 {
                    for dx in -1...1 where dy != 0 || dx != 0 {
                        let ny = y + dy, nx = x + dx
                        guard ny >= 0, ny < h, nx >= 0, nx < w else { continue }
                        let q = ny * w + nx
                        if label[q] < 0 && logits.data[q] <= 0 {
                            label[q] = start
                            members.append(q)
                            stack.append(q)
                        }
                    }
                }
            }
            if members.count <= maxArea {
                for p in members { out.data[p] = 0.1 }
            }
        }
        return out
    }
}
