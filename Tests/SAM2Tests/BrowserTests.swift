import Foundation
import XCTest
import SAM2
import SAM2Checkpoint
import SAM2Session

/// The web page in a real browser (headless Chromium through selenium, Tests/Browser): a click,
/// tracking, a correction on a later frame with undo, tracking again; the masks the page
/// received must equal the library's for the same actions, bit for bit.
///
/// Needs python3 with selenium, chromium and chromedriver: `.ci/run` installs them and sets
/// SAM2_REQUIRE_BROWSER=1, which turns their absence into a failure instead of a skip.
final class BrowserTests: XCTestCase {
    static func python(with module: String) throws -> String {
        let required = ProcessInfo.processInfo.environment["SAM2_REQUIRE_BROWSER"] == "1"
        var candidates = [String]()
        if let p = ProcessInfo.processInfo.environment["SAM2_TEST_PYTHON"] { candidates.append(p) }
        if let p = VideoTestSupport.executable("python3") { candidates.append(p) }
        for python in candidates {
            if let r = try? VideoTestSupport.run(python, ["-c", "import \(module)"]), r.status == 0 { return python }
        }
        let message = "no python3 with \(module) (set SAM2_TEST_PYTHON; .ci/run installs it)"
        if required { XCTFail(message) }
        throw XCTSkip(message)
    }

    func testPageMasksEqualTheLibrarys() throws {
        let python = try Self.python(with: "selenium")
        let required = ProcessInfo.processInfo.environment["SAM2_REQUIRE_BROWSER"] == "1"
        guard VideoTestSupport.executable("chromium") != nil || VideoTestSupport.executable("google-chrome") != nil else {
            if required { XCTFail("chromium is not installed") }
            throw XCTSkip("chromium is not installed")
        }
        let server = try ServerProcess()
        defer { _ = server.stop() }
        let script = TestPaths.packageRoot.appendingPathComponent("Tests/Browser/page_session.py").path
        var args = [script, server.base + "/", Robust.clip]
        if let shot = ProcessInfo.processInfo.environment["SAM2_SCREENSHOT"] { args.append(shot) }
        let run = try VideoTestSupport.run(python, args)
        XCTAssertEqual(run.status, 0, "the page script failed: \(run.stderr.suffix(3000))\nserver: \(server.log.suffix(2000))")
        guard run.status == 0,
              let page = try JSONSerialization.jsonObject(with: run.stdout) as? [String: Any],
              let session = page["session"] as? [String: Any],
              let prompts = session["prompts"] as? [[String: Any]],
              let masks = page["masks"] as? [String: [[String: Any]]] else {
            return XCTFail("unexpected output: \(String(decoding: run.stdout, as: UTF8.self).prefix(500))")
        }
        XCTAssertTrue((page["status"] as? String)?.hasPrefix("Tracked 24 frames") == true, "\(page["status"] ?? "")")

        // The same actions through the library, with the coordinates the page sent.
        func points(_ frame: Int) -> [[Double]] { prompts.first { $0["frame_index"] as? Int == frame }?["points"] as? [[Double]] ?? [] }
        let f0 = points(0), f3 = points(3)
        XCTAssertEqual(f0.count, 1)
        XCTAssertEqual(f3.count, 2)
        XCTAssertEqual(f0.first.map { [$0[0].rounded(), $0[1].rounded()] }, [100, 80], "the click landed elsewhere")
        let model = try SAM2Model(config: try SAM2Config.load(path: Robust.config), checkpointPath: Robust.checkpoint)
        let library = try TrackingSession(model: model, video: Robust.clip)
        try library.addPoints(frame: 0, objectId: 1, points: [(f0[0][0], f0[0][1])], labels: [1], clearOldPoints: false)
        try library.propagate(direction: .both)
        try library.addPoints(frame: 3, objectId: 1, points: [(f3[0][0], f3[0][1])], labels: [1], clearOldPoints: false)
        try library.addPoints(frame: 3, objectId: 1, points: [(f3[1][0], f3[1][1])], labels: [0], clearOldPoints: false)
        try library.propagate(direction: .both)

        XCTAssertEqual(masks.count, 24, "the page did not receive every frame")
        for frame in 0..<24 {
            let expected = try library.store.masks(frame: frame)
            let received = masks[String(frame)] ?? []
            XCTAssertEqual(received.map { $0["object_id"] as? Int }, expected?.objectIds ?? [], "frame \(frame)")
            let counts = received.map { ($0["mask"] as? [String: Any])?["counts"] as? String }
            XCTAssertEqual(counts, expected?.objects.map(\.counts) ?? [], "frame \(frame): the page's mask differs from the library's")
        }
    }
}
