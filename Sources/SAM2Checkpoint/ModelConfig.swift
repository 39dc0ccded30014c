// Model configuration: the `model:` section of an official SAM 2 Hydra config.
//
// Two kinds of input are accepted:
//  (a) an official config (`model._target_: sam2.modeling.sam2_base.SAM2Base`, as in Configs/):
//      we apply what `build_sam2_video_predictor` does (target becomes SAM2VideoPredictor, plus its
//      post-processing overrides), except for two documented defaults of this tool:
//      fill_hole_area = 0 and add_all_frames_to_correct_as_cond = true;
//  (b) a fully resolved predictor config (`sam2.sam2_video_predictor.SAM2VideoPredictor`): taken as is.
// In both, a key absent from the YAML takes the default of the Python constructor it is passed to,
// and a key the Python constructor requires (no default) must be present.

import Foundation
import Yams

// MARK: - Hydra class paths

/// The `_target_` class paths of the official configs.
public enum SAM2Targets {
    public static let sam2Base = "sam2.modeling.sam2_base.SAM2Base"
    public static let videoPredictor = "sam2.sam2_video_predictor.SAM2VideoPredictor"
    /// torch.compile'd variant; numerically the same model, so it is accepted like the predictor.
    public static let videoPredictorVOS = "sam2.sam2_video_predictor.SAM2VideoPredictorVOS"
    public static let imageEncoder = "sam2.modeling.backbones.image_encoder.ImageEncoder"
    public static let hiera = "sam2.modeling.backbones.hieradet.Hiera"
    public static let fpnNeck = "sam2.modeling.backbones.image_encoder.FpnNeck"
    public static let positionEmbeddingSine = "sam2.modeling.position_encoding.PositionEmbeddingSine"
    public static let memoryAttention = "sam2.modeling.memory_attention.MemoryAttention"
    public static let memoryAttentionLayer = "sam2.modeling.memory_attention.MemoryAttentionLayer"
    public static let ropeAttention = "sam2.modeling.sam.transformer.RoPEAttention"
    public static let memoryEncoder = "sam2.modeling.memory_encoder.MemoryEncoder"
    public static let maskDownSampler = "sam2.modeling.memory_encoder.MaskDownSampler"
    public static let fuser = "sam2.modeling.memory_encoder.Fuser"
    public static let cxBlock = "sam2.modeling.memory_encoder.CXBlock"
    // EdgeTAM (facebookresearch/EdgeTAM, a fork of sam2 with the same schema).
    public static let timmBackbone = "sam2.modeling.backbones.timm.TimmBackbone"
    public static let ropeAttentionV2 = "sam2.modeling.sam.transformer.RoPEAttentionv2"
    public static let perceiverResampler = "sam2.modeling.perceiver.PerceiverResampler"
}

// MARK: - Errors

/// A one-line, user-facing configuration error naming the file and the key.
public struct ConfigError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: Sendable, Equatable {
        case unreadableFile, syntax, missingModelSection, missingKey, unknownKey, wrongType, invalidValue, unknownModel
    }
    public var kind: Kind
    /// The file (or other source label) the config came from; nil when unknown.
    public var file: String?
    /// The dotted key path as written in the YAML, e.g. `model.image_encoder.trunk.stages[2]`.
    public var key: String?
    public var message: String

    public init(_ kind: Kind, file: String? = nil, key: String? = nil, _ message: String) {
        self.kind = kind
        self.file = file
        self.key = key
        // One line, always: messages may quote YAML text.
        self.message = message.replacingOccurrences(of: "\n", with: " ")
    }

    public var description: String {
        var parts: [String] = []
        if let file { parts.append(file) }
        if let key { parts.append(key) }
        parts.append(message)
        return parts.joined(separator: ": ")
    }
}

// MARK: - Image encoder

/// `model.image_encoder` (ImageEncoder).
public struct ImageEncoderConfig: Codable, Equatable, Sendable {
    public var target: String
    /// Number of lowest-resolution feature levels dropped after the neck.
    public var scalp: Int
    public var trunk: TrunkConfig
    public var neck: FpnNeckConfig

    enum CodingKeys: String, CodingKey, CaseIterable {
        case target = "_target_", scalp, trunk, neck
    }

    /// The trunk when it is SAM 2's Hiera (nil for EdgeTAM's RepViT).
    public var hiera: HieraConfig? {
        get {
            if case let .hiera(h) = trunk { return h }
            return nil
        }
        set { if let newValue { trunk = .hiera(newValue) } }
    }

    public init(from decoder: Decoder) throws {
        let r = try ConfigReader(decoder, CodingKeys.self, className: "ImageEncoder")
        target = try r.target(.target, [SAM2Targets.imageEncoder])
        trunk = try r.section(.trunk)
        neck = try r.section(.neck)
        scalp = try r.get(.scalp, 0)
    }
}

/// `model.image_encoder.trunk`: SAM 2's Hiera, or EdgeTAM's `TimmBackbone`, by `_target_`.
public enum TrunkConfig: Codable, Equatable, Sendable {
    case hiera(HieraConfig)
    case timm(TimmBackboneConfig)

    public init(from decoder: Decoder) throws {
        let keys = try decoder.container(keyedBy: AnyConfigKey.self)
        let target = try? keys.decode(String.self, forKey: AnyConfigKey(stringValue: "_target_"))
        self = target == SAM2Targets.timmBackbone ? .timm(try TimmBackboneConfig(from: decoder))
                                                   : .hiera(try HieraConfig(from: decoder))
    }

    public func encode(to encoder: Encoder) throws {
        switch self {
        case let .hiera(h): try h.encode(to: encoder)
        case let .timm(t): try t.encode(to: encoder)
        }
    }

    /// Channels of the trunk's outputs, highest resolution first.
    public var channels: [Int] {
        switch self {
        case let .hiera(h): return h.stageDims
        case let .timm(t): return t.channels
        }
    }
}

/// `model.image_encoder.trunk` (TimmBackbone): a timm model built with `features_only=True`.
public struct TimmBackboneConfig: Codable, Equatable, Sendable {
    public var target: String
    /// The timm model, e.g. `repvit_m1.dist_in1k` (the tag after the dot names pretrained weights).
    public var name: String
    /// `layer<i>` for each feature level taken (`out_indices`).
    public var features: [String]

    enum CodingKeys: String, CodingKey, CaseIterable {
        case target = "_target_", name, features
    }

    public init(from decoder: Decoder) throws {
        let r = try ConfigReader(decoder, CodingKeys.self, className: "TimmBackbone")
        target = try r.target(.target, [SAM2Targets.timmBackbone])
        name = try r.required(.name)
        features = try r.requiredList(.features)
    }

    /// The timm models this tool builds, by name without the pretrained tag: stage widths and
    /// blocks per stage.
    public static let knownModels: [String: (widths: [Int], depths: [Int])] = [
        "repvit_m1": (widths: [48, 96, 192, 384], depths: [2, 2, 14, 2]),
    ]

    public var baseName: String { String(name.split(separator: ".").first ?? "") }
    /// Stage widths and depths of the model named, nil when this tool does not build it.
    public var architecture: (widths: [Int], depths: [Int])? { Self.knownModels[baseName] }
    public var channels: [Int] { architecture?.widths ?? [] }
}

/// `model.image_encoder.trunk` (Hiera).
public struct HieraConfig: Codable, Equatable, Sendable {
    public var target: String
    public var embedDim: Int
    public var numHeads: Int
    public var dropPathRate: Double
    public var qPool: Int
    public var qStride: [Int]
    public var stages: [Int]
    public var dimMul: Double
    public var headMul: Double
    public var windowPosEmbedBkgSpatialSize: [Int]
    public var windowSpec: [Int]
    /// Blocks with global attention (Python also allows None, read here as []).
    public var globalAttBlocks: [Int]

    enum CodingKeys: String, CodingKey, CaseIterable {
        case target = "_target_"
        case embedDim = "embed_dim", numHeads = "num_heads", dropPathRate = "drop_path_rate"
        case qPool = "q_pool", qStride = "q_stride", stages
        case dimMul = "dim_mul", headMul = "head_mul"
        case windowPosEmbedBkgSpatialSize = "window_pos_embed_bkg_spatial_size"
        case windowSpec = "window_spec", globalAttBlocks = "global_att_blocks"
    }

    public init(from decoder: Decoder) throws {
        // weights_path only pre-loads trunk weights that the checkpoint overwrites anyway.
        let r = try ConfigReader(decoder, CodingKeys.self, className: "Hiera",
                                 ignoring: ["weights_path", "return_interm_layers"])
        target = try r.target(.target, [SAM2Targets.hiera])
        embedDim = try r.get(.embedDim, 96)
        numHeads = try r.get(.numHeads, 1)
        dropPathRate = try r.get(.dropPathRate, 0.0)
        qPool = try r.get(.qPool, 3)
        qStride = try r.list(.qStride, [2, 2])
        stages = try r.list(.stages, [2, 3, 16, 3])
        dimMul = try r.get(.dimMul, 2.0)
        headMul = try r.get(.headMul, 2.0)
        windowPosEmbedBkgSpatialSize = try r.list(.windowPosEmbedBkgSpatialSize, [14, 14])
        windowSpec = try r.list(.windowSpec, [8, 4, 14, 7])
        globalAttBlocks = try r.optionalList(.globalAttBlocks, default: [12, 16, 20]) ?? []
    }

    /// Channels of each stage, as Hiera computes them (int() after each multiplication).
    public var stageDims: [Int] {
        var dims: [Int] = []
        var d = embedDim
        for i in stages.indices {
            if i > 0 { d = Int(Double(d) * dimMul) }
            dims.append(d)
        }
        return dims
    }

    /// Attention heads of each stage, computed like `stageDims`.
    public var stageHeads: [Int] {
        var heads: [Int] = []
        var h = numHeads
        for i in stages.indices {
            if i > 0 { h = Int(Double(h) * headMul) }
            heads.append(h)
        }
        return heads
    }
}

