import SAM2Tensor

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

    /// `keysPE` is `keys + keyPE`, which both cross-attentions read: it is formed once, with the keys.
    func callAsFunction(queries: Tensor, keys: Tensor, keysPE: Tensor, queryPE: Tensor,
                        keyPE: Tensor) -> (queries: Tensor, keys: Tensor, keysPE: Tensor) {
        var queries = queries
        if skipFirstLayerPE {
            queries = selfAttn(q: queries, k: queries, v: queries)
        } else {
            let q = queries + queryPE
            queries += selfAttn(q: q, k: q, v: queries)
        }
        queries = norm1(queries)

        queries += crossTokenToImage.tokensReadingImage(queries + queryPE, image: keys, imagePlusPE: keysPE)
        queries = norm2(queries)

        queries += mlp(queries)
        queries = norm3(queries)
        let (newKeys, newKeysPE) = crossImageToToken.imageReadingTokens(keys, imagePlusPE: keysPE, imagePE: keyPE,
                                                                        k: queries + queryPE, v: queries, norm: norm4)
        return (queries, newKeys, newKeysPE)
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

    /// `image`, `imagePE`: `[HW, D]` tokens, `imagePlusPE` their sum; `points`: `[T, D]`. Returns
    /// (tokens, image tokens), of the tokens only the first `outputTokens`: the official model runs
    /// the final attention for the prompts' own tokens too and then drops them; here they are skipped.
    func callAsFunction(image: Tensor, imagePlusPE: Tensor, imagePE: Tensor, points: Tensor, outputTokens: Int) -> (Tensor, Tensor) {
        var queries = points, keys = image, keysPE = imagePlusPE
        for layer in layers {
            (queries, keys, keysPE) = layer(queries: queries, keys: keys, keysPE: keysPE, queryPE: points, keyPE: imagePE)
        }
        let kept = 0..<outputTokens
        var out = queries.rows(kept)
        out += finalAttn.tokensReadingImage(out + points.rows(kept), image: keys, imagePlusPE: keysPE)
        return (normFinal(out), keys)
    }
}
