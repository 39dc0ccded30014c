import Foundation
import XCTest
import SAM2Tensor
@testable import SAM2Video

final class VideoReaderTests: XCTestCase {
    /// A source dropped while its background prefetch runs: the prefetch then holds the last
    /// reference and deinit runs on the decoder's own queue (it used to sync on itself and trap;
    /// the server closes sessions at any moment).
    func testSourceReleasedDuringPrefetch() throws {
        for _ in 0..<40 {
            var source: VideoFrameSource? = try VideoFrameSource(path: Robust.clip)
            _ = try source!.modelInput(at: 0, size: 64)  // queues the prefetch of frame 1
            source = nil
        }
        Thread.sleep(forTimeInterval: 0.2)  // let the last prefetches end
    }

    typealias S = VideoTestSupport

    // MARK: - shared clips

    func testSharedClipsCountSizeAndFps() throws {
        // Expected values checked with ffprobe -count_packets / -count_frames.
        let clips: [(String, Int, Int, Int, Double)] = [
            ("synth.mp4", 480, 270, 24, 12),
            ("bedroom.mp4", 960, 540, 200, 30),
            ("01_dog.mp4", 1280, 720, 289, 30000.0 / 1001),
        ]
        for (name, w, h, n, fps) in clips {
            let reader = try VideoFrameReader(path: try S.sharedClip(name))
            XCTAssertEqual(reader.width, w, name)
            XCTAssertEqual(reader.height, h, name)
            XCTAssertEqual(reader.frameCount, n, name)
            XCTAssertEqual(reader.fps, fps, accuracy: 1e-6, name)
            XCTAssertEqual(reader.rotation, 0, name)
        }
        // Every counted frame is really produced, in order, with display-size RGB.
        let reader = try VideoFrameReader(path: try S.sharedClip("bedroom.mp4"))
        var seen = 0
        var lastTime = -1.0
        while let frame = try reader.nextFrame() {
            XCTAssertEqual(frame.index, seen)
            XCTAssertEqual(frame.rgb.count, 960 * 540 * 3)
            XCTAssertGreaterThan(frame.time, lastTime)
            lastTime = frame.time
            seen += 1
        }
        XCTAssertEqual(seen, 200)
        XCTAssertEqual(reader.skippedFrames, 0)
        XCTAssertNil(try reader.nextFrame(), "stays at the end")
    }

    func testLimitBoundsFrameCount() throws {
        let reader = try VideoFrameReader(path: try S.sharedClip("synth.mp4"), limit: 5)
        XCTAssertEqual(reader.frameCount, 5)
        var n = 0
        while try reader.nextFrame(modelSize: nil, includeRGB: false) != nil { n += 1 }
        XCTAssertEqual(n, 5)
        XCTAssertEqual(try VideoFrameReader(path: try S.sharedClip("synth.mp4"), limit: 1000).frameCount, 24)
    }

    /// Per-channel means of the normalised 1024x1024 input of frame 0, computed
    /// independently with the ffmpeg CLI (scale=1024:1024 with
    /// flags=bicubic+full_chroma_int+accurate_rnd+full_chroma_inp, rgb24) and numpy:
    /// (v/255 - mean)/std.
    func testFirstFrameModelInputMatchesReference() throws {
        let references: [(String, [Float], [Float])] = [
            ("synth.mp4", [-0.042754, 0.225291, 0.388745], [0.33094, 2.42857, -1.73473]),
            ("bedroom.mp4", [1.048706, 1.107402, 1.317979], [1.47829, 1.43067, 1.78597]),
            ("01_dog.mp4", [0.378264, 0.500527, 0.381067], [0.72481, -0.14496, -0.37525]),
        ]
        for (name, means, pixel) in references {
            let reader = try VideoFrameReader(path: try S.sharedClip(name), limit: 1)
            let result = try XCTUnwrap(try reader.nextFrame(modelSize: 1024))
            let input = try XCTUnwrap(result.input)
            XCTAssertEqual(input.shape, [3, 1024, 1024])
            let plane = 1024 * 1024
            for c in 0..<3 {
                let mean = input.data[(c * plane)..<((c + 1) * plane)].reduce(0, +) / Float(plane)
                XCTAssertEqual(mean, means[c], accuracy: 2e-3, "\(name) channel \(c) mean")
                // Pixel (row 512, column 341), as numpy n[512, 341].
                XCTAssertEqual(input.data[c * plane + 512 * 1024 + 341], pixel[c], accuracy: 0.02,
                               "\(name) channel \(c) pixel")
            }
        }
    }

