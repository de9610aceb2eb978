import Foundation

/// The outcome of a data-plane request that outlived its caller's `X-Timeout-S`, kept for
/// `GET /openai/v1/chat/completions/{request_id}`.
public struct RequestResultRecord: Codable, Sendable {
    public var id: String
    public var orgId: String
    public var deploymentId: String
    /// `pending`, `completed` or `failed`.
    public var status: String
    /// The engine's (or gateway's) HTTP status for the finished request.
    public var httpStatus: Int?
    /// The response body as the engine sent it (a chat completion, or an error in OpenAI's shape).
    public var body: Data?
    public var createdAt: Date
    public var completedAt: Date?

    public init(id: String, orgId: String, deploymentId: String, status: String, httpStatus: Int?, body: Data?, createdAt: Date, completedAt: Date?) {
        self.id = id
        self.orgId = orgId
        self.deploymentId = deploymentId
        self.status = status
        self.httpStatus = httpStatus
        self.body = body
        self.createdAt = createdAt
        self.completedAt = completedAt
    }
}
