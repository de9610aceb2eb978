import DeploymentStore
import Foundation
import InferenceCore
import Logging
import ModelHub
import Replicas
import Routing
import ServiceLifecycle
import Synchronization

/// Keeps every active deployment's replicas in the state the store asks for.
///
/// One actor owns the runtime facts a database row cannot hold (which replica has which process, which
/// devices are taken); the store holds everything a restart needs. It is a `Service`: its loops (reconcile,
/// health, process supervision) are child tasks of `run()`, so graceful shutdown reaches all of them.
public actor Controller: Service {
    /// A replica process this server is responsible for.
    struct Runtime {
        var deploymentId: String
        /// The provider's handle once the run has started.
        var handle: ReplicaHandle?
        /// Where its engine listens (the provider's host, the port chosen at launch).
        var address: ReplicaAddress
        var devices: [String]
        var healthPath: String
        var servedModelName: String
        var startedAt: Date
        /// Re-adopted after a server restart: not our child, so liveness is polled instead of awaited.
        var adopted: Bool
        /// Set when we asked it to stop; its exit is then expected, not a crash.
        var stopping = false
        /// Whose devices these are, for per-organisation device limits.
        var orgId = ""
        var profileName = ""
        /// How the health pass judges this run (in routing or not, probes, why it is being killed).
        var health: ReplicaHealth
        /// The engine's own load at the last health pass (nil: not ready, or its engine does not say).
        var load: EngineLoad?
        /// Why the provider has not started it yet (a cluster with no room), while it waits, and the handle
        /// that stops it meanwhile.
        var waitingReason: String?
        var queuedHandle: ReplicaHandle?

        /// In routing: healthy, and a real request answered right.
        var healthy: Bool { health.healthy }
        /// Why the controller is killing it (ready timeout, hung, wrong answers), reported as the failure reason.
        var killReason: String? { health.killReason }
    }

    /// Long-running work for one replica, run as a child task of `run()` so shutdown reaches it.
    enum Job: Sendable {
        /// Start the engine process and supervise it until it exits.
        case launch(replicaId: String, command: EngineCommand, logPath: String)
        /// Fetch the model's files, then let the next reconcile pass launch the replica.
        case pull(replicaId: String, deploymentId: String, repo: String, format: ModelFormat, token: String?)
        /// Let a replica leaving on scale-down finish its requests, then stop it: beside the reconciler, never in it.
        case drain(replicaId: String)
        /// Send a replica one real tiny request and judge the answer.
        case answerProbe(replicaId: String, address: ReplicaAddress, servedModelName: String)
        /// Stop a run the controller gave up on (hung, never ready), beside the health pass: a cluster may take
        /// seconds to answer for a lost node.
        case kill(replicaId: String, handle: ReplicaHandle)
    }

    let store: any DeploymentStore
    let provider: any ReplicaProvider
    let launcher: EngineLauncher
    let probe: any HealthProbing
    let sealer: SecretSealer
    /// Fetches Hub models into the shared cache; nil where no engine needs downloads (tests).
    let downloader: ModelDownloader?
    /// In-flight requests per replica, so a replica leaving on scale-down is drained first.
    var traffic: (any TrafficSource)?
    /// Published on every status or health change; the gateway routes from it.
    public nonisolated let routes: RouteTable
    public nonisolated let configuration: ControllerConfiguration
    /// The fleet's time: the system's, or a test's virtual one (an hour of fleet life in a fraction of a second).
    public nonisolated let clock: FleetClock
    let logger: Logger

    var runtimes: [String: Runtime] = [:]
    /// Replicas waiting out a restart backoff: when, and whose deployment to reconcile then.
    var restartNotBefore: [String: (deploymentId: String, at: Date)] = [:]
    /// When the last pass over every deployment ran (a safety net; events drive the passes in between).
    var lastFullPass = Date.distantPast
    /// Deployments being stopped: nothing new is launched for them, even by a reconcile pass already under way.
    var stoppingDeployments: Set<String> = []
    var shuttingDown = false
    /// How this controller meets the other instances of a shared store (none by default).
    var cluster = ClusterHooks()
    /// Replicas waiting for their model's files, and their deployments.
    var pulls: [String: String] = [:]
    /// Deployments whose model files are on disk, and where.
    var preparedModels: [String: PreparedModel] = [:]

    /// Organisations with an admin key (refreshed each reconcile pass): not held to tenant limits.
    var adminOrgs: Set<String> = []
    /// Replicas leaving on scale-down, draining their requests before they stop.
    var draining: Set<String> = []
    /// Replicas the gateway saw answer wrongly, with why: handed to their health machines at the next health pass.
    nonisolated let suspects = Mutex<[String: String]>([:])

    /// What the next reconcile pass covers: every deployment, or the ones something happened to.
    nonisolated let dirty = Mutex<(all: Bool, ids: Set<String>)>((true, []))

    nonisolated let jobs: AsyncStream<Job>
    nonisolated let jobsContinuation: AsyncStream<Job>.Continuation
    nonisolated let pokes: AsyncStream<Void>
    nonisolated let pokesContinuation: AsyncStream<Void>.Continuation
    nonisolated let healthPokes: AsyncStream<Void>
    nonisolated let healthPokesContinuation: AsyncStream<Void>.Continuation

    public init(
        store: any DeploymentStore, provider: any ReplicaProvider, launcher: EngineLauncher, probe: any HealthProbing,
        sealer: SecretSealer, downloader: ModelDownloader? = nil, configuration: ControllerConfiguration,
        routes: RouteTable = RouteTable(), clock: FleetClock = .system, logger: Logger
    ) {
        self.clock = clock
        self.downloader = downloader
        self.routes = routes
        self.store = store
        self.provider = provider
        self.launcher = launcher
        self.probe = probe
        self.sealer = sealer
        self.configuration = configuration
        self.logger = logger
        (jobs, jobsContinuation) = AsyncStream.makeStream(of: Job.self)
        (pokes, pokesContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        (healthPokes, healthPokesContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Asks for a reconcile pass now rather than at the next tick (after a create, a crash, a stop).
    public nonisolated func poke() {
        dirty.withLock { $0.all = true }
        pokesContinuation.yield()
    }

    /// Asks for a reconcile pass over one deployment (created, scaled, resumed, one of its replicas ended):
    /// the fleet's cost follows what happens, not how many deployments exist.
    public nonisolated func poke(deploymentId: String) {
        dirty.withLock { _ = $0.ids.insert(deploymentId) }
        pokesContinuation.yield()
    }

    /// Asks for a health pass now (a replica was seen failing, or one may have just become ready).
    public nonisolated func pokeHealth() { healthPokesContinuation.yield() }

    /// Connects the gateway's traffic view (set once at wiring time).
    public func setTraffic(_ source: any TrafficSource) { traffic = source }

    public func run() async throws {
        try FileManager.default.createDirectory(
            atPath: "\(configuration.dataDir)/replicas", withIntermediateDirectories: true)
        await recover()
        // The first pass covers every deployment: replace what recovery reaped, launch what was waiting.
        poke()
        let jobs = self.jobs
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.reconcileLoop() }
                group.addTask { await self.healthLoop() }
                group.addTask { await self.tickLoop() }
                group.addTask { await self.healthTickLoop() }
                for await job in jobs {
                    switch job {
                    case .launch(let replicaId, let command, let logPath):
                        group.addTask { await self.supervise(replicaId: replicaId, command: command, logPath: logPath) }
                    case .pull(let replicaId, let deploymentId, let repo, let format, let token):
                        group.addTask { await self.pull(replicaId: replicaId, deploymentId: deploymentId, repo: repo, format: format, token: token) }
                    case .drain(let replicaId):
                        group.addTask { await self.drainThenStop(replicaId) }
                    case .answerProbe(let replicaId, let address, let servedModelName):
                        group.addTask { await self.probeAnswer(replicaId: replicaId, address: address, servedModelName: servedModelName) }
                    case .kill(let replicaId, let handle):
                        group.addTask { await self.finishKill(replicaId, handle: handle) }
                    }
                }
                // The job stream ends on graceful shutdown: stop every replica, then end the loops.
                await self.shutdownAll()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            self.jobsContinuation.finish()
        }
    }

    // MARK: Loops

    /// Time-driven work only: restarts whose backoff is over, and the occasional pass over everything (a
    /// safety net). Everything else (a create, a scale, a crash, devices freed) pokes the reconciler itself, so
    /// an idle fleet of thousands of deployments costs next to nothing.
    func tickLoop() async {
        while !Task.isCancelled {
            try? await clock.sleep(configuration.reconcileInterval)
            let now = clock.now()
            for (replicaId, due) in restartNotBefore where due.at <= now {
                restartNotBefore[replicaId] = nil
                poke(deploymentId: due.deploymentId)
            }
            if clock.now().timeIntervalSince(lastFullPass) >= configuration.fullReconcileInterval.seconds { poke() }
        }
    }

    func reconcileLoop() async {
        for await _ in pokes {
            if Task.isCancelled || shuttingDown { return }
            do {
                try await reconcile()
            } catch {
                logger.error("reconcile failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Probes on the health interval, and every 250 ms while a replica is starting, so a cold start is
    /// noticed (and served) as soon as the engine is ready.
    func healthTickLoop() async {
        while !Task.isCancelled {
            pokeHealth()
            let starting = runtimes.values.contains { !$0.healthy && !$0.stopping }
            try? await clock.sleep(starting ? min(.milliseconds(250), configuration.healthInterval) : configuration.healthInterval)
        }
    }

    func healthLoop() async {
        for await _ in healthPokes {
            if Task.isCancelled || shuttingDown { return }
            await checkHealth()
        }
    }

    // MARK: Reconcile

    /// One pass: every active deployment gets its desired number of live replicas, each launched when it can be.
    func reconcile() async throws {
        let (all, ids) = dirty.withLock { d in
            defer { d = (false, []) }
            return (d.all, d.ids)
        }
        guard all || !ids.isEmpty else { return }
        adminOrgs = try await store.adminOrgIds()
        var deployments: [DeploymentRecord] = []
        var known: [String: [ReplicaRecord]]?
        if all {
            lastFullPass = clock.now()
            deployments = try await store.unstoppedDeployments().filter { $0.status.isActive || $0.status == .failed }
            // One query for every deployment's replicas, not one per deployment.
            known = try await store.replicas(deploymentIds: deployments.map(\.id))
            await takeDownOrphans(known: Set(deployments.map(\.id)))
        } else {
            for id in ids.sorted() {
                if let d = try await store.deployment(id: id) { deployments.append(d) }
            }
        }
        for deployment in deployments {
            if deployment.status.isActive || deployment.status == .failed {
                try await reconcile(deployment, replicas: known.map { $0[deployment.id] ?? [] })
            } else {
                await takeDownLeftovers(deployment)
            }
        }
    }

    func reconcile(_ deployment: DeploymentRecord, replicas known: [ReplicaRecord]? = nil) async throws {
        guard !stoppingDeployments.contains(deployment.id), !shuttingDown else { return }
        guard let profile = configuration.profile(named: deployment.hardwareProfile) else {
            logger.warning("deployment names an unknown profile", metadata: ["deployment.id": "\(deployment.id)"])
            return
        }
        var replicas: [ReplicaRecord]
        if let known { replicas = known } else { replicas = try await store.replicas(deploymentId: deployment.id) }
        var changed = routes.route(deployment.id) == nil
        let known = FleetDecisions.Known(
            busy: Set(runtimes.keys).union(pulls.keys), draining: draining, restartNotBefore: restartNotBefore.mapValues(\.at))
        var plan = FleetDecisions.plan(
            deployment, replicas: replicas, known: known, maxReplicasPerDeployment: configuration.maxReplicasPerDeployment, now: clock.now())
        for _ in 0..<plan.create {
            let replica = ReplicaRecord(id: UUID().uuidString.lowercased(), deploymentId: deployment.id, now: clock.now())
            try await store.insert(replica)
            replicas.append(replica)
            plan.launch.append(replica.id)
        }
        // Out of routing now; the drain and the stop run beside the reconciler, so a replica finishing long
        // streams never holds up another deployment's launch.
        for id in plan.drain {
            draining.insert(id)
            runtimes[id]?.stopping = true
            jobsContinuation.yield(.drain(replicaId: id))
        }
        changed = changed || plan.create > 0 || !plan.drain.isEmpty
        let byId = Dictionary(replicas.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for id in plan.launch {
            // Another pass may have started it while this one awaited.
            guard let replica = byId[id], runtimes[id] == nil, pulls[id] == nil, !draining.contains(id) else { continue }
            if try await launch(replica, of: deployment, profile: profile) { changed = true }
        }
        if changed { try await refreshStatus(deploymentId: deployment.id) }
    }

    func drainThenStop(_ replicaId: String) async {
        let deploymentId = runtimes[replicaId]?.deploymentId
        await stopReplica(replicaId, reason: "scaled down")
        draining.remove(replicaId)
        if let deploymentId { poke(deploymentId: deploymentId) }
    }

    /// A replica of `deploymentId` let go of `devices`: a pass over every deployment when devices were freed (one
    /// may be waiting for them), over its own deployment otherwise.
    func released(_ devices: [String], by deploymentId: String) {
        if devices.isEmpty { poke(deploymentId: deploymentId) } else { poke() }
    }

    /// The Hub files an engine needs before it can start: nil for the simulator and for local paths.
    public nonisolated static func hubFiles(modelId: String, engine: EngineKind) -> (repo: String, format: ModelFormat)? {
        guard case .hub(let repo, let file) = ModelReference(modelId) else { return nil }
        switch engine {
        case .sim: return nil
        case .llamacpp: return (repo, .gguf(file: file))
        case .vllm: return (repo, .checkpoint)
        }
    }
}

extension Controller {
    /// Runs a store write on the supervision path. A failure is logged with what it was for and retried
    /// (three tries, 100 ms apart), never dropped in silence; nil only when every try failed.
    @discardableResult
    func persist<T: Sendable>(_ what: String, _ body: () async throws -> T) async -> T? {
        await retrying(what, body)
    }

    /// `persist` for reads and updates that answer an optional record: nil when absent or when every try failed.
    @discardableResult
    func persist<T: Sendable>(_ what: String, _ body: () async throws -> T?) async -> T? {
        await retrying(what, body) ?? nil
    }

    private func retrying<T: Sendable>(_ what: String, _ body: () async throws -> T) async -> T? {
        for attempt in 1...3 {
            do {
                return try await body()
            } catch {
                logger.error("store access failed", metadata: ["store.operation": "\(what)", "attempt": "\(attempt)", "error": "\(error)"])
                if attempt < 3 { try? await clock.sleep(.milliseconds(100)) }
            }
        }
        return nil
    }
}
