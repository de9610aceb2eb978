import ServiceLifecycle
import Synchronization

/// Runs requests that outlive their caller's wait (`X-Timeout-S`) to completion.
///
/// A `Service`, not loose tasks: on graceful shutdown it stops taking work and lets what runs finish.
public final class BackgroundRequests: Service, Sendable {
    typealias Job = @Sendable () async -> Void
    private let jobs: AsyncStream<Job>
    private let continuation: AsyncStream<Job>.Continuation

    public init() {
        (jobs, continuation) = AsyncStream.makeStream(of: Job.self)
    }

    func submit(_ job: @escaping Job) { continuation.yield(job) }

    public func run() async throws {
        let jobs = self.jobs
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                for await job in jobs { group.addTask { await job() } }
            }
        } onGracefulShutdown: {
            self.continuation.finish()
        }
    }
}

/// Hands one request's outcome from the background job to the caller, unless the caller stopped waiting;
/// exactly one of them ends up owning the result.
final class ResultBox<Value: Sendable>: Sendable {
    private struct State {
        var value: Value?
        var waiter: CheckedContinuation<Value?, Never>?
        var abandoned = false
    }

    private let state = Mutex(State())

    /// Delivers the outcome; false when the caller gave up waiting, so the job must store it.
    func deliver(_ value: Value) -> Bool {
        let (waiter, taken) = state.withLock { s -> (CheckedContinuation<Value?, Never>?, Bool) in
            guard !s.abandoned else { return (nil, false) }
            s.value = value
            defer { s.waiter = nil }
            return (s.waiter, true)
        }
        waiter?.resume(returning: value)
        return taken
    }

    /// Waits up to `timeout`; nil means the caller has given up and the job now owns the result.
    func wait(timeout: Duration) async -> Value? {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withTaskCancellationHandler {
                    _ = await withCheckedContinuation { (c: CheckedContinuation<Value?, Never>) in
                        let ready = self.state.withLock { s -> Value?? in
                            if let v = s.value { return .some(v) }
                            if s.abandoned { return .some(nil) }
                            s.waiter = c
                            return nil
                        }
                        if let ready { c.resume(returning: ready) }
                    }
                } onCancel: {
                    let waiter = self.state.withLock { s -> CheckedContinuation<Value?, Never>? in
                        defer { s.waiter = nil }
                        return s.waiter
                    }
                    waiter?.resume(returning: nil)
                }
            }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
        // Decide atomically: take the value if it came, or abandon so that a late delivery is stored.
        return state.withLock { s in
            if let v = s.value { return v }
            s.abandoned = true
            return nil
        }
    }
}
