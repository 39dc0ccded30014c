/// A restricted unpickler for the pickles `torch.save` writes (protocol 2; the
/// few protocol 4 opcodes a newer writer may add are accepted too).
///
/// Pickles are programs: a general unpickler imports and calls whatever the
/// file names. This one knows five globals and calls nothing: it builds plain
/// values, and REDUCE is interpreted only for `OrderedDict()` and
/// `_rebuild_tensor_v2(...)`, which yield descriptions of tensors for the caller
/// to resolve. It is iterative (no recursion), every read is bounds-checked,
/// and memory stays proportional to the pickle's size.

/// Values a checkpoint pickle can build.
enum PickleValue {
    case none
    case bool(Bool)
    case int(Int)
    case float(Double)
    case string(String)
    case tuple(PickleList)
    case list(PickleList)
    case dict(PickleDict)
    case global(PickleGlobal)
    case storage(PickleStorage)
    case tensor(PickleTensor)

    /// A shallow name for messages (never recurses, so cycles are harmless).
    var kind: String {
        switch self {
        case .none: return "None"
        case .bool: return "bool"
        case .int: return "int"
        case .float: return "float"
        case .string: return "str"
        case .tuple: return "tuple"
        case .list: return "list"
        case .dict: return "dict"
        case .global: return "global"
        case .storage: return "storage"
        case .tensor: return "tensor"
        }
    }
}

/// Containers are classes because the pickle memo shares them and later
/// opcodes (APPEND, SETITEM) mutate them in place.
final class PickleList {
    var items: [PickleValue]
    init(_ items: [PickleValue]) { self.items = items }
}

final class PickleDict {
    /// Insertion order; a repeated key is appended again and the later one wins.
    var pairs: [(key: PickleValue, value: PickleValue)] = []

    func value(forKey key: String) -> PickleValue? {
        for pair in pairs.reversed() {
            if case .string(let k) = pair.key, k == key { return pair.value }
        }
        return nil
    }
}

/// The only globals a checkpoint may name.
enum PickleGlobal: Equatable {
    case orderedDict
    case rebuildTensorV2
    case storageType(FloatElement)

    init?(module: String, name: String) {
        switch (module, name) {
        case ("collections", "OrderedDict"): self = .orderedDict
        case ("torch._utils", "_rebuild_tensor_v2"): self = .rebuildTensorV2
        case ("torch", "FloatStorage"): self = .storageType(.f32)
        case ("torch", "HalfStorage"): self = .storageType(.f16)
        case ("torch", "BFloat16Storage"): self = .storageType(.bf16)
        // BatchNorm's `num_batches_tracked` (EdgeTAM's RepViT trunk): int64 counters.
        case ("torch", "LongStorage"): self = .storageType(.i64)
        default: return nil
        }
    }
}

/// A persistent id ('storage', StorageType, key, location, numel).
struct PickleStorage {
    var dtype: FloatElement
    var key: String
    var numel: Int
}

/// `_rebuild_tensor_v2(storage, offset, size, stride, ...)`, not yet resolved;
/// offset and strides count elements.
struct PickleTensor {
    var storage: PickleStorage
    var offset: Int
    var size: [Int]
    var stride: [Int]
}

enum Unpickler {
    /// Runs the pickle and hands its result to `body`. Afterwards every
    /// container is emptied, so reference cycles and long chains a hostile
    /// pickle may build are freed without leaks or deep recursion; `body`
    /// must therefore not let the value escape.
    static func load<R>(_ bytes: UnsafeRawBufferPointer, source: String,
                        _ body: (PickleValue) throws -> R) throws -> R {
        let machine = Machine(bytes: bytes, source: source)
        defer { machine.teardown() }
        return try body(machine.run())
    }

    private final class Machine {
        let bytes: UnsafeRawBufferPointer
        let source: String
        var pos = 0
        var stack: [PickleValue] = []
        var marks: [Int] = []
        var memo: [Int: PickleValue] = [:]
        var lists: [PickleList] = []
        var dicts: [PickleDict] = []

        init(bytes: UnsafeRawBufferPointer, source: String) {
            self.bytes = bytes
            self.source = source
        }

        func teardown() {
            for l in lists { l.items = [] }
            for d in dicts { d.pairs = [] }
            stack = []; memo = [:]
        }

        func bad(_ reason: String) -> CheckpointError { .badPickle(source: source, reason: reason) }

        // MARK: reading

