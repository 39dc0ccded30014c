import CFFmpeg
import Foundation
import SAM2Tensor

/// One decoded frame at display size (rotation already applied).
public struct VideoFrame {
    /// 0-based position among the frames the reader yielded.
    public let index: Int
    public let width: Int
    public let height: Int
    /// Row-major HxWx3 RGB bytes; empty when the caller asked for the model input only.
    public var rgb: [UInt8]
    /// Presentation time in seconds from the start of the stream (index / fps when
    /// the file carries no timestamps, and for image folders).
    public let time: Double

    public init(index: Int, width: Int, height: Int, rgb: [UInt8], time: Double = 0) {
        self.index = index
        self.width = width
        self.height = height
        self.rgb = rgb
        self.time = time
    }
}

/// Everything that can go wrong opening, decoding or writing video.
/// Every message is one line that names the file and the problem.
public enum VideoError: Error, CustomStringConvertible {
    case fileNotFound(path: String)
    case unreadable(path: String, reason: String)
    case emptyFile(path: String)
    case notAVideo(path: String)
    case noVideoStream(path: String)
    case truncated(path: String, detail: String)
    case unsupportedCodec(path: String, codec: String)
    case noImages(path: String)
    case mixedImageSizes(path: String, first: String, firstSize: String, other: String, otherSize: String)
    case badImage(path: String, reason: String)
    case noFrames(path: String)
    case decodeFailed(path: String, reason: String)
    case encoderUnavailable(path: String)
    case encodeFailed(path: String, reason: String)
    case invalidArgument(path: String, reason: String)

    public var description: String {
        switch self {
        case .fileNotFound(let p): return "\(p): no such file or directory"
        case .unreadable(let p, let r): return "\(p): cannot read (\(r))"
        case .emptyFile(let p): return "\(p): file is empty (0 bytes)"
        case .notAVideo(let p): return "\(p): not a video file (FFmpeg does not recognise the format)"
        case .noVideoStream(let p): return "\(p): contains no video stream"
        case .truncated(let p, let d): return "\(p): truncated or damaged video (\(d))"
        case .unsupportedCodec(let p, let c): return "\(p): unsupported video codec '\(c)' (this FFmpeg build has no decoder for it)"
        case .noImages(let p): return "\(p): folder contains no .jpg/.jpeg/.png frames"
        case .mixedImageSizes(let p, let a, let sa, let b, let sb):
            return "\(p): frames differ in size (\(a) is \(sa) but \(b) is \(sb)); all frames must be the same size"
        case .badImage(let p, let r): return "\(p): \(r)"
        case .noFrames(let p): return "\(p): video stream has no frames"
        case .decodeFailed(let p, let r): return "\(p): cannot decode video (\(r))"
        case .encoderUnavailable(let p): return "\(p): no H.264 or MPEG-4 encoder in this FFmpeg build"
        case .encodeFailed(let p, let r): return "\(p): cannot write video (\(r))"
        case .invalidArgument(let p, let r): return "\(p): \(r)"
        }
    }
}

