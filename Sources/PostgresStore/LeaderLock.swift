import Foundation
import Logging
import NIOCore
import PostgresNIO

/// The right to lead the fleet of one database: a session advisory lock held on a connection of its own
/// (not the pool's). PostgreSQL releases it the moment that connection ends, so the lock follows the
/// holder's fate:
///
/// - a crashed holder's connection closes: another instance takes the lock within its poll interval;
/// - a holder cut off from the network: server-side keepalives (2 s x 3) and `tcp_user_timeout` (8 s) end
///   its session in seconds, not after the kernel's two hours;
/// - a frozen holder (SIGSTOP, a stalled VM): its kernel still answers keepalives, so the holder heartbeats
///   on the lock's connection and the session carries `idle_session_timeout`; a holder that stops
///   heartbeating loses its session, and the lock with it, after `freezeTimeout`.
///
/// A holder told its connection closed must stop acting at once; its late writes are refused anyway by the
/// epoch fence (`FleetFence`).
public final class LeaderLock: Sendable {
    static let key: Int64 = 0x6C79_6365_756D_0002
    let connection: PostgresConnection
    let logger: Logger

    private init(connection: PostgresConnection, logger: Logger) {
        self.connection = connection
        self.logger = logger
    }

    /// Opens the lock's own connection (it does not take the lock yet).
    public static func connect(url: String, freezeTimeout: Duration, logger: Logger) async throws -> LeaderLock {
        let millis = max(1000, Int(freezeTimeout.components.seconds * 1000 + freezeTimeout.components.attoseconds / 1_000_000_000_000_000))
        let connection = try await PostgresStore.dedicatedConnection(
            url: url, settings: ["idle_session_timeout = \(millis)"], logger: logger)
        return LeaderLock(connection: connection, logger: logger)
    }

    /// Takes the lock if it is free; false when another instance holds it.
    public func tryAcquire() async throws -> Bool {
        let rows = try await connection.query("SELECT pg_try_advisory_lock(\(Self.key))", logger: logger).collect()
        return try rows.first?.decode(Bool.self) == true
    }

    /// Records this instance as the leader under a new epoch (call it holding the lock); the epoch. It runs
    /// on the lock's own connection, so the session stays busy (not idle) while the update waits for fenced
    /// writes of the previous leader still under way; every later one of those fails.
    public func claim(instanceId: String, url: String) async throws -> Int64 {
        let rows = try await connection.query(
            "UPDATE fleet_leader SET epoch = epoch + 1, instance_id = \(instanceId), url = \(url), since = now() WHERE id = 1 RETURNING epoch",
            logger: logger
        ).collect()
        guard let epoch = try rows.first?.decode(Int64.self) else { throw PostgresStoreError("the fleet_leader row is missing") }
        return epoch
    }

    /// Proves this holder is alive (run it well within `freezeTimeout`); throws once the session is gone.
    public func heartbeat() async throws {
        try await connection.query("SELECT 1", logger: logger)
    }

    /// Completes when the lock's connection ends (and with it the lock).
    public func lost() async {
        _ = try? await connection.closeFuture.get()
    }

    public var isClosed: Bool { connection.isClosed }

    /// Ends the session, releasing the lock.
    public func close() async {
        try? await connection.close()
    }
}

extension PostgresStore {
    /// A connection outside the pool, for a lock or a listener: keepalives every few seconds and a bound on
    /// unacknowledged data, so the server drops it within about 10 s of a network cut.
    public static func dedicatedConnection(url: String, settings: [String] = [], logger: Logger) async throws -> PostgresConnection {
        let pool = try configuration(url: url)
        guard case .some(let host) = pool.host else { throw PostgresStoreError("the store URL needs a host") }
        var configuration = PostgresConnection.Configuration(
            host: host, port: pool.port ?? 5432, username: pool.username, password: pool.password, database: pool.database, tls: .disable)
        configuration.options.connectTimeout = .seconds(5)
        let connection = try await PostgresConnection.connect(configuration: configuration, id: 1, logger: logger)
        do {
            for setting in ["tcp_keepalives_idle = 2", "tcp_keepalives_interval = 2", "tcp_keepalives_count = 3", "tcp_user_timeout = 8000"] + settings {
                try await connection.query(PostgresQuery(unsafeSQL: "SET \(setting)"), logger: logger)
            }
        } catch {
            try? await connection.close()
            throw error
        }
        return connection
    }

    /// Listens on `channel` until the connection ends (or the task is cancelled), handing each payload to
    /// `receive`. `ready` runs once the listener is in place, so a caller can resync knowing nothing after
    /// that point is missed.
    public static func listen(
        url: String, channel: String, logger: Logger, ready: @Sendable () async -> Void, receive: @Sendable (String) async -> Void
    ) async throws {
        let connection = try await dedicatedConnection(url: url, logger: logger)
        defer { Task { try? await connection.close() } }
        try await connection.listen(on: channel) { notifications in
            await ready()
            for try await notification in notifications { await receive(notification.payload) }
        }
    }
}
