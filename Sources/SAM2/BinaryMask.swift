import Foundation
import SAM2Tensor

/// A mask's pixels as a COCO run-length encoding was not valid.
public struct RLEError: Error, CustomStringConvertible {
    public let reason: String
    init(_ reason: String) { self.reason = reason }
    public var description: String { "invalid COCO RLE: \(reason)" }
}

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
        MaskOps.rleCounts(bits, width: width, height: height)
    }

    /// The compressed RLE string of pycocotools (`rleToString`): each count,
    /// delta-coded against the count two back from the third on, in 5-bit
    /// groups with a continuation bit, as ASCII 48...111.
    public func cocoRLEString() -> String {
        CocoRLE.encode(rleCounts())
    }

    /// `{"size": [h, w], "counts": "..."}` as a JSON object string.
    public func cocoRLEJSON() -> String {
        CocoRLE.json(counts: cocoRLEString(), height: height, width: width)
    }

    /// Decode a pycocotools compressed RLE string.
    public static func fromRLE(counts: String, height: Int, width: Int) throws -> BinaryMask {
        try fromRLE(counts: CocoRLE.decode(counts), height: height, width: width)
    }

    /// Decode uncompressed column-major run lengths.
    public static func fromRLE(counts: [Int], height: Int, width: Int) throws -> BinaryMask {
        guard width >= 0, height >= 0, width <= 1 << 16, height <= 1 << 16 else {
            throw RLEError("invalid size \(width)x\(height)")
        }
        let total = width * height
        var sum = 0
        for run in counts {
            // Checked one run at a time so absurd values cannot overflow the sum.
            guard run >= 0, run <= total - sum else {
                throw RLEError("run lengths exceed the \(width)x\(height) mask")
            }
            sum += run
        }
        guard sum == total else {
            throw RLEError("run lengths add up to \(sum), expected \(total)")
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
                    throw RLEError("string ends inside a number")
                }
                guard bytes[p] >= 48, bytes[p] <= 111, k < 12 else {
                    throw RLEError("invalid character at offset \(p)")
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

    /// `{"size": [h, w], "counts": "..."}` for a compressed counts string.
    public static func json(counts: String, height: Int, width: Int) -> String {
        "{\"size\":[\(height),\(width)],\"counts\":\"\(jsonEscaped(counts))\"}"
    }

    /// The alphabet includes '\' (92), which JSON must escape.
    public static func jsonEscaped(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\")
    }
}

