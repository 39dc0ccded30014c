import Foundation
import SAM2Tensor

/// SAM's `Attention`: q/k/v projections (optionally to a downsampled internal width),
/// multi-head scaled dot-product attention, output projection.
struct ProjectedAttention {
    let qProj: Linear, kProj: Linear, vProj: Linear, outProj: Linear
    let heads: Int

    init(_ w: WeightStore, _ prefix: String, dim: Int, heads: Int, downsampleRate: Int = 1, kvInDim: Int? = nil) throws {
        let internalDim = dim / downsampleRate
        qProj = try Linear(w, "\(prefix).q_proj", dim, internalDim)
        kProj = try Linear(w, "\(prefix).k_proj", kvInDim ?? dim, internalDim)
        vProj = try Linear(w, "\(prefix).v_proj", kvInDim ?? dim, internalDim)
        outProj = try Linear(w, "\(prefix).out_proj", internalDim, dim)
        self.heads = heads
    }

    /// (Used on the mask decoder's few prompt tokens, where each projection is bound by reading its
    /// weight: the three run as independent tasks.)
    func callAsFunction(q: Tensor, k: Tensor, v: Tensor) -> Tensor {
        let p = Parallelism.map(3) { i in i == 0 ? qProj(q) : (i == 1 ? kProj(k) : vProj(v)) }
        return outProj(Attention.scaledDotProduct(q: p[0], k: p[1], v: p[2], heads: heads))
    }

    private var internalDim: Int { qProj.outDim }

    // The mask decoder's cross-attentions pit a handful of prompt tokens against the 4096 image
    // tokens. Folding the image side's projections into the tokens' side does a fraction of the
    // work (same math), and the image side is read in slabs that stay in cache.

    /// Tokens reading the image: `self(q: q, k: imagePlusPE, v: image)`. Per head, scores
    /// `q_h·(k Wₖ,hᵀ + bₖ,h)ᵀ = (q_h Wₖ,h)·kᵀ + q_h·bₖ,h`, and the last term is the same for every
    /// key, so the softmax drops it; values `P·(v Wᵥ,hᵀ + bᵥ,h) = (P·v)·Wᵥ,hᵀ + bᵥ,h` since each
    /// softmax row sums to one. So all heads are one attention of `heads·nq` rows over the raw image.
    func tokensReadingImage(_ q: Tensor, image: Tensor, imagePlusPE: Tensor) -> Tensor {
        let nq = q.shape[0], nk = image.shape[0], kvIn = image.shape[1], inner = internalDim, hd = inner / heads
        precondition(imagePlusPE.shape == image.shape && kProj.weight.shape[1] == kvIn)
        let qp = qProj(q)
        var folded = [Float](repeating: 0, count: heads * nq * kvIn)   // [heads·nq, kvIn]: q_h Wₖ,h
        var attended = [Float](repeating: 0, count: heads * nq * kvIn) // softmax · image, same shape
        var out = [Float](repeating: 0, count: nq * inner)
        Tensor.withPointers([qp, image, imagePlusPE, kProj.weight, vProj.weight, vProj.bias!]) { p in
            let (qpp, vp, kp, wk, wv, bv) = (p[0], p[1], p[2], p[3], p[4], p[5])
            folded.withUnsafeMutableBufferPointer { f in
                attended.withUnsafeMutableBufferPointer { a in
                    out.withUnsafeMutableBufferPointer { o in
                        for h in 0..<heads {  // q_h · Wₖ,h: [nq, hd] · [hd, kvIn]
                            GEMM.sgemm(m: nq, n: kvIn, k: hd, a: qpp + h * hd, lda: inner, b: wk + h * hd * kvIn, ldb: kvIn,
                                       c: f.baseAddress! + h * nq * kvIn, ldc: kvIn)
                        }
                        Attention.fewQueries(q: f.baseAddress!, rows: heads * nq, keys: kp, keyPE: nil, values: vp, count: nk,
                                             dim: kvIn, valueDim: kvIn, scale: 1 / Float(hd).squareRoot(), into: a.baseAddress!)
                        for h in 0..<heads {  // (P·v)_h · Wᵥ,hᵀ + bᵥ,h → head h's slice of the output
                            for r in 0..<nq { (o.baseAddress! + r * inner + h * hd).update(from: bv + h * hd, count: hd) }
                            GEMM.sgemm(transB: true, m: nq, n: hd, k: kvIn, a: a.baseAddress! + h * nq * kvIn, lda: kvIn,
                                       b: wv + h * hd * kvIn, ldb: kvIn, beta: 1, c: o.baseAddress! + h * hd, ldc: inner)
                        }
                    }
                }
            }
        }
        return outProj(Tensor(shape: [nq, inner], data: out))
    }

