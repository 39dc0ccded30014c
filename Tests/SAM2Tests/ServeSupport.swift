import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import XCTest
@testable import SAM2Checkpoint

/// A `sam2 serve` process on a free loopback port, with the committed test model, and a small
/// synchronous HTTP client for it.
final class ServerProcess {
    let base: String
    private let process: Process
    private let finish: () -> Robust.Run

    init(_ extra: [String] = []) throws {
        let (process, finish) = try Robust.launch(["serve", "--port", "0"] + Robust.model + extra)
        self.process = process
        self.finish = finish
        // The first line of stdout names the address; the log file is read until it appears.
        var address: String?
        let deadline = Date().addingTimeInterval(60)
        while address == nil && Date() < deadline && process.isRunning {
            Thread.sleep(forTimeInterval: 0.05)
            address = ServerProcess.findAddress(in: process)
        }
        guard let address else {
            process.terminate()
            let run = finish()
            throw XCTSkip("sam2 serve did not start: \(run.stderr.suffix(400))")
        }
        base = address
    }

    /// The stdout file of a launched process (Robust.launch hands it a FileHandle on a file).
    private static func findAddress(in process: Process) -> String? {
        guard let handle = process.standardOutput as? FileHandle else { return nil }
        let path = "/proc/self/fd/\(handle.fileDescriptor)"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8),
              let range = text.range(of: #"http://[0-9.]+:[0-9]+"#, options: .regularExpression) else { return nil }
        return String(text[range])
    }

    /// What the server printed on stderr so far.
    var log: String {
        guard let handle = process.standardError as? FileHandle else { return "" }
        return (try? String(contentsOfFile: "/proc/self/fd/\(handle.fileDescriptor)", encoding: .utf8)) ?? ""
    }

    func stop() -> Robust.Run {
        if process.isRunning { process.interrupt() }
        return finish()
    }

    struct Reply {
        var status: Int
        var headers: [String: String]
        var body: Data
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] ?? [:] }
        var error: String { json["error"] as? String ?? "" }
        var field: String? { json["field"] as? String }
    }

    func request(_ method: String, _ path: String, json: Any? = nil, body: Data? = nil,
                 headers: [String: String] = [:], timeout: TimeInterval = 120) -> Reply {
        var r = URLRequest(url: URL(string: base + path)!, timeoutInterval: timeout)
        r.httpMethod = method
        if let json {
            r.httpBody = try! JSONSerialization.data(withJSONObject: json, options: [.fragmentsAllowed])
            r.setValue("application/json", forHTTPHeaderField: "Content-Type")
        } else if let body {
            r.httpBody = body
        }
        for (k, v) in headers { r.setValue(v, forHTTPHeaderField: k) }
        final class Box: @unchecked Sendable { var reply = Reply(status: 0, headers: [:], body: Data()) }
        let box = Box()
        let done = DispatchSemaphore(value: 0)
        URLSession.shared.dataTask(with: r) { data, response, error in
            if let http = response as? HTTPURLResponse {
                box.reply.status = http.statusCode
                for (k, v) in http.allHeaderFields { box.reply.headers[("\(k)").lowercased()] = "\(v)" }
            }
            box.reply.body = data ?? Data(error.map { "\($0)".utf8 } ?? "".utf8)
            done.signal()
        }.resume()
        done.wait()
        return box.reply
    }

    /// The JSON parts of a `multipart/x-savi-stream` body.
    static func parts(_ body: Data) -> [[String: Any]] {
        var out = [[String: Any]]()
        let bytes = [UInt8](body)
        var i = 0
        let separator: [UInt8] = [13, 10, 13, 10]
        while i < bytes.count {
            guard let headerEnd = find(separator, in: bytes, from: i) else { break }
            let head = String(decoding: bytes[i..<headerEnd], as: UTF8.self)
            guard let r = head.range(of: #"Content-Length: ([0-9]+)"#, options: .regularExpression),
                  let n = Int(head[r].split(separator: " ").last!) else { break }
            let start = headerEnd + 4
            let json = Data(bytes[start..<(start + n)])
            out.append((try? JSONSerialization.jsonObject(with: json)) as? [String: Any] ?? [:])
            i = start + n + 2
        }
        return out
    }

    private static func find(_ pattern: [UInt8], in bytes: [UInt8], from: Int) -> Int? {
        guard bytes.count >= pattern.count else { return nil }
        var i = from
        while i + pattern.count <= bytes.count {
            if Array(bytes[i..<(i + pattern.count)]) == pattern { return i }
            i += 1
        }
        return nil
    }

    /// Starts a session on the committed clip; its id.
    func startSession(_ path: String = Robust.clip) throws -> String {
        let r = request("POST", "/api/sessions", json: ["path": path])
        guard r.status == 201, let id = r.json["session_id"] as? String else {
            XCTFail("cannot start a session: \(r.status) \(String(decoding: r.body, as: UTF8.self)); server log: \(log.suffix(30000))")
            throw XCTSkip("no session")
        }
        return id
    }
}
