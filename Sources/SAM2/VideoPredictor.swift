import Foundation
import OrderedCollections
import SAM2Checkpoint
import SAM2Tensor

/// Where the predictor gets frames: random access by index, already resized and normalised
/// to the model's `[3, S, S]` input. Video readers, folders of images and fixtures conform.
public protocol FrameSource: AnyObject {
    var frameCount: Int { get }
    var videoWidth: Int { get }
    var videoHeight: Int { get }
    func modelInput(at index: Int, size: Int) throws -> Tensor
}

/// A user error in a prompt or session call: one line, naming the problem.
public struct PredictorError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ message: String) { description = message }
}

/// The masks of every object on one frame.
public struct FrameResult {
    public let frameIndex: Int
    public let objectIds: [Int]
    /// Low-resolution logits `[S/4, S/4]` per object (`noObjectScore` where an object has none).
    public let lowResLogits: [Tensor]
    public let videoWidth: Int
    public let videoHeight: Int
    let nonOverlapping: Bool

    /// Logits at the video's resolution, bilinearly upsampled like the official predictor.
    public func videoLogits() -> [Tensor] {
        var out = lowResLogits.map {
            Interpolate.bilinear($0.reshaped([1, $0.shape[0], $0.shape[1]]), height: videoHeight, width: videoWidth)
        }
        if nonOverlapping && out.count > 1 {
            // `_apply_non_overlapping_constraints`: only the top-scoring object keeps each pixel.
            for i in 0..<(videoHeight * videoWidth) {
                var best = 0
                for o in 1..<out.count where out[o].data[i] > out[best].data[i] { best = o }
                for o in 0..<out.count where o != best { out[o].data[i] = min(out[o].data[i], -10) }
            }
        }
        return out
    }

    /// Binary masks (1 where logits > 0) at the video's resolution, row-major, one per object.
    public func videoMasks() -> [[UInt8]] {
        if nonOverlapping && lowResLogits.count > 1 { return videoLogits().map { $0.data.map { $0 > 0 ? 1 : 0 } } }
        return lowResLogits.map {
            Interpolate.bilinearMask($0.reshaped([1, $0.shape[0], $0.shape[1]]), height: videoHeight, width: videoWidth)
        }
    }
}

/// `SAM2VideoPredictor`: an interactive tracking session over one video. Objects get points,
/// boxes or masks on any frame; propagation tracks them forward or backward; corrections on
/// tracked frames become conditioning frames and survive re-propagation.
public final class VideoPredictor {
    public let model: SAM2Model
    public let source: FrameSource
    public var numFrames: Int { source.frameCount }

    public private(set) var objectIds: [Int] = []
    private var pointInputs: [[Int: PointPrompt]] = []
    private var maskInputs: [[Int: Tensor]] = []
    private var outputs: [ObjectMemory] = []
    private var tempOutputs: [ObjectMemory] = []
    /// Frames each object has been tracked on, and whether in reverse.
    private var framesTracked: [[Int: Bool]] = []
    /// Where memory of frames far behind the tracking front goes (nil if no temporary file can be made).
    private let spillFile = SpillFile()
    /// The most recently used frame's features, with the work on it every object shares
    /// (repeated clicks on a frame reuse them).
    private var cachedFeatures: (index: Int, features: FrameFeatures)?
    /// Every frame's image-encoder output, so re-propagation after a correction skips the encoder.
    public let featureCache: FrameFeatureCache

    /// Called after each image-encoder pass (for progress and benchmarks).
    public var onImageEncoded: ((Int) -> Void)?

    public init(model: SAM2Model, source: FrameSource, featureCache: FrameFeatureCache = FrameFeatureCache()) {
        self.model = model
        self.source = source
        self.featureCache = featureCache
    }

    // MARK: prompts

