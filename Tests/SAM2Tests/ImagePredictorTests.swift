import Foundation
import XCTest
@testable import SAM2
import SAM2Checkpoint
import SAM2Tensor
import SAM2Video

/// The metrics and limits of `shared/reference/compare_image.py` (its default rule).
struct ImageParityReport {
    var cases = 0, ious = 0.0, lowresMax = 0.0, lowresMean = 0.0, maskIoUMin = 1.0, sampleMax = 0.0
    var amgRuns = 0, amgUnmatched = 0, amgFlips = 0, amgScoreDiff = 0.0, amgCountDiff = 0
    var problems: [String] = []

    var pass: Bool {
        problems.isEmpty && ious <= 1e-2 && lowresMax <= 1e-2 && lowresMean <= 1e-3 && maskIoUMin >= 0.99
            && sampleMax <= 2e-2 && amgScoreDiff <= 1e-2
    }
    var summary: String {
        String(format: "cases=%d ious=%.2e lowres_max=%.2e lowres_mean=%.2e mask_iou_min=%.4f sample_max=%.2e amg_runs=%d unmatched=%d flips=%d score_diff=%.2e problems=%@",
               cases, ious, lowresMax, lowresMean, maskIoUMin, sampleMax, amgRuns, amgUnmatched, amgFlips, amgScoreDiff, problems.description)
    }

    static func compare(fixture: String, candidate: String) throws -> ImageParityReport {
        let session = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(fixture)/session.json"))) as! [String: Any]
        let index = session["index"] as! [String: Any]
        var r = ImageParityReport()
        let cases = index["cases"] as? [[String: Any]] ?? []
        if !cases.isEmpty {
            let ref = try Safetensors.read(path: "\(fixture)/outputs.safetensors")
            let cand = try Safetensors.read(path: "\(candidate)/outputs.safetensors")
            for e in cases {
                let k = e["key"] as! String
                guard let ci = cand["\(k).ious"], let cl = cand["\(k).lowres_logits"], let cb = cand["\(k).mask_bits"],
                      let cs = cand["\(k).logits_sample"] else { r.problems.append("\(k) missing"); continue }
                guard ci.shape == ref["\(k).ious"]!.shape, cl.shape == ref["\(k).lowres_logits"]!.shape else {
                    r.problems.append("\(k) shape \(cl.shape) != \(ref["\(k).lowres_logits"]!.shape)"); continue
                }
                r.ious = max(r.ious, maxDiff(try ref["\(k).ious"]!.floats(), try ci.floats()))
                let x = try ref["\(k).lowres_logits"]!.floats(), y = try cl.floats()
                let d = zip(x, y).map { abs(Double($0) - Double($1)) }
                r.lowresMax = max(r.lowresMax, d.max() ?? 0)
                r.lowresMean = max(r.lowresMean, d.reduce(0, +) / Double(d.count))
                r.sampleMax = max(r.sampleMax, maxDiff(try ref["\(k).logits_sample"]!.floats(), try cs.floats()))
                let shape = e["mask_shape"] as! [Int]
                let plane = shape[shape.count - 1] * shape[shape.count - 2], n = shape.reduce(1, *) / plane
                let a = unpack(ref["\(k).mask_bits"]!.bytes, n * plane), b = unpack(cb.bytes, n * plane)
                for m in 0..<n {
                    var inter = 0, union = 0
                    for i in (m * plane)..<((m + 1) * plane) { inter += Int(a[i] & b[i]); union += Int(a[i] | b[i]) }
                    r.maskIoUMin = min(r.maskIoUMin, union > 0 ? Double(inter) / Double(union) : 1)
                }
                r.cases += 1
            }
        }
        for e in index["amg"] as? [[String: Any]] ?? [] {
            let name = e["file"] as! String
            let ref = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(fixture)/\(name)"))) as! [[String: Any]]
            let cand = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(candidate)/\(name)"))) as! [[String: Any]]
            // Greedy matching by mask IoU >= 0.95, as compare_image.py; the same masks decode alike.
            let rm = try ref.map(decode), cm = try cand.map(decode)
            var used = Set<Int>(), matched = 0
            for (i, m) in rm.enumerated() {
                let best = cm.indices.filter { !used.contains($0) }.max { iou(m, cm[$0]) < iou(m, cm[$1]) }
                guard let j = best, iou(m, cm[j]) >= 0.95 else { continue }
                used.insert(j)
                matched += 1
                for key in ["predicted_iou", "stability_score"] {
                    r.amgScoreDiff = max(r.amgScoreDiff, abs((ref[i][key] as! Double) - (cand[j][key] as! Double)))
                }
            }
            r.amgUnmatched += rm.count - matched
            r.amgCountDiff = max(r.amgCountDiff, abs(rm.count - cm.count))
            let allowed = max(1, Int(0.02 * Double(rm.count)))
            let plain = abs(rm.count - cm.count) <= allowed && Double(matched) >= 0.98 * Double(rm.count)
            // compare_image.py --amg-robust: every unmatched mask on either side must be a flip that a
            // threshold or the other side's NMS evidence explains, and there may be only a few.
            let params = (e["params"] as? [String: Any]) ?? [:]
            let unmatchedRef = rm.indices.filter { i in !cm.indices.contains { used.contains($0) && iou(rm[i], cm[$0]) >= 0.95 } }
            let unmatchedCand = cm.indices.filter { !used.contains($0) }
            let unexplained = unmatchedRef.filter { !explained(ref[$0], other: cand, params: params) }.count
                + unmatchedCand.filter { !explained(cand[$0], other: ref, params: params) }.count
            let flips = unmatchedRef.count + unmatchedCand.count
            r.amgFlips += flips
            if !plain && (unexplained > 0 || flips > max(2, Int(0.1 * Double(rm.count)))) {
                r.problems.append("\(name): \(matched) of \(rm.count) reference masks matched, \(cm.count) candidates, \(unexplained) unexplained")
            }
            r.amgRuns += 1
        }
        return r
    }

