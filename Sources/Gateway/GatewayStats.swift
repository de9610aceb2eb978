import Foundation
import Histogram
import Synchronization
import Routing

/// A deployment's (or replica's) traffic over a sliding window: the autoscaler's input and `/metrics`.
public struct WindowStats: Sendable, Equatable {
    /// Arrivals per second over the rate window (demand, counted when requests arrive, not when answered).
    public var requestsPerSecond: Double
    /// Arrivals per second over the last `burstSeconds`: the autoscaler's early warning of a burst.
    public var burstRequestsPerSecond: Double
    public var p50Ms: Double
    public var p95Ms: Double
    /// p95 over the current and the previous ten-second slot: what latency looks like now.
    public var recentP95Ms: Double = 0
    public var p99Ms: Double
    public var inFlight: Int
    public var errors: Int
    public var requests: Int
}

/// Per-deployment and per-replica request statistics.
///
/// Each series keeps one-second arrival, completion and error counts and a latency histogram per ten-second
/// slot, over the last `window`; percentiles merge the slots' HdrHistograms (not a sorted list of samples).
/// Rates count arrivals: when replicas fall behind, completions are capped by capacity and would hide
/// exactly the demand the autoscaler must see.
public final class GatewayStats: Sendable {
    struct Series {
        static let slotSeconds = 10
        var counts: [Int]
        var errors: [Int]
        var stamps: [Int]
        var arrivals: [Int]
        var arrivalStamps: [Int]
        var histograms: [Histogram<UInt64>]
        var histogramStamps: [Int]
        var inFlight = 0
        var totalRequests = 0
        var totalErrors = 0

        init(windowSeconds: Int) {
            counts = Array(repeating: 0, count: windowSeconds)
            errors = counts
            arrivals = counts
            stamps = Array(repeating: -1, count: windowSeconds)
            arrivalStamps = stamps
            let slots = max(1, windowSeconds / Self.slotSeconds)
            histograms = (0..<slots).map { _ in Histogram<UInt64>(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .two) }
            histogramStamps = Array(repeating: -1, count: slots)
        }

        mutating func arrive(second: Int) {
            inFlight += 1
            let i = second % arrivals.count
            if arrivalStamps[i] != second {
                arrivalStamps[i] = second
                arrivals[i] = 0
            }
            arrivals[i] += 1
        }

        /// Arrivals per second over the `seconds` complete seconds before `second`.
        func arrivalRate(now second: Int, seconds: Int) -> Double {
            var n = 0
            for i in 0..<arrivals.count where arrivalStamps[i] >= second - seconds && arrivalStamps[i] < second { n += arrivals[i] }
            return Double(n) / Double(seconds)
        }

        mutating func record(second: Int, latencyMicros: UInt64, failed: Bool) {
            let i = second % counts.count
            if stamps[i] != second {
                stamps[i] = second
                counts[i] = 0
                errors[i] = 0
            }
            counts[i] += 1
            totalRequests += 1
            if failed {
                errors[i] += 1
                totalErrors += 1
            }
            let slot = second / Self.slotSeconds
            let h = slot % histograms.count
            if histogramStamps[h] != slot {
                histogramStamps[h] = slot
                histograms[h].reset()
            }
            _ = histograms[h].record(max(1, latencyMicros))
        }

        /// Latency over the whole window, and over the current and the previous slot.
        func latency(now second: Int) -> (window: Histogram<UInt64>, recent: Histogram<UInt64>) {
            var merged = Series.emptyHistogram()
            let slot = second / Self.slotSeconds
            for (h, stamp) in histogramStamps.enumerated() where stamp > slot - histograms.count && stamp <= slot {
                merged.add(histograms[h])
            }
            var recent = Series.emptyHistogram()
            for (h, stamp) in histogramStamps.enumerated() where stamp >= slot - 1 && stamp <= slot {
                recent.add(histograms[h])
            }
            return (merged, recent)
        }

        static func emptyHistogram() -> Histogram<UInt64> {
            Histogram<UInt64>(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .two)
        }

