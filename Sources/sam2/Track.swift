import ArgumentParser
import Foundation
import SAM2
import SAM2Checkpoint
import SAM2Session
import SAM2Video

struct Track: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Track objects through a video from a few prompts and write their masks.",
        discussion: """
        Quick form: each --frame N starts a group of prompts on frame N (--point: positive click, \
        --neg: negative click, --box: a box, --obj: the object, 1 by default). Groups act in order \
        as in an interactive session: the first group's prompts, then propagation over the video; \
        every later group is a correction on its frame, followed by propagation again.

          sam2 track v.mp4 --frame 0 --point 210,350 --frame 50 --point 220,360 --neg 400,90 --output masks/

        Full control: --prompts FILE.json with an action script (points, box, mask, propagate, \
        remove, reset), as in the fixtures' session.json.

        Without --checkpoint the model's official checkpoint is read from the checkpoint cache \
        ($SAM2_CHECKPOINTS, else ~/.cache/sam2/checkpoints); Scripts/download_checkpoints.sh fetches it.

        Failures: every input (video, prompts, mask files, config, checkpoint, output folder) is \
        checked before tracking starts; an error is one line on stderr, exit status 1 (64 for usage), \
        and nothing is written. Damaged video: frames the decoder cannot produce are skipped with a \
        warning and tracking goes on. Ctrl-C (SIGINT) or SIGTERM stops after the current frame and \
        writes the masks of the frames tracked so far (a second signal stops that writing too); exit \
        status 130 or 143. Every file is written under a temporary name and renamed when complete, \
        so an output folder never holds a partial file; the overlay is written only after all masks.
        """)

    @Argument(help: "A video file (anything FFmpeg decodes) or a folder of numbered JPEG/PNG frames.")
    var video: String

    @Option(name: .customLong("frame"), help: ArgumentHelp("Start a group of prompts on frame N (0-based).", valueName: "N"))
    var frames: [Int] = []
    @Option(name: .customLong("point"), help: ArgumentHelp("A positive click x,y in video pixels.", valueName: "x,y"))
    var points: [String] = []
    @Option(name: .customLong("neg"), help: ArgumentHelp("A negative click x,y in video pixels.", valueName: "x,y"))
    var negatives: [String] = []
    @Option(name: .customLong("box"), help: ArgumentHelp("A box x0,y0,x1,y1 in video pixels.", valueName: "x0,y0,x1,y1"))
    var boxes: [String] = []
    @Option(name: .customLong("obj"), help: ArgumentHelp("The object this group prompts (default 1).", valueName: "ID"))
    var objects: [Int] = []
    @Option(name: .long, help: ArgumentHelp("An action script (JSON) instead of the quick flags.", valueName: "FILE"))
    var prompts: String?

    @OptionGroup var modelOptions: ModelOptions

    @Option(name: .shortAndLong, help: ArgumentHelp("Output folder for the masks.", valueName: "DIR"))
    var output: String
    @Option(name: .long, help: "png: DIR/<obj>/<frame>.png; palette: DIR/<frame>.png indexed by object id; rle: DIR/masks.json (COCO RLE); sav: DIR/<obj:03d>/<frame>.png (SA-V layout); yolo: DIR/<frame>.txt polygons.")
    var format: OutputFormat = .png
    @Option(name: .long, help: ArgumentHelp("Also write the video with coloured masks and prompt markers (H.264).", valueName: "FILE.mp4"))
    var overlay: String?
    @Option(name: .long, help: ArgumentHelp("Use only the first N frames of the video.", valueName: "N"))
    var limit: Int?
    @Flag(name: .long, help: "Quick form: do not also propagate backward from the earliest prompted frame.")
    var forwardOnly = false
    @Flag(name: .long, help: "Write into a non-empty output folder, replacing files.")
    var overwrite = false

    enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
        case png, palette, rle, sav, yolo
        var maskFormat: MaskFormat { MaskFormat(rawValue: rawValue)! }
    }

    func validate() throws {
        if prompts != nil && !frames.isEmpty { throw ValidationError("use either --prompts or the --frame groups, not both") }
        if prompts == nil && frames.isEmpty { throw ValidationError("give prompts: --frame N --point x,y (or --box, --neg), or --prompts FILE.json") }
        if let limit, limit <= 0 { throw ValidationError("--limit must be positive") }
    }

    func run() throws {
        let interruption = Interruption.install()
        do {
            try track(interruption)
        } catch let stop as Interrupted {
            FileHandle.standardError.write(Data("sam2: interrupted (\(signalName(stop.signal))) \(stop.message)\n".utf8))
            Foundation.exit(stop.status)
        } catch {
            fail(describe(error))
        }
    }

    /// Everything the user gave is checked before the first frame is tracked: prompts against the
    /// video, mask prompt files, the model, the output folder. Nothing is written until tracking
    /// ends (or is interrupted); every file appears complete (written to a hidden temporary name,
    /// then renamed). On an error the output folder is left as it was (a folder we created is removed).
    private func track(_ interruption: Interruption) throws {
        let started = Date()
        let script: (actions: [PromptAction], origins: [String])
        if let prompts {
            let actions = try ActionScript.parse(path: prompts)
            script = (actions, actions.indices.map { "\(prompts): actions[\($0)]" })
        } else {
            script = try QuickPrompts.actions(from: Array(CommandLine.arguments.dropFirst()), forwardOnly: forwardOnly)
        }
        let actions = script.actions

        // Model config (by name or file) and checkpoint (given, or from the cache): cheap checks first.
        let (cfg, ckpt) = try modelOptions.resolve()

        // The video, then every prompt against it: a bad correction late in the script fails now,
        // not after minutes of tracking.
        let source = try VideoFrameSource(path: video, limit: limit)
        let w = source.videoWidth, h = source.videoHeight
        try ActionScript.validate(actions, frameCount: source.frameCount, width: w, height: h) { script.origins[$0] }
        if format == .palette, let bad = QuickPrompts.objectIds(actions).first(where: { !(1...255).contains($0) }) {
            throw PredictorError("--format palette stores object ids as palette indices 1...255; object \(bad) does not fit (use --format png or rle)")
        }
        let maskPrompts = try loadMaskPrompts(actions, origins: script.origins)
        if let overlay { try checkWritableFolder(of: overlay, what: "--overlay") }

        let net = try SAM2Model(config: cfg, checkpointPath: ckpt)
        try interruption.check("before tracking started; nothing written")

        let createdOutput = try prepareOutput()  // only once model, video and prompts are known to be good
        var keepOutput = false
        defer { if createdOutput && !keepOutput { rmdir(output) } }  // removes it only if still empty

        // The session engine tracks; per-frame formats are written as each frame's masks become
        // final for the pass (a later pass over a frame replaces its files), the rest at the end.
        let session = try TrackingSession(predictor: VideoPredictor(model: net, source: source), videoPath: video,
                                          frameLimit: limit, undoDepth: 0)
        let format = self.format.maskFormat
        if format.writesPerFrame {
            let writer = try LiveMaskWriter(format: format, directory: output, width: w, height: h)
            session.store.onChange = { frame, before, after in
                keepOutput = true
                try writer.update(frame: frame, before: before, after: after)
            }
        }
        let progress = Progress(total: source.frameCount)
        session.predictor.onImageEncoded = { _ in progress.tick() }
        var lastFrame: Int?
        let completed = try session.run(actions, loadMask: { try maskPrompts[$0] ?? loadMaskPNG($0) },
                                        shouldStop: { interruption.signal != nil }) { _, _, result in  // between frames; reported below
            lastFrame = result.frameIndex
        }
        progress.finish()
        let stoppedTracking = !completed || interruption.signal != nil
        let frames = session.store.count

        // Formats written once: on an interrupt, the frames tracked so far (a further signal stops
        // that too).
        let signalsBeforeWriting = interruption.count
        keepOutput = true
        if !format.writesPerFrame {
            try session.export(format, to: output) { interruption.count != signalsBeforeWriting }
        }
        if let signal = interruption.signal {
            let position = !stoppedTracking ? "while writing masks"
                : lastFrame.map { "after frame \($0) of \(source.frameCount)" } ?? "before the first frame was tracked"
            let written = interruption.count == signalsBeforeWriting || format.writesPerFrame ? frames : 0
            throw Interrupted(signal: signal, message: "\(position); masks of \(written) of \(source.frameCount) frames written to \(output)"
                              + (overlay != nil ? ", no overlay written" : ""))
        }

        if let overlay {
            try session.exportOverlay(to: overlay) { interruption.signal != nil }
            try interruption.check("while writing the overlay; masks of all \(frames) frames are in \(output), no overlay written")
        }
        let elapsed = Date().timeIntervalSince(started)
        let objects = try session.store.objectIds()
        print(String(format: "tracked %d object%@ over %d of %d frames in %.1f s (%d image-encoder passes); masks in %@%@",
                     objects.count, objects.count == 1 ? "" : "s", frames, source.frameCount, elapsed,
                     progress.count, output, overlay.map { ", overlay \($0)" } ?? ""))
    }

    /// Mask prompts are read (and so checked) before tracking starts.
    private func loadMaskPrompts(_ actions: [PromptAction], origins: [String]) throws -> [String: (mask: [UInt8], width: Int, height: Int)] {
        var masks = [String: (mask: [UInt8], width: Int, height: Int)]()
        for (step, action) in actions.enumerated() {
            guard case let .mask(_, _, file) = action, masks[file] == nil else { continue }
            do { masks[file] = try loadMaskPNG(file) } catch {
                throw PredictorError("\(origins[step]).mask_png: \(describe(error))")
            }
        }
        return masks
    }

    /// The output folder must be new or empty unless --overwrite. Returns whether it was created.
    private func prepareOutput() throws -> Bool {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: output, isDirectory: &isDir) {
            guard isDir.boolValue else { throw PredictorError("output \(output) exists and is not a folder") }
            let contents: [String]
            do { contents = try FileManager.default.contentsOfDirectory(atPath: output) } catch {
                throw PredictorError("cannot read output folder \(output): \(describe(error))")
            }
            if !contents.isEmpty && !overwrite {
                throw PredictorError("output folder \(output) is not empty; pass --overwrite to replace its files")
            }
            guard FileManager.default.isWritableFile(atPath: output) else {
                throw PredictorError("output folder \(output) is not writable")
            }
            return false
        }
        do {
            try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
        } catch {
            throw PredictorError("cannot create output folder \(output): \(describe(error))")
        }
        return true
    }
}