/// Streams the frames of a video file, or of a folder of numbered JPEG/PNG frames,
/// in display order, holding at most a couple of frames in memory.
///
/// - Sizes are display sizes: a rotation in the container (display matrix side
///   data, or the legacy `rotate` tag) of 90/180/270 degrees is applied to every
///   frame and to the model input, exactly as the `ffmpeg` CLI's autorotate does.
///   Flips and sample aspect ratio are ignored (as SAM 2's own loaders do).
/// - `frameCount` is computed up front with a demux-only pass that counts the
///   stream's packets (skipping packets that edit lists mark as discarded), then
///   bounded by `limit`. Every packet of a well-formed stream decodes to one
///   frame, so this is the exact number of frames `nextFrame` yields.
/// - Corrupt data: when the decoder rejects a packet (or a frame fails to
///   decode), that frame is skipped with a warning on stderr and
///   `skippedFrames` grows; frames the decoder does produce, even with concealed
///   errors, are yielded. Indices always count the frames actually yielded
///   (0, 1, 2, ... without gaps), so after a skip the stream ends early: the
///   last `skippedFrames` indices below `frameCount` are never produced and
///   `nextFrame` returns nil. A decoder that produces more frames than counted
///   is cut at `frameCount`, so no index is ever >= `frameCount`.
/// - Variable frame rate: every decoded frame is yielded once, in order, with
///   its own `time`; nothing is dropped or duplicated to a constant rate.
/// - Image folders: files ending in .jpg/.jpeg/.png (any case, hidden files
///   ignored), ordered by the last number in the file name (1, 2, 10, ...;
///   ties and names without a number by name). All must be the same size,
///   which is checked from the file headers when the reader opens. Their fps is
///   reported as 30. EXIF orientation is not applied (SAM 2 uses PIL without it).
public final class VideoFrameReader {
    public let path: String
    /// Display width and height (after rotation).
    public let width: Int
    public let height: Int
    /// Number of frames `nextFrame` yields (bounded by `limit`); see the type's notes.
    public let frameCount: Int
    /// Average frame rate of the stream (30 for image folders or when unknown).
    public let fps: Double
    /// Clockwise rotation in degrees (0, 90, 180, 270) applied to decoded frames.
    public let rotation: Int
    /// True when reading a folder of images.
    public let isImageFolder: Bool
    /// Frames the decoder could not produce so far (corrupt packets).
    public private(set) var skippedFrames = 0

    private var stream: StreamDecoder?
    private let imageFiles: [String]
    private var produced = 0
    private let displayScaler = Scaler(flags: Scaler.cliFlags)
    private let modelScaler = Scaler()
    private var displayBuffer: OwnedFrame?
    private var modelBuffer: OwnedFrame?

    public init(path: String, limit: Int? = nil) throws {
        _ = FF.configureLogging
        self.path = path
        let cap = max(0, limit ?? Int.max)

        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw VideoError.fileNotFound(path: path)
        }
        if isDir.boolValue {
            let files = try VideoFrameReader.listFrames(folder: path)
            let used = Array(files.prefix(cap))
            // With limit 0 the first file still gives the size.
            let size = try VideoFrameReader.commonSize(folder: path, files: used.isEmpty ? Array(files.prefix(1)) : used)
            isImageFolder = true
            imageFiles = used
            width = size.width
            height = size.height
            frameCount = used.count
            fps = 30
            rotation = 0
            return
        }

