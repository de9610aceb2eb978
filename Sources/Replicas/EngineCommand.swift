import Foundation
import InferenceCore

/// What a provider needs to start one replica's model server, and how to probe it.
public struct EngineCommand: Sendable, Equatable {
    public var executable: String
    public var arguments: [String]
    /// Added to the inherited environment. Secrets travel here, never in `arguments`.
    public var environment: [String: String]
    public var healthPath: String
    /// The model name the engine answers to; the gateway rewrites `model` to it.
    public var servedModelName: String
    /// Where it runs and what it needs there (a cluster provider asks the cluster for these).
    public var requirements = ReplicaRequirements()
    /// Model files its node fetches before the engine starts (a cluster node's own Hub cache); the command
    /// names them `{model_file}` (one GGUF file) and `{model_cache}` (the cache folder).
    public var nodePull: NodeModelPull?

    public init(
        executable: String, arguments: [String], environment: [String: String], healthPath: String,
        servedModelName: String
    ) {
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
        self.healthPath = healthPath
        self.servedModelName = servedModelName
    }
}

/// Model files a cluster node fetches for its replica, with the same resumable, verified download as the
/// server's.
public struct NodeModelPull: Sendable, Equatable {
    public var repo: String
    /// `checkpoint`, `gguf` or `gguf:FILE`.
    public var format: String
    public var hubEndpoint: String

    public init(repo: String, format: String, hubEndpoint: String) {
        self.repo = repo
        self.format = format
        self.hubEndpoint = hubEndpoint
    }
}

/// What a replica asks of the machine it lands on, from its hardware profile.
public struct ReplicaRequirements: Sendable, Equatable {
    public var placement: ReplicaPlacement = .local
    /// Whole GPUs (Ray sets `CUDA_VISIBLE_DEVICES` for them).
    public var gpus = 0
    /// Custom resources, and the GPU type as Ray's `accelerator_type:NAME` resource.
    public var resources: [String: Double] = [:]
    /// The replica's run: its id and how many times it ran before, so a cluster job's id is the same when
    /// two leaders launch the same run, and new for each restart.
    public var runId = ""

    public init() {}

    /// Everything as Ray's resource names: the custom resources, and the GPUs as `GPU`.
    public var clusterResources: [String: Double] {
        var all = resources
        if gpus > 0 { all["GPU"] = Double(gpus) }
        return all
    }

    /// A profile's needs: GPUs for vLLM (with its GPU type), the profile's custom resources for every engine.
    public init(profile: HardwareProfile, runId: String) {
        placement = profile.provider
        self.runId = runId
        resources = profile.resources
        if profile.engine == .vllm {
            gpus = max(1, profile.gpuCount)
            if !profile.gpuType.isEmpty, resources.keys.allSatisfy({ !$0.hasPrefix("accelerator_type:") }) {
                resources["accelerator_type:\(profile.gpuType.uppercased())"] = 0.001
            }
        }
    }
}

/// Everything about one replica start that decides its command line.
public struct ReplicaLaunch: Sendable {
    public var replicaId: String
    public var deploymentId: String
    public var hfModelId: String
    public var hfToken: String?
    public var profile: HardwareProfile
    public var port: Int
    public var devices: [String]
    /// The model file to load (GGUF), once downloaded from the Hub; nil for local paths.
    public var modelFile: String?
    /// The Hub cache the model's files were downloaded into (given to vLLM as `HF_HUB_CACHE`, offline).
    public var modelCacheDir: String?
    /// Runs of this replica before this one (restarts), for the run's id.
    public var attempt = 0
    /// The model's files are fetched where it runs (a cluster node), after the command is made.
    public var nodePull: NodeModelPull?

    public init(
        replicaId: String, deploymentId: String, hfModelId: String, hfToken: String?, profile: HardwareProfile,
        port: Int, devices: [String], modelFile: String? = nil, modelCacheDir: String? = nil, attempt: Int = 0,
        nodePull: NodeModelPull? = nil
    ) {
        self.nodePull = nodePull
        self.attempt = attempt
        self.replicaId = replicaId
        self.deploymentId = deploymentId
        self.hfModelId = hfModelId
        self.hfToken = hfToken
        self.profile = profile
        self.port = port
        self.devices = devices
        self.modelFile = modelFile
        self.modelCacheDir = modelCacheDir
    }
}

