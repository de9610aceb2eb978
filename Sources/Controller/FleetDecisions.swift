import DeploymentStore
import Foundation
import InferenceCore

/// The fleet's decisions as pure functions of what the store and the controller know, and of the time they
/// are given: no I/O and no clock of their own. The controller gathers their inputs, calls them and
/// carries out what they say (launch, drain, restart, kill); tests call them directly, in microseconds.
public enum FleetDecisions {
    /// What one reconcile pass does to one deployment.
    public struct Plan: Equatable, Sendable {
        /// New replica slots to create, then launch.
        public var create = 0
        /// Replicas to take out of routing, drain and stop.
        public var drain: [String] = []
        /// Existing replicas to launch now.
        public var launch: [String] = []
    }

    /// What the controller knows of a deployment's replicas beyond the store.
    public struct Known: Sendable {
        /// Replicas with a run, or waiting for their model's files.
        public var busy: Set<String> = []
        /// Replicas leaving on scale-down.
        public var draining: Set<String> = []
        /// Replicas waiting out a restart backoff, and until when.
        public var restartNotBefore: [String: Date] = [:]

        public init(busy: Set<String> = [], draining: Set<String> = [], restartNotBefore: [String: Date] = [:]) {
            self.busy = busy
            self.draining = draining
            self.restartNotBefore = restartNotBefore
        }
    }

    /// The pass for one deployment: as many live replicas as it wants (within its max and the server's),
    /// extra ones drained (those not serving first, then the newest), and every live replica without a run
    /// launched unless it waits out a restart backoff. A failed deployment gets no new replicas.
    public static func plan(
        _ deployment: DeploymentRecord, replicas: [ReplicaRecord], known: Known, maxReplicasPerDeployment: Int, now: Date
    ) -> Plan {
        var plan = Plan()
        let desired = max(0, min(deployment.desiredReplicas, deployment.maxReplicas, maxReplicasPerDeployment))
        if deployment.status != .failed {
            let live = replicas.filter { $0.status.isLive && !known.draining.contains($0.id) }
            if live.count < desired {
                plan.create = desired - live.count
            } else if live.count > desired {
                plan.drain = live.sorted { scaleDownRank($0) < scaleDownRank($1) }.prefix(live.count - desired).map(\.id)
            }
        }
        let leaving = known.draining.union(plan.drain)
        plan.launch = replicas.filter { r in
            guard r.status.isLive, !known.busy.contains(r.id), !leaving.contains(r.id) else { return false }
            if r.status == .restarting, let notBefore = known.restartNotBefore[r.id], notBefore > now { return false }
            return true
        }.map(\.id)
        return plan
    }

    /// Which replicas go first on scale-down: ones not yet serving, then the newest.
    public static func scaleDownRank(_ r: ReplicaRecord) -> (Int, TimeInterval) {
        (r.status == .running && r.healthy ? 1 : 0, -r.createdAt.timeIntervalSince1970)
    }

    /// After a replica's run ended on its own.
    public enum CrashVerdict: Equatable, Sendable {
        /// Launch it again once `after` seconds have passed.
        case restart(after: TimeInterval)
        /// Too many crashes in a row: the replica is failed.
        case fail
    }

    /// Restarts with a doubling backoff (from `backoff`, at most `maxBackoff`) until `maxConsecutiveFailures`
    /// crashes in a row.
    public static func afterCrash(
        consecutiveFailures: Int, maxConsecutiveFailures: Int, backoff: Duration, maxBackoff: Duration
    ) -> CrashVerdict {
        guard consecutiveFailures < maxConsecutiveFailures else { return .fail }
        // Clamped before any arithmetic: a count read from a damaged row cannot overflow here.
        let crashes = max(1, min(consecutiveFailures, 63))
        let doubling = pow(2, Double(crashes - 1))
        return .restart(after: min(backoff.seconds * doubling, maxBackoff.seconds))
    }

    /// Why a replica that is not healthy should be killed now, or nil to give it more time: a starting one
    /// past its profile's ready timeout, a serving one that stopped answering for `unhealthyRestartAfter`.
    public static func stuckReason(
        status: ReplicaStatus, startedAt: Date, unhealthySince: Date?, now: Date, readyTimeout: TimeInterval,
        unhealthyRestartAfter: TimeInterval
    ) -> String? {
        if status != .running, now.timeIntervalSince(startedAt) > readyTimeout {
            return "not healthy within the ready timeout of \(Int(readyTimeout)) s"
        }
        if status == .running, let since = unhealthySince, now.timeIntervalSince(since) > unhealthyRestartAfter {
            return "stopped answering health checks for \(Int(now.timeIntervalSince(since))) s"
        }
        return nil
    }
}
