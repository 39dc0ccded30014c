import Foundation
import SAM2
import SAM2Video

/// One interactive tracking session over one video: the engine behind `sam2 track` and
/// `sam2 serve` alike. Prompts (points, boxes, masks) on any frame for any object, clearing and
/// removing, undo, propagation forward / backward / both with per-frame results as they are
/// computed (cancellable between frames), and export to every mask format.
///
/// Each frame's latest masks live in a `FrameMaskStore` (on disk), the frames the image encoder
/// has seen in the predictor's `FrameFeatureCache`, so a correction's re-propagation skips the
/// encoder and memory stays flat however long the video. Not thread-safe: one caller at a time
/// (`cancel()` excepted).
public final class TrackingSession {
    public let predictor: VideoPredictor
    public let store: FrameMaskStore
    /// The video file or frame folder, when the session was opened from one (for the overlay).
    public let videoPath: String?
    public let frameLimit: Int?
    public var model: SAM2Model { predictor.model }
    public var frameCount: Int { predictor.numFrames }
    public var width: Int { predictor.source.videoWidth }
    public var height: Int { predictor.source.videoHeight }
    public var objectIds: [Int] { predictor.objectIds }

    /// The prompts an object has on a frame, in video pixels (what the overlay and the web page draw).
    public struct Prompt: Equatable {
        public var points: [[Double]] = []
        public var labels: [Int] = []
        public var box: [Double]?
        public var hasMask = false
    }
    public private(set) var prompts: [Int: [Int: Prompt]] = [:]  // frame -> object -> prompt

    /// How many edits `undo()` can take back (0: none are remembered).
    public let undoDepth: Int
    private var undoStack: [(predictor: VideoPredictor.State, masks: FrameMaskStore.Index, prompts: [Int: [Int: Prompt]])] = []

    private let cancelLock = NSLock()
    private var cancelRequested = false
    private var running = false

    public init(predictor: VideoPredictor, videoPath: String? = nil, frameLimit: Int? = nil, undoDepth: Int = 50) throws {
        self.predictor = predictor
        self.videoPath = videoPath
        self.frameLimit = frameLimit
        self.undoDepth = undoDepth
        store = try FrameMaskStore(width: predictor.source.videoWidth, height: predictor.source.videoHeight)
    }

    /// A session on a video file (anything FFmpeg decodes) or a folder of numbered frames.
    public convenience init(model: SAM2Model, video path: String, limit: Int? = nil,
                            featureCache: FrameFeatureCache = FrameFeatureCache(), undoDepth: Int = 50) throws {
        let source = try VideoFrameSource(path: path, limit: limit)
        try self.init(predictor: VideoPredictor(model: model, source: source, featureCache: featureCache),
                      videoPath: path, frameLimit: limit, undoDepth: undoDepth)
    }

    // MARK: prompts

    /// Clicks (label 1 positive, 0 negative) and/or a box on a frame, in video pixels. With
    /// `clearOldPoints` (the default) they replace the object's earlier prompts on that frame.
    @discardableResult
    public func addPoints(frame: Int, objectId: Int, points: [(x: Double, y: Double)] = [], labels: [Int] = [],
                          box: (x0: Double, y0: Double, x1: Double, y1: Double)? = nil,
                          clearOldPoints: Bool = true) throws -> FrameMasks {
        try edit {
            let r = try predictor.addPoints(frame: frame, objectId: objectId, points: points, labels: labels, box: box,
                                            clearOldPoints: clearOldPoints)
            var p = clearOldPoints ? Prompt() : prompts[frame]?[objectId] ?? Prompt()
            p.points += points.map { [$0.x, $0.y] }
            p.labels += labels
            if let box { p.box = [box.x0, box.y0, box.x1, box.y1] }
            p.hasMask = false
            prompts[frame, default: [:]][objectId] = p
            return try keep(r)
        }
    }

    /// A binary mask prompt (row-major, `height x width`, nonzero = object) on a frame.
    @discardableResult
    public func addMask(frame: Int, objectId: Int, mask: [UInt8], width: Int, height: Int) throws -> FrameMasks {
        try edit {
            let r = try predictor.addMask(frame: frame, objectId: objectId, mask: mask, width: width, height: height)
            prompts[frame, default: [:]][objectId] = Prompt(hasMask: true)
            return try keep(r)
        }
    }

    /// Forgets an object's prompts on a frame (the official `clear_all_prompts_in_frame`).
    @discardableResult
    public func clearPrompts(frame: Int, objectId: Int) throws -> FrameMasks {
        try edit {
            let r = try predictor.clearPrompts(frame: frame, objectId: objectId)
            forgetPrompt(frame: frame, objectId: objectId)
            return try keep(r)
        }
    }

    /// Forgets an object everywhere: its prompts, its memory and its masks on every frame.
    public func removeObject(_ objectId: Int) throws {
        try edit {
            try predictor.removeObject(objectId)
            for frame in prompts.keys { forgetPrompt(frame: frame, objectId: objectId) }
            try store.remove(objectId: objectId)
        }
    }

    private func forgetPrompt(frame: Int, objectId: Int) {
        prompts[frame]?[objectId] = nil
        if prompts[frame]?.isEmpty == true { prompts[frame] = nil }
    }

