import SAM2Checkpoint
import SAM2Tensor

/// What the image encoder hands to the rest of the model for one frame.
public struct BackboneFeatures {
    /// FPN levels after `scalp`, highest resolution first, `[C, H, W]`. With high-res features in
    /// SAM, levels 0 and 1 are already projected by the mask decoder's `conv_s0` / `conv_s1`.
    public var levels: [Tensor]
    /// Sine position encodings of the same levels.
    public var positions: [Tensor]

    /// The lowest-resolution level: the frame embedding memory attention conditions.
    public var visionFeatures: Tensor { levels[levels.count - 1] }

    public init(levels: [Tensor], positions: [Tensor]) {
        self.levels = levels
        self.positions = positions
    }
}

/// The FPN neck: 1x1 lateral convs, top-down nearest upsampling on chosen levels,
/// and a sine position encoding per level.
struct FPNNeck {
    let convs: [Conv2d]  // convs[0] is for the lowest-resolution trunk stage
    let topDownLevels: Set<Int>
    let dModel: Int
    let numPosFeats: Int
    let temperature: Float
    let fuseAverage: Bool
    let nearest: Bool

    init(_ w: WeightStore, _ prefix: String, _ cfg: FpnNeckConfig) throws {
        dModel = cfg.dModel
        convs = try cfg.backboneChannelList.enumerated().map { i, c in
            try Conv2d(w, "\(prefix).convs.\(i).conv", c, cfg.dModel, kernel: cfg.kernelSize, stride: cfg.stride, padding: cfg.padding)
        }
        topDownLevels = Set(cfg.fpnTopDownLevels ?? Array(0..<cfg.backboneChannelList.count))
        numPosFeats = cfg.positionEncoding.numPosFeats
        temperature = Float(cfg.positionEncoding.temperature)
        fuseAverage = cfg.fuseType == "avg"
        nearest = cfg.fpnInterpModel == "nearest"
    }

    /// Trunk outputs (highest resolution first) → FPN features and their position encodings.
    func callAsFunction(_ xs: [Tensor]) -> (features: [Tensor], positions: [Tensor]) {
        let n = convs.count - 1
        var out = [Tensor?](repeating: nil, count: convs.count)
        var previous: Tensor? = nil
        for i in stride(from: n, through: 0, by: -1) {
            let lateral = convs[n - i](xs[i])
            if topDownLevels.contains(i), let prev = previous {
                let up = nearest ? Interpolate.nearest2x(prev)
                                 : Interpolate.bilinear(prev, height: 2 * prev.shape[1], width: 2 * prev.shape[2])
                var fused = lateral + up
                if fuseAverage { fused = fused.map { $0 / 2 } }
                previous = fused
            } else {
                previous = lateral
            }
            out[i] = previous
        }
        let features = out.map { $0! }
        let positions = features.map {
            PositionEncoding.sine(numPosFeats: numPosFeats, height: $0.shape[1], width: $0.shape[2], temperature: temperature)
        }
        return (features, positions)
    }
}

/// `ImageEncoder`: trunk (SAM 2's Hiera or EdgeTAM's RepViT) + FPN neck, dropping the `scalp`
/// lowest-resolution levels.
struct ImageEncoder {
    enum Trunk {
        case hiera(Hiera)
        case timm(TimmBackbone)

        /// The stage outputs `[C, H, W]`, highest resolution first.
        func callAsFunction(_ image: Tensor) -> [Tensor] {
            switch self {
            case let .hiera(h): return h(image)
            case let .timm(t): return t(image)
            }
        }
    }

    let trunk: Trunk
    let neck: FPNNeck
    let scalp: Int

    init(_ w: WeightStore, _ prefix: String, _ cfg: ImageEncoderConfig) throws {
        switch cfg.trunk {
        case let .hiera(h): trunk = .hiera(try Hiera(w, "\(prefix).trunk", h))
        case let .timm(t): trunk = .timm(try TimmBackbone(w, "\(prefix).trunk", name: t.name))
        }
        neck = try FPNNeck(w, "\(prefix).neck", cfg.neck)
        scalp = cfg.scalp
    }

    /// `[3, S, S]` normalised image → FPN levels and position encodings (highest resolution first).
    func callAsFunction(_ image: Tensor) -> (trunk: [Tensor], features: [Tensor], positions: [Tensor]) {
        let stages = trunk(image)
        var (features, positions) = neck(stages)
        if scalp > 0 {
            features.removeLast(scalp)
            positions.removeLast(scalp)
        }
        return (stages, features, positions)
    }
}
