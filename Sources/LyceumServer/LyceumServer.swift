import AsyncHTTPClient
import ControlPlane
import Controller
import DeploymentStore
import PostgresStore
import SQLiteStore
import Foundation
import Gateway
import Hummingbird
import HummingbirdCore
import InferenceCore
import Logging
import ModelHub
import Replicas
import RayCluster
import Routing
import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

/// The parts a store and a provider make: the HTTP application, the services it runs beside, and the
/// pieces tests look into. `LyceumServer.run` runs it on SQLite and local processes; tests build it on
/// an in-memory store and provider.
public struct BuiltServer: Sendable {
    public let application: Application<RouterResponder<LyceumRequestContext>>
    /// Every service, the application last: controller, background requests, autoscaler, shutdown guard.
    public let services: [any Service]
    /// The services every instance runs whether it leads or not (background requests, the HTTP application,
    /// the shutdown guard), in that order: `services` without the fleet's.
    let instanceServices: [any Service]
    public let store: any DeploymentStore
    public let controller: Controller
    public let gateway: Gateway
    public let autoscaler: Autoscaler
    public let authenticator: Authenticator
    public let httpClient: HTTPClient
    /// With a shared store: the gateway's and the other instances' traffic, summed for the autoscaler.
    let clusterTraffic: ClusterTraffic?
}

/// How an instance sharing a PostgreSQL store with others is wired: the fleet writes through the fenced
/// view, the gateway routes from the table synced from the store, and commands reach the leader through it.
struct ClusterWiring: Sendable {
    var fleetStore: PostgresStore
    var gatewayRoutes: RouteTable
    var front: StoreFleet
    var state: ClusterState
    var mirror: RouteMirror
    var fence: FleetFence
}

