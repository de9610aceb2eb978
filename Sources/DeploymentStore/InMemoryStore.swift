import Foundation
import InferenceCore
import Synchronization

/// The store in memory: the same answers as `SQLiteStore` with no file, for tests of the fleet, the gateway
/// and the routes that must run in milliseconds. Each call is atomic under one lock, as a transaction is.
public final class InMemoryStore: DeploymentStore {
    struct State {
        var organizations: [String: OrganizationRecord] = [:]
        var keys: [String: APIKeyRecord] = [:]
        var deployments: [String: DeploymentRecord] = [:]
        var replicas: [String: ReplicaRecord] = [:]
        var events: [EventRecord] = []
        var runs: [ReplicaRunRecord] = []
        var results: [String: RequestResultRecord] = [:]
        var grants: [String: Date] = [:]
        var nextId: Int64 = 1

        mutating func newId() -> Int64 {
            defer { nextId += 1 }
            return nextId
        }
    }

    private let state = Mutex(State())

    public init() {}

    // MARK: Organisations and keys

    public func organization(named name: String) async throws -> OrganizationRecord? {
        state.withLock { s in s.organizations.values.first { $0.name == name } }
    }

    public func organization(id: String) async throws -> OrganizationRecord? {
        state.withLock { $0.organizations[id] }
    }

    public func ensureOrganization(named name: String, now: Date) async throws -> OrganizationRecord {
        state.withLock { s in
            if let org = s.organizations.values.first(where: { $0.name == name }) { return org }
            let org = OrganizationRecord(id: UUID().uuidString.lowercased(), name: name, createdAt: now)
            s.organizations[org.id] = org
            return org
        }
    }

    public func insertKey(_ key: APIKeyRecord) async throws {
        try state.withLock { s in
            guard s.keys[key.id] == nil, !s.keys.values.contains(where: { $0.keyHash == key.keyHash }) else {
                throw InMemoryStoreError.duplicate("api key")
            }
            guard s.organizations[key.orgId] != nil else { throw InMemoryStoreError.unknown("organisation \(key.orgId)") }
            s.keys[key.id] = key
        }
    }

    public func key(hash: String) async throws -> APIKeyRecord? {
        state.withLock { s in s.keys.values.first { $0.keyHash == hash } }
    }

    public func hasAdminKey() async throws -> Bool {
        state.withLock { s in s.keys.values.contains(where: \.isAdmin) }
    }

    public func adminOrgIds() async throws -> Set<String> {
        state.withLock { s in Set(s.keys.values.filter(\.isAdmin).map(\.orgId)) }
    }

    public func grantModel(orgId: String, repo: String, at: Date) async throws {
        state.withLock { $0.grants[Self.grantKey(orgId, repo)] = at }
    }

    public func hasModelGrant(orgId: String, repo: String) async throws -> Bool {
        state.withLock { $0.grants[Self.grantKey(orgId, repo)] != nil }
    }

    static func grantKey(_ orgId: String, _ repo: String) -> String { orgId + "\u{0}" + repo.lowercased() }

    // MARK: Deployments

    public func insert(_ deployment: DeploymentRecord, event: String) async throws {
        try state.withLock { s in
            guard s.deployments[deployment.id] == nil else { throw InMemoryStoreError.duplicate("deployment \(deployment.id)") }
            guard s.organizations[deployment.orgId] != nil else { throw InMemoryStoreError.unknown("organisation \(deployment.orgId)") }
            s.deployments[deployment.id] = deployment
            s.events.append(EventRecord(id: s.newId(), deploymentId: deployment.id, at: deployment.createdAt, kind: "created", message: event))
        }
    }

    public func deployment(id: String) async throws -> DeploymentRecord? {
        state.withLock { $0.deployments[id] }
    }

    public func deployments(orgId: String, includeTerminated: Bool, limit: Int?, offset: Int) async throws -> [DeploymentRecord] {
        let all = state.withLock { s in
            s.deployments.values.filter { $0.orgId == orgId && (includeTerminated || $0.status != .stopped) }
        }
        let sorted = all.sorted { ($0.createdAt, $1.id) > ($1.createdAt, $0.id) }
        guard limit != nil || offset > 0 else { return sorted }
        return Array(sorted.dropFirst(max(0, offset)).prefix(max(0, limit ?? 1000)))
    }

    public func unstoppedDeployments() async throws -> [DeploymentRecord] {
        state.withLock { s in s.deployments.values.filter { $0.status != .stopped } }
    }

    @discardableResult
    public func updateDeployment(id: String, now: Date, _ change: @Sendable @escaping (inout DeploymentRecord) -> Void) async throws -> DeploymentRecord? {
        state.withLock { s in
            guard var d = s.deployments[id] else { return nil }
            change(&d)
            d.updatedAt = now
            s.deployments[id] = d
            return d
        }
    }

    public func desiredReplicaCount(orgId: String) async throws -> Int {
        state.withLock { s in
            s.deployments.values
                .filter { $0.orgId == orgId && ![.stopped, .paused, .failed].contains($0.status) }
                .reduce(0) { saturatingAdd($0, max($1.desiredReplicas, $1.minReplicas)) }
        }
    }

