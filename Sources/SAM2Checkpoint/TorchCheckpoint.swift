import SAM2Tensor

/// Loads a checkpoint of either supported format, told apart by content.
public enum Checkpoint {
    /// A PyTorch zip checkpoint (`torch.save`) or a safetensors file, as float32 tensors by name.
    public static func load(path: String) throws -> [String: Tensor] {
        let file = try MappedFile(path: path)
        let magic = file.bytes.le(UInt32.self, at: 0)
        // "PK\3\4" starts any zip with entries; "PK\5\6" is an empty one.
        if magic == 0x0403_4b50 || magic == 0x0605_4b50 {
            return try TorchCheckpoint.load(file: file)
        }
        if path.lowercased().hasSuffix(".safetensors") || Safetensors.looksLikeSafetensors(file.bytes) {
            return try Safetensors.readFloatTensors(file: file)
        }
        throw CheckpointError.unrecognizedFormat(path: path)
    }
}

/// Reads the zip checkpoints `torch.save` writes, such as the official SAM 2
/// `.pt` files, without Python: the pickle goes through the restricted
/// `Unpickler`, and each tensor is copied straight from the memory-mapped file.
public enum TorchCheckpoint {
    /// The state dict: `obj["model"]` if that is a dict, else the top-level dict,
    /// which must then map names to tensors.
    public static func load(path: String) throws -> [String: Tensor] {
        try load(file: MappedFile(path: path))
    }

    static func load(file: MappedFile) throws -> [String: Tensor] {
        let archive = try ZipArchive(file: file)
        let path = file.path
        // torch.save writes "<folder>/data.pkl" and the storages as "<folder>/data/<key>";
        // the folder's name varies ("archive" in the official checkpoints).
        guard let pickle = archive.entries.first(where: { isDataPickle($0.name) }) else {
            throw CheckpointError.noDataPickle(path: path)
        }
        let prefix = String(pickle.name.dropLast("data.pkl".count))
        if let order = archive.entry(named: prefix + "byteorder") {
            let found = String(decoding: try archive.data(of: order).prefix(64), as: UTF8.self)
            guard found == "little" else { throw CheckpointError.badByteOrder(path: path, found: found) }
        }
        return try archive.withBytes(of: pickle) { raw in
            try Unpickler.load(raw, source: "\(path) (\(pickle.name))") { root in
                let refs = try stateDict(root, path: path)
                // Shared storages and stride-0 views may legitimately exceed the
                // file's bytes a little; a hostile pickle must not allocate without bound.
                var budget = 2 * file.bytes.count
                var out = [String: Tensor](minimumCapacity: refs.count)
                for (name, ref) in refs {
                    out[name] = try materialize(ref, name: name, archive: archive, prefix: prefix, budget: &budget)
                }
                return out
            }
        }
    }

    static func isDataPickle(_ name: String) -> Bool {
        name == "data.pkl" || (name.hasSuffix("/data.pkl") && !name.dropLast("/data.pkl".count).contains("/"))
    }

    static func stateDict(_ root: PickleValue, path: String) throws -> [(String, PickleTensor)] {
        guard case .dict(let top) = root else {
            throw CheckpointError.noStateDict(path: path, reason: "the pickle holds a \(root.kind), not a dict")
        }
        if case .dict(let model)? = top.value(forKey: "model") {
            return try tensors(in: model, what: "'model'", path: path)
        }
        return try tensors(in: top, what: "the top-level dict", path: path)
    }

    static func tensors(in dict: PickleDict, what: String, path: String) throws -> [(String, PickleTensor)] {
        try dict.pairs.map { pair in
            guard case .string(let name) = pair.key else {
                throw CheckpointError.noStateDict(path: path, reason: "\(what) has a \(pair.key.kind) key")
            }
            guard case .tensor(let t) = pair.value else {
                throw CheckpointError.noStateDict(path: path, reason: "\(what)['\(name)'] is a \(pair.value.kind), not a tensor")
            }
            return (name, t)
        }
    }

