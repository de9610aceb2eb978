import DeploymentStore
import Foundation
import InferenceCore
import Logging
import ModelHub
import Replicas
import Routing

extension Controller {
    // MARK: Process supervision

    func supervise(replicaId: String, command: EngineCommand, logPath: String) async {
        let exit: ProcessExit
        do {
            exit = try await provider.run(
                command, logPath: logPath,
                waiting: { handle, reason in await self.processWaiting(replicaId, handle: handle, reason: reason) },
                started: { started in await self.processStarted(replicaId, started) })
        } catch {
            await processEnded(replicaId, description: "could not be started: \(error)")
            return
        }
        await processEnded(replicaId, description: exit.description)
    }

    /// The provider queued the run (a cluster with no room for it): the replica is `pending` with the reason.
    func processWaiting(_ replicaId: String, handle: ReplicaHandle, reason: String) async {
        guard let runtime = runtimes[replicaId] else {
            // Stopped while it was being queued.
            await provider.stop(handle, grace: configuration.stopGrace)
            return
        }
        runtimes[replicaId]?.queuedHandle = handle
        guard runtime.handle == nil, runtime.waitingReason != reason else { return }
        runtimes[replicaId]?.waitingReason = reason
        await persist("updateReplica", { try await store.updateReplica(id: replicaId) { r in
            r.status = .pending
            r.failReason = reason
        } })
        await persist("addEvent", { try await store.addEvent(
            deploymentId: runtime.deploymentId, kind: "waiting_for_resources", message: "replica \(replicaId): \(reason)") })
        await persist("refreshStatus", { try await refreshStatus(deploymentId: runtime.deploymentId) })
    }

    func processStarted(_ replicaId: String, _ started: ReplicaStarted) async {
        guard var runtime = runtimes[replicaId] else {
            // Stopped before it started (a queued cluster job that found room later): nothing may run for it.
            await provider.stop(started.handle, grace: configuration.stopGrace)
            return
        }
        if runtime.waitingReason != nil {
            // It waited for room on the cluster: its run (billing, the ready timeout) begins now.
            runtime.waitingReason = nil
            runtime.startedAt = clock.now()
            _ = runtime.health.handle(.runStarted(at: runtime.startedAt), limits: healthLimits(runtime))
            runtimes[replicaId] = runtime
            await persist("updateReplica", { try await store.updateReplica(id: replicaId) { [startedAt = runtime.startedAt] r in
                r.status = .initingDockerContainer
                r.failReason = nil
                r.startedAt = startedAt
            } })
        }
        let handle = started.handle
        runtimes[replicaId]?.handle = handle
        // Where the provider placed it, when that is not where it was asked to listen: probes, routes and the
        // store follow the provider.
        let address = started.address ?? runtime.address
        runtimes[replicaId]?.address = address
        await persist("updateReplica", { try await store.updateReplica(id: replicaId) { r in
            r.handle = handle.rawValue
            r.pid = handle.processId
            r.host = address.host
            r.port = address.port
        } })
        if address != runtime.address {
            await persist("addEvent", { try await store.addEvent(
                deploymentId: runtime.deploymentId, kind: "replica_placed", message: "replica \(replicaId) listens on \(address) (\(handle))") })
        }
        // Billing runs from the launch until the process stops.
        if let deployment = await persist("deployment", { try await store.deployment(id: runtime.deploymentId) }),
            let profile = configuration.profile(named: deployment.hardwareProfile)
        {
            await persist("openRun", { try await store.openRun(
                ReplicaRunRecord(
                    replicaId: replicaId, deploymentId: deployment.id, orgId: deployment.orgId,
                    hardwareProfile: profile.name, pricePerHour: profile.pricePerHour, startedAt: runtime.startedAt)) })
        }
        if runtimes[replicaId]?.stopping == true {
            await provider.stop(handle, grace: configuration.stopGrace)
        }
    }

