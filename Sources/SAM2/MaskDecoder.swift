import SAM2Checkpoint
import SAM2Tensor

/// What the mask decoder returns for one object on one frame.
struct MaskDecoderOutput {
    var masks: Tensor              // [M, 4h, 4w] low-res logits (M = 3 with multimask output, else 1)
    var ious: [Float]              // [M]
    var samTokens: Tensor          // [M', D] output tokens for the object pointer
    var objectScoreLogit: Float
}

/// SAM 2's mask decoder: two-way transformer over prompt tokens and the frame embedding,
/// upscaling with high-resolution skip features, hypernetwork masks, IoU and object-score heads.
struct MaskDecoder {
    let dim: Int
    let numMaskTokens: Int
    let transformer: TwoWayTransformer
    let iouToken: Tensor, maskTokens: Tensor, objScoreToken: Tensor?
    let upscale1: (weight: Tensor, bias: Tensor), upscaleNorm: LayerNorm, upscale2: (weight: Tensor, bias: Tensor)
    let convS0: Conv2d?, convS1: Conv2d?
    let hypernetworks: [MLP]
    let iouHead: MLP
    let objScoreHead: MLP?        // a 3-layer MLP, or (as a 1-layer MLP) a plain linear
    let dynamicMultimask: Bool, stabilityDelta: Float, stabilityThresh: Float
    let useMultimaskTokenForObjPtr: Bool

    init(_ w: WeightStore, _ prefix: String, dim: Int, config c: SAM2Config) throws {
        self.dim = dim
        numMaskTokens = 4
        transformer = try TwoWayTransformer(w, "\(prefix).transformer", dim: dim)
        iouToken = try w.take("\(prefix).iou_token.weight", [1, dim])
        maskTokens = try w.take("\(prefix).mask_tokens.weight", [numMaskTokens, dim])
        objScoreToken = c.predObjScores ? try w.take("\(prefix).obj_score_token.weight", [1, dim]) : nil
        upscale1 = (try w.take("\(prefix).output_upscaling.0.weight", [dim, dim / 4, 2, 2]),
                    try w.take("\(prefix).output_upscaling.0.bias", [dim / 4]))
        upscaleNorm = try LayerNorm(w, "\(prefix).output_upscaling.1", dim / 4, eps: 1e-6)
        upscale2 = (try w.take("\(prefix).output_upscaling.3.weight", [dim / 4, dim / 8, 2, 2]),
                    try w.take("\(prefix).output_upscaling.3.bias", [dim / 8]))
        if c.useHighResFeaturesInSam {
            convS0 = try Conv2d(w, "\(prefix).conv_s0", dim, dim / 8, kernel: 1)
            convS1 = try Conv2d(w, "\(prefix).conv_s1", dim, dim / 4, kernel: 1)
        } else {
            convS0 = nil; convS1 = nil
        }
        hypernetworks = try (0..<numMaskTokens).map {
            try MLP(w, "\(prefix).output_hypernetworks_mlps.\($0)", input: dim, hidden: dim, output: dim / 8, numLayers: 3)
        }
        iouHead = try MLP(w, "\(prefix).iou_prediction_head", input: dim, hidden: 256, output: numMaskTokens,
                          numLayers: 3, sigmoidOutput: c.iouPredictionUseSigmoid)
        if c.predObjScores {
            if c.predObjScoresMlp {
                objScoreHead = try MLP(w, "\(prefix).pred_obj_score_head", input: dim, hidden: dim, output: 1, numLayers: 3)
            } else {
                let lin = try Linear(w, "\(prefix).pred_obj_score_head", dim, 1)
                objScoreHead = MLP(layers: [lin], activation: .relu, sigmoidOutput: false)
            }
        } else {
            objScoreHead = nil
        }
        let extra = c.samMaskDecoderExtraArgs
        dynamicMultimask = extra.dynamicMultimaskViaStability
        stabilityDelta = Float(extra.dynamicMultimaskStabilityDelta)
        stabilityThresh = Float(extra.dynamicMultimaskStabilityThresh)
        useMultimaskTokenForObjPtr = c.useMultimaskTokenForObjPtr
    }

