import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import SAM2
import SAM2Session
import SAM2Video
import ZIPFoundation

/// `sam2 serve`: the session engine over HTTP, a JSON API modelled on the official demo's
/// operations (startSession, addPoints, clearPointsInFrame, clearPointsInVideo, removeObject,
/// propagateInVideo streamed as `multipart/x-savi-stream`, cancelPropagateInVideo, closeSession),
/// plus undo, masks and frames for display, and export. `openapi.json` documents all of it.
public struct SAM2Server {
    public var host = "127.0.0.1"
    public var port = 8765
    public var token: String?
    public var limits = ServeLimits()
    let manager: SessionManager

    public init(model: SAM2Model, modelName: String, limits: ServeLimits = ServeLimits()) {
        self.limits = limits
        manager = SessionManager(model: model, modelName: modelName, limits: limits)
    }

    /// Serves until the process is stopped (SIGINT / SIGTERM end it gracefully). `onListening`
    /// gets the bound address (port 0 picks a free one).
    public func run(onListening: @escaping @Sendable (String) -> Void = { _ in }) async throws {
        let router = Router()
        router.add(middleware: JSONErrorMiddleware())
        if let token { router.add(middleware: BearerTokenMiddleware(token: token)) }
        routes(router)
        var logger = Logger(label: "sam2.serve")
        logger.logLevel = .warning
        let manager = self.manager
        let app = Application(router: router,
                              configuration: .init(address: .hostname(host, port: port), serverName: "sam2"),
                              onServerRunning: { channel in
                                  let address = channel.localAddress
                                  onListening("http://\(address?.ipAddress ?? "?"):\(address?.port ?? 0)")
                              },
                              logger: logger)
        // Idle sessions are closed on a timer.
        let sweeper = Task.detached {
            while !Task.isCancelled {
                try? await Task.sleep(nanoseconds: UInt64(max(0.2, min(5, manager.limits.idleTimeout / 4)) * 1e9))
                for id in manager.expire() { logger.warning("session \(id) expired (idle)") }
            }
        }
        defer { sweeper.cancel(); manager.closeAll() }
        try await app.runService()
    }

    // MARK: routes