/// Why an engine cannot be started at all (as opposed to starting and crashing).
public struct EngineUnavailable: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Turns a replica launch into an engine command line, per engine kind.
public struct EngineLauncher: Sendable {
    /// Path of the `lyceum` binary, which serves the simulator as `lyceum engine sim`.
    public var lyceumExecutable: String
    public var vllmExecutable: String
    public var llamaServerExecutable: String

    public init(lyceumExecutable: String, vllmExecutable: String = "vllm", llamaServerExecutable: String = "llama-server") {
        self.lyceumExecutable = lyceumExecutable
        self.vllmExecutable = vllmExecutable
        self.llamaServerExecutable = llamaServerExecutable
    }

    public func command(for launch: ReplicaLaunch) throws(EngineUnavailable) -> EngineCommand {
        var command = try engineCommand(for: launch)
        command.requirements = ReplicaRequirements(profile: launch.profile, runId: "\(launch.replicaId)-\(launch.attempt)")
        command.nodePull = launch.nodePull
        return command
    }

    func engineCommand(for launch: ReplicaLaunch) throws(EngineUnavailable) -> EngineCommand {
        var env = ["LYCEUM_REPLICA_ID": launch.replicaId]
        if let token = launch.hfToken {
            env["HF_TOKEN"] = token
        }
        switch launch.profile.engine {
        case .sim:
            return EngineCommand(
                executable: lyceumExecutable,
                arguments: [
                    "engine", "sim", "--host", "127.0.0.1", "--port", String(launch.port),
                    "--served-model-name", launch.deploymentId, "--model", launch.hfModelId,
                    "--devices", launch.devices.joined(separator: ","),
                ] + launch.profile.engineArgs,
                environment: env, healthPath: "/health", servedModelName: launch.deploymentId
            )
        case .vllm:
            env["CUDA_VISIBLE_DEVICES"] = launch.devices.joined(separator: ",")
            if let cache = launch.modelCacheDir {
                // The files are already in the cache: vLLM must not go to the network for them.
                env["HF_HUB_CACHE"] = cache
                env["HF_HUB_OFFLINE"] = "1"
            }
            return EngineCommand(
                executable: vllmExecutable,
                arguments: [
                    "serve", launch.hfModelId, "--host", "127.0.0.1", "--port", String(launch.port),
                    "--served-model-name", launch.deploymentId,
                    "--tensor-parallel-size", String(max(1, launch.profile.gpuCount)),
                ] + launch.profile.engineArgs,
                environment: env, healthPath: "/health", servedModelName: launch.deploymentId
            )
        case .llamacpp:
            let model = launch.nodePull != nil ? "{model_file}" : launch.modelFile ?? (launch.hfModelId.hasPrefix("file://") ? String(launch.hfModelId.dropFirst(7)) : launch.hfModelId)
            guard launch.nodePull != nil || (model.hasSuffix(".gguf") && FileManager.default.fileExists(atPath: model)) else {
                throw EngineUnavailable(
                    "the cpu profile (llama.cpp) serves GGUF files: '\(launch.hfModelId)' is not a .gguf file on this machine; name a GGUF repository on the Hub (org/repo or org/repo:file.gguf) or a local .gguf path"
                )
            }
            guard let server = LlamaCppInstaller.locate(configured: llamaServerExecutable) else {
                throw EngineUnavailable(
                    "llama-server is not installed: run `lyceum engine install llama.cpp` (builds it once, about 4 minutes on 2 cores), or set llama_server_executable in the server config"
                )
            }
            return EngineCommand(
                executable: server,
                arguments: [
                    "-m", model, "--host", "127.0.0.1", "--port", String(launch.port), "-a", launch.deploymentId,
                    "--parallel", "4", "--metrics",
                ] + launch.profile.engineArgs,
                environment: env, healthPath: "/health", servedModelName: launch.deploymentId
            )
        }
    }
}
