import SAM2Tensor

/// The image side of a two-way block: its tokens and those plus PE; or, on the first block for
/// clicks on a frame that sees nothing but itself, its tokens (`src`), the block's image-side
/// projections of the frame (`TwoWayTransformer.firstBlockProjections`, computed once per frame)
/// and the dense prompt embedding's part of them.
enum TwoWayImage {
    case tokens(Tensor, plusPE: Tensor)
    case projected(Tensor, frame: Tensor, dense: DenseTerm)

    var tokens: Tensor {
        switch self {
        case let .tokens(t, _), let .projected(t, _, _): return t
        }
    }
}

/// The dense prompt embedding's part of linear maps of the image tokens (see
/// `PromptEncoder.DenseProjection`): `bias` on every token, plus with a mask prompt
/// `channels·weightᵀ`, its `[HW, c]` channels before the last convolution through a `[n, c]` weight.
struct DenseTerm {
    let bias: Tensor       // [n]
    let weight: Tensor     // [n, c]
    let channels: Tensor?  // [HW, c]

    /// The term of output columns `r` only.
    func columns(_ r: Range<Int>) -> DenseTerm {
        DenseTerm(bias: Tensor(shape: [r.count], data: Array(bias.data[r])), weight: weight.rows(r), channels: channels)
    }
}

/// One `TwoWayAttentionBlock`: token self-attention, tokens → image, MLP, image → tokens.
struct TwoWayAttentionBlock {
    let selfAttn: ProjectedAttention
    let crossTokenToImage: ProjectedAttention
    let crossImageToToken: ProjectedAttention
    let mlp: MLP
    let norm1: LayerNorm, norm2: LayerNorm, norm3: LayerNorm, norm4: LayerNorm
    let skipFirstLayerPE: Bool

    init(_ w: WeightStore, _ prefix: String, dim: Int, heads: Int, mlpDim: Int, downsample: Int, skipFirstLayerPE: Bool) throws {
        selfAttn = try ProjectedAttention(w, "\(prefix).self_attn", dim: dim, heads: heads)
        norm1 = try LayerNorm(w, "\(prefix).norm1", dim)
        crossTokenToImage = try ProjectedAttention(w, "\(prefix).cross_attn_token_to_image", dim: dim, heads: heads, downsampleRate: downsample)
        norm2 = try LayerNorm(w, "\(prefix).norm2", dim)
        mlp = try MLP(w, "\(prefix).mlp", input: dim, hidden: mlpDim, output: dim, numLayers: 2, activation: .relu)
        norm3 = try LayerNorm(w, "\(prefix).norm3", dim)
        norm4 = try LayerNorm(w, "\(prefix).norm4", dim)
        crossImageToToken = try ProjectedAttention(w, "\(prefix).cross_attn_image_to_token", dim: dim, heads: heads, downsampleRate: downsample)
        self.skipFirstLayerPE = skipFirstLayerPE
    }

    /// The image-side projections, in the column order of `.projected`: token → image keys (which
    /// read image + PE) and values (image), image → token queries (image + PE).
    var imageSideProjections: [Linear] { [crossTokenToImage.kProj, crossTokenToImage.vProj, crossImageToToken.qProj] }

    /// Returns the new queries, image tokens, and those plus `keyPE` (which both cross-attentions of
    /// the next block read: formed once, with the tokens).
    func callAsFunction(queries: Tensor, image: TwoWayImage, queryPE: Tensor, keyPE: Tensor) -> (queries: Tensor, keys: Tensor, keysPE: Tensor) {
        var queries = queries
        if skipFirstLayerPE {
            queries = selfAttn(q: queries, k: queries, v: queries)
        } else {
            let q = queries + queryPE
            queries += selfAttn(q: q, k: q, v: queries)
        }
        queries = norm1(queries)

        let inner = crossTokenToImage.kProj.outDim
        switch image {
        case let .tokens(keys, keysPE):
            queries += crossTokenToImage.tokensReadingImage(queries + queryPE, image: keys, imagePlusPE: keysPE)
        case let .projected(_, frame, dense):
            queries += crossTokenToImage.tokensReadingProjected(queries + queryPE, frame: frame, keysColumn: 0, valuesColumn: inner,
                                                                dense: dense)
        }
        queries = norm2(queries)

        queries += mlp(queries)
        queries = norm3(queries)
        switch image {
        case let .tokens(keys, keysPE):
            let (y, yPlusPE) = crossImageToToken.imageReadingTokens(keys, imagePlusPE: keysPE, imagePE: keyPE,
                                                                    k: queries + queryPE, v: queries, norm: norm4)
            return (queries, y, yPlusPE)
        case let .projected(src, frame, dense):
            let (y, yPlusPE) = crossImageToToken.imageReadingTokens(src, frame: frame, queriesColumn: 2 * inner, dense: dense,
                                                                    imagePE: keyPE, k: queries + queryPE, v: queries, norm: norm4)
            return (queries, y, yPlusPE)
        }
    }
}

