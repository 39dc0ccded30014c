import Foundation
import SAM2Tensor

/// `SAM2AutomaticMaskGenerator`: "segment everything". A grid of single-click prompts over the
/// image (and optionally over crops of it) through the image predictor; masks filtered by
/// predicted IoU and stability, de-duplicated by box NMS within and across crops.
/// Step for step as `sam2/automatic_mask_generator.py` and `sam2/utils/amg.py` of sam2 1.1.0.
public final class AutomaticMaskGenerator {
    /// The official constructor's parameters, with its defaults (the keys of its keyword arguments
    /// when decoded).
    public struct Parameters: Codable, Equatable {
        public var pointsPerSide: Int? = 32
        public var pointsPerBatch = 64
        public var predIouThresh = 0.8
        public var stabilityScoreThresh = 0.95
        public var stabilityScoreOffset = 1.0
        public var maskThreshold = 0.0
        public var boxNmsThresh = 0.7
        public var cropNLayers = 0
        public var cropNmsThresh = 0.7
        public var cropOverlapRatio = 512.0 / 1500.0
        public var cropNPointsDownscaleFactor = 1
        /// Explicit point grids, normalised to 0-1, one per crop layer (exclusive with `pointsPerSide`).
        public var pointGrids: [[[Double]]]? = nil
        /// Holes and islands of at most this many low-resolution pixels are removed (as
        /// `max_hole_area` / `max_sprinkle_area` of the predictor; 0 = off).
        public var minMaskRegionArea = 0
        public var useM2m = false
        public var multimaskOutput = true

        public init() {}

        enum CodingKeys: String, CodingKey {
            case pointsPerSide = "points_per_side", pointsPerBatch = "points_per_batch", predIouThresh = "pred_iou_thresh"
            case stabilityScoreThresh = "stability_score_thresh", stabilityScoreOffset = "stability_score_offset"
            case maskThreshold = "mask_threshold", boxNmsThresh = "box_nms_thresh", cropNLayers = "crop_n_layers"
            case cropNmsThresh = "crop_nms_thresh", cropOverlapRatio = "crop_overlap_ratio"
            case cropNPointsDownscaleFactor = "crop_n_points_downscale_factor", pointGrids = "point_grids"
            case minMaskRegionArea = "min_mask_region_area", useM2m = "use_m2m", multimaskOutput = "multimask_output"
        }

        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let d = Parameters()
            // `points_per_side: null` (with point_grids) must stay nil, not fall back to 32.
            pointsPerSide = c.contains(.pointsPerSide) ? try c.decodeIfPresent(Int.self, forKey: .pointsPerSide) : d.pointsPerSide
            pointsPerBatch = try c.decodeIfPresent(Int.self, forKey: .pointsPerBatch) ?? d.pointsPerBatch
            predIouThresh = try c.decodeIfPresent(Double.self, forKey: .predIouThresh) ?? d.predIouThresh
            stabilityScoreThresh = try c.decodeIfPresent(Double.self, forKey: .stabilityScoreThresh) ?? d.stabilityScoreThresh
            stabilityScoreOffset = try c.decodeIfPresent(Double.self, forKey: .stabilityScoreOffset) ?? d.stabilityScoreOffset
            maskThreshold = try c.decodeIfPresent(Double.self, forKey: .maskThreshold) ?? d.maskThreshold
            boxNmsThresh = try c.decodeIfPresent(Double.self, forKey: .boxNmsThresh) ?? d.boxNmsThresh
            cropNLayers = try c.decodeIfPresent(Int.self, forKey: .cropNLayers) ?? d.cropNLayers
            cropNmsThresh = try c.decodeIfPresent(Double.self, forKey: .cropNmsThresh) ?? d.cropNmsThresh
            cropOverlapRatio = try c.decodeIfPresent(Double.self, forKey: .cropOverlapRatio) ?? d.cropOverlapRatio
            cropNPointsDownscaleFactor = try c.decodeIfPresent(Int.self, forKey: .cropNPointsDownscaleFactor) ?? d.cropNPointsDownscaleFactor
            pointGrids = try c.decodeIfPresent([[[Double]]].self, forKey: .pointGrids)
            minMaskRegionArea = try c.decodeIfPresent(Int.self, forKey: .minMaskRegionArea) ?? d.minMaskRegionArea
            useM2m = try c.decodeIfPresent(Bool.self, forKey: .useM2m) ?? d.useM2m
            multimaskOutput = try c.decodeIfPresent(Bool.self, forKey: .multimaskOutput) ?? d.multimaskOutput
        }

