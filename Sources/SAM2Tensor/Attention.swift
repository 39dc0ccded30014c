import CKernels
import Foundation

/// Scaled dot-product attention, blocked over queries so the full score matrix never exists:
/// each block of queries gets its scores (one sgemm), a row softmax, and its output (one sgemm).
/// Memory attention at 1024 has 4096 queries against ~28,700 keys; a block of 128 queries needs
/// 14 MB of scores where the full matrix would need 470 MB.
public enum Attention {
    /// Target size of one score block, in floats.
    public static var scoreBlockFloats = 1 << 22

    /// `softmax(q kᵀ · scale) v` for every head. `q` is `[Nq, heads*d]`, `k` is `[Nk, heads*d]`,
    /// `v` is `[Nk, heads*dv]`; heads are contiguous slices of the channel dimension, as after
    /// `_separate_heads`. Returns `[Nq, heads*dv]`. `scale` defaults to `1/√d`, like SDPA.
    public static func scaledDotProduct(q: Tensor, k: Tensor, v: Tensor, heads: Int, scale: Float? = nil) -> Tensor {
        let nq = q.shape[0], nk = k.shape[0]
        let qc = q.shape[1], vc = v.shape[1]
        precondition(k.shape[1] == qc && v.shape[0] == nk && qc % heads == 0 && vc % heads == 0,
                     "attention: q \(q.shape) k \(k.shape) v \(v.shape) heads \(heads)")
        var out = [Float](repeating: 0, count: nq * vc)
        q.data.withUnsafeBufferPointer { pq in
            k.data.withUnsafeBufferPointer { pk in
                v.data.withUnsafeBufferPointer { pv in
                    out.withUnsafeMutableBufferPointer { po in
                        scaledDotProduct(q: pq.baseAddress!, ldq: qc, k: pk.baseAddress!, ldk: qc,
                                         v: pv.baseAddress!, ldv: vc, out: po.baseAddress!, ldo: vc,
                                         queries: nq, keys: nk, heads: heads, headDim: qc / heads,
                                         valueHeadDim: vc / heads, scale: scale)
                    }
                }
            }
        }
        return Tensor(shape: [nq, vc], data: out)
    }

    /// The same on raw rows with leading dimensions, so packed `qkv` projections need no copies.
    public static func scaledDotProduct(q: UnsafePointer<Float>, ldq: Int, k: UnsafePointer<Float>, ldk: Int,
                                        v: UnsafePointer<Float>, ldv: Int, out: UnsafeMutablePointer<Float>, ldo: Int,
                                        queries nq: Int, keys nk: Int, heads: Int, headDim d: Int,
                                        valueHeadDim dv: Int, scale: Float? = nil) {
        let s = scale ?? 1 / Float(d).squareRoot()
        if nk > flashAbove {
            flash(q: q, ldq: ldq, k: k, ldk: ldk, v: v, ldv: ldv, out: out, ldo: ldo, queries: nq, keys: nk,
                  heads: heads, headDim: d, valueHeadDim: dv, scale: s)
            return
        }
        let block = max(1, min(nq, scoreBlockFloats / max(nk, 1)))
        var scores = [Float](repeating: 0, count: block * nk)
        scores.withUnsafeMutableBufferPointer { ps in
            let sp = ps.baseAddress!
            for h in 0..<heads {
                var r0 = 0
                while r0 < nq {
                    let rows = min(block, nq - r0)
                    GEMM.sgemm(transB: true, m: rows, n: nk, k: d, alpha: s,
                               a: q + r0 * ldq + h * d, lda: ldq, b: k + h * d, ldb: ldk, c: sp, ldc: nk)
                    parallelChunks(rows, minimumChunk: max(1, 16384 / max(nk, 1))) { r in
                        sam2_softmax_rows(sp + r.lowerBound * nk, r.count, nk)
                    }
                    GEMM.sgemm(m: rows, n: dv, k: nk, a: sp, lda: nk,
                               b: v + h * dv, ldb: ldv, c: out + r0 * ldo + h * dv, ldc: ldo)
                    r0 += rows
                }
            }
        }
    }

    /// The same for one small window, on this thread, with the caller's `scores` buffer
    /// (`queries·keys` floats): Hiera's windowed attention over 16-196 tokens, where the blocked
    /// path's allocation, locking and thread hand-offs cost more than the arithmetic. Same products
    /// and softmax per row, so the same numbers. Counts no FLOPs (the caller does).
    public static func window(q: UnsafePointer<Float>, ldq: Int, k: UnsafePointer<Float>, ldk: Int,
                              v: UnsafePointer<Float>, ldv: Int, out: UnsafeMutablePointer<Float>, ldo: Int,
                              queries nq: Int, keys nk: Int, heads: Int, headDim d: Int,
                              scores: UnsafeMutablePointer<Float>) {
        let s = 1 / Float(d).squareRoot()
        for h in 0..<heads {
            GEMM.blas(false, true, nq, nk, d, s, q + h * d, ldq, k + h * d, ldk, 0, scores, nk)
            sam2_softmax_rows(scores, nq, nk)
            GEMM.blas(false, false, nq, d, nk, 1, scores, nk, v + h * d, ldv, 0, out + h * d, ldo)
        }
    }