    /// A replica's process is gone. Expected after a stop; otherwise a crash: restart with backoff, or fail.
    func processEnded(_ replicaId: String, description: String) async {
        guard let runtime = runtimes.removeValue(forKey: replicaId) else { return }
        provider.devices?.release(runtime.devices)
        await persist("closeRun", { try await store.closeRun(replicaId: replicaId, at: clock.now()) })
        if runtime.stopping { return }
        let tail = logTail(path: configuration.logPath(replicaId: replicaId), maxLines: 8)
        let reason = (runtime.killReason ?? "engine \(description)") + (tail.isEmpty ? "" : ": \(tail)")
        guard let updated = await persist("updateReplica", { try await store.updateReplica(id: replicaId, { r in
            r.consecutiveFailures += 1
            r.restartCount += 1
            r.healthy = false
            r.failReason = reason
            r.pid = nil
            r.handle = nil
        }) }) else { return }
        let verdict = FleetDecisions.afterCrash(
            consecutiveFailures: updated.consecutiveFailures, maxConsecutiveFailures: configuration.maxConsecutiveFailures,
            backoff: configuration.restartBackoff, maxBackoff: configuration.maxRestartBackoff)
        switch verdict {
        case .fail:
            await persist("updateReplica", { try await store.updateReplica(id: replicaId) { $0.status = .failed; $0.stoppedAt = self.clock.now() } })
            await persist("addEvent", { try await store.addEvent(
                deploymentId: runtime.deploymentId, kind: "replica_failed",
                message: "replica \(replicaId) failed after \(updated.consecutiveFailures) crashes in a row: \(reason)") })
        case .restart(let seconds):
            restartNotBefore[replicaId] = (runtime.deploymentId, clock.now().addingTimeInterval(seconds))
            await persist("updateReplica", { try await store.updateReplica(id: replicaId) { $0.status = .restarting } })
            await persist("addEvent", { try await store.addEvent(
                deploymentId: runtime.deploymentId, kind: "replica_crashed",
                message: "replica \(replicaId) \(description); restarting in \(String(format: "%.1f", seconds)) s") })
        }
        logger.warning("replica process ended", metadata: ["replica.id": "\(replicaId)", "reason": "\(description)"])
        await persist("refreshStatus", { try await refreshStatus(deploymentId: runtime.deploymentId) })
        released(runtime.devices, by: runtime.deploymentId)
    }

    // MARK: Health

    /// One health pass over `/health`. Each replica's `ReplicaHealth` machine judges the results and the
    /// controller carries out what it says: real-request probes and kills run beside the pass (a slow engine
    /// or a slow cluster never holds it up) and report back as events.
    func checkHealth() async {
        // The gateway's suspicions, handed to the machines of the replicas they name. Their only action asks for a
        // check, which this pass is about to make: carried out, it would poke a second pass for nothing.
        let suspicions = suspects.withLock { pending -> [String: String] in
            let taken = pending
            pending = [:]
            return taken
        }
        for (id, reason) in suspicions {
            guard var runtime = runtimes[id] else { continue }
            _ = runtime.health.handle(.suspected(reason: reason), limits: healthLimits(runtime))
            runtimes[id] = runtime
        }
        let snapshot = runtimes.filter { $0.value.handle != nil && !$0.value.stopping }
        // A ready replica's engine load is read beside its health, for the autoscaler.
        let results = await withTaskGroup(of: (String, Bool, EngineLoad?).self) { group in
            for (id, runtime) in snapshot {
                group.addTask { [probe, configuration] in
                    async let load = runtime.healthy ? probe.engineLoad(at: runtime.address, timeout: configuration.healthTimeout) : nil
                    let healthy = await probe.isHealthy(at: runtime.address, path: runtime.healthPath, timeout: configuration.healthTimeout)
                    return (id, healthy, await load)
                }
            }
            var out: [(String, Bool, EngineLoad?)] = []
            for await result in group { out.append(result) }
            return out
        }
        let now = clock.now()
        var touched: Set<String> = []
        for (id, healthResult, load) in results {
            guard let runtime = runtimes[id], !runtime.stopping, let handle = runtime.handle else { continue }
            let alive = provider.isAlive(handle, replicaId: id)
            if runtime.adopted && !alive {
                await processEnded(id, description: "is gone")
                continue
            }
            if await feed(id, .checked(healthy: healthResult, at: now), alive: alive) { touched.insert(runtime.deploymentId) }
            let serving = runtimes[id]?.healthy == true
            runtimes[id]?.load = serving ? load : nil
        }
        for deploymentId in touched {
            await persist("refreshStatus", { try await refreshStatus(deploymentId: deploymentId) })
        }
    }

