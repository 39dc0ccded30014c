import Foundation
import SAM2

public enum MaskExportError: Error, CustomStringConvertible {
    case invalidObjectId(Int, reason: String)
    case sizeMismatch(expected: String, got: String, objectId: Int, frame: Int)
    case cannotCreateDirectory(path: String, reason: String)
    case badFile(path: String, reason: String)

    public var description: String {
        switch self {
        case .invalidObjectId(let id, let r): return "object id \(id): \(r)"
        case .sizeMismatch(let e, let g, let id, let f):
            return "frame \(f), object \(id): mask is \(g), expected \(e)"
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

public func makeDirectory(_ path: String) throws {
    do {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    } catch {
        throw MaskExportError.cannotCreateDirectory(path: path, reason: error.localizedDescription)
    }
}

/// `<frame:05d>.<ext>`, the frame file name of every per-frame format.
public func frameName(_ index: Int, ext: String = "png") -> String {
    let digits = String(index)
    return String(repeating: "0", count: max(0, 5 - digits.count)) + digits + "." + ext
}

/// `DIR/<obj_id>/<frame:05d>.png`, 8-bit grayscale, 0 background / 255 object. With
/// `savLayout`, object folders are named `<obj:03d>` as in SA-V's annotations.
public final class PNGSequenceSink: MaskSink {
    public let directory: String
    public let savLayout: Bool
    private var created: Set<Int> = []

    public init(directory: String, savLayout: Bool = false) throws {
        self.directory = directory
        self.savLayout = savLayout
        try makeDirectory(directory)
    }

    /// The file of an object's mask on a frame.
    public func path(frameIndex: Int, objectId id: Int) -> String {
        "\(directory)/\(savLayout ? String(format: "%03d", id) : String(id))/\(frameName(frameIndex))"
    }

    public func write(frameIndex: Int, masks: [(objectId: Int, mask: BinaryMask)]) throws {
        for (id, mask) in masks {
            let dir = (path(frameIndex: frameIndex, objectId: id) as NSString).deletingLastPathComponent
            if !created.contains(id) {
                try makeDirectory(dir)
                created.insert(id)
            }
            try ImageIO.writeGrayPNG(path: path(frameIndex: frameIndex, objectId: id),
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

/// `DIR/masks.json` (name configurable), streamed through a hidden temporary file that
/// `finish()` renames into place, so memory stays flat and the file appears complete or not at all:
///
///     {"format": "coco-rle",
///      "frames": {"0": {"1": {"size": [h, w], "counts": "..."}, "2": {...}}, "1": {...}}}
///
/// Frame and object keys are decimal strings; each entry decodes with
/// `pycocotools.mask.decode`. Frames must come in increasing order.
public final class RLESink: MaskSink {
    public let path: String
    private let tempPath: String
    private let file: FileHandle
    private var lastFrame = -1
    private var finished = false

    public init(directory: String, fileName: String = "masks.json") throws {
        try makeDirectory(directory)
        path = (directory as NSString).appendingPathComponent(fileName)
        tempPath = (directory as NSString).appendingPathComponent(".\(fileName).\(getpid()).tmp")
        guard FileManager.default.createFile(atPath: tempPath, contents: nil),
              let handle = FileHandle(forWritingAtPath: tempPath) else {
            throw MaskExportError.badFile(path: tempPath, reason: "cannot create file")
        }
        file = handle
        try append("{\"format\":\"coco-rle\",\"frames\":{")
    }

    deinit {
        try? file.close()
        if !finished { unlink(tempPath) }
    }

    public func write(frameIndex: Int, masks: [(objectId: Int, mask: BinaryMask)]) throws {
        try write(frameIndex: frameIndex, entries: masks.map { ($0.objectId, $0.mask.cocoRLEJSON()) })
    }

    /// One frame's entries as `(object id, RLE JSON object)`; a repeated id: the later mask wins.
    public func write(frameIndex: Int, entries: [(objectId: Int, json: String)]) throws {
        guard frameIndex > lastFrame else {
            throw MaskExportError.badFile(path: path, reason: "frame \(frameIndex) written after frame \(lastFrame)")
        }
        var kept: [(id: Int, json: String)] = []
        for (id, json) in entries.sorted(by: { $0.objectId < $1.objectId }) {
            kept.removeAll { $0.id == id }
            kept.append((id, json))
        }
        try append((lastFrame >= 0 ? "," : "") + "\n\"\(frameIndex)\":{"
                   + kept.map { "\"\($0.id)\":\($0.json)" }.joined(separator: ",") + "}")
        lastFrame = frameIndex
    }

    public func finish() throws {
        guard !finished else { return }
        try append("\n}}\n")
        do {
            try file.synchronize()
            try file.close()
        } catch {
            throw MaskExportError.badFile(path: tempPath, reason: "\(error)")
        }
        guard rename(tempPath, path) == 0 else {
            throw MaskExportError.badFile(path: path, reason: String(cString: strerror(errno)))
        }
        finished = true
    }

    private func append(_ text: String) throws {
        do { try file.write(contentsOf: Data(text.utf8)) } catch {
            throw MaskExportError.badFile(path: tempPath, reason: "cannot write (\(error))")
        }
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
