import Controller
import DeploymentStore
import SQLiteStore
import Foundation
@testable import Gateway
import InferenceCore
import Logging
import Synchronization
import Testing

/// A manual clock: the test moves time, the autoscaler and the gateway's statistics read it.
final class ManualTime: Sendable {
    private let state: Mutex<(date: Date, instant: ContinuousClock.Instant)>
    init() { state = Mutex((Date(), ContinuousClock.now)) }
    func advance(_ seconds: Double) { state.withLock { $0.date += seconds; $0.instant += .milliseconds(Int64(seconds * 1000)) } }
    var now: (date: Date, instant: ContinuousClock.Instant) { state.withLock { $0 } }
    var autoscalerClock: AutoscalerClock { AutoscalerClock { self.now } }
}

/// Stands in for the controller: replicas become ready the moment they are wanted, and pauses are recorded.
final class FleetStandIn: ReplicaFleet {
    let store: any DeploymentStore
    let paused = Mutex<[String]>([])
    /// What the engines report, as the test sets it (nil: they do not say).
    let load = Mutex<EngineLoad?>(nil)
    init(store: any DeploymentStore) { self.store = store }
    func engineLoad(deploymentId: String) async -> EngineLoad? { load.withLock { $0 } }
    func replicaCounts(deploymentId: String) async -> (ready: Int, starting: Int) {
        ((try? await store.deployment(id: deploymentId))?.desiredReplicas ?? 0, 0)
    }
    func pauseDeployment(id: String, reason: String) async throws {
        paused.withLock { $0.append(reason) }
        try await store.updateDeployment(id: id) { $0.status = .paused }
    }
    func poke() {}
}

@Suite("Autoscaler service on an injected clock")
struct AutoscalerServiceTests {
    struct Rig {
        let dir: String
        let store: any DeploymentStore
        let time = ManualTime()
        let stats: GatewayStats
        let fleet: FleetStandIn
        let autoscaler: Autoscaler

        init(idleTimeout: Double = 3600) async throws {
            dir = try temporaryDirectory()
            store = try SQLiteStore(path: dir + "/lyceum.db")
            let org = try await store.ensureOrganization(named: "acme").id
            let spec = DeploymentSpec(
                hfModelId: "m/x", hardwareProfile: "sim.h100", targetRps: 10, targetLatencyP95Ms: 5000, stabilisationWindow: 60,
                minReplicas: 1, maxReplicas: 5)
            let t = time
            try await store.insert(DeploymentRecord(id: "d", orgId: org, spec: spec, hfTokenSealed: nil, now: t.now.date), event: "created")
            try await store.updateDeployment(id: "d") { $0.status = .running }
            stats = GatewayStats(clock: { t.now.instant })
            fleet = FleetStandIn(store: store)
            var configuration = AutoscalerConfiguration()
            configuration.idleTimeout = .seconds(idleTimeout)
            autoscaler = Autoscaler(
                store: store, fleet: fleet, traffic: stats, configuration: configuration, clock: time.autoscalerClock,
                logger: Logger(label: "test"))
        }

        /// `seconds` of traffic at `rps` requests per second, with a decision at the end of every second.
        func run(rps: Int, seconds: Int) async throws {
            for _ in 0..<seconds {
                for _ in 0..<rps {
                    stats.begin(deploymentId: "d")
                    stats.end(deploymentId: "d", latency: .milliseconds(50), failed: false)
                }
                time.advance(1)
                try await autoscaler.decideAll()
            }
        }

        var desired: Int { get async throws { try await store.deployment(id: "d")!.desiredReplicas } }
        func scaledEvents() async throws -> [String] { try await store.events(deploymentId: "d").filter { $0.kind == "scaled" }.map(\.message) }
    }

