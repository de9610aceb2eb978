import Foundation
import InferenceCore
import Testing
@testable import LyceumServer
@testable import Replicas

@Suite("Engines and GPUs")
struct ReplicasTests {
    func launch(_ profile: HardwareProfile, token: String? = nil) -> ReplicaLaunch {
        ReplicaLaunch(replicaId: "r1", deploymentId: "d1", hfModelId: "meta-llama/Llama-3.1-8B-Instruct", hfToken: token, profile: profile, port: 9000, devices: ["2", "3"])
    }

    @Test("vLLM gets its port, served name, tensor parallelism and devices; the token only in the environment")
    func vllmCommand() throws {
        var profile = HardwareProfile.defaults(gpuDevices: ["0", "1", "2", "3"]).first { $0.name == "gpu.h100" }!
        profile.gpuCount = 2
        var replica = launch(profile, token: "hf_abc")
        replica.modelCacheDir = "/cache"
        let command = try EngineLauncher(lyceumExecutable: "/bin/lyceum").command(for: replica)
        #expect(command.executable == "vllm")
        #expect(command.arguments == [
            "serve", "meta-llama/Llama-3.1-8B-Instruct", "--host", "127.0.0.1", "--port", "9000",
            "--served-model-name", "d1", "--tensor-parallel-size", "2",
        ])
        #expect(command.environment["CUDA_VISIBLE_DEVICES"] == "2,3")
        #expect(command.environment["HF_TOKEN"] == "hf_abc")
        #expect(command.environment["HF_HUB_CACHE"] == "/cache" && command.environment["HF_HUB_OFFLINE"] == "1")
        #expect(command.environment["LYCEUM_REPLICA_ID"] == "r1")
        #expect(!command.arguments.joined(separator: " ").contains("hf_abc"))
    }

    @Test("the simulator runs as `lyceum engine sim` with the profile's extra arguments")
    func simCommand() throws {
        var profile = HardwareProfile.defaults(gpuDevices: []).first { $0.name == "sim.h100" }!
        profile.engineArgs = ["--ttft-ms", "50"]
        let command = try EngineLauncher(lyceumExecutable: "/bin/lyceum").command(for: launch(profile))
        #expect(command.executable == "/bin/lyceum")
        #expect(command.arguments.prefix(2) == ["engine", "sim"])
        #expect(command.arguments.suffix(2) == ["--ttft-ms", "50"])
        #expect(command.healthPath == "/health" && command.servedModelName == "d1")
    }

    @Test("the cpu engine refuses a model that is not a local GGUF file, saying why")
    func llamaNeedsGGUF() {
        let profile = HardwareProfile.defaults(gpuDevices: []).first { $0.name == "cpu" }!
        #expect(throws: EngineUnavailable.self) { try EngineLauncher(lyceumExecutable: "/x").command(for: launch(profile)) }
    }

    @Test("nvidia-smi CSV output parses into GPUs with their family")
    func nvidiaSmi() {
        let gpus = GPUDiscovery.parse("0, NVIDIA H100 80GB HBM3, 81559, GPU-aaaa\n1, NVIDIA A100-SXM4-40GB, 40960, GPU-bbbb\n\nnot a gpu line\n")
        #expect(gpus.map(\.index) == ["0", "1"])
        #expect(gpus.map(\.family) == ["h100", "a100"])
        #expect(gpus[0].memoryMiB == 81559 && gpus[1].uuid == "GPU-bbbb")
        #expect(GPUDiscovery.parse("").isEmpty)
    }

    @Test("discovered GPUs fill the matching profiles; a config file adds and replaces profiles")
    func configuration() throws {
        let dir = NSTemporaryDirectory() + "lyceum-cfg-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = dir + "/c.json"
        try Data(#"{"port": 9999, "health_interval_s": 0.5, "hardware_profiles": [{"name": "sim.h100", "engine": "sim", "devices": ["a"], "price_per_hour": "9.00"}, {"name": "sim.l4", "engine": "sim", "gpu_type": "l4", "gpu_count": 1, "devices": ["l0"]}]}"#.utf8).write(to: URL(fileURLWithPath: file))
        let gpus = GPUDiscovery.parse("0, NVIDIA H100 80GB HBM3, 81559, GPU-a\n")
        let config = try ServerConfiguration.load(dataDir: dir, configFile: file, gpus: gpus)
        #expect(config.port == 9999 && config.healthInterval == .milliseconds(500))
        #expect(config.profiles.first { $0.name == "gpu.h100" }?.devices == ["0"])
        #expect(config.profiles.first { $0.name == "gpu.a100" }?.devices == [])
        #expect(config.profiles.first { $0.name == "sim.h100" }?.pricePerHour == "9.00")
        #expect(config.profiles.contains { $0.name == "sim.l4" })
        #expect(throws: ConfigurationError.self) { try ServerConfiguration.load(dataDir: dir, configFile: dir + "/missing.json", gpus: []) }
    }

    @Test("every controller and gateway knob is settable in the config file, and bounded")
    func everyKnobInTheFile() throws {
        let dir = try temporaryDirectory()
        let file = dir + "/c.json"
        try Data(#"{"health_timeout_s": 3, "answer_timeout_s": 4, "full_reconcile_interval_s": 120, "max_restart_backoff_s": 90, "drain_timeout_s": 12, "unhealthy_restart_after_s": 45, "max_wrong_answers": 5, "gateway_max_attempts": 2, "max_body_bytes": 2097152, "replica_wait_s": 60, "upstream_timeout_s": 600, "scale_pressure_memory_s": 300, "max_consecutive_failures": 6}"#.utf8)
            .write(to: URL(fileURLWithPath: file))
        let c = try ServerConfiguration.load(dataDir: dir, configFile: file, gpus: [])
        #expect(c.controller.healthTimeout == .seconds(3) && c.controller.answerTimeout == .seconds(4) && c.controller.fullReconcileInterval == .seconds(120))
        #expect(c.controller.maxRestartBackoff == .seconds(90) && c.controller.drainTimeout == .seconds(12) && c.controller.unhealthyRestartAfter == .seconds(45))
        #expect(c.controller.maxWrongAnswers == 5 && c.gateway.maxAttempts == 2 && c.gateway.maxBodyBytes == 2 << 20 && c.maxConsecutiveFailures == 6)
        #expect(c.gateway.replicaWait == .seconds(60) && c.gateway.upstreamTimeout == .seconds(600) && c.scalePressureMemory == .seconds(300))
        for bad in [#"{"max_consecutive_failures": -1}"#, #"{"gateway_max_attempts": 0}"#, #"{"drain_timeout_s": -5}"#, #"{"max_body_bytes": 9223372036854775807}"#] {
            try Data(bad.utf8).write(to: URL(fileURLWithPath: file))
            #expect(throws: ConfigurationError.self, "\(bad)") { try ServerConfiguration.load(dataDir: dir, configFile: file, gpus: []) }
        }
    }

    @Test("free port, process liveness, and log tails")
    func processHelpers() throws {
        let port = try freeLoopbackPort()
        #expect(port > 0 && port < 65536)
        #expect(LocalProcessProvider.isRunning(getpid()))
        #expect(!LocalProcessProvider().isAlive(.process(getpid()), replicaId: "not-this-process"))
        #expect(ReplicaHandle.process(42).processId == 42 && ReplicaHandle("ray:job-1").processId == nil)
        let dir = NSTemporaryDirectory() + "lyceum-log-" + UUID().uuidString
        try Data((1...100).map { "line \($0)" }.joined(separator: "\n").utf8).write(to: URL(fileURLWithPath: dir))
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(logTail(path: dir, maxLines: 3) == "line 98\nline 99\nline 100")
    }

    @Test("a log tail never quotes a model file's bytes back, nor control characters")
    func logTailRedacts() throws {
        let path = NSTemporaryDirectory() + "lyceum-log-" + UUID().uuidString
        let lines = ["loading model", "gguf_init_from_file_impl: invalid magic characters: 'root', expected 'GGUF'", "bell\u{7} here"]
        try Data(lines.joined(separator: "\n").utf8).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let tail = logTail(path: path)
        #expect(!tail.contains("root") && tail.contains("left out"))
        #expect(tail.hasSuffix("bell? here"))
    }
}
