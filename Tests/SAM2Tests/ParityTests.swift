import Foundation
import XCTest
import SAM2
import SAM2Session
import SAM2Checkpoint
import SAM2Tensor
import SAM2Video

/// Paths the tests read: the committed fixture, and `../shared` beside the checkout when present.
enum TestPaths {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let committedFixture = packageRoot.appendingPathComponent("Tests/SAM2Tests/Fixtures/micro_synth").path
    static func committedFixtureNamed(_ name: String) -> String {
        packageRoot.appendingPathComponent("Tests/SAM2Tests/Fixtures/\(name)").path
    }
    static let shared = packageRoot.deletingLastPathComponent().appendingPathComponent("shared").path

    static func sharedFixture(_ name: String) throws -> String {
        let p = "\(shared)/fixtures/\(name)"
        guard FileManager.default.fileExists(atPath: "\(p)/session.json") else {
            throw XCTSkip("../shared/fixtures/\(name) is not present beside the checkout; skipping this parity check")
        }
        return p
    }

    static func tempFile(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("sam2-\(UUID().uuidString)-\(name)").path
    }
}

func loadMaskForTests(_ path: String) throws -> (mask: [UInt8], width: Int, height: Int) {
    let img = try ImageIO.readGray(path: path)
    return (img.gray.map { $0 > 0 ? 1 : 0 }, img.width, img.height)
}

/// The same metrics and limits as `shared/reference/compare.py`.
struct ParityReport {
    var records = 0
    var lowresMax: Double = 0, lowresMean: Double = 0, score: Double = 0, ptr: Double = 0
    var iouMin: Double = 1, iouSum: Double = 0
    var missing: [String] = []
    var iouMean: Double { records > 0 ? iouSum / Double(records) : 0 }

    static func compare(fixture: String, candidate: String) throws -> ParityReport {
        let ref = try Safetensors.read(path: "\(fixture)/outputs.safetensors")
        let cand = try Safetensors.read(path: candidate)
        let session = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(fixture)/session.json"))) as! [String: Any]
        let index = session["index"] as! [[String: Any]]
        var r = ParityReport()
        for e in index {
            let k = e["key"] as! String
            for s in ["lowres_logits", "object_score_logits", "obj_ptr", "video_mask_bits"] where ref["\(k).\(s)"] != nil && cand["\(k).\(s)"] == nil {
                r.missing.append("\(k).\(s)")
            }
            if !r.missing.isEmpty { continue }
            if let a = ref["\(k).lowres_logits"] {
                let x = try a.floats(), y = try cand["\(k).lowres_logits"]!.floats()
                let d = zip(x, y).map { abs(Double($0) - Double($1)) }
                r.lowresMax = max(r.lowresMax, d.max() ?? 0)
                r.lowresMean = max(r.lowresMean, d.reduce(0, +) / Double(d.count))
                r.score = max(r.score, maxDiff(try ref["\(k).object_score_logits"]!.floats(), try cand["\(k).object_score_logits"]!.floats()))
                r.ptr = max(r.ptr, maxDiff(try ref["\(k).obj_ptr"]!.floats(), try cand["\(k).obj_ptr"]!.floats()))
            }
            let a = ref["\(k).video_mask_bits"]!.bytes, b = cand["\(k).video_mask_bits"]!.bytes
            var inter = 0, union = 0
            for (p, q) in zip(a, b) { inter += (p & q).nonzeroBitCount; union += (p | q).nonzeroBitCount }
            let iou = Double(inter) / Double(max(union, 1))
            r.iouMin = min(r.iouMin, iou)
            r.iouSum += iou
            r.records += 1
        }
        return r
    }

    var strictPass: Bool { missing.isEmpty && lowresMax <= 1e-2 && lowresMean <= 1e-3 && score <= 1e-2 && ptr <= 1e-2 && iouMin >= 0.99 }
    var defaultPass: Bool { missing.isEmpty && iouMin >= 0.95 && iouMean >= 0.98 }
    var summary: String {
        String(format: "records=%d lowres_max=%.2e lowres_mean=%.2e score=%.2e obj_ptr=%.2e iou_min=%.4f iou_mean=%.4f missing=%d",
               records, lowresMax, lowresMean, score, ptr, iouMin, iouMean, missing.count)
    }
}

func maxDiff(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count)
    return zip(a, b).map { abs(Double($0) - Double($1)) }.max() ?? 0
}