        let decoder = try StreamDecoder(path: path)
        isImageFolder = false
        imageFiles = []
        rotation = decoder.rotation
        let swap = rotation == 90 || rotation == 270
        width = swap ? decoder.storedHeight : decoder.storedWidth
        height = swap ? decoder.storedWidth : decoder.storedHeight
        fps = decoder.fps
        let counted = try StreamDecoder.countFrames(path: path, streamIndex: decoder.streamIndex, limit: cap)
        if counted == 0 && cap > 0 { throw VideoError.noFrames(path: path) }
        frameCount = min(counted, cap)
        stream = decoder
    }

    /// The next frame at display size, or nil at the end.
    public func nextFrame() throws -> VideoFrame? {
        try nextFrame(modelSize: nil)?.frame
    }

    /// The next frame and, when `modelSize` is given, the SAM 2 model input made
    /// from the same decoded picture: resized by swscale straight to
    /// `modelSize x modelSize` (aspect ratio ignored, as SAM 2 does), normalised
    /// with the ImageNet mean/std, shape [3, size, size]. Pass `includeRGB: false`
    /// to skip the display-size RGB conversion when only the model input is needed
    /// (the frame's `rgb` is then empty).
    public func nextFrame(modelSize: Int?, includeRGB: Bool = true) throws -> (frame: VideoFrame, input: Tensor?)? {
        guard produced < frameCount else {
            stream = nil  // release the decoder as soon as we are done
            return nil
        }
        if let size = modelSize, size <= 0 || size > 8192 {
            throw VideoError.invalidArgument(path: path, reason: "model size \(size) out of range")
        }
        let result: (VideoFrame, Tensor?)?
        if isImageFolder {
            result = try nextImage(modelSize: modelSize, includeRGB: includeRGB)
        } else {
            result = try nextDecoded(modelSize: modelSize, includeRGB: includeRGB)
        }
        if result != nil { produced += 1 }
        return result
    }

    /// The SAM 2 model input for an already decoded frame (e.g. a single image),
    /// resized from its RGB with the same swscale settings.
    public static func modelInput(_ frame: VideoFrame, size: Int) throws -> Tensor {
        guard size > 0, size <= 8192, frame.width > 0, frame.height > 0,
              frame.rgb.count == frame.width * frame.height * 3 else {
            throw VideoError.invalidArgument(path: "frame \(frame.index)",
                reason: "cannot make a \(size)x\(size) model input from a \(frame.width)x\(frame.height) frame with \(frame.rgb.count) bytes")
        }
        guard let src = OwnedFrame(width: frame.width, height: frame.height, format: AV_PIX_FMT_RGB24),
              let dst = OwnedFrame(width: size, height: size, format: AV_PIX_FMT_RGB24) else {
            throw VideoError.decodeFailed(path: "frame \(frame.index)", reason: "out of memory")
        }
        FF.fill(src.pointer, from: frame.rgb, bytesPerPixel: 3)
        guard Scaler().scale(src.pointer, into: dst.pointer) else {
            throw VideoError.decodeFailed(path: "frame \(frame.index)", reason: "swscale failed")
        }
        return normalise(FF.packedBytes(dst.pointer, bytesPerPixel: 3), size: size)
    }

    // MARK: - video files

    private func nextDecoded(modelSize: Int?, includeRGB: Bool) throws -> (VideoFrame, Tensor?)? {
        guard let stream else { return nil }
        guard let decoded = try stream.next() else {
            skippedFrames = stream.skipped
            if produced < frameCount {
                FF.warn("\(path): stream ended after \(produced) of \(frameCount) frames (\(frameCount - produced) could not be decoded)")
                skippedFrames = max(skippedFrames, frameCount - produced)
            }
            self.stream = nil
            return nil
        }
        skippedFrames = stream.skipped

        var rgb: [UInt8] = []
        if includeRGB {
            let w = stream.storedWidth, h = stream.storedHeight
            if displayBuffer == nil { displayBuffer = OwnedFrame(width: w, height: h, format: AV_PIX_FMT_RGB24) }
            guard let buffer = displayBuffer, displayScaler.scale(decoded, into: buffer.pointer) else {
                throw VideoError.decodeFailed(path: path, reason: "cannot convert frame \(produced) to RGB")
            }
            rgb = rotate(FF.packedBytes(buffer.pointer, bytesPerPixel: 3), width: w, height: h, clockwise: rotation)
        }

        var input: Tensor? = nil
        if let size = modelSize {
            if modelBuffer?.width != size {
                modelBuffer = OwnedFrame(width: size, height: size, format: AV_PIX_FMT_RGB24)
            }
            guard let buffer = modelBuffer, modelScaler.scale(decoded, into: buffer.pointer) else {
                throw VideoError.decodeFailed(path: path, reason: "cannot resize frame \(produced)")
            }
            // Resizing then rotating a square equals rotating then resizing.
            let square = rotate(FF.packedBytes(buffer.pointer, bytesPerPixel: 3), width: size, height: size, clockwise: rotation)
            input = VideoFrameReader.normalise(square, size: size)
        }

        let time = stream.time(of: decoded) ?? Double(produced) / fps
        return (VideoFrame(index: produced, width: width, height: height, rgb: rgb, time: time), input)
    }

    // MARK: - image folders

    private func nextImage(modelSize: Int?, includeRGB: Bool) throws -> (VideoFrame, Tensor?)? {
        let file = (path as NSString).appendingPathComponent(imageFiles[produced])
        let image: (width: Int, height: Int, rgb: [UInt8])
        do {
            image = try ImageIO.readImage(path: file)
        } catch let error as ImageIOError {
            throw VideoError.badImage(path: file, reason: error.description)
        }
        guard image.width == width, image.height == height else {
            throw VideoError.mixedImageSizes(path: path, first: imageFiles[0], firstSize: "\(width)x\(height)",
                                             other: imageFiles[produced], otherSize: "\(image.width)x\(image.height)")
        }
        var frame = VideoFrame(index: produced, width: width, height: height, rgb: image.rgb, time: Double(produced) / fps)
        let input = try modelSize.map { try VideoFrameReader.modelInput(frame, size: $0) }
        if !includeRGB { frame.rgb = [] }
        return (frame, input)
    }

    static let imageExtensions: Set<String> = ["jpg", "jpeg", "png"]

    /// Image file names in the folder, ordered by the last number in each name.
    static func listFrames(folder: String) throws -> [String] {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: folder)
        } catch {
            throw VideoError.unreadable(path: folder, reason: "cannot list folder")
        }
        let images = names.filter { name in
            !name.hasPrefix(".") && imageExtensions.contains((name as NSString).pathExtension.lowercased())
        }
        if images.isEmpty { throw VideoError.noImages(path: folder) }
        func key(_ name: String) -> Int {
            let stem = (name as NSString).deletingPathExtension
            // The last run of digits: "frame_0010" -> 10, "00042" -> 42.
            var digits = ""
            var sawDigits = false
            for ch in stem.reversed() {
                if ch.isASCII && ch.isNumber { digits.insert(ch, at: digits.startIndex); sawDigits = true }
                else if sawDigits { break }
            }
            return Int(digits) ?? Int.max
        }
        return images.map { ($0, key($0)) }
            .sorted { $0.1 != $1.1 ? $0.1 < $1.1 : $0.0 < $1.0 }
            .map(\.0)
    }

    /// The size shared by all frames, read from headers (decoding only when a
    /// header cannot be parsed).
    static func commonSize(folder: String, files: [String]) throws -> (width: Int, height: Int) {
        var first: (name: String, width: Int, height: Int)? = nil
        for name in files {
            let file = (folder as NSString).appendingPathComponent(name)
            var size = ImageIO.headerSize(path: file)
            if size == nil {
                do {
                    let image = try ImageIO.readImage(path: file)
                    size = (image.width, image.height)
                } catch let error as ImageIOError {
                    throw VideoError.badImage(path: file, reason: error.description)
                }
            }
            guard let s = size else { continue }
            if let f = first {
                if f.width != s.width || f.height != s.height {
                    throw VideoError.mixedImageSizes(path: folder, first: f.name, firstSize: "\(f.width)x\(f.height)",
                                                     other: name, otherSize: "\(s.width)x\(s.height)")
                }
            } else {
                first = (name, s.width, s.height)
            }
        }
        guard let f = first else { throw VideoError.noImages(path: folder) }
        return (f.width, f.height)
    }

    // MARK: - pixels

    static let mean: [Float] = [0.485, 0.456, 0.406]
    static let std: [Float] = [0.229, 0.224, 0.225]

    /// (v / 255 - mean) / std per channel, as Float32 like the official loader;
    /// a 256-entry table per channel gives identical values cheaply.
    static let lookup: [[Float]] = (0..<3).map { c in
        (0..<256).map { v in (Float(v) / 255 - mean[c]) / std[c] }
    }

    /// HxWx3 bytes (size x size) -> normalised CHW tensor.
    static func normalise(_ rgb: [UInt8], size: Int) -> Tensor {
        let plane = size * size
        var data = [Float](repeating: 0, count: 3 * plane)
        let r = lookup[0], g = lookup[1], b = lookup[2]
        rgb.withUnsafeBufferPointer { src in
            data.withUnsafeMutableBufferPointer { dst in
                for i in 0..<min(plane, src.count / 3) {
                    dst[i] = r[Int(src[3 * i])]
                    dst[plane + i] = g[Int(src[3 * i + 1])]
                    dst[2 * plane + i] = b[Int(src[3 * i + 2])]
                }
            }
        }
        return Tensor(shape: [3, size, size], data: data)
    }
}

