import Controller
import ControlPlane
import Hummingbird
import NIOCore
import DeploymentStore
import Foundation
import Gateway
import InferenceCore
import Logging
import PostgresStore
import Replicas
import Routing
import Synchronization

/// This instance's place among the instances sharing one PostgreSQL store: who it is, whether it leads,
/// whether its route table has synced, and what it last heard of the others.
final class ClusterState: Sendable {
    let instanceId: String
    let role: ServerRole
    let url = Mutex("")
    let isLeader = Atomic(false)
    /// The route table has loaded from the store at least once: `/readyz` answers ready from then on.
    let synced = Atomic(false)
    let leader = Mutex<LeaderRecord?>(nil)
    let instances = Mutex<[InstanceRecord]>([])
    /// Set when this instance steps down: it acts no more, whatever is still running in it.
    let deposed = Atomic(false)
    /// Set while a leader hands the fleet over on shutdown: its lock closing is expected then.
    let handingOver = Atomic(false)
    /// The lock taken back when no successor claimed the fleet during a hand-over; held until exit.
    let reclaimedLock = Mutex<LeaderLock?>(nil)
    /// While this instance leads: where messages for the fleet (`poke:`, `suspect:`) go.
    let fleetHandler = Mutex<(@Sendable (String) -> Void)?>(nil)

    init(instanceId: String, role: ServerRole) {
        self.instanceId = instanceId
        self.role = role
    }

    /// Another instance that may lead, alive and not leaving: it will take the fleet over.
    func successor(in instances: [InstanceRecord]) -> InstanceRecord? {
        instances.first { $0.alive && $0.id != instanceId && $0.role == ServerRole.any.rawValue }
    }

    func metrics() -> String {
        let leader = leader.withLock { $0 }
        let alive = instances.withLock { $0.filter(\.alive).count }
        var out = "# HELP lyceum_instance_is_leader 1 when this instance leads the fleet.\n# TYPE lyceum_instance_is_leader gauge\n"
        out += "lyceum_instance_is_leader{instance=\"\(instanceId)\"} \(isLeader.load(ordering: .relaxed) ? 1 : 0)\n"
        out += "# HELP lyceum_leader The instance that leads the fleet, by the store.\n# TYPE lyceum_leader gauge\n"
        if let leader { out += "lyceum_leader{instance=\"\(leader.instanceId)\",epoch=\"\(leader.epoch)\"} 1\n" }
        out += "# HELP lyceum_leader_epoch The leader epoch; each takeover raises it.\n# TYPE lyceum_leader_epoch gauge\n"
        out += "lyceum_leader_epoch \(leader?.epoch ?? 0)\n"
        out += "# HELP lyceum_instances_alive Instances that heartbeat within the last few seconds.\n# TYPE lyceum_instances_alive gauge\n"
        out += "lyceum_instances_alive \(alive)\n"
        out += "# HELP lyceum_routes_synced 1 once this instance's route table has loaded from the store.\n# TYPE lyceum_routes_synced gauge\n"
        out += "lyceum_routes_synced \(synced.load(ordering: .relaxed) ? 1 : 0)\n"
        return out
    }

    /// The `/cluster` answer: the leader and this instance; every instance for an admin.
    func describe(admin: Bool) -> [String: Any] {
        var out: [String: Any] = ["instance_id": instanceId, "role": role.rawValue, "is_leader": isLeader.load(ordering: .relaxed)]
        if let leader = leader.withLock({ $0 }) {
            out["leader"] = ["instance_id": leader.instanceId, "epoch": leader.epoch, "since": ISO8601DateFormatter().string(from: leader.since)]
        }
        if admin {
            out["instances"] = instances.withLock { list in
                list.map { ["instance_id": $0.id, "url": $0.url, "role": $0.role, "alive": $0.alive] as [String: Any] }
            }
        }
        return out
    }
}

/// The fleet as the gateway and the control plane reach it when instances share a store: every command is
/// a store write plus a notification, which the leader (whichever instance that is now) acts on.
struct StoreFleet: FleetCommands, FleetControl {
    let store: PostgresStore
    let dataDir: String
    let stopWait: Duration
    let logger: Logger
    /// Where a cluster allots devices it says what is free, and it serves its runs' logs.
    let provider: any ReplicaProvider

    func resumeDeployment(id: String) async throws {
        guard try await Controller.markResumed(id, in: store) != nil else { return }
        try await store.notify("poke:\(id)")
    }

    func reportSuspect(replicaId: String, reason: String) {
        send("suspect:\(replicaId) \(reason.prefix(500))")
    }

    func poke(deploymentId: String) {
        send("poke:\(deploymentId)")
    }