    /// `image`, `imagePETokens`, `dense`: `[hw, D]` tokens of the square embedding; `sparse`: `[T, D]`;
    /// `highRes`: (s0, s1) already projected.
    func callAsFunction(image: Tensor, imagePETokens: Tensor, sparse: Tensor, dense: Tensor,
                        multimask: Bool, highRes: (s0: Tensor, s1: Tensor)?) -> MaskDecoderOutput {
        let h = Int(Double(image.shape[0]).squareRoot()), w = h
        precondition(h * w == image.shape[0] && image.shape == dense.shape && image.shape == imagePETokens.shape)
        var outputTokens = [iouToken, maskTokens]
        if let objScoreToken { outputTokens.insert(objScoreToken, at: 0) }
        let s = objScoreToken == nil ? 0 : 1
        let tokens = Tensor.concatRows(outputTokens + [sparse])

        let src = image + dense
        let (hs, srcOut) = transformer(image: src, imagePE: imagePETokens, points: tokens)

        // Upscale the image tokens 4x, adding the high-resolution FPN features on the way.
        var up = Conv.convTranspose2x2(tokens: srcOut, height: h, width: w, weight: upscale1.weight, bias: upscale1.bias)
        if let highRes { up += highRes.s1 }
        up = upscaleNorm.channels(up).gelu()
        up = Conv.convTranspose2x2(up, weight: upscale2.weight, bias: upscale2.bias)
        up = highRes.map { up.gelu(adding: $0.s0) } ?? up.gelu()

        // One hypernetwork per mask token turns it into weights over the upscaled channels.
        let hyper = Tensor.concatRows((0..<numMaskTokens).map { hypernetworks[$0](hs.rows((s + 1 + $0)..<(s + 2 + $0))) })
        let uh = up.shape[1], uw = up.shape[2]
        let allMasks = GEMM.matmul(hyper, up.reshaped([dim / 8, uh * uw])).reshaped([numMaskTokens, uh, uw])
        let allIous = iouHead(hs.rows(s..<(s + 1))).data
        let score = objScoreHead.map { $0(hs.rows(0..<1)).data[0] } ?? 10
        let maskTokensOut = hs.rows((s + 1)..<(s + 1 + numMaskTokens))

        var masks: Tensor, ious: [Float]
        if multimask {
            masks = allMasks.rows(1..<numMaskTokens)
            ious = Array(allIous[1...])
        } else if dynamicMultimask {
            (masks, ious) = selectByStability(allMasks, allIous)
        } else {
            masks = allMasks.rows(0..<1)
            ious = [allIous[0]]
        }
        let samTokens = multimask && useMultimaskTokenForObjPtr ? maskTokensOut.rows(1..<numMaskTokens) : maskTokensOut.rows(0..<1)
        return MaskDecoderOutput(masks: masks, ious: ious, samTokens: samTokens, objectScoreLogit: score)
    }

    /// `_dynamic_multimask_via_stability`: keep the single-mask output when it is stable under
    /// ±delta thresholds, otherwise take the multimask output with the best predicted IoU.
    private func selectByStability(_ all: Tensor, _ ious: [Float]) -> (Tensor, [Float]) {
        let best = 1 + argmax(Array(ious[1...]))
        let single = all.rows(0..<1)
        var inter = 0, union = 0
        for v in single.data {
            if v > stabilityDelta { inter += 1 }
            if v > -stabilityDelta { union += 1 }
        }
        let stability: Float = union > 0 ? Float(inter) / Float(union) : 1
        return stability >= stabilityThresh ? (single, [ious[0]]) : (all.rows(best..<(best + 1)), [ious[best]])
    }
}

/// Index of the first maximum, like `torch.argmax`.
func argmax(_ v: [Float]) -> Int {
    var best = 0
    for i in 1..<v.count where v[i] > v[best] { best = i }
    return best
}