/// Rotate packed HxWx3 bytes clockwise by 0/90/180/270 degrees.
func rotate(_ src: [UInt8], width w: Int, height h: Int, clockwise degrees: Int) -> [UInt8] {
    guard degrees == 90 || degrees == 180 || degrees == 270, src.count == w * h * 3 else { return src }
    var dst = [UInt8](repeating: 0, count: src.count)
    src.withUnsafeBufferPointer { s in
        dst.withUnsafeMutableBufferPointer { d in
            for y in 0..<h {
                for x in 0..<w {
                    let o: Int
                    switch degrees {
                    case 90: o = (x * h + (h - 1 - y)) * 3            // out is h wide
                    case 180: o = ((h - 1 - y) * w + (w - 1 - x)) * 3
                    default: o = ((w - 1 - x) * h + y) * 3            // 270
                    }
                    let i = (y * w + x) * 3
                    d[o] = s[i]; d[o + 1] = s[i + 1]; d[o + 2] = s[i + 2]
                }
            }
        }
    }
    return dst
}

// MARK: - libavformat / libavcodec plumbing

/// One demuxer + decoder for the chosen video stream.
final class StreamDecoder {
    let path: String
    let streamIndex: Int32
    let storedWidth: Int
    let storedHeight: Int
    let rotation: Int
    let fps: Double
    private(set) var skipped = 0

