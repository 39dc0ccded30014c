import Foundation
import SAM2Tensor

/// An 8-bit RGB picture, row-major `height x width x 3`.
public struct RGBImage: Sendable {
    public let width: Int
    public let height: Int
    public let pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width > 0 && height > 0 && pixels.count == width * height * 3,
                     "RGBImage: \(pixels.count) bytes for \(width)x\(height)x3")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// The pixels of `x0..<x1, y0..<y1` (`image[y0:y1, x0:x1]`).
    public func cropped(x0: Int, y0: Int, x1: Int, y1: Int) -> RGBImage {
        if x0 == 0 && y0 == 0 && x1 == width && y1 == height { return self }
        var out = [UInt8](repeating: 0, count: (x1 - x0) * (y1 - y0) * 3)
        for y in y0..<y1 {
            let src = (y * width + x0) * 3, dst = (y - y0) * (x1 - x0) * 3
            out[dst..<(dst + (x1 - x0) * 3)] = pixels[src..<(src + (x1 - x0) * 3)]
        }
        return RGBImage(width: x1 - x0, height: y1 - y0, pixels: out)
    }

    /// `SAM2Transforms`: `ToTensor` (/255), `Resize((size, size))` — bilinear with antialias, a
    /// stretch, not a letterbox — and ImageNet mean/std, in float32 as torchvision does them.
    public func modelInput(size: Int) -> Tensor {
        let plane = width * height
        var chw = [Float](repeating: 0, count: 3 * plane)
        pixels.withUnsafeBufferPointer { px in
            for i in 0..<plane {
                for c in 0..<3 { chw[c * plane + i] = Float(px[3 * i + c]) / 255 }
            }
        }
        var x = Interpolate.bilinearAntialiased(Tensor(shape: [3, height, width], data: chw), height: size, width: size)
        let mean: [Float] = [0.485, 0.456, 0.406], std: [Float] = [0.229, 0.224, 0.225]
        for c in 0..<3 {
            for i in (c * size * size)..<((c + 1) * size * size) { x.data[i] = (x.data[i] - mean[c]) / std[c] }
        }
        return x
    }
}

/// A box prompt, `x0, y0` top left and `x1, y1` bottom right.
public struct ImageBox: Equatable, Sendable {
    public var x0, y0, x1, y1: Double
    public init(x0: Double, y0: Double, x1: Double, y1: Double) {
        (self.x0, self.y0, self.x1, self.y1) = (x0, y0, x1, y1)
    }
}

/// The prompts of one `predict` call: clicks (label 1 positive, 0 negative), a box, and the
/// low-resolution logits of an earlier prediction (`mask_input`, `[1, 256, 256]` or `[256, 256]`).
public struct ImagePrompt {
    public var points: [(x: Double, y: Double)]
    public var labels: [Int]
    public var box: ImageBox?
    public var maskInput: Tensor?

    public init(points: [(x: Double, y: Double)] = [], labels: [Int] = [], box: ImageBox? = nil, maskInput: Tensor? = nil) {
        self.points = points
        self.labels = labels
        self.box = box
        self.maskInput = maskInput
    }
}

/// What `predict` returns for one prompt: `C` masks (3 with multimask output, else 1) in the
/// decoder's token order.
public struct ImagePrediction {
    /// The masks at the image's resolution (logits > `maskThreshold`).
    public let masks: [BinaryMask]
    /// The model's predicted IoU of each mask.
    public let ious: [Float]
    /// `[C, 256, 256]` low-resolution logits, clamped to ±32: an earlier call's `maskInput`.
    public let lowResLogits: Tensor
    /// The logits the masks are thresholded from, before clamping and after hole/sprinkle filling.
    let postprocessedLowRes: Tensor

    public var width: Int { masks.first?.width ?? 0 }
    public var height: Int { masks.first?.height ?? 0 }

    /// The logits at the image's resolution (`return_logits=True`), `[C, H, W]`.
    public func logits() -> Tensor {
        Interpolate.bilinear(postprocessedLowRes, height: height, width: width)
    }

    /// Index of the best mask by predicted IoU.
    public var bestIndex: Int { argmax(ious) }
}

/// `SAM2ImagePredictor`: embed an image once, then predict masks from prompts any number of times.
///
///     let predictor = ImagePredictor(model: model)
///     predictor.setImage(image)
///     let p = try predictor.predict(points: [(500, 375)], labels: [1])   // 3 masks with scores
///     let best = p.masks[p.bestIndex]
public final class ImagePredictor {
    public let model: SAM2Model
    /// Logits above this are the object (`mask_threshold`).
    public var maskThreshold: Float
    /// Fill background regions of at most this many low-resolution pixels (`max_hole_area`; 0 = off).
    public var maxHoleArea: Int
    /// Remove foreground regions of at most this many low-resolution pixels (`max_sprinkle_area`; 0 = off).
    public var maxSprinkleArea: Int

