/// Everything that can go wrong reading or writing a checkpoint. Checkpoints are
/// untrusted input, so every malformed file ends here rather than in a crash;
/// each message is one line naming the file and, where known, the entry or key.
public enum CheckpointError: Error, CustomStringConvertible, Equatable {
    case cannotOpen(path: String, reason: String)
    case notAZip(path: String)
    case badZip(path: String, reason: String)
    case truncated(path: String, what: String)
    case compressedEntry(path: String, entry: String, method: Int)
    case noDataPickle(path: String)
    case missingEntry(path: String, entry: String)
    case badByteOrder(path: String, found: String)
    /// `name` is "module.qualname", exactly as the pickle spelled it.
    case refusedGlobal(source: String, name: String)
    case badPickle(source: String, reason: String)
    case unsupportedDType(source: String, dtype: String)
    case storageTooShort(path: String, tensor: String, reason: String)
    case badTensor(path: String, tensor: String, reason: String)
    case noStateDict(path: String, reason: String)
    case badSafetensorsHeader(path: String, reason: String)
    case unrecognizedFormat(path: String)
    case writeFailed(path: String, reason: String)

    public var description: String {
        switch self {
        case let .cannotOpen(path, reason): return "\(path): cannot open: \(reason)"
        case let .notAZip(path): return "\(path): not a zip archive, or a truncated one (no end-of-central-directory record)"
        case let .badZip(path, reason): return "\(path): corrupt zip archive: \(reason)"
        case let .truncated(path, what): return "\(path): file is truncated: \(what)"
        case let .compressedEntry(path, entry, method):
            return "\(path): zip entry '\(entry)' is compressed (method \(method)); only stored entries are supported"
        case let .noDataPickle(path): return "\(path): no data.pkl in the archive: not a PyTorch checkpoint"
        case let .missingEntry(path, entry): return "\(path): missing archive entry '\(entry)'"
        case let .badByteOrder(path, found): return "\(path): unsupported byteorder '\(found)' (only 'little')"
        case let .refusedGlobal(source, name): return "\(source): refused pickle global '\(name)'"
        case let .badPickle(source, reason): return "\(source): malformed pickle: \(reason)"
        case let .unsupportedDType(source, dtype): return "\(source): unsupported dtype \(dtype)"
        case let .storageTooShort(path, tensor, reason):
            return "\(path): storage too short for tensor '\(tensor)': \(reason)"
        case let .badTensor(path, tensor, reason): return "\(path): bad tensor '\(tensor)': \(reason)"
        case let .noStateDict(path, reason): return "\(path): no state dict: \(reason)"
        case let .badSafetensorsHeader(path, reason): return "\(path): bad safetensors header: \(reason)"
        case let .unrecognizedFormat(path):
            return "\(path): neither a PyTorch zip checkpoint nor a safetensors file"
        case let .writeFailed(path, reason): return "\(path): cannot write: \(reason)"
        }
    }
}