/// An input file must exist, be a regular file and be readable; one line naming which.
func checkReadableFile(_ path: String, what: String) throws {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
        throw PredictorError("\(what) \(path): no such file")
    }
    guard !isDir.boolValue else { throw PredictorError("\(what) \(path) is a folder, not a file") }
    guard FileManager.default.isReadableFile(atPath: path) else { throw PredictorError("\(what) \(path): permission denied") }
}

/// An output file's folder must exist and be writable before any work is done.
func checkWritableFolder(of path: String, what: String) throws {
    var isDir: ObjCBool = false
    if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue {
        throw PredictorError("\(what) \(path) is a folder, not a file")
    }
    let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
    guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDir), isDir.boolValue else {
        throw PredictorError("\(what) \(path): folder \(folder) does not exist")
    }
    guard FileManager.default.isWritableFile(atPath: folder) else {
        throw PredictorError("\(what) \(path): folder \(folder) is not writable")
    }
}

/// A stop requested by SIGINT or SIGTERM; `message` says where it stopped and what was written.
/// Exit status 128 + signal.
struct Interrupted: Error {
    let signal: Int32
    let message: String
    var status: Int32 { 128 + signal }
}

func signalName(_ signal: Int32) -> String {
    signal == SIGINT ? "SIGINT" : signal == SIGTERM ? "SIGTERM" : "signal \(signal)"
}

