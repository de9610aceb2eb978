import Foundation
import GRDB

/// The outcome of a data-plane request that outlived its caller's `X-Timeout-S`, kept for
/// `GET /openai/v1/chat/completions/{request_id}`.
public struct RequestResultRecord: Codable, Sendable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "request_results"
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

extension DeploymentStore {
    /// Records a request as pending unless its result already arrived (the two writes may race).
    public func insertPendingResult(id: String, orgId: String, deploymentId: String, now: Date = Date()) async throws {
        try await write { db in
            try db.execute(
                sql: "INSERT OR IGNORE INTO request_results (id, orgId, deploymentId, status, createdAt) VALUES (?, ?, ?, 'pending', ?)",
                arguments: [id, orgId, deploymentId, now])
        }
    }

    /// Stores a finished request's result, replacing its pending row if there is one.
    public func saveResult(_ record: RequestResultRecord) async throws {
        try await write { db in try record.save(db) }
    }

    public func result(id: String) async throws -> RequestResultRecord? {
        try await read { db in try RequestResultRecord.fetchOne(db, key: id) }
    }

    /// Drops results older than `age`; they are kept at least an hour.
    public func pruneResults(olderThan cutoff: Date) async throws {
        try await write { db in
            _ = try RequestResultRecord.filter(Column("createdAt") < cutoff).deleteAll(db)
        }
    }
}
