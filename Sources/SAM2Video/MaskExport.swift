import Foundation

/// A binary mask, row-major, one byte per pixel (0 or 1; any non-zero byte
/// counts as set when exporting).
public struct BinaryMask: Equatable, Sendable {
    public let width: Int
    public let height: Int
    public var bits: [UInt8]

    public init(width: Int, height: Int, bits: [UInt8]) {
        precondition(width >= 0 && height >= 0 && bits.count == width * height,
                     "BinaryMask: \(bits.count) bytes for \(width)x\(height)")
        self.width = width
        self.height = height
        self.bits = bits
    }

    /// An empty mask.
    public init(width: Int, height: Int) {
        self.init(width: width, height: height, bits: [UInt8](repeating: 0, count: width * height))
    }

    /// Threshold a grayscale image (e.g. a mask prompt read with `ImageIO.readGray`).
    public init(width: Int, height: Int, gray: [UInt8], threshold: UInt8 = 128) {
        self.init(width: width, height: height, bits: gray.map { $0 >= threshold ? 1 : 0 })
    }

    /// Number of set pixels.
    public var area: Int { bits.reduce(0) { $0 + ($1 != 0 ? 1 : 0) } }

    public subscript(x: Int, y: Int) -> Bool { bits[y * width + x] != 0 }

    // MARK: COCO RLE

    /// Run lengths in column-major (Fortran) order, starting with a background
    /// run (possibly 0), as pycocotools' `encode` produces.
    public func rleCounts() -> [Int] {
        var counts: [Int] = []
        var current: UInt8 = 0
        var run = 0
        bits.withUnsafeBufferPointer { b in
            for x in 0..<width {
                for y in 0..<height {
                    let v: UInt8 = b[y * width + x] != 0 ? 1 : 0
                    if v != current {
                        counts.append(run)
                        run = 0
                        current = v
                    }
                    run += 1
                }
            }
        }
        counts.append(run)
        return counts
    }

    /// The compressed RLE string of pycocotools (`rleToString`): each count,
    /// delta-coded against the count two back from the third on, in 5-bit
    /// groups with a continuation bit, as ASCII 48...111.
    public func cocoRLEString() -> String {
        CocoRLE.encode(rleCounts())
    }

    /// `{"size": [h, w], "counts": "..."}` as a JSON object string.
    public func cocoRLEJSON() -> String {
        "{\"size\":[\(height),\(width)],\"counts\":\"\(CocoRLE.jsonEscaped(cocoRLEString()))\"}"
    }

    /// Decode a pycocotools compressed RLE string.
    public static func fromRLE(counts: String, height: Int, width: Int) throws -> BinaryMask {
        try fromRLE(counts: CocoRLE.decode(counts), height: height, width: width)
    }

    /// Decode uncompressed column-major run lengths.
    public static func fromRLE(counts: [Int], height: Int, width: Int) throws -> BinaryMask {
        guard width >= 0, height >= 0, width <= 1 << 16, height <= 1 << 16 else {
            throw MaskExportError.invalidRLE(reason: "invalid size \(width)x\(height)")
        }
        let total = width * height
        var sum = 0
        for run in counts {
            // Checked one run at a time so absurd values cannot overflow the sum.
            guard run >= 0, run <= total - sum else {
                throw MaskExportError.invalidRLE(reason: "run lengths exceed the \(width)x\(height) mask")
            }
            sum += run
        }
        guard sum == total else {
            throw MaskExportError.invalidRLE(reason: "run lengths add up to \(sum), expected \(total)")
        }
        var bits = [UInt8](repeating: 0, count: total)
        var position = 0  // index in column-major order
        var value: UInt8 = 0
        for run in counts {
            if value == 1 {
                for p in position..<(position + run) {
                    bits[(p % height) * width + p / height] = 1
                }
            }
            position += run
            value ^= 1
        }
        return BinaryMask(width: width, height: height, bits: bits)
    }
}

