import SAM2Checkpoint
import SAM2Tensor

/// One Hiera block (`MultiScaleBlock`): windowed or global attention with optional query pooling
/// at a stage change, then an MLP. Works on `[H, W, C]` channel-last token maps.
struct HieraBlock {
    let dim: Int, dimOut: Int, heads: Int
    let windowSize: Int       // 0 = global attention
    let poolsQueries: Bool    // first block of a new stage: 2x2 max-pool of q (and of the shortcut)
    let norm1: LayerNorm, norm2: LayerNorm
    let qkv: Linear, attnProj: Linear
    let mlp: MLP
    let shortcutProj: Linear?

    init(_ w: WeightStore, _ prefix: String, dim: Int, dimOut: Int, heads: Int, windowSize: Int, poolsQueries: Bool) throws {
        self.dim = dim; self.dimOut = dimOut; self.heads = heads
        self.windowSize = windowSize; self.poolsQueries = poolsQueries
        norm1 = try LayerNorm(w, "\(prefix).norm1", dim, eps: 1e-6)
        qkv = try Linear(w, "\(prefix).attn.qkv", dim, 3 * dimOut)
        attnProj = try Linear(w, "\(prefix).attn.proj", dimOut, dimOut)
        norm2 = try LayerNorm(w, "\(prefix).norm2", dimOut, eps: 1e-6)
        mlp = try MLP(w, "\(prefix).mlp", input: dimOut, hidden: 4 * dimOut, output: dimOut, numLayers: 2, activation: .gelu)
        shortcutProj = dim != dimOut ? try Linear(w, "\(prefix).proj", dim, dimOut) : nil
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        let h = x.shape[0], w = x.shape[1]
        let xn = norm1(x)
        var shortcut = x
        if let shortcutProj {
            shortcut = shortcutProj(xn)
            if poolsQueries { shortcut = shortcut.reshaped([1, h, w, dimOut]).maxPool2x2ChannelsLast().reshaped([h / 2, w / 2, dimOut]) }
        }
        // Attention runs per window (or once over the whole map for global blocks).
        let windows: Tensor, hp: Int, wp: Int
        if windowSize > 0 {
            (windows, hp, wp) = Window.partition(xn, size: windowSize)
        } else {
            (windows, hp, wp) = (xn.reshaped([1, h, w, dim]), h, w)
        }
        var attended = attention(windows)
        // Undo the partition at the pooled resolution.
        let outH = shortcut.shape[0], outW = shortcut.shape[1]
        if windowSize > 0 {
            let ws = poolsQueries ? windowSize / 2 : windowSize
            let php = poolsQueries ? outH + (ws - outH % ws) % ws : hp
            let pwp = poolsQueries ? outW + (ws - outW % ws) % ws : wp
            attended = Window.unpartition(attended, size: ws, paddedH: php, paddedW: pwp, height: outH, width: outW)
        } else {
            attended = attended.reshaped([outH, outW, dimOut])
        }
        var y = shortcut + attended
        mlp.residual(&y, norm: norm2)
        return y
    }

    /// `MultiScaleAttention` on `[B, S, S, C]` windows → `[B, S', S', dimOut]`.
    private func attention(_ windows: Tensor) -> Tensor {
        let b = windows.shape[0], s = windows.shape[1], sw = windows.shape[2]
        let n = s * sw
        let packed = qkv(windows.reshaped([b * n, dim]))  // [B*N, 3*dimOut]: q | k | v, heads contiguous
        let so = poolsQueries ? s / 2 : s, swo = poolsQueries ? sw / 2 : sw
        let nq = so * swo
        var q: Tensor? = nil
        if poolsQueries {
            // Gather q of every window and pool it.
            var qd = [Float](repeating: 0, count: b * n * dimOut)
            for r in 0..<(b * n) {
                for c in 0..<dimOut { qd[r * dimOut + c] = packed.data[r * 3 * dimOut + c] }
            }
            q = Tensor(shape: [b, s, sw, dimOut], data: qd).maxPool2x2ChannelsLast()
        }
        var out = [Float](repeating: 0, count: b * nq * dimOut)
        let hd = dimOut / heads
        packed.data.withUnsafeBufferPointer { pk in
            out.withUnsafeMutableBufferPointer { po in
                let ld = 3 * dimOut
                func run(_ qPtr: UnsafePointer<Float>, _ ldq: Int, _ win: Int) {
                    let kv = pk.baseAddress! + win * n * ld
                    Attention.scaledDotProduct(q: qPtr, ldq: ldq, k: kv + dimOut, ldk: ld, v: kv + 2 * dimOut, ldv: ld,
                                               out: po.baseAddress! + win * nq * dimOut, ldo: dimOut,
                                               queries: nq, keys: n, heads: heads, headDim: hd, valueHeadDim: hd)
                }
                if let q {
                    q.data.withUnsafeBufferPointer { pq in
                        let base = pq.baseAddress!
                        Parallelism.independentTasks(b) { win in run(base + win * nq * dimOut, dimOut, win) }
                    }
                } else {
                    let base = pk.baseAddress!
                    Parallelism.independentTasks(b) { win in run(base + win * n * ld, ld, win) }
                }
            }
        }
        return attnProj(Tensor(shape: [b * nq, dimOut], data: out)).reshaped([b, so, swo, dimOut])
    }
}

