import Foundation
import SAM2Checkpoint
import SAM2Tensor

/// Frames exactly as the official model consumed them (a fixture's `frames.safetensors`).
public final class TensorFrames: FrameSource {
    let frames: Tensor   // [T, 3, S, S]
    public let videoWidth: Int
    public let videoHeight: Int

    public init(frames: Tensor, videoWidth: Int, videoHeight: Int) {
        self.frames = frames
        self.videoWidth = videoWidth
        self.videoHeight = videoHeight
    }

    /// Read `frames` [T,3,S,S] and `video_hw` from a fixture's safetensors file.
    public convenience init(safetensorsPath path: String) throws {
        let entries = try Safetensors.read(path: path)
        guard let f = entries["frames"], f.shape.count == 4, f.shape[1] == 3 else {
            throw PredictorError("\(path): no 'frames' tensor of shape [T, 3, S, S]")
        }
        guard let hw = try entries["video_hw"]?.int32s(), hw.count == 2, hw[0] > 0, hw[1] > 0 else {
            throw PredictorError("\(path): no 'video_hw' [2] int32 entry")
        }
        self.init(frames: try f.tensor(), videoWidth: Int(hw[1]), videoHeight: Int(hw[0]))
    }

    public var frameCount: Int { frames.shape[0] }

    public func modelInput(at index: Int, size: Int) throws -> Tensor {
        guard frames.shape[2] == size && frames.shape[3] == size else {
            throw PredictorError("fixture frames are \(frames.shape[2])x\(frames.shape[3]), the model takes \(size)x\(size)")
        }
        return frames.rows(index..<(index + 1)).reshaped([3, size, size])
    }
}

/// The conformance runner behind `sam2 replay` (`replay` runs through the session engine, in
/// SAM2Session): run a fixture's session with its checkpoint and config and write the official
/// record keys, so `compare.py` can check parity.
public enum Conformance {
    public struct Summary {
        public var records: Int
        public var actions: Int
        public var frames: Int
        public init(records: Int, actions: Int, frames: Int) {
            self.records = records
            self.actions = actions
            self.frames = frames
        }
    }

    /// `np.packbits` of a 0/1 mask: MSB first, zero-padded to a whole byte.
    public static func packBits(_ bits: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: (bits.count + 7) / 8)
        for (i, b) in bits.enumerated() where b != 0 { out[i >> 3] |= UInt8(0x80) >> UInt8(i & 7) }
        return out
    }
}
