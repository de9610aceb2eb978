import Foundation

/// Traffic as the gateway sees it; the autoscaler's input. One protocol so the controller does not depend
/// on the gateway.
public protocol TrafficSource: Sendable {
    func traffic(deploymentId: String) -> TrafficSnapshot
    /// Requests a replica is still serving: scale-down waits for this to reach zero.
    func inFlight(replicaId: String) -> Int
}

public struct TrafficSnapshot: Sendable {
    /// Arrivals per second over the rate window.
    public var requestsPerSecond: Double
    /// Arrivals per second over the last couple of seconds.
    public var burstRequestsPerSecond: Double
    public var p95Ms: Double
    /// p95 over the last ten to twenty seconds (nil where the source has none).
    public var recentP95Ms: Double?
    public var inFlight: Int
    public var lastRequestAt: Date?

    public init(requestsPerSecond: Double, burstRequestsPerSecond: Double = 0, p95Ms: Double, inFlight: Int, lastRequestAt: Date?) {
        self.requestsPerSecond = requestsPerSecond
        self.burstRequestsPerSecond = burstRequestsPerSecond
        self.p95Ms = p95Ms
        self.inFlight = inFlight
        self.lastRequestAt = lastRequestAt
    }
}