final class ParityTests: XCTestCase {
    /// End to end: the committed micro_synth fixture (made from synth.mp4 by the official code)
    /// replayed through `sam2 replay`'s code path meets compare.py's strict limits.
    func testMicroSynthEndToEndStrict() throws {
        let out = TestPaths.tempFile("micro_synth.safetensors")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let s = try Conformance.replay(fixture: TestPaths.committedFixture, output: out, loadMask: loadMaskForTests)
        XCTAssertEqual(s.records, 41)
        let r = try ParityReport.compare(fixture: TestPaths.committedFixture, candidate: out)
        print("micro_synth parity: \(r.summary)")
        XCTAssertEqual(r.records, 41)
        XCTAssertTrue(r.missing.isEmpty, "missing keys: \(r.missing.prefix(3))")
        XCTAssertTrue(r.strictPass, r.summary)
        // A correct float32 port lands within the official code's own run-to-run spread (about 2e-3 max).
        XCTAssertLessThan(r.lowresMax, 5e-3, r.summary)
    }

    /// Fixtures made by the official code for the paths micro_synth does not take (see each
    /// folder's spec.json): a mask prompt, objects that first appear on later frames, a box with
    /// extra points, accumulated clicks (`clear_old: false`), removing an object, reverse tracking
    /// from the last frame (mask_synth); the SAM 2.0 architecture with three objects (sam20_synth).
    func testMaskPromptsAndLaterObjectsStrict() throws {
        try replayStrict(TestPaths.committedFixtureNamed("mask_synth"), records: 63)
    }

    func testSAM20ArchitectureStrict() throws {
        try replayStrict(TestPaths.committedFixtureNamed("sam20_synth"), records: 72)
    }

    /// EdgeTAM (RepViT trunk, spatial perceiver, RoPEAttentionv2), made by
    /// Scripts/make_edgetam_fixture.py: the official EdgeTAM model, shrunk past its trunk, driven by
    /// sam2 1.1.0's video predictor; two objects, a box, a correction, forward and reverse.
    func testEdgeTAMStrict() throws {
        try replayStrict(TestPaths.committedFixtureNamed("edgetam_synth"), records: 41)
    }

    func replayStrict(_ dir: String, records: Int) throws {
        let r = try replay(dir)
        XCTAssertEqual(r.records, records)
        XCTAssertTrue(r.strictPass, r.summary)
    }

    /// `sam2 replay`'s code path on a fixture, compared like compare.py.
    func replay(_ dir: String) throws -> ParityReport {
        let out = TestPaths.tempFile("replay.safetensors")
        defer { try? FileManager.default.removeItem(atPath: out) }
        _ = try Conformance.replay(fixture: dir, output: out, loadMask: loadMaskForTests)
        let r = try ParityReport.compare(fixture: dir, candidate: out)
        print("\(URL(fileURLWithPath: dir).lastPathComponent) parity: \(r.summary)")
        return r
    }

    /// The mask-prompt path layer by layer (antialiased resizes, mask downsampling, the mask as output).
    func testMaskSynthLayerByLayer() throws {
        try compareIntermediates(fixture: TestPaths.committedFixtureNamed("mask_synth"), allModulesUntilStep: 1)
    }

    /// Layer by layer: every intermediate the official hooks recorded (trunk, image encoder,
    /// prompt encoder, mask decoder, and every memory encoder / memory attention call of the
    /// session, in call order) against ours.
    func testMicroSynthLayerByLayer() throws {
        let calls = try compareIntermediates(fixture: TestPaths.committedFixture, allModulesUntilStep: 1)
        XCTAssertEqual(calls["memory_attention"], 29)
        XCTAssertEqual(calls["memory_encoder"], 31)
    }

