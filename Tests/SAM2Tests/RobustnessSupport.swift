import Foundation
import XCTest
@testable import SAM2Checkpoint
import SAM2Tensor

/// Helpers for the Robustness* and Fuzz* tests: running the built `sam2` binary, the committed
/// test model and clip, hand-built zips and pickles, a seeded generator.
enum Robust {
    static let fixtures = TestPaths.packageRoot.appendingPathComponent("Tests/SAM2Tests/Fixtures").path
    static let config = "\(fixtures)/micro_synth/config.yaml"
    static let checkpoint = "\(fixtures)/micro_synth/checkpoint.pt"
    static let clip = "\(fixtures)/synth.mp4"  // 480x270, 24 frames
    /// The test model, for `sam2 track`.
    static let model = ["--config", config, "--checkpoint", checkpoint]

    static func tempDir(_ label: String) throws -> String {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("sam2-robust-\(label)-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    static func write(_ bytes: [UInt8], to path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
        }
    }

    // MARK: the sam2 binary

    /// The `sam2` executable in the build folder holding this test bundle (`swift test` builds every
    /// product); built with `swift build --product sam2` into that folder if it is missing.
    static let binary: Result<String, Error> = Result {
        var folders = [URL]()
        for bundle in Bundle.allBundles where bundle.bundlePath.hasSuffix(".xctest") {
            folders.append(bundle.bundleURL.deletingLastPathComponent())
        }
        folders.append(Bundle.main.bundleURL)
        folders.append(URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent())
        for folder in folders {
            let candidate = folder.appendingPathComponent("sam2").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        // <scratch>/<triple>/<configuration>/: build the product there.
        guard let folder = folders.first?.resolvingSymlinksInPath() else { throw XCTSkip("cannot locate the build folder") }
        let configuration = folder.lastPathComponent
        let scratch = folder.deletingLastPathComponent().deletingLastPathComponent().path
        guard let swift = VideoTestSupport.executable("swift") else { throw XCTSkip("sam2 is not built and swift is not on PATH") }
        let built = try VideoTestSupport.run(swift, ["build", "--package-path", TestPaths.packageRoot.path,
                                                     "--scratch-path", scratch, "-c", configuration, "--product", "sam2"])
        let candidate = folder.appendingPathComponent("sam2").path
        guard built.status == 0, FileManager.default.isExecutableFile(atPath: candidate) else {
            throw XCTSkip("could not build sam2: \(built.stderr.suffix(500))")
        }
        return candidate
    }

    struct Run {
        var status: Int32
        var reason: Process.TerminationReason
        var stdout: String
        var stderr: String
        /// Stderr without the warnings the video reader may print.
        var errorLines: [String] { stderr.split(separator: "\n").map(String.init).filter { !$0.contains("warning: ") } }
    }

    /// Starts `sam2 args` in `directory`; stdout and stderr go to files (never a full pipe).
    static func launch(_ args: [String], in directory: String? = nil) throws -> (Process, finish: () -> Run) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try binary.get())
        process.arguments = args
        // Under --sanitize=address, LeakSanitizer's report at exit would add lines to stderr (for
        // one-off leaks outside this package's control, e.g. Foundation's buffer for an empty file);
        // leaks are still checked in the test process itself. Every other check stays on.
        var environment = ProcessInfo.processInfo.environment
        environment["ASAN_OPTIONS"] = (environment["ASAN_OPTIONS"].map { $0 + ":" } ?? "") + "detect_leaks=0"
        process.environment = environment
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let logs = FileManager.default.temporaryDirectory.appendingPathComponent("sam2-run-\(UUID().uuidString)")
        let outPath = logs.path + ".out", errPath = logs.path + ".err"
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        let err = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        process.standardOutput = out
        process.standardError = err
        try process.run()
        return (process, {
            process.waitUntilExit()
            try? out.close(); try? err.close()
            defer { try? FileManager.default.removeItem(atPath: outPath); try? FileManager.default.removeItem(atPath: errPath) }
            return Run(status: process.terminationStatus, reason: process.terminationReason,
                       stdout: text(of: outPath), stderr: text(of: errPath))
        })
    }

    /// A file's text. (Foundation leaks a 4 KB buffer reading an empty file, which LeakSanitizer reports.)
    static func text(of path: String) -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else { return "" }
        defer { try? handle.close() }
        return String(decoding: (try? handle.readToEnd()) ?? Data(), as: UTF8.self)
    }

    static func sam2(_ args: [String], in directory: String? = nil) throws -> Run {
        try launch(args, in: directory).finish()
    }

    // MARK: checkpoints

    /// The entries of a zip, in order.
    static func zipEntries(_ path: String) throws -> [(name: String, bytes: [UInt8])] {
        let archive = try ZipArchive(path: path)
        return try archive.entries.map { ($0.name, try archive.data(of: $0)) }
    }

    /// A copy of the test checkpoint with entries changed by `transform` (nil drops the entry).
    static func rewrittenCheckpoint(to path: String, _ transform: (String, [UInt8]) -> [UInt8]?) throws {
        let entries = try zipEntries(checkpoint).compactMap { e in transform(e.name, e.bytes).map { (e.name, $0) } }
        try write(makeZip(entries), to: path)
    }

    /// The test checkpoint's state dict written as safetensors, after `edit`.
    static func safetensorsCheckpoint(to path: String, _ edit: (inout [String: Tensor]) -> Void) throws {
        var tensors = try Checkpoint.load(path: checkpoint)
        edit(&tensors)
        try Safetensors.write(tensors.mapValues { SafetensorsEntry(tensor: $0) }, to: path)
    }
}