    /// A flip that a threshold explains (predicted IoU within 1e-3 of pred_iou_thresh, stability within
    /// 2% of its threshold), or NMS: a box on the other side overlapping this one's above the lowest
    /// NMS threshold minus 0.005 (the mask that would suppress it there).
    static func explained(_ r: [String: Any], other: [[String: Any]], params: [String: Any]) -> Bool {
        let iouThresh = params["pred_iou_thresh"] as? Double ?? 0.8, stabThresh = params["stability_score_thresh"] as? Double ?? 0.95
        if (iouThresh > 0 && abs((r["predicted_iou"] as! Double) - iouThresh) <= 1e-3)
            || (stabThresh > 0 && abs((r["stability_score"] as! Double) - stabThresh) <= 0.02 * stabThresh) { return true }
        var nms = [params["box_nms_thresh"] as? Double ?? 0.7]
        if (params["crop_n_layers"] as? Int ?? 0) > 0 { nms.append(params["crop_nms_thresh"] as? Double ?? 0.7) }
        func xyxy(_ r: [String: Any]) -> [Double] { let b = r["bbox"] as! [Double]; return [b[0], b[1], b[0] + b[2], b[1] + b[3]] }
        let a = xyxy(r)
        return other.contains { o in
            let b = xyxy(o)
            let w = max(0, min(a[2], b[2]) - max(a[0], b[0])), h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
            let inter = w * h, union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
            return union > 0 && inter / union > nms.min()! - 0.005
        }
    }

    static func unpack(_ bytes: [UInt8], _ n: Int) -> [UInt8] {
        (0..<n).map { (bytes[$0 >> 3] >> (7 - UInt8($0 & 7))) & 1 }
    }

    static func decode(_ record: [String: Any]) throws -> [UInt8] {
        let seg = record["segmentation"] as! [String: Any]
        let size = seg["size"] as! [Int]
        return try BinaryMask.fromRLE(counts: seg["counts"] as! [Int], height: size[0], width: size[1]).bits
    }

    static func iou(_ a: [UInt8], _ b: [UInt8]) -> Double {
        var inter = 0, union = 0
        for i in a.indices { inter += Int(a[i] & b[i]); union += Int(a[i] | b[i]) }
        return union > 0 ? Double(inter) / Double(union) : 1
    }
}

final class ImagePredictorTests: XCTestCase {
    static let fixture = TestPaths.committedFixtureNamed("image_synth20")

    func replay(_ fixture: String) throws -> String {
        let out = TestPaths.tempFile("image-replay")
        let s = try ImageConformance.replay(fixture: fixture, outputDir: out) { path in
            let img = try ImageIO.readImage(path: path)
            return RGBImage(width: img.width, height: img.height, pixels: img.rgb)
        }
        XCTAssertGreaterThan(s.cases + s.amgRuns, 0)
        return out
    }

    /// The committed image fixture (SAM 2.0 architecture, seed 7, an odd 317x203 image, a mask
    /// threshold of 0.25, batched boxes with per-box clicks, mask inputs, unnormalised coordinates;
    /// a mask-generator run with a crop layer, m2m and its own thresholds), made by the official
    /// code: the replay meets compare_image.py's limits, and every generator mask is found.
    func testCommittedImageFixtureParity() throws {
        let out = try replay(Self.fixture)
        defer { try? FileManager.default.removeItem(atPath: out) }
        let r = try ImageParityReport.compare(fixture: Self.fixture, candidate: out)
        print("image_synth20: \(r.summary)")
        XCTAssertEqual(r.cases, 7)
        XCTAssertEqual(r.amgRuns, 1)
        // One mask of this run hangs on a single pixel whose official logit is 0.2000016 at the
        // 0.2 mask threshold (float32 noise flips it and moves the mask's box into NMS range of
        // another): at most that flip, explained, as compare_image.py --amg-robust allows.
        XCTAssertLessThanOrEqual(r.amgFlips, 2)
        XCTAssertTrue(r.pass, r.summary)
    }

