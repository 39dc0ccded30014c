import Foundation
import SAM2

/// The masks of one frame, as the session last computed them: each object's mask as a
/// pycocotools compressed RLE string (column-major), in the predictor's object order.
public struct FrameMasks: Equatable {
    public let frameIndex: Int
    public let width: Int
    public let height: Int
    public let objects: [(objectId: Int, counts: String)]

    public init(frameIndex: Int, width: Int, height: Int, objects: [(objectId: Int, counts: String)]) {
        self.frameIndex = frameIndex
        self.width = width
        self.height = height
        self.objects = objects
    }

    /// Encodes the predictor's result (`videoMasks`: logits > 0 at the video's resolution).
    public init(_ result: FrameResult) {
        let bits = result.videoMasks()
        self.init(frameIndex: result.frameIndex, width: result.videoWidth, height: result.videoHeight,
                  objects: zip(result.objectIds, bits).map { obj, b in
                      (obj, BinaryMask(width: result.videoWidth, height: result.videoHeight, bits: b).cocoRLEString())
                  })
    }

    public var objectIds: [Int] { objects.map(\.objectId) }

    /// The masks decoded, in object order.
    public func masks() throws -> [(objectId: Int, mask: BinaryMask)] {
        try objects.map { ($0.objectId, try BinaryMask.fromRLE(counts: $0.counts, height: height, width: width)) }
    }

    public func removing(objectId: Int) -> FrameMasks {
        FrameMasks(frameIndex: frameIndex, width: width, height: height, objects: objects.filter { $0.objectId != objectId })
    }

    public static func == (a: FrameMasks, b: FrameMasks) -> Bool {
        a.frameIndex == b.frameIndex && a.width == b.width && a.height == b.height
            && a.objects.map(\.objectId) == b.objects.map(\.objectId) && a.objects.map(\.counts) == b.objects.map(\.counts)
    }
}

/// Every frame's latest masks, kept on disk so that memory stays flat however long the video:
/// records are appended to an unlinked temporary file and only a small index (frame -> offset)
/// stays in RAM. A later result for a frame replaces the earlier one. The index is a value, so
/// an undo can put an earlier one back (records are never overwritten).
public final class FrameMaskStore {
    public let width: Int
    public let height: Int
    public typealias Index = [Int: Record]
    public struct Record: Equatable { let offset: Int; let length: Int }

    public private(set) var index = Index()
    /// Called after a frame's masks change (set, an object removed, an index restored), with the
    /// frame's masks before and after (nil: none).
    public var onChange: ((_ frame: Int, _ before: FrameMasks?, _ after: FrameMasks?) throws -> Void)?

    private let fd: Int32
    private var end = 0

    public init(width: Int, height: Int) throws {
        self.width = width
        self.height = height
        var template = Array("\(NSTemporaryDirectory())/sam2-masks-XXXXXX".utf8CString)
        fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw PredictorError("cannot create a temporary file for masks in \(NSTemporaryDirectory())") }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
    }

    deinit { close(fd) }

    /// Frames that have masks, in order.
    public var frames: [Int] { index.keys.sorted() }
    public var count: Int { index.count }

    public func masks(frame: Int) throws -> FrameMasks? {
        guard let r = index[frame] else { return nil }
        var bytes = [UInt8](repeating: 0, count: r.length)
        let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, r.length, off_t(r.offset)) }
        guard n == r.length else { throw PredictorError("the temporary mask file could not be read back") }
        // One line per object: "<id> <counts>".
        let objects = bytes.split(separator: UInt8(ascii: "\n")).map { line -> (Int, String) in
            let parts = line.split(separator: UInt8(ascii: " "), maxSplits: 1, omittingEmptySubsequences: false)
            return (Int(String(decoding: parts[0], as: UTF8.self))!, parts.count > 1 ? String(decoding: parts[1], as: UTF8.self) : "")
        }
        return FrameMasks(frameIndex: frame, width: width, height: height, objects: objects)
    }

    public func set(_ masks: FrameMasks) throws {
        let before = try onChange != nil ? self.masks(frame: masks.frameIndex) : nil
        let text = masks.objects.map { "\($0.objectId) \($0.counts)\n" }.joined()
        let bytes = Array(text.utf8)
        let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, bytes.count, off_t(end)) }
        guard n == bytes.count else { throw PredictorError("cannot write masks to the temporary file (disk full?)") }
        index[masks.frameIndex] = Record(offset: end, length: bytes.count)
        end += bytes.count
        try onChange?(masks.frameIndex, before, masks)
    }

    /// Drops an object's masks from every frame.
    public func remove(objectId: Int) throws {
        for frame in frames {
            guard let m = try masks(frame: frame), m.objectIds.contains(objectId) else { continue }
            try set(m.removing(objectId: objectId))
        }
    }

    /// Puts an earlier index back (see `index`), reporting each frame whose masks change.
    public func restore(_ earlier: Index) throws {
        let current = index
        for frame in Set(current.keys).union(earlier.keys).sorted() where current[frame] != earlier[frame] {
            let before = try masks(frame: frame)
            index[frame] = earlier[frame]
            try onChange?(frame, before, try masks(frame: frame))
        }
        index = earlier
    }

    /// Every object id that has a mask on some frame, in first-seen order.
    public func objectIds() throws -> [Int] {
        var ids = [Int]()
        for frame in frames { for id in try masks(frame: frame)?.objectIds ?? [] where !ids.contains(id) { ids.append(id) } }
        return ids
    }
}
