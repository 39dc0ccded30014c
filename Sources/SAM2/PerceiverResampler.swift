import SAM2Checkpoint
import SAM2Tensor
import CKernels

/// EdgeTAM's spatial perceiver (`PerceiverResampler`): each memory frame, `[memDim, 64, 64]` out of
/// the memory encoder at 1024, becomes 512 tokens before memory attention — 256 global latents
/// that attend to the whole map, and 256 2D latents that each attend to one window of a 16x16
/// tiling (so they keep the map's layout; memory attention rotates them with RoPE on that grid).
/// The same layers serve both kinds of latents.
struct PerceiverResampler {
    /// `PerceiverAttention` (latents → map) and the latents' `Attention` (self), pre-norm, no biases.
    struct Attend {
        let normQueries: LayerNorm, normKeys: LayerNorm?
        let toQ: Linear, toKV: Linear, toOut: Linear
        let heads: Int

        init(_ w: WeightStore, _ prefix: String, dim: Int, dimHead: Int, heads: Int, cross: Bool) throws {
            let inner = dimHead * heads
            normQueries = try LayerNorm(w, "\(prefix).\(cross ? "norm_latents" : "norm")", dim)
            normKeys = cross ? try LayerNorm(w, "\(prefix).norm_x", dim) : nil
            toQ = try Linear(w, "\(prefix).to_q", dim, inner, bias: false)
            toKV = try Linear(w, "\(prefix).to_kv", dim, 2 * inner, bias: false)
            toOut = try Linear(w, "\(prefix).to_out", inner, dim, bias: false)
            self.heads = heads
        }

        /// Keys and values `[N, inner]` of `x` (`to_kv(norm_x(x)).chunk(2)`), plus `pos` on both.
        func keysValues(_ x: Tensor, pos: Tensor?) -> (k: Tensor, v: Tensor) {
            let kv = toKV((normKeys ?? normQueries)(x))
            let inner = kv.shape[1] / 2
            var k = kv.columns(0..<inner), v = kv.columns(inner..<(2 * inner))
            if let pos { k += pos; v += pos }
            return (k, v)
        }

        /// `latents + attention(latents, keys/values)`.
        func residual(_ latents: Tensor, k: Tensor, v: Tensor) -> Tensor {
            let q = toQ(normQueries(latents))
            return latents + toOut(Attention.scaledDotProduct(q: q, k: k, v: v, heads: heads))
        }
    }

    /// One `PerceiverEncoderLayer`: cross-attention and feed-forward, then (EdgeTAM) self-attention
    /// among the latents and another feed-forward.
    struct Layer {
        let attn: Attend, ff: FeedForwardBlock
        let selfAttn: Attend?, selfFF: FeedForwardBlock?

        init(_ w: WeightStore, _ prefix: String, _ cfg: PerceiverResamplerConfig) throws {
            attn = try Attend(w, "\(prefix).attn", dim: cfg.dim, dimHead: cfg.dimHead, heads: cfg.heads, cross: true)
            ff = try FeedForwardBlock(w, "\(prefix).ff", dim: cfg.dim, mult: cfg.ffMult)
            selfAttn = cfg.useSelfAttn ? try Attend(w, "\(prefix).self_attn", dim: cfg.dim, dimHead: cfg.dimHead, heads: cfg.heads, cross: false) : nil
            selfFF = cfg.useSelfAttn ? try FeedForwardBlock(w, "\(prefix).self_ff", dim: cfg.dim, mult: cfg.ffMult) : nil
        }

        /// The latents' own half: feed-forward, self-attention, feed-forward. `separately`: each
        /// latent is a sequence of its own (the 2D latents are a batch of one-token sequences), so
        /// its self-attention is a softmax over one key, and returns its own value.
        func afterCrossAttention(_ latents: Tensor, separately: Bool) -> Tensor {
            var x = ff(latents)
            if let selfAttn, let selfFF {
                let (k, v) = selfAttn.keysValues(x, pos: nil)
                x = selfFF(separately ? x + selfAttn.toOut(v) : selfAttn.residual(x, k: k, v: v))
            }
            return x
        }
    }

    /// `FeedForward`: LayerNorm, Linear (no bias), GELU, Linear (no bias), as a residual.
    struct FeedForwardBlock {
        let norm: LayerNorm, up: Linear, down: Linear

        init(_ w: WeightStore, _ prefix: String, dim: Int, mult: Int) throws {
            norm = try LayerNorm(w, "\(prefix).0", dim)
            up = try Linear(w, "\(prefix).1", dim, dim * mult, bias: false)
            down = try Linear(w, "\(prefix).3", dim * mult, dim, bias: false)
        }

        func callAsFunction(_ x: Tensor) -> Tensor { x + down(up(norm(x)).gelu()) }
    }

    let latents: Tensor?, latents2d: Tensor?  // [numLatents, dim], [numLatents2d, dim]
    let layers: [Layer]
    let norm: LayerNorm
    let dim: Int
    /// `(tokens', positions)` as the official perceiver returns them: zeros for the global latents,
    /// the sine encoding of the 2D latents' grid.
    let positions: Tensor

