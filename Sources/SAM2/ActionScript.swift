import Foundation

/// One step of a prompt session, as in the fixtures' `session.json` and `--prompts` files.
/// Coordinates are pixels of the original video.
public enum PromptAction: Equatable {
    case points(frame: Int, obj: Int, points: [[Double]], labels: [Int], clearOld: Bool)
    case box(frame: Int, obj: Int, box: [Double], points: [[Double]], labels: [Int])
    case mask(frame: Int, obj: Int, maskPNG: String)
    case propagate(start: Int?, reverse: Bool, max: Int?)
    case remove(obj: Int)
    case reset

    /// The record tag the official fixtures use for this action.
    public var tag: String {
        switch self {
        case .points: return "points"
        case .box: return "box"
        case .mask: return "mask"
        case .propagate: return "propagate"
        case .remove: return "remove"
        case .reset: return "reset"
        }
    }
}

/// Parsing of action scripts: a JSON list of actions, or an object with an `actions` list.
/// Every error names the offending field, e.g. `actions[2].points[0]: expected [x, y]`.
public enum ActionScript {
    public static func parse(path: String) throws -> [PromptAction] {
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        if attributes?[.type] as? FileAttributeType == .typeRegular, (attributes?[.size] as? NSNumber)?.intValue == 0 {
            throw PredictorError("\(path): file is empty")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw PredictorError("cannot read prompts file \(path)")
        }
        do { return try parse(data: data) } catch let e as PredictorError {
            throw PredictorError("\(path): \(e.description)")
        }
    }

    public static func parse(data: Data) throws -> [PromptAction] {
        let json: Any
        do { json = try JSONSerialization.jsonObject(with: data) } catch {
            // The debug description says where: "Invalid value around character 12."
            let detail = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? error.localizedDescription
            throw PredictorError("not valid JSON: \(detail)")
        }
        let list: [Any]
        if let l = json as? [Any] {
            list = l
        } else if let o = json as? [String: Any], let l = o["actions"] as? [Any] {
            list = l
        } else {
            throw PredictorError("expected a list of actions or an object with an \"actions\" list")
        }
        return try list.enumerated().map { try action($1, at: "actions[\($0)]") }
    }

    private static func action(_ any: Any, at path: String) throws -> PromptAction {
        guard let o = any as? [String: Any] else { throw PredictorError("\(path): expected an object") }
        guard let op = o["op"] as? String else { throw PredictorError("\(path).op: missing or not a string") }
        // A misspelt key ("revers") would silently change what the session does: refuse it.
        if let fields = knownFields[op], let unknown = o.keys.sorted().first(where: { !fields.contains($0) }) {
            throw PredictorError("\(path).\(unknown): unknown field for op '\(op)' (expected \(fields.sorted().joined(separator: ", ")))")
        }
        func int(_ key: String) throws -> Int {
            guard let v = o[key] else { throw PredictorError("\(path).\(key): missing") }
            guard let n = v as? NSNumber, !isJSONBool(v), Double(n.intValue) == n.doubleValue else {
                throw PredictorError("\(path).\(key): expected an integer")
            }
            return n.intValue
        }
        func optionalInt(_ key: String) throws -> Int? {
            if o[key] == nil || o[key] is NSNull { return nil }
            return try int(key)
        }
        func numbers(_ v: Any, _ p: String, count: Int? = nil) throws -> [Double] {
            guard let a = v as? [Any], let d = a.map({ ($0 as? NSNumber).flatMap { isJSONBool($0) ? nil : $0.doubleValue } }) as? [Double],
                  d.allSatisfy({ $0.isFinite }) else {
                throw PredictorError("\(p): expected a list of numbers")
            }
            if let count, d.count != count { throw PredictorError("\(p): expected \(count) numbers, got \(d.count)") }
            return d
        }
        func points() throws -> (points: [[Double]], labels: [Int])? {
            guard let p = o["points"] else {
                if o["labels"] != nil { throw PredictorError("\(path).points: missing (labels were given)") }
                return nil
            }
            guard let list = p as? [Any] else { throw PredictorError("\(path).points: expected a list of [x, y]") }
            let pts = try list.enumerated().map { try numbers($1, "\(path).points[\($0)]", count: 2) }
            guard let l = o["labels"] else { throw PredictorError("\(path).labels: missing (points were given)") }
            guard let ls = l as? [Any] else { throw PredictorError("\(path).labels: expected a list of 0/1") }
            let labels = try ls.enumerated().map { i, v -> Int in
                guard let n = v as? NSNumber, !isJSONBool(v), n.intValue == 0 || n.intValue == 1, n.doubleValue == Double(n.intValue) else {
                    throw PredictorError("\(path).labels[\(i)]: expected 1 (positive) or 0 (negative)")
                }
                return n.intValue
            }
            guard labels.count == pts.count else {
                throw PredictorError("\(path).labels: \(labels.count) labels for \(pts.count) points")
            }
            return (pts, labels)
        }
        switch op {
        case "points":
            guard let p = try points() else { throw PredictorError("\(path).points: missing") }
            var clearOld = true
            if let c = o["clear_old"] {
                guard let b = jsonBool(c) else { throw PredictorError("\(path).clear_old: expected true or false") }
                clearOld = b
            }
            return .points(frame: try int("frame"), obj: try int("obj"), points: p.points, labels: p.labels, clearOld: clearOld)
        case "box":
            guard let b = o["box"] else { throw PredictorError("\(path).box: missing") }
            let p = try points()
            return .box(frame: try int("frame"), obj: try int("obj"), box: try numbers(b, "\(path).box", count: 4),
                        points: p?.points ?? [], labels: p?.labels ?? [])
        case "mask":
            guard let m = o["mask_png"] as? String, !m.isEmpty else { throw PredictorError("\(path).mask_png: missing or not a string") }
            return .mask(frame: try int("frame"), obj: try int("obj"), maskPNG: m)
        case "propagate":
            var reverse = false
            if let r = o["reverse"], !(r is NSNull) {
                guard let b = jsonBool(r) else { throw PredictorError("\(path).reverse: expected true or false") }
                reverse = b
            }
            let max = try optionalInt("max")
            if let max, max < 0 { throw PredictorError("\(path).max: must not be negative") }
            return .propagate(start: try optionalInt("start"), reverse: reverse, max: max)
        case "remove":
            return .remove(obj: try int("obj"))
        case "reset":
            return .reset
        default:
            throw PredictorError("\(path).op: unknown operation '\(op)' (expected points, box, mask, propagate, remove or reset)")
        }
    }
}

