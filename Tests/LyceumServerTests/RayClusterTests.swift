import Foundation
import InferenceCore
import Logging
import ModelHub
@testable import LyceumServer
@testable import RayCluster
import Replicas
import Testing

@Suite("Ray placement: job descriptions, requirements and the launcher's address")
struct RayClusterTests {
    let sim = EngineCommand(
        executable: "/opt/lyceum bin/lyceum",
        arguments: ["engine", "sim", "--host", "127.0.0.1", "--port", "41000", "--served-model-name", "d-1", "--model", "it's/model"],
        environment: ["LYCEUM_REPLICA_ID": "r-1"], healthPath: "/health", servedModelName: "d-1")

    @Test("the job's entrypoint is the launcher, then the engine with its address left for the node; a shell gives back every word")
    func entrypointRoundTrips() async throws {
        let line = RayProvider.entrypoint(launcher: "/usr/bin/lyceum", controlPlane: "http://10.1.0.1:8080", replicaId: "r-1", command: sim)
        let printed = try shellWords(line)
        #expect(printed == [
            "/usr/bin/lyceum", "replica", "run", "--control-plane", "http://10.1.0.1:8080", "--replica-id", "r-1", "--",
            "/opt/lyceum bin/lyceum", "engine", "sim", "--host", "{host}", "--port", "{port}", "--served-model-name", "d-1", "--model", "it's/model",
        ])
    }

    @Test("a vLLM profile asks Ray for its GPUs and GPU type; a simulator profile for its custom resources only")
    func requirementsFromProfiles() {
        var gpu = HardwareProfile(name: "gpu.h100", engine: .vllm, gpuType: "h100", gpuCount: 2, pricePerHour: "2.50", devices: [], readyTimeoutS: 900)
        gpu.provider = .ray
        let gpuNeeds = ReplicaRequirements(profile: gpu, runId: "r-0")
        #expect(gpuNeeds.placement == .ray)
        #expect(gpuNeeds.gpus == 2)
        #expect(gpuNeeds.resources == ["accelerator_type:H100": 0.001])
        var sim = HardwareProfile(name: "sim.ray", engine: .sim, gpuType: "h100", gpuCount: 1, pricePerHour: "1.00", devices: [], readyTimeoutS: 60)
        sim.provider = .ray
        sim.resources = ["sim_gpu": 1]
        let simNeeds = ReplicaRequirements(profile: sim, runId: "r-3")
        #expect(simNeeds.gpus == 0)
        #expect(simNeeds.resources == ["sim_gpu": 1])
        #expect(simNeeds.runId == "r-3")
    }

    @Test("a profile's resources must be named and positive; a Ray profile needs ray_address")
    func profileChecks() throws {
        for bad in [#"{"sim_gpu": 0}"#, #"{"sim_gpu": -1}"#, #"{"": 1}"#, #"{"sim_gpu": 1e300}"#] {
            let json = #"{"name": "x", "engine": "sim", "provider": "ray", "resources": \#(bad)}"#
            #expect(throws: DecodingError.self) { try WireJSON.decoder.decode(HardwareProfile.self, from: Data(json.utf8)) }
        }
        let good = try WireJSON.decoder.decode(
            HardwareProfile.self, from: Data(#"{"name": "x", "engine": "sim", "provider": "ray", "resources": {"sim_gpu": 1}}"#.utf8))
        #expect(good.provider == .ray && good.resources == ["sim_gpu": 1])
        var config = ServerConfiguration(dataDir: "/tmp", profiles: [good])
        #expect(throws: ConfigurationError.self) { try config.validate() }
        config.rayAddress = "http://10.0.0.2:8265"
        try config.validate()
        #expect(throws: ConfigurationError.self) { try ServerConfiguration.httpURL("10.0.0.2:8265", "ray_address") }
    }

    @Test("the launcher finds the address that routes to the control plane and a free port on it")
    func launcherAddress() throws {
        #expect(try NodeLauncher.routableAddress(toward: "127.0.0.1", port: 8080) == "127.0.0.1")
        let port = try NodeLauncher.freePort(on: "127.0.0.1")
        #expect((1024...65535).contains(port))
        #expect(throws: EngineUnavailable.self) { try NodeLauncher.freePort(on: "not-an-address") }
    }

    @Test("a registration nobody expects is refused without asking Ray")
    func unexpectedRegistration() async throws {
        let provider = RayProvider(
            configuration: .init(address: "http://127.0.0.1:9", token: nil, launcherExecutable: "/usr/bin/lyceum"), logger: Logger(label: "ray-test"))
        await #expect(throws: RegistrationRefused.self) {
            try await provider.register(replicaId: "r-1", token: "t", ReplicaRegistration(host: "10.0.0.3", port: 4000, pid: 1, devices: ""))
        }
        #expect(RayProvider.sameToken("abc", "abc") && !RayProvider.sameToken("abc", "abd") && !RayProvider.sameToken("abc", "abcd"))
        await provider.shutdown()
    }

    /// The words `/bin/sh` makes of a command line.
    func shellWords(_ line: String) throws -> [String] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "for w in \(line); do printf '%s\\0' \"$w\"; done"]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self).split(separator: "\0", omittingEmptySubsequences: false).dropLast().map(String.init)
    }
}

@Suite("Model files fetched on a cluster node")
struct NodePullTests {
    @Test("the launcher is told what to fetch: the repository, the format's name and the Hub; formats round-trip by name")
    func pullFlags() throws {
        var command = EngineCommand(
            executable: "/usr/bin/llama-server", arguments: ["-m", "{model_file}", "--host", "127.0.0.1", "--port", "9"], environment: [:],
            healthPath: "/health", servedModelName: "d")
        command.nodePull = NodeModelPull(repo: "acme/tiny-GGUF", format: "gguf:tiny-Q4_K_M.gguf", hubEndpoint: "http://10.0.0.1:9000")
        let line = RayProvider.entrypoint(launcher: "/usr/bin/lyceum", controlPlane: "http://10.0.0.1:8080", replicaId: "r", command: command)
        #expect(line.contains("--pull acme/tiny-GGUF --pull-format gguf:tiny-Q4_K_M.gguf --hub-endpoint http://10.0.0.1:9000 -- /usr/bin/llama-server -m '{model_file}'"))
        for format in [ModelFormat.checkpoint, .gguf(file: nil), .gguf(file: "a:b.gguf")] {
            #expect(ModelFormat(name: format.name) == format)
        }
        #expect(ModelFormat(name: "gguf:") == nil && ModelFormat(name: "weights") == nil)
    }
}