/// `model.image_encoder.neck` (FpnNeck).
public struct FpnNeckConfig: Codable, Equatable, Sendable {
    public var target: String
    public var positionEncoding: PositionEncodingConfig
    public var dModel: Int
    /// Trunk channels from the lowest resolution (last stage) to the highest.
    public var backboneChannelList: [Int]
    public var kernelSize: Int
    public var stride: Int
    public var padding: Int
    public var fpnInterpModel: String
    public var fuseType: String
    /// nil (the Python default) means every level gets top-down features; see `topDownLevels`.
    public var fpnTopDownLevels: [Int]?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case target = "_target_"
        case positionEncoding = "position_encoding", dModel = "d_model"
        case backboneChannelList = "backbone_channel_list"
        case kernelSize = "kernel_size", stride, padding
        case fpnInterpModel = "fpn_interp_model", fuseType = "fuse_type"
        case fpnTopDownLevels = "fpn_top_down_levels"
    }

    public init(from decoder: Decoder) throws {
        let r = try ConfigReader(decoder, CodingKeys.self, className: "FpnNeck")
        target = try r.target(.target, [SAM2Targets.fpnNeck])
        positionEncoding = try r.section(.positionEncoding)
        dModel = try r.required(.dModel)
        backboneChannelList = try r.requiredList(.backboneChannelList)
        kernelSize = try r.get(.kernelSize, 1)
        stride = try r.get(.stride, 1)
        padding = try r.get(.padding, 0)
        fpnInterpModel = try r.get(.fpnInterpModel, "bilinear")
        fuseType = try r.get(.fuseType, "sum")
        fpnTopDownLevels = try r.optionalList(.fpnTopDownLevels, default: nil)
    }

    /// The levels that receive top-down features, with the Python default resolved.
    public var topDownLevels: [Int] { fpnTopDownLevels ?? Array(backboneChannelList.indices) }
}

/// A `position_encoding` (PositionEmbeddingSine).
public struct PositionEncodingConfig: Codable, Equatable, Sendable {
    public var target: String
    /// Output channels (half for x, half for y).
    public var numPosFeats: Int
    public var normalize: Bool
    /// nil (the Python default) means 2π; see `effectiveScale`.
    public var scale: Double?
    public var temperature: Double

    enum CodingKeys: String, CodingKey, CaseIterable {
        case target = "_target_"
        case numPosFeats = "num_pos_feats", normalize, scale, temperature
    }

    public init(from decoder: Decoder) throws {
        // The other keys only warm up a torch.compile cache.
        let r = try ConfigReader(decoder, CodingKeys.self, className: "PositionEmbeddingSine",
                                 ignoring: ["warmup_cache", "image_size", "strides"])
        target = try r.target(.target, [SAM2Targets.positionEmbeddingSine])
        numPosFeats = try r.required(.numPosFeats)
        normalize = try r.get(.normalize, true)
        scale = try r.optional(.scale)
        temperature = try r.get(.temperature, 10000.0)
    }

    public var effectiveScale: Double { scale ?? 2 * Double.pi }
}

// MARK: - Memory attention

/// `model.memory_attention` (MemoryAttention).
public struct MemoryAttentionConfig: Codable, Equatable, Sendable {
    public var target: String
    public var dModel: Int
    public var posEncAtInput: Bool
    public var layer: MemoryAttentionLayerConfig
    public var numLayers: Int

    enum CodingKeys: String, CodingKey, CaseIterable {
        case target = "_target_"
        case dModel = "d_model", posEncAtInput = "pos_enc_at_input", layer, numLayers = "num_layers"
    }

    public init(from decoder: Decoder) throws {
        // batch_first is a tensor-layout detail of the PyTorch code only.
        let r = try ConfigReader(decoder, CodingKeys.self, className: "MemoryAttention", ignoring: ["batch_first"])
        target = try r.target(.target, [SAM2Targets.memoryAttention])
        dModel = try r.required(.dModel)
        posEncAtInput = try r.required(.posEncAtInput)
        layer = try r.section(.layer)
        numLayers = try r.required(.numLayers)
    }
}

/// `model.memory_attention.layer` (MemoryAttentionLayer); every key is required in Python.
public struct MemoryAttentionLayerConfig: Codable, Equatable, Sendable {
    public var target: String
    public var activation: String
    public var dimFeedforward: Int
    public var dropout: Double
    public var posEncAtAttn: Bool
    public var selfAttention: RoPEAttentionConfig
    public var dModel: Int
    public var posEncAtCrossAttnKeys: Bool
    public var posEncAtCrossAttnQueries: Bool
    public var crossAttention: RoPEAttentionConfig

    enum CodingKeys: String, CodingKey, CaseIterable {
        case target = "_target_"
        case activation, dimFeedforward = "dim_feedforward", dropout, posEncAtAttn = "pos_enc_at_attn"
        case selfAttention = "self_attention", dModel = "d_model"
        case posEncAtCrossAttnKeys = "pos_enc_at_cross_attn_keys"
        case posEncAtCrossAttnQueries = "pos_enc_at_cross_attn_queries"
        case crossAttention = "cross_attention"
    }

    public init(from decoder: Decoder) throws {
        let r = try ConfigReader(decoder, CodingKeys.self, className: "MemoryAttentionLayer")
        target = try r.target(.target, [SAM2Targets.memoryAttentionLayer])
        activation = try r.required(.activation)
        dimFeedforward = try r.required(.dimFeedforward)
        dropout = try r.required(.dropout)
        posEncAtAttn = try r.required(.posEncAtAttn)
        selfAttention = try r.section(.selfAttention)
        dModel = try r.required(.dModel)
        posEncAtCrossAttnKeys = try r.required(.posEncAtCrossAttnKeys)
        posEncAtCrossAttnQueries = try r.required(.posEncAtCrossAttnQueries)
        crossAttention = try r.section(.crossAttention)
    }
}

/// `self_attention` / `cross_attention`: RoPEAttention, or EdgeTAM's RoPEAttentionv2 (queries and
/// keys on grids of different sizes: `q_sizes`, `k_sizes`).
public struct RoPEAttentionConfig: Codable, Equatable, Sendable {
    public var target: String
    public var ropeTheta: Double
    /// [w, h] of the feature map the RoPE table is first built for.
    public var featSizes: [Int]
    /// Repeat the query RoPE to the key length (cross-attention to several memories).
    public var ropeKRepeat: Bool
    /// RoPEAttentionv2: [w, h] of the query grid and of each memory's key grid.
    public var qSizes: [Int]
    public var kSizes: [Int]
    public var embeddingDim: Int
    public var numHeads: Int
    public var downsampleRate: Int
    public var dropout: Double
    /// nil (the Python default) means `embeddingDim`; see `resolvedKvInDim`.
    public var kvInDim: Int?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case target = "_target_"
        case ropeTheta = "rope_theta", featSizes = "feat_sizes", ropeKRepeat = "rope_k_repeat"
        case qSizes = "q_sizes", kSizes = "k_sizes"
        case embeddingDim = "embedding_dim", numHeads = "num_heads", downsampleRate = "downsample_rate"
        case dropout, kvInDim = "kv_in_dim"
    }

    public init(from decoder: Decoder) throws {
        let keys = try decoder.container(keyedBy: AnyConfigKey.self)
        let isV2 = (try? keys.decode(String.self, forKey: AnyConfigKey(stringValue: "_target_"))) == SAM2Targets.ropeAttentionV2
        // Each class takes only its own grid keys (Python would refuse the other's).
        let r = try ConfigReader(decoder, CodingKeys.self, className: isV2 ? "RoPEAttentionv2" : "RoPEAttention",
                                 refusing: isV2 ? ["feat_sizes", "rope_k_repeat"] : ["q_sizes", "k_sizes"])
        target = try r.target(.target, [SAM2Targets.ropeAttention, SAM2Targets.ropeAttentionV2])
        ropeTheta = try r.get(.ropeTheta, 10000.0)
        featSizes = try r.list(.featSizes, [64, 64])
        ropeKRepeat = try r.get(.ropeKRepeat, false)
        qSizes = try r.list(.qSizes, [32, 32])
        kSizes = try r.list(.kSizes, [32, 32])
        embeddingDim = try r.required(.embeddingDim)
        numHeads = try r.required(.numHeads)
        downsampleRate = try r.get(.downsampleRate, 1)
        dropout = try r.get(.dropout, 0.0)
        kvInDim = try r.optional(.kvInDim)
    }

    /// Writes only the grid keys of its own class, so that the YAML reads back.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(target, forKey: .target)
        try c.encode(ropeTheta, forKey: .ropeTheta)
        if isV2 {
            try c.encode(qSizes, forKey: .qSizes)
            try c.encode(kSizes, forKey: .kSizes)
        } else {
            try c.encode(featSizes, forKey: .featSizes)
            try c.encode(ropeKRepeat, forKey: .ropeKRepeat)
        }
        try c.encode(embeddingDim, forKey: .embeddingDim)
        try c.encode(numHeads, forKey: .numHeads)
        try c.encode(downsampleRate, forKey: .downsampleRate)
        try c.encode(dropout, forKey: .dropout)
        try c.encodeIfPresent(kvInDim, forKey: .kvInDim)
    }

    public var isV2: Bool { target == SAM2Targets.ropeAttentionV2 }
    public var resolvedKvInDim: Int { kvInDim ?? embeddingDim }
    /// Width of q/k/v after projection.
    public var internalDim: Int { downsampleRate > 0 ? embeddingDim / downsampleRate : 0 }
}

// MARK: - Spatial perceiver (EdgeTAM)

/// `model.spatial_perceiver` (PerceiverResampler): latents that attend to a memory frame.
public struct PerceiverResamplerConfig: Codable, Equatable, Sendable {
    public var target: String
    public var dim: Int
    public var depth: Int
    public var dimHead: Int
    public var heads: Int
    /// Global (1D) latents, and 2D latents each attending to one window of the map (-1: none).
    public var numLatents: Int
    public var numLatents2d: Int
    public var ffMult: Int
    public var hiddenDropoutP: Double
    public var attentionDropoutP: Double
    public var posEncAtKeyValue: Bool
    public var concatKvLatents: Bool
    public var positionEncoding: PositionEncodingConfig?
    public var useSelfAttn: Bool