    private var format: UnsafeMutablePointer<AVFormatContext>?
    private var codec: UnsafeMutablePointer<AVCodecContext>?
    private var packet: UnsafeMutablePointer<AVPacket>?
    private let frame: OwnedFrame
    private let timeBase: AVRational
    private let startTime: Int64
    private var flushed = false
    private var ended = false

    init(path: String) throws {
        self.path = path
        // Locals until everything is open, so a failure frees exactly what was made.
        var formatContext: UnsafeMutablePointer<AVFormatContext>? = try StreamDecoder.openInput(path: path)
        var codecContext: UnsafeMutablePointer<AVCodecContext>? = nil
        var packetBuffer = av_packet_alloc()
        var opened = false
        defer {
            if !opened {
                avcodec_free_context(&codecContext)
                av_packet_free(&packetBuffer)
                avformat_close_input(&formatContext)
            }
        }
        guard let fmt = formatContext else { throw VideoError.notAVideo(path: path) }

        let index = try StreamDecoder.videoStream(fmt, path: path)
        streamIndex = index
        guard let st = fmt.pointee.streams[Int(index)], let par = st.pointee.codecpar else {
            throw VideoError.noVideoStream(path: path)
        }
        for i in 0..<Int(fmt.pointee.nb_streams) where i != Int(index) {
            fmt.pointee.streams[i]?.pointee.discard = AVDISCARD_ALL  // don't read audio etc.
        }

        // libavformat renders plain text (.txt, .ans, .nfo...) as ANSI-art "video";
        // nobody means that when handing a tracker a video.
        let textArt = [AV_CODEC_ID_ANSI, AV_CODEC_ID_BINTEXT, AV_CODEC_ID_XBIN, AV_CODEC_ID_IDF]
        if textArt.contains(par.pointee.codec_id) { throw VideoError.notAVideo(path: path) }

        guard let decoder = avcodec_find_decoder(par.pointee.codec_id) else {
            throw VideoError.unsupportedCodec(path: path, codec: String(cString: avcodec_get_name(par.pointee.codec_id)))
        }
        guard par.pointee.width > 0, par.pointee.height > 0 else {
            throw VideoError.truncated(path: path, detail: "cannot determine the frame size")
        }
        storedWidth = Int(par.pointee.width)
        storedHeight = Int(par.pointee.height)
        rotation = StreamDecoder.rotation(of: st, path: path)
        fps = StreamDecoder.frameRate(of: st)
        timeBase = st.pointee.time_base
        startTime = st.pointee.start_time

        codecContext = avcodec_alloc_context3(decoder)
        guard let ctx = codecContext, packetBuffer != nil, let f = OwnedFrame() else {
            throw VideoError.decodeFailed(path: path, reason: "out of memory")
        }
        frame = f
        var status = avcodec_parameters_to_context(ctx, par)
        if status >= 0 {
            ctx.pointee.pkt_timebase = st.pointee.time_base
            // A few threads: the model needs the CPU too, and each frame thread holds a frame.
            ctx.pointee.thread_count = Int32(min(4, max(1, ProcessInfo.processInfo.activeProcessorCount)))
            status = avcodec_open2(ctx, decoder, nil)
        }
        guard status >= 0 else {
            throw VideoError.decodeFailed(path: path, reason: "cannot open the \(String(cString: decoder.pointee.name)) decoder: \(FF.message(status))")
        }
        format = formatContext
        codec = codecContext
        packet = packetBuffer
        opened = true
    }