    /// The model input equals the CLI's resize byte for byte (within one level).
    func testModelInputMatchesFFmpegCLIPixelwise() throws {
        _ = try S.requireFFmpeg()
        let path = try S.sharedClip("01_dog.mp4")
        let size = 512
        let cli = try S.cliRGB(path, filter: "scale=\(size):\(size):flags=\(S.exactFlags)")
        let reader = try VideoFrameReader(path: path, limit: 1)
        let input = try XCTUnwrap(try reader.nextFrame(modelSize: size)?.input)
        XCTAssertEqual(cli.count, size * size * 3)
        let plane = size * size
        var worst: Float = 0
        for i in 0..<plane {
            for c in 0..<3 {
                let expected = (Float(cli[3 * i + c]) / 255 - VideoFrameReader.mean[c]) / VideoFrameReader.std[c]
                worst = max(worst, abs(input.data[c * plane + i] - expected))
            }
        }
        // One 8-bit level is 1/255/0.224 = 0.0175 in normalised units.
        XCTAssertLessThan(worst, 0.018, "largest deviation from the CLI's resize")
    }

    func testDisplayRGBMatchesFFmpegCLI() throws {
        _ = try S.requireFFmpeg()
        let path = try S.sharedClip("synth.mp4")
        let cli = try S.cliRGB(path)
        let frame = try XCTUnwrap(try VideoFrameReader(path: path).nextFrame())
        XCTAssertLessThan(S.meanAbsDiff(frame.rgb, cli), 0.05)
    }

    // MARK: - generated clips: codecs and containers

    /// Make a 320x240, 20-frame clip with the given encoder and container.
    private func makeClip(_ dir: String, _ name: String, encoder: String, size: String = "320x240",
                          frames: Int = 20, extra: [String] = [], filter: String? = nil) throws -> String? {
        guard try S.hasEncoder(encoder) else { return nil }
        let out = dir + "/" + name
        var args = ["-f", "lavfi", "-i", "testsrc2=size=\(size):rate=10", "-frames:v", String(frames)]
        if let filter { args += ["-vf", filter] }
        args += ["-c:v", encoder] + extra + [out]
        try S.ffmpeg(args)
        return out
    }

    func testCodecsAndContainers() throws {
        _ = try S.requireFFmpeg()
        let dir = try S.makeTempDir("codecs")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cases: [(String, String, [String])] = [
            ("mpeg4.avi", "mpeg4", ["-q:v", "4"]),
            ("mjpeg.avi", "mjpeg", ["-q:v", "4"]),
            ("mjpeg.mov", "mjpeg", ["-q:v", "4"]),
            ("h264.mkv", "libx264", ["-preset", "ultrafast", "-pix_fmt", "yuv420p"]),
            ("h264-bframes.mp4", "libx264", ["-preset", "fast", "-bf", "3", "-pix_fmt", "yuv420p"]),
            ("vp9.webm", "libvpx-vp9", ["-deadline", "realtime", "-cpu-used", "8", "-b:v", "500k"]),
            ("hevc.mkv", "libx265", ["-preset", "ultrafast", "-x265-params", "log-level=error"]),
            ("av1.mkv", "libaom-av1", ["-cpu-used", "8", "-b:v", "300k"]),
            ("h264-10bit.mkv", "libx264", ["-preset", "ultrafast", "-pix_fmt", "yuv420p10le"]),
            ("gray-ffv1.mkv", "ffv1", ["-pix_fmt", "gray"]),
        ]
        var tested: [String] = []
        for (name, encoder, extra) in cases {
            guard let path = try makeClip(dir, name, encoder: encoder, extra: extra) else {
                print("note: encoder \(encoder) not available; skipping \(name)")
                continue
            }
            let reader = try VideoFrameReader(path: path)
            XCTAssertEqual(reader.width, 320, name)
            XCTAssertEqual(reader.height, 240, name)
            XCTAssertEqual(reader.frameCount, 20, name)
            XCTAssertEqual(reader.fps, 10, accuracy: 0.01, name)
            var frames = 0
            var first: VideoFrame? = nil
            while let result = try reader.nextFrame(modelSize: 64) {
                XCTAssertEqual(result.frame.index, frames, name)
                XCTAssertEqual(result.input?.shape, [3, 64, 64], name)
                if first == nil { first = result.frame }
                frames += 1
            }
            XCTAssertEqual(frames, 20, "\(name): frames yielded")
            let diff = S.meanAbsDiff(try XCTUnwrap(first).rgb, try S.cliRGB(path))
            print("\(name): mean |reader - ffmpeg CLI| = \(diff)")
            XCTAssertLessThan(diff, 0.05, "\(name) first frame vs ffmpeg CLI")
            tested.append(name)
        }
        XCTAssertTrue(tested.contains("mpeg4.avi") && tested.contains("mjpeg.avi"), "core FFmpeg encoders exist")
        print("codec/container cases tested: \(tested.joined(separator: ", "))")
    }

