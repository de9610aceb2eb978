import DeploymentStore
import Foundation
import InferenceCore
import Replicas
import Routing

/// What the controller asks of the instance it runs in when several instances share one store. The
/// defaults are one instance alone: it always leads, routes reach its own gateway at once, and a shutdown
/// stops the replicas.
public struct ClusterHooks: Sendable {
    /// Checked before an action no store write can fence (stopping or killing a process): false once
    /// another instance leads.
    public var stillLeads: @Sendable () async -> Bool = { true }
    /// Returns once a route just published has reached every gateway: a replica leaving is out of every
    /// gateway's table before it is drained and stopped.
    public var routesPropagated: @Sendable () async -> Void = {}
    /// On shutdown: true when another instance will take the fleet over, so the replicas keep serving and
    /// are re-adopted rather than stopped.
    public var handOver: @Sendable () async -> Bool = { false }

    public init() {}
}

extension Controller: FleetControl {
    public func setClusterHooks(_ hooks: ClusterHooks) { cluster = hooks }

    public nonisolated func logPath(replicaId: String) -> String { configuration.logPath(replicaId: replicaId) }

    public nonisolated func replicaLogs(replicaId: String, handle: String?, maxLines: Int) async -> String {
        await provider.replicaLogs(handle: handle, logPath: logPath(replicaId: replicaId), maxLines: maxLines)
    }

    /// A deployment another instance stopped or paused through the store while replicas still run for it:
    /// stop them here, where they are supervised.
    func takeDownLeftovers(_ deployment: DeploymentRecord) async {
        // A stop or pause of this controller's own is already taking them down.
        guard !stoppingDeployments.contains(deployment.id) else { return }
        var ids = Set(runtimes.filter { $0.value.deploymentId == deployment.id && !$0.value.stopping }.map(\.key))
        ids.formUnion(pulls.filter { $0.value == deployment.id }.map(\.key))
        // Rows still live without a process here (waiting for devices, or a restart's backoff) are marked stopped too.
        ids.formUnion(await persist("replicas", { try await store.replicas(deploymentId: deployment.id) })?.filter(\.status.isLive).map(\.id) ?? [])
        guard !ids.isEmpty else { return }
        publishRoute(deployment, status: deployment.status, reason: nil)
        await stopReplicas(Array(ids), reason: nil)
    }

    /// The handle a stored replica was last run under (rows from before handles: its pid).
    nonisolated static func handle(of replica: ReplicaRecord) -> ReplicaHandle? {
        replica.handle.map(ReplicaHandle.init) ?? replica.pid.map(ReplicaHandle.process)
    }

    /// After recovery: runs the provider can see for replicas this store knows, but that were not re-adopted
    /// (their replica stopped, or a run whose handle never reached the store), are stopped. Runs of replica
    /// ids the store does not know belong to another platform and are left alone.
    func reapStrays() async {
        for (replicaId, handle) in await provider.running() where runtimes[replicaId] == nil {
            guard let record = await persist("replica", { try await store.replica(id: replicaId) }) else { continue }
            guard await cluster.stillLeads() else { return }
            await provider.stop(handle, grace: configuration.stopGrace)
            await persist("addEvent", { try await store.addEvent(
                deploymentId: record.deploymentId, kind: "replica_reaped",
                message: "replica \(replicaId): a run (\(handle)) the store did not account for was stopped") })
            logger.warning("stopped a stray replica run", metadata: ["replica.id": "\(replicaId)", "replica.handle": "\(handle)"])
        }
    }

    /// Deployments this controller runs replicas for that a full pass did not load (stopped elsewhere).
    func takeDownOrphans(known: Set<String>) async {
        for id in Set(runtimes.values.map(\.deploymentId)).subtracting(known) {
            if let deployment = await persist("deployment", { try await store.deployment(id: id) }), !deployment.status.isActive {
                await takeDownLeftovers(deployment)
            }
        }
    }
}