// MARK: hand-built zips and pickles

func u16le(_ v: Int) -> [UInt8] { [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF)] }
func u32le(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8((v >> (8 * UInt32($0))) & 0xFF) } }
func u64le(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8((v >> (8 * UInt64($0))) & 0xFF) } }

/// A plain (non-ZIP64) archive of stored entries; CRCs are left zero (the reader does not check them).
func makeZip(_ files: [(String, [UInt8])]) -> [UInt8] {
    var out = [UInt8](), central = [UInt8]()
    for (name, data) in files {
        let offset = out.count, n = Array(name.utf8)
        out += u32le(0x0403_4b50) + u16le(20) + u16le(0) + u16le(0) + u16le(0) + u16le(0) + u32le(0)
            + u32le(UInt32(data.count)) + u32le(UInt32(data.count)) + u16le(n.count) + u16le(0) + n + data
        central += u32le(0x0201_4b50) + u16le(20) + u16le(20) + u16le(0) + u16le(0) + u16le(0) + u16le(0) + u32le(0)
            + u32le(UInt32(data.count)) + u32le(UInt32(data.count)) + u16le(n.count) + u16le(0) + u16le(0)
            + u16le(0) + u16le(0) + u32le(0) + u32le(UInt32(offset)) + n
    }
    let cdOffset = out.count
    out += central
    out += u32le(0x0605_4b50) + u16le(0) + u16le(0) + u16le(files.count) + u16le(files.count)
        + u32le(UInt32(central.count)) + u32le(UInt32(cdOffset)) + u16le(0)
    return out
}

/// Protocol-2 pickle opcodes, written by hand.
struct PickleWriter {
    var bytes: [UInt8] = [0x80, 0x02]
    mutating func op(_ o: UInt8) { bytes.append(o) }
    mutating func str(_ s: String) { bytes += [0x58] + u32le(UInt32(s.utf8.count)) + Array(s.utf8) }
    mutating func int(_ i: Int) { bytes += [0x4A] + u32le(UInt32(bitPattern: Int32(i))) }
    mutating func global(_ module: String, _ name: String) { bytes += [0x63] + Array("\(module)\n\(name)\n".utf8) }
    mutating func tuple(_ values: [Int]) { op(0x28); values.forEach { int($0) }; op(0x74) }

    /// `module.name(argument)`, the shape of every pickle exploit.
    static func call(_ module: String, _ name: String, _ argument: String) -> [UInt8] {
        var p = PickleWriter()
        p.global(module, name); p.str(argument); p.op(0x85); p.op(0x52); p.op(0x2E)
        return p.bytes
    }

    /// torch.save's shape: {"model": OrderedDict(name -> _rebuild_tensor_v2(storage, offset, size, stride, ...))}.
    static func stateDict(_ tensors: [(name: String, storage: String, key: String, numel: Int, offset: Int, size: [Int], stride: [Int])],
                          wrapInModel: Bool = true) -> [UInt8] {
        var p = PickleWriter()
        if wrapInModel { p.op(0x7D); p.str("model") }
        p.global("collections", "OrderedDict"); p.op(0x29); p.op(0x52)
        p.op(0x28)
        for t in tensors {
            p.str(t.name)
            p.global("torch._utils", "_rebuild_tensor_v2")
            p.op(0x28)
            p.op(0x28); p.str("storage"); p.global("torch", t.storage); p.str(t.key); p.str("cpu"); p.int(t.numel); p.op(0x74)
            p.op(0x51)  // BINPERSID
            p.int(t.offset); p.tuple(t.size); p.tuple(t.stride); p.op(0x89)
            p.global("collections", "OrderedDict"); p.op(0x29); p.op(0x52)
            p.op(0x74); p.op(0x52)
        }
        p.op(0x75)  // SETITEMS
        if wrapInModel { p.op(0x73) }  // SETITEM
        p.op(0x2E)  // STOP
        return p.bytes
    }
}

/// SplitMix64: a small seeded generator, so every fuzz input can be reproduced.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func below(_ n: Int) -> Int { n <= 1 ? 0 : Int(next() % UInt64(n)) }
}