        /// Arrival rates over the last `rateSeconds` and `burstSeconds` complete seconds (recent enough to
        /// follow a ramp); completions, errors and percentiles over the whole window.
        func window(now second: Int, rateSeconds: Int, burstSeconds: Int) -> WindowStats {
            let n = counts.count
            var requests = 0
            var errorCount = 0
            for i in 0..<n where stamps[i] > second - n && stamps[i] <= second {
                requests += counts[i]
                errorCount += errors[i]
            }
            let (merged, recent) = latency(now: second)
            let ms = { (p: Double) in merged.totalCount == 0 ? 0 : Double(merged.valueAtPercentile(p)) / 1000 }
            var stats = WindowStats(
                requestsPerSecond: arrivalRate(now: second, seconds: rateSeconds),
                burstRequestsPerSecond: arrivalRate(now: second, seconds: burstSeconds), p50Ms: ms(50), p95Ms: ms(95), p99Ms: ms(99),
                inFlight: inFlight, errors: errorCount, requests: requests)
            stats.recentP95Ms = recent.totalCount == 0 ? 0 : Double(recent.valueAtPercentile(95)) / 1000
            return stats
        }
    }

    struct State {
        var deployments: [String: Series] = [:]
        var replicas: [String: Series] = [:]
        var replicaDeployment: [String: String] = [:]
        var lastRequestAt: [String: Date] = [:]
    }

    let windowSeconds: Int
    /// Seconds the request rate is averaged over.
    let rateSeconds: Int
    /// Seconds the burst rate is averaged over.
    let burstSeconds = 2
    let state = Mutex(State())
    private let epoch: ContinuousClock.Instant
    private let epochDate = Date()
    private let clock: @Sendable () -> ContinuousClock.Instant

    /// - Parameters:
    ///   - windowSeconds: how far back completions, errors and latency percentiles reach.
    ///   - rateSeconds: how far back the request rate is averaged.
    ///   - clock: the time source; tests inject one.
    public init(windowSeconds: Int = 60, rateSeconds: Int = 10, clock: @escaping @Sendable () -> ContinuousClock.Instant = { .now }) {
        self.windowSeconds = max(10, windowSeconds, rateSeconds)
        self.rateSeconds = max(1, rateSeconds)
        self.clock = clock
        self.epoch = clock()
    }

    var second: Int { Int((clock() - epoch).components.seconds) }
    private var date: Date { epochDate + (clock() - epoch).seconds }

    /// A request (replicaId nil) or one attempt of it on a replica begins.
    func begin(deploymentId: String, replicaId: String? = nil) {
        let w = windowSeconds
        let now = second
        let at = date
        state.withLock { s in
            if let replicaId {
                s.replicas[replicaId, default: Series(windowSeconds: w)].arrive(second: now)
                s.replicaDeployment[replicaId] = deploymentId
            } else {
                s.deployments[deploymentId, default: Series(windowSeconds: w)].arrive(second: now)
                s.lastRequestAt[deploymentId] = at
            }
        }
    }

    /// A request (replicaId nil) or one attempt of it on a replica ends.
    func end(deploymentId: String, replicaId: String? = nil, latency: Duration, failed: Bool) {
        let micros = UInt64(max(0, latency.components.seconds * 1_000_000 + latency.components.attoseconds / 1_000_000_000_000))
        let now = second
        let w = windowSeconds
        state.withLock { s in
            if let replicaId {
                s.replicas[replicaId, default: Series(windowSeconds: w)].inFlight -= 1
                s.replicas[replicaId]!.record(second: now, latencyMicros: micros, failed: failed)
            } else {
                s.deployments[deploymentId, default: Series(windowSeconds: w)].inFlight -= 1
                s.deployments[deploymentId]!.record(second: now, latencyMicros: micros, failed: failed)
            }
        }
    }

    /// The deployment's window statistics (zeros if it has had no traffic).
    public func window(deploymentId: String) -> WindowStats {
        let now = second
        return state.withLock { s in
            s.deployments[deploymentId]?.window(now: now, rateSeconds: rateSeconds, burstSeconds: burstSeconds)
        } ?? WindowStats(requestsPerSecond: 0, burstRequestsPerSecond: 0, p50Ms: 0, p95Ms: 0, p99Ms: 0, inFlight: 0, errors: 0, requests: 0)
    }

