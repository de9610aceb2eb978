import Synchronization

/// Admission control: at most `maxNumSeqs` sequences run; the rest wait in arrival order,
/// so latency grows with load the way a real engine's does.
final class SimScheduler: Sendable {
    private struct State {
        var running = 0
        var waiters: [(id: Int, continuation: CheckedContinuation<Void, Never>)] = []
        var nextId = 0
    }

    private let capacity: Int
    private let state = Mutex(State())

    init(capacity: Int) { self.capacity = max(1, capacity) }

    var running: Int { state.withLock { $0.running } }
    var waiting: Int { state.withLock { $0.waiters.count } }

    func acquire() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let admitted = state.withLock { s -> Bool in
                if s.running < capacity {
                    s.running += 1
                    return true
                }
                s.nextId += 1
                s.waiters.append((s.nextId, c))
                return false
            }
            if admitted { c.resume() }
        }
    }

    func release() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.waiters.isEmpty {
                s.running -= 1
                return nil
            }
            return s.waiters.removeFirst().continuation
        }
        next?.resume()
    }
}