/// The keys each operation takes.
private let knownFields: [String: Set<String>] = [
    "points": ["op", "frame", "obj", "points", "labels", "clear_old"],
    "box": ["op", "frame", "obj", "box", "points", "labels"],
    "mask": ["op", "frame", "obj", "mask_png"],
    "propagate": ["op", "start", "reverse", "max"],
    "remove": ["op", "obj"],
    "reset": ["op"],
]

/// JSON `true`/`false` arrive as NSNumbers of objC type "c"; numbers must not accept them.
public func isJSONBool(_ v: Any) -> Bool {
    if let n = v as? NSNumber { return String(cString: n.objCType) == "c" }
    return v is Bool
}

/// `true` or `false`, but not 1 or 0 (which `as? Bool` accepts on Linux).
private func jsonBool(_ v: Any) -> Bool? {
    isJSONBool(v) ? (v as? NSNumber)?.boolValue ?? (v as? Bool) : nil
}

extension VideoPredictor {
    /// Run an action script in order. `loadMask` reads a mask prompt (binary, row-major) by its
    /// file name; `record` sees the outputs each action produces (prompted frame, or every
    /// propagated frame), with the action's step number and tag.
    public func run(_ actions: [PromptAction],
                    loadMask: (String) throws -> (mask: [UInt8], width: Int, height: Int),
                    record: (_ step: Int, _ tag: String, _ result: FrameResult) throws -> Void) throws {
        for (step, action) in actions.enumerated() {
            switch action {
            case let .points(frame, obj, points, labels, clearOld):
                let r = try addPoints(frame: frame, objectId: obj, points: points.map { ($0[0], $0[1]) }, labels: labels,
                                      clearOldPoints: clearOld)
                try record(step, action.tag, r)
            case let .box(frame, obj, box, points, labels):
                let r = try addPoints(frame: frame, objectId: obj, points: points.map { ($0[0], $0[1]) }, labels: labels,
                                      box: (box[0], box[1], box[2], box[3]))
                try record(step, action.tag, r)
            case let .mask(frame, obj, file):
                let m = try loadMask(file)
                try record(step, action.tag, try addMask(frame: frame, objectId: obj, mask: m.mask, width: m.width, height: m.height))
            case let .propagate(start, reverse, max):
                try propagate(from: start, maxFrames: max, reverse: reverse) { try record(step, action.tag, $0) }
            case let .remove(obj):
                try removeObject(obj)
            case .reset:
                reset()
            }
        }
    }
}

// MARK: - checks shared by the predictor and script validation

/// The checks a prompt must pass before it reaches the model. `VideoPredictor` applies them to
/// every call, and `ActionScript.validate` to a whole script up front, with the same messages.
public enum PromptCheck {
    public static func frame(_ frame: Int, frameCount: Int) throws {
        guard frame >= 0 && frame < frameCount else {
            throw PredictorError("frame \(frame) is out of range: the video has \(frameCount) frame\(frameCount == 1 ? "" : "s")"
                                 + (frameCount > 0 ? " (0...\(frameCount - 1))" : ""))
        }
    }

