import Foundation
import XCTest
import SAM2Tensor
@testable import SAM2Checkpoint

final class CheckpointTests: XCTestCase {
    /// ../shared/fixtures next to the package root, if present.
    static let fixtures: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("shared/fixtures")

    func fixture(_ relative: String) throws -> String {
        let url = Self.fixtures.appendingPathComponent(relative)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw XCTSkip("fixture \(url.path) is absent (../shared is not checked out next to the package)")
        }
        return url.path
    }

    var scratch: URL!

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("ckpt-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: scratch)
    }

    func write(_ bytes: [UInt8], _ name: String) throws -> String {
        let path = scratch.appendingPathComponent(name).path
        // fopen/fwrite: Foundation's Data.write is slow enough to matter in the loops below.
        guard let f = fopen(path, "wb") else { throw CocoaError(.fileWriteUnknown) }
        defer { fclose(f) }
        guard fwrite(bytes, 1, bytes.count, f) == bytes.count else { throw CocoaError(.fileWriteUnknown) }
        return path
    }

    func assertThrows(_ expected: (CheckpointError) -> Bool, _ body: () throws -> Void,
                      file: StaticString = #filePath, line: UInt = #line) {
        do {
            try body()
            XCTFail("expected an error", file: file, line: line)
        } catch let error as CheckpointError {
            XCTAssertTrue(expected(error), "unexpected error: \(error)", file: file, line: line)
        } catch {
            XCTFail("not a CheckpointError: \(error)", file: file, line: line)
        }
    }

    // MARK: the real fixture (a zip64 archive from torch.save)

    func testLoadsMicroSynthCheckpoint() throws {
        let path = try fixture("micro_synth/checkpoint.pt")
        let weights = try TorchCheckpoint.load(path: path)
        // Reference numbers from Python (zipfile + pickle with a custom Unpickler + numpy).
        XCTAssertEqual(weights.count, 371)
        let w = try XCTUnwrap(weights["memory_encoder.out_proj.weight"])
        XCTAssertEqual(w.shape, [16, 64, 1, 1])
        XCTAssertEqual(w.data[3 * 64 + 17], -0.15625)
        XCTAssertEqual(w.data[15 * 64 + 63], 0.03125)
        XCTAssertEqual(w.data.filter { $0 != 0 }.count, 927)
        let pe = try XCTUnwrap(weights["image_encoder.trunk.pos_embed"])
        XCTAssertEqual(pe.shape, [1, 16, 7, 7])
        XCTAssertEqual(pe.data[0], -0.0535714328289032)
        XCTAssertEqual(pe.data[783], 0.008928571827709675)
        let tpos = try XCTUnwrap(weights["maskmem_tpos_enc"])
        XCTAssertEqual(tpos.shape, [7, 1, 1, 16])
        XCTAssertEqual(tpos.data[0], -0.04863397032022476)
        XCTAssertEqual(tpos.data[111], -0.10222532600164413)
        let ptr = try XCTUnwrap(weights["no_obj_ptr"])
        XCTAssertEqual(ptr.shape, [1, 64])
        XCTAssertEqual(ptr.data.reduce(0.0) { $0 + Double($1) }, -0.6929232315596892, accuracy: 1e-6)
        // The content-sniffing entry point agrees.
        XCTAssertEqual(try Checkpoint.load(path: path), weights)
    }

    func testReadsFixtureSafetensors() throws {
        let path = try fixture("micro_synth/frames.safetensors")
        let entries = try Safetensors.read(path: path)
        XCTAssertEqual(try entries["video_hw"]?.int32s(), [270, 480])
        XCTAssertEqual(entries["frames"]?.shape, [6, 3, 256, 256])
        let tensors = try Safetensors.readFloatTensors(path: path)
        XCTAssertEqual(Array(tensors.keys), ["frames"]) // the I32 entry is skipped
        XCTAssertEqual(tensors["frames"]?.data[0], 0.07406462728977203)
    }

    // MARK: synthetic checkpoints

    func testStridedAndHalfPrecisionTensors() throws {
        // Storage 0..5; "t" is its 2x3 view transposed: size [3, 2], stride [1, 3].
        let f32 = (0..<6).flatMap { le32(Float($0).bitPattern) }
        // Half 1.5 = 0x3E00, -2 = 0xC000, 2^-24 (smallest subnormal) = 0x0001, inf = 0x7C00.
        let f16: [UInt8] = [0x00, 0x3E, 0x00, 0xC0, 0x01, 0x00, 0x00, 0x7C]
        // bfloat16 of 3.0 is 0x4040, of -0.5 is 0xBF00.
        let bf16: [UInt8] = [0x40, 0x40, 0x00, 0xBF]
        // int64 (torch.LongStorage, BatchNorm's batch counter): 7, -3, 40000.
        let i64 = [Int64(7), -3, 40000].flatMap { v in (0..<8).map { UInt8(truncatingIfNeeded: UInt64(bitPattern: v) >> (8 * $0)) } }
        let path = try write(torchZip(prefix: "archive", tensors: [
            .init(name: "t", key: "0", numel: 6, size: [3, 2], stride: [1, 3]),
            .init(name: "tail", key: "0", numel: 6, offset: 4, size: [2], stride: [1]),
            .init(name: "half", key: "1", storage: "HalfStorage", numel: 4, size: [4], stride: [1]),
            .init(name: "bf", key: "2", storage: "BFloat16Storage", numel: 2, size: [1, 2], stride: [2, 1]),
            .init(name: "scalar", key: "0", numel: 6, offset: 5, size: [], stride: []),
            .init(name: "bn.num_batches_tracked", key: "3", storage: "LongStorage", numel: 3, offset: 1, size: [2], stride: [1]),
        ], storages: ["0": f32, "1": f16, "2": bf16, "3": i64]), "strided.pt")
        let w = try TorchCheckpoint.load(path: path)
        XCTAssertEqual(w["t"], Tensor(shape: [3, 2], data: [0, 3, 1, 4, 2, 5]))
        XCTAssertEqual(w["tail"], Tensor(shape: [2], data: [4, 5]))
        XCTAssertEqual(w["half"], Tensor(shape: [4], data: [1.5, -2, 0x1p-24, .infinity]))
        XCTAssertEqual(w["bf"], Tensor(shape: [1, 2], data: [3, -0.5]))
        XCTAssertEqual(w["scalar"], Tensor(shape: [], data: [5]))
        XCTAssertEqual(w["bn.num_batches_tracked"], Tensor(shape: [2], data: [-3, 40000]))
    }

    func testTopLevelStateDictWithoutModelKey() throws {
        let path = try write(torchZip(tensors: [.init(name: "x", key: "0", numel: 1, size: [1], stride: [1])],
                                      storages: ["0": le32(Float(7).bitPattern)], wrapInModel: false), "flat.pt")
        XCTAssertEqual(try TorchCheckpoint.load(path: path), ["x": Tensor(shape: [1], data: [7])])
    }

    func testRefusesMaliciousGlobals() throws {
        // GLOBAL os.system; ('echo pwned',); REDUCE; STOP
        var p = PickleWriter()
        p.global("os", "system"); p.str("echo pwned"); p.op(0x85); p.op(0x52); p.op(0x2E)
        let path = try write(zip(["archive/data.pkl": p.bytes]), "evil.pt")
        assertThrows({ if case .refusedGlobal(_, "os.system") = $0 { return true }; return false }) {
            _ = try TorchCheckpoint.load(path: path)
        }
        XCTAssertTrue((try? Checkpoint.load(path: path)) == nil)

        // STACK_GLOBAL builtins.eval, and a torch function outside the allow-list.
        var q = PickleWriter()
        q.str("builtins"); q.str("eval"); q.op(0x93); q.str("1+1"); q.op(0x85); q.op(0x52); q.op(0x2E)
        let path2 = try write(zip(["archive/data.pkl": q.bytes]), "evil2.pt")
        assertThrows({ if case .refusedGlobal(_, "builtins.eval") = $0 { return true }; return false }) {
            _ = try TorchCheckpoint.load(path: path2)
        }
        // Other storage types stay refused (only LongStorage joined the float ones).
        var i = PickleWriter()
        i.global("torch", "IntStorage"); i.op(0x2E)
        let path4 = try write(zip(["archive/data.pkl": i.bytes]), "evil4.pt")
        assertThrows({ $0.description.contains("refused pickle global 'torch.IntStorage'") }) {
            _ = try TorchCheckpoint.load(path: path4)
        }
        var r = PickleWriter()
        r.global("torch._utils", "_rebuild_parameter"); r.op(0x29); r.op(0x52); r.op(0x2E)
        let path3 = try write(zip(["archive/data.pkl": r.bytes]), "evil3.pt")
        assertThrows({ $0.description.contains("refused pickle global 'torch._utils._rebuild_parameter'") }) {
            _ = try TorchCheckpoint.load(path: path3)
        }
    }

    func testRejectsNonZipAndZipWithoutPickle() throws {
        let text = try write(Array("just some text, not a checkpoint\n".utf8), "notes.pt")
        assertThrows({ if case .notAZip = $0 { return true }; return false }) { _ = try TorchCheckpoint.load(path: text) }
        assertThrows({ if case .unrecognizedFormat = $0 { return true }; return false }) { _ = try Checkpoint.load(path: text) }
        let empty = try write([], "empty.pt")
        assertThrows({ if case .notAZip = $0 { return true }; return false }) { _ = try TorchCheckpoint.load(path: empty) }
        assertThrows({ if case .cannotOpen = $0 { return true }; return false }) {
            _ = try Checkpoint.load(path: self.scratch.appendingPathComponent("missing.pt").path)
        }

        let noPickle = try write(zip(["archive/version": Array("3\n".utf8), "archive/data/0": [0, 0, 0, 0]]), "nopkl.pt")
        assertThrows({ if case .noDataPickle = $0 { return true }; return false }) { _ = try Checkpoint.load(path: noPickle) }
    }

    func testStorageTooShortForTensor() throws {
        // The tensor claims 2x3 elements of a 4-element storage.
        let path = try write(torchZip(tensors: [.init(name: "x", key: "0", numel: 4, size: [2, 3], stride: [3, 1])],
                                      storages: ["0": [UInt8](repeating: 0, count: 16)]), "short.pt")
        assertThrows({ if case .storageTooShort(_, "x", _) = $0 { return true }; return false }) {
            _ = try TorchCheckpoint.load(path: path)
        }
        // The storage declares 8 elements but the entry holds only 16 bytes.
        let path2 = try write(torchZip(tensors: [.init(name: "y", key: "0", numel: 8, size: [8], stride: [1])],
                                       storages: ["0": [UInt8](repeating: 0, count: 16)]), "short2.pt")
        assertThrows({ if case .storageTooShort(_, "y", _) = $0 { return true }; return false }) {
            _ = try TorchCheckpoint.load(path: path2)
        }
        // Missing storage entry.
        let path3 = try write(torchZip(tensors: [.init(name: "z", key: "9", numel: 1, size: [1], stride: [1])],
                                       storages: [:]), "missing.pt")
        assertThrows({ if case .missingEntry(_, "checkpoint/data/9") = $0 { return true }; return false }) {
            _ = try TorchCheckpoint.load(path: path3)
        }
    }

    func testCompressedEntryAndByteOrder() throws {
        var archive = zip(["archive/data.pkl": [0x80, 0x02, 0x7D, 0x2E]])
        // Flip the central directory's method to deflate (8).
        let cd = try XCTUnwrap(findSignature(archive, 0x0201_4b50))
        archive[cd + 10] = 8
        let path = try write(archive, "deflated.pt")
        assertThrows({ if case .compressedEntry(_, "archive/data.pkl", 8) = $0 { return true }; return false }) {
            _ = try TorchCheckpoint.load(path: path)
        }
        let big = try write(zip(["archive/data.pkl": [0x80, 0x02, 0x7D, 0x2E], "archive/byteorder": Array("big".utf8)]), "big.pt")
        assertThrows({ if case .badByteOrder(_, "big") = $0 { return true }; return false }) {
            _ = try TorchCheckpoint.load(path: big)
        }
    }

    func testTruncatedAndCorruptedFilesThrowWithoutCrashing() throws {
        let good = torchZip(tensors: [
            .init(name: "a", key: "0", numel: 6, size: [2, 3], stride: [3, 1]),
            .init(name: "b", key: "1", storage: "HalfStorage", numel: 2, size: [2], stride: [1]),
        ], storages: ["0": [UInt8](repeating: 0x3F, count: 24), "1": [0, 0x3C, 0, 0x3C]])
        XCTAssertEqual(try TorchCheckpoint.load(path: write(good, "good.pt")).count, 2)

        // Every proper prefix is an error, never a crash.
        for length in 0..<good.count {
            let path = try write(Array(good.prefix(length)), "cut.pt")
            XCTAssertThrowsError(try Checkpoint.load(path: path), "prefix of \(length) bytes")
        }
        // Byte flips anywhere: either a clean load or a clean error.
        var rng = SeededRandom(seed: 42)
        for _ in 0..<600 {
            var bad = good
            for _ in 0..<(1 + Int(rng.next() % 3)) {
                bad[Int(rng.next() % UInt64(bad.count))] = UInt8(truncatingIfNeeded: rng.next())
            }
            _ = try? Checkpoint.load(path: write(bad, "flip.pt"))
        }
        // A truncated real checkpoint (its end-of-central-directory cut off).
        if let real = try? fixture("micro_synth/checkpoint.pt") {
            let head = try Data(contentsOf: URL(fileURLWithPath: real)).prefix(3_000_000)
            assertThrows({ if case .notAZip = $0 { return true }; return false }) {
                _ = try TorchCheckpoint.load(path: self.write(Array(head), "head.pt"))
            }
        }
    }

    func testMalformedPicklesThrow() throws {
        let cases: [[UInt8]] = [
            [0x80, 0x02],                         // no STOP
            [0x80, 0x02, 0x2E],                   // STOP on an empty stack
            [0x80, 0x02, 0x73, 0x2E],             // SETITEM with nothing
            [0x80, 0x02, 0x68, 0x05, 0x2E],       // BINGET of an unset memo slot
            [0x80, 0x02, 0x58, 0xFF, 0xFF, 0xFF, 0x7F, 0x61], // string longer than the pickle
            [0x80, 0x02, 0x28, 0x7D, 0x31, 0x62, 0x2E],       // BUILD below a popped MARK
            [0x80, 0x02, 0x4B, 0x01, 0x4B, 0x02, 0x52, 0x2E], // REDUCE of an int
            [0x80, 0x02, 0x49, 0x31, 0x0A, 0x2E],             // protocol-0 INT: unsupported
            [0x80, 0x02, 0x8A, 0x09] + [UInt8](repeating: 1, count: 9) + [0x2E], // LONG1 over 8 bytes
            [0x80, 0x02, 0x4B, 0x01, 0x2E],                   // top level is not a dict
        ]
        for (i, pickle) in cases.enumerated() {
            let path = try write(zip(["a/data.pkl": pickle]), "bad\(i).pt")
            XCTAssertThrowsError(try TorchCheckpoint.load(path: path), "case \(i)") { error in
                XCTAssertTrue(error is CheckpointError, "case \(i): \(error)")
            }
        }
        // A million-deep chain of tuples and a self-containing list free without recursion.
        var deep: [UInt8] = [0x80, 0x02, 0x4E] + [UInt8](repeating: 0x85, count: 1_000_000) + [0x2E]
        XCTAssertThrowsError(try TorchCheckpoint.load(path: write(zip(["a/data.pkl": deep]), "deep.pt")))
        deep = [0x80, 0x02, 0x5D, 0x71, 0x00, 0x68, 0x00, 0x61, 0x2E] // l = []; l.append(l)
        XCTAssertThrowsError(try TorchCheckpoint.load(path: write(zip(["a/data.pkl": deep]), "cycle.pt")))
    }

    // MARK: safetensors

    func testSafetensorsRoundTrip() throws {
        let t = Tensor(shape: [2, 3], data: [1, -2, 3.5, .pi, 0, -0.25])
        let entries: [String: SafetensorsEntry] = [
            "weights": SafetensorsEntry(tensor: t),
            "mask_bits": SafetensorsEntry(uint8: [0xFF, 0x01, 0x80], shape: [3]),
            "video_hw": SafetensorsEntry(int32: [270, -480], shape: [2]),
            "empty": SafetensorsEntry(tensor: Tensor(shape: [0, 4], data: [])),
            "half": SafetensorsEntry(dtype: "F16", shape: [2], bytes: [0x00, 0x3C, 0x00, 0xC0]),
        ]
        let path = scratch.appendingPathComponent("round.safetensors").path
        try Safetensors.write(entries, to: path)
        XCTAssertEqual(try Safetensors.read(path: path), entries)

        let raw = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let headerLength = raw.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        XCTAssertEqual((8 + headerLength) % 8, 0, "data must start 8-byte aligned")
        let header = String(decoding: raw[8..<(8 + headerLength)], as: UTF8.self)
        XCTAssertTrue(header.hasPrefix("{\"empty\":"), header) // names sorted

        let floats = try Safetensors.readFloatTensors(path: path)
        XCTAssertEqual(Set(floats.keys), ["weights", "empty", "half"])
        XCTAssertEqual(floats["weights"], t)
        XCTAssertEqual(floats["half"]?.data, [1, -2])
        XCTAssertEqual(try Checkpoint.load(path: path), floats)
        XCTAssertEqual(try entries["video_hw"]?.int32s(), [270, -480])
        XCTAssertThrowsError(try entries["mask_bits"]?.floats())

        // Overwriting replaces the file atomically and leaves no temporaries.
        try Safetensors.write(["only": SafetensorsEntry(uint8: [7], shape: [1])], to: path)
        XCTAssertEqual(try Safetensors.read(path: path).count, 1)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: scratch.path), ["round.safetensors"])
    }

    func testBadSafetensorsHeaders() throws {
        func file(_ header: String, data: [UInt8] = [], length: UInt64? = nil) -> [UInt8] {
            let h = Array(header.utf8)
            return le64(length ?? UInt64(h.count)) + h + data
        }
        let isHeader: (CheckpointError) -> Bool = { if case .badSafetensorsHeader = $0 { return true }; return false }
        let isTruncated: (CheckpointError) -> Bool = { if case .truncated = $0 { return true }; return false }
        let cases: [(String, [UInt8], (CheckpointError) -> Bool)] = [
            ("len", file("{}", length: 1 << 40), isHeader),
            ("past", file("{}", length: 100), isTruncated),
            ("json", file("{not json"), isHeader),
            ("array", file("[1,2]"), isHeader),
            ("dtype", file(#"{"x":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]), isHeader),
            ("size", file(#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]), isHeader),
            ("neg", file(#"{"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]), isHeader),
            ("frac", file(#"{"x":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]), isHeader),
            ("short", file(#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: [0, 0, 0, 0]), isTruncated),
            ("gap", file(#"{"x":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#, data: [0, 0]), isHeader),
            ("trail", file(#"{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#, data: [0, 0]), isHeader),
            ("overlap", file(#"{"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"y":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#,
                             data: [0, 0]), isHeader),
            ("meta", file(#"{"__metadata__":{"a":1}}"#), isHeader),
            ("tiny", [1, 2, 3], isTruncated),
        ]
        for (name, bytes, expected) in cases {
            let path = try write(bytes, "\(name).safetensors")
            assertThrows(expected) { _ = try Safetensors.read(path: path) }
            XCTAssertThrowsError(try Checkpoint.load(path: path), name)
        }
        // Writing refuses entries whose bytes don't match their shape.
        XCTAssertThrowsError(try Safetensors.write(["x": SafetensorsEntry(dtype: "F32", shape: [3], bytes: [0, 0])],
                                                   to: scratch.appendingPathComponent("w.safetensors").path))
    }
}

// MARK: helpers: hand-built pickles and zips

private func le16(_ v: Int) -> [UInt8] { [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF)] }
private func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8((v >> (8 * UInt32($0))) & 0xFF) } }
private func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8((v >> (8 * UInt64($0))) & 0xFF) } }

private func findSignature(_ bytes: [UInt8], _ signature: UInt32) -> Int? {
    let s = le32(signature)
    return (0...(bytes.count - 4)).first { Array(bytes[$0..<($0 + 4)]) == s }
}

private struct TensorSpec {
    var name: String, key: String, storage = "FloatStorage", numel: Int, offset = 0, size: [Int], stride: [Int]
}

/// A pickle shaped like torch.save's (the shared writer in RobustnessSupport).
private func stateDictPickle(_ tensors: [TensorSpec], wrapInModel: Bool) -> [UInt8] {
    PickleWriter.stateDict(tensors.map { ($0.name, $0.storage, $0.key, $0.numel, $0.offset, $0.size, $0.stride) },
                           wrapInModel: wrapInModel)
}

private func torchZip(prefix: String = "checkpoint", tensors: [TensorSpec], storages: [String: [UInt8]],
                      wrapInModel: Bool = true) -> [UInt8] {
    var files: [(String, [UInt8])] = [("\(prefix)/data.pkl", stateDictPickle(tensors, wrapInModel: wrapInModel)),
                                      ("\(prefix)/byteorder", Array("little".utf8))]
    for (key, bytes) in storages.sorted(by: { $0.key < $1.key }) { files.append(("\(prefix)/data/\(key)", bytes)) }
    return zip(files)
}

private func zip(_ files: [String: [UInt8]]) -> [UInt8] {
    zip(files.sorted { $0.key < $1.key })
}

/// A plain archive of stored entries (shared with the robustness tests).
private func zip(_ files: [(String, [UInt8])]) -> [UInt8] { makeZip(files) }
