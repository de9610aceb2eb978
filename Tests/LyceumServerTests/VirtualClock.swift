@testable import Controller
import Foundation
import Synchronization

/// Time that moves only when the test says: `sleep` waits until `advance` passes its deadline. The work a
/// wake-up starts (in-memory store and provider calls) gets a moment of real time to finish before the
/// clock moves on, so an hour of fleet life runs in a fraction of a second.
final class VirtualClock: Sendable {
    private struct Sleeper {
        var deadline: Date
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var now: Date
        var next: UInt64 = 0
        var sleepers: [UInt64: Sleeper] = [:]
        /// Sleeps cancelled before they registered.
        var cancelled: Set<UInt64> = []
    }

    private let state: Mutex<State>

    init(start: Date = Date(timeIntervalSince1970: 1_800_000_000)) {
        state = Mutex(State(now: start))
    }

    var now: Date { state.withLock { $0.now } }

    var fleetClock: FleetClock {
        FleetClock(now: { [self] in now }, sleep: { [self] duration in try await sleep(duration) })
    }

    func sleep(_ duration: Duration) async throws {
        let token = state.withLock { s -> UInt64 in
            s.next += 1
            return s.next
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                let resume: Result<Void, any Error>? = state.withLock { s in
                    if s.cancelled.remove(token) != nil { return .failure(CancellationError()) }
                    let deadline = s.now + duration.seconds
                    if deadline <= s.now { return .success(()) }
                    s.sleepers[token] = Sleeper(deadline: deadline, continuation: c)
                    return nil
                }
                if let resume { c.resume(with: resume) }
            }
        } onCancel: {
            let sleeper = state.withLock { s -> Sleeper? in
                guard let sleeper = s.sleepers.removeValue(forKey: token) else {
                    s.cancelled.insert(token)
                    return nil
                }
                return sleeper
            }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Moves time forward by `duration` in steps of `step`, waking each sleeper whose deadline passes and
    /// giving the work it starts a moment to finish before the next step.
    func advance(by duration: Duration, step: Duration = .milliseconds(100), settle: Duration = .microseconds(100)) async {
        let end = now + duration.seconds
        while now < end {
            let due = state.withLock { s -> [CheckedContinuation<Void, any Error>] in
                s.now = min(end, s.now + step.seconds)
                let due = s.sleepers.filter { $0.value.deadline <= s.now }
                for key in due.keys { s.sleepers[key] = nil }
                return due.values.sorted { $0.deadline < $1.deadline }.map(\.continuation)
            }
            for c in due { c.resume() }
            // Real time for what woke up (actor hops, in-memory calls) to run before time moves again.
            for _ in 0..<4 { await Task.yield() }
            if !due.isEmpty { try? await Task.sleep(for: settle) }
        }
    }

    /// Moves time forward in `step`s until `condition` holds (checked between steps) or `limit` passes; the
    /// virtual time it took, or nil when it never held.
    func advance(until condition: () async throws -> Bool, within limit: Duration, step: Duration = .milliseconds(250)) async rethrows -> Duration? {
        let start = now
        while now.timeIntervalSince(start) < limit.seconds {
            if try await condition() { return .milliseconds(Int64(now.timeIntervalSince(start) * 1000)) }
            await advance(by: step, step: step)
        }
        return try await condition() ? limit : nil
    }

    /// Sleepers waiting now (for tests of the clock itself).
    var sleeping: Int { state.withLock { $0.sleepers.count } }
}
