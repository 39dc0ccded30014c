import Foundation
import XCTest
import SAM2
@testable import SAM2Checkpoint
import SAM2Tensor
import SAM2Video

/// Seeded mutation fuzzing of every parser that reads untrusted bytes: the restricted unpickler,
/// zip/.pt checkpoints (hand-built ones and the real fixture), safetensors, prompt scripts
/// (JSON), model configs (YAML) and mask prompts (PNG). Each input must parse or throw; a crash
/// fails the whole run, and a parser that does not return (or takes over `slowLimit` on one
/// input) fails the test.
///
/// Bounded for CI: `SAM2_FUZZ_SECONDS` in total (default 16), shared between the targets.
/// `SAM2_FUZZ_SEED` changes the inputs (default fixed, so runs repeat). Input n of a target
/// depends only on the seed, the target and n. The input being parsed is always on disk at
/// `$TMPDIR/sam2-fuzz/<target>.input`, so after a crash it is there to reproduce it.
final class FuzzTests: XCTestCase {
    static let totalSeconds = Double(ProcessInfo.processInfo.environment["SAM2_FUZZ_SECONDS"] ?? "") ?? 16
    static let seed = UInt64(ProcessInfo.processInfo.environment["SAM2_FUZZ_SEED"] ?? "") ?? 20_250_501
    static let slowLimit = 5.0
    static let folder: String = {
        let f = FileManager.default.temporaryDirectory.appendingPathComponent("sam2-fuzz").path
        try? FileManager.default.createDirectory(atPath: f, withIntermediateDirectories: true)
        return f
    }()

    // MARK: targets

    func testFuzzPickle() throws {
        let pickle = try fixtureEntry(suffix: "data.pkl")
        let corpus = [pickle, PickleWriter.stateDict(smallTensors), PickleWriter.call("os", "system", "true")]
        try fuzz("pickle", share: 0.2, corpus: corpus) { bytes in
            try bytes.withUnsafeBytes { raw in
                try Unpickler.load(raw, source: "fuzz") { root in _ = try TorchCheckpoint.stateDict(root, path: "fuzz") }
            }
        }
    }

    func testFuzzTorchZip() throws {
        let storages: [String: [UInt8]] = ["0": (0..<24).map { UInt8($0) }, "1": [0, 0x3C, 0, 0xC0, 0x80, 0x3F, 0, 0]]
        let files = [("ckpt/data.pkl", PickleWriter.stateDict(smallTensors)), ("ckpt/byteorder", Array("little".utf8))]
            + storages.sorted { $0.key < $1.key }.map { ("ckpt/data/\($0.key)", $0.value) }
        let path = Self.folder + "/torch-zip.input"
        try fuzz("torch-zip", share: 0.15, corpus: [makeZip(files), makeZip(Array(files.prefix(1)))], saves: false) { bytes in
            try Robust.write(bytes, to: path)
            _ = try Checkpoint.load(path: path)
        }
    }

    /// The real checkpoint, mutated in place where it is structure (zip headers, central directory,
    /// the pickle), not tensor payload; now and then cut short.
    func testFuzzFixtureCheckpoint() throws {
        let path = Self.folder + "/checkpoint.input"
        try? FileManager.default.removeItem(atPath: path)
        try FileManager.default.copyItem(atPath: Robust.checkpoint, toPath: path)
        let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let regions = try structureRegions(Robust.checkpoint)
        let fd = open(path, O_RDWR)
        guard fd >= 0 else { return XCTFail("cannot open \(path)") }
        defer { close(fd) }
        try fuzzLoop("checkpoint.pt", share: 0.2) { rng in
            var changed = [(offset: Int, bytes: [UInt8])]()
            for _ in 0...rng.below(4) {
                let region = regions[rng.below(regions.count)]
                let at = region.lowerBound + rng.below(region.count)
                let old = original[at]
                var new: UInt8
                switch rng.below(3) {
                case 0: new = old ^ (1 << UInt8(rng.below(8)))
                case 1: new = Fuzz.interestingBytes[rng.below(Fuzz.interestingBytes.count)]
                default: new = UInt8(truncatingIfNeeded: rng.next())
                }
                _ = pwrite(fd, &new, 1, off_t(at))
                changed.append((at, [old]))
            }
            let cut = rng.below(8) == 0 ? rng.below(original.count) : nil
            if let cut { _ = ftruncate(fd, off_t(cut)) }
            defer {
                if let cut {
                    original[cut...].withUnsafeBytes { _ = pwrite(fd, $0.baseAddress, $0.count, off_t(cut)) }
                }
                for c in changed { _ = pwrite(fd, c.bytes, 1, off_t(c.offset)) }
            }
            _ = try Checkpoint.load(path: path)
        }
    }