    /// One embedded image: what `set_image` keeps.
    struct Embedding {
        let width: Int, height: Int
        /// `image_embed` as `[HW, C]` tokens, `no_mem_embed` added.
        let tokens: Tensor
        let highRes: (s0: Tensor, s1: Tensor)?
        /// The mask decoder's first image-side projections of `tokens`, shared by every prompt.
        let projections: Tensor
    }
    private var embeddings: [Embedding] = []

    public init(model: SAM2Model, maskThreshold: Float = 0, maxHoleArea: Int = 0, maxSprinkleArea: Int = 0) {
        self.model = model
        self.maskThreshold = maskThreshold
        self.maxHoleArea = maxHoleArea
        self.maxSprinkleArea = maxSprinkleArea
    }

    /// The size of the image set with `setImage` (nil before).
    public var imageSize: (width: Int, height: Int)? { embeddings.count == 1 ? (embeddings[0].width, embeddings[0].height) : nil }

    /// `set_image`: compute and keep the image's embedding.
    public func setImage(_ image: RGBImage) {
        embeddings = [embed(modelInput: image.modelInput(size: model.imageSize), width: image.width, height: image.height)]
    }

    /// `set_image` on an input already made (`[3, S, S]`, as `RGBImage.modelInput` makes it) for an
    /// image of `width x height`.
    public func setImage(modelInput: Tensor, width: Int, height: Int) {
        embeddings = [embed(modelInput: modelInput, width: width, height: height)]
    }

    /// `set_image_batch`: embed several images for `predictBatch`.
    public func setImages(_ images: [RGBImage]) {
        embeddings = images.map { embed(modelInput: $0.modelInput(size: model.imageSize), width: $0.width, height: $0.height) }
    }

    /// Forget the image(s) (`reset_predictor`).
    public func reset() { embeddings = [] }

    private func embed(modelInput: Tensor, width: Int, height: Int) -> Embedding {
        let f = FrameFeatures(model.encodeImage(modelInput))
        // `directly_add_no_mem_embed`: an image is a first frame without memory.
        let tokens = model.config.directlyAddNoMemEmbed ? f.visionTokens.addingRow(model.noMemEmbed.data) : f.visionTokens
        return Embedding(width: width, height: height, tokens: tokens, highRes: f.highRes,
                         projections: model.firstBlockProjections(of: tokens))
    }

    // MARK: prediction

    /// `predict`: masks for clicks (pixels of the image, or 0-1 when `normalizeCoordinates` is
    /// false), a box and/or an earlier call's low-resolution logits.
    public func predict(points: [(x: Double, y: Double)] = [], labels: [Int] = [], box: ImageBox? = nil,
                        maskInput: Tensor? = nil, multimask: Bool = true, normalizeCoordinates: Bool = true) throws -> ImagePrediction {
        try predict(ImagePrompt(points: points, labels: labels, box: box, maskInput: maskInput),
                    multimask: multimask, normalizeCoordinates: normalizeCoordinates)
    }

    public func predict(_ prompt: ImagePrompt, multimask: Bool = true, normalizeCoordinates: Bool = true) throws -> ImagePrediction {
        let e = try single()
        return try predict(prompt, on: e, multimask: multimask, normalizeCoordinates: normalizeCoordinates)
    }

    /// Several boxes in one call (`predict(box=[B, 4])`): one object per box, each with the same
    /// clicks (if any).
    public func predict(boxes: [ImageBox], points: [(x: Double, y: Double)] = [], labels: [Int] = [],
                        multimask: Bool = true, normalizeCoordinates: Bool = true) throws -> [ImagePrediction] {
        let e = try single()
        guard !boxes.isEmpty else { throw PredictorError("no boxes given") }
        return try boxes.map {
            try predict(ImagePrompt(points: points, labels: labels, box: $0), on: e, multimask: multimask,
                        normalizeCoordinates: normalizeCoordinates)
        }
    }

    /// `predict_batch`: one prompt per image set with `setImages`.
    public func predictBatch(_ prompts: [ImagePrompt], multimask: Bool = true, normalizeCoordinates: Bool = true) throws -> [ImagePrediction] {
        guard !embeddings.isEmpty else { throw PredictorError("no images set: call setImages first") }
        guard prompts.count == embeddings.count else {
            throw PredictorError("\(prompts.count) prompts for \(embeddings.count) images")
        }
        return try zip(prompts, embeddings).map {
            try predict($0, on: $1, multimask: multimask, normalizeCoordinates: normalizeCoordinates)
        }
    }

