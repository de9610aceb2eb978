import Foundation
import GRDB

/// One replica process's billed interval: from its launch until its process stopped.
/// An open run (no `endedAt`) is a replica running now.
public struct ReplicaRunRecord: Codable, Sendable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "replica_runs"
    public var id: Int64?
    public var replicaId: String
    public var deploymentId: String
    public var orgId: String
    public var hardwareProfile: String
    /// The price in force when the run began, per replica-hour.
    public var pricePerHour: String
    public var startedAt: Date
    public var endedAt: Date?

    public init(replicaId: String, deploymentId: String, orgId: String, hardwareProfile: String, pricePerHour: String, startedAt: Date) {
        self.replicaId = replicaId
        self.deploymentId = deploymentId
        self.orgId = orgId
        self.hardwareProfile = hardwareProfile
        self.pricePerHour = pricePerHour
        self.startedAt = startedAt
    }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }

    /// Seconds of this run inside `[from, to]`, with an open run counted up to `now`.
    public func seconds(from: Date, to: Date, now: Date) -> Double {
        let end = min(endedAt ?? now, to)
        let start = max(startedAt, from)
        return max(0, end.timeIntervalSince(start))
    }
}

extension DeploymentStore {
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
