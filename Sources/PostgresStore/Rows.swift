import DeploymentStore
import Foundation
import InferenceCore
import NIOCore
import PostgresNIO

/// How records map to rows: columns in snake_case, statuses as their wire words, sealed secrets as bytea.
enum Rows {
    static func organization(_ row: PostgresRow) throws -> OrganizationRecord {
        let (id, name, createdAt) = try row.decode((String, String, Date).self)
        return OrganizationRecord(id: id, name: name, createdAt: createdAt)
    }

    static func key(_ row: PostgresRow) throws -> APIKeyRecord {
        let (id, orgId, hash, prefix, isAdmin, createdAt) = try row.decode((String, String, String, String, Bool, Date).self)
        return APIKeyRecord(id: id, orgId: orgId, keyHash: hash, prefix: prefix, isAdmin: isAdmin, createdAt: createdAt)
    }

    static func event(_ row: PostgresRow) throws -> EventRecord {
        let (id, deploymentId, at, kind, message) = try row.decode((Int64, String, Date, String, String).self)
        return EventRecord(id: id, deploymentId: deploymentId, at: at, kind: kind, message: message)
    }

    static func run(_ row: PostgresRow) throws -> ReplicaRunRecord {
        let (id, replicaId, deploymentId, orgId, profile, price, startedAt, endedAt) = try row.decode(
            (Int64, String, String, String, String, String, Date, Date?).self)
        var run = ReplicaRunRecord(
            replicaId: replicaId, deploymentId: deploymentId, orgId: orgId, hardwareProfile: profile, pricePerHour: price, startedAt: startedAt)
        run.id = id
        run.endedAt = endedAt
        return run
    }

    static func result(_ row: PostgresRow) throws -> RequestResultRecord {
        let (id, orgId, deploymentId, status, httpStatus, body, createdAt, completedAt) = try row.decode(
            (String, String, String, String, Int?, ByteBuffer?, Date, Date?).self)
        return RequestResultRecord(
            id: id, orgId: orgId, deploymentId: deploymentId, status: status, httpStatus: httpStatus, body: body.map { Data(buffer: $0) },
            createdAt: createdAt, completedAt: completedAt)
    }

    // MARK: Deployments

    static let deploymentColumns = """
        id, org_id, hf_model_id, hardware_profile, status, desired_replicas, min_replicas, max_replicas, target_rps, \
        target_latency_p95_ms, stabilisation_window, hf_token_sealed, created_at, updated_at, stopped_at, last_request_at
        """

    static func deployment(_ row: PostgresRow) throws -> DeploymentRecord {
        let r = row.makeRandomAccess()
        let spec = DeploymentSpec(
            hfModelId: try r["hf_model_id"].decode(String.self), hardwareProfile: try r["hardware_profile"].decode(String.self),
            targetRps: try r["target_rps"].decode(Double.self), targetLatencyP95Ms: try r["target_latency_p95_ms"].decode(Double.self),
            stabilisationWindow: try r["stabilisation_window"].decode(Int.self), minReplicas: try r["min_replicas"].decode(Int.self),
            maxReplicas: try r["max_replicas"].decode(Int.self))
        var d = DeploymentRecord(
            id: try r["id"].decode(String.self), orgId: try r["org_id"].decode(String.self), spec: spec,
            hfTokenSealed: try r["hf_token_sealed"].decode(ByteBuffer?.self).map { Data(buffer: $0) }, now: try r["created_at"].decode(Date.self))
        let status = try r["status"].decode(String.self)
        guard let parsed = DeploymentStatus(rawValue: status) else { throw PostgresStoreError("deployment \(d.id) has an unknown status '\(status)'") }
        d.status = parsed
        d.desiredReplicas = try r["desired_replicas"].decode(Int.self)
        d.updatedAt = try r["updated_at"].decode(Date.self)
        d.stoppedAt = try r["stopped_at"].decode(Date?.self)
        d.lastRequestAt = try r["last_request_at"].decode(Date?.self)
        return d
    }

    static func insert(_ d: DeploymentRecord) -> PostgresQuery {
        """
        INSERT INTO deployments (\(unescaped: deploymentColumns)) VALUES (
            \(d.id), \(d.orgId), \(d.hfModelId), \(d.hardwareProfile), \(d.status.rawValue), \(d.desiredReplicas), \(d.minReplicas),
            \(d.maxReplicas), \(d.targetRps), \(d.targetLatencyP95Ms), \(d.stabilisationWindow), \(d.hfTokenSealed.map { ByteBuffer(bytes: $0) }), \(d.createdAt),
            \(d.updatedAt), \(d.stoppedAt), \(d.lastRequestAt))
        """
    }

