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

/// An unlinked temporary file that holds memory-bank tensors of frames tracking has moved away
/// from, so resident memory stays flat however long the video (the official predictor keeps every
/// frame's memory in RAM and grows by about 1.3 MB per frame and object at 1024).
final class SpillFile {
    private let fd: Int32
    private var end = 0

    init?() {
        var template = Array("\(NSTemporaryDirectory())/sam2-memory-XXXXXX".utf8CString)
        fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { return nil }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
    }

    deinit { close(fd) }

    /// Append values; nil if the disk refuses (the tensor then simply stays in RAM).
    func write(_ values: [Float]) -> Int? {
        let bytes = values.count * 4
        let offset = end
        let n = values.withUnsafeBytes { pwrite(fd, $0.baseAddress, bytes, off_t(offset)) }
        guard n == bytes else { return nil }
        end += bytes
        return offset
    }

    func read(offset: Int, count: Int) -> [Float] {
        var out = [Float](repeating: 0, count: count)
        let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count * 4, off_t(offset)) }
        precondition(n == count * 4, "sam2: the memory spill file could not be read back")
        return out
    }
}
