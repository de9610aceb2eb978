import AsyncHTTPClient
import Controller
import DeploymentStore
import Foundation
import HTTPTypes
import Hummingbird
import InferenceCore
import NIOCore
import NIOHTTP1
import Synchronization

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

    public init() {}
}

/// The OpenAI-compatible data plane: one endpoint, every deployment behind it, load-balanced and retried.
public final class Gateway: Sendable {
    let store: DeploymentStore
    let authenticator: Authenticator
    let routes: RouteTable
    let controller: Controller
    let client: HTTPClient
    let background: BackgroundRequests
    let configuration: GatewayConfiguration
    public let picker = ReplicaPicker()
    public let stats: GatewayStats
    let startedAt = ContinuousClock.now
    /// When stored request results were last pruned (they are kept 24 hours, at least the promised hour).
    let lastPrune = Mutex(ContinuousClock.now)

    public init(
        store: DeploymentStore, authenticator: Authenticator, controller: Controller, client: HTTPClient,
        background: BackgroundRequests, stats: GatewayStats = GatewayStats(), configuration: GatewayConfiguration = .init()
    ) {
        self.store = store
        self.authenticator = authenticator
        self.routes = controller.routes
        self.controller = controller
        self.client = client
        self.background = background
        self.stats = stats
        self.configuration = configuration
    }

    public func add<Context: RequestContext>(to router: Router<Context>) {
        let v1 = router.group("openai/v1").add(middleware: OpenAIErrorMiddleware<Context>())
        v1.post("chat/completions") { [self] request, _ in try await complete(request, path: "/v1/chat/completions", chat: true) }
        v1.post("completions") { [self] request, _ in try await complete(request, path: "/v1/completions", chat: false) }
        v1.get("models") { [self] request, _ in try await models(request) }
        v1.get("chat/completions/:request_id") { [self] request, context in
            try await storedResult(request, id: try context.parameters.require("request_id"))
        }
    }

    // MARK: Completions

    /// One request: authenticate, resolve the deployment, then forward (streaming, waiting, or bounded wait).
    func complete(_ request: Request, path: String, chat: Bool) async throws -> Response {
        let requestId = newRequestID()
        do {
            var response = try await route(request, requestId: requestId, path: path, chat: chat)
            response.headers[HTTPField.Name.requestID] = requestId
            return response
        } catch let error as OpenAIError {
            var response = error.response
            response.headers[HTTPField.Name.requestID] = requestId
            return response
        }
    }

