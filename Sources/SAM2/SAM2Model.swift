import Foundation
import SAM2Checkpoint
import SAM2Tensor

/// Mask logits the official code uses for "no object here".
public let noObjectScore: Float = -1024

/// The SAM 2 model (`SAM2Base`): image encoder, SAM prompt encoder and mask decoder,
/// memory encoder, memory attention, and the learned embeddings that tie them together.
public final class SAM2Model {
    public let config: SAM2Config
    let imageEncoder: ImageEncoder
    let promptEncoder: PromptEncoder
    let maskDecoder: MaskDecoder
    let memoryEncoder: MemoryEncoder
    let memoryAttention: MemoryAttention
    let objPtrProj: MLP?             // Linear (1-layer) or 3-layer MLP; nil = identity
    let objPtrTposProj: Linear?      // nil = identity
    let maskDownsample: Conv2d?      // 4x4/4 conv for mask prompts' object pointers
    let maskmemTposEnc: Tensor       // [numMaskmem, 1, 1, memDim]
    let noMemEmbed: Tensor, noMemPosEnc: Tensor  // [1, 1, C]
    let noObjPtr: Tensor?            // [1, C]
    let noObjEmbedSpatial: Tensor?   // [1, memDim]
    let spatialPerceiver: PerceiverResampler?  // EdgeTAM: each memory frame as 512 tokens
    /// The dense prompt embedding's part of the mask decoder's first image-side projections.
    let denseFirstBlockProjection: PromptEncoder.DenseProjection
    /// FPN levels 0 and 1's lateral convs composed with `conv_s0` / `conv_s1` (when they qualify).
    let highResLaterals: [Int: Conv2d]?

    /// Sees every module call's outputs, named like the official modules and their outputs
    /// (`image_encoder`: `backbone_fpn.0`, …; `mask_decoder`: `out0`…`out3`): layer-by-layer parity tests hook here.
    public var trace: ((_ module: String, _ outputs: [String: Tensor]) -> Void)?

    /// Replaces the memory encoder's output before it is stored (bfloat16-rounded). Layer tests use
    /// it to feed the official memory features forward, so a bfloat16 rounding that falls the other
    /// way on one element (a 2⁻⁸ step) cannot hide or fake a difference further down.
    public var memoryFeaturesOverride: ((Tensor) -> Tensor)?

    /// Wall time spent per stage (image_encoder, memory_attention, mask_decoder, memory_encoder), for benchmarks.
    public var stageSeconds: [String: Double] = [:]
    /// Matrix-product FLOPs counted per stage (exact when stages do not overlap: one object, no
    /// concurrent prompts).
    public var stageFlops: [String: Double] = [:]

    @inline(__always)
    func timed<T>(_ stage: String, _ body: () -> T) -> T {
        let t0 = DispatchTime.now().uptimeNanoseconds, f0 = GEMM.flops
        let r = body()
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9, flops = GEMM.flops - f0
        stageLock.lock()
        stageSeconds[stage, default: 0] += seconds
        stageFlops[stage, default: 0] += flops
        stageLock.unlock()
        return r
    }
    /// Prompts may be decoded on several threads at once (the mask generator).
    private let stageLock = NSLock()

    public let hiddenDim: Int
    public let memDim: Int
    public var imageSize: Int { config.imageSize }
    var embeddingSize: Int { config.imageSize / config.backboneStride }