    /// Marks it stopped, tells the leader, and waits (bounded) until no replica of it is live.
    func stopDeployment(id: String) async throws {
        guard try await Controller.markTakenDown(id, to: .stopped, event: "stopped by request", in: store) != nil else { return }
        try await store.notify("poke:\(id)")
        let deadline = ContinuousClock.now + stopWait
        while ContinuousClock.now < deadline {
            if try await store.replicas(deploymentId: id).allSatisfy({ !$0.status.isLive }) { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        logger.warning("stop: replicas still live after the wait; the leader goes on stopping them", metadata: ["deployment.id": "\(id)"])
    }

    func freeDeviceCount(profile: HardwareProfile) async -> Int {
        if let devices = await provider.freeDevices(for: profile) { return devices }
        do {
            let taken = Set(try await store.liveReplicas().flatMap(\.deviceList))
            return profile.devices.filter { !taken.contains($0) }.count
        } catch {
            logger.error("free devices: store read failed", metadata: ["error": "\(error)"])
            return 0
        }
    }

    /// Logs live where the replica ran: this instance's data directory (the same machine's, for local replicas).
    func logPath(replicaId: String) -> String { "\(dataDir)/replicas/\(replicaId).log" }

    func replicaLogs(replicaId: String, handle: String?, maxLines: Int) async -> String {
        await provider.replicaLogs(handle: handle, logPath: logPath(replicaId: replicaId), maxLines: maxLines)
    }

    private func send(_ payload: String) {
        let store = store
        let logger = logger
        Task {
            do {
                try await store.notify(payload)
            } catch {
                logger.error("could not notify the leader", metadata: ["payload": "\(payload.prefix(80))", "error": "\(error)"])
            }
        }
    }
}

/// The autoscaler's traffic when several gateways share a deployment: this gateway's live statistics plus
/// the shares the others published with their last heartbeat. An instance that stops heartbeating drops
/// out of the sum.
final class ClusterTraffic: TrafficSource {
    let local: GatewayStats
    /// Other instances' shares, by deployment, then instance.
    private let remote = Mutex<[String: [String: TrafficShare]]>([:])

    init(local: GatewayStats) { self.local = local }

    func update(others: [String: [String: TrafficShare]]) {
        var byDeployment: [String: [String: TrafficShare]] = [:]
        for (instance, shares) in others {
            for (deploymentId, share) in shares { byDeployment[deploymentId, default: [:]][instance] = share }
        }
        remote.withLock { $0 = byDeployment }
    }

    func traffic(deploymentId: String) -> TrafficSnapshot {
        let others = remote.withLock { $0[deploymentId].map { Array($0.values) } ?? [] }
        guard !others.isEmpty else { return local.traffic(deploymentId: deploymentId) }
        return TrafficShare.merged(others + (local.share(deploymentId: deploymentId).map { [$0] } ?? []))
    }

    func inFlight(replicaId: String) -> Int {
        local.inFlight(replicaId: replicaId) + remote.withLock { r in r.values.reduce(0) { sum, shares in sum + shares.values.reduce(0) { $0 + ($1.replicas[replicaId] ?? 0) } } }
    }
}

/// Mirrors the leader's route table into the store, in publish order, and says when a publish has reached
/// the store (and so, a moment later, every gateway).
final class RouteMirror: Sendable {
    private let changes: AsyncStream<String>
    private let continuation: AsyncStream<String>.Continuation
    private let progress = Mutex<(published: UInt64, written: UInt64)>((0, 0))

    init() {
        (changes, continuation) = AsyncStream.makeStream(of: String.self)
    }

    /// The controller's route table's observer.
    var observer: @Sendable (String) -> Void {
        { [self] id in
            progress.withLock { $0.published += 1 }
            continuation.yield(id)
        }
    }

    /// Writes each published route to the store until cancelled (while this instance leads).
    func run(table: RouteTable, store: PostgresStore, logger: Logger) async {
        let encoder = JSONEncoder()
        for await id in changes {
            if Task.isCancelled { return }
            do {
                let route = try table.route(id).map { String(decoding: try encoder.encode($0), as: UTF8.self) }
                try await store.saveRoute(deploymentId: id, route: route)
            } catch {
                logger.error("could not store a route", metadata: ["deployment.id": "\(id)", "error": "\(error)"])
            }
            progress.withLock { $0.written += 1 }
        }
    }

    /// Returns once every route published before the call is in the store and `settle` has passed for the
    /// gateways to load it (bounded at 5 s if the store is slow).
    func propagated(settle: Duration) async {
        let target = progress.withLock { $0.published }
        let deadline = ContinuousClock.now + .seconds(5)
        while progress.withLock({ $0.written }) < target, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        try? await Task.sleep(for: settle)
    }
}

extension LyceumServer {
    /// `/readyz` for load balancers (ready once the route table has loaded; always with SQLite) and
    /// `/cluster` for operators and `lyceum infer status` (who leads; every instance for an admin key).
    static func addClusterRoutes(to router: Router<LyceumRequestContext>, state: ClusterState?, authenticator: Authenticator) {
        router.get("readyz") { _, _ -> Response in
            let ready = state?.synced.load(ordering: .relaxed) ?? true
            var body: [String: Any] = ["ready": ready]
            if let state {
                body["instance_id"] = state.instanceId
                body["is_leader"] = state.isLeader.load(ordering: .relaxed)
            }
            return jsonResponse(body, status: ready ? .ok : .serviceUnavailable)
        }
        router.get("cluster") { request, _ -> Response in
            guard let caller = try await authenticator.caller(authorization: request.headers[.authorization]) else {
                return jsonResponse(["detail": "send 'Authorization: Bearer lk_...'"], status: .unauthorized)
            }
            guard let state else {
                return jsonResponse(["instance_id": "embedded", "role": "any", "is_leader": true, "store": "sqlite"], status: .ok)
            }
            var body = state.describe(admin: caller.isAdmin)
            body["store"] = "postgres"
            return jsonResponse(body, status: .ok)
        }
    }

    static func jsonResponse(_ body: [String: Any], status: HTTPResponse.Status) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])) ?? Data("{}".utf8)
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
