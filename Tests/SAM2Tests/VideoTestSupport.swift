import Foundation
import XCTest

/// Helpers shared by the Video* tests: locating the shared clips, running the
/// ffmpeg CLI to make fixtures and independent references, temp folders.
enum VideoTestSupport {
    /// `<package root>/../shared/videos`, the package root being three levels up.
    static var sharedVideos: URL {
        URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
            .appendingPathComponent("shared/videos")
    }

    static func sharedClip(_ name: String) throws -> String {
        let path = sharedVideos.appendingPathComponent(name).path
        guard FileManager.default.fileExists(atPath: path) else {
            throw XCTSkip("shared clip \(name) not found at \(path); the shared video folder is not available here")
        }
        return path
    }

    static func executable(_ name: String) -> String? {
        let dirs = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
        for dir in dirs {
            let candidate = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    static func requireFFmpeg() throws -> String {
        guard let path = executable("ffmpeg") else {
            throw XCTSkip("the ffmpeg command-line tool is not on PATH; cannot generate test clips")
        }
        return path
    }

    /// Run a tool; returns (status, stdout). Stderr is kept for failure messages.
    @discardableResult
    static func run(_ tool: String, _ args: [String]) throws -> (status: Int32, stdout: Data, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = args
        // Stderr goes to a file so a chatty tool can never block on a full pipe
        // while we drain stdout.
        let errURL = FileManager.default.temporaryDirectory.appendingPathComponent("sam2-test-stderr-\(UUID().uuidString)")
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: errURL) }
        let errHandle = try FileHandle(forWritingTo: errURL)
        defer { try? errHandle.close() }
        let out = Pipe()
        process.standardOutput = out
        process.standardError = errHandle
        try process.run()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let errText = readTextFile(errURL.path)
        return (process.terminationStatus, outData, errText)
    }

    /// Run ffmpeg quietly and fail the test (with its stderr) if it fails.
    static func ffmpeg(_ args: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let tool = try requireFFmpeg()
        let result = try run(tool, ["-hide_banner", "-loglevel", "error", "-y"] + args)
        if result.status != 0 {
            XCTFail("ffmpeg \(args.joined(separator: " ")) failed: \(result.stderr)", file: file, line: line)
            throw XCTSkip("fixture generation failed")
        }
    }

    /// Does this ffmpeg build have the named encoder?
    static func hasEncoder(_ name: String) throws -> Bool {
        let tool = try requireFFmpeg()
        let result = try run(tool, ["-hide_banner", "-encoders"])
        let text = String(decoding: result.stdout, as: UTF8.self)
        return text.split(separator: "\n").contains { line in
            line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.map(String.init) == name
        }
    }

    /// The swscale flags the reader uses, for CLI references.
    static let exactFlags = "bicubic+full_chroma_int+accurate_rnd+full_chroma_inp"

    /// The first `frames` frames decoded by the ffmpeg CLI as raw RGB24
    /// (autorotation on, as by default), through `filter` or, by default, a
    /// same-size scale with the reader's swscale flags.
    static func cliRGB(_ path: String, frames: Int = 1, filter: String? = nil) throws -> [UInt8] {
        let tool = try requireFFmpeg()
        var args = ["-v", "error", "-i", path, "-frames:v", String(frames)]
        args += ["-vf", filter ?? "scale=flags=bicubic"]  // display frames: the CLI's own default conversion
        args += ["-pix_fmt", "rgb24", "-f", "rawvideo", "-"]
        let result = try run(tool, args)
        guard result.status == 0 else { throw XCTSkip("ffmpeg could not decode \(path): \(result.stderr)") }
        return [UInt8](result.stdout)
    }

    static func makeTempDir(_ label: String) throws -> String {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("sam2-video-tests-\(label)-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    static func meanAbsDiff(_ a: [UInt8], _ b: [UInt8]) -> Double {
        guard a.count == b.count, !a.isEmpty else { return .infinity }
        var total = 0
        for i in 0..<a.count { total += abs(Int(a[i]) - Int(b[i])) }
        return Double(total) / Double(a.count)
    }

    /// Resident set size in bytes from /proc/self/status (Linux), or nil.
    static func residentBytes() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count >= 2, let kb = Int(parts[1]) { return kb * 1024 }
        }
        return nil
    }
}

/// Read a (possibly empty) text file with POSIX calls: Foundation's readers leak a buffer on empty
/// files, which LeakSanitizer reports.
func readTextFile(_ path: String) -> String {
    guard let f = fopen(path, "rb") else { return "" }
    defer { fclose(f) }
    var bytes = [UInt8]()
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&chunk, 1, chunk.count, f)
        if n <= 0 { break }
        bytes += chunk[0..<n]
    }
    return String(decoding: bytes, as: UTF8.self)
}
