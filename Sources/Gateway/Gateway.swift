import AsyncHTTPClient
import DeploymentStore
import Foundation
import HTTPTypes
import Hummingbird
import InferenceCore
import NIOCore
import NIOHTTP1
import Synchronization
import Routing

/// The gateway's knobs.
public struct GatewayConfiguration: Sendable {
    /// Replicas one request may be tried on before its failure reaches the caller.
    public var maxAttempts = 3
    public var maxBodyBytes = 32 << 20
    /// How long a request waits for a ready replica (one starting, or devices freeing up) before a 503.
    public var replicaWait: Duration = .seconds(300)
    /// Requests that may wait for a paused or starting deployment; beyond it, 429 with Retry-After.
    public var waitQueueLimit = 1000
    /// Upper bound on a replica's time to answer (non-streaming: the whole generation).
    public var upstreamTimeout: Duration = .seconds(900)
    /// Requests one organisation may have in flight at once; beyond it, 429. One tenant cannot take the
    /// gateway's memory and every replica slot from the others.
    public var maxInFlightPerOrg = 512
    /// Request-body bytes one organisation may have in flight at once (abandoned large requests cannot pile up
    /// in the gateway's memory); beyond it, 429.
    public var maxInFlightBytesPerOrg = 256 << 20
    /// Stored `X-Timeout-S` results one organisation may hold (count and bytes); beyond them, 429.
    public var maxStoredResultsPerOrg = 1000
    public var maxStoredResultBytesPerOrg = 64 << 20

    public init() {}
}

/// A request context that knows whether its caller is still connected, so a request whose caller has
/// gone stops waiting for a replica and gives its place back.
public protocol GatewayRequestContext: RequestContext {
    var callerConnected: Bool { get }
}

/// The OpenAI-compatible data plane: one endpoint, every deployment behind it, load-balanced and retried.
public final class Gateway: Sendable {
    let store: any DeploymentStore
    let authenticator: Authenticator
    let routes: RouteTable
    let fleet: any FleetCommands
    let client: HTTPClient
    let background: BackgroundRequests
    let configuration: GatewayConfiguration
    public let picker = ReplicaPicker()
    public let stats: GatewayStats
    let startedAt = ContinuousClock.now
    /// When stored request results were last pruned (they are kept 24 hours, at least the promised hour).
    let lastPrune = Mutex(ContinuousClock.now)
    /// Requests in flight per organisation, for `maxInFlightPerOrg`.
    let orgInFlight = Mutex<[String: (requests: Int, bytes: Int)]>([:])
    /// Set on SIGTERM: waiting requests are answered 503 at once, new ones too.
    let shuttingDown = Mutex(false)

    public init(
        store: any DeploymentStore, authenticator: Authenticator, routes: RouteTable, fleet: any FleetCommands, client: HTTPClient,
        background: BackgroundRequests, stats: GatewayStats = GatewayStats(), configuration: GatewayConfiguration = .init()
    ) {
        self.store = store
        self.authenticator = authenticator
        self.routes = routes
        self.fleet = fleet
        self.client = client
        self.background = background
        self.stats = stats
        self.configuration = configuration
    }

    /// Graceful shutdown has begun: requests still waiting for a replica get a 503 now, not in 300 s.
    public func beginShutdown() { shuttingDown.withLock { $0 = true } }

    var isShuttingDown: Bool { shuttingDown.withLock { $0 } }

    public func add<Context: GatewayRequestContext>(to router: Router<Context>) {
        let v1 = router.group("openai/v1").add(middleware: OpenAIErrorMiddleware<Context>())
        v1.post("chat/completions") { [self] request, context in
            try await complete(request, path: "/v1/chat/completions", chat: true, callerConnected: { context.callerConnected })
        }
        v1.post("completions") { [self] request, context in
            try await complete(request, path: "/v1/completions", chat: false, callerConnected: { context.callerConnected })
        }
        v1.get("models") { [self] request, _ in try await models(request) }
        v1.get("models/:model_id") { [self] request, context in try await model(request, id: try context.parameters.require("model_id")) }
        v1.get("chat/completions/:request_id") { [self] request, context in
            try await storedResult(request, id: try context.parameters.require("request_id"))
        }
        addAnthropic(to: router)
    }

