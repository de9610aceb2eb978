import DeploymentStore
import Foundation
import Gateway
import InferenceCore
import PostgresNIO
import PostgresStore
import Routing
import Synchronization
import Testing

@testable import LyceumServer

/// The pieces that let several instances share one PostgreSQL store: the leader lock, the epoch fence,
/// routes through the store, and traffic summed across gateways.
@Suite("Instances sharing a store")
struct ClusterTests {
    @Test("a deposed leader's writes change nothing, and it is told once", .enabled(if: StoreKind.postgresURL != nil))
    func fence() async throws {
        let url = try await StoreKind.freshPostgresDatabase()
        let store = try await PostgresStore(url: url, logger: quietLogger)
        defer { Task { await store.shutdown() } }
        let first = try await LeaderLock.connect(url: url, freezeTimeout: .seconds(5), logger: quietLogger)
        #expect(try await first.tryAcquire())
        let deposedCalls = Mutex<[(Int64, Int64)]>([])
        let oldFence = FleetFence { epoch, current in deposedCalls.withLock { $0.append((epoch, current)) } }
        #expect(oldFence.epoch == -1, "no epoch before the election")
        oldFence.begin(epoch: try await first.claim(instanceId: "a", url: "http://a"))
        let old = store.fenced(by: oldFence)
        let org = try await store.ensureOrganization(named: "o")
        let spec = DeploymentSpec(
            hfModelId: "m/x", hardwareProfile: "sim.h100", targetRps: 5, targetLatencyP95Ms: 100, stabilisationWindow: 30, minReplicas: 1, maxReplicas: 4)
        try await old.insert(DeploymentRecord(id: "d1", orgId: org.id, spec: spec, hfTokenSealed: nil, now: Date()), event: "created")

        // A second instance cannot take the lock while the first holds it; once the first's session ends, it can.
        let second = try await LeaderLock.connect(url: url, freezeTimeout: .seconds(5), logger: quietLogger)
        #expect(try await !second.tryAcquire())
        await first.close()
        // The server ends the session a moment after the client closes it; standbys poll, and so does this.
        var acquired = false
        for _ in 0..<100 where !acquired {
            acquired = try await second.tryAcquire()
            if !acquired { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(acquired, "the lock is free once the first session ends")
        let newFence = FleetFence { _, _ in Issue.record("the current leader was told it is deposed") }
        newFence.begin(epoch: try await second.claim(instanceId: "b", url: "http://b"))
        #expect(newFence.epoch == oldFence.epoch + 1)
        let new = store.fenced(by: newFence)

        // The old leader's late writes: refused, nothing changed, the handler told once.
        await #expect(throws: FencedWrite.self) { try await old.updateDeployment(id: "d1") { $0.status = .stopped } }
        await #expect(throws: FencedWrite.self) { try await old.addEvent(deploymentId: "d1", kind: "late", message: "late") }
        await #expect(throws: FencedWrite.self) { try await old.saveRoute(deploymentId: "d1", route: "{}") }
        #expect(try await store.deployment(id: "d1")?.status == .created)
        #expect(try await store.events(deploymentId: "d1").map(\.kind) == ["created"])
        #expect(try await store.route(deploymentId: "d1") == nil)
        #expect(deposedCalls.withLock { $0.map(\.0) } == [oldFence.epoch])
        #expect(deposedCalls.withLock { $0.map(\.1) } == [newFence.epoch])

        // The new leader's go through; the leader row says who leads.
        try await new.updateDeployment(id: "d1") { $0.status = .provisioning }
        try await new.saveRoute(deploymentId: "d1", route: #"{"x":1}"#)
        #expect(try await store.deployment(id: "d1")?.status == .provisioning)
        #expect(try await store.route(deploymentId: "d1") == #"{"x":1}"#)
        let leader = try await store.leader()
        #expect(leader.instanceId == "b" && leader.epoch == newFence.epoch)
        await second.close()
    }

    @Test("a fenced view writes nothing before its instance is elected", .enabled(if: StoreKind.postgresURL != nil))
    func unelected() async throws {
        let url = try await StoreKind.freshPostgresDatabase()
        let store = try await PostgresStore(url: url, logger: quietLogger)
        defer { Task { await store.shutdown() } }
        let view = store.fenced(by: FleetFence { _, _ in })
        await #expect(throws: FencedWrite.self) { try await view.ensureOrganization(named: "o") }
        #expect(try await store.organization(named: "o") == nil)
    }

    @Test("instances: heartbeats, leaving, and who is alive", .enabled(if: StoreKind.postgresURL != nil))
    func instances() async throws {
        let store = try await PostgresStore(url: try await StoreKind.freshPostgresDatabase(), logger: quietLogger)
        defer { Task { await store.shutdown() } }
        try await store.registerInstance(id: "a", url: "http://a", role: "any")
        try await store.registerInstance(id: "b", url: "http://b", role: "any")
        try await store.heartbeat(instanceId: "b", url: "http://b", traffic: #"{"d":1}"#)
        let state = ClusterState(instanceId: "a", role: .any)
        #expect(state.successor(in: try await store.instances(aliveWithin: 3))?.id == "b")
        try await store.markLeaving(instanceId: "b")
        #expect(state.successor(in: try await store.instances(aliveWithin: 3)) == nil, "an instance that is leaving takes nothing over")
        #expect(try await store.instances(aliveWithin: 3).first { $0.id == "b" }?.traffic == #"{"d":1}"#)
    }

    @Test("traffic from several gateways adds up; a gateway that stops heartbeating drops out of the sum")
    func traffic() {
        let local = GatewayStats()
        let cluster = ClusterTraffic(local: local)
        #expect(cluster.traffic(deploymentId: "d").requestsPerSecond == 0)
        func share(rps: Double, latencyMs: [UInt64], inFlight: [String: Int]) -> TrafficShare {
            TrafficShare(
                requestsPerSecond: rps, burstRequestsPerSecond: rps * 2, inFlight: inFlight.values.reduce(0, +), lastRequestAt: Date(timeIntervalSince1970: rps),
                window: latencyMs.map { [$0 * 1000, 1] }, recent: latencyMs.map { [$0 * 1000, 1] }, replicas: inFlight)
        }
        // Two other gateways: one fast, one slow. The p95 of the sum is the slow tail, not an average of p95s.
        let fast = share(rps: 4, latencyMs: Array(repeating: 100, count: 90), inFlight: ["r1": 2])
        let slow = share(rps: 6, latencyMs: Array(repeating: 2000, count: 10), inFlight: ["r1": 1, "r2": 3])
        cluster.update(others: ["g1": ["d": fast], "g2": ["d": slow]])
        let sum = cluster.traffic(deploymentId: "d")
        #expect(sum.requestsPerSecond == 10 && sum.burstRequestsPerSecond == 20 && sum.inFlight == 6)
        #expect(sum.p95Ms > 1900 && sum.p95Ms < 2100, "\(sum.p95Ms)")
        #expect(sum.lastRequestAt == Date(timeIntervalSince1970: 6))
        #expect(cluster.inFlight(replicaId: "r1") == 3 && cluster.inFlight(replicaId: "r2") == 3)

        // g2 stops heartbeating: the next update leaves it out.
        cluster.update(others: ["g1": ["d": fast]])
        let after = cluster.traffic(deploymentId: "d")
        #expect(after.requestsPerSecond == 4 && after.inFlight == 2 && after.p95Ms < 110)
        #expect(cluster.inFlight(replicaId: "r2") == 0)

        // A share survives its JSON round trip (what travels with a heartbeat).
        let json = try? JSONEncoder().encode(["d": slow])
        #expect(json.flatMap { try? JSONDecoder().decode([String: TrafficShare].self, from: $0) }?["d"] == slow)
    }

    @Test("a route survives the store's JSON, and a full resync wakes only the routes that changed")
    func routes() async throws {
        let route = RouteTable.Route(
            orgId: "o", status: .running, endpoints: [.init(replicaId: "r", address: ReplicaAddress(host: "10.0.0.7", port: 9000), servedModelName: "d")],
            reason: nil)
        let decoded = try JSONDecoder().decode(RouteTable.Route.self, from: JSONEncoder().encode(route))
        #expect(decoded == route)
        let published = Mutex<[String]>([])
        let table = RouteTable { id in published.withLock { $0.append(id) } }
        table.replaceAll(["d": route, "e": route])
        table.replaceAll(["d": route])
        #expect(table.route("e") == nil && table.route("d") == route)
        #expect(published.withLock { $0.sorted() } == ["d", "e", "e"])
    }
}