    /// Clicks (label 1 positive, 0 negative) and an optional box, in pixels of a `width x height` video.
    public static func points(_ points: [(x: Double, y: Double)], labels: [Int],
                              box: (x0: Double, y0: Double, x1: Double, y1: Double)?,
                              width: Int, height: Int) throws {
        guard points.count == labels.count else { throw PredictorError("points and labels must have the same length") }
        guard !points.isEmpty || box != nil else { throw PredictorError("a prompt needs at least one point or a box") }
        guard labels.allSatisfy({ $0 == 0 || $0 == 1 }) else { throw PredictorError("point labels must be 1 (positive) or 0 (negative)") }
        let w = Double(width), h = Double(height)
        // Written so that NaN fails too.
        for p in points where !(p.x >= 0 && p.x <= w && p.y >= 0 && p.y <= h) {
            throw PredictorError("point (\(fmt(p.x)), \(fmt(p.y))) is outside the \(width)x\(height) frame")
        }
        if let b = box {
            let text = "box (\(fmt(b.x0)), \(fmt(b.y0)), \(fmt(b.x1)), \(fmt(b.y1)))"
            guard [b.x0, b.y0, b.x1, b.y1].allSatisfy({ $0.isFinite }),
                  b.x0 >= 0, b.y0 >= 0, b.x1 <= w, b.y1 <= h else {
                throw PredictorError("\(text) is outside the \(width)x\(height) frame")
            }
            guard b.x1 > b.x0, b.y1 > b.y0 else {
                throw PredictorError("\(text) is degenerate: it needs x1 > x0 and y1 > y0")
            }
        }
    }

    public static func onlyNegative(objectId: Int, frame: Int) -> PredictorError {
        PredictorError("object \(objectId) on frame \(frame) has only negative points; add a positive point or a box")
    }

    public static func unknownObject(_ objectId: Int, objects: [Int]) -> PredictorError {
        PredictorError("cannot remove object \(objectId): no such object (objects: \(objects.isEmpty ? "none" : objects.map(String.init).joined(separator: ", ")))")
    }

    public static let noPrompts = PredictorError("no object has a prompt yet; add points, a box or a mask first")
}

/// A coordinate as typed: 12 rather than 12.0.
func fmt(_ v: Double) -> String {
    v == v.rounded() && abs(v) < 1e9 ? String(Int(v)) : String(v)
}

extension ActionScript {
    /// Checks a whole script against a video of `frameCount` frames of `width x height` before
    /// anything runs, so that a bad correction on frame 500 fails at once rather than after the
    /// first propagation: frames in range, points and boxes inside the frame, no object with only
    /// negative points, no removal of an unknown object, no propagation without prompts. It
    /// follows the objects and prompts the predictor would hold and throws the error the predictor
    /// would throw at that step, prefixed with `describe(step)`.
    public static func validate(_ actions: [PromptAction], frameCount: Int, width: Int, height: Int,
                                describe: (Int) -> String = { "actions[\($0)]" }) throws {
        var objects = [Int]()
        /// Per object and frame: whether its current point prompt has a positive click or a box.
        var positive = [Int: [Int: Bool]]()
        func add(_ obj: Int) { if !objects.contains(obj) { objects.append(obj) } }

        for (step, action) in actions.enumerated() {
            do {
                switch action {
                case let .points(frame, obj, pts, labels, clearOld):
                    try PromptCheck.frame(frame, frameCount: frameCount)
                    try PromptCheck.points(pts.map { ($0[0], $0[1]) }, labels: labels, box: nil, width: width, height: height)
                    let old = clearOld ? false : positive[obj]?[frame] ?? false
                    if !labels.contains(1) && !old { throw PromptCheck.onlyNegative(objectId: obj, frame: frame) }
                    positive[obj, default: [:]][frame] = true
                    add(obj)
                case let .box(frame, obj, box, pts, labels):
                    try PromptCheck.frame(frame, frameCount: frameCount)
                    try PromptCheck.points(pts.map { ($0[0], $0[1]) }, labels: labels, box: (box[0], box[1], box[2], box[3]),
                                           width: width, height: height)
                    positive[obj, default: [:]][frame] = true
                    add(obj)
                case let .mask(frame, obj, _):
                    try PromptCheck.frame(frame, frameCount: frameCount)
                    positive[obj]?[frame] = nil
                    add(obj)
                case let .propagate(start, _, max):
                    if objects.isEmpty { throw PromptCheck.noPrompts }
                    if let start { try PromptCheck.frame(start, frameCount: frameCount) }
                    if let max, max < 0 { throw PredictorError("max must not be negative") }
                case let .remove(obj):
                    guard let i = objects.firstIndex(of: obj) else { throw PromptCheck.unknownObject(obj, objects: objects) }
                    objects.remove(at: i)
                    positive[obj] = nil
                case .reset:
                    objects = []
                    positive = [:]
                }
            } catch let error as PredictorError {
                throw PredictorError("\(describe(step)): \(error.description)")
            }
        }
    }
}