/// SIGINT and SIGTERM as a flag checked between frames, so that a stop leaves only complete
/// files: the default action would kill the process wherever it is. Signals are counted, so a
/// second one can also stop the writing that follows the first.
final class Interruption {
    private let lock = NSLock()
    private var signals: [Int32] = []
    private var sources: [DispatchSourceSignal] = []

    static func install() -> Interruption {
        let interruption = Interruption()
        for sig in [SIGINT, SIGTERM] {
            Foundation.signal(sig, SIG_IGN)  // delivered through the dispatch source instead
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { [weak interruption] in interruption?.record(sig) }
            source.resume()
            interruption.sources.append(source)
        }
        return interruption
    }

    private func record(_ sig: Int32) {
        lock.lock(); defer { lock.unlock() }
        signals.append(sig)
    }

    /// How many signals arrived so far.
    var count: Int { lock.lock(); defer { lock.unlock() }; return signals.count }
    /// The first signal received, which sets the exit status.
    var signal: Int32? { lock.lock(); defer { lock.unlock() }; return signals.first }

    /// Throws `Interrupted` with `message` if a signal has arrived.
    func check(_ message: @autoclosure () -> String) throws {
        if let signal { throw Interrupted(signal: signal, message: message()) }
    }
}

/// Where official checkpoints live when --checkpoint is not given.
enum CheckpointCache {
    static var directory: String {
        if let d = ProcessInfo.processInfo.environment["SAM2_CHECKPOINTS"], !d.isEmpty { return d }
        return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/sam2/checkpoints").path
    }