    func testPortraitAndOddSizes() throws {
        _ = try S.requireFFmpeg()
        let dir = try S.makeTempDir("shapes")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cases: [(String, String, [String], String?, Int, Int)] = [
            ("portrait.mp4", "libx264", ["-preset", "ultrafast", "-pix_fmt", "yuv420p"], nil, 270, 480),
            ("odd444.mp4", "libx264", ["-preset", "ultrafast", "-pix_fmt", "yuv444p"], "scale=321:240", 321, 240),
            ("odd.avi", "mjpeg", ["-q:v", "3"], "scale=321:241", 321, 241),
        ]
        for (name, encoder, extra, filter, w, h) in cases {
            let size = filter == nil ? "\(w)x\(h)" : "320x240"
            guard let path = try makeClip(dir, name, encoder: encoder, size: size, frames: 6, extra: extra, filter: filter) else {
                continue
            }
            let reader = try VideoFrameReader(path: path)
            XCTAssertEqual(reader.width, w, name)
            XCTAssertEqual(reader.height, h, name)
            XCTAssertEqual(reader.frameCount, 6, name)
            let result = try XCTUnwrap(try reader.nextFrame(modelSize: 100), name)
            XCTAssertEqual(result.frame.rgb.count, w * h * 3, name)
            XCTAssertEqual(result.input?.shape, [3, 100, 100], name)
            let diff = S.meanAbsDiff(result.frame.rgb, try S.cliRGB(path))
            print("\(name): mean |reader - ffmpeg CLI| = \(diff)")
            XCTAssertLessThan(diff, 0.05, name)
        }
    }

    // MARK: - rotation