    /// The shared image fixtures, when `../shared` is present.
    func testSharedImageFixtures() throws {
        for name in ["image_cups", "image_dog_small"] {
            let fixture = try TestPaths.sharedFixture(name)
            let out = try replay(fixture)
            defer { try? FileManager.default.removeItem(atPath: out) }
            let r = try ImageParityReport.compare(fixture: fixture, candidate: out)
            print("\(name): \(r.summary)")
            XCTAssertTrue(r.pass, "\(name): \(r.summary)")
        }
    }

    /// Preprocessing (ToTensor, antialiased bilinear stretch to 1024, mean/std) and the embedding
    /// `set_image` keeps, against the official tensors of the shared fixture.
    func testPreprocessingAndEmbeddingMatchOfficial() throws {
        let fixture = try TestPaths.sharedFixture("image_cups")
        let official = try Safetensors.read(path: "\(fixture)/input.safetensors")
        let img = try ImageIO.readImage(path: "\(fixture)/image.png")
        let input = RGBImage(width: img.width, height: img.height, pixels: img.rgb).modelInput(size: 1024)
        let d = maxDiff(input.data, try official["input"]!.floats())
        XCTAssertLessThan(d, 1e-5, "model input differs by \(d)")
    }

    // MARK: hole and sprinkle filling

    /// An independent reference: union-find over 8-neighbours, then `<=` area tests.
    static func referenceFill(_ x: [Float], h: Int, w: Int, threshold: Float, maxHole: Int, maxSprinkle: Int) -> [Float] {
        func components(_ member: (Int) -> Bool) -> [Int?] {
            var parent = Array(0..<(h * w))
            func find(_ a: Int) -> Int { var a = a; while parent[a] != a { parent[a] = parent[parent[a]]; a = parent[a] }; return a }
            for y in 0..<h {
                for x in 0..<w where member(y * w + x) {
                    for (dy, dx) in [(0, 1), (1, -1), (1, 0), (1, 1)] {
                        let ny = y + dy, nx = x + dx
                        if ny < h && nx >= 0 && nx < w && member(ny * w + nx) { parent[find(y * w + x)] = find(ny * w + nx) }
                    }
                }
            }
            var size = [Int: Int]()
            for p in 0..<(h * w) where member(p) { size[find(p), default: 0] += 1 }
            return (0..<(h * w)).map { member($0) ? size[find($0)] : nil }
        }
        let holes = components { x[$0] <= threshold }, sprinkles = components { x[$0] > threshold }
        var out = x
        for p in 0..<(h * w) {
            if maxHole > 0, let a = holes[p], a <= maxHole { out[p] = threshold + 10 }
            if maxSprinkle > 0, let a = sprinkles[p], a <= maxSprinkle { out[p] = threshold - 10 }
        }
        return out
    }

    func testHoleAndSprinkleFillingMatchesReference() {
        var rng = SeededRandom(seed: 11)
        for (h, w) in [(1, 1), (1, 17), (9, 1), (7, 7), (32, 45), (64, 64)] {
            for density in [0.2, 0.5, 0.8] {
                let x = (0..<(h * w)).map { _ in Float(Double(rng.next() % 1000) / 1000 < density ? 1 : -1) * Float(rng.next() % 100 + 1) / 50 }
                for (hole, sprinkle) in [(1, 0), (0, 1), (3, 3), (5, 2), (40, 40), (h * w, 0)] {
                    let threshold: Float = hole == 3 ? 0.5 : 0
                    let t = Tensor(shape: [1, h, w], data: x)
                    let got = HoleFilling.fillHolesAndSprinkles(t, threshold: threshold, maxHoleArea: hole, maxSprinkleArea: sprinkle)
                    let want = Self.referenceFill(x, h: h, w: w, threshold: threshold, maxHole: hole, maxSprinkle: sprinkle)
                    XCTAssertEqual(got.data, want, "\(h)x\(w) density \(density) hole \(hole) sprinkle \(sprinkle)")
                    if sprinkle == 0 && threshold == 0 {  // the video predictor's variant: holes get 0.1
                        let video = HoleFilling.fill(t, maxArea: hole).data
                        XCTAssertEqual(video, zip(x, want).map { $0 == $1 ? $0 : 0.1 }, "\(h)x\(w) video fill")
                    }
                }
            }
        }
    }

