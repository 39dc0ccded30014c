import Foundation
import XCTest
import SAM2
@testable import SAM2Checkpoint
import SAM2Tensor

/// Issue 5 at the library level: the errors behind the CLI's one-line messages, the model
/// loader's checks, prompt-script validation agreeing with the predictor, and edge values
/// that must be refused or handled rather than trap.
final class RobustnessLibraryTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws { dir = try Robust.tempDir("lib") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    static let config = Result { try SAM2Config.load(path: Robust.config) }
    static let weights = Result { try Checkpoint.load(path: Robust.checkpoint) }

    func assertOneLine(_ error: Error, _ expected: String..., file: StaticString = #filePath, line: UInt = #line) {
        let text = String(describing: error)
        XCTAssertFalse(text.contains("\n"), "one line: \(text)", file: file, line: line)
        for e in expected { XCTAssertTrue(text.contains(e), "'\(text)' should contain '\(e)'", file: file, line: line) }
    }

    // MARK: model loader

    func testModelLoaderRejectsMissingUnexpectedMisshapedAndNonFiniteWeights() throws {
        let config = try Self.config.get(), good = try Self.weights.get()
        XCTAssertNoThrow(try SAM2Model(config: config, weights: good))

        func refuses(_ edit: (inout [String: Tensor]) -> Void, _ expected: ModelLoadError, line: UInt = #line) {
            var w = good
            edit(&w)
            XCTAssertThrowsError(try SAM2Model(config: config, weights: w), line: line) { error in
                XCTAssertEqual(error as? ModelLoadError, expected, line: line)
                assertOneLine(error, line: line)
            }
        }
        refuses({ $0["no_mem_embed"] = nil }, .missingKey("no_mem_embed"))
        refuses({ $0["sam_mask_decoder.iou_token.weight"] = nil }, .missingKey("sam_mask_decoder.iou_token.weight"))
        refuses({ $0["stray.bias"] = Tensor(shape: [1], data: [0]) }, .unexpectedKeys(["stray.bias"]))
        refuses({ $0["no_mem_embed"] = $0["no_mem_embed"]!.reshaped([64]) },
                .shapeMismatch(key: "no_mem_embed", expected: [1, 1, 64], found: [64]))
        refuses({ $0["memory_encoder.out_proj.weight"]!.data[0] = .nan }, .nonFinite("memory_encoder.out_proj.weight"))
        refuses({ $0["maskmem_tpos_enc"]!.data[5] = .infinity }, .nonFinite("maskmem_tpos_enc"))
    }

    // MARK: configs

