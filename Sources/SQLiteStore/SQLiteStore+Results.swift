import DeploymentStore
import Foundation
import GRDB

extension SQLiteStore {
    /// Records a request as pending unless its result already arrived (the two writes may race).
    public func insertPendingResult(id: String, orgId: String, deploymentId: String, now: Date) async throws {
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