    /// `--model NAME` (default sam2.1_hiera_tiny) or `--config FILE`, and `--checkpoint FILE` or the
    /// cached official checkpoint of that model: the config, and a checkpoint known to be readable.
    static func resolve(model: String?, config: String?, checkpoint: String?) throws -> (config: SAM2Config, checkpoint: String) {
        let cfg: SAM2Config, name: String
        if let config {
            cfg = try SAM2Config.load(path: config)
            name = URL(fileURLWithPath: config).deletingPathExtension().lastPathComponent
        } else {
            let requested = model ?? "sam2.1_hiera_tiny"
            guard let canonical = SAM2Config.canonicalModelName(requested) else {
                throw PredictorError("unknown model '\(requested)'; known: \(SAM2Config.knownModelNames.joined(separator: ", "))")
            }
            cfg = try SAM2Config.named(canonical)
            name = canonical
        }
        let ckpt = try checkpoint ?? path(forModel: name)
        try checkReadableFile(ckpt, what: "checkpoint")
        return (cfg, ckpt)
    }

    static func path(forModel name: String) throws -> String {
        let p = "\(directory)/\(name).pt"
        guard FileManager.default.fileExists(atPath: p) else {
            throw PredictorError("no checkpoint for \(name) at \(p); fetch it with Scripts/download_checkpoints.sh \(name) (or pass --checkpoint FILE)")
        }
        return p
    }
}

/// The quick form's `--frame` groups, read in command-line order.
enum QuickPrompts {
    struct Group { var frame: Int; var obj = 1; var points: [[Double]] = []; var labels: [Int] = []; var box: [Double]? }

