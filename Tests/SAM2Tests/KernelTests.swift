import CKernels
import SAM2Checkpoint
import XCTest
@testable import SAM2
@testable import SAM2Tensor

/// The fused and split kernels against their plain definitions, on seeded random inputs.
/// (End to end they are covered by the parity fixtures; these pin each one down on its own.)
final class KernelTests: XCTestCase {
    private var state: UInt64 = 0x9E37_79B9_7F4A_7C15
    private func random(_ shape: [Int]) -> Tensor {
        let n = shape.reduce(1, *)
        return Tensor(shape: shape, data: (0..<n).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Double(state >> 40) / Double(1 << 24)) * 2 - 1
        })
    }

    private func assertClose(_ a: [Float], _ b: [Float], tolerance: Float, _ what: String) {
        XCTAssertEqual(a.count, b.count, what)
        var worst: Float = 0
        for (x, y) in zip(a, b) { worst = max(worst, abs(x - y) / max(1, abs(y))) }
        XCTAssertLessThan(worst, tolerance, what)
    }

    /// `nn.ConvTranspose2d(k=2, s=2)` straight from its definition, on `[Cin, H, W]`.
    private func naiveConvTranspose(_ x: Tensor, _ w: Tensor, _ b: Tensor) -> Tensor {
        let cin = x.shape[0], h = x.shape[1], wd = x.shape[2], cout = w.shape[1]
        var out = [Float](repeating: 0, count: cout * 4 * h * wd)
        for co in 0..<cout { for y in 0..<(2 * h) { for xx in 0..<(2 * wd) {
            var acc = Double(b.data[co])
            for ci in 0..<cin {
                acc += Double(x.data[(ci * h + y / 2) * wd + xx / 2]) * Double(w.data[((ci * cout + co) * 2 + y % 2) * 2 + xx % 2])
            }
            out[(co * 2 * h + y) * 2 * wd + xx] = Float(acc)
        } } }
        return Tensor(shape: [cout, 2 * h, 2 * wd], data: out)
    }

    /// `nn.Conv2d` straight from its definition (`groups` = 1 or = channels), on `[Cin, H, W]`.
    private func naiveConv(_ x: Tensor, _ w: Tensor, _ b: Tensor, stride: Int, padding: Int, depthwise: Bool) -> Tensor {
        let cin = x.shape[0], h = x.shape[1], wd = x.shape[2], cout = w.shape[0], k = w.shape[2]
        let ho = (h + 2 * padding - k) / stride + 1, wo = (wd + 2 * padding - k) / stride + 1
        var out = [Float](repeating: 0, count: cout * ho * wo)
        for co in 0..<cout { for oy in 0..<ho { for ox in 0..<wo {
            var acc = Double(b.data[co])
            for ci in (depthwise ? co...co : 0...(cin - 1)) { for ky in 0..<k { for kx in 0..<k {
                let iy = oy * stride - padding + ky, ix = ox * stride - padding + kx
                guard iy >= 0, iy < h, ix >= 0, ix < wd else { continue }
                acc += Double(x.data[(ci * h + iy) * wd + ix]) * Double(w.data[((co * (depthwise ? 1 : cin) + (depthwise ? 0 : ci)) * k + ky) * k + kx])
            } } }
            out[(co * ho + oy) * wo + ox] = Float(acc)
        } } }
        return Tensor(shape: [cout, ho, wo], data: out)
    }

    /// Dense convolutions in slabs of rows (im2col per slab), GELU fused, and depthwise ones row by
    /// row with their channel means, on the shapes the models use and on maps smaller than the kernel.
    func testConvolutionsMatchDefinition() {
        for (cin, cout, k, stride, padding, h, w) in [(3, 5, 3, 2, 1, 37, 41), (3, 4, 7, 4, 3, 30, 33), (6, 8, 3, 1, 1, 9, 12),
                                                      (4, 3, 2, 2, 0, 8, 6), (2, 3, 3, 2, 1, 1, 2), (5, 7, 1, 1, 0, 5, 6)] {
            let x = random([cin, h, w]), wt = random([cout, cin, k, k]), b = random([cout])
            let what = "conv \(cin)->\(cout) k\(k) s\(stride) p\(padding) on \(h)x\(w)"
            let expected = naiveConv(x, wt, b, stride: stride, padding: padding, depthwise: false)
            let out = Conv.conv2d(x, weight: wt, bias: b, stride: stride, padding: padding)
            XCTAssertEqual(out.shape, expected.shape, what)
            assertClose(out.data, expected.data, tolerance: 1e-5, what)
            let gelu = Conv.conv2d(x, weight: wt, bias: b, stride: stride, padding: padding, thenGELU: true)
            assertClose(gelu.data, expected.gelu().data, tolerance: 1e-5, what + " + GELU")
        }
        for (c, k, stride, h, w) in [(5, 3, 1, 17, 23), (4, 3, 2, 16, 19), (3, 7, 1, 12, 10), (2, 3, 1, 1, 2), (3, 7, 1, 3, 2), (2, 3, 2, 1, 1)] {
            let padding = k / 2
            let x = random([c, h, w]), wt = random([c, 1, k, k]), b = random([c])
            let what = "depthwise \(c) k\(k) s\(stride) on \(h)x\(w)"
            let expected = naiveConv(x, wt, b, stride: stride, padding: padding, depthwise: true)
            let (out, means) = Conv.depthwiseConv2dAndMeans(x, weight: wt, bias: b, stride: stride, padding: padding)
            XCTAssertEqual(out.shape, expected.shape, what)
            assertClose(out.data, expected.data, tolerance: 1e-5, what)
            let plane = out.shape[1] * out.shape[2]
            let expectedMeans = (0..<c).map { ch in Float(expected.data[(ch * plane)..<((ch + 1) * plane)].reduce(0.0) { $0 + Double($1) } / Double(plane)) }
            assertClose(means, expectedMeans, tolerance: 1e-5, what + " means")
        }
    }

    /// The fused channel MLP (RepViT's channel mixer with its squeeze-excite gate; ConvNeXt's
    /// block with its LayerNorm2d on a separate input) against the plain composition.
    func testChannelMLPMatchesComposition() {
        let (c, hidden, h, w) = (6, 20, 23, 50)  // 1,150 pixels: three slabs, the last one short
        let x = random([c, h, w]), u = random([c, h, w]), w1 = random([hidden, c]), b1 = random([hidden])
        let w2 = random([c, hidden]), b2 = random([c]), nw = random([c]), nb = random([c])
        let gate = random([c]).data
        /// `residual + W2·gelu(W1·v + b1) + b2` per pixel.
        func mlp(_ v: Tensor, residual: Tensor) -> [Float] {
            let y = GEMM.linear(GEMM.linear(v.chwToTokens(), weight: w1, bias: b1).gelu(), weight: w2, bias: b2)
            return zip(residual.data, y.tokensToCHW(height: h, width: w).data).map { $0 + $1 }
        }
        var fused = x
        FeedForward.channelsResidual(&fused, input: u, norm: .init(weight: nw, bias: nb, eps: 1e-6), w1: w1, b1: b1, w2: w2, b2: b2)
        assertClose(fused.data, mlp(u.layerNorm2d(weight: nw, bias: nb, eps: 1e-6), residual: x), tolerance: 1e-5, "normalised input")
        var gated = x
        FeedForward.channelsResidual(&gated, scale: gate, w1: w1, b1: b1, w2: w2, b2: b2)
        var scaled = x
        for ch in 0..<c { for i in 0..<(h * w) { scaled.data[ch * h * w + i] *= gate[ch] } }
        assertClose(gated.data, mlp(scaled, residual: scaled), tolerance: 1e-5, "gated input")  // the residual is the gated map
    }

    func testConvTransposeMatchesDefinition() {
        let x = random([24, 9, 7]), w = random([24, 5, 2, 2]), b = random([5])
        let conv = ConvTranspose2x2(weight: w, bias: b)
        assertClose(conv(x).data, naiveConvTranspose(x, w, b).data, tolerance: 1e-5, "channel-major input")
        XCTAssertEqual(conv(x).shape, [5, 18, 14])

        // Token rows in, one slab of rows, with a skip added.
        let skip = random([5, 18, 14])
        var out = [Float](repeating: 0, count: 5 * 4 * 14)
        let tokens = x.chwToTokens()
        tokens.data.withUnsafeBufferPointer { t in
            skip.data.withUnsafeBufferPointer { s in
                out.withUnsafeMutableBufferPointer { o in
                    conv.apply(t.baseAddress! + 3 * 7 * 24, tokens: true, rows: 2, width: 7, skip: s.baseAddress! + 6 * 14,
                               skipStride: 18 * 14, into: o.baseAddress!, outStride: 4 * 14)
                }
            }
        }
        let full = naiveConvTranspose(x, w, b)
        var expected = [Float]()
        for co in 0..<5 { for i in (6 * 14)..<(10 * 14) { expected.append(full.data[co * 18 * 14 + i] + skip.data[co * 18 * 14 + i]) } }
        assertClose(out, expected, tolerance: 1e-5, "token rows with skip")
    }

    func testFewQueriesSplitByKeysMatchesAttention() {
        let rows = 11, n = 1000, d = 32, dv = 24   // 1000 keys: three full slabs and a short one
        let q = random([rows, d]), k = random([n, d]), pe = random([n, d]), v = random([n, dv])
        var out = [Float](repeating: 0, count: rows * dv)
        Tensor.withPointers([q, k, pe, v]) { p in
            out.withUnsafeMutableBufferPointer { o in
                Attention.fewQueries(q: p[0], rows: rows, keys: p[1], keyPE: p[2], values: p[3], count: n, dim: d, valueDim: dv,
                                     scale: 0.7, into: o.baseAddress!)
            }
        }
        let reference = Attention.scaledDotProduct(q: q, k: k + pe, v: v, heads: 1, scale: 0.7)
        assertClose(out, reference.data, tolerance: 1e-5, "split-by-keys attention")
    }

    /// Runs of keys with their own queries (the memory's rotated keys, then the plain ones against
    /// folded queries) against the definition: one softmax over every run's scores.
    func testAttentionOverKeyRunsMatchesDefinition() {
        let nq = 600, n1 = 300, n2 = 70, d1 = 32, d2 = 9, dv = 16, scale: Float = 0.3  // two query blocks; partial key blocks
        let q1 = random([nq, d1]), k1 = random([n1, d1]), q2 = random([nq, d2]), k2 = random([n2, d2]), v = random([n1 + n2, dv])
        var out = [Float](repeating: 0, count: nq * dv)
        Tensor.withPointers([q1, k1, q2, k2, v]) { p in
            out.withUnsafeMutableBufferPointer { o in
                Attention.scaledDotProduct(queries: nq, runs: [Attention.KeyRun(queries: p[0], ldq: d1, keys: p[1], ldk: d1, dim: d1, count: n1),
                                                               Attention.KeyRun(queries: p[2], ldq: d2, keys: p[3], ldk: d2, dim: d2, count: n2)],
                                           v: p[4], ldv: dv, valueDim: dv, scale: scale, out: o.baseAddress!, ldo: dv)
            }
        }
        var reference = [Float]()
        for i in 0..<nq {
            var scores = [Double]()
            for j in 0..<n1 { scores.append((0..<d1).reduce(0.0) { $0 + Double(q1.data[i * d1 + $1]) * Double(k1.data[j * d1 + $1]) }) }
            for j in 0..<n2 { scores.append((0..<d2).reduce(0.0) { $0 + Double(q2.data[i * d2 + $1]) * Double(k2.data[j * d2 + $1]) }) }
            let top = scores.max()!, e = scores.map { exp(Double(scale) * ($0 - top)) }, total = e.reduce(0, +)
            for c in 0..<dv { reference.append(Float((0..<(n1 + n2)).reduce(0.0) { $0 + e[$1] * Double(v.data[$1 * dv + c]) } / total)) }
        }
        assertClose(out, reference, tolerance: 1e-5, "attention over key runs")
    }

    private func sideBySide(_ a: Tensor, _ b: Tensor) -> Tensor {
        let (wa, wb) = (a.shape[1], b.shape[1])
        var data = [Float]()
        for i in 0..<a.shape[0] {
            data += a.data[(i * wa)..<((i + 1) * wa)]
            data += b.data[(i * wb)..<((i + 1) * wb)]
        }
        return Tensor(shape: [a.shape[0], wa + wb], data: data)
    }

    func testFewQueriesByHeadsWithExtraFeaturesMatchesAttention() {
        // Heads as column slices of wider key and value rows, plus features shared by every head
        // appended to keys and values: each head is attention over [k_h | f] with values [v_h | f].
        let heads = 3, rows = 5, n = 700, d = 8, dv = 6, e = 4, ld = 45
        let q = random([heads * rows, d]), qe = random([heads * rows, e]), kv = random([n, ld]), f = random([n, e])
        var out = [Float](repeating: 0, count: heads * rows * (dv + e))
        Tensor.withPointers([q, qe, kv, f]) { p in
            Attention.fewQueries(q: p[0], rows: rows, keys: p[2], keyPE: nil, values: p[2] + heads * d, count: n, dim: d, valueDim: dv,
                                 heads: heads, ldk: ld, ldv: ld, extra: (p[1], p[3], e), scale: 0.6, into: &out)
        }
        for h in 0..<heads {
            let keys = sideBySide(kv.columns((h * d)..<((h + 1) * d)), f)
            let values = sideBySide(kv.columns((heads * d + h * dv)..<(heads * d + (h + 1) * dv)), f)
            let queries = sideBySide(q.rows((h * rows)..<((h + 1) * rows)), qe.rows((h * rows)..<((h + 1) * rows)))
            let reference = Attention.scaledDotProduct(q: queries, k: keys, v: values, heads: 1, scale: 0.6)
            assertClose(Array(out[(h * rows * (dv + e))..<((h + 1) * rows * (dv + e))]), reference.data, tolerance: 1e-5, "head \(h)")
        }
    }

    func testInterleavedSoftmaxMatchesRowSoftmax() {
        // Group g of a row is every `groups`-th value from g. Eight groups run as vector lanes and
        // must give each group the bits the row softmax gives it as a contiguous row.
        for (groups, count) in [(8, 9), (8, 5), (8, 12), (3, 9)] {
            let rows = 50, x = random([rows, groups * count])
            var interleaved = x.data
            interleaved.withUnsafeMutableBufferPointer { sam2_softmax_interleaved($0.baseAddress!, rows, groups, count) }
            var contiguous = [Float]()  // [rows·groups, count]
            for r in 0..<rows { for g in 0..<groups { for j in 0..<count { contiguous.append(x.data[r * groups * count + j * groups + g]) } } }
            contiguous.withUnsafeMutableBufferPointer { softmaxRows($0.baseAddress!, rows * groups, count) }
            var expected = [Float](repeating: 0, count: x.count)
            for r in 0..<rows { for g in 0..<groups { for j in 0..<count {
                expected[r * groups * count + j * groups + g] = contiguous[(r * groups + g) * count + j]
            } } }
            if groups == 8 {
                XCTAssertEqual(interleaved, expected, "\(groups) groups of \(count)")
            } else {
                assertClose(interleaved, expected, tolerance: 1e-6, "\(groups) groups of \(count)")
            }
        }
    }

    func testPostNormSoftmaxResidualMatchesComposition() {
        let rows = 1200, dim = 64, groups = 8, group = 7   // enough work to split: four full 256-row slabs and a short one
        let x = random([rows, dim]), pe = random([rows, dim])
        let w1 = random([groups * group, dim]), b1 = random([groups * group]), w2 = random([dim, groups * group]), b2 = random([dim])
        let nw = random([dim]), nb = random([dim])
        let (fused, fusedPlusPE) = FeedForward.postNormSoftmaxResidual(x, xPlusPE: x + pe, pe: pe, w1: w1, b1: b1, softmaxGroups: groups,
                                                                       w2: w2, b2: b2, normWeight: nw, normBias: nb, eps: 1e-5)
        var hidden = GEMM.linear(x + pe, weight: w1, bias: b1)
        for r in 0..<rows {  // softmax within each interleaved group (value j of group g at column j·groups + g)
            for g in 0..<groups {
                let idx = (0..<group).map { r * groups * group + $0 * groups + g }
                let m = idx.map { Double(hidden.data[$0]) }.max()!, e = idx.map { Foundation.exp(Double(hidden.data[$0]) - m) }
                let s = e.reduce(0, +)
                for (i, at) in idx.enumerated() { hidden.data[at] = Float(e[i] / s) }
            }
        }
        let reference = (x + GEMM.linear(hidden, weight: w2, bias: b2)).layerNorm(weight: nw, bias: nb, eps: 1e-5)
        assertClose(fused.data, reference.data, tolerance: 1e-5, "fused image-to-token residual")
        XCTAssertEqual(fusedPlusPE.data, (fused + pe).data, "the next attention's keys")
    }

    /// The mask decoder's first block from the frame's cached projections plus a click's dense part
    /// (what clicks on an initial conditioning frame use) against the plain path, with and without
    /// a mask prompt, on the committed fixture's weights.
    func testDecoderFromCachedFrameProjectionsMatchesPlainPath() throws {
        let dir = TestPaths.committedFixture
        let model = try SAM2Model(config: try SAM2Config.load(path: "\(dir)/config.yaml"), checkpointPath: "\(dir)/checkpoint.pt")
        let size = model.imageSize, side = model.promptEncoder.maskInputSize
        let features = FrameFeatures(model.encodeImage(random([3, size, size])))
        let pixels = features.visionTokens.addingRow(model.noMemEmbed.data)
        let frame = model.maskDecoder.transformer.firstBlockProjections(image: pixels, imagePE: model.promptEncoder.densePETokens)
        let points = PointPrompt(coords: [(x: 40, y: 70), (x: 150, y: 90)], labels: [1, 0])
        var plainMasks = [[Float]]()
        for mask in [nil, random([1, side, side]).map { 8 * $0 }] {
            let plain = model.forwardSAMHeads(pixels, points: points, maskInputs: mask, highRes: features.highRes, multimask: false)
            let cached = model.forwardSAMHeads(pixels, points: points, maskInputs: mask, highRes: features.highRes, multimask: false,
                                               frameProjections: frame)
            let what = mask == nil ? "no mask prompt" : "mask prompt"
            assertClose(cached.lowResMasks.data, plain.lowResMasks.data, tolerance: 1e-4, "masks, \(what)")
            assertClose(cached.objPtr.data, plain.objPtr.data, tolerance: 1e-4, "object pointer, \(what)")
            assertClose(cached.ious, plain.ious, tolerance: 1e-4, "IoU, \(what)")
            plainMasks.append(plain.lowResMasks.data)
        }
        // The mask prompt's own term is exercised: it changes the masks.
        XCTAssertGreaterThan(maxDiff(plainMasks[0], plainMasks[1]), 1e-2)
    }

    /// The high-resolution FPN levels through the lateral convs composed with conv_s0 / conv_s1
    /// (the untraced path) against lateral conv, then projection (the traced path).
    func testComposedHighResLateralsMatchTwoConvs() throws {
        for dir in [TestPaths.committedFixture, TestPaths.committedFixtureNamed("edgetam_synth")] {
            let model = try SAM2Model(config: try SAM2Config.load(path: "\(dir)/config.yaml"), checkpointPath: "\(dir)/checkpoint.pt")
            XCTAssertNotNil(model.highResLaterals, dir)
            let image = random([3, model.imageSize, model.imageSize])
            let composed = model.encodeImage(image)
            model.trace = { _, _ in }
            let twoConvs = model.encodeImage(image)
            XCTAssertEqual(composed.levels.map(\.shape), twoConvs.levels.map(\.shape), dir)
            for (a, b) in zip(composed.levels, twoConvs.levels) { assertClose(a.data, b.data, tolerance: 1e-5, "\(dir) level \(a.shape)") }
        }
    }

    func testBilinearMaskIsThresholdedBilinear() {
        let x = random([1, 37, 29])
        let mask = Interpolate.bilinearMask(x, height: 101, width: 83)
        let logits = Interpolate.bilinear(x, height: 101, width: 83)
        XCTAssertEqual(mask, logits.data.map { $0 > 0 ? 1 : 0 })
        XCTAssertTrue(mask.contains(0) && mask.contains(1))
    }

    func testShortRowSoftmaxMatchesLongForm() {
        // Rows shorter than 16 (a head's scores over the mask decoder's 7-15 prompt tokens) take
        // their own path, with a vector's worth or less and with a vector plus a tail.
        for n in [7, 9, 15] {
            let x = random([300, n])
            var fast = x.data
            fast.withUnsafeMutableBufferPointer { softmaxRows($0.baseAddress!, 300, n) }
            var expected = [Float]()
            for r in 0..<300 {
                let row = Array(x.data[(r * n)..<(r * n + n)]).map(Double.init)
                let m = row.max()!, e = row.map { Foundation.exp($0 - m) }, s = e.reduce(0, +)
                expected += e.map { Float($0 / s) }
            }
            assertClose(fast, expected, tolerance: 1e-6, "softmax of \(n)-wide rows")
        }
    }

    /// Layer norm over rows (vectorised, statistics in double) and over the channels of a
    /// `[C, H, W]` map, against the definition, with row and pixel counts that leave tails.
    func testLayerNormsMatchDefinition() {
        for n in [256, 37] {
            let x = random([5, n]), w = random([n]), b = random([n])
            var expected = [Float]()
            for r in 0..<5 {
                let row = x.data[(r * n)..<((r + 1) * n)].map(Double.init)
                let mean = row.reduce(0, +) / Double(n)
                let rstd = 1 / (row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(n) + 1e-6).squareRoot()
                expected += (0..<n).map { Float((row[$0] - mean) * rstd * Double(w.data[$0]) + Double(b.data[$0])) }
            }
            assertClose(x.layerNorm(weight: w, bias: b, eps: 1e-6).data, expected, tolerance: 2e-6, "rows of \(n)")
            // The same numbers laid out channel-major: LayerNorm2d over a [n, 5, 1] map.
            let chw = x.transposed().reshaped([n, 5, 1])
            let byChannels = chw.layerNorm2d(weight: w, bias: b, eps: 1e-6).reshaped([n, 5]).transposed()
            assertClose(byChannels.data, expected, tolerance: 2e-6, "channels, \(n)")
        }
    }

    /// A Hiera block run group of windows by group (first stages at 1024) against the same block
    /// op by op over the whole map: with q pooling, a shortcut projection and zero padding on
    /// a map the windows do not divide, and without.
    func testHieraWindowGroupsMatchWholeMap() throws {
        for (dim, dimOut, heads, window, pools, h, w) in [(16, 32, 2, 6, true, 14, 10), (16, 16, 2, 4, false, 10, 13)] {
            var tensors = [String: Tensor]()
            let prefix = "b"
            for (name, shape) in [("norm1", [dim]), ("norm2", [dimOut])] {
                tensors["\(prefix).\(name).weight"] = random(shape)
                tensors["\(prefix).\(name).bias"] = random(shape)
            }
            var linears = [("attn.qkv", dim, 3 * dimOut), ("attn.proj", dimOut, dimOut),
                           ("mlp.layers.0", dimOut, 4 * dimOut), ("mlp.layers.1", 4 * dimOut, dimOut)]
            if dim != dimOut { linears.append(("proj", dim, dimOut)) }
            for (name, inDim, outDim) in linears {
                tensors["\(prefix).\(name).weight"] = random([outDim, inDim])
                tensors["\(prefix).\(name).bias"] = random([outDim])
            }
            let block = try HieraBlock(WeightStore(tensors), prefix, dim: dim, dimOut: dimOut, heads: heads,
                                       windowSize: window, poolsQueries: pools)
            let x = random([h, w, dim])
            let grouped = block.windowed(x), whole = block.wholeMap(x)
            XCTAssertEqual(grouped.shape, whole.shape)
            assertClose(grouped.data, whole.data, tolerance: 1e-5, "window \(window), pooled \(pools), \(h)x\(w)")
        }
    }

    func testMaskPromptBandsMatchWholeMap() throws {
        // The prompt encoder embeds a mask prompt in bands of rows on all cores; the whole-map
        // composition (convolutions, LayerNorm2d, GELU, 1x1 projection) is the definition.
        for side in [64, 16] {   // 1024 (bands of 4 rows) and 256 (one band)
            let dim = 256, p = "pe"
            var t = [String: Tensor]()
            t["\(p).pe_layer.positional_encoding_gaussian_matrix"] = random([2, dim / 2])
            for i in 0..<4 { t["\(p).point_embeddings.\(i).weight"] = random([1, dim]) }
            t["\(p).not_a_point_embed.weight"] = random([1, dim])
            t["\(p).no_mask_embed.weight"] = random([1, dim])
            for (name, shape) in [("0.weight", [4, 1, 2, 2]), ("0.bias", [4]), ("1.weight", [4]), ("1.bias", [4]),
                                  ("3.weight", [16, 4, 2, 2]), ("3.bias", [16]), ("4.weight", [16]), ("4.bias", [16]),
                                  ("6.weight", [dim, 16, 1, 1]), ("6.bias", [dim])] {
                t["\(p).mask_downscaling.\(name)"] = random(shape)
            }
            let mask = random([1, 4 * side, 4 * side])
            let l = { (name: String) in t["\(p).mask_downscaling.\(name)"]! }
            var x = Conv.conv2d(mask, weight: l("0.weight"), bias: l("0.bias"), stride: 2).layerNorm2d(weight: l("1.weight"), bias: l("1.bias")).gelu()
            x = Conv.conv2d(x, weight: l("3.weight"), bias: l("3.bias"), stride: 2).layerNorm2d(weight: l("4.weight"), bias: l("4.bias")).gelu()
            let expected = Conv.pointwiseToTokens(x, weight: l("6.weight"), bias: l("6.bias"))
            let encoder = try PromptEncoder(WeightStore(t), p, embedDim: dim, embeddingSize: side, inputImageSize: 16 * side)
            let dense = encoder(points: PointPrompt(coords: [(3, 4)], labels: [1]), mask: mask).dense
            XCTAssertEqual(dense.shape, expected.shape)
            assertClose(dense.data, expected.data, tolerance: 1e-5, "mask prompt embedding at \(side)x\(side)")
            // What the mask decoder takes: the embedding added to the image's, band by band.
            let image = random([side * side, dim])
            let (src, srcPlusPE) = encoder.denseAdded(to: image, mask: mask)
            XCTAssertEqual(src.data, (image + dense).data, "image + dense at \(side)x\(side)")
            XCTAssertEqual(srcPlusPE.data, (image + dense + encoder.densePETokens).data, "image + dense + PE at \(side)x\(side)")
        }
    }

    /// The worker pool runs every index exactly once, over many back-to-back loops (workers
    /// spinning between them) and after a pause long enough for them to sleep; a loop started
    /// inside a task, or from another thread while one runs, runs inline.
    func testWorkerPoolRunsEveryIndexOnce() {
        func check(_ count: Int, _ what: String) {
            var hits = [Int](repeating: 0, count: count)
            hits.withUnsafeMutableBufferPointer { h in
                Parallelism.share(count, threads: 2) { i in h[i] += 1 }
            }
            XCTAssertEqual(hits, [Int](repeating: 1, count: count), what)
        }
        for round in 0..<2000 { check(1 + round % 37, "loop \(round)") }
        usleep(20_000)  // past the workers' spin: they sleep and must be woken
        check(1000, "after sleeping")

        var outer = [Int](repeating: 0, count: 8 * 50)
        outer.withUnsafeMutableBufferPointer { o in
            Parallelism.share(8, threads: 2) { i in
                Parallelism.share(50, threads: 2) { j in o[i * 50 + j] += 1 }
            }
        }
        XCTAssertEqual(outer, [Int](repeating: 1, count: 8 * 50), "nested")

        var sums = [0, 0]
        sums.withUnsafeMutableBufferPointer { s in
            DispatchQueue.concurrentPerform(iterations: 2) { t in  // two callers at once
                for _ in 0..<200 {
                    var parts = [Int](repeating: 0, count: 64)
                    parts.withUnsafeMutableBufferPointer { p in Parallelism.share(64, threads: 2) { p[$0] = $0 } }
                    s[t] += parts.reduce(0, +)
                }
            }
        }
        XCTAssertEqual(sums, [200 * 2016, 200 * 2016], "concurrent callers")
    }

    func testCountAboveMatchesFilter() {
        // The stability score's mask areas: vector body and scalar tail, ties not counted.
        let x = random([1003]).data + [0.25, 0.25]
        for t: Float in [0, 0.25, -0.25, 2] {
            let counted = x.withUnsafeBufferPointer { sam2_count_above($0.baseAddress!, $0.count, t) }
            XCTAssertEqual(counted, x.filter { $0 > t }.count, "threshold \(t)")
        }
    }

    func testGELUMatchesDefinition() {
        // nn.GELU(): x/2 · (1 + erf(x/√2)), here with erf as a rational approximation (3.5e-7
        // absolute error in float), so |error| ≤ 3.5e-7·|x|/2 + an ulp of the result; vectors of 8
        // and the scalar tail, out to where erf saturates and beyond.
        let x = Tensor(shape: [4003], data: (0..<4003).map { Float($0 - 2001) * 0.005 })
        let y = x.gelu()
        var worst: Double = 0
        for (v, g) in zip(x.data, y.data) {
            let exact = 0.5 * Double(v) * (1 + Foundation.erf(Double(v) / 2.0.squareRoot()))
            let bound = 1.75e-7 * abs(Double(v)) + 1.2e-7 * max(1, abs(exact))
            worst = max(worst, abs(Double(g) - exact) / bound)
        }
        XCTAssertLessThan(worst, 1, "GELU vs its definition, in units of its error bound")
    }

    func testFewRowLinearMatchesDefinition() {
        // Prompt tokens through a linear layer take a dot-product kernel (pairs of rows, four
        // outputs at a time, a scalar tail); the definition in double.
        for (rows, inDim, outDim) in [(1, 256, 256), (9, 256, 2048), (7, 40, 30), (16, 2048, 256), (3, 12, 5)] {
            let x = random([rows, inDim]), w = random([outDim, inDim]), b = random([outDim])
            let y = GEMM.linear(x, weight: w, bias: b)
            var expected = [Float]()
            for r in 0..<rows {
                for o in 0..<outDim {
                    var acc = Double(b.data[o])
                    for k in 0..<inDim { acc += Double(x.data[r * inDim + k]) * Double(w.data[o * inDim + k]) }
                    expected.append(Float(acc))
                }
            }
            XCTAssertEqual(y.shape, [rows, outDim])
            assertClose(y.data, expected, tolerance: 1e-5 * Float(inDim).squareRoot(), "linear \(rows)x\(inDim) -> \(outDim)")
        }
    }
}