    enum CodingKeys: String, CodingKey, CaseIterable {
        case target = "_target_", dim, depth, dimHead = "dim_head", heads
        case numLatents = "num_latents", numLatents2d = "num_latents_2d", ffMult = "ff_mult"
        case hiddenDropoutP = "hidden_dropout_p", attentionDropoutP = "attention_dropout_p"
        case posEncAtKeyValue = "pos_enc_at_key_value", concatKvLatents = "concat_kv_latents"
        case positionEncoding = "position_encoding", useSelfAttn = "use_self_attn"
    }

    public init(from decoder: Decoder) throws {
        let r = try ConfigReader(decoder, CodingKeys.self, className: "PerceiverResampler")
        target = try r.target(.target, [SAM2Targets.perceiverResampler])
        dim = try r.required(.dim)
        depth = try r.required(.depth)
        dimHead = try r.get(.dimHead, 64)
        heads = try r.get(.heads, 1)
        numLatents = try r.get(.numLatents, -1)
        numLatents2d = try r.get(.numLatents2d, -1)
        ffMult = try r.get(.ffMult, 4)
        hiddenDropoutP = try r.get(.hiddenDropoutP, 0.1)
        attentionDropoutP = try r.get(.attentionDropoutP, 0.05)
        posEncAtKeyValue = try r.get(.posEncAtKeyValue, false)
        concatKvLatents = try r.get(.concatKvLatents, false)
        positionEncoding = try r.section(.positionEncoding, default: nil)
        useSelfAttn = try r.get(.useSelfAttn, false)
    }
}

// MARK: - Memory encoder

/// `model.memory_encoder` (MemoryEncoder).
public struct MemoryEncoderConfig: Codable, Equatable, Sendable {
    public var target: String
    public var outDim: Int
    public var positionEncoding: PositionEncodingConfig
    public var maskDownsampler: MaskDownSamplerConfig
    public var fuser: FuserConfig
    /// Channels of the pixel features fed in (the neck's d_model).
    public var inDim: Int

    enum CodingKeys: String, CodingKey, CaseIterable {
        case target = "_target_"
        case outDim = "out_dim", positionEncoding = "position_encoding"
        case maskDownsampler = "mask_downsampler", fuser, inDim = "in_dim"
    }

    public init(from decoder: Decoder) throws {
        let r = try ConfigReader(decoder, CodingKeys.self, className: "MemoryEncoder")
        target = try r.target(.target, [SAM2Targets.memoryEncoder])
        outDim = try r.required(.outDim)
        positionEncoding = try r.section(.positionEncoding)
        maskDownsampler = try r.section(.maskDownsampler)
        fuser = try r.section(.fuser)
        inDim = try r.get(.inDim, 256)
    }
}

/// `model.memory_encoder.mask_downsampler` (MaskDownSampler).
public struct MaskDownSamplerConfig: Codable, Equatable, Sendable {
    public var target: String
    public var embedDim: Int
    public var kernelSize: Int
    public var stride: Int
    public var padding: Int
    public var totalStride: Int

    enum CodingKeys: String, CodingKey, CaseIterable {
        case target = "_target_"
        case embedDim = "embed_dim", kernelSize = "kernel_size", stride, padding, totalStride = "total_stride"
    }

    public init(from decoder: Decoder) throws {
        let r = try ConfigReader(decoder, CodingKeys.self, className: "MaskDownSampler")
        target = try r.target(.target, [SAM2Targets.maskDownSampler])
        embedDim = try r.get(.embedDim, 256)
        kernelSize = try r.get(.kernelSize, 4)
        stride = try r.get(.stride, 4)
        padding = try r.get(.padding, 0)
        totalStride = try r.get(.totalStride, 16)
    }

    /// Number of conv stages: stride^numLayers == totalStride (checked by `validate`).
    public var numLayers: Int {
        guard stride > 1, totalStride > 0 else { return 0 }
        var n = 0, s = 1
        while s < totalStride { s *= stride; n += 1 }
        return n
    }
}

/// `model.memory_encoder.fuser` (Fuser).
public struct FuserConfig: Codable, Equatable, Sendable {
    public var target: String
    public var layer: CXBlockConfig
    public var numLayers: Int
    public var dim: Int?
    /// An extra 1x1 conv before the blocks; not in any official config and rejected by `validate`.
    public var inputProjection: Bool

    enum CodingKeys: String, CodingKey, CaseIterable {
        case target = "_target_"
        case layer, numLayers = "num_layers", dim, inputProjection = "input_projection"
    }

    public init(from decoder: Decoder) throws {
        let r = try ConfigReader(decoder, CodingKeys.self, className: "Fuser")
        target = try r.target(.target, [SAM2Targets.fuser])
        layer = try r.section(.layer)
        numLayers = try r.required(.numLayers)
        dim = try r.optional(.dim)
        inputProjection = try r.get(.inputProjection, false)
    }
}

/// `model.memory_encoder.fuser.layer` (CXBlock, a ConvNeXt block).
public struct CXBlockConfig: Codable, Equatable, Sendable {
    public var target: String
    public var dim: Int
    public var kernelSize: Int
    public var padding: Int
    public var layerScaleInitValue: Double
    public var useDwconv: Bool

    enum CodingKeys: String, CodingKey, CaseIterable {
        case target = "_target_"
        case dim, kernelSize = "kernel_size", padding
        case layerScaleInitValue = "layer_scale_init_value", useDwconv = "use_dwconv"
    }

    public init(from decoder: Decoder) throws {
        // drop_path only acts in training.
        let r = try ConfigReader(decoder, CodingKeys.self, className: "CXBlock", ignoring: ["drop_path"])
        target = try r.target(.target, [SAM2Targets.cxBlock])
        dim = try r.required(.dim)
        kernelSize = try r.get(.kernelSize, 7)
        padding = try r.get(.padding, 3)
        layerScaleInitValue = try r.get(.layerScaleInitValue, 1e-6)
        useDwconv = try r.get(.useDwconv, true)
    }
}

/// `model.sam_mask_decoder_extra_args` (keyword arguments of MaskDecoder). Absent or null means
/// MaskDecoder's own defaults.
public struct MaskDecoderExtraArgs: Codable, Equatable, Sendable {
    /// With a single-mask output, fall back to the best of the multimask outputs when unstable.
    public var dynamicMultimaskViaStability: Bool = false
    public var dynamicMultimaskStabilityDelta: Double = 0.05
    public var dynamicMultimaskStabilityThresh: Double = 0.98

    enum CodingKeys: String, CodingKey, CaseIterable {
        case dynamicMultimaskViaStability = "dynamic_multimask_via_stability"
        case dynamicMultimaskStabilityDelta = "dynamic_multimask_stability_delta"
        case dynamicMultimaskStabilityThresh = "dynamic_multimask_stability_thresh"
    }

    public init() {}

    public init(from decoder: Decoder) throws {
        let r = try ConfigReader(decoder, CodingKeys.self, className: "MaskDecoder")
        dynamicMultimaskViaStability = try r.get(.dynamicMultimaskViaStability, false)
        dynamicMultimaskStabilityDelta = try r.get(.dynamicMultimaskStabilityDelta, 0.05)
        dynamicMultimaskStabilityThresh = try r.get(.dynamicMultimaskStabilityThresh, 0.98)
    }
}

// MARK: - The model

/// The `model:` section: SAM2Base arguments plus SAM2VideoPredictor's own.
public struct SAM2Config: Codable, Equatable, Sendable {
    public var target: String
    public var imageEncoder: ImageEncoderConfig
    public var memoryAttention: MemoryAttentionConfig
    public var memoryEncoder: MemoryEncoderConfig
    /// EdgeTAM's spatial perceiver, which compresses each memory frame (nil in SAM 2).
    public var spatialPerceiver: PerceiverResamplerConfig?

    // SAM2Base
    public var numMaskmem: Int
    public var imageSize: Int
    public var backboneStride: Int
    public var sigmoidScaleForMemEnc: Double
    public var sigmoidBiasForMemEnc: Double
    public var binarizeMaskFromPtsForMemEnc: Bool
    public var useMaskInputAsOutputWithoutSam: Bool
    public var maxCondFramesInAttn: Int
    public var directlyAddNoMemEmbed: Bool
    public var useHighResFeaturesInSam: Bool
    public var multimaskOutputInSam: Bool
    public var multimaskMinPtNum: Int
    public var multimaskMaxPtNum: Int
    public var multimaskOutputForTracking: Bool
    public var useMultimaskTokenForObjPtr: Bool
    public var iouPredictionUseSigmoid: Bool
    public var memoryTemporalStrideForEval: Int
    public var nonOverlapMasksForMemEnc: Bool
    public var useObjPtrsInEncoder: Bool
    public var maxObjPtrsInEncoder: Int
    public var addTposEncToObjPtrs: Bool
    public var projTposEncInObjPtrs: Bool
    public var useSignedTposEncToObjPtrs: Bool
    public var onlyObjPtrsInThePastForEval: Bool
    public var predObjScores: Bool
    public var predObjScoresMlp: Bool
    public var fixedNoObjPtr: Bool
    public var softNoObjPtr: Bool
    public var useMlpForObjPtrProj: Bool
    public var noObjEmbedSpatial: Bool
    public var samMaskDecoderExtraArgs: MaskDecoderExtraArgs
    /// A torch.compile switch; no effect here, kept so configs round-trip.
    public var compileImageEncoder: Bool

    // SAM2VideoPredictor
    public var fillHoleArea: Int
    public var nonOverlapMasks: Bool
    public var clearNonCondMemAroundInput: Bool
    public var addAllFramesToCorrectAsCond: Bool

