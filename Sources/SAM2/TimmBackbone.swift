import SAM2Checkpoint
import SAM2Tensor

/// EdgeTAM's image-encoder trunk, `TimmBackbone`: timm's RepViT (`repvit_m1`, "RepViT: Revisiting
/// Mobile CNN From ViT Perspective") as `timm.create_model(name, features_only=True,
/// out_indices=(0, 1, 2, 3))` builds it. A stem of two stride-2 3x3 convolutions, then four
/// stages at strides 4, 8, 16, 32, whose outputs are the four feature maps the FPN neck takes.
///
/// Everything the checkpoint stores as convolution + batch norm (eval mode) is folded into one
/// convolution at load time, and each block's re-parameterisable token mixer (3x3 depthwise +
/// 1x1 depthwise + identity) into a single 3x3 depthwise convolution, as timm's `fuse()` does.
final class TimmBackbone {
    /// A RepViT variant: stage widths and depths (the named ones are in
    /// `TimmBackboneConfig.knownModels`; `legacy` blocks: both token-mixer branches carry a batch
    /// norm, none after their sum).
    struct Variant {
        let embedDims: [Int]
        let depths: [Int]
        let mlpRatio = 2
        let kernel = 3
    }

    /// `SqueezeExcite` (timm `SEModule`): channel gates from the global average.
    struct SqueezeExcite {
        let fc1: Conv2d, fc2: Conv2d

        init(_ w: WeightStore, _ prefix: String, _ channels: Int) throws {
            // timm's make_divisible(channels * 0.25, 8, round_limit=0)
            let reduced = max(8, Int(Double(channels) * 0.25 + 4) / 8 * 8)
            fc1 = try Conv2d(w, "\(prefix).fc1", channels, reduced, kernel: 1)
            fc2 = try Conv2d(w, "\(prefix).fc2", reduced, channels, kernel: 1)
        }

        /// The gate of each channel from its mean.
        func gate(_ means: [Float]) -> [Float] {
            fc2(fc1(Tensor(shape: [means.count, 1, 1], data: means)).relu()).sigmoid().data
        }
    }

    /// `RepVitMlp`: 1x1 expand, GELU, 1x1 project (both with folded batch norms).
    struct Mlp {
        let expand: Conv2d, project: Conv2d

        init(_ w: WeightStore, _ prefix: String, _ dim: Int, hidden: Int) throws {
            expand = try foldedConvNorm(w, "\(prefix).conv1", dim, hidden, kernel: 1)
            project = try foldedConvNorm(w, "\(prefix).conv2", hidden, dim, kernel: 1)
        }

        /// `x + mlp(x)` with `x` first scaled by `gate` per channel (squeeze-excite), fused slab by
        /// slab over the pixels.
        /// (`x` is consumed: the map is updated in place, not copied.)
        func residual(_ x: consuming Tensor, gate: [Float]? = nil) -> Tensor {
            FeedForward.channelsResidual(&x, scale: gate, w1: expand.weight, b1: expand.bias!, w2: project.weight, b2: project.bias!)
            return x
        }
    }

    /// `RepViTBlock`: token mixer (one folded 3x3 depthwise conv), optional squeeze-excite, then
    /// the channel mixer with its residual.
    struct Block {
        let tokenMixer: Conv2d
        let se: SqueezeExcite?
        let channelMixer: Mlp

        init(_ w: WeightStore, _ prefix: String, _ dim: Int, mlpRatio: Int, kernel: Int, useSE: Bool) throws {
            tokenMixer = try foldedRepVggDw(w, "\(prefix).token_mixer", dim, kernel: kernel)
            se = useSE ? try SqueezeExcite(w, "\(prefix).se", dim) : nil
            channelMixer = try Mlp(w, "\(prefix).channel_mixer", dim, hidden: dim * mlpRatio)
        }

        func callAsFunction(_ x: Tensor) -> Tensor {
            guard let se else { return channelMixer.residual(tokenMixer(x)) }
            let (y, means) = Conv.depthwiseConv2dAndMeans(x, weight: tokenMixer.weight, bias: tokenMixer.bias,
                                                          padding: tokenMixer.padding)
            return channelMixer.residual(y, gate: se.gate(means))
        }
    }

    /// `RepVitDownsample`: a block, a stride-2 depthwise conv, a 1x1 to the new width, an MLP.
    struct Downsample {
        let preBlock: Block
        let spatial: Conv2d, channel: Conv2d
        let ffn: Mlp

        init(_ w: WeightStore, _ prefix: String, _ inDim: Int, _ outDim: Int, mlpRatio: Int, kernel: Int) throws {
            preBlock = try Block(w, "\(prefix).pre_block", inDim, mlpRatio: mlpRatio, kernel: kernel, useSE: false)
            spatial = try foldedConvNorm(w, "\(prefix).spatial_downsample", inDim, inDim, kernel: kernel, stride: 2,
                                         padding: (kernel - 1) / 2, depthwise: true)
            channel = try foldedConvNorm(w, "\(prefix).channel_downsample", inDim, outDim, kernel: 1)
            ffn = try Mlp(w, "\(prefix).ffn", outDim, hidden: outDim * mlpRatio)
        }

        func callAsFunction(_ x: Tensor) -> Tensor { ffn.residual(channel(spatial(preBlock(x)))) }
    }