    /// Hand-made cases: areas exactly at the limit are filled (`<=`), diagonal neighbours connect,
    /// regions touching the border are holes too, and sprinkles are found on the unfilled mask.
    func testHoleFillingEdgeCases() {
        // 5x5 object with a 2-pixel diagonal hole in its corner (border) and a 1-pixel hole inside.
        var x = [Float](repeating: 1, count: 25)
        for p in [0, 6, 12 + 5] { x[p] = -1 }   // (0,0),(1,1) diagonal pair; (3,2) alone
        let t = Tensor(shape: [5, 5], data: x)
        XCTAssertEqual(HoleFilling.fillHolesAndSprinkles(t, threshold: 0, maxHoleArea: 1, maxSprinkleArea: 0).data.filter { $0 < 0 }.count, 2)
        XCTAssertEqual(HoleFilling.fillHolesAndSprinkles(t, threshold: 0, maxHoleArea: 2, maxSprinkleArea: 0).data.filter { $0 < 0 }.count, 0)
        // Sprinkle: a lone positive pixel; holes filled first must not merge with it.
        var y = [Float](repeating: -1, count: 25)
        y[12] = 1
        let s = HoleFilling.fillHolesAndSprinkles(Tensor(shape: [5, 5], data: y), threshold: 0, maxHoleArea: 30, maxSprinkleArea: 1)
        XCTAssertEqual(s.data[12], -10)              // the sprinkle is removed...
        XCTAssertEqual(s.data[0], 10)               // ...and the 24-pixel background is a hole (found on the input)
    }

    // MARK: library API

    func testPredictorErrors() throws {
        let f = Self.fixture
        let model = try SAM2Model(config: try SAM2Config.load(path: "\(f)/config.yaml", applyPostprocessing: false),
                                  checkpointPath: "\(f)/checkpoint.pt")
        let predictor = ImagePredictor(model: model)
        XCTAssertThrowsError(try predictor.predict(points: [(1, 1)], labels: [1])) { XCTAssertTrue("\($0)".contains("no image set")) }
        predictor.setImage(RGBImage(width: 8, height: 6, pixels: [UInt8](repeating: 90, count: 8 * 6 * 3)))
        XCTAssertThrowsError(try predictor.predict(points: [(1, 1)], labels: [])) { XCTAssertTrue("\($0)".contains("1 points but 0 labels")) }
        XCTAssertThrowsError(try predictor.predict(points: [(1, .nan)], labels: [1])) { XCTAssertTrue("\($0)".contains("finite")) }
        XCTAssertThrowsError(try predictor.predict(points: [(1, 1)], labels: [7])) { XCTAssertTrue("\($0)".contains("label 7")) }
        XCTAssertThrowsError(try predictor.predict(points: [(1, 1)], labels: [1], maskInput: Tensor(zeros: [1, 64, 64]))) {
            XCTAssertTrue("\($0)".contains("256x256"))
        }
        let p = try predictor.predict(points: [(4, 3)], labels: [1])
        XCTAssertEqual(p.masks.count, 3)
        XCTAssertEqual(p.masks[0].width, 8)
        XCTAssertEqual(p.lowResLogits.shape, [3, 256, 256])
        // A follow-up with the best mask as mask input, and a batched pair of boxes.
        let q = try predictor.predict(points: [(4, 3)], labels: [1], maskInput: p.lowResLogits.rows(p.bestIndex..<(p.bestIndex + 1)), multimask: false)
        XCTAssertEqual(q.masks.count, 1)
        let b = try predictor.predict(boxes: [ImageBox(x0: 0, y0: 0, x1: 4, y1: 4), ImageBox(x0: 2, y0: 1, x1: 8, y1: 6)], multimask: false)
        XCTAssertEqual(b.count, 2)
        XCTAssertEqual(b[1].ious, try predictor.predict(box: ImageBox(x0: 2, y0: 1, x1: 8, y1: 6), multimask: false).ious)
    }

    func testPointGridAndCropBoxesFollowTheOfficialFormulas() {
        // np.linspace(1/8, 7/8, 4)
        XCTAssertEqual(AutomaticMaskGenerator.pointGrid(4).prefix(4).map(\.x), [0.125, 0.375, 0.625, 0.875])
        // generate_crop_boxes((480, 853), 1, 512/1500): overlap int(0.3413 * 480 * 1) = 163.
        XCTAssertEqual(AutomaticMaskGenerator.cropBoxes(width: 853, height: 480, layers: 1, overlapRatio: 512.0 / 1500.0).map(\.box),
                       [[0, 0, 853, 480], [0, 0, 508, 322], [0, 159, 508, 480], [345, 0, 853, 322], [345, 159, 853, 480]])
    }
}
