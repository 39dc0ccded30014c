import ArgumentParser
import Foundation
import SAM2
import SAM2Checkpoint
import SAM2Tensor
import SAM2Video

struct Segment: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Segment images: masks from clicks and boxes, or every object (--everything).",
        discussion: """
        Prompts (the image predictor, SAM2ImagePredictor):
          sam2 segment photo.jpg --point 500,375 --output masks/               one click: the best mask
          sam2 segment photo.jpg --point 500,375 --multimask --output masks/   the three masks with scores
          sam2 segment photo.jpg --box 75,275,1725,850 --neg 575,750 --output masks/
          sam2 segment photo.jpg --box 10,10,200,200 --box 300,40,500,260 --output masks/   one object per box

        Everything (the automatic mask generator, SAM2AutomaticMaskGenerator), with its official parameters:
          sam2 segment photos/ --everything --points-per-side 32 --output masks/

        Inputs: image files (PNG, JPEG, WebP, BMP, TIFF), folders of them, or one video with --frame N; the \
        model loads once. Output per image in DIR/<image name>/: masks.json (SA-1B layout: segmentation as \
        COCO RLE, area, bbox, predicted_iou, stability_score, point_coords, crop_box), <k>.png per mask \
        (0/255, in the model's output order; --no-png skips them) and with --overlay overlay.png. Each \
        image's folder appears complete or not at all. Errors are one line on stderr with exit status 1 \
        (64 for usage); Ctrl-C stops between images, keeping the finished ones.
        """)

    @Argument(help: "Image files or folders of images (or one video with --frame N).")
    var inputs: [String] = []
    @Option(name: .long, help: ArgumentHelp("With a video input: the frame to segment (0-based).", valueName: "N"))
    var frame: Int?

    @Option(name: .customLong("point"), help: ArgumentHelp("A positive click x,y in image pixels.", valueName: "x,y"))
    var points: [String] = []
    @Option(name: .customLong("neg"), help: ArgumentHelp("A negative click x,y in image pixels.", valueName: "x,y"))
    var negatives: [String] = []
    @Option(name: .customLong("box"), help: ArgumentHelp("A box x0,y0,x1,y1 in image pixels; several boxes are several objects.", valueName: "x0,y0,x1,y1"))
    var boxes: [String] = []
    @Option(name: .customLong("mask-input"), help: ArgumentHelp("A rough mask image (nonzero = object) refining the clicks or box; given to the model as ±10 logits at 256x256.", valueName: "FILE"))
    var maskInput: String?
    @Flag(name: .long, help: "Three masks per object (the official multimask output) instead of the single best one.")
    var multimask = false

    @Flag(name: .long, help: "Segment everything: the automatic mask generator.")
    var everything = false
    @Option(name: .customLong("points-per-side"), help: "Grid of points_per_side² clicks (default 32).")
    var pointsPerSide: Int?
    @Option(name: .customLong("points-per-batch"), help: "Clicks decoded per batch (default 64).")
    var pointsPerBatch: Int?
    @Option(name: .customLong("pred-iou-thresh"), help: "Keep masks whose predicted IoU is above this (default 0.8).")
    var predIouThresh: Double?
    @Option(name: .customLong("stability-score-thresh"), help: "Keep masks at least this stable (default 0.95).")
    var stabilityScoreThresh: Double?
    @Option(name: .customLong("stability-score-offset"), help: "Logit offset of the stability score (default 1.0).")
    var stabilityScoreOffset: Double?
    @Option(name: .customLong("box-nms-thresh"), help: "Box IoU above which a mask duplicates a better one (default 0.7).")
    var boxNmsThresh: Double?
    @Option(name: .customLong("crop-n-layers"), help: "Also run on crops: layer i has (2^i)² crops (default 0).")
    var cropNLayers: Int?
    @Option(name: .customLong("crop-nms-thresh"), help: "Box IoU for duplicates across crops (default 0.7).")
    var cropNmsThresh: Double?
    @Option(name: .customLong("crop-overlap-ratio"), help: "Overlap of the first crop layer's crops (default 512/1500).")
    var cropOverlapRatio: Double?
    @Option(name: .customLong("crop-n-points-downscale-factor"), help: "Points per side in crop layer i: divided by this^i (default 1).")
    var cropNPointsDownscaleFactor: Int?
    @Option(name: .customLong("min-mask-region-area"), help: "Remove holes and islands up to this many low-res pixels (default 0: off).")
    var minMaskRegionArea: Int?
    @Flag(name: .customLong("use-m2m"), help: "Refine each mask once with its own mask as a prompt.")
    var useM2m = false
    @Option(name: .customLong("mask-threshold"), help: "Logit threshold of the masks (default 0).")
    var maskThreshold: Double?

    @OptionGroup var modelOptions: ModelOptions

    @Option(name: .shortAndLong, help: ArgumentHelp("Output folder: one subfolder per image.", valueName: "DIR"))
    var output: String
    @Flag(name: .customLong("no-png"), help: "Write masks.json only, no PNG per mask.")
    var noPNG = false
    @Flag(name: .long, help: "Also write overlay.png: the image with the masks in distinct colours.")
    var overlay = false
    @Flag(name: .long, help: "Write into a non-empty output folder, replacing an image's earlier results.")
    var overwrite = false

    var promptGiven: Bool { !points.isEmpty || !negatives.isEmpty || !boxes.isEmpty || maskInput != nil }
    var generatorOptionGiven: Bool {
        pointsPerSide != nil || pointsPerBatch != nil || predIouThresh != nil || stabilityScoreThresh != nil
            || stabilityScoreOffset != nil || boxNmsThresh != nil || cropNLayers != nil || cropNmsThresh != nil
            || cropOverlapRatio != nil || cropNPointsDownscaleFactor != nil || minMaskRegionArea != nil || useM2m
    }

    func validate() throws {
        if inputs.isEmpty { throw ValidationError("give at least one image, folder or video") }
        if everything && promptGiven { throw ValidationError("--everything takes no --point, --neg, --box or --mask-input") }
        if !everything && !promptGiven { throw ValidationError("give prompts (--point, --neg, --box) or --everything") }
        if !everything && generatorOptionGiven { throw ValidationError("the mask-generator options need --everything") }
        if everything && multimask { throw ValidationError("--multimask is for prompts; --everything always uses all three masks") }
        if !everything && points.isEmpty && !negatives.isEmpty && boxes.isEmpty {
            throw ValidationError("negative clicks alone select nothing: add --point or --box")
        }
        if boxes.count > 1 && (!points.isEmpty || !negatives.isEmpty || maskInput != nil) {
            throw ValidationError("with several boxes (one object each) give no clicks or mask input")
        }
        if let frame {
            if frame < 0 { throw ValidationError("--frame must not be negative") }
            if inputs.count != 1 { throw ValidationError("--frame N takes exactly one video") }
        }
    }

    func run() throws {
        let interruption = Interruption.install()
        do {
            try segment(interruption)
        } catch let stop as Interrupted {
            fail(stop.message, status: 128 + stop.signal)
        } catch {
            fail(describe(error))
        }
    }

    /// One input picture: where it comes from and the name of its output folder.
    struct Item {
        var path: String
        var name: String
        var frame: Int?
    }

    private func segment(_ interruption: Interruption) throws {
        let started = Date()
        let items = try collectInputs()
        // Prompts are parsed and checked against each image's size before the model loads.
        let prompt = try parsePrompt()
        let params = try generatorParameters()
        // Every image is decoded once up front (a fraction of its model time), so that a damaged
        // file late in a folder fails the run before anything is written.
        for item in items {
            let image = try loadItem(item)
            if !everything { try checkInside(prompt, width: image.width, height: image.height, name: item.path) }
            try interruption.check("stopped by \(signalName(interruption.signal ?? SIGINT)) while checking the inputs; nothing written")
        }
        let maskLogits = try maskInput.map(loadMaskInput)
        let (cfg, ckpt) = try modelOptions.resolve()
        let net = try SAM2Model(config: cfg, checkpointPath: ckpt)
        let created = try prepareOutput()
        var wrote = false
        defer { if created && !wrote { rmdir(output) } }  // removes it only if still empty

        let predictor = ImagePredictor(model: net, maskThreshold: Float(maskThreshold ?? 0))
        let generator = everything ? try AutomaticMaskGenerator(model: net, parameters: params) : nil
        var done = 0
        for (n, item) in items.enumerated() {
            try interruption.check("stopped by \(signalName(interruption.signal ?? SIGINT)) after \(done) of \(items.count) images; their results are in \(output)")
            let t0 = Date()
            let image = try loadItem(item)
            let annotations: [Annotation]
            var markers: (points: [(x: Double, y: Double, positive: Bool)], boxes: [(Double, Double, Double, Double)]) = ([], [])
            if let generator {
                let bar = ProgressLine(label: item.name)
                annotations = try generator.generate(image) { bar.update($0, $1) }.map(Annotation.init)
                bar.finish()
            } else {
                predictor.setImage(image)
                annotations = try predict(prompt, maskLogits: maskLogits, predictor: predictor, image: image)
                markers = (prompt.points.map { ($0.x, $0.y, $0.positive) }, prompt.boxes.map { ($0.x0, $0.y0, $0.x1, $0.y1) })
            }
            try write(annotations, image: image, item: item, imageId: n, markers: markers)
            wrote = true
            done += 1
            print(String(format: "[%d/%d] %@: %d masks in %.2f s -> %@", n + 1, items.count, item.name, annotations.count,
                         Date().timeIntervalSince(t0), (output as NSString).appendingPathComponent(item.name)))
        }
        let elapsed = Date().timeIntervalSince(started)
        print(String(format: "segmented %d image%@ in %.1f s", items.count, items.count == 1 ? "" : "s", elapsed))
    }

    // MARK: prompts

    struct Prompt {
        var points: [(x: Double, y: Double, positive: Bool)] = []
        var boxes: [ImageBox] = []
    }

    private func parsePrompt() throws -> Prompt {
        func numbers(_ s: String, _ n: Int, _ flag: String) throws -> [Double] {
            let v = s.split(separator: ",", omittingEmptySubsequences: false).map { Double($0.trimmingCharacters(in: .whitespaces)) }
            guard v.count == n, v.allSatisfy({ $0 != nil && $0!.isFinite }) else {
                throw PredictorError("\(flag) \(s): expected \(n) comma-separated numbers")
            }
            return v.map { $0! }
        }
        var p = Prompt()
        // Positive clicks, then negative ones (the decoder's tokens carry no order: only float
        // rounding could tell the difference).
        p.points = try points.map { let v = try numbers($0, 2, "--point"); return (v[0], v[1], true) }
            + negatives.map { let v = try numbers($0, 2, "--neg"); return (v[0], v[1], false) }
        p.boxes = try boxes.map { s in
            let v = try numbers(s, 4, "--box")
            guard v[2] > v[0], v[3] > v[1] else { throw PredictorError("--box \(s): x1 must exceed x0 and y1 exceed y0") }
            return ImageBox(x0: v[0], y0: v[1], x1: v[2], y1: v[3])
        }
        return p
    }

    private func checkInside(_ p: Prompt, width: Int, height: Int, name: String) throws {
        let (w, h) = (Double(width), Double(height))
        for q in p.points where !(q.x >= 0 && q.x <= w && q.y >= 0 && q.y <= h) {
            throw PredictorError("click \(q.x),\(q.y) is outside \(name) (\(width)x\(height))")
        }
        for b in p.boxes where !(b.x0 >= 0 && b.y0 >= 0 && b.x1 <= w && b.y1 <= h) {
            throw PredictorError("box \(b.x0),\(b.y0),\(b.x1),\(b.y1) is outside \(name) (\(width)x\(height))")
        }
    }

    /// A mask image as the model's mask input: resized to 256x256 (antialiased), +10 inside, -10 outside.
    private func loadMaskInput(_ path: String) throws -> Tensor {
        let m = try loadMaskPNG(path)
        let side = 256
        let t = Tensor(shape: [1, m.height, m.width], data: m.mask.map(Float.init))
        return Interpolate.bilinearAntialiased(t, height: side, width: side).map { $0 >= 0.5 ? 10 : -10 }
    }

    private func predict(_ p: Prompt, maskLogits: Tensor?, predictor: ImagePredictor, image: RGBImage) throws -> [Annotation] {
        let clicks = p.points.map { (x: $0.x, y: $0.y) }, labels = p.points.map { $0.positive ? 1 : 0 }
        let predictions: [ImagePrediction]
        if p.boxes.count > 1 {
            predictions = try predictor.predict(boxes: p.boxes, multimask: multimask)
        } else {
            predictions = [try predictor.predict(points: clicks, labels: labels, box: p.boxes.first, maskInput: maskLogits,
                                                 multimask: multimask)]
        }
        let pointCoords = clicks.map { [$0.x, $0.y] }
        return predictions.flatMap { pred -> [Annotation] in
            let logits = pred.logits()
            let plane = image.width * image.height
            return pred.masks.indices.map { k in
                let stability = AutomaticMaskGenerator.stabilityScore(Array(logits.data[(k * plane)..<((k + 1) * plane)]),
                                                                      threshold: predictor.maskThreshold, offset: 1)
                return Annotation(mask: pred.masks[k], predictedIou: pred.ious[k], stabilityScore: stability,
                                  pointCoords: pointCoords, cropBox: [0, 0, image.width, image.height])
            }
        }
    }

    private func generatorParameters() throws -> AutomaticMaskGenerator.Parameters {
        var p = AutomaticMaskGenerator.Parameters()
        if let v = pointsPerSide { p.pointsPerSide = v }
        let ints: [(WritableKeyPath<AutomaticMaskGenerator.Parameters, Int>, Int?)] = [
            (\.pointsPerBatch, pointsPerBatch), (\.cropNLayers, cropNLayers),
            (\.cropNPointsDownscaleFactor, cropNPointsDownscaleFactor), (\.minMaskRegionArea, minMaskRegionArea)]
        let doubles: [(WritableKeyPath<AutomaticMaskGenerator.Parameters, Double>, Double?)] = [
            (\.predIouThresh, predIouThresh), (\.stabilityScoreThresh, stabilityScoreThresh),
            (\.stabilityScoreOffset, stabilityScoreOffset), (\.boxNmsThresh, boxNmsThresh), (\.cropNmsThresh, cropNmsThresh),
            (\.cropOverlapRatio, cropOverlapRatio), (\.maskThreshold, maskThreshold)]
        for (key, value) in ints { if let value { p[keyPath: key] = value } }
        for (key, value) in doubles { if let value { p[keyPath: key] = value } }
        p.useM2m = useM2m
        try p.validate()
        return p
    }

    // MARK: inputs

    static let imageExtensions: Set<String> = ["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff"]

    private func collectInputs() throws -> [Item] {
        if let frame {
            let path = inputs[0]
            try checkReadableFile(path, what: "video")
            let stem = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
            return [Item(path: path, name: String(format: "%@_%05d", stem, frame), frame: frame)]
        }
        var items = [Item]()
        for input in inputs {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: input, isDirectory: &isDir) else {
                throw PredictorError("\(input): no such file or folder")
            }
            if isDir.boolValue {
                let names: [String]
                do { names = try FileManager.default.contentsOfDirectory(atPath: input) } catch {
                    throw PredictorError("cannot read folder \(input): \(describe(error))")
                }
                let images = names.filter { Self.imageExtensions.contains(($0 as NSString).pathExtension.lowercased()) }.sorted()
                if images.isEmpty { throw PredictorError("folder \(input) has no images (png, jpg, webp, bmp, tif)") }
                items += images.map { Item(path: (input as NSString).appendingPathComponent($0), name: ($0 as NSString).deletingPathExtension) }
            } else {
                try checkReadableFile(input, what: "image")
                let file = (input as NSString).lastPathComponent
                items.append(Item(path: input, name: (file as NSString).deletingPathExtension))
            }
        }
        var seen = [String: String]()
        for item in items {
            if let other = seen[item.name] {
                throw PredictorError("\(other) and \(item.path) would both write \(item.name)/ in the output folder")
            }
            seen[item.name] = item.path
        }
        return items
    }

    private func loadItem(_ item: Item) throws -> RGBImage {
        guard let frame = item.frame else { return try loadRGBImage(item.path) }
        let reader = try VideoFrameReader(path: item.path, limit: frame + 1)
        guard frame < reader.frameCount else {
            throw PredictorError("--frame \(frame) is beyond the last frame of \(item.path) (\(reader.frameCount) frames)")
        }
        var last: VideoFrame?
        while let f = try reader.nextFrame() { last = f }
        guard let f = last, f.index == frame else { throw PredictorError("\(item.path): frame \(frame) could not be decoded") }
        return RGBImage(width: f.width, height: f.height, pixels: f.rgb)
    }

    // MARK: output

    /// One output mask, in the SA-1B annotation layout.
    struct Annotation {
        var mask: BinaryMask
        var predictedIou: Float
        var stabilityScore: Float
        var pointCoords: [[Double]]
        var cropBox: [Int]

        init(mask: BinaryMask, predictedIou: Float, stabilityScore: Float, pointCoords: [[Double]], cropBox: [Int]) {
            self.mask = mask
            self.predictedIou = predictedIou
            self.stabilityScore = stabilityScore
            self.pointCoords = pointCoords
            self.cropBox = cropBox
        }

        init(_ r: AutomaticMaskGenerator.Record) {
            self.init(mask: r.mask, predictedIou: r.predictedIou, stabilityScore: r.stabilityScore,
                      pointCoords: [[Double(r.pointCoords.x), Double(r.pointCoords.y)]], cropBox: r.cropBox)
        }

        func json(id: Int) -> SA1B.Annotation {
            let box = MaskOps.boundingBox(mask.bits, width: mask.width, height: mask.height)
            return SA1B.Annotation(id: id, segmentation: .init(size: [mask.height, mask.width], counts: mask.cocoRLEString()),
                                   area: mask.area, bbox: [Double(box[0]), Double(box[1]), Double(box[2] - box[0]), Double(box[3] - box[1])],
                                   predicted_iou: Double(predictedIou), stability_score: Double(stabilityScore),
                                   point_coords: pointCoords, crop_box: cropBox.map(Double.init))
        }
    }

    /// The SA-1B annotation file.
    struct SA1B: Encodable {
        struct Image: Encodable { var image_id: Int; var width: Int; var height: Int; var file_name: String }
        struct RLE: Encodable { var size: [Int]; var counts: String }
        struct Annotation: Encodable {
            var id: Int; var segmentation: RLE; var area: Int; var bbox: [Double]; var predicted_iou: Double
            var stability_score: Double; var point_coords: [[Double]]; var crop_box: [Double]
        }
        var image: Image
        var annotations: [Annotation]
    }

    /// Everything of one image goes to a hidden sibling folder, renamed into place when complete.
    private func write(_ annotations: [Annotation], image: RGBImage, item: Item, imageId: Int,
                       markers: (points: [(x: Double, y: Double, positive: Bool)], boxes: [(Double, Double, Double, Double)])) throws {
        let fm = FileManager.default
        let final = (output as NSString).appendingPathComponent(item.name)
        let tmp = (output as NSString).appendingPathComponent(".\(item.name).partial")
        try? fm.removeItem(atPath: tmp)
        do { try fm.createDirectory(atPath: tmp, withIntermediateDirectories: true) } catch {
            throw PredictorError("cannot create \(tmp): \(describe(error))")
        }
        let file = item.frame.map { "\((item.path as NSString).lastPathComponent)#frame=\($0)" } ?? (item.path as NSString).lastPathComponent
        let doc = SA1B(image: .init(image_id: imageId, width: image.width, height: image.height, file_name: file),
                       annotations: annotations.enumerated().map { $1.json(id: $0) })
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        try encoder.encode(doc).write(to: URL(fileURLWithPath: (tmp as NSString).appendingPathComponent("masks.json")))
        if !noPNG {
            for (k, a) in annotations.enumerated() {
                try ImageIO.writeGrayPNG(path: (tmp as NSString).appendingPathComponent("\(k).png"), width: image.width,
                                         height: image.height, pixels: a.mask.bits.map { $0 != 0 ? 255 : 0 })
            }
        }
        if overlay {
            // Largest masks first, so that small ones stay visible on top (as the official notebooks draw them).
            let order = annotations.indices.sorted { annotations[$0].mask.area > annotations[$1].mask.area }
            let rgb = OverlayWriter.compose(frame: VideoFrame(index: 0, width: image.width, height: image.height, rgb: image.pixels),
                                            masks: order.map { ($0, annotations[$0].mask) }, points: markers.points,
                                            boxes: markers.boxes, colour: OverlayWriter.distinctColour)
            try ImageIO.writeRGBPNG(path: (tmp as NSString).appendingPathComponent("overlay.png"), width: image.width,
                                    height: image.height, rgb: rgb)
        }
        if fm.fileExists(atPath: final) {
            do { try fm.removeItem(atPath: final) } catch { throw PredictorError("cannot replace \(final): \(describe(error))") }
        }
        guard rename(tmp, final) == 0 else { throw PredictorError("cannot move results into \(final): \(String(cString: strerror(errno)))") }
    }

    /// The output folder must be empty (or --overwrite) and writable before any work. Returns
    /// whether it was created.
    private func prepareOutput() throws -> Bool {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: output, isDirectory: &isDir) {
            guard isDir.boolValue else { throw PredictorError("output \(output) exists and is not a folder") }
            let contents = (try? FileManager.default.contentsOfDirectory(atPath: output)) ?? []
            if !contents.isEmpty && !overwrite {
                throw PredictorError("output folder \(output) is not empty; pass --overwrite to replace its results")
            }
            guard FileManager.default.isWritableFile(atPath: output) else { throw PredictorError("output folder \(output) is not writable") }
            return false
        }
        do { try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true) } catch {
            throw PredictorError("cannot create output folder \(output): \(describe(error))")
        }
        return true
    }
}

/// A one-line progress bar for the prompts of one image on a terminal; silent when stderr is piped.
final class ProgressLine {
    let label: String
    private let enabled = isatty(2) != 0
    private let start = Date()
    init(label: String) { self.label = label }

    func update(_ done: Int, _ total: Int) {
        guard enabled, total > 0 else { return }
        let width = 30, filled = width * done / total
        let line = String(format: "\r%@ [%@%@] %d/%d prompts  %.1f s ", label, String(repeating: "#", count: filled),
                          String(repeating: " ", count: width - filled), done, total, Date().timeIntervalSince(start))
        FileHandle.standardError.write(Data(line.utf8))
    }

    func finish() {
        if enabled { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    }
}
