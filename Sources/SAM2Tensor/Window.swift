/// Hiera's window partitioning of a `[H, W, C]` token map (zero padding on the bottom/right).
public enum Window {
    /// `[H, W, C]` → `[nWindows, ws, ws, C]`, windows in row-major order; also returns the padded size.
    public static func partition(_ x: Tensor, size ws: Int) -> (windows: Tensor, paddedH: Int, paddedW: Int) {
        let h = x.shape[0], w = x.shape[1], c = x.shape[2]
        let hp = h + (ws - h % ws) % ws, wp = w + (ws - w % ws) % ws
        let nh = hp / ws, nw = wp / ws
        var out = [Float](repeating: 0, count: nh * nw * ws * ws * c)
        x.data.withUnsafeBufferPointer { s in
            out.withUnsafeMutableBufferPointer { d in
                for by in 0..<nh {
                    for bx in 0..<nw {
                        let win = by * nw + bx
                        for y in 0..<ws {
                            let sy = by * ws + y
                            if sy >= h { break }
                            let xs = min(ws, w - bx * ws)
                            if xs <= 0 { continue }
                            let src = s.baseAddress! + (sy * w + bx * ws) * c
                            let dst = d.baseAddress! + ((win * ws + y) * ws) * c
                            dst.update(from: src, count: xs * c)
                        }
                    }
                }
            }
        }
        return (Tensor(shape: [nh * nw, ws, ws, c], data: out), hp, wp)
    }

    /// Inverse of `partition`: `[nWindows, ws, ws, C]` → `[H, W, C]`, dropping the padding.
    public static func unpartition(_ windows: Tensor, size ws: Int, paddedH hp: Int, paddedW wp: Int,
                                   height h: Int, width w: Int) -> Tensor {
        let c = windows.shape[3]
        let nw = wp / ws
        var out = [Float](repeating: 0, count: h * w * c)
        windows.data.withUnsafeBufferPointer { s in
            out.withUnsafeMutableBufferPointer { d in
                for y in 0..<h {
                    let by = y / ws, iy = y % ws
                    for bx in 0..<nw {
                        let x0 = bx * ws
                        if x0 >= w { break }
                        let xs = min(ws, w - x0)
                        let win = by * nw + bx
                        let src = s.baseAddress! + ((win * ws + iy) * ws) * c
                        let dst = d.baseAddress! + (y * w + x0) * c
                        dst.update(from: src, count: xs * c)
                    }
                }
            }
        }
        return Tensor(shape: [h, w, c], data: out)
    }
}
