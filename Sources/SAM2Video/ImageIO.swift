import CFFmpeg
import Foundation

/// Errors from reading and writing still images.
public enum ImageIOError: Error, CustomStringConvertible {
    case fileNotFound(path: String)
    case unreadable(path: String, reason: String)
    case emptyFile(path: String)
    case unsupportedFormat(path: String)
    case decodeFailed(path: String, reason: String)
    case encodeFailed(path: String, reason: String)
    case writeFailed(path: String, reason: String)
    case invalidInput(path: String, reason: String)

    public var description: String {
        switch self {
        case .fileNotFound(let p): return "\(p): no such file"
        case .unreadable(let p, let r): return "\(p): cannot read file (\(r))"
        case .emptyFile(let p): return "\(p): file is empty (0 bytes)"
        case .unsupportedFormat(let p): return "\(p): not a PNG, JPEG, WebP, BMP or TIFF image"
        case .decodeFailed(let p, let r): return "\(p): cannot decode image (\(r))"
        case .encodeFailed(let p, let r): return "\(p): cannot encode PNG (\(r))"
        case .writeFailed(let p, let r): return "\(p): cannot write file (\(r))"
        case .invalidInput(let p, let r): return "\(p): \(r)"
        }
    }
}

/// Owns one AVFrame; frees it on deinit.
final class OwnedFrame {
    let pointer: UnsafeMutablePointer<AVFrame>

    init?(width: Int, height: Int, format: AVPixelFormat) {
        guard let f = FF.allocFrame(width: width, height: height, format: format) else { return nil }
        pointer = f
    }

    init?() {
        guard let f = av_frame_alloc() else { return nil }
        pointer = f
    }

    deinit {
        var p: UnsafeMutablePointer<AVFrame>? = pointer
        av_frame_free(&p)
    }

    var width: Int { Int(pointer.pointee.width) }
    var height: Int { Int(pointer.pointee.height) }
    var format: AVPixelFormat { AVPixelFormat(rawValue: pointer.pointee.format) }
}

/// PNG/JPEG input and PNG output through libavcodec's own codecs (no libpng/zlib
/// dependency). Used for mask prompts, mask export and image-folder videos.
/// Every write is atomic: a temporary sibling file renamed into place.
public enum ImageIO {

    // MARK: palette