    deinit {
        avcodec_free_context(&codec)
        av_packet_free(&packet)
        avformat_close_input(&format)
    }

    func time(of frame: UnsafePointer<AVFrame>) -> Double? {
        let pts = frame.pointee.best_effort_timestamp
        guard pts != FF.noPTS, timeBase.den != 0 else { return nil }
        let start = startTime == FF.noPTS ? 0 : startTime
        return Double(pts - start) * Double(timeBase.num) / Double(timeBase.den)
    }

    /// The next decoded frame (valid until the next call), or nil at the end.
    func next() throws -> UnsafeMutablePointer<AVFrame>? {
        guard !ended, let ctx = codec, let fmt = format, let pkt = packet else { return nil }
        var consecutiveErrors = 0
        while true {
            let status = avcodec_receive_frame(ctx, frame.pointer)
            if status >= 0 { return frame.pointer }
            if status == FF.eof { ended = true; return nil }
            if status != FF.eagain {
                // A frame the decoder gave up on: skip it, keep going.
                skipped += 1
                FF.warn("\(path): skipping an undecodable frame (\(FF.message(status)))")
                consecutiveErrors += 1
                if consecutiveErrors > 1000 { throw VideoError.decodeFailed(path: path, reason: FF.message(status)) }
                continue
            }
            if flushed { ended = true; return nil }
            // The decoder wants input: feed it the next packet of our stream.
            while true {
                let read = av_read_frame(fmt, pkt)
                if read < 0 {
                    if read != FF.eof {
                        FF.warn("\(path): read error (\(FF.message(read))); treating it as the end of the video")
                    }
                    _ = avcodec_send_packet(ctx, nil)  // drain frames still in the decoder
                    flushed = true
                    break
                }
                defer { av_packet_unref(pkt) }
                if pkt.pointee.stream_index != streamIndex { continue }
                if pkt.pointee.flags & AV_PKT_FLAG_CORRUPT != 0 {
                    // Not counted either (see countFrames), so indices stay consistent.
                    FF.warn("\(path): skipping a packet the demuxer marked corrupt (e.g. cut off at the end of the file)")
                    continue
                }
                let sent = avcodec_send_packet(ctx, pkt)
                if sent < 0 && sent != FF.eagain {
                    if pkt.pointee.flags & AV_PKT_FLAG_DISCARD == 0 { skipped += 1 }
                    FF.warn("\(path): skipping a corrupt packet (\(FF.message(sent)))")
                    continue
                }
                break
            }
        }
    }

