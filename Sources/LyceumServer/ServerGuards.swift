import ControlPlane
import Foundation
import Gateway
import Hummingbird
import InferenceCore
import Logging
import NIOCore
import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

extension LyceumRequestContext: GatewayRequestContext {}

/// The first part of the server to hear SIGTERM: requests waiting for a replica get a 503 at once, and a
/// watchdog thread ends the process at `timeout` whatever is still running, after killing every replica
/// process group, so the server always exits within its stop timeout (systemd's default is 90 s).
final class ShutdownGuard: Service, Sendable {
    let gateway: Gateway
    let timeout: Duration
    let logger: Logger

    init(gateway: Gateway, timeout: Duration, logger: Logger) {
        self.gateway = gateway
        self.timeout = timeout
        self.logger = logger
    }

    func run() async throws {
        try? await gracefulShutdown()
        gateway.beginShutdown()
        let seconds = max(1, timeout.seconds - 0.5)
        let logger = self.logger
        Thread.detachNewThread {
            Thread.sleep(forTimeInterval: seconds)
            logger.error("shutdown took longer than shutdown_timeout_s; killing replica processes and exiting")
            killChildProcessGroups()
            _exit(1)
        }
    }
}

/// SIGKILL to the process group of every child of this process (replica engines lead their own groups).
func killChildProcessGroups() {
    let me = getpid()
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
        guard let pid = Int32(entry),
            let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { continue }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        if fields.count > 1, Int32(fields[1]) == me {
            _ = kill(-pid, SIGKILL)
            _ = kill(pid, SIGKILL)
        }
    }
}

/// Raises the open-file limit to its hard maximum: each client connection and each replica connection is a
/// descriptor, and the connection cap must stay below the limit.
func raiseOpenFileLimit() {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
    limit.rlim_cur = limit.rlim_max
    _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}

/// Answers paths and methods that no route serves in the shape of the plane they were sent to: FastAPI's
/// bare `{"detail": "Not Found"}` on the control plane (which the published client recognises), OpenAI's
/// error object under `/openai`, Anthropic's under `/anthropic`; a known path with another method is a 405.
struct UnknownRouteMiddleware: RouterMiddleware {
    typealias Context = LyceumRequestContext

    /// Every route, as method and path pattern (`*` for one segment), for telling a 405 from a 404.
    static let routes: [(String, String)] = [
        ("GET", "/health"), ("GET", "/metrics"),
        ("POST", "/api/v2/external/inference/create"), ("GET", "/api/v2/external/inference/get"),
        ("GET", "/api/v2/external/inference/list"), ("DELETE", "/api/v2/external/inference/stop"),
        ("GET", "/api/v2/external/inference/models"), ("GET", "/api/v2/external/inference/replica/*/logs"),
        ("GET", "/api/v2/external/inference/events"), ("GET", "/api/v2/external/inference/usage"),
        ("GET", "/api/v2/external/pricing"), ("POST", "/api/v2/external/admin/keys"),
        ("GET", "/api/v2/external/user/org"), ("GET", "/api/v2/external/machine-types"),
        ("GET", "/api/v2/external/serverless/models"),
        ("POST", "/openai/v1/chat/completions"), ("POST", "/openai/v1/completions"), ("GET", "/openai/v1/models"),
        ("GET", "/openai/v1/models/*"), ("GET", "/openai/v1/chat/completions/*"),
        ("POST", "/anthropic/v1/messages"), ("GET", "/anthropic/v1/models"), ("GET", "/anthropic/v1/models/*"),
    ]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound || error.status == .methodNotAllowed {
            let path = request.uri.path
            let allowed = Self.routes.filter { Self.matches($0.1, path) }.map(\.0)
            if !allowed.isEmpty, !allowed.contains(request.method.rawValue) {
                return Self.answer(path: path, status: .methodNotAllowed, method: request.method.rawValue, allow: allowed.joined(separator: ", "))
            }
            return Self.answer(path: path, status: .notFound, method: request.method.rawValue, allow: nil)
        }
    }

    static func matches(_ pattern: String, _ path: String) -> Bool {
        let p = pattern.split(separator: "/"), q = path.split(separator: "/")
        guard p.count == q.count else { return false }
        return zip(p, q).allSatisfy { $0 == "*" || $0 == $1 }
    }

    static func answer(path: String, status: HTTPResponse.Status, method: String, allow: String?) -> Response {
        let body: String
        if path.hasPrefix("/openai/") {
            let message: String
            if status == .methodNotAllowed {
                message = "Method \(method) is not allowed on \(path); allowed: \(allow ?? "")"
            } else if path.hasSuffix("/embeddings") {
                message = "Embeddings are not served here: dedicated deployments run chat engines, which serve /openai/v1/chat/completions and /openai/v1/completions."
            } else {
                message = "Unknown request URL: \(method) \(path). This server serves /openai/v1/chat/completions, /openai/v1/completions, /openai/v1/models and /openai/v1/chat/completions/{request_id}."
            }
            body = #"{"error":{"message":"\#(jsonEscape(message))","type":"invalid_request_error","param":null,"code":"\#(status == .methodNotAllowed ? "method_not_allowed" : "unknown_url")"}}"#
        } else if path.hasPrefix("/anthropic/") {
            let message = status == .methodNotAllowed ? "Method \(method) is not allowed on \(path)" : "Unknown path: \(method) \(path)"
            body = #"{"type":"error","error":{"type":"not_found_error","message":"\#(jsonEscape(message))"}}"#
        } else {
            // FastAPI's exact bodies: the published client reads "Not Found" as "this server has no such route".
            body = status == .methodNotAllowed ? #"{"detail":"Method Not Allowed"}"# : #"{"detail":"Not Found"}"#
        }
        var headers: HTTPFields = [.contentType: "application/json"]
        if let allow { headers[.allow] = allow }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}
