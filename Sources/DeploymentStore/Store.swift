import Foundation
import InferenceCore

/// The platform's state: what a restart, another instance or an audit needs. Implemented on SQLite
/// (`SQLiteStore`, the embedded default) and in memory (`InMemoryStore`, for tests of the fleet without
/// files); a PostgreSQL store implements the same requirements.
///
/// Every change is atomic: a refused or interrupted call leaves nothing half-written. The `update`
/// requirements read, change and write one record in one transaction, so concurrent writers never lose
/// each other's changes.
public protocol DeploymentStore: Sendable {
    // MARK: Organisations and keys
    func organization(named name: String) async throws -> OrganizationRecord?
    func organization(id: String) async throws -> OrganizationRecord?
    /// The organisation with this name, created if it does not exist.
    func ensureOrganization(named name: String, now: Date) async throws -> OrganizationRecord
    func insertKey(_ key: APIKeyRecord) async throws
    func key(hash: String) async throws -> APIKeyRecord?
    func hasAdminKey() async throws -> Bool
    /// Organisations that hold an admin key: the operator's, to which tenant limits do not apply.
    func adminOrgIds() async throws -> Set<String>
    /// Records that this organisation's own create passed the Hub's access check for `repo`.
    func grantModel(orgId: String, repo: String, at: Date) async throws
    func hasModelGrant(orgId: String, repo: String) async throws -> Bool

    // MARK: Deployments
    /// Inserts a deployment and its `created` event together.
    func insert(_ deployment: DeploymentRecord, event: String) async throws
    func deployment(id: String) async throws -> DeploymentRecord?
    /// An organisation's deployments, newest first (then by id); a page of them when `limit` is given (at
    /// most 1,000 when only `offset` is).
    func deployments(orgId: String, includeTerminated: Bool, limit: Int?, offset: Int) async throws -> [DeploymentRecord]
    /// Every deployment the controller must look after (created, provisioning, running, paused, failed).
    func unstoppedDeployments() async throws -> [DeploymentRecord]
    /// Applies `change` to the stored deployment and stamps `updatedAt`; the new record, or nil if unknown.
    @discardableResult
    func updateDeployment(id: String, now: Date, _ change: @Sendable @escaping (inout DeploymentRecord) -> Void) async throws -> DeploymentRecord?
    /// Replicas an organisation's active deployments ask for (`max(desired, min)` over those not stopped,
    /// paused or failed), for its replica limit at create.
    func desiredReplicaCount(orgId: String) async throws -> Int

    // MARK: Replicas
    func insert(_ replica: ReplicaRecord) async throws
    func replica(id: String) async throws -> ReplicaRecord?
    /// A deployment's replicas, oldest first.
    func replicas(deploymentId: String) async throws -> [ReplicaRecord]
    /// Replicas of several deployments at once, grouped by deployment id, oldest first (for list answers).
    func replicas(deploymentIds: [String]) async throws -> [String: [ReplicaRecord]]
    /// Replicas that have or may have a process: what recovery must look at after a restart.
    func liveReplicas() async throws -> [ReplicaRecord]
    /// Inserts or replaces a replica.
    func save(_ replica: ReplicaRecord) async throws
    /// Applies `change` to the stored replica; the new record, or nil if unknown.
    @discardableResult
    func updateReplica(id: String, _ change: @Sendable @escaping (inout ReplicaRecord) -> Void) async throws -> ReplicaRecord?

    // MARK: Events
    func addEvent(deploymentId: String, kind: String, message: String, at: Date) async throws
    /// A deployment's last `limit` events, oldest first.
    func events(deploymentId: String, limit: Int) async throws -> [EventRecord]

    // MARK: Metering
    /// Opens a run for a replica process that was just launched.
    func openRun(_ run: ReplicaRunRecord) async throws
    /// Closes a replica's open run (if any) at `at` (never before it started).
    func closeRun(replicaId: String, at: Date) async throws
    /// An organisation's runs that overlap `[from, to]`, optionally for one deployment, by start.
    func runs(orgId: String, deploymentId: String?, from: Date, to: Date) async throws -> [ReplicaRunRecord]

    // MARK: Request results
    /// Records a request as pending unless its result already arrived (the two writes may race).
    func insertPendingResult(id: String, orgId: String, deploymentId: String, now: Date) async throws
    /// Stores a finished request's result, replacing its pending row if there is one.
    func saveResult(_ record: RequestResultRecord) async throws
    func result(id: String) async throws -> RequestResultRecord?
    /// Drops results created before `cutoff`.
    func pruneResults(olderThan cutoff: Date) async throws
    /// Stored request results of an organisation: how many, and their body bytes.
    func resultUsage(orgId: String) async throws -> (count: Int, bytes: Int)
}

// The requirements' usual arguments.
extension DeploymentStore {
    public func ensureOrganization(named name: String) async throws -> OrganizationRecord {
        try await ensureOrganization(named: name, now: Date())
    }

    public func grantModel(orgId: String, repo: String) async throws {
        try await grantModel(orgId: orgId, repo: repo, at: Date())
    }

    public func deployments(orgId: String, includeTerminated: Bool) async throws -> [DeploymentRecord] {
        try await deployments(orgId: orgId, includeTerminated: includeTerminated, limit: nil, offset: 0)
    }

    @discardableResult
    public func updateDeployment(id: String, _ change: @Sendable @escaping (inout DeploymentRecord) -> Void) async throws -> DeploymentRecord? {
        try await updateDeployment(id: id, now: Date(), change)
    }

    public func addEvent(deploymentId: String, kind: String, message: String) async throws {
        try await addEvent(deploymentId: deploymentId, kind: kind, message: message, at: Date())
    }

    public func events(deploymentId: String) async throws -> [EventRecord] {
        try await events(deploymentId: deploymentId, limit: 500)
    }

    public func insertPendingResult(id: String, orgId: String, deploymentId: String) async throws {
        try await insertPendingResult(id: id, orgId: orgId, deploymentId: deploymentId, now: Date())
    }
}