    /// Key counts above which attention takes the online-softmax path.
    public static var flashAbove = 512
    /// Keys per block of the online-softmax path.
    public static var keyBlock = 256
    /// Queries per block of the online-softmax path. One block's scores (512 x 256 floats, 512 KB)
    /// stay in a core's L2 cache from the score product through the softmax to the value product,
    /// and each key block is packed for sgemm once per 512 queries (at 64, packing took a third
    /// of the time; 512 x 256 measured 4-8% faster than 256 x 512 on EdgeTAM's memory attention).
    public static var queryBlock = 512

    /// One run of keys and the queries that score them: row i of `queries` (`ldq` apart, `dim`
    /// wide) against `count` rows of `keys` (`ldk` apart). Queries may differ per run (a run of
    /// keys whose projection was folded into its queries), the values are shared: run after run
    /// in one array.
    public struct KeyRun {
        public var queries: UnsafePointer<Float>, ldq: Int
        public var keys: UnsafePointer<Float>, ldk: Int
        public var dim: Int, count: Int
        public init(queries: UnsafePointer<Float>, ldq: Int, keys: UnsafePointer<Float>, ldk: Int, dim: Int, count: Int) {
            self.queries = queries; self.ldq = ldq; self.keys = keys; self.ldk = ldk; self.dim = dim; self.count = count
        }
    }

    /// `softmax(scale · [q₁k₁ᵀ | q₂k₂ᵀ | …]) v` over several runs of keys, one head: `v` holds
    /// the values of every run in turn (`[Σ count, dv]`, rows `ldv` apart); writes `[queries, dv]`.
    public static func scaledDotProduct(queries nq: Int, runs: [KeyRun], v: UnsafePointer<Float>, ldv: Int, valueDim dv: Int,
                                        scale: Float, out: UnsafeMutablePointer<Float>, ldo: Int) {
        precondition(runs.contains { $0.count > 0 }, "attention: no keys")
        flash(queries: nq, runs: runs.filter { $0.count > 0 }, headStride: 0, heads: 1, v: v, ldv: ldv, valueHeadDim: dv,
              out: out, ldo: ldo, scale: scale)
    }

    static func flash(q: UnsafePointer<Float>, ldq: Int, k: UnsafePointer<Float>, ldk: Int,
                      v: UnsafePointer<Float>, ldv: Int, out: UnsafeMutablePointer<Float>, ldo: Int,
                      queries nq: Int, keys nk: Int, heads: Int, headDim d: Int, valueHeadDim dv: Int, scale s: Float) {
        flash(queries: nq, runs: [KeyRun(queries: q, ldq: ldq, keys: k, ldk: ldk, dim: d, count: nk)], headStride: d,
              heads: heads, v: v, ldv: ldv, valueHeadDim: dv, out: out, ldo: ldo, scale: s)
    }