    /// Build the model a config describes from a checkpoint's tensors; every tensor must be used,
    /// with the shape the config implies.
    public init(config c: SAM2Config, weights tensors: [String: Tensor]) throws {
        try c.validate()
        config = c
        let w = WeightStore(tensors)
        hiddenDim = c.imageEncoder.neck.dModel
        memDim = c.memoryEncoder.outDim
        imageEncoder = try ImageEncoder(w, "image_encoder", c.imageEncoder)
        memoryAttention = try MemoryAttention(w, "memory_attention", c.memoryAttention)
        memoryEncoder = try MemoryEncoder(w, "memory_encoder", c.memoryEncoder)
        spatialPerceiver = try c.spatialPerceiver.map { try PerceiverResampler(w, "spatial_perceiver", $0) }
        maskmemTposEnc = try w.take("maskmem_tpos_enc", [c.numMaskmem, 1, 1, memDim])
        noMemEmbed = try w.take("no_mem_embed", [1, 1, hiddenDim])
        noMemPosEnc = try w.take("no_mem_pos_enc", [1, 1, hiddenDim])
        noObjPtr = c.predObjScores && c.useObjPtrsInEncoder ? try w.take("no_obj_ptr", [1, hiddenDim]) : nil
        noObjEmbedSpatial = c.noObjEmbedSpatial ? try w.take("no_obj_embed_spatial", [1, memDim]) : nil
        maskDownsample = c.useObjPtrsInEncoder ? try Conv2d(w, "mask_downsample", 1, 1, kernel: 4, stride: 4) : nil
        let embSize = c.imageSize / c.backboneStride
        promptEncoder = try PromptEncoder(w, "sam_prompt_encoder", embedDim: hiddenDim, embeddingSize: embSize, inputImageSize: c.imageSize)
        maskDecoder = try MaskDecoder(w, "sam_mask_decoder", dim: hiddenDim, config: c)
        let firstBlock = maskDecoder.transformer.firstBlockProjectionWeights
        denseFirstBlockProjection = promptEncoder.folding(weight: firstBlock.weight, bias: firstBlock.bias)
        if c.useHighResFeaturesInSam, let s0 = maskDecoder.convS0, let s1 = maskDecoder.convS1 {
            highResLaterals = imageEncoder.neck.lateralsComposed(with: [0: s0, 1: s1])
        } else {
            highResLaterals = nil
        }
        if c.useObjPtrsInEncoder {
            objPtrProj = c.useMlpForObjPtrProj
                ? try MLP(w, "obj_ptr_proj", input: hiddenDim, hidden: hiddenDim, output: hiddenDim, numLayers: 3)
                : MLP(layers: [try Linear(w, "obj_ptr_proj", hiddenDim, hiddenDim)], activation: .relu, sigmoidOutput: false)
        } else {
            objPtrProj = nil
        }
        objPtrTposProj = c.projTposEncInObjPtrs ? try Linear(w, "obj_ptr_tpos_proj", hiddenDim, memDim) : nil
        try w.finish()
    }

    /// Load a checkpoint file (`.pt` or `.safetensors`) for a config.
    public convenience init(config: SAM2Config, checkpointPath: String) throws {
        try self.init(config: config, weights: try Checkpoint.load(path: checkpointPath))
    }

    // MARK: image features

    /// `forward_image`: run the image encoder on a `[3, S, S]` frame and pre-project the
    /// high-resolution levels with the mask decoder's `conv_s0` / `conv_s1`.
    public func encodeImage(_ image: Tensor) -> BackboneFeatures {
        encodeImageWithIntermediates(image).features
    }

    /// The same, also returning the trunk outputs and, when tracing (parity tests), the FPN levels
    /// before projection.
    public func encodeImageWithIntermediates(_ image: Tensor) -> (features: BackboneFeatures, trunk: [Tensor], fpn: [Tensor]) {
        precondition(image.shape == [3, imageSize, imageSize], "image must be [3, \(imageSize), \(imageSize)], got \(image.shape)")
        if trace == nil, let highResLaterals {
            // The high-resolution levels straight from the trunk through the composed convs.
            let (trunk, levels, pos) = timed("image_encoder") { imageEncoder(image, replacing: highResLaterals) }
            return (BackboneFeatures(levels: Array(levels.suffix(3)), positions: Array(pos.suffix(3))), trunk, [])
        }
        let (trunk, fpn, pos) = timed("image_encoder") { imageEncoder(image) }
        if let trace {
            trace("trunk", Dictionary(uniqueKeysWithValues: trunk.enumerated().map { ("out\($0)", $1) }))
            var t = ["vision_features": fpn[fpn.count - 1]]
            for (i, f) in fpn.enumerated() { t["backbone_fpn.\(i)"] = f; t["vision_pos_enc.\(i)"] = pos[i] }
            trace("image_encoder", t)
        }
        var levels = fpn
        if config.useHighResFeaturesInSam, let s0 = maskDecoder.convS0, let s1 = maskDecoder.convS1 {
            levels[0] = s0(levels[0])
            levels[1] = s1(levels[1])
        }
        let n = config.useHighResFeaturesInSam ? 3 : 1
        return (BackboneFeatures(levels: Array(levels.suffix(n)), positions: Array(pos.suffix(n))), trunk, fpn)
    }