    func testFuzzSafetensors() throws {
        let entries: [String: SafetensorsEntry] = [
            "a": SafetensorsEntry(tensor: Tensor(shape: [2, 3], data: [1, 2, 3, 4, 5, 6])),
            "half": SafetensorsEntry(dtype: "F16", shape: [2], bytes: [0, 0x3C, 0, 0xC0]),
            "bf": SafetensorsEntry(dtype: "BF16", shape: [1, 1], bytes: [0x80, 0x3F]),
            "bits": SafetensorsEntry(uint8: [1, 2, 3], shape: [3]),
            "hw": SafetensorsEntry(int32: [270, 480], shape: [2]),
            "empty": SafetensorsEntry(tensor: Tensor(shape: [0, 4], data: [])),
            "scalar": SafetensorsEntry(tensor: Tensor(shape: [], data: [7])),
        ]
        let seedPath = Self.folder + "/seed.safetensors"
        try Safetensors.write(entries, to: seedPath)
        try Safetensors.write(["x": entries["a"]!], to: seedPath + "2")
        let corpus = [[UInt8](try Data(contentsOf: URL(fileURLWithPath: seedPath))),
                      [UInt8](try Data(contentsOf: URL(fileURLWithPath: seedPath + "2")))]
        let path = Self.folder + "/safetensors.input"
        try fuzz("safetensors", share: 0.15, corpus: corpus, saves: false) { bytes in
            try Robust.write(bytes, to: path)
            defer { _ = try? Checkpoint.load(path: path) }
            _ = try Safetensors.read(path: path)
        }
    }

    func testFuzzPromptsJSON() throws {
        let session = [UInt8](try Data(contentsOf: URL(fileURLWithPath: TestPaths.committedFixture + "/session.json")))
        let script = Array("""
            {"actions": [{"op": "points", "frame": 0, "obj": 1, "points": [[240, 135], [10, 20.5]], "labels": [1, 0], "clear_old": false},
             {"op": "box", "frame": 3, "obj": 2, "box": [40, 40, 200, 200], "points": [[50, 60]], "labels": [1]},
             {"op": "mask", "frame": 1, "obj": 3, "mask_png": "m.png"}, {"op": "propagate", "start": 3, "reverse": true, "max": 2},
             {"op": "propagate", "start": null, "max": null}, {"op": "remove", "obj": 2}, {"op": "reset"}]}
            """.utf8)
        try fuzz("prompts-json", share: 0.15, corpus: [session, script]) { bytes in
            let actions = try ActionScript.parse(data: Data(bytes))
            try ActionScript.validate(actions, frameCount: 24, width: 480, height: 270)
        }
    }

    func testFuzzConfigYAML() throws {
        let corpus = [[UInt8](try Data(contentsOf: URL(fileURLWithPath: Robust.config))),
                      [UInt8](try Data(contentsOf: TestPaths.packageRoot.appendingPathComponent("Configs/sam2.1/sam2.1_hiera_t.yaml")))]
        try fuzz("config-yaml", share: 0.1, corpus: corpus) { bytes in
            _ = try SAM2Config.load(yaml: String(decoding: bytes, as: UTF8.self), source: "fuzz")
        }
    }

    func testFuzzMaskPNG() throws {
        let seeds = Self.folder + "/seed"
        try ImageIO.writeGrayPNG(path: seeds + "1.png", width: 7, height: 5, pixels: (0..<35).map { UInt8($0 * 7) })
        try ImageIO.writeIndexedPNG(path: seeds + "2.png", width: 4, height: 4, indices: (0..<16).map { UInt8($0 % 3) })
        try ImageIO.writeRGBPNG(path: seeds + "3.png", width: 3, height: 2, rgb: (0..<18).map { UInt8($0 * 13) })
        let corpus = try (1...3).map { [UInt8](try Data(contentsOf: URL(fileURLWithPath: seeds + "\($0).png"))) }
        let path = Self.folder + "/mask-png.input"
        try fuzz("mask-png", share: 0.05, corpus: corpus, saves: false) { bytes in
            try Robust.write(bytes, to: path)
            _ = try ImageIO.readGray(path: path)
        }
    }