    func routes(_ router: Router<BasicRequestContext>) {
        let manager = self.manager
        let limits = self.limits

        router.get("/") { _, _ in try WebFiles.response("index.html") }
        router.get("/app.js") { _, _ in try WebFiles.response("app.js") }
        router.get("/style.css") { _, _ in try WebFiles.response("style.css") }
        router.get("/openapi.json") { _, _ in try WebFiles.response("openapi.json") }

        router.get("/api/health") { _, _ in
            jsonResponse(["status": "ok", "model": manager.modelName, "sessions": manager.count,
                          "max_sessions": limits.maxSessions, "image_size": manager.model.imageSize])
        }

        // startSession on a file the server can read.
        router.post("/api/sessions") { request, context in
            let f = try JSONFields(try await request.body.collect(upTo: 1 << 16), allowed: ["path", "name"])
            let path = try f.string("path")
            try checkServerPath(path, root: limits.videoRoot)
            let served = try await manager.open(path: path, name: try f.optionalString("name") ?? (path as NSString).lastPathComponent,
                                                ownedFile: nil)
            return jsonResponse(served.info, status: .created)
        }

        // startSession on an uploaded video (the request body is the file).
        router.post("/api/sessions/upload") { request, context in
            let name = request.uri.queryParameters["name"].map(String.init) ?? "upload"
            let ext = (name as NSString).pathExtension.filter { $0.isLetter || $0.isNumber }.prefix(8)
            let path = "\(NSTemporaryDirectory())/sam2-upload-\(UUID().uuidString)" + (ext.isEmpty ? "" : ".\(ext)")
            guard FileManager.default.createFile(atPath: path, contents: nil), let file = FileHandle(forWritingAtPath: path) else {
                throw APIError(.internalServerError, "cannot store the upload in \(NSTemporaryDirectory())")
            }
            var size = 0
            do {
                defer { try? file.close() }
                for try await chunk in request.body {
                    size += chunk.readableBytes
                    guard size <= limits.maxUploadBytes else {
                        throw APIError(.contentTooLarge, "the upload is larger than \(limits.maxUploadBytes >> 20) MiB (--max-upload-mb)", field: "body")
                    }
                    try file.write(contentsOf: Data(chunk.readableBytesView))
                }
            } catch {
                unlink(path)
                throw error
            }
            guard size > 0 else { unlink(path); throw APIError(.badRequest, "body: empty upload (send the video file as the body)", field: "body") }
            let served = try await manager.open(path: path, name: name, ownedFile: path)
            return jsonResponse(served.info, status: .created)
        }

        router.get("/api/sessions/:id") { _, context in
            jsonResponse(try manager.get(context).info)
        }

        // closeSession
        router.delete("/api/sessions/:id") { _, context in
            let served = try manager.close(try context.parameters.require("id"))
            return jsonResponse(["session_id": served.id, "closed": true])
        }

        router.get("/api/sessions/:id/frames/:frame") { _, context in
            let served = try manager.get(context)
            let frame = try frameParameter(context, served)
            let jpeg = try await withCheckedThrowingContinuation { (c: CheckedContinuation<[UInt8], Error>) in
                DispatchQueue.global().async { c.resume(with: Result { try served.display.jpeg(frame) }) }
            }
            return Response(status: .ok, headers: [.contentType: "image/jpeg", .cacheControl: "private, max-age=3600"],
                            body: ResponseBody(byteBuffer: ByteBuffer(bytes: jpeg)))
        }

        router.get("/api/sessions/:id/masks/:frame") { _, context in
            let served = try manager.get(context)
            let frame = try frameParameter(context, served)
            let masks = try await manager.run(served) { try served.session.store.masks(frame: frame) }
            return jsonResponse(masks.map(frameJSON) ?? ["frame_index": frame, "results": [Any]()])
        }

        // addPoints (and boxes): pixels, or 0-1 coordinates with "normalized": true as the demo sends them.
        router.post("/api/sessions/:id/add_points") { request, context in
            let served = try manager.get(context)
            let f = try JSONFields(try await request.body.collect(upTo: 1 << 20),
                                   allowed: ["frame_index", "object_id", "points", "labels", "box", "clear_old_points", "normalized"])
            let s = served.session
            let frame = try f.int("frame_index", in: 0...(s.frameCount - 1))
            let obj = try f.int("object_id", in: 0...Int(Int32.max))
            let normalized = try f.bool("normalized", default: false)
            let sx = normalized ? Double(s.width) : 1, sy = normalized ? Double(s.height) : 1
            let points = try (f.has("points") ? f.list("points") : []).enumerated().map { i, p -> (x: Double, y: Double) in
                let xy = try JSONFields.numbers(p, "points[\(i)]", count: 2)
                return (xy[0] * sx, xy[1] * sy)
            }
            let labels = try (f.has("labels") ? f.list("labels") : []).enumerated().map { i, l -> Int in
                guard let n = l as? NSNumber, !isJSONBool(n), n.doubleValue == 0 || n.doubleValue == 1 else {
                    throw APIError.badField("labels[\(i)]", "expected 1 (positive) or 0 (negative)")
                }
                return n.intValue
            }
            guard labels.count == points.count else {
                throw APIError.badField("labels", "\(labels.count) labels for \(points.count) points")
            }
            let box = try f.has("box") ? JSONFields.numbers(f.values["box"]!, "box", count: 4) : nil
            guard !points.isEmpty || box != nil else { throw APIError.badField("points", "give points (with labels) or a box") }
            let clearOld = try f.bool("clear_old_points", default: true)
            let masks = try await manager.run(served) {
                try predictorCall {
                    try s.addPoints(frame: frame, objectId: obj, points: points, labels: labels,
                                    box: box.map { ($0[0] * sx, $0[1] * sy, $0[2] * sx, $0[3] * sy) }, clearOldPoints: clearOld)
                }
            }
            return jsonResponse(frameJSON(masks))
        }

        // A mask prompt as COCO RLE ({"size": [h, w], "counts": "..."}, compressed or a list of runs).
        router.post("/api/sessions/:id/add_mask") { request, context in
            let served = try manager.get(context)
            let f = try JSONFields(try await request.body.collect(upTo: 16 << 20), allowed: ["frame_index", "object_id", "mask"])
            let s = served.session
            let frame = try f.int("frame_index", in: 0...(s.frameCount - 1))
            let obj = try f.int("object_id", in: 0...Int(Int32.max))
            guard let rle = f.values["mask"] as? [String: Any] else { throw APIError.badField("mask", "expected {\"size\": [h, w], \"counts\": ...}") }
            let size = try JSONFields.numbers(rle["size"] ?? NSNull(), "mask.size", count: 2).map(Int.init)
            guard (1...8192).contains(size[0]), (1...8192).contains(size[1]) else { throw APIError.badField("mask.size", "height and width must be 1...8192") }
            let mask: BinaryMask
            do {
                if let counts = rle["counts"] as? String {
                    mask = try BinaryMask.fromRLE(counts: counts, height: size[0], width: size[1])
                } else {
                    let runs = try JSONFields.numbers(rle["counts"] ?? NSNull(), "mask.counts")
                    guard runs.allSatisfy({ $0 >= 0 && $0 == $0.rounded() }) else { throw APIError.badField("mask.counts", "runs must be whole numbers ≥ 0") }
                    mask = try BinaryMask.fromRLE(counts: runs.map(Int.init), height: size[0], width: size[1])
                }
            } catch let e as APIError { throw e } catch {
                throw APIError.badField("mask.counts", "\(error)")
            }
            guard mask.bits.contains(where: { $0 != 0 }) else { throw APIError.badField("mask", "the mask is empty") }
            let masks = try await manager.run(served) {
                try predictorCall { try s.addMask(frame: frame, objectId: obj, mask: mask.bits, width: mask.width, height: mask.height) }
            }
            return jsonResponse(frameJSON(masks))
        }

        // clearPointsInFrame
        router.post("/api/sessions/:id/clear_points_in_frame") { request, context in
            let served = try manager.get(context)
            let f = try JSONFields(try await request.body.collect(upTo: 1 << 16), allowed: ["frame_index", "object_id"])
            let frame = try f.int("frame_index", in: 0...(served.session.frameCount - 1))
            let obj = try f.int("object_id")
            let masks = try await manager.run(served) { try predictorCall { try served.session.clearPrompts(frame: frame, objectId: obj) } }
            return jsonResponse(frameJSON(masks))
        }

        // clearPointsInVideo: every object, prompt and mask goes (undoable).
        router.post("/api/sessions/:id/clear_points_in_video") { request, context in
            let served = try manager.get(context)
            _ = try JSONFields(try await request.body.collect(upTo: 1 << 16), allowed: [])
            try await manager.run(served) { try served.session.reset() }
            return jsonResponse(served.info)
        }

        router.post("/api/sessions/:id/remove_object") { request, context in
            let served = try manager.get(context)
            let f = try JSONFields(try await request.body.collect(upTo: 1 << 16), allowed: ["object_id"])
            let obj = try f.int("object_id")
            try await manager.run(served) { try predictorCall { try served.session.removeObject(obj) } }
            return jsonResponse(served.info)
        }

        router.post("/api/sessions/:id/undo") { request, context in
            let served = try manager.get(context)
            _ = try JSONFields(try await request.body.collect(upTo: 1 << 16), allowed: [])
            let undone = try await manager.run(served) { try served.session.undo() }
            var body = served.info
            body["undone"] = undone
            return jsonResponse(body)
        }

        // propagateInVideo: one multipart part per frame as soon as it is tracked, then a last
        // part {"done": true, "cancelled": ...}. A client that goes away cancels it.
        router.post("/api/sessions/:id/propagate_in_video") { request, context in
            let served = try manager.get(context)
            let f = try JSONFields(try await request.body.collect(upTo: 1 << 16),
                                   allowed: ["start_frame_index", "direction", "max_frame_num_to_track"])
            let s = served.session
            let start = try f.optionalInt("start_frame_index", in: 0...(s.frameCount - 1))
            let maxFrames = try f.optionalInt("max_frame_num_to_track", in: 0...Int(Int32.max))
            let directionName = try f.optionalString("direction") ?? "forward"
            guard let direction = TrackingSession.Direction(rawValue: directionName) else {
                throw APIError.badField("direction", "expected forward, backward or both")
            }
            // Checked now, so that the error is a 400 and not a part of a 200 stream.
            let objects = try await manager.run(served) { s.objectIds }
            guard !objects.isEmpty else { throw APIError(.badRequest, "no object has prompts yet: add points first") }

            let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream()
            continuation.onTermination = { reason in if case .cancelled = reason { s.cancel() } }
            manager.start(served) {
                var frames = 0
                do {
                    let done = try s.propagate(from: start, direction: direction, maxFrames: maxFrames) { m in
                        frames += 1
                        served.touch()
                        continuation.yield(multipartPart(frameJSON(m)))
                    }
                    continuation.yield(multipartPart(["done": true, "cancelled": !done, "frames": frames]))
                } catch {
                    continuation.yield(multipartPart(["done": true, "cancelled": false, "frames": frames, "error": "\(error)"]))
                }
                continuation.finish()
            }
            return Response(status: .ok,
                             headers: [.contentType: "multipart/x-savi-stream; boundary=frame", .cacheControl: "no-store"],
                             body: ResponseBody(asyncSequence: stream))
        }

        // cancelPropagateInVideo: the running propagation stops after its current frame.
        router.post("/api/sessions/:id/cancel_propagate_in_video") { request, context in
            let served = try manager.get(context)
            _ = try JSONFields(try await request.body.collect(upTo: 1 << 16), allowed: [])
            return jsonResponse(["cancelled": served.session.cancel()])
        }

        // A zip of the masks in the formats asked for (default: all but the overlay video).
        router.get("/api/sessions/:id/export") { request, context in
            let served = try manager.get(context)
            let query = request.uri.queryParameters
            let names = (query["formats"].map(String.init) ?? "png,palette,rle,sav,yolo").split(separator: ",").map(String.init)
            var formats = [MaskFormat]()
            var overlay = false
            for n in names {
                if n == "overlay" { overlay = true; continue }
                guard let f = MaskFormat(rawValue: n) else {
                    throw APIError.badField("formats", "unknown format '\(n)' (known: png, palette, rle, sav, yolo, overlay)")
                }
                formats.append(f)
            }
            guard !formats.isEmpty || overlay else { throw APIError.badField("formats", "name at least one format") }
            var tolerance = 1.0
            if let t = query["yolo_tolerance"] {
                guard let v = Double(String(t)), v.isFinite, v >= 0, v <= 100 else {
                    throw APIError.badField("yolo_tolerance", "expected a number of pixels in 0...100")
                }
                tolerance = v
            }
            let zip = try await manager.run(served) { () -> Data in
                if formats.contains(.palette), let bad = try served.session.store.objectIds().first(where: { !(1...255).contains($0) }) {
                    throw APIError.badField("formats", "palette PNGs hold object ids 1...255; object \(bad) does not fit")
                }
                let dir = "\(NSTemporaryDirectory())/sam2-export-\(UUID().uuidString)"
                defer { try? FileManager.default.removeItem(atPath: dir) }
                let root = "\(dir)/masks"
                for format in formats { try served.session.export(format, to: "\(root)/\(format.rawValue)", yoloTolerance: tolerance) }
                if overlay { try served.session.exportOverlay(to: "\(root)/overlay.mp4") }
                let zipURL = URL(fileURLWithPath: "\(dir)/masks.zip")
                // Stored, not deflated: PNGs are compressed already, and any zip reader opens it.
                try FileManager.default.zipItem(at: URL(fileURLWithPath: root), to: zipURL, shouldKeepParent: false,
                                                compressionMethod: .none)
                return try Data(contentsOf: zipURL)
            }
            let base = (served.name as NSString).deletingPathExtension.filter { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }
            return Response(status: .ok,
                            headers: [.contentType: "application/zip",
                                      .contentDisposition: "attachment; filename=\"\(base.isEmpty ? "sam2" : base)-masks.zip\""],
                            body: ResponseBody(byteBuffer: ByteBuffer(bytes: zip)))
        }
    }
}

