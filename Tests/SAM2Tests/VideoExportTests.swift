import Foundation
import SAM2
import XCTest
@testable import SAM2Video

final class VideoExportTests: XCTestCase {
    typealias S = VideoTestSupport

    private func mask(_ w: Int, _ h: Int, _ inside: (Int, Int) -> Bool) -> BinaryMask {
        var bits = [UInt8](repeating: 0, count: w * h)
        for y in 0..<h { for x in 0..<w where inside(x, y) { bits[y * w + x] = 1 } }
        return BinaryMask(width: w, height: h, bits: bits)
    }

    private func randomMask(_ w: Int, _ h: Int, density: Double) -> BinaryMask {
        BinaryMask(width: w, height: h, bits: (0..<(w * h)).map { _ in Double.random(in: 0..<1) < density ? 1 : 0 })
    }

    // MARK: - COCO RLE

    /// Strings produced by pycocotools.mask.encode on the same masks.
    func testRLEMatchesPycocotools() throws {
        let a: [[UInt8]] = [[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 1, 1], [1, 0, 0, 1], [1, 1, 0, 0]]
        let maskA = BinaryMask(width: 4, height: 5, bits: a.flatMap { $0 })
        XCTAssertEqual(maskA.cocoRLEString(), "34202NM")

        // A disc plus a rectangle, 160x120 (w x h), 5241 pixels.
        let maskB = mask(160, 120) { x, y in
            (x - 60) * (x - 60) + (y - 50) * (y - 50) < 35 * 35 || (x >= 110 && x < 150 && y >= 80 && y < 115)
        }
        XCTAssertEqual(maskB.area, 5241)
        let expectedB = "jR3a0T36J6K4L4M2N2M4M2N2N2N2N2O0O2N2N2O0O2O0O2O000O2O000O2O00000000000000000000000000000001N10001N10001N101N101N2N2N101N2N2N2N2N3L3N2N3L4L5J6Jai1b0PVN00000000000000000000000000000000000000000000000000000000000000000000000000000PS1"
        XCTAssertEqual(maskB.cocoRLEString(), expectedB)
        XCTAssertEqual(try BinaryMask.fromRLE(counts: expectedB, height: 120, width: 160), maskB)

        // Starting with foreground: a leading zero-length background run.
        var c = [UInt8](repeating: 1, count: 9); c[4] = 0
        XCTAssertEqual(BinaryMask(width: 3, height: 3, bits: c).cocoRLEString(), "0410")
        XCTAssertEqual(BinaryMask(width: 3, height: 2).cocoRLEString(), "6")

        // Long runs; the string starts with a backslash (JSON must escape it).
        let maskD = mask(1000, 1000) { x, y in y >= 100 && y < 900 && x >= 5 && x < 995 }
        let expectedD = "\\o4Pi0X6" + String(repeating: "0", count: 1977) + "Ti4"
        XCTAssertEqual(maskD.cocoRLEString(), expectedD)
        XCTAssertEqual(try BinaryMask.fromRLE(counts: expectedD, height: 1000, width: 1000), maskD)
    }

    func testRLERoundTripAndBadInput() throws {
        for (w, h, density) in [(1, 1, 0.5), (7, 3, 0.5), (64, 48, 0.1), (33, 65, 0.9), (100, 1, 0.5)] {
            let m = randomMask(w, h, density: density)
            XCTAssertEqual(try BinaryMask.fromRLE(counts: m.cocoRLEString(), height: h, width: w), m)
            XCTAssertEqual(try BinaryMask.fromRLE(counts: m.rleCounts(), height: h, width: w), m)
        }
        XCTAssertThrowsError(try BinaryMask.fromRLE(counts: "34202NM", height: 5, width: 5), "wrong size")
        XCTAssertThrowsError(try BinaryMask.fromRLE(counts: "3~~", height: 5, width: 4), "bad characters")
        XCTAssertThrowsError(try BinaryMask.fromRLE(counts: "3P", height: 5, width: 4), "unterminated number")
        XCTAssertThrowsError(try BinaryMask.fromRLE(counts: "oooooooooooN4oooooooooooN", height: 5, width: 4), "huge runs")
        XCTAssertThrowsError(try BinaryMask.fromRLE(counts: [Int.max, Int.max, 5], height: 5, width: 4), "overflowing runs")
    }

