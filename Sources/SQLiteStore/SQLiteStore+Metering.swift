import DeploymentStore
import Foundation
import GRDB

extension SQLiteStore {
    /// Opens a run for a replica process that was just launched.
    public func openRun(_ run: ReplicaRunRecord) async throws {
        try await write { db in
            var run = run
            try run.insert(db)
        }
    }

    /// Closes a replica's open run (if any) at `at`; called when its process stops, crashes or is reaped.
    public func closeRun(replicaId: String, at: Date) async throws {
        try await write { db in
            try db.execute(
                sql: "UPDATE replica_runs SET endedAt = MAX(startedAt, ?) WHERE replicaId = ? AND endedAt IS NULL",
                arguments: [at, replicaId])
        }
    }

    /// An organisation's runs that overlap `[from, to]`, optionally for one deployment.
    public func runs(orgId: String, deploymentId: String?, from: Date, to: Date) async throws -> [ReplicaRunRecord] {
        try await read { db in
            var q = ReplicaRunRecord.filter(Column("orgId") == orgId)
                .filter(Column("startedAt") <= to)
                .filter(Column("endedAt") == nil || Column("endedAt") >= from)
            if let deploymentId { q = q.filter(Column("deploymentId") == deploymentId) }
            return try q.order(Column("startedAt")).fetchAll(db)
        }
    }
}