    /// Tokens reading an image whose key and value projections are a frame's part (columns
    /// `keysColumn` and `valuesColumn` on of `frame`, `[HW, n]`) plus a click's dense term. Per head,
    /// the keys' term drops out or folds into the queries: its bias is the same for every key, which
    /// the softmax ignores, and `q_h·(m Mₖ,hᵀ)ᵀ = (q_h Mₖ,h)·mᵀ`, a second set of queries against the
    /// mask channels `m`; the values' term is applied after attending, as each softmax row sums to
    /// one: `P·(m Mᵥ,hᵀ + b) = (P·m)·Mᵥ,hᵀ + b`.
    func tokensReadingProjected(_ q: Tensor, frame: Tensor, keysColumn: Int, valuesColumn: Int, dense: DenseTerm) -> Tensor {
        let nq = q.shape[0], nk = frame.shape[0], ld = frame.shape[1], inner = internalDim, hd = inner / heads
        let keyTerm = dense.columns(keysColumn..<(keysColumn + inner)), valueTerm = dense.columns(valuesColumn..<(valuesColumn + inner))
        let e = dense.channels == nil ? 0 : dense.weight.shape[1], width = hd + e
        let qp = qProj(q).data
        var qh = [Float](repeating: 0, count: heads * nq * hd)    // each head's queries in turn
        var qm = [Float](repeating: 0, count: heads * nq * e)     // q_h Mₖ,h
        for h in 0..<heads {
            for r in 0..<nq {
                let row = (h * nq + r)
                for d in 0..<hd { qh[row * hd + d] = qp[r * inner + h * hd + d] }
                for c in 0..<e {
                    var acc: Float = 0
                    for d in 0..<hd { acc += qh[row * hd + d] * keyTerm.weight.data[(h * hd + d) * e + c] }
                    qm[row * e + c] = acc
                }
            }
        }
        var attended = [Float](repeating: 0, count: heads * nq * width)  // [P·v_h | P·m]
        Tensor.withPointers([frame] + (dense.channels.map { [$0] } ?? [])) { p in
            qm.withUnsafeBufferPointer { qmp in
                Attention.fewQueries(q: qh, rows: nq, keys: p[0] + keysColumn, keyPE: nil, values: p[0] + valuesColumn, count: nk,
                                     dim: hd, valueDim: hd, heads: heads, ldk: ld, ldv: ld,
                                     extra: e == 0 ? nil : (qmp.baseAddress!, p[1], e), scale: 1 / Float(hd).squareRoot(),
                                     into: &attended)
            }
        }
        var out = [Float](repeating: 0, count: nq * inner)
        for h in 0..<heads {
            for r in 0..<nq {
                let a = (h * nq + r) * width
                for d in 0..<hd {
                    var acc = attended[a + d] + valueTerm.bias.data[h * hd + d]
                    for c in 0..<e { acc += attended[a + hd + c] * valueTerm.weight.data[(h * hd + d) * e + c] }
                    out[r * inner + h * hd + d] = acc
                }
            }
        }
        return outProj(Tensor(shape: [nq, inner], data: out))
    }