    func testRotationMetadata() throws {
        _ = try S.requireFFmpeg()
        let dir = try S.makeTempDir("rotation")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        guard let base = try makeClip(dir, "base.mp4", encoder: "libx264", frames: 5,
                                      extra: ["-preset", "ultrafast", "-pix_fmt", "yuv420p"]) else {
            throw XCTSkip("libx264 not available")
        }
        // FFmpeg 5.1 has no -display_rotation; the legacy rotate tag on a stream
        // copy is turned into a display matrix by the mp4 muxer.
        for degrees in [90, 180, 270] {
            let path = dir + "/rot\(degrees).mp4"
            try S.ffmpeg(["-i", base, "-c", "copy", "-metadata:s:v:0", "rotate=\(degrees)", path])
            let reader = try VideoFrameReader(path: path)
            let swapped = degrees != 180
            XCTAssertEqual(reader.width, swapped ? 240 : 320, "rotate=\(degrees)")
            XCTAssertEqual(reader.height, swapped ? 320 : 240, "rotate=\(degrees)")
            XCTAssertNotEqual(reader.rotation, 0)
            XCTAssertEqual(reader.frameCount, 5)

            // Same picture as the CLI's autorotate.
            let result = try XCTUnwrap(try reader.nextFrame(modelSize: 128))
            let cli = try S.cliRGB(path)
            XCTAssertEqual(cli.count, result.frame.rgb.count)
            let diff = S.meanAbsDiff(result.frame.rgb, cli)
            print("rotate=\(degrees): display frame mean |reader - ffmpeg CLI| = \(diff)")
            XCTAssertLessThan(diff, 0.05, "rotate=\(degrees) display frame")

            // The model input is rotated too: compare with rotate-then-resize by the CLI.
            let cliSmall = try S.cliRGB(path, filter: "scale=128:128:flags=\(S.exactFlags)")
            let input = try XCTUnwrap(result.input)
            let plane = 128 * 128
            var mine = [UInt8](repeating: 0, count: plane * 3)
            for i in 0..<plane {
                for c in 0..<3 {
                    let v = input.data[c * plane + i] * VideoFrameReader.std[c] + VideoFrameReader.mean[c]
                    mine[3 * i + c] = UInt8(max(0, min(255, (v * 255).rounded())))
                }
            }
            let inputDiff = S.meanAbsDiff(mine, cliSmall)
            print("rotate=\(degrees): model input mean |reader - ffmpeg CLI| = \(inputDiff)")
            // Resize-then-rotate (reader) vs rotate-then-resize (CLI): rounding only.
            XCTAssertLessThan(inputDiff, 0.05, "rotate=\(degrees) model input")
        }
    }

    /// A stream copy cut at a non-keyframe keeps the packets from the previous
    /// keyframe and an mp4 edit list marks them discarded: they must not count.
    func testEditListDiscardedPacketsAreNotCounted() throws {
        _ = try S.requireFFmpeg()
        guard let ffprobe = S.executable("ffprobe") else { throw XCTSkip("ffprobe is not on PATH") }
        let dir = try S.makeTempDir("editlist")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        guard let base = try makeClip(dir, "base.mp4", encoder: "libx264", frames: 60,
                                      extra: ["-g", "30", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]) else {
            throw XCTSkip("libx264 not available")
        }
        let path = dir + "/cut.mp4"
        try S.ffmpeg(["-ss", "1.45", "-i", base, "-c", "copy", path])
        // Independent count: ffprobe decoding every frame.
        let probe = try S.run(ffprobe, ["-v", "error", "-select_streams", "v:0", "-count_frames",
                                        "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", path])
        let decoded = try XCTUnwrap(Int(String(decoding: probe.stdout, as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)), "ffprobe frame count")
        XCTAssertLessThan(decoded, 60, "the cut really uses an edit list")
        let reader = try VideoFrameReader(path: path)
        XCTAssertEqual(reader.frameCount, decoded)
        var n = 0
        while try reader.nextFrame(modelSize: nil, includeRGB: false) != nil { n += 1 }
        XCTAssertEqual(n, decoded)
        XCTAssertEqual(reader.skippedFrames, 0)
    }

    // MARK: - variable frame rate