    /// The limits a replica's health is judged against: its profile's ready timeout and the fleet's settings.
    func healthLimits(_ runtime: Runtime) -> ReplicaHealth.Limits {
        ReplicaHealth.Limits(
            readyTimeout: Double(configuration.profile(named: runtime.profileName)?.readyTimeoutS ?? 600),
            unhealthyRestartAfter: configuration.unhealthyRestartAfter.seconds, maxWrongAnswers: configuration.maxWrongAnswers)
    }

    /// Hands one event to a replica's health machine and carries out its actions. True when the replica's
    /// deployment needs its status and route looked at.
    @discardableResult
    func feed(_ id: String, _ event: ReplicaHealth.Event, alive: Bool = true) async -> Bool {
        guard var runtime = runtimes[id] else { return false }
        let actions = runtime.health.handle(event, limits: healthLimits(runtime))
        runtimes[id] = runtime
        var touched = false
        for action in actions {
            switch action {
            case .probeAnswer:
                jobsContinuation.yield(.answerProbe(replicaId: id, address: runtime.address, servedModelName: runtime.servedModelName))
            case .record(let healthy, let at):
                // A write that fails after its retries is logged; the judgement stands (routing follows the machine).
                await persist("updateReplica", { try await store.updateReplica(id: id, { r in
                    r.healthy = healthy
                    r.lastHealthCheck = at
                    if alive { r.lastSeenAlive = at }
                    if healthy {
                        r.status = .running
                        r.consecutiveFailures = 0
                        r.failReason = nil
                    }
                }) })
            case .becameHealthy(let after):
                touched = true
                await persist("addEvent", { try await store.addEvent(
                    deploymentId: runtime.deploymentId, kind: "replica_healthy", message: "replica \(id) is healthy after \(String(format: "%.1f", after)) s") })
            case .notServing:
                touched = true
            case .checkAgain:
                pokeHealth()
            case .answeredWrongly(let reason):
                await persist("updateReplica", { try await store.updateReplica(id: id) { $0.failReason = reason } })
            case .trustedWithoutAnswer(let why):
                logger.info("real-request probe inconclusive; trusting /health", metadata: ["replica.id": "\(id)", "reason": "\(why)"])
            case .kill(let reason):
                await kill(id, handle: runtime.handle, deploymentId: runtime.deploymentId, reason: reason)
            }
        }
        return touched
    }

    /// Sends one real tiny request to a replica, beside the health pass, and reports what it showed.
    func probeAnswer(replicaId: String, address: ReplicaAddress, servedModelName: String) async {
        let result = await probe.checkAnswer(at: address, servedModelName: servedModelName, timeout: configuration.answerTimeout)
        guard runtimes[replicaId]?.stopping == false else { return }
        await feed(replicaId, .answered(result))
    }

    /// The gateway saw a replica answer wrongly (or not at all): probe it with a real request at once.
    public nonisolated func reportSuspect(replicaId: String, reason: String) {
        suspects.withLock { $0[replicaId] = reason }
        pokeHealth()
    }

    /// Kills a replica its health machine gave up on; its exit counts as a crash (restart with backoff, then
    /// `failed`). The stop runs beside the health pass: a cluster may take seconds to answer for a lost node.
    func kill(_ id: String, handle: ReplicaHandle?, deploymentId: String, reason: String) async {
        guard let handle else { return }
        guard await cluster.stillLeads() else {
            if var runtime = runtimes[id] {
                _ = runtime.health.handle(.killNotCarriedOut, limits: healthLimits(runtime))
                runtimes[id] = runtime
            }
            return
        }
        await persist("addEvent", { try await store.addEvent(deploymentId: deploymentId, kind: "replica_killed", message: "replica \(id) \(reason); killing it") })
        jobsContinuation.yield(.kill(replicaId: id, handle: handle))
    }

    /// Stops a killed replica's run; an adopted one's supervisor is not ours, so its end is reported here.
    func finishKill(_ id: String, handle: ReplicaHandle) async {
        await provider.stop(handle, grace: .seconds(2))
        if runtimes[id]?.adopted == true, runtimes[id]?.handle == handle { await processEnded(id, description: "was killed") }
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
}