// MARK: - helpers

/// The session as the page needs it.
func sessionInfo(_ served: ServedSession) -> [String: Any] {
    let s = served.session
    var prompts = [[String: Any]]()
    for (frame, objects) in s.prompts.sorted(by: { $0.key < $1.key }) {
        for (obj, p) in objects.sorted(by: { $0.key < $1.key }) {
            var entry: [String: Any] = ["frame_index": frame, "object_id": obj, "points": p.points, "labels": p.labels, "has_mask": p.hasMask]
            if let box = p.box { entry["box"] = box }
            prompts.append(entry)
        }
    }
    return ["session_id": served.id, "name": served.name, "frame_count": s.frameCount, "width": s.width, "height": s.height,
            "fps": served.fps, "objects": s.objectIds, "prompts": prompts, "can_undo": s.canUndo]
}

/// `{frame_index, results: [{object_id, mask: {size, counts}}]}` as the demo streams it.
func frameJSON(_ m: FrameMasks) -> [String: Any] {
    ["frame_index": m.frameIndex,
     "results": m.objects.map { ["object_id": $0.objectId, "mask": ["size": [m.height, m.width], "counts": $0.counts]] as [String: Any] }]
}

/// One part of a `multipart/x-savi-stream` (the official demo's framing).
func multipartPart(_ object: [String: Any]) -> ByteBuffer {
    let json = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
    var b = ByteBuffer()
    b.writeString("--frame\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: \(json.count)\r\n\r\n")
    b.writeBytes(json)
    b.writeString("\r\n")
    return b
}