    func testVariableFrameRateYieldsEveryFrame() throws {
        _ = try S.requireFFmpeg()
        let dir = try S.makeTempDir("vfr")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // 30 frames: the first 10 every 0.1 s, then every 0.5 s.
        let path = dir + "/vfr.mkv"
        try S.ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=10", "-frames:v", "30",
                      "-vf", "setpts='if(lt(N,10),N*0.1,1+(N-10)*0.5)/TB'", "-fps_mode", "vfr",
                      "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", path])
        let reader = try VideoFrameReader(path: path)
        XCTAssertEqual(reader.frameCount, 30)
        var times: [Double] = []
        while let frame = try reader.nextFrame() {
            XCTAssertEqual(frame.index, times.count)
            times.append(frame.time)
        }
        XCTAssertEqual(times.count, 30)
        XCTAssertEqual(times[5] - times[4], 0.1, accuracy: 0.01)
        XCTAssertEqual(times[20] - times[19], 0.5, accuracy: 0.01)
    }

    // MARK: - image folders

    func testImageFolderSortsNumerically() throws {
        let dir = try S.makeTempDir("folder")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Frame n is a solid grey of level 20 * n, so order is visible in the pixels.
        let w = 40, h = 30
        let names = ["1.png", "2.png", "10.png", "3.png", "frame_0004.png"]
        let order = [1, 2, 10, 3, 4]
        for (name, n) in zip(names, order) {
            try ImageIO.writeRGBPNG(path: dir + "/" + name, width: w, height: h,
                                    rgb: [UInt8](repeating: UInt8(20 * n), count: w * h * 3))
        }
        try "not an image".write(toFile: dir + "/notes.txt", atomically: true, encoding: .utf8)
        try ImageIO.writeRGBPNG(path: dir + "/.hidden.png", width: 5, height: 5, rgb: [UInt8](repeating: 0, count: 75))

        let reader = try VideoFrameReader(path: dir)
        XCTAssertTrue(reader.isImageFolder)
        XCTAssertEqual(reader.frameCount, 5)
        XCTAssertEqual(reader.width, w)
        XCTAssertEqual(reader.height, h)
        var levels: [UInt8] = []
        while let result = try reader.nextFrame(modelSize: 16) {
            levels.append(result.frame.rgb[0])
            // A solid image stays solid through the resize.
            let input = try XCTUnwrap(result.input)
            let expected = (Float(result.frame.rgb[0]) / 255 - 0.485) / 0.229
            XCTAssertEqual(input.data[0], expected, accuracy: 1e-4)
        }
        XCTAssertEqual(levels, [20, 40, 60, 80, 200], "1, 2, 3, 4, 10")
        XCTAssertEqual(try VideoFrameReader(path: dir, limit: 2).frameCount, 2)
        let none = try VideoFrameReader(path: dir, limit: 0)
        XCTAssertEqual(none.frameCount, 0)
        XCTAssertNil(try none.nextFrame())
    }

    func testImageFolderWithJPEGs() throws {
        _ = try S.requireFFmpeg()
        let dir = try S.makeTempDir("jpegs")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try S.ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10", "-frames:v", "12",
                      "-q:v", "2", dir + "/%05d.jpg"])
        let reader = try VideoFrameReader(path: dir)
        XCTAssertEqual(reader.frameCount, 12)
        XCTAssertEqual(reader.width, 160)
        XCTAssertEqual(reader.height, 120)
        let first = try XCTUnwrap(try reader.nextFrame())
        let cli = try S.cliRGB(dir + "/00001.jpg")
        XCTAssertLessThan(S.meanAbsDiff(first.rgb, cli), 0.05)
    }

    // MARK: - errors

    private func assertVideoError(_ path: String, _ check: (VideoError) -> Bool,
                                  file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try VideoFrameReader(path: path)
            XCTFail("expected an error for \(path)", file: file, line: line)
        } catch let error as VideoError {
            XCTAssertTrue(check(error), "unexpected error: \(error)", file: file, line: line)
            XCTAssertTrue(error.description.contains(path), "message names the file: \(error)", file: file, line: line)
            XCTAssertFalse(error.description.contains("\n"), "one line: \(error)", file: file, line: line)
        } catch {
            XCTFail("unexpected error type \(error)", file: file, line: line)
        }
    }

    func testErrorsForBadFiles() throws {
        let dir = try S.makeTempDir("errors")
        defer { try? FileManager.default.removeItem(atPath: dir) }

        assertVideoError(dir + "/missing.mp4") { if case .fileNotFound = $0 { return true }; return false }

        XCTAssertTrue(FileManager.default.createFile(atPath: dir + "/empty.mp4", contents: Data()))
        assertVideoError(dir + "/empty.mp4") { if case .emptyFile = $0 { return true }; return false }

        try String(repeating: "This is a text file, not a video.\n", count: 50)
            .write(toFile: dir + "/text.mp4", atomically: true, encoding: .utf8)
        assertVideoError(dir + "/text.mp4") { if case .notAVideo = $0 { return true }; return false }
        // libavformat would open a .txt as ANSI art; that is not a video either.
        try FileManager.default.copyItem(atPath: dir + "/text.mp4", toPath: dir + "/notes.txt")
        assertVideoError(dir + "/notes.txt") { if case .notAVideo = $0 { return true }; return false }

        try FileManager.default.createDirectory(atPath: dir + "/nothing", withIntermediateDirectories: true)
        try "x".write(toFile: dir + "/nothing/readme.txt", atomically: true, encoding: .utf8)
        assertVideoError(dir + "/nothing") { if case .noImages = $0 { return true }; return false }

        try FileManager.default.createDirectory(atPath: dir + "/mixed", withIntermediateDirectories: true)
        try ImageIO.writeGrayPNG(path: dir + "/mixed/0.png", width: 8, height: 8, pixels: [UInt8](repeating: 0, count: 64))
        try ImageIO.writeGrayPNG(path: dir + "/mixed/1.png", width: 8, height: 8, pixels: [UInt8](repeating: 0, count: 64))
        try ImageIO.writeGrayPNG(path: dir + "/mixed/2.png", width: 9, height: 8, pixels: [UInt8](repeating: 0, count: 72))
        assertVideoError(dir + "/mixed") { if case .mixedImageSizes = $0 { return true }; return false }
    }

    func testErrorsForDamagedAndUnsupportedVideos() throws {
        _ = try S.requireFFmpeg()
        let dir = try S.makeTempDir("damaged")
        defer { try? FileManager.default.removeItem(atPath: dir) }

        // Without +faststart the moov atom is written last: cutting the file loses it.
        guard let whole = try makeClip(dir, "whole.mp4", encoder: "libx264", frames: 30,
                                       extra: ["-preset", "ultrafast", "-pix_fmt", "yuv420p"]) else {
            throw XCTSkip("libx264 not available")
        }
        let bytes = try Data(contentsOf: URL(fileURLWithPath: whole))
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: dir + "/cut.mp4"))
        assertVideoError(dir + "/cut.mp4") { if case .truncated = $0 { return true }; return false }

        // With +faststart the moov comes first: a cut file still opens, and the
        // sample cut in half is neither counted nor yielded.
        let faststart = dir + "/faststart.mp4"
        try S.ffmpeg(["-i", whole, "-c", "copy", "-movflags", "+faststart", faststart])
        let fs = try Data(contentsOf: URL(fileURLWithPath: faststart))
        try fs.prefix(fs.count / 3).write(to: URL(fileURLWithPath: dir + "/faststart-cut.mp4"))
        let reader = try VideoFrameReader(path: dir + "/faststart-cut.mp4")
        var n = 0
        while try reader.nextFrame(modelSize: nil, includeRGB: false) != nil { n += 1 }
        XCTAssertGreaterThan(n, 0)
        XCTAssertLessThan(n, 30)
        XCTAssertEqual(n, reader.frameCount, "count up front equals frames yielded")

        // Audio only.
        try S.ffmpeg(["-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", dir + "/audio.mp4"])
        assertVideoError(dir + "/audio.mp4") { if case .noVideoStream = $0 { return true }; return false }

        // A codec tag FFmpeg has no decoder for: patch the fourcc of an MPEG-4 AVI.
        guard let avi = try makeClip(dir, "fourcc.avi", encoder: "mpeg4", frames: 5) else { return }
        var data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: avi)))
        let tag = Array("FMP4".utf8)
        var patched = 0
        var i = 0
        while i + 4 <= data.count {
            if Array(data[i..<(i + 4)]) == tag {
                data.replaceSubrange(i..<(i + 4), with: Array("ZQ9X".utf8))
                patched += 1
            }
            i += 1
        }
        XCTAssertGreaterThan(patched, 0, "found the MPEG-4 fourcc to patch")
        try Data(data).write(to: URL(fileURLWithPath: dir + "/unknown.avi"))
        assertVideoError(dir + "/unknown.avi") { if case .unsupportedCodec = $0 { return true }; return false }
    }

    /// Damaged packets in the middle: no crash, no throw, contiguous indices,
    /// never more than `frameCount` frames.
    func testCorruptPacketsMidStream() throws {
        _ = try S.requireFFmpeg()
        let dir = try S.makeTempDir("corrupt")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        guard let clip = try makeClip(dir, "clip.avi", encoder: "mpeg4", frames: 40, extra: ["-g", "10", "-q:v", "3"]) else {
            return
        }
        var data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: clip)))
        // Scribble over a stretch in the middle of the movi data (not the headers).
        // Deterministic scribble (a small LCG) so failures reproduce.
        var state: UInt32 = 12345
        let start = data.count / 2
        for k in start..<min(data.count, start + 3000) where k % 3 == 0 {
            state = state &* 1_664_525 &+ 1_013_904_223
            data[k] = UInt8(truncatingIfNeeded: state >> 24)
        }
        let path = dir + "/corrupt.avi"
        try Data(data).write(to: URL(fileURLWithPath: path))

        let reader = try VideoFrameReader(path: path)
        XCTAssertLessThanOrEqual(reader.frameCount, 40)
        var n = 0
        while let frame = try reader.nextFrame() {
            XCTAssertEqual(frame.index, n)
            XCTAssertEqual(frame.rgb.count, 320 * 240 * 3)
            n += 1
        }
        print("corrupt clip: counted \(reader.frameCount), yielded \(n), skipped \(reader.skippedFrames)")
        XCTAssertLessThanOrEqual(n, reader.frameCount)
        XCTAssertEqual(n + reader.skippedFrames, reader.frameCount, "yielded + skipped = counted")
        XCTAssertGreaterThan(n, 20)
    }

    /// An MJPEG frame whose JPEG headers are wiped cannot be decoded at all: it
    /// is skipped with a warning, the following frames keep contiguous indices.
    func testUndecodableFrameIsSkipped() throws {
        _ = try S.requireFFmpeg()
        let dir = try S.makeTempDir("undecodable")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        guard let clip = try makeClip(dir, "clip.avi", encoder: "mjpeg", frames: 20, extra: ["-q:v", "3"]) else { return }
        var data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: clip)))
        // Find the 8th JPEG start-of-image and zero its headers.
        var found = 0
        var i = 0
        while i + 3 < data.count {
            if data[i] == 0xFF && data[i + 1] == 0xD8 && data[i + 2] == 0xFF {
                found += 1
                if found == 8 {
                    for k in i..<min(data.count, i + 700) { data[k] = 0 }
                    break
                }
            }
            i += 1
        }
        XCTAssertEqual(found, 8)
        let path = dir + "/broken.avi"
        try Data(data).write(to: URL(fileURLWithPath: path))

        let reader = try VideoFrameReader(path: path)
        XCTAssertEqual(reader.frameCount, 20, "the demuxer still sees 20 packets")
        var n = 0
        while let frame = try reader.nextFrame() {
            XCTAssertEqual(frame.index, n)
            n += 1
        }
        XCTAssertEqual(reader.skippedFrames, 1)
        XCTAssertEqual(n, 19)
        XCTAssertEqual(n + reader.skippedFrames, reader.frameCount)
    }

    // MARK: - memory

    func testMemoryStaysBoundedOnLongClip() throws {
        let path = try S.sharedClip("01_dog.mp4")
        guard S.residentBytes() != nil else { throw XCTSkip("no /proc/self/status on this system") }
        let reader = try VideoFrameReader(path: path, limit: 300)
        var baseline = 0
        var peak = 0
        var n = 0
        while let result = try reader.nextFrame(modelSize: 1024) {
            _ = result
            n += 1
            let rss = S.residentBytes() ?? 0
            if n == 30 { baseline = rss }
            if n > 30 { peak = max(peak, rss) }
        }
        XCTAssertEqual(n, min(300, reader.frameCount))
        let growth = peak - baseline
        print("RSS after 30 frames: \(baseline >> 20) MB, peak afterwards: \(peak >> 20) MB (\(n) frames)")
        XCTAssertLessThan(growth, 50 << 20, "RSS grew by \(growth >> 20) MB after the first 30 frames")
    }
}
