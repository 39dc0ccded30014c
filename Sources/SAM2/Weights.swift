import SAM2Tensor

/// Why a checkpoint does not fit the model its config describes.
public enum ModelLoadError: Error, CustomStringConvertible, Equatable {
    case missingKey(String)
    case shapeMismatch(key: String, expected: [Int], found: [Int])
    case unexpectedKeys([String])
    case nonFinite(String)

    public var description: String {
        switch self {
        case .missingKey(let k): return "checkpoint is missing key '\(k)' that the config requires"
        case .shapeMismatch(let k, let e, let f): return "checkpoint key '\(k)' has shape \(f), the config expects \(e)"
        case .unexpectedKeys(let ks):
            return "checkpoint has \(ks.count) key(s) the config does not use, e.g. '\(ks.sorted().first ?? "")'"
        case .nonFinite(let k): return "checkpoint tensor '\(k)' contains NaN or Inf"
        }
    }
}

/// A checkpoint's state dict, handed out strictly by name and shape: every module takes
/// its own tensors, and `finish()` then rejects anything no module asked for.
public final class WeightStore {
    private var tensors: [String: Tensor]
    private var taken = Set<String>()

    public init(_ tensors: [String: Tensor]) { self.tensors = tensors }

    public func take(_ key: String, _ shape: [Int]) throws -> Tensor {
        guard let t = tensors[key] else { throw ModelLoadError.missingKey(key) }
        guard t.shape == shape else { throw ModelLoadError.shapeMismatch(key: key, expected: shape, found: t.shape) }
        guard t.data.allSatisfy({ $0.isFinite }) else { throw ModelLoadError.nonFinite(key) }
        taken.insert(key)
        tensors[key] = nil  // the module owns it now; keep one copy in memory
        return t
    }

    /// Throws if the checkpoint holds keys no module took.
    public func finish() throws {
        if !tensors.isEmpty { throw ModelLoadError.unexpectedKeys(Array(tensors.keys)) }
    }
}

// MARK: - Parameterised layers shared by every model part

/// `nn.Linear`.
struct Linear {
    let weight: Tensor  // [out, in]
    let bias: Tensor?

    init(_ w: WeightStore, _ prefix: String, _ inDim: Int, _ outDim: Int, bias: Bool = true) throws {
        weight = try w.take("\(prefix).weight", [outDim, inDim])
        self.bias = bias ? try w.take("\(prefix).bias", [outDim]) : nil
    }

    /// A linear made at load time (two composed ones).
    init(weight: Tensor, bias: Tensor?) {
        self.weight = weight
        self.bias = bias
    }

    var outDim: Int { weight.shape[0] }

    func callAsFunction(_ x: Tensor) -> Tensor { GEMM.linear(x, weight: weight, bias: bias) }
}

/// `nn.LayerNorm` (over the last dim) or SAM's `LayerNorm2d` (over channels of `[C, H, W]`).
struct LayerNorm {
    let weight: Tensor
    let bias: Tensor
    let eps: Float

    init(_ w: WeightStore, _ prefix: String, _ dim: Int, eps: Float = 1e-5) throws {
        weight = try w.take("\(prefix).weight", [dim])
        bias = try w.take("\(prefix).bias", [dim])
        self.eps = eps
    }

    func callAsFunction(_ x: Tensor) -> Tensor { x.layerNorm(weight: weight, bias: bias, eps: eps) }
    func channels(_ x: Tensor, thenGELU: Bool = false) -> Tensor { x.layerNorm2d(weight: weight, bias: bias, eps: eps, thenGELU: thenGELU) }
}

/// `nn.Conv2d` with groups = 1 (or depthwise when `depthwise`).
struct Conv2d {
    let weight: Tensor
    let bias: Tensor?
    let stride: Int
    let padding: Int
    let depthwise: Bool

    init(weight: Tensor, bias: Tensor?, stride: Int, padding: Int, depthwise: Bool) {
        self.weight = weight
        self.bias = bias
        self.stride = stride
        self.padding = padding
        self.depthwise = depthwise
    }

    init(_ w: WeightStore, _ prefix: String, _ inC: Int, _ outC: Int, kernel: Int,
         stride: Int = 1, padding: Int = 0, depthwise: Bool = false) throws {
        weight = try w.take("\(prefix).weight", [outC, depthwise ? 1 : inC, kernel, kernel])
        bias = try w.take("\(prefix).bias", [outC])
        self.stride = stride
        self.padding = padding
        self.depthwise = depthwise
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        depthwise ? Conv.depthwiseConv2d(x, weight: weight, bias: bias, stride: stride, padding: padding)
                  : Conv.conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding)
    }

    /// A dense convolution followed by GELU, fused slab by slab.
    func thenGELU(_ x: Tensor) -> Tensor {
        precondition(!depthwise)
        return Conv.conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding, thenGELU: true)
    }

    /// A 1x1 convolution's output as `[HW, Cout]` token rows.
    func tokens(_ x: Tensor) -> Tensor {
        precondition(weight.shape[2] == 1 && weight.shape[3] == 1 && stride == 1 && padding == 0 && !depthwise)
        return Conv.pointwiseToTokens(x, weight: weight, bias: bias)
    }
}

/// SAM's `MLP`: `numLayers` linears with an activation between them, optional sigmoid at the end.
struct MLP {
    let layers: [Linear]
    let activation: Activation
    let sigmoidOutput: Bool

    init(_ w: WeightStore, _ prefix: String, input: Int, hidden: Int, output: Int, numLayers: Int,
         activation: Activation = .relu, sigmoidOutput: Bool = false) throws {
        let dims = [input] + Array(repeating: hidden, count: numLayers - 1) + [output]
        layers = try (0..<numLayers).map { try Linear(w, "\(prefix).layers.\($0)", dims[$0], dims[$0 + 1]) }
        self.activation = activation
        self.sigmoidOutput = sigmoidOutput
    }

    init(layers: [Linear], activation: Activation, sigmoidOutput: Bool) {
        self.layers = layers
        self.activation = activation
        self.sigmoidOutput = sigmoidOutput
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        var h = x
        for (i, layer) in layers.enumerated() {
            h = layer(h)
            if i < layers.count - 1 { h = activation.apply(h) }
        }
        return sigmoidOutput ? h.sigmoid() : h
    }
}

extension MLP {
    /// `x += mlp(norm(x))` for a two-layer MLP: the pre-norm residual feed-forward of Hiera blocks
    /// and memory-attention layers, fused slab by slab (see `FeedForward`).
    func residual(_ x: inout Tensor, norm: LayerNorm) {
        precondition(layers.count == 2 && !sigmoidOutput && layers.allSatisfy { $0.bias != nil })
        FeedForward.residual(&x, normWeight: norm.weight, normBias: norm.bias, eps: norm.eps,
                             w1: layers[0].weight, b1: layers[0].bias!, activation: activation,
                             w2: layers[1].weight, b2: layers[1].bias!)
    }
}