    /// Flash-style attention for long key sequences. Each (head, query block) is an independent
    /// task on one core: keys in blocks of `keyBlock` with an online softmax (running max and sum
    /// per query, output rescaled as the max grows), so scores never leave the cache. Head h's
    /// queries and keys start `h·headStride` floats on, its values and output `h·dv`.
    static func flash(queries nq: Int, runs: [KeyRun], headStride: Int, heads: Int, v: UnsafePointer<Float>, ldv: Int,
                      valueHeadDim dv: Int, out: UnsafeMutablePointer<Float>, ldo: Int, scale s: Float) {
        let kb = keyBlock, qb = queryBlock
        let queryBlocks = (nq + qb - 1) / qb
        Parallelism.independentTasks(heads * queryBlocks) { task in
            let h = task / queryBlocks, q0 = (task % queryBlocks) * qb
            let rows = min(qb, nq - q0)
            let o = out + q0 * ldo + h * dv
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: qb * kb + 2 * qb)
            defer { scratch.deallocate() }
            let sp = scratch, mp = scratch + qb * kb, lp = mp + qb
            for r in 0..<rows {
                mp[r] = -.infinity
                lp[r] = 0
            }
            var first = true, base = 0  // the first block's product initialises the output
            for run in runs {
                var k0 = 0
                while k0 < run.count {
                    let n = min(kb, run.count - k0)
                    GEMM.sgemm(transB: true, m: rows, n: n, k: run.dim, alpha: s, a: run.queries + q0 * run.ldq + h * headStride,
                               lda: run.ldq, b: run.keys + k0 * run.ldk + h * headStride, ldb: run.ldk, c: sp, ldc: kb)
                    sam2_online_softmax_block(sp, rows, n, kb, mp, lp, first ? nil : o, ldo, first ? 0 : dv)
                    GEMM.sgemm(m: rows, n: dv, k: n, a: sp, lda: kb, b: v + (base + k0) * ldv + h * dv, ldb: ldv,
                               beta: first ? 0 : 1, c: o, ldc: ldo)
                    first = false
                    k0 += n
                }
                base += run.count
            }
            for i in 0..<rows {
                let inv = 1 / lp[i]
                let row = o + i * ldo
                for j in 0..<dv { row[j] *= inv }
            }
        }
    }

    /// `softmax(q (k + kPE)ᵀ · scale) v` for a few query rows (the mask decoder's prompt tokens)
    /// against many keys (the image), split by keys ("flash decoding"): each slab of 256 keys is a
    /// task on one core that forms its keys (`k + kPE`, never the whole sum), its scores, their max
    /// and exponential sums and its share of the output, all in cache; the shares are then merged
    /// with the usual rescaling. `q` is `[rows, d]`, `k` and `kPE` `[n, d]`, `v` `[n, dv]`; writes `[rows, dv]`.
    ///
    /// With `heads` > 1, `q` holds each head's `rows` in turn and head h's keys and values are
    /// columns `h·d` and `h·dv` on of rows `ldk` and `ldv` apart (no `keyPE`); the output too holds
    /// each head's rows in turn. With `extra` (`queries` `[heads·rows, e]`, `features` `[n, e]`),
    /// the keys are `[k | features]` and the queries `[q | queries]`, and the values `[v | features]`:
    /// each output row is `dv + e` wide.
    public static func fewQueries(q: UnsafePointer<Float>, rows: Int, keys k: UnsafePointer<Float>, keyPE: UnsafePointer<Float>?,
                                  values v: UnsafePointer<Float>, count n: Int, dim d: Int, valueDim dv: Int,
                                  heads: Int = 1, ldk: Int? = nil, ldv: Int? = nil,
                                  extra: (queries: UnsafePointer<Float>, features: UnsafePointer<Float>, dim: Int)? = nil,
                                  scale: Float, into out: UnsafeMutablePointer<Float>) {
        let ldk = ldk ?? d, ldv = ldv ?? dv, e = extra?.dim ?? 0, width = dv + e, queries = heads * rows
        precondition(keyPE == nil || (ldk == d && heads == 1), "fewQueries: strided keys with a key PE")
        let slab = 256, slabs = (n + slab - 1) / slab
        // Per slab: output shares, max, sum of every head's rows.
        let shares = UnsafeMutablePointer<Float>.allocate(capacity: slabs * queries * (width + 2))
        defer { shares.deallocate() }
        let maxes = shares + slabs * queries * width, sums = maxes + slabs * queries
        Parallelism.independentTasks(slabs) { s in
            let k0 = s * slab, count = min(slab, n - k0)
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: (keyPE == nil ? 0 : count * d) + queries * count)
            defer { scratch.deallocate() }
            let scores = scratch + (keyPE == nil ? 0 : count * d), share = shares + s * queries * width
            for h in 0..<heads {
                var keys = k + k0 * ldk + h * d
                if let keyPE {
                    sam2_add(scratch, keys, keyPE + k0 * d, count * d)
                    keys = UnsafePointer(scratch)
                }
                GEMM.sgemm(transB: true, m: rows, n: count, k: d, alpha: scale, a: q + h * rows * d, lda: d, b: keys, ldb: ldk,
                           c: scores + h * rows * count, ldc: count, serial: true)
            }
            if let extra {  // the features are the same for every head: one product for all
                GEMM.sgemm(transB: true, m: queries, n: count, k: e, alpha: scale, a: extra.queries, lda: e,
                           b: extra.features + k0 * e, ldb: e, beta: 1, c: scores, ldc: count, serial: true)
            }
            let m = maxes + s * queries, l = sums + s * queries
            for r in 0..<queries { m[r] = -.infinity; l[r] = 0 }
            sam2_online_softmax_block(scores, queries, count, count, m, l, nil, 0, 0)  // exp(s - max), max, sum
            for h in 0..<heads {
                GEMM.sgemm(m: rows, n: dv, k: count, a: scores + h * rows * count, lda: count, b: v + k0 * ldv + h * dv, ldb: ldv,
                           c: share + h * rows * width, ldc: width, serial: true)
            }
            if let extra {
                GEMM.sgemm(m: queries, n: e, k: count, a: scores, lda: count, b: extra.features + k0 * e, ldb: e,
                           c: share + dv, ldc: width, serial: true)
            }
        }
        for r in 0..<queries {
            var top = -Float.infinity
            for s in 0..<slabs { top = max(top, maxes[s * queries + r]) }
            var total: Float = 0
            let o = out + r * width
            o.update(repeating: 0, count: width)
            for s in 0..<slabs {
                let w = expf(maxes[s * queries + r] - top)
                total += w * sums[s * queries + r]
                let share = shares + (s * queries + r) * width
                for j in 0..<width { o[j] += w * share[j] }
            }
            let inv = 1 / total
            for j in 0..<width { o[j] *= inv }
        }
    }
}