func frameParameter(_ context: BasicRequestContext, _ served: ServedSession) throws -> Int {
    let raw = try context.parameters.require("frame")
    guard let frame = Int(raw.hasSuffix(".jpg") ? String(raw.dropLast(4)) : raw), frame >= 0, frame < served.session.frameCount else {
        throw APIError.badField("frame", "'\(raw)' is not a frame of this video (0...\(served.session.frameCount - 1))")
    }
    return frame
}

/// The engine's one-line errors become 400s.
func predictorCall<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let e as PredictorError { throw APIError(.badRequest, e.description) }
}

func checkServerPath(_ path: String, root: String?) throws {
    guard !path.isEmpty else { throw APIError.badField("path", "empty") }
    let resolved = URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath().path
    if let root {
        let r = URL(fileURLWithPath: root).standardizedFileURL.resolvingSymlinksInPath().path
        guard resolved == r || resolved.hasPrefix(r.hasSuffix("/") ? r : r + "/") else {
            throw APIError(.forbidden, "path: outside the server's --video-root", field: "path")
        }
    }
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: resolved, isDirectory: &isDir) else { throw APIError.badField("path", "\(path): no such file") }
    guard FileManager.default.isReadableFile(atPath: resolved) else { throw APIError.badField("path", "\(path): permission denied") }
}

/// The web page's files, shipped as the target's resources.
enum WebFiles {
    static func response(_ name: String) throws -> Response {
        guard let url = Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "Web"),
              let data = try? Data(contentsOf: url) else {
            throw APIError(.notFound, "\(name) is missing from this build's resources")
        }
        let type: String
        switch (name as NSString).pathExtension {
        case "html": type = "text/html; charset=utf-8"
        case "js": type = "text/javascript; charset=utf-8"
        case "css": type = "text/css; charset=utf-8"
        default: type = "application/json; charset=utf-8"
        }
        return Response(status: .ok, headers: [.contentType: type, .cacheControl: "no-cache"],
                        body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }
}