    /// `add_new_points_or_box`: clicks (label 1 positive, 0 negative) and/or a box, in video pixels.
    @discardableResult
    public func addPoints(frame: Int, objectId: Int, points: [(x: Double, y: Double)] = [], labels: [Int] = [],
                          box: (x0: Double, y0: Double, x1: Double, y1: Double)? = nil,
                          clearOldPoints: Bool = true) throws -> FrameResult {
        try checkFrame(frame)
        try PromptCheck.points(points, labels: labels, box: box, width: source.videoWidth, height: source.videoHeight)
        if box != nil && !clearOldPoints { throw PredictorError("a box must come with clearing old points (it is placed before any point)") }
        let w = Double(source.videoWidth), h = Double(source.videoHeight)
        var coords = points, allLabels = labels
        if let b = box {
            coords = [(b.x0, b.y0), (b.x1, b.y1)] + coords
            allLabels = [2, 3] + allLabels
        }
        // Checked before the object is created, so a refused prompt leaves no trace.
        let existing = objectIds.firstIndex(of: objectId)
        let old = clearOldPoints ? nil : existing.flatMap { pointInputs[$0][frame] }
        if box == nil && !allLabels.contains(1) && !(old?.labels.contains { $0 == 1 || $0 == 2 } ?? false) {
            throw PromptCheck.onlyNegative(objectId: objectId, frame: frame)
        }
        let obj = objectIndex(for: objectId)
        // Normalise by the video size, then scale to the model's input square (float32, as the official code).
        let s = Float(model.imageSize)
        let scaled = PointPrompt(coords: coords.map { (x: Float($0.x) / Float(w) * s, y: Float($0.y) / Float(h) * s) },
                                 labels: allLabels)
        let prompt = old.map { $0.appending(scaled) } ?? scaled
        pointInputs[obj][frame] = prompt
        maskInputs[obj][frame] = nil
        return try runPrompt(obj: obj, frame: frame, points: prompt, mask: nil)
    }

    /// `add_new_mask`: a binary mask (row-major, `height x width`, nonzero = object).
    @discardableResult
    public func addMask(frame: Int, objectId: Int, mask: [UInt8], width: Int, height: Int) throws -> FrameResult {
        try checkFrame(frame)
        guard width > 0, height > 0, mask.count == width * height else {
            throw PredictorError("mask has \(mask.count) values, expected \(width)x\(height)")
        }
        let obj = objectIndex(for: objectId)
        let s = model.imageSize
        var m = Tensor(shape: [1, height, width], data: mask.map { $0 != 0 ? 1 : 0 })
        if width != s || height != s {
            m = Interpolate.bilinearAntialiased(m, height: s, width: s).map { $0 >= 0.5 ? 1 : 0 }
        }
        maskInputs[obj][frame] = m
        pointInputs[obj][frame] = nil
        return try runPrompt(obj: obj, frame: frame, points: nil, mask: m)
    }

    /// The shared tail of `add_new_points_or_box` / `add_new_mask`.
    private func runPrompt(obj: Int, frame: Int, points: PointPrompt?, mask: Tensor?) throws -> FrameResult {
        let tracked = framesTracked[obj][frame]
        let isInit = tracked == nil
        let reverse = tracked ?? false
        let isCond = isInit || model.config.addAllFramesToCorrectAsCond
        // Clicks refine the object's previous mask on this frame, if it has one.
        var previous: Tensor? = nil
        if points != nil {
            let prev = (isCond ? tempOutputs[obj].condFrameOutputs[frame] : tempOutputs[obj].nonCondFrameOutputs[frame])
                ?? outputs[obj].condFrameOutputs[frame] ?? outputs[obj].nonCondFrameOutputs[frame]
            previous = prev.map { p in
                p.predMasks.map { min(max($0, -32), 32) }.reshaped([1] + p.predMasks.shape)
            }
        }
        let out = try runSingleFrame(obj: obj, frame: frame, isInitCondFrame: isInit, points: points, mask: mask,
                                     reverse: reverse, runMemoryEncoder: false, previousMaskLogits: previous)
        if isCond { tempOutputs[obj].condFrameOutputs[frame] = out } else { tempOutputs[obj].nonCondFrameOutputs[frame] = out }
        return consolidated(frame: frame, isCond: isCond)
    }