    /// Prometheus text format for the gateway's series.
    public func renderPrometheus() -> String {
        let now = second
        let (deployments, replicas, owners) = state.withLock { s in
            (s.deployments.mapValues { ($0.window(now: now, rateSeconds: rateSeconds, burstSeconds: burstSeconds), $0.totalRequests, $0.totalErrors) },
             s.replicas.mapValues { ($0.window(now: now, rateSeconds: rateSeconds, burstSeconds: burstSeconds), $0.totalRequests, $0.totalErrors) }, s.replicaDeployment)
        }
        var out = ""
        out += "# HELP lyceum_gateway_requests_total Requests answered by the gateway.\n# TYPE lyceum_gateway_requests_total counter\n"
        for (id, v) in deployments.sorted(by: { $0.key < $1.key }) { out += "lyceum_gateway_requests_total{deployment=\"\(id)\"} \(v.1)\n" }
        out += "# HELP lyceum_gateway_errors_total Requests that ended in an error.\n# TYPE lyceum_gateway_errors_total counter\n"
        for (id, v) in deployments.sorted(by: { $0.key < $1.key }) { out += "lyceum_gateway_errors_total{deployment=\"\(id)\"} \(v.2)\n" }
        out += "# HELP lyceum_gateway_in_flight Requests in flight.\n# TYPE lyceum_gateway_in_flight gauge\n"
        for (id, v) in deployments.sorted(by: { $0.key < $1.key }) { out += "lyceum_gateway_in_flight{deployment=\"\(id)\"} \(v.0.inFlight)\n" }
        out += "# HELP lyceum_gateway_window_requests_per_second Request rate over the sliding window.\n# TYPE lyceum_gateway_window_requests_per_second gauge\n"
        for (id, v) in deployments.sorted(by: { $0.key < $1.key }) { out += "lyceum_gateway_window_requests_per_second{deployment=\"\(id)\"} \(v.0.requestsPerSecond)\n" }
        out += "# HELP lyceum_gateway_window_latency_ms Latency percentiles over the sliding window.\n# TYPE lyceum_gateway_window_latency_ms gauge\n"
        for (id, v) in deployments.sorted(by: { $0.key < $1.key }) {
            for (q, x) in [("0.5", v.0.p50Ms), ("0.95", v.0.p95Ms), ("0.99", v.0.p99Ms)] {
                out += "lyceum_gateway_window_latency_ms{deployment=\"\(id)\",quantile=\"\(q)\"} \(x)\n"
            }
        }
        out += "# HELP lyceum_replica_in_flight Requests in flight per replica.\n# TYPE lyceum_replica_in_flight gauge\n"
        for (id, v) in replicas.sorted(by: { $0.key < $1.key }) {
            out += "lyceum_replica_in_flight{deployment=\"\(owners[id] ?? "")\",replica=\"\(id)\"} \(v.0.inFlight)\n"
        }
        out += "# HELP lyceum_replica_requests_total Requests sent per replica.\n# TYPE lyceum_replica_requests_total counter\n"
        for (id, v) in replicas.sorted(by: { $0.key < $1.key }) {
            out += "lyceum_replica_requests_total{deployment=\"\(owners[id] ?? "")\",replica=\"\(id)\"} \(v.1)\n"
        }
        out += "# HELP lyceum_replica_errors_total Attempts a replica failed (refused, reset, 5xx, or an answer that is not the protocol's), retried or not.\n# TYPE lyceum_replica_errors_total counter\n"
        for (id, v) in replicas.sorted(by: { $0.key < $1.key }) {
            out += "lyceum_replica_errors_total{deployment=\"\(owners[id] ?? "")\",replica=\"\(id)\"} \(v.2)\n"
        }
        return out
    }
}

extension GatewayStats: TrafficSource {
    public func traffic(deploymentId: String) -> TrafficSnapshot {
        let w = window(deploymentId: deploymentId)
        let last = state.withLock { $0.lastRequestAt[deploymentId] }
        var snapshot = TrafficSnapshot(
            requestsPerSecond: w.requestsPerSecond, burstRequestsPerSecond: w.burstRequestsPerSecond, p95Ms: w.p95Ms, inFlight: w.inFlight, lastRequestAt: last)
        snapshot.recentP95Ms = w.recentP95Ms
        return snapshot
    }

    public func inFlight(replicaId: String) -> Int {
        state.withLock { $0.replicas[replicaId]?.inFlight ?? 0 }
    }
}
