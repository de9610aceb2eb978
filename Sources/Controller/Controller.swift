import DeploymentStore
import Foundation
import InferenceCore
import Logging
import ModelHub
import Replicas
import ServiceLifecycle

/// Keeps every active deployment's replicas in the state the store asks for.
///
/// One actor owns the runtime facts a database row cannot hold (which replica has which process, which
/// devices are taken); the store holds everything a restart needs. It is a `Service`: its loops (reconcile,
/// health, process supervision) are child tasks of `run()`, so graceful shutdown reaches all of them.
public actor Controller: Service {
    /// A replica process this server is responsible for.
    struct Runtime {
        var deploymentId: String
        var pid: Int32?
        var port: Int
        var devices: [String]
        var healthPath: String
        var servedModelName: String
        var startedAt: Date
        /// Re-adopted after a server restart: not our child, so liveness is polled instead of awaited.
        var adopted: Bool
        /// Set when we asked it to stop; its exit is then expected, not a crash.
        var stopping = false
        /// Why the controller killed it (ready timeout, hung), reported as the failure reason.
        var killReason: String?
        var healthy = false
        var unhealthySince: Date?
    }

    /// Long-running work for one replica, run as a child task of `run()` so shutdown reaches it.
    enum Job: Sendable {
        /// Start the engine process and supervise it until it exits.
        case launch(replicaId: String, command: EngineCommand, logPath: String)
        /// Fetch the model's files, then let the next reconcile pass launch the replica.
        case pull(replicaId: String, deploymentId: String, repo: String, format: ModelFormat, token: String?)
    }

    let store: DeploymentStore
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
    let logger: Logger

    var runtimes: [String: Runtime] = [:]
    var devicesInUse: Set<String> = []
    var restartNotBefore: [String: Date] = [:]
    /// Deployments being stopped: nothing new is launched for them, even by a reconcile pass already under way.
    var stoppingDeployments: Set<String> = []
    var shuttingDown = false
    /// Replicas waiting for their model's files, and their deployments.
    var pulls: [String: String] = [:]
    /// Deployments whose model files are on disk, and where.
    var preparedModels: [String: PreparedModel] = [:]

    nonisolated let jobs: AsyncStream<Job>
    nonisolated let jobsContinuation: AsyncStream<Job>.Continuation
    nonisolated let pokes: AsyncStream<Void>
    nonisolated let pokesContinuation: AsyncStream<Void>.Continuation
    nonisolated let healthPokes: AsyncStream<Void>
    nonisolated let healthPokesContinuation: AsyncStream<Void>.Continuation

    public init(
        store: DeploymentStore, provider: any ReplicaProvider, launcher: EngineLauncher, probe: any HealthProbing,
        sealer: SecretSealer, downloader: ModelDownloader? = nil, configuration: ControllerConfiguration,
        routes: RouteTable = RouteTable(), logger: Logger
    ) {
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
    public nonisolated func poke() { pokesContinuation.yield() }

    /// Asks for a health pass now (a replica was seen failing, or one may have just become ready).
    public nonisolated func pokeHealth() { healthPokesContinuation.yield() }

    /// Connects the gateway's traffic view (set once at wiring time).
    public func setTraffic(_ source: any TrafficSource) { traffic = source }

    public func run() async throws {
        try FileManager.default.createDirectory(
            atPath: "\(configuration.dataDir)/replicas", withIntermediateDirectories: true)
        await recover()
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

    private func tickLoop() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.reconcileInterval)
            poke()
        }
    }

    private func reconcileLoop() async {
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
    private func healthTickLoop() async {
        while !Task.isCancelled {
            pokeHealth()
            let starting = runtimes.values.contains { !$0.healthy && !$0.stopping }
            try? await Task.sleep(for: starting ? min(.milliseconds(250), configuration.healthInterval) : configuration.healthInterval)
        }
    }

    private func healthLoop() async {
        for await _ in healthPokes {
            if Task.isCancelled || shuttingDown { return }
            await checkHealth()
        }
    }

    // MARK: Reconcile

    /// One pass: every active deployment gets its desired number of live replicas, each launched when it can be.
    func reconcile() async throws {
        for deployment in try await store.unstoppedDeployments() where deployment.status.isActive || deployment.status == .failed {
            try await reconcile(deployment)
        }
    }

    private func reconcile(_ deployment: DeploymentRecord) async throws {
        guard !stoppingDeployments.contains(deployment.id), !shuttingDown else { return }
        guard let profile = configuration.profile(named: deployment.hardwareProfile) else {
            logger.warning("deployment names an unknown profile", metadata: ["deployment.id": "\(deployment.id)"])
            return
        }
        var replicas = try await store.replicas(deploymentId: deployment.id)
        if deployment.status != .failed {
            let live = replicas.filter { $0.status.isLive }
            if live.count < deployment.desiredReplicas {
                for _ in live.count..<deployment.desiredReplicas {
                    let replica = ReplicaRecord(
                        id: UUID().uuidString.lowercased(), deploymentId: deployment.id, now: Date())
                    try await store.insert(replica)
                    replicas.append(replica)
                }
            } else if live.count > deployment.desiredReplicas {
                let extra = live.sorted { rank($0) < rank($1) }.prefix(live.count - deployment.desiredReplicas)
                for replica in extra {
                    await stopReplica(replica.id, reason: "scaled down")
                }
                replicas = try await store.replicas(deploymentId: deployment.id)
            }
        }
        for replica in replicas where replica.status.isLive && runtimes[replica.id] == nil && pulls[replica.id] == nil {
            if replica.status == .restarting, let notBefore = restartNotBefore[replica.id], notBefore > Date() {
                continue
            }
            try await launch(replica, of: deployment, profile: profile)
        }
        try await refreshStatus(deploymentId: deployment.id)
    }

    /// Which replicas go first on scale-down: ones not yet serving, then the newest.
    private func rank(_ r: ReplicaRecord) -> (Int, TimeInterval) {
        (r.status == .running && r.healthy ? 1 : 0, -r.createdAt.timeIntervalSince1970)
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

    private func launch(_ replica: ReplicaRecord, of deployment: DeploymentRecord, profile: HardwareProfile) async throws {
        // Model files first (before devices are taken: a download can take long).
        let model = preparedModels[deployment.id]
        if model == nil, let downloader, let (repo, format) = Self.hubFiles(modelId: deployment.hfModelId, engine: profile.engine) {
            try await startPull(replica, of: deployment, repo: repo, format: format, downloader: downloader)
            return
        }
        // Devices: never one device to two replicas.
        var devices: [String] = []
        if profile.gpuCount > 0 {
            let free = profile.devices.filter { !devicesInUse.contains($0) }
            guard free.count >= profile.gpuCount else {
                let reason = profile.devices.isEmpty
                    ? "waiting for devices: hardware profile \(profile.name) has no \(profile.gpuType) devices on this server"
                    : "waiting for devices: \(profile.devices.count - free.count) of \(profile.devices.count) \(profile.name) devices are in use; needs \(profile.gpuCount)"
                if replica.failReason != reason || replica.status != .pending {
                    try await store.updateReplica(id: replica.id) { $0.failReason = reason; $0.status = .pending }
                    try await store.addEvent(deploymentId: deployment.id, kind: "waiting_for_devices", message: "replica \(replica.id): \(reason)")
                }
                return
            }
            devices = Array(free.prefix(profile.gpuCount))
        }
        let token: String? = try deployment.hfTokenSealed.map { try sealer.open($0) }
        let port = try freeLoopbackPort()
        let command: EngineCommand
        do {
            command = try launcher.command(
                for: ReplicaLaunch(
                    replicaId: replica.id, deploymentId: deployment.id, hfModelId: deployment.hfModelId,
                    hfToken: token, profile: profile, port: port, devices: devices, modelFile: model?.primaryFile,
                    modelCacheDir: model?.cacheDir))
        } catch {
            try await store.updateReplica(id: replica.id) {
                $0.status = .failed
                $0.failReason = error.description
                $0.stoppedAt = Date()
            }
            try await store.addEvent(deploymentId: deployment.id, kind: "replica_failed", message: "replica \(replica.id) cannot start: \(error.description)")
            return
        }
        // Re-check after the awaits above: a stop or shutdown may have begun meanwhile.
        guard !stoppingDeployments.contains(deployment.id), !shuttingDown, runtimes[replica.id] == nil else { return }
        devicesInUse.formUnion(devices)
        let now = Date()
        runtimes[replica.id] = Runtime(
            deploymentId: deployment.id, pid: nil, port: port, devices: devices, healthPath: command.healthPath,
            servedModelName: command.servedModelName, startedAt: now, adopted: false)
        let deviceList = devices.joined(separator: ",")
        try await store.updateReplica(id: replica.id) {
            $0.status = .initingDockerContainer
            $0.port = port
            $0.pid = nil
            $0.devices = deviceList
            $0.startedAt = now
            $0.stoppedAt = nil
            $0.healthy = false
            $0.failReason = nil
        }
        try await store.addEvent(
            deploymentId: deployment.id, kind: "replica_starting",
            message: "replica \(replica.id) starting on port \(port)" + (devices.isEmpty ? "" : " with devices \(devices.joined(separator: ","))"))
        logger.info("starting replica", metadata: ["replica.id": "\(replica.id)", "deployment.id": "\(deployment.id)", "replica.port": "\(port)"])
        jobsContinuation.yield(.launch(replicaId: replica.id, command: command, logPath: configuration.logPath(replicaId: replica.id)))
    }

    // MARK: Model downloads

    /// Marks the replica `pulling_docker_image` (the word clients know for this step) and downloads the
    /// model's files in the background, with progress in the replica's `progress`. Replicas of one model
    /// share one download.
    private func startPull(
        _ replica: ReplicaRecord, of deployment: DeploymentRecord, repo: String, format: ModelFormat, downloader: ModelDownloader
    ) async throws {
        let token: String? = try deployment.hfTokenSealed.map { try sealer.open($0) }
        try await store.updateReplica(id: replica.id) {
            $0.status = .pullingDockerImage
            $0.progress = "checking \(repo) on the Hub"
            $0.failReason = nil
        }
        try await store.addEvent(deploymentId: deployment.id, kind: "pulling", message: "replica \(replica.id): fetching \(repo) into the model cache")
        pulls[replica.id] = deployment.id
        jobsContinuation.yield(.pull(replicaId: replica.id, deploymentId: deployment.id, repo: repo, format: format, token: token))
    }

    /// Waits for the (shared) download while reporting its progress; gives up waiting when the replica is
    /// stopped meanwhile or the server shuts down.
    private func pull(replicaId: String, deploymentId: String, repo: String, format: ModelFormat, token: String?) async {
        guard let downloader else { return }
        let store = self.store
        let outcome = await withTaskGroup(of: Result<PreparedModel, any Error>?.self) { group in
            group.addTask {
                do {
                    return .success(try await downloader.prepare(repo: repo, format: format, token: token))
                } catch {
                    return .failure(error)
                }
            }
            group.addTask {
                while !Task.isCancelled, await self.isPulling(replicaId) {
                    if let p = await downloader.progress(repo: repo, format: format) {
                        _ = try? await store.updateReplica(id: replicaId) { if $0.status == .pullingDockerImage { $0.progress = p.description } }
                    }
                    try? await Task.sleep(for: .milliseconds(500))
                }
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        guard let outcome else { return }
        await pullFinished(replicaId: replicaId, deploymentId: deploymentId, result: outcome)
    }

    private func isPulling(_ replicaId: String) -> Bool { pulls[replicaId] != nil && !shuttingDown }

    private func pullFinished(replicaId: String, deploymentId: String, result: Result<PreparedModel, any Error>) async {
        pulls[replicaId] = nil
        guard let replica = try? await store.replica(id: replicaId), replica.status == .pullingDockerImage else { return }
        switch result {
        case .success(let prepared):
            let first = preparedModels[deploymentId] == nil
            preparedModels[deploymentId] = prepared
            _ = try? await store.updateReplica(id: replicaId) { $0.progress = nil; $0.status = .pending }
            if first {
                try? await store.addEvent(
                    deploymentId: deploymentId, kind: "model_ready",
                    message: "model files ready in \(prepared.snapshot)")
            }
        case .failure(let error):
            let reason = "model download failed: \(error)"
            _ = try? await store.updateReplica(id: replicaId) {
                $0.status = .failed
                $0.progress = nil
                $0.failReason = reason
                $0.stoppedAt = Date()
            }
            try? await store.addEvent(deploymentId: deploymentId, kind: "replica_failed", message: "replica \(replicaId): \(reason)")
            try? await refreshStatus(deploymentId: deploymentId)
        }
        poke()
    }

    // MARK: Process supervision

    private func supervise(replicaId: String, command: EngineCommand, logPath: String) async {
        let exit: ProcessExit
        do {
            exit = try await provider.run(command, logPath: logPath) { pid in
                await self.processStarted(replicaId, pid: pid)
            }
        } catch {
            await processEnded(replicaId, description: "could not be started: \(error)")
            return
        }
        await processEnded(replicaId, description: exit.description)
    }

    private func processStarted(_ replicaId: String, pid: Int32) async {
        guard let runtime = runtimes[replicaId] else { return }
        runtimes[replicaId]?.pid = pid
        try? await store.updateReplica(id: replicaId) { $0.pid = pid }
        // Billing runs from the launch until the process stops.
        if let deployment = try? await store.deployment(id: runtime.deploymentId),
            let profile = configuration.profile(named: deployment.hardwareProfile)
        {
            try? await store.openRun(
                ReplicaRunRecord(
                    replicaId: replicaId, deploymentId: deployment.id, orgId: deployment.orgId,
                    hardwareProfile: profile.name, pricePerHour: profile.pricePerHour, startedAt: runtime.startedAt))
        }
        if runtimes[replicaId]?.stopping == true {
            await provider.terminate(pid: pid, grace: configuration.stopGrace)
        }
    }

    /// A replica's process is gone. Expected after a stop; otherwise a crash: restart with backoff, or fail.
    func processEnded(_ replicaId: String, description: String) async {
        guard let runtime = runtimes.removeValue(forKey: replicaId) else { return }
        devicesInUse.subtract(runtime.devices)
        try? await store.closeRun(replicaId: replicaId, at: Date())
        if runtime.stopping { return }
        let tail = logTail(path: configuration.logPath(replicaId: replicaId), maxLines: 8)
        let reason = (runtime.killReason ?? "engine \(description)") + (tail.isEmpty ? "" : ": \(tail)")
        guard let updated = try? await store.updateReplica(id: replicaId, { r in
            r.consecutiveFailures += 1
            r.restartCount += 1
            r.healthy = false
            r.failReason = reason
            r.pid = nil
        }) else { return }
        let failed = updated.consecutiveFailures >= configuration.maxConsecutiveFailures
        if failed {
            try? await store.updateReplica(id: replicaId) { $0.status = .failed; $0.stoppedAt = Date() }
            try? await store.addEvent(
                deploymentId: runtime.deploymentId, kind: "replica_failed",
                message: "replica \(replicaId) failed after \(updated.consecutiveFailures) crashes in a row: \(reason)")
        } else {
            let seconds = min(
                configuration.restartBackoff.seconds * pow(2, Double(updated.consecutiveFailures - 1)),
                configuration.maxRestartBackoff.seconds)
            restartNotBefore[replicaId] = Date().addingTimeInterval(seconds)
            try? await store.updateReplica(id: replicaId) { $0.status = .restarting }
            try? await store.addEvent(
                deploymentId: runtime.deploymentId, kind: "replica_crashed",
                message: "replica \(replicaId) \(description); restarting in \(String(format: "%.1f", seconds)) s")
        }
        logger.warning("replica process ended", metadata: ["replica.id": "\(replicaId)", "reason": "\(description)"])
        try? await refreshStatus(deploymentId: runtime.deploymentId)
        poke()
    }

    // MARK: Health

    func checkHealth() async {
        let snapshot = runtimes.filter { $0.value.pid != nil && !$0.value.stopping }
        let results = await withTaskGroup(of: (String, Bool).self) { group in
            for (id, runtime) in snapshot {
                group.addTask { [probe, configuration] in
                    (id, await probe.isHealthy(port: runtime.port, path: runtime.healthPath, timeout: configuration.healthTimeout))
                }
            }
            var out: [String: Bool] = [:]
            for await (id, ok) in group { out[id] = ok }
            return out
        }
        let now = Date()
        var touched: Set<String> = []
        for (id, healthy) in results {
            guard var runtime = runtimes[id], !runtime.stopping, let pid = runtime.pid else { continue }
            let alive = provider.isAlive(pid: pid, replicaId: id)
            if runtime.adopted && !alive {
                await processEnded(id, description: "is gone")
                continue
            }
            let becameHealthy = healthy && !runtime.healthy
            runtime.healthy = healthy
            runtime.unhealthySince = healthy ? nil : (runtime.unhealthySince ?? now)
            runtimes[id] = runtime
            guard let record = try? await store.updateReplica(id: id, { r in
                r.healthy = healthy
                r.lastHealthCheck = now
                if alive { r.lastSeenAlive = now }
                if healthy {
                    r.status = .running
                    r.consecutiveFailures = 0
                    r.failReason = nil
                }
            }) else { continue }
            if becameHealthy {
                touched.insert(runtime.deploymentId)
                try? await store.addEvent(
                    deploymentId: runtime.deploymentId, kind: "replica_healthy",
                    message: "replica \(id) is healthy after \(String(format: "%.1f", now.timeIntervalSince(runtime.startedAt))) s")
            } else if !healthy {
                touched.insert(runtime.deploymentId)
                await killIfStuck(id, record: record, now: now)
            }
        }
        for deploymentId in touched {
            try? await refreshStatus(deploymentId: deploymentId)
        }
    }

    /// Kills a replica that never became ready in time, or that stopped answering; its exit counts as a crash.
    private func killIfStuck(_ id: String, record: ReplicaRecord, now: Date) async {
        guard let runtime = runtimes[id], let pid = runtime.pid, runtime.killReason == nil else { return }
        let readyTimeout = Double(configuration.profile(named: (try? await store.deployment(id: runtime.deploymentId))?.hardwareProfile ?? "")?.readyTimeoutS ?? 600)
        var reason: String?
        if record.status != .running, now.timeIntervalSince(runtime.startedAt) > readyTimeout {
            reason = "not healthy within the ready timeout of \(Int(readyTimeout)) s"
        } else if record.status == .running, let since = runtime.unhealthySince,
            now.timeIntervalSince(since) > configuration.unhealthyRestartAfter.seconds
        {
            reason = "stopped answering health checks for \(Int(now.timeIntervalSince(since))) s"
        }
        guard let reason, runtimes[id] != nil else { return }
        runtimes[id]?.killReason = reason
        try? await store.addEvent(deploymentId: runtime.deploymentId, kind: "replica_killed", message: "replica \(id) \(reason); killing it")
        await provider.terminate(pid: pid, grace: .seconds(2))
        if runtime.adopted { await processEnded(id, description: "was killed") }
    }

    /// Recomputes a deployment's status from its replicas, recording an event when it changes.
    func refreshStatus(deploymentId: String) async throws {
        guard let deployment = try await store.deployment(id: deploymentId) else { return }
        guard deployment.status.isActive || deployment.status == .failed else {
            publishRoute(deployment, status: deployment.status, reason: nil)
            return
        }
        let replicas = try await store.replicas(deploymentId: deploymentId).filter { $0.status.isLive || $0.status == .failed }
        let healthy = replicas.filter { $0.healthy && $0.status == .running }.count
        let next = aggregateStatus(current: deployment.status == .failed ? .provisioning : deployment.status, replicas: replicas.map(\.status), healthy: healthy)
        publishRoute(deployment, status: next, reason: replicas.compactMap(\.failReason).first)
        guard next != deployment.status else { return }
        try await store.updateDeployment(id: deploymentId) { $0.status = next }
        let message: String
        switch next {
        case .running: message = "running: \(healthy) healthy replica\(healthy == 1 ? "" : "s")"
        case .failed: message = "failed: every replica failed; see the replicas' fail_reason and logs"
        default: message = next.rawValue
        }
        try await store.addEvent(deploymentId: deploymentId, kind: next.rawValue, message: message)
    }

    // MARK: Stop

    /// Stops every replica of a deployment and marks it `stopped`; returns once their processes are gone.
    public func stopDeployment(id: String) async throws {
        try await takeDown(id, to: .stopped, event: "stopped by request")
    }

    /// Pauses a deployment (scale to zero): every replica stopped, billing stops, the next request resumes it.
    public func pauseDeployment(id: String, reason: String) async throws {
        try await takeDown(id, to: .paused, event: reason)
    }

    /// Moves a deployment to `stopped` (from any state) or `paused` (only from an active one), stops routing
    /// to it at once, then stops its replicas. Nothing new is launched for it meanwhile.
    private func takeDown(_ id: String, to status: DeploymentStatus, event: String) async throws {
        stoppingDeployments.insert(id)
        defer { stoppingDeployments.remove(id) }
        guard let record = try await store.updateDeployment(id: id, { d in
            guard status == .stopped || d.status.isActive else { return }
            d.status = status
            d.desiredReplicas = 0
            if status == .stopped { d.stoppedAt = Date() }
        }), record.status == status else { return }
        publishRoute(record, status: status, reason: nil)
        try await store.addEvent(deploymentId: id, kind: status.rawValue, message: event)
        let replicas = try await store.replicas(deploymentId: id).filter { $0.status.isLive }
        await stopReplicas(replicas.map(\.id), reason: nil)
    }

    /// Stops replicas concurrently; returns once all are stopped.
    private func stopReplicas(_ ids: [String], reason: String?) async {
        await withTaskGroup(of: Void.self) { group in
            for id in ids {
                group.addTask { await self.stopReplica(id, reason: reason) }
            }
        }
    }

    /// Resumes a paused deployment at `min_replicas`; a no-op otherwise. Called by the gateway's first request.
    public func resumeDeployment(id: String) async throws {
        guard let resumed = try await store.updateDeployment(id: id, { d in
            guard d.status == .paused else { return }
            d.status = .provisioning
            d.desiredReplicas = d.minReplicas
            d.lastRequestAt = Date()
        }), resumed.status == .provisioning, resumed.lastRequestAt.map({ Date().timeIntervalSince($0) < 1 }) == true else { return }
        try await store.addEvent(deploymentId: id, kind: "resumed", message: "resumed by a request: starting \(resumed.minReplicas) replica\(resumed.minReplicas == 1 ? "" : "s")")
        publishRoute(resumed, status: .provisioning, reason: nil)
        poke()
    }

    /// Serving and starting replicas of a deployment, for the autoscaler.
    public func replicaCounts(deploymentId: String) -> (ready: Int, starting: Int) {
        let mine = runtimes.values.filter { $0.deploymentId == deploymentId && !$0.stopping }
        let ready = mine.filter(\.healthy).count
        let pulling = pulls.values.filter { $0 == deploymentId }.count
        return (ready, mine.count - ready + pulling)
    }

    /// Stops one replica's process (if any) and marks it `stopped`.
    func stopReplica(_ id: String, reason: String?) async {
        // A replica waiting for its model stops waiting (the shared download itself goes on for others).
        pulls[id] = nil
        if let deploymentId = runtimes[id]?.deploymentId {
            runtimes[id]?.stopping = true
            // No new requests for it from here on; on scale-down, let the ones it has finish first.
            try? await refreshStatus(deploymentId: deploymentId)
            if reason != nil, let traffic {
                let deadline = Date().addingTimeInterval(configuration.drainTimeout.seconds)
                while traffic.inFlight(replicaId: id) > 0, Date() < deadline {
                    try? await Task.sleep(for: .milliseconds(20))
                }
            }
            if let pid = runtimes[id]?.pid {
                await provider.terminate(pid: pid, grace: configuration.stopGrace)
            }
            // Our own child's exit is reported by its supervisor, which drops the runtime; wait for that (bounded).
            let deadline = Date().addingTimeInterval(configuration.stopGrace.seconds + 5)
            while let runtime = runtimes[id], !runtime.adopted, Date() < deadline {
                try? await Task.sleep(for: .milliseconds(10))
            }
            if let runtime = runtimes.removeValue(forKey: id) { devicesInUse.subtract(runtime.devices) }
        }
        try? await store.closeRun(replicaId: id, at: Date())
        restartNotBefore[id] = nil
        let now = Date()
        if let record = try? await store.updateReplica(id: id, { r in
            r.status = .stopped
            r.healthy = false
            r.pid = nil
            r.stoppedAt = now
            r.progress = nil
            if let reason { r.failReason = reason }
        }), let reason {
            try? await store.addEvent(deploymentId: record.deploymentId, kind: "replica_stopped", message: "replica \(id) stopped: \(reason)")
        }
    }

    /// Graceful server shutdown: stop every replica we run, so no engine outlives the server.
    private func shutdownAll() async {
        shuttingDown = true
        let ids = Array(runtimes.keys)
        logger.info("stopping replicas before shutdown", metadata: ["replicas": "\(ids.count)"])
        await stopReplicas(ids, reason: "the server shut down")
    }

    // MARK: Recovery

    /// After a restart (clean or not): re-adopt replica processes that are still alive, reap the rest.
    func recover() async {
        guard let replicas = try? await store.liveReplicas() else { return }
        for replica in replicas {
            guard let deployment = try? await store.deployment(id: replica.deploymentId) else { continue }
            if let pid = replica.pid, let port = replica.port, deployment.status.isActive,
                configuration.profile(named: deployment.hardwareProfile) != nil,
                provider.isAlive(pid: pid, replicaId: replica.id)
            {
                let devices = replica.deviceList
                devicesInUse.formUnion(devices)
                runtimes[replica.id] = Runtime(
                    deploymentId: deployment.id, pid: pid, port: port, devices: devices, healthPath: "/health",
                    servedModelName: deployment.id, startedAt: replica.startedAt ?? Date(), adopted: true,
                    healthy: replica.healthy)
                try? await store.addEvent(deploymentId: deployment.id, kind: "replica_adopted", message: "replica \(replica.id) (pid \(pid)) re-adopted after a server restart")
                logger.info("re-adopted replica", metadata: ["replica.id": "\(replica.id)", "replica.pid": "\(pid)"])
            } else {
                if let pid = replica.pid, provider.isAlive(pid: pid, replicaId: replica.id) {
                    await provider.terminate(pid: pid, grace: configuration.stopGrace)
                }
                let wasRunning = replica.pid != nil
                // A crash neither loses nor double-counts time: the run ends when the replica was last seen alive.
                try? await store.closeRun(replicaId: replica.id, at: replica.lastSeenAlive ?? replica.startedAt ?? Date())
                try? await store.updateReplica(id: replica.id) { r in
                    r.status = .stopped
                    r.healthy = false
                    r.pid = nil
                    r.stoppedAt = r.lastSeenAlive ?? Date()
                    r.progress = nil
                    r.failReason = wasRunning ? "its process was gone after a server restart; replaced" : "replaced after a server restart"
                }
                try? await store.addEvent(deploymentId: deployment.id, kind: "replica_reaped", message: "replica \(replica.id) was not alive after a server restart; replacing it")
            }
        }
    }

    // MARK: Routes for the gateway

    /// Publishes a deployment's ready replicas: healthy, not being stopped or killed.
    func publishRoute(_ deployment: DeploymentRecord, status: DeploymentStatus, reason: String?) {
        let endpoints = runtimes.compactMap { id, r in
            r.deploymentId == deployment.id && r.healthy && !r.stopping && r.killReason == nil && r.pid != nil
                ? RouteTable.Endpoint(replicaId: id, port: r.port, servedModelName: r.servedModelName) : nil
        }.sorted { $0.replicaId < $1.replicaId }
        routes.publish(deployment.id, RouteTable.Route(orgId: deployment.orgId, status: status, endpoints: endpoints, reason: reason))
    }

    /// The gateway saw a replica fail: probe it now rather than at the next interval.
    public nonisolated func reportSuspect(replicaId: String) { pokeHealth() }

    /// Devices in use, for the catalogue's availability answer.
    public func freeDeviceCount(profile: HardwareProfile) -> Int {
        profile.devices.filter { !devicesInUse.contains($0) }.count
    }
}
