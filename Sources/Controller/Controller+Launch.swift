import DeploymentStore
import Foundation
import InferenceCore
import Logging
import ModelHub
import Replicas
import Routing

extension Controller {
    /// Starts a replica (its model download first, where the engine needs one), or records why it waits.
    /// Returns whether anything changed: a pass over a deployment whose replicas all still wait for the same
    /// reason writes nothing and publishes nothing.
    @discardableResult
    func launch(_ replica: ReplicaRecord, of deployment: DeploymentRecord, profile: HardwareProfile) async throws -> Bool {
        // Model files first (before devices are taken: a download can take long). A cluster node fetches them
        // itself, into its own Hub cache, once the cluster has placed the replica.
        let model = preparedModels[deployment.id]
        let files = Self.hubFiles(modelId: deployment.hfModelId, engine: profile.engine)
        let nodePull = profile.provider == .ray
            ? files.map { NodeModelPull(repo: $0.repo, format: $0.format.name, hubEndpoint: downloader?.hub.endpoint ?? HubClient.defaultEndpoint) } : nil
        if model == nil, nodePull == nil, let downloader, let (repo, format) = files {
            try await startPull(replica, of: deployment, repo: repo, format: format, downloader: downloader)
            return true
        }
        // Devices the provider hands out by name: never one device to two replicas. (A cluster provider lets the
        // cluster allot them.)
        var devices: [String] = []
        if profile.gpuCount > 0, let pool = provider.devices(for: profile) {
            let free = pool.free(of: profile.devices)
            guard free.count >= profile.gpuCount else {
                let reason = profile.devices.isEmpty
                    ? "waiting for devices: hardware profile \(profile.name) has no \(profile.gpuType) devices on this server"
                    : "waiting for devices: \(profile.devices.count - free.count) of \(profile.devices.count) \(profile.name) devices are in use; needs \(profile.gpuCount)"
                guard replica.failReason != reason || replica.status != .pending else { return false }
                try await store.updateReplica(id: replica.id) { $0.failReason = reason; $0.status = .pending }
                try await store.addEvent(deploymentId: deployment.id, kind: "waiting_for_devices", message: "replica \(replica.id): \(reason)")
                return true
            }
            if !adminOrgs.contains(deployment.orgId) {
                let quota = configuration.orgQuota.devices(of: profile)
                let held = runtimes.values.filter { $0.orgId == deployment.orgId && $0.profileName == profile.name }.reduce(0) { $0 + $1.devices.count }
                if held + profile.gpuCount > quota {
                    let reason = "waiting for devices: your organisation holds \(held) of its limit of \(quota) \(profile.name) devices; needs \(profile.gpuCount)"
                    guard replica.failReason != reason || replica.status != .pending else { return false }
                    try await store.updateReplica(id: replica.id) { $0.failReason = reason; $0.status = .pending }
                    try await store.addEvent(deploymentId: deployment.id, kind: "waiting_for_devices", message: "replica \(replica.id): \(reason)")
                    return true
                }
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
                    modelCacheDir: model?.cacheDir, attempt: replica.restartCount, nodePull: nodePull))
        } catch {
            try await store.updateReplica(id: replica.id) {
                $0.status = .failed
                $0.failReason = error.description
                $0.stoppedAt = self.clock.now()
            }
            try await store.addEvent(deploymentId: deployment.id, kind: "replica_failed", message: "replica \(replica.id) cannot start: \(error.description)")
            return true
        }
        // Re-check after the awaits above: a stop or shutdown may have begun meanwhile.
        guard !stoppingDeployments.contains(deployment.id), !shuttingDown, runtimes[replica.id] == nil else { return false }
        // Taken now, all or none: a device another launch took meanwhile leaves this one for the next pass.
        guard provider.devices(for: profile)?.take(devices) ?? true else { return false }
        let now = clock.now()
        runtimes[replica.id] = Runtime(
            deploymentId: deployment.id, handle: nil, address: ReplicaAddress(host: provider.replicaHost, port: port), devices: devices,
            healthPath: command.healthPath,
            servedModelName: command.servedModelName, startedAt: now, adopted: false, orgId: deployment.orgId, profileName: profile.name,
            health: ReplicaHealth(startedAt: now))
        let deviceList = devices.joined(separator: ",")
        try await store.updateReplica(id: replica.id) {
            $0.status = .initingDockerContainer
            $0.port = port
            $0.host = self.provider.replicaHost
            $0.pid = nil
            $0.handle = nil
            $0.devices = deviceList
            $0.startedAt = now
            $0.stoppedAt = nil
            $0.healthy = false
            $0.failReason = nil
        }
        try await store.addEvent(
            deploymentId: deployment.id, kind: "replica_starting",
            message: "replica \(replica.id) starting on \(provider.replicaHost):\(port)" + (devices.isEmpty ? "" : " with devices \(devices.joined(separator: ","))"))
        logger.info("starting replica", metadata: ["replica.id": "\(replica.id)", "deployment.id": "\(deployment.id)", "replica.port": "\(port)"])
        jobsContinuation.yield(.launch(replicaId: replica.id, command: command, logPath: configuration.logPath(replicaId: replica.id)))
        return true
    }
}
