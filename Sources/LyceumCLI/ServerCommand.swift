import ArgumentParser
import Foundation
import Logging
import LyceumServer
import Replicas

/// `lyceum server`: control plane, gateway and controller in one process.
struct ServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "server", abstract: "Run the platform: API, gateway and replicas in one process; several share one PostgreSQL store, one leading.")

    @Option(help: "Address to bind.") var host: String?
    @Option(help: "Port to listen on (0 picks a free one). Default 8080.") var port: Int?
    @Option(name: .customLong("data-dir"), help: "State directory (SQLite database, keys, replica logs). Default ~/.lyceum.")
    var dataDir: String?
    @Option(help: "JSON config file (hardware profiles, intervals).") var config: String?
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error.") var logLevel: String = "info"
    @Option(name: .customLong("idle-timeout"), help: "Seconds without requests before a deployment is paused (scaled to zero). Default 3600.")
    var idleTimeout: Double?
    @Option(name: .customLong("autoscale-interval"), help: "Seconds between autoscaling decisions. Default 5.")
    var autoscaleInterval: Double?
    @Option(help: "Where state lives: postgres://user[:password]@host[:port]/database. Default: SQLite in the data directory.")
    var store: String?
    @Option(help: "With a PostgreSQL store: 'any' (may lead the fleet, the default) or 'gateway' (serves API and gateway, never leads).")
    var role: String?
    @Option(name: .customLong("instance-id"), help: "This instance's name among those sharing a store. Default: host name and a random suffix.")
    var instanceId: String?
    @Option(name: .customLong("secret-key-file"), help: "Key that seals secrets at rest; instances sharing a store must share it. Default: DATA_DIR/secret.key.")
    var secretKeyFile: String?
    @Option(name: .customLong("ray-address"), help: "A Ray cluster's Jobs API, http://HEAD:8265, for profiles with \"provider\": \"ray\".")
    var rayAddress: String?
    @Option(name: .customLong("advertise-url"), help: "The URL cluster nodes reach this server at. Default: http://HOST:PORT it listens on.")
    var advertiseURL: String?

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "lyceum")
        let dataDir = dataDir.map { ($0 as NSString).expandingTildeInPath } ?? ServerConfiguration.defaultDataDir
        let gpus = await GPUDiscovery.discover()
        var configuration = try ServerConfiguration.load(dataDir: dataDir, configFile: config, gpus: gpus)
        if let host { configuration.host = host }
        if let port { configuration.port = port }
        if let idleTimeout { configuration.idleTimeout = .milliseconds(Int64(idleTimeout * 1000)) }
        if let autoscaleInterval { configuration.autoscaleInterval = .milliseconds(Int64(autoscaleInterval * 1000)) }
        if let store { configuration.storeURL = store }
        if let role { configuration.role = try ServerRole(parsing: role) }
        if let instanceId { configuration.instanceId = try ServerRole.instanceId(instanceId) }
        if let secretKeyFile { configuration.secretKeyFile = (secretKeyFile as NSString).expandingTildeInPath }
        if let rayAddress { configuration.rayAddress = try ServerConfiguration.httpURL(rayAddress, "--ray-address") }
        if let advertiseURL { configuration.advertiseURL = try ServerConfiguration.httpURL(advertiseURL, "--advertise-url") }
        try configuration.validate()
        if !gpus.isEmpty {
            logger.info("GPUs found", metadata: ["gpus": "\(gpus.map { "\($0.index): \($0.name)" }.joined(separator: "; "))"])
        }
        try await LyceumServer.run(configuration: configuration, logger: logger)
    }
}

/// `lyceum engine ...`: the model servers the platform can start.
struct Engine: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Model-server engines.", subcommands: [SimCommand.self, Install.self])

    /// `lyceum engine install llama.cpp`: builds llama-server once and caches it.
    struct Install: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Install an engine (llama.cpp: build llama-server from source, cached per version).")
        @Argument(help: "Engine to install: llama.cpp") var engine: String
        @Option(help: "llama-cpp-python version whose vendored llama.cpp is built.") var version: String = LlamaCppInstaller.defaultVersion

        func validate() throws {
            guard engine == "llama.cpp" else { throw ValidationError("only llama.cpp can be installed (vLLM: pip install vllm on a GPU machine)") }
        }

        func run() async throws {
            let path = try await LlamaCppInstaller(version: version).install()
            print(path)
        }
    }
}
