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
    /// Counts a request (and its body's bytes) against its organisation's in-flight limits, or refuses it with a 429.
    func admit(orgId: String, bytes: Int) throws -> OrgAdmission {
        let (limit, byteLimit) = (configuration.maxInFlightPerOrg, configuration.maxInFlightBytesPerOrg)
        let refusal = orgInFlight.withLock { counts -> String? in
            let held = counts[orgId] ?? (0, 0)
            if held.requests >= limit { return "\(limit) requests in flight, the most allowed at once" }
            if held.bytes > 0, held.bytes + bytes > byteLimit { return "\(held.bytes >> 20) MiB of requests in flight, near its limit of \(byteLimit >> 20) MiB" }
            counts[orgId] = (held.requests + 1, held.bytes + bytes)
            return nil
        }
        if let refusal {
            throw OpenAIError(
                .tooManyRequests, "Your organisation already has \(refusal); retry when some finish.",
                type: "rate_limit_error", code: "org_concurrency_limit", retryAfter: 1)
        }
        return OrgAdmission { [self] in
            orgInFlight.withLock { c in
                let held = c[orgId] ?? (1, bytes)
                c[orgId] = held.requests > 1 ? (held.requests - 1, max(0, held.bytes - bytes)) : nil
            }
        }
    }
}