    /// The image reading the tokens, with the block's residual and norm: `norm(image + self(q: imagePlusPE,
    /// k: k, v: v))`, returned with that plus `imagePE`. Per head, scores `(q Wq,hᵀ + bq,h)·k_hᵀ = q·(Wq,hᵀ k_hᵀ) + bq,h·k_hᵀ`,
    /// and the output projection distributes over heads: `Σ_h P_h·(v_h Wₒ,hᵀ) + bₒ`. So the image
    /// side sees two linears, `[4096, dim] → [4096, heads·nk]` and back, instead of four
    /// `[4096, dim]` projections: a feed-forward layer whose activation is a softmax over each
    /// head's `nk` scores. Those are laid out token by token with the heads interleaved (column
    /// `j·heads + h`), so the softmax runs across heads in vector lanes.
    func imageReadingTokens(_ image: Tensor, imagePlusPE: Tensor, imagePE: Tensor, k: Tensor, v: Tensor,
                            norm: LayerNorm) -> (y: Tensor, yPlusPE: Tensor) {
        let nk = k.shape[0], dim = qProj.weight.shape[1], inner = internalDim, hd = inner / heads, width = heads * nk
        let kp = kProj(k)
        let scale = 1 / Float(hd).squareRoot()
        var scoreWeight = [Float](repeating: 0, count: width * dim)   // rows j·heads+h: scale · k_h[j] Wq,h
        var scoreBias = [Float](repeating: 0, count: width)           // scale · bq,h·k_h[j]
        Tensor.withPointers([kp, qProj.weight, qProj.bias!]) { p in
            let (kpp, wq, bq) = (p[0], p[1], p[2])
            scoreWeight.withUnsafeMutableBufferPointer { sw in
                for h in 0..<heads {
                    GEMM.sgemm(m: nk, n: dim, k: hd, alpha: scale, a: kpp + h * hd, lda: inner, b: wq + h * hd * dim, ldb: dim,
                               c: sw.baseAddress! + h * dim, ldc: heads * dim)
                    for j in 0..<nk {
                        var acc: Float = 0
                        for d in 0..<hd { acc += bq[h * hd + d] * kpp[j * inner + h * hd + d] }
                        scoreBias[j * heads + h] = scale * acc
                    }
                }
            }
        }
        return FeedForward.postNormSoftmaxResidual(
            image, xPlusPE: imagePlusPE, pe: imagePE, w1: Tensor(shape: [width, dim], data: scoreWeight),
            b1: Tensor(shape: [width], data: scoreBias), softmaxGroups: heads, w2: valueWeight(vProj(v)),
            b2: outProj.bias!, normWeight: norm.weight, normBias: norm.bias, eps: norm.eps)
    }

    /// The same when the image's query projection is a frame's part (column `queriesColumn` on of
    /// `frame`, `[HW, n]`) plus a click's dense term: per head, scores `scale · q_h·k_hᵀ` are one
    /// product of the frame's part with a block-diagonal `[heads·nk, inner]` weight (the keys
    /// `scale · k_h` in head h's columns; rows interleaved like the scores), plus that weight times
    /// the dense term's (a product over the mask channels, and a bias).
    func imageReadingTokens(_ image: Tensor, frame: Tensor, queriesColumn: Int, dense: DenseTerm, imagePE: Tensor,
                            k: Tensor, v: Tensor, norm: LayerNorm) -> (y: Tensor, yPlusPE: Tensor) {
        let nk = k.shape[0], inner = internalDim, hd = inner / heads, width = heads * nk, ld = frame.shape[1]
        precondition(frame.shape[0] == image.shape[0] && queriesColumn + inner <= ld)
        let term = dense.columns(queriesColumn..<(queriesColumn + inner)), e = dense.channels == nil ? 0 : term.weight.shape[1]
        let kp = kProj(k).data, scale = 1 / Float(hd).squareRoot()
        var keys = Tensor(zeros: [width, inner])
        for h in 0..<heads {
            for j in 0..<nk {
                for d in 0..<hd { keys.data[(j * heads + h) * inner + h * hd + d] = scale * kp[j * inner + h * hd + d] }
            }
        }
        let channelWeight = GEMM.matmul(keys, term.weight)                            // [width, e]
        let bias = GEMM.linear(term.bias.reshaped([1, inner]), weight: keys, bias: nil)  // [1, width]
        return Tensor.withPointers([frame, keys, channelWeight, bias] + (dense.channels.map { [$0] } ?? [])) { p in
            FeedForward.postNormSoftmaxResidual(image, pe: imagePE, softmaxGroups: heads, w2: valueWeight(vProj(v)), b2: outProj.bias!,
                                                normWeight: norm.weight, normBias: norm.bias, eps: norm.eps) { r0, n, scores in
                for r in 0..<n { (scores + r * width).update(from: p[3], count: width) }
                GEMM.sgemm(transB: true, m: n, n: width, k: inner, a: p[0] + r0 * ld + queriesColumn, lda: ld, b: p[1], ldb: inner,
                           beta: 1, c: scores, ldc: width, serial: true)
                if e > 0 {
                    GEMM.sgemm(transB: true, m: n, n: width, k: e, a: p[4] + r0 * e, lda: e, b: p[2], ldb: e,
                               beta: 1, c: scores, ldc: width, serial: true)
                }
            }
        }
    }

