import Foundation
import XCTest
@testable import SAM2Checkpoint
import SAM2
import SAM2Video

/// `sam2 serve` over loopback, with the committed micro model: a scripted session gives the
/// same masks as `sam2 track` with the same prompts; every endpoint works; every malformed
/// request gets a 4xx JSON error naming the field; limits, expiry and the token hold.
final class ServeTests: XCTestCase {
    static var shared: ServerProcess?
    var server: ServerProcess { get throws { try Self.sharedServer() } }
    var tmp = ""

    static func sharedServer() throws -> ServerProcess {
        if let shared { return shared }
        let s = try ServerProcess(["--max-sessions", "3", "--max-upload-mb", "1"])
        shared = s
        return s
    }

    override class func tearDown() {
        if let shared {
            let run = shared.stop()
            // Stopped by SIGINT: a clean exit, and nothing on stderr but warnings.
            XCTAssertEqual(run.status, 0, "sam2 serve: \(run.stderr.suffix(2000))")
        }
        shared = nil
    }

    override func setUpWithError() throws { tmp = try Robust.tempDir("serve") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: tmp) }

    func close(_ id: String) throws { _ = try server.request("DELETE", "/api/sessions/\(id)") }

    /// The session of the `sam2 track` quick form with a correction, over HTTP.
    func testScriptedSessionEqualsTrack() throws {
        let s = try server
        let id = try s.startSession()
        defer { try? close(id) }
        var t0 = Date()
        let click = s.request("POST", "/api/sessions/\(id)/add_points",
                              json: ["frame_index": 0, "object_id": 1, "points": [[100, 80]], "labels": [1]])
        let clickMs = Date().timeIntervalSince(t0) * 1000
        XCTAssertEqual(click.status, 200, click.error)
        let first = ServerProcess.parts(s.request("POST", "/api/sessions/\(id)/propagate_in_video", json: [:]).body)
        XCTAssertEqual(first.count, 25)  // 24 frames and the closing part
        XCTAssertEqual(first.last?["done"] as? Bool, true)
        XCTAssertEqual(first.last?["cancelled"] as? Bool, false)
        XCTAssertEqual(first.dropLast().map { $0["frame_index"] as? Int }, Array(0..<24))

        // A correction on frame 3 (normalised coordinates, as the official demo sends them).
        t0 = Date()
        let fix = s.request("POST", "/api/sessions/\(id)/add_points",
                            json: ["frame_index": 3, "object_id": 1, "points": [[120.0 / 480, 90.0 / 270], [50.0 / 480, 50.0 / 270]],
                                   "labels": [1, 0], "normalized": true])
        let correctionMs = Date().timeIntervalSince(t0) * 1000
        XCTAssertEqual(fix.status, 200, fix.error)
        let second = ServerProcess.parts(s.request("POST", "/api/sessions/\(id)/propagate_in_video", json: ["direction": "forward"]).body)
        XCTAssertEqual(second.count, 25)
        print(String(format: "click -> mask over HTTP: %.0f ms (first click), %.0f ms (correction, frame already encoded)", clickMs, correctionMs))

        let zip = s.request("GET", "/api/sessions/\(id)/export?formats=palette,rle")
        XCTAssertEqual(zip.status, 200, zip.error)
        XCTAssertEqual(zip.headers["content-type"], "application/zip")
        try Data(zip.body).write(to: URL(fileURLWithPath: "\(tmp)/masks.zip"))
        let entries = Dictionary(uniqueKeysWithValues: try Robust.zipEntries("\(tmp)/masks.zip").map { ($0.name, $0.bytes) })

        for format in ["palette", "rle"] {
            let out = "\(tmp)/track-\(format)"
            let run = try Robust.sam2(["track", Robust.clip] + Robust.model
                                      + ["--frame", "0", "--point", "100,80", "--frame", "3", "--point", "120,90", "--neg", "50,50",
                                         "--format", format, "--output", out])
            XCTAssertEqual(run.status, 0, run.stderr)
            let files = try FileManager.default.subpathsOfDirectory(atPath: out).filter { !$0.hasPrefix(".") }.sorted()
            XCTAssertEqual(files.count, format == "palette" ? 24 : 1)
            for file in files {
                let expected = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(out)/\(file)")))
                XCTAssertEqual(entries["\(format)/\(file)"], expected, "\(format)/\(file) differs from sam2 track's")
            }
        }
        // The streamed masks of the last pass are the exported ones.
        let rle = try RLESink.read(path: "\(tmp)/track-rle/masks.json")
        for part in second.dropLast() {
            let f = part["frame_index"] as! Int
            let result = (part["results"] as! [[String: Any]])[0]
            let mask = result["mask"] as! [String: Any]
            XCTAssertEqual(try BinaryMask.fromRLE(counts: mask["counts"] as! String, height: 270, width: 480).bits, rle[f]?[1]?.bits, "frame \(f)")
        }
    }

    func testEveryEndpoint() throws {
        let s = try server
        let health = s.request("GET", "/api/health")
        XCTAssertEqual(health.status, 200)
        XCTAssertEqual(health.json["status"] as? String, "ok")

        let id = try s.startSession()
        var info = s.request("GET", "/api/sessions/\(id)").json
        XCTAssertEqual(info["frame_count"] as? Int, 24)
        XCTAssertEqual(info["width"] as? Int, 480)
        XCTAssertEqual(info["height"] as? Int, 270)
        XCTAssertEqual(info["can_undo"] as? Bool, false)

        let jpeg = s.request("GET", "/api/sessions/\(id)/frames/5")
        XCTAssertEqual(jpeg.status, 200)
        XCTAssertEqual(jpeg.headers["content-type"], "image/jpeg")
        XCTAssertEqual(Array(jpeg.body.prefix(3)), [0xFF, 0xD8, 0xFF])
        XCTAssertEqual(s.request("GET", "/api/sessions/\(id)/frames/5.jpg").body, jpeg.body)

        XCTAssertEqual(s.request("GET", "/api/sessions/\(id)/masks/4").json["results"] as? [Any] as? [Int], [])

        // A box for object 1, a mask for object 2 (as RLE runs), then undo the mask.
        let box = s.request("POST", "/api/sessions/\(id)/add_points", json: ["frame_index": 2, "object_id": 1, "box": [60, 40, 220, 200]])
        XCTAssertEqual(box.status, 200, box.error)
        var bits = [UInt8](repeating: 0, count: 480 * 270)
        for y in 100..<180 { for x in 300..<400 { bits[y * 480 + x] = 1 } }
        let counts = BinaryMask(width: 480, height: 270, bits: bits).rleCounts()
        let mask = s.request("POST", "/api/sessions/\(id)/add_mask",
                             json: ["frame_index": 2, "object_id": 2, "mask": ["size": [270, 480], "counts": counts]])
        XCTAssertEqual(mask.status, 200, mask.error)
        XCTAssertEqual((mask.json["results"] as? [[String: Any]])?.map { $0["object_id"] as? Int }, [1, 2])
        info = s.request("GET", "/api/sessions/\(id)").json
        XCTAssertEqual(info["objects"] as? [Int], [1, 2])
        XCTAssertEqual((info["prompts"] as? [[String: Any]])?.count, 2)
        let undo = s.request("POST", "/api/sessions/\(id)/undo")
        XCTAssertEqual(undo.json["undone"] as? Bool, true)
        XCTAssertEqual(undo.json["objects"] as? [Int], [1])
        XCTAssertEqual((s.request("GET", "/api/sessions/\(id)/masks/2").json["results"] as? [[String: Any]])?.count, 1)

        // Both directions from frame 2: 22 forward, 3 backward.
        let both = ServerProcess.parts(s.request("POST", "/api/sessions/\(id)/propagate_in_video",
                                                 json: ["direction": "both", "start_frame_index": 2]).body)
        XCTAssertEqual(both.dropLast().map { $0["frame_index"] as! Int }, Array(2..<24) + [2, 1, 0])
        XCTAssertEqual((s.request("GET", "/api/sessions/\(id)/masks/23").json["results"] as? [[String: Any]])?.count, 1)
        let limited = ServerProcess.parts(s.request("POST", "/api/sessions/\(id)/propagate_in_video",
                                                    json: ["start_frame_index": 10, "max_frame_num_to_track": 3]).body)
        XCTAssertEqual(limited.dropLast().map { $0["frame_index"] as! Int }, [10, 11, 12, 13])

        // Nothing running: cancel says so.
        XCTAssertEqual(s.request("POST", "/api/sessions/\(id)/cancel_propagate_in_video").json["cancelled"] as? Bool, false)

        let clear = s.request("POST", "/api/sessions/\(id)/clear_points_in_frame", json: ["frame_index": 2, "object_id": 1])
        XCTAssertEqual(clear.status, 200, clear.error)
        XCTAssertEqual((s.request("GET", "/api/sessions/\(id)").json["prompts"] as? [Any])?.count, 0)
        XCTAssertEqual(s.request("POST", "/api/sessions/\(id)/undo").json["undone"] as? Bool, true)

        // Export every format.
        let zip = s.request("GET", "/api/sessions/\(id)/export?yolo_tolerance=2")
        XCTAssertEqual(zip.status, 200, zip.error)
        XCTAssertTrue(zip.headers["content-disposition"]?.contains("synth-masks.zip") == true)
        try zip.body.write(to: URL(fileURLWithPath: "\(tmp)/all.zip"))
        let names = Set(try Robust.zipEntries("\(tmp)/all.zip").map(\.name))
        for name in ["png/1/00000.png", "png/1/00023.png", "palette/00000.png", "rle/masks.json", "sav/001/00000.png",
                     "yolo/00000.txt", "yolo/classes.txt"] {
            XCTAssertTrue(names.contains(name), "\(name) missing from the export: \(names.sorted().prefix(8))")
        }

        let removed = s.request("POST", "/api/sessions/\(id)/remove_object", json: ["object_id": 1])
        XCTAssertEqual(removed.json["objects"] as? [Int], [])
        XCTAssertEqual((s.request("GET", "/api/sessions/\(id)/masks/23").json["results"] as? [Any])?.count, 0)
        _ = s.request("POST", "/api/sessions/\(id)/undo")
        let reset = s.request("POST", "/api/sessions/\(id)/clear_points_in_video")
        XCTAssertEqual(reset.json["objects"] as? [Int], [])

        XCTAssertEqual(s.request("DELETE", "/api/sessions/\(id)").json["closed"] as? Bool, true)
        XCTAssertEqual(s.request("GET", "/api/sessions/\(id)").status, 404)
        XCTAssertEqual(s.request("DELETE", "/api/sessions/\(id)").status, 404)

        // The page and the API document.
        let page = s.request("GET", "/")
        XCTAssertEqual(page.status, 200)
        XCTAssertTrue(String(decoding: page.body, as: UTF8.self).contains("<canvas id=\"canvas\""))
        XCTAssertEqual(s.request("GET", "/app.js").status, 200)
        XCTAssertEqual(s.request("GET", "/style.css").status, 200)
        let spec = s.request("GET", "/openapi.json")
        XCTAssertEqual(spec.json["openapi"] as? String, "3.0.3")
        let committed = try Data(contentsOf: TestPaths.packageRoot.appendingPathComponent("Sources/SAM2Server/Web/openapi.json"))
        XCTAssertEqual(spec.body, committed)
    }

    func testUploadAndItsLimits() throws {
        let s = try server
        let clip = try Data(contentsOf: URL(fileURLWithPath: Robust.clip))
        let up = s.request("POST", "/api/sessions/upload?name=my%20clip.mp4", body: clip)
        XCTAssertEqual(up.status, 201, String(decoding: up.body, as: UTF8.self))
        guard up.status == 201 else { return }
        XCTAssertEqual(up.json["frame_count"] as? Int, 24)
        XCTAssertEqual(up.json["name"] as? String, "my clip.mp4")
        let id = up.json["session_id"] as! String
        XCTAssertEqual(s.request("GET", "/api/sessions/\(id)/frames/23").status, 200)
        try close(id)

        func refused(_ r: ServerProcess.Reply, _ status: Int, _ text: String, field: String? = nil, line: UInt = #line) {
            XCTAssertEqual(r.status, status, String(decoding: r.body, as: UTF8.self), line: line)
            XCTAssertTrue(r.error.contains(text), "'\(r.error)' does not say '\(text)'", line: line)
            if let field { XCTAssertEqual(r.field, field, line: line) }
        }
        refused(s.request("POST", "/api/sessions/upload", body: Data()), 400, "empty upload", field: "body")
        refused(s.request("POST", "/api/sessions/upload?name=x.mp4", body: Data(repeating: 7, count: 5000)), 400, "cannot open the video", field: "video")
        refused(s.request("POST", "/api/sessions/upload", body: Data(repeating: 0, count: 1_200_000)), 413, "larger than 1 MiB", field: "body")
        // The server allows 3 sessions.
        let ids = try (0..<3).map { _ in try s.startSession() }
        refused(s.request("POST", "/api/sessions", json: ["path": Robust.clip]), 429, "3 sessions are open")
        for id in ids { try close(id) }
        XCTAssertEqual(s.request("GET", "/api/health").json["sessions"] as? Int, 0)
        // Uploads are deleted with their session.
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: NSTemporaryDirectory()).filter { $0.hasPrefix("sam2-upload-") }
        XCTAssertEqual(leftovers.count, 0, "\(leftovers)")
    }

    func testMalformedRequestsGetA4xxNamingTheField() throws {
        let s = try server
        let id = try s.startSession()
        defer { try? close(id) }
        let p = "/api/sessions/\(id)"
        let cases: [(method: String, path: String, json: Any?, body: Data?, status: Int, text: String, field: String?)] = [
            ("POST", "\(p)/add_points", nil, Data("{not json".utf8), 400, "not valid JSON", "body"),
            ("POST", "\(p)/add_points", [1, 2], nil, 400, "expected a JSON object", "body"),
            ("POST", "\(p)/add_points", ["frame_index": 0, "object_id": 1, "points": [[1, 1]], "labels": [1], "colour": "red"], nil, 400, "unknown field", "colour"),
            ("POST", "\(p)/add_points", ["object_id": 1, "points": [[1, 1]], "labels": [1]], nil, 400, "missing", "frame_index"),
            ("POST", "\(p)/add_points", ["frame_index": 24, "object_id": 1, "points": [[1, 1]], "labels": [1]], nil, 400, "out of range 0...23", "frame_index"),
            ("POST", "\(p)/add_points", ["frame_index": "0", "object_id": 1, "points": [[1, 1]], "labels": [1]], nil, 400, "expected an integer", "frame_index"),
            ("POST", "\(p)/add_points", ["frame_index": 1.5, "object_id": 1, "points": [[1, 1]], "labels": [1]], nil, 400, "expected an integer", "frame_index"),
            ("POST", "\(p)/add_points", ["frame_index": true, "object_id": 1, "points": [[1, 1]], "labels": [1]], nil, 400, "expected an integer", "frame_index"),
            ("POST", "\(p)/add_points", ["frame_index": 0, "object_id": -1, "points": [[1, 1]], "labels": [1]], nil, 400, "out of range", "object_id"),
            ("POST", "\(p)/add_points", ["frame_index": 0, "object_id": 1, "points": [[1]], "labels": [1]], nil, 400, "expected 2 numbers", "points[0]"),
            ("POST", "\(p)/add_points", ["frame_index": 0, "object_id": 1, "points": [[1, "a"]], "labels": [1]], nil, 400, "expected a number", "points[0][1]"),
            ("POST", "\(p)/add_points", ["frame_index": 0, "object_id": 1, "points": [[1, 1]], "labels": [2]], nil, 400, "expected 1 (positive) or 0", "labels[0]"),
            ("POST", "\(p)/add_points", ["frame_index": 0, "object_id": 1, "points": [[1, 1]], "labels": []], nil, 400, "0 labels for 1 points", "labels"),
            ("POST", "\(p)/add_points", ["frame_index": 0, "object_id": 1], nil, 400, "give points", "points"),
            ("POST", "\(p)/add_points", ["frame_index": 0, "object_id": 1, "box": [1, 2, 3]], nil, 400, "expected 4 numbers", "box"),
            ("POST", "\(p)/add_points", ["frame_index": 0, "object_id": 1, "points": [[1, 1]], "labels": [1], "clear_old_points": 1], nil, 400, "expected true or false", "clear_old_points"),
            ("POST", "\(p)/add_points", ["frame_index": 0, "object_id": 1, "points": [[5000, 1]], "labels": [1]], nil, 400, "outside", nil),
            ("POST", "\(p)/add_points", ["frame_index": 0, "object_id": 1, "points": [[10, 10]], "labels": [0]], nil, 400, "only negative", nil),
            ("POST", "\(p)/add_mask", ["frame_index": 0, "object_id": 1, "mask": "x"], nil, 400, "expected {", "mask"),
            ("POST", "\(p)/add_mask", ["frame_index": 0, "object_id": 1, "mask": ["size": [0, 5], "counts": "0"]], nil, 400, "1...8192", "mask.size"),
            ("POST", "\(p)/add_mask", ["frame_index": 0, "object_id": 1, "mask": ["size": [270, 480], "counts": "~~~"]], nil, 400, "invalid COCO RLE", "mask.counts"),
            ("POST", "\(p)/add_mask", ["frame_index": 0, "object_id": 1, "mask": ["size": [2, 2], "counts": [4]]], nil, 400, "empty", "mask"),
            ("POST", "\(p)/clear_points_in_frame", ["frame_index": 0, "object_id": 9], nil, 400, "no such object", nil),
            ("POST", "\(p)/remove_object", ["object_id": 9], nil, 400, "no such object", nil),
            ("POST", "\(p)/propagate_in_video", [:] as [String: Any], nil, 400, "no object has prompts", nil),
            ("POST", "\(p)/propagate_in_video", ["direction": "sideways"], nil, 400, "forward, backward or both", "direction"),
            ("POST", "\(p)/propagate_in_video", ["max_frame_num_to_track": -1], nil, 400, "out of range", "max_frame_num_to_track"),
            ("POST", "\(p)/undo", ["x": 1], nil, 400, "unknown field", "x"),
            ("GET", "\(p)/frames/24", nil, nil, 400, "not a frame of this video", "frame"),
            ("GET", "\(p)/frames/abc", nil, nil, 400, "not a frame", "frame"),
            ("GET", "\(p)/masks/-1", nil, nil, 400, "not a frame", "frame"),
            ("GET", "\(p)/export?formats=tiff", nil, nil, 400, "unknown format 'tiff'", "formats"),
            ("GET", "\(p)/export?yolo_tolerance=nan", nil, nil, 400, "0...100", "yolo_tolerance"),
            ("GET", "/api/sessions/nope/masks/0", nil, nil, 404, "no session nope", "session_id"),
            ("POST", "/api/sessions", ["path": "/no/such/video.mp4"], nil, 400, "no such file", "path"),
            ("POST", "/api/sessions", ["path": 5], nil, 400, "expected a string", "path"),
            ("POST", "/api/sessions", ["path": "/etc/hostname"], nil, 400, "cannot open the video", "video"),
            ("GET", "/api/nothing", nil, nil, 404, "no such endpoint", nil),
        ]
        for c in cases {
            let r = s.request(c.method, c.path, json: c.json, body: c.body)
            let what = "\(c.method) \(c.path) \(c.json.map { "\($0)" } ?? "")"
            XCTAssertEqual(r.status, c.status, "\(what): \(String(decoding: r.body, as: UTF8.self))")
            XCTAssertTrue(r.error.contains(c.text), "\(what): '\(r.error)' does not say '\(c.text)'")
            XCTAssertEqual(r.field, c.field, "\(what): field")
            XCTAssertTrue(r.headers["content-type"]?.hasPrefix("application/json") == true, what)
        }
        // None of that left a trace.
        let info = s.request("GET", p).json
        XCTAssertEqual(info["objects"] as? [Int], [])
        XCTAssertEqual(info["can_undo"] as? Bool, false)
    }

    func testCancelStopsTrackingAndAGoneClientCancelsToo() throws {
        // A 240-frame clip: the synth clip ten times over.
        let ffmpeg = try VideoTestSupport.requireFFmpeg()
        let long = "\(tmp)/long.mp4"
        let made = try VideoTestSupport.run(ffmpeg, ["-v", "error", "-stream_loop", "9", "-i", Robust.clip, "-c", "copy", long])
        XCTAssertEqual(made.status, 0, made.stderr)
        let s = try server
        let id = try s.startSession(long)
        defer { try? close(id) }
        XCTAssertEqual(s.request("POST", "/api/sessions/\(id)/add_points",
                                 json: ["frame_index": 0, "object_id": 1, "points": [[100, 80]], "labels": [1]]).status, 200)
        final class Box: @unchecked Sendable { var reply: ServerProcess.Reply? }
        let stream = Box()
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            stream.reply = s.request("POST", "/api/sessions/\(id)/propagate_in_video", json: [:])
            done.signal()
        }
        Thread.sleep(forTimeInterval: 1.0)
        XCTAssertEqual(s.request("POST", "/api/sessions/\(id)/cancel_propagate_in_video").json["cancelled"] as? Bool, true)
        done.wait()
        let parts = ServerProcess.parts(stream.reply!.body)
        XCTAssertEqual(parts.last?["cancelled"] as? Bool, true)
        XCTAssertGreaterThan(parts.count, 2)
        XCTAssertLessThan(parts.count, 200)
        // The frames it did are kept; the session goes on.
        let frames = parts.count - 1
        XCTAssertEqual((s.request("GET", "/api/sessions/\(id)/masks/\(frames - 1)").json["results"] as? [Any])?.count, 1)
        XCTAssertEqual((s.request("GET", "/api/sessions/\(id)/masks/\(frames + 5)").json["results"] as? [Any])?.count, 0)
    }

    func testIdleSessionsExpireAndTokenAndVideoRoot() throws {
        let root = "\(tmp)/videos"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Robust.clip, toPath: "\(root)/synth.mp4")
        let s = try ServerProcess(["--idle-timeout", "1", "--token", "s3cret", "--video-root", root])
        defer { _ = s.stop() }
        let auth = ["Authorization": "Bearer s3cret"]
        let denied = s.request("GET", "/api/health")
        XCTAssertEqual(denied.status, 401)
        XCTAssertEqual(denied.field, "Authorization")
        XCTAssertEqual(s.request("GET", "/api/health", headers: ["Authorization": "Bearer wrong"]).status, 401)
        XCTAssertEqual(s.request("GET", "/", headers: [:]).status, 200)  // the page itself loads, then asks for the token
        XCTAssertEqual(s.request("GET", "/api/health", headers: auth).status, 200)

        let outside = s.request("POST", "/api/sessions", json: ["path": Robust.clip], headers: auth)
        XCTAssertEqual(outside.status, 403, outside.error)
        let traversal = s.request("POST", "/api/sessions", json: ["path": "\(root)/../../\(Robust.clip)"], headers: auth)
        XCTAssertEqual(traversal.status, 403, traversal.error)
        let started = s.request("POST", "/api/sessions", json: ["path": "\(root)/synth.mp4"], headers: auth)
        XCTAssertEqual(started.status, 201, started.error)
        let id = started.json["session_id"] as! String
        Thread.sleep(forTimeInterval: 2.5)
        let gone = s.request("GET", "/api/sessions/\(id)", headers: auth)
        XCTAssertEqual(gone.status, 404, "an idle session did not expire")
        XCTAssertEqual(s.request("GET", "/api/health", headers: auth).json["sessions"] as? Int, 0)
    }
}