    enum CodingKeys: String, CodingKey, CaseIterable {
        case target = "_target_"
        case imageEncoder = "image_encoder", memoryAttention = "memory_attention", memoryEncoder = "memory_encoder"
        case spatialPerceiver = "spatial_perceiver"
        case numMaskmem = "num_maskmem", imageSize = "image_size", backboneStride = "backbone_stride"
        case sigmoidScaleForMemEnc = "sigmoid_scale_for_mem_enc", sigmoidBiasForMemEnc = "sigmoid_bias_for_mem_enc"
        case binarizeMaskFromPtsForMemEnc = "binarize_mask_from_pts_for_mem_enc"
        case useMaskInputAsOutputWithoutSam = "use_mask_input_as_output_without_sam"
        case maxCondFramesInAttn = "max_cond_frames_in_attn"
        case directlyAddNoMemEmbed = "directly_add_no_mem_embed"
        case useHighResFeaturesInSam = "use_high_res_features_in_sam"
        case multimaskOutputInSam = "multimask_output_in_sam"
        case multimaskMinPtNum = "multimask_min_pt_num", multimaskMaxPtNum = "multimask_max_pt_num"
        case multimaskOutputForTracking = "multimask_output_for_tracking"
        case useMultimaskTokenForObjPtr = "use_multimask_token_for_obj_ptr"
        case iouPredictionUseSigmoid = "iou_prediction_use_sigmoid"
        case memoryTemporalStrideForEval = "memory_temporal_stride_for_eval"
        case nonOverlapMasksForMemEnc = "non_overlap_masks_for_mem_enc"
        case useObjPtrsInEncoder = "use_obj_ptrs_in_encoder", maxObjPtrsInEncoder = "max_obj_ptrs_in_encoder"
        case addTposEncToObjPtrs = "add_tpos_enc_to_obj_ptrs", projTposEncInObjPtrs = "proj_tpos_enc_in_obj_ptrs"
        case useSignedTposEncToObjPtrs = "use_signed_tpos_enc_to_obj_ptrs"
        case onlyObjPtrsInThePastForEval = "only_obj_ptrs_in_the_past_for_eval"
        case predObjScores = "pred_obj_scores", predObjScoresMlp = "pred_obj_scores_mlp"
        case fixedNoObjPtr = "fixed_no_obj_ptr", softNoObjPtr = "soft_no_obj_ptr"
        case useMlpForObjPtrProj = "use_mlp_for_obj_ptr_proj", noObjEmbedSpatial = "no_obj_embed_spatial"
        case samMaskDecoderExtraArgs = "sam_mask_decoder_extra_args"
        case compileImageEncoder = "compile_image_encoder"
        case fillHoleArea = "fill_hole_area", nonOverlapMasks = "non_overlap_masks"
        case clearNonCondMemAroundInput = "clear_non_cond_mem_around_input"
        case addAllFramesToCorrectAsCond = "add_all_frames_to_correct_as_cond"
    }

    public init(from decoder: Decoder) throws {
        let r = try ConfigReader(decoder, CodingKeys.self, className: "SAM2VideoPredictor")
        target = try r.target(.target, [SAM2Targets.sam2Base, SAM2Targets.videoPredictor, SAM2Targets.videoPredictorVOS],
                              required: true)
        imageEncoder = try r.section(.imageEncoder)
        memoryAttention = try r.section(.memoryAttention)
        memoryEncoder = try r.section(.memoryEncoder)
        spatialPerceiver = try r.section(.spatialPerceiver, default: nil)
        // Defaults: SAM2Base.__init__ (sam2/modeling/sam2_base.py).
        numMaskmem = try r.get(.numMaskmem, 7)
        imageSize = try r.get(.imageSize, 512)
        backboneStride = try r.get(.backboneStride, 16)
        sigmoidScaleForMemEnc = try r.get(.sigmoidScaleForMemEnc, 1.0)
        sigmoidBiasForMemEnc = try r.get(.sigmoidBiasForMemEnc, 0.0)
        binarizeMaskFromPtsForMemEnc = try r.get(.binarizeMaskFromPtsForMemEnc, false)
        useMaskInputAsOutputWithoutSam = try r.get(.useMaskInputAsOutputWithoutSam, false)
        maxCondFramesInAttn = try r.get(.maxCondFramesInAttn, -1)
        directlyAddNoMemEmbed = try r.get(.directlyAddNoMemEmbed, false)
        useHighResFeaturesInSam = try r.get(.useHighResFeaturesInSam, false)
        multimaskOutputInSam = try r.get(.multimaskOutputInSam, false)
        multimaskMinPtNum = try r.get(.multimaskMinPtNum, 1)
        multimaskMaxPtNum = try r.get(.multimaskMaxPtNum, 1)
        multimaskOutputForTracking = try r.get(.multimaskOutputForTracking, false)
        useMultimaskTokenForObjPtr = try r.get(.useMultimaskTokenForObjPtr, false)
        iouPredictionUseSigmoid = try r.get(.iouPredictionUseSigmoid, false)
        memoryTemporalStrideForEval = try r.get(.memoryTemporalStrideForEval, 1)
        nonOverlapMasksForMemEnc = try r.get(.nonOverlapMasksForMemEnc, false)
        useObjPtrsInEncoder = try r.get(.useObjPtrsInEncoder, false)
        maxObjPtrsInEncoder = try r.get(.maxObjPtrsInEncoder, 16)
        addTposEncToObjPtrs = try r.get(.addTposEncToObjPtrs, true)
        projTposEncInObjPtrs = try r.get(.projTposEncInObjPtrs, false)
        useSignedTposEncToObjPtrs = try r.get(.useSignedTposEncToObjPtrs, false)
        onlyObjPtrsInThePastForEval = try r.get(.onlyObjPtrsInThePastForEval, false)
        predObjScores = try r.get(.predObjScores, false)
        predObjScoresMlp = try r.get(.predObjScoresMlp, false)
        fixedNoObjPtr = try r.get(.fixedNoObjPtr, false)
        softNoObjPtr = try r.get(.softNoObjPtr, false)
        useMlpForObjPtrProj = try r.get(.useMlpForObjPtrProj, false)
        noObjEmbedSpatial = try r.get(.noObjEmbedSpatial, false)
        samMaskDecoderExtraArgs = try r.section(.samMaskDecoderExtraArgs, default: MaskDecoderExtraArgs())
        compileImageEncoder = try r.get(.compileImageEncoder, false)
        // Defaults: SAM2VideoPredictor.__init__ (sam2/sam2_video_predictor.py).
        fillHoleArea = try r.get(.fillHoleArea, 0)
        nonOverlapMasks = try r.get(.nonOverlapMasks, false)
        clearNonCondMemAroundInput = try r.get(.clearNonCondMemAroundInput, false)
        addAllFramesToCorrectAsCond = try r.get(.addAllFramesToCorrectAsCond, false)
    }

    /// Channels of the image features and of the memory attention (SAM2Base.hidden_dim).
    public var hiddenDim: Int { imageEncoder.neck.dModel }
    /// Channels of the memory features (SAM2Base.mem_dim).
    public var memDim: Int { memoryEncoder.outDim }

    /// Turns an official SAM2Base config into the video predictor config this tool runs.
    ///
    /// Mirrors `build_sam2_video_predictor(..., apply_postprocessing=True)`, except for the tool's
    /// documented defaults: hole filling off (official: fill_hole_area=8) and corrections kept as
    /// conditioning frames (official: add_all_frames_to_correct_as_cond=False), so that corrections
    /// survive re-propagation.
    public mutating func applyVideoPredictorPostprocessing() {
        target = SAM2Targets.videoPredictor
        samMaskDecoderExtraArgs = MaskDecoderExtraArgs(
            dynamicMultimaskViaStability: true,
            dynamicMultimaskStabilityDelta: 0.05,
            dynamicMultimaskStabilityThresh: 0.98)
        binarizeMaskFromPtsForMemEnc = true
        fillHoleArea = 0
        addAllFramesToCorrectAsCond = true
    }
}

extension MaskDecoderExtraArgs {
    public init(dynamicMultimaskViaStability: Bool, dynamicMultimaskStabilityDelta: Double,
                dynamicMultimaskStabilityThresh: Double) {
        self.dynamicMultimaskViaStability = dynamicMultimaskViaStability
        self.dynamicMultimaskStabilityDelta = dynamicMultimaskStabilityDelta
        self.dynamicMultimaskStabilityThresh = dynamicMultimaskStabilityThresh
    }
}

// MARK: - Loading

/// The whole file; only `model:` matters (training configs carry other sections).
private struct ConfigFile: Codable {
    var model: SAM2Config
}