/// The mask decoder's `TwoWayTransformer` (depth 2, 8 heads, MLP 2048, attention downsample 2).
struct TwoWayTransformer {
    let layers: [TwoWayAttentionBlock]
    let finalAttn: ProjectedAttention
    let normFinal: LayerNorm

    init(_ w: WeightStore, _ prefix: String, dim: Int, depth: Int = 2, heads: Int = 8, mlpDim: Int = 2048, downsample: Int = 2) throws {
        layers = try (0..<depth).map {
            try TwoWayAttentionBlock(w, "\(prefix).layers.\($0)", dim: dim, heads: heads, mlpDim: mlpDim,
                                     downsample: downsample, skipFirstLayerPE: $0 == 0)
        }
        finalAttn = try ProjectedAttention(w, "\(prefix).final_attn_token_to_image", dim: dim, heads: heads, downsampleRate: downsample)
        normFinal = try LayerNorm(w, "\(prefix).norm_final_attn", dim)
    }

    /// The first block's image-side projections stacked: weights `[3·inner, D]` and biases.
    var firstBlockProjectionWeights: (weight: Tensor, bias: Tensor) {
        let linears = layers[0].imageSideProjections
        return (Tensor.concatRows(linears.map(\.weight)), Tensor(shape: [linears.reduce(0) { $0 + $1.outDim }],
                                                                 data: linears.flatMap { $0.bias!.data }))
    }

    /// The part of the first block's image-side projections that only the frame decides:
    /// `[HW, 3·inner]`, (image + PE)·Wₖᵀ | image·Wᵥᵀ | (image + PE)·Wqᵀ, without biases. They are
    /// linear in the image tokens, to which a click adds its dense prompt embedding: so on a frame
    /// clicked again and again these are computed once, and a click adds its dense embedding's part.
    func firstBlockProjections(image: Tensor, imagePE: Tensor) -> Tensor {
        let hw = image.shape[0], dim = image.shape[1], linears = layers[0].imageSideProjections
        let width = linears.reduce(0) { $0 + $1.outDim }
        let plusPE = image + imagePE
        var out = [Float](unsafeUninitializedCapacity: hw * width) { _, n in n = hw * width }
        Tensor.withPointers([image, plusPE] + linears.map(\.weight)) { p in
            out.withUnsafeMutableBufferPointer { o in
                var column = 0
                for (i, linear) in linears.enumerated() {
                    let readsPE = i != 1  // the values read the image alone
                    GEMM.sgemm(transB: true, m: hw, n: linear.outDim, k: dim, a: readsPE ? p[1] : p[0], lda: dim, b: p[2 + i], ldb: dim,
                               c: o.baseAddress! + column, ldc: width)
                    column += linear.outDim
                }
            }
        }
        return Tensor(shape: [hw, width], data: out)
    }

    /// `image`: the `[HW, D]` image side as the first block sees it, `imagePE` its position
    /// encoding; `points`: `[T, D]`. Returns (tokens, image tokens), of the tokens only the first
    /// `outputTokens`: the official model runs the final attention for the prompts' own tokens too
    /// and then drops them; here they are skipped.
    func callAsFunction(image: TwoWayImage, imagePE: Tensor, points: Tensor, outputTokens: Int) -> (Tensor, Tensor) {
        var queries = points, image = image, keys = image.tokens, keysPE = keys
        for layer in layers {
            (queries, keys, keysPE) = layer(queries: queries, image: image, queryPE: points, keyPE: imagePE)
            image = .tokens(keys, plusPE: keysPE)
        }
        let kept = 0..<outputTokens
        var out = queries.rows(kept)
        out += finalAttn.tokensReadingImage(out + points.rows(kept), image: keys, imagePlusPE: keysPE)
        return (normFinal(out), keys)
    }
}