    static func materialize(_ t: PickleTensor, name: String, archive: ZipArchive, prefix: String,
                            budget: inout Int) throws -> Tensor {
        let path = archive.path
        func bad(_ reason: String) -> CheckpointError { .badTensor(path: path, tensor: name, reason: reason) }
        // Element count and the furthest element the strides reach, overflow-checked.
        var count = 1, extent = 0
        for (n, s) in zip(t.size, t.stride) {
            guard n >= 0, s >= 0 else { throw bad("negative size or stride") }
            let (c, o1) = count.multipliedReportingOverflow(by: n)
            let (r, o2) = max(n - 1, 0).multipliedReportingOverflow(by: s)
            let (e, o3) = extent.addingReportingOverflow(r)
            guard !o1, !o2, !o3 else { throw bad("size \(t.size) overflows") }
            count = c; extent = e
        }
        guard count <= budget else { throw bad("\(count) elements is more than the file can hold") }
        budget -= count

        let key = prefix + "data/" + t.storage.key
        guard let entry = archive.entry(named: key) else { throw CheckpointError.missingEntry(path: path, entry: key) }
        let type = t.storage.dtype, numel = t.storage.numel
        return try archive.withBytes(of: entry) { raw in
            guard numel <= raw.count / type.byteCount else {
                throw CheckpointError.storageTooShort(path: path, tensor: name,
                    reason: "'\(key)' declares \(numel) elements but holds \(raw.count) bytes")
            }
            guard count > 0 else { return Tensor(shape: t.size, data: []) }
            guard t.offset >= 0, t.offset <= numel, extent < numel - t.offset else {
                throw CheckpointError.storageTooShort(path: path, tensor: name,
                    reason: "needs elements \(t.offset)...\(t.offset &+ extent) of '\(key)', which has \(numel)")
            }
            // Row-major strides (any stride is fine on a size-1 dim): one straight copy.
            var expected = 1, contiguous = true
            for (n, s) in zip(t.size, t.stride).reversed() {
                if n != 1 && s != expected { contiguous = false }
                expected *= n
            }
            if contiguous {
                return Tensor(shape: t.size, data: type.decode(raw, from: t.offset, count: count))
            }
            // General strides: walk the indices like an odometer, then gather.
            var indices = [Int]()
            indices.reserveCapacity(count)
            var digit = [Int](repeating: 0, count: t.size.count)
            var at = t.offset
            for _ in 0..<count {
                indices.append(at)
                var d = t.size.count - 1
                while d >= 0 {
                    digit[d] += 1
                    at += t.stride[d]
                    if digit[d] < t.size[d] { break }
                    at -= t.stride[d] * t.size[d]
                    digit[d] = 0
                    d -= 1
                }
            }
            return Tensor(shape: t.size, data: type.decode(raw, at: indices))
        }
    }
}

// MARK: element decoding

/// The storage types we read, all little-endian, all widened to Float: float32, float16,
/// bfloat16, and int64 (only BatchNorm's batch counters are stored so; exact up to 2^24).
enum FloatElement: Equatable {
    case f32, f16, bf16, i64

    var byteCount: Int {
        switch self {
        case .f32: return 4
        case .f16, .bf16: return 2
        case .i64: return 8
        }
    }

    /// `count` consecutive elements starting at element `start`.
    func decode(_ raw: UnsafeRawBufferPointer, from start: Int, count: Int) -> [Float] {
        precondition(start >= 0 && count >= 0 && start + count <= raw.count / byteCount)
        #if _endian(little)
        if self == .f32 {
            return [Float](unsafeUninitializedCapacity: count) { out, initialized in
                let bytes = start * 4
                UnsafeMutableRawBufferPointer(out).copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[bytes..<(bytes + count * 4)]))
                initialized = count
            }
        }
        #endif
        return convert(raw, start..<(start + count), count: count)
    }

    /// The elements at `indices`, which the caller has checked lie inside `raw`.
    func decode(_ raw: UnsafeRawBufferPointer, at indices: [Int]) -> [Float] {
        convert(raw, indices, count: indices.count)
    }

    private func convert<S: Sequence>(_ raw: UnsafeRawBufferPointer, _ indices: S, count: Int) -> [Float]
    where S.Element == Int {
        [Float](unsafeUninitializedCapacity: count) { out, initialized in
            var k = 0
            switch self {
            case .f32:
                for i in indices {
                    out[k] = Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
                    k += 1
                }
            case .f16:
                for i in indices {
                    out[k] = Self.halfToFloat(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
                    k += 1
                }
            case .bf16:
                for i in indices {
                    // bfloat16 is the top half of a float32.
                    out[k] = Float(bitPattern: UInt32(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) << 16)
                    k += 1
                }
            case .i64:
                for i in indices {
                    out[k] = Float(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)))
                    k += 1
                }
            }
            initialized = k
        }
    }

    /// IEEE half to float, by bits (Swift's Float16 is missing on some platforms).
    static func halfToFloat(_ h: UInt16) -> Float {
        let sign: UInt32 = UInt32(h & 0x8000) << 16
        let exponent = UInt32(h >> 10) & 0x1F
        let mantissa = UInt32(h & 0x3FF)
        switch exponent {
        case 0: // zero or subnormal: mantissa * 2^-24
            let v = Float(mantissa) * 0x1p-24
            return sign != 0 ? -v : v
        case 0x1F: // infinity or NaN
            return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
        default: // rebias 15 -> 127
            return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
        }
    }
}