    // MARK: opening

    /// Open with libavformat, turning failures into specific errors.
    static func openInput(path: String) throws -> UnsafeMutablePointer<AVFormatContext> {
        guard FileManager.default.isReadableFile(atPath: path) else {
            throw VideoError.unreadable(path: path, reason: "permission denied")
        }
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)??.intValue
        if size == 0 { throw VideoError.emptyFile(path: path) }

        var ctx: UnsafeMutablePointer<AVFormatContext>? = nil
        let status = avformat_open_input(&ctx, path, nil, nil)
        guard status >= 0, let fmt = ctx else {
            if status == -ENOENT { throw VideoError.fileNotFound(path: path) }
            if status == -EACCES { throw VideoError.unreadable(path: path, reason: "permission denied") }
            throw classifyOpenFailure(path: path, status: status)
        }
        let info = avformat_find_stream_info(fmt, nil)
        if info < 0 {
            var p: UnsafeMutablePointer<AVFormatContext>? = fmt
            avformat_close_input(&p)
            throw VideoError.truncated(path: path, detail: "cannot read stream information: \(FF.message(info))")
        }
        return fmt
    }

    /// libavformat failed to open the file: is it a damaged video or not a video at all?
    static func classifyOpenFailure(path: String, status: Int32) -> VideoError {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            return .unreadable(path: path, reason: FF.message(status))
        }
        defer { try? handle.close() }
        let head = [UInt8](handle.readData(ofLength: 1 << 16))

        if let boxes = isoTopLevelBoxes(handle: handle, head: head) {
            if !boxes.contains("moov") {
                return .truncated(path: path, detail: "MP4/MOV file has no moov atom; the recording or download was not finished")
            }
            return .truncated(path: path, detail: "MP4/MOV structure is damaged: \(FF.message(status))")
        }
        // Let FFmpeg's probes judge the content alone (no extension hint).
        var padded = head + [UInt8](repeating: 0, count: Int(AVPROBE_PADDING_SIZE))
        var score: Int32 = 0
        let found: UnsafePointer<AVInputFormat>? = padded.withUnsafeMutableBufferPointer { buf in
            "".withCString { name in
                var probe = AVProbeData(filename: name, buf: buf.baseAddress, buf_size: Int32(head.count), mime_type: nil)
                return av_probe_input_format3(&probe, 1, &score)
            }
        }
        if let f = found, score >= AVPROBE_SCORE_MAX / 4 {
            return .truncated(path: path, detail: "\(String(cString: f.pointee.name)) data could not be read: \(FF.message(status))")
        }
        return .notAVideo(path: path)
    }

    /// Top-level box types if the file looks like ISO BMFF (mp4/mov/3gp), else nil.
    static func isoTopLevelBoxes(handle: FileHandle, head: [UInt8]) -> [String]? {
        func type(_ b: [UInt8]) -> String? {
            guard b.count == 4, b.allSatisfy({ (0x20...0x7E).contains($0) }) else { return nil }
            return String(decoding: b, as: UTF8.self)
        }
        let known: Set<String> = ["ftyp", "moov", "mdat", "free", "wide", "skip", "pnot", "uuid"]
        guard head.count >= 8, let first = type(Array(head[4..<8])), known.contains(first) else { return nil }

        var boxes: [String] = []
        var offset: UInt64 = 0
        while boxes.count < 10_000 {
            do { try handle.seek(toOffset: offset) } catch { break }
            let header = [UInt8](handle.readData(ofLength: 16))
            guard header.count >= 8, let t = type(Array(header[4..<8])) else { break }
            boxes.append(t)
            var size = header[0..<4].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            if size == 1 {
                guard header.count == 16 else { break }
                size = header[8..<16].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            }
            if size == 0 || size < 8 { break }  // 0 = "to the end of the file"
            offset += size
        }
        return boxes
    }

    /// The main video stream: FFmpeg's best pick unless it is cover art.
    static func videoStream(_ fmt: UnsafeMutablePointer<AVFormatContext>, path: String) throws -> Int32 {
        func usable(_ i: Int32) -> Bool {
            guard i >= 0, i < Int32(fmt.pointee.nb_streams), let st = fmt.pointee.streams[Int(i)],
                  let par = st.pointee.codecpar else { return false }
            return par.pointee.codec_type == AVMEDIA_TYPE_VIDEO
                && st.pointee.disposition & AV_DISPOSITION_ATTACHED_PIC == 0
        }
        let best = av_find_best_stream(fmt, AVMEDIA_TYPE_VIDEO, -1, -1, nil, 0)
        if usable(best) { return best }
        for i in 0..<Int32(fmt.pointee.nb_streams) where usable(i) { return i }
        throw VideoError.noVideoStream(path: path)
    }

    /// Clockwise degrees the CLI's autorotate would apply.
    static func rotation(of st: UnsafeMutablePointer<AVStream>, path: String) -> Int {
        var theta: Double? = nil
        var size: Int = 0
        if let sd = av_stream_get_side_data(st, AV_PKT_DATA_DISPLAYMATRIX, &size), size >= 36 {
            // av_display_rotation_get gives the counter-clockwise angle; ffmpeg
            // rotates by its negation (fftools get_rotation).
            let ccw = sd.withMemoryRebound(to: Int32.self, capacity: 9) { av_display_rotation_get($0) }
            if ccw.isFinite { theta = -ccw.rounded() }
        } else if let tag = av_dict_get(st.pointee.metadata, "rotate", nil, 0),
                  let value = tag.pointee.value, let degrees = Double(String(cString: value)) {
            theta = degrees  // legacy tag: clockwise degrees
        }
        guard var t = theta else { return 0 }
        t -= 360 * (t / 360 + 0.9 / 360).rounded(.down)
        for candidate in [0, 90, 180, 270, 360] where abs(t - Double(candidate)) < 1 {
            return candidate % 360
        }
        FF.warn("\(path): ignoring a rotation of \(t) degrees (only multiples of 90 are supported)")
        return 0
    }

    static func frameRate(of st: UnsafeMutablePointer<AVStream>) -> Double {
        for r in [st.pointee.avg_frame_rate, st.pointee.r_frame_rate] where r.num > 0 && r.den > 0 {
            let v = Double(r.num) / Double(r.den)
            if v.isFinite && v > 0 && v < 1000 { return v }
        }
        return 30
    }

    /// Demux-only pass: packets of the stream, without edit-list discards and
    /// without packets the demuxer flags corrupt (a sample cut off by the end of
    /// a truncated file), which `next()` does not decode either.
    static func countFrames(path: String, streamIndex: Int32, limit: Int) throws -> Int {
        var fmt: UnsafeMutablePointer<AVFormatContext>? = try openInput(path: path)
        defer { avformat_close_input(&fmt) }
        var packet = av_packet_alloc()
        defer { av_packet_free(&packet) }
        guard let ctx = fmt, let pkt = packet else { return 0 }
        for i in 0..<Int(ctx.pointee.nb_streams) where i != Int(streamIndex) {
            ctx.pointee.streams[i]?.pointee.discard = AVDISCARD_ALL
        }
        var count = 0
        while count < limit {
            let status = av_read_frame(ctx, pkt)
            if status < 0 { break }
            let skip = AV_PKT_FLAG_DISCARD | AV_PKT_FLAG_CORRUPT
            if pkt.pointee.stream_index == streamIndex && pkt.pointee.flags & skip == 0 {
                count += 1
            }
            av_packet_unref(pkt)
        }
        return count
    }
}
