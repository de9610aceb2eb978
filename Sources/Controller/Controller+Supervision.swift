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

    /// One health pass over `/health`. A replica is ready for traffic when `/health` answers and a real tiny
    /// request was not answered wrongly; the real-request probes run beside the pass (a slow engine never
    /// holds it up) and report back through `answerProbed`.
    func checkHealth() async {
        let suspects = self.suspects.withLock { $0 }
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
            guard var runtime = runtimes[id], !runtime.stopping, let handle = runtime.handle else { continue }
            let alive = provider.isAlive(handle, replicaId: id)
            if runtime.adopted && !alive {
                await processEnded(id, description: "is gone")
                continue
            }
            if healthResult, !answerProbes.contains(id), !runtime.answerVerified || suspects[id] != nil {
                answerProbes.insert(id)
                jobsContinuation.yield(.answerProbe(replicaId: id, address: runtime.address, servedModelName: runtime.servedModelName))
            }
            // Out of routing until a real request is answered right (a second wrong answer for a replica that was serving).
            let healthy = healthResult && runtime.answerVerified && runtime.wrongAnswers < 2
            let becameHealthy = healthy && !runtime.healthy
            runtime.healthy = healthy
            runtime.load = healthy ? load : nil
            runtime.unhealthySince = healthy ? nil : (runtime.unhealthySince ?? now)
            runtimes[id] = runtime
            guard let record = await persist("updateReplica", { try await store.updateReplica(id: id, { r in
                r.healthy = healthy
                r.lastHealthCheck = now
                if alive { r.lastSeenAlive = now }
                if healthy {
                    r.status = .running
                    r.consecutiveFailures = 0
                    r.failReason = nil
                }
            }) }) else { continue }
            if becameHealthy {
                touched.insert(runtime.deploymentId)
                await persist("addEvent", { try await store.addEvent(
                    deploymentId: runtime.deploymentId, kind: "replica_healthy",
                    message: "replica \(id) is healthy after \(String(format: "%.1f", now.timeIntervalSince(runtime.startedAt))) s") })
            } else if !healthy {
                touched.insert(runtime.deploymentId)
                await killIfStuck(id, record: record, now: now)
            }
        }
        for deploymentId in touched {
            await persist("refreshStatus", { try await refreshStatus(deploymentId: deploymentId) })
        }
    }

    /// Sends one real tiny request to a replica, beside the health pass, and reports what it showed.
    func probeAnswer(replicaId: String, address: ReplicaAddress, servedModelName: String) async {
        let result = await probe.checkAnswer(at: address, servedModelName: servedModelName, timeout: configuration.answerTimeout)
        await answerProbed(replicaId, result)
    }

    /// A real-request probe came back. A right answer makes the replica ready (or clears a suspicion); a slow
    /// one proves nothing wrong, so a replica that answers `/health` is not held back by a slow engine; a wrong
    /// one counts, and `maxWrongAnswers` in a row replace the replica.
    func answerProbed(_ id: String, _ result: AnswerCheck) async {
        answerProbes.remove(id)
        guard var runtime = runtimes[id], !runtime.stopping else { return }
        switch result {
        case .ok:
            runtime.answerVerified = true
            runtime.wrongAnswers = 0
            suspects.withLock { _ = $0.removeValue(forKey: id) }
        case .inconclusive(let why):
            if !runtime.answerVerified {
                logger.info("real-request probe inconclusive; trusting /health", metadata: ["replica.id": "\(id)", "reason": "\(why)"])
                runtime.answerVerified = true
            }
            suspects.withLock { _ = $0.removeValue(forKey: id) }
        case .wrong(let why):
            runtime.wrongAnswers += 1
            runtimes[id] = runtime
            let reason = "answers requests wrongly: \(why)"
            await persist("updateReplica", { try await store.updateReplica(id: id) { $0.failReason = reason } })
            if runtime.wrongAnswers >= configuration.maxWrongAnswers {
                await kill(id, reason: "answered \(runtime.wrongAnswers) real requests in a row wrongly (\(why))")
                return
            }
        }
        runtimes[id] = runtime
        pokeHealth()
    }

    /// The gateway saw a replica answer wrongly (or not at all): probe it with a real request at once.
    public nonisolated func reportSuspect(replicaId: String, reason: String) {
        suspects.withLock { $0[replicaId] = reason }
        pokeHealth()
    }

    /// Kills a replica that never became ready in time, or that stopped answering; its exit counts as a crash.
    func killIfStuck(_ id: String, record: ReplicaRecord, now: Date) async {
        guard let runtime = runtimes[id], runtime.handle != nil, runtime.killReason == nil else { return }
        let readyTimeout = Double(configuration.profile(named: (await persist("deployment", { try await store.deployment(id: runtime.deploymentId) }))?.hardwareProfile ?? "")?.readyTimeoutS ?? 600)
        guard let reason = FleetDecisions.stuckReason(
            status: record.status, startedAt: runtime.startedAt, unhealthySince: runtime.unhealthySince, now: now,
            readyTimeout: readyTimeout, unhealthyRestartAfter: configuration.unhealthyRestartAfter.seconds)
        else { return }
        await kill(id, reason: reason)
    }

    /// Kills a replica for `reason`; its exit counts as a crash (restart with backoff, then `failed`).
    func kill(_ id: String, reason: String) async {
        guard let runtime = runtimes[id], let handle = runtime.handle, runtime.killReason == nil else { return }
        guard await cluster.stillLeads() else { return }
        runtimes[id]?.killReason = reason
        suspects.withLock { _ = $0.removeValue(forKey: id) }
        await persist("addEvent", { try await store.addEvent(deploymentId: runtime.deploymentId, kind: "replica_killed", message: "replica \(id) \(reason); killing it") })
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