    /// The DAVIS / PASCAL VOC colour map: index 0 black, 1 (128,0,0), 2 (0,128,0),
    /// 3 (128,128,0), 4 (0,0,128), ... (bits of the index spread over R, G, B).
    public static let davisPalette: [(r: UInt8, g: UInt8, b: UInt8)] = (0..<256).map { i in
        var r = 0, g = 0, b = 0, c = i
        for j in 0..<8 {
            r |= (c & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        }
        return (UInt8(r), UInt8(g), UInt8(b))
    }

    // MARK: writing

    /// Write an 8-bit grayscale PNG. `pixels` is row-major, `width * height` bytes.
    public static func writeGrayPNG(path: String, width: Int, height: Int, pixels: [UInt8]) throws {
        try checkSize(path: path, width: width, height: height, count: pixels.count, channels: 1)
        let png = try encodePNG(path: path, width: width, height: height, format: AV_PIX_FMT_GRAY8) { frame in
            FF.fill(frame, from: pixels, bytesPerPixel: 1)
        }
        try writeFileAtomically(png, to: path)
    }

    /// Write an 8-bit RGB PNG. `rgb` is row-major HxWx3.
    public static func writeRGBPNG(path: String, width: Int, height: Int, rgb: [UInt8]) throws {
        try checkSize(path: path, width: width, height: height, count: rgb.count, channels: 3)
        let png = try encodePNG(path: path, width: width, height: height, format: AV_PIX_FMT_RGB24) { frame in
            FF.fill(frame, from: rgb, bytesPerPixel: 3)
        }
        try writeFileAtomically(png, to: path)
    }

    /// Write an 8-bit indexed (palette) PNG, DAVIS style: each byte of `indices`
    /// is a palette index (object id), the palette defaults to `davisPalette`.
    public static func writeIndexedPNG(path: String, width: Int, height: Int, indices: [UInt8],
                                       palette: [(r: UInt8, g: UInt8, b: UInt8)] = davisPalette) throws {
        try checkSize(path: path, width: width, height: height, count: indices.count, channels: 1)
        let png = try encodePNG(path: path, width: width, height: height, format: AV_PIX_FMT_PAL8) { frame in
            FF.fill(frame, from: indices, bytesPerPixel: 1)
            // PAL8 keeps 256 native-endian 0xAARRGGBB entries in the second plane;
            // alpha 0xFF everywhere so the encoder writes no tRNS chunk.
            guard let raw = frame.pointee.data.1 else { return }
            raw.withMemoryRebound(to: UInt32.self, capacity: 256) { entries in
                for i in 0..<256 {
                    let c = i < palette.count ? palette[i] : (r: 0, g: 0, b: 0)
                    entries[i] = 0xFF00_0000 | UInt32(c.r) << 16 | UInt32(c.g) << 8 | UInt32(c.b)
                }
            }
        }
        try writeFileAtomically(png, to: path)
    }

    // MARK: reading

    /// Read a PNG, JPEG, WebP, BMP or TIFF as 8-bit RGB (HxWx3). Alpha is dropped, palettes expanded.
    public static func readImage(path: String) throws -> (width: Int, height: Int, rgb: [UInt8]) {
        let frame = try decodeImageFile(path: path)
        return (frame.width, frame.height, try rgbBytes(of: frame, path: path))
    }

    /// Read a PNG or JPEG as 8-bit grayscale. Gray images are returned as stored;
    /// colour ones use PIL's "L" conversion (0.299 R + 0.587 G + 0.114 B).
    public static func readGray(path: String) throws -> (width: Int, height: Int, gray: [UInt8]) {
        let frame = try decodeImageFile(path: path)
        if frame.format == AV_PIX_FMT_GRAY8 {
            return (frame.width, frame.height, FF.packedBytes(frame.pointer, bytesPerPixel: 1))
        }
        let rgb = try rgbBytes(of: frame, path: path)
        var gray = [UInt8](repeating: 0, count: frame.width * frame.height)
        for i in 0..<gray.count {
            let r = UInt32(rgb[3 * i]), g = UInt32(rgb[3 * i + 1]), b = UInt32(rgb[3 * i + 2])
            gray[i] = UInt8((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16)
        }
        return (frame.width, frame.height, gray)
    }

    /// Read a mask image as indices: palette PNGs give their raw indices (object
    /// ids, as in DAVIS annotations), grayscale images their values, and anything
    /// else falls back to `readGray`.
    public static func readIndexed(path: String) throws -> (width: Int, height: Int, indices: [UInt8]) {
        let frame = try decodeImageFile(path: path)
        if frame.format == AV_PIX_FMT_PAL8 || frame.format == AV_PIX_FMT_GRAY8 {
            return (frame.width, frame.height, FF.packedBytes(frame.pointer, bytesPerPixel: 1))
        }
        let g = try readGray(path: path)
        return (g.width, g.height, g.gray)
    }

    /// Width and height from the file header alone (PNG IHDR or JPEG SOF), or nil
    /// when the header cannot be parsed. Cheap: no decoding.
    public static func headerSize(path: String) -> (width: Int, height: Int)? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        var head = [UInt8](handle.readData(ofLength: 4096))
        if head.count >= 24, head.starts(with: pngMagic), head[12...15].elementsEqual(Array("IHDR".utf8)) {
            let w = head[16...19].reduce(0) { $0 << 8 | Int($1) }
            let h = head[20...23].reduce(0) { $0 << 8 | Int($1) }
            return w > 0 && h > 0 ? (w, h) : nil
        }
        guard head.count >= 4, head[0] == 0xFF, head[1] == 0xD8 else { return nil }
        if let size = jpegSize(head) { return size }
        // Large EXIF blocks (thumbnails) can push the SOF marker further in.
        head += [UInt8](handle.readData(ofLength: (1 << 18) - head.count))
        return jpegSize(head)
    }

    // MARK: internals

    static let pngMagic: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    static func checkSize(path: String, width: Int, height: Int, count: Int, channels: Int) throws {
        guard width > 0, height > 0, width <= 65535, height <= 65535 else {
            throw ImageIOError.invalidInput(path: path, reason: "invalid image size \(width)x\(height)")
        }
        guard count == width * height * channels else {
            throw ImageIOError.invalidInput(path: path,
                reason: "expected \(width * height * channels) bytes for \(width)x\(height)x\(channels), got \(count)")
        }
    }

    /// Read a whole file, distinguishing missing, unreadable and empty files.
    static func readFileBytes(path: String) throws -> [UInt8] {
        // POSIX reads: exact errors, and no Foundation buffer leaked on empty files.
        let fd = open(path, O_RDONLY | O_NONBLOCK)
        guard fd >= 0 else {
            throw errno == ENOENT ? ImageIOError.fileNotFound(path: path)
                                  : ImageIOError.unreadable(path: path, reason: String(cString: strerror(errno)))
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw ImageIOError.unreadable(path: path, reason: String(cString: strerror(errno))) }
        if (st.st_mode & S_IFMT) == S_IFDIR { throw ImageIOError.unreadable(path: path, reason: "is a directory") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw ImageIOError.unreadable(path: path, reason: "not a regular file") }
        let size = Int(st.st_size)
        if size == 0 { throw ImageIOError.emptyFile(path: path) }
        var bytes = [UInt8](repeating: 0, count: size)
        var done = 0
        while done < size {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, size - done) }
            if n <= 0 { throw ImageIOError.unreadable(path: path, reason: n == 0 ? "file shrank while reading" : String(cString: strerror(errno))) }
            done += n
        }
        return bytes
    }

    /// The still-image codec of a file, by its magic bytes (not its extension).
    static func imageCodec(_ b: [UInt8]) -> AVCodecID? {
        if b.starts(with: pngMagic) { return AV_CODEC_ID_PNG }
        if b.starts(with: [0xFF, 0xD8, 0xFF]) { return AV_CODEC_ID_MJPEG }
        if b.count > 12, b.starts(with: Array("RIFF".utf8)), b[8..<12].elementsEqual(Array("WEBP".utf8)) { return AV_CODEC_ID_WEBP }
        if b.count > 14, b.starts(with: Array("BM".utf8)) { return AV_CODEC_ID_BMP }
        if b.starts(with: [0x49, 0x49, 0x2A, 0x00]) || b.starts(with: [0x4D, 0x4D, 0x00, 0x2A]) { return AV_CODEC_ID_TIFF }
        return nil
    }

    /// Decode a PNG, JPEG, WebP, BMP or TIFF (chosen by magic bytes, not by extension) into a frame:
    /// each is one whole-file packet to its FFmpeg decoder.
    static func decodeImageFile(path: String) throws -> OwnedFrame {
        _ = FF.configureLogging
        let bytes = try readFileBytes(path: path)
        guard let codecID = imageCodec(bytes) else { throw ImageIOError.unsupportedFormat(path: path) }
        guard let codec = avcodec_find_decoder(codecID) else {
            throw ImageIOError.decodeFailed(path: path, reason: "this FFmpeg build has no decoder for it")
        }
        var context = avcodec_alloc_context3(codec)
        defer { avcodec_free_context(&context) }
        var packet = av_packet_alloc()
        defer { av_packet_free(&packet) }
        guard let ctx = context, let pkt = packet, let frame = OwnedFrame() else {
            throw ImageIOError.decodeFailed(path: path, reason: "out of memory")
        }
        ctx.pointee.thread_count = 1
        var status = avcodec_open2(ctx, codec, nil)
        guard status >= 0 else { throw ImageIOError.decodeFailed(path: path, reason: FF.message(status)) }
        guard bytes.count < Int(Int32.max), av_new_packet(pkt, Int32(bytes.count)) >= 0, let dst = pkt.pointee.data else {
            throw ImageIOError.decodeFailed(path: path, reason: "out of memory")
        }
        bytes.withUnsafeBytes { src in
            if let base = src.baseAddress { memcpy(dst, base, bytes.count) }
        }
        status = avcodec_send_packet(ctx, pkt)
        guard status >= 0 else { throw ImageIOError.decodeFailed(path: path, reason: FF.message(status)) }
        _ = avcodec_send_packet(ctx, nil)  // flush: single-image codecs may hold the frame
        status = avcodec_receive_frame(ctx, frame.pointer)
        guard status >= 0 else { throw ImageIOError.decodeFailed(path: path, reason: FF.message(status)) }
        guard frame.width > 0, frame.height > 0 else {
            throw ImageIOError.decodeFailed(path: path, reason: "empty image")
        }
        return frame
    }

    /// Any decoded frame as tight RGB24.
    static func rgbBytes(of frame: OwnedFrame, path: String) throws -> [UInt8] {
        let w = frame.width, h = frame.height
        switch frame.format {
        case AV_PIX_FMT_RGB24:
            return FF.packedBytes(frame.pointer, bytesPerPixel: 3)
        case AV_PIX_FMT_GRAY8:
            let gray = FF.packedBytes(frame.pointer, bytesPerPixel: 1)
            var rgb = [UInt8](repeating: 0, count: w * h * 3)
            for i in 0..<gray.count { rgb[3 * i] = gray[i]; rgb[3 * i + 1] = gray[i]; rgb[3 * i + 2] = gray[i] }
            return rgb
        case AV_PIX_FMT_PAL8:
            let indices = FF.packedBytes(frame.pointer, bytesPerPixel: 1)
            guard let raw = frame.pointer.pointee.data.1 else {
                throw ImageIOError.decodeFailed(path: path, reason: "palette image without a palette")
            }
            var rgb = [UInt8](repeating: 0, count: w * h * 3)
            raw.withMemoryRebound(to: UInt32.self, capacity: 256) { palette in
                for i in 0..<indices.count {
                    let v = palette[Int(indices[i])]
                    rgb[3 * i] = UInt8((v >> 16) & 0xFF)
                    rgb[3 * i + 1] = UInt8((v >> 8) & 0xFF)
                    rgb[3 * i + 2] = UInt8(v & 0xFF)
                }
            }
            return rgb
        default:
            // JPEG (YUV), RGBA, 16-bit PNGs...: let swscale do the conversion.
            guard let out = OwnedFrame(width: w, height: h, format: AV_PIX_FMT_RGB24) else {
                throw ImageIOError.decodeFailed(path: path, reason: "out of memory")
            }
            guard Scaler(flags: Scaler.cliFlags).scale(frame.pointer, into: out.pointer) else {
                throw ImageIOError.decodeFailed(path: path, reason: "cannot convert pixel format to RGB")
            }
            return FF.packedBytes(out.pointer, bytesPerPixel: 3)
        }
    }

    /// A baseline JPEG of an RGB image (HxWx3) in memory, for display (the web page's frames).
    /// `quality` is MJPEG's qscale, 2 (best) ... 31.
    public static func encodeJPEG(width: Int, height: Int, rgb: [UInt8], quality: Int = 4) throws -> [UInt8] {
        try checkSize(path: "<jpeg>", width: width, height: height, count: rgb.count, channels: 3)
        guard let source = OwnedFrame(width: width, height: height, format: AV_PIX_FMT_RGB24) else {
            throw ImageIOError.encodeFailed(path: "<jpeg>", reason: "out of memory")
        }
        FF.fill(source.pointer, from: rgb, bytesPerPixel: 3)
        return try encode(codecID: AV_CODEC_ID_MJPEG, path: "<jpeg>", width: width, height: height, format: AV_PIX_FMT_YUVJ420P,
                          configure: { ctx in
                              ctx.pointee.flags |= AV_CODEC_FLAG_QSCALE
                              ctx.pointee.global_quality = Int32(min(max(quality, 2), 31)) * FF_QP2LAMBDA
                              ctx.pointee.color_range = AVCOL_RANGE_JPEG
                          }, fill: { frame in
                              frame.pointee.quality = Int32(min(max(quality, 2), 31)) * FF_QP2LAMBDA
                              _ = Scaler().scale(source.pointer, into: frame, dstRange: 1)
                          })
    }

    /// Encode one PNG in memory; `fill` writes the pixels into the prepared frame.
    static func encodePNG(path: String, width: Int, height: Int, format: AVPixelFormat,
                          fill: (UnsafeMutablePointer<AVFrame>) -> Void) throws -> [UInt8] {
        try encode(codecID: AV_CODEC_ID_PNG, path: path, width: width, height: height, format: format, fill: fill)
    }

    /// Encode one still image in memory with libavcodec's `codecID` encoder.
    static func encode(codecID: AVCodecID, path: String, width: Int, height: Int, format: AVPixelFormat,
                       configure: (UnsafeMutablePointer<AVCodecContext>) -> Void = { _ in },
                       fill: (UnsafeMutablePointer<AVFrame>) -> Void) throws -> [UInt8] {
        _ = FF.configureLogging
        guard let codec = avcodec_find_encoder(codecID) else {
            throw ImageIOError.encodeFailed(path: path, reason: "this FFmpeg build has no \(String(cString: avcodec_get_name(codecID))) encoder")
        }
        var context = avcodec_alloc_context3(codec)
        defer { avcodec_free_context(&context) }
        var packet = av_packet_alloc()
        defer { av_packet_free(&packet) }
        guard let ctx = context, let pkt = packet,
              let frame = OwnedFrame(width: width, height: height, format: format) else {
            throw ImageIOError.encodeFailed(path: path, reason: "out of memory")
        }
        ctx.pointee.width = Int32(width)
        ctx.pointee.height = Int32(height)
        ctx.pointee.pix_fmt = format
        ctx.pointee.time_base = AVRational(num: 1, den: 25)  // required by avcodec_open2, unused
        ctx.pointee.thread_count = 1
        configure(ctx)
        var status = avcodec_open2(ctx, codec, nil)
        guard status >= 0 else { throw ImageIOError.encodeFailed(path: path, reason: FF.message(status)) }

        fill(frame.pointer)
        status = avcodec_send_frame(ctx, frame.pointer)
        guard status >= 0 else { throw ImageIOError.encodeFailed(path: path, reason: FF.message(status)) }
        _ = avcodec_send_frame(ctx, nil)
        status = avcodec_receive_packet(ctx, pkt)
        guard status >= 0, let data = pkt.pointee.data, pkt.pointee.size > 0 else {
            throw ImageIOError.encodeFailed(path: path, reason: FF.message(status))
        }
        let out = [UInt8](UnsafeBufferPointer(start: data, count: Int(pkt.pointee.size)))
        av_packet_unref(pkt)
        return out
    }

    /// Walk JPEG markers up to the first SOFn segment.
    static func jpegSize(_ b: [UInt8]) -> (width: Int, height: Int)? {
        var i = 2
        while i + 3 < b.count {
            guard b[i] == 0xFF else { return nil }
            let marker = b[i + 1]
            if marker == 0xFF { i += 1; continue }                      // fill byte
            if marker == 0x01 || (0xD0...0xD7).contains(marker) { i += 2; continue }  // no length
            let length = Int(b[i + 2]) << 8 | Int(b[i + 3])
            guard length >= 2 else { return nil }
            let isSOF = (0xC0...0xCF).contains(marker) && marker != 0xC4 && marker != 0xC8 && marker != 0xCC
            if isSOF {
                guard i + 8 < b.count else { return nil }
                let h = Int(b[i + 5]) << 8 | Int(b[i + 6])
                let w = Int(b[i + 7]) << 8 | Int(b[i + 8])
                return w > 0 && h > 0 ? (w, h) : nil
            }
            i += 2 + length
        }
        return nil
    }
}
