import Foundation
import SAM2Tensor

/// Image-encoder outputs of the frames a session has seen, so that re-propagating after a
/// correction does not encode them again. The newest frames stay in RAM up to `ramBudget` bytes;
/// older ones move to an unlinked temporary file up to `diskBudget` bytes; beyond both a frame
/// is simply encoded again. A frame read back is bit for bit what the encoder gave.
///
/// The position encodings depend only on the feature sizes, so they are kept once, not per frame.
public final class FrameFeatureCache {
    /// Bytes of frame features kept in RAM / on disk at most.
    public let ramBudget: Int
    public let diskBudget: Int

    /// Defaults: nothing in the process's own RAM, so its memory stays flat however long the
    /// video; the spill file is written past the page cache (see `SpillFile`), so reading a frame
    /// back costs a read from the disk (milliseconds against the encoder's hundreds). 8 GiB of
    /// disk: about 490 frames of a 1024-pixel SAM 2 model. Override with `SAM2_FEATURE_CACHE_MB` /
    /// `SAM2_FEATURE_SPILL_MB`.
    public static let defaultRAMBudget = budget("SAM2_FEATURE_CACHE_MB", defaultMB: 0)
    public static let defaultDiskBudget = budget("SAM2_FEATURE_SPILL_MB", defaultMB: 8192)

    private enum Entry {
        case ram([Tensor])
        case disk(offsets: [Int], shapes: [[Int]])
    }
    private var entries: [Int: Entry] = [:]
    /// Frames in RAM, least recently used first.
    private var ramOrder: [Int] = []
    private var ramBytes = 0, diskBytes = 0
    private var positions: [Tensor]?
    private var sharedShapes: [[Int]] = []
    private lazy var spillFile = SpillFile()

    public init(ramBudget: Int = FrameFeatureCache.defaultRAMBudget, diskBudget: Int = FrameFeatureCache.defaultDiskBudget) {
        self.ramBudget = max(0, ramBudget)
        self.diskBudget = max(0, diskBudget)
    }

    /// Frames whose features are kept (in RAM or on disk).
    public var count: Int { entries.count }
    public var bytesInRAM: Int { ramBytes }
    public var bytesOnDisk: Int { diskBytes }

    /// The frame's features if kept.
    public func features(of frame: Int) -> BackboneFeatures? {
        guard let entry = entries[frame], let positions else { return nil }
        switch entry {
        case let .ram(levels):
            touch(frame)
            return BackboneFeatures(levels: levels, positions: positions)
        case let .disk(offsets, shapes):
            guard let spillFile else { return nil }
            let levels = zip(offsets, shapes).map { offset, shape in
                Tensor(shape: shape, data: spillFile.read(offset: offset, count: shape.reduce(1, *)))
            }
            return BackboneFeatures(levels: levels, positions: positions)
        }
    }

    /// Keep a frame's features (its first encoding; a frame already kept is left as it is).
    public func insert(_ features: BackboneFeatures, for frame: Int) {
        guard entries[frame] == nil else { return }
        if let positions, positions.map(\.shape) != features.positions.map(\.shape) { return }  // another size: not cacheable
        if positions == nil { positions = features.positions }
        let bytes = Self.bytes(features.levels)
        guard bytes <= ramBudget || spillFile != nil else { return }
        entries[frame] = .ram(features.levels)
        ramOrder.append(frame)
        ramBytes += bytes
        while ramBytes > ramBudget, let oldest = ramOrder.first {
            ramOrder.removeFirst()
            guard case let .ram(levels)? = entries[oldest] else { continue }
            ramBytes -= Self.bytes(levels)
            entries[oldest] = spill(levels)
        }
    }

    private func spill(_ levels: [Tensor]) -> Entry? {
        let bytes = Self.bytes(levels)
        guard let spillFile, diskBytes + bytes <= diskBudget else { return nil }
        var offsets = [Int]()
        for level in levels {
            guard let offset = spillFile.write(level.data) else { return nil }
            offsets.append(offset)
        }
        diskBytes += bytes
        // Every frame has the same shapes: keep one copy of them, not one per frame.
        let shapes = levels.map(\.shape)
        if shapes != sharedShapes { sharedShapes = shapes }
        return .disk(offsets: offsets, shapes: sharedShapes)
    }

    private func touch(_ frame: Int) {
        if let i = ramOrder.firstIndex(of: frame) { ramOrder.remove(at: i); ramOrder.append(frame) }
    }

    private static func bytes(_ tensors: [Tensor]) -> Int { tensors.reduce(0) { $0 + $1.count * 4 } }

    private static func budget(_ variable: String, defaultMB: Int) -> Int {
        let mb = ProcessInfo.processInfo.environment[variable].flatMap { Int($0) }.map { max(0, $0) } ?? defaultMB
        return mb << 20
    }
}
