import Controller
import Foundation
import Gateway
import InferenceCore
import ModelHub
import Replicas

/// Everything `lyceum server` is configured with: flags over the config file over defaults.
public struct ServerConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 8080
    public var dataDir: String
    public var profiles: [HardwareProfile]
    public var healthInterval: Duration = .seconds(2)
    public var reconcileInterval: Duration = .seconds(1)
    public var maxConsecutiveFailures = 4
    public var restartBackoff: Duration = .seconds(1)
    public var stopGrace: Duration = .seconds(10)
    public var vllmExecutable = "vllm"
    public var llamaServerExecutable = "llama-server"
    public var autoscaleInterval: Duration = .seconds(5)
    public var idleTimeout: Duration = .seconds(3600)
    /// Where the platform's state lives: nil for SQLite in the data directory, or `postgres://user@host/db`.
    public var storeURL: String?
    /// Requests one paused or starting deployment may hold waiting; beyond it, 429.
    public var waitQueueLimit = 1000
    /// The Hugging Face Hub (or a mirror): `HF_ENDPOINT` unless the config file says otherwise.
    public var hfEndpoint = HubClient.defaultEndpoint
    /// Where model files are downloaded, in the Hub's cache layout, shared by every replica.
    public var modelCacheDir = ModelDownloader.defaultCacheDir
    /// How long a create waits for the Hub's answer before accepting the model unchecked.
    public var hubCheckTimeout: Duration = .seconds(5)
    /// The most replicas one deployment may ask for (`max_replicas` is bounded by it).
    public var maxReplicasPerDeployment = 64
    /// What each tenant organisation may hold at once.
    public var orgQuota = OrgQuota()
    /// Local model files for tenants (admins may always name one), and the folders they must be in.
    public var allowLocalModels = false
    public var localModelDirs: [String] = []
    /// `/metrics` wants an admin key; nil: on unless the server listens on loopback only.
    public var metricsAuth: Bool?
    /// SIGTERM to exit, whatever is in flight: below systemd's 90 s stop timeout.
    public var shutdownTimeout: Duration = .seconds(30)
    /// After a scale-up, how long latency waits before asking for more; the tolerance band around the rate target.
    public var scaleUpSettle: Duration = .seconds(15)
    public var scaleTolerance = 0.1
    /// How long the rate per replica at which pressure asked a deployment for a replica holds its scale-down back.
    public var scalePressureMemory: Duration = .seconds(600)
    /// The controller's remaining knobs (its data directory and profiles are set from the fields above when
    /// the server is built), and the gateway's; their defaults live in one place, their types.
    public var controller: ControllerConfiguration
    public var gateway = GatewayConfiguration()
    /// Client connections held at once; beyond it new ones wait in the accept queue.
    public var maxConnections = 8192
    /// A new connection's first request head must arrive within this.
    public var headerTimeout: Duration = .seconds(10)
    /// A request body must arrive whole within this of its head.
    public var bodyTimeout: Duration = .seconds(60)
    /// A kept-alive connection with no request for this long is closed.
    public var connectionIdleTimeout: Duration = .seconds(75)

    /// With a PostgreSQL store: `any` instance may lead the fleet; a `gateway` never does.
    public var role = ServerRole.any
    /// This instance's name among those sharing a store (default: host name and a random suffix).
    public var instanceId: String?
    /// The key that seals secrets at rest (created if missing); instances sharing a store share this file.
    public var secretKeyFile: String?
    /// A leader that stops heartbeating (frozen, stalled) loses the fleet after this.
    public var leaderFreezeTimeout: Duration = .seconds(5)

    /// A Ray cluster's Jobs API (`http://HEAD:8265`) for profiles with `"provider": "ray"`, and its token.
    public var rayAddress: String?
    public var rayToken: String?
    /// Tags this platform's Ray jobs, so platforms sharing a cluster never touch each other's.
    public var rayClusterName = "lyceum"
    /// The `lyceum` binary on the Ray nodes (default: this server's own path, the same on every node).
    public var rayLauncherExecutable: String?
    /// The URL cluster nodes reach this server at (default: `http://HOST:PORT` it listens on).
    public var advertiseURL: String?

    /// Whether `/metrics` asks for an admin key.
    public var metricsNeedKey: Bool {
        metricsAuth ?? !["127.0.0.1", "localhost", "::1"].contains(host)
    }

    public init(dataDir: String, profiles: [HardwareProfile]) {
        self.dataDir = dataDir
        self.profiles = profiles
        controller = ControllerConfiguration(dataDir: dataDir, profiles: profiles)
    }

    public static var defaultDataDir: String {
        (ProcessInfo.processInfo.environment["HOME"] ?? FileManager.default.currentDirectoryPath) + "/.lyceum"
    }

    /// The config file's shape (JSON, snake_case). Every field is optional; profiles given replace defaults of
    /// the same name and add new ones.
    struct File: Decodable {
        var host: String?
        var port: Int?
        var hardwareProfiles: [HardwareProfile]?
        var healthIntervalS: Double?
        var reconcileIntervalS: Double?
        var maxConsecutiveFailures: Int?
        var restartBackoffS: Double?
        var stopGraceS: Double?
        var vllmExecutable: String?
        var llamaServerExecutable: String?
        var autoscaleIntervalS: Double?
        var storeUrl: String?
        var idleTimeoutS: Double?
        var waitQueueLimit: Int?
        var hfEndpoint: String?
        var modelCacheDir: String?
        var hubCheckTimeoutS: Double?
        var maxReplicasPerDeployment: Int?
        var orgQuota: OrgQuota?
        var allowLocalModels: Bool?
        var localModelDirs: [String]?
        var metricsAuth: Bool?
        var scaleUpSettleS: Double?
        var scaleTolerance: Double?
        var scalePressureMemoryS: Double?
        var shutdownTimeoutS: Double?
        var maxConnections: Int?
        var headerTimeoutS: Double?
        var bodyTimeoutS: Double?
        var connectionIdleTimeoutS: Double?
        var healthTimeoutS: Double?
        var answerTimeoutS: Double?
        var fullReconcileIntervalS: Double?
        var maxRestartBackoffS: Double?
        var drainTimeoutS: Double?
        var unhealthyRestartAfterS: Double?
        var maxWrongAnswers: Int?
        var gatewayMaxAttempts: Int?
        var maxBodyBytes: Int?
        var replicaWaitS: Double?
        var upstreamTimeoutS: Double?
        var role: String?
        var instanceId: String?
        var secretKeyFile: String?
        var leaderFreezeTimeoutS: Double?
        var rayAddress: String?
        var rayToken: String?
        var rayClusterName: String?
        var rayLauncherExecutable: String?
        var advertiseUrl: String?
    }

    /// Defaults, with GPU profiles' devices from `gpus`, then the config file (if any) on top.
    public static func load(dataDir: String, configFile: String?, gpus: [GPUInfo]) throws -> ServerConfiguration {
        var profiles = HardwareProfile.defaults(gpuDevices: [])
        for i in profiles.indices where profiles[i].engine == .vllm {
            profiles[i].devices = gpus.filter { $0.family == profiles[i].gpuType }.map(\.index)
        }
        var config = ServerConfiguration(dataDir: dataDir, profiles: profiles)
        guard let configFile else { return config }
        guard let data = FileManager.default.contents(atPath: configFile) else {
            throw ConfigurationError("cannot read config file \(configFile)")
        }
        let file: File
        do {
            file = try WireJSON.decoder.decode(File.self, from: data)
        } catch {
            throw ConfigurationError("config file \(configFile) is not valid: \(error)")
        }
        if let v = file.host { config.host = v }
        if let v = file.port { config.port = v }
        for profile in file.hardwareProfiles ?? [] {
            if let i = config.profiles.firstIndex(where: { $0.name == profile.name }) {
                config.profiles[i] = profile
            } else {
                config.profiles.append(profile)
            }
        }
        if let v = file.healthIntervalS { config.healthInterval = try seconds(v, "health_interval_s") }
        if let v = file.reconcileIntervalS { config.reconcileInterval = try seconds(v, "reconcile_interval_s") }
        if let v = file.maxConsecutiveFailures { config.maxConsecutiveFailures = try count(v, "max_consecutive_failures", 1...1000) }
        if let v = file.restartBackoffS { config.restartBackoff = try seconds(v, "restart_backoff_s") }
        if let v = file.stopGraceS { config.stopGrace = try seconds(v, "stop_grace_s") }
        if let v = file.vllmExecutable { config.vllmExecutable = v }
        if let v = file.llamaServerExecutable { config.llamaServerExecutable = v }
        if let v = file.autoscaleIntervalS { config.autoscaleInterval = try seconds(v, "autoscale_interval_s") }
        if let v = file.idleTimeoutS { config.idleTimeout = try seconds(v, "idle_timeout_s") }
        if let v = file.waitQueueLimit { config.waitQueueLimit = max(1, v) }
        if let v = file.hfEndpoint { config.hfEndpoint = v }
        if let v = file.modelCacheDir { config.modelCacheDir = (v as NSString).expandingTildeInPath }
        if let v = file.hubCheckTimeoutS { config.hubCheckTimeout = try seconds(v, "hub_check_timeout_s") }
        if let v = file.maxReplicasPerDeployment { config.maxReplicasPerDeployment = min(max(1, v), 100_000) }
        if let v = file.orgQuota { config.orgQuota = v }
        if let v = file.allowLocalModels { config.allowLocalModels = v }
        if let v = file.localModelDirs { config.localModelDirs = v.map { ($0 as NSString).expandingTildeInPath } }
        if let v = file.metricsAuth { config.metricsAuth = v }
        if let v = file.scaleUpSettleS { config.scaleUpSettle = try seconds(v, "scale_up_settle_s") }
        if let v = file.scalePressureMemoryS { config.scalePressureMemory = try seconds(v, "scale_pressure_memory_s") }
        if let v = file.scaleTolerance {
            guard v.isFinite, (0...0.5).contains(v) else { throw ConfigurationError("scale_tolerance must be between 0 and 0.5, not \(v)") }
            config.scaleTolerance = v
        }
        if let v = file.shutdownTimeoutS { config.shutdownTimeout = try seconds(v, "shutdown_timeout_s") }
        if let v = file.maxConnections { config.maxConnections = min(max(16, v), 1_000_000) }
        if let v = file.headerTimeoutS { config.headerTimeout = try seconds(v, "header_timeout_s") }
        if let v = file.bodyTimeoutS { config.bodyTimeout = try seconds(v, "body_timeout_s") }
        if let v = file.connectionIdleTimeoutS { config.connectionIdleTimeout = try seconds(v, "connection_idle_timeout_s") }
        if let v = file.storeUrl { config.storeURL = v }
        if let v = file.healthTimeoutS { config.controller.healthTimeout = try seconds(v, "health_timeout_s") }
        if let v = file.answerTimeoutS { config.controller.answerTimeout = try seconds(v, "answer_timeout_s") }
        if let v = file.fullReconcileIntervalS { config.controller.fullReconcileInterval = try seconds(v, "full_reconcile_interval_s") }
        if let v = file.maxRestartBackoffS { config.controller.maxRestartBackoff = try seconds(v, "max_restart_backoff_s") }
        if let v = file.drainTimeoutS { config.controller.drainTimeout = try seconds(v, "drain_timeout_s") }
        if let v = file.unhealthyRestartAfterS { config.controller.unhealthyRestartAfter = try seconds(v, "unhealthy_restart_after_s") }
        if let v = file.maxWrongAnswers { config.controller.maxWrongAnswers = try count(v, "max_wrong_answers", 1...1000) }
        if let v = file.gatewayMaxAttempts { config.gateway.maxAttempts = try count(v, "gateway_max_attempts", 1...16) }
        if let v = file.maxBodyBytes { config.gateway.maxBodyBytes = try count(v, "max_body_bytes", (1 << 20)...(1 << 30)) }
        if let v = file.replicaWaitS { config.gateway.replicaWait = try seconds(v, "replica_wait_s") }
        if let v = file.upstreamTimeoutS { config.gateway.upstreamTimeout = try seconds(v, "upstream_timeout_s") }
        if let v = file.role { config.role = try ServerRole(parsing: v) }
        if let v = file.instanceId { config.instanceId = try ServerRole.instanceId(v) }
        if let v = file.secretKeyFile { config.secretKeyFile = v }
        if let v = file.leaderFreezeTimeoutS { config.leaderFreezeTimeout = try seconds(max(1, v), "leader_freeze_timeout_s") }
        if let v = file.rayAddress { config.rayAddress = try httpURL(v, "ray_address") }
        if let v = file.rayToken { config.rayToken = v }
        if let v = file.rayClusterName {
            guard (1...64).contains(v.count), v.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }) else {
                throw ConfigurationError("ray_cluster_name must be 1 to 64 letters, digits, '-', '_' or '.'")
            }
            config.rayClusterName = v
        }
        if let v = file.rayLauncherExecutable { config.rayLauncherExecutable = v }
        if let v = file.advertiseUrl { config.advertiseURL = try httpURL(v, "advertise_url") }
        return config
    }

    /// Checks what every profile needs from the rest of the configuration, once flags are applied.
    public func validate() throws {
        if rayAddress == nil, let profile = profiles.first(where: { $0.provider == .ray }) {
            throw ConfigurationError("hardware profile \(profile.name) runs on Ray: set ray_address (or --ray-address http://HEAD:8265)")
        }
    }

    /// An http(s) URL without a trailing slash, or a clear error at start.
    public static func httpURL(_ v: String, _ key: String) throws -> String {
        guard let url = URL(string: v), ["http", "https"].contains(url.scheme ?? ""), url.host != nil, v.count <= 2048 else {
            throw ConfigurationError("\(key) must be an http(s) URL such as http://10.0.0.1:8265, not '\(v.prefix(80))'")
        }
        return v.hasSuffix("/") ? String(v.dropLast()) : v
    }

    /// A count from the config file, within its bounds, or a clear error at start.
    static func count(_ v: Int, _ key: String, _ bounds: ClosedRange<Int>) throws -> Int {
        guard bounds.contains(v) else { throw ConfigurationError("\(key) must be from \(bounds.lowerBound) to \(bounds.upperBound), not \(v)") }
        return v
    }

    /// A duration from the config file: positive and at most a week, or a clear error at start.
    static func seconds(_ v: Double, _ key: String) throws -> Duration {
        guard v.isFinite, v > 0, v <= 7 * 86400 else { throw ConfigurationError("\(key) must be a number of seconds above 0 and at most 604800, not \(v)") }
        return .milliseconds(Int64(v * 1000))
    }
}

/// What an instance sharing a PostgreSQL store may do.
public enum ServerRole: String, Sendable {
    /// Serve the API and the gateway, and lead the fleet when elected.
    case any
    /// Serve the API and the gateway only.
    case gateway

    public init(parsing text: String) throws {
        guard let role = ServerRole(rawValue: text) else { throw ConfigurationError("role must be 'any' or 'gateway', not '\(text.prefix(40))'") }
        self = role
    }

    /// An instance id: 1 to 64 letters, digits, '.', '-' or '_'.
    public static func instanceId(_ text: String) throws -> String {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")
        guard (1...64).contains(text.count), text.allSatisfy(allowed.contains) else {
            throw ConfigurationError("instance_id must be 1 to 64 letters, digits, '.', '-' or '_'")
        }
        return text
    }
}

public struct ConfigurationError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
