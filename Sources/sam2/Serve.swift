import ArgumentParser
import Foundation
import SAM2
import SAM2Server

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the web page and JSON API for interactive tracking (open http://127.0.0.1:8765/).",
        discussion: """
        One model, several sessions: upload a video (or name a file the server can read), click \
        on any frame, track forward and backward with masks streamed as they are computed, correct, \
        re-track (frames already seen are not encoded again), undo, export a zip of PNG, palette \
        PNG, COCO RLE, SA-V and YOLO masks. The API is documented at /openapi.json.

        Binds loopback only unless --host says otherwise; with --token every /api request needs \
        'Authorization: Bearer TOKEN' (the page takes it as #token=TOKEN in its address). Sessions \
        idle longer than --idle-timeout are closed and their memory freed.
        """)

    @Option(help: "Address to bind (0.0.0.0 for every interface).")
    var host = "127.0.0.1"
    @Option(help: "Port (0 picks a free one; the address is printed).")
    var port = 8765
    @OptionGroup var modelOptions: ModelOptions
    @Option(help: ArgumentHelp("Require 'Authorization: Bearer TOKEN' on the API (default: $SAM2_SERVE_TOKEN, else none).", valueName: "TOKEN"))
    var token: String?
    @Option(help: "Sessions open at once.")
    var maxSessions = 4
    @Option(help: ArgumentHelp("Close a session nobody has used for this many seconds.", valueName: "SECONDS"))
    var idleTimeout: Double = 900
    @Option(help: ArgumentHelp("Largest video upload.", valueName: "MB"))
    var maxUploadMb = 2048
    @Option(help: "Longest video, in frames.")
    var maxFrames = 3000
    @Option(help: ArgumentHelp("Server-side video paths must lie in this folder (default: any readable file).", valueName: "DIR"))
    var videoRoot: String?

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0...65535") }
        guard maxSessions >= 1 else { throw ValidationError("--max-sessions must be at least 1") }
        guard idleTimeout > 0, idleTimeout.isFinite else { throw ValidationError("--idle-timeout must be positive") }
        guard maxUploadMb >= 1 else { throw ValidationError("--max-upload-mb must be at least 1") }
        guard maxFrames >= 1 else { throw ValidationError("--max-frames must be at least 1") }
        if let token, token.isEmpty { throw ValidationError("--token must not be empty") }
    }

    func run() throws {
        let (cfg, ckpt) = try modelOptions.resolve()
        if let videoRoot {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: videoRoot, isDirectory: &isDir), isDir.boolValue else {
                throw PredictorError("--video-root \(videoRoot): no such folder")
            }
        }
        let net = try SAM2Model(config: cfg, checkpointPath: ckpt)
        var limits = ServeLimits()
        limits.maxSessions = maxSessions
        limits.idleTimeout = idleTimeout
        limits.maxUploadBytes = maxUploadMb << 20
        limits.maxFrames = maxFrames
        limits.videoRoot = videoRoot
        let name = modelOptions.model ?? modelOptions.config.map { URL(fileURLWithPath: $0).deletingPathExtension().lastPathComponent }
            ?? "sam2.1_hiera_tiny"
        var server = SAM2Server(model: net, modelName: name, limits: limits)
        server.host = host
        server.port = port
        server.token = token ?? ProcessInfo.processInfo.environment["SAM2_SERVE_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }

        let done = DispatchSemaphore(value: 0)
        let failure = ErrorBox()
        let srv = server
        Task {
            do {
                try await srv.run { address in
                    print("sam2 serve: \(name) on \(address)/ (Ctrl-C stops)")
                    fflush(stdout)
                }
            } catch { failure.error = error }
            done.signal()
        }
        done.wait()
        if let error = failure.error { throw PredictorError("cannot serve on \(host):\(port): \(describe(error))") }
    }
}

private final class ErrorBox: @unchecked Sendable { var error: Error? }
