import Foundation
import SAM2Video

/// The video's frames as JPEG for the web page, decoded once on a background thread into an
/// unlinked temporary file (memory stays flat); a request for a frame not decoded yet waits.
final class DisplayFrames: @unchecked Sendable {
    let frameCount: Int
    private let condition = NSCondition()
    private var index: [(offset: Int, length: Int)] = []
    private var failure: String?
    private var stopped = false
    private let fd: Int32
    private var end = 0

    init(path: String, limit: Int?, frameCount: Int) throws {
        self.frameCount = frameCount
        var template = Array("\(NSTemporaryDirectory())/sam2-display-XXXXXX".utf8CString)
        fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw APIError(.internalServerError, "cannot create a temporary file for display frames") }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        let reader = try VideoFrameReader(path: path, limit: limit)
        Thread.detachNewThread { [self] in decode(reader) }
    }

    deinit { close(fd) }

    /// Stops decoding (the session closed); the file goes with the last reference.
    func stop() {
        condition.lock(); stopped = true; condition.broadcast(); condition.unlock()
    }

    private func decode(_ reader: VideoFrameReader) {
        do {
            while let frame = try reader.nextFrame() {
                let jpeg = try ImageIO.encodeJPEG(width: frame.width, height: frame.height, rgb: frame.rgb)
                condition.lock()
                defer { condition.unlock() }
                if stopped { return }
                let n = jpeg.withUnsafeBytes { pwrite(fd, $0.baseAddress, jpeg.count, off_t(end)) }
                guard n == jpeg.count else { failure = "cannot write display frames (disk full?)"; condition.broadcast(); return }
                // Frames the decoder skipped (damaged) show the last good one.
                while index.count <= frame.index { index.append((end, jpeg.count)) }
                end += jpeg.count
                condition.broadcast()
            }
        } catch {
            condition.lock(); failure = "\(error)"; condition.broadcast(); condition.unlock()
            return
        }
        condition.lock()
        if let last = index.last { while index.count < frameCount { index.append(last) } }
        if index.isEmpty { failure = "the video has no decodable frames" }
        condition.broadcast()
        condition.unlock()
    }

    /// Frame `i` as JPEG bytes, waiting up to `timeout` seconds for the decoder to reach it.
    func jpeg(_ i: Int, timeout: TimeInterval = 60) throws -> [UInt8] {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while index.count <= i {
            if let failure { throw APIError(.internalServerError, "frame \(i) cannot be shown: \(failure)") }
            if stopped { throw APIError(.notFound, "session closed") }
            guard condition.wait(until: deadline) else { throw APIError(.serviceUnavailable, "frame \(i) is not decoded yet; try again") }
        }
        let r = index[i]
        var bytes = [UInt8](repeating: 0, count: r.length)
        let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, r.length, off_t(r.offset)) }
        guard n == r.length else { throw APIError(.internalServerError, "cannot read display frame \(i)") }
        return bytes
    }
}
