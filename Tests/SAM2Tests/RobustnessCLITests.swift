import Foundation
import XCTest
import SAM2Checkpoint
import SAM2Tensor
import SAM2Video

/// Issue 5 through the command line: every bad input ends as ONE line on stderr
/// (`sam2: error: ...`) with a non-zero status and without output; an interrupt leaves only
/// complete files; damaged video never crashes. Runs the built `sam2` on the committed test model.
final class RobustnessCLITests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        dir = try Robust.tempDir("cli")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: dir)
    }

    var output: String { dir + "/masks" }

    /// `sam2 track VIDEO ARGS` on the test model, the first 4 frames, into `output`.
    func track(_ video: String, _ args: [String], model: [String] = Robust.model, limit: Int? = 4) throws -> Robust.Run {
        try Robust.sam2(["track", video] + args + model + (limit.map { ["--limit", String($0)] } ?? []) + ["-o", output])
    }

    /// One line `sam2: error: ...` containing every `expected` text, the given status, no crash and no output folder.
    func assertError(_ run: Robust.Run, _ expected: String..., status: Int32 = 1,
                     file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(run.reason, .exit, "terminated by a signal: \(run.stderr)", file: file, line: line)
        XCTAssertEqual(run.status, status, "exit status; stderr: \(run.stderr)", file: file, line: line)
        let lines = run.errorLines
        XCTAssertEqual(lines.count, 1, "exactly one line on stderr, got: \(run.stderr)", file: file, line: line)
        let message = lines.first ?? ""
        XCTAssertTrue(message.hasPrefix("sam2: error: "), message, file: file, line: line)
        for text in expected {
            XCTAssertTrue(message.contains(text), "'\(message)' should contain '\(text)'", file: file, line: line)
        }
        XCTAssertTrue(run.stdout.isEmpty, "nothing on stdout: \(run.stdout)", file: file, line: line)
        XCTAssertFalse(FileManager.default.fileExists(atPath: output), "no output folder after an error", file: file, line: line)
    }

    let click = ["--frame", "0", "--point", "240,135"]

    // MARK: videos

    func testMissingVideo() throws {
        assertError(try track(dir + "/missing.mp4", click), "missing.mp4", "no such file")
    }

    func testUnreadableVideo() throws {
        guard geteuid() != 0 else { throw XCTSkip("running as root: file permissions are not enforced") }
        let path = dir + "/locked.mp4"
        try FileManager.default.copyItem(atPath: Robust.clip, toPath: path)
        try FileManager.default.setAttributes([.posixPermissions: 0], ofItemAtPath: path)
        assertError(try track(path, click), "locked.mp4", "permission denied")
    }

    func testZeroByteVideo() throws {
        XCTAssertTrue(FileManager.default.createFile(atPath: dir + "/empty.mp4", contents: Data()))
        assertError(try track(dir + "/empty.mp4", click), "empty.mp4", "empty")
    }

    func testTruncatedMP4WithoutMoov() throws {
        // synth.mp4 keeps its moov atom at the end: the first half has none.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: Robust.clip))
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: dir + "/cut.mp4"))
        assertError(try track(dir + "/cut.mp4", click), "cut.mp4", "no moov atom")
    }

    func testTextFileNamedMP4() throws {
        try String(repeating: "not a video\n", count: 100).write(toFile: dir + "/notes.mp4", atomically: true, encoding: .utf8)
        assertError(try track(dir + "/notes.mp4", click), "notes.mp4", "not a video file")
    }

    func testFileWithoutVideoStream() throws {
        try VideoTestSupport.ffmpeg(["-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", dir + "/audio.mp4"])
        assertError(try track(dir + "/audio.mp4", click), "audio.mp4", "no video stream")
    }

    func testUnsupportedCodec() throws {
        // An MPEG-4 AVI whose fourcc is patched to one no decoder knows.
        try VideoTestSupport.ffmpeg(["-i", Robust.clip, "-frames:v", "5", "-c:v", "mpeg4", dir + "/clip.avi"])
        var data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/clip.avi")))
        let tag = Array("FMP4".utf8)
        for i in 0..<(data.count - 4) where Array(data[i..<(i + 4)]) == tag {
            data.replaceSubrange(i..<(i + 4), with: Array("ZQ9X".utf8))
        }
        try Robust.write(data, to: dir + "/unknown.avi")
        assertError(try track(dir + "/unknown.avi", click), "unknown.avi", "unsupported video codec")
    }

    func testFramesFolderWithoutImages() throws {
        try FileManager.default.createDirectory(atPath: dir + "/frames", withIntermediateDirectories: true)
        try "x".write(toFile: dir + "/frames/readme.txt", atomically: true, encoding: .utf8)
        assertError(try track(dir + "/frames", click), "frames", "no .jpg/.jpeg/.png frames")
    }

    func testFramesFolderWithMixedSizes() throws {
        let frames = dir + "/frames"
        try FileManager.default.createDirectory(atPath: frames, withIntermediateDirectories: true)
        try ImageIO.writeGrayPNG(path: frames + "/00000.png", width: 64, height: 48, pixels: [UInt8](repeating: 9, count: 64 * 48))
        try ImageIO.writeGrayPNG(path: frames + "/00001.png", width: 80, height: 48, pixels: [UInt8](repeating: 9, count: 80 * 48))
        assertError(try track(frames, ["--frame", "0", "--point", "10,10"]), "frames differ in size", "00001.png", "80x48")
    }

    // MARK: prompts

    func testPromptFrameBeyondLastFrame() throws {
        assertError(try track(Robust.clip, ["--frame", "4", "--point", "240,135"]),
                    "--frame 4", "frame 4 is out of range: the video has 4 frames (0...3)")
        // A late correction fails before any tracking, too.
        assertError(try track(Robust.clip, click + ["--frame", "0", "--point", "1,1", "--frame", "99", "--point", "1,1"]),
                    "--frame 99 (group 3)", "out of range")
        let script = try prompts(#"[{"op": "points", "frame": 0, "obj": 1, "points": [[240, 135]], "labels": [1]}, {"op": "propagate"},"#
                                 + #" {"op": "propagate", "start": 30}]"#)
        assertError(try track(Robust.clip, ["--prompts", script]), "prompts.json: actions[2]", "frame 30 is out of range")
    }

    func testPointOutsideFrame() throws {
        assertError(try track(Robust.clip, ["--frame", "0", "--point", "481,10"]), "point (481, 10) is outside the 480x270 frame")
        assertError(try track(Robust.clip, ["--frame", "0", "--point", "240,135", "--neg=-1,5"]), "point (-1, 5) is outside")
        assertError(try track(Robust.clip, ["--frame", "0", "--point", "nan,5"]), "--point nan,5", "expected x,y")
    }

    func testBoxOutsideFrameAndDegenerateBox() throws {
        assertError(try track(Robust.clip, ["--frame", "0", "--box", "10,10,500,100"]), "box (10, 10, 500, 100) is outside the 480x270 frame")
        assertError(try track(Robust.clip, ["--frame", "0", "--box", "100,10,100,50"]), "box (100, 10, 100, 50) is degenerate")
        assertError(try track(Robust.clip, ["--frame", "0", "--box", "100,50,10,10"]), "degenerate")
        assertError(try track(Robust.clip, ["--frame", "0", "--box", "1,2,3"]), "--box 1,2,3", "expected x0,y0,x1,y1")
    }

    func testOnlyNegativePoints() throws {
        assertError(try track(Robust.clip, ["--frame", "0", "--neg", "10,10", "--neg", "20,20"]),
                    "object 1 on frame 0 has only negative points")
        let script = try prompts(#"[{"op": "points", "frame": 1, "obj": 7, "points": [[5, 5]], "labels": [0]}]"#)
        assertError(try track(Robust.clip, ["--prompts", script]), "actions[0]", "object 7 on frame 1 has only negative points")
    }

    func testRemovingUnknownObject() throws {
        let script = try prompts(#"[{"op": "points", "frame": 0, "obj": 1, "points": [[240, 135]], "labels": [1]},"#
                                 + #" {"op": "remove", "obj": 2}]"#)
        assertError(try track(Robust.clip, ["--prompts", script]), "actions[1]", "cannot remove object 2: no such object (objects: 1)")
    }

    func testMalformedPromptsJSONNamesTheField() throws {
        let cases: [(String, String)] = [
            (#"[{"op": "points", "frame": 0, "obj": 1, "points": [[240, 135]], "labels": [1]"#, "not valid JSON"),
            (#"{"steps": []}"#, "expected a list of actions"),
            (#"[{"frame": 0}]"#, "actions[0].op: missing"),
            (#"[{"op": "click", "frame": 0}]"#, "actions[0].op: unknown operation 'click'"),
            (#"[{"op": "points", "obj": 1, "points": [[1, 1]], "labels": [1]}]"#, "actions[0].frame: missing"),
            (#"[{"op": "points", "frame": "0", "obj": 1, "points": [[1, 1]], "labels": [1]}]"#, "actions[0].frame: expected an integer"),
            (#"[{"op": "points", "frame": 0.5, "obj": 1, "points": [[1, 1]], "labels": [1]}]"#, "actions[0].frame: expected an integer"),
            (#"[{"op": "points", "frame": 0, "obj": 1, "points": [[1, 1, 1]], "labels": [1]}]"#, "actions[0].points[0]: expected 2 numbers"),
            (#"[{"op": "points", "frame": 0, "obj": 1, "points": [[1, 1]], "labels": [2]}]"#, "actions[0].labels[0]: expected 1"),
            (#"[{"op": "points", "frame": 0, "obj": 1, "points": [[1, 1]], "labels": [1, 1]}]"#, "actions[0].labels: 2 labels for 1 points"),
            (#"[{"op": "points", "frame": 0, "obj": 1, "points": [[1, 1]]}]"#, "actions[0].labels: missing"),
            (#"[{"op": "box", "frame": 0, "obj": 1, "box": [1, 2, 3]}]"#, "actions[0].box: expected 4 numbers"),
            (#"[{"op": "propagate", "reverse": "yes"}]"#, "actions[0].reverse: expected true or false"),
            (#"[{"op": "propagate", "max": -1}]"#, "actions[0].max: must not be negative"),
            (#"[{"op": "propagate", "revers": true}]"#, "actions[0].revers: unknown field"),
            (#"[{"op": "mask", "frame": 0, "obj": 1}]"#, "actions[0].mask_png: missing"),
            ("", "prompts.json: file is empty"),
        ]
        for (json, expected) in cases {
            assertError(try track(Robust.clip, ["--prompts", try prompts(json)]), "prompts.json", expected)
        }
        assertError(try track(Robust.clip, ["--prompts", dir + "/absent.json"]), "cannot read prompts file", "absent.json")
    }

    func testMaskPromptThatCannotBeRead() throws {
        try "not a png".write(toFile: dir + "/mask.png", atomically: true, encoding: .utf8)
        let script = try prompts(#"[{"op": "mask", "frame": 0, "obj": 1, "mask_png": "\#(dir!)/mask.png"}]"#)
        assertError(try track(Robust.clip, ["--prompts", script]), "prompts.json: actions[0].mask_png: ", "mask.png")
    }

    func testPaletteNeedsObjectIdsThatFitAPaletteIndex() throws {
        assertError(try track(Robust.clip, click + ["--obj", "300", "--format", "palette"]), "object 300 does not fit")
    }

    func testUsageErrorsAreOneLine() throws {
        assertError(try track(Robust.clip, click, limit: 0), "--limit must be positive", status: 64)
        assertError(try track(Robust.clip, click + ["--bogus"]), "Unknown option '--bogus'", status: 64)
        assertError(try track(Robust.clip, []), "give prompts", status: 64)
        assertError(try track(Robust.clip, ["--point", "1,1", "--frame", "0"]), "--point must follow a --frame N")
        assertError(try Robust.sam2(["track", Robust.clip]), "Missing expected argument '--output <DIR>'", status: 64)
        assertError(try track(Robust.clip, click, model: ["--model", "sam3_giant"]), "unknown model 'sam3_giant'")
        assertError(try track(Robust.clip, click + ["--overlay", dir + "/no/such/folder/o.mp4"]), "--overlay", "does not exist")
        assertError(try track(Robust.clip, click + ["--overlay", dir]), "--overlay", "is a folder, not a file")
    }

    func testReplayErrorsAreOneLine() throws {
        assertError(try Robust.sam2(["replay", dir + "/nothing", "-o", dir + "/r.safetensors"]), "cannot read prompts file")
    }

    // MARK: checkpoints

    func testCheckpointNotAZip() throws {
        try "just text".write(toFile: dir + "/model.pt", atomically: true, encoding: .utf8)
        assertError(try track(Robust.clip, click, model: checkpoint(dir + "/model.pt")),
                    "model.pt", "neither a PyTorch zip checkpoint nor a safetensors file")
        assertError(try track(Robust.clip, click, model: checkpoint(dir + "/absent.pt")), "checkpoint", "absent.pt: no such file")
    }

    func testCheckpointZipWithoutDataPickle() throws {
        try Robust.rewrittenCheckpoint(to: dir + "/nopkl.pt") { name, bytes in name.hasSuffix("data.pkl") ? nil : bytes }
        assertError(try track(Robust.clip, click, model: checkpoint(dir + "/nopkl.pt")), "nopkl.pt", "no data.pkl in the archive")
    }

    func testCheckpointPickleGlobalsAreRefusedWithoutExecuting() throws {
        let marker = dir + "/pwned"
        var stackGlobal = PickleWriter()  // STACK_GLOBAL spelling of the same call
        stackGlobal.str("builtins"); stackGlobal.str("exec"); stackGlobal.op(0x93)
        stackGlobal.str("open('\(marker)', 'w')"); stackGlobal.op(0x85); stackGlobal.op(0x52); stackGlobal.op(0x2E)
        let exploits: [(String, [UInt8])] = [
            ("os.system", PickleWriter.call("os", "system", "touch \(marker)")),
            ("posix.system", PickleWriter.call("posix", "system", "touch \(marker)")),
            ("builtins.eval", PickleWriter.call("builtins", "eval", "open('\(marker)', 'w')")),
            ("subprocess.Popen", PickleWriter.call("subprocess", "Popen", "touch \(marker)")),
            ("torch.load", PickleWriter.call("torch", "load", marker)),
            ("builtins.exec", stackGlobal.bytes),
        ]
        for (global, pickle) in exploits {
            let path = dir + "/evil.pt"
            try Robust.write(makeZip([("archive/data.pkl", pickle)]), to: path)
            assertError(try track(Robust.clip, click, model: checkpoint(path)), "evil.pt", "refused pickle global '\(global)'")
            XCTAssertFalse(FileManager.default.fileExists(atPath: marker), "\(global) was executed")
        }
    }

    func testCheckpointStorageShorterThanItsTensor() throws {
        // Cut 4 bytes off the first tensor storage.
        var cut = ""
        try Robust.rewrittenCheckpoint(to: dir + "/short.pt") { name, bytes in
            guard cut.isEmpty, name.contains("/data/") else { return bytes }
            cut = name
            return Array(bytes.dropLast(4))
        }
        assertError(try track(Robust.clip, click, model: checkpoint(dir + "/short.pt")), "short.pt", "storage too short for tensor", cut)
    }

    func testCheckpointKeysAndShapesThatDoNotMatchTheConfig() throws {
        // A key renamed in the pickle (same length, so nothing else moves).
        try Robust.rewrittenCheckpoint(to: dir + "/renamed.pt") { name, bytes in
            guard name.hasSuffix("data.pkl") else { return bytes }
            return replacingFirst(Array("no_mem_embed".utf8), with: Array("no_mem_embeX".utf8), in: bytes)
        }
        assertError(try track(Robust.clip, click, model: checkpoint(dir + "/renamed.pt")), "missing key 'no_mem_embed'")

        try Robust.safetensorsCheckpoint(to: dir + "/extra.safetensors") { $0["extra.weight"] = Tensor(shape: [2], data: [1, 2]) }
        assertError(try track(Robust.clip, click, model: checkpoint(dir + "/extra.safetensors")), "1 key(s) the config does not use", "'extra.weight'")

        try Robust.safetensorsCheckpoint(to: dir + "/shape.safetensors") { $0["no_mem_embed"] = $0["no_mem_embed"]!.reshaped([1, 64]) }
        assertError(try track(Robust.clip, click, model: checkpoint(dir + "/shape.safetensors")),
                    "checkpoint key 'no_mem_embed' has shape [1, 64], the config expects [1, 1, 64]")

        // The real tiny config with the shrunk test checkpoint.
        assertError(try track(Robust.clip, click, model: ["--model", "sam2.1_hiera_tiny", "--checkpoint", Robust.checkpoint]),
                    "has shape", "the config expects")
    }

    func testCheckpointWithNaNOrInf() throws {
        for (label, value) in [("nan", Float.nan), ("inf", -Float.infinity)] {
            let path = dir + "/\(label).safetensors"
            try Robust.safetensorsCheckpoint(to: path) { $0["memory_encoder.out_proj.weight"]!.data[3] = value }
            assertError(try track(Robust.clip, click, model: checkpoint(path)),
                        "checkpoint tensor 'memory_encoder.out_proj.weight' contains NaN or Inf")
        }
    }

    func testCheckpointThatIsAFIFODoesNotHang() throws {
        let fifo = dir + "/fifo.pt"
        guard mkfifo(fifo, 0o600) == 0 else { throw XCTSkip("mkfifo failed") }
        let (process, finish) = try Robust.launch(["track", Robust.clip] + click + checkpoint(fifo) + ["--limit", "4", "-o", output])
        let deadline = Date().addingTimeInterval(60)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning {
            process.terminate()
            XCTFail("sam2 hung opening a FIFO as its checkpoint")
        }
        assertError(finish(), "fifo.pt", "not a regular file")
    }

    // MARK: outputs

    func testOutputFolderMustBeEmptyUnlessOverwrite() throws {
        try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
        try "mine".write(toFile: output + "/keep.txt", atomically: true, encoding: .utf8)
        let refused = try track(Robust.clip, click)
        XCTAssertEqual(refused.status, 1)
        XCTAssertEqual(refused.errorLines, ["sam2: error: output folder \(output) is not empty; pass --overwrite to replace its files"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: output), ["keep.txt"])

        let run = try track(Robust.clip, click + ["--overwrite"])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: output).sorted(), ["1", "keep.txt"])
        XCTAssertEqual(try completePNGs(in: output + "/1"), 4)

        // An output that is a file.
        XCTAssertTrue(FileManager.default.createFile(atPath: dir + "/file", contents: Data("x".utf8)))
        let onFile = try Robust.sam2(["track", Robust.clip] + click + Robust.model + ["--limit", "4", "-o", dir + "/file"])
        XCTAssertEqual(onFile.errorLines, ["sam2: error: output " + dir + "/file exists and is not a folder"])
    }

    func testSIGINTStopsBetweenFramesAndLeavesOnlyCompleteFiles() throws {
        try interrupt(with: SIGINT)
    }

    func testSIGTERMStopsBetweenFramesAndLeavesOnlyCompleteFiles() throws {
        try interrupt(with: SIGTERM)
    }

    /// A 120-frame run stopped by `signal` once its first masks are written (not after a fixed
    /// time: on a fast machine the small model tracks all 120 frames in a few seconds): exit
    /// 128 + signal, one line saying where it stopped and how many frames were written, that many
    /// complete PNGs, no temporary files, and no overlay (it is written only after all masks).
    func interrupt(with signal: Int32) throws {
        let video = try longClip()
        let overlay = dir + "/overlay.mp4"
        let (process, finish) = try Robust.launch(["track", video] + click + Robust.model + ["-o", output, "--overlay", overlay])
        let deadline = Date().addingTimeInterval(120)
        while process.isRunning && Date() < deadline
                && ((try? FileManager.default.contentsOfDirectory(atPath: output + "/1"))?.count ?? 0) < 2 {
            Thread.sleep(forTimeInterval: 0.005)
        }
        XCTAssertTrue(process.isRunning, "the run ended before it could be interrupted")
        kill(process.processIdentifier, signal)
        let run = finish()

        XCTAssertEqual(run.reason, .exit, "killed by the signal instead of stopping: \(run.stderr)")
        XCTAssertEqual(run.status, 128 + signal, run.stderr)
        XCTAssertEqual(run.errorLines.count, 1, run.stderr)
        let message = run.errorLines.first ?? ""
        let name = signal == SIGINT ? "SIGINT" : "SIGTERM"
        print("interrupted run: \(message)")
        if message.contains("before tracking started") {
            XCTAssertEqual(message, "sam2: interrupted (\(name)) before tracking started; nothing written")
            return
        }
        let pattern = #"^sam2: interrupted \("# + name + #"\) after frame (\d+) of 120; masks of (\d+) of 120 frames written to (.+), no overlay written$"#
        let regex = try NSRegularExpression(pattern: pattern)
        guard let match = regex.firstMatch(in: message, range: NSRange(message.startIndex..., in: message)) else {
            return XCTFail("unexpected message: \(message)")
        }
        let last = Int((message as NSString).substring(with: match.range(at: 1)))!
        let written = Int((message as NSString).substring(with: match.range(at: 2)))!
        XCTAssertEqual((message as NSString).substring(with: match.range(at: 3)), output)
        XCTAssertEqual(written, last + 1, "forward from frame 0: frames 0...\(last)")
        XCTAssertLessThan(written, 120)
        XCTAssertEqual(try completePNGs(in: output + "/1"), written)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: output), ["1"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: overlay))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix(".") }, [], "temporary files left")
    }

    /// Bytes scribbled over the middle of the clip, and (if ffmpeg can make one) an MJPEG clip with
    /// one frame's headers wiped: `sam2 track` either completes with a mask for every frame the
    /// reader counted and a warning, or stops with one error line; it never crashes.
    func testCorruptDataMidVideo() throws {
        var data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: Robust.clip)))
        var rng = SeededRandom(seed: 5)
        let start = data.count / 2
        for k in stride(from: start, to: start + 4000, by: 3) { data[k] = UInt8(truncatingIfNeeded: rng.next()) }
        try Robust.write(data, to: dir + "/scribbled.mp4")
        var clips = [dir + "/scribbled.mp4"]

        if VideoTestSupport.executable("ffmpeg") != nil {
            try VideoTestSupport.ffmpeg(["-i", Robust.clip, "-c:v", "mjpeg", "-q:v", "3", dir + "/mjpeg.avi"])
            var mjpeg = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/mjpeg.avi")))
            let starts = (0..<(mjpeg.count - 3)).filter { mjpeg[$0] == 0xFF && mjpeg[$0 + 1] == 0xD8 && mjpeg[$0 + 2] == 0xFF }
            XCTAssertGreaterThan(starts.count, 8)
            for k in starts[8]..<(starts[8] + 600) { mjpeg[k] = 0 }  // the 9th frame cannot be decoded
            try Robust.write(mjpeg, to: dir + "/mjpeg-broken.avi")
            clips.append(dir + "/mjpeg-broken.avi")
        }

        for clip in clips {
            try? FileManager.default.removeItem(atPath: output)
            let counted = try VideoFrameReader(path: clip).frameCount
            let run = try track(clip, click, limit: nil)
            XCTAssertEqual(run.reason, .exit, "crashed on \(clip): \(run.stderr)")
            print("\((clip as NSString).lastPathComponent): status \(run.status); \(run.stderr.split(separator: "\n").joined(separator: " | "))")
            if run.status == 0 {
                XCTAssertTrue(run.stdout.contains("over \(counted) of \(counted) frames"), run.stdout)
                XCTAssertEqual(try completePNGs(in: output + "/1"), counted)
            } else {
                XCTAssertEqual(run.status, 1)
                XCTAssertEqual(run.errorLines.count, 1, run.stderr)
                XCTAssertTrue(run.errorLines.first?.hasPrefix("sam2: error: ") ?? false, run.stderr)
            }
            if clip.hasSuffix("mjpeg-broken.avi") {
                XCTAssertTrue(run.stderr.contains("warning: "), "a skipped frame is reported: \(run.stderr)")
            }
        }
    }

    // MARK: helpers

    func prompts(_ json: String) throws -> String {
        let path = dir + "/prompts.json"
        try json.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func checkpoint(_ path: String) -> [String] { ["--config", Robust.config, "--checkpoint", path] }

    /// Counts the PNGs in `folder`, checking each decodes at the clip's size and that they are
    /// frames 00000, 00001, ... without a gap; fails on any other file (e.g. a leftover temporary).
    func completePNGs(in folder: String, file: StaticString = #filePath, line: UInt = #line) throws -> Int {
        let names = try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
        for (i, name) in names.enumerated() {
            XCTAssertEqual(name, String(format: "%05d.png", i), "unexpected file in \(folder)", file: file, line: line)
            let image = try ImageIO.readGray(path: folder + "/" + name)
            XCTAssertEqual(image.width, 480, file: file, line: line)
            XCTAssertEqual(image.height, 270, file: file, line: line)
        }
        return names.count
    }

    /// synth.mp4 five times over (120 frames): with ffmpeg a stream copy, else numbered PNGs.
    func longClip() throws -> String {
        if VideoTestSupport.executable("ffmpeg") != nil {
            let path = dir + "/long.mp4"
            try VideoTestSupport.ffmpeg(["-stream_loop", "4", "-i", Robust.clip, "-c", "copy", path])
            XCTAssertEqual(try VideoFrameReader(path: path).frameCount, 120)
            return path
        }
        let folder = dir + "/long"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let reader = try VideoFrameReader(path: Robust.clip)
        var n = 0
        while let frame = try reader.nextFrame() {
            for copy in 0..<5 {
                try ImageIO.writeRGBPNG(path: folder + String(format: "/%05d.png", copy * 24 + n),
                                        width: frame.width, height: frame.height, rgb: frame.rgb)
            }
            n += 1
        }
        return folder
    }
}

/// `bytes` with the first occurrence of `pattern` replaced.
func replacingFirst(_ pattern: [UInt8], with replacement: [UInt8], in bytes: [UInt8]) -> [UInt8] {
    guard let at = (0...(bytes.count - pattern.count)).first(where: { bytes[$0..<($0 + pattern.count)].elementsEqual(pattern) }) else {
        return bytes
    }
    var out = bytes
    out.replaceSubrange(at..<(at + pattern.count), with: replacement)
    return out
}
