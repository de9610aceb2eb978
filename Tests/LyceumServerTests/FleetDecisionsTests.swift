@testable import Controller
import DeploymentStore
import Foundation
import InferenceCore
import Testing

/// The fleet's decisions without a controller: plain values in, a plan out.
@Suite("Fleet decisions, pure")
struct FleetDecisionsTests {
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    func deployment(desired: Int, max: Int = 4, status: DeploymentStatus = .running) -> DeploymentRecord {
        let spec = DeploymentSpec(
            hfModelId: "m/x", hardwareProfile: "sim.h100", targetRps: 5, targetLatencyP95Ms: 100, stabilisationWindow: 30, minReplicas: 1,
            maxReplicas: max)
        var d = DeploymentRecord(id: "d", orgId: "o", spec: spec, hfTokenSealed: nil, now: t0)
        d.desiredReplicas = desired
        d.status = status
        return d
    }

    func replica(_ id: String, _ status: ReplicaStatus, healthy: Bool = false, at seconds: Double) -> ReplicaRecord {
        var r = ReplicaRecord(id: id, deploymentId: "d", now: t0 + seconds)
        r.status = status
        r.healthy = healthy
        return r
    }

    @Test("too few live replicas: create the missing ones; replicas without a run are launched")
    func scaleUp() {
        let replicas = [replica("a", .running, healthy: true, at: 0), replica("b", .pending, at: 1), replica("x", .stopped, at: 2)]
        let plan = FleetDecisions.plan(deployment(desired: 3), replicas: replicas, known: .init(busy: ["a"]), maxReplicasPerDeployment: 64, now: t0)
        #expect(plan == .init(create: 1, drain: [], launch: ["b"]))
    }

    @Test("too many: drain those not serving first, then the newest; never launch one that is leaving")
    func scaleDown() {
        let replicas = [
            replica("old", .running, healthy: true, at: 0), replica("new", .running, healthy: true, at: 5),
            replica("starting", .initingDockerContainer, at: 1),
        ]
        let plan = FleetDecisions.plan(
            deployment(desired: 1), replicas: replicas, known: .init(busy: ["old", "new", "starting"]), maxReplicasPerDeployment: 64, now: t0)
        #expect(plan == .init(create: 0, drain: ["starting", "new"], launch: []))
        // One already draining counts as gone: nothing more to drain, and it is not relaunched.
        let again = FleetDecisions.plan(
            deployment(desired: 1), replicas: replicas, known: .init(busy: ["old"], draining: ["starting", "new"]), maxReplicasPerDeployment: 64,
            now: t0)
        #expect(again == .init())
    }

    @Test("a restart waits out its backoff; the stored count is bounded by max_replicas and the server's limit; a failed deployment gets no new replicas")
    func bounds() {
        let restarting = [replica("r", .restarting, at: 0)]
        let waiting = FleetDecisions.plan(
            deployment(desired: 1), replicas: restarting, known: .init(restartNotBefore: ["r": t0 + 2]), maxReplicasPerDeployment: 64, now: t0 + 1)
        #expect(waiting.launch.isEmpty)
        let due = FleetDecisions.plan(
            deployment(desired: 1), replicas: restarting, known: .init(restartNotBefore: ["r": t0 + 2]), maxReplicasPerDeployment: 64, now: t0 + 2)
        #expect(due.launch == ["r"])
        #expect(FleetDecisions.plan(deployment(desired: 1_000_000), replicas: [], known: .init(), maxReplicasPerDeployment: 64, now: t0).create == 4)
        #expect(FleetDecisions.plan(deployment(desired: 8, max: 8), replicas: [], known: .init(), maxReplicasPerDeployment: 3, now: t0).create == 3)
        #expect(FleetDecisions.plan(deployment(desired: -5), replicas: [], known: .init(), maxReplicasPerDeployment: 64, now: t0) == .init())
        #expect(FleetDecisions.plan(deployment(desired: 2, status: .failed), replicas: [], known: .init(), maxReplicasPerDeployment: 64, now: t0).create == 0)
    }

    @Test("after a crash: a doubling backoff up to its cap, then failed; no count can trap it")
    func crashes() {
        func verdict(_ n: Int) -> FleetDecisions.CrashVerdict {
            FleetDecisions.afterCrash(consecutiveFailures: n, maxConsecutiveFailures: 6, backoff: .seconds(1), maxBackoff: .seconds(10))
        }
        #expect((1...5).map(verdict) == [.restart(after: 1), .restart(after: 2), .restart(after: 4), .restart(after: 8), .restart(after: 10)])
        #expect(verdict(6) == .fail && verdict(Int.max) == .fail)
        #expect(FleetDecisions.afterCrash(consecutiveFailures: Int.min, maxConsecutiveFailures: Int.max, backoff: .seconds(1), maxBackoff: .seconds(60))
            == .restart(after: 1))
        #expect(FleetDecisions.afterCrash(consecutiveFailures: 1_000, maxConsecutiveFailures: Int.max, backoff: .seconds(1), maxBackoff: .seconds(60))
            == .restart(after: 60))
    }

    @Test("a replica is killed when it never got ready in time, or stopped answering for long enough")
    func stuck() {
        func reason(_ status: ReplicaStatus, started: Double, unhealthySince: Double?, now: Double) -> String? {
            FleetDecisions.stuckReason(
                status: status, startedAt: t0 + started, unhealthySince: unhealthySince.map { t0 + $0 }, now: t0 + now, readyTimeout: 600,
                unhealthyRestartAfter: 30)
        }
        #expect(reason(.initingDockerContainer, started: 0, unhealthySince: 0, now: 599) == nil)
        #expect(reason(.initingDockerContainer, started: 0, unhealthySince: 0, now: 601) == "not healthy within the ready timeout of 600 s")
        #expect(reason(.running, started: 0, unhealthySince: 1000, now: 1029) == nil)
        #expect(reason(.running, started: 0, unhealthySince: 1000, now: 1031) == "stopped answering health checks for 31 s")
        #expect(reason(.running, started: 0, unhealthySince: nil, now: 5000) == nil)
    }
}
