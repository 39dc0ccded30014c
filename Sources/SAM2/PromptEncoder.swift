import CKernels
import SAM2Tensor

/// Clicks in the model's input frame (pixels of the `image_size` square).
/// Labels: 1 positive, 0 negative, 2/3 box corners, -1 padding.
public struct PointPrompt: Equatable {
    public var coords: [(x: Float, y: Float)]
    public var labels: [Int]

    public init(coords: [(x: Float, y: Float)], labels: [Int]) {
        self.coords = coords
        self.labels = labels
    }

    public static func == (a: PointPrompt, b: PointPrompt) -> Bool {
        a.labels == b.labels && a.coords.count == b.coords.count
            && zip(a.coords, b.coords).allSatisfy { $0.x == $1.x && $0.y == $1.y }
    }

    /// `concat_points`: new clicks go after the old ones.
    public func appending(_ other: PointPrompt) -> PointPrompt {
        PointPrompt(coords: coords + other.coords, labels: labels + other.labels)
    }
}

/// SAM's prompt encoder: points (and box corners) become sparse tokens, a mask prompt a dense map.
struct PromptEncoder {
    let embedDim: Int
    let embeddingSize: Int   // h = w of the image embedding
    let inputImageSize: Int
    let pe: RandomFourierEncoding
    let pointEmbeddings: [Tensor]  // 4 x [1, D]: negative, positive, box top-left, box bottom-right
    let notAPointEmbed: Tensor
    let noMaskEmbed: Tensor
    let maskConv1: Conv2d, maskNorm1: LayerNorm, maskConv2: Conv2d, maskNorm2: LayerNorm, maskConv3: Conv2d
    /// `get_dense_pe()`, computed once, and as `[HW, D]` token rows for the mask decoder.
    let densePE: Tensor, densePETokens: Tensor
    /// The dense embedding without a mask prompt: `no_mask_embed` at every position.
    let noMaskDenseTokens: Tensor

    init(_ w: WeightStore, _ prefix: String, embedDim: Int, embeddingSize: Int, inputImageSize: Int, maskInChans: Int = 16) throws {
        self.embedDim = embedDim
        self.embeddingSize = embeddingSize
        self.inputImageSize = inputImageSize
        pe = RandomFourierEncoding(gaussian: try w.take("\(prefix).pe_layer.positional_encoding_gaussian_matrix", [2, embedDim / 2]))
        pointEmbeddings = try (0..<4).map { try w.take("\(prefix).point_embeddings.\($0).weight", [1, embedDim]) }
        notAPointEmbed = try w.take("\(prefix).not_a_point_embed.weight", [1, embedDim])
        noMaskEmbed = try w.take("\(prefix).no_mask_embed.weight", [1, embedDim])
        let m = "\(prefix).mask_downscaling"
        maskConv1 = try Conv2d(w, "\(m).0", 1, maskInChans / 4, kernel: 2, stride: 2)
        maskNorm1 = try LayerNorm(w, "\(m).1", maskInChans / 4, eps: 1e-6)
        maskConv2 = try Conv2d(w, "\(m).3", maskInChans / 4, maskInChans, kernel: 2, stride: 2)
        maskNorm2 = try LayerNorm(w, "\(m).4", maskInChans, eps: 1e-6)
        maskConv3 = try Conv2d(w, "\(m).6", maskInChans, embedDim, kernel: 1)
        densePE = pe.dense(height: embeddingSize, width: embeddingSize)
        densePETokens = densePE.chwToTokens()
        noMaskDenseTokens = Tensor(zeros: [embeddingSize * embeddingSize, embedDim]).addingRow(noMaskEmbed.data)
    }

    /// Side of the mask prompt the encoder takes (4x the embedding).
    var maskInputSize: Int { 4 * embeddingSize }

    /// Sparse `[N+1, D]` tokens (points plus one padding point, as SAM 2 never passes boxes
    /// separately) and the dense embedding as `[hw, D]` tokens.
    func callAsFunction(points: PointPrompt, mask: Tensor?) -> (sparse: Tensor, dense: Tensor) {
        (sparseTokens(points), mask.map(maskEmbedding) ?? noMaskDenseTokens)
    }

    /// The dense embedding as the mask decoder consumes it: added to the frame's `[hw, D]` embedding
    /// (its `src`), and that plus the dense position encoding (what its attentions read as keys).
    /// A mask prompt's embedding is added band by band while each band is in cache, never written out.
    func denseAdded(to image: Tensor, mask: Tensor?) -> (src: Tensor, srcPlusPE: Tensor) {
        guard let mask else { return Tensor.sums(image, noMaskDenseTokens, thenPlus: densePETokens) }
        precondition(image.shape == densePETokens.shape, "image embedding \(image.shape), expected \(densePETokens.shape)")
        let n = image.count
        var withPE = [Float](unsafeUninitializedCapacity: n) { _, c in c = n }
        let src = [Float](unsafeUninitializedCapacity: n) { o, c in
            withPE.withUnsafeMutableBufferPointer { w in
                Tensor.withPointers([image, densePETokens]) { p in
                    let (sp, wp) = (o.baseAddress!, w.baseAddress!)
                    forEachMaskEmbeddingBand(mask) { tokens, dense, _ in
                        let at = tokens.lowerBound * embedDim
                        sam2_add_then_add(sp + at, wp + at, p[0] + at, dense, p[1] + at, tokens.count * embedDim)
                    }
                }
            }
            c = n
        }
        return (Tensor(shape: image.shape, data: src), Tensor(shape: image.shape, data: withPE))
    }

