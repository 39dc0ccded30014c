#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A whole file mapped read-only into memory. Tensors are copied straight out of
/// the mapping, which is what lets a 156 MB checkpoint load in a fraction of a
/// second (a general-purpose zip library would first copy every entry out).
final class MappedFile {
    let path: String
    /// The file's bytes; empty (and without a base address) for an empty file.
    let bytes: UnsafeRawBufferPointer

    init(path: String) throws {
        func failure(_ what: String) -> CheckpointError {
            .cannotOpen(path: path, reason: "\(what): \(String(cString: strerror(errno)))")
        }
        self.path = path
        // Non-blocking: opening a FIFO for reading would otherwise wait for a writer forever.
        // (It is then refused below: only a regular file can be mapped.)
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw failure("open") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw failure("stat") }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw CheckpointError.cannotOpen(path: path, reason: "not a regular file")
        }
        let size = Int(info.st_size)
        guard size > 0 else {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        var flags = MAP_PRIVATE
        #if os(Linux)
        // Pre-fault the pages in one go: we read (nearly) all of the file anyway.
        flags |= MAP_POPULATE
        #endif
        guard let base = mmap(nil, size, PROT_READ, flags, fd, 0),
              base != UnsafeMutableRawPointer(bitPattern: -1) else { throw failure("mmap") }
        bytes = UnsafeRawBufferPointer(start: base, count: size)
    }

    deinit {
        if let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) }
    }
}

