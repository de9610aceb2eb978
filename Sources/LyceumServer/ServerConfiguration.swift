import Foundation
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
    /// Requests one paused or starting deployment may hold waiting; beyond it, 429.
    public var waitQueueLimit = 1000
    /// The Hugging Face Hub (or a mirror): `HF_ENDPOINT` unless the config file says otherwise.
    public var hfEndpoint = HubClient.defaultEndpoint
    /// Where model files are downloaded, in the Hub's cache layout, shared by every replica.
    public var modelCacheDir = ModelDownloader.defaultCacheDir
    /// How long a create waits for the Hub's answer before accepting the model unchecked.
    public var hubCheckTimeout: Duration = .seconds(5)

    public init(dataDir: String, profiles: [HardwareProfile]) {
        self.dataDir = dataDir
        self.profiles = profiles
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
        var idleTimeoutS: Double?
        var waitQueueLimit: Int?
        var hfEndpoint: String?
        var modelCacheDir: String?
        var hubCheckTimeoutS: Double?
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
        if let v = file.healthIntervalS { config.healthInterval = .milliseconds(Int64(v * 1000)) }
        if let v = file.reconcileIntervalS { config.reconcileInterval = .milliseconds(Int64(v * 1000)) }
        if let v = file.maxConsecutiveFailures { config.maxConsecutiveFailures = v }
        if let v = file.restartBackoffS { config.restartBackoff = .milliseconds(Int64(v * 1000)) }
        if let v = file.stopGraceS { config.stopGrace = .milliseconds(Int64(v * 1000)) }
        if let v = file.vllmExecutable { config.vllmExecutable = v }
        if let v = file.llamaServerExecutable { config.llamaServerExecutable = v }
        if let v = file.autoscaleIntervalS { config.autoscaleInterval = .milliseconds(Int64(v * 1000)) }
        if let v = file.idleTimeoutS { config.idleTimeout = .milliseconds(Int64(v * 1000)) }
        if let v = file.waitQueueLimit { config.waitQueueLimit = max(1, v) }
        if let v = file.hfEndpoint { config.hfEndpoint = v }
        if let v = file.modelCacheDir { config.modelCacheDir = (v as NSString).expandingTildeInPath }
        if let v = file.hubCheckTimeoutS { config.hubCheckTimeout = .milliseconds(Int64(v * 1000)) }
        return config
    }
}

public struct ConfigurationError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
