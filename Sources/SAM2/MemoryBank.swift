import Foundation
import OrderedCollections
import SAM2Tensor

/// One object's result on one frame, as the predictor keeps it (the official "compact" output).
/// Its two large tensors can be moved to disk (see `SpillFile`) when tracking has moved on.
public struct FrameOutput {
    private var maskmem: StoredTensor?
    private var pred: StoredTensor
    /// Object pointer `[C]`.
    public var objPtr: Tensor
    public var objectScoreLogit: Float

    public init(maskmemFeatures: Tensor?, predMasks: Tensor, objPtr: Tensor, objectScoreLogit: Float) {
        maskmem = maskmemFeatures.map(StoredTensor.init)
        pred = StoredTensor(predMasks)
        self.objPtr = objPtr
        self.objectScoreLogit = objectScoreLogit
    }

    /// Memory features `[memDim, h, w]`, rounded to bfloat16 like the official predictor stores them;
    /// nil until the memory encoder has run on this frame.
    public var maskmemFeatures: Tensor? {
        get { maskmem?.tensor }
        set { maskmem = newValue.map(StoredTensor.init) }
    }

    /// Low-resolution mask logits `[S/4, S/4]` (`pred_masks`).
    public var predMasks: Tensor { pred.tensor }

    /// Move the large tensors to `file`; they are read back (exactly) when used.
    func spill(to file: SpillFile) {
        maskmem?.spill(to: file)
        pred.spill(to: file)
    }
}

/// One object's memory bank: conditioning frames (prompted) and the frames tracked from them,
/// in insertion order like the official dicts.
public struct ObjectMemory {
    public var condFrameOutputs = OrderedDictionary<Int, FrameOutput>()
    public var nonCondFrameOutputs = OrderedDictionary<Int, FrameOutput>()
    public init() {}
}

/// A tensor in RAM or in a `SpillFile`.
final class StoredTensor {
    private var inMemory: Tensor?
    private var onDisk: (file: SpillFile, offset: Int, shape: [Int])?

    init(_ t: Tensor) { inMemory = t }

    var tensor: Tensor {
        if let inMemory { return inMemory }
        let d = onDisk!
        return Tensor(shape: d.shape, data: d.file.read(offset: d.offset, count: d.shape.reduce(1, *)))
    }

    func spill(to file: SpillFile) {
        guard let t = inMemory, let offset = file.write(t.data) else { return }
        onDisk = (file, offset, t.shape)
        inMemory = nil
    }
}