    /// `[outDim, heads·nk]`: `Wₒ,h v_hᵀ` per head, the output projection folded into the values `vp`
    /// `[nk, inner]`; columns interleaved like the scores (`j·heads + h`).
    private func valueWeight(_ vp: Tensor) -> Tensor {
        let nk = vp.shape[0], inner = internalDim, hd = inner / heads, outDim = outProj.outDim, width = heads * nk
        var byHead = [Float](repeating: 0, count: outDim * width)  // columns h·nk + j
        Tensor.withPointers([vp, outProj.weight]) { p in
            byHead.withUnsafeMutableBufferPointer { vw in
                for h in 0..<heads {
                    GEMM.sgemm(transB: true, m: outDim, n: nk, k: hd, a: p[1] + h * hd, lda: inner, b: p[0] + h * hd, ldb: inner,
                               c: vw.baseAddress! + h * nk, ldc: width)
                }
            }
        }
        var valueWeight = [Float](repeating: 0, count: outDim * width)
        for o in 0..<outDim {
            for h in 0..<heads {
                for j in 0..<nk { valueWeight[o * width + j * heads + h] = byHead[o * width + h * nk + j] }
            }
        }
        return Tensor(shape: [outDim, width], data: valueWeight)
    }
}

/// `RoPEAttention`: the same with axial rotary encoding of queries and of all keys but the
/// last `excludedKeys` (the object-pointer tokens); keys repeat the query grid's positions.
///
/// With `keyGridSide` it is EdgeTAM's `RoPEAttentionv2`: the keys are `keyFrames` memory frames of
/// equal length, and in each only the last `keyGridSide²` rows (the perceiver's 2D latents) are
/// rotated, on their own grid; the rows before them (global latents) are not.
struct RoPEAttention {
    let base: ProjectedAttention
    let theta: Float
    let internalDim: Int
    /// RoPEAttentionv2: the query grid's side and the memory grid's side.
    let queryGridSide: Int?, keyGridSide: Int?
    /// The rotation tables depend only on the grid: built once per size, not per call.
    private static let ropeTables = Memo<[Float], AxialRoPE>()
    /// One head over narrow memory rows, made at load: the value and output projections composed
    /// into one linear from the attended raw rows (`Wₒ Wᵥ`, `Wₒ bᵥ + bₒ`), as nothing lies between
    /// them; and `[Wₖ | bₖ]` (`[inner, kvIn + 1]`), which folds queries for the keys not rotated.
    private let narrowMemory: (valueOut: Linear, keyFold: Tensor)?

    init(_ w: WeightStore, _ prefix: String, dim: Int, heads: Int, downsampleRate: Int, kvInDim: Int?, theta: Float,
         queryGridSide: Int? = nil, keyGridSide: Int? = nil) throws {
        base = try ProjectedAttention(w, prefix, dim: dim, heads: heads, downsampleRate: downsampleRate, kvInDim: kvInDim)
        self.theta = theta
        internalDim = dim / downsampleRate
        self.queryGridSide = queryGridSide
        self.keyGridSide = keyGridSide
        if heads == 1, let kvInDim, kvInDim < internalDim {
            let (wv, wo, wk) = (base.vProj, base.outProj, base.kProj)
            let bias = GEMM.linear(wv.bias!.reshaped([1, internalDim]), weight: wo.weight, bias: wo.bias).reshaped([dim])
            let width = kvInDim + 1
            var keyFold = Tensor(zeros: [internalDim, width])
            for c in 0..<internalDim {
                for j in 0..<kvInDim { keyFold.data[c * width + j] = wk.weight.data[c * kvInDim + j] }
                keyFold.data[c * width + kvInDim] = wk.bias!.data[c]
            }
            narrowMemory = (Linear(weight: GEMM.matmul(wo.weight, wv.weight), bias: bias), keyFold)
        } else {
            narrowMemory = nil
        }
    }

    private func table(side: Int) -> AxialRoPE {
        let dim = internalDim / base.heads
        return Self.ropeTables.value(for: [Float(dim), Float(side), theta]) { AxialRoPE(dim: dim, side: side, theta: theta) }
    }

    /// The queries' table: v2's fixed grid, else the grid of `queries` tokens.
    func rope(queries: Int) -> AxialRoPE {
        table(side: queryGridSide ?? Int(Double(queries).squareRoot().rounded()))
    }

    func callAsFunction(q: Tensor, k: Tensor, v: Tensor, excludedKeys: Int = 0, keyFrames: Int = 0, rope: AxialRoPE) -> Tensor {
        var qp = base.qProj(q)
        rope.apply(&qp, rows: qp.shape[0], heads: base.heads)
        let rotatedRuns = rotatedKeyRuns(keys: k.shape[0], excludedKeys: excludedKeys, keyFrames: keyFrames)
        if let narrowMemory {
            return narrowMemory.valueOut(attendNarrowMemory(qp, k: k, v: v, rotated: rotatedRuns, rope: rope,
                                                            keyFold: narrowMemory.keyFold))
        }
        var kp = base.kProj(k)
        let keyRope = keyGridSide.map(table(side:)) ?? rope
        for run in rotatedRuns { keyRope.apply(&kp, rows: run, heads: base.heads) }
        return base.outProj(Attention.scaledDotProduct(q: qp, k: kp, v: base.vProj(v), heads: base.heads))
    }

