import Foundation
import Logging
import NIOCore
import PostgresNIO

/// The right to run the fleet of one database: a session advisory lock held on a connection of its own
/// (not the pool's). PostgreSQL releases it the moment that connection ends, so a crashed or cut-off
/// holder loses it; the holder, told the connection closed, must stop acting at once.
///
/// Today one instance holds it and a second one refuses to start; leader election (several instances,
/// one leading) builds on the same lock.
public final class FleetLock: Sendable {
    static let key: Int64 = 0x6C79_6365_756D_0002
    let connection: PostgresConnection

    private init(connection: PostgresConnection) { self.connection = connection }

    /// Takes the lock, or nil when another instance holds it. Keepalives make a holder cut off from the
    /// network lose its connection (and so the lock) in seconds rather than after the kernel's default.
    public static func acquire(url: String, logger: Logger) async throws -> FleetLock? {
        let pool = try PostgresStore.configuration(url: url)
        guard case .some(let host) = pool.host else { throw PostgresStoreError("the store URL needs a host") }
        var configuration = PostgresConnection.Configuration(
            host: host, port: pool.port ?? 5432, username: pool.username, password: pool.password, database: pool.database, tls: .disable)
        configuration.options.connectTimeout = .seconds(5)
        let connection = try await PostgresConnection.connect(configuration: configuration, id: 1, logger: logger)
        // Keepalives every few seconds and a bound on unacknowledged data: the server drops a holder that is
        // cut off within about 10 s, and the lock goes with it.
        for setting in ["tcp_keepalives_idle = 2", "tcp_keepalives_interval = 2", "tcp_keepalives_count = 3", "tcp_user_timeout = 8000"] {
            try await connection.query(PostgresQuery(unsafeSQL: "SET \(setting)"), logger: logger)
        }
        let rows = try await connection.query("SELECT pg_try_advisory_lock(\(key))", logger: logger).collect()
        guard try rows.first?.decode(Bool.self) == true else {
            try await connection.close()
            return nil
        }
        return FleetLock(connection: connection)
    }

    /// Completes when the lock's connection ends (and with it the lock).
    public func lost() async {
        _ = try? await connection.closeFuture.get()
    }

    public func release() async {
        try? await connection.close()
    }
}