    /// Every object's current mask on a frame, newest (temporary) outputs first.
    private func consolidated(frame: Int, isCond: Bool) -> FrameResult {
        let logits = objectIds.indices.map { obj -> Tensor in
            let temp = isCond ? tempOutputs[obj].condFrameOutputs[frame] : tempOutputs[obj].nonCondFrameOutputs[frame]
            let out = temp ?? outputs[obj].condFrameOutputs[frame] ?? outputs[obj].nonCondFrameOutputs[frame]
            return out?.predMasks ?? Tensor(repeating: noObjectScore, shape: [model.imageSize / 4, model.imageSize / 4])
        }
        return result(frame: frame, logits: logits)
    }

    private func result(frame: Int, logits: [Tensor]) -> FrameResult {
        FrameResult(frameIndex: frame, objectIds: objectIds, lowResLogits: logits, videoWidth: source.videoWidth,
                    videoHeight: source.videoHeight, nonOverlapping: model.config.nonOverlapMasks)
    }

    // MARK: propagation

    /// `propagate_in_video`: track every object from `start` (default: the earliest prompted frame)
    /// over up to `maxFrames` frames, forward or in reverse, handing each frame's masks to `body`.
    public func propagate(from start: Int? = nil, maxFrames: Int? = nil, reverse: Bool = false,
                          _ body: (FrameResult) throws -> Void) throws {
        if let maxFrames, maxFrames < 0 { throw PredictorError("maxFrames must not be negative, got \(maxFrames)") }
        if let start { try checkFrame(start) }
        try preflight()
        let n = numFrames
        let first = start ?? outputs.flatMap { $0.condFrameOutputs.keys }.min()!
        try checkFrame(first)
        let count = min(maxFrames ?? n, n)  // more than the video holds means all of it (and cannot overflow)
        let order: [Int]
        if reverse {
            let end = max(first - count, 0)
            order = first > 0 ? Array(stride(from: first, through: end, by: -1)) : []
        } else {
            let end = min(first + count, n - 1)
            order = Array(first...end)
        }
        for frame in order {
            var logits = [Tensor]()
            for obj in objectIds.indices {
                if let cond = outputs[obj].condFrameOutputs[frame] {
                    logits.append(cond.predMasks)
                    if model.config.clearNonCondMemAroundInput { clearNonCondMemory(around: frame, obj: obj) }
                } else {
                    let out = try runSingleFrame(obj: obj, frame: frame, isInitCondFrame: false, points: nil, mask: nil,
                                                 reverse: reverse, runMemoryEncoder: true)
                    outputs[obj].nonCondFrameOutputs[frame] = out
                    logits.append(out.predMasks)
                }
                framesTracked[obj][frame] = reverse
                spillBehind(frame: frame, obj: obj, reverse: reverse)
            }
            try body(result(frame: frame, logits: logits))
        }
    }

    /// Frames tracking has left behind by more than the memory window (`num_maskmem` frames, times
    /// the temporal stride) move their memory features and masks to disk; later passes read them back.
    private func spillBehind(frame: Int, obj: Int, reverse: Bool) {
        guard let spillFile else { return }
        let window = max(model.config.numMaskmem, 1) * max(model.config.memoryTemporalStrideForEval, 1) + 1
        let old = reverse ? frame + window : frame - window
        outputs[obj].nonCondFrameOutputs[old]?.spill(to: spillFile)
    }