/// The pycocotools string codec (maskApi.c rleToString / rleFrString).
public enum CocoRLE {
    public static func encode(_ counts: [Int]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(counts.count * 2)
        for i in 0..<counts.count {
            var x = counts[i]
            if i > 2 { x -= counts[i - 2] }
            var more = true
            while more {
                var c = UInt8(truncatingIfNeeded: x & 0x1F)
                x >>= 5  // arithmetic shift, as in C for the negative deltas
                more = (c & 0x10) != 0 ? x != -1 : x != 0
                if more { c |= 0x20 }
                out.append(c + 48)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func decode(_ string: String) throws -> [Int] {
        let bytes = Array(string.utf8)
        var counts: [Int] = []
        var p = 0
        while p < bytes.count {
            var x = 0
            var k = 0
            var more = true
            while more {
                guard p < bytes.count else {
                    throw MaskExportError.invalidRLE(reason: "string ends inside a number")
                }
                guard bytes[p] >= 48, bytes[p] <= 111, k < 12 else {
                    throw MaskExportError.invalidRLE(reason: "invalid character at offset \(p)")
                }
                let c = Int(bytes[p]) - 48
                x |= (c & 0x1F) << (5 * k)
                more = (c & 0x20) != 0
                p += 1
                k += 1
                if !more && (c & 0x10) != 0 { x |= -1 << (5 * k) }
            }
            if counts.count > 2 { x = x &+ counts[counts.count - 2] }  // garbage is caught by fromRLE
            counts.append(x)
        }
        return counts
    }

    /// The alphabet includes '\' (92), which JSON must escape.
    static func jsonEscaped(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\")
    }
}

public enum MaskExportError: Error, CustomStringConvertible {
    case invalidObjectId(Int, reason: String)
    case sizeMismatch(expected: String, got: String, objectId: Int, frame: Int)
    case invalidRLE(reason: String)
    case cannotCreateDirectory(path: String, reason: String)
    case badFile(path: String, reason: String)

    public var description: String {
        switch self {
        case .invalidObjectId(let id, let r): return "object id \(id): \(r)"
        case .sizeMismatch(let e, let g, let id, let f):
            return "frame \(f), object \(id): mask is \(g), expected \(e)"
        case .invalidRLE(let r): return "invalid COCO RLE: \(r)"
        case .cannotCreateDirectory(let p, let r): return "\(p): cannot create directory (\(r))"
        case .badFile(let p, let r): return "\(p): \(r)"
        }
    }
}

/// Receives the masks of each frame as the tracker produces them.
public protocol MaskSink {
    func write(frameIndex: Int, masks: [(objectId: Int, mask: BinaryMask)]) throws
    func finish() throws
}

func makeDirectory(_ path: String) throws {
    do {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    } catch {
        throw MaskExportError.cannotCreateDirectory(path: path, reason: error.localizedDescription)
    }
}

func frameName(_ index: Int) -> String {
    let digits = String(index)
    return String(repeating: "0", count: max(0, 5 - digits.count)) + digits + ".png"
}

/// `DIR/<obj_id>/<frame:05d>.png`, 8-bit grayscale, 0 background / 255 object.
public final class PNGSequenceSink: MaskSink {
    public let directory: String
    private var created: Set<Int> = []

    public init(directory: String) throws {
        self.directory = directory
        try makeDirectory(directory)
    }

    public func write(frameIndex: Int, masks: [(objectId: Int, mask: BinaryMask)]) throws {
        for (id, mask) in masks {
            let dir = (directory as NSString).appendingPathComponent(String(id))
            if !created.contains(id) {
                try makeDirectory(dir)
                created.insert(id)
            }
            try ImageIO.writeGrayPNG(path: (dir as NSString).appendingPathComponent(frameName(frameIndex)),
                                     width: mask.width, height: mask.height,
                                     pixels: mask.bits.map { $0 != 0 ? 255 : 0 })
        }
    }

    public func finish() throws {}
}

/// `DIR/<frame:05d>.png`, DAVIS-style palette PNG whose index is the object id
/// (0 background). Later objects in the list win where masks overlap. Ids must
/// be 1...255 to fit a palette index.
public final class PaletteSink: MaskSink {
    public let directory: String
    public let width: Int
    public let height: Int

    /// The size is needed to write frames that have no masks at all.
    public init(directory: String, width: Int, height: Int) throws {
        self.directory = directory
        self.width = width
        self.height = height
        try makeDirectory(directory)
    }

    public func write(frameIndex: Int, masks: [(objectId: Int, mask: BinaryMask)]) throws {
        var indices = [UInt8](repeating: 0, count: width * height)
        for (id, mask) in masks {
            guard (1...255).contains(id) else {
                throw MaskExportError.invalidObjectId(id, reason: "palette PNGs need object ids in 1...255")
            }
            guard mask.width == width, mask.height == height else {
                throw MaskExportError.sizeMismatch(expected: "\(width)x\(height)", got: "\(mask.width)x\(mask.height)",
                                                   objectId: id, frame: frameIndex)
            }
            let value = UInt8(id)
            for i in 0..<indices.count where mask.bits[i] != 0 { indices[i] = value }
        }
        try ImageIO.writeIndexedPNG(path: (directory as NSString).appendingPathComponent(frameName(frameIndex)),
                                    width: width, height: height, indices: indices)
    }

    public func finish() throws {}

    /// Split a palette PNG back into per-object masks (ids present in the image).
    public static func read(path: String) throws -> [Int: BinaryMask] {
        let image = try ImageIO.readIndexed(path: path)
        var result: [Int: BinaryMask] = [:]
        for id in Set(image.indices) where id != 0 {
            result[Int(id)] = BinaryMask(width: image.width, height: image.height,
                                         bits: image.indices.map { $0 == id ? 1 : 0 })
        }
        return result
    }
}

/// `DIR/masks.json` (name configurable), written atomically by `finish()`:
///
///     {"format": "coco-rle",
///      "frames": {"0": {"1": {"size": [h, w], "counts": "..."}, "2": {...}}, "1": {...}}}
///
/// Frame and object keys are decimal strings; each entry decodes with
/// `pycocotools.mask.decode`. Only the compressed strings are kept in memory.
public final class RLESink: MaskSink {
    public let path: String
    private var frames: [Int: [(id: Int, json: String)]] = [:]

    public init(directory: String, fileName: String = "masks.json") throws {
        try makeDirectory(directory)
        path = (directory as NSString).appendingPathComponent(fileName)
    }

    public func write(frameIndex: Int, masks: [(objectId: Int, mask: BinaryMask)]) throws {
        var entries: [(id: Int, json: String)] = []
        for (id, mask) in masks.sorted(by: { $0.objectId < $1.objectId }) {
            entries.removeAll { $0.id == id }  // a repeated id: the later mask wins
            entries.append((id, mask.cocoRLEJSON()))
        }
        frames[frameIndex] = entries
    }

    public func finish() throws {
        var out = "{\"format\":\"coco-rle\",\"frames\":{"
        for (n, frame) in frames.keys.sorted().enumerated() {
            if n > 0 { out += "," }
            out += "\n\"\(frame)\":{"
            out += (frames[frame] ?? []).map { "\"\($0.id)\":\($0.json)" }.joined(separator: ",")
            out += "}"
        }
        out += "\n}}\n"
        try writeFileAtomically(Array(out.utf8), to: path)
    }

    /// Read a file written by `finish()`: frame index -> object id -> mask.
    public static func read(path: String) throws -> [Int: [Int: BinaryMask]] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw MaskExportError.badFile(path: path, reason: "cannot read file")
        }
        guard let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              let frames = root["frames"] as? [String: Any] else {
            throw MaskExportError.badFile(path: path, reason: "not a masks JSON file (no \"frames\" object)")
        }
        var result: [Int: [Int: BinaryMask]] = [:]
        for (frameKey, value) in frames {
            guard let frame = Int(frameKey), let objects = value as? [String: Any] else {
                throw MaskExportError.badFile(path: path, reason: "bad frame entry '\(frameKey)'")
            }
            var masks: [Int: BinaryMask] = [:]
            for (idKey, rle) in objects {
                guard let id = Int(idKey), let entry = rle as? [String: Any],
                      let size = entry["size"] as? [Int], size.count == 2,
                      let counts = entry["counts"] as? String else {
                    throw MaskExportError.badFile(path: path, reason: "bad RLE for frame \(frame), object '\(idKey)'")
                }
                masks[id] = try BinaryMask.fromRLE(counts: counts, height: size[0], width: size[1])
            }
            result[frame] = masks
        }
        return result
    }
}
