import Foundation
import Testing
@testable import InferenceCore

@Suite("Create request validation")
struct ValidationTests {
    let profiles = [
        HardwareProfile(name: "sim.h100", engine: .sim, gpuType: "h100", gpuCount: 1, pricePerHour: "2.50", devices: ["a", "b"], readyTimeoutS: 60, catalogue: ["meta-llama/Llama-3.1-8B-Instruct"]),
        HardwareProfile(name: "gpu.a100", engine: .vllm, gpuType: "a100", gpuCount: 1, pricePerHour: "1.20", devices: [], readyTimeoutS: 900, catalogue: ["meta-llama/Llama-3.1-8B-Instruct"]),
        HardwareProfile(name: "cpu", engine: .llamacpp, gpuType: "cpu", gpuCount: 0, pricePerHour: "0.05", devices: [], readyTimeoutS: 600),
    ]

    func validate(_ json: String) throws(ValidationFailure) -> DeploymentSpec {
        try DeploymentSpec.validate(body: Data(json.utf8), profiles: profiles)
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

    @Test("a model outside the catalogue without a profile or GPU type names the missing field; the model is always required")
    func missing() {
        let found = issues(#"{"hf_model_id":"m/x"}"#)
        #expect(found.map { $0.loc.last! } == ["hardware_profile"])
        #expect(found.allSatisfy { $0.type == "missing" && $0.loc.first == "body" })
        #expect(issues(#"{"hardware_profile":"cpu"}"#).map { $0.loc.last! } == ["hf_model_id"])
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

    @Test("targets must be within their bounds, and each message states the bound")
    func targets() {
        let found = issues(#"{"hf_model_id":"m","hardware_profile":"cpu","target_rps":0,"target_latency_p95_ms":-1,"stabilisation_window":-1}"#)
        #expect(Dictionary(uniqueKeysWithValues: found.map { ($0.loc.last!, $0.type) }) == [
            "target_rps": "greater_than_equal", "target_latency_p95_ms": "greater_than_equal", "stabilisation_window": "greater_than_equal",
        ])
        #expect(found.first { $0.loc.last == "target_rps" }?.msg.contains("0.001") == true)
        let tiny = issues(#"{"hf_model_id":"m","hardware_profile":"cpu","target_rps":1e-300,"target_latency_p95_ms":1e300,"stabilisation_window":100000000}"#)
        #expect(Dictionary(uniqueKeysWithValues: tiny.map { ($0.loc.last!, $0.type) }) == [
            "target_rps": "greater_than_equal", "target_latency_p95_ms": "less_than_equal", "stabilisation_window": "less_than_equal",
        ])
        #expect(tiny.first { $0.loc.last == "target_latency_p95_ms" }?.msg.contains("3600000") == true)
    }

    @Test("replica counts are bounded by the operator's ceiling, so a huge min_replicas cannot jam the fleet")
    func replicaCeiling() {
        let base = #""hf_model_id":"m","hardware_profile":"cpu""#
        let huge = issues("{\(base),\"min_replicas\":100000000000000,\"max_replicas\":100000000000000}")
        #expect(Set(huge.map { $0.loc.last! }) == ["min_replicas", "max_replicas"])
        #expect(huge.allSatisfy { $0.msg.contains("64") })
        #expect(issues("{\(base),\"min_replicas\":64,\"max_replicas\":64}").isEmpty)
    }

    @Test("omitted targets take the published client's defaults")
    func defaults() throws {
        let spec = try validate(#"{"hf_model_id":"m","hardware_profile":"cpu"}"#)
        #expect(spec.targetRps == 10 && spec.targetLatencyP95Ms == 5000 && spec.stabilisationWindow == 300)
        #expect(spec.minReplicas == 1 && spec.maxReplicas == 1)
    }

    @Test("the published client's body: a serving name and a GPU type pick the catalogue's profile")
    func publishedShape() throws {
        let bare = try validate(#"{"hf_model_id":"llama-3.1-8b-instruct","min_replicas":1,"max_replicas":1}"#)
        #expect(bare.hfModelId == "meta-llama/Llama-3.1-8B-Instruct" && bare.hardwareProfile == "sim.h100")
        let typed = try validate(#"{"hf_model_id":"llama-3.1-8b-instruct","gpu_type":"a100","gpu_count":1}"#)
        #expect(typed.hardwareProfile == "gpu.a100")
        let named = try validate(#"{"hf_model_id":"meta-llama/Llama-3.1-8B-Instruct","gpu_type":"sim.h100"}"#)
        #expect(named.hardwareProfile == "sim.h100")
        let mixed = try validate(#"{"hf_model_id":"llama-3.1-8b-instruct","hardware_profile":"cpu","gpu_type":"h100"}"#)
        #expect(mixed.hardwareProfile == "cpu", "hardware_profile wins when both are sent")
        let unknown = issues(#"{"hf_model_id":"m","gpu_type":"z9"}"#)
        #expect(unknown.map { $0.loc.last! } == ["gpu_type"])
        #expect(unknown[0].msg.contains("sim.h100 (h100 x 1)"))
        #expect(issues(#"{"hf_model_id":"m","gpu_type":"h100","gpu_count":8}"#).map { $0.loc.last! } == ["gpu_type"])
    }

    @Test("control characters and over-long strings are refused before they reach the store")
    func controlCharacters() {
        #expect(issues("{\"hf_model_id\":\"m\\u0000x\",\"hardware_profile\":\"cpu\"}").map(\.type) == ["string_pattern_mismatch"])
        #expect(issues("{\"hf_model_id\":\"\(String(repeating: "m", count: 600))\",\"hardware_profile\":\"cpu\"}").map(\.type) == ["string_too_long"])
        #expect("0f1e\u{0}junk".isPlausibleIdentifier == false)
        #expect("0f1e2d3c-aaaa".isPlausibleIdentifier)
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
