import DeploymentStore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import InferenceCore
import Logging
import LyceumServer
import NIOCore
import Testing

/// The whole application as `buildApplication` wires it (control plane, gateway, controller, autoscaler),
/// on an in-memory store and an in-memory process table, driven through its router: the routes'
/// answers and the fleet behind them in milliseconds. The end-to-end suite does the same with real
/// processes, sockets and clients.
@Suite("The application on an in-memory store and in-memory provider")
struct ApplicationTests {
    func build(provider: InMemoryProvider) async throws -> BuiltServer {
        let profile = HardwareProfile(
            name: "sim.h100", engine: .sim, gpuType: "h100", gpuCount: 1, pricePerHour: "2.00", devices: ["g0", "g1", "g2", "g3"], readyTimeoutS: 30)
        var config = ServerConfiguration(dataDir: try temporaryDirectory(), profiles: [profile])
        config.healthInterval = .milliseconds(20)
        config.reconcileInterval = .milliseconds(20)
        config.stopGrace = .milliseconds(50)
        return try await LyceumServer.buildApplication(
            configuration: config, store: InMemoryStore(), provider: provider, probe: { _ in InMemoryProbe(provider: provider) },
            sealer: SecretSealer(key: .init(size: .bits256)), logger: Logger(label: "application-test"))
    }

    @Test("create, follow to running, list, refuse bad input in the plane's shape, stop")
    func deploymentLifecycle() async throws {
        let provider = InMemoryProvider()
        let server = try await build(provider: provider)
        let key = try await server.authenticator.createKey(org: "acme", isAdmin: false)
        let controller = server.controller
        let fleet = Task { try await controller.run() }
        let auth: HTTPFields = [.authorization: "Bearer \(key)", .contentType: "application/json"]
        let api = "/api/v2/external/inference"
        try await server.application.test(.router) { client in
            func json(_ response: TestResponse) throws -> [String: Any] {
                try #require(try JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: Any])
            }
            // Bad input: a 422 in FastAPI's shape naming the field; nothing stored.
            let bad = try await client.execute(
                uri: "\(api)/create", method: .post, headers: auth,
                body: ByteBuffer(string: #"{"hf_model_id":"sim/m","hardware_profile":"sim.h100","target_rps":-1,"target_latency_p95_ms":500,"stabilisation_window":30}"#))
            #expect(bad.status == .unprocessableContent)
            let detail = try #require(try json(bad)["detail"] as? [[String: Any]])
            #expect((detail.first?["loc"] as? [Any])?.last as? String == "target_rps")
            let unauthenticated = try await client.execute(uri: "\(api)/list", method: .get)
            #expect(unauthenticated.status == .unauthorized)

            let created = try await client.execute(
                uri: "\(api)/create", method: .post, headers: auth,
                body: ByteBuffer(string: #"{"hf_model_id":"sim/m","hardware_profile":"sim.h100","target_rps":5,"target_latency_p95_ms":500,"stabilisation_window":30,"min_replicas":2,"max_replicas":2}"#))
            #expect(created.status == .ok)
            let id = try #require(try json(created)["deployment_id"] as? String)
            try await eventually("running with two healthy replicas") {
                let got = try json(try await client.execute(uri: "\(api)/get?deployment_id=\(id)", method: .get, headers: auth))
                let replicas = got["replicas"] as? [[String: Any]] ?? []
                return got["status"] as? String == "running" && replicas.filter { $0["healthy"] as? Bool == true }.count == 2
            }
            #expect(provider.runningReplicaIds.count == 2, "a tenant may hold half of the profile's four devices")
            let listed = try json(try await client.execute(uri: "\(api)/list", method: .get, headers: auth))
            #expect((listed["deployments"] as? [[String: Any]])?.map { $0["deployment_id"] as? String } == [id])
            let models = try json(try await client.execute(uri: "/openai/v1/models", method: .get, headers: auth))
            #expect((models["data"] as? [[String: Any]])?.contains { $0["id"] as? String == id } == true)

            let stopped = try await client.execute(
                uri: "\(api)/stop", method: .delete, headers: auth, body: ByteBuffer(string: #"{"deployment_id":"\#(id)"}"#))
            #expect(stopped.status == .ok)
            #expect(provider.runningReplicaIds.isEmpty, "the stop answers once the replicas are gone")
            let after = try json(try await client.execute(uri: "\(api)/get?deployment_id=\(id)&include_terminated=true", method: .get, headers: auth))
            #expect(after["status"] as? String == "stopped")
        }
        fleet.cancel()
        _ = await fleet.result
        try await server.httpClient.shutdown()
    }
}
