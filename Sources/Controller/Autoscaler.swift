import DeploymentStore
import Foundation
import InferenceCore
import Logging
import Routing
import ServiceLifecycle
import Synchronization

/// What the autoscaler acts on: the controller, or a stand-in in unit tests.
public protocol ReplicaFleet: Sendable {
    func replicaCounts(deploymentId: String) async -> (ready: Int, starting: Int)
    /// What the engines of the deployment's ready replicas report about their load (nil: they do not say).
    func engineLoad(deploymentId: String) async -> EngineLoad?
    func pauseDeployment(id: String, reason: String) async throws
    /// Asks for a reconcile pass now (desired counts changed).
    func poke()
    /// Asks for a reconcile pass over one deployment.
    func poke(deploymentId: String)
}

extension ReplicaFleet {
    public func poke(deploymentId: String) { poke() }
    public func engineLoad(deploymentId: String) async -> EngineLoad? { nil }
}

extension Controller: ReplicaFleet {}

/// The autoscaler's time: a wall-clock date (idle periods are compared with stored request times) and a
/// monotonic instant (the stabilisation window). Tests inject one that moves both together.
public struct AutoscalerClock: Sendable {
    public var now: @Sendable () -> (date: Date, instant: ContinuousClock.Instant)

    public init(now: @escaping @Sendable () -> (date: Date, instant: ContinuousClock.Instant)) { self.now = now }

    public static let system = AutoscalerClock { (Date(), .now) }
}

public struct AutoscalerConfiguration: Sendable {
    /// How often every active deployment is decided on.
    public var interval: Duration = .seconds(5)
    /// A deployment with no request for this long is paused (scaled to zero).
    public var idleTimeout: Duration = .seconds(3600)
    /// After a scale-up's replicas serve, how long latency waits for them to take effect before asking for more.
    public var settle: Duration = .seconds(15)
    /// The band around the rate target within which the count does not change.
    public var tolerance = 0.1
    /// How long the rate per replica at which pressure asked for a replica holds scale-down back.
    public var pressureMemory: Duration = .seconds(600)

    public init() {}
}