extension SAM2Config {
    /// Loads and validates a config file (official or resolved predictor config).
    /// `applyPostprocessing`: a `SAM2Base` config gets the video predictor's settings
    /// (`applyVideoPredictorPostprocessing`); false reads it exactly as written (image fixtures,
    /// whose resolved configs already say what `build_sam2` set).
    public static func load(path: String, applyPostprocessing: Bool = true) throws -> SAM2Config {
        guard FileManager.default.fileExists(atPath: path) else {
            throw ConfigError(.unreadableFile, file: path, "no such file")
        }
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError(.unreadableFile, file: path, "cannot read as UTF-8 text")
        }
        return try load(yaml: text, source: path, applyPostprocessing: applyPostprocessing)
    }

    /// Loads and validates config text; `source` names it in error messages.
    public static func load(yaml: String, source: String? = nil, applyPostprocessing: Bool = true) throws -> SAM2Config {
        do {
            // Parse once on our own so that syntax errors and a missing `model:` get precise messages.
            let root: Node?
            let depth = nestingEstimate(yaml)
            if depth > maxNesting {
                throw ConfigError(.syntax, "nested about \(depth) levels deep; a model config needs a dozen (at most \(maxNesting))")
            }
            do {
                root = try Yams.compose(yaml: yaml)
            } catch let error as YamlError {
                throw ConfigError(syntax: error)
            }
            guard let root, root.mapping != nil, root["model"] != nil else {
                throw ConfigError(.missingModelSection, "no `model:` section (not a SAM 2 model config)")
            }
            var config = try YAMLDecoder().decode(ConfigFile.self, from: yaml).model
            if config.target == SAM2Targets.sam2Base && applyPostprocessing {
                config.applyVideoPredictorPostprocessing()
            }
            try config.validate()
            return config
        } catch var error as ConfigError {
            if error.file == nil { error.file = source }
            throw error
        } catch let error as DecodingError {
            var converted = ConfigError(decoding: error)
            if converted.file == nil { converted.file = source }
            throw converted
        }
    }

    /// Yams builds nodes recursively, so a document nested thousands of levels deep (`[[[[...` or
    /// `- - - - ...`) would overflow the stack. Configs are a dozen levels deep; more than this is refused.
    static let maxNesting = 100

    /// An upper bound on the nesting depth of YAML text: on each line, its indentation plus the
    /// block indicators on it (`- `, `? `, `: `) plus the flow brackets open at that point
    /// (outside quotes and comments).
    static func nestingEstimate(_ text: String) -> Int {
        let space = UInt8(ascii: " "), tab = UInt8(ascii: "\t")
        var flow = 0, deepest = 0
        for line in text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            let bytes = Array(line)
            let indent = bytes.prefix { $0 == space || $0 == tab }.count
            var indicators = 0
            var quote: UInt8? = nil
            var i = indent
            while i < bytes.count {
                let c = bytes[i]
                let next = i + 1 < bytes.count ? bytes[i + 1] : space
                if let q = quote {
                    if c == UInt8(ascii: "\\") && q == UInt8(ascii: "\"") { i += 1 } else if c == q { quote = nil }
                } else {
                    switch c {
                    case UInt8(ascii: "\""), UInt8(ascii: "'"): quote = c
                    case UInt8(ascii: "#") where i == 0 || bytes[i - 1] == space || bytes[i - 1] == tab: i = bytes.count
                    case UInt8(ascii: "["), UInt8(ascii: "{"): flow += 1
                    case UInt8(ascii: "]"), UInt8(ascii: "}"): flow = max(flow - 1, 0)
                    case UInt8(ascii: "-"), UInt8(ascii: "?"), UInt8(ascii: ":"):
                        // An indicator only when a blank follows (`-1` and `a:b` are scalars).
                        if next == space || next == tab || next == UInt8(ascii: "\r") { indicators += 1 }
                    default: break
                    }
                    deepest = max(deepest, indent + indicators + flow)
                }
                i += 1
            }
        }
        return deepest
    }

    /// The config as a resolved predictor YAML (the kind `load` takes as is).
    public func yaml() throws -> String {
        let text = try YAMLEncoder().encode(ConfigFile(model: self))
        guard let node = try Yams.compose(yaml: text) else { return text }
        return try Yams.serialize(node: Self.pythonStyleFloats(node))
    }

    /// Yams writes 1e-6 and 10000.0 as `1e-6` and `1e+4`, which YAML 1.1 loaders (PyYAML, so Hydra)
    /// read as strings; rewrite them the way PyYAML does: `1.0e-06`, `10000.0`.
    private static func pythonStyleFloats(_ node: Node) -> Node {
        switch node {
        case .scalar(let scalar):
            guard scalar.style == .any || scalar.style == .plain,
                  scalar.string.range(of: #"^[-+]?[0-9]+(\.[0-9]+)?e[-+]?[0-9]+$"#, options: .regularExpression) != nil,
                  let value = Double(scalar.string) else { return node }
            var text = "\(value)"  // Swift prints like Python's repr: 0.05, 10000.0, 1e-06
            if let e = text.firstIndex(of: "e"), !text[..<e].contains(".") { text.insert(contentsOf: ".0", at: e) }
            return .scalar(.init(text, scalar.tag, scalar.style))
        case .mapping(let mapping):
            return .mapping(.init(mapping.map { ($0.key, pythonStyleFloats($0.value)) }, mapping.tag, mapping.style))
        case .sequence(let sequence):
            return .sequence(.init(sequence.map(pythonStyleFloats), sequence.tag, sequence.style))
        @unknown default:
            return node
        }
    }
}

// MARK: - Model names and where the files are

extension SAM2Config {
    private static let versions = ["sam2.1", "sam2"]
    /// Size spellings: config-file suffix, checkpoint-name suffix.
    private static let sizes: [(short: String, long: String)] = [
        ("t", "tiny"), ("s", "small"), ("b+", "base_plus"), ("l", "large"),
    ]

    /// The eight official models, spelled like their checkpoints (`sam2.1_hiera_tiny.pt`).
    /// `named` also takes the config spelling (`sam2.1_hiera_t`) and Hugging Face ids.
    public static var knownModelNames: [String] {
        versions.flatMap { v in sizes.map { "\(v)_hiera_\($0.long)" } } + ["edgetam"]
    }

    /// EdgeTAM (facebookresearch/EdgeTAM): `edgetam`, `edgetam.pt`, `edgetam.yaml`.
    private static func isEdgeTAM(_ name: String) -> Bool {
        var n = name.trimmingCharacters(in: .whitespaces).lowercased()
        for ext in [".yaml", ".yml", ".pt", ".safetensors"] where n.hasSuffix(ext) { n.removeLast(ext.count) }
        return n == "edgetam" || n == "facebook/edgetam"
    }

    /// Parses a model name into (version, short size), e.g. "facebook/sam2.1-hiera-base-plus" → ("sam2.1", "b+").
    private static func parseModelName(_ name: String) -> (version: String, size: String)? {
        var n = name.trimmingCharacters(in: .whitespaces).lowercased()
        if n.hasPrefix("facebook/") { n.removeFirst("facebook/".count) }
        for ext in [".yaml", ".yml", ".pt", ".safetensors"] where n.hasSuffix(ext) {
            n.removeLast(ext.count)
        }
        n = n.replacingOccurrences(of: "-", with: "_")
        for version in versions {
            let prefix = version + "_hiera_"
            guard n.hasPrefix(prefix) else { continue }
            let size = String(n.dropFirst(prefix.count))
            if let match = sizes.first(where: { $0.short == size || $0.long == size || ($0.short == "b+" && size == "base+") }) {
                return (version, match.short)
            }
        }
        return nil
    }

    /// The canonical (checkpoint-style) name of a model, e.g. "sam2.1_hiera_t" → "sam2.1_hiera_tiny".
    public static func canonicalModelName(_ name: String) -> String? {
        if isEdgeTAM(name) { return "edgetam" }
        guard let (version, size) = parseModelName(name),
              let long = sizes.first(where: { $0.short == size })?.long else { return nil }
        return "\(version)_hiera_\(long)"
    }

    /// The config file of a model relative to Configs/, e.g. "sam2.1_hiera_tiny" → "sam2.1/sam2.1_hiera_t.yaml".
    public static func configFile(forModel name: String) -> String? {
        if isEdgeTAM(name) { return "edgetam.yaml" }
        guard let (version, size) = parseModelName(name) else { return nil }
        return "\(version)/\(version)_hiera_\(size).yaml"
    }

    /// A model by name (or a path to a YAML file). Official configs come from `configsDirectory`
    /// when given, otherwise from the copies built into the binary (`embeddedConfigFiles`).
    public static func named(_ name: String, configsDirectory: String? = nil) throws -> SAM2Config {
        let lower = name.lowercased()
        let isYAMLFile = lower.hasSuffix(".yaml") || lower.hasSuffix(".yml")
        if (isYAMLFile && FileManager.default.fileExists(atPath: name))
            || (name.contains("/") && !lower.hasPrefix("facebook/")) {
            return try load(path: name)
        }
        guard let file = configFile(forModel: name) else {
            throw ConfigError(.unknownModel, "unknown model \"\(name)\"; known models: "
                              + knownModelNames.joined(separator: ", "))
        }
        if let dir = configsDirectory {
            return try load(path: (dir as NSString).appendingPathComponent(file))
        }
        guard let text = embeddedConfigFiles[file] else {
            throw ConfigError(.unknownModel, file: file, "not built into this binary; run Scripts/embed_configs.sh")
        }
        return try load(yaml: text, source: "built-in \(file)")
    }

    /// A Configs/ directory on disk, if one can be found: $SAM2_CONFIGS, then `Configs` or
    /// `share/sam2/Configs` next to the executable or any of its parent directories, then ./Configs.
    /// (Not needed for the official models, which are built in; useful for editing them.)
    public static func defaultConfigsDirectory() -> String? {
        let fm = FileManager.default
        func isConfigsDir(_ dir: String) -> Bool {
            fm.fileExists(atPath: (dir as NSString).appendingPathComponent("sam2.1/sam2.1_hiera_t.yaml"))
        }
        if let env = ProcessInfo.processInfo.environment["SAM2_CONFIGS"], isConfigsDir(env) {
            return env
        }
        if let exe = Bundle.main.executableURL?.resolvingSymlinksInPath() {
            var dir = exe.deletingLastPathComponent()
            // An executable under .build/<triple>/<config>/ is 3-4 levels below the package root.
            for _ in 0..<8 {
                for candidate in ["Configs", "share/sam2/Configs"] {
                    let path = dir.appendingPathComponent(candidate).path
                    if isConfigsDir(path) { return path }
                }
                let parent = dir.deletingLastPathComponent()
                if parent.path == dir.path { break }
                dir = parent
            }
        }
        let cwd = (fm.currentDirectoryPath as NSString).appendingPathComponent("Configs")
        return isConfigsDir(cwd) ? cwd : nil
    }
}

// MARK: - Validation