    /// A linear map `x·Wᵀ + b` of the dense embedding, folded through what makes it: rows of
    /// `no_mask_embed·Wᵀ + b` without a mask prompt; with one, `m·(W·W₃)ᵀ + (W·b₃ + b)` on the mask
    /// path's channels `m` before its last (1x1) convolution `W₃, b₃`: a product over those 16
    /// channels instead of D.
    struct DenseProjection {
        let noMask: Tensor      // [n]
        let maskWeight: Tensor  // [n, 16]
        let maskBias: Tensor    // [n]

        /// The term a click adds: with a mask prompt, its `[hw, 16]` channels.
        func term(channels: Tensor?) -> DenseTerm {
            DenseTerm(bias: channels == nil ? noMask : maskBias, weight: maskWeight, channels: channels)
        }
    }

    func folding(weight: Tensor, bias: Tensor) -> DenseProjection {
        let w3 = maskConv3.weight.reshaped([embedDim, maskConv3.weight.shape[1]]), n = weight.shape[0]
        return DenseProjection(noMask: GEMM.linear(noMaskEmbed, weight: weight, bias: bias).reshaped([n]),
                               maskWeight: GEMM.matmul(weight, w3),
                               maskBias: GEMM.linear(maskConv3.bias!.reshaped([1, embedDim]), weight: weight, bias: bias).reshaped([n]))
    }

    /// `src` (the frame's embedding plus the dense embedding) for the decoder's projected first
    /// block, with a mask prompt's channels before its last convolution as `[hw, 16]` tokens, which
    /// that block takes through `DenseProjection`s instead of the 256-wide dense embedding.
    func denseAddedWithChannels(to image: Tensor, mask: Tensor?) -> (src: Tensor, channels: Tensor?) {
        guard let mask else { return (image.addingRow(noMaskEmbed.data), nil) }
        precondition(image.shape == densePETokens.shape, "image embedding \(image.shape), expected \(densePETokens.shape)")
        let c = maskConv3.weight.shape[1], hw = image.shape[0]
        var channels = [Float](unsafeUninitializedCapacity: hw * c) { _, n in n = hw * c }
        let src = [Float](unsafeUninitializedCapacity: image.count) { o, n in
            channels.withUnsafeMutableBufferPointer { ch in
                image.data.withUnsafeBufferPointer { ip in
                    forEachMaskEmbeddingBand(mask) { tokens, dense, m in
                        let at = tokens.lowerBound
                        sam2_add(o.baseAddress! + at * embedDim, ip.baseAddress! + at * embedDim, dense, tokens.count * embedDim)
                        for t in 0..<tokens.count {
                            for j in 0..<c { ch[(at + t) * c + j] = m[j * tokens.count + t] }
                        }
                    }
                }
            }
            n = image.count
        }
        return (Tensor(shape: image.shape, data: src), Tensor(shape: [hw, c], data: channels))
    }

    /// The points' `[N+1, D]` sparse tokens.
    func sparseTokens(_ points: PointPrompt) -> Tensor {
        let coords = points.coords.map { (x: ($0.x + 0.5) / Float(inputImageSize), y: ($0.y + 0.5) / Float(inputImageSize)) }
            + [(x: Float(0.5) / Float(inputImageSize), y: Float(0.5) / Float(inputImageSize))]
        let labels = points.labels + [-1]
        var sparse = pe.encode(coords)
        for (i, label) in labels.enumerated() {
            let row = i * embedDim
            for j in 0..<embedDim {
                switch label {
                case -1: sparse.data[row + j] = notAPointEmbed.data[j]
                case 0...3: sparse.data[row + j] += pointEmbeddings[label].data[j]
                default: break
                }
            }
        }
        return sparse
    }

    /// A mask prompt's dense embedding as `[hw, D]` token rows.
    private func maskEmbedding(_ mask: Tensor) -> Tensor {
        let count = embeddingSize * embeddingSize * embedDim
        var out = [Float](unsafeUninitializedCapacity: count) { _, n in n = count }
        out.withUnsafeMutableBufferPointer { o in
            forEachMaskEmbeddingBand(mask) { tokens, dense, _ in
                (o.baseAddress! + tokens.lowerBound * embedDim).update(from: dense, count: tokens.count * embedDim)
            }
        }
        return Tensor(shape: [embeddingSize * embeddingSize, embedDim], data: out)
    }

    /// `mask_downscaling` (two 2x2 stride-2 convolutions with LayerNorm2d and GELU, then a 1x1
    /// projection), handing each band of token rows to `body` while it is in cache, with the
    /// band's channels before the projection (`[16, tokens]`). Every output
    /// pixel sees only its own 4x4 patch of the mask, so bands of embedding rows are independent
    /// tasks on all cores: 256 tokens each (four rows at 1024), the row slabs of the whole-map projection.
    private func forEachMaskEmbeddingBand(_ mask: Tensor, _ body: (Range<Int>, UnsafePointer<Float>, UnsafePointer<Float>) -> Void) {
        let side = embeddingSize, maskSide = maskInputSize, band = max(1, 256 / side)
        precondition(mask.shape == [1, maskSide, maskSide], "mask prompt \(mask.shape), expected [1, \(maskSide), \(maskSide)]")
        Parallelism.independentTasks((side + band - 1) / band) { t in
            let y0 = t * band, rows = min(band, side - y0), inRows = 4 * rows
            let slice = Tensor(shape: [1, inRows, maskSide], data: Array(mask.data[(4 * y0 * maskSide)..<((4 * y0 + inRows) * maskSide)]))
            var x = maskConv1(slice)
            x = maskNorm1.channels(x, thenGELU: true)
            x = maskConv2(x)
            x = maskNorm2.channels(x, thenGELU: true)
            Tensor.withPointers([maskConv3.tokens(x), x]) { body((y0 * side)..<((y0 + rows) * side), $0[0], $0[1]) }
        }
    }
}