    // MARK: engine

    /// Mutates corpus entries and hands each result to `parse`. Unless `parse` reads a file it
    /// writes itself (`saves: false`), each input is saved first.
    func fuzz(_ name: String, share: Double, corpus: [[UInt8]], saves: Bool = true,
              _ parse: @escaping ([UInt8]) throws -> Void) throws {
        let path = Self.folder + "/\(name).input"
        try fuzzLoop(name, share: share) { rng in
            let input = Fuzz.mutate(corpus[rng.below(corpus.count)], corpus: corpus, rng: &rng)
            if saves { try Robust.write(input, to: path) }
            try parse(input)
        }
    }

    /// Runs `body` with a fresh generator per input until this target's time is up, on a worker
    /// thread watched for hangs. Thrown errors are the expected outcome for most inputs.
    func fuzzLoop(_ name: String, share: Double, _ body: @escaping (inout SeededRandom) throws -> Void) throws {
        let seconds = Self.totalSeconds * share
        let nameHash = name.utf8.reduce(UInt64(14_695_981_039_346_656_037)) { ($0 ^ UInt64($1)) &* 1_099_511_628_211 }
        let state = FuzzState()
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            let deadline = Date().addingTimeInterval(seconds)
            var n: UInt64 = 0
            while Date() < deadline {
                var rng = SeededRandom(seed: Self.seed ^ nameHash ^ (n &* 0x9E37_79B9_7F4A_7C15))
                state.begin(n)
                let start = Date()
                var accepted = false
                do { try body(&rng); accepted = true } catch {}
                state.end(accepted: accepted, seconds: Date().timeIntervalSince(start))
                n += 1
            }
            done.signal()
        }
        if done.wait(timeout: .now() + seconds + 60) == .timedOut {
            return XCTFail("fuzz \(name): input \(state.current) (seed \(Self.seed)) did not return; it is in \(Self.folder)/\(name).input")
        }
        let s = state.snapshot()
        print(String(format: "fuzz %@: %d inputs (%d accepted, %d rejected), none crashed or hung; slowest %.1f ms; seed %llu",
                     name, s.runs, s.accepted, s.runs - s.accepted, s.slowest * 1000, Self.seed))
        XCTAssertGreaterThan(s.runs, 0)
        XCTAssertLessThan(s.slowest, Self.slowLimit, "fuzz \(name): one input took \(s.slowest) s")
    }

    // MARK: helpers

    let smallTensors: [(name: String, storage: String, key: String, numel: Int, offset: Int, size: [Int], stride: [Int])] = [
        ("a", "FloatStorage", "0", 6, 0, [2, 3], [3, 1]),
        ("a_t", "FloatStorage", "0", 6, 0, [3, 2], [1, 3]),
        ("tail", "FloatStorage", "0", 6, 4, [2], [1]),
        ("h", "HalfStorage", "1", 4, 0, [2], [1]),
        ("b", "BFloat16Storage", "1", 4, 1, [1, 1], [1, 1]),
        ("scalar", "FloatStorage", "0", 6, 5, [], []),
    ]

    func fixtureEntry(suffix: String) throws -> [UInt8] {
        guard let entry = try Robust.zipEntries(Robust.checkpoint).first(where: { $0.name.hasSuffix(suffix) }) else {
            throw XCTSkip("no \(suffix) in the fixture checkpoint")
        }
        return entry.bytes
    }

    /// Byte ranges of a zip that are structure: local headers, small entries (the pickle,
    /// byteorder, version), and everything from the end of the last entry's data (the central
    /// directory and end records).
    func structureRegions(_ path: String) throws -> [Range<Int>] {
        let archive = try ZipArchive(path: path)
        let b = archive.file.bytes
        var regions = [Range<Int>]()
        var dataEnd = 0
        for e in archive.entries {
            let h = e.localHeaderOffset
            let start = h + 30 + Int(b.le(UInt16.self, at: h + 26)!) + Int(b.le(UInt16.self, at: h + 28)!)
            regions.append(h..<start)
            if !e.name.contains("/data/") && e.size > 0 { regions.append(start..<(start + e.size)) }
            dataEnd = max(dataEnd, start + e.size)
        }
        regions.append(dataEnd..<b.count)
        return regions
    }
}

