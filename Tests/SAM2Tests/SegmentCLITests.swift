import Foundation
import XCTest
import SAM2
import SAM2Checkpoint
import SAM2Tensor
import SAM2Video

/// `sam2 segment` end to end on the committed image fixture's model: its PNGs and masks.json hold
/// the library's (and so the replay's) masks; bad input is one line and no output.
final class SegmentCLITests: XCTestCase {
    static let fixture = TestPaths.committedFixtureNamed("image_synth20")
    let model = ["--config", "\(SegmentCLITests.fixture)/config.yaml", "--checkpoint", "\(SegmentCLITests.fixture)/checkpoint.pt"]
    var dir: String!
    var output: String { dir + "/out" }

    override func setUpWithError() throws { dir = try Robust.tempDir("segment") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    func segment(_ args: [String]) throws -> Robust.Run {
        try Robust.sam2(["segment"] + args + model + ["-o", output])
    }

    func image() throws -> String {
        let path = dir + "/synth.png"
        if !FileManager.default.fileExists(atPath: path) { try FileManager.default.copyItem(atPath: "\(Self.fixture)/image.png", toPath: path) }
        return path
    }

    /// The masks of masks.json (decoded by our own decoder) and of the PNGs, in order.
    func outputs(_ name: String) throws -> (json: [String: Any], rle: [BinaryMask], png: [BinaryMask]) {
        let folder = "\(output)/\(name)"
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(folder)/masks.json"))) as! [String: Any]
        let anns = json["annotations"] as! [[String: Any]]
        let rle = try anns.map { a -> BinaryMask in
            let seg = a["segmentation"] as! [String: Any], size = seg["size"] as! [Int]
            return try BinaryMask.fromRLE(counts: seg["counts"] as! String, height: size[0], width: size[1])
        }
        let png = try anns.indices.compactMap { k -> BinaryMask? in
            guard FileManager.default.fileExists(atPath: "\(folder)/\(k).png") else { return nil }
            let g = try ImageIO.readGray(path: "\(folder)/\(k).png")
            return BinaryMask(width: g.width, height: g.height, bits: g.gray.map { $0 > 127 ? 1 : 0 })
        }
        return (json, rle, png)
    }

    func library() throws -> (SAM2Model, RGBImage) {
        let f = Self.fixture
        let model = try SAM2Model(config: try SAM2Config.load(path: "\(f)/config.yaml"), checkpointPath: "\(f)/checkpoint.pt")
        let img = try ImageIO.readImage(path: "\(f)/image.png")
        return (model, RGBImage(width: img.width, height: img.height, pixels: img.rgb))
    }

    func testPromptsWriteTheLibrarysMasks() throws {
        // The fixture's case c00: one click, three masks, mask threshold 0.25.
        let run = try segment([try image(), "--point", "150,100", "--multimask", "--mask-threshold", "0.25", "--overlay"])
        XCTAssertEqual(run.status, 0, run.stderr)
        let out = try outputs("synth")
        let (model, img) = try library()
        let want = try ImagePredictor(model: model, maskThreshold: 0.25).then { $0.setImage(img) }
            .predict(points: [(150, 100)], labels: [1])
        XCTAssertEqual(out.rle, want.masks)
        XCTAssertEqual(out.png, want.masks)
        // ...and the official predictor's masks for it (compare_image.py's limit: IoU >= 0.99 each).
        let official = try Safetensors.read(path: "\(Self.fixture)/outputs.safetensors")["c00.mask_bits"]!.bytes
        let plane = 317 * 203
        let bits = ImageParityReport.unpack(official, 3 * plane)
        for k in 0..<3 {
            XCTAssertGreaterThanOrEqual(ImageParityReport.iou(Array(bits[(k * plane)..<((k + 1) * plane)]), out.png[k].bits), 0.99, "mask \(k)")
        }
        let anns = out.json["annotations"] as! [[String: Any]]
        XCTAssertEqual(anns.map { Float($0["predicted_iou"] as! Double) }, want.ious)
        XCTAssertEqual(anns[0]["point_coords"] as! [[Double]], [[150, 100]])
        XCTAssertEqual(anns[1]["area"] as? Int, want.masks[1].area)
        let image = out.json["image"] as! [String: Any]
        XCTAssertEqual(image["width"] as? Int, 317)
        XCTAssertEqual(image["height"] as? Int, 203)
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(output)/synth/overlay.png"))
    }

    func testSeveralBoxesAreSeveralObjects() throws {
        let run = try segment([try image(), "--box", "10,10,100,100", "--box", "120,40,300,190", "--no-png"])
        XCTAssertEqual(run.status, 0, run.stderr)
        let out = try outputs("synth")
        XCTAssertTrue(out.png.isEmpty)
        let (model, img) = try library()
        let predictor = ImagePredictor(model: model)
        predictor.setImage(img)
        let want = try predictor.predict(boxes: [ImageBox(x0: 10, y0: 10, x1: 100, y1: 100), ImageBox(x0: 120, y0: 40, x1: 300, y1: 190)],
                                         multimask: false)
        XCTAssertEqual(out.rle, want.flatMap(\.masks))
    }

    /// --everything with the generator's options: masks.json equals the library generator's records.
    func testEverythingWritesTheGeneratorsMasks() throws {
        let args = ["--points-per-side", "4", "--pred-iou-thresh", "0.3", "--stability-score-thresh", "0.0005", "--box-nms-thresh", "0.995"]
        let run = try segment([try image(), "--everything"] + args)
        XCTAssertEqual(run.status, 0, run.stderr)
        let out = try outputs("synth")
        let (model, img) = try library()
        var p = AutomaticMaskGenerator.Parameters()
        (p.pointsPerSide, p.predIouThresh, p.stabilityScoreThresh, p.boxNmsThresh) = (4, 0.3, 0.0005, 0.995)
        let records = try AutomaticMaskGenerator(model: model, parameters: p).generate(img)
        XCTAssertGreaterThan(records.count, 0)
        XCTAssertEqual(out.rle, records.map(\.mask))
        XCTAssertEqual(out.png, records.map(\.mask))
        let anns = out.json["annotations"] as! [[String: Any]]
        XCTAssertEqual(anns.map { $0["bbox"] as! [Double] }, records.map(\.bbox))
        XCTAssertEqual(anns.map { Float($0["stability_score"] as! Double) }, records.map(\.stabilityScore))
    }

    /// A folder, other still formats and a video frame in one run: the model loads once; lossless
    /// formats decode to the same pixels as the PNG.
    func testFoldersFormatsAndVideoFrames() throws {
        let ffmpeg = try VideoTestSupport.requireFFmpeg()
        let folder = dir + "/images"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        for ext in ["bmp", "tiff"] {
            _ = try VideoTestSupport.run(ffmpeg, ["-loglevel", "error", "-i", "\(Self.fixture)/image.png", "\(folder)/a_\(ext).\(ext)"])
            XCTAssertEqual(try ImageIO.readImage(path: "\(folder)/a_\(ext).\(ext)").rgb, try ImageIO.readImage(path: "\(Self.fixture)/image.png").rgb, ext)
        }
        let run = try segment([folder, "--point", "150,100", "--neg", "40,30"])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertEqual(try outputs("a_bmp").rle, try outputs("a_tiff").rle)
        let (model, img) = try library()
        let want = try ImagePredictor(model: model).then { $0.setImage(img) }.predict(points: [(150, 100), (40, 30)], labels: [1, 0], multimask: false)
        XCTAssertEqual(try outputs("a_bmp").rle, want.masks)
        let video = try segment([Robust.clip, "--frame", "3", "--box", "100,50,300,200", "--overwrite"])
        XCTAssertEqual(video.status, 0, video.stderr)
        XCTAssertEqual(try outputs("synth_00003").rle.count, 1)
    }

    // MARK: errors: one line, no output

    func assertError(_ run: Robust.Run, _ expected: String..., status: Int32 = 1, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(run.reason, .exit, file: file, line: line)
        XCTAssertEqual(run.status, status, run.stderr, file: file, line: line)
        XCTAssertEqual(run.errorLines.count, 1, run.stderr, file: file, line: line)
        for text in expected { XCTAssertTrue(run.stderr.contains(text), "'\(run.stderr)' should contain '\(text)'", file: file, line: line) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: output), "no output after an error", file: file, line: line)
    }