    @Test("a ramp from 2 to 30 req/s reaches 3 replicas; the count falls to min only after the window")
    func rampAndWindow() async throws {
        let rig = try await Rig()
        defer { try? FileManager.default.removeItem(atPath: rig.dir) }
        try await rig.run(rps: 2, seconds: 15)
        #expect(try await rig.desired == 1)
        for rps in stride(from: 5, through: 30, by: 5) { try await rig.run(rps: rps, seconds: 5) }
        try await rig.run(rps: 30, seconds: 20)
        #expect(try await rig.desired == 3)
        try await rig.run(rps: 0, seconds: 59)
        #expect(try await rig.desired == 3, "still inside the 60 s stabilisation window")
        // The rate window (10 s) empties, then the window's last high recommendation ages out.
        try await rig.run(rps: 0, seconds: 15)
        #expect(try await rig.desired == 1)
        let events = try await rig.scaledEvents()
        #expect(events.first?.hasPrefix("scaled 1 -> 2: burst of 12.5 req/s against 10 req/s per replica [rate 8.5 req/s (burst 12.5), p95 50 ms") == true, "\(events)")
        #expect(events.last?.contains("-> 1: 0.0 req/s against 10 req/s per replica (raised to min_replicas 1) [rate 0.0 req/s") == true, "\(events)")
        #expect(events.allSatisfy { $0.contains("ready,") && $0.contains("starting,") }, "every decision names the signals it used")
        #expect(events.count <= 4, "\(events)")
    }

    @Test("a burst is followed within a couple of decisions, not after the rate window catches up")
    func burst() async throws {
        let rig = try await Rig()
        defer { try? FileManager.default.removeItem(atPath: rig.dir) }
        try await rig.run(rps: 5, seconds: 20)
        #expect(try await rig.desired == 1)
        try await rig.run(rps: 50, seconds: 3)
        #expect(try await rig.desired == 5, "the 10 s average is still under 20 req/s; the last 2 s ask for 5")
        #expect(try await rig.scaledEvents().contains { $0.contains("burst of 50.0 req/s") })
    }

    /// The conversation benchmark's lead-in at 24 req/s per replica: a deployment starting below its traffic
    /// climbs, and the queue its first replicas built is still there right after a scale-up. Learned as what a
    /// replica holds, that pressure kept the count it climbed to for ten minutes (1.33x a fixed count's
    /// replica-seconds); pressure once the last scale-up has settled still teaches it.
    @Test("pressure from a backlog right after a scale-up teaches no floor; pressure once settled does")
    func pressureLearnedOnceSettled() async throws {
        let rig = try await Rig()
        defer { try? FileManager.default.removeItem(atPath: rig.dir) }
        try await rig.run(rps: 8, seconds: 15)
        rig.fleet.load.withLock { $0 = EngineLoad(waiting: 0, running: 4) }
        try await rig.run(rps: 25, seconds: 3)
        #expect(try await rig.desired == 3, "the burst rule follows 25 req/s at 10 per replica")
        rig.fleet.load.withLock { $0 = EngineLoad(waiting: 40, running: 24) }
        try await rig.run(rps: 25, seconds: 1)
        #expect(try await rig.desired == 4, "a growing queue of more than a batch leads")
        #expect(try await rig.scaledEvents().last?.contains("engines queue 40 requests and growing") == true)
        rig.fleet.load.withLock { $0 = EngineLoad(waiting: 0, running: 12) }
        try await rig.run(rps: 25, seconds: 70)
        #expect(try await rig.desired == 3, "25 req/s is 0.63 of 4 replicas' target: one goes after the window")

        // The same pressure once the scale-up has settled (15 s) is learned, and holds the fourth.
        rig.fleet.load.withLock { $0 = EngineLoad(waiting: 40, running: 24) }
        try await rig.run(rps: 25, seconds: 1)
        #expect(try await rig.desired == 4)
        rig.fleet.load.withLock { $0 = EngineLoad(waiting: 0, running: 12) }
        try await rig.run(rps: 25, seconds: 70)
        #expect(try await rig.desired == 4, "held: pressure appeared at 25 req/s over 3 replicas")
        #expect(try await rig.scaledEvents().allSatisfy { $0.contains("engines:") }, "every decision names the engines' signals")
    }

    @Test("no request for the idle period pauses the deployment")
    func idlePause() async throws {
        let rig = try await Rig(idleTimeout: 120)
        defer { try? FileManager.default.removeItem(atPath: rig.dir) }
        try await rig.run(rps: 3, seconds: 5)
        try await rig.run(rps: 0, seconds: 110)
        #expect(rig.fleet.paused.withLock { $0 }.isEmpty)
        try await rig.run(rps: 0, seconds: 15)
        #expect(rig.fleet.paused.withLock { $0 } == ["paused after 120 s without requests"])
    }
}