    private func single() throws -> Embedding {
        guard !embeddings.isEmpty else { throw PredictorError("no image set: call setImage first") }
        guard embeddings.count == 1 else { throw PredictorError("several images are set: use predictBatch") }
        return embeddings[0]
    }

    private func predict(_ prompt: ImagePrompt, on e: Embedding, multimask: Bool, normalizeCoordinates: Bool) throws -> ImagePrediction {
        let points = try modelPoints(prompt, width: e.width, height: e.height, normalize: normalizeCoordinates)
        let maskInput = try prompt.maskInput.map(checkedMaskInput)
        let low = decode(points, maskInput: maskInput, on: e, multimask: multimask)
        let masks = (0..<low.masks.shape[0]).map { i in
            BinaryMask(width: e.width, height: e.height, bits: upsampledMask(low.masks.rows(i..<(i + 1)), width: e.width, height: e.height))
        }
        return ImagePrediction(masks: masks, ious: low.ious, lowResLogits: low.masks.map { min(max($0, -32), 32) },
                               postprocessedLowRes: low.postprocessed)
    }

    /// Decoder output for model-frame points: raw low-res logits `[C, 256, 256]`, the IoUs, and the
    /// logits after hole/sprinkle filling (what the image-resolution masks come from).
    func decode(_ points: PointPrompt, maskInput: Tensor?, on e: Embedding, multimask: Bool)
        -> (masks: Tensor, ious: [Float], postprocessed: Tensor) {
        let out = model.decodeMasks(e.tokens, points: points, maskPrompt: maskInput, highRes: e.highRes,
                                    multimask: multimask, frameProjections: e.projections).output
        let post = maxHoleArea > 0 || maxSprinkleArea > 0
            ? HoleFilling.fillHolesAndSprinkles(out.masks, threshold: maskThreshold, maxHoleArea: maxHoleArea, maxSprinkleArea: maxSprinkleArea)
            : out.masks
        return (out.masks, out.ious, post)
    }

    /// `decode` on the one image set.
    func decode(_ points: PointPrompt, maskInput: Tensor?, multimask: Bool) throws -> (masks: Tensor, ious: [Float], postprocessed: Tensor) {
        decode(points, maskInput: maskInput, on: try single(), multimask: multimask)
    }

    /// `F.interpolate(bilinear, align_corners=False)` to the image's size, then `> maskThreshold`.
    func upsampledMask(_ lowRes: Tensor, width: Int, height: Int) -> [UInt8] {
        Interpolate.bilinearMask(lowRes, height: height, width: width, threshold: maskThreshold)
    }

    /// `_prep_prompts` and the box-before-clicks concatenation of `_predict`, in the model's
    /// `image_size` frame, float32 as the official transforms compute it.
    func modelPoints(_ p: ImagePrompt, width: Int, height: Int, normalize: Bool) throws -> PointPrompt {
        guard p.points.count == p.labels.count else {
            throw PredictorError("\(p.points.count) points but \(p.labels.count) labels")
        }
        if let bad = p.labels.first(where: { !(-1...3).contains($0) }) {
            throw PredictorError("point label \(bad) is not one of 1 (positive), 0 (negative), 2/3 (box corners), -1 (padding)")
        }
        guard !p.points.isEmpty || p.box != nil else {
            throw PredictorError("give at least one point or a box (a mask input only refines them)")
        }
        var coords = p.points
        var labels = p.labels
        if let b = p.box {
            coords = [(b.x0, b.y0), (b.x1, b.y1)] + coords
            labels = [2, 3] + labels
        }
        if let bad = coords.first(where: { !$0.x.isFinite || !$0.y.isFinite }) {
            throw PredictorError("prompt coordinate (\(bad.x), \(bad.y)) is not a finite number")
        }
        let s = Float(model.imageSize), w = Float(width), h = Float(height)
        return PointPrompt(coords: coords.map { c in
            normalize ? (x: Float(c.x) / w * s, y: Float(c.y) / h * s) : (x: Float(c.x) * s, y: Float(c.y) * s)
        }, labels: labels)
    }

    /// `mask_input` must be the low-resolution logits of an earlier prediction: `[1, 256, 256]`.
    private func checkedMaskInput(_ m: Tensor) throws -> Tensor {
        let side = model.imageSize / 4
        let shape = m.shape.count == 2 ? [1] + m.shape : m.shape
        guard shape == [1, side, side] else {
            throw PredictorError("mask input must be \(side)x\(side) low-resolution logits (an earlier prediction's), got shape \(m.shape)")
        }
        guard !m.data.contains(where: { !$0.isFinite }) else { throw PredictorError("mask input holds NaN or infinite values") }
        return m.reshaped(shape)
    }
}