    /// The actions, and for each the flags it came from (for messages).
    static func actions(from args: [String], forwardOnly: Bool) throws -> (actions: [PromptAction], origins: [String]) {
        var groups = [Group]()
        var i = 0
        func value(_ flag: String) throws -> String {
            guard i + 1 < args.count else { throw PredictorError("\(flag) needs a value") }
            i += 1
            return args[i]
        }
        func numbers(_ s: String, _ n: Int, _ flag: String) throws -> [Double] {
            let parts = s.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
            guard parts.count == n, parts.allSatisfy({ $0 != nil && $0!.isFinite }) else {
                throw PredictorError("\(flag) \(s): expected \(n == 2 ? "x,y" : "x0,y0,x1,y1")")
            }
            return parts.map { $0! }
        }
        while i < args.count {
            let a = args[i]
            let (flag, inline) = a.hasPrefix("--") && a.contains("=")
                ? (String(a.prefix(while: { $0 != "=" })), String(a.drop(while: { $0 != "=" }).dropFirst())) : (a, nil)
            func v() throws -> String { if let inline { return inline }; return try value(flag) }
            switch flag {
            case "--frame":
                guard let f = Int(try v()) else { throw PredictorError("--frame needs a frame number") }
                groups.append(Group(frame: f))
            case "--point", "--neg", "--box", "--obj":
                let val = try v()
                guard !groups.isEmpty else { throw PredictorError("\(flag) must follow a --frame N that it applies to") }
                switch flag {
                case "--point", "--neg":
                    groups[groups.count - 1].points.append(try numbers(val, 2, flag))
                    groups[groups.count - 1].labels.append(flag == "--point" ? 1 : 0)
                case "--box":
                    guard groups[groups.count - 1].box == nil else { throw PredictorError("one --box per --frame group") }
                    groups[groups.count - 1].box = try numbers(val, 4, flag)
                default:
                    guard let o = Int(val) else { throw PredictorError("--obj needs an integer object id") }
                    groups[groups.count - 1].obj = o
                }
            default:
                // Options taking a value that are not prompts: skip their value.
                if ["--prompts", "--model", "--config", "--checkpoint", "--output", "-o", "--format", "--overlay", "--limit"].contains(flag) && inline == nil { i += 1 }
            }
            i += 1
        }
        var actions = [PromptAction](), origins = [String]()
        for (n, g) in groups.enumerated() {
            if g.points.isEmpty && g.box == nil { throw PredictorError("--frame \(g.frame) has no --point, --neg or --box") }
            let origin = "--frame \(g.frame)" + (groups.count > 1 ? " (group \(n + 1))" : "")
            if let b = g.box {
                actions.append(.box(frame: g.frame, obj: g.obj, box: b, points: g.points, labels: g.labels))
            } else {
                actions.append(.points(frame: g.frame, obj: g.obj, points: g.points, labels: g.labels, clearOld: true))
            }
            actions.append(.propagate(start: nil, reverse: false, max: nil))
            // Frames before the earliest prompt are tracked backward from it.
            let earliest = groups[0...n].map(\.frame).min()!
            if !forwardOnly && earliest > 0 { actions.append(.propagate(start: nil, reverse: true, max: nil)) }
            origins += Array(repeating: origin, count: actions.count - origins.count)
        }
        return (actions, origins)
    }

    /// Every object id the actions prompt.
    static func objectIds(_ actions: [PromptAction]) -> [Int] {
        var ids = [Int]()
        for a in actions {
            switch a {
            case let .points(_, obj, _, _, _), let .box(_, obj, _, _, _), let .mask(_, obj, _):
                if !ids.contains(obj) { ids.append(obj) }
            default: break
            }
        }
        return ids
    }
}

/// A one-line progress bar with frames/s and ETA on a terminal; silent when stderr is piped.
final class Progress {
    let total: Int
    private(set) var count = 0
    private let start = Date()
    private let enabled = isatty(2) != 0

    init(total: Int) { self.total = total }

    func tick() {
        count += 1
        guard enabled else { return }
        let elapsed = Date().timeIntervalSince(start)
        let rate = Double(count) / max(elapsed, 1e-9)
        let remaining = max(total - count, 0)
        let eta = rate > 0 ? Double(remaining) / rate : 0
        let width = 30, done = min(width, total > 0 ? width * min(count, total) / total : width)
        let bar = String(repeating: "#", count: done) + String(repeating: " ", count: width - done)
        let line = String(format: "\r[%@] %d/%d frames  %.2f fps  ETA %@ ", bar, min(count, total), total, rate, Progress.clock(eta))
        FileHandle.standardError.write(line.data(using: .utf8)!)
    }

    func finish() {
        if enabled && count > 0 { FileHandle.standardError.write("\n".data(using: .utf8)!) }
    }

    static func clock(_ s: Double) -> String {
        let t = Int(s.rounded())
        return t >= 3600 ? String(format: "%dh%02dm", t / 3600, (t % 3600) / 60) : String(format: "%dm%02ds", t / 60, t % 60)
    }
}