    let stem1: Conv2d, stem2: Conv2d
    let stages: [(downsample: Downsample?, blocks: [Block])]
    /// Channels of the four outputs, highest resolution first.
    let channels: [Int]

    /// The model the config names (`repvit_m1.dist_in1k`; the pretrained tag does not change it).
    convenience init(_ w: WeightStore, _ prefix: String, _ cfg: TimmBackboneConfig) throws {
        guard let a = cfg.architecture else { throw ModelLoadError.missingKey("\(prefix) (unsupported timm model \(cfg.name))") }
        try self.init(w, prefix, variant: Variant(embedDims: a.widths, depths: a.depths))
    }

    init(_ w: WeightStore, _ prefix: String, variant v: Variant) throws {
        let body = "\(prefix).body"
        stem1 = try foldedConvNorm(w, "\(body).stem.conv1", 3, v.embedDims[0] / 2, kernel: 3, stride: 2, padding: 1)
        stem2 = try foldedConvNorm(w, "\(body).stem.conv2", v.embedDims[0] / 2, v.embedDims[0], kernel: 3, stride: 2, padding: 1)
        var stages = [(downsample: Downsample?, blocks: [Block])]()
        for (i, dim) in v.embedDims.enumerated() {
            let p = "\(body).stages_\(i)"
            let down = i == 0 ? nil : try Downsample(w, "\(p).downsample", v.embedDims[i - 1], dim, mlpRatio: v.mlpRatio, kernel: v.kernel)
            // Squeeze-excite on every other block, starting with the first.
            let blocks = try (0..<v.depths[i]).map {
                try Block(w, "\(p).blocks.\($0)", dim, mlpRatio: v.mlpRatio, kernel: v.kernel, useSE: $0 % 2 == 0)
            }
            stages.append((down, blocks))
        }
        self.stages = stages
        channels = v.embedDims
    }

    /// `[3, S, S]` → the four stage outputs `[C_i, S/2^(i+2), S/2^(i+2)]`.
    func callAsFunction(_ image: Tensor) -> [Tensor] {
        var x = stem2(stem1.thenGELU(image))
        var outputs = [Tensor]()
        for stage in stages {
            if let down = stage.downsample { x = down(x) }
            for block in stage.blocks { x = block(x) }
            outputs.append(x)
        }
        return outputs
    }
}

/// timm's `ConvNorm` (a bias-free conv, then batch norm in eval mode) as one convolution:
/// `w·γ/√(var+ε)`, bias `β − mean·γ/√(var+ε)` (`ConvNorm.fuse`).
private func foldedConvNorm(_ w: WeightStore, _ prefix: String, _ inC: Int, _ outC: Int, kernel: Int,
                            stride: Int = 1, padding: Int = 0, depthwise: Bool = false) throws -> Conv2d {
    let weight = try w.take("\(prefix).c.weight", [outC, depthwise ? 1 : inC, kernel, kernel])
    let (scale, shift) = try batchNorm(w, "\(prefix).bn", outC)
    let per = weight.count / outC
    var folded = weight
    for o in 0..<outC { for i in 0..<per { folded.data[o * per + i] *= scale[o] } }
    return Conv2d(weight: folded, bias: Tensor(shape: [outC], data: shift), stride: stride, padding: padding,
                  depthwise: depthwise)
}

/// A legacy `RepVggDw` (3x3 depthwise ConvNorm + 1x1 depthwise ConvNorm + identity) as one 3x3
/// depthwise convolution (`RepVggDw.fuse`).
private func foldedRepVggDw(_ w: WeightStore, _ prefix: String, _ dim: Int, kernel: Int) throws -> Conv2d {
    let conv = try foldedConvNorm(w, "\(prefix).conv", dim, dim, kernel: kernel, padding: (kernel - 1) / 2, depthwise: true)
    let conv1 = try foldedConvNorm(w, "\(prefix).conv1", dim, dim, kernel: 1, depthwise: true)
    var weight = conv.weight, bias = conv.bias!
    let k2 = kernel * kernel, center = k2 / 2
    for c in 0..<dim {
        weight.data[c * k2 + center] += conv1.weight.data[c] + 1
        bias.data[c] += conv1.bias!.data[c]
    }
    return Conv2d(weight: weight, bias: bias, stride: 1, padding: (kernel - 1) / 2, depthwise: true)
}

/// An eval-mode `BatchNorm2d` as a per-channel scale and shift (ε = 1e-5). Its batch counter
/// (`num_batches_tracked`, int64 in the checkpoint) is taken so strict loading accepts it.
private func batchNorm(_ w: WeightStore, _ prefix: String, _ c: Int) throws -> (scale: [Float], shift: [Float]) {
    let gamma = try w.take("\(prefix).weight", [c]), beta = try w.take("\(prefix).bias", [c])
    let mean = try w.take("\(prefix).running_mean", [c]), variance = try w.take("\(prefix).running_var", [c])
    _ = try w.take("\(prefix).num_batches_tracked", [])
    let scale = (0..<c).map { gamma.data[$0] / (variance.data[$0] + 1e-5).squareRoot() }
    let shift = (0..<c).map { beta.data[$0] - mean.data[$0] * scale[$0] }
    return (scale, shift)
}
