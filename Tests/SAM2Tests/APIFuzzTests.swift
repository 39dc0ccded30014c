import Foundation
import XCTest

/// Schemathesis (PyPI) fuzzes the whole API from its OpenAPI document against a live server:
/// no request may get a 5xx, and the server must still be up afterwards. The session id in the
/// document is pinned to a live session with an object on it, so the generated requests reach
/// the engine instead of stopping at "no such session".
///
/// `.ci/run` installs schemathesis and sets SAM2_REQUIRE_BROWSER=1 (which also requires this).
final class APIFuzzTests: XCTestCase {
    func testSchemathesisFindsNoServerErrors() throws {
        let python = try BrowserTests.python(with: "schemathesis")
        let st = URL(fileURLWithPath: python).deletingLastPathComponent().appendingPathComponent("st").path
        guard FileManager.default.isExecutableFile(atPath: st) else {
            if ProcessInfo.processInfo.environment["SAM2_REQUIRE_BROWSER"] == "1" { XCTFail("no st next to \(python)") }
            throw XCTSkip("schemathesis' st is not next to \(python)")
        }
        let tmp = try Robust.tempDir("fuzz")
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        let server = try ServerProcess(["--max-sessions", "6", "--max-upload-mb", "4"])
        defer { _ = server.stop() }
        let id = try server.startSession()
        XCTAssertEqual(server.request("POST", "/api/sessions/\(id)/add_points",
                                      json: ["frame_index": 0, "object_id": 1, "points": [[100, 80]], "labels": [1]]).status, 200)

        // The committed document, with session_id pinned.
        let specPath = TestPaths.packageRoot.appendingPathComponent("Sources/SAM2Server/Web/openapi.json").path
        var spec = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: specPath))) as! [String: Any]
        var paths = spec["paths"] as! [String: [String: Any]]
        for (path, methods) in paths {
            var edited = methods
            for (method, op) in methods {
                guard var op = op as? [String: Any], let params = op["parameters"] as? [[String: Any]] else { continue }
                op["parameters"] = params.map { p -> [String: Any] in
                    guard p["name"] as? String == "session_id" else { return p }
                    var pinned = p
                    pinned["schema"] = ["type": "string", "enum": [id]]
                    return pinned
                }
                edited[method] = op
            }
            paths[path] = edited
        }
        spec["paths"] = paths
        let pinned = "\(tmp)/openapi.json"
        try JSONSerialization.data(withJSONObject: spec).write(to: URL(fileURLWithPath: pinned))

        let run = try VideoTestSupport.run(st, ["run", pinned, "--url", server.base, "--checks", "not_a_server_error",
                                                "--exclude-operation-id", "closeSession", "--max-examples", "30",
                                                "--seed", "20261203", "--workers", "1", "--no-color"])
        let out = String(decoding: run.stdout, as: UTF8.self)
        let summary = out.split(separator: "\n").first { $0.range(of: #"^\s*[0-9]+ generated"#, options: .regularExpression) != nil }
            ?? "no summary"
        print("schemathesis: \(summary.trimmingCharacters(in: .whitespaces))")
        XCTAssertEqual(run.status, 0, "schemathesis found problems:\n\(out.suffix(4000))\n\(run.stderr.suffix(1000))")
        let generated = summary.split(separator: " ").compactMap { Int($0) }.first ?? 0
        XCTAssertGreaterThan(generated, 500, "too few requests to mean anything: \(summary)")
        XCTAssertEqual(server.request("GET", "/api/health").status, 200, "the server did not survive: \(server.log.suffix(3000))")
    }
}
