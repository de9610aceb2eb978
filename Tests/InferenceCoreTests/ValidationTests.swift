import Foundation
import Testing
@testable import InferenceCore

@Suite("Create request validation")
struct ValidationTests {
    let profiles = ["sim.h100", "gpu.a100", "cpu"]

    func validate(_ json: String) throws(ValidationFailure) -> DeploymentSpec {
        try DeploymentSpec.validate(body: Data(json.utf8), knownProfiles: profiles)
    }

    func issues(_ json: String) -> [ValidationIssue] {
        do {
            _ = try validate(json)
            return []
        } catch {
            return error.issues
        }
    }

    @Test("a complete request is accepted with defaults for optional fields")
    func accepted() throws {
        let spec = try validate(#"{"hf_model_id":"m/x","hardware_profile":"sim.h100","target_rps":10,"target_latency_p95_ms":500.5,"stabilisation_window":300}"#)
        #expect(spec == DeploymentSpec(hfModelId: "m/x", hardwareProfile: "sim.h100", targetRps: 10, targetLatencyP95Ms: 500.5, stabilisationWindow: 300))
    }

    @Test("every missing required field is named")
    func missing() {
        let found = issues(#"{"hf_model_id":"m/x"}"#)
        #expect(Set(found.map { $0.loc.last! }) == ["hardware_profile", "target_rps", "target_latency_p95_ms", "stabilisation_window"])
        #expect(found.allSatisfy { $0.type == "missing" && $0.loc.first == "body" })
    }

    @Test("wrong JSON types are refused per field")
    func wrongTypes() {
        let found = issues(#"{"hf_model_id":5,"hardware_profile":"sim.h100","target_rps":"fast","target_latency_p95_ms":1,"stabilisation_window":1.5,"min_replicas":true}"#)
        let byField = Dictionary(uniqueKeysWithValues: found.map { ($0.loc.last!, $0.type) })
        #expect(byField == ["hf_model_id": "string_type", "target_rps": "float_type", "stabilisation_window": "int_type", "min_replicas": "int_type"])
    }

    @Test("replica bounds: min at least 1, max at least min")
    func replicaBounds() {
        let base = #""hf_model_id":"m","hardware_profile":"cpu","target_rps":1,"target_latency_p95_ms":1,"stabilisation_window":0"#
        #expect(issues("{\(base),\"min_replicas\":0}").map(\.loc.last) == ["min_replicas"])
        let maxBelow = issues("{\(base),\"min_replicas\":3,\"max_replicas\":2}")
        #expect(maxBelow.map(\.loc.last) == ["max_replicas"])
        #expect(maxBelow.first?.msg.contains("min_replicas (3)") == true)
        #expect(issues("{\(base),\"min_replicas\":2,\"max_replicas\":2}").isEmpty)
    }

    @Test("targets must be positive; the window may be zero but not negative")
    func targets() {
        let found = issues(#"{"hf_model_id":"m","hardware_profile":"cpu","target_rps":0,"target_latency_p95_ms":-1,"stabilisation_window":-1}"#)
        #expect(Dictionary(uniqueKeysWithValues: found.map { ($0.loc.last!, $0.type) }) == [
            "target_rps": "greater_than", "target_latency_p95_ms": "greater_than", "stabilisation_window": "greater_than_equal",
        ])
    }

    @Test("an unknown hardware profile lists the known ones")
    func unknownProfile() {
        let found = issues(#"{"hf_model_id":"m","hardware_profile":"gpu.z9","target_rps":1,"target_latency_p95_ms":1,"stabilisation_window":1}"#)
        #expect(found.count == 1)
        #expect(found[0].msg.contains("sim.h100, gpu.a100, cpu"))
    }

    @Test("malformed JSON and non-objects are refused")
    func malformed() {
        #expect(issues("{not json").map(\.type) == ["json_invalid"])
        #expect(issues("[1,2]").map(\.type) == ["model_attributes_type"])
    }

    @Test("an empty token is treated as no token")
    func emptyToken() throws {
        let spec = try validate(#"{"hf_model_id":"m","hardware_profile":"cpu","target_rps":1,"target_latency_p95_ms":1,"stabilisation_window":1,"hf_token":""}"#)
        #expect(spec.hfToken == nil)
    }
}

@Suite("Deployment status from replicas")
struct StatusTests {
    @Test("running as soon as one replica is healthy")
    func running() {
        #expect(aggregateStatus(current: .provisioning, replicas: [.running, .initingDockerContainer], healthy: 1) == .running)
    }

    @Test("provisioning while replicas start; created until the first replica exists")
    func provisioning() {
        #expect(aggregateStatus(current: .created, replicas: [], healthy: 0) == .created)
        #expect(aggregateStatus(current: .created, replicas: [.pending], healthy: 0) == .provisioning)
        #expect(aggregateStatus(current: .running, replicas: [.restarting], healthy: 0) == .provisioning)
    }

    @Test("failed only when every replica failed")
    func failed() {
        #expect(aggregateStatus(current: .provisioning, replicas: [.failed, .failed], healthy: 0) == .failed)
        #expect(aggregateStatus(current: .provisioning, replicas: [.failed, .restarting], healthy: 0) == .provisioning)
    }

    @Test("stopped and paused deployments keep their status")
    func inactive() {
        #expect(aggregateStatus(current: .stopped, replicas: [.running], healthy: 1) == .stopped)
        #expect(aggregateStatus(current: .paused, replicas: [], healthy: 0) == .paused)
    }
}

@Suite("Wire shapes")
struct WireShapeTests {
    @Test("optional contract fields are encoded as null, never left out")
    func nullsStay() throws {
        let replica = ReplicaInfo(replicaId: "r", status: .pending, healthy: false, lastHealthCheck: nil, failReason: nil, restartCount: 0, createdAt: "t")
        let json = String(decoding: try WireJSON.encoder.encode(replica), as: UTF8.self)
        #expect(json.contains("\"fail_reason\":null") && json.contains("\"last_health_check\":null"))
        let model = CatalogueModel(servingName: "s", hfModelId: "m", hardwareProfile: "cpu", gpuType: "cpu", gpuCount: 0, pricePerHour: "0", isGpuAvailable: nil, readyTimeoutS: 1)
        #expect(String(decoding: try WireJSON.encoder.encode(model), as: UTF8.self).contains("\"is_gpu_available\":null"))
    }
}
