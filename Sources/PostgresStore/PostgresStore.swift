import DeploymentStore
import Foundation
import InferenceCore
import Logging
import PostgresNIO

/// The platform's state in PostgreSQL, so that several server instances share it: the same contract as the
/// SQLite store (`StoreContractTests` runs both), on postgres-nio's connection pool. Changes that read
/// and write one record run in one transaction with the row locked (`FOR UPDATE`).
public final class PostgresStore: DeploymentStore {
    let client: PostgresClient
    let logger: Logger
    /// Runs the pool; nil in a fenced view, which shares its parent's pool.
    private let runner: Task<Void, Never>?
    /// Set in the leader's view of the store: every write checks the leader epoch first.
    let fence: FleetFence?

    /// Connects a pool to `url` (`postgres://user[:password]@host[:port]/database`) and applies pending
    /// migrations. Call `shutdown()` when done.
    ///
    /// A transaction left open longer than `idleTransactionTimeout` by its client (an instance frozen in the
    /// middle of one) is ended by the server, so its row locks cannot hold up the rest of the fleet.
    public convenience init(url: String, idleTransactionTimeout: Duration = .seconds(5), logger: Logger) async throws {
        var configuration = try Self.configuration(url: url)
        let millis = max(1000, idleTransactionTimeout.components.seconds * 1000 + idleTransactionTimeout.components.attoseconds / 1_000_000_000_000_000)
        configuration.options.additionalStartupParameters = [("idle_in_transaction_session_timeout", "\(millis)")]
        try await self.init(configuration: configuration, logger: logger)
    }

    public init(configuration: PostgresClient.Configuration, logger: Logger) async throws {
        client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        self.logger = logger
        fence = nil
        let client = client
        let runner = Task { await client.run() }
        self.runner = runner
        do {
            try await migrate()
        } catch {
            runner.cancel()
            await runner.value
            throw error
        }
    }

    private init(sharing parent: PostgresStore, fence: FleetFence) {
        client = parent.client
        logger = parent.logger
        runner = nil
        self.fence = fence
    }

    /// The same database, seen by the leader of `fence.epoch`: each write runs in a transaction that first
    /// checks the stored leader epoch (under a share lock, so a takeover waits for writes under way) and
    /// changes nothing once another instance has taken over.
    public func fenced(by fence: FleetFence) -> PostgresStore {
        PostgresStore(sharing: self, fence: fence)
    }

    /// Closes the pool's connections (a fenced view leaves them to its parent).
    public func shutdown() async {
        guard let runner else { return }
        runner.cancel()
        await runner.value
    }

    /// A pool configuration from a `postgres://` URL; TLS is off (a loopback or private-network server).
    public static func configuration(url: String) throws -> PostgresClient.Configuration {
        guard let parts = URLComponents(string: url), ["postgres", "postgresql"].contains(parts.scheme ?? ""),
            let host = parts.host, !host.isEmpty, let user = parts.user, !user.isEmpty
        else {
            throw PostgresStoreError("store URL must look like postgres://user[:password]@host[:port]/database, not \(url)")
        }
        let database = parts.path.hasPrefix("/") ? String(parts.path.dropFirst()) : parts.path
        var configuration = PostgresClient.Configuration(
            host: host, port: parts.port ?? 5432, username: user, password: parts.password, database: database.isEmpty ? nil : database,
            tls: .disable)
        configuration.options.maximumConnections = 16
        return configuration
    }

    /// Applies each migration not yet recorded, in its own transaction under the migration lock.
    func migrate() async throws {
        for migration in PostgresSchema.migrations {
            try await client.withTransaction(logger: logger) { conn in
                try await conn.query("SELECT pg_advisory_xact_lock(\(PostgresSchema.migrationLock))", logger: logger)
                try await conn.query(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)", logger: logger)
                let applied = try await conn.query("SELECT 1 FROM schema_migrations WHERE version = \(migration.version)", logger: logger).collect()
                guard applied.isEmpty else { return }
                for statement in migration.statements { try await conn.query(PostgresQuery(unsafeSQL: statement), logger: logger) }
                try await conn.query("INSERT INTO schema_migrations (version, applied_at) VALUES (\(migration.version), now())", logger: logger)
                logger.info("applied store migration", metadata: ["migration.version": "\(migration.version)"])
            }
        }
    }

    /// Every row of a query, decoded.
    func all<T>(_ query: PostgresQuery, _ decode: (PostgresRow) throws -> T) async throws -> [T] {
        try await client.query(query, logger: logger).collect().map(decode)
    }

