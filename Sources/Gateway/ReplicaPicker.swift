import Foundation
import Synchronization
import Routing

/// Chooses a replica per request: the one with the fewest outstanding requests (ties broken at random),
/// skipping replicas that recently failed a request. Up to `fullScanLimit` replicas every one is looked
/// at; beyond that, two random candidates ("power of two choices"), which stays O(1) and avoids herding.
public final class ReplicaPicker: Sendable {
    struct State {
        var outstanding: [String: Int] = [:]
        var suspectUntil: [String: ContinuousClock.Instant] = [:]
        var waiting: [String: Int] = [:]
    }

    private let state = Mutex(State())
    /// How long a replica that failed a request is avoided while the health checker looks at it.
    let suspectFor: Duration
    let fullScanLimit: Int

    public init(suspectFor: Duration = .seconds(2), fullScanLimit: Int = 16) {
        self.suspectFor = suspectFor
        self.fullScanLimit = fullScanLimit
    }

    /// Picks a replica not in `excluded` and counts a request against it; `release` must follow.
    func acquire(from endpoints: [RouteTable.Endpoint], excluding excluded: Set<String>) -> RouteTable.Endpoint? {
        let now = ContinuousClock.now
        return state.withLock { s in
            let open = endpoints.filter { !excluded.contains($0.replicaId) }
            let trusted = open.filter { (s.suspectUntil[$0.replicaId] ?? now) <= now }
            let candidates = trusted.isEmpty ? open : trusted
            guard !candidates.isEmpty else { return nil }
            func load(_ e: RouteTable.Endpoint) -> Int { s.outstanding[e.replicaId, default: 0] }
            var chosen: RouteTable.Endpoint
            if candidates.count <= fullScanLimit {
                // Start at a random place so that ties do not always go to the same replica.
                let start = Int.random(in: 0..<candidates.count)
                chosen = candidates[start]
                for i in 1..<candidates.count {
                    let next = candidates[(start + i) % candidates.count]
                    if load(next) < load(chosen) { chosen = next }
                }
            } else {
                chosen = candidates[Int.random(in: 0..<candidates.count)]
                var other = candidates[Int.random(in: 0..<(candidates.count - 1))]
                if other.replicaId == chosen.replicaId { other = candidates[candidates.count - 1] }
                if load(other) < load(chosen) { chosen = other }
            }
            s.outstanding[chosen.replicaId, default: 0] += 1
            return chosen
        }
    }

    func release(_ replicaId: String) {
        state.withLock { s in
            let n = s.outstanding[replicaId, default: 1] - 1
            s.outstanding[replicaId] = n > 0 ? n : nil
        }
    }

    func markSuspect(_ replicaId: String) {
        let until = ContinuousClock.now + suspectFor
        state.withLock { $0.suspectUntil[replicaId] = until }
    }

    /// Joins a deployment's wait queue (no ready replica yet); false when it is full.
    func enterQueue(_ deploymentId: String, limit: Int) -> Bool {
        state.withLock { s in
            guard s.waiting[deploymentId, default: 0] < limit else { return false }
            s.waiting[deploymentId, default: 0] += 1
            return true
        }
    }

    func leaveQueue(_ deploymentId: String) {
        state.withLock { s in
            let n = s.waiting[deploymentId, default: 1] - 1
            s.waiting[deploymentId] = n > 0 ? n : nil
        }
    }

    /// Requests in flight per replica, for metrics and the load-spread test.
    public func outstanding() -> [String: Int] { state.withLock { $0.outstanding } }
}