    // MARK: - sinks

    func testPNGSequenceSink() throws {
        let dir = try S.makeTempDir("pngseq")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let sink = try PNGSequenceSink(directory: dir)
        let masks = (0..<3).map { _ in (randomMask(37, 21, density: 0.3), randomMask(37, 21, density: 0.6)) }
        for (f, pair) in masks.enumerated() {
            try sink.write(frameIndex: f, masks: [(objectId: 1, mask: pair.0), (objectId: 7, mask: pair.1)])
        }
        try sink.finish()
        for (f, pair) in masks.enumerated() {
            for (id, m) in [(1, pair.0), (7, pair.1)] {
                let file = "\(dir)/\(id)/0000\(f).png"
                let gray = try ImageIO.readGray(path: file)
                XCTAssertEqual(gray.width, 37)
                XCTAssertEqual(gray.height, 21)
                XCTAssertEqual(gray.gray, m.bits.map { $0 == 1 ? 255 : 0 }, file)
            }
        }
    }

    func testPaletteSinkRoundTripAndOverlap() throws {
        let dir = try S.makeTempDir("palette")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let w = 50, h = 40
        let sink = try PaletteSink(directory: dir, width: w, height: h)
        let first = mask(w, h) { x, _ in x < 30 }
        let second = mask(w, h) { x, _ in x >= 20 }   // overlaps columns 20..<30
        let third = mask(w, h) { _, y in y >= 35 }
        try sink.write(frameIndex: 0, masks: [(objectId: 1, mask: first), (objectId: 2, mask: second), (objectId: 200, mask: third)])
        try sink.write(frameIndex: 12, masks: [])
        try sink.finish()

        let image = try ImageIO.readIndexed(path: dir + "/00000.png")
        XCTAssertEqual(image.width, w)
        for y in 0..<h {
            for x in 0..<w {
                let expected: UInt8 = y >= 35 ? 200 : (x >= 20 ? 2 : 1)  // later objects win
                XCTAssertEqual(image.indices[y * w + x], expected, "(\(x), \(y))")
            }
        }
        let objects = try PaletteSink.read(path: dir + "/00000.png")
        XCTAssertEqual(Set(objects.keys), [1, 2, 200])
        XCTAssertEqual(objects[200], third)

        // Colours are the DAVIS palette: 1 -> (128, 0, 0), 2 -> (0, 128, 0).
        let rgb = try ImageIO.readImage(path: dir + "/00000.png")
        XCTAssertEqual(Array(rgb.rgb[0..<3]), [128, 0, 0])
        XCTAssertEqual(Array(rgb.rgb[(49 * 3)..<(49 * 3 + 3)]), [0, 128, 0])
        XCTAssertEqual(ImageIO.davisPalette[3].r, 128)
        XCTAssertEqual(ImageIO.davisPalette[3].g, 128)
        XCTAssertEqual(ImageIO.davisPalette[4].b, 128)

        let empty = try ImageIO.readIndexed(path: dir + "/00012.png")
        XCTAssertTrue(empty.indices.allSatisfy { $0 == 0 })

        XCTAssertThrowsError(try sink.write(frameIndex: 1, masks: [(objectId: 0, mask: first)]))
        XCTAssertThrowsError(try sink.write(frameIndex: 1, masks: [(objectId: 256, mask: first)]))
        XCTAssertThrowsError(try sink.write(frameIndex: 1, masks: [(objectId: 3, mask: BinaryMask(width: 5, height: 5))]))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/00001.png"))
    }

    func testRLESinkRoundTripIsAtomic() throws {
        let dir = try S.makeTempDir("rle")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let sink = try RLESink(directory: dir)
        var expected: [Int: [Int: BinaryMask]] = [:]
        for f in 0..<4 {
            let a = randomMask(64, 48, density: 0.2), b = randomMask(64, 48, density: 0.05)
            try sink.write(frameIndex: f, masks: [(objectId: 3, mask: a), (objectId: 1, mask: b)])
            expected[f] = [3: a, 1: b]
        }
        // A mask whose string contains a backslash must survive JSON.
        let slash = mask(1000, 1000) { x, y in y >= 100 && y < 900 && x >= 5 && x < 995 }
        try sink.write(frameIndex: 4, masks: [(objectId: 9, mask: slash)])
        expected[4] = [9: slash]
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/masks.json"), "nothing written before finish")
        try sink.finish()

        let decoded = try RLESink.read(path: dir + "/masks.json")
        XCTAssertEqual(decoded, expected)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0 != "masks.json" }
        XCTAssertEqual(leftovers, [], "no temporary files left behind")