    func first<T>(_ query: PostgresQuery, _ decode: (PostgresRow) throws -> T) async throws -> T? {
        try await all(query, decode).first
    }

    /// Runs one write: on its own, or fenced in a transaction in the leader's view.
    func execute(_ query: PostgresQuery) async throws {
        guard fence != nil else {
            try await client.query(query, logger: logger)
            return
        }
        try await transaction { conn in _ = try await conn.query(query, logger: self.logger) }
    }

    /// Runs `body` in one transaction, after the fence check in the leader's view.
    func transaction<T>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        do {
            return try await fencedTransaction(body)
        } catch let error as PostgresTransactionError {
            // A refused write is rolled back cleanly: say so plainly rather than as a transaction failure.
            if let fenced = error.closureError as? FencedWrite, error.rollbackError == nil { throw fenced }
            throw error
        }
    }

    private func fencedTransaction<T>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        try await client.withTransaction(logger: logger) { conn in
            if let fence {
                let rows = try await conn.query("SELECT epoch FROM fleet_leader WHERE id = 1 FOR SHARE", logger: logger).collect()
                let current = try rows.first?.decode(Int64.self) ?? -1
                guard current == fence.epoch else {
                    fence.deposed(current: current)
                    throw FencedWrite(epoch: fence.epoch, current: current)
                }
            }
            return try await body(conn)
        }
    }

    // MARK: Organisations and keys

    public func organization(named name: String) async throws -> OrganizationRecord? {
        try await first("SELECT id, name, created_at FROM organizations WHERE name = \(name)", Rows.organization)
    }

    public func organization(id: String) async throws -> OrganizationRecord? {
        try await first("SELECT id, name, created_at FROM organizations WHERE id = \(id)", Rows.organization)
    }

    public func ensureOrganization(named name: String, now: Date) async throws -> OrganizationRecord {
        let id = UUID().uuidString.lowercased()
        try await execute("INSERT INTO organizations (id, name, created_at) VALUES (\(id), \(name), \(now)) ON CONFLICT (name) DO NOTHING")
        guard let org = try await organization(named: name) else { throw PostgresStoreError("organisation \(name) vanished while it was created") }
        return org
    }

    public func insertKey(_ key: APIKeyRecord) async throws {
        try await execute("""
            INSERT INTO api_keys (id, org_id, key_hash, prefix, is_admin, created_at)
            VALUES (\(key.id), \(key.orgId), \(key.keyHash), \(key.prefix), \(key.isAdmin), \(key.createdAt))
            """)
    }

    public func key(hash: String) async throws -> APIKeyRecord? {
        try await first("SELECT id, org_id, key_hash, prefix, is_admin, created_at FROM api_keys WHERE key_hash = \(hash)", Rows.key)
    }

    public func hasAdminKey() async throws -> Bool {
        try await first("SELECT 1 FROM api_keys WHERE is_admin LIMIT 1") { _ in true } ?? false
    }

    public func adminOrgIds() async throws -> Set<String> {
        Set(try await all("SELECT DISTINCT org_id FROM api_keys WHERE is_admin") { try $0.decode(String.self) })
    }

    public func grantModel(orgId: String, repo: String, at: Date) async throws {
        try await execute("""
            INSERT INTO model_grants (org_id, repo, granted_at) VALUES (\(orgId), \(repo.lowercased()), \(at))
            ON CONFLICT (org_id, repo) DO UPDATE SET granted_at = excluded.granted_at
            """)
    }

    public func hasModelGrant(orgId: String, repo: String) async throws -> Bool {
        try await first("SELECT 1 FROM model_grants WHERE org_id = \(orgId) AND repo = \(repo.lowercased())") { _ in true } ?? false
    }

    // MARK: Deployments

    public func insert(_ deployment: DeploymentRecord, event: String) async throws {
        try await transaction { conn in
            try await conn.query(Rows.insert(deployment), logger: logger)
            try await conn.query(
                "INSERT INTO events (deployment_id, at, kind, message) VALUES (\(deployment.id), \(deployment.createdAt), 'created', \(event))",
                logger: logger)
        }
    }

    public func deployment(id: String) async throws -> DeploymentRecord? {
        try await first("SELECT \(unescaped: Rows.deploymentColumns) FROM deployments WHERE id = \(id)", Rows.deployment)
    }

    public func deployments(orgId: String, includeTerminated: Bool, limit: Int?, offset: Int) async throws -> [DeploymentRecord] {
        let paged = limit != nil || offset > 0
        let pageLimit = limit.map { max(0, $0) } ?? (paged ? 1000 : Int.max)
        let pageOffset = max(0, offset)
        return try await all(
            """
            SELECT \(unescaped: Rows.deploymentColumns) FROM deployments
            WHERE org_id = \(orgId) AND (\(includeTerminated) OR status <> 'stopped')
            ORDER BY created_at DESC, id LIMIT \(pageLimit) OFFSET \(pageOffset)
            """, Rows.deployment)
    }

    public func unstoppedDeployments() async throws -> [DeploymentRecord] {
        try await all("SELECT \(unescaped: Rows.deploymentColumns) FROM deployments WHERE status <> 'stopped'", Rows.deployment)
    }

    @discardableResult
    public func updateDeployment(id: String, now: Date, _ change: @Sendable @escaping (inout DeploymentRecord) -> Void) async throws -> DeploymentRecord? {
        try await transaction { conn in
            let rows = try await conn.query(
                "SELECT \(unescaped: Rows.deploymentColumns) FROM deployments WHERE id = \(id) FOR UPDATE", logger: logger
            ).collect()
            guard let row = rows.first else { return nil }
            var d = try Rows.deployment(row)
            change(&d)
            d.updatedAt = now
            try await conn.query(Rows.update(d), logger: logger)
            return d
        }
    }

    public func desiredReplicaCount(orgId: String) async throws -> Int {
        try await first("""
            SELECT COALESCE(SUM(GREATEST(desired_replicas, min_replicas)), 0)::BIGINT FROM deployments
            WHERE org_id = \(orgId) AND status NOT IN ('stopped', 'paused', 'failed')
            """) { try $0.decode(Int.self) } ?? 0
    }

    // MARK: Replicas

    public func insert(_ replica: ReplicaRecord) async throws {
        try await execute(Rows.upsert(replica, replace: false))
    }

    public func replica(id: String) async throws -> ReplicaRecord? {
        try await first("SELECT \(unescaped: Rows.replicaColumns) FROM replicas WHERE id = \(id)", Rows.replica)
    }

    public func replicas(deploymentId: String) async throws -> [ReplicaRecord] {
        try await all(
            "SELECT \(unescaped: Rows.replicaColumns) FROM replicas WHERE deployment_id = \(deploymentId) ORDER BY created_at, id", Rows.replica)
    }

    public func replicas(deploymentIds: [String]) async throws -> [String: [ReplicaRecord]] {
        guard !deploymentIds.isEmpty else { return [:] }
        let rows = try await all(
            "SELECT \(unescaped: Rows.replicaColumns) FROM replicas WHERE deployment_id = ANY(\(deploymentIds)) ORDER BY created_at, id",
            Rows.replica)
        return Dictionary(grouping: rows, by: \.deploymentId)
    }

    public func liveReplicas() async throws -> [ReplicaRecord] {
        let live = ReplicaStatus.allCases.filter(\.isLive).map(\.rawValue)
        return try await all("SELECT \(unescaped: Rows.replicaColumns) FROM replicas WHERE status = ANY(\(live))", Rows.replica)
    }

    public func save(_ replica: ReplicaRecord) async throws {
        try await execute(Rows.upsert(replica, replace: true))
    }

    @discardableResult
    public func updateReplica(id: String, _ change: @Sendable @escaping (inout ReplicaRecord) -> Void) async throws -> ReplicaRecord? {
        try await transaction { conn in
            let rows = try await conn.query("SELECT \(unescaped: Rows.replicaColumns) FROM replicas WHERE id = \(id) FOR UPDATE", logger: logger).collect()
            guard let row = rows.first else { return nil }
            var r = try Rows.replica(row)
            change(&r)
            try await conn.query(Rows.upsert(r, replace: true), logger: logger)
            return r
        }
    }

    // MARK: Events

    public func addEvent(deploymentId: String, kind: String, message: String, at: Date) async throws {
        try await execute("INSERT INTO events (deployment_id, at, kind, message) VALUES (\(deploymentId), \(at), \(kind), \(message))")
    }

    public func events(deploymentId: String, limit: Int) async throws -> [EventRecord] {
        try await all(
            """
            SELECT id, deployment_id, at, kind, message FROM (
                SELECT * FROM events WHERE deployment_id = \(deploymentId) ORDER BY id DESC LIMIT \(max(0, limit))) last ORDER BY id
            """, Rows.event)
    }
}

public struct PostgresStoreError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