/// Counters shared between a fuzz worker and the test (locked: TSan runs these too).
final class FuzzState {
    private let lock = NSLock()
    private var runs = 0, accepted = 0, slowest = 0.0
    private var currentInput: UInt64 = 0

    func begin(_ n: UInt64) { lock.lock(); currentInput = n; lock.unlock() }
    func end(accepted ok: Bool, seconds: Double) {
        lock.lock(); defer { lock.unlock() }
        runs += 1
        if ok { accepted += 1 }
        slowest = max(slowest, seconds)
    }
    var current: UInt64 { lock.lock(); defer { lock.unlock() }; return currentInput }
    func snapshot() -> (runs: Int, accepted: Int, slowest: Double) {
        lock.lock(); defer { lock.unlock() }
        return (runs, accepted, slowest)
    }
}

/// The mutations: bit flips, byte and integer overwrites with boundary values, truncations,
/// insertions, deletions, duplicated chunks, splices with another corpus entry, and decimal
/// numbers (in JSON, YAML, pickled text) replaced by boundary values.
enum Fuzz {
    static let interestingBytes: [UInt8] = [0, 1, 0x7F, 0x80, 0xFF, 0x2E, 0x28, 0x0A, 0x22, 0x5B, 0x7B, 0x2D, 0x39, 0x20]
    static let interestingIntegers: [UInt64] = [0, 1, 0xFF, 0xFFFF, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 1 << 32, 1 << 53,
                                                UInt64(Int64.max), 1 << 63, UInt64.max, UInt64.max - 1]
    static let interestingNumbers = ["-1", "0", "-0", "1e308", "-1e308", "1.5", "9223372036854775807", "9223372036854775808",
                                     "-9223372036854775808", "18446744073709551616", "4294967296", "2147483648", "65536", "1e-320", "NaN"]

    static func mutate(_ input: [UInt8], corpus: [[UInt8]], rng: inout SeededRandom) -> [UInt8] {
        var b = input
        for _ in 0...rng.below(4) {
            let at = rng.below(b.count + 1)
            switch rng.below(10) {
            case 0 where !b.isEmpty: b[min(at, b.count - 1)] ^= 1 << UInt8(rng.below(8))
            case 1 where !b.isEmpty: b[min(at, b.count - 1)] = UInt8(truncatingIfNeeded: rng.next())
            case 2 where !b.isEmpty: b[min(at, b.count - 1)] = interestingBytes[rng.below(interestingBytes.count)]
            case 3:
                let width = [1, 2, 4, 8][rng.below(4)]
                let value = interestingIntegers[rng.below(interestingIntegers.count)]
                let bytes = (0..<width).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) }
                b.replaceSubrange(at..<min(at + width, b.count), with: bytes)
            case 4: b.removeSubrange(rng.below(b.count + 1)...)
            case 5: b.insert(contentsOf: (0...rng.below(16)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }, at: at)
            case 6: b.removeSubrange(at..<min(at + 1 + rng.below(64), b.count))
            case 7 where !b.isEmpty:
                let from = rng.below(b.count), length = 1 + rng.below(min(256, b.count - from))
                b.insert(contentsOf: b[from..<(from + length)], at: at)
            case 8:
                let other = corpus[rng.below(corpus.count)]
                b = Array(b.prefix(at)) + other.suffix(from: rng.below(other.count + 1))
            case 9:
                // The next run of digits after `at` becomes a boundary value.
                guard let start = b[min(at, b.count)...].firstIndex(where: { (0x30...0x39).contains($0) }) else { break }
                var end = start
                while end < b.count, (0x30...0x39).contains(b[end]) || b[end] == 0x2E || b[end] == 0x2D { end += 1 }
                b.replaceSubrange(start..<end, with: Array(interestingNumbers[rng.below(interestingNumbers.count)].utf8))
            default: break
            }
        }
        return b
    }
}
