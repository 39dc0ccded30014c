import CFFmpeg
import Foundation
import SAM2

/// Writes an .mp4 of the original frames with every object's mask blended in its
/// own colour (alpha 0.5), prompt points as dots (green positive, red negative)
/// and prompt boxes as outlines.
///
/// - Codec: H.264 through libx264 (veryfast, CRF 20) when FFmpeg has it, else
///   MPEG-4 part 2; yuv420p, BT.601 limited range, tagged as such.
/// - Odd sizes: yuv420p needs even dimensions, so an odd width or height is padded
///   by one pixel that repeats the last column/row; `outputWidth`/`outputHeight`
///   give the size actually written. No pixel of the input is lost or rescaled.
/// - Timing: constant `fps`; frame n is shown at n / fps (variable-rate input is
///   written at a constant rate).
/// - The file appears atomically: frames go to a hidden temporary sibling that
///   `finish()` renames into place; without `finish()` it is deleted.
public final class OverlayWriter {
    public let path: String
    public let width: Int
    public let height: Int
    public let outputWidth: Int
    public let outputHeight: Int
    public let fps: Double
    /// "libx264" or "mpeg4".
    public let encoderName: String

    private let tempPath: String
    private var format: UnsafeMutablePointer<AVFormatContext>?
    private var codec: UnsafeMutablePointer<AVCodecContext>?
    private var packet: UnsafeMutablePointer<AVPacket>?
    private let stream: UnsafeMutablePointer<AVStream>
    private let rgbFrame: OwnedFrame
    private let yuvFrame: OwnedFrame
    private let scaler = Scaler()
    private var nextPTS: Int64 = 0
    private var finished = false

