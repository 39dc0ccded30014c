import Foundation
import HTTPTypes
import Hummingbird
import SAM2
import SAM2Session
import SAM2Video

/// What one server allows; every limit refuses with a 4xx naming it.
public struct ServeLimits: Sendable {
    public var maxSessions = 4
    /// A session nobody has touched for this long is closed and its memory freed.
    public var idleTimeout: TimeInterval = 15 * 60
    public var maxUploadBytes = 2 << 30
    public var maxFrames = 3000
    /// Server-side video paths must lie under this folder (nil: any path the server can read).
    public var videoRoot: String?
    public init() {}
}

/// One open session: the engine, its display frames, and bookkeeping for expiry.
final class ServedSession: @unchecked Sendable {
    let id: String
    let session: TrackingSession
    let display: DisplayFrames
    let fps: Double
    let name: String
    /// An uploaded video the server owns (deleted when the session closes).
    let ownedFile: String?
    private let lock = NSLock()
    private var lastUsed = Date()
    private var running = 0
    private var snapshot: [String: Any] = [:]

    init(id: String, session: TrackingSession, display: DisplayFrames, fps: Double, name: String, ownedFile: String?) {
        self.id = id
        self.session = session
        self.display = display
        self.fps = fps
        self.name = name
        self.ownedFile = ownedFile
    }

    func touch() { lock.lock(); lastUsed = Date(); lock.unlock() }

    /// The session as JSON, as of the end of its last model work: the engine is not thread-safe,
    /// so requests read this copy, refreshed on the compute queue.
    var info: [String: Any] { lock.withLock { snapshot } }
    func refreshInfo() {
        let now = sessionInfo(self)
        lock.withLock { snapshot = now }
    }
    func idle(for timeout: TimeInterval) -> Bool {
        lock.lock(); defer { lock.unlock() }
        return running == 0 && Date().timeIntervalSince(lastUsed) > timeout
    }
    func begin() { lock.lock(); running += 1; lastUsed = Date(); lock.unlock() }
    func end() { lock.lock(); running -= 1; lastUsed = Date(); lock.unlock() }

    func close() {
        session.cancel()
        display.stop()
        if let ownedFile { unlink(ownedFile) }
    }
}

/// The open sessions. Model work runs on one serial queue (two cores gain nothing from two
/// sessions computing at once, and a queue keeps each session's calls in order); cancellation
/// and frame images do not wait for it.
final class SessionManager: @unchecked Sendable {
    let model: SAM2Model
    let modelName: String
    let limits: ServeLimits
    private let compute = DispatchQueue(label: "sam2.serve.compute")
    private let lock = NSLock()
    private var sessions: [String: ServedSession] = [:]
    private var opening = 0

    init(model: SAM2Model, modelName: String, limits: ServeLimits) {
        self.model = model
        self.modelName = modelName
        self.limits = limits
    }

    var count: Int { lock.lock(); defer { lock.unlock() }; return sessions.count }

    /// Runs model work on the compute queue, in order with every other session's.
    func run<T>(_ served: ServedSession?, _ body: @escaping () throws -> T) async throws -> T {
        served?.begin()
        defer { served?.end() }
        return try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, Error>) in
            compute.async {
                let result = Result { try body() }
                served?.refreshInfo()
                c.resume(with: result)
            }
        }
    }

    /// Starts model work whose results stream out; `body` runs on the compute queue.
    func start(_ served: ServedSession, _ body: @escaping () -> Void) {
        served.begin()
        compute.async {
            defer { served.end() }
            body()
            served.refreshInfo()
        }
    }

    func open(path: String, name: String, ownedFile: String?) async throws -> ServedSession {
        guard reserve() else {
            if let ownedFile { unlink(ownedFile) }
            throw APIError(.tooManyRequests, "\(limits.maxSessions) sessions are open (the server's --max-sessions); close one first")
        }
        defer { lock.withLock { opening -= 1 } }
        do {
            let served = try await run(nil) { [self] () -> ServedSession in
                let reader = try VideoFrameReader(path: path, limit: nil)
                let frames = reader.frameCount
                guard frames > 0 else { throw APIError(.badRequest, "the video has no frames", field: "video") }
                guard frames <= limits.maxFrames else {
                    throw APIError(.contentTooLarge, "the video has \(frames) frames; this server takes at most \(limits.maxFrames) (--max-frames)", field: "video")
                }
                let session = try TrackingSession(model: model, video: path)
                let display = try DisplayFrames(path: path, limit: nil, frameCount: session.frameCount)
                let served = ServedSession(id: UUID().uuidString.lowercased(), session: session, display: display,
                                           fps: reader.fps, name: name, ownedFile: ownedFile)
                served.refreshInfo()
                return served
            }
            lock.withLock { sessions[served.id] = served }
            return served
        } catch {
            if let ownedFile { unlink(ownedFile) }
            if error is APIError { throw error }
            throw APIError(.badRequest, "cannot open the video: \(error)", field: "video")
        }
    }

    /// Holds a place for a session being opened; false if the server is full.
    private func reserve() -> Bool {
        lock.withLock {
            guard sessions.count + opening < limits.maxSessions else { return false }
            opening += 1
            return true
        }
    }

    /// The session a route's `:id` names.
    func get(_ context: BasicRequestContext) throws -> ServedSession {
        try get(try context.parameters.require("id"))
    }

    func get(_ id: String) throws -> ServedSession {
        lock.lock(); defer { lock.unlock() }
        guard let s = sessions[id] else { throw APIError(.notFound, "no session \(id) (closed, expired or never opened)", field: "session_id") }
        s.touch()
        return s
    }

    @discardableResult
    func close(_ id: String) throws -> ServedSession {
        lock.lock()
        guard let s = sessions.removeValue(forKey: id) else {
            lock.unlock()
            throw APIError(.notFound, "no session \(id) (closed, expired or never opened)", field: "session_id")
        }
        lock.unlock()
        s.close()
        return s
    }

    /// Closes sessions idle longer than the timeout; returns their ids.
    @discardableResult
    func expire() -> [String] {
        lock.lock()
        let stale = sessions.values.filter { $0.idle(for: limits.idleTimeout) }
        for s in stale { sessions[s.id] = nil }
        lock.unlock()
        for s in stale { s.close() }
        return stale.map(\.id)
    }

    func closeAll() {
        lock.lock(); let all = Array(sessions.values); sessions = [:]; lock.unlock()
        for s in all { s.close() }
    }
}