        /// The constructor's assertions, as one-line errors.
        public func validate() throws {
            guard (pointsPerSide == nil) != (pointGrids == nil) else {
                throw PredictorError("give exactly one of points_per_side and point_grids")
            }
            if let n = pointsPerSide, n <= 0 { throw PredictorError("points_per_side must be positive, got \(n)") }
            guard pointsPerBatch > 0 else { throw PredictorError("points_per_batch must be positive, got \(pointsPerBatch)") }
            guard cropNLayers >= 0 else { throw PredictorError("crop_n_layers must not be negative, got \(cropNLayers)") }
            guard cropNPointsDownscaleFactor >= 1 else {
                throw PredictorError("crop_n_points_downscale_factor must be at least 1, got \(cropNPointsDownscaleFactor)")
            }
            guard minMaskRegionArea >= 0 else { throw PredictorError("min_mask_region_area must not be negative") }
            guard cropOverlapRatio >= 0 && cropOverlapRatio < 1 else {
                throw PredictorError("crop_overlap_ratio must be in [0, 1), got \(cropOverlapRatio)")
            }
            for (name, v) in [("pred_iou_thresh", predIouThresh), ("stability_score_thresh", stabilityScoreThresh),
                              ("stability_score_offset", stabilityScoreOffset), ("mask_threshold", maskThreshold),
                              ("box_nms_thresh", boxNmsThresh), ("crop_nms_thresh", cropNmsThresh)] where !v.isFinite {
                throw PredictorError("\(name) must be a finite number")
            }
            if let grids = pointGrids {
                guard grids.count > cropNLayers else {
                    throw PredictorError("point_grids has \(grids.count) grids for \(cropNLayers + 1) crop layers")
                }
                for g in grids where g.contains(where: { $0.count != 2 || !$0[0].isFinite || !$0[1].isFinite }) {
                    throw PredictorError("point_grids must hold [x, y] pairs in 0-1")
                }
            }
        }
    }

    /// One mask of the output, as the official record (`segmentation` as COCO RLE counts).
    public struct Record {
        /// Column-major run lengths of the mask at the image's size, starting with background.
        public var rleCounts: [Int]
        public var width: Int, height: Int
        public var area: Int
        /// `[x, y, w, h]`, w and h measured from the first to the last pixel (as the official boxes).
        public var bbox: [Double]
        public var predictedIou: Float
        public var pointCoords: (x: Float, y: Float)
        public var stabilityScore: Float
        /// `[x, y, w, h]` of the crop the mask came from.
        public var cropBox: [Int]

        public var mask: BinaryMask { (try? BinaryMask.fromRLE(counts: rleCounts, height: height, width: width)) ?? BinaryMask(width: width, height: height) }
    }

    public let predictor: ImagePredictor
    public let parameters: Parameters
    private let pointGrids: [[(x: Double, y: Double)]]

    public init(model: SAM2Model, parameters: Parameters = Parameters()) throws {
        try parameters.validate()
        self.parameters = parameters
        predictor = ImagePredictor(model: model, maxHoleArea: parameters.minMaskRegionArea,
                                   maxSprinkleArea: parameters.minMaskRegionArea)
        if let n = parameters.pointsPerSide {
            pointGrids = (0...parameters.cropNLayers).map { i in
                AutomaticMaskGenerator.pointGrid(n / Self.power(parameters.cropNPointsDownscaleFactor, i))
            }
        } else {
            pointGrids = parameters.pointGrids!.map { $0.map { (x: $0[0], y: $0[1]) } }
        }
    }

    private static func power(_ b: Int, _ e: Int) -> Int { (0..<e).reduce(1) { r, _ in r * b } }

    /// `build_point_grid`: `n x n` points evenly spaced in (0, 1), row by row (numpy's linspace).
    static func pointGrid(_ n: Int) -> [(x: Double, y: Double)] {
        guard n > 0 else { return [] }
        let offset = 1 / (2 * Double(n))
        let start = offset, stop = 1 - offset
        let step = (stop - start) / Double(n - 1)
        let side = (0..<n).map { i in n > 1 && i == n - 1 ? stop : (n > 1 ? Double(i) * step + start : start) }
        return side.flatMap { y in side.map { x in (x: x, y: y) } }
    }

    /// `generate_crop_boxes`: the whole image, then per layer i (2^(i+1))² overlapping crops, XYXY.
    static func cropBoxes(width imW: Int, height imH: Int, layers: Int, overlapRatio: Double) -> [(box: [Int], layer: Int)] {
        var out: [(box: [Int], layer: Int)] = [([0, 0, imW, imH], 0)]
        let shortSide = min(imH, imW)
        func cropLength(_ orig: Int, _ n: Int, _ overlap: Int) -> Int {
            Int((Double(overlap * (n - 1) + orig) / Double(n)).rounded(.up))
        }
        for layer in 0..<layers {
            let n = 1 << (layer + 1)
            let overlap = Int(overlapRatio * Double(shortSide) * (2 / Double(n)))
            let cw = cropLength(imW, n, overlap), ch = cropLength(imH, n, overlap)
            for i in 0..<n {  // itertools.product(x0s, y0s): x outer
                for j in 0..<n {
                    let x0 = (cw - overlap) * i, y0 = (ch - overlap) * j
                    out.append(([x0, y0, min(x0 + cw, imW), min(y0 + ch, imH)], layer + 1))
                }
            }
        }
        return out
    }

    /// `generate`: every mask of the image, in the official output order. `progress` gets the
    /// number of prompts done and the total.
    public func generate(_ image: RGBImage, progress: ((Int, Int) -> Void)? = nil) throws -> [Record] {
        let crops = Self.cropBoxes(width: image.width, height: image.height, layers: parameters.cropNLayers,
                                   overlapRatio: parameters.cropOverlapRatio)
        let total = crops.reduce(0) { $0 + pointGrids[$1.layer].count }
        var done = 0
        var records = [Record]()
        // On images smaller than the crop layers' overlap a crop can be empty (the official code
        // then fails in set_image): there is nothing to segment in it.
        for (box, layer) in crops where box[2] > box[0] && box[3] > box[1] {
            records += try processCrop(image, box: box, layer: layer) { n in
                done += n
                progress?(done, total)
            }
        }
        if crops.count > 1 {
            // Across crops, prefer masks from smaller crops (score 1 / crop area).
            let scores = records.map { 1 / Float($0.cropBox[2] * $0.cropBox[3]) }
            let keep = Self.nms(boxes: records.map(\.xyxy), scores: scores, threshold: parameters.cropNmsThresh)
            records = keep.map { records[$0] }
        }
        return records
    }

    /// One mask of a crop on its way through the filters (`MaskData` row).
    private struct Candidate {
        var iou: Float
        var point: (x: Float, y: Float)
        var logits: Tensor        // [1, 256, 256] as post-processed for upsampling
        var lowRes: Tensor        // [1, 256, 256] clamped, the m2m mask input
    }

    private func processCrop(_ image: RGBImage, box: [Int], layer: Int, advanced: (Int) -> Void) throws -> [Record] {
        let (x0, y0, x1, y1) = (box[0], box[1], box[2], box[3])
        let crop = image.cropped(x0: x0, y0: y0, x1: x1, y1: y1)
        predictor.setImage(crop)
        defer { predictor.reset() }
        let (cw, ch) = (crop.width, crop.height)
        let points = pointGrids[layer].map { (x: $0.x * Double(cw), y: $0.y * Double(ch)) }
        var kept = [(record: Record, cropXYXY: [Int])]()
        var start = 0
        while start < points.count {
            let batch = Array(points[start..<min(start + parameters.pointsPerBatch, points.count)])
            kept += try processBatch(batch, cropSize: (cw, ch), cropBox: box, origSize: (image.width, image.height))
            start += batch.count
            advanced(batch.count)
        }
        let keep = Self.nms(boxes: kept.map(\.cropXYXY), scores: kept.map(\.record.predictedIou), threshold: parameters.boxNmsThresh)
        return keep.map { kept[$0].record }
    }

    /// `_process_batch`: one click per point, then the filters, boxes and run-length encoding.
    private func processBatch(_ points: [(x: Double, y: Double)], cropSize: (w: Int, h: Int), cropBox: [Int],
                              origSize: (w: Int, h: Int)) throws -> [(record: Record, cropXYXY: [Int])] {
        // Each click is decoded on its own; the clicks of a batch run side by side, one per core
        // (their kernels' parallel loops then run inline), which keeps every core busy through the
        // decoder's many small steps.
        let points32 = points.map { (x: Float($0.x), y: Float($0.y)) }  // torch.as_tensor(points, dtype=float32)
        let decoded = try Self.concurrently(points32.count) { i in
            try decode(points32[i], maskInput: nil, cropSize: cropSize, multimask: parameters.multimaskOutput)
        }
        var candidates = [Candidate]()
        for (point, out) in zip(points32, decoded) {
            for c in 0..<out.ious.count {
                candidates.append(Candidate(iou: out.ious[c], point: point, logits: out.postprocessed.rows(c..<(c + 1)),
                                            lowRes: out.masks.rows(c..<(c + 1)).map { min(max($0, -32), 32) }))
            }
        }
        if parameters.useM2m {
            // `refine_with_m2m`: each mask's own click again, with its low-res logits as the mask prompt.
            let first = candidates
            candidates = try Self.concurrently(first.count) { i in
                let c = first[i]
                let out = try decode(c.point, maskInput: c.lowRes, cropSize: cropSize, multimask: false)
                return Candidate(iou: out.ious[0], point: c.point, logits: out.postprocessed, lowRes: c.lowRes)
            }
        }
        let threshold = Float(parameters.maskThreshold), offset = Float(parameters.stabilityScoreOffset)
        // Candidates past the IoU filter are upsampled, scored and encoded side by side, one per core.
        let passing = candidates.filter { !(parameters.predIouThresh > 0) || Double($0.iou) > parameters.predIouThresh }
        let processed = try Self.concurrently(passing.count) { i -> (record: Record, cropXYXY: [Int])? in
            let c = passing[i]
            // The masks at the crop's resolution, as logits (`return_logits=True`).
            let logits = Interpolate.bilinear(c.logits, height: cropSize.h, width: cropSize.w)
            let stability = Self.stabilityScore(logits.data, threshold: threshold, offset: offset)
            if parameters.stabilityScoreThresh > 0 && !(Double(stability) >= parameters.stabilityScoreThresh) { return nil }
            let bits = MaskOps.threshold(logits.data, above: threshold)
            let xyxy = MaskOps.boundingBox(bits, width: cropSize.w, height: cropSize.h)
            let uncropped = [xyxy[0] + cropBox[0], xyxy[1] + cropBox[1], xyxy[2] + cropBox[0], xyxy[3] + cropBox[1]]
            if Self.isNearCropEdge(uncropped, cropBox: cropBox, imageBox: [0, 0, origSize.w, origSize.h]) { return nil }
            // `uncrop_masks` + `mask_to_rle_pytorch`.
            let counts = MaskOps.rleCounts(bits, width: cropSize.w, height: cropSize.h, placedAt: cropBox[0], cropBox[1],
                                           inWidth: origSize.w, height: origSize.h)
            let area = stride(from: 1, to: counts.count, by: 2).reduce(0) { $0 + counts[$1] }
            let record = Record(rleCounts: counts, width: origSize.w, height: origSize.h, area: area,
                                bbox: [Double(uncropped[0]), Double(uncropped[1]), Double(uncropped[2] - uncropped[0]),
                                       Double(uncropped[3] - uncropped[1])],
                                predictedIou: c.iou,
                                pointCoords: (c.point.x + Float(cropBox[0]), c.point.y + Float(cropBox[1])),
                                stabilityScore: stability,
                                cropBox: [cropBox[0], cropBox[1], cropBox[2] - cropBox[0], cropBox[3] - cropBox[1]])
            return (record, xyxy)
        }
        return processed.compactMap { $0 }
    }

    /// `body` for 0..<count on all cores, results in order; the first error is rethrown.
    static func concurrently<T>(_ count: Int, _ body: (Int) throws -> T) throws -> [T] {
        let results = Parallelism.map(count) { i in Result { try body(i) } }
        return try results.map { try $0.get() }
    }

    /// One click at a crop-pixel point through the predictor's decoder.
    private func decode(_ point: (x: Float, y: Float), maskInput: Tensor?, cropSize: (w: Int, h: Int), multimask: Bool) throws
        -> (masks: Tensor, ious: [Float], postprocessed: Tensor) {
        let prompt = ImagePrompt(points: [(Double(point.x), Double(point.y))], labels: [1])
        let points = try predictor.modelPoints(prompt, width: cropSize.w, height: cropSize.h, normalize: true)
        return try predictor.decode(points, maskInput: maskInput, multimask: multimask)
    }

    // MARK: amg.py

    /// `calculate_stability_score`: IoU of the masks thresholded at `threshold ± offset`
    /// (NaN for an empty union, as there).
    public static func stabilityScore(_ logits: [Float], threshold: Float, offset: Float) -> Float {
        Float(MaskOps.countAbove(logits, threshold + offset)) / Float(MaskOps.countAbove(logits, threshold - offset))
    }

    /// `is_box_near_crop_edge` (atol 20): near an edge of the crop that is not an edge of the image.
    static func isNearCropEdge(_ box: [Int], cropBox: [Int], imageBox: [Int]) -> Bool {
        (0..<4).contains { abs(box[$0] - cropBox[$0]) <= 20 && !(abs(box[$0] - imageBox[$0]) <= 20) }
    }

    /// `torchvision.ops.nms` (one category): boxes by descending score (stable), each suppressing
    /// the later ones it overlaps with IoU > `threshold`; areas `(x2 - x1) * (y2 - y1)` in float32.
    /// Returns the kept indices in score order.
    public static func nms(boxes: [[Int]], scores: [Float], threshold: Double) -> [Int] {
        let order = scores.indices.sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }
        let b = boxes.map { $0.map(Float.init) }
        let areas = b.map { ($0[2] - $0[0]) * ($0[3] - $0[1]) }
        var suppressed = [Bool](repeating: false, count: boxes.count)
        var keep = [Int]()
        for (n, i) in order.enumerated() where !suppressed[i] {
            keep.append(i)
            for j in order[(n + 1)...] where !suppressed[j] {
                let w = max(0, min(b[i][2], b[j][2]) - max(b[i][0], b[j][0]))
                let h = max(0, min(b[i][3], b[j][3]) - max(b[i][1], b[j][1]))
                let inter = w * h
                let iou = inter / (areas[i] + areas[j] - inter)
                if Double(iou) > threshold { suppressed[j] = true }
            }
        }
        return keep
    }
}

extension AutomaticMaskGenerator.Record {
    var xyxy: [Int] {
        let b = bbox.map { Int($0) }
        return [b[0], b[1], b[0] + b[2], b[1] + b[3]]
    }
}