extension SAM2Config {
    /// Rejects values that the official code would reject or that this port does not implement.
    /// Errors name the key, as a dotted path from `model`.
    public func validate() throws {
        func fail(_ key: String, _ message: String) -> ConfigError {
            ConfigError(.invalidValue, key: "model." + key, message)
        }
        func positive(_ value: Int, _ key: String) throws {
            if value <= 0 { throw fail(key, "must be positive, got \(value)") }
        }
        try checkLimits(fail)

        if ![SAM2Targets.sam2Base, SAM2Targets.videoPredictor, SAM2Targets.videoPredictorVOS].contains(target) {
            throw fail("_target_", "unsupported model class \(target)")
        }

        // Trunk: Hiera, or a timm model this tool builds (EdgeTAM's RepViT).
        let t = "image_encoder.trunk."
        switch imageEncoder.trunk {
        case let .hiera(trunk):
            try positive(trunk.embedDim, t + "embed_dim")
            try positive(trunk.numHeads, t + "num_heads")
            if trunk.stages.isEmpty || trunk.stages.contains(where: { $0 <= 0 }) {
                throw fail(t + "stages", "must be a non-empty list of positive block counts, got \(trunk.stages)")
            }
            if trunk.windowSpec.count != trunk.stages.count {
                throw fail(t + "window_spec", "has \(trunk.windowSpec.count) entries but stages has \(trunk.stages.count)")
            }
            if trunk.windowSpec.contains(where: { $0 <= 0 }) {
                throw fail(t + "window_spec", "window sizes must be positive, got \(trunk.windowSpec)")
            }
            if !(0...(trunk.stages.count - 1)).contains(trunk.qPool) {
                throw fail(t + "q_pool", "must be in 0...\(trunk.stages.count - 1) (stages - 1), got \(trunk.qPool)")
            }
            if trunk.qStride.count != 2 || trunk.qStride.contains(where: { $0 <= 0 }) {
                throw fail(t + "q_stride", "must be two positive integers, got \(trunk.qStride)")
            }
            if trunk.windowPosEmbedBkgSpatialSize.count != 2 || trunk.windowPosEmbedBkgSpatialSize.contains(where: { $0 <= 0 }) {
                throw fail(t + "window_pos_embed_bkg_spatial_size",
                           "must be two positive integers, got \(trunk.windowPosEmbedBkgSpatialSize)")
            }
            if trunk.dimMul <= 0 { throw fail(t + "dim_mul", "must be positive, got \(trunk.dimMul)") }
            if trunk.headMul <= 0 { throw fail(t + "head_mul", "must be positive, got \(trunk.headMul)") }
            let depth = trunk.stages.reduce(0, +)
            if let bad = trunk.globalAttBlocks.first(where: { !(0..<depth).contains($0) }) {
                throw fail(t + "global_att_blocks", "block \(bad) is outside 0..<\(depth) (the trunk's depth)")
            }
            for (i, (dim, heads)) in zip(trunk.stageDims, trunk.stageHeads).enumerated() where heads <= 0 || dim % heads != 0 {
                throw fail(t + "num_heads", "stage \(i) has \(dim) channels, not divisible by its \(heads) heads")
            }
        case let .timm(trunk):
            if trunk.channels.isEmpty {
                throw fail(t + "name", "unsupported timm model \(trunk.name) (supported: \(TimmBackboneConfig.knownModels.keys.sorted().joined(separator: ", ")))")
            }
            if trunk.features != ["layer0", "layer1", "layer2", "layer3"] {
                throw fail(t + "features", "must be [layer0, layer1, layer2, layer3] (every stage, as EdgeTAM takes them), got \(trunk.features)")
            }
        }

        // Neck (FpnNeck).
        let neck = imageEncoder.neck
        let n = "image_encoder.neck."
        try positive(neck.dModel, n + "d_model")
        let expectedChannels = Array(imageEncoder.trunk.channels.reversed())
        if neck.backboneChannelList != expectedChannels {
            throw fail(n + "backbone_channel_list",
                       "is \(neck.backboneChannelList) but the trunk's stage channels, lowest resolution first, are \(expectedChannels)")
        }
        try positive(neck.kernelSize, n + "kernel_size")
        try positive(neck.stride, n + "stride")
        if neck.padding < 0 { throw fail(n + "padding", "must not be negative, got \(neck.padding)") }
        // PyTorch's interpolate has more modes; these are the ones implemented here.
        if !["nearest", "bilinear"].contains(neck.fpnInterpModel) {
            throw fail(n + "fpn_interp_model", "unsupported mode \"\(neck.fpnInterpModel)\" (supported: nearest, bilinear)")
        }
        if !["sum", "avg"].contains(neck.fuseType) {
            throw fail(n + "fuse_type", "unsupported \"\(neck.fuseType)\" (supported: sum, avg)")
        }
        if let bad = neck.topDownLevels.first(where: { !neck.backboneChannelList.indices.contains($0) }) {
            throw fail(n + "fpn_top_down_levels", "level \(bad) is outside 0..<\(neck.backboneChannelList.count)")
        }
        if !(0..<neck.backboneChannelList.count).contains(imageEncoder.scalp) {
            throw fail("image_encoder.scalp", "must be in 0..<\(neck.backboneChannelList.count), got \(imageEncoder.scalp)")
        }
        try validate(neck.positionEncoding, n + "position_encoding.", channels: neck.dModel, fail: fail)

        // Memory attention.
        let ma = memoryAttention
        let m = "memory_attention."
        try positive(ma.dModel, m + "d_model")
        if ma.dModel != hiddenDim {
            throw fail(m + "d_model", "is \(ma.dModel) but the image features (image_encoder.neck.d_model) have \(hiddenDim) channels")
        }
        if ma.numLayers < 0 { throw fail(m + "num_layers", "must not be negative, got \(ma.numLayers)") }
        if ma.layer.dModel != ma.dModel {
            throw fail(m + "layer.d_model", "is \(ma.layer.dModel) but memory_attention.d_model is \(ma.dModel)")
        }
        // glu halves the width, which the layer's second linear does not expect.
        if !["relu", "gelu"].contains(ma.layer.activation) {
            throw fail(m + "layer.activation", "unsupported \"\(ma.layer.activation)\" (supported: relu, gelu)")
        }
        try positive(ma.layer.dimFeedforward, m + "layer.dim_feedforward")
        for (name, attention) in [("self_attention", ma.layer.selfAttention), ("cross_attention", ma.layer.crossAttention)] {
            let a = m + "layer." + name + "."
            if attention.embeddingDim != ma.dModel {
                throw fail(a + "embedding_dim", "is \(attention.embeddingDim) but memory_attention.d_model is \(ma.dModel)")
            }
            try positive(attention.numHeads, a + "num_heads")
            try positive(attention.downsampleRate, a + "downsample_rate")
            // RoPE rotates (x, y) pairs of each head's channels: 4 per head at least.
            if attention.internalDim % attention.numHeads != 0 || (attention.internalDim / attention.numHeads) % 4 != 0 {
                throw fail(a + "num_heads", "embedding_dim / downsample_rate / num_heads must be a multiple of 4 for RoPE")
            }
            for (key, sizes) in attention.isV2 ? [("q_sizes", attention.qSizes), ("k_sizes", attention.kSizes)] : [("feat_sizes", attention.featSizes)]
            where sizes.count != 2 || sizes.contains(where: { $0 <= 0 }) {
                throw fail(a + key, "must be two positive integers, got \(sizes)")
            }
        }
        if ma.layer.selfAttention.isV2 {
            throw fail(m + "layer.self_attention._target_", "RoPEAttentionv2 is for cross-attention to memories only")
        }
        if ma.layer.crossAttention.isV2 != (spatialPerceiver != nil) {
            throw fail(m + "layer.cross_attention._target_",
                       "RoPEAttentionv2 goes with a spatial_perceiver (EdgeTAM) and RoPEAttention without one")
        }
        if ma.layer.selfAttention.resolvedKvInDim != ma.dModel {
            throw fail(m + "layer.self_attention.kv_in_dim", "must equal d_model \(ma.dModel)")
        }
        if ma.layer.crossAttention.resolvedKvInDim != memDim {
            throw fail(m + "layer.cross_attention.kv_in_dim",
                       "is \(ma.layer.crossAttention.resolvedKvInDim) but the memories (memory_encoder.out_dim) have \(memDim) channels")
        }

        // Spatial perceiver (EdgeTAM).
        if let sp = spatialPerceiver {
            let p = "spatial_perceiver."
            try positive(sp.dim, p + "dim")
            try positive(sp.depth, p + "depth")
            try positive(sp.heads, p + "heads")
            try positive(sp.dimHead, p + "dim_head")
            try positive(sp.ffMult, p + "ff_mult")
            if sp.dim != memDim { throw fail(p + "dim", "is \(sp.dim) but the memories (memory_encoder.out_dim) have \(memDim) channels") }
            if sp.numLatents <= 0 && sp.numLatents2d <= 0 { throw fail(p + "num_latents", "num_latents or num_latents_2d must be positive") }
            if sp.concatKvLatents { throw fail(p + "concat_kv_latents", "true is not supported (EdgeTAM uses false)") }
            if sp.numLatents2d > 0 {
                let side = Int(Double(sp.numLatents2d).squareRoot())
                if side * side != sp.numLatents2d { throw fail(p + "num_latents_2d", "must be a square number, got \(sp.numLatents2d)") }
                guard let pe = sp.positionEncoding else { throw fail(p + "position_encoding", "missing (2D latents need it)") }
                try validate(pe, p + "position_encoding.", channels: sp.dim, fail: fail)
                let grid = imageSize / backboneStride
                if grid % side != 0 { throw fail(p + "num_latents_2d", "\(side)x\(side) windows do not tile the \(grid)x\(grid) memory map") }
                if ma.layer.crossAttention.kSizes != [side, side] {
                    throw fail(m + "layer.cross_attention.k_sizes", "is \(ma.layer.crossAttention.kSizes) but the perceiver's 2D latents are \(side)x\(side)")
                }
            }
        }

        // Memory encoder.
        let me = memoryEncoder
        let e = "memory_encoder."
        try positive(me.outDim, e + "out_dim")
        if me.inDim != hiddenDim {
            throw fail(e + "in_dim", "is \(me.inDim) but the image features (image_encoder.neck.d_model) have \(hiddenDim) channels")
        }
        let ds = me.maskDownsampler
        if ds.embedDim != me.inDim {
            throw fail(e + "mask_downsampler.embed_dim", "is \(ds.embedDim) but memory_encoder.in_dim is \(me.inDim)")
        }
        try positive(ds.kernelSize, e + "mask_downsampler.kernel_size")
        if ds.stride < 2 { throw fail(e + "mask_downsampler.stride", "must be at least 2, got \(ds.stride)") }
        if ds.padding < 0 { throw fail(e + "mask_downsampler.padding", "must not be negative, got \(ds.padding)") }
        if ds.totalStride < ds.stride || pow(Double(ds.stride), Double(ds.numLayers)) != Double(ds.totalStride) {
            throw fail(e + "mask_downsampler.total_stride", "\(ds.totalStride) is not a power of stride \(ds.stride)")
        }
        if ds.totalStride != backboneStride {
            throw fail(e + "mask_downsampler.total_stride", "is \(ds.totalStride) but backbone_stride is \(backboneStride)")
        }
        if me.fuser.numLayers < 0 { throw fail(e + "fuser.num_layers", "must not be negative, got \(me.fuser.numLayers)") }
        if me.fuser.inputProjection { throw fail(e + "fuser.input_projection", "true is not supported") }
        if me.fuser.layer.dim != me.inDim {
            throw fail(e + "fuser.layer.dim", "is \(me.fuser.layer.dim) but memory_encoder.in_dim is \(me.inDim)")
        }
        try positive(me.fuser.layer.kernelSize, e + "fuser.layer.kernel_size")
        if me.fuser.layer.padding < 0 { throw fail(e + "fuser.layer.padding", "must not be negative") }
        try validate(me.positionEncoding, e + "position_encoding.", channels: me.outDim, fail: fail)

        // SAM2Base scalars.
        if numMaskmem < 0 { throw fail("num_maskmem", "must not be negative, got \(numMaskmem)") }
        try positive(backboneStride, "backbone_stride")
        // The FPN adds 2x-upsampled coarse features to finer ones, so every level must halve exactly.
        // (RepViT's stages reach stride 32.)
        let trunkStride = imageEncoder.hiera.map { 4 * Int(pow(Double($0.qStride.max() ?? 1), Double($0.qPool))) } ?? 32
        let multiple = max(16, trunkStride)
        if imageSize <= 0 || imageSize % multiple != 0 {
            throw fail("image_size", "must be a positive multiple of \(multiple), got \(imageSize)")
        }
        if imageSize % backboneStride != 0 {
            throw fail("image_size", "\(imageSize) is not a multiple of backbone_stride \(backboneStride)")
        }
        if maxCondFramesInAttn != -1 && maxCondFramesInAttn < 2 {
            throw fail("max_cond_frames_in_attn", "must be -1 (no limit) or at least 2, got \(maxCondFramesInAttn)")
        }
        if multimaskMinPtNum < 0 || multimaskMaxPtNum < multimaskMinPtNum {
            throw fail("multimask_max_pt_num", "need 0 <= multimask_min_pt_num <= multimask_max_pt_num, got \(multimaskMinPtNum) and \(multimaskMaxPtNum)")
        }
        try positive(memoryTemporalStrideForEval, "memory_temporal_stride_for_eval")
        if maxObjPtrsInEncoder < 0 { throw fail("max_obj_ptrs_in_encoder", "must not be negative, got \(maxObjPtrsInEncoder)") }
        if fixedNoObjPtr && !(predObjScores && useObjPtrsInEncoder) {
            throw fail("fixed_no_obj_ptr", "requires pred_obj_scores and use_obj_ptrs_in_encoder")
        }
        if projTposEncInObjPtrs && !addTposEncToObjPtrs {
            throw fail("proj_tpos_enc_in_obj_ptrs", "requires add_tpos_enc_to_obj_ptrs")
        }
        if fillHoleArea < 0 { throw fail("fill_hole_area", "must not be negative, got \(fillHoleArea)") }
    }