    /// Drops every object, prompt and mask (the official `reset_state`); frame features stay cached.
    public func reset() throws {
        try edit {
            predictor.reset()
            prompts = [:]
            try store.restore([:])
        }
    }

    /// Takes back the last edit (prompt, clear, remove, reset) and any propagation since: the
    /// session is exactly as it was before that edit. False if there is nothing to undo.
    @discardableResult
    public func undo() throws -> Bool {
        guard let last = undoStack.popLast() else { return false }
        predictor.state = last.predictor
        prompts = last.prompts
        try store.restore(last.masks)
        return true
    }

    public var canUndo: Bool { !undoStack.isEmpty }

    /// Runs an edit; if it fails the session is left as it was (a refused prompt leaves no trace).
    private func edit<T>(_ body: () throws -> T) throws -> T {
        let before = (predictor.state, store.index, prompts)
        do {
            let result = try body()
            if undoDepth > 0 {
                undoStack.append(before)
                if undoStack.count > undoDepth { undoStack.removeFirst() }
            }
            return result
        } catch {
            predictor.state = before.0
            prompts = before.2
            try? store.restore(before.1)
            throw error
        }
    }

    /// The predictor's full result of the latest prompt (`run`'s records need its logits).
    private var lastResult: FrameResult?

    @discardableResult
    private func keep(_ result: FrameResult) throws -> FrameMasks {
        lastResult = result
        let masks = FrameMasks(result)
        try store.set(masks)
        return masks
    }

    // MARK: propagation

    public enum Direction: String, CaseIterable, Sendable {
        case forward, backward, both
    }

    /// Tracks every object from `start` (default: the earliest prompted frame) over up to
    /// `maxFrames` frames after it (and/or before it), handing each frame's masks to `onFrame` as
    /// soon as they are computed. `cancel()` (from any thread) stops it between frames; the frames
    /// done so far keep their new masks. Returns false if it was cancelled.
    @discardableResult
    public func propagate(from start: Int? = nil, direction: Direction = .forward, maxFrames: Int? = nil,
                          onFrame: (FrameMasks) throws -> Void = { _ in }) throws -> Bool {
        try propagate(from: start, direction: direction, maxFrames: maxFrames) { try onFrame(try keep($0)) }
    }

    private func propagate(from start: Int?, direction: Direction, maxFrames: Int?, shouldStop: () -> Bool = { false },
                           result: (FrameResult) throws -> Void) throws -> Bool {
        setRunning(true)
        defer { setRunning(false) }  // a cancel ends this propagation only
        do {
            for reverse in direction == .both ? [false, true] : [direction == .backward] {
                try predictor.propagate(from: start, maxFrames: maxFrames, reverse: reverse) {
                    try result($0)
                    if cancelled || shouldStop() { throw Cancelled() }
                }
            }
        } catch is Cancelled {
            return false
        }
        return true
    }

    /// Asks a running propagation to stop after the frame it is on; false if none is running.
    @discardableResult
    public func cancel() -> Bool {
        cancelLock.lock(); defer { cancelLock.unlock() }
        if running { cancelRequested = true }
        return running
    }

    private struct Cancelled: Error {}
    private var cancelled: Bool { cancelLock.lock(); defer { cancelLock.unlock() }; return cancelRequested }
    private func setRunning(_ v: Bool) { cancelLock.lock(); running = v; cancelRequested = false; cancelLock.unlock() }

    // MARK: action scripts

    /// Runs an action script (as `--prompts` files and the fixtures' `session.json`) through the
    /// session. `record` sees each action's results: the prompted frame, or every propagated frame.
    /// `shouldStop` stops it between actions and between propagated frames; it then returns false.
    @discardableResult
    public func run(_ actions: [PromptAction], loadMask: (String) throws -> (mask: [UInt8], width: Int, height: Int),
                    shouldStop: () -> Bool = { false },
                    record: (_ step: Int, _ tag: String, _ result: FrameResult) throws -> Void = { _, _, _ in }) throws -> Bool {
        for (step, action) in actions.enumerated() {
            if shouldStop() { return false }
            let tag = action.tag
            switch action {
            case let .points(frame, obj, points, labels, clearOld):
                try addPoints(frame: frame, objectId: obj, points: points.map { ($0[0], $0[1]) }, labels: labels,
                              clearOldPoints: clearOld)
            case let .box(frame, obj, box, points, labels):
                try addPoints(frame: frame, objectId: obj, points: points.map { ($0[0], $0[1]) }, labels: labels,
                              box: (box[0], box[1], box[2], box[3]))
            case let .mask(frame, obj, file):
                let m = try loadMask(file)
                try addMask(frame: frame, objectId: obj, mask: m.mask, width: m.width, height: m.height)
            case let .propagate(start, reverse, max):
                let done = try propagate(from: start, direction: reverse ? .backward : .forward, maxFrames: max,
                                         shouldStop: shouldStop) {
                    try keep($0)
                    try record(step, tag, $0)
                }
                if !done { return false }
                continue
            case let .remove(obj):
                try removeObject(obj)
                continue
            case .reset:
                try reset()
                continue
            }
            if let kept = lastResult { try record(step, tag, kept) }
        }
        return true
    }
}