    /// `propagate_in_video_preflight`: encode memories of freshly prompted frames and move them
    /// into the memory bank.
    private func preflight() throws {
        guard !objectIds.isEmpty else { throw PromptCheck.noPrompts }
        for obj in objectIds.indices {
            for isCond in [false, true] {
                let temp = isCond ? tempOutputs[obj].condFrameOutputs : tempOutputs[obj].nonCondFrameOutputs
                for (frame, var out) in temp {
                    if out.maskmemFeatures == nil {
                        let high = Interpolate.bilinear(out.predMasks.reshaped([1] + out.predMasks.shape),
                                                        height: model.imageSize, width: model.imageSize)
                        out.maskmemFeatures = model.encodeMemory(features: try features(frame), highResMasks: high,
                                                                 objectScoreLogit: out.objectScoreLogit, isMaskFromPoints: true)
                    }
                    if isCond { outputs[obj].condFrameOutputs[frame] = out } else { outputs[obj].nonCondFrameOutputs[frame] = out }
                    if model.config.clearNonCondMemAroundInput { clearNonCondMemory(around: frame, obj: obj) }
                }
                if isCond { tempOutputs[obj].condFrameOutputs.removeAll() } else { tempOutputs[obj].nonCondFrameOutputs.removeAll() }
            }
            if outputs[obj].condFrameOutputs.isEmpty {
                throw PredictorError("object \(objectIds[obj]) has no points, box or mask on any frame")
            }
            for frame in outputs[obj].condFrameOutputs.keys { outputs[obj].nonCondFrameOutputs[frame] = nil }
        }
    }

    /// `_clear_non_cond_mem_around_input`, per object.
    private func clearNonCondMemory(around frame: Int, obj: Int) {
        let r = model.config.memoryTemporalStrideForEval * model.config.numMaskmem
        for t in (frame - r)...(frame + r) { outputs[obj].nonCondFrameOutputs[t] = nil }
    }

    // MARK: objects

    /// `remove_object` (strict): forget an object and its prompts everywhere.
    public func removeObject(_ objectId: Int) throws {
        guard let obj = objectIds.firstIndex(of: objectId) else {
            throw PromptCheck.unknownObject(objectId, objects: objectIds)
        }
        if objectIds.count == 1 { reset(); return }
        for frame in Set(pointInputs[obj].keys).union(maskInputs[obj].keys) {
            clearPrompts(frame: frame, obj: obj)
        }
        objectIds.remove(at: obj)
        pointInputs.remove(at: obj)
        maskInputs.remove(at: obj)
        outputs.remove(at: obj)
        tempOutputs.remove(at: obj)
        framesTracked.remove(at: obj)
    }

    /// `clear_all_prompts_in_frame`: a conditioning frame without prompts becomes an ordinary tracked frame.
    private func clearPrompts(frame: Int, obj: Int) {
        pointInputs[obj][frame] = nil
        maskInputs[obj][frame] = nil
        tempOutputs[obj].condFrameOutputs[frame] = nil
        tempOutputs[obj].nonCondFrameOutputs[frame] = nil
        if let out = outputs[obj].condFrameOutputs.removeValue(forKey: frame) {
            outputs[obj].nonCondFrameOutputs[frame] = out
            framesTracked[obj][frame] = nil
        }
    }

    /// `clear_all_prompts_in_frame`: forget one object's prompts on a frame; the frame's masks
    /// for every object afterwards. A conditioning frame without prompts becomes an ordinary
    /// tracked frame (its mask stays until propagation passes over it again).
    @discardableResult
    public func clearPrompts(frame: Int, objectId: Int) throws -> FrameResult {
        try checkFrame(frame)
        guard let obj = objectIds.firstIndex(of: objectId) else {
            throw PromptCheck.unknownObject(objectId, objects: objectIds)
        }
        clearPrompts(frame: frame, obj: obj)
        let isCond = tempOutputs.contains { $0.condFrameOutputs[frame] != nil }
        return consolidated(frame: frame, isCond: isCond)
    }