    /// Upper bounds far above any real SAM 2 model (and every number finite), checked before
    /// anything else: they keep the arithmetic in `validate` and in building a model (stage widths,
    /// strides, buffers sized by the image) from overflowing or allocating without bound when a
    /// config is hostile or mistyped.
    private func checkLimits(_ fail: (String, String) -> ConfigError) throws {
        func atMost(_ values: [Int], _ limit: Int, _ key: String) throws {
            if let v = values.first(where: { $0 > limit }) { throw fail(key, "\(v) is more than the supported \(limit)") }
        }
        func atMost(_ value: Int, _ limit: Int, _ key: String) throws { try atMost([value], limit, key) }
        func finite(_ values: [Double], _ key: String) throws {
            if let v = values.first(where: { !$0.isFinite }) { throw fail(key, "must be a finite number, got \(v)") }
        }
        let channels = 1 << 16, layers = 1024, kernel = 64

        try atMost(imageSize, 8192, "image_size")
        try atMost(backboneStride, 8192, "backbone_stride")
        try atMost(numMaskmem, 256, "num_maskmem")
        try atMost(memoryTemporalStrideForEval, 1000, "memory_temporal_stride_for_eval")
        try atMost(maxObjPtrsInEncoder, 1 << 16, "max_obj_ptrs_in_encoder")
        try finite([sigmoidScaleForMemEnc], "sigmoid_scale_for_mem_enc")
        try finite([sigmoidBiasForMemEnc], "sigmoid_bias_for_mem_enc")
        try finite([samMaskDecoderExtraArgs.dynamicMultimaskStabilityDelta, samMaskDecoderExtraArgs.dynamicMultimaskStabilityThresh],
                   "sam_mask_decoder_extra_args")

        if let trunk = imageEncoder.hiera {
            let t = "image_encoder.trunk."
            try atMost(trunk.embedDim, channels, t + "embed_dim")
            try atMost(trunk.numHeads, 4096, t + "num_heads")
            try atMost(trunk.stages.count, 16, t + "stages (count)")
            try atMost(trunk.stages, layers, t + "stages")
            try atMost(trunk.qStride, kernel, t + "q_stride")
            try atMost(trunk.windowSpec, 8192, t + "window_spec")
            try atMost(trunk.windowPosEmbedBkgSpatialSize, 1024, t + "window_pos_embed_bkg_spatial_size")
            try finite([trunk.dimMul, trunk.headMul, trunk.dropPathRate], t + "dim_mul, head_mul, drop_path_rate")
            // Stage widths and heads grow by dim_mul / head_mul per stage.
            var dim = Double(trunk.embedDim), heads = Double(trunk.numHeads)
            for _ in trunk.stages.dropFirst() {
                dim *= trunk.dimMul; heads *= trunk.headMul
                if dim > Double(channels) { throw fail(t + "dim_mul", "makes a stage wider than the supported \(channels) channels") }
                if heads > 4096 { throw fail(t + "head_mul", "makes a stage have more than the supported 4096 heads") }
            }
            // The trunk's stride is 4 * q_stride^q_pool; the image must hold it.
            let trunkStride = 4 * pow(Double(trunk.qStride.max() ?? 1), Double(min(max(trunk.qPool, 0), 64)))
            if imageSize > 0 && trunkStride > Double(imageSize) {
                throw fail(t + "q_pool", "q_stride^q_pool makes the trunk's stride (\(trunkStride)) larger than image_size \(imageSize)")
            }
        }

        let neck = imageEncoder.neck, n = "image_encoder.neck."
        try atMost(neck.dModel, channels, n + "d_model")
        try atMost([neck.kernelSize, neck.stride, neck.padding], kernel, n + "kernel_size, stride, padding")
        try atMost(neck.positionEncoding.numPosFeats, channels, n + "position_encoding.num_pos_feats")
        try finite([neck.positionEncoding.temperature, neck.positionEncoding.scale ?? 0], n + "position_encoding")

        let ma = memoryAttention, m = "memory_attention."
        try atMost(ma.dModel, channels, m + "d_model")
        try atMost(ma.numLayers, layers, m + "num_layers")
        try atMost(ma.layer.dimFeedforward, 1 << 20, m + "layer.dim_feedforward")
        try finite([ma.layer.dropout], m + "layer.dropout")
        for (name, a) in [("self_attention", ma.layer.selfAttention), ("cross_attention", ma.layer.crossAttention)] {
            let k = m + "layer." + name + "."
            try atMost(a.embeddingDim, channels, k + "embedding_dim")
            try atMost(a.resolvedKvInDim, channels, k + "kv_in_dim")
            try atMost(a.numHeads, 4096, k + "num_heads")
            try atMost(a.downsampleRate, channels, k + "downsample_rate")
            try atMost(a.featSizes + a.qSizes + a.kSizes, 1024, k + "feat_sizes, q_sizes, k_sizes")
            try finite([a.ropeTheta, a.dropout], k + "rope_theta, dropout")
        }

        if let sp = spatialPerceiver {
            let p = "spatial_perceiver."
            try atMost([sp.dim, sp.dimHead * sp.heads], channels, p + "dim, dim_head * heads")
            try atMost(sp.depth, layers, p + "depth")
            try atMost([sp.numLatents, sp.numLatents2d], 1 << 16, p + "num_latents, num_latents_2d")
            try atMost(sp.ffMult, 64, p + "ff_mult")
            try finite([sp.hiddenDropoutP, sp.attentionDropoutP], p + "dropout")
        }

        let me = memoryEncoder, e = "memory_encoder."
        try atMost([me.outDim, me.inDim], channels, e + "out_dim, in_dim")
        let ds = me.maskDownsampler
        try atMost(ds.embedDim, channels, e + "mask_downsampler.embed_dim")
        try atMost([ds.kernelSize, ds.stride, ds.padding], kernel, e + "mask_downsampler.kernel_size, stride, padding")
        try atMost(ds.totalStride, 8192, e + "mask_downsampler.total_stride")
        try atMost(me.fuser.numLayers, layers, e + "fuser.num_layers")
        try atMost(me.fuser.layer.dim, channels, e + "fuser.layer.dim")
        try atMost([me.fuser.layer.kernelSize, me.fuser.layer.padding], kernel, e + "fuser.layer.kernel_size, padding")
        try finite([me.fuser.layer.layerScaleInitValue], e + "fuser.layer.layer_scale_init_value")
        try atMost(me.positionEncoding.numPosFeats, channels, e + "position_encoding.num_pos_feats")
        try finite([me.positionEncoding.temperature, me.positionEncoding.scale ?? 0], e + "position_encoding")
    }

