import Synchronization

/// One request's place among its organisation's requests in flight. Left exactly once: by the handler,
/// or, for a stream, by the stream's end after the handler hands it over.
final class OrgAdmission: Sendable {
    private let state = Mutex((left: false, handedOver: false))
    private let onLeave: @Sendable () -> Void

    init(onLeave: @escaping @Sendable () -> Void) { self.onLeave = onLeave }

    /// Gives the place to whoever outlives the handler (a streaming body); the handler's `leave` then does nothing.
    func handOver() -> OrgAdmission {
        state.withLock { $0.handedOver = true }
        return OrgAdmission(onLeave: onLeave)
    }

    func leave() {
        let run = state.withLock { s -> Bool in
            guard !s.left, !s.handedOver else { return false }
            s.left = true
            return true
        }
        if run { onLeave() }
    }
}

extension Gateway {
    /// Counts a request against its organisation's in-flight limit, or refuses it with a 429.
    func admit(orgId: String) throws -> OrgAdmission {
        let limit = configuration.maxInFlightPerOrg
        let admitted = orgInFlight.withLock { counts -> Bool in
            guard counts[orgId, default: 0] < limit else { return false }
            counts[orgId, default: 0] += 1
            return true
        }
        guard admitted else {
            throw OpenAIError(
                .tooManyRequests, "Your organisation already has \(limit) requests in flight, the most allowed at once; retry when some finish.",
                type: "rate_limit_error", code: "org_concurrency_limit", retryAfter: 1)
        }
        return OrgAdmission { [self] in
            orgInFlight.withLock { c in
                let n = c[orgId, default: 1] - 1
                c[orgId] = n > 0 ? n : nil
            }
        }
    }
}