    /// Everything a session's calls have changed, as a value: `restore` puts the predictor back
    /// exactly (an undo). Cheap to take: tensors are shared, never copied.
    public struct State {
        fileprivate var objectIds: [Int]
        fileprivate var pointInputs: [[Int: PointPrompt]]
        fileprivate var maskInputs: [[Int: Tensor]]
        fileprivate var outputs: [ObjectMemory]
        fileprivate var tempOutputs: [ObjectMemory]
        fileprivate var framesTracked: [[Int: Bool]]
    }

    public var state: State {
        get { State(objectIds: objectIds, pointInputs: pointInputs, maskInputs: maskInputs, outputs: outputs,
                    tempOutputs: tempOutputs, framesTracked: framesTracked) }
        set {
            objectIds = newValue.objectIds
            pointInputs = newValue.pointInputs
            maskInputs = newValue.maskInputs
            outputs = newValue.outputs
            tempOutputs = newValue.tempOutputs
            framesTracked = newValue.framesTracked
        }
    }

    /// `reset_state`: drop every object, prompt and result (cached frame features stay).
    public func reset() {
        objectIds = []
        pointInputs = []
        maskInputs = []
        outputs = []
        tempOutputs = []
        framesTracked = []
    }

    /// The stored output of an object on a frame, looked up like the official state dicts
    /// (temporary outputs first): what conformance records read.
    public func storedOutput(frame: Int, objectId: Int) -> FrameOutput? {
        guard let obj = objectIds.firstIndex(of: objectId) else { return nil }
        return tempOutputs[obj].condFrameOutputs[frame] ?? tempOutputs[obj].nonCondFrameOutputs[frame]
            ?? outputs[obj].condFrameOutputs[frame] ?? outputs[obj].nonCondFrameOutputs[frame]
    }

    // MARK: internals

    private func objectIndex(for id: Int) -> Int {
        if let i = objectIds.firstIndex(of: id) { return i }
        // New objects may join at any time, also after tracking started.
        objectIds.append(id)
        pointInputs.append([:])
        maskInputs.append([:])
        outputs.append(ObjectMemory())
        tempOutputs.append(ObjectMemory())
        framesTracked.append([:])
        return objectIds.count - 1
    }

    private func checkFrame(_ frame: Int) throws {
        try PromptCheck.frame(frame, frameCount: numFrames)
    }

    /// Image features of a frame: from the last frame's, the feature cache, or the image encoder.
    func features(_ frame: Int) throws -> FrameFeatures {
        if let c = cachedFeatures, c.index == frame { return c.features }
        let f: FrameFeatures
        if let kept = featureCache.features(of: frame) {
            f = FrameFeatures(kept)
        } else {
            let image = try source.modelInput(at: frame, size: model.imageSize)
            let backbone = model.encodeImage(image)
            featureCache.insert(backbone, for: frame)
            f = FrameFeatures(backbone)
            onImageEncoded?(frame)
        }
        cachedFeatures = (frame, f)
        return f
    }

    /// `_run_single_frame_inference` for one object.
    private func runSingleFrame(obj: Int, frame: Int, isInitCondFrame: Bool, points: PointPrompt?, mask: Tensor?,
                                reverse: Bool, runMemoryEncoder: Bool, previousMaskLogits: Tensor? = nil) throws -> FrameOutput {
        let f = try features(frame)
        let step = model.trackStep(frameIndex: frame, isInitCondFrame: isInitCondFrame, features: f, points: points,
                                   maskInputs: mask, memory: outputs[obj], numFrames: numFrames, reverse: reverse,
                                   runMemoryEncoder: runMemoryEncoder, previousMaskLogits: previousMaskLogits)
        var pred = step.lowResMasks.reshaped([step.lowResMasks.shape[1], step.lowResMasks.shape[2]])
        if model.config.fillHoleArea > 0 { pred = HoleFilling.fill(pred, maxArea: model.config.fillHoleArea) }
        return FrameOutput(maskmemFeatures: step.maskmemFeatures, predMasks: pred, objPtr: step.objPtr,
                           objectScoreLogit: step.objectScoreLogit)
    }
}