    private func validate(_ pe: PositionEncodingConfig, _ prefix: String, channels: Int,
                          fail: (String, String) -> ConfigError) throws {
        if pe.numPosFeats <= 0 || pe.numPosFeats % 2 != 0 {
            throw fail(prefix + "num_pos_feats", "must be a positive even number, got \(pe.numPosFeats)")
        }
        if pe.numPosFeats != channels {
            throw fail(prefix + "num_pos_feats", "is \(pe.numPosFeats) but the features it is added to have \(channels) channels")
        }
        if pe.scale != nil && !pe.normalize {
            throw fail(prefix + "scale", "requires normalize: true")
        }
    }
}

// MARK: - Decoding helpers

/// Any mapping key, for spotting keys a class does not take.
private struct AnyConfigKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { self.stringValue = "\(intValue)"; self.intValue = intValue }
}

/// `model.image_encoder.trunk.stages[2]`
private func keyPath(_ path: [CodingKey]) -> String {
    var s = ""
    for key in path {
        if let i = key.intValue { s += "[\(i)]" } else { s += s.isEmpty ? key.stringValue : "." + key.stringValue }
    }
    return s
}

/// Scalars are read as text and parsed here, so that the YAML 1.1 quirks of other loaders are
/// accepted: `1e-6` may be written (or dumped) as a string, booleans as True/true/yes.
private protocol ConfigScalar {
    static func parse(_ text: String) -> Self?
    static var typeName: String { get }
}

extension Int: ConfigScalar {
    fileprivate static func parse(_ text: String) -> Int? { Int(text.replacingOccurrences(of: "_", with: "")) }
    fileprivate static var typeName: String { "an integer" }
}

extension Double: ConfigScalar {
    fileprivate static func parse(_ text: String) -> Double? {
        switch text {
        case ".inf", ".Inf", ".INF", "+.inf": return .infinity
        case "-.inf", "-.Inf", "-.INF": return -.infinity
        default:
            // Swift would also take "nan", "inf" and hex floats; YAML spells those differently.
            let t = text.replacingOccurrences(of: "_", with: "")
            guard t.allSatisfy({ "0123456789+-.eE".contains($0) }) else { return nil }
            return Double(t)
        }
    }
    fileprivate static var typeName: String { "a number" }
}

extension Bool: ConfigScalar {
    fileprivate static func parse(_ text: String) -> Bool? {
        switch text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: return nil
        }
    }
    fileprivate static var typeName: String { "a boolean" }
}

extension String: ConfigScalar {
    fileprivate static func parse(_ text: String) -> String? { text }
    fileprivate static var typeName: String { "a string" }
}

/// Reads one mapping the way Hydra would hand it to a Python constructor: typed, with the
/// constructor's defaults, and rejecting keys the constructor does not take.
private struct ConfigReader<K: CodingKey & CaseIterable> {
    let container: KeyedDecodingContainer<K>
    let path: [CodingKey]
    let className: String

    init(_ decoder: Decoder, _ keys: K.Type, className: String, ignoring: Set<String> = [], refusing: Set<String> = []) throws {
        path = decoder.codingPath
        self.className = className
        let all = try decoder.container(keyedBy: AnyConfigKey.self)
        let known = Set(K.allCases.map(\.stringValue)).union(ignoring).subtracting(refusing)
        if let unknown = all.allKeys.first(where: { !known.contains($0.stringValue) }) {
            throw ConfigError(.unknownKey, key: keyPath(path + [unknown]), "unknown key (not a parameter of \(className))")
        }
        container = try decoder.container(keyedBy: K.self)
    }

    private func name(_ key: K) -> String { keyPath(path + [key]) }

    private func isAbsentOrNull(_ key: K) throws -> Bool {
        try !container.contains(key) || container.decodeNil(forKey: key)
    }

    private func wrongType(_ key: CodingKey, _ expected: String, got: String) -> ConfigError {
        ConfigError(.wrongType, key: keyPath(path + [key]), "wrong type, expected \(expected), got \(got)")
    }

    /// What a non-scalar value is, for messages.
    private func shape(_ key: K) -> String {
        (try? container.nestedContainer(keyedBy: AnyConfigKey.self, forKey: key)) != nil ? "a mapping" : "a list"
    }

    private func scalar<T: ConfigScalar>(_ key: K) throws -> T {
        if try container.decodeNil(forKey: key) { throw wrongType(key, T.typeName, got: "null") }
        let text: String
        do {
            text = try container.decode(String.self, forKey: key)
        } catch DecodingError.typeMismatch {
            throw wrongType(key, T.typeName, got: shape(key))
        }
        guard let value = T.parse(text) else {
            if text.hasPrefix("${") {
                throw ConfigError(.invalidValue, key: name(key),
                                  "Hydra interpolation \(text) is not supported; use a resolved config")
            }
            throw wrongType(key, T.typeName, got: "\"\(text)\"")
        }
        return value
    }

    /// `_target_`: must be one of `allowed` when present; absent means the first.
    func target(_ key: K, _ allowed: [String], required: Bool = false) throws -> String {
        guard container.contains(key) else {
            if required { throw ConfigError(.missingKey, key: name(key), "missing (the class to build, e.g. \(allowed[0]))") }
            return allowed[0]
        }
        let value: String = try scalar(key)
        guard allowed.contains(value) else {
            throw ConfigError(.invalidValue, key: name(key), "unsupported class \(value) (expected \(allowed.joined(separator: " or ")))")
        }
        return value
    }

    /// A scalar with a Python default.
    func get<T: ConfigScalar>(_ key: K, _ defaultValue: T) throws -> T {
        container.contains(key) ? try scalar(key) : defaultValue
    }

    /// A scalar the Python constructor requires.
    func required<T: ConfigScalar>(_ key: K) throws -> T {
        guard container.contains(key) else { throw ConfigError(.missingKey, key: name(key), "missing (required by \(className))") }
        return try scalar(key)
    }

    /// A scalar whose Python default is None.
    func optional<T: ConfigScalar>(_ key: K) throws -> T? {
        try isAbsentOrNull(key) ? nil : scalar(key)
    }

    private func listValue<T: ConfigScalar>(_ key: K) throws -> [T] {
        let expected = "a list of \(T.typeName.split(separator: " ").last!)s"
        if try container.decodeNil(forKey: key) { throw wrongType(key, expected, got: "null") }
        let texts: [String]
        do {
            texts = try container.decode([String].self, forKey: key)
        } catch DecodingError.typeMismatch {
            let got = (try? container.decode(String.self, forKey: key)).map { "\"\($0)\"" }
                ?? (shape(key) == "a mapping" ? "a mapping" : "a nested list")
            throw wrongType(key, expected, got: got)
        }
        return try texts.enumerated().map { i, text in
            guard let value = T.parse(text) else {
                throw ConfigError(.wrongType, key: name(key) + "[\(i)]", "wrong type, expected \(T.typeName), got \"\(text)\"")
            }
            return value
        }
    }

    func list<T: ConfigScalar>(_ key: K, _ defaultValue: [T]) throws -> [T] {
        container.contains(key) ? try listValue(key) : defaultValue
    }

    func requiredList<T: ConfigScalar>(_ key: K) throws -> [T] {
        guard container.contains(key) else { throw ConfigError(.missingKey, key: name(key), "missing (required by \(className))") }
        return try listValue(key)
    }

    /// A list that Python also accepts as None (returned as nil); absent means `defaultValue`.
    func optionalList<T: ConfigScalar>(_ key: K, default defaultValue: [T]?) throws -> [T]? {
        guard container.contains(key) else { return defaultValue }
        return try container.decodeNil(forKey: key) ? nil : listValue(key)
    }

    /// A nested section the Python constructor requires.
    func section<T: Decodable>(_ key: K) throws -> T {
        guard container.contains(key) else { throw ConfigError(.missingKey, key: name(key), "missing (required by \(className))") }
        if try container.decodeNil(forKey: key) { throw wrongType(key, "a mapping", got: "null") }
        return try container.decode(T.self, forKey: key)
    }

    /// A nested section whose absence (or null) means `defaultValue`.
    func section<T: Decodable>(_ key: K, default defaultValue: T) throws -> T {
        try isAbsentOrNull(key) ? defaultValue : container.decode(T.self, forKey: key)
    }
}

extension ConfigError {
    /// A YAML syntax error, located by line and column.
    fileprivate init(syntax error: YamlError) {
        switch error {
        case let .scanner(_, problem, mark, _), let .parser(_, problem, mark, _), let .composer(_, problem, mark, _):
            self.init(.syntax, "YAML syntax error at line \(mark.line), column \(mark.column): \(problem)")
        case let .reader(problem, _, _, _):
            self.init(.syntax, "YAML read error: \(problem)")
        default:
            self.init(.syntax, "YAML error: \(error)")
        }
    }

    /// Errors raised by Yams while decoding (ours arrive wrapped as the underlying error).
    fileprivate init(decoding error: DecodingError) {
        switch error {
        case let .typeMismatch(type, context):
            let expected = "\(type)".contains("Mapping") ? "a mapping"
                : "\(type)".contains("Sequence") ? "a list" : "a single value"
            self.init(.wrongType, key: keyPath(context.codingPath), "wrong type, expected \(expected)")
        case let .valueNotFound(_, context):
            self.init(.wrongType, key: keyPath(context.codingPath), "wrong type, got null")
        case let .keyNotFound(key, context):
            self.init(.missingKey, key: keyPath(context.codingPath + [key]), "missing")
        case let .dataCorrupted(context):
            if let inner = context.underlyingError as? ConfigError {
                self = inner
            } else if let inner = context.underlyingError as? YamlError {
                self.init(syntax: inner)
            } else {
                self.init(.invalidValue, key: context.codingPath.isEmpty ? nil : keyPath(context.codingPath),
                          context.debugDescription)
            }
        @unknown default:
            self.init(.invalidValue, "\(error)")
        }
    }
}