extension UnsafeRawBufferPointer {
    /// The little-endian integer at `offset`, or nil if it would read outside the buffer.
    func le<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T? {
        guard offset >= 0, offset <= count - MemoryLayout<T>.size else { return nil }
        return T(littleEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}

/// A minimal read-only ZIP reader, enough for `torch.save` archives: ZIP64
/// aware, stored (uncompressed) entries only, with zero-copy access to an
/// entry's bytes. Every offset and length is checked against the file size.
public final class ZipArchive {
    public struct Entry {
        public let name: String
        /// 0 = stored; anything else is compressed and cannot be read here.
        public let method: Int
        /// Uncompressed size in bytes.
        public let size: Int
        let compressedSize: Int
        let flags: UInt16
        let localHeaderOffset: Int
    }

    public var path: String { file.path }
    /// In central-directory order.
    public let entries: [Entry]
    private let index: [String: Int]
    let file: MappedFile

    public convenience init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    init(file: MappedFile) throws {
        self.file = file
        let path = file.path
        let b = file.bytes
        let n = b.count
        func bad(_ reason: String) -> CheckpointError { .badZip(path: path, reason: reason) }

        // The end-of-central-directory record is the last 22 bytes, unless a
        // comment (at most 65535 bytes) follows it: scan backwards for it.
        guard n >= 22 else { throw CheckpointError.notAZip(path: path) }
        var eocd = -1
        var p = n - 22
        while p >= max(0, n - 22 - 0xFFFF) {
            if b.le(UInt32.self, at: p) == 0x0605_4b50,
               let comment = b.le(UInt16.self, at: p + 20), p + 22 + Int(comment) <= n {
                eocd = p
                break
            }
            p -= 1
        }
        guard eocd >= 0,
              let disk = b.le(UInt16.self, at: eocd + 4), let cdDisk = b.le(UInt16.self, at: eocd + 6),
              let count16 = b.le(UInt16.self, at: eocd + 10),
              let cdSize32 = b.le(UInt32.self, at: eocd + 12), let cdOffset32 = b.le(UInt32.self, at: eocd + 16)
        else { throw CheckpointError.notAZip(path: path) }

        var entryCount = UInt64(count16), cdSize = UInt64(cdSize32), cdOffset = UInt64(cdOffset32)
        var multiDisk = disk != 0 || cdDisk != 0
        // ZIP64: a locator just before the EOCD points at the 64-bit record,
        // whose counts and offsets replace the saturated 16/32-bit ones.
        if eocd >= 20, b.le(UInt32.self, at: eocd - 20) == 0x0706_4b50 {
            guard let recordOffset = b.le(UInt64.self, at: eocd - 12),
                  recordOffset <= UInt64(n), let record = Int(exactly: recordOffset),
                  b.le(UInt32.self, at: record) == 0x0606_4b50,
                  let disk64 = b.le(UInt32.self, at: record + 16), let cdDisk64 = b.le(UInt32.self, at: record + 20),
                  let count64 = b.le(UInt64.self, at: record + 32),
                  let size64 = b.le(UInt64.self, at: record + 40), let offset64 = b.le(UInt64.self, at: record + 48)
            else { throw bad("bad ZIP64 end-of-central-directory record") }
            entryCount = count64; cdSize = size64; cdOffset = offset64
            multiDisk = disk64 != 0 || cdDisk64 != 0
        } else if count16 == 0xFFFF || cdSize32 == 0xFFFF_FFFF || cdOffset32 == 0xFFFF_FFFF {
            throw bad("ZIP64 sizes without a ZIP64 locator")
        }
        guard !multiDisk else { throw bad("multi-disk archives are not supported") }
        guard cdOffset <= UInt64(n), cdSize <= UInt64(n) - cdOffset else {
            throw CheckpointError.truncated(path: path, what: "central directory extends past the end of the file")
        }
        let cdStart = Int(cdOffset), cdEnd = Int(cdOffset + cdSize)
        // Each central-directory record takes at least 46 bytes: bounds the count.
        guard entryCount <= UInt64((cdEnd - cdStart) / 46) else {
            throw bad("\(entryCount) entries cannot fit in a \(cdSize)-byte central directory")
        }

        var entries = [Entry]()
        entries.reserveCapacity(Int(entryCount))
        var index = [String: Int]()
        var pos = cdStart
        for _ in 0..<Int(entryCount) {
            guard pos + 46 <= cdEnd, b.le(UInt32.self, at: pos) == 0x0201_4b50,
                  let flags = b.le(UInt16.self, at: pos + 8), let method = b.le(UInt16.self, at: pos + 10),
                  let csize32 = b.le(UInt32.self, at: pos + 20), let usize32 = b.le(UInt32.self, at: pos + 24),
                  let nameLen = b.le(UInt16.self, at: pos + 28), let extraLen = b.le(UInt16.self, at: pos + 30),
                  let commentLen = b.le(UInt16.self, at: pos + 32), let offset32 = b.le(UInt32.self, at: pos + 42)
            else { throw bad("bad central directory record at offset \(pos)") }
            let nameStart = pos + 46, extraStart = nameStart + Int(nameLen), extraEnd = extraStart + Int(extraLen)
            let next = extraEnd + Int(commentLen)
            guard next <= cdEnd else { throw bad("central directory record at offset \(pos) overruns the directory") }
            let name = String(decoding: UnsafeRawBufferPointer(rebasing: b[nameStart..<extraStart]), as: UTF8.self)

            var usize = UInt64(usize32), csize = UInt64(csize32), offset = UInt64(offset32)
            // ZIP64 extra field (id 1): 64-bit values for exactly those fields saturated above, in this order.
            var e = extraStart
            while e + 4 <= extraEnd, let id = b.le(UInt16.self, at: e), let len16 = b.le(UInt16.self, at: e + 2) {
                let fieldEnd = e + 4 + Int(len16)
                guard fieldEnd <= extraEnd else { throw bad("extra field of '\(name)' overruns its record") }
                if id == 1 {
                    var q = e + 4
                    func next64() throws -> UInt64 {
                        guard q + 8 <= fieldEnd, let v = b.le(UInt64.self, at: q) else {
                            throw bad("short ZIP64 extra field for '\(name)'")
                        }
                        q += 8
                        return v
                    }
                    if usize32 == 0xFFFF_FFFF { usize = try next64() }
                    if csize32 == 0xFFFF_FFFF { csize = try next64() }
                    if offset32 == 0xFFFF_FFFF { offset = try next64() }
                }
                e = fieldEnd
            }
            // The stored bytes must lie inside the file (that also keeps them within Int);
            // a compressed entry's uncompressed size may well exceed the file's.
            guard csize <= UInt64(n), offset < UInt64(n) else {
                throw CheckpointError.truncated(path: path, what: "entry '\(name)' lies past the end of the file")
            }
            guard index[name] == nil else { throw bad("duplicate entry '\(name)'") }
            index[name] = entries.count
            entries.append(Entry(name: name, method: Int(method), size: Int(clamping: usize), compressedSize: Int(csize),
                                 flags: flags, localHeaderOffset: Int(offset)))
            pos = next
        }
        self.entries = entries
        self.index = index
    }

    public func entry(named name: String) -> Entry? {
        index[name].map { entries[$0] }
    }

    /// Calls `body` with the entry's bytes inside the mapped file (no copy). The
    /// pointer is valid only during the call.
    public func withBytes<R>(of entry: Entry, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        try body(bytes(of: entry))
    }

    /// A copy of the entry's bytes.
    public func data(of entry: Entry) throws -> [UInt8] {
        try withBytes(of: entry) { Array($0) }
    }

    private func bytes(of entry: Entry) throws -> UnsafeRawBufferPointer {
        let b = file.bytes
        guard entry.flags & 1 == 0 else { throw CheckpointError.badZip(path: path, reason: "entry '\(entry.name)' is encrypted") }
        guard entry.method == 0 else {
            throw CheckpointError.compressedEntry(path: path, entry: entry.name, method: entry.method)
        }
        guard entry.compressedSize == entry.size else {
            throw CheckpointError.badZip(path: path, reason: "stored entry '\(entry.name)' has differing sizes")
        }
        // The local header repeats name and extra field (torch pads the extra field so
        // data is 64-byte aligned); its sizes may be zero, so those come from the directory.
        let h = entry.localHeaderOffset
        guard b.le(UInt32.self, at: h) == 0x0403_4b50,
              let nameLen = b.le(UInt16.self, at: h + 26), let extraLen = b.le(UInt16.self, at: h + 28) else {
            throw CheckpointError.badZip(path: path, reason: "bad local header for entry '\(entry.name)'")
        }
        let start = h + 30 + Int(nameLen) + Int(extraLen)
        guard start <= b.count, entry.size <= b.count - start else {
            throw CheckpointError.truncated(path: path, what: "entry '\(entry.name)' extends past the end of the file")
        }
        return UnsafeRawBufferPointer(rebasing: b[start..<(start + entry.size)])
    }
}