/// The Hiera trunk: patch embedding, windowed absolute position embedding, and the blocks;
/// returns each stage's last output as a `[C, H, W]` map, highest resolution first.
struct Hiera {
    let patchEmbed: Conv2d
    let posEmbed: Tensor        // [1, C, bh, bw] background, interpolated to the token grid
    let posEmbedWindow: Tensor  // [1, C, w0, w0] tiled over it
    let blocks: [HieraBlock]
    let stageEnds: [Int]
    let embedDim: Int
    /// The position embedding depends on the token grid only: computed once per grid size.
    private let positionCache = Memo<[Int], Tensor>()

    init(_ w: WeightStore, _ prefix: String, _ cfg: HieraConfig) throws {
        embedDim = cfg.embedDim
        patchEmbed = try Conv2d(w, "\(prefix).patch_embed.proj", 3, cfg.embedDim, kernel: 7, stride: 4, padding: 3)
        let bkg = cfg.windowPosEmbedBkgSpatialSize
        posEmbed = try w.take("\(prefix).pos_embed", [1, cfg.embedDim, bkg[0], bkg[1]])
        posEmbedWindow = try w.take("\(prefix).pos_embed_window", [1, cfg.embedDim, cfg.windowSpec[0], cfg.windowSpec[0]])

        let depth = cfg.stages.reduce(0, +)
        stageEnds = (1...cfg.stages.count).map { cfg.stages.prefix($0).reduce(0, +) - 1 }
        let qPoolBlocks = Set(stageEnds.dropLast().map { $0 + 1 }.prefix(cfg.qPool))
        var dim = cfg.embedDim, heads = cfg.numHeads, stage = 1
        var blocks = [HieraBlock]()
        for i in 0..<depth {
            var dimOut = dim
            // The window size lags by a block: a stage's first block still uses the previous stage's.
            var window = cfg.windowSpec[stage - 1]
            if cfg.globalAttBlocks.contains(i) { window = 0 }
            if stageEnds.contains(i - 1) {
                dimOut = Int(Double(dim) * cfg.dimMul)
                heads = Int(Double(heads) * cfg.headMul)
                stage += 1
            }
            blocks.append(try HieraBlock(w, "\(prefix).blocks.\(i)", dim: dim, dimOut: dimOut, heads: heads,
                                         windowSize: window, poolsQueries: qPoolBlocks.contains(i)))
            dim = dimOut
        }
        self.blocks = blocks
    }

    func callAsFunction(_ image: Tensor) -> [Tensor] {
        let patches = patchEmbed(image)  // [C, H, W]
        let h = patches.shape[1], w = patches.shape[2]
        let pos = positionCache.value(for: [h, w]) { positionEmbedding(height: h, width: w) }
        var x = (patches + pos).chwToTokens().reshaped([h, w, embedDim])
        var outputs = [Tensor]()
        for (i, block) in blocks.enumerated() {
            x = block(x)
            if stageEnds.contains(i) {
                outputs.append(x.reshaped([x.shape[0] * x.shape[1], x.shape[2]]).tokensToCHW(height: x.shape[0], width: x.shape[1]))
            }
        }
        return outputs
    }

    /// Bicubic-interpolated background embedding plus the tiled window embedding, `[C, H, W]`.
    private func positionEmbedding(height h: Int, width w: Int) -> Tensor {
        let c = embedDim
        var pe = Interpolate.bicubic(posEmbed.reshaped(Array(posEmbed.shape.dropFirst())), height: h, width: w)
        let ws = posEmbedWindow.shape[2]
        for ch in 0..<c {
            for y in 0..<h {
                for x in 0..<w {
                    pe.data[(ch * h + y) * w + x] += posEmbedWindow.data[(ch * ws + y % ws) * ws + x % ws]
                }
            }
        }
        return pe
    }
}