    // MARK: SAM heads

    /// The outputs of `_forward_sam_heads` / `_use_mask_as_output` that tracking keeps.
    struct SAMOutput {
        var lowResMasks: Tensor    // [1, S/4, S/4]
        /// `[1, S, S]` when it is not simply the low-res mask upsampled (mask prompts); else nil and
        /// computed only if the memory encoder needs it (`highResMasks(of:)`).
        var highResMasks: Tensor?
        var objPtr: Tensor         // [C]
        var objectScoreLogit: Float
        var ious: [Float]
    }

    /// `_forward_sam_heads`: prompt encoder + mask decoder on (memory-conditioned) frame features,
    /// given as `[HW, C]` tokens. `frameProjections`: the features' `firstBlockProjections`, when
    /// they are kept for repeated clicks.
    func forwardSAMHeads(_ features: Tensor, points: PointPrompt?, maskInputs: Tensor?,
                         highRes: (s0: Tensor, s1: Tensor)?, multimask: Bool, frameProjections: Tensor? = nil) -> SAMOutput {
        // No clicks: a single padding point (label -1).
        let pts = points ?? PointPrompt(coords: [(0, 0)], labels: [-1])
        var maskPrompt: Tensor? = nil
        if let maskInputs {
            let side = promptEncoder.maskInputSize
            maskPrompt = maskInputs.shape[1] == side && maskInputs.shape[2] == side
                ? maskInputs : Interpolate.bilinearAntialiased(maskInputs, height: side, width: side)
        }
        let (sparse, dec) = decodeMasks(features, points: pts, maskPrompt: maskPrompt, highRes: highRes,
                                        multimask: multimask, frameProjections: frameProjections)
        if let trace {  // the dense embedding on its own, which the decoder's path never forms
            let side = embeddingSize, dense = promptEncoder(points: pts, mask: maskPrompt).dense
            trace("prompt_encoder", ["out0": sparse, "out1": dense.tokensToCHW(height: side, width: side)])
        }
        trace?("mask_decoder", ["out0": dec.masks, "out1": Tensor(shape: [dec.ious.count], data: dec.ious),
                                "out2": dec.samTokens, "out3": Tensor(shape: [1], data: [dec.objectScoreLogit])])
        var lowRes = dec.masks
        let appearing = !config.predObjScores || dec.objectScoreLogit > 0
        if config.predObjScores && !appearing {
            lowRes = Tensor(repeating: noObjectScore, shape: lowRes.shape)
        }
        var best = 0
        var token = dec.samTokens.rows(0..<1)
        if multimask {
            best = argmax(dec.ious)
            if dec.samTokens.shape[0] > 1 { token = dec.samTokens.rows(best..<(best + 1)) }
        }
        let lowBest = lowRes.rows(best..<(best + 1))
        var objPtr = objPtrProj.map { $0(token) } ?? token
        if config.predObjScores, let noObjPtr {
            let lambda: Float = config.softNoObjPtr ? 1 / (1 + expf(-dec.objectScoreLogit)) : (appearing ? 1 : 0)
            objPtr = mixNoObjectPointer(objPtr, lambda: lambda, noObjPtr: noObjPtr)
        }
        return SAMOutput(lowResMasks: lowBest, highResMasks: nil, objPtr: objPtr.reshaped([hiddenDim]),
                         objectScoreLogit: dec.objectScoreLogit, ious: dec.ious)
    }

