import DeploymentStore
import Foundation
import GRDB
import InferenceCore

/// The platform's state in one SQLite file (WAL): everything a restart needs. The embedded default store.
///
/// Every method uses GRDB's async API, so no database work blocks the cooperative pool.
/// Multi-row changes happen in one transaction: a refused or interrupted request leaves nothing half-written.
public final class SQLiteStore: DeploymentStore {
    private let db: DatabasePool

    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    public init(path: String) throws {
        var config = Configuration()
        config.busyMode = .timeout(5)
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
        }
        db = try DatabasePool(path: path, configuration: config)
        try Schema.migrator.migrate(db)
    }

    func write<T: Sendable>(_ body: @Sendable @escaping (Database) throws -> T) async throws -> T {
        try await db.write(body)
    }

    func read<T: Sendable>(_ body: @Sendable @escaping (Database) throws -> T) async throws -> T {
        try await db.read(body)
    }

    // MARK: Organisations and keys

    public func organization(named name: String) async throws -> OrganizationRecord? {
        try await db.read { db in try OrganizationRecord.filter(Column("name") == name).fetchOne(db) }
    }

    /// Returns the organisation with this name, creating it if it does not exist.
    public func ensureOrganization(named name: String, now: Date) async throws -> OrganizationRecord {
        try await db.write { db in
            if let org = try OrganizationRecord.filter(Column("name") == name).fetchOne(db) { return org }
            let org = OrganizationRecord(id: UUID().uuidString.lowercased(), name: name, createdAt: now)
            try org.insert(db)
            return org
        }
    }

    public func insertKey(_ key: APIKeyRecord) async throws {
        try await db.write { db in try key.insert(db) }
    }

    public func key(hash: String) async throws -> APIKeyRecord? {
        try await db.read { db in try APIKeyRecord.filter(Column("keyHash") == hash).fetchOne(db) }
    }

    public func hasAdminKey() async throws -> Bool {
        try await db.read { db in try APIKeyRecord.filter(Column("isAdmin") == true).fetchCount(db) > 0 }
    }

    // MARK: Deployments

    public func insert(_ deployment: DeploymentRecord, event: String) async throws {
        try await db.write { db in
            try deployment.insert(db)
            var e = EventRecord(
                id: nil, deploymentId: deployment.id, at: deployment.createdAt, kind: "created", message: event)
            try e.insert(db)
        }
    }

    public func deployment(id: String) async throws -> DeploymentRecord? {
        try await db.read { db in try DeploymentRecord.fetchOne(db, key: id) }
    }

    /// An organisation's deployments, newest first; a page of them when `limit` is given.
    public func deployments(orgId: String, includeTerminated: Bool, limit: Int?, offset: Int) async throws -> [DeploymentRecord] {
        try await db.read { db in
            var q = DeploymentRecord.filter(Column("orgId") == orgId)
            if !includeTerminated { q = q.filter(Column("status") != DeploymentStatus.stopped.rawValue) }
            q = q.order(Column("createdAt").desc, Column("id"))
            if limit != nil || offset > 0 { q = q.limit(limit ?? 1000, offset: offset) }
            return try q.fetchAll(db)
        }
    }

    /// Every deployment the controller must look after (created, provisioning, running, paused, failed).
    public func unstoppedDeployments() async throws -> [DeploymentRecord] {
        try await db.read { db in
            try DeploymentRecord.filter(Column("status") != DeploymentStatus.stopped.rawValue).fetchAll(db)
        }
    }

    /// Applies `change` to the stored deployment in one transaction; returns the new record, or nil if unknown.
    @discardableResult
    public func updateDeployment(
        id: String, now: Date, _ change: @Sendable @escaping (inout DeploymentRecord) -> Void
    ) async throws -> DeploymentRecord? {
        try await db.write { db in
            guard var d = try DeploymentRecord.fetchOne(db, key: id) else { return nil }
            change(&d)
            d.updatedAt = now
            try d.update(db)
            return d
        }
    }

    // MARK: Replicas

    public func insert(_ replica: ReplicaRecord) async throws {
        try await db.write { db in try replica.insert(db) }
    }

    public func replica(id: String) async throws -> ReplicaRecord? {
        try await db.read { db in try ReplicaRecord.fetchOne(db, key: id) }
    }

    public func replicas(deploymentId: String) async throws -> [ReplicaRecord] {
        try await db.read { db in
            try ReplicaRecord.filter(Column("deploymentId") == deploymentId).order(Column("createdAt")).fetchAll(db)
        }
    }

    /// Replicas of several deployments at once, grouped by deployment id (for list answers).
    public func replicas(deploymentIds: [String]) async throws -> [String: [ReplicaRecord]] {
        try await db.read { db in
            let rows = try ReplicaRecord.filter(deploymentIds.contains(Column("deploymentId")))
                .order(Column("createdAt")).fetchAll(db)
            return Dictionary(grouping: rows, by: \.deploymentId)
        }
    }

    /// Replicas that have or may have a process: what recovery must look at after a restart.
    public func liveReplicas() async throws -> [ReplicaRecord] {
        let live = ReplicaStatus.allCases.filter(\.isLive).map(\.rawValue)
        return try await db.read { db in try ReplicaRecord.filter(live.contains(Column("status"))).fetchAll(db) }
    }

    public func save(_ replica: ReplicaRecord) async throws {
        try await db.write { db in try replica.save(db) }
    }

    /// Applies `change` to the stored replica in one transaction; returns the new record, or nil if unknown.
    @discardableResult
    public func updateReplica(
        id: String, _ change: @Sendable @escaping (inout ReplicaRecord) -> Void
    ) async throws -> ReplicaRecord? {
        try await db.write { db in
            guard var r = try ReplicaRecord.fetchOne(db, key: id) else { return nil }
            change(&r)
            try r.update(db)
            return r
        }
    }

    // MARK: Events

    public func addEvent(deploymentId: String, kind: String, message: String, at: Date) async throws {
        try await db.write { db in
            var e = EventRecord(id: nil, deploymentId: deploymentId, at: at, kind: kind, message: message)
            try e.insert(db)
        }
    }

    public func events(deploymentId: String, limit: Int) async throws -> [EventRecord] {
        try await db.read { db in
            try EventRecord.filter(Column("deploymentId") == deploymentId).order(Column("id").desc).limit(limit)
                .fetchAll(db).reversed()
        }
    }
}