        func take(_ n: Int) throws -> UnsafeRawBufferPointer {
            guard n >= 0, n <= bytes.count - pos else { throw bad("truncated at offset \(pos)") }
            defer { pos += n }
            return UnsafeRawBufferPointer(rebasing: bytes[pos..<(pos + n)])
        }
        func int<T: FixedWidthInteger>(_: T.Type) throws -> T {
            guard let v = bytes.le(T.self, at: pos) else { throw bad("truncated at offset \(pos)") }
            pos += MemoryLayout<T>.size
            return v
        }
        func string(count: UInt64) throws -> String {
            guard count <= UInt64(bytes.count - pos) else { throw bad("string runs past the end at offset \(pos)") }
            return String(decoding: try take(Int(count)), as: UTF8.self)
        }
        /// A newline-terminated line (GLOBAL's operands), kept short.
        func line() throws -> String {
            let start = pos
            while pos < bytes.count, bytes[pos] != 0x0A {
                guard pos - start < 256 else { throw bad("overlong GLOBAL name at offset \(start)") }
                pos += 1
            }
            guard pos < bytes.count else { throw bad("truncated GLOBAL at offset \(start)") }
            defer { pos += 1 }
            return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<pos]), as: UTF8.self)
        }

        // MARK: stack

        /// Items below the innermost MARK are out of reach, as in CPython.
        func pop() throws -> PickleValue {
            guard stack.count > (marks.last ?? 0) else { throw bad("stack underflow at offset \(pos)") }
            return stack.removeLast()
        }
        func top() throws -> PickleValue {
            guard stack.count > (marks.last ?? 0), let v = stack.last else { throw bad("empty stack at offset \(pos)") }
            return v
        }
        func popMark() throws -> [PickleValue] {
            guard let mark = marks.popLast() else { throw bad("no MARK at offset \(pos)") }
            defer { stack.removeSubrange(mark...) }
            return Array(stack[mark...])
        }
        func newList(_ items: [PickleValue]) -> PickleList {
            let l = PickleList(items)
            lists.append(l)
            return l
        }
        func newDict() -> PickleDict {
            let d = PickleDict()
            dicts.append(d)
            return d
        }
        func setItems(_ items: [PickleValue]) throws {
            guard items.count % 2 == 0 else { throw bad("odd number of items for SETITEMS at offset \(pos)") }
            guard case .dict(let d) = try top() else { throw bad("SETITEM(S) on a non-dict at offset \(pos)") }
            for i in stride(from: 0, to: items.count, by: 2) { d.pairs.append((items[i], items[i + 1])) }
        }
        func global(module: String, name: String) throws -> PickleValue {
            guard let g = PickleGlobal(module: module, name: name) else {
                throw CheckpointError.refusedGlobal(source: source, name: "\(module).\(name)")
            }
            return .global(g)
        }

        // MARK: the machine

        func run() throws -> PickleValue {
            while true {
                let opAt = pos
                let op = try int(UInt8.self)
                switch op {
                case 0x80: // PROTO
                    let v = try int(UInt8.self)
                    guard v <= 5 else { throw bad("unsupported protocol \(v)") }
                case 0x95: _ = try int(UInt64.self) // FRAME: only a length hint
                case 0x2E: return try pop() // STOP
                case 0x28: marks.append(stack.count) // MARK
                case 0x30: _ = try pop() // POP
                case 0x31: _ = try popMark() // POP_MARK
                case 0x4E: stack.append(.none)
                case 0x88: stack.append(.bool(true))
                case 0x89: stack.append(.bool(false))
                case 0x4A: stack.append(.int(Int(try int(Int32.self)))) // BININT
                case 0x4B: stack.append(.int(Int(try int(UInt8.self)))) // BININT1
                case 0x4D: stack.append(.int(Int(try int(UInt16.self)))) // BININT2
                case 0x8A: // LONG1: little-endian two's complement
                    let n = Int(try int(UInt8.self))
                    guard n <= 8 else { throw bad("integer too large at offset \(opAt)") }
                    let raw = try take(n)
                    var v: UInt64 = 0
                    for (i, byte) in raw.enumerated() { v |= UInt64(byte) << (8 * UInt64(i)) }
                    if n > 0, n < 8, raw[n - 1] & 0x80 != 0 { v |= ~0 << (8 * UInt64(n)) } // sign-extend
                    stack.append(.int(Int(Int64(bitPattern: v))))
                case 0x47: // BINFLOAT: big-endian
                    stack.append(.float(Double(bitPattern: try int(UInt64.self).byteSwapped)))
                case 0x58: stack.append(.string(try string(count: UInt64(try int(UInt32.self))))) // BINUNICODE
                case 0x8C: stack.append(.string(try string(count: UInt64(try int(UInt8.self))))) // SHORT_BINUNICODE
                case 0x8D: stack.append(.string(try string(count: try int(UInt64.self)))) // BINUNICODE8
                case 0x29: stack.append(.tuple(newList([]))) // EMPTY_TUPLE
                case 0x5D: stack.append(.list(newList([]))) // EMPTY_LIST
                case 0x7D: stack.append(.dict(newDict())) // EMPTY_DICT
                case 0x74: stack.append(.tuple(newList(try popMark()))) // TUPLE
                case 0x85, 0x86, 0x87: // TUPLE1/2/3
                    var items = [PickleValue]()
                    for _ in 0..<Int(op - 0x84) { items.insert(try pop(), at: 0) }
                    stack.append(.tuple(newList(items)))
                case 0x6C: stack.append(.list(newList(try popMark()))) // LIST
                case 0x61, 0x65: // APPEND, APPENDS
                    let items = op == 0x61 ? [try pop()] : try popMark()
                    guard case .list(let l) = try top() else { throw bad("APPEND to a non-list at offset \(opAt)") }
                    l.items.append(contentsOf: items)
                case 0x64: // DICT
                    let items = try popMark()
                    stack.append(.dict(newDict()))
                    try setItems(items)
                case 0x73: // SETITEM
                    let value = try pop(), key = try pop()
                    try setItems([key, value])
                case 0x75: try setItems(try popMark()) // SETITEMS
                case 0x71: memo[Int(try int(UInt8.self))] = try top() // BINPUT
                case 0x72: memo[Int(try int(UInt32.self))] = try top() // LONG_BINPUT
                case 0x94: memo[memo.count] = try top() // MEMOIZE
                case 0x68, 0x6A: // BINGET, LONG_BINGET
                    let i = op == 0x68 ? Int(try int(UInt8.self)) : Int(try int(UInt32.self))
                    guard let v = memo[i] else { throw bad("memo \(i) unset at offset \(opAt)") }
                    stack.append(v)
                case 0x63: // GLOBAL "module\nname\n"
                    let module = try line(), name = try line()
                    stack.append(try global(module: module, name: name))
                case 0x93: // STACK_GLOBAL
                    guard case .string(let name) = try pop(), case .string(let module) = try pop() else {
                        throw bad("STACK_GLOBAL needs two strings at offset \(opAt)")
                    }
                    stack.append(try global(module: module, name: name))
                case 0x52: // REDUCE
                    let args = try pop(), callable = try pop()
                    stack.append(try reduce(callable, args, at: opAt))
                case 0x62: // BUILD: only the state of an OrderedDict (torch's _metadata), ignored
                    _ = try pop()
                    guard case .dict = try top() else { throw bad("BUILD on a non-dict at offset \(opAt)") }
                case 0x51: stack.append(try persistentLoad(try pop(), at: opAt)) // BINPERSID
                default:
                    throw bad("unsupported opcode 0x\(String(op, radix: 16)) at offset \(opAt)")
                }
            }
        }

        func reduce(_ callable: PickleValue, _ args: PickleValue, at opAt: Int) throws -> PickleValue {
            guard case .global(let g) = callable, case .tuple(let argList) = args else {
                throw bad("REDUCE of a \(callable.kind) with \(args.kind) arguments at offset \(opAt)")
            }
            let a = argList.items
            switch g {
            case .orderedDict:
                guard a.isEmpty else { throw bad("OrderedDict with arguments at offset \(opAt)") }
                return .dict(newDict())
            case .rebuildTensorV2:
                // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
                guard a.count == 6 || a.count == 7, case .storage(let storage) = a[0], case .int(let offset) = a[1],
                      let size = ints(a[2]), let stride = ints(a[3]), size.count == stride.count
                else { throw bad("bad _rebuild_tensor_v2 arguments at offset \(opAt)") }
                return .tensor(PickleTensor(storage: storage, offset: offset, size: size, stride: stride))
            case .storageType:
                throw bad("storage types cannot be called (offset \(opAt))")
            }
        }

        func ints(_ v: PickleValue) -> [Int]? {
            guard case .tuple(let t) = v else { return nil }
            var out = [Int]()
            for item in t.items {
                guard case .int(let i) = item else { return nil }
                out.append(i)
            }
            return out
        }

        func persistentLoad(_ pid: PickleValue, at opAt: Int) throws -> PickleValue {
            guard case .tuple(let t) = pid, t.items.count == 5, case .string("storage") = t.items[0],
                  case .global(.storageType(let dtype)) = t.items[1], case .string(let key) = t.items[2],
                  case .int(let numel) = t.items[4], numel >= 0
            else { throw bad("unsupported persistent id at offset \(opAt)") }
            return .storage(PickleStorage(dtype: dtype, key: key, numel: numel))
        }
    }
}
