import DeploymentStore
import Foundation
import NIOCore
import PostgresNIO

/// Metering and stored request results.
extension PostgresStore {
    // MARK: Metering

    public func openRun(_ run: ReplicaRunRecord) async throws {
        try await execute("""
            INSERT INTO replica_runs (replica_id, deployment_id, org_id, hardware_profile, price_per_hour, started_at, ended_at)
            VALUES (\(run.replicaId), \(run.deploymentId), \(run.orgId), \(run.hardwareProfile), \(run.pricePerHour), \(run.startedAt), \(run.endedAt))
            """)
    }

    public func closeRun(replicaId: String, at: Date) async throws {
        try await execute(
            "UPDATE replica_runs SET ended_at = GREATEST(started_at, \(at)) WHERE replica_id = \(replicaId) AND ended_at IS NULL")
    }

    public func runs(orgId: String, deploymentId: String?, from: Date, to: Date) async throws -> [ReplicaRunRecord] {
        try await all(
            """
            SELECT id, replica_id, deployment_id, org_id, hardware_profile, price_per_hour, started_at, ended_at FROM replica_runs
            WHERE org_id = \(orgId) AND started_at <= \(to) AND (ended_at IS NULL OR ended_at >= \(from))
              AND (\(deploymentId)::TEXT IS NULL OR deployment_id = \(deploymentId))
            ORDER BY started_at, id
            """, Rows.run)
    }

    // MARK: Request results

    public func insertPendingResult(id: String, orgId: String, deploymentId: String, now: Date) async throws {
        try await execute("""
            INSERT INTO request_results (id, org_id, deployment_id, status, created_at) VALUES (\(id), \(orgId), \(deploymentId), 'pending', \(now))
            ON CONFLICT (id) DO NOTHING
            """)
    }

    public func saveResult(_ record: RequestResultRecord) async throws {
        try await execute("""
            INSERT INTO request_results (id, org_id, deployment_id, status, http_status, body, created_at, completed_at)
            VALUES (\(record.id), \(record.orgId), \(record.deploymentId), \(record.status), \(record.httpStatus), \(record.body.map { ByteBuffer(bytes: $0) }), \(record.createdAt), \(record.completedAt))
            ON CONFLICT (id) DO UPDATE SET org_id = excluded.org_id, deployment_id = excluded.deployment_id, status = excluded.status,
              http_status = excluded.http_status, body = excluded.body, created_at = excluded.created_at, completed_at = excluded.completed_at
            """)
    }

    public func result(id: String) async throws -> RequestResultRecord? {
        try await first(
            "SELECT id, org_id, deployment_id, status, http_status, body, created_at, completed_at FROM request_results WHERE id = \(id)",
            Rows.result)
    }

    public func pruneResults(olderThan cutoff: Date) async throws {
        try await execute("DELETE FROM request_results WHERE created_at < \(cutoff)")
    }

    public func resultUsage(orgId: String) async throws -> (count: Int, bytes: Int) {
        try await first("SELECT COUNT(*)::BIGINT, COALESCE(SUM(LENGTH(body)), 0)::BIGINT FROM request_results WHERE org_id = \(orgId)") {
            try $0.decode((Int, Int).self)
        } ?? (0, 0)
    }
}
