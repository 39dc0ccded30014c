import SAM2Checkpoint
import SAM2Tensor

/// One `MemoryAttentionLayer`: RoPE self-attention over the frame, RoPE cross-attention to the
/// memory bank (object-pointer tokens excluded from RoPE), feed-forward; all pre-norm.
struct MemoryAttentionLayer {
    let selfAttn: RoPEAttention
    let crossAttn: RoPEAttention
    let feedForward: MLP  // linear1, activation, linear2
    let norm1: LayerNorm, norm2: LayerNorm, norm3: LayerNorm
    let posAtAttn: Bool, posAtCrossKeys: Bool, posAtCrossQueries: Bool

    init(_ w: WeightStore, _ prefix: String, _ cfg: MemoryAttentionLayerConfig) throws {
        let sa = cfg.selfAttention, ca = cfg.crossAttention
        selfAttn = try RoPEAttention(w, "\(prefix).self_attn", dim: sa.embeddingDim, heads: sa.numHeads,
                                     downsampleRate: sa.downsampleRate, kvInDim: sa.kvInDim, theta: Float(sa.ropeTheta))
        crossAttn = try RoPEAttention(w, "\(prefix).cross_attn_image", dim: ca.embeddingDim, heads: ca.numHeads,
                                      downsampleRate: ca.downsampleRate, kvInDim: ca.kvInDim, theta: Float(ca.ropeTheta),
                                      queryGridSide: ca.isV2 ? ca.qSizes[0] : nil, keyGridSide: ca.isV2 ? ca.kSizes[0] : nil)
        feedForward = MLP(layers: [try Linear(w, "\(prefix).linear1", cfg.dModel, cfg.dimFeedforward),
                                   try Linear(w, "\(prefix).linear2", cfg.dimFeedforward, cfg.dModel)],
                          activation: cfg.activation == "gelu" ? .gelu : .relu, sigmoidOutput: false)
        norm1 = try LayerNorm(w, "\(prefix).norm1", cfg.dModel)
        norm2 = try LayerNorm(w, "\(prefix).norm2", cfg.dModel)
        norm3 = try LayerNorm(w, "\(prefix).norm3", cfg.dModel)
        posAtAttn = cfg.posEncAtAttn
        posAtCrossKeys = cfg.posEncAtCrossAttnKeys
        posAtCrossQueries = cfg.posEncAtCrossAttnQueries
    }

    func callAsFunction(_ x: Tensor, queryPos: Tensor, memory: Tensor, memoryPos: Tensor, excludedKeys: Int, memoryFrames: Int) -> Tensor {
        attendToMemory(selfAttention(x, queryPos: queryPos), queryPos: queryPos, memory: memory, memoryPos: memoryPos,
                       excludedKeys: excludedKeys, memoryFrames: memoryFrames)
    }

    /// The self-attention sublayer: the frame alone, no memory.
    func selfAttention(_ x: Tensor, queryPos: Tensor) -> Tensor {
        let t2 = norm1(x)
        let qk = posAtAttn ? t2 + queryPos : t2
        return x + selfAttn(q: qk, k: qk, v: t2, rope: selfAttn.rope(queries: x.shape[0]))
    }

    /// The cross-attention to the memory bank and the feed-forward sublayers. `memoryFrames`: how
    /// many spatial memories the keys hold (RoPEAttentionv2 rotates each one's 2D latents).
    func attendToMemory(_ x: Tensor, queryPos: Tensor, memory: Tensor, memoryPos: Tensor, excludedKeys: Int,
                        memoryFrames: Int) -> Tensor {
        var tgt = x
        let t2 = norm2(tgt)
        let crossRope = crossAttn.rope(queries: x.shape[0])
        tgt += crossAttn(q: posAtCrossQueries ? t2 + queryPos : t2,
                         k: posAtCrossKeys ? memory + memoryPos : memory,
                         v: memory, excludedKeys: excludedKeys, keyFrames: memoryFrames, rope: crossRope)

        feedForward.residual(&tgt, norm: norm3)
        return tgt
    }
}

/// `MemoryAttention`: condition the current frame's tokens on the memory bank.
struct MemoryAttention {
    let layers: [MemoryAttentionLayer]
    let norm: LayerNorm
    let posEncAtInput: Bool

    init(_ w: WeightStore, _ prefix: String, _ cfg: MemoryAttentionConfig) throws {
        layers = try (0..<cfg.numLayers).map { try MemoryAttentionLayer(w, "\(prefix).layers.\($0)", cfg.layer) }
        norm = try LayerNorm(w, "\(prefix).norm", cfg.dModel)
        posEncAtInput = cfg.posEncAtInput
    }

    /// Everything before the memory first comes in: the input position term and the first layer's
    /// self-attention. It depends on the frame alone, so every object tracked on a frame shares it
    /// (the official predictor's object batch computes it once per object, with identical inputs).
    func start(current: Tensor, currentPos: Tensor) -> Tensor {
        let x = posEncAtInput ? current.adding(currentPos, scaledBy: 0.1) : current
        return layers.first.map { $0.selfAttention(x, queryPos: currentPos) } ?? x
    }

    /// The rest, from `start`'s output. `currentPos`: `[HW, D]`; `memory`, `memoryPos`: `[M, memDim]`
    /// with the last `objectPointerTokens` rows being object pointers, after `memoryFrames` spatial
    /// memories of equal length.
    func callAsFunction(started: Tensor, currentPos: Tensor, memory: Tensor, memoryPos: Tensor, objectPointerTokens: Int,
                        memoryFrames: Int = 0) -> Tensor {
        guard let first = layers.first else { return norm(started) }
        var out = first.attendToMemory(started, queryPos: currentPos, memory: memory, memoryPos: memoryPos,
                                       excludedKeys: objectPointerTokens, memoryFrames: memoryFrames)
        for layer in layers.dropFirst() {
            out = layer(out, queryPos: currentPos, memory: memory, memoryPos: memoryPos, excludedKeys: objectPointerTokens,
                        memoryFrames: memoryFrames)
        }
        return norm(out)
    }
}
