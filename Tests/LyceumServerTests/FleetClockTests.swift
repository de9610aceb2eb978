@testable import Controller
import DeploymentStore
import Foundation
import InferenceCore
import Replicas
import Testing

@Suite("The fleet on a virtual clock", .serialized)
struct FleetClockTests {
    @Test("the virtual clock wakes sleepers in order, only when time passes them, and a cancelled sleep ends at once")
    func clock() async throws {
        let clock = VirtualClock()
        let t0 = clock.now
        let woke = Task { () -> Date in
            try await clock.sleep(.seconds(5))
            return clock.now
        }
        let cancelled = Task { try await clock.sleep(.seconds(60)) }
        while clock.sleeping < 2 { await Task.yield() }
        await clock.advance(by: .seconds(4), step: .seconds(1))
        #expect(clock.sleeping == 2, "nothing due before 5 s")
        await clock.advance(by: .seconds(2), step: .seconds(1))
        #expect(try await woke.value.timeIntervalSince(t0) == 5)
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        #expect(clock.sleeping == 0)
    }

    /// The production intervals (health every 2 s, reconcile tick every second, restart backoff from 1 s, a
    /// replica that stops answering replaced after 30 s), an hour of virtual time.
    @Test("an hour of fleet life: crashes restarted with backoff, a hung replica replaced, billing to the second, in under a second")
    func anHour() async throws {
        let clock = VirtualClock()
        let t0 = clock.now
        let real = ContinuousClock.now
        let rig = try await FleetRig(clock: clock.fleetClock, configure: { c in
            c.reconcileInterval = .seconds(1)
            c.healthInterval = .seconds(2)
            c.restartBackoff = .seconds(1)
            c.maxConsecutiveFailures = 4
            c.stopGrace = .seconds(10)
            c.unhealthyRestartAfter = .seconds(30)
        })
        try await rig.create("d", min: 2)
        try await eventually("both launched") { rig.provider.launchCount == 2 }
        let ready = try await clock.advance(until: { try await rig.healthy("d") == 2 }, within: .seconds(30))
        #expect(ready != nil, "both serving")
        let ids = try await rig.live("d").map(\.id)

        // Every ten minutes one engine crashes: restarted after the backoff, serving again within seconds.
        for (n, minute) in stride(from: 10, through: 50, by: 10).enumerated() {
            await clock.advance(by: .seconds(Int64(minute * 60) - Int64(clock.now.timeIntervalSince(t0))), step: .seconds(1))
            rig.provider.crash(replicaId: ids[n % 2])
            try await eventually("the crash noticed") { try await rig.healthy("d") < 2 }
            // The 1 s backoff, the next reconcile tick, the next health pass: a few seconds of virtual time.
            let back = try await clock.advance(until: { try await rig.healthy("d") == 2 }, within: .seconds(30))
            #expect(back != nil && back! <= .seconds(10), "serving again after crash \(n + 1) in \(String(describing: back))")
        }
        // At minute 55 one engine stops answering its health checks: killed after 30 s and replaced.
        await clock.advance(by: .seconds(Int64(55 * 60) - Int64(clock.now.timeIntervalSince(t0))), step: .seconds(1))
        rig.provider.setHealthy(replicaId: ids[0], false)
        try await eventually("the hang noticed", within: 5) {
            await clock.advance(by: .seconds(2), step: .seconds(1))
            return try await rig.healthy("d") < 2
        }
        // Killed 30 s after its last good health check, then relaunched like a crash.
        let replaced = try await clock.advance(until: { try await rig.healthy("d") == 2 }, within: .seconds(120))
        #expect(replaced != nil && replaced! >= .seconds(25) && replaced! <= .seconds(50), "replaced in \(String(describing: replaced))")
        await clock.advance(by: .seconds(Int64(3600) - Int64(clock.now.timeIntervalSince(t0))), step: .seconds(1))
        let elapsed = ContinuousClock.now - real

        let events = try await rig.store.events(deploymentId: "d", limit: 1000)
        #expect(events.filter { $0.kind == "replica_crashed" }.count == 6, "five crashes and the killed replica's exit")
        #expect(events.filter { $0.kind == "replica_killed" }.count == 1)
        #expect(try await rig.status("d") == .running)
        let restarts = try await rig.live("d").map(\.restartCount).reduce(0, +)
        #expect(restarts == 6)
        // Billing follows the processes in virtual time: two replicas for an hour, less the seconds between each
        // exit and its relaunch (the 1 s backoff, rounded up to the reconcile tick).
        let runs = try await rig.store.runs(orgId: rig.orgId, deploymentId: "d", from: .distantPast, to: .distantFuture)
        let billed = runs.reduce(0.0) { $0 + (($1.endedAt ?? clock.now).timeIntervalSince($1.startedAt)) }
        #expect(runs.count == 8 && billed > 2 * 3600 - 5 * 10 - 50 && billed <= 2 * 3600, "\(runs.count) runs, \(billed) s")
        // A real hour is 3,600 s; a debug build takes 0.6 s alone and 1.3 to 2.1 s beside the whole suite (the test
        // prints it). The bound only proves the time was virtual: speed is the benchmarks' to measure, and a
        // tight bound here failed a fresh clone's run at 2.03 s.
        print("an hour of fleet life took \(elapsed) of real time")
        #expect(elapsed < .seconds(60), "an hour of fleet life took \(elapsed) of real time: the fleet slept in real time")
        await rig.stop()
    }
}
