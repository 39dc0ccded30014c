import Foundation
import SAM2Tensor

/// One tensor of a safetensors file: its dtype name as the format spells it
/// ("F32", "I32", "U8", ...), its shape and its raw little-endian bytes.
public struct SafetensorsEntry: Equatable, Sendable {
    public var dtype: String
    public var shape: [Int]
    public var bytes: [UInt8]

    public init(dtype: String, shape: [Int], bytes: [UInt8]) {
        self.dtype = dtype
        self.shape = shape
        self.bytes = bytes
    }

    public init(tensor: Tensor) {
        self.init(dtype: "F32", shape: tensor.shape, bytes: Self.littleEndianBytes(tensor.data.map(\.bitPattern)))
    }

    public init(uint8 values: [UInt8], shape: [Int]) {
        precondition(shape.reduce(1, *) == values.count, "shape \(shape) does not match \(values.count) values")
        self.init(dtype: "U8", shape: shape, bytes: values)
    }

    public init(int32 values: [Int32], shape: [Int]) {
        precondition(shape.reduce(1, *) == values.count, "shape \(shape) does not match \(values.count) values")
        self.init(dtype: "I32", shape: shape, bytes: Self.littleEndianBytes(values.map { UInt32(bitPattern: $0) }))
    }

    /// The values of an F32, F16, BF16 (or I64, widened) entry as Floats.
    public func floats() throws -> [Float] {
        guard let type = Safetensors.floatElement(dtype) else {
            throw CheckpointError.unsupportedDType(source: "safetensors entry", dtype: dtype)
        }
        return bytes.withUnsafeBytes { type.decode($0, from: 0, count: $0.count / type.byteCount) }
    }

    /// The values of an I32 entry.
    public func int32s() throws -> [Int32] {
        guard dtype == "I32" else { throw CheckpointError.unsupportedDType(source: "safetensors entry (wanted I32)", dtype: dtype) }
        return bytes.withUnsafeBytes { raw in
            (0..<(raw.count / 4)).map { Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self)) }
        }
    }

    /// An F32, F16, BF16 (or I64, widened) entry as a float32 tensor.
    public func tensor() throws -> Tensor {
        let values = try floats()
        guard values.count == shape.reduce(1, *) else {
            throw CheckpointError.badTensor(path: "safetensors entry", tensor: dtype, reason: "shape \(shape) does not match \(values.count) values")
        }
        return Tensor(shape: shape, data: values)
    }

    private static func littleEndianBytes(_ words: [UInt32]) -> [UInt8] {
        words.map(\.littleEndian).withUnsafeBytes { Array($0) }
    }
}

/// The safetensors format: an 8-byte little-endian header length, a JSON header
/// `{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`,
/// then the tensors' bytes, back to back, offsets counted from the end of the header.
public enum Safetensors {
    /// Bytes per element of every dtype the format defines.
    static let elementSizes: [String: Int] = [
        "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
        "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
    ]
    /// Like the reference implementation: a larger header is refused outright.
    static let maxHeaderSize = 100_000_000

    static func floatElement(_ dtype: String) -> FloatElement? {
        switch dtype {
        case "F32": return .f32
        case "F16": return .f16
        case "BF16": return .bf16
        case "I64": return .i64  // BatchNorm batch counters (EdgeTAM), widened like the .pt reader does
        default: return nil
        }
    }

    /// Every entry, with its bytes copied out of the file.
    public static func read(path: String) throws -> [String: SafetensorsEntry] {
        let file = try MappedFile(path: path)
        var out = [String: SafetensorsEntry]()
        for item in try parse(file) {
            out[item.name] = SafetensorsEntry(dtype: item.dtype, shape: item.shape,
                                              bytes: Array(UnsafeRawBufferPointer(rebasing: file.bytes[item.range])))
        }
        return out
    }

    /// The F32, F16, BF16 and I64 entries as float32 tensors; entries of other dtypes are skipped.
    public static func readFloatTensors(path: String) throws -> [String: Tensor] {
        try readFloatTensors(file: MappedFile(path: path))
    }

    static func readFloatTensors(file: MappedFile) throws -> [String: Tensor] {
        var out = [String: Tensor]()
        for item in try parse(file) {
            guard let type = floatElement(item.dtype) else { continue }
            let raw = UnsafeRawBufferPointer(rebasing: file.bytes[item.range])
            out[item.name] = Tensor(shape: item.shape, data: type.decode(raw, from: 0, count: raw.count / type.byteCount))
        }
        return out
    }

