import Foundation
import OrderedCollections
import SAM2Checkpoint
import SAM2Tensor

/// A frame's image features in the form the tracking step consumes.
public struct FrameFeatures {
    public let backbone: BackboneFeatures
    /// Lowest-resolution features and position encoding as `[HW, C]` tokens.
    let visionTokens: Tensor
    let visionPosTokens: Tensor

    /// Work on this frame that is the same for every object, done by the first object that needs it.
    let shared = SharedFrameWork()

    public init(_ backbone: BackboneFeatures) {
        self.backbone = backbone
        visionTokens = backbone.visionFeatures.chwToTokens()
        visionPosTokens = backbone.positions[backbone.positions.count - 1].chwToTokens()
    }

    var highRes: (s0: Tensor, s1: Tensor)? {
        backbone.levels.count > 1 ? (backbone.levels[0], backbone.levels[1]) : nil
    }
}

/// Object-independent intermediate results on one frame: with k objects the frame costs one image
/// encoder pass, one start of memory attention and one projection of the frame for the memory
/// encoder, plus k of the rest; repeated clicks on a frame reuse them too.
final class SharedFrameWork {
    /// `MemoryAttention.start`: the frame after the first layer's self-attention.
    var memoryAttentionStart: Tensor?
    /// The memory encoder's `pix_feat_proj` of the frame.
    var memoryEncoderPixels: Tensor?
    /// The frame plus `no_mem_embed`: what every object's clicks on an initial conditioning frame see.
    var noMemoryPixels: Tensor?
    /// The mask decoder's first image-side projections of `noMemoryPixels`, which every such click reuses.
    var noMemoryProjections: Tensor?

    /// The slot's value, computed the first time it is asked for.
    func value(_ slot: ReferenceWritableKeyPath<SharedFrameWork, Tensor?>, _ compute: () -> Tensor) -> Tensor {
        if let v = self[keyPath: slot] { return v }
        let v = compute()
        self[keyPath: slot] = v
        return v
    }
}

extension SAM2Model {
    /// What `track_step` produces for one object on one frame.
    struct StepOutput {
        var lowResMasks: Tensor
        var objPtr: Tensor
        var objectScoreLogit: Float
        var maskmemFeatures: Tensor?
    }

    /// `_use_multimask`.
    func useMultimask(isInitCondFrame: Bool, points: PointPrompt?) -> Bool {
        let n = points?.labels.count ?? 0
        return config.multimaskOutputInSam && (isInitCondFrame || config.multimaskOutputForTracking)
            && config.multimaskMinPtNum <= n && n <= config.multimaskMaxPtNum
    }

    /// `track_step`: memory-conditioned SAM heads on one frame for one object, then (optionally)
    /// the memory encoder on the predicted mask.
    func trackStep(frameIndex: Int, isInitCondFrame: Bool, features f: FrameFeatures,
                   points: PointPrompt?, maskInputs: Tensor?, memory: ObjectMemory, numFrames: Int,
                   reverse: Bool, runMemoryEncoder: Bool, previousMaskLogits: Tensor? = nil) -> StepOutput {
        let sam: SAMOutput
        if let maskInputs, config.useMaskInputAsOutputWithoutSam {
            sam = useMaskAsOutput(f.visionTokens, highRes: f.highRes, mask: maskInputs)
        } else {
            let pix = conditionOnMemory(frameIndex: frameIndex, isInitCondFrame: isInitCondFrame, features: f,
                                        memory: memory, numFrames: numFrames, reverse: reverse)
            // Clicks on an initial conditioning frame see only the frame, and are often many:
            // the part of the decoder's work that only the frame decides is done once.
            let frameOnly = isInitCondFrame && config.numMaskmem > 0 && config.directlyAddNoMemEmbed
            let projections = frameOnly ? f.shared.value(\.noMemoryProjections) { firstBlockProjections(of: pix) } : nil
            sam = forwardSAMHeads(pix, points: points, maskInputs: previousMaskLogits ?? maskInputs, highRes: f.highRes,
                                  multimask: useMultimask(isInitCondFrame: isInitCondFrame, points: points),
                                  frameProjections: projections)
        }
        var out = StepOutput(lowResMasks: sam.lowResMasks, objPtr: sam.objPtr,
                             objectScoreLogit: sam.objectScoreLogit, maskmemFeatures: nil)
        if runMemoryEncoder && config.numMaskmem > 0 {
            out.maskmemFeatures = encodeMemory(features: f, highResMasks: highResMasks(of: sam),
                                               objectScoreLogit: sam.objectScoreLogit, isMaskFromPoints: points != nil)
        }
        return out
    }

