import DeploymentStore
import Foundation
import InferenceCore
import Logging
import ServiceLifecycle

/// Traffic as the gateway sees it; the autoscaler's input. One protocol so the controller does not depend
/// on the gateway.
public protocol TrafficSource: Sendable {
    func traffic(deploymentId: String) -> TrafficSnapshot
    /// Requests a replica is still serving: scale-down waits for this to reach zero.
    func inFlight(replicaId: String) -> Int
}

public struct TrafficSnapshot: Sendable {
    public var requestsPerSecond: Double
    public var p95Ms: Double
    public var inFlight: Int
    public var lastRequestAt: Date?

    public init(requestsPerSecond: Double, p95Ms: Double, inFlight: Int, lastRequestAt: Date?) {
        self.requestsPerSecond = requestsPerSecond
        self.p95Ms = p95Ms
        self.inFlight = inFlight
        self.lastRequestAt = lastRequestAt
    }
}

public struct AutoscalerConfiguration: Sendable {
    /// How often every active deployment is decided on.
    public var interval: Duration = .seconds(5)
    /// A deployment with no request for this long is paused (scaled to zero).
    public var idleTimeout: Duration = .seconds(3600)

    public init() {}
}

/// Decides each active deployment's replica count from its traffic, and pauses idle ones.
public actor Autoscaler: Service {
    let store: DeploymentStore
    let controller: Controller
    let traffic: any TrafficSource
    let configuration: AutoscalerConfiguration
    let logger: Logger
    var stabilisers: [String: Stabiliser] = [:]

    public init(store: DeploymentStore, controller: Controller, traffic: any TrafficSource, configuration: AutoscalerConfiguration, logger: Logger) {
        self.store = store
        self.controller = controller
        self.traffic = traffic
        self.configuration = configuration
        self.logger = logger
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                try await decideAll()
            } catch {
                logger.error("autoscaler pass failed", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: configuration.interval)
        }
    }

    func decideAll() async throws {
        let now = Date()
        for deployment in try await store.unstoppedDeployments() where deployment.status == .running || deployment.status == .provisioning {
            let t = traffic.traffic(deploymentId: deployment.id)
            var lastActivity = [deployment.lastRequestAt, t.lastRequestAt, deployment.createdAt].compactMap { $0 }.max()!
            if let seen = t.lastRequestAt, seen.timeIntervalSince(deployment.lastRequestAt ?? .distantPast) > 30 {
                try await store.updateDeployment(id: deployment.id) { $0.lastRequestAt = seen }
                lastActivity = seen
            }
            let idle = now.timeIntervalSince(lastActivity)
            if t.inFlight == 0, idle >= configuration.idleTimeout.seconds {
                stabilisers[deployment.id] = nil
                try await controller.pauseDeployment(id: deployment.id, reason: "paused after \(Int(idle)) s without requests")
                continue
            }
            let (ready, starting) = await controller.replicaCounts(deploymentId: deployment.id)
            let recommendation = recommendReplicas(
                ScalingInput(
                    requestsPerSecond: t.requestsPerSecond, p95Ms: t.p95Ms, inFlight: t.inFlight, ready: ready, starting: starting,
                    minReplicas: deployment.minReplicas, maxReplicas: deployment.maxReplicas, targetRps: deployment.targetRps,
                    targetLatencyP95Ms: deployment.targetLatencyP95Ms))
            let desired = stabilisers[deployment.id, default: Stabiliser()].decide(
                recommendation.replicas, current: deployment.desiredReplicas, now: .now,
                window: .seconds(deployment.stabilisationWindow))
            guard desired != deployment.desiredReplicas else { continue }
            // Re-read: a stop or pause may have happened while we decided.
            guard let updated = try await store.updateDeployment(id: deployment.id, { d in
                if d.status == .running || d.status == .provisioning { d.desiredReplicas = desired }
            }), updated.desiredReplicas == desired else { continue }
            let message = "scaled \(deployment.desiredReplicas) -> \(desired): \(recommendation.reason)"
            try await store.addEvent(deploymentId: deployment.id, kind: "scaled", message: message)
            logger.info("scaled", metadata: ["deployment.id": "\(deployment.id)", "reason": "\(message)"])
            controller.poke()
        }
    }
}