    /// Replay a fixture's session while checking every recorded intermediate, relative to the
    /// tensor's magnitude. The official memory features are fed forward (`memoryFeaturesOverride`),
    /// so float32 reduction order is all that differs. The official hooks watch every module during
    /// the first `allModulesUntilStep` actions, then only the memory modules (nil: always all).
    /// Returns the number of calls per module.
    @discardableResult
    func compareIntermediates(fixture dir: String, allModulesUntilStep: Int? = nil) throws -> [String: Int] {
        let inter = try Safetensors.read(path: "\(dir)/intermediates.safetensors")
        let model = try SAM2Model(config: try SAM2Config.load(path: "\(dir)/config.yaml"), checkpointPath: "\(dir)/checkpoint.pt")
        let predictor = VideoPredictor(model: model, source: try TensorFrames(safetensorsPath: "\(dir)/frames.safetensors"))
        var calls = [String: Int](), worst = [String: Double]()
        var step = 0, compared = 0, memoryCalls = 0
        model.memoryFeaturesOverride = { ours in
            defer { memoryCalls += 1 }
            guard let ref = inter["memory_encoder.\(memoryCalls).vision_features"] else { return ours }
            return Tensor(shape: ours.shape, data: try! ref.floats())
        }
        model.trace = { module, outputs in
            let call = calls[module, default: 0]
            calls[module] = call + 1
            if let until = allModulesUntilStep, step >= until, module != "memory_encoder", module != "memory_attention" { return }
            for (name, t) in outputs {
                let key = "\(module).\(call).\(name)"
                guard let ref = inter[key] else { continue }
                let r = try! ref.floats()
                XCTAssertEqual(r.count, t.count, "\(key): \(ref.shape) vs \(t.shape)")
                guard r.count == t.count else { continue }
                let d = maxDiff(r, t.data) / max(1, Double(r.map { abs($0) }.max() ?? 0))
                worst[module] = max(worst[module] ?? 0, d)
                XCTAssertLessThan(d, 2e-4, "\(key) differs by \(d) (relative)")
                compared += 1
            }
        }
        for (i, a) in try ActionScript.parse(path: "\(dir)/session.json").enumerated() {
            step = i
            try predictor.run([a], loadMask: { try loadMaskForTests("\(dir)/\($0)") }) { _, _, _ in }
        }
        print("layer-by-layer worst relative differences: \(worst.sorted { $0.key < $1.key })")
        XCTAssertEqual(compared, inter.count, "compared \(compared) of \(inter.count) intermediates")
        return calls
    }

    /// The shared fixtures, when `../shared` is present: micro_bedroom (default post-processing,
    /// compared by IoU) and tiny_dog (the full-size sam2.1_hiera_t at 1024, strict).
    func testSharedMicroBedroom() throws {
        let r = try replay(try TestPaths.sharedFixture("micro_bedroom"))
        XCTAssertTrue(r.defaultPass, r.summary)
    }

    func testSharedTinyDogStrict() throws {
        let r = try replay(try TestPaths.sharedFixture("tiny_dog"))
        XCTAssertTrue(r.strictPass, r.summary)
    }

    /// tiny_dog end to end with the official (bfloat16) memory features fed forward: what is left
    /// is float32 arithmetic order alone, so every record's logits must agree far inside the
    /// strict limits. (Without this, ~350 memory values round to the other bfloat16 neighbour and
    /// move the tracked frame by 1e-3 to 1e-2: the end-to-end test above sees that noise.)
    func testSharedTinyDogTeacherForcedOutputs() throws {
        let dir = try TestPaths.sharedFixture("tiny_dog")
        let inter = try Safetensors.read(path: "\(dir)/intermediates.safetensors")
        let ref = try Safetensors.read(path: "\(dir)/outputs.safetensors")
        let model = try SAM2Model(config: try SAM2Config.load(path: "\(dir)/config.yaml"), checkpointPath: "\(dir)/checkpoint.pt")
        let predictor = VideoPredictor(model: model, source: try TensorFrames(safetensorsPath: "\(dir)/frames.safetensors"))
        var memoryCalls = 0, forced = 0
        model.memoryFeaturesOverride = { ours in
            defer { memoryCalls += 1 }
            // The last frame's memory (never read afterwards) is not among the intermediates.
            guard let r = inter["memory_encoder.\(memoryCalls).vision_features"] else { return ours }
            forced += 1
            return Tensor(shape: ours.shape, data: try! r.floats())
        }
        var checked = 0
        for (i, a) in try ActionScript.parse(path: "\(dir)/session.json").enumerated() {
            try predictor.run([a], loadMask: { try loadMaskForTests("\(dir)/\($0)") }) { _, _, result in
                for (j, id) in result.objectIds.enumerated() {
                    let key = String(format: "s%02d.f%04d.o%d.lowres_logits", i, result.frameIndex, id)
                    guard let r = ref[key] else { continue }
                    let d = maxDiff(try r.floats(), result.lowResLogits[j].data)
                    XCTAssertLessThan(d, 1e-4, "\(key): max |diff| \(d)")
                    checked += 1
                }
            }
        }
        XCTAssertGreaterThan(forced, 0)
        XCTAssertEqual(checked, 3)
    }

    /// tiny_dog's intermediates: the full-size image encoder, mask decoder, memory encoder and attention.
    func testSharedTinyDogIntermediates() throws {
        try compareIntermediates(fixture: try TestPaths.sharedFixture("tiny_dog"))
    }
}
