import DeploymentStore
import Foundation
import HTTPTypes
import Hummingbird
import InferenceCore
import NIOCore
import Routing

extension Gateway {
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
        let caller = try await requireCaller(request)
        guard id.isPlausibleIdentifier, let record = try await store.result(id: id), record.orgId == caller.orgId else {
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
        let caller = try await requireCaller(request)
        let deployments = try await store.deployments(orgId: caller.orgId, includeTerminated: false)
        let data = deployments.map(modelObject)
        return Response(
            status: .ok, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(string: #"{"object":"list","data":["# + data.joined(separator: ",") + "]}")))
    }

    /// `GET /openai/v1/models/{id}`, as OpenAI serves it: the model object, or a 404 in OpenAI's shape.
    func model(_ request: Request, id: String) async throws -> Response {
        let caller = try await requireCaller(request)
        let d = try await callableDeployment(id, caller: caller)
        return Response(
            status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: modelObject(d))))
    }

    /// The caller's deployment that is not stopped, for a model lookup on either plane; 404 otherwise.
    func callableDeployment(_ id: String, caller: Caller) async throws -> DeploymentRecord {
        let wanted = id.lowercased()
        guard wanted.isPlausibleIdentifier, let d = try await store.deployment(id: wanted), d.orgId == caller.orgId, d.status != .stopped else {
            throw OpenAIError.modelNotFound(id)
        }
        return d
    }

    func modelObject(_ d: DeploymentRecord) -> String {
        #"{"id":"\#(d.id)","object":"model","created":\#(Int(d.createdAt.timeIntervalSince1970)),"owned_by":"lyceum","root":"\#(jsonEscape(d.hfModelId))","status":"\#(d.status.rawValue)"}"#
    }

    /// The caller of a data-plane request: `Authorization: Bearer lk_...`, or Anthropic's `x-api-key`.
    func requireCaller(_ request: Request) async throws -> Caller {
        let header = request.headers[.authorization] ?? request.headers[HTTPField.Name.apiKey].map { "Bearer \($0)" }
        guard let caller = try await authenticator.caller(authorization: header) else { throw OpenAIError.unauthorized }
        return caller
    }
}

extension HTTPField.Name {
    static let apiKey = Self("x-api-key")!
}
