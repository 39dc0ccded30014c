import ArgumentParser
import Foundation
import SAM2
import SAM2Checkpoint
import SAM2Tensor
import SAM2Video

/// `sam2 bench`: per-stage tracking time, achieved GFLOP/s against the sgemm rate measured in the
/// same run, click-to-mask latency, model load time and peak RSS.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmark tracking (release builds): per-stage times, GFLOP/s vs. sgemm, click latency, peak RSS.")

    @Option(help: "Video to track through.") var video: String = ""
    @Flag(help: "Instead of tracking, time the attention kernel on SAM 2's shapes at 1024 (best of 5).") var kernels = false
    @Option(help: "Frames to track (the first is the prompted frame).") var frames: Int = 8
    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "Click x,y on frame 0 (default: the frame's centre).") var point: String?
    @Option(help: "Objects to track (each gets one click on frame 0, spread along the frame's diagonal).") var objects: Int = 1
    @Option(help: "Clicks on the cached frame 0 to time (the median is reported).") var clicks: Int = 9
    @Option(help: "Image mode: time set_image, click to mask and segment-everything on this image instead of tracking.") var image: String?
    @Option(help: "Image mode: also time one box per image on the first --batch-count images of this folder (images/s).") var batch: String?
    @Option(help: "Image mode: how many images of --batch to use.") var batchCount: Int = 100
    @Option(help: "Image mode: points per side of the segment-everything run (0 skips it).") var pointsPerSide: Int = 32

    func run() throws {
        if kernels { benchKernels(); return }
        if let image {
            do { try benchImage(image) } catch { fail("\(error)") }
            return
        }
        if video.isEmpty { fail("--video or --image is required") }
        if objects < 1 { fail("--objects must be at least 1") }
        if clicks < 1 { fail("--clicks must be at least 1") }
        do { try bench() } catch { fail("\(error)") }
    }

    /// Attention on the shapes that dominate a tracked frame, in GFLOP/s, next to sgemm's rate.
    private func benchKernels() {
        print("sgemm \(String(format: "%.1f", measureSGEMM())) GFLOP/s")
        let shapes: [(String, Int, Int, Int, Int, Int)] = [  // name, queries, keys, heads, head dim, value head dim
            ("memory cross-attention", 4096, 7 * 4096 + 64, 1, 256, 64),
            ("memory self-attention", 4096, 4096, 1, 256, 256),
            ("EdgeTAM memory cross-attention", 4096, 7 * 512 + 64, 1, 256, 64),
            ("Hiera global attention", 4096, 4096, 4, 96, 96),
        ]
        // Fixed inputs in [-1, 1] (timing does not depend on them, only on their being finite).
        func values(_ n: Int, _ phase: Double) -> [Float] { (0..<n).map { Float(sin(Double($0) * 0.618 + phase)) } }
        for (name, nq, nk, heads, d, dv) in shapes {
            let q = Tensor(shape: [nq, heads * d], data: values(nq * heads * d, 0))
            let k = Tensor(shape: [nk, heads * d], data: values(nk * heads * d, 1))
            let v = Tensor(shape: [nk, heads * dv], data: values(nk * heads * dv, 2))
            var best = Double.infinity
            for _ in 0..<5 {
                let t0 = Date()
                _ = Attention.scaledDotProduct(q: q, k: k, v: v, heads: heads)
                best = min(best, Date().timeIntervalSince(t0))
            }
            let flop = 2 * Double(nq) * Double(nk) * Double(heads) * Double(d + dv)
            print(String(format: "%@: %.1f ms, %.1f GFLOP/s", name, best * 1000, flop / best / 1e9))
        }
    }

    private func bench() throws {
        #if DEBUG
        FileHandle.standardError.write("warning: this is a debug build; benchmark a release build (swift build -c release)\n".data(using: .utf8)!)
        #endif
        let sgemmBefore = measureSGEMM()
        let (cfg, ckpt) = try modelOptions.resolve()
        var t0 = Date()
        let tensors = try Checkpoint.load(path: ckpt)
        let loadSeconds = Date().timeIntervalSince(t0)
        let net = try SAM2Model(config: cfg, weights: tensors)
        let buildSeconds = Date().timeIntervalSince(t0)

        let source = TimedSource(try VideoFrameSource(path: video, limit: frames))
        let predictor = VideoPredictor(model: net, source: source)
        let w = Double(source.videoWidth), h = Double(source.videoHeight)
        let p = point.map { $0.split(separator: ",").compactMap { Double($0) } } ?? [w / 2, h / 2]
        guard p.count == 2 else { throw PredictorError("--point needs x,y") }
        for obj in stride(from: 2, through: objects, by: 1) {
            let f = Double(obj - 1) / Double(objects)
            try predictor.addPoints(frame: 0, objectId: obj, points: [(w * (0.1 + 0.8 * f), h * (0.1 + 0.8 * f))], labels: [1])
        }

        t0 = Date()
        try predictor.addPoints(frame: 0, objectId: 1, points: [(p[0], p[1])], labels: [1])
        let firstClick = Date().timeIntervalSince(t0)
        // Click to mask on a frame whose embedding is cached (median of `clicks`).
        var clickSeconds = [Double]()
        for i in 0..<clicks {
            t0 = Date()
            // Click to mask: the mask at the video's resolution, as the official predictor returns it.
            _ = try predictor.addPoints(frame: 0, objectId: 1, points: [(p[0], p[1]), (p[0] * 0.5, p[1] * (0.5 + 0.01 * Double(i % 10)))],
                                        labels: [1, 0]).videoMasks()
            clickSeconds.append(Date().timeIntervalSince(t0))
        }
        let cachedClick = clickSeconds.sorted()[clickSeconds.count / 2]

        var perFrame = [Double](), stages = [[String: Double]](), stageFlops = [[String: Double]](), flops = [Double](), decode = [Double]()
        var last = Date(), lastStages = net.stageSeconds, lastStageFlops = net.stageFlops, lastFlops = GEMM.flops, lastDecode = source.seconds
        try predictor.propagate { r in
            let now = Date()
            if r.frameIndex > 0 {
                perFrame.append(now.timeIntervalSince(last))
                stages.append(net.stageSeconds.merging(lastStages) { $0 - $1 })
                stageFlops.append(net.stageFlops.merging(lastStageFlops) { $0 - $1 })
                flops.append(GEMM.flops - lastFlops)
                decode.append(source.seconds - lastDecode)
            }
            last = now; lastStages = net.stageSeconds; lastStageFlops = net.stageFlops; lastFlops = GEMM.flops; lastDecode = source.seconds
        }
        guard !perFrame.isEmpty else { throw PredictorError("need at least 2 frames to time tracking") }
        func median(_ v: [Double]) -> Double { let s = v.sorted(); return s[s.count / 2] }
        let med = median(perFrame)
        let sgemm = max(sgemmBefore, measureSGEMM())
        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores; sgemm \(String(format: "%.1f", sgemm)) GFLOP/s (2048^3, best before/after tracking; OpenBLAS \(GEMM.kernels) kernels)")
        print(String(format: "checkpoint load %.3f s, model build %.3f s", loadSeconds, buildSeconds))
        print(String(format: "first click (image encoder + decoder) %.3f s; click on a cached frame %.1f ms", firstClick, cachedClick * 1000))
        // Per stage: the medians over frames, and the rate of the median frame's products (by
        // seconds; the frames' banks grow, so each median comes from the frame in the middle).
        print("stage               median s/frame  GFLOP (sgemm)  GFLOP/s")
        print(String(format: "decode+preprocess   %.3f", median(decode)))
        for s in ["image_encoder", "memory_attention", "mask_decoder", "memory_encoder", "spatial_perceiver"] where stages.contains(where: { $0[s] != nil }) {
            let byTime = zip(stages, stageFlops).map { ($0[s] ?? 0, $1[s] ?? 0) }.sorted { $0.0 < $1.0 }
            let (seconds, f) = byTime[byTime.count / 2]
            print(s.padding(toLength: 20, withPad: " ", startingAt: 0)
                  + String(format: "%-16.3f%-15.1f%.1f", seconds, f / 1e9, seconds > 0 ? f / 1e9 / seconds : 0))
        }
        let gf = median(flops) / 1e9
        if objects > 1 { print("objects: \(objects) (one image-encoder pass per frame; stages summed over objects)") }
        print(String(format: "tracking per frame: median %.3f s, mean %.3f s over %d frames; %.0f GFLOP/frame in sgemm -> %.1f GFLOP/s (%.0f%% of sgemm)",
                     med, perFrame.reduce(0, +) / Double(perFrame.count), perFrame.count, gf, gf / med, 100 * gf / med / sgemm))
        print(String(format: "peak RSS %.0f MB", peakRSSMegabytes()))
        print(String(format: "RESULT median_s_per_frame=%.4f", med))
    }

    /// The image predictor and mask generator on one image: `set_image`, click to masks at the
    /// image's resolution (the official `predict` defaults: three masks), segment everything with the
    /// official defaults, and one box per image over a folder (decode + embed + predict).
    private func benchImage(_ path: String) throws {
        let (cfg, ckpt) = try modelOptions.resolve()
        let net = try SAM2Model(config: cfg, checkpointPath: ckpt)
        let image = try loadRGBImage(path)
        func median(_ v: [Double]) -> Double { let s = v.sorted(); return s[s.count / 2] }
        func timed(_ body: () throws -> Void) rethrows -> Double { let t0 = Date(); try body(); return Date().timeIntervalSince(t0) }
        let predictor = ImagePredictor(model: net)
        let setImage = median((0..<3).map { _ in timed { predictor.setImage(image) } })
        let (w, h) = (Double(image.width), Double(image.height))
        var clickTimes = [Double](), decoderTimes = [Double]()
        for i in 0..<max(clicks, 1) {
            let x = w * (0.3 + 0.4 * Double(i % 7) / 6), y = h * (0.3 + 0.4 * Double(i % 5) / 4)
            let before = net.stageSeconds["mask_decoder"] ?? 0
            clickTimes.append(try timed { _ = try predictor.predict(points: [(x, y)], labels: [1]) })
            decoderTimes.append((net.stageSeconds["mask_decoder"] ?? 0) - before)
        }
        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores; image \(image.width)x\(image.height); OpenBLAS \(GEMM.kernels) kernels")
        print(String(format: "set_image %.3f s", setImage))
        print(String(format: "RESULT click_ms=%.2f (median of %d; 3 masks at %dx%d; of which the mask decoder %.2f ms)",
                     median(clickTimes) * 1000, clickTimes.count, image.width, image.height, median(decoderTimes) * 1000))
        if pointsPerSide > 0 {
            var p = AutomaticMaskGenerator.Parameters()
            p.pointsPerSide = pointsPerSide
            let generator = try AutomaticMaskGenerator(model: net, parameters: p)
            var count = 0
            let seconds = try timed { count = try generator.generate(image).count }
            print(String(format: "RESULT everything_s=%.2f (%dx%d points, %d masks)", seconds, pointsPerSide, pointsPerSide, count))
        }
        if let batch {
            let names = try FileManager.default.contentsOfDirectory(atPath: batch)
                .filter { Segment.imageExtensions.contains(($0 as NSString).pathExtension.lowercased()) }.sorted().prefix(batchCount)
            guard !names.isEmpty else { throw PredictorError("no images in \(batch)") }
            let seconds = try timed {
                for name in names {
                    let img = try loadRGBImage((batch as NSString).appendingPathComponent(name))
                    predictor.setImage(img)
                    let (bw, bh) = (Double(img.width), Double(img.height))
                    _ = try predictor.predict(box: ImageBox(x0: bw * 0.25, y0: bh * 0.25, x1: bw * 0.75, y1: bh * 0.75), multimask: false)
                }
            }
            print(String(format: "RESULT batch_images_per_s=%.3f (%d images, one box each, %.2f s)", Double(names.count) / seconds, names.count, seconds))
        }
        print(String(format: "peak RSS %.0f MB", peakRSSMegabytes()))
    }

    /// Best of 5 sgemm runs at 2048³ (17 GFLOP each). Taken before and after tracking, and the
    /// higher used: a slow moment on a shared machine must not flatter the ratio.
    private func measureSGEMM() -> Double {
        let n = 2048
        let a = [Float](repeating: 0.5, count: n * n), b = a
        var c = [Float](repeating: 0, count: n * n)
        var best = 0.0
        for _ in 0..<5 {
            let t0 = Date()
            a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in c.withUnsafeMutableBufferPointer { pc in
                GEMM.sgemm(m: n, n: n, k: n, a: pa.baseAddress!, lda: n, b: pb.baseAddress!, ldb: n, c: pc.baseAddress!, ldc: n)
            } } }
            best = max(best, 2 * Double(n * n * n) / Date().timeIntervalSince(t0) / 1e9)
        }
        GEMM.flops = 0
        return best
    }
}

/// Peak resident set size (VmHWM) of this process.
func peakRSSMegabytes() -> Double {
    guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = s.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }) else { return 0 }
    return (Double(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) / 1024
}

/// A frame source that times its own decoding and preprocessing.
final class TimedSource: FrameSource {
    let inner: FrameSource
    private(set) var seconds = 0.0
    init(_ inner: FrameSource) { self.inner = inner }
    var frameCount: Int { inner.frameCount }
    var videoWidth: Int { inner.videoWidth }
    var videoHeight: Int { inner.videoHeight }
    func modelInput(at index: Int, size: Int) throws -> Tensor {
        let t0 = Date()
        defer { seconds += Date().timeIntervalSince(t0) }
        return try inner.modelInput(at: index, size: size)
    }
}