/// Builds and runs `lyceum server`: control plane, gateway and controller in one process, one ServiceGroup.
public enum LyceumServer {
    /// Runs until SIGTERM or SIGINT, then shuts down gracefully: the HTTP server first, then every replica.
    public static func run(configuration config: ServerConfiguration, logger: Logger) async throws {
        raiseOpenFileLimit()
        let fm = FileManager.default
        try fm.createDirectory(atPath: config.dataDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let lock = try DataDirLock(path: "\(config.dataDir)/server.lock")
        defer { lock.release() }

        let sealer = try SecretSealer(keyFile: config.secretKeyFile ?? "\(config.dataDir)/secret.key")
        let ray = config.rayAddress.map { address in
            var rayConfig = RayProvider.Configuration(
                address: address, token: config.rayToken, launcherExecutable: config.rayLauncherExecutable ?? ownExecutable)
            rayConfig.clusterName = config.rayClusterName
            rayConfig.stopGrace = config.stopGrace
            return RayProvider(configuration: rayConfig, logger: logger)
        }
        let provider: any ReplicaProvider = ray.map { ProviderSet(local: LocalProcessProvider(), cluster: $0) } ?? LocalProcessProvider()
        let store: any DeploymentStore
        var cluster: ClusterWiring?
        if let url = config.storeURL {
            let shared = try await PostgresStore(url: url, idleTransactionTimeout: config.leaderFreezeTimeout, logger: logger)
            let instanceId = config.instanceId ?? Self.defaultInstanceId()
            let state = ClusterState(instanceId: instanceId, role: config.role)
            let fence = FleetFence { epoch, current in
                Leadership.stepDown(
                    "a fleet write was refused: this instance led epoch \(epoch), the fleet is now led under epoch \(current)", store: shared,
                    state: state, logger: logger)
            }
            store = shared
            cluster = ClusterWiring(
                fleetStore: shared.fenced(by: fence), gatewayRoutes: RouteTable(),
                front: StoreFleet(
                    store: shared, dataDir: config.dataDir, stopWait: config.stopGrace + .seconds(15), logger: logger, provider: provider),
                state: state, mirror: RouteMirror(), fence: fence)
            logger.info("sharing PostgreSQL with other instances", metadata: ["instance": "\(instanceId)", "role": "\(config.role.rawValue)"])
        } else {
            store = try SQLiteStore(path: "\(config.dataDir)/lyceum.db")
        }
        let server = try await buildApplication(
            configuration: config, store: store, provider: provider, probe: { HTTPHealthProbe(client: $0) }, sealer: sealer,
            cluster: cluster, logger: logger)
        if let shared = store as? PostgresStore {
            let (authenticator, dataDir) = (server.authenticator, config.dataDir)
            try await shared.exclusively { try await bootstrapAdminKey(store: shared, authenticator: authenticator, dataDir: dataDir) }
        } else {
            try await bootstrapAdminKey(store: store, authenticator: server.authenticator, dataDir: config.dataDir)
        }
        var services = server.services
        if let cluster, let url = config.storeURL, let traffic = server.clusterTraffic {
            // Shut down in reverse: the HTTP side first, then the route sync, then the fleet (which stops or hands
            // over its replicas), the heartbeat last.
            services = [
                Heartbeat(store: cluster.front.store, state: cluster.state, stats: server.gateway.stats, traffic: traffic, interval: .seconds(1), logger: logger),
                Leadership(
                    url: url, store: cluster.front.store, fence: cluster.fence, fencedStore: cluster.fleetStore, state: cluster.state,
                    controller: server.controller, autoscaler: server.autoscaler, mirror: cluster.mirror, freezeTimeout: config.leaderFreezeTimeout,
                    logger: logger),
                RouteSync(url: url, store: cluster.front.store, table: cluster.gatewayRoutes, state: cluster.state, resyncInterval: .seconds(5), logger: logger),
            ] + server.instanceServices + [
                Departure(store: cluster.front.store, state: cluster.state, logger: logger)
            ]
        }

        // Shut down in reverse: answer waiting requests 503 and arm the watchdog, stop taking requests and finish
        // those in flight, finish background ones, then stop replicas. A drain that hangs turns into
        // cancellation, leaving time to stop replicas; the watchdog ends the process at `shutdown_timeout_s`
        // whatever happens, after killing every replica process group.
        var groupConfig = ServiceGroupConfiguration(
            services: services.map { ServiceGroupConfiguration.ServiceConfiguration(service: $0) },
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        groupConfig.maximumGracefulShutdownDuration = max(
            .seconds(1), config.shutdownTimeout - config.stopGrace - .seconds(4))
        let group = ServiceGroup(configuration: groupConfig)
        do {
            try await group.run()
        } catch {
            try? await server.httpClient.shutdown()
            throw error
        }
        await (store as? PostgresStore)?.shutdown()
        await ray?.shutdown()
        try await server.httpClient.shutdown()
        logger.info("server stopped")
    }

    /// This `lyceum` binary's path: it serves the simulator and, on cluster nodes, the replica launcher.
    static var ownExecutable: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    /// The host name and a random suffix: unique among instances, readable in logs and `/metrics`.
    static func defaultInstanceId() -> String {
        let host = ProcessInfo.processInfo.hostName.prefix { $0 != "." }.filter { $0.isLetter || $0.isNumber || $0 == "-" }
        return "\(host.prefix(40).isEmpty ? "lyceum" : String(host.prefix(40)))-\(UUID().uuidString.lowercased().prefix(6))"
    }

    /// Wires the platform from one configuration onto a store and a replica provider. The caller runs
    /// `services` (in one `ServiceGroup`, in that order) and shuts `httpClient` down afterwards.
    public static func buildApplication(
        configuration config: ServerConfiguration, store: any DeploymentStore, provider: any ReplicaProvider,
        probe makeProbe: (HTTPClient) -> any HealthProbing, sealer: SecretSealer, logger: Logger
    ) async throws -> BuiltServer {
        try await buildApplication(configuration: config, store: store, provider: provider, probe: makeProbe, sealer: sealer, cluster: nil, logger: logger)
    }

    static func buildApplication(
        configuration config: ServerConfiguration, store: any DeploymentStore, provider: any ReplicaProvider,
        probe makeProbe: (HTTPClient) -> any HealthProbing, sealer: SecretSealer, cluster: ClusterWiring?, logger: Logger
    ) async throws -> BuiltServer {
        let authenticator = Authenticator(store: store)
        var clientConfig = HTTPClient.Configuration()
        clientConfig.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 1024)
        clientConfig.timeout = .init(connect: .seconds(2), read: .seconds(600))
        let httpClient = HTTPClient(eventLoopGroupProvider: .singleton, configuration: clientConfig)

        var controllerConfig = config.controller
        controllerConfig.dataDir = config.dataDir
        controllerConfig.profiles = config.profiles
        controllerConfig.healthInterval = config.healthInterval
        controllerConfig.reconcileInterval = config.reconcileInterval
        controllerConfig.maxConsecutiveFailures = config.maxConsecutiveFailures
        controllerConfig.restartBackoff = config.restartBackoff
        controllerConfig.stopGrace = config.stopGrace
        controllerConfig.maxReplicasPerDeployment = config.maxReplicasPerDeployment
        controllerConfig.orgQuota = config.orgQuota
        let hub = HubClient(endpoint: config.hfEndpoint)
        // With a shared store the fleet writes through the fenced view, and its routes go to the store.
        let fleetStore: any DeploymentStore = cluster?.fleetStore ?? store
        let controller = Controller(
            store: fleetStore, provider: provider,
            launcher: EngineLauncher(
                lyceumExecutable: ownExecutable, vllmExecutable: config.vllmExecutable,
                llamaServerExecutable: config.llamaServerExecutable),
            probe: makeProbe(httpClient), sealer: sealer,
            downloader: ModelDownloader(cacheDir: config.modelCacheDir, hub: hub, logger: logger),
            configuration: controllerConfig, routes: RouteTable(observer: cluster?.mirror.observer), logger: logger)

        let router = Router(context: LyceumRequestContext.self)
        router.add(middleware: UnknownRouteMiddleware())
        router.get("health") { _, _ in Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "ok\n"))) }
        let registrar = ((provider as? ProviderSet)?.cluster ?? provider) as? any ReplicaRegistrar
        addReplicaRegistration(to: router, registrar: registrar)
        addClusterRoutes(to: router, state: cluster?.state, authenticator: authenticator)
        var policy = TenantPolicy()
        policy.createLimits = CreateLimits(maxReplicasPerDeployment: config.maxReplicasPerDeployment)
        policy.quota = config.orgQuota
        policy.localModels = LocalModelPolicy(
            allowTenants: config.allowLocalModels, directories: config.localModelDirs, hubCacheDir: config.modelCacheDir)
        let cacheDir = config.modelCacheDir
        policy.isModelCached = { repo in ModelDownloader.hasCachedSnapshot(cacheDir: cacheDir, repo: repo) }
        ControlPlaneRoutes(
            store: store, fleet: cluster?.front ?? controller, authenticator: authenticator, sealer: sealer,
            profiles: config.profiles, hub: hub, hubCheckTimeout: config.hubCheckTimeout, policy: policy
        ).add(to: router)
        let background = BackgroundRequests()
        var gatewayConfig = config.gateway
        gatewayConfig.waitQueueLimit = config.waitQueueLimit
        gatewayConfig.maxInFlightPerOrg = config.orgQuota.maxRequestsInFlight
        gatewayConfig.maxInFlightBytesPerOrg = config.orgQuota.maxRequestBytesInFlight
        gatewayConfig.maxStoredResultsPerOrg = config.orgQuota.maxStoredResults
        gatewayConfig.maxStoredResultBytesPerOrg = config.orgQuota.maxStoredResultBytes
        let gateway = Gateway(
            store: store, authenticator: authenticator, routes: cluster?.gatewayRoutes ?? controller.routes, fleet: cluster?.front ?? controller,
            client: httpClient, background: background, configuration: gatewayConfig)
        gateway.add(to: router)
        let clusterTraffic = cluster.map { _ in ClusterTraffic(local: gateway.stats) }
        let traffic: any TrafficSource = clusterTraffic ?? gateway.stats
        await controller.setTraffic(traffic)
        var autoscalerConfig = AutoscalerConfiguration()
        autoscalerConfig.interval = config.autoscaleInterval
        autoscalerConfig.idleTimeout = config.idleTimeout
        autoscalerConfig.settle = config.scaleUpSettle
        autoscalerConfig.tolerance = config.scaleTolerance
        autoscalerConfig.pressureMemory = config.scalePressureMemory
        let autoscaler = Autoscaler(store: fleetStore, fleet: controller, traffic: traffic, configuration: autoscalerConfig, logger: logger)
        let metricsNeedKey = config.metricsNeedKey
        router.get("metrics") { request, _ in
            if metricsNeedKey {
                // Every organisation's deployment ids and traffic: for the operator only.
                guard let caller = try await authenticator.caller(authorization: request.headers[.authorization]), caller.isAdmin else {
                    return Response(
                        status: .unauthorized, headers: [.contentType: "application/json"],
                        body: .init(byteBuffer: ByteBuffer(string: #"{"detail":"/metrics needs an admin API key: send 'Authorization: Bearer lk_...'"}"#)))
                }
            }
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                body: .init(byteBuffer: ByteBuffer(string: gateway.metrics() + autoscaler.metrics() + (cluster?.state.metrics() ?? ""))))
        }

        let dataDir = config.dataDir
        let deadlines = ConnectionDeadlines.Timeouts(
            header: .nanoseconds(Int64(config.headerTimeout.seconds * 1e9)), body: .nanoseconds(Int64(config.bodyTimeout.seconds * 1e9)),
            idle: .nanoseconds(Int64(config.connectionIdleTimeout.seconds * 1e9)))
        let app = Application(
            router: router,
            server: .http1(
                configuration: .init(
                    additionalChannelHandlers: [ConnectionDeadlines(timeouts: deadlines)],
                    idleTimeout: .nanoseconds(Int64(config.connectionIdleTimeout.seconds * 1e9)))),
            // A deep accept queue: bursts of hundreds of new connections (a resumed deployment, a load test)
            // must queue, not be refused.
            configuration: .init(
                address: .hostname(config.host, port: config.port), serverName: "lyceum", backlog: 4096,
                availableConnectionsDelegate: MaximumAvailableConnections(config.maxConnections)),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? config.port
                let url = "http://\(config.host):\(port)"
                cluster?.state.url.withLock { $0 = url }
                (registrar as? RayProvider)?.setControlPlaneURL(config.advertiseURL ?? url)
                try? Data((url + "\n").utf8).write(to: URL(fileURLWithPath: "\(dataDir)/server.url"))
                print("lyceum server listening on \(url) (data in \(dataDir))")
                fflush(nil)
            },
            logger: logger)

        let shutdownGuard = ShutdownGuard(gateway: gateway, timeout: config.shutdownTimeout, logger: logger)
        return BuiltServer(
            application: app, services: [controller, background, autoscaler, app, shutdownGuard],
            instanceServices: [background, app, shutdownGuard], store: store, controller: controller,
            gateway: gateway, autoscaler: autoscaler, authenticator: authenticator, httpClient: httpClient, clusterTraffic: clusterTraffic)
    }

    /// On the first start: an organisation and an admin key, printed once and saved to `admin.key` (0600).
    static func bootstrapAdminKey(store: any DeploymentStore, authenticator: Authenticator, dataDir: String) async throws {
        guard try await !store.hasAdminKey() else { return }
        let key = try await authenticator.createKey(org: "default", isAdmin: true)
        let path = "\(dataDir)/admin.key"
        guard FileManager.default.createFile(atPath: path, contents: Data((key + "\n").utf8), attributes: [.posixPermissions: 0o600]) else {
            throw ConfigurationError("cannot write \(path)")
        }
        print("Created organisation 'default' and its admin API key (shown once; saved to \(path)):\n  \(key)")
        fflush(nil)
    }
}

/// One server per data directory: a second one would fight the first over the same replicas.
struct DataDirLock {
    let fd: Int32

    init(path: String) throws {
        fd = open(path, O_CREAT | O_RDWR, 0o600)
        guard fd >= 0 else { throw ConfigurationError("cannot open \(path)") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw ConfigurationError("another lyceum server is already using this data directory (\(path) is locked)")
        }
    }

    func release() {
        flock(fd, LOCK_UN)
        close(fd)
    }
}
