import CKernels
import Foundation

/// An unlinked temporary file that holds tensors tracking has moved away from — memory-bank
/// entries of earlier frames, image features kept for re-propagation — so resident memory stays
/// flat however long the video (the official predictor keeps every frame's memory in RAM and grows
/// by about 1.3 MB per frame and object at 1024).
///
/// Where the file system allows it, writes bypass the page cache (`O_DIRECT`) and run on a
/// background queue: copying a frame's 16 MB of features into the page cache cost 50 ms of CPU per
/// tracked frame (page allocation and the copy, on the cores the model needs); a direct write
/// leaves the copy to the device, and in the background the model goes on meanwhile (~10 ms a
/// frame less again, alternating runs). Until a write has landed its values are read from RAM;
/// one the disk refuses leaves them there for good. At most eight writes are in flight. Elsewhere
/// (tmpfs) writes are plain and synchronous.
final class SpillFile {
    /// Reads (and writes, without direct I/O).
    private let fd: Int32
    /// The same file opened for direct I/O, or -1.
    private let directFd: Int32
    private var end = 0

    /// Values whose direct write has not landed, by offset (a failed one's stay: RAM keeps them).
    private var pending: [Int: [Float]] = [:]
    private let pendingLock = NSLock()
    private let writer = DispatchQueue(label: "sam2.spill-file")
    private let inFlight = DispatchSemaphore(value: 8)
    /// Direct I/O needs block-aligned memory: a staging buffer.
    private var staging: UnsafeMutableRawPointer?
    private var stagingBytes = 0
    private static let block = 4096

    init?() {
        var template = Array("\(NSTemporaryDirectory())/sam2-memory-XXXXXX".utf8CString)
        fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { return nil }
        directFd = template.withUnsafeBufferPointer { sam2_open_direct($0.baseAddress!) }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
    }

    deinit {
        close(fd)
        if directFd >= 0 { close(directFd) }
        free(staging)
    }

    /// Append values and return where they start; nil if the disk refuses (the caller then keeps
    /// them in RAM).
    func write(_ values: [Float]) -> Int? {
        let bytes = values.count * 4
        let offset = end
        guard directFd >= 0 else {
            guard writePlain(values, at: offset) else { return nil }
            end += bytes
            return offset
        }
        end += (bytes + Self.block - 1) / Self.block * Self.block
        pendingLock.withLock { pending[offset] = values }
        inFlight.wait()
        writer.async { [self] in
            defer { inFlight.signal() }
            // A file system may accept the direct open but not the write: then a plain one.
            if writeDirect(values, at: offset) || writePlain(values, at: offset) { pendingLock.withLock { pending[offset] = nil } }
        }
        return offset
    }

    /// Block until every queued write has landed (tests).
    func waitForWrites() { writer.sync {} }

    func read(offset: Int, count: Int) -> [Float] {
        if let kept = pendingLock.withLock({ pending[offset] }) { return kept }
        var out = [Float](repeating: 0, count: count)
        let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count * 4, off_t(offset)) }
        precondition(n == count * 4, "sam2: the memory spill file could not be read back")
        return out
    }

    private func writePlain(_ values: [Float], at offset: Int) -> Bool {
        values.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) } == values.count * 4
    }

    /// Stage the values in aligned memory, padded to whole blocks, and write.
    private func writeDirect(_ values: [Float], at offset: Int) -> Bool {
        let bytes = values.count * 4, padded = (bytes + Self.block - 1) / Self.block * Self.block
        if padded > stagingBytes {
            free(staging)
            staging = nil
            stagingBytes = 0
            guard posix_memalign(&staging, Self.block, padded) == 0, staging != nil else { return false }
            stagingBytes = padded
        }
        let buffer = staging!
        values.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: bytes) }
        (buffer + bytes).initializeMemory(as: UInt8.self, repeating: 0, count: padded - bytes)
        return pwrite(directFd, buffer, padded, off_t(offset)) == padded
    }
}
