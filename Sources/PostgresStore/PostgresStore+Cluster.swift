import DeploymentStore
import Foundation
import Logging
import PostgresNIO
import Synchronization

/// The epoch a leader's writes are made under. `deposed` runs (once) when a write finds a newer epoch: the
/// instance lost the fleet to another and must stop acting.
///
/// Until `begin(epoch:)` the epoch is -1, which no leader has: a fenced view writes nothing before its
/// instance is elected.
public final class FleetFence: Sendable {
    private let current = Atomic<Int64>(-1)
    private let onDeposed: Mutex<(@Sendable (_ epoch: Int64, _ current: Int64) -> Void)?>

    public init(onDeposed: @escaping @Sendable (_ epoch: Int64, _ current: Int64) -> Void) {
        self.onDeposed = Mutex(onDeposed)
    }

    public var epoch: Int64 { current.load(ordering: .acquiring) }

    /// This instance was elected under `epoch`.
    public func begin(epoch: Int64) { current.store(epoch, ordering: .releasing) }

    func deposed(current: Int64) {
        let handler = onDeposed.withLock { h in
            defer { h = nil }
            return h
        }
        handler?(epoch, current)
    }
}

/// A write refused by the fence: another instance leads the fleet now.
public struct FencedWrite: Error, CustomStringConvertible {
    public var epoch: Int64
    public var current: Int64
    public var description: String { "write refused: this instance led epoch \(epoch), the fleet is now led under epoch \(current)" }
}

/// Who leads the fleet, as the database says.
public struct LeaderRecord: Sendable, Equatable {
    public var epoch: Int64
    public var instanceId: String
    public var url: String
    public var since: Date
}

/// A server instance sharing the database, as of its last heartbeat.
public struct InstanceRecord: Sendable {
    public var id: String
    public var url: String
    public var role: String
    public var startedAt: Date
    public var heartbeatAt: Date
    /// Its gateway's traffic at that heartbeat (JSON, the server's format).
    public var traffic: String?
    /// Heartbeat seen within the window asked for.
    public var alive: Bool
}

/// The channel instances notify each other on: `route:ID` (the leader published a route), `poke:ID`
/// (something changed a deployment the leader must act on), `suspect:ID reason` (a gateway saw a replica
/// answer wrongly).
public let clusterChannel = "lyceum_fleet"

extension PostgresStore {
    // MARK: Instances

    /// Registers this instance (again), forgetting instances silent for an hour.
    public func registerInstance(id: String, url: String, role: String) async throws {
        try await client.query("DELETE FROM instances WHERE heartbeat_at < now() - interval '1 hour'", logger: logger)
        try await client.query("""
            INSERT INTO instances (id, url, role, started_at, heartbeat_at) VALUES (\(id), \(url), \(role), now(), now())
            ON CONFLICT (id) DO UPDATE SET url = excluded.url, role = excluded.role, heartbeat_at = now()
            """, logger: logger)
    }

    /// The instance is alive; its gateway's traffic goes with the heartbeat.
    public func heartbeat(instanceId: String, url: String, traffic: String?) async throws {
        try await client.query(
            "UPDATE instances SET heartbeat_at = now(), url = \(url), traffic = \(traffic) WHERE id = \(instanceId)", logger: logger)
    }

    /// The instance is shutting down: it no longer counts as a successor for a leader handing over.
    public func markLeaving(instanceId: String) async throws {
        try await client.query("UPDATE instances SET role = 'leaving' WHERE id = \(instanceId)", logger: logger)
    }

    public func removeInstance(id: String) async throws {
        try await client.query("DELETE FROM instances WHERE id = \(id)", logger: logger)
    }

    /// Every registered instance, `alive` when it heartbeat within `seconds` (by the database's clock).
    public func instances(aliveWithin seconds: Double) async throws -> [InstanceRecord] {
        try await all(
            """
            SELECT id, url, role, started_at, heartbeat_at, traffic, heartbeat_at > now() - make_interval(secs => \(seconds))
            FROM instances ORDER BY started_at, id
            """
        ) { row in
            let (id, url, role, started, beat, traffic, alive) = try row.decode((String, String, String, Date, Date, String?, Bool).self)
            return InstanceRecord(id: id, url: url, role: role, startedAt: started, heartbeatAt: beat, traffic: traffic, alive: alive)
        }
    }

    /// Runs `body` while holding a database-wide lock, so that instances starting at once do a one-time
    /// step (creating the first admin key) exactly once.
    public func exclusively<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        try await client.withConnection { conn in
            try await conn.query("SELECT pg_advisory_lock(\(PostgresSchema.bootstrapLock))", logger: logger)
            do {
                let value = try await body()
                try await conn.query("SELECT pg_advisory_unlock(\(PostgresSchema.bootstrapLock))", logger: logger)
                return value
            } catch {
                _ = try? await conn.query("SELECT pg_advisory_unlock(\(PostgresSchema.bootstrapLock))", logger: logger)
                throw error
            }
        }
    }

    // MARK: Leadership

    public func leader() async throws -> LeaderRecord {
        guard let record = try await first("SELECT epoch, instance_id, url, since FROM fleet_leader WHERE id = 1", { row in
            let (epoch, id, url, since) = try row.decode((Int64, String, String, Date).self)
            return LeaderRecord(epoch: epoch, instanceId: id, url: url, since: since)
        }) else { throw PostgresStoreError("the fleet_leader row is missing") }
        return record
    }

    // MARK: Routes

    /// Stores a deployment's route (JSON, the gateway's format; nil when it has none) and tells every
    /// instance, in one transaction: fenced in the leader's view, so a deposed leader's routes never land.
    public func saveRoute(deploymentId: String, route: String?) async throws {
        try await transaction { conn in
            try await conn.query("""
                INSERT INTO fleet_routes (deployment_id, route, epoch, updated_at)
                VALUES (\(deploymentId), \(route), (SELECT epoch FROM fleet_leader WHERE id = 1), now())
                ON CONFLICT (deployment_id) DO UPDATE SET route = excluded.route, epoch = excluded.epoch, updated_at = now()
                """, logger: logger)
            try await conn.query("SELECT pg_notify(\(clusterChannel), \("route:" + deploymentId))", logger: logger)
        }
    }

    /// Every stored route that is not empty, by deployment.
    public func routes() async throws -> [String: String] {
        let rows = try await all("SELECT deployment_id, route FROM fleet_routes WHERE route IS NOT NULL") { try $0.decode((String, String).self) }
        return Dictionary(rows, uniquingKeysWith: { a, _ in a })
    }

    /// One deployment's stored route: nil when there is none.
    public func route(deploymentId: String) async throws -> String? {
        try await first("SELECT route FROM fleet_routes WHERE deployment_id = \(deploymentId)") { try $0.decode(String?.self) } ?? nil
    }

    /// Tells every instance listening on `clusterChannel` (at most 7,000 bytes of payload).
    public func notify(_ payload: String) async throws {
        try await client.query("SELECT pg_notify(\(clusterChannel), \(String(decoding: payload.utf8.prefix(7000), as: UTF8.self)))", logger: logger)
    }
}
