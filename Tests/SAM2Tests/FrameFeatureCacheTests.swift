import Foundation
import XCTest
@testable import SAM2
import SAM2Checkpoint
import SAM2Tensor

/// Frame embeddings kept across propagations: the micro_synth session (two objects, a correction
/// on frame 3, forward and reverse propagation) gives bit-identical logits with the cache off,
/// in RAM and spilled to disk, and encodes each frame once with it.
final class FrameFeatureCacheTests: XCTestCase {
    func run(cache: FrameFeatureCache) throws -> (logits: [[Float]], encoderPasses: Int) {
        let dir = TestPaths.committedFixture
        let model = try SAM2Model(config: try SAM2Config.load(path: "\(dir)/config.yaml"), checkpointPath: "\(dir)/checkpoint.pt")
        let predictor = VideoPredictor(model: model, source: try TensorFrames(safetensorsPath: "\(dir)/frames.safetensors"),
                                       featureCache: cache)
        var passes = 0
        predictor.onImageEncoded = { _ in passes += 1 }
        var logits = [[Float]]()
        try predictor.run(try ActionScript.parse(path: "\(dir)/session.json"), loadMask: { try loadMaskForTests("\(dir)/\($0)") }) { _, _, r in
            logits.append(contentsOf: r.lowResLogits.map(\.data))
        }
        return (logits, passes)
    }

    func testCachedPropagationIsBitIdenticalAndEncodesEachFrameOnce() throws {
        let off = try run(cache: FrameFeatureCache(ramBudget: 0, diskBudget: 0))
        let ram = FrameFeatureCache(ramBudget: 64 << 20)  // every frame stays in RAM
        let inRAM = try run(cache: ram)
        let disk = FrameFeatureCache(ramBudget: 0)  // every frame goes to the spill file
        let onDisk = try run(cache: disk)

        XCTAssertGreaterThan(off.logits.count, 30)
        XCTAssertEqual(inRAM.logits, off.logits, "RAM cache changed the results")
        XCTAssertEqual(onDisk.logits, off.logits, "disk cache changed the results")
        // 6 frames: each encoded once with the cache; the session without it re-encodes on every
        // return to a frame (the official predictor keeps only the last frame's features too).
        XCTAssertEqual(inRAM.encoderPasses, 6)
        XCTAssertEqual(onDisk.encoderPasses, 6)
        XCTAssertGreaterThan(off.encoderPasses, 12)
        XCTAssertEqual(ram.count, 6)
        XCTAssertEqual(ram.bytesOnDisk, 0)
        XCTAssertEqual(disk.bytesInRAM, 0)
        XCTAssertGreaterThan(disk.bytesOnDisk, 0)
        print("encoder passes: \(off.encoderPasses) without the cache, \(inRAM.encoderPasses) with it")
    }

    func testBudgetsBoundWhatIsKept() throws {
        let levels = [Tensor(shape: [2, 4, 4], data: (0..<32).map(Float.init)), Tensor(shape: [4, 2, 2], data: (0..<16).map { -Float($0) })]
        let positions = levels.map { Tensor(zeros: $0.shape) }
        let perFrame = 48 * 4
        // Room for two frames in RAM and one on disk: the third frame pushes the first to disk,
        // the fourth pushes the second out of both (it will be encoded again).
        let cache = FrameFeatureCache(ramBudget: 2 * perFrame, diskBudget: perFrame)
        for f in 0..<4 {
            var l = levels
            l[0].data[0] = Float(100 + f)
            cache.insert(BackboneFeatures(levels: l, positions: positions), for: f)
        }
        XCTAssertEqual(cache.count, 3)
        XCTAssertEqual(cache.bytesInRAM, 2 * perFrame)
        XCTAssertEqual(cache.bytesOnDisk, perFrame)
        XCTAssertNil(cache.features(of: 1))
        for f in [0, 2, 3] {
            let got = try XCTUnwrap(cache.features(of: f))
            XCTAssertEqual(got.levels[0].data[0], Float(100 + f))
            XCTAssertEqual(got.levels[0].data[1...], levels[0].data[1...])
            XCTAssertEqual(got.levels[1].data, levels[1].data)
            XCTAssertEqual(got.levels.map(\.shape), levels.map(\.shape))
        }
    }

    /// Spilled tensors read back bit for bit, before and after their (background) writes land,
    /// whatever their sizes (direct writes are padded to whole blocks).
    func testSpillFileReadsBackExactly() throws {
        let file = try XCTUnwrap(SpillFile())
        let sizes = [1, 1023, 1024, 5000, 300_000]
        let tensors = sizes.enumerated().map { i, n in (0..<n).map { Float($0 % 977) * 0.37 - Float(i) } }
        let offsets = try tensors.map { try XCTUnwrap(file.write($0)) }
        for (t, o) in zip(tensors, offsets) { XCTAssertEqual(file.read(offset: o, count: t.count), t) }
        file.waitForWrites()
        for (t, o) in zip(tensors, offsets).reversed() { XCTAssertEqual(file.read(offset: o, count: t.count), t) }
    }
}
