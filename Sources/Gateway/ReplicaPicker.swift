import Controller
import Foundation
import Synchronization

/// Chooses a replica per request: least outstanding requests between two random candidates
/// ("power of two choices"), skipping replicas that recently failed a request.
public final class ReplicaPicker: Sendable {
    struct State {
        var outstanding: [String: Int] = [:]
        var suspectUntil: [String: ContinuousClock.Instant] = [:]
        var waiting: [String: Int] = [:]
    }

    private let state = Mutex(State())
    /// How long a replica that failed a request is avoided while the health checker looks at it.
    let suspectFor: Duration

    public init(suspectFor: Duration = .seconds(2)) { self.suspectFor = suspectFor }

    /// Picks a replica not in `excluded` and counts a request against it; `release` must follow.
    func acquire(from endpoints: [RouteTable.Endpoint], excluding excluded: Set<String>) -> RouteTable.Endpoint? {
        let now = ContinuousClock.now
        return state.withLock { s in
            let open = endpoints.filter { !excluded.contains($0.replicaId) }
            let trusted = open.filter { (s.suspectUntil[$0.replicaId] ?? now) <= now }
            let candidates = trusted.isEmpty ? open : trusted
            guard !candidates.isEmpty else { return nil }
            var chosen = candidates[Int.random(in: 0..<candidates.count)]
            if candidates.count > 1 {
                var other = candidates[Int.random(in: 0..<(candidates.count - 1))]
                if other.replicaId == chosen.replicaId { other = candidates[candidates.count - 1] }
                if s.outstanding[other.replicaId, default: 0] < s.outstanding[chosen.replicaId, default: 0] { chosen = other }
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
