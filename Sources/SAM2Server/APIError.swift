import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SAM2

/// A refused request: the status, one line naming the problem and, where one is at fault, the
/// request field. Sent as `{"error": "...", "field": "..."}`.
struct APIError: Error, CustomStringConvertible {
    let status: HTTPResponse.Status
    let message: String
    let field: String?

    init(_ status: HTTPResponse.Status, _ message: String, field: String? = nil) {
        self.status = status
        self.message = message
        self.field = field
    }

    var description: String { field.map { "\($0): \(message)" } ?? message }

    static func badField(_ field: String, _ message: String) -> APIError {
        APIError(.badRequest, "\(field): \(message)", field: field)
    }
}

/// Every error becomes a JSON response: APIError as given, the router's own (404, 405, an
/// oversized body) with their status, anything else as 500 (and logged: a bug).
struct JSONErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let e as APIError {
            var body: [String: Any] = ["error": e.message]
            if let field = e.field { body["field"] = field }
            return jsonResponse(body, status: e.status)
        } catch let e as HTTPError {
            let message = e.body ?? (e.status == .notFound ? "no such endpoint: \(request.method) \(request.uri.path)" : e.status.reasonPhrase)
            return jsonResponse(["error": message], status: e.status)
        } catch {
            context.logger.error("internal error on \(request.method) \(request.uri.path): \(error)")
            return jsonResponse(["error": "internal error: \(error)"], status: .internalServerError)
        }
    }
}

/// An optional bearer token on every API route.
struct BearerTokenMiddleware<Context: RequestContext>: RouterMiddleware {
    let token: String
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.uri.path.hasPrefix("/api/") else { return try await next(request, context) }
        guard let auth = request.headers[.authorization], auth == "Bearer \(token)" else {
            throw APIError(.unauthorized, "this server needs 'Authorization: Bearer <token>' (sam2 serve --token)", field: "Authorization")
        }
        return try await next(request, context)
    }
}

func jsonResponse(_ object: [String: Any], status: HTTPResponse.Status = .ok) -> Response {
    let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
    return Response(status: status, headers: [.contentType: "application/json; charset=utf-8"],
                    body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
}

/// A request's JSON object, read field by field with errors that name the field.
struct JSONFields {
    let values: [String: Any]

    init(_ buffer: ByteBuffer, allowed: Set<String>) throws {
        if buffer.readableBytes == 0 { values = [:]; return }
        guard let object = try? JSONSerialization.jsonObject(with: Data(buffer.readableBytesView), options: [.fragmentsAllowed]) else {
            throw APIError(.badRequest, "body: not valid JSON", field: "body")
        }
        guard let dict = object as? [String: Any] else { throw APIError(.badRequest, "body: expected a JSON object", field: "body") }
        if let unknown = dict.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw APIError.badField(unknown, "unknown field (known: \(allowed.sorted().joined(separator: ", ")))")
        }
        values = dict
    }

    func has(_ key: String) -> Bool { values[key] != nil && !(values[key] is NSNull) }

    func int(_ key: String, in range: ClosedRange<Int>? = nil) throws -> Int {
        guard let v = values[key], !(v is NSNull) else { throw APIError.badField(key, "missing") }
        guard let n = v as? NSNumber, !isBool(n), n.doubleValue.rounded() == n.doubleValue, abs(n.doubleValue) < 1e15 else {
            throw APIError.badField(key, "expected an integer")
        }
        let i = Int(n.doubleValue)
        if let range, !range.contains(i) { throw APIError.badField(key, "\(i) is out of range \(range.lowerBound)...\(range.upperBound)") }
        return i
    }

    func optionalInt(_ key: String, in range: ClosedRange<Int>? = nil) throws -> Int? {
        has(key) ? try int(key, in: range) : nil
    }

    func bool(_ key: String, default value: Bool) throws -> Bool {
        guard has(key) else { return value }
        guard let n = values[key] as? NSNumber, isBool(n) else { throw APIError.badField(key, "expected true or false") }
        return n.boolValue
    }

    func string(_ key: String) throws -> String {
        guard let v = values[key], !(v is NSNull) else { throw APIError.badField(key, "missing") }
        guard let s = v as? String else { throw APIError.badField(key, "expected a string") }
        return s
    }

    func optionalString(_ key: String) throws -> String? { has(key) ? try string(key) : nil }

    /// A list of numbers (exactly `count` of them if given), each finite.
    static func numbers(_ v: Any, _ field: String, count: Int? = nil) throws -> [Double] {
        guard let list = v as? [Any] else { throw APIError.badField(field, "expected a list of numbers") }
        if let count, list.count != count { throw APIError.badField(field, "expected \(count) numbers, got \(list.count)") }
        return try list.enumerated().map { i, x in
            guard let n = x as? NSNumber, !isBool(n), n.doubleValue.isFinite else {
                throw APIError.badField("\(field)[\(i)]", "expected a number")
            }
            return n.doubleValue
        }
    }

    func list(_ key: String) throws -> [Any] {
        guard let v = values[key], !(v is NSNull) else { throw APIError.badField(key, "missing") }
        guard let l = v as? [Any] else { throw APIError.badField(key, "expected a list") }
        return l
    }
}

private func isBool(_ n: NSNumber) -> Bool { isJSONBool(n) }