    /// Writes `entries` atomically (a temporary file renamed over `path`), names sorted.
    public static func write(_ entries: [String: SafetensorsEntry], to path: String) throws {
        func fail(_ reason: String) -> CheckpointError { .writeFailed(path: path, reason: reason) }
        var header = "{"
        var offset = 0
        let sorted = entries.sorted { $0.key < $1.key }
        for (i, (name, e)) in sorted.enumerated() {
            guard name != "__metadata__" else { throw fail("'__metadata__' is a reserved name") }
            guard let size = elementSizes[e.dtype] else { throw fail("unknown dtype \(e.dtype) for '\(name)'") }
            let numel = e.shape.reduce(Int?(1)) { n, d in
                guard let n, d >= 0 else { return nil }
                let (p, overflow) = n.multipliedReportingOverflow(by: d)
                return overflow ? nil : p
            }
            guard let numel, numel.multipliedReportingOverflow(by: size) == (e.bytes.count, false) else {
                throw fail("'\(name)': shape \(e.shape) of \(e.dtype) does not match \(e.bytes.count) bytes")
            }
            let shape = e.shape.map(String.init).joined(separator: ",")
            header += (i == 0 ? "" : ",") + jsonString(name)
                + ":{\"dtype\":\"\(e.dtype)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + e.bytes.count)]}"
            offset += e.bytes.count
        }
        header += "}"
        // The format pads the header with spaces so the data starts 8-byte aligned;
        // tensors then follow back to back (no gaps are allowed between them).
        var headerBytes = Array(header.utf8)
        headerBytes += [UInt8](repeating: 0x20, count: (8 - (8 + headerBytes.count) % 8) % 8)

        var data = Data(capacity: 8 + headerBytes.count + offset)
        withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(contentsOf: headerBytes)
        for (_, e) in sorted { data.append(contentsOf: e.bytes) }

        let temporary = "\(path).tmp-\(ProcessInfo.processInfo.processIdentifier)-\(UInt32.random(in: 0...UInt32.max))"
        do {
            try data.write(to: URL(fileURLWithPath: temporary))
        } catch {
            throw fail("\(error.localizedDescription)")
        }
        guard rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw fail("rename: \(reason)")
        }
    }

    // MARK: parsing

    struct Item {
        var name: String
        var dtype: String
        var shape: [Int]
        /// Absolute byte range in the file.
        var range: Range<Int>
    }

    /// A cheap sniff for `Checkpoint.load`: a plausible header length followed by '{'.
    static func looksLikeSafetensors(_ b: UnsafeRawBufferPointer) -> Bool {
        guard let n = b.le(UInt64.self, at: 0), n >= 2, n <= UInt64(min(maxHeaderSize, b.count - 8)) else { return false }
        return b[8] == UInt8(ascii: "{")
    }

    /// The header's entries, checked strictly: known dtypes, byte lengths that match
    /// the shapes, and offsets that tile the data exactly (no gaps, overlaps or slack).
    static func parse(_ file: MappedFile) throws -> [Item] {
        let path = file.path, b = file.bytes
        func bad(_ reason: String) -> CheckpointError { .badSafetensorsHeader(path: path, reason: reason) }
        guard let n64 = b.le(UInt64.self, at: 0) else {
            throw CheckpointError.truncated(path: path, what: "shorter than the 8-byte header length")
        }
        guard n64 <= UInt64(maxHeaderSize) else { throw bad("header length \(n64) is too large") }
        let n = Int(n64)
        guard n <= b.count - 8 else {
            throw CheckpointError.truncated(path: path, what: "header of \(n) bytes but only \(b.count - 8) follow")
        }
        let json = Data(UnsafeRawBufferPointer(rebasing: b[8..<(8 + n)]))
        guard json.first == UInt8(ascii: "{"),
              let root = (try? JSONSerialization.jsonObject(with: json)) as? [String: Any] else {
            throw bad("not a JSON object")
        }
        let dataStart = 8 + n, dataCount = b.count - dataStart

        var items = [Item]()
        for (name, value) in root {
            if name == "__metadata__" {
                guard value is [String: String] else { throw bad("__metadata__ must map strings to strings") }
                continue
            }
            guard let info = value as? [String: Any], let dtype = info["dtype"] as? String,
                  let shape = intArray(info["shape"]), let offsets = intArray(info["data_offsets"]), offsets.count == 2
            else { throw bad("entry '\(name)' lacks a dtype, shape or data_offsets") }
            guard let size = elementSizes[dtype] else { throw bad("entry '\(name)' has unknown dtype \(dtype)") }
            var bytes = size
            for d in shape {
                let (p, overflow) = bytes.multipliedReportingOverflow(by: d)
                guard d >= 0, !overflow else { throw bad("entry '\(name)' has a bad shape \(shape)") }
                bytes = p
            }
            let (begin, end) = (offsets[0], offsets[1])
            guard begin >= 0, begin <= end, end - begin == bytes else {
                throw bad("entry '\(name)': offsets [\(begin), \(end)] do not hold \(shape) of \(dtype)")
            }
            guard end <= dataCount else {
                throw CheckpointError.truncated(path: path, what: "entry '\(name)' ends at \(end) but the data is \(dataCount) bytes")
            }
            items.append(Item(name: name, dtype: dtype, shape: shape, range: (dataStart + begin)..<(dataStart + end)))
        }
        // The entries must tile the data region exactly.
        var next = dataStart
        for item in items.sorted(by: { ($0.range.lowerBound, $0.range.upperBound) < ($1.range.lowerBound, $1.range.upperBound) }) {
            guard item.range.lowerBound == next else { throw bad("entry '\(item.name)' leaves a gap or overlaps another") }
            next = item.range.upperBound
        }
        guard next == b.count else { throw bad("\(b.count - next) trailing bytes belong to no entry") }
        return items
    }

    /// A JSON array of integers; fractions and values beyond 2^53 are refused
    /// (sizes and offsets are bounded by the file size anyway).
    private static func intArray(_ value: Any?) -> [Int]? {
        guard let array = value as? [Any] else { return nil }
        var out = [Int]()
        for v in array {
            guard let d = (v as? NSNumber)?.doubleValue, d == d.rounded(), abs(d) <= 0x1p53 else { return nil }
            out.append(Int(d))
        }
        return out
    }

    /// A JSON string literal.
    private static func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }
}
