@testable import Controller
import Foundation
import Testing

/// A replica's health without a controller, a process or a clock: recorded sequences of checks and answers
/// in, the actions the controller would carry out, out.
@Suite("Replica health, pure")
struct ReplicaHealthTests {
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)
    let limits = ReplicaHealth.Limits(readyTimeout: 60, unhealthyRestartAfter: 30, maxWrongAnswers: 3)

    @Test("a cold start: /health fails, then answers; a real request is asked once and, answered right, takes it into routing")
    func coldStart() {
        var h = ReplicaHealth(startedAt: t0)
        #expect(h.handle(.checked(healthy: false, at: t0 + 1), limits: limits) == [.record(healthy: false, at: t0 + 1), .notServing])
        let first = h.handle(.checked(healthy: true, at: t0 + 6), limits: limits)
        #expect(first == [.probeAnswer, .record(healthy: false, at: t0 + 6), .notServing], "not in routing before a real answer")
        #expect(!h.handle(.checked(healthy: true, at: t0 + 6.25), limits: limits).contains(.probeAnswer), "one probe at a time")
        #expect(h.handle(.answered(.ok), limits: limits) == [.checkAgain])
        #expect(h.handle(.checked(healthy: true, at: t0 + 6.5), limits: limits) == [.record(healthy: true, at: t0 + 6.5), .becameHealthy(after: 6.5)])
        #expect(h.handle(.checked(healthy: true, at: t0 + 11.5), limits: limits) == [.record(healthy: true, at: t0 + 11.5)])
        #expect(h.healthy && h.hasServed && h.unhealthySince == nil)
    }

    @Test("never ready within the ready timeout: killed once, counted from when the run began (a queued run's start)")
    func readyTimeout() {
        var h = ReplicaHealth(startedAt: t0)
        _ = h.handle(.runStarted(at: t0 + 100), limits: limits)
        var kills: [String] = []
        for second in stride(from: 101.0, through: 200, by: 1) {
            for case .kill(let reason) in h.handle(.checked(healthy: false, at: t0 + second), limits: limits) { kills.append("\(Int(second)): \(reason)") }
        }
        #expect(kills == ["161: not healthy within the ready timeout of 60 s"])
    }

    @Test("a serving replica that stops answering is killed after unhealthy_restart_after_s; one that comes back is not")
    func stopsAnswering() {
        var h = ReplicaHealth(adoptedAt: t0, healthy: true, hasServed: true)
        _ = h.handle(.checked(healthy: false, at: t0 + 1000), limits: limits)
        #expect(!h.healthy && h.unhealthySince == t0 + 1000)
        #expect(h.handle(.checked(healthy: false, at: t0 + 1029), limits: limits).allSatisfy { if case .kill = $0 { false } else { true } })
        _ = h.handle(.checked(healthy: true, at: t0 + 1029.5), limits: limits)
        #expect(h.healthy && h.unhealthySince == nil, "adopted healthy: /health alone brings it back")
        _ = h.handle(.checked(healthy: false, at: t0 + 2000), limits: limits)
        #expect(h.handle(.checked(healthy: false, at: t0 + 2031), limits: limits).last == .kill(reason: "stopped answering health checks for 31 s"))
        #expect(h.handle(.checked(healthy: false, at: t0 + 2040), limits: limits).last == .notServing, "killed once")
        #expect(h.killReason == "stopped answering health checks for 31 s")
    }

    @Test("the gateway's suspicion: probed at the next check; wrong answers leave routing at the second and kill at the third")
    func wrongAnswers() {
        var h = ReplicaHealth(adoptedAt: t0, healthy: true, hasServed: true)
        #expect(h.handle(.suspected(reason: "answered 500"), limits: limits) == [.checkAgain])
        #expect(h.handle(.checked(healthy: true, at: t0 + 1), limits: limits) == [.probeAnswer, .record(healthy: true, at: t0 + 1)])
        #expect(h.handle(.answered(.wrong("empty choices")), limits: limits) == [.answeredWrongly(reason: "answers requests wrongly: empty choices"), .checkAgain])
        #expect(h.handle(.checked(healthy: true, at: t0 + 2), limits: limits).contains(.record(healthy: true, at: t0 + 2)), "one wrong answer keeps it serving")
        _ = h.handle(.answered(.wrong("empty choices")), limits: limits)
        #expect(h.handle(.checked(healthy: true, at: t0 + 3), limits: limits) == [.probeAnswer, .record(healthy: false, at: t0 + 3), .notServing])
        #expect(h.handle(.answered(.wrong("junk")), limits: limits).last == .kill(reason: "answered 3 real requests in a row wrongly (junk)"))
        #expect(h.handle(.suspected(reason: "again"), limits: limits).isEmpty, "a replica being killed is not probed again")
    }

    @Test("a right answer clears wrong ones; a probe that proves nothing trusts /health for a new replica")
    func recovery() {
        var h = ReplicaHealth(startedAt: t0)
        _ = h.handle(.checked(healthy: true, at: t0 + 1), limits: limits)
        #expect(h.handle(.answered(.inconclusive("timed out after 10 s")), limits: limits) == [.trustedWithoutAnswer(reason: "timed out after 10 s"), .checkAgain])
        #expect(h.handle(.checked(healthy: true, at: t0 + 2), limits: limits).contains(.becameHealthy(after: 2)))
        _ = h.handle(.suspected(reason: "reset"), limits: limits)
        _ = h.handle(.checked(healthy: true, at: t0 + 3), limits: limits)
        _ = h.handle(.answered(.wrong("junk")), limits: limits)
        _ = h.handle(.checked(healthy: true, at: t0 + 4), limits: limits)
        _ = h.handle(.answered(.ok), limits: limits)
        #expect(h.wrongAnswers == 0 && h.suspicion == nil && h.healthy)
    }

    @Test("a kill this instance could not carry out (no longer leading) is judged afresh at the next check")
    func killNotCarriedOut() {
        var h = ReplicaHealth(startedAt: t0)
        #expect(h.handle(.checked(healthy: false, at: t0 + 61), limits: limits).last == .kill(reason: "not healthy within the ready timeout of 60 s"))
        _ = h.handle(.killNotCarriedOut, limits: limits)
        #expect(h.killReason == nil)
        #expect(h.handle(.checked(healthy: false, at: t0 + 62), limits: limits).last == .kill(reason: "not healthy within the ready timeout of 60 s"))
    }

    @Test("an hour of a flaky replica's life, a check every 250 ms, in well under a second")
    func anHour() {
        var h = ReplicaHealth(startedAt: t0)
        var kills: [(at: Double, reason: String)] = []
        var entered = 0
        let started = ContinuousClock.now
        // Up after 5 s; every ten minutes it stops answering for 20 s (under the 30 s limit), the fifth time for 40 s.
        func down(_ second: Double) -> Bool {
            let intoCycle = (second - 570).truncatingRemainder(dividingBy: 600)
            return second >= 570 && intoCycle < (second >= 2970 && second < 3570 ? 40 : 20)
        }
        for tick in 0..<14_400 where kills.isEmpty {
            let second = Double(tick) * 0.25
            for action in h.handle(.checked(healthy: second >= 5 && !down(second), at: t0 + second), limits: limits) {
                switch action {
                case .probeAnswer: _ = h.handle(.answered(.ok), limits: limits)
                case .becameHealthy: entered += 1
                case .kill(let reason): kills.append((second, reason))
                default: break
                }
            }
        }
        #expect(ContinuousClock.now - started < .seconds(1))
        #expect(kills.map(\.at) == [3000.25] && kills.first?.reason == "stopped answering health checks for 30 s", "only the 40 s outage kills it")
        #expect(entered == 5, "in routing at first and back after each of the four short outages")
    }
}
