import Foundation
import XCTest
import SAM2
import SAM2Session
import SAM2Checkpoint
import SAM2Video

/// `sam2 track` and the video predictor on real decoding: frames come from our FFmpeg reader,
/// masks are compared with the official predictor's (fixtures made by the official code).
final class TrackTests: XCTestCase {
    static let quickSynth = TestPaths.packageRoot.appendingPathComponent("Tests/SAM2Tests/Fixtures/quick_synth").path
    static let synthClip = TestPaths.packageRoot.appendingPathComponent("Tests/SAM2Tests/Fixtures/synth.mp4").path

    /// The fixture's last record of every (frame, object): the masks a whole session ends with.
    static func finalMasks(fixture: String) throws -> (width: Int, height: Int, masks: [Int: [Int: [UInt8]]]) {
        let session = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(fixture)/session.json"))) as! [String: Any]
        let hw = session["video_hw"] as! [Int]
        let outputs = try Safetensors.read(path: "\(fixture)/outputs.safetensors")
        var masks = [Int: [Int: [UInt8]]]()
        for e in session["index"] as! [[String: Any]] {
            let bits = outputs["\(e["key"] as! String).video_mask_bits"]!.bytes
            var m = [UInt8](repeating: 0, count: hw[0] * hw[1])
            for i in 0..<m.count where bits[i >> 3] & (0x80 >> UInt8(i & 7)) != 0 { m[i] = 1 }
            masks[e["frame"] as! Int, default: [:]][e["obj"] as! Int] = m
        }
        return (hw[1], hw[0], masks)
    }

    static func iou(_ a: [UInt8], _ b: [UInt8]) -> Double {
        var i = 0, u = 0
        for (x, y) in zip(a, b) { if x != 0 && y != 0 { i += 1 }; if x != 0 || y != 0 { u += 1 } }
        return u == 0 ? 1 : Double(i) / Double(u)
    }

    /// Backward and forward propagation, a correction on a tracked frame, and memory moved to disk
    /// and read back (12 frames > the 8-frame window): strict parity through the replay path.
    func testQuickSynthReplayStrict() throws {
        let out = TestPaths.tempFile("quick_synth.safetensors")
        defer { try? FileManager.default.removeItem(atPath: out) }
        _ = try Conformance.replay(fixture: Self.quickSynth, output: out, loadMask: loadMaskForTests)
        let r = try ParityReport.compare(fixture: Self.quickSynth, candidate: out)
        print("quick_synth parity: \(r.summary)")
        XCTAssertEqual(r.records, 28)
        XCTAssertTrue(r.strictPass, r.summary)
    }

    /// The quick flags, end to end through the CLI and our reader: prompts on frame 2, then a
    /// correction on frame 7; propagation forward and backward after each. The official session
    /// was exactly `points(f2) · propagate · propagate(reverse) · points(f7, +/-) · propagate · propagate(reverse)`.
    func testQuickFlagsWithCorrectionMatchOfficial() throws {
        let dir = try Robust.tempDir("quick")
        let run = try Robust.sam2(["track", Self.synthClip, "--config", "\(Self.quickSynth)/config.yaml",
                                   "--checkpoint", "\(Self.quickSynth)/checkpoint.pt",
                                   "--frame", "2", "--point", "250,140", "--frame", "7", "--point", "250,140", "--neg", "120,60",
                                   "--limit", "12", "--format", "rle", "--output", "\(dir)/out"])
        XCTAssertEqual(run.status, 0, run.stderr)
        let ours = try RLESink.read(path: "\(dir)/out/masks.json")
        let ref = try Self.finalMasks(fixture: Self.quickSynth)
        XCTAssertEqual(Set(ours.keys), Set(ref.masks.keys), "frames written")
        var ious = [Double]()
        for (frame, objs) in ref.masks {
            for (obj, m) in objs {
                guard let mine = ours[frame]?[obj] else { XCTFail("no mask for frame \(frame) object \(obj)"); continue }
                XCTAssertEqual(mine.width, ref.width)
                ious.append(Self.iou(mine.bits, m))
            }
        }
        print("quick flags vs official: min IoU \(ious.min()!), mean \(ious.reduce(0, +) / Double(ious.count))")
        XCTAssertGreaterThanOrEqual(ious.min()!, 0.99)
    }

    /// Must-show of the video pipeline: bedroom.mp4 decoded by our reader, the micro_bedroom
    /// fixture's own actions (two objects, a box, a correction), 960x540 masks against the official ones.
    func testBedroomActionsThroughOurReader() throws {
        let fixture = try TestPaths.sharedFixture("micro_bedroom")
        let clip = "\(TestPaths.shared)/videos/bedroom.mp4"
        let model = try SAM2Model(config: try SAM2Config.load(path: "\(fixture)/config.yaml"), checkpointPath: "\(fixture)/checkpoint.pt")
        let source = try VideoFrameSource(path: clip, limit: 8)
        XCTAssertEqual(source.frameCount, 8)
        XCTAssertEqual([source.videoWidth, source.videoHeight], [960, 540])
        let predictor = VideoPredictor(model: model, source: source)
        var final = [Int: [Int: [UInt8]]]()
        try predictor.run(try ActionScript.parse(path: "\(fixture)/session.json"), loadMask: loadMaskForTests) { _, _, r in
            for (obj, m) in zip(r.objectIds, r.videoMasks()) { final[r.frameIndex, default: [:]][obj] = m }
        }
        let ref = try Self.finalMasks(fixture: fixture)
        var ious = [Double]()
        for (frame, objs) in ref.masks { for (obj, m) in objs { ious.append(Self.iou(final[frame]![obj]!, m)) } }
        let mean = ious.reduce(0, +) / Double(ious.count)
        print("bedroom through our reader: min IoU \(ious.min()!), mean \(mean) over \(ious.count) masks")
        XCTAssertGreaterThanOrEqual(ious.min()!, 0.95)
        XCTAssertGreaterThanOrEqual(mean, 0.98)
    }

    /// Our frames equal the official loader's (FFmpeg's RGB conversion, Pillow's bicubic resize).
    func testFramesEqualOfficialPreprocessing() throws {
        let ref = try TensorFrames(safetensorsPath: "\(Self.quickSynth)/frames.safetensors")
        let ours = try VideoFrameSource(path: Self.synthClip, limit: 12)
        for i in [0, 5, 11] {
            let a = try ref.modelInput(at: i, size: 256), b = try ours.modelInput(at: i, size: 256)
            XCTAssertEqual(maxDiff(a.data, b.data), 0, "frame \(i)")
        }
        // Revisiting an earlier frame reads it back from the frame cache, unchanged.
        XCTAssertEqual(try ours.modelInput(at: 0, size: 256), try ref.modelInput(at: 0, size: 256))
    }

    /// The same at 1024 on a 1280x720 clip: shrinking across (antialiased), enlarging down.
    func testFramesEqualOfficialPreprocessingAt1024() throws {
        let fixture = try TestPaths.sharedFixture("tiny_dog")
        let ref = try TensorFrames(safetensorsPath: "\(fixture)/frames.safetensors")
        let ours = try VideoFrameSource(path: try VideoTestSupport.sharedClip("01_dog.mp4"), limit: 2)
        for i in 0..<2 {
            XCTAssertEqual(maxDiff(try ref.modelInput(at: i, size: 1024).data, try ours.modelInput(at: i, size: 1024).data), 0, "frame \(i)")
        }
    }
}
