import CFFmpeg
import Foundation

// Small helpers shared by the reader, the image codec and the overlay writer.
// FFmpeg's function-like macros (AVERROR, FFERRTAG, av_err2str) do not reach
// Swift, so the few we need are rebuilt here.

enum FF {
    /// FFERRTAG(a, b, c, d): a negative four-character code.
    static func errTag(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) -> Int32 {
        let tag = UInt32(a) | UInt32(b) << 8 | UInt32(c) << 16 | UInt32(d) << 24
        return -Int32(bitPattern: tag)
    }

    static let eof = errTag(0x45, 0x4F, 0x46, 0x20)              // "EOF "
    static let invalidData = errTag(0x49, 0x4E, 0x44, 0x41)      // "INDA"
    static let eagain: Int32 = -EAGAIN
    static let noPTS = Int64.min                                  // AV_NOPTS_VALUE

    /// av_err2str for Swift.
    static func message(_ code: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        if av_strerror(code, &buffer, buffer.count) < 0 {
            return "error \(code)"
        }
        return String(cString: buffer)
    }

    /// FFmpeg logs to stderr by default (e.g. "moov atom not found", concealment
    /// chatter for damaged H.264). Every failure is reported through our own
    /// errors and warnings instead, so keep libav quiet unless asked for
    /// (SAM2_FFMPEG_LOG=1 restores FFmpeg's warnings for debugging).
    static let configureLogging: Void = {
        if ProcessInfo.processInfo.environment["SAM2_FFMPEG_LOG"] != nil {
            av_log_set_level(AV_LOG_WARNING)
        } else {
            av_log_set_level(AV_LOG_QUIET)
        }
    }()

    static func warn(_ message: String) {
        FileHandle.standardError.write(Data(("warning: " + message + "\n").utf8))
    }

    /// The frame's plane pointers and strides as arrays, the shape sws_scale wants.
    static func planes(_ frame: UnsafePointer<AVFrame>) -> ([UnsafePointer<UInt8>?], [Int32]) {
        let d = frame.pointee.data
        let l = frame.pointee.linesize
        let pointers: [UnsafeMutablePointer<UInt8>?] = [d.0, d.1, d.2, d.3, d.4, d.5, d.6, d.7]
        return (pointers.map { $0.map { UnsafePointer($0) } }, [l.0, l.1, l.2, l.3, l.4, l.5, l.6, l.7])
    }

    static func mutablePlanes(_ frame: UnsafeMutablePointer<AVFrame>) -> ([UnsafeMutablePointer<UInt8>?], [Int32]) {
        let d = frame.pointee.data
        let l = frame.pointee.linesize
        return ([d.0, d.1, d.2, d.3, d.4, d.5, d.6, d.7], [l.0, l.1, l.2, l.3, l.4, l.5, l.6, l.7])
    }

    /// Copy a packed single-plane frame (RGB24, GRAY8, PAL8 indices) into a tight array.
    static func packedBytes(_ frame: UnsafePointer<AVFrame>, bytesPerPixel: Int) -> [UInt8] {
        let w = Int(frame.pointee.width), h = Int(frame.pointee.height)
        let rowBytes = w * bytesPerPixel
        let stride = Int(frame.pointee.linesize.0)
        guard let base = frame.pointee.data.0, w > 0, h > 0 else { return [] }
        var out = [UInt8](repeating: 0, count: rowBytes * h)
        out.withUnsafeMutableBufferPointer { dst in
            guard let dstBase = dst.baseAddress else { return }
            for y in 0..<h {
                memcpy(dstBase + y * rowBytes, base + y * stride, rowBytes)
            }
        }
        return out
    }

    /// Copy a tight packed array into a frame whose buffers are already allocated.
    static func fill(_ frame: UnsafeMutablePointer<AVFrame>, from bytes: [UInt8], bytesPerPixel: Int) {
        let w = Int(frame.pointee.width), h = Int(frame.pointee.height)
        let rowBytes = w * bytesPerPixel
        let stride = Int(frame.pointee.linesize.0)
        guard let base = frame.pointee.data.0, bytes.count >= rowBytes * h else { return }
        bytes.withUnsafeBufferPointer { src in
            guard let srcBase = src.baseAddress else { return }
            for y in 0..<h {
                memcpy(base + y * stride, srcBase + y * rowBytes, rowBytes)
            }
        }
    }

    /// Allocate a frame with its own buffers.
    static func allocFrame(width: Int, height: Int, format: AVPixelFormat) -> UnsafeMutablePointer<AVFrame>? {
        var frame = av_frame_alloc()
        guard let f = frame else { return nil }
        f.pointee.width = Int32(width)
        f.pointee.height = Int32(height)
        f.pointee.format = format.rawValue
        if av_frame_get_buffer(f, 0) < 0 {
            av_frame_free(&frame)
            return nil
        }
        return f
    }
}

