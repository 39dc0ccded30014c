import Dispatch
import Foundation
import SAM2
import SAM2Tensor

/// A video as the predictor's random-access `FrameSource`, in bounded memory.
///
/// Frames are decoded once, in order; each frame's model input is kept as its `S x S x 3` bytes
/// in an unlinked temporary file (3 MB a frame at 1024), so revisiting a frame (backward
/// propagation, a correction) costs a read, not a decode, and resident memory stays flat however
/// long the video. (The official predictor keeps every frame as float32 in RAM, 12 MB a frame,
/// which is why its users run out of memory.) While the model works on frame t, frame t+1 is
/// decoded and resized on a background queue.
public final class VideoFrameSource: FrameSource {
    public let reader: VideoFrameReader
    public var frameCount: Int { reader.frameCount }
    public var videoWidth: Int { reader.width }
    public var videoHeight: Int { reader.height }

    /// Everything that touches the reader or the cache's bookkeeping runs here, in order.
    private let queue = DispatchQueue(label: "sam2.frame-decoder")
    /// Marks `queue`, so `deinit` knows when the last reference went away in a prefetch on it.
    private static let onQueue = DispatchSpecificKey<Bool>()
    private let cacheFD: Int32
    private var cachedSize = 0
    private var decoded = 0
    private var lastBytes: [UInt8]?
    private var skipped = 0
    private var warnedShort = false
    private var prefetchError: Error?

    public init(path: String, limit: Int? = nil) throws {
        reader = try VideoFrameReader(path: path, limit: limit)
        var template = Array("\(NSTemporaryDirectory())/sam2-frames-XXXXXX".utf8CString)
        cacheFD = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard cacheFD >= 0 else { throw VideoError.invalidArgument(path: path, reason: "cannot create a temporary frame cache") }
        // Unlinked at once: the space returns to the system when we close, even after a crash.
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        queue.setSpecific(key: Self.onQueue, value: true)
    }

    deinit {
        // Let a running prefetch finish before the file goes; unless this is that prefetch,
        // which held the last reference (a sync on its own queue would trap).
        if DispatchQueue.getSpecific(key: Self.onQueue) != true { queue.sync {} }
        close(cacheFD)
    }

    public func modelInput(at index: Int, size: Int) throws -> Tensor {
        guard index >= 0 && index < frameCount else {
            throw VideoError.invalidArgument(path: reader.path, reason: "frame \(index) is beyond the last frame \(frameCount - 1)")
        }
        let bytes: [UInt8] = try queue.sync {
            if cachedSize != 0 && cachedSize != size {
                throw VideoError.invalidArgument(path: reader.path, reason: "model input size changed from \(cachedSize) to \(size)")
            }
            cachedSize = size
            if let e = prefetchError { prefetchError = nil; throw e }
            try decode(through: index, size: size)
            return try readCached(index, size: size)
        }
        // Sequential access: get the next frame ready while the model runs on this one.
        if index + 1 < frameCount {
            queue.async { [weak self] in
                guard let self, self.decoded == index + 1 else { return }
                do { try self.decode(through: index + 1, size: size) } catch { self.prefetchError = error }
            }
        }
        return VideoFrameReader.normalise(bytes, size: size)
    }

    /// Decode (on `queue`) every frame up to `index` into the cache.
    private func decode(through index: Int, size: Int) throws {
        let frameBytes = size * size * 3
        while decoded <= index {
            let bytes: [UInt8]
            if let frame = try reader.nextFrame() {
                // Frames the decoder could not produce (the reader warned) keep their indices:
                // the last good frame stands in for each, so later frames stay where they belong.
                while skipped < reader.skippedFrames, let lastBytes, decoded < frameCount - 1 {
                    try store(lastBytes, at: decoded, frameBytes: frameBytes)
                    decoded += 1
                    skipped += 1
                }
                skipped = reader.skippedFrames
                bytes = PILResize.resizeRGB(frame.rgb, width: frame.width, height: frame.height, outWidth: size, outHeight: size)
                lastBytes = bytes
            } else if let lastBytes {
                // Undecodable packets were skipped (the reader warned): the stream ends early.
                // Repeat the last good frame so every index up to frameCount exists.
                if !warnedShort {
                    FileHandle.standardError.write("sam2: warning: \(reader.path): \(frameCount - decoded) frame(s) could not be decoded; repeating the last good frame in their place\n".data(using: .utf8)!)
                    warnedShort = true
                }
                bytes = lastBytes
            } else {
                throw VideoError.invalidArgument(path: reader.path, reason: "no frame could be decoded")
            }
            try store(bytes, at: decoded, frameBytes: frameBytes)
            decoded += 1
        }
    }

    private func store(_ bytes: [UInt8], at index: Int, frameBytes: Int) throws {
        let written = bytes.withUnsafeBytes { pwrite(cacheFD, $0.baseAddress, frameBytes, off_t(index * frameBytes)) }
        guard written == frameBytes else {
            throw VideoError.invalidArgument(path: reader.path, reason: "cannot write the frame cache (disk full?)")
        }
    }

    private func readCached(_ index: Int, size: Int) throws -> [UInt8] {
        let frameBytes = size * size * 3
        var bytes = [UInt8](repeating: 0, count: frameBytes)
        let got = bytes.withUnsafeMutableBytes { pread(cacheFD, $0.baseAddress, frameBytes, off_t(index * frameBytes)) }
        guard got == frameBytes else { throw VideoError.invalidArgument(path: reader.path, reason: "cannot read the frame cache") }
        return bytes
    }
}
