import DeploymentStore
import Foundation
import InferenceCore
import Logging
import ModelHub
import Replicas
import Routing
import Synchronization

extension Controller {
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
    func takeDown(_ id: String, to status: DeploymentStatus, event: String) async throws {
        stoppingDeployments.insert(id)
        defer { stoppingDeployments.remove(id) }
        guard let record = try await Self.markTakenDown(id, to: status, event: event, in: store) else { return }
        publishRoute(record, status: status, reason: nil)
        let replicas = try await store.replicas(deploymentId: id).filter { $0.status.isLive }
        await stopReplicas(replicas.map(\.id), reason: nil)
    }

    /// Stops replicas concurrently; returns once all are stopped.
    func stopReplicas(_ ids: [String], reason: String?) async {
        await withTaskGroup(of: Void.self) { group in
            for id in ids {
                group.addTask { await self.stopReplica(id, reason: reason) }
            }
        }
    }

    /// The store's half of a stop or pause, which any instance may write: the deployment moves to `stopped`
    /// (from any state) or `paused` (only from an active one) with its event. The record, or nil when it
    /// did not move.
    public static func markTakenDown(
        _ id: String, to status: DeploymentStatus, event: String, in store: any DeploymentStore
    ) async throws -> DeploymentRecord? {
        guard let record = try await store.updateDeployment(id: id, { d in
            guard status == .stopped || d.status.isActive else { return }
            d.status = status
            d.desiredReplicas = 0
            if status == .stopped { d.stoppedAt = Date() }
        }), record.status == status else { return nil }
        try await store.addEvent(deploymentId: id, kind: status.rawValue, message: event)
        return record
    }

    /// Resumes a paused deployment at `min_replicas`; a no-op otherwise. Called by the gateway's first request.
    public func resumeDeployment(id: String) async throws {
        guard let resumed = try await Self.markResumed(id, in: store) else { return }
        publishRoute(resumed, status: .provisioning, reason: nil)
        poke(deploymentId: id)
    }

    /// The store's half of a resume, which any instance may write: a paused deployment moves to
    /// `provisioning` at `min_replicas`. Exactly one of many concurrent wake-ups moves it, and only that one
    /// writes the event and gets the record.
    public static func markResumed(_ id: String, in store: any DeploymentStore) async throws -> DeploymentRecord? {
        let changed = Mutex(false)
        guard let resumed = try await store.updateDeployment(id: id, { d in
            guard d.status == .paused else { return }
            d.status = .provisioning
            d.desiredReplicas = d.minReplicas
            d.lastRequestAt = Date()
            changed.withLock { $0 = true }
        }), changed.withLock({ $0 }) else { return nil }
        try await store.addEvent(deploymentId: id, kind: "resumed", message: "resumed by a request: starting \(resumed.minReplicas) replica\(resumed.minReplicas == 1 ? "" : "s")")
        return resumed
    }

    /// Serving and starting replicas of a deployment, for the autoscaler.
    public func replicaCounts(deploymentId: String) -> (ready: Int, starting: Int) {
        let mine = runtimes.values.filter { $0.deploymentId == deploymentId && !$0.stopping }
        let ready = mine.filter(\.healthy).count
        let pulling = pulls.values.filter { $0 == deploymentId }.count
        return (ready, mine.count - ready + pulling)
    }

    /// The summed load the engines of a deployment's ready replicas reported at the last health pass; nil
    /// when none of them says.
    public func engineLoad(deploymentId: String) -> EngineLoad? {
        EngineLoad.total(runtimes.values.lazy.filter { $0.deploymentId == deploymentId && $0.healthy && !$0.stopping }.compactMap(\.load))
    }

    /// Stops one replica's process (if any) and marks it `stopped`.
    func stopReplica(_ id: String, reason: String?) async {
        // A replica waiting for its model stops waiting (the shared download itself goes on for others).
        pulls[id] = nil
        if let deploymentId = runtimes[id]?.deploymentId {
            let held = runtimes[id]?.devices ?? []
            runtimes[id]?.stopping = true
            // No new requests for it from here on; on scale-down, let the ones it has finish first.
            await persist("refreshStatus", { try await refreshStatus(deploymentId: deploymentId) })
            if reason != nil { await cluster.routesPropagated() }
            if reason != nil, let traffic {
                let deadline = clock.now().addingTimeInterval(configuration.drainTimeout.seconds)
                while traffic.inFlight(replicaId: id) > 0, clock.now() < deadline {
                    try? await clock.sleep(.milliseconds(20))
                }
            }
            if let handle = runtimes[id]?.handle ?? runtimes[id]?.queuedHandle {
                guard await cluster.stillLeads() else { return }
                await provider.stop(handle, grace: configuration.stopGrace)
            }
            // Our own child's exit is reported by its supervisor, which drops the runtime; wait for that (bounded).
            let deadline = clock.now().addingTimeInterval(configuration.stopGrace.seconds + 5)
            while let runtime = runtimes[id], !runtime.adopted, clock.now() < deadline {
                try? await clock.sleep(.milliseconds(10))
            }
            if let runtime = runtimes.removeValue(forKey: id) { provider.devices?.release(runtime.devices) }
            released(held, by: deploymentId)
        }
        await persist("closeRun", { try await store.closeRun(replicaId: id, at: clock.now()) })
        restartNotBefore[id] = nil
        let now = clock.now()
        if let record = await persist("updateReplica", { try await store.updateReplica(id: id, { r in
            r.status = .stopped
            r.healthy = false
            r.pid = nil
            r.handle = nil
            r.stoppedAt = now
            r.progress = nil
            if let reason { r.failReason = reason }
        }) }), let reason {
            await persist("addEvent", { try await store.addEvent(deploymentId: record.deploymentId, kind: "replica_stopped", message: "replica \(id) stopped: \(reason)") })
        }
    }