    /// The prompt encoder and mask decoder proper: sparse tokens of `points` (plus the padding
    /// point), the dense embedding of `maskPrompt` (`[1, 4h, 4w]` logits) or `no_mask_embed`, and the
    /// decoder on `[HW, C]` image tokens. `frameProjections`: the tokens' `firstBlockProjections`,
    /// when they are kept for repeated prompts on the same image.
    func decodeMasks(_ features: Tensor, points: PointPrompt, maskPrompt: Tensor?, highRes: (s0: Tensor, s1: Tensor)?,
                     multimask: Bool, frameProjections: Tensor? = nil) -> (sparse: Tensor, output: MaskDecoderOutput) {
        timed("mask_decoder") { () -> (Tensor, MaskDecoderOutput) in
            let sparse = promptEncoder.sparseTokens(points)
            let image: TwoWayImage
            if let frameProjections {
                let (src, channels) = promptEncoder.denseAddedWithChannels(to: features, mask: maskPrompt)
                image = .projected(src, frame: frameProjections, dense: denseFirstBlockProjection.term(channels: channels))
            } else {
                let (src, srcPlusPE) = promptEncoder.denseAdded(to: features, mask: maskPrompt)
                image = .tokens(src, plusPE: srcPlusPE)
            }
            return (sparse, maskDecoder(image: image, imagePETokens: promptEncoder.densePETokens, sparse: sparse,
                                        multimask: multimask, highRes: highRes))
        }
    }

    /// The mask decoder's first image-side projections of `[HW, C]` image tokens (see `decodeMasks`).
    func firstBlockProjections(of features: Tensor) -> Tensor {
        maskDecoder.transformer.firstBlockProjections(image: features, imagePE: promptEncoder.densePETokens)
    }

    /// The high-resolution mask the memory encoder takes. Only the chosen mask is upsampled:
    /// channels are resampled independently, so this equals the official upsample-all-then-pick.
    func highResMasks(of sam: SAMOutput) -> Tensor {
        sam.highResMasks ?? Interpolate.bilinear(sam.lowResMasks, height: imageSize, width: imageSize)
    }

    /// `fixed_no_obj_ptr`: `λ·ptr + (1-λ)·no_obj_ptr` (or just the additive part).
    private func mixNoObjectPointer(_ ptr: Tensor, lambda: Float, noObjPtr: Tensor) -> Tensor {
        var out = ptr
        for i in 0..<out.count {
            if config.fixedNoObjPtr { out.data[i] = lambda * out.data[i] }
            out.data[i] = out.data[i] + (1 - lambda) * noObjPtr.data[i]
        }
        return out
    }

    /// `_use_mask_as_output`: a mask prompt becomes the output directly (logits ±10); the object
    /// pointer still comes from the SAM heads, fed the mask downsampled 4x.
    func useMaskAsOutput(_ features: Tensor, highRes: (s0: Tensor, s1: Tensor)?, mask: Tensor) -> SAMOutput {
        let high = mask.map { $0 * 20 - 10 }
        let low = Interpolate.bilinearAntialiased(high, height: mask.shape[1] / 4, width: mask.shape[2] / 4)
        var objPtr: Tensor
        if let maskDownsample {
            objPtr = forwardSAMHeads(features, points: nil, maskInputs: maskDownsample(mask), highRes: highRes, multimask: false).objPtr
        } else {
            objPtr = Tensor(zeros: [hiddenDim])
        }
        let appearing = mask.data.contains { $0 > 0 }
        let lambda: Float = appearing ? 1 : 0
        if config.predObjScores, let noObjPtr {
            objPtr = mixNoObjectPointer(objPtr.reshaped([1, hiddenDim]), lambda: lambda, noObjPtr: noObjPtr).reshaped([hiddenDim])
        }
        return SAMOutput(lowResMasks: low, highResMasks: high, objPtr: objPtr, objectScoreLogit: 20 * lambda - 10, ious: [1])
    }
}
