import DeploymentStore
import Foundation
import GRDB

/// What one organisation holds and is allowed: the facts per-organisation limits and model access need.
extension SQLiteStore {
    public func organization(id: String) async throws -> OrganizationRecord? {
        try await read { db in try OrganizationRecord.fetchOne(db, key: id) }
    }

    /// Organisations that hold an admin key: the operator's, to which tenant limits do not apply.
    public func adminOrgIds() async throws -> Set<String> {
        try await read { db in
            Set(try String.fetchAll(db, sql: "SELECT DISTINCT orgId FROM api_keys WHERE isAdmin = 1"))
        }
    }

    /// Records that this organisation's own create passed the Hub's access check for `repo`.
    public func grantModel(orgId: String, repo: String, at: Date) async throws {
        try await write { db in
            try db.execute(
                sql: "INSERT INTO model_grants (orgId, repo, grantedAt) VALUES (?, ?, ?) ON CONFLICT(orgId, repo) DO UPDATE SET grantedAt = excluded.grantedAt",
                arguments: [orgId, repo.lowercased(), at])
        }
    }

    public func hasModelGrant(orgId: String, repo: String) async throws -> Bool {
        try await read { db in
            try Int.fetchOne(db, sql: "SELECT 1 FROM model_grants WHERE orgId = ? AND repo = ?", arguments: [orgId, repo.lowercased()]) != nil
        }
    }

    /// Replicas an organisation's active deployments ask for (desired counts), for its replica limit at create.
    public func desiredReplicaCount(orgId: String) async throws -> Int {
        try await read { db in
            try Int.fetchOne(
                db,
                sql: "SELECT COALESCE(SUM(MAX(desiredReplicas, minReplicas)), 0) FROM deployments WHERE orgId = ? AND status NOT IN ('stopped', 'paused', 'failed')",
                arguments: [orgId]) ?? 0
        }
    }

    /// Stored request results of an organisation: how many, and their bytes.
    public func resultUsage(orgId: String) async throws -> (count: Int, bytes: Int) {
        try await read { db in
            let row = try Row.fetchOne(
                db, sql: "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM request_results WHERE orgId = ?", arguments: [orgId])
            return (row?[0] ?? 0, row?[1] ?? 0)
        }
    }
}