    // MARK: Replicas

    public func insert(_ replica: ReplicaRecord) async throws {
        try state.withLock { s in
            guard s.replicas[replica.id] == nil else { throw InMemoryStoreError.duplicate("replica \(replica.id)") }
            guard s.deployments[replica.deploymentId] != nil else { throw InMemoryStoreError.unknown("deployment \(replica.deploymentId)") }
            s.replicas[replica.id] = replica
        }
    }

    public func replica(id: String) async throws -> ReplicaRecord? {
        state.withLock { $0.replicas[id] }
    }

    public func replicas(deploymentId: String) async throws -> [ReplicaRecord] {
        state.withLock { s in s.replicas.values.filter { $0.deploymentId == deploymentId } }.sorted(by: Self.oldestFirst)
    }

    public func replicas(deploymentIds: [String]) async throws -> [String: [ReplicaRecord]] {
        let wanted = Set(deploymentIds)
        let rows = state.withLock { s in s.replicas.values.filter { wanted.contains($0.deploymentId) } }.sorted(by: Self.oldestFirst)
        return Dictionary(grouping: rows, by: \.deploymentId)
    }

    public func liveReplicas() async throws -> [ReplicaRecord] {
        state.withLock { s in s.replicas.values.filter(\.status.isLive) }
    }

    public func save(_ replica: ReplicaRecord) async throws {
        try state.withLock { s in
            guard s.deployments[replica.deploymentId] != nil else { throw InMemoryStoreError.unknown("deployment \(replica.deploymentId)") }
            s.replicas[replica.id] = replica
        }
    }

    @discardableResult
    public func updateReplica(id: String, _ change: @Sendable @escaping (inout ReplicaRecord) -> Void) async throws -> ReplicaRecord? {
        state.withLock { s in
            guard var r = s.replicas[id] else { return nil }
            change(&r)
            s.replicas[id] = r
            return r
        }
    }

    static func oldestFirst(_ a: ReplicaRecord, _ b: ReplicaRecord) -> Bool { (a.createdAt, a.id) < (b.createdAt, b.id) }

    // MARK: Events

    public func addEvent(deploymentId: String, kind: String, message: String, at: Date) async throws {
        state.withLock { s in s.events.append(EventRecord(id: s.newId(), deploymentId: deploymentId, at: at, kind: kind, message: message)) }
    }

    public func events(deploymentId: String, limit: Int) async throws -> [EventRecord] {
        state.withLock { s in Array(s.events.lazy.filter { $0.deploymentId == deploymentId }.suffix(max(0, limit))) }
    }

    // MARK: Metering

    public func openRun(_ run: ReplicaRunRecord) async throws {
        state.withLock { s in
            var run = run
            run.id = s.newId()
            s.runs.append(run)
        }
    }

    public func closeRun(replicaId: String, at: Date) async throws {
        state.withLock { s in
            for i in s.runs.indices where s.runs[i].replicaId == replicaId && s.runs[i].endedAt == nil {
                s.runs[i].endedAt = max(s.runs[i].startedAt, at)
            }
        }
    }

    public func runs(orgId: String, deploymentId: String?, from: Date, to: Date) async throws -> [ReplicaRunRecord] {
        state.withLock { s in
            s.runs.filter { run in
                run.orgId == orgId && run.startedAt <= to && (run.endedAt.map { $0 >= from } ?? true)
                    && (deploymentId.map { $0 == run.deploymentId } ?? true)
            }
        }.sorted { ($0.startedAt, $0.id ?? 0) < ($1.startedAt, $1.id ?? 0) }
    }

    // MARK: Request results

    public func insertPendingResult(id: String, orgId: String, deploymentId: String, now: Date) async throws {
        state.withLock { s in
            guard s.results[id] == nil else { return }
            s.results[id] = RequestResultRecord(
                id: id, orgId: orgId, deploymentId: deploymentId, status: "pending", httpStatus: nil, body: nil, createdAt: now, completedAt: nil)
        }
    }

    public func saveResult(_ record: RequestResultRecord) async throws {
        state.withLock { $0.results[record.id] = record }
    }

    public func result(id: String) async throws -> RequestResultRecord? {
        state.withLock { $0.results[id] }
    }

    public func pruneResults(olderThan cutoff: Date) async throws {
        state.withLock { s in s.results = s.results.filter { $0.value.createdAt >= cutoff } }
    }

    public func resultUsage(orgId: String) async throws -> (count: Int, bytes: Int) {
        state.withLock { s in
            s.results.values.filter { $0.orgId == orgId }.reduce((0, 0)) { ($0.0 + 1, saturatingAdd($0.1, $1.body?.count ?? 0)) }
        }
    }
}

/// What the in-memory store refuses, as the SQLite store's unique and foreign-key constraints do.
public enum InMemoryStoreError: Error, CustomStringConvertible {
    case duplicate(String)
    case unknown(String)

    public var description: String {
        switch self {
        case .duplicate(let what): "\(what) already exists"
        case .unknown(let what): "no \(what)"
        }
    }
}
