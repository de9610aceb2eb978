import DeploymentStore
import Foundation
import InferenceCore
import Logging
import ModelHub
import Replicas
import Routing

extension Controller {
    // MARK: Model downloads

    /// Marks the replica `pulling_docker_image` (the word clients know for this step) and downloads the
    /// model's files in the background, with progress in the replica's `progress`. Replicas of one model
    /// share one download.
    func startPull(
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
    func pull(replicaId: String, deploymentId: String, repo: String, format: ModelFormat, token: String?) async {
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
                        // Progress is advisory: a failed write is logged, and the next tick writes it again.
                        do {
                            try await store.updateReplica(id: replicaId) { if $0.status == .pullingDockerImage { $0.progress = p.description } }
                        } catch {
                            self.logger.warning("could not record download progress", metadata: ["replica.id": "\(replicaId)", "error": "\(error)"])
                        }
                    }
                    try? await self.clock.sleep(.milliseconds(500))
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

    func isPulling(_ replicaId: String) -> Bool { pulls[replicaId] != nil && !shuttingDown }

    func pullFinished(replicaId: String, deploymentId: String, result: Result<PreparedModel, any Error>) async {
        pulls[replicaId] = nil
        guard let replica = await persist("replica", { try await store.replica(id: replicaId) }), replica.status == .pullingDockerImage else { return }
        switch result {
        case .success(let prepared):
            let first = preparedModels[deploymentId] == nil
            preparedModels[deploymentId] = prepared
            await persist("updateReplica", { try await store.updateReplica(id: replicaId) { $0.progress = nil; $0.status = .pending } })
            if first {
                await persist("addEvent", { try await store.addEvent(
                    deploymentId: deploymentId, kind: "model_ready",
                    message: "model files ready in \(prepared.snapshot)") })
            }
        case .failure(let error):
            let reason = "model download failed: \(error)"
            await persist("updateReplica", { try await store.updateReplica(id: replicaId) {
                $0.status = .failed
                $0.progress = nil
                $0.failReason = reason
                $0.stoppedAt = self.clock.now()
            } })
            await persist("addEvent", { try await store.addEvent(deploymentId: deploymentId, kind: "replica_failed", message: "replica \(replicaId): \(reason)") })
            await persist("refreshStatus", { try await refreshStatus(deploymentId: deploymentId) })
        }
        poke(deploymentId: deploymentId)
    }
}