    static func update(_ d: DeploymentRecord) -> PostgresQuery {
        """
        UPDATE deployments SET org_id = \(d.orgId), hf_model_id = \(d.hfModelId), hardware_profile = \(d.hardwareProfile),
            status = \(d.status.rawValue), desired_replicas = \(d.desiredReplicas), min_replicas = \(d.minReplicas),
            max_replicas = \(d.maxReplicas), target_rps = \(d.targetRps), target_latency_p95_ms = \(d.targetLatencyP95Ms),
            stabilisation_window = \(d.stabilisationWindow), hf_token_sealed = \(d.hfTokenSealed.map { ByteBuffer(bytes: $0) }), created_at = \(d.createdAt),
            updated_at = \(d.updatedAt), stopped_at = \(d.stoppedAt), last_request_at = \(d.lastRequestAt)
        WHERE id = \(d.id)
        """
    }

    // MARK: Replicas

    static let replicaColumns = """
        id, deployment_id, status, healthy, last_health_check, fail_reason, pid, port, devices, restart_count, \
        consecutive_failures, created_at, started_at, stopped_at, last_seen_alive, progress, host, handle
        """

    static func replica(_ row: PostgresRow) throws -> ReplicaRecord {
        let r = row.makeRandomAccess()
        var replica = ReplicaRecord(
            id: try r["id"].decode(String.self), deploymentId: try r["deployment_id"].decode(String.self), now: try r["created_at"].decode(Date.self))
        let status = try r["status"].decode(String.self)
        guard let parsed = ReplicaStatus(rawValue: status) else { throw PostgresStoreError("replica \(replica.id) has an unknown status '\(status)'") }
        replica.status = parsed
        replica.healthy = try r["healthy"].decode(Bool.self)
        replica.lastHealthCheck = try r["last_health_check"].decode(Date?.self)
        replica.failReason = try r["fail_reason"].decode(String?.self)
        replica.pid = try r["pid"].decode(Int32?.self)
        replica.port = try r["port"].decode(Int?.self)
        replica.devices = try r["devices"].decode(String.self)
        replica.restartCount = try r["restart_count"].decode(Int.self)
        replica.consecutiveFailures = try r["consecutive_failures"].decode(Int.self)
        replica.startedAt = try r["started_at"].decode(Date?.self)
        replica.stoppedAt = try r["stopped_at"].decode(Date?.self)
        replica.lastSeenAlive = try r["last_seen_alive"].decode(Date?.self)
        replica.progress = try r["progress"].decode(String?.self)
        replica.host = try r["host"].decode(String?.self)
        replica.handle = try r["handle"].decode(String?.self)
        return replica
    }

    /// An insert; with `replace`, an insert or a full replacement of the row.
    static func upsert(_ r: ReplicaRecord, replace: Bool) -> PostgresQuery {
        var query: PostgresQuery = """
            INSERT INTO replicas (\(unescaped: replicaColumns)) VALUES (
                \(r.id), \(r.deploymentId), \(r.status.rawValue), \(r.healthy), \(r.lastHealthCheck), \(r.failReason), \(r.pid), \(r.port),
                \(r.devices), \(r.restartCount), \(r.consecutiveFailures), \(r.createdAt), \(r.startedAt), \(r.stoppedAt), \(r.lastSeenAlive),
                \(r.progress), \(r.host), \(r.handle))
            """
        if replace {
            query.sql += """
                 ON CONFLICT (id) DO UPDATE SET deployment_id = excluded.deployment_id, status = excluded.status,
                healthy = excluded.healthy, last_health_check = excluded.last_health_check, fail_reason = excluded.fail_reason,
                pid = excluded.pid, port = excluded.port, devices = excluded.devices, restart_count = excluded.restart_count,
                consecutive_failures = excluded.consecutive_failures, created_at = excluded.created_at, started_at = excluded.started_at,
                stopped_at = excluded.stopped_at, last_seen_alive = excluded.last_seen_alive, progress = excluded.progress,
                host = excluded.host, handle = excluded.handle
                """
        }
        return query
    }
}
