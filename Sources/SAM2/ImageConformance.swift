import Foundation
import SAM2Checkpoint
import SAM2Tensor

/// The conformance runner for image fixtures (`make_image_fixture.py`): the image predictor's
/// `cases` and the mask generator's `amg` runs of a fixture's `session.json`, written in the
/// fixture's own format (`outputs.safetensors`, `amg_NN.json`) for `compare_image.py`.
public enum ImageConformance {
    public struct Summary {
        public var cases: Int
        public var amgRuns: Int
        public var masks: [Int]
        /// Why the run differs from what was asked, if it does (e.g. no hole filling).
        public var notes: [String]
    }

    /// Whether a fixture folder holds an image fixture (its session has `cases` or `amg`).
    public static func isImageFixture(_ dir: String) -> Bool {
        guard let data = FileManager.default.contents(atPath: URL(fileURLWithPath: dir).appendingPathComponent("session.json").path),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return false }
        return json["actions"] == nil && (json["cases"] != nil || json["amg"] != nil)
    }

    public static func replay(fixture dir: String, outputDir: String, loadImage: (String) throws -> RGBImage,
                              progress: ((String) -> Void)? = nil) throws -> Summary {
        let url = URL(fileURLWithPath: dir)
        let session = try readJSON(url.appendingPathComponent("session.json").path)
        let config = try SAM2Config.load(path: url.appendingPathComponent("config.yaml").path, applyPostprocessing: false)
        let model = try SAM2Model(config: config, checkpointPath: url.appendingPathComponent("checkpoint.pt").path)
        let image = try loadImage(url.appendingPathComponent("image.png").path)
        var notes = [String]()
        // The reference ran on a CPU: without the CUDA kernel the official code skips hole and
        // sprinkle filling (with a warning), so the replay does too, to reproduce that run.
        let versions = session["versions"] as? [String: Any]
        let officialFilled = versions?["sam2._C"] as? Bool ?? true

        try FileManager.default.createDirectory(atPath: outputDir, withIntermediateDirectories: true)
        let cases = session["cases"] as? [[String: Any]] ?? []
        var entries = [String: SafetensorsEntry]()
        if !cases.isEmpty {
            let options = session["predictor"] as? [String: Any] ?? [:]
            let predictor = ImagePredictor(model: model, maskThreshold: Float(number(options["mask_threshold"]) ?? 0),
                                           maxHoleArea: Int(number(options["max_hole_area"]) ?? 0),
                                           maxSprinkleArea: Int(number(options["max_sprinkle_area"]) ?? 0))
            if !officialFilled && (predictor.maxHoleArea > 0 || predictor.maxSprinkleArea > 0) {
                notes.append("hole/sprinkle filling off: the reference ran without sam2._C")
                predictor.maxHoleArea = 0
                predictor.maxSprinkleArea = 0
            }
            predictor.setImage(image)
            let yx = try sampleYX(url.appendingPathComponent("outputs.safetensors").path)
            var lowResults = [[ImagePrediction]]()
            for (i, c) in cases.enumerated() {
                let preds = try runCase(c, index: i, predictor: predictor, earlier: lowResults)
                lowResults.append(preds)
                let key = String(format: "c%02d", i)
                let batched = preds.count > 1
                let m = preds[0].ious.count
                let lead = batched ? [preds.count, m] : [m]
                entries["\(key).ious"] = SafetensorsEntry(tensor: Tensor(shape: lead, data: preds.flatMap(\.ious)))
                let side = preds[0].lowResLogits.shape[1]
                entries["\(key).lowres_logits"] = SafetensorsEntry(
                    tensor: Tensor(shape: lead + [side, side], data: preds.flatMap(\.lowResLogits.data)))
                let bits = Conformance.packBits(preds.flatMap { $0.masks.flatMap(\.bits) })
                entries["\(key).mask_bits"] = SafetensorsEntry(uint8: bits, shape: [bits.count])
                var samples = [Float]()
                for p in preds {
                    let logits = p.logits()
                    for ch in 0..<m {
                        for (y, x) in yx { samples.append(logits.data[(ch * image.height + y) * image.width + x]) }
                    }
                }
                entries["\(key).logits_sample"] = SafetensorsEntry(tensor: Tensor(shape: lead + [yx.count], data: samples))
                progress?("\(key): \(lead) masks")
            }
            try Safetensors.write(entries, to: URL(fileURLWithPath: outputDir).appendingPathComponent("outputs.safetensors").path)
        }

        var counts = [Int]()
        let runs = session["amg"] as? [[String: Any]] ?? []
        for (k, run) in runs.enumerated() {
            var params = run
            params["output_mode"] = nil  // only the encoding; both encodings are written
            var p = try JSONDecoder().decode(AutomaticMaskGenerator.Parameters.self,
                                             from: JSONSerialization.data(withJSONObject: params))
            if !officialFilled && p.minMaskRegionArea > 0 {
                notes.append("amg_\(k): min_mask_region_area filling off: the reference ran without sam2._C")
                p.minMaskRegionArea = 0
            }
            let records = try AutomaticMaskGenerator(model: model, parameters: p).generate(image)
            let path = URL(fileURLWithPath: outputDir).appendingPathComponent(String(format: "amg_%02d.json", k)).path
            try write(records.map(fixtureRecord), to: path)
            counts.append(records.count)
            progress?(String(format: "amg_%02d: %d masks", k, records.count))
        }
        return Summary(cases: cases.count, amgRuns: runs.count, masks: counts, notes: notes)
    }

    /// One predict call of the script (a batch of rows when it has `batch_boxes` or batched points).
    static func runCase(_ c: [String: Any], index: Int, predictor: ImagePredictor, earlier: [[ImagePrediction]]) throws -> [ImagePrediction] {
        let name = "cases[\(index)]"
        let multimask = c["multimask"] as? Bool ?? true
        let normalize = c["normalize_coords"] as? Bool ?? true
        // Rows: boxes of a batch, or one prompt. Points may be [N, 2] (shared) or [B, N, 2] (per row).
        let boxes: [ImageBox?]
        if let bb = c["batch_boxes"] as? [[Any]] {
            boxes = try bb.map { try box($0, name) }
        } else if let b = c["box"] as? [Any] {
            boxes = [try box(b, name)]
        } else {
            boxes = [nil]
        }
        var rowPoints: [[(x: Double, y: Double)]] = [[]], rowLabels: [[Int]] = [[]]
        if let pts = c["points"] as? [Any], let first = pts.first {
            let labels = c["labels"] as? [Any] ?? []
            if first is [[Any]] {  // [B, N, 2]
                rowPoints = try pts.map { try points($0, name) }
                rowLabels = labels.map { ($0 as? [Any] ?? []).compactMap(number).map { Int($0) } }
            } else {
                rowPoints = [try points(pts, name)]
                rowLabels = [labels.compactMap(number).map { Int($0) }]
            }
        }
        let rows = max(boxes.count, rowPoints.count)
        guard boxes.count == rows || boxes.count == 1, rowPoints.count == rows || rowPoints.count == 1 else {
            throw PredictorError("\(name): \(boxes.count) boxes but \(rowPoints.count) rows of points")
        }
        var masks: [Tensor?] = Array(repeating: nil, count: rows)
        if let from = number(c["mask_from"]).map({ Int($0) }) {
            guard from >= 0, from < earlier.count else { throw PredictorError("\(name): mask_from \(from) is not an earlier case") }
            let prev = earlier[from]
            masks = (0..<rows).map { r in
                let p = prev[prev.count == 1 ? 0 : r]
                let best = p.bestIndex
                return p.lowResLogits.rows(best..<(best + 1))
            }
        }
        return try (0..<rows).map { r in
            let prompt = ImagePrompt(points: rowPoints[rowPoints.count == 1 ? 0 : r], labels: rowLabels[rowLabels.count == 1 ? 0 : r],
                                     box: boxes[boxes.count == 1 ? 0 : r], maskInput: masks[r])
            return try predictor.predict(prompt, multimask: multimask, normalizeCoordinates: normalize)
        }
    }

    /// An AMG record in the fixture's JSON layout.
    static func fixtureRecord(_ r: AutomaticMaskGenerator.Record) -> [String: Any] {
        ["area": r.area, "bbox": r.bbox, "predicted_iou": Double(r.predictedIou), "stability_score": Double(r.stabilityScore),
         "point_coords": [[Double(r.pointCoords.x), Double(r.pointCoords.y)]], "crop_box": r.cropBox.map(Double.init),
         "segmentation": ["size": [r.height, r.width], "counts": r.rleCounts] as [String: Any],
         "segmentation_coco": ["size": [r.height, r.width], "counts": CocoRLE.encode(r.rleCounts)] as [String: Any]]
    }

    // MARK: JSON helpers

    static func readJSON(_ path: String) throws -> [String: Any] {
        guard let data = FileManager.default.contents(atPath: path) else { throw PredictorError("\(path): cannot read") }
        guard let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw PredictorError("\(path): not a JSON object")
        }
        return json
    }

    static func write(_ object: Any, to path: String) throws {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        let tmp = path + ".tmp"
        try data.write(to: URL(fileURLWithPath: tmp))
        guard rename(tmp, path) == 0 else { throw PredictorError("\(path): cannot write") }
    }

    static func number(_ v: Any?) -> Double? { (v as? NSNumber)?.doubleValue }

    static func points(_ v: Any, _ name: String) throws -> [(x: Double, y: Double)] {
        guard let list = v as? [Any] else { throw PredictorError("\(name): points must be a list of [x, y]") }
        return try list.map {
            guard let p = $0 as? [Any], p.count == 2, let x = number(p[0]), let y = number(p[1]) else {
                throw PredictorError("\(name): a point must be [x, y]")
            }
            return (x, y)
        }
    }

    static func box(_ v: [Any], _ name: String) throws -> ImageBox {
        let n = v.compactMap(number)
        guard n.count == 4 else { throw PredictorError("\(name): a box must be [x0, y0, x1, y1]") }
        return ImageBox(x0: n[0], y0: n[1], x1: n[2], y1: n[3])
    }

    /// The reference's sampled pixel positions (`logits_sample_yx` [N, 2] int32, (y, x)).
    static func sampleYX(_ path: String) throws -> [(Int, Int)] {
        guard let e = try Safetensors.read(path: path)["logits_sample_yx"], case let v = try e.int32s(), v.count % 2 == 0 else {
            throw PredictorError("\(path): no logits_sample_yx [N, 2] int32 entry")
        }
        return stride(from: 0, to: v.count, by: 2).map { (Int(v[$0]), Int(v[$0 + 1])) }
    }
}
