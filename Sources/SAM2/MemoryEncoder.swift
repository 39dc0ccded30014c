import SAM2Checkpoint
import SAM2Tensor

/// A ConvNeXt block (`CXBlock`): depthwise conv, LayerNorm2d, pointwise MLP, layer scale, residual.
/// The MLP runs as 1x1 convolutions on the map, fused with the norm and residual slab by slab;
/// the layer scale `gamma` is folded into the second pointwise layer at load time.
struct CXBlock {
    let dwconv: Conv2d
    let norm: FeedForward.ChannelNorm
    let pwconv1: Linear
    /// `pwconv2` with `gamma` folded in: `gamma ⊙ (W2·h + b2)`.
    let scaledW2: Tensor, scaledB2: Tensor

    init(_ w: WeightStore, _ prefix: String, _ cfg: CXBlockConfig) throws {
        dwconv = try Conv2d(w, "\(prefix).dwconv", cfg.dim, cfg.dim, kernel: cfg.kernelSize, padding: cfg.padding,
                            depthwise: cfg.useDwconv)
        let ln = try LayerNorm(w, "\(prefix).norm", cfg.dim, eps: 1e-6)
        norm = FeedForward.ChannelNorm(weight: ln.weight, bias: ln.bias, eps: ln.eps)
        pwconv1 = try Linear(w, "\(prefix).pwconv1", cfg.dim, 4 * cfg.dim)
        let pwconv2 = try Linear(w, "\(prefix).pwconv2", 4 * cfg.dim, cfg.dim)
        let gamma = cfg.layerScaleInitValue > 0 ? try w.take("\(prefix).gamma", [cfg.dim]).data : nil
        var w2 = pwconv2.weight, b2 = pwconv2.bias ?? Tensor(zeros: [cfg.dim])
        if let gamma {
            let hidden = 4 * cfg.dim
            for o in 0..<cfg.dim {
                b2.data[o] *= gamma[o]
                for i in 0..<hidden { w2.data[o * hidden + i] *= gamma[o] }
            }
        }
        scaledW2 = w2; scaledB2 = b2
    }

    func callAsFunction(_ x: consuming Tensor) -> Tensor {
        let mixed = dwconv(x)
        FeedForward.channelsResidual(&x, input: mixed, norm: norm, w1: pwconv1.weight, b1: pwconv1.bias!, w2: scaledW2, b2: scaledB2)
        return x
    }
}

/// The memory encoder: downsample the mask 16x, add it to projected frame features, fuse with
/// CXBlocks, project to the memory width, and attach a sine position encoding.
struct MemoryEncoder {
    let downsampler: [(conv: Conv2d, norm: LayerNorm)]
    let downsamplerOut: Conv2d
    let pixFeatProj: Conv2d
    let fuser: [CXBlock]
    let outProj: Conv2d?
    let outDim: Int
    let numPosFeats: Int
    let temperature: Float

    init(_ w: WeightStore, _ prefix: String, _ cfg: MemoryEncoderConfig) throws {
        let md = cfg.maskDownsampler
        let layers = md.numLayers
        var blocks = [(conv: Conv2d, norm: LayerNorm)]()
        var inC = 1
        for i in 0..<layers {
            let outC = inC * md.stride * md.stride
            blocks.append((try Conv2d(w, "\(prefix).mask_downsampler.encoder.\(3 * i)", inC, outC, kernel: md.kernelSize,
                                      stride: md.stride, padding: md.padding),
                           try LayerNorm(w, "\(prefix).mask_downsampler.encoder.\(3 * i + 1)", outC, eps: 1e-6)))
            inC = outC
        }
        downsampler = blocks
        downsamplerOut = try Conv2d(w, "\(prefix).mask_downsampler.encoder.\(3 * layers)", inC, md.embedDim, kernel: 1)
        pixFeatProj = try Conv2d(w, "\(prefix).pix_feat_proj", cfg.inDim, cfg.inDim, kernel: 1)
        fuser = try (0..<cfg.fuser.numLayers).map { try CXBlock(w, "\(prefix).fuser.layers.\($0)", cfg.fuser.layer) }
        outProj = cfg.outDim != cfg.inDim ? try Conv2d(w, "\(prefix).out_proj", cfg.inDim, cfg.outDim, kernel: 1) : nil
        outDim = cfg.outDim
        numPosFeats = cfg.positionEncoding.numPosFeats
        temperature = Float(cfg.positionEncoding.temperature)
    }

    /// `pix_feat_proj(pix_feat)` of the `[C, h, w]` frame features: the frame's share, the same
    /// for every object's mask.
    func projectPixels(_ pixFeat: Tensor) -> Tensor { pixFeatProj(pixFeat) }

    /// The rest, from `projectPixels`' output; `mask`: `[1, S, S]` already scaled for memory
    /// (sigmoid or binarised, times scale plus bias). Returns memory features and their position encoding.
    func callAsFunction(projectedPixels: Tensor, mask: Tensor) -> (features: Tensor, position: Tensor) {
        var m = mask
        for (conv, norm) in downsampler { m = norm.channels(conv(m), thenGELU: true) }
        m = downsamplerOut(m)
        var x = projectedPixels + m
        for block in fuser { x = block(x) }
        if let outProj { x = outProj(x) }
        let pos = PositionEncoding.sine(numPosFeats: numPosFeats, height: x.shape[1], width: x.shape[2], temperature: temperature)
        return (x, pos)
    }
}