    /// Values no real model has, which used to trap (Int overflow in the stage widths) or try to
    /// allocate petabytes, and YAML nested deep enough to overflow Yams's recursive parser:
    /// each is a one-line ConfigError naming the key.
    func testConfigRefusesHugeValuesAndDeepNesting() throws {
        let text = try String(contentsOfFile: Robust.config, encoding: .utf8)
        XCTAssertNoThrow(try SAM2Config.load(yaml: text))
        let cases: [(String, String, String)] = [
            ("image_size: 256", "image_size: 1000000000", "model.image_size: 1000000000 is more than the supported 8192"),
            ("embed_dim: 16", "embed_dim: 9223372036854775807", "model.image_encoder.trunk.embed_dim"),
            ("embed_dim: 16", "embed_dim: 16\n      dim_mul: 1.0e300", "model.image_encoder.trunk.dim_mul"),
            ("embed_dim: 16", "embed_dim: 16\n      dim_mul: .inf", "model.image_encoder.trunk.dim_mul"),
            ("embed_dim: 16", "embed_dim: 16\n      q_stride: [1000000, 1000000]", "model.image_encoder.trunk.q_stride"),
            ("embed_dim: 16", "embed_dim: 16\n      q_stride: [64, 64]", "model.image_encoder.trunk.q_pool"),
            ("      - 1\n      - 2\n", "      - 9223372036854775807\n      - 2\n", "model.image_encoder.trunk.stages"),
            ("num_maskmem: 7", "num_maskmem: 100000000", "model.num_maskmem"),
            ("image_size: 256", "image_size: 256\n  memory_temporal_stride_for_eval: 9223372036854775807", "model.memory_temporal_stride_for_eval"),
            ("sigmoid_bias_for_mem_enc: -10.0", "sigmoid_bias_for_mem_enc: .nan", "model.sigmoid_bias_for_mem_enc"),
        ]
        for (find, replacement, expected) in cases {
            XCTAssertTrue(text.contains(find), find)
            let bad = text.replacingOccurrences(of: find, with: replacement)
            XCTAssertThrowsError(try SAM2Config.load(yaml: bad, source: "bad.yaml"), replacement) { error in
                XCTAssertTrue(error is ConfigError, "\(error)")
                assertOneLine(error, "bad.yaml", expected)
            }
        }
        for deep in ["model: " + String(repeating: "[", count: 50_000), "model:\n  " + String(repeating: "- ", count: 50_000) + "x",
                     "model:\n" + (1..<500).map { String(repeating: " ", count: $0) + "k\($0):\n" }.joined()] {
            XCTAssertThrowsError(try SAM2Config.load(yaml: deep, source: "deep.yaml")) { assertOneLine($0, "deep.yaml", "nested about") }
        }
        // Every official config stays well inside the limits.
        for name in SAM2Config.knownModelNames { XCTAssertNoThrow(try SAM2Config.named(name), name) }
    }

    // MARK: checkpoint files

    func testCorruptCheckpointsAreCheckpointErrors() throws {
        func load(_ path: String) -> Error? {
            do { _ = try Checkpoint.load(path: path); return nil } catch { return error }
        }
        // Storage cut short.
        try Robust.rewrittenCheckpoint(to: dir + "/short.pt") { name, bytes in
            name.hasSuffix("/data/0") ? Array(bytes.dropLast(1)) : bytes
        }
        guard case .storageTooShort(_, _, let reason)? = load(dir + "/short.pt") as? CheckpointError else {
            return XCTFail("expected storageTooShort, got \(String(describing: load(dir + "/short.pt")))")
        }
        XCTAssertTrue(reason.contains("/data/0"), reason)

        // Without data.pkl, or without a storage.
        try Robust.rewrittenCheckpoint(to: dir + "/nopkl.pt") { name, bytes in name.hasSuffix("data.pkl") ? nil : bytes }
        XCTAssertEqual(load(dir + "/nopkl.pt") as? CheckpointError, .noDataPickle(path: dir + "/nopkl.pt"))
        try Robust.rewrittenCheckpoint(to: dir + "/nostorage.pt") { name, bytes in name.hasSuffix("/data/3") ? nil : bytes }
        guard case .missingEntry(_, let entry)? = load(dir + "/nostorage.pt") as? CheckpointError else {
            return XCTFail("expected missingEntry")
        }
        XCTAssertTrue(entry.hasSuffix("/data/3"))

        // A rewritten pickle whose key no longer matches still loads: the model then names the key.
        try Robust.rewrittenCheckpoint(to: dir + "/renamed.pt") { name, bytes in
            name.hasSuffix("data.pkl") ? replacingFirst(Array("no_mem_pos_enc".utf8), with: Array("no_mem_pos_enX".utf8), in: bytes) : bytes
        }
        let renamed = try Checkpoint.load(path: dir + "/renamed.pt")
        XCTAssertNotNil(renamed["no_mem_pos_enX"])
        XCTAssertThrowsError(try SAM2Model(config: Self.config.get(), weights: renamed)) {
            XCTAssertEqual($0 as? ModelLoadError, .missingKey("no_mem_pos_enc"))
        }
    }

