import AsyncHTTPClient
import DeploymentStore
import Foundation
import HTTPTypes
import Hummingbird
import InferenceCore
import NIOCore

/// The Anthropic Messages API on every deployment (`/anthropic/v1`), translated to and from the engine's
/// chat completions, so Claude Code and the `anthropic` SDKs run on a user's own deployment. `model` is the
/// deployment id; the key comes as `x-api-key` or `Authorization: Bearer`.
extension Gateway {
    func addAnthropic<Context: GatewayRequestContext>(to router: Router<Context>) {
        let v1 = router.group("anthropic/v1").add(middleware: AnthropicErrorMiddleware<Context>())
        v1.post("messages") { [self] request, context in
            try await anthropicMessages(request, callerConnected: { context.callerConnected })
        }
        v1.get("models") { [self] request, _ in try await anthropicModels(request) }
        v1.get("models/:model_id") { [self] request, context in
            try await anthropicModel(request, id: try context.parameters.require("model_id"))
        }
    }

    func anthropicMessages(_ request: Request, callerConnected: @escaping @Sendable () -> Bool) async throws -> Response {
        let caller = try await requireCaller(request)
        let raw = try await collectBody(request)
        let data = Data(buffer: raw)
        let named = ((try? JSONSerialization.jsonObject(with: data)) as? [String: Any])?["model"] as? String
        // Claude Code pinned to a deployment sends its own model name and the deployment in X-Deployment-ID.
        let header = request.headers[HTTPField.Name.deploymentID]
        guard let deploymentId = (header ?? named)?.lowercased(), !deploymentId.isEmpty else {
            throw OpenAIError.badRequest("model: Field required (the deployment id)", param: "model")
        }
        guard deploymentId.isPlausibleIdentifier else { throw OpenAIError.modelNotFound(named ?? "") }
        let translated = try AnthropicTranslation.chatRequest(fromMessages: data, model: deploymentId)
        try await checkAccess(deploymentId, caller: caller)
        let admission = try admit(orgId: caller.orgId, bytes: raw.readableBytes)
        defer { admission.leave() }
        let body = ByteBuffer(bytes: translated.body)
        let model = named ?? deploymentId
        if translated.stream {
            let upstream = try await forwardStreaming(
                deploymentId: deploymentId, path: "/v1/chat/completions", body: body, requestId: newRequestID(),
                callerConnected: callerConnected, admission: admission.handOver())
            let ok = upstream.status == .ok
            let inner = upstream.body
            return Response(
                status: upstream.status,
                headers: [.contentType: ok ? "text/event-stream" : "application/json", .cacheControl: "no-cache"],
                body: ResponseBody { writer in
                    try await inner.write(AnthropicBodyWriter(parent: writer, mode: ok ? .stream(AnthropicStreamTranslator(model: model)) : .error(status: upstream.status.code)))
                })
        }
        let answer = try await forwardBuffered(deploymentId: deploymentId, path: "/v1/chat/completions", body: body, callerConnected: callerConnected)
        guard answer.status == .ok else {
            throw OpenAIError(answer.status, Self.upstreamMessage(answer.body), type: "invalid_request_error")
        }
        guard let message = AnthropicTranslation.messageResponse(fromChat: Data(buffer: answer.body), model: model) else {
            throw OpenAIError(.badGateway, "The replica's answer could not be read as a chat completion.", type: "server_error")
        }
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: message)))
    }

    /// The deployments this key can call, in Anthropic's model list shape.
    func anthropicModels(_ request: Request) async throws -> Response {
        let caller = try await requireCaller(request)
        let deployments = try await store.deployments(orgId: caller.orgId, includeTerminated: false)
        let data = deployments.map(anthropicModelObject)
        let first: String = deployments.first.map { "\"\($0.id)\"" } ?? "null"
        let last: String = deployments.last.map { "\"\($0.id)\"" } ?? "null"
        let list: String = data.joined(separator: ",")
        let text = "{\"data\":[\(list)],\"has_more\":false,\"first_id\":\(first),\"last_id\":\(last)}"
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    func anthropicModel(_ request: Request, id: String) async throws -> Response {
        let caller = try await requireCaller(request)
        let d = try await callableDeployment(id, caller: caller)
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: anthropicModelObject(d))))
    }

    func anthropicModelObject(_ d: DeploymentRecord) -> String {
        #"{"type":"model","id":"\#(d.id)","display_name":"\#(jsonEscape(d.hfModelId))","created_at":"\#(WireJSON.timestamp(d.createdAt))"}"#
    }

    /// The message inside an engine's OpenAI-shaped error body, or the body itself.
    static func upstreamMessage(_ body: ByteBuffer) -> String {
        let object = (try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: Any]
        if let error = object?["error"] as? [String: Any], let message = error["message"] as? String { return message }
        if let message = object?["message"] as? String { return message }
        return String(buffer: body).prefix(500).description
    }
}

/// Writes an upstream chat-completions body as Anthropic's: a stream translated event by event, or an
/// engine's error collected and re-rendered in Anthropic's error shape.
struct AnthropicBodyWriter: ResponseBodyWriter {
    enum Mode {
        case stream(AnthropicStreamTranslator)
        case error(status: Int, collected: ByteBuffer = ByteBuffer())
    }

    var parent: any ResponseBodyWriter
    var mode: Mode

    mutating func write(_ buffer: ByteBuffer) async throws {
        switch mode {
        case .stream(var translator):
            let out = translator.feed(buffer.readableBytesView)
            mode = .stream(translator)
            if !out.isEmpty { try await parent.write(ByteBuffer(bytes: out)) }
        case .error(let status, var collected):
            var copy = buffer
            if collected.readableBytes < 1 << 20 { collected.writeBuffer(&copy) }
            mode = .error(status: status, collected: collected)
        }
    }

    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {
        switch mode {
        case .stream(var translator):
            let out = translator.finish()
            if !out.isEmpty { try await parent.write(ByteBuffer(bytes: out)) }
        case .error(let status, let collected):
            let body = AnthropicTranslation.errorBody(type: AnthropicTranslation.errorType(forStatus: status), message: Gateway.upstreamMessage(collected))
            try await parent.write(ByteBuffer(string: body))
        }
        try await parent.finish(trailingHeaders)
    }
}

/// Every error under `/anthropic/v1` in Anthropic's shape, so the SDKs raise their matching exception.
struct AnthropicErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as OpenAIError {
            return Self.respond(Int(error.status.code), error.message, retryAfter: error.retryAfter)
        } catch let error as AnthropicRequestError {
            return Self.respond(400, error.message, retryAfter: nil)
        } catch is NIOTooManyBytesError {
            return Self.respond(413, "Request body is larger than the limit", retryAfter: nil)
        } catch is CancellationError {
            return Self.respond(499, "The caller closed the connection before the answer.", retryAfter: nil)
        } catch let error as HTTPError {
            return Self.respond(Int(error.status.code), error.body ?? error.status.reasonPhrase, retryAfter: nil)
        } catch {
            context.logger.error("anthropic request failed", metadata: ["error": "\(error)"])
            return Self.respond(500, "Internal server error; see the server log", retryAfter: nil)
        }
    }

    static func respond(_ status: Int, _ message: String, retryAfter: Int?) -> Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        if let retryAfter { headers[.retryAfter] = String(retryAfter) }
        let body = AnthropicTranslation.errorBody(type: AnthropicTranslation.errorType(forStatus: status), message: message)
        return Response(status: HTTPResponse.Status(code: status), headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}
