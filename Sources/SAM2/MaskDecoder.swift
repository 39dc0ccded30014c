import CKernels
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
    let upscale1: ConvTranspose2x2, upscaleNorm: LayerNorm, upscale2: ConvTranspose2x2
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
        upscale1 = ConvTranspose2x2(weight: try w.take("\(prefix).output_upscaling.0.weight", [dim, dim / 4, 2, 2]),
                                    bias: try w.take("\(prefix).output_upscaling.0.bias", [dim / 4]))
        upscaleNorm = try LayerNorm(w, "\(prefix).output_upscaling.1", dim / 4, eps: 1e-6)
        upscale2 = ConvTranspose2x2(weight: try w.take("\(prefix).output_upscaling.3.weight", [dim / 4, dim / 8, 2, 2]),
                                    bias: try w.take("\(prefix).output_upscaling.3.bias", [dim / 8]))
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

    /// `image`: the frame's embedding plus the dense prompt embedding (`src`), `[hw, D]` tokens of the
    /// square embedding, with that plus `imagePETokens` or the first block's projections of it;
    /// `sparse`: `[T, D]`; `highRes`: (s0, s1) already projected.
    func callAsFunction(image: TwoWayImage, imagePETokens: Tensor, sparse: Tensor,
                        multimask: Bool, highRes: (s0: Tensor, s1: Tensor)?) -> MaskDecoderOutput {
        let src = image.tokens, h = Int(Double(src.shape[0]).squareRoot()), w = h
        precondition(h * w == src.shape[0] && src.shape == imagePETokens.shape)
        var outputTokens = [iouToken, maskTokens]
        if let objScoreToken { outputTokens.insert(objScoreToken, at: 0) }
        let s = objScoreToken == nil ? 0 : 1
        let tokens = Tensor.concatRows(outputTokens + [sparse])

        let (hs, srcOut) = transformer(image: image, imagePE: imagePETokens, points: tokens,
                                       outputTokens: s + 1 + numMaskTokens)

        // One hypernetwork per mask token turns it into weights over the upscaled channels; with the
        // IoU and object-score heads, each reads only its own token: independent tasks on all cores.
        let heads = Parallelism.map(numMaskTokens + 2) { i -> Tensor in
            switch i {
            case numMaskTokens: return iouHead(hs.rows(s..<(s + 1)))
            case numMaskTokens + 1: return objScoreHead.map { $0(hs.rows(0..<1)) } ?? Tensor(shape: [1], data: [10])
            default: return hypernetworks[i](hs.rows((s + 1 + i)..<(s + 2 + i)))
            }
        }
        let hyper = Tensor.concatRows(Array(heads[..<numMaskTokens]))
        let allMasks = upscaledMasks(srcOut, height: h, width: w, hyper: hyper, highRes: highRes)
        let allIous = heads[numMaskTokens].data
        let score = heads[numMaskTokens + 1].data[0]
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

    /// `hyper · output_upscaling(image)`: the image tokens upscaled 4x by two 2x2 transposed
    /// convolutions (adding the high-resolution features s1, then s0, before each GELU), then one
    /// mask per hypernetwork row. Done four embedding rows at a time, so the upscaled maps
    /// (4 MB and 8 MB at 1024) are never written out: each slab stays in cache from the first
    /// product to its rows of the masks. Returns `[M, 4h, 4w]`.
    private func upscaledMasks(_ tokens: Tensor, height h: Int, width w: Int, hyper: Tensor,
                               highRes: (s0: Tensor, s1: Tensor)?) -> Tensor {
        let c1 = upscale1.outChannels, c2 = upscale2.outChannels, masksCount = hyper.shape[0]
        let slabRows = 4, outPlane = 16 * h * w
        var masks = [Float](unsafeUninitializedCapacity: masksCount * outPlane) { _, n in n = masksCount * outPlane }
        let inputs = [tokens, upscaleNorm.weight, upscaleNorm.bias, hyper] + (highRes.map { [$0.s1, $0.s0] } ?? [])
        Tensor.withPointers(inputs) { p in
            let (x, nw, nb, hp) = (p[0], p[1], p[2], p[3])
            let s1 = highRes == nil ? nil : p[4], s0 = highRes == nil ? nil : p[5]
            masks.withUnsafeMutableBufferPointer { mp in
                let out = mp.baseAddress!
                Parallelism.independentTasks((h + slabRows - 1) / slabRows) { t in
                    let y0 = t * slabRows, rows = min(slabRows, h - y0)
                    let pix1 = 4 * rows * w, pix2 = 4 * pix1   // the slab's pixels after each upscaling
                    let up1 = UnsafeMutablePointer<Float>.allocate(capacity: pix1 * c1 + pix2 * c2)
                    defer { up1.deallocate() }
                    let up2 = up1 + pix1 * c1
                    // tokens → [c1, 2·rows, 2w] (+ s1), LayerNorm2d, GELU.
                    upscale1.apply(x + y0 * w * dim, tokens: true, rows: rows, width: w, skip: s1.map { $0 + 4 * y0 * w },
                                   skipStride: 4 * h * w, into: up1, outStride: pix1)
                    layerNormChannelsInPlace(up1, channels: c1, pixels: pix1, channelStride: pix1, weight: nw, bias: nb,
                                             eps: upscaleNorm.eps, thenGELU: true)
                    // → [c2, 4·rows, 4w] (+ s0), GELU.
                    upscale2.apply(up1, tokens: false, inStride: pix1, rows: 2 * rows, width: 2 * w,
                                   skip: s0.map { $0 + 16 * y0 * w }, skipStride: outPlane, into: up2, outStride: pix2, thenGELU: true)
                    // This slab's rows of every mask.
                    GEMM.sgemm(m: masksCount, n: pix2, k: c2, a: hp, lda: c2, b: up2, ldb: pix2,
                               c: out + 16 * y0 * w, ldc: outPlane, serial: true)
                }
            }
        }
        return Tensor(shape: [masksCount, 4 * h, 4 * w], data: masks)
    }

    /// `_dynamic_multimask_via_stability`: keep the single-mask output when it is stable under
    /// ±delta thresholds, otherwise take the multimask output with the best predicted IoU.
    private func selectByStability(_ all: Tensor, _ ious: [Float]) -> (Tensor, [Float]) {
        let best = 1 + argmax(Array(ious[1...]))
        let single = all.rows(0..<1)
        let (inter, union) = single.data.withUnsafeBufferPointer { p in
            (sam2_count_above(p.baseAddress!, p.count, stabilityDelta), sam2_count_above(p.baseAddress!, p.count, -stabilityDelta))
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