    /// Every global outside the five a state dict needs is refused by name, and nothing runs.
    func testEveryOtherPickleGlobalIsRefused() throws {
        let globals = [("os", "system"), ("posix", "system"), ("builtins", "eval"), ("builtins", "exec"),
                       ("builtins", "getattr"), ("__builtin__", "eval"), ("subprocess", "check_output"),
                       ("torch", "load"), ("torch._utils", "_rebuild_parameter"), ("collections", "defaultdict"),
                       ("numpy.core.multiarray", "_reconstruct"), ("torch", "DoubleStorage"), ("", ""),
                       ("torch._utils", "_rebuild_tensor_v2 "), ("collections", "OrderedDict\r")]
        for (module, name) in globals {
            let path = dir + "/evil.pt"
            try Robust.write(makeZip([("archive/data.pkl", PickleWriter.call(module, name, "touch \(dir!)/pwned"))]), to: path)
            XCTAssertThrowsError(try Checkpoint.load(path: path)) { error in
                XCTAssertEqual(error as? CheckpointError, .refusedGlobal(source: "\(path) (archive/data.pkl)", name: "\(module).\(name)"))
                assertOneLine(error)
            }
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/pwned"))
    }

    func testCheckpointFIFOIsRefusedWithoutBlocking() throws {
        let fifo = dir + "/fifo.pt"
        guard mkfifo(fifo, 0o600) == 0 else { throw XCTSkip("mkfifo failed") }
        final class Outcome: @unchecked Sendable { var error: Error? }  // written before `done` is signalled
        let done = DispatchSemaphore(value: 0), outcome = Outcome()
        Thread.detachNewThread {
            do { _ = try Checkpoint.load(path: fifo) } catch { outcome.error = error }
            done.signal()
        }
        if done.wait(timeout: .now() + 20) == .timedOut {
            let fd = open(fifo, O_WRONLY | O_NONBLOCK)  // release the blocked reader
            if fd >= 0 { close(fd) }
            return XCTFail("opening a FIFO blocked")
        }
        XCTAssertEqual(outcome.error as? CheckpointError, .cannotOpen(path: fifo, reason: "not a regular file"))
    }

    // MARK: prompt scripts

    func testScriptErrorsNameTheField() throws {
        let cases: [(String, String)] = [
            (#"[{"op": "points", "frame": 0, "obj": 1, "points": [[1, "2"]], "labels": [1]}]"#, "actions[0].points[0]: expected a list of numbers"),
            (#"[{"op": "points", "frame": 0, "obj": 1, "points": [1, 2], "labels": [1]}]"#, "actions[0].points[0]: expected a list of numbers"),
            (#"[{"op": "points", "frame": 0, "obj": true, "points": [[1, 2]], "labels": [1]}]"#, "actions[0].obj: expected an integer"),
            (#"[{"op": "points", "frame": 1e300, "obj": 1, "points": [[1, 2]], "labels": [1]}]"#, "actions[0].frame: expected an integer"),
            (#"[{"op": "points", "frame": 0, "obj": 1, "points": [[1, 2]], "labels": [true]}]"#, "actions[0].labels[0]: expected 1"),
            (#"[{"op": "points", "frame": 0, "obj": 1, "points": [[1, 2]], "labels": [1], "clear_old": 1}]"#, "actions[0].clear_old: expected true or false"),
            (#"[{"op": "reset"}, {"op": "reset", "obj": 1}]"#, "actions[1].obj: unknown field for op 'reset'"),
            (#"[{"op": "remove"}]"#, "actions[0].obj: missing"),
            (#"[{"op": "propagate", "reverse": 0}]"#, "actions[0].reverse: expected true or false"),
            (#"{"actions": [7]}"#, "actions[0]: expected an object"),
            (#"{"actions": {}}"#, "expected a list of actions"),
            (String(repeating: "[", count: 100_000), "not valid JSON"),  // nesting depth is bounded, no stack overflow
        ]
        for (json, expected) in cases {
            XCTAssertThrowsError(try ActionScript.parse(data: Data(json.utf8)), expected) { error in
                assertOneLine(error, expected)
            }
        }
        // What the fixtures use still parses.
        XCTAssertEqual(try ActionScript.parse(path: TestPaths.committedFixture + "/session.json").count, 6)
    }

    /// `ActionScript.validate` refuses exactly what the predictor refuses, with the same message,
    /// and what it accepts runs without trapping, whatever the values (huge ids, Int.max frames to track).
    func testValidationAgreesWithThePredictor() throws {
        let model = try SAM2Model(config: Self.config.get(), weights: Self.weights.get())
        let all = try TensorFrames(safetensorsPath: TestPaths.committedFixture + "/frames.safetensors")
        let frames = TensorFrames(frames: try all.modelInput(at: 0, size: 256).reshaped([1, 3, 256, 256]),
                                  videoWidth: 480, videoHeight: 270)
        // One frame is enough to exercise every check and keep this fast; plus a 3-frame source for propagation.
        let three = TensorFrames(frames: Tensor(shape: [3, 3, 256, 256],
                                                data: (0..<3).flatMap { try! all.modelInput(at: $0, size: 256).data }),
                                 videoWidth: 480, videoHeight: 270)
        let p = #"{"op": "points", "frame": 0, "obj": 1, "points": [[240, 135]], "labels": [1]}"#
        let scripts: [(String, TensorFrames)] = [
            (#"[\#(p), {"op": "propagate", "max": 9223372036854775807}]"#, three),
            (#"[\#(p), {"op": "propagate", "start": 2, "max": 9223372036854775807, "reverse": true}]"#, three),
            (#"[\#(p), {"op": "propagate", "start": 0, "reverse": true}, {"op": "propagate", "max": 0}]"#, three),
            (#"[{"op": "box", "frame": 2, "obj": 9223372036854775807, "box": [0, 0, 480, 270]}, {"op": "propagate", "reverse": true}]"#, three),
            (#"[{"op": "points", "frame": 0, "obj": -9223372036854775808, "points": [[0, 0], [480, 270]], "labels": [1, 0]}]"#, frames),
            (#"[\#(p), {"op": "points", "frame": 0, "obj": 1, "points": [[5, 5]], "labels": [0], "clear_old": false}]"#, frames),
            (#"[\#(p), {"op": "points", "frame": 0, "obj": 1, "points": [[5, 5]], "labels": [0]}]"#, frames),
            (#"[\#(p), {"op": "remove", "obj": 1}, {"op": "propagate"}]"#, frames),
            (#"[\#(p), {"op": "reset"}, {"op": "remove", "obj": 1}]"#, frames),
            (#"[\#(p), {"op": "points", "frame": 0, "obj": 2, "points": [[9, 9]], "labels": [1]}, {"op": "remove", "obj": 1}, {"op": "propagate"}]"#, frames),
            (#"[{"op": "propagate"}]"#, frames),
            (#"[\#(p), {"op": "propagate", "start": 1}]"#, frames),
            (#"[{"op": "points", "frame": -1, "obj": 1, "points": [[1, 1]], "labels": [1]}]"#, frames),
            (#"[{"op": "points", "frame": 0, "obj": 1, "points": [[480.5, 1]], "labels": [1]}]"#, frames),
            (#"[{"op": "box", "frame": 0, "obj": 1, "box": [5, 5, 5, 9]}]"#, frames),
            (#"[{"op": "box", "frame": 0, "obj": 1, "box": [-0.5, 5, 50, 9]}]"#, frames),
            (#"[{"op": "box", "frame": 0, "obj": 1, "box": [0, 0, 5, 5], "points": [[1, 1]], "labels": [0]}]"#, frames),
            (#"[{"op": "points", "frame": 0, "obj": 1, "points": [], "labels": []}]"#, frames),
        ]
        for (json, source) in scripts {
            let actions = try ActionScript.parse(data: Data(json.utf8))
            var validation: String?
            do {
                try ActionScript.validate(actions, frameCount: source.frameCount, width: 480, height: 270)
            } catch {
                validation = String(describing: error)
            }
            var execution: String?
            do {
                try VideoPredictor(model: model, source: source).run(actions, loadMask: { _ in throw PredictorError("no masks") }) { _, _, _ in }
            } catch {
                execution = String(describing: error)
            }
            if let validation, let execution {
                XCTAssertTrue(validation.hasSuffix(": " + execution), "\(json)\nvalidate: \(validation)\npredictor: \(execution)")
            } else {
                XCTAssertEqual(validation == nil, execution == nil, "\(json)\nvalidate: \(validation ?? "ok")\npredictor: \(execution ?? "ok")")
            }
        }
    }

    func testPredictorRefusesBadArgumentsAndLeavesNoTrace() throws {
        let model = try SAM2Model(config: Self.config.get(), weights: Self.weights.get())
        let all = try TensorFrames(safetensorsPath: TestPaths.committedFixture + "/frames.safetensors")
        let source = TensorFrames(frames: try all.modelInput(at: 0, size: 256).reshaped([1, 3, 256, 256]),
                                  videoWidth: 480, videoHeight: 270)
        let predictor = VideoPredictor(model: model, source: source)
        func refused(_ expected: String, line: UInt = #line, _ body: () throws -> Void) {
            XCTAssertThrowsError(try body(), line: line) { assertOneLine($0, expected, line: line) }
            XCTAssertEqual(predictor.objectIds, [], "a refused prompt creates no object", line: line)
        }
        refused("only negative points") { try predictor.addPoints(frame: 0, objectId: 3, points: [(5, 5)], labels: [0]) }
        refused("is outside") { try predictor.addPoints(frame: 0, objectId: 3, points: [(.nan, 5)], labels: [1]) }
        refused("is outside") { try predictor.addPoints(frame: 0, objectId: 3, points: [(5, .infinity)], labels: [1]) }
        refused("is outside") { try predictor.addPoints(frame: 0, objectId: 3, box: (0, 0, .nan, 5)) }
        refused("same length") { try predictor.addPoints(frame: 0, objectId: 3, points: [(5, 5)], labels: []) }
        refused("at least one point") { try predictor.addPoints(frame: 0, objectId: 3) }
        refused("labels must be 1") { try predictor.addPoints(frame: 0, objectId: 3, points: [(5, 5)], labels: [2]) }
        refused("frame 1 is out of range") { try predictor.addPoints(frame: 1, objectId: 3, points: [(5, 5)], labels: [1]) }
        refused("frame \(Int.min) is out of range") { try predictor.addMask(frame: Int.min, objectId: 3, mask: [1], width: 1, height: 1) }
        refused("mask has 3 values") { try predictor.addMask(frame: 0, objectId: 3, mask: [1, 0, 1], width: 2, height: 2) }
        refused("mask has 0 values") { try predictor.addMask(frame: 0, objectId: 3, mask: [], width: 0, height: 0) }
        refused("no such object") { try predictor.removeObject(3) }
        refused("no object has a prompt") { try predictor.propagate { _ in } }
        try predictor.addPoints(frame: 0, objectId: 3, points: [(5, 5)], labels: [1])
        XCTAssertThrowsError(try predictor.propagate(maxFrames: -1) { _ in }) { assertOneLine($0, "must not be negative") }
        XCTAssertThrowsError(try predictor.propagate(from: 5) { _ in }) { assertOneLine($0, "frame 5 is out of range") }
        var seen = [Int]()
        try predictor.propagate(maxFrames: .max) { seen.append($0.frameIndex) }
        try predictor.propagate(maxFrames: .max, reverse: true) { seen.append($0.frameIndex) }
        XCTAssertEqual(seen, [0])
    }
}
