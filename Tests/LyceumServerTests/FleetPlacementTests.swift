@testable import Controller
import DeploymentStore
import Foundation
import InferenceCore
import Replicas
import Testing

@Suite("Replicas placed by their provider", .serialized)
struct FleetPlacementTests {
    /// What a cluster provider does: the engine's port is chosen where it runs and reported once it runs.
    @Test("a replica the provider placed elsewhere is probed, routed and stored where the provider says it listens")
    func placedByProvider() async throws {
        let rig = try await FleetRig(provider: InMemoryProvider(placeOnPort: { $0 + 500 }))
        try await rig.create("d", min: 1)
        try await eventually("serving where it was placed") { try await rig.healthy("d") == 1 }
        let replica = try #require(try await rig.live("d").first)
        let endpoint = try #require(rig.controller.routes.route("d")?.endpoints.first)
        #expect(endpoint.address == ReplicaAddress(host: "10.99.0.7", port: try #require(replica.port)))
        let asked = try #require(rig.provider.state.withLock { $0.running.values.first?.port })
        #expect(asked == endpoint.port, "the provider's process listens on the reported port")
        #expect(try await rig.store.events(deploymentId: "d").contains { $0.kind == "replica_placed" && $0.message.contains(":\(endpoint.port)") })
        await rig.stop()
    }

    /// What a Ray cluster with no node for a profile does: the job waits, the replica shows `pending` with why,
    /// and it starts (its run and billing from then) once room appears.
    @Test("a run the provider queues shows pending with the reason, and starts once the provider has room")
    func queuedByProvider() async throws {
        let rig = try await FleetRig(provider: InMemoryProvider(queued: true))
        try await rig.create("d", min: 1)
        try await eventually("pending with the provider's reason") {
            try await rig.live("d").first.map { $0.status == .pending && ($0.failReason ?? "").contains("waiting for cluster resources") } ?? false
        }
        #expect(try await rig.store.events(deploymentId: "d").contains { $0.kind == "waiting_for_resources" })
        #expect(rig.provider.state.withLock { $0.launches.isEmpty })
        try await Task.sleep(for: .milliseconds(100))
        let opened = Date()
        rig.provider.queue?.withLock { $0.open = true }
        try await eventually("serving once the queue opened") { try await rig.healthy("d") == 1 }
        let replica = try #require(try await rig.live("d").first)
        #expect(try #require(replica.startedAt) >= opened.addingTimeInterval(-0.01), "its run begins when it started, not when it was queued")
        #expect(replica.failReason == nil)
        await rig.stop()
    }

    @Test("stopping a deployment whose run is still queued cancels the queued run: nothing starts later")
    func queuedThenStopped() async throws {
        let rig = try await FleetRig(provider: InMemoryProvider(queued: true))
        try await rig.create("d", min: 1)
        try await eventually("pending") { try await rig.live("d").first?.status == .pending }
        let replicaId = try #require(try await rig.live("d").first?.id)
        try await eventually("the queued handle is known to the controller") {
            await rig.controller.runtimes[replicaId]?.queuedHandle != nil
        }
        try await rig.controller.stopDeployment(id: "d")
        #expect(rig.provider.queue?.withLock { $0.cancelled.contains(replicaId) } == true)
        rig.provider.queue?.withLock { $0.open = true }
        try await Task.sleep(for: .milliseconds(200))
        #expect(rig.provider.state.withLock { $0.launches.isEmpty }, "a queued run that was stopped never starts")
        #expect(try await rig.live("d").isEmpty)
        await rig.stop()
    }
}
