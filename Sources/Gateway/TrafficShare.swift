import Foundation
import Histogram
import Routing

/// One gateway's share of a deployment's traffic, in a form that adds up across gateways: rates and
/// in-flight counts sum, latency travels as histogram buckets (value in µs, count) and merges exactly.
/// Each instance publishes its shares with its heartbeat; the leader's autoscaler decides on the sum.
public struct TrafficShare: Codable, Sendable, Equatable {
    public var requestsPerSecond: Double
    public var burstRequestsPerSecond: Double
    public var inFlight: Int
    public var lastRequestAt: Date?
    /// Latency over the window, as `[value µs, count]` buckets.
    public var window: [[UInt64]]
    /// Latency over the last ten to twenty seconds.
    public var recent: [[UInt64]]
    /// Requests in flight per replica (only replicas with some).
    public var replicas: [String: Int]

    public init(
        requestsPerSecond: Double, burstRequestsPerSecond: Double, inFlight: Int, lastRequestAt: Date?, window: [[UInt64]], recent: [[UInt64]],
        replicas: [String: Int]
    ) {
        self.requestsPerSecond = requestsPerSecond
        self.burstRequestsPerSecond = burstRequestsPerSecond
        self.inFlight = inFlight
        self.lastRequestAt = lastRequestAt
        self.window = window
        self.recent = recent
        self.replicas = replicas
    }

    /// The snapshot the autoscaler reads, from several gateways' shares of one deployment.
    public static func merged(_ shares: [TrafficShare]) -> TrafficSnapshot {
        var window = GatewayStats.Series.emptyHistogram()
        var recent = GatewayStats.Series.emptyHistogram()
        for share in shares {
            for bucket in share.window where bucket.count == 2 { _ = window.record(max(1, min(bucket[0], 3_600_000_000)), count: bucket[1]) }
            for bucket in share.recent where bucket.count == 2 { _ = recent.record(max(1, min(bucket[0], 3_600_000_000)), count: bucket[1]) }
        }
        let p95 = { (h: Histogram<UInt64>) in h.totalCount == 0 ? 0 : Double(h.valueAtPercentile(95)) / 1000 }
        var snapshot = TrafficSnapshot(
            requestsPerSecond: shares.reduce(0) { $0 + $1.requestsPerSecond },
            burstRequestsPerSecond: shares.reduce(0) { $0 + $1.burstRequestsPerSecond }, p95Ms: p95(window),
            inFlight: shares.reduce(0) { $0 + $1.inFlight }, lastRequestAt: shares.compactMap(\.lastRequestAt).max())
        snapshot.recentP95Ms = p95(recent)
        return snapshot
    }
}

extension GatewayStats {
    /// This gateway's shares of every deployment it saw traffic for within the window.
    public func shares() -> [String: TrafficShare] {
        let now = second
        let nowDate = Date()
        let horizon = TimeInterval(windowSeconds)
        return state.withLock { s in
            var perDeployment: [String: [String: Int]] = [:]
            for (replicaId, series) in s.replicas where series.inFlight > 0 {
                if let deploymentId = s.replicaDeployment[replicaId] { perDeployment[deploymentId, default: [:]][replicaId] = series.inFlight }
            }
            var out: [String: TrafficShare] = [:]
            for (id, series) in s.deployments {
                guard series.inFlight > 0 || (s.lastRequestAt[id].map { nowDate.timeIntervalSince($0) < horizon } ?? false) else { continue }
                out[id] = share(series, now: now, lastRequestAt: s.lastRequestAt[id], replicas: perDeployment[id] ?? [:])
            }
            return out
        }
    }

    /// This gateway's share of one deployment (nil when it has seen none of its traffic).
    public func share(deploymentId: String) -> TrafficShare? {
        let now = second
        return state.withLock { s in
            guard let series = s.deployments[deploymentId] else { return nil }
            var replicas: [String: Int] = [:]
            for (replicaId, owner) in s.replicaDeployment where owner == deploymentId {
                if let n = s.replicas[replicaId]?.inFlight, n > 0 { replicas[replicaId] = n }
            }
            return share(series, now: now, lastRequestAt: s.lastRequestAt[deploymentId], replicas: replicas)
        }
    }

    private func share(_ series: Series, now: Int, lastRequestAt: Date?, replicas: [String: Int]) -> TrafficShare {
        let (window, recent) = series.latency(now: now)
        return TrafficShare(
            requestsPerSecond: series.arrivalRate(now: now, seconds: rateSeconds),
            burstRequestsPerSecond: series.arrivalRate(now: now, seconds: burstSeconds), inFlight: series.inFlight,
            lastRequestAt: lastRequestAt, window: Self.buckets(window), recent: Self.buckets(recent), replicas: replicas)
    }

    static func buckets(_ h: Histogram<UInt64>) -> [[UInt64]] {
        h.recordedValues().map { [$0.value, UInt64($0.count)] }
    }
}