    /// `_encode_new_memory`, plus the predictor's bfloat16 storage rounding.
    func encodeMemory(features f: FrameFeatures, highResMasks: Tensor, objectScoreLogit: Float, isMaskFromPoints: Bool) -> Tensor {
        let binarize = config.binarizeMaskFromPtsForMemEnc && isMaskFromPoints
        let scale = Float(config.sigmoidScaleForMemEnc), bias = Float(config.sigmoidBiasForMemEnc)
        let mask = binarize ? highResMasks.map { ($0 > 0 ? 1 : 0) * scale + bias } : highResMasks.sigmoid(scale: scale, bias: bias)
        var (feats, pos) = timed("memory_encoder") { () -> (Tensor, Tensor) in
            let pixels = f.shared.value(\.memoryEncoderPixels) { memoryEncoder.projectPixels(f.backbone.visionFeatures) }
            return memoryEncoder(projectedPixels: pixels, mask: mask)
        }
        trace?("memory_encoder", ["vision_features": feats, "vision_pos_enc.0": pos])
        if let memoryFeaturesOverride { feats = memoryFeaturesOverride(feats) }
        if let noObjEmbedSpatial, !(objectScoreLogit > 0) {
            feats = feats.addingPerChannel(noObjEmbedSpatial.data)
        }
        if let spatialPerceiver {
            // EdgeTAM keeps the perceiver's tokens `[512, memDim]` as the frame's memory.
            feats = timed("spatial_perceiver") { spatialPerceiver(feats, pos: pos) }
            trace?("spatial_perceiver", ["latents": feats])
        }
        return feats.map(roundToBFloat16)
    }

    /// The memory encoder's position encoding (the same for every frame and object).
    var maskmemPosition: Tensor {
        PositionEncoding.sine(numPosFeats: memoryEncoder.numPosFeats, height: embeddingSize, width: embeddingSize,
                              temperature: memoryEncoder.temperature)
    }

    /// Each memory frame's position tokens: the memory encoder's map, or the perceiver's (zeros
    /// for the global latents, the sine of the 2D latents' grid), which depend on no data.
    var memoryPositionTokens: Tensor { spatialPerceiver?.positions ?? maskmemPosition.chwToTokens() }

