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

    /// For levels that take no top-down input and give none (their next level up takes none
    /// either), the lateral 1x1 conv composed with the 1x1 conv `then[level]` applied right after
    /// it: `W·(L·x + l) + b = (W·L)·x + (W·l + b)`, one narrow convolution instead of a wide one
    /// and a projection (SAM 2's high-resolution levels, projected by the mask decoder's `conv_s0`
    /// / `conv_s1`). Nil when some level does not qualify.
    func lateralsComposed(with then: [Int: Conv2d]) -> [Int: Conv2d]? {
        let n = convs.count - 1
        var composed = [Int: Conv2d]()
        for (level, next) in then {
            let lateral = convs[n - level]
            guard !topDownLevels.contains(level), !topDownLevels.contains(level - 1), !next.depthwise,
                  lateral.weight.shape[2...] == [1, 1], next.weight.shape[2...] == [1, 1],
                  lateral.stride == 1, lateral.padding == 0, next.stride == 1, next.padding == 0,
                  next.weight.shape[1] == lateral.weight.shape[0] else { return nil }
            let cin = lateral.weight.shape[1], mid = lateral.weight.shape[0], cout = next.weight.shape[0]
            var weight = [Float](repeating: 0, count: cout * cin), bias = [Float](repeating: 0, count: cout)
            for o in 0..<cout {
                var b = Double(next.bias?.data[o] ?? 0)
                for m in 0..<mid { b += Double(next.weight.data[o * mid + m]) * Double(lateral.bias?.data[m] ?? 0) }
                bias[o] = Float(b)
                for i in 0..<cin {
                    var acc: Double = 0
                    for m in 0..<mid { acc += Double(next.weight.data[o * mid + m]) * Double(lateral.weight.data[m * cin + i]) }
                    weight[o * cin + i] = Float(acc)
                }
            }
            composed[level] = Conv2d(weight: Tensor(shape: [cout, cin, 1, 1], data: weight), bias: Tensor(shape: [cout], data: bias),
                                     stride: 1, padding: 0, depthwise: false)
        }
        return composed
    }

    /// Trunk outputs (highest resolution first) → FPN features and their position encodings.
    /// Levels in `replacing` are computed by that convolution instead (see `lateralsComposed`).
    func callAsFunction(_ xs: [Tensor], replacing: [Int: Conv2d] = [:]) -> (features: [Tensor], positions: [Tensor]) {
        let n = convs.count - 1
        var out = [Tensor?](repeating: nil, count: convs.count)
        var previous: Tensor? = nil
        for i in stride(from: n, through: 0, by: -1) {
            if let conv = replacing[i] {
                out[i] = conv(xs[i])
                previous = nil
                continue
            }
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
        case let .timm(t): trunk = .timm(try TimmBackbone(w, "\(prefix).trunk", t))
        }
        neck = try FPNNeck(w, "\(prefix).neck", cfg.neck)
        scalp = cfg.scalp
    }

    /// `[3, S, S]` normalised image → FPN levels and position encodings (highest resolution first).
    func callAsFunction(_ image: Tensor, replacing: [Int: Conv2d] = [:]) -> (trunk: [Tensor], features: [Tensor], positions: [Tensor]) {
        let stages = trunk(image)
        var (features, positions) = neck(stages, replacing: replacing)
        if scalp > 0 {
            features.removeLast(scalp)
            positions.removeLast(scalp)
        }
        return (stages, features, positions)
    }
}