/// A cached swscale context that converts (and optionally resizes) frames.
///
/// Flags follow the SAM 2 brief: bicubic, full chroma interpolation and input,
/// accurate rounding. YUV input honours the frame's colour matrix and range the
/// way the ffmpeg CLI's scale filter does, so results match `ffmpeg -vf scale`.
final class Scaler {
    private var context: OpaquePointer?
    static let flags = SWS_BICUBIC | SWS_FULL_CHR_H_INT | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INP
    /// What the ffmpeg CLI uses when it converts frames to RGB (`ffmpeg -i v.mp4 %05d.png`, the
    /// official way to feed SAM 2 a video): plain bicubic. Display frames use it, so the RGB we
    /// resize for the model is bit-identical to the official loader's.
    static let cliFlags = SWS_BICUBIC
    private let flags: Int32

    init(flags: Int32 = Scaler.flags) { self.flags = flags }

    deinit { sws_freeContext(context) }

    /// Scale `src` into `dst`, whose size and format are already set and allocated.
    func scale(_ src: UnsafePointer<AVFrame>, into dst: UnsafeMutablePointer<AVFrame>,
               dstRange: Int32 = 1, dstColorspace: Int32 = Int32(SWS_CS_DEFAULT)) -> Bool {
        let srcFormat = AVPixelFormat(rawValue: src.pointee.format)
        let dstFormat = AVPixelFormat(rawValue: dst.pointee.format)
        context = sws_getCachedContext(context,
                                       src.pointee.width, src.pointee.height, srcFormat,
                                       dst.pointee.width, dst.pointee.height, dstFormat,
                                       flags, nil, nil, nil)
        guard let context else { return false }

        if let desc = av_pix_fmt_desc_get(srcFormat),
           desc.pointee.flags & UInt64(AV_PIX_FMT_FLAG_RGB) == 0,
           desc.pointee.flags & UInt64(AV_PIX_FMT_FLAG_PAL) == 0 {
            // Same choice as vf_scale's parse_yuv_type(): unknown matrices mean BT.601.
            var cs = Int32(src.pointee.colorspace.rawValue)
            if cs < 1 || cs > 10 || cs == 8 { cs = Int32(AVCOL_SPC_BT470BG.rawValue) }
            // Tagged range wins; untagged follows swscale's own default (full range
            // for the yuvj* and gray formats), as the CLI's scale filter does.
            let fullRange: Int32
            switch src.pointee.color_range {
            case AVCOL_RANGE_JPEG: fullRange = 1
            case AVCOL_RANGE_MPEG: fullRange = 0
            default: fullRange = (Scaler.isJPEGFormat(srcFormat) || desc.pointee.nb_components <= 2) ? 1 : 0
            }
            sws_setColorspaceDetails(context, sws_getCoefficients(cs), fullRange,
                                     sws_getCoefficients(dstColorspace), dstRange,
                                     0, 1 << 16, 1 << 16)
        } else if let desc = av_pix_fmt_desc_get(dstFormat),
                  desc.pointee.flags & UInt64(AV_PIX_FMT_FLAG_RGB) == 0 {
            // RGB -> YUV (the overlay encoder): choose the output matrix and range.
            sws_setColorspaceDetails(context, sws_getCoefficients(Int32(SWS_CS_DEFAULT)), 1,
                                     sws_getCoefficients(dstColorspace), dstRange,
                                     0, 1 << 16, 1 << 16)
        }

        let (srcPlanes, srcStrides) = FF.planes(src)
        let (dstPlanes, dstStrides) = FF.mutablePlanes(dst)
        let rows = sws_scale(context, srcPlanes, srcStrides, 0, src.pointee.height, dstPlanes, dstStrides)
        return rows > 0
    }

    private static func isJPEGFormat(_ f: AVPixelFormat) -> Bool {
        f == AV_PIX_FMT_YUVJ420P || f == AV_PIX_FMT_YUVJ422P || f == AV_PIX_FMT_YUVJ444P
            || f == AV_PIX_FMT_YUVJ440P || f == AV_PIX_FMT_YUVJ411P
    }
}

/// Write bytes to `path` atomically: a temporary file in the same directory,
/// then rename(2), so readers never see a half-written file. (No fsync: this
/// protects against concurrent readers and crashes of this process, not power loss.)
public func writeFileAtomically(_ bytes: [UInt8], to path: String) throws {
    let url = URL(fileURLWithPath: path)
    let tmp = temporarySibling(of: path)
    do {
        try Data(bytes).write(to: URL(fileURLWithPath: tmp))
    } catch {
        try? FileManager.default.removeItem(atPath: tmp)
        throw ImageIOError.writeFailed(path: path, reason: "\(error.localizedDescription)")
    }
    if rename(tmp, url.path) != 0 {
        let reason = String(cString: strerror(errno))
        try? FileManager.default.removeItem(atPath: tmp)
        throw ImageIOError.writeFailed(path: path, reason: reason)
    }
}

/// A hidden, unique name next to `path` (same directory, so rename is atomic).
func temporarySibling(of path: String) -> String {
    let url = URL(fileURLWithPath: path)
    let dir = url.deletingLastPathComponent().path
    let token = UInt32.random(in: 0...UInt32.max)
    return dir + "/." + url.lastPathComponent + ".tmp-\(getpid())-\(String(token, radix: 16))"
}
