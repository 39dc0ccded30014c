import CKernels
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
        // Group by group where the map is large (the first two stages at 1024: whole-map
        // intermediates of 37-150 MB); op by op on smaller maps, where a group's rows are too few
        // to pay for re-reading the larger weights of the later stages (measured slower there).
        windowSize > 0 && x.shape[0] * x.shape[1] >= 128 * 128 ? windowed(x) : wholeMap(x)
    }

    /// A block op by op over the whole map.
    func wholeMap(_ x: Tensor) -> Tensor {
        let h = x.shape[0], w = x.shape[1]
        let xn = norm1(x)
        var shortcut = x
        if let shortcutProj {
            shortcut = shortcutProj(xn)
            if poolsQueries { shortcut = maxPooled(shortcut, ld: dimOut, blocks: 1, height: h, width: w).reshaped([h / 2, w / 2, dimOut]) }
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

    /// A windowed block, a group of windows at a time from start to finish: gather the group's
    /// tokens, norm1 (padding stays zero, as it is added after the norm), qkv, attention per window
    /// (q max-pooled within its window at a stage change), proj, the shortcut, the MLP, scatter back.
    /// A group's intermediates stay in cache, where the whole-map form wrote a dozen map-sized
    /// buffers (qkv alone is 150 MB in the first stage at 1024). Every row gets the same products
    /// and norms as op by op, so the output is the same to the bit.
    func windowed(_ x: Tensor) -> Tensor {
        let h = x.shape[0], w = x.shape[1], ws = windowSize
        let nh = (h + ws - 1) / ws, nw = (w + ws - 1) / ws, windows = nh * nw
        let wso = poolsQueries ? ws / 2 : ws                      // output window side
        let outH = poolsQueries ? h / 2 : h, outW = poolsQueries ? w / 2 : w
        let n = ws * ws, nq = wso * wso, hd = dimOut / heads, qkvWidth = 3 * dimOut
        let hidden = mlp.layers[0].outDim
        // About 256 output rows per group (at most 512 input rows), and enough groups for the cores.
        let perGroup = max(1, min(256 / nq, 512 / n, windows / 8))
        let groups = (windows + perGroup - 1) / perGroup
        let inRows = perGroup * n, outRows = perGroup * nq
        countFlops(windows: windows, inRows: windows * n, outTokens: outH * outW, hidden: hidden)

        var out = [Float](repeating: 0, count: outH * outW * dimOut)
        let weights = [qkv.weight, qkv.bias!, attnProj.weight, attnProj.bias!, norm1.weight, norm1.bias,
                       norm2.weight, norm2.bias, mlp.layers[0].weight, mlp.layers[0].bias!, mlp.layers[1].weight,
                       mlp.layers[1].bias!] + (shortcutProj.map { [$0.weight, $0.bias!] } ?? [])
        Tensor.withPointers([x] + weights) { p in
            let xp = p[0], (qkvW, qkvB, projW, projB, n1w, n1b) = (p[1], p[2], p[3], p[4], p[5], p[6])
            let ffn = FeedForward.Weights(normWeight: p[7], normBias: p[8], eps: norm2.eps, w1: p[9], b1: p[10], w2: p[11], b2: p[12],
                                          dim: dimOut, hidden: hidden, activation: mlp.activation)
            let shortcutWeights = shortcutProj == nil ? nil : (p[13], p[14])
            out.withUnsafeMutableBufferPointer { po in
                let op = po.baseAddress!
                Parallelism.independentTasks(groups) { g in
                    let first = g * perGroup, count = min(perGroup, windows - first)
                    let floats = inRows * (dim + qkvWidth + dimOut) + nq * n + outRows * (5 * dimOut + hidden)
                    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: floats)
                    defer { scratch.deallocate() }
                    var next = scratch
                    func take(_ count: Int) -> UnsafeMutablePointer<Float> { defer { next += count }; return next }
                    let xn = take(inRows * dim), packed = take(inRows * qkvWidth), shortcut = take(inRows * dimOut)
                    let scores = take(nq * n), pooled = take(outRows * dimOut), attended = take(outRows * dimOut)
                    let projected = take(outRows * dimOut), y = take(outRows * dimOut), mlpScratch = take(outRows * (dimOut + hidden))
                    let rows = count * n

                    // Gather and normalise; rows outside the map are the zero padding (added after the
                    // norm). Each run of map rows is normalised at once (the kernel interleaves rows).
                    var runStart = 0
                    for t in 0...rows {
                        var inside = false
                        if t < rows {
                            let (sy, sx) = position(window: first + t / n, token: t % n, side: ws, windowsPerRow: nw)
                            inside = sy < h && sx < w
                            if inside { (xn + t * dim).update(from: xp + (sy * w + sx) * dim, count: dim) }
                            else { (xn + t * dim).update(repeating: 0, count: dim) }
                        }
                        if !inside {
                            if t > runStart { sam2_layernorm_rows(xn + runStart * dim, t - runStart, dim, n1w, n1b, norm1.eps) }
                            runStart = t + 1
                        }
                    }

                    GEMM.linearRows(xn, rows: rows, inDim: dim, outDim: qkvWidth, weight: qkvW, bias: qkvB, accumulate: false, into: packed)
                    for win in 0..<count {
                        let kv = packed + win * n * qkvWidth
                        var q = UnsafePointer(kv), ldq = qkvWidth
                        if poolsQueries {
                            let pq = pooled + win * nq * dimOut
                            maxPool2x2(kv, ld: qkvWidth, height: ws, width: ws, channels: dimOut, into: pq)
                            q = UnsafePointer(pq); ldq = dimOut
                        }
                        Attention.window(q: q, ldq: ldq, k: kv + dimOut, ldk: qkvWidth, v: kv + 2 * dimOut, ldv: qkvWidth,
                                         out: attended + win * nq * dimOut, ldo: dimOut, queries: nq, keys: n,
                                         heads: heads, headDim: hd, scores: scores)
                    }
                    // The shortcut, in window order: x itself, or the projection of the normed tokens
                    // (max-pooled like q, into q's buffer, free again).
                    var shortcutRows = UnsafePointer(shortcut)
                    if let (weight, bias) = shortcutWeights {
                        GEMM.linearRows(xn, rows: rows, inDim: dim, outDim: dimOut, weight: weight, bias: bias, accumulate: false, into: shortcut)
                        if poolsQueries {
                            for win in 0..<count {
                                maxPool2x2(shortcut + win * n * dimOut, ld: dimOut, height: ws, width: ws, channels: dimOut,
                                           into: pooled + win * nq * dimOut)
                            }
                            shortcutRows = UnsafePointer(pooled)
                        }
                    }
                    // y = shortcut + proj(attended), over the group's output tokens inside the map.
                    GEMM.linearRows(attended, rows: count * nq, inDim: dimOut, outDim: dimOut, weight: projW, bias: projB,
                                    accumulate: false, into: projected)
                    var kept = [Int]()
                    for t in 0..<(count * nq) {
                        let (oy, ox) = position(window: first + t / nq, token: t % nq, side: wso, windowsPerRow: nw)
                        guard oy < outH && ox < outW else { continue }
                        let source = shortcutProj == nil ? xp + (oy * w + ox) * dim : shortcutRows + t * dimOut
                        sam2_add(y + kept.count * dimOut, source, projected + t * dimOut, dimOut)
                        kept.append(oy * outW + ox)
                    }
                    FeedForward.residualRows(y, rows: kept.count, ffn, scratch: mlpScratch)
                    for (i, index) in kept.enumerated() { (op + index * dimOut).update(from: y + i * dimOut, count: dimOut) }
                }
            }
        }
        return Tensor(shape: [outH, outW, dimOut], data: out)
    }

    /// Map position of token `token` (row-major inside its window) of window `window` (row-major).
    @inline(__always)
    private func position(window: Int, token: Int, side: Int, windowsPerRow: Int) -> (Int, Int) {
        ((window / windowsPerRow) * side + token / side, (window % windowsPerRow) * side + token % side)
    }

    /// Max-pool 2x2 (floor, like `nn.MaxPool2d(2)`) the first `channels` columns of a window's
    /// `height x width` rows (stride `ld`) into `[height/2 · width/2, channels]`.
    private func maxPool2x2(_ rows: UnsafePointer<Float>, ld: Int, height: Int, width: Int, channels: Int,
                            into out: UnsafeMutablePointer<Float>) {
        let wo = width / 2
        for t in 0..<((height / 2) * wo) {
            let i00 = rows + ((t / wo) * 2 * width + (t % wo) * 2) * ld
            let (i01, i10) = (i00 + ld, i00 + width * ld)
            let i11 = i10 + ld, o = out + t * channels
            for c in 0..<channels { o[c] = Swift.max(Swift.max(i00[c], i01[c]), Swift.max(i10[c], i11[c])) }
        }
    }

    /// `maxPool2x2` of `blocks` consecutive `height x width` row blocks of `rows` (row stride `ld`;
    /// the first dimOut columns) into `[blocks · height/2 · width/2, dimOut]`.
    private func maxPooled(_ rows: Tensor, ld: Int, blocks: Int, height: Int, width: Int) -> Tensor {
        let outRows = (height / 2) * (width / 2), count = blocks * outRows * dimOut
        var pooled = [Float](unsafeUninitializedCapacity: count) { _, c in c = count }
        rows.data.withUnsafeBufferPointer { r in
            pooled.withUnsafeMutableBufferPointer { o in
                for blk in 0..<blocks {
                    maxPool2x2(r.baseAddress! + blk * height * width * ld, ld: ld, height: height, width: width, channels: dimOut,
                               into: o.baseAddress! + blk * outRows * dimOut)
                }
            }
        }
        return Tensor(shape: [blocks * outRows, dimOut], data: pooled)
    }

    /// The executed products of a windowed block, counted once for the whole map.
    private func countFlops(windows: Int, inRows: Int, outTokens: Int, hidden: Int) {
        let nq = Double(poolsQueries ? windowSize * windowSize / 4 : windowSize * windowSize)
        let (rows, d, dO) = (Double(inRows), Double(dim), Double(dimOut))
        var f = 2 * rows * d * 3 * dO                                        // qkv
        f += 4 * Double(windows) * nq * Double(windowSize * windowSize) * dO  // scores and values
        f += 2 * Double(windows) * nq * dO * dO                              // proj
        if shortcutProj != nil { f += 2 * rows * d * dO }
        f += 4 * Double(outTokens) * dO * Double(hidden)                     // MLP
        GEMM.countFlops(f)
    }

    /// `MultiScaleAttention` on `[B, S, S, C]` windows → `[B, S', S', dimOut]`.
    private func attention(_ windows: Tensor) -> Tensor {
        let b = windows.shape[0], s = windows.shape[1], sw = windows.shape[2]
        let n = s * sw
        let packed = qkv(windows.reshaped([b * n, dim]))  // [B*N, 3*dimOut]: q | k | v, heads contiguous
        let so = poolsQueries ? s / 2 : s, swo = poolsQueries ? sw / 2 : sw
        let nq = so * swo
        // Each window's q (the first dimOut columns), max-pooled inside the window.
        let q = poolsQueries ? maxPooled(packed, ld: 3 * dimOut, blocks: b, height: s, width: sw) : nil
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