/// Decides each active deployment's replica count from its traffic, and pauses idle ones.
public actor Autoscaler: Service {
    let store: any DeploymentStore
    let fleet: any ReplicaFleet
    let traffic: any TrafficSource
    let configuration: AutoscalerConfiguration
    let clock: AutoscalerClock
    let logger: Logger
    var stabilisers: [String: Stabiliser] = [:]
    /// When each deployment's short window last led a decision.
    var lastBurst: [String: ContinuousClock.Instant] = [:]
    /// When each deployment last had no replica starting: a scale-up settles from when its replicas serve.
    var capacityArrived: [String: ContinuousClock.Instant] = [:]
    /// The rate per replica at which pressure (latency, the engines' queue) last asked each deployment for a
    /// replica, and when: a floor for scale-down.
    var pressureAt: [String: (at: ContinuousClock.Instant, rpsPerReplica: Double)] = [:]
    /// Each deployment's engine queue at its last decision, to see it grow.
    var lastQueued: [String: Int] = [:]
    /// Each deployment's last change: when, and whether it was up.
    var lastChange: [String: (at: ContinuousClock.Instant, up: Bool)] = [:]
    /// Reversals within one stabilisation window (a scale-up soon undone, or the other way), per deployment:
    /// what `/metrics` reports as flaps.
    nonisolated let flaps = Mutex<[String: Int]>([:])

    public init(
        store: any DeploymentStore, fleet: any ReplicaFleet, traffic: any TrafficSource, configuration: AutoscalerConfiguration,
        clock: AutoscalerClock = .system, logger: Logger
    ) {
        self.store = store
        self.fleet = fleet
        self.traffic = traffic
        self.configuration = configuration
        self.clock = clock
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

    /// One decision for every running or provisioning deployment.
    public func decideAll() async throws {
        let (now, instant) = clock.now()
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
                lastChange[deployment.id] = nil
                lastBurst[deployment.id] = nil
                lastQueued[deployment.id] = nil
                capacityArrived[deployment.id] = nil
                pressureAt[deployment.id] = nil
                try await fleet.pauseDeployment(id: deployment.id, reason: "paused after \(Int(idle)) s without requests")
                continue
            }
            let (ready, starting) = await fleet.replicaCounts(deploymentId: deployment.id)
            var input = ScalingInput(
                requestsPerSecond: t.requestsPerSecond, burstRequestsPerSecond: t.burstRequestsPerSecond,
                inBurst: lastBurst[deployment.id].map { instant - $0 < .seconds(deployment.stabilisationWindow) } ?? false, p95Ms: t.p95Ms,
                inFlight: t.inFlight, ready: ready, starting: starting, minReplicas: deployment.minReplicas,
                maxReplicas: deployment.maxReplicas, targetRps: deployment.targetRps, targetLatencyP95Ms: deployment.targetLatencyP95Ms)
            input.recentP95Ms = t.recentP95Ms
            if starting > 0 {
                capacityArrived[deployment.id] = nil
            } else if capacityArrived[deployment.id] == nil {
                capacityArrived[deployment.id] = instant
            }
            input.sinceLastScaleUp = lastChange[deployment.id].flatMap { change in
                change.up ? (instant - max(change.at, capacityArrived[deployment.id] ?? change.at)).seconds : nil
            }
            input.settleSeconds = configuration.settle.seconds
            input.tolerance = configuration.tolerance
            let load = await fleet.engineLoad(deploymentId: deployment.id)
            if let load {
                input.queued = load.waiting
                input.running = load.running
                input.kvCacheUsage = load.kvCacheUsage
                input.queueGrowing = load.waiting > (lastQueued[deployment.id] ?? 0)
            }
            lastQueued[deployment.id] = load?.waiting
            if let learned = pressureAt[deployment.id], instant - learned.at < configuration.pressureMemory {
                input.pressureAtRpsPerReplica = learned.rpsPerReplica
            }
            let recommendation = recommendReplicas(input)
            // Learned once the last scale-up has settled: pressure while the backlog of the capacity before it
            // drains says nothing of what a replica holds (a deployment starting below its traffic would
            // otherwise keep the count it climbed to for ten minutes).
            if recommendation.byPressure, starting == 0, ready > 0, (input.sinceLastScaleUp ?? .infinity) >= input.settleSeconds {
                pressureAt[deployment.id] = (instant, max(t.requestsPerSecond, t.burstRequestsPerSecond) / Double(ready))
            }
            if recommendation.burst { lastBurst[deployment.id] = instant }
            let desired = stabilisers[deployment.id, default: Stabiliser()].decide(
                recommendation.replicas, current: deployment.desiredReplicas, now: instant,
                window: .seconds(deployment.stabilisationWindow))
            guard desired != deployment.desiredReplicas else { continue }
            // Re-read: a stop or pause may have happened while we decided.
            guard let updated = try await store.updateDeployment(id: deployment.id, { d in
                if d.status == .running || d.status == .provisioning { d.desiredReplicas = desired }
            }), updated.desiredReplicas == desired else { continue }
            let up = desired > deployment.desiredReplicas
            if let last = lastChange[deployment.id], last.up != up, instant - last.at < .seconds(deployment.stabilisationWindow) {
                flaps.withLock { $0[deployment.id, default: 0] += 1 }
            }
            lastChange[deployment.id] = (instant, up)
            // Every decision names the signals it used.
            let signals = String(
                format: "rate %.1f req/s (burst %.1f), p95 %.0f ms (recent %.0f ms), ", t.requestsPerSecond, t.burstRequestsPerSecond, t.p95Ms,
                t.recentP95Ms ?? t.p95Ms) + "\(ready) ready, \(starting) starting, \(t.inFlight) in flight"
                + (load.map { l in ", engines: \(l.waiting) queued, \(l.running) running" + (l.kvCacheUsage.map { String(format: ", KV cache %.0f%%", $0 * 100) } ?? "") } ?? "")
            let message = "scaled \(deployment.desiredReplicas) -> \(desired): \(recommendation.reason) [\(signals)]"
            try await store.addEvent(deploymentId: deployment.id, kind: "scaled", message: message)
            logger.info("scaled", metadata: ["deployment.id": "\(deployment.id)", "reason": "\(message)"])
            fleet.poke(deploymentId: deployment.id)
        }
    }
}

extension Autoscaler {
    /// Prometheus text for the autoscaler's own series: flaps per deployment.
    public nonisolated func metrics() -> String {
        let counts = flaps.withLock { $0 }
        var out = "# HELP lyceum_autoscaler_flaps_total Scaling reversals within one stabilisation window.\n# TYPE lyceum_autoscaler_flaps_total counter\n"
        for (id, n) in counts.sorted(by: { $0.key < $1.key }) { out += "lyceum_autoscaler_flaps_total{deployment=\"\(id)\"} \(n)\n" }
        return out
    }
}
