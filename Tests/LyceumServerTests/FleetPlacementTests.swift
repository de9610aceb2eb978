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
}