    /// Graceful server shutdown: stop every replica we run, so no engine outlives the server.
    func shutdownAll() async {
        shuttingDown = true
        if await cluster.handOver() {
            logger.info("leaving replicas running for the next leader", metadata: ["replicas": "\(runtimes.count)"])
            return
        }
        let ids = Array(runtimes.keys)
        logger.info("stopping replicas before shutdown", metadata: ["replicas": "\(ids.count)"])
        await stopReplicas(ids, reason: "the server shut down")
    }

    // MARK: Recovery

    /// After a restart (clean or not): re-adopt replica runs that are still alive, reap the rest, then stop
    /// runs the store does not account for.
    func recover() async {
        await recoverKnown()
        await reapStrays()
    }

    func recoverKnown() async {
        guard let replicas = await persist("liveReplicas", { try await store.liveReplicas() }) else { return }
        // What the provider runs now, in one look (a cluster provider lists its jobs once rather than per replica).
        let seen = replicas.isEmpty ? [:] : await provider.running()
        for replica in replicas {
            guard let deployment = await persist("deployment", { try await store.deployment(id: replica.deploymentId) }) else { continue }
            let handle = Self.handle(of: replica)
            if let handle, let port = replica.port, deployment.status.isActive,
                configuration.profile(named: deployment.hardwareProfile) != nil,
                seen[replica.id] == handle || provider.isAlive(handle, replicaId: replica.id)
            {
                let devices = replica.deviceList
                provider.devices?.claim(devices)
                runtimes[replica.id] = Runtime(
                    deploymentId: deployment.id, handle: handle, address: ReplicaAddress(host: replica.host ?? provider.replicaHost, port: port),
                    devices: devices, healthPath: "/health",
                    servedModelName: deployment.id, startedAt: replica.startedAt ?? clock.now(), adopted: true,
                    orgId: deployment.orgId, profileName: deployment.hardwareProfile,
                    health: ReplicaHealth(
                        adoptedAt: replica.startedAt ?? clock.now(), healthy: replica.healthy, hasServed: replica.status == .running))
                await persist("addEvent", { try await store.addEvent(deploymentId: deployment.id, kind: "replica_adopted", message: "replica \(replica.id) (\(handle)) re-adopted after a server restart") })
                logger.info("re-adopted replica", metadata: ["replica.id": "\(replica.id)", "replica.handle": "\(handle)"])
            } else {
                if let handle, provider.isAlive(handle, replicaId: replica.id) {
                    await provider.stop(handle, grace: configuration.stopGrace)
                }
                let wasRunning = handle != nil
                // A crash neither loses nor double-counts time: the run ends when the replica was last seen alive.
                await persist("closeRun", { try await store.closeRun(replicaId: replica.id, at: replica.lastSeenAlive ?? replica.startedAt ?? clock.now()) })
                await persist("updateReplica", { try await store.updateReplica(id: replica.id) { r in
                    r.status = .stopped
                    r.healthy = false
                    r.pid = nil
                    r.handle = nil
                    r.stoppedAt = r.lastSeenAlive ?? self.clock.now()
                    r.progress = nil
                    r.failReason = wasRunning ? "its process was gone after a server restart; replaced" : "replaced after a server restart"
                } })
                await persist("addEvent", { try await store.addEvent(deploymentId: deployment.id, kind: "replica_reaped", message: "replica \(replica.id) was not alive after a server restart; replacing it") })
            }
        }
    }

    // MARK: Routes for the gateway

    /// Publishes a deployment's ready replicas: healthy, not being stopped or killed.
    func publishRoute(_ deployment: DeploymentRecord, status: DeploymentStatus, reason: String?) {
        let endpoints = runtimes.compactMap { id, r in
            r.deploymentId == deployment.id && r.healthy && !r.stopping && r.killReason == nil && r.handle != nil
                ? RouteTable.Endpoint(replicaId: id, address: r.address, servedModelName: r.servedModelName) : nil
        }.sorted { $0.replicaId < $1.replicaId }
        routes.publish(deployment.id, RouteTable.Route(orgId: deployment.orgId, status: status, endpoints: endpoints, reason: reason))
    }


    /// Devices in use, for the catalogue's availability answer.
    public func freeDeviceCount(profile: HardwareProfile) async -> Int {
        if let devices = await provider.freeDevices(for: profile) { return devices }
        // Where the cluster allots devices, the cluster says whether it has room when the replica asks.
        guard let pool = provider.devices(for: profile) else { return profile.gpuCount }
        return pool.free(of: profile.devices).count
    }
}

extension Controller: FleetCommands {}
