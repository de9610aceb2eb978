
import Foundation
import Routing
import Testing
@testable import Gateway

@Suite("Replica choice")
struct ReplicaPickerTests {
    let endpoints = (0..<4).map { RouteTable.Endpoint(replicaId: "r\($0)", port: 1000 + $0, servedModelName: "d") }

    @Test("with few replicas the least loaded always gets the request: outstanding counts differ by at most one")
    func spreadFullScan() {
        let picker = ReplicaPicker()
        for _ in 0..<400 { _ = picker.acquire(from: endpoints, excluding: []) }
        let counts = picker.outstanding().values
        #expect(counts.reduce(0, +) == 400 && counts.max()! - counts.min()! == 0)
        picker.release("r2")
        picker.release("r2")
        #expect(picker.acquire(from: endpoints, excluding: [])?.replicaId == "r2")
    }

    @Test("with many replicas, power-of-two choices keeps outstanding requests evenly spread")
    func spreadTwoChoices() {
        let many = (0..<40).map { RouteTable.Endpoint(replicaId: "r\($0)", port: 1000 + $0, servedModelName: "d") }
        let picker = ReplicaPicker()
        for _ in 0..<4000 { _ = picker.acquire(from: many, excluding: []) }
        let counts = picker.outstanding().values
        #expect(counts.reduce(0, +) == 4000)
        // Two choices keep the gap to a few requests (it grows like log log n); picking one replica at random
        // would leave a gap of about 35 here (100 per replica, standard deviation 10, over 40 replicas).
        #expect(counts.max()! - counts.min()! <= 8, "spread was \(picker.outstanding())")
    }

    @Test("released requests no longer count, and tried replicas are skipped")
    func releaseAndExclude() {
        let picker = ReplicaPicker()
        let first = picker.acquire(from: endpoints, excluding: [])!
        picker.release(first.replicaId)
        #expect(picker.outstanding().isEmpty)
        let others = picker.acquire(from: endpoints, excluding: ["r0", "r1", "r2"])
        #expect(others?.replicaId == "r3")
        #expect(picker.acquire(from: endpoints, excluding: Set(endpoints.map(\.replicaId))) == nil)
    }

    @Test("a suspect replica is avoided while others are available")
    func suspects() {
        let picker = ReplicaPicker(suspectFor: .seconds(60))
        picker.markSuspect("r0")
        for _ in 0..<50 {
            let e = picker.acquire(from: endpoints, excluding: [])!
            #expect(e.replicaId != "r0")
            picker.release(e.replicaId)
        }
        // With nothing else left, a suspect is still better than no answer.
        #expect(picker.acquire(from: [endpoints[0]], excluding: [])?.replicaId == "r0")
    }
}

@Suite("Request statistics")
struct GatewayStatsTests {
    @Test("window rate, percentiles from the histogram, in-flight and errors")
    func window() {
        let stats = GatewayStats(windowSeconds: 60)
        for i in 1...100 {
            stats.begin(deploymentId: "d")
            stats.end(deploymentId: "d", latency: .milliseconds(i), failed: i > 98)
        }
        stats.begin(deploymentId: "d")
        let w = stats.window(deploymentId: "d")
        #expect(w.requests == 100 && w.errors == 2 && w.inFlight == 1)
        #expect(w.requestsPerSecond == 0, "the rate counts complete seconds only; all 100 fell in the current one")
        #expect(abs(w.p50Ms - 50) <= 1 && abs(w.p95Ms - 95) <= 1 && abs(w.p99Ms - 99) <= 1)
        #expect(stats.renderPrometheus().contains("lyceum_gateway_requests_total{deployment=\"d\"} 100"))
    }
}

@Suite("Background result hand-over")
struct ResultBoxTests {
    @Test("a result delivered in time goes to the caller")
    func inTime() async {
        let box = ResultBox<Int>()
        #expect(box.deliver(7))
        #expect(await box.wait(timeout: .seconds(5)) == 7)
    }

    @Test("a result after the caller gave up is handed back to the job to store")
    func late() async {
        let box = ResultBox<Int>()
        #expect(await box.wait(timeout: .milliseconds(20)) == nil)
        #expect(box.deliver(7) == false)
    }
}