    func testBadImage() throws {
        let path = dir + "/noise.png"
        try Robust.write((0..<4000).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 13) }, to: path)
        assertError(try segment([path, "--point", "1,1"]), "noise.png", "not a PNG, JPEG, WebP, BMP or TIFF image")
        let truncated = dir + "/cut.png"
        let bytes = try Data(contentsOf: URL(fileURLWithPath: "\(Self.fixture)/image.png"))
        try bytes.prefix(bytes.count / 3).write(to: URL(fileURLWithPath: truncated))
        assertError(try segment([truncated, "--everything"]), "cut.png")
    }

    func testPromptOutsideTheImage() throws {
        assertError(try segment([try image(), "--point", "400,100"]), "outside", "317x203")
        assertError(try segment([try image(), "--box", "10,10,500,100"]), "outside")
        assertError(try segment([try image(), "--box", "50,50,10,100"]), "x1 must exceed x0")
    }

    func testEmptyFolderAndMissingInput() throws {
        let empty = dir + "/empty"
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        assertError(try segment([empty, "--everything"]), "has no images")
        assertError(try segment([dir + "/missing.jpg", "--everything"]), "missing.jpg", "no such file")
        assertError(try segment([Robust.clip, "--frame", "99", "--everything"]), "beyond the last frame")
    }

    func testUsageErrors() throws {
        assertError(try segment([try image()]), "--everything", status: 64)
        assertError(try segment([try image(), "--everything", "--point", "1,1"]), "--everything", status: 64)
        assertError(try segment([try image(), "--point", "1,1", "--crop-n-layers", "1"]), "need --everything", status: 64)
        assertError(try segment([try image(), "--neg", "1,1"]), "negative clicks alone", status: 64)
        assertError(try segment([try image(), "--everything", "--points-per-side", "0"]), "points_per_side must be positive")
    }
}

extension ImagePredictor {
    /// `body(self)`, then self: set up a predictor in an expression.
    func then(_ body: (ImagePredictor) throws -> Void) rethrows -> ImagePredictor { try body(self); return self }
}
