import SAM2

/// Masks as polygons: the outer borders of a mask's pieces (OpenCV's `findContours` with
/// `RETR_EXTERNAL`, `CHAIN_APPROX_NONE`), simplified within a tolerance, and written as the
/// YOLO segmentation format's lines (`class x1 y1 x2 y2 …`, coordinates 0-1).
public enum Polygons {
    public typealias Point = (x: Int, y: Int)

    /// The outer border of each 8-connected piece of `mask` that is not inside a hole of another
    /// piece, as pixel centres, in OpenCV's order: each border from its top-left pixel going down
    /// the left side first (Suzuki–Abe border following), borders in reverse raster order of their
    /// first pixels. A one-pixel piece is one point.
    public static func contours(of mask: BinaryMask) -> [[Point]] {
        let w = mask.width, h = mask.height
        guard w > 0 && h > 0 else { return [] }
        let set = { (x: Int, y: Int) -> Bool in x >= 0 && y >= 0 && x < w && y < h && mask.bits[y * w + x] != 0 }
        let pieces = HoleFilling.connectedComponents(width: w, height: h) { mask.bits[$0] != 0 }
        let outside = backgroundReachingTheEdge(mask)
        var firstPixel = [Int](repeating: -1, count: pieces.areas.count)
        var external = [Bool](repeating: false, count: pieces.areas.count)
        for y in 0..<h {
            for x in 0..<w where mask.bits[y * w + x] != 0 {
                let label = Int(pieces.labels[y * w + x])
                if firstPixel[label] < 0 { firstPixel[label] = y * w + x }
                // A piece is external if it touches the edge or background connected to it.
                if !external[label] && (x == 0 || y == 0 || x == w - 1 || y == h - 1
                    || outside[y * w + x - 1] || outside[y * w + x + 1] || outside[(y - 1) * w + x] || outside[(y + 1) * w + x]) {
                    external[label] = true
                }
            }
        }
        let starts = firstPixel.indices.filter { external[$0] }.map { firstPixel[$0] }.sorted()
        return starts.reversed().map { border(from: (x: $0 % w, y: $0 / w), set: set) }
    }

    /// Directions counterclockwise on screen (y down), as OpenCV numbers them: right, up-right, up, …
    private static let steps: [Point] = [(1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1)]

    /// Suzuki–Abe outer border following from a piece's top-left pixel (its left neighbour is 0).
    private static func border(from p0: Point, set: (Int, Int) -> Bool) -> [Point] {
        // Clockwise from the left neighbour to the first set neighbour.
        var first: Int?
        for k in 0..<8 {
            let d = (4 - k + 8) % 8
            if set(p0.x + steps[d].x, p0.y + steps[d].y) { first = d; break }
        }
        guard let d1 = first else { return [p0] }
        let p1 = (x: p0.x + steps[d1].x, y: p0.y + steps[d1].y)
        var out: [Point] = []
        var current = p0, fromDir = d1  // direction from `current` to the previous border pixel
        while true {
            out.append(current)
            // Counterclockwise from just after the previous border pixel.
            var next = current, nextDir = fromDir
            for k in 1...8 {
                let d = (fromDir + k) % 8
                let q = (x: current.x + steps[d].x, y: current.y + steps[d].y)
                if set(q.x, q.y) { next = q; nextDir = d; break }
            }
            if next == p0 && current == p1 { return out }
            fromDir = (nextDir + 4) % 8
            current = next
        }
    }

    /// Background pixels 4-connected to the image's edge (the rest are holes).
    private static func backgroundReachingTheEdge(_ mask: BinaryMask) -> [Bool] {
        let w = mask.width, h = mask.height
        var reached = [Bool](repeating: false, count: w * h)
        var stack: [Int] = []
        func push(_ i: Int) { if mask.bits[i] == 0 && !reached[i] { reached[i] = true; stack.append(i) } }
        for x in 0..<w { push(x); push((h - 1) * w + x) }
        for y in 0..<h { push(y * w); push(y * w + w - 1) }
        while let i = stack.popLast() {
            let x = i % w, y = i / w
            if x > 0 { push(i - 1) }
            if x < w - 1 { push(i + 1) }
            if y > 0 { push(i - w) }
            if y < h - 1 { push(i + w) }
        }
        return reached
    }

    /// Ramer–Douglas–Peucker on a closed border: the fewest of its points such that every point
    /// of the border lies within `tolerance` pixels of the simplified outline. The outline is split
    /// at the point farthest from the first, so both halves are open chains with fixed ends.
    /// Tolerance 0 keeps exactly the corners (drops points in the middle of straight runs).
    public static func simplify(_ border: [Point], tolerance: Double) -> [Point] {
        guard border.count > 2 else { return border }
        let a = border[0]
        let far = border.indices.max { squaredDistance(border[$0], a) < squaredDistance(border[$1], a) }!
        var keep = [Bool](repeating: false, count: border.count)
        keep[0] = true
        keep[far] = true
        simplifyChain(border, 0, far, tolerance, &keep)
        simplifyChain(border + [a], far, border.count, tolerance, &keep)
        return border.indices.filter { keep[$0] }.map { border[$0] }
    }

    private static func squaredDistance(_ p: Point, _ q: Point) -> Int {
        (p.x - q.x) * (p.x - q.x) + (p.y - q.y) * (p.y - q.y)
    }

    /// Marks the points of `chain[i...j]` the outline keeps (iteratively: borders can be long).
    private static func simplifyChain(_ chain: [Point], _ i: Int, _ j: Int, _ tolerance: Double, _ keep: inout [Bool]) {
        var work = [(i, j)]
        while let (s, e) = work.popLast() {
            guard e - s > 1 else { continue }
            let p = chain[s], q = chain[e]
            let dx = Double(q.x - p.x), dy = Double(q.y - p.y), length2 = dx * dx + dy * dy
            var worst = -1.0, at = s
            for k in (s + 1)..<e {
                // Distance to the segment, not its line: a border can run back past a chord's end.
                let rx = Double(chain[k].x - p.x), ry = Double(chain[k].y - p.y)
                let t = length2 > 0 ? max(0, min(1, (rx * dx + ry * dy) / length2)) : 0
                let d = ((rx - t * dx) * (rx - t * dx) + (ry - t * dy) * (ry - t * dy)).squareRoot()
                if d > worst { worst = d; at = k }
            }
            if worst > tolerance {
                keep[at % keep.count] = true
                work.append((s, at))
                work.append((at, e))
            }
        }
    }

    /// The YOLO segmentation lines of one object: a line per outer border of at least three points
    /// after simplification, `classIndex` then `x y` pairs divided by the mask's width and height.
    public static func yoloLines(_ mask: BinaryMask, classIndex: Int, tolerance: Double) -> [String] {
        let w = Double(mask.width), h = Double(mask.height)
        return contours(of: mask).map { simplify($0, tolerance: tolerance) }.filter { $0.count >= 3 }.map { polygon in
            ([String(classIndex)] + polygon.flatMap { [format(Double($0.x) / w), format(Double($0.y) / h)] }).joined(separator: " ")
        }
    }

    private static func format(_ v: Double) -> String {
        let s = String(Int((v * 1_000_000).rounded()))
        // Six decimals without Foundation's formatter: "0.123456".
        let padded = String(repeating: "0", count: max(0, 7 - s.count)) + s
        return padded.dropLast(6) + "." + padded.suffix(6)
    }
}
