import Foundation

/// What the autoscaler knows about a deployment at one decision.
public struct ScalingInput: Sendable, Equatable {
    /// Requests arriving per second over the gateway's rate window.
    public var requestsPerSecond: Double
    /// Requests arriving per second over the last couple of seconds.
    public var burstRequestsPerSecond: Double
    /// A burst was detected recently (within the stabilisation window): the short window keeps leading
    /// until the burst is over, not only on a doubling.
    public var inBurst: Bool
    /// p95 latency over the same window, ms (0 with no traffic).
    public var p95Ms: Double
    public var inFlight: Int
    /// Replicas serving now.
    public var ready: Int
    /// Replicas launched but not yet healthy: they count as capacity, so a cold start does not cause overshoot.
    public var starting: Int
    public var minReplicas: Int
    public var maxReplicas: Int
    public var targetRps: Double
    public var targetLatencyP95Ms: Double
    /// p95 over the last seconds (10 to 20 s): the latency scale-up acts on. The long window's p95 keeps
    /// reporting a cold start's latencies for a minute after capacity arrived; nil falls back to it.
    public var recentP95Ms: Double?
    /// Seconds since the replicas of this deployment's last scale-up were all serving (nil: it never scaled up).
    public var sinceLastScaleUp: Double?
    /// How long a scale-up's replicas serve before latency may ask for more (the engines' queue need not wait).
    public var settleSeconds: Double = 0
    /// No change while demand is within this fraction of the current capacity's target (the Kubernetes
    /// HPA's 10%), so noise around a replica boundary does not flap.
    public var tolerance: Double = 0.1
    /// Requests the engines of the ready replicas hold queued (not yet running), from their `/metrics`; nil
    /// when the engines do not say.
    public var queued: Int?
    /// Sequences the engines of the ready replicas run now, where they say: a queue shorter than this drains
    /// within one service time, so only a longer one leads a scale-up.
    public var running: Int?
    /// The engines' queue grew since the last decision: demand the arrival rate has not shown yet.
    public var queueGrowing = false
    /// The fullest KV cache among the ready replicas' engines, 0 to 1, where they report it.
    public var kvCacheUsage: Double?
    /// The rate per replica at which latency or the engines' queue last asked for a replica (within the
    /// last ten minutes): what a replica of this deployment really holds. A scale-down never goes below
    /// what it supports, so the rate rule cannot release a replica that pressure just asked for (the flap
    /// at a boundary).
    public var pressureAtRpsPerReplica: Double?

    public init(
        requestsPerSecond: Double, burstRequestsPerSecond: Double = 0, inBurst: Bool = false, p95Ms: Double, inFlight: Int, ready: Int, starting: Int, minReplicas: Int,
        maxReplicas: Int, targetRps: Double, targetLatencyP95Ms: Double
    ) {
        self.requestsPerSecond = requestsPerSecond
        self.burstRequestsPerSecond = burstRequestsPerSecond
        self.inBurst = inBurst
        self.p95Ms = p95Ms
        self.inFlight = inFlight
        self.ready = ready
        self.starting = starting
        self.minReplicas = minReplicas
        self.maxReplicas = maxReplicas
        self.targetRps = targetRps
        self.targetLatencyP95Ms = targetLatencyP95Ms
    }
}

/// A recommended replica count and why, in plain words for the event log.
public struct ScalingRecommendation: Sendable, Equatable {
    public var replicas: Int
    public var reason: String
    /// The short window led this decision.
    public var burst = false
    /// Pressure the rate does not show (latency over target, a growing engine queue) led this decision.
    public var byPressure = false
}

