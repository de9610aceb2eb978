/// The kind of model server a replica runs.
public enum EngineKind: String, Codable, Sendable {
    /// The built-in simulator (`lyceum engine sim`); never passed off as a model.
    case sim
    /// vLLM's OpenAI-compatible server, for GPU profiles.
    case vllm
    /// llama.cpp's `llama-server`, for the CPU profile.
    case llamacpp = "llama.cpp"
}

/// Where a profile's replicas run.
public enum ReplicaPlacement: String, Codable, Sendable {
    /// Child processes of the server, on this machine.
    case local
    /// Jobs on a Ray cluster (`ray_address`): the cluster places them on its nodes.
    case ray
}

/// A named hardware profile: what each replica runs on, with which engine, at what price.
public struct HardwareProfile: Codable, Sendable, Equatable {
    public var name: String
    public var engine: EngineKind
    public var gpuType: String
    /// Devices each replica needs from the pool (0 for CPU).
    public var gpuCount: Int
    /// Decimal string, per replica-hour.
    public var pricePerHour: String
    /// Device names replicas are allotted from. Empty with `gpuCount > 0` means none are available.
    public var devices: [String]
    public var readyTimeoutS: Int
    /// Extra arguments appended to the engine's command line (e.g. simulator latencies).
    public var engineArgs: [String]
    /// Models offered in the catalogue for this profile.
    public var catalogue: [String]
    /// Where its replicas run: local processes (the default) or jobs on a Ray cluster.
    public var provider: ReplicaPlacement = .local
    /// Ray custom resources each replica asks for (`{"sim_gpu": 1}`), beside `gpu_count` GPUs for vLLM.
    public var resources: [String: Double] = [:]

    public init(
        name: String, engine: EngineKind, gpuType: String, gpuCount: Int, pricePerHour: String,
        devices: [String], readyTimeoutS: Int, engineArgs: [String] = [], catalogue: [String] = []
    ) {
        self.name = name
        self.engine = engine
        self.gpuType = gpuType
        self.gpuCount = gpuCount
        self.pricePerHour = pricePerHour
        self.devices = devices
        self.readyTimeoutS = readyTimeoutS
        self.engineArgs = engineArgs
        self.catalogue = catalogue
    }

    enum CodingKeys: String, CodingKey {
        case name, engine, gpuType, gpuCount, pricePerHour, devices, readyTimeoutS, engineArgs, catalogue, provider, resources
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        engine = try c.decode(EngineKind.self, forKey: .engine)
        gpuType = try c.decodeIfPresent(String.self, forKey: .gpuType) ?? "cpu"
        gpuCount = try c.decodeIfPresent(Int.self, forKey: .gpuCount) ?? 0
        pricePerHour = try c.decodeIfPresent(String.self, forKey: .pricePerHour) ?? "0.00"
        devices = try c.decodeIfPresent([String].self, forKey: .devices) ?? []
        readyTimeoutS = try c.decodeIfPresent(Int.self, forKey: .readyTimeoutS) ?? 300
        engineArgs = try c.decodeIfPresent([String].self, forKey: .engineArgs) ?? []
        catalogue = try c.decodeIfPresent([String].self, forKey: .catalogue) ?? []
        provider = try c.decodeIfPresent(ReplicaPlacement.self, forKey: .provider) ?? .local
        resources = try c.decodeIfPresent([String: Double].self, forKey: .resources) ?? [:]
        for (name, amount) in resources {
            guard (1...64).contains(name.count), amount.isFinite, amount > 0, amount <= 1_000_000 else {
                throw DecodingError.dataCorruptedError(
                    forKey: .resources, in: c,
                    debugDescription: "profile \(self.name): a resource is a name of 1 to 64 characters and an amount above 0 and at most 1000000")
            }
        }
    }

    /// Profiles that work out of the box on a laptop: simulated GPUs, real GPUs if any, and CPU.
    public static func defaults(gpuDevices: [String]) -> [HardwareProfile] {
        let sim: (String, String) -> HardwareProfile = { name, price in
            HardwareProfile(
                name: "sim.\(name)", engine: .sim, gpuType: name, gpuCount: 1, pricePerHour: price,
                devices: (0..<8).map { "sim-\(name)-\($0)" }, readyTimeoutS: 60,
                catalogue: ["meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen2.5-7B-Instruct"]
            )
        }
        let gpu: (String, String) -> HardwareProfile = { name, price in
            HardwareProfile(
                name: "gpu.\(name)", engine: .vllm, gpuType: name, gpuCount: 1, pricePerHour: price,
                devices: gpuDevices, readyTimeoutS: 900,
                catalogue: ["meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen2.5-7B-Instruct"]
            )
        }
        return [
            sim("a100", "1.20"), sim("h100", "2.50"),
            gpu("a100", "1.20"), gpu("h100", "2.50"),
            HardwareProfile(
                name: "cpu", engine: .llamacpp, gpuType: "cpu", gpuCount: 0, pricePerHour: "0.05",
                devices: [], readyTimeoutS: 600, catalogue: ["Qwen/Qwen2.5-0.5B-Instruct-GGUF"]
            ),
        ]
    }
}