    init(_ w: WeightStore, _ prefix: String, _ cfg: PerceiverResamplerConfig) throws {
        latents = cfg.numLatents > 0 ? try w.take("\(prefix).latents", [cfg.numLatents, cfg.dim]) : nil
        latents2d = cfg.numLatents2d > 0 ? try w.take("\(prefix).latents_2d", [cfg.numLatents2d, cfg.dim]) : nil
        layers = try (0..<cfg.depth).map { try Layer(w, "\(prefix).layers.\($0)", cfg) }
        norm = try LayerNorm(w, "\(prefix).norm", cfg.dim)
        dim = cfg.dim
        var positions = [Tensor]()
        if cfg.numLatents > 0 { positions.append(Tensor(zeros: [cfg.numLatents, cfg.dim])) }
        if cfg.numLatents2d > 0 {
            let side = Int(Double(cfg.numLatents2d).squareRoot())
            positions.append(PositionEncoding.sine(numPosFeats: cfg.positionEncoding?.numPosFeats ?? cfg.dim, height: side, width: side,
                                                   temperature: Float(cfg.positionEncoding?.temperature ?? 10000)).chwToTokens())
        }
        self.positions = Tensor.concatRows(positions)
    }

    /// A memory map `[C, H, W]` and its position encoding → the latents' tokens
    /// `[numLatents + numLatents2d, C]`: global latents first, then the 2D latents in row-major
    /// window order. Their position tokens, which depend on no data, are `positions`.
    func callAsFunction(_ x: Tensor, pos: Tensor) -> Tensor {
        var tokens = [Tensor]()
        if let latents { tokens.append(global(latents, x.chwToTokens(), pos: pos.chwToTokens())) }
        if let latents2d { tokens.append(windowed(latents2d, x)) }
        return Tensor.concatRows(tokens)
    }

    /// `forward_1d`: the latents attend to every pixel (with its position encoding on keys and values).
    private func global(_ latents: Tensor, _ x: Tensor, pos: Tensor) -> Tensor {
        var l = latents
        for layer in layers {
            let (k, v) = layer.attn.keysValues(x, pos: pos)
            l = layer.afterCrossAttention(layer.attn.residual(l, k: k, v: v), separately: false)
        }
        return norm(l)
    }

    /// `forward_2d`: latent i attends to the pixels of window i alone (no position encoding).
    private func windowed(_ latents: Tensor, _ x: Tensor) -> Tensor {
        let c = x.shape[0], h = x.shape[1], w = x.shape[2]
        let side = Int(Double(latents.shape[0]).squareRoot()), window = h / side, perWindow = window * window
        // Pixels regrouped window by window (`window_partition`), row-major within each window.
        var grouped = [Float](repeating: 0, count: side * side * perWindow * c)
        x.data.withUnsafeBufferPointer { xp in
            for wy in 0..<side {
                for wx in 0..<side {
                    for y in 0..<window {
                        for xx in 0..<window {
                            let row = ((wy * side + wx) * window + y) * window + xx
                            let pixel = (wy * window + y) * w + wx * window + xx
                            for ch in 0..<c { grouped[row * c + ch] = xp[ch * h * w + pixel] }
                        }
                    }
                }
            }
        }
        let pixels = Tensor(shape: [side * side * perWindow, c], data: grouped)
        var l = latents
        for layer in layers {
            let (k, v) = layer.attn.keysValues(pixels, pos: nil)
            let q = layer.attn.toQ(layer.attn.normQueries(l))
            let attended = Self.windowAttention(q: q, k: k, v: v, heads: layer.attn.heads, perWindow: perWindow)
            l = layer.afterCrossAttention(l + layer.attn.toOut(attended), separately: true)
        }
        return norm(l)
    }

    /// Latent i attends to window i alone: rows `i·perWindow ..< (i+1)·perWindow` of `k` and `v`
    /// (a handful of keys, so plain loops, latents spread over the cores).
    private static func windowAttention(q: Tensor, k: Tensor, v: Tensor, heads: Int, perWindow: Int) -> Tensor {
        let n = q.shape[0], inner = q.shape[1], hd = inner / heads, scale = 1 / Float(hd).squareRoot()
        var out = [Float](repeating: 0, count: n * inner)
        Tensor.withPointers([q, k, v]) { p in
            out.withUnsafeMutableBufferPointer { o in
                let (qp, kp, vp, op) = (p[0], p[1], p[2], o.baseAddress!)
                parallelChunks(n, minimumChunk: 32) { chunk in
                    let scores = UnsafeMutablePointer<Float>.allocate(capacity: perWindow)
                    defer { scores.deallocate() }
                    for i in chunk {
                        for h in 0..<heads {
                            let query = qp + i * inner + h * hd, output = op + i * inner + h * hd
                            for j in 0..<perWindow {
                                let key = kp + (i * perWindow + j) * inner + h * hd
                                var dot: Float = 0
                                for d in 0..<hd { dot += query[d] * key[d] }
                                scores[j] = dot * scale
                            }
                            sam2_softmax_rows(scores, 1, perWindow)
                            for j in 0..<perWindow {
                                let value = vp + (i * perWindow + j) * inner + h * hd, weight = scores[j]
                                for d in 0..<hd { output[d] += weight * value[d] }
                            }
                        }
                    }
                }
            }
        }
        return Tensor(shape: [n, inner], data: out)
    }
}
