import Foundation
import XCTest
import SAM2
import SAM2Checkpoint
import SAM2Session
import SAM2Video

/// The session engine on the micro_synth fixture (6 frames, two objects): undo puts the session
/// back exactly, clearing a correction equals never having made it, removal drops an object's
/// masks everywhere, cancellation stops between frames, and every export format holds the
/// store's masks.
final class TrackingSessionTests: XCTestCase {
    static let dir = TestPaths.committedFixture
    static let model: SAM2Model = try! SAM2Model(config: try! SAM2Config.load(path: "\(dir)/config.yaml"),
                                                 checkpointPath: "\(dir)/checkpoint.pt")
    var tmp = ""

    override func setUpWithError() throws {
        tmp = NSTemporaryDirectory() + "/sam2-session-\(UUID().uuidString)"
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: tmp) }

    func session(undoDepth: Int = 50) throws -> TrackingSession {
        let frames = try TensorFrames(safetensorsPath: "\(Self.dir)/frames.safetensors")
        return try TrackingSession(predictor: VideoPredictor(model: Self.model, source: frames), undoDepth: undoDepth)
    }

    /// Every frame's masks in the store.
    func allMasks(_ s: TrackingSession) throws -> [FrameMasks] {
        try s.store.frames.map { try s.store.masks(frame: $0)! }
    }

    func clickAndTrack(_ s: TrackingSession) throws {
        try s.addPoints(frame: 0, objectId: 1, points: [(240, 135)], labels: [1])
        try s.addPoints(frame: 0, objectId: 2, box: (40, 40, 200, 200))
        try s.propagate()
    }

    func correct(_ s: TrackingSession) throws {
        try s.addPoints(frame: 3, objectId: 1, points: [(240, 135), (100, 200)], labels: [1, 0])
    }

    func testUndoRestoresTheSessionExactly() throws {
        let s = try session()
        try clickAndTrack(s)
        let tracked = try allMasks(s)
        XCTAssertEqual(tracked.count, 6)
        XCTAssertEqual(tracked.map(\.objectIds), Array(repeating: [1, 2], count: 6))

        try correct(s)
        try s.propagate()
        let corrected = try allMasks(s)
        XCTAssertNotEqual(corrected[3], tracked[3], "the correction changed nothing: the test proves nothing")

        XCTAssertTrue(try s.undo())  // the correction and the propagation after it
        XCTAssertEqual(try allMasks(s), tracked)
        XCTAssertNil(s.prompts[3])
        // Redo by hand: the same results as the first time, bit for bit.
        try correct(s)
        try s.propagate()
        XCTAssertEqual(try allMasks(s), corrected)

        XCTAssertTrue(try s.undo())
        XCTAssertTrue(try s.undo())  // the box of object 2
        XCTAssertEqual(s.objectIds, [1])
        XCTAssertEqual(try s.store.masks(frame: 0)?.objectIds, [1])
        XCTAssertTrue(try s.undo())  // the click
        XCTAssertEqual(s.store.count, 0)
        XCTAssertFalse(try s.undo())
    }

    func testRefusedPromptLeavesNoTrace() throws {
        let s = try session()
        try clickAndTrack(s)
        let before = try allMasks(s)
        XCTAssertThrowsError(try s.addPoints(frame: 2, objectId: 7, points: [(10, 10)], labels: [0]))
        XCTAssertThrowsError(try s.addPoints(frame: 99, objectId: 1, points: [(10, 10)], labels: [1]))
        XCTAssertEqual(s.objectIds, [1, 2])
        XCTAssertEqual(try allMasks(s), before)
        XCTAssertTrue(try s.undo())  // undoes the box, not a refused prompt
        XCTAssertEqual(s.objectIds, [1])
    }

    func testClearingACorrectionEqualsNeverMakingIt() throws {
        let plain = try session()
        try clickAndTrack(plain)

        let s = try session()
        try clickAndTrack(s)
        try correct(s)
        try s.propagate()
        let cleared = try s.clearPrompts(frame: 3, objectId: 1)
        XCTAssertEqual(cleared.objectIds, [1, 2])
        XCTAssertNil(s.prompts[3])
        try s.propagate()
        XCTAssertEqual(try allMasks(s), try allMasks(plain))
        XCTAssertThrowsError(try s.clearPrompts(frame: 3, objectId: 9)) {
            XCTAssertTrue("\($0)".contains("no such object"), "\($0)")
        }
    }

    func testRemoveObjectDropsItsMasksEverywhere() throws {
        let s = try session()
        try clickAndTrack(s)
        try s.removeObject(2)
        XCTAssertEqual(s.objectIds, [1])
        for m in try allMasks(s) { XCTAssertEqual(m.objectIds, [1]) }
        let png = "\(tmp)/png"
        XCTAssertEqual(try s.export(.png, to: png), 6)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: png), ["1"])
        try s.undo()
        for m in try allMasks(s) { XCTAssertEqual(m.objectIds, [1, 2]) }
    }

    func testCancelStopsBetweenFramesAndKeepsWhatWasDone() throws {
        let s = try session()
        try s.addPoints(frame: 0, objectId: 1, points: [(240, 135)], labels: [1])
        var seen = [Int]()
        let done = try s.propagate { m in
            seen.append(m.frameIndex)
            if seen.count == 3 { s.cancel() }
        }
        XCTAssertFalse(done)
        XCTAssertEqual(seen, [0, 1, 2])
        XCTAssertEqual(s.store.frames, [0, 1, 2])
        // The cancel ended that propagation only.
        XCTAssertTrue(try s.propagate(from: 2, direction: .both))
        XCTAssertEqual(s.store.frames, [0, 1, 2, 3, 4, 5])
    }

    func testBothDirectionsFromAMiddleFrame() throws {
        let s = try session()
        try s.addPoints(frame: 3, objectId: 1, points: [(240, 135)], labels: [1])
        var order = [Int]()
        try s.propagate(direction: .both) { order.append($0.frameIndex) }
        XCTAssertEqual(order, [3, 4, 5, 3, 2, 1, 0])
        XCTAssertEqual(s.store.frames.count, 6)
    }

    func testExportsHoldTheStoredMasks() throws {
        let s = try session()
        try clickAndTrack(s)
        let masks = try allMasks(s)
        let w = s.width, h = s.height

        try s.export(.rle, to: "\(tmp)/rle")
        let rle = try RLESink.read(path: "\(tmp)/rle/masks.json")
        try s.export(.palette, to: "\(tmp)/palette")
        try s.export(.sav, to: "\(tmp)/sav")
        try s.export(.yolo, to: "\(tmp)/yolo", yoloTolerance: 0)
        for m in masks {
            let f = m.frameIndex
            let palette = try PaletteSink.read(path: "\(tmp)/palette/\(frameName(f))")
            for (id, mask) in try m.masks() {
                XCTAssertEqual(rle[f]?[id]?.bits, mask.bits, "rle frame \(f) object \(id)")
                let sav = try ImageIO.readGray(path: "\(tmp)/sav/\(String(format: "%03d", id))/\(frameName(f))")
                XCTAssertEqual(sav.gray.map { $0 > 0 ? 1 : 0 }, mask.bits.map { $0 != 0 ? 1 : 0 }, "sav frame \(f) object \(id)")
                // Object 2 is drawn over object 1 in the palette.
                let visible = id == 2 ? mask.bits : zip(mask.bits, try m.masks()[1].mask.bits).map { $1 != 0 ? 0 : $0 }
                XCTAssertEqual((palette[id]?.bits ?? Array(repeating: 0, count: w * h)), visible, "palette frame \(f) object \(id)")
            }
            let yolo = try String(contentsOfFile: "\(tmp)/yolo/\(frameName(f, ext: "txt"))", encoding: .utf8)
            let expected = try m.masks().enumerated().flatMap { Polygons.yoloLines($1.mask, classIndex: $0, tolerance: 0) }
            XCTAssertEqual(yolo, expected.map { $0 + "\n" }.joined())
        }
        XCTAssertEqual(try String(contentsOfFile: "\(tmp)/yolo/classes.txt", encoding: .utf8), "object_1\nobject_2\n")
    }
}