    // MARK: Completions

    /// One request: authenticate, resolve the deployment, then forward (streaming, waiting, or bounded wait).
    func complete(_ request: Request, path: String, chat: Bool, callerConnected: @escaping @Sendable () -> Bool) async throws -> Response {
        let requestId = newRequestID()
        do {
            var response = try await route(request, requestId: requestId, path: path, chat: chat, callerConnected: callerConnected)
            response.headers[HTTPField.Name.requestID] = requestId
            return response
        } catch let error as OpenAIError {
            var response = error.response
            response.headers[HTTPField.Name.requestID] = requestId
            return response
        }
    }

    private func route(
        _ request: Request, requestId: String, path: String, chat: Bool, callerConnected: @escaping @Sendable () -> Bool
    ) async throws -> Response {
        let caller = try await requireCaller(request)
        var body = try await collectBody(request)
        guard let object = (try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: Any] else {
            throw OpenAIError.badRequest("We could not parse the JSON body of your request: it must be a JSON object.")
        }
        let headerDeployment = request.headers[HTTPField.Name.deploymentID]
        guard let deploymentId = (headerDeployment ?? object["model"] as? String)?.lowercased(), !deploymentId.isEmpty else {
            throw OpenAIError.badRequest("you must provide a model parameter (the deployment id) or an X-Deployment-ID header", param: "model")
        }
        guard deploymentId.isPlausibleIdentifier else {
            throw OpenAIError.badRequest("'model' must be a deployment id: printable characters without spaces, at most 128", param: "model")
        }
        if chat {
            guard let messages = object["messages"] as? [Any], !messages.isEmpty else {
                throw OpenAIError.badRequest("'messages' is a required property and must be a non-empty array", param: "messages")
            }
        } else if object["prompt"] == nil {
            throw OpenAIError.badRequest("'prompt' is a required property", param: "prompt")
        }
        try await checkAccess(deploymentId, caller: caller)
        let admission = try admit(orgId: caller.orgId, bytes: body.readableBytes)
        defer { admission.leave() }
        // Engines serve the deployment id as the model name; rewrite only when the caller used another name.
        if (object["model"] as? String) != deploymentId {
            var rewritten = object
            rewritten["model"] = deploymentId
            body = ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: rewritten))
        }
        let stream = object["stream"] as? Bool ?? false
        if stream {
            return try await forwardStreaming(
                deploymentId: deploymentId, path: path, body: body, requestId: requestId, callerConnected: callerConnected, admission: admission.handOver())
        }
        if let header = request.headers[HTTPField.Name.timeoutS], let seconds = Double(header.trimmingCharacters(in: .whitespaces)) {
            let wait = min(60, max(10, seconds))
            return try await forwardWithDeadline(
                deploymentId: deploymentId, orgId: caller.orgId, path: path, body: body, requestId: requestId, wait: .milliseconds(Int64(wait * 1000)))
        }
        return try await forwardBuffered(deploymentId: deploymentId, path: path, body: body, callerConnected: callerConnected).response
    }

    /// A request's body, read whole up to `maxBodyBytes`, or a 413 that states the limit.
    func collectBody(_ request: Request) async throws -> ByteBuffer {
        do {
            return try await request.body.collect(upTo: configuration.maxBodyBytes)
        } catch {
            throw OpenAIError(.contentTooLarge, "Request body is larger than the limit of \(configuration.maxBodyBytes >> 20) MiB", type: "invalid_request_error")
        }
    }

    /// 404 for unknown and foreign deployments alike; a stopped one says so.
    func checkAccess(_ deploymentId: String, caller: Caller) async throws {
        if let route = routes.route(deploymentId) {
            guard route.orgId == caller.orgId else { throw OpenAIError.modelNotFound(deploymentId) }
            if route.status == .stopped { throw Self.stopped(deploymentId) }
            return
        }
        guard let record = try await store.deployment(id: deploymentId), record.orgId == caller.orgId else {
            throw OpenAIError.modelNotFound(deploymentId)
        }
        if record.status == .stopped { throw Self.stopped(deploymentId) }
    }

    static let shuttingDownError = OpenAIError(
        .serviceUnavailable, "The server is shutting down; retry on another instance or in a moment.", type: "server_error",
        code: "shutting_down", retryAfter: 5)

    static func stopped(_ id: String) -> OpenAIError {
        OpenAIError(.notFound, "Deployment '\(id)' is stopped; create a new deployment to serve this model again.", type: "invalid_request_error", param: "model", code: "deployment_stopped")
    }

    /// A ready replica for this request, waiting (bounded, in a bounded queue) while replicas start;
    /// a request to a paused deployment resumes it.
    func acquireReplica(
        _ deploymentId: String, excluding tried: Set<String>, lastFailure: String?, callerConnected: @Sendable () -> Bool
    ) async throws -> RouteTable.Endpoint {
        if isShuttingDown { throw Self.shuttingDownError }
        if let route = routes.route(deploymentId), route.status.isActive, let endpoint = picker.acquire(from: route.endpoints, excluding: tried) {
            return endpoint
        }
        guard picker.enterQueue(deploymentId, limit: configuration.waitQueueLimit) else {
            throw OpenAIError(
                .tooManyRequests, "Deployment '\(deploymentId)' is starting and already has \(configuration.waitQueueLimit) requests waiting; retry shortly.",
                type: "rate_limit_error", code: "wait_queue_full", retryAfter: 5)
        }
        defer { picker.leaveQueue(deploymentId) }
        let deadline = ContinuousClock.now + configuration.replicaWait
        while true {
            if isShuttingDown { throw Self.shuttingDownError }
            // A caller that has gone gives its place in the queue back at once.
            guard callerConnected() else { throw CancellationError() }
            guard let route = routes.route(deploymentId) else {
                // Not yet published (a deployment created a moment ago): wait for the fleet to publish it.
                if ContinuousClock.now > deadline { throw OpenAIError.modelNotFound(deploymentId) }
                await routes.waitForChange(deploymentId, upTo: .milliseconds(500))
                try Task.checkCancellation()
                continue
            }
            switch route.status {
            case .stopped: throw Self.stopped(deploymentId)
            case .paused:
                try await fleet.resumeDeployment(id: deploymentId)
            case .failed:
                throw OpenAIError(.serviceUnavailable, "Deployment '\(deploymentId)' has failed and has no replica to serve it: \(route.reason ?? "see its replicas' fail_reason")", type: "server_error", code: "deployment_failed")
            default: break
            }
            if let endpoint = picker.acquire(from: route.endpoints, excluding: tried) { return endpoint }
            if let lastFailure, !route.endpoints.isEmpty, route.endpoints.allSatisfy({ tried.contains($0.replicaId) }) {
                throw OpenAIError(.serviceUnavailable, "Every ready replica failed this request; last: \(lastFailure)", type: "server_error", code: "replicas_failed")
            }
            if ContinuousClock.now > deadline {
                throw OpenAIError(
                    .serviceUnavailable,
                    "No replica of deployment '\(deploymentId)' became ready within \(configuration.replicaWait.components.seconds) s" + (route.reason.map { ": \($0)" } ?? ""),
                    type: "server_error", code: "no_ready_replica", retryAfter: 10)
            }
            // Woken by the route change itself (a replica ready, a resume); the bound keeps the checks above live.
            await routes.waitForChange(deploymentId, upTo: .milliseconds(500))
            try Task.checkCancellation()
        }
    }
}

extension HTTPField.Name {
    static let requestID = Self("x-request-id")!
    static let deploymentID = Self("x-deployment-id")!
    static let timeoutS = Self("x-timeout-s")!
    static let replicaID = Self("x-lyceum-replica-id")!
}
