import Foundation
import SAM2
import SAM2Video

/// The mask formats a session exports.
public enum MaskFormat: String, CaseIterable, Sendable {
    /// `DIR/<obj>/<frame:05d>.png`, 8-bit grayscale 0/255.
    case png
    /// `DIR/<frame:05d>.png`, DAVIS palette PNG indexed by object id (1...255).
    case palette
    /// `DIR/masks.json`, COCO RLE per frame and object.
    case rle
    /// `DIR/<obj:03d>/<frame:05d>.png`, SA-V's annotation layout (grayscale 0/255).
    case sav
    /// `DIR/<frame:05d>.txt`, YOLO segmentation polygons (normalised), with `classes.txt`.
    case yolo

    /// Formats with one file per frame (and object), kept current while tracking runs.
    public var writesPerFrame: Bool { self == .png || self == .palette || self == .sav }
}

extension TrackingSession {
    /// Writes every frame's masks to `directory` in `format`; returns the number of frames.
    /// `yoloTolerance` is the polygon simplification tolerance in pixels (0: every border pixel).
    @discardableResult
    public func export(_ format: MaskFormat, to directory: String, yoloTolerance: Double = 1.0,
                       shouldStop: () -> Bool = { false }) throws -> Int {
        var written = 0
        switch format {
        case .rle:
            let sink = try RLESink(directory: directory)
            for frame in store.frames {
                guard let m = try store.masks(frame: frame) else { continue }
                try sink.write(frameIndex: frame, entries: m.objects.map {
                    ($0.objectId, CocoRLE.json(counts: $0.counts, height: m.height, width: m.width))
                })
                written += 1
            }
            try sink.finish()
        case .yolo:
            try makeDirectory(directory)
            let ids = try store.objectIds().sorted()
            for frame in store.frames where !shouldStop() {
                guard let m = try store.masks(frame: frame) else { continue }
                var lines = [String]()
                for (id, mask) in try m.masks() {
                    lines += Polygons.yoloLines(mask, classIndex: ids.firstIndex(of: id)!, tolerance: yoloTolerance)
                }
                try writeFileAtomically(Array(lines.map { $0 + "\n" }.joined().utf8), to: "\(directory)/\(frameName(frame, ext: "txt"))")
                written += 1
            }
            try writeFileAtomically(Array(ids.map { "object_\($0)\n" }.joined().utf8), to: "\(directory)/classes.txt")
        case .png, .palette, .sav:
            let writer = try LiveMaskWriter(format: format, directory: directory, width: width, height: height)
            for frame in store.frames where !shouldStop() {
                try writer.update(frame: frame, before: nil, after: try store.masks(frame: frame))
                written += 1
            }
        }
        return written
    }

    /// The video with every frame's masks and the prompts drawn over it (H.264), written to a
    /// temporary name and moved into place when complete.
    public func exportOverlay(to path: String, shouldStop: () -> Bool = { false }) throws {
        guard let videoPath else { throw PredictorError("this session has no video file to draw an overlay on") }
        let reader = try VideoFrameReader(path: videoPath, limit: frameLimit)
        let writer = try OverlayWriter(path: path, width: width, height: height, fps: reader.fps)
        while let frame = try reader.nextFrame() {
            if shouldStop() { return }  // the writer deletes its temporary file
            let marks = (prompts[frame.index] ?? [:]).sorted { $0.key < $1.key }.map(\.value)
            let points = marks.flatMap { p in zip(p.points, p.labels).map { (x: $0[0], y: $0[1], positive: $1 == 1) } }
            let boxes = marks.compactMap { $0.box.map { ($0[0], $0[1], $0[2], $0[3]) } }
            try writer.append(frame: frame, masks: try store.masks(frame: frame.index)?.masks() ?? [], points: points, boxes: boxes)
        }
        try writer.finish()
    }
}

/// Keeps a folder of per-frame mask files current as a session's masks change (attach `update`
/// to `FrameMaskStore.onChange`): each file is replaced atomically, and the file of an object a
/// frame no longer has is removed.
public final class LiveMaskWriter {
    public let format: MaskFormat
    private let sink: MaskSink

    public init(format: MaskFormat, directory: String, width: Int, height: Int) throws {
        self.format = format
        switch format {
        case .png, .sav: sink = try PNGSequenceSink(directory: directory, savLayout: format == .sav)
        case .palette: sink = try PaletteSink(directory: directory, width: width, height: height)
        case .rle, .yolo: throw PredictorError("\(format.rawValue) is written once at the end, not per frame")
        }
    }

    public func update(frame: Int, before: FrameMasks?, after: FrameMasks?) throws {
        if let pngs = sink as? PNGSequenceSink {
            let now = after?.objectIds ?? []
            for id in before?.objectIds ?? [] where !now.contains(id) { try removeFile(pngs.path(frameIndex: frame, objectId: id)) }
        } else if let palette = sink as? PaletteSink, after == nil {
            try removeFile("\(palette.directory)/\(frameName(frame))")
        }
        if let after { try sink.write(frameIndex: frame, masks: try after.masks()) }
    }
}

private func removeFile(_ path: String) throws {
    guard unlink(path) == 0 || errno == ENOENT else {
        throw MaskExportError.badFile(path: path, reason: "cannot remove (\(String(cString: strerror(errno))))")
    }
}