/// The scaling policy: `ceil(rps / target_rps)`, held within a tolerance band; a burst (the last seconds'
/// rate asking for at least twice the current capacity, or for more than it while `inBurst`) is followed at
/// once instead of waiting for the rate window to catch up; one more than current capacity when p95
/// latency is over target or the engines' queue grows (once replicas already starting are up and the last
/// scale-up has settled); never fewer while engines queue; at most doubling capacity per decision; clamped
/// to `[min, max]`.
///
/// The burst rule only acts on a doubling, so the noise of steady traffic over a short window never
/// triggers it (the same idea as Knative's panic window).
public func recommendReplicas(_ input: ScalingInput) -> ScalingRecommendation {
    // Every input is bounded before arithmetic: validation bounds what tenants send, and this function
    // saturates anyway, since a trap here is an outage for every tenant.
    let capacity = saturatingAdd(max(0, input.ready), max(0, input.starting))
    let replicasFor = { (rps: Double) in input.targetRps > 0 ? saturatingInt((rps / input.targetRps).rounded(.up)) : 0 }
    var want = replicasFor(input.requestsPerSecond)
    var reason = String(format: "%.1f req/s against %g req/s per replica", input.requestsPerSecond, input.targetRps)
    if capacity > 0, input.targetRps > 0 {
        let ratio = input.requestsPerSecond / (Double(capacity) * input.targetRps)
        if ratio.isFinite, abs(ratio - 1) <= input.tolerance, want != capacity {
            want = capacity
            reason = String(format: "%.1f req/s is within %.0f%% of the target", input.requestsPerSecond, input.tolerance * 100)
                + " of \(capacity) replica\(capacity == 1 ? "" : "s"); holding"
        }
    }
    let byBurst = replicasFor(input.burstRequestsPerSecond)
    var burst = false
    if byBurst > want, byBurst >= saturatingAdd(max(1, capacity), max(1, capacity)) || (input.inBurst && byBurst > capacity) {
        want = byBurst
        burst = true
        reason = String(format: "burst of %.1f req/s against %g req/s per replica", input.burstRequestsPerSecond, input.targetRps)
    }
    // Pressure the rate does not show: latency over target, or engines whose queue grows while a full batch
    // waits (at least one request per ready replica, and as many as the engines run: a shorter queue drains
    // within one service time). A leading signal: queued requests are arrivals not yet served.
    let latency = input.recentP95Ms ?? input.p95Ms
    let queued = max(0, input.queued ?? 0)
    var pressure: String?
    var byQueue = false
    var ledByPressure = false
    if input.queueGrowing, input.ready > 0, queued >= max(input.ready, input.running ?? 0) {
        pressure = "engines queue \(queued) request\(queued == 1 ? "" : "s") and growing"
        byQueue = true
    } else if input.requestsPerSecond > 0 || input.inFlight > 0, latency > input.targetLatencyP95Ms {
        let batch = max(input.ready, input.running ?? 0)
        if let engineQueue = input.queued, engineQueue < batch, (input.kvCacheUsage ?? 0) < 0.9 {
            // The engines hold less than a batch waiting and have room: the slow answers are old news (they
            // waited before, in a cold start or the backlog it left), and another replica would not make the
            // next ones faster.
            reason += String(format: "; p95 %.0f ms is over the %g ms target, but the engines queue ", latency, input.targetLatencyP95Ms)
                + (engineQueue == 0 ? "nothing" : "only \(engineQueue) behind the \(batch) they run")
        } else {
            pressure = String(format: "p95 latency %.0f ms over the %g ms target", latency, input.targetLatencyP95Ms)
        }
    }
    if let pressure, saturatingAdd(capacity, 1) > want {
        // No wind-up: replicas already asked for are capacity on its way; wait for them, and (for latency,
        // whose window still holds the slow answers of before) for the last scale-up to settle.
        if input.starting > 0 {
            reason += "; \(pressure), waiting for \(input.starting) starting replica\(input.starting == 1 ? "" : "s")"
        } else if !byQueue, let since = input.sinceLastScaleUp, since < input.settleSeconds {
            reason += "; \(pressure), letting the last scale-up settle" + String(format: " (%.0f of %.0f s)", since, input.settleSeconds)
        } else {
            want = saturatingAdd(capacity, 1)
            reason = pressure
            ledByPressure = true
        }
    }
    if want < capacity, let perReplica = input.pressureAtRpsPerReplica, perReplica > 0 {
        let held = min(capacity, saturatingInt((input.requestsPerSecond / (perReplica * (1 - input.tolerance))).rounded(.up)))
        if held > want {
            want = held
            reason += String(format: "; holding %d: pressure appeared at %.1f req/s per replica", held, perReplica)
        }
    }
    // Requests still queue in the engines: no replica is released while they wait.
    if want < capacity, queued > 0 {
        want = capacity
        reason += "; holding: engines still queue \(queued) request\(queued == 1 ? "" : "s")"
    }
    let ceiling = saturatingAdd(max(1, capacity), max(1, capacity))
    if want > ceiling {
        want = ceiling
        reason += " (at most doubling per decision)"
    }
    let clamped = max(0, min(max(want, input.minReplicas), input.maxReplicas))
    if clamped != want {
        reason += clamped > want ? " (raised to min_replicas \(input.minReplicas))" : " (capped at max_replicas \(input.maxReplicas))"
    }
    return ScalingRecommendation(replicas: clamped, reason: reason, burst: burst, byPressure: ledByPressure)
}

/// Keeps scaling from flapping: up at once; down only as low as the highest recommendation seen during
/// the last `window`, so a dip in noisy traffic does not remove a replica that the next second needs.
public struct Stabiliser: Sendable {
    private var history: [(at: ContinuousClock.Instant, replicas: Int)] = []

    public init() {}

    /// The count to run now, given this decision's recommendation.
    public mutating func decide(_ recommended: Int, current: Int, now: ContinuousClock.Instant, window: Duration) -> Int {
        history.append((now, recommended))
        history.removeAll { now - $0.at > window }
        if recommended >= current { return recommended }
        return min(current, history.map(\.replicas).max() ?? recommended)
    }
}

/// `a + b`, or `Int.max` / `Int.min` where it would overflow.
public func saturatingAdd(_ a: Int, _ b: Int) -> Int {
    let (sum, overflow) = a.addingReportingOverflow(b)
    return overflow ? (b > 0 ? Int.max : Int.min) : sum
}

/// A double as an Int: NaN is 0, and values beyond Int's range saturate instead of trapping.
public func saturatingInt(_ value: Double) -> Int {
    guard !value.isNaN else { return 0 }
    if value >= 9.2e18 { return Int.max }
    if value <= -9.2e18 { return Int.min }
    return Int(value)
}