    /// Mask colours by object id: matplotlib's tab10, as in the SAM 2 notebooks.
    public static let colours: [(UInt8, UInt8, UInt8)] = [
        (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
        (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    ]

    public static func colour(for objectId: Int) -> (UInt8, UInt8, UInt8) {
        colours[((objectId % colours.count) + colours.count) % colours.count]
    }

    /// A colour per index that stays distinct past tab10's ten: tab10 first, then hues a golden
    /// angle apart (for "segment everything", which draws dozens of masks).
    public static func distinctColour(_ k: Int) -> (UInt8, UInt8, UInt8) {
        if k >= 0 && k < colours.count { return colours[k] }
        let hue = (Double(k) * 0.618033988749895).truncatingRemainder(dividingBy: 1) * 6
        let (s, v) = (0.75, 0.95), sector = Int(hue), f = hue - Double(sector)
        let (p, q, t) = (v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f)))
        let rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][sector % 6]
        return (UInt8(rgb.0 * 255), UInt8(rgb.1 * 255), UInt8(rgb.2 * 255))
    }

    /// `encoder` picks "libx264" or "mpeg4" explicitly; nil takes the best available.
    public init(path: String, width: Int, height: Int, fps: Double, encoder preferred: String? = nil) throws {
        _ = FF.configureLogging
        guard width > 0, height > 0, width <= 16384, height <= 16384 else {
            throw VideoError.invalidArgument(path: path, reason: "invalid overlay size \(width)x\(height)")
        }
        guard fps.isFinite, fps > 0, fps <= 1000 else {
            throw VideoError.invalidArgument(path: path, reason: "invalid frame rate \(fps)")
        }
        self.path = path
        self.width = width
        self.height = height
        self.fps = fps
        outputWidth = width + (width & 1)
        outputHeight = height + (height & 1)
        tempPath = temporarySibling(of: path)

        let found: UnsafePointer<AVCodec>?
        switch preferred {
        case nil: found = avcodec_find_encoder_by_name("libx264") ?? avcodec_find_encoder(AV_CODEC_ID_MPEG4)
        case "libx264"?, "mpeg4"?: found = avcodec_find_encoder_by_name(preferred)
        default:
            throw VideoError.invalidArgument(path: path, reason: "overlay encoder must be libx264 or mpeg4, not \(preferred ?? "")")
        }
        guard let encoder = found else { throw VideoError.encoderUnavailable(path: path) }
        encoderName = String(cString: encoder.pointee.name)

        // Locals until everything is open, so a failure frees exactly what was made.
        var formatContext: UnsafeMutablePointer<AVFormatContext>? = nil
        var codecContext: UnsafeMutablePointer<AVCodecContext>? = nil
        var packetBuffer = av_packet_alloc()
        var opened = false
        let temp = tempPath
        defer {
            if !opened {
                avcodec_free_context(&codecContext)
                av_packet_free(&packetBuffer)
                if let oc = formatContext {
                    if oc.pointee.pb != nil { avio_closep(&oc.pointee.pb) }
                    avformat_free_context(oc)
                }
                unlink(temp)
            }
        }

        guard avformat_alloc_output_context2(&formatContext, nil, "mp4", tempPath) >= 0, let oc = formatContext else {
            throw VideoError.encodeFailed(path: path, reason: "cannot create an mp4 muxer")
        }
        codecContext = avcodec_alloc_context3(encoder)
        guard let ctx = codecContext, packetBuffer != nil, let st = avformat_new_stream(oc, nil),
              let rgb = OwnedFrame(width: outputWidth, height: outputHeight, format: AV_PIX_FMT_RGB24),
              let yuv = OwnedFrame(width: outputWidth, height: outputHeight, format: AV_PIX_FMT_YUV420P) else {
            throw VideoError.encodeFailed(path: path, reason: "out of memory")
        }
        stream = st
        rgbFrame = rgb
        yuvFrame = yuv

        let rate = av_d2q(fps, 100_000)
        ctx.pointee.width = Int32(outputWidth)
        ctx.pointee.height = Int32(outputHeight)
        ctx.pointee.pix_fmt = AV_PIX_FMT_YUV420P
        ctx.pointee.time_base = AVRational(num: rate.den, den: rate.num)
        ctx.pointee.framerate = rate
        ctx.pointee.gop_size = Int32(max(1, min(250, Int(fps.rounded()) * 2)))
        ctx.pointee.color_range = AVCOL_RANGE_MPEG
        ctx.pointee.colorspace = AVCOL_SPC_SMPTE170M
        ctx.pointee.color_primaries = AVCOL_PRI_SMPTE170M
        ctx.pointee.color_trc = AVCOL_TRC_SMPTE170M
        if encoderName == "libx264" {
            av_opt_set(ctx.pointee.priv_data, "preset", "veryfast", 0)
            av_opt_set(ctx.pointee.priv_data, "crf", "20", 0)
        } else {
            ctx.pointee.flags |= AV_CODEC_FLAG_QSCALE
            ctx.pointee.global_quality = 3 * FF_QP2LAMBDA
        }
        if oc.pointee.oformat.pointee.flags & AVFMT_GLOBALHEADER != 0 {
            ctx.pointee.flags |= AV_CODEC_FLAG_GLOBAL_HEADER
        }
        var status = avcodec_open2(ctx, encoder, nil)
        guard status >= 0 else {
            throw VideoError.encodeFailed(path: path, reason: "cannot open the \(encoderName) encoder: \(FF.message(status))")
        }
        status = avcodec_parameters_from_context(st.pointee.codecpar, ctx)
        st.pointee.time_base = ctx.pointee.time_base
        st.pointee.avg_frame_rate = rate
        if status >= 0 { status = avio_open(&oc.pointee.pb, tempPath, AVIO_FLAG_WRITE) }
        if status >= 0 { status = avformat_write_header(oc, nil) }
        guard status >= 0 else {
            throw VideoError.encodeFailed(path: path, reason: FF.message(status))
        }
        format = formatContext
        codec = codecContext
        packet = packetBuffer
        opened = true
    }

    deinit {
        if !finished {
            if let fmt = format, fmt.pointee.pb != nil { avio_closep(&fmt.pointee.pb) }
            unlink(tempPath)
        }
        avcodec_free_context(&codec)
        av_packet_free(&packet)
        if let fmt = format { avformat_free_context(fmt) }
    }

    /// Add one frame. Masks must be the frame's size; points and boxes
    /// (x0, y0, x1, y1) are in display pixels of this frame.
    public func append(frame: VideoFrame, masks: [(objectId: Int, mask: BinaryMask)],
                       points: [(x: Double, y: Double, positive: Bool)] = [],
                       boxes: [(Double, Double, Double, Double)] = []) throws {
        guard !finished, let ctx = codec else {
            throw VideoError.encodeFailed(path: path, reason: "append after finish")
        }
        guard frame.width == width, frame.height == height, frame.rgb.count == width * height * 3 else {
            throw VideoError.invalidArgument(path: path,
                reason: "frame \(frame.index) is \(frame.width)x\(frame.height) with \(frame.rgb.count) bytes, expected \(width)x\(height)")
        }
        for (id, mask) in masks where mask.width != width || mask.height != height {
            throw VideoError.invalidArgument(path: path,
                reason: "frame \(frame.index), object \(id): mask is \(mask.width)x\(mask.height), expected \(width)x\(height)")
        }
        let image = OverlayWriter.compose(frame: frame, masks: masks, points: points, boxes: boxes)
        FF.fill(rgbFrame.pointer, from: OverlayWriter.padToEven(image, width: width, height: height), bytesPerPixel: 3)

        guard av_frame_make_writable(yuvFrame.pointer) >= 0,
              scaler.scale(rgbFrame.pointer, into: yuvFrame.pointer, dstRange: 0,
                           dstColorspace: Int32(AVCOL_SPC_SMPTE170M.rawValue)) else {
            throw VideoError.encodeFailed(path: path, reason: "cannot convert frame \(frame.index) to yuv420p")
        }
        yuvFrame.pointer.pointee.pts = nextPTS
        nextPTS += 1
        let status = avcodec_send_frame(ctx, yuvFrame.pointer)
        guard status >= 0 else {
            throw VideoError.encodeFailed(path: path, reason: "encoding frame \(frame.index): \(FF.message(status))")
        }
        try drain()
    }

    /// Flush the encoder, finish the file and move it into place.
    public func finish() throws {
        guard !finished, let ctx = codec, let oc = format else { return }
        _ = avcodec_send_frame(ctx, nil)
        try drain()
        var status = av_write_trailer(oc)
        let closed = avio_closep(&oc.pointee.pb)
        if status >= 0 { status = closed }
        guard status >= 0 else {
            throw VideoError.encodeFailed(path: path, reason: FF.message(status))
        }
        guard rename(tempPath, path) == 0 else {
            throw VideoError.encodeFailed(path: path, reason: String(cString: strerror(errno)))
        }
        finished = true
    }

    private func drain() throws {
        guard let ctx = codec, let oc = format, let pkt = packet else { return }
        while true {
            let status = avcodec_receive_packet(ctx, pkt)
            if status == FF.eagain || status == FF.eof { return }
            guard status >= 0 else {
                throw VideoError.encodeFailed(path: path, reason: FF.message(status))
            }
            av_packet_rescale_ts(pkt, ctx.pointee.time_base, stream.pointee.time_base)
            pkt.pointee.stream_index = stream.pointee.index
            let written = av_interleaved_write_frame(oc, pkt)  // takes ownership of the packet data
            guard written >= 0 else {
                throw VideoError.encodeFailed(path: path, reason: FF.message(written))
            }
        }
    }

    // MARK: drawing

    /// The overlay picture in RGB at the frame's size (exposed for previews/tests).
    public static func compose(frame: VideoFrame, masks: [(objectId: Int, mask: BinaryMask)],
                               points: [(x: Double, y: Double, positive: Bool)],
                               boxes: [(Double, Double, Double, Double)],
                               colour paint: (Int) -> (UInt8, UInt8, UInt8) = colour(for:)) -> [UInt8] {
        let w = frame.width, h = frame.height
        var out = frame.rgb
        guard out.count == w * h * 3 else { return out }
        for (id, mask) in masks where mask.width == w && mask.height == h {
            let c = paint(id)
            let tint = [UInt16(c.0), UInt16(c.1), UInt16(c.2)]
            for i in 0..<(w * h) where mask.bits[i] != 0 {
                for k in 0..<3 {
                    // Alpha 0.5, rounded.
                    out[3 * i + k] = UInt8((UInt16(out[3 * i + k]) + tint[k] + 1) / 2)
                }
            }
        }
        // Marker sizes scale gently with the frame so they stay visible in HD.
        let thickness = max(2, min(w, h) / 300)
        for box in boxes {
            guard [box.0, box.1, box.2, box.3].allSatisfy({ $0.isFinite }) else { continue }
            let x0 = Int(min(box.0, box.2).rounded()), x1 = Int(max(box.0, box.2).rounded())
            let y0 = Int(min(box.1, box.3).rounded()), y1 = Int(max(box.1, box.3).rounded())
            let green: (UInt8, UInt8, UInt8) = (0, 255, 0)
            fillRect(&out, w, h, x0, y0, x1, y0 + thickness - 1, green)
            fillRect(&out, w, h, x0, y1 - thickness + 1, x1, y1, green)
            fillRect(&out, w, h, x0, y0, x0 + thickness - 1, y1, green)
            fillRect(&out, w, h, x1 - thickness + 1, y0, x1, y1, green)
        }
        let radius = max(3, min(w, h) / 120)
        for p in points where p.x.isFinite && p.y.isFinite {
            let cx = Int(p.x.rounded()), cy = Int(p.y.rounded())
            fillDisc(&out, w, h, cx, cy, radius + 1, (255, 255, 255))  // white rim
            fillDisc(&out, w, h, cx, cy, radius, p.positive ? (0, 255, 0) : (255, 0, 0))
        }
        return out
    }

    static func fillRect(_ img: inout [UInt8], _ w: Int, _ h: Int,
                         _ x0: Int, _ y0: Int, _ x1: Int, _ y1: Int, _ c: (UInt8, UInt8, UInt8)) {
        let xa = max(0, x0), xb = min(w - 1, x1), ya = max(0, y0), yb = min(h - 1, y1)
        guard xa <= xb, ya <= yb else { return }
        for y in ya...yb {
            for x in xa...xb {
                let o = (y * w + x) * 3
                img[o] = c.0; img[o + 1] = c.1; img[o + 2] = c.2
            }
        }
    }

    static func fillDisc(_ img: inout [UInt8], _ w: Int, _ h: Int,
                         _ cx: Int, _ cy: Int, _ r: Int, _ c: (UInt8, UInt8, UInt8)) {
        let ya = max(0, cy - r), yb = min(h - 1, cy + r), xa = max(0, cx - r), xb = min(w - 1, cx + r)
        guard xa <= xb, ya <= yb else { return }
        for y in ya...yb {
            for x in xa...xb where (x - cx) * (x - cx) + (y - cy) * (y - cy) <= r * r {
                let o = (y * w + x) * 3
                img[o] = c.0; img[o + 1] = c.1; img[o + 2] = c.2
            }
        }
    }

    /// Repeat the last column/row so odd sizes become even.
    static func padToEven(_ rgb: [UInt8], width w: Int, height h: Int) -> [UInt8] {
        let pw = w + (w & 1), ph = h + (h & 1)
        if pw == w && ph == h { return rgb }
        var out = [UInt8](repeating: 0, count: pw * ph * 3)
        for y in 0..<ph {
            let sy = min(y, h - 1)
            for x in 0..<pw {
                let sx = min(x, w - 1)
                let s = (sy * w + sx) * 3, d = (y * pw + x) * 3
                out[d] = rgb[s]; out[d + 1] = rgb[s + 1]; out[d + 2] = rgb[s + 2]
            }
        }
        return out
    }
}
