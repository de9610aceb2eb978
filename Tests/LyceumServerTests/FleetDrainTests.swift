@testable import Controller
import DeploymentStore
import Foundation
import InferenceCore
import Replicas
import Routing
import Synchronization
import Testing

/// Requests in flight per replica, as the test says: the controller's drain reads them.
final class ManualTraffic: TrafficSource {
    let counts = Mutex<[String: Int]>([:])

    func traffic(deploymentId: String) -> TrafficSnapshot {
        TrafficSnapshot(requestsPerSecond: 0, p95Ms: 0, inFlight: 0, lastRequestAt: nil)
    }

    func inFlight(replicaId: String) -> Int { counts.withLock { $0[replicaId] ?? 0 } }
}

@Suite("Drains on an in-memory store and provider", .serialized)
struct FleetDrainTests {
    @Test("a replica leaving on scale-down leaves the routes at once, stops only once its requests are done, and holds up no other deployment")
    func drainThenStop() async throws {
        let rig = try await FleetRig(drainTimeout: .seconds(30))
        let traffic = ManualTraffic()
        await rig.controller.setTraffic(traffic)
        try await rig.create("d", min: 1, max: 2)
        try await rig.store.updateDeployment(id: "d") { $0.desiredReplicas = 2 }
        rig.controller.poke(deploymentId: "d")
        try await eventually("two serving") { try await rig.healthy("d") == 2 && rig.controller.routes.route("d")?.endpoints.count == 2 }
        let both = Set(try await rig.live("d").map(\.id))
        traffic.counts.withLock { c in for id in both { c[id] = 3 } }

        try await rig.store.updateDeployment(id: "d") { $0.desiredReplicas = 1 }
        rig.controller.poke(deploymentId: "d")
        try await eventually("one replica out of the routes") { rig.controller.routes.route("d")?.endpoints.count == 1 }
        let staying = try #require(rig.controller.routes.route("d")?.endpoints.first?.replicaId)
        let leaving = try #require(both.subtracting([staying]).first)

        // While it drains, another deployment starts at once: the drain runs beside the reconciler, not in it.
        try await rig.create("e", min: 1)
        try await eventually("e serving while d's replica drains", within: 2) { try await rig.healthy("e") == 1 }
        #expect(rig.provider.runningReplicaIds.contains(leaving), "not stopped while it has requests in flight")
        #expect(!rig.provider.state.withLock { $0.terminated }.contains(leaving))

        traffic.counts.withLock { $0[leaving] = 0 }
        try await eventually("stopped once its requests are done") {
            let status = try await rig.store.replica(id: leaving)?.status
            return rig.provider.state.withLock { $0.terminated }.contains(leaving) && status == .stopped
        }
        #expect(rig.provider.runningReplicaIds.contains(staying), "the replica that stays is untouched")
        let runs = try await rig.store.runs(orgId: rig.orgId, deploymentId: "d", from: .distantPast, to: .distantFuture)
        #expect(runs.first { $0.replicaId == leaving }?.endedAt != nil && runs.first { $0.replicaId == staying }?.endedAt == nil, "billing stops with the replica")
        let stopped = try await rig.store.events(deploymentId: "d").filter { $0.kind == "replica_stopped" }.map(\.message)
        #expect(stopped.count == 1 && stopped[0].contains("scaled down"), "\(stopped)")
        await rig.stop()
    }

    @Test("a drain that never ends is bounded by drain_timeout_s")
    func drainTimeout() async throws {
        let rig = try await FleetRig(drainTimeout: .milliseconds(300))
        let traffic = ManualTraffic()
        await rig.controller.setTraffic(traffic)
        try await rig.create("d", min: 1, max: 2)
        try await rig.store.updateDeployment(id: "d") { $0.desiredReplicas = 2 }
        rig.controller.poke(deploymentId: "d")
        try await eventually("two serving") { try await rig.healthy("d") == 2 }
        traffic.counts.withLock { c in for id in rig.provider.runningReplicaIds { c[id] = 1 } }
        let started = ContinuousClock.now
        try await rig.store.updateDeployment(id: "d") { $0.desiredReplicas = 1 }
        rig.controller.poke(deploymentId: "d")
        try await eventually("stopped after the drain timeout") { rig.provider.state.withLock { $0.terminated }.count == 1 }
        #expect(ContinuousClock.now - started >= .milliseconds(300))
        await rig.stop()
    }
}