    /// `_prepare_memory_conditioned_features`: gather the memory bank (conditioning frames, up to
    /// `num_maskmem - 1` recent frames, object pointers) and run memory attention over it.
    /// Returns the conditioned frame as `[HW, C]` tokens, the layout the mask decoder works in.
    func conditionOnMemory(frameIndex t: Int, isInitCondFrame: Bool, features f: FrameFeatures,
                           memory: ObjectMemory, numFrames: Int, reverse: Bool) -> Tensor {
        let c = hiddenDim
        let numMaskmem = config.numMaskmem
        if numMaskmem == 0 { return f.visionTokens }
        if isInitCondFrame {
            if config.directlyAddNoMemEmbed {
                return f.shared.value(\.noMemoryPixels) { f.visionTokens.addingRow(noMemEmbed.data) }
            }
            let mem = Tensor(shape: [1, c], data: noMemEmbed.data)
            let memPos = Tensor(shape: [1, c], data: noMemPosEnc.data)
            let out = memoryAttention(started: startMemoryAttention(f), currentPos: f.visionPosTokens, memory: mem,
                                      memoryPos: memPos, objectPointerTokens: 0)
            trace?("memory_attention", ["out": out])
            return out
        }

        let (selected, unselected) = selectClosestCondFrames(t, memory.condFrameOutputs, maxCondFrames: config.maxCondFramesInAttn)
        // (temporal position, output): conditioning frames at 0, then the recent frames.
        var tPosAndPrevs: [(Int, FrameOutput?)] = selected.values.map { (0, $0) }
        let stride = config.memoryTemporalStrideForEval
        for tPos in 1..<numMaskmem {
            let tRel = numMaskmem - tPos
            let prev: Int
            if tRel == 1 {
                prev = reverse ? t + tRel : t - tRel
            } else if !reverse {
                prev = floorDiv(t - 2, stride) * stride - (tRel - 2) * stride
            } else {
                prev = -floorDiv(-(t + 2), stride) * stride + (tRel - 2) * stride
            }
            tPosAndPrevs.append((tPos, memory.nonCondFrameOutputs[prev] ?? unselected[prev]))
        }
        let posEnc = memoryPositionTokens
        var mems = [Tensor](), poss = [Tensor]()
        for (tPos, prev) in tPosAndPrevs {
            guard let prev, let feats = prev.maskmemFeatures else { continue }
            mems.append(feats.rank == 2 ? feats : feats.chwToTokens())  // perceiver tokens, or a map
            let tpos = Array(maskmemTposEnc.data[((numMaskmem - tPos - 1) * memDim)..<((numMaskmem - tPos) * memDim)])
            poss.append(posEnc.addingRow(tpos))
        }

        let memoryFrames = mems.count
        var objectPointerTokens = 0
        if config.useObjPtrsInEncoder {
            let maxPtrs = min(numFrames, config.maxObjPtrsInEncoder)
            let ptrCond = config.onlyObjPtrsInThePastForEval
                ? selected.filter { reverse ? $0.key >= t : $0.key <= t } : selected
            var posAndPtrs: [(Int, Tensor)] = ptrCond.map { key, out in
                (config.useSignedTposEncToObjPtrs ? (t - key) * (reverse ? -1 : 1) : abs(t - key), out.objPtr)
            }
            if maxPtrs > 1 {
                for tDiff in 1..<maxPtrs {
                    let tt = reverse ? t + tDiff : t - tDiff
                    if tt < 0 || tt >= numFrames { break }
                    if let out = memory.nonCondFrameOutputs[tt] ?? unselected[tt] { posAndPtrs.append((tDiff, out.objPtr)) }
                }
            }
            if !posAndPtrs.isEmpty {
                let ptrs = Tensor.concatRows(posAndPtrs.map { $0.1.reshaped([1, c]) })
                var objPos: Tensor
                if config.addTposEncToObjPtrs {
                    let tDiffMax = Float(maxPtrs - 1)
                    // A one-frame video has no temporal range; the official code would divide by zero.
                    let positions = posAndPtrs.map { tDiffMax > 0 ? Float($0.0) / tDiffMax : 0 }
                    objPos = PositionEncoding.sine1D(positions, dim: config.projTposEncInObjPtrs ? c : memDim)
                    if let objPtrTposProj { objPos = objPtrTposProj(objPos) }
                } else {
                    objPos = Tensor(zeros: [posAndPtrs.count, memDim])
                }
                // Split each C-wide pointer into C/memDim tokens of the memory width.
                let split = c / memDim
                let ptrTokens = ptrs.reshaped([posAndPtrs.count * split, memDim])
                var posTokens = [Float]()
                for i in 0..<posAndPtrs.count { for _ in 0..<split { posTokens += objPos.row(i) } }
                mems.append(ptrTokens)
                poss.append(Tensor(shape: [posAndPtrs.count * split, memDim], data: posTokens))
                objectPointerTokens = ptrTokens.shape[0]
            }
        }
        let memory = Tensor.concatRows(mems)
        let memoryPos = Tensor.concatRows(poss)
        let out = timed("memory_attention") {
            memoryAttention(started: startMemoryAttention(f), currentPos: f.visionPosTokens, memory: memory, memoryPos: memoryPos,
                            objectPointerTokens: objectPointerTokens, memoryFrames: memoryFrames)
        }
        trace?("memory_attention", ["out": out])
        return out
    }
}

extension SAM2Model {
    /// `MemoryAttention.start` on a frame, once for all its objects.
    func startMemoryAttention(_ f: FrameFeatures) -> Tensor {
        f.shared.value(\.memoryAttentionStart) { memoryAttention.start(current: f.visionTokens, currentPos: f.visionPosTokens) }
    }
}

/// Python's floor division.
@inline(__always)
func floorDiv(_ a: Int, _ b: Int) -> Int {
    let q = a / b
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
}

/// `select_closest_cond_frames`: at most `maxCondFrames` conditioning frames (-1 = all): the
/// closest before, the closest at or after, then the temporally nearest others.
func selectClosestCondFrames(_ t: Int, _ cond: OrderedDictionary<Int, FrameOutput>, maxCondFrames: Int)
    -> (selected: OrderedDictionary<Int, FrameOutput>, unselected: OrderedDictionary<Int, FrameOutput>) {
    if maxCondFrames == -1 || cond.count <= maxCondFrames { return (cond, [:]) }
    var selected = OrderedDictionary<Int, FrameOutput>()
    if let before = cond.keys.filter({ $0 < t }).max() { selected[before] = cond[before] }
    if let after = cond.keys.filter({ $0 >= t }).min() { selected[after] = cond[after] }
    let remaining = maxCondFrames - selected.count
    let others = cond.keys.filter { selected[$0] == nil }
    // Python's sort is stable: ties keep dict order.
    let nearest = others.enumerated().sorted { a, b in
        let da = abs(a.element - t), db = abs(b.element - t)
        return da != db ? da < db : a.offset < b.offset
    }.prefix(max(remaining, 0)).map(\.element)
    for k in nearest { selected[k] = cond[k] }
    var unselected = OrderedDictionary<Int, FrameOutput>()
    for (k, v) in cond where selected[k] == nil { unselected[k] = v }
    return (selected, unselected)
}