        // The format others read: {"frames": {"0": {"1": {"size": [h, w], "counts": "..."}}}}
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/masks.json")))
        let entry = ((json as? [String: Any])?["frames"] as? [String: Any])?["0"] as? [String: Any]
        let rle = entry?["1"] as? [String: Any]
        XCTAssertEqual(rle?["size"] as? [Int], [48, 64])
        XCTAssertEqual(rle?["counts"] as? String, expected[0]?[1]?.cocoRLEString())
    }

    // MARK: - image I/O

    func testImageIORoundTripsAndErrors() throws {
        let dir = try S.makeTempDir("imageio")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let w = 17, h = 9
        let gray = (0..<(w * h)).map { UInt8(($0 * 7) % 256) }
        try ImageIO.writeGrayPNG(path: dir + "/g.png", width: w, height: h, pixels: gray)
        let g = try ImageIO.readGray(path: dir + "/g.png")
        XCTAssertEqual(g.gray, gray)
        XCTAssertEqual(try ImageIO.readImage(path: dir + "/g.png").rgb, gray.flatMap { [$0, $0, $0] })
        XCTAssertEqual(ImageIO.headerSize(path: dir + "/g.png")?.width, w)

        let rgb = (0..<(w * h * 3)).map { UInt8(($0 * 13) % 256) }
        try ImageIO.writeRGBPNG(path: dir + "/c.png", width: w, height: h, rgb: rgb)
        XCTAssertEqual(try ImageIO.readImage(path: dir + "/c.png").rgb, rgb)

        XCTAssertThrowsError(try ImageIO.writeGrayPNG(path: dir + "/bad.png", width: w, height: h, pixels: [1, 2, 3]))
        XCTAssertThrowsError(try ImageIO.readImage(path: dir + "/missing.png")) { error in
            XCTAssertTrue("\(error)".contains("missing.png"))
        }
        try "hello".write(toFile: dir + "/text.png", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ImageIO.readImage(path: dir + "/text.png"))
        var truncated = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/c.png")))
        truncated.removeLast(truncated.count / 2)
        try Data(truncated).write(to: URL(fileURLWithPath: dir + "/cut.png"))
        XCTAssertThrowsError(try ImageIO.readImage(path: dir + "/cut.png"))

        if S.executable("ffmpeg") != nil {
            try S.ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v", "1", "-q:v", "2", dir + "/j.jpg"])
            let jpeg = try ImageIO.readImage(path: dir + "/j.jpg")
            XCTAssertEqual(jpeg.width, 64)
            XCTAssertEqual(jpeg.height, 48)
            XCTAssertEqual(ImageIO.headerSize(path: dir + "/j.jpg")?.height, 48)
            XCTAssertLessThan(S.meanAbsDiff(jpeg.rgb, try S.cliRGB(dir + "/j.jpg")), 0.05)
        }
    }

    // MARK: - overlay video

    private func overlayRoundTrip(width w: Int, height h: Int, encoder: String? = nil) throws {
        let dir = try S.makeTempDir("overlay")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/overlay.mp4"
        let writer = try OverlayWriter(path: path, width: w, height: h, fps: 12, encoder: encoder)
        if let encoder { XCTAssertEqual(writer.encoderName, encoder) }
        let grey = [UInt8](repeating: 128, count: w * h * 3)
        let object = mask(w, h) { x, y in x >= w / 4 && x < w / 2 && y >= h / 4 && y < 3 * h / 4 }
        let count = 10
        for f in 0..<count {
            let frame = VideoFrame(index: f, width: w, height: h, rgb: grey)
            try writer.append(frame: frame, masks: [(objectId: 3, mask: object)],
                              points: f == 0 ? [(x: Double(w) * 0.8, y: Double(h) * 0.2, positive: true),
                                                (x: Double(w) * 0.8, y: Double(h) * 0.8, positive: false)] : [],
                              boxes: f == 0 ? [(2, 2, Double(w) / 2, Double(h) / 2)] : [])
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path), "the file appears only on finish")
        try writer.finish()

        let reader = try VideoFrameReader(path: path)
        XCTAssertEqual(reader.frameCount, count)
        XCTAssertEqual(reader.width, writer.outputWidth)
        XCTAssertEqual(reader.height, writer.outputHeight)
        XCTAssertEqual(writer.outputWidth, w + (w & 1))
        XCTAssertEqual(reader.fps, 12, accuracy: 0.01)

        let tint = OverlayWriter.colour(for: 3)   // (214, 39, 40): red
        let expected = [(128 + Int(tint.0) + 1) / 2, (128 + Int(tint.1) + 1) / 2, (128 + Int(tint.2) + 1) / 2]
        var frames = 0
        while let frame = try reader.nextFrame() {
            frames += 1
            let ow = frame.width
            func pixel(_ x: Int, _ y: Int) -> [Int] {
                let o = (y * ow + x) * 3
                return [Int(frame.rgb[o]), Int(frame.rgb[o + 1]), Int(frame.rgb[o + 2])]
            }
            // Well inside the mask and away from the box outline (4:2:0 chroma bleeds).
            let inside = pixel(3 * w / 8, 5 * h / 8)
            let outside = pixel(3 * w / 4, h / 2)
            for c in 0..<3 {
                XCTAssertEqual(Double(inside[c]), Double(expected[c]), accuracy: 8, "masked pixel channel \(c), frame \(frames)")
                XCTAssertEqual(Double(outside[c]), 128, accuracy: 6, "unmasked pixel channel \(c)")
            }
            if frames == 1 {
                let positive = pixel(Int(Double(w) * 0.8), Int(Double(h) * 0.2))
                let negative = pixel(Int(Double(w) * 0.8), Int(Double(h) * 0.8))
                XCTAssertGreaterThan(positive[1], 200, "green positive point")
                XCTAssertGreaterThan(negative[0], 200, "red negative point")
                XCTAssertLessThan(negative[1], 60)
            } else {
                XCTAssertEqual(Double(pixel(Int(Double(w) * 0.8), Int(Double(h) * 0.2))[1]), 128, accuracy: 6,
                               "points only on the frame where they were given")
            }
        }
        XCTAssertEqual(frames, count)
    }

    func testOverlayVideoRoundTrip() throws {
        try overlayRoundTrip(width: 160, height: 120)
    }

    func testOverlayVideoOddSize() throws {
        try overlayRoundTrip(width: 161, height: 121)
    }

    /// The fallback when FFmpeg has no libx264.
    func testOverlayVideoMPEG4Fallback() throws {
        try overlayRoundTrip(width: 161, height: 120, encoder: "mpeg4")
    }

    func testOverlayRejectsMismatchedInput() throws {
        let dir = try S.makeTempDir("overlay-bad")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let writer = try OverlayWriter(path: dir + "/o.mp4", width: 32, height: 32, fps: 10)
            let frame = VideoFrame(index: 0, width: 16, height: 16, rgb: [UInt8](repeating: 0, count: 16 * 16 * 3))
            XCTAssertThrowsError(try writer.append(frame: frame, masks: [], points: [], boxes: []))
            let mask = BinaryMask(width: 8, height: 8)
            let good = VideoFrame(index: 0, width: 32, height: 32, rgb: [UInt8](repeating: 0, count: 32 * 32 * 3))
            XCTAssertThrowsError(try writer.append(frame: good, masks: [(objectId: 1, mask: mask)], points: [], boxes: []))
            // Abandoned without finish(): deinit removes the temporary file.
        }
        XCTAssertThrowsError(try OverlayWriter(path: dir + "/z.mp4", width: 0, height: 32, fps: 10))
        XCTAssertThrowsError(try OverlayWriter(path: dir + "/no/such/dir/o.mp4", width: 32, height: 32, fps: 10))
        XCTAssertThrowsError(try OverlayWriter(path: dir + "/v.mp4", width: 32, height: 32, fps: 10, encoder: "vp9"))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [], "failed writers leave no files")
    }
}
