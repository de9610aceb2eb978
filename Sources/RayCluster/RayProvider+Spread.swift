import Foundation
import InferenceCore
import Replicas

extension RayProvider {
    /// How following a job ended.
    enum FollowOutcome {
        /// The job is over.
        case ended(ProcessExit)
        /// It was pinned to a node that had no room in time: submit it again, unpinned.
        case unpin
    }

    /// A job pinned to a node and not yet running there.
    struct Pin: Sendable {
        var deployment: String
        var node: String
        var needs: [String: Double]
    }

    /// The node a deployment's next replica should go to, so that losing one machine loses as few of its
    /// replicas as possible: among the alive nodes with room for what the profile asks for (less what this
    /// platform's jobs hold there, or are pinned to take), not suspected lost, the one with the fewest of the
    /// deployment's replicas, then the fewest of this platform's. Nil when Ray cannot say, or no node or only
    /// one could take it (Ray then places or queues it as it likes).
    func choosePin(deploymentId: String, requirements: ReplicaRequirements, reserveAs key: String) async -> String? {
        guard let all = try? await listJobs(), let nodes = try? await jobs.nodes() else { return nil }
        let needs = requirements.clusterResources
        let suspects = suspectNodes.withLock { s in
            s = s.filter { ContinuousClock.now - $0.value < .seconds(60) }
            return Set(s.keys)
        }
        var mine: [String: Int] = [:]
        var ours: [String: Int] = [:]
        var held: [String: [String: Double]] = [:]
        var placed: Set<String> = []
        for job in all where !job.status.isTerminal {
            guard let node = job.driverNodeId else { continue }
            placed.insert(job.submissionId)
            ours[node, default: 0] += 1
            for (k, v) in job.resources { held[node, default: [:]][k, default: 0] += v }
            if job.metadata["lyceum_deployment_id"] == deploymentId { mine[node, default: 0] += 1 }
        }
        // Chosen and reserved under one lock: launches of one deployment at once each see the others' choices.
        return pins.withLock { pins in
            var mine = mine, ours = ours, held = held
            for (id, pin) in pins where !placed.contains(id) {
                ours[pin.node, default: 0] += 1
                for (k, v) in pin.needs { held[pin.node, default: [:]][k, default: 0] += v }
                if pin.deployment == deploymentId { mine[pin.node, default: 0] += 1 }
            }
            let roomy = nodes.filter { node in
                node.alive && !suspects.contains(node.nodeId)
                    && needs.allSatisfy { node.resources[$0.key, default: 0] - (held[node.nodeId]?[$0.key] ?? 0) >= $0.value - 1e-9 }
            }
            guard roomy.count > 1 || !suspects.isEmpty else { return nil }
            let best = roomy.min { a, b in
                (mine[a.nodeId, default: 0], ours[a.nodeId, default: 0], a.nodeId) < (mine[b.nodeId, default: 0], ours[b.nodeId, default: 0], b.nodeId)
            }?.nodeId
            if let best { pins[key] = Pin(deployment: deploymentId, node: best, needs: needs) }
            return best
        }
    }

    /// How many more of a profile's replicas fit on the cluster's alive nodes: per node, its resources less
    /// what this platform's jobs there hold (other users of the cluster are not counted; Ray has the last word
    /// when the job asks). Nil when Ray does not answer.
    public func freeCapacity(for profile: HardwareProfile) async -> Int? {
        let needs = ReplicaRequirements(profile: profile, runId: "").clusterResources
        guard !needs.isEmpty, let all = try? await listJobs(), let nodes = try? await jobs.nodes() else { return nil }
        var held: [String: [String: Double]] = [:]
        for job in all where !job.status.isTerminal {
            guard let node = job.driverNodeId else { continue }
            for (k, v) in job.resources { held[node, default: [:]][k, default: 0] += v }
        }
        var free = 0
        for node in nodes where node.alive {
            var fits = Int.max
            for (key, need) in needs {
                let left: Double = (node.resources[key] ?? 0) - (held[node.nodeId]?[key] ?? 0)
                fits = min(fits, Int((left / need + 1e-9).rounded(.down)))
            }
            free += max(0, fits)
        }
        return free
    }
}