    private func route(_ request: Request, requestId: String, path: String, chat: Bool) async throws -> Response {
        guard let caller = try await authenticator.caller(authorization: request.headers[.authorization]) else {
            throw OpenAIError.unauthorized
        }
        var body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: configuration.maxBodyBytes)
        } catch {
            throw OpenAIError(.contentTooLarge, "Request body is larger than the limit of \(configuration.maxBodyBytes >> 20) MiB", type: "invalid_request_error")
        }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: Any] else {
            throw OpenAIError.badRequest("We could not parse the JSON body of your request: it must be a JSON object.")
        }
        let headerDeployment = request.headers[HTTPField.Name.deploymentID]
        guard let deploymentId = (headerDeployment ?? object["model"] as? String)?.lowercased(), !deploymentId.isEmpty else {
            throw OpenAIError.badRequest("you must provide a model parameter (the deployment id) or an X-Deployment-ID header", param: "model")
        }
        if chat {
            guard let messages = object["messages"] as? [Any], !messages.isEmpty else {
                throw OpenAIError.badRequest("'messages' is a required property and must be a non-empty array", param: "messages")
            }
        } else if object["prompt"] == nil {
            throw OpenAIError.badRequest("'prompt' is a required property", param: "prompt")
        }
        try await checkAccess(deploymentId, caller: caller)
        // Engines serve the deployment id as the model name; rewrite only when the caller used another name.
        if (object["model"] as? String) != deploymentId {
            var rewritten = object
            rewritten["model"] = deploymentId
            body = ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: rewritten))
        }
        let stream = object["stream"] as? Bool ?? false
        if stream {
            return try await forwardStreaming(deploymentId: deploymentId, path: path, body: body, requestId: requestId)
        }
        if let header = request.headers[HTTPField.Name.timeoutS], let seconds = Double(header.trimmingCharacters(in: .whitespaces)) {
            let wait = min(60, max(10, seconds))
            return try await forwardWithDeadline(
                deploymentId: deploymentId, orgId: caller.orgId, path: path, body: body, requestId: requestId, wait: .milliseconds(Int64(wait * 1000)))
        }
        return try await forwardBuffered(deploymentId: deploymentId, path: path, body: body).response
    }

    /// 404 for unknown and foreign deployments alike; a stopped one says so.
    private func checkAccess(_ deploymentId: String, caller: Caller) async throws {
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

    static func stopped(_ id: String) -> OpenAIError {
        OpenAIError(.notFound, "Deployment '\(id)' is stopped; create a new deployment to serve this model again.", type: "invalid_request_error", param: "model", code: "deployment_stopped")
    }

    /// A ready replica for this request, waiting (bounded, in a bounded queue) while replicas start;
    /// a request to a paused deployment resumes it.
    private func acquireReplica(_ deploymentId: String, excluding tried: Set<String>, lastFailure: String?) async throws -> RouteTable.Endpoint {
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
            guard let route = routes.route(deploymentId) else {
                // Not yet published (a deployment created a moment ago): wait for the controller.
                if ContinuousClock.now > deadline { throw OpenAIError.modelNotFound(deploymentId) }
                try await Task.sleep(for: .milliseconds(25))
                continue
            }
            switch route.status {
            case .stopped: throw Self.stopped(deploymentId)
            case .paused:
                try await controller.resumeDeployment(id: deploymentId)
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
            try await Task.sleep(for: .milliseconds(25))
        }
    }

    private func upstreamRequest(_ endpoint: RouteTable.Endpoint, path: String, body: ByteBuffer) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(endpoint.port)\(path)")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(body)
        return request
    }

    private func timeAmount(_ d: Duration) -> TimeAmount { .seconds(d.components.seconds) }

    /// A finished upstream answer, held whole: nothing reached the caller yet, so any failure could be retried.
    struct Answer: Sendable {
        var status: HTTPResponse.Status
        var contentType: String
        var body: ByteBuffer
        var replicaId: String

        var response: Response {
            Response(
                status: status,
                headers: [.contentType: contentType, HTTPField.Name.replicaID: replicaId],
                body: .init(byteBuffer: body))
        }
    }

    /// Non-streaming: the whole answer is read before anything is sent, so a replica that refuses, resets,
    /// dies mid-generation or answers 5xx is retried on another one.
    func forwardBuffered(deploymentId: String, path: String, body: ByteBuffer) async throws -> Answer {
        let start = ContinuousClock.now
        stats.begin(deploymentId: deploymentId)
        var failed = true
        defer { stats.end(deploymentId: deploymentId, latency: ContinuousClock.now - start, failed: failed) }
        var tried = Set<String>()
        var lastFailure: String?
        for attempt in 1...configuration.maxAttempts {
            let endpoint = try await acquireReplica(deploymentId, excluding: tried, lastFailure: lastFailure)
            tried.insert(endpoint.replicaId)
            let attemptStart = ContinuousClock.now
            stats.begin(deploymentId: deploymentId, replicaId: endpoint.replicaId)
            do {
                let response = try await client.execute(upstreamRequest(endpoint, path: path, body: body), timeout: timeAmount(configuration.upstreamTimeout))
                let data = try await response.body.collect(upTo: 64 << 20)
                let serverError = response.status.code >= 500
                if serverError && attempt < configuration.maxAttempts {
                    lastFailure = attemptFailed(deploymentId, endpoint, since: attemptStart, "answered \(response.status.code)")
                    continue
                }
                picker.release(endpoint.replicaId)
                stats.end(deploymentId: deploymentId, replicaId: endpoint.replicaId, latency: ContinuousClock.now - attemptStart, failed: serverError)
                failed = serverError
                return Answer(
                    status: HTTPResponse.Status(code: Int(response.status.code)),
                    contentType: response.headers.first(name: "content-type") ?? "application/json", body: data,
                    replicaId: endpoint.replicaId)
            } catch {
                lastFailure = attemptFailed(deploymentId, endpoint, since: attemptStart, "\(error)")
            }
        }
        throw OpenAIError(.serviceUnavailable, "The request failed on \(tried.count) replicas; last: \(lastFailure ?? "unknown")", type: "server_error", code: "replicas_failed")
    }

    /// One attempt failed before anything reached the caller: count it against the replica, avoid that
    /// replica for a while and have the health checker look at it now; returns the failure, for the message.
    private func attemptFailed(_ deploymentId: String, _ endpoint: RouteTable.Endpoint, since: ContinuousClock.Instant, _ why: String) -> String {
        picker.release(endpoint.replicaId)
        stats.end(deploymentId: deploymentId, replicaId: endpoint.replicaId, latency: ContinuousClock.now - since, failed: true)
        picker.markSuspect(endpoint.replicaId)
        controller.pokeHealth()
        return "replica \(endpoint.replicaId): \(why)"
    }

    /// Streaming: retried only until the replica's answer head arrives; from then on bytes pass straight
    /// through. A replica that dies mid-stream ends the stream with an error event in OpenAI's shape.
    func forwardStreaming(deploymentId: String, path: String, body: ByteBuffer, requestId: String) async throws -> Response {
        let start = ContinuousClock.now
        stats.begin(deploymentId: deploymentId)
        var tried = Set<String>()
        var lastFailure: String?
        for attempt in 1...configuration.maxAttempts {
            let endpoint: RouteTable.Endpoint
            do {
                endpoint = try await acquireReplica(deploymentId, excluding: tried, lastFailure: lastFailure)
            } catch {
                stats.end(deploymentId: deploymentId, latency: ContinuousClock.now - start, failed: true)
                throw error
            }
            tried.insert(endpoint.replicaId)
            let attemptStart = ContinuousClock.now
            stats.begin(deploymentId: deploymentId, replicaId: endpoint.replicaId)
            let upstream: HTTPClientResponse
            do {
                upstream = try await client.execute(upstreamRequest(endpoint, path: path, body: body), timeout: timeAmount(configuration.upstreamTimeout))
            } catch {
                lastFailure = attemptFailed(deploymentId, endpoint, since: attemptStart, "\(error)")
                continue
            }
            if upstream.status.code >= 500 && attempt < configuration.maxAttempts {
                _ = try? await upstream.body.collect(upTo: 1 << 20)
                lastFailure = attemptFailed(deploymentId, endpoint, since: attemptStart, "answered \(upstream.status.code)")
                continue
            }
            let (picker, stats) = (self.picker, self.stats)
            let ok = upstream.status.code < 500
            let responseBody = ResponseBody { writer in
                var broken = false
                defer {
                    picker.release(endpoint.replicaId)
                    let now = ContinuousClock.now
                    stats.end(deploymentId: deploymentId, replicaId: endpoint.replicaId, latency: now - attemptStart, failed: broken || !ok)
                    stats.end(deploymentId: deploymentId, latency: now - start, failed: broken || !ok)
                }
                var iterator = upstream.body.makeAsyncIterator()
                var endsCleanly = true
                while true {
                    let chunk: ByteBuffer?
                    do {
                        chunk = try await iterator.next()
                    } catch {
                        broken = true
                        break
                    }
                    guard let chunk else { break }
                    endsCleanly = chunk.readableBytesView.suffix(2).elementsEqual([10, 10])
                    // Throws when the caller has gone; leaving the loop drops the upstream request.
                    try await writer.write(chunk)
                }
                if broken {
                    let error = OpenAIError(.badGateway, "The replica serving this stream failed mid-stream; the answer is incomplete.", type: "server_error", code: "replica_failed")
                    try await writer.write(ByteBuffer(string: (endsCleanly ? "" : "\n\n") + "data: \(error.body)\n\n"))
                }
                try await writer.finish(nil)
            }
            return Response(
                status: HTTPResponse.Status(code: Int(upstream.status.code)),
                headers: [
                    .contentType: upstream.headers.first(name: "content-type") ?? "text/event-stream",
                    .cacheControl: "no-cache",
                    HTTPField.Name.replicaID: endpoint.replicaId,
                ],
                body: responseBody)
        }
        stats.end(deploymentId: deploymentId, latency: ContinuousClock.now - start, failed: true)
        throw OpenAIError(.serviceUnavailable, "The request failed on \(tried.count) replicas; last: \(lastFailure ?? "unknown")", type: "server_error", code: "replicas_failed")
    }

    /// `X-Timeout-S`: wait that long; past it, answer 202 with a request id and let the request finish
    /// in the background, its result kept in the store.
    func forwardWithDeadline(deploymentId: String, orgId: String, path: String, body: ByteBuffer, requestId: String, wait: Duration) async throws -> Response {
        let box = ResultBox<Result<Answer, OpenAIError>>()
        background.submit { [self] in
            let outcome: Result<Answer, OpenAIError>
            do {
                outcome = .success(try await forwardBuffered(deploymentId: deploymentId, path: path, body: body))
            } catch let error as OpenAIError {
                outcome = .failure(error)
            } catch {
                outcome = .failure(OpenAIError(.internalServerError, "\(error)", type: "server_error"))
            }
            if !box.deliver(outcome) {
                let (status, data): (Int, ByteBuffer) = switch outcome {
                case .success(let a): (Int(a.status.code), a.body)
                case .failure(let e): (Int(e.status.code), ByteBuffer(string: e.body))
                }
                try? await store.saveResult(
                    RequestResultRecord(
                        id: requestId, orgId: orgId, deploymentId: deploymentId,
                        status: (200..<300).contains(status) ? "completed" : "failed", httpStatus: status,
                        body: Data(buffer: data), createdAt: Date(), completedAt: Date()))
            }
        }
        if let outcome = await box.wait(timeout: wait) {
            return try outcome.get().response
        }
        try await store.insertPendingResult(id: requestId, orgId: orgId, deploymentId: deploymentId)
        if lastPrune.withLock({ last in
            guard ContinuousClock.now - last > .seconds(3600) else { return false }
            last = ContinuousClock.now
            return true
        }) {
            try? await store.pruneResults(olderThan: Date().addingTimeInterval(-86400))
        }
        return Response(
            status: .accepted, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(string: #"{"request_id":"\#(requestId)","status":"pending"}"#)))
    }

    // MARK: Other routes

    /// Prometheus text: the gateway's request series and the server's own gauges.
    public func metrics() -> String {
        let routes = self.routes.snapshot()
        var out = stats.renderPrometheus()
        out += "# HELP lyceum_server_uptime_seconds Seconds since the server started.\n# TYPE lyceum_server_uptime_seconds gauge\n"
        out += "lyceum_server_uptime_seconds \((ContinuousClock.now - startedAt).seconds)\n"
        out += "# HELP lyceum_deployments Deployments known to the gateway, by status.\n# TYPE lyceum_deployments gauge\n"
        let byStatus = Dictionary(grouping: routes.values, by: \.status.rawValue).mapValues(\.count)
        for status in DeploymentStatus.allCases {
            out += "lyceum_deployments{status=\"\(status.rawValue)\"} \(byStatus[status.rawValue] ?? 0)\n"
        }
        out += "# HELP lyceum_deployment_ready_replicas Replicas ready to take requests.\n# TYPE lyceum_deployment_ready_replicas gauge\n"
        for (id, route) in routes.sorted(by: { $0.key < $1.key }) where route.status != .stopped {
            out += "lyceum_deployment_ready_replicas{deployment=\"\(id)\"} \(route.endpoints.count)\n"
        }
        return out
    }

    func storedResult(_ request: Request, id: String) async throws -> Response {
        guard let caller = try await authenticator.caller(authorization: request.headers[.authorization]) else {
            throw OpenAIError.unauthorized
        }
        guard let record = try await store.result(id: id), record.orgId == caller.orgId else {
            throw OpenAIError(.notFound, "No request with id '\(id)' (results are kept for at least an hour)", type: "invalid_request_error", code: "request_not_found")
        }
        let text: String
        switch record.status {
        case "completed":
            text = #"{"request_id":"\#(id)","status":"completed","result":"# + String(decoding: record.body ?? Data("null".utf8), as: UTF8.self) + "}"
        case "failed":
            let body = record.body.flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
            let error = body?["error"].flatMap { try? JSONSerialization.data(withJSONObject: $0) }.map { String(decoding: $0, as: UTF8.self) }
                ?? #"{"message":"the request failed","type":"server_error","param":null,"code":null}"#
            text = #"{"request_id":"\#(id)","status":"failed","error":"# + error + "}"
        default:
            text = #"{"request_id":"\#(id)","status":"pending"}"#
        }
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    func models(_ request: Request) async throws -> Response {
        guard let caller = try await authenticator.caller(authorization: request.headers[.authorization]) else {
            throw OpenAIError.unauthorized
        }
        let deployments = try await store.deployments(orgId: caller.orgId, includeTerminated: false)
        let data = deployments.map { d in
            #"{"id":"\#(d.id)","object":"model","created":\#(Int(d.createdAt.timeIntervalSince1970)),"owned_by":"lyceum","root":"\#(jsonEscape(d.hfModelId))","status":"\#(d.status.rawValue)"}"#
        }
        return Response(
            status: .ok, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(string: #"{"object":"list","data":["# + data.joined(separator: ",") + "]}")))
    }
}

extension HTTPField.Name {
    static let requestID = Self("x-request-id")!
    static let deploymentID = Self("x-deployment-id")!
    static let timeoutS = Self("x-timeout-s")!
    static let replicaID = Self("x-lyceum-replica-id")!
}