    /// The runs of key rows that are rotated, each starting at its grid's position 0: all but the
    /// last `excludedKeys` for RoPEAttention (positions repeat every grid); for RoPEAttentionv2,
    /// the 2D latents at the end of each of the `keyFrames` memories.
    private func rotatedKeyRuns(keys: Int, excludedKeys: Int, keyFrames: Int) -> [Range<Int>] {
        let rotated = keys - excludedKeys
        guard rotated > 0 else { return [] }
        guard let keyGridSide else { return [0..<rotated] }
        guard keyFrames > 0 else { return [] }
        let perFrame = rotated / keyFrames, plain = perFrame - keyGridSide * keyGridSide
        precondition(perFrame * keyFrames == rotated && plain >= 0, "RoPEAttentionv2: \(rotated) keys in \(keyFrames) frames")
        return (0..<keyFrames).map { (($0 * perFrame + plain)..<(($0 + 1) * perFrame)) }
    }

    /// One head over narrow memory rows (`kvInDim` < the attention's width), with neither
    /// projection of the memory side done on all of it. Values are not rotated and each softmax
    /// row sums to one, so softmax(·)·(v Wᵥᵀ + b) = (softmax(·)·v)·Wᵥᵀ + b: attend over the raw
    /// rows and project afterwards (the caller does, with `valueOut`). Keys that are not rotated score
    /// `q·(Wₖ m + bₖ) = (q Wₖ)·m + q·bₖ`: queries folded once through `keyFold` to `[q Wₖ | q·bₖ]`
    /// against `[m | 1]`, a quarter of the width. Only the rotated keys are projected. Softmax does not care about
    /// the keys' order: rotated ones first, then the rest, values in the same order.
    private func attendNarrowMemory(_ qp: Tensor, k: Tensor, v: Tensor, rotated: [Range<Int>], rope: AxialRoPE,
                                    keyFold: Tensor) -> Tensor {
        let nq = qp.shape[0], nk = k.shape[0], kvIn = k.shape[1], inner = internalDim
        var plain = [Range<Int>](), at = 0
        for run in rotated + [nk..<nk] {
            if at < run.lowerBound { plain.append(at..<run.lowerBound) }
            at = run.upperBound
        }
        func gather(_ t: Tensor, _ runs: [Range<Int>]) -> Tensor { Tensor.concatRows(runs.filter { !$0.isEmpty }.map { t.rows($0) }) }
        let rotatedCount = rotated.reduce(0) { $0 + $1.count }, plainCount = nk - rotatedCount
        var kp = rotatedCount > 0 ? base.kProj(gather(k, rotated)) : Tensor(zeros: [0, inner])
        let keyRope = keyGridSide.map(table(side:)) ?? rope
        var start = 0
        for run in rotated {
            keyRope.apply(&kp, rows: start..<(start + run.count), heads: 1)
            start += run.count
        }
        // [m | 1] and [q Wₖ | q·bₖ]
        let width = kvIn + 1
        var plainKeys = [Float](repeating: 1, count: plainCount * width)
        var row = 0
        for run in plain {
            for r in run {
                for c in 0..<kvIn { plainKeys[row * width + c] = k.data[r * kvIn + c] }
                row += 1
            }
        }
        let foldedQueries = GEMM.matmul(qp, keyFold)
        let values = gather(v, rotated + plain)
        var out = [Float](repeating: 0, count: nq * kvIn)
        Tensor.withPointers([qp, kp, values, foldedQueries]) { p in
            plainKeys.withUnsafeBufferPointer { pk in
                out.withUnsafeMutableBufferPointer { o in
                    Attention.scaledDotProduct(
                        queries: nq,
                        runs: [Attention.KeyRun(queries: p[0], ldq: inner, keys: p[1], ldk: inner, dim: inner, count: rotatedCount),
                               Attention.KeyRun(queries: p[3], ldq: width, keys: pk.baseAddress!, ldk: width, dim: width,
                                                count: plainCount)],
                        v: p[2], ldv: kvIn, valueDim: kvIn, scale: 1 / Float(inner).squareRoot(), out: o.baseAddress!, ldo: kvIn)
                }
            }
        }
        return Tensor(shape: [nq, kvIn], data: out)
    }
}
