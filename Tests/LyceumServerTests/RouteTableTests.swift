@testable import Routing
import InferenceCore
import Testing

@Suite("Route table")
struct RouteTableTests {
    @Test("a request waiting for a route is woken by the publish itself, not by the bound", .timeLimit(.minutes(1)))
    func wokenByPublish() async {
        let table = RouteTable()
        let started = ContinuousClock.now
        async let waited: Void = table.waitForChange("d", upTo: .seconds(30))
        try? await Task.sleep(for: .milliseconds(100))
        table.publish("d", RouteTable.Route(orgId: "o", status: .running, endpoints: [], reason: nil))
        await waited
        #expect(ContinuousClock.now - started < .seconds(5))
    }

    @Test("without a change the wait ends at its bound, and another deployment's publish does not wake it", .timeLimit(.minutes(1)))
    func boundedWait() async {
        let table = RouteTable()
        let started = ContinuousClock.now
        async let waited: Void = table.waitForChange("d", upTo: .milliseconds(300))
        table.publish("other", nil)
        await waited
        let took = ContinuousClock.now - started
        #expect(took >= .milliseconds(290) && took < .seconds(5))
    }

    @Test("many waiters, woken together; none is left behind", .timeLimit(.minutes(1)))
    func manyWaiters() async {
        let table = RouteTable()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<200 { group.addTask { await table.waitForChange("d", upTo: .seconds(2)) } }
            group.addTask {
                for _ in 0..<50 {
                    try? await Task.sleep(for: .milliseconds(20))
                    table.publish("d", nil)
                }
            }
        }
    }

    @Test("an endpoint's URL is built from the address its provider gave, IPv6 in brackets")
    func endpointURLs() {
        #expect(RouteTable.Endpoint(replicaId: "r", port: 8001, servedModelName: "m").address.baseURL == "http://127.0.0.1:8001")
        #expect(ReplicaAddress(host: "10.0.3.7", port: 40001).baseURL == "http://10.0.3.7:40001")
        #expect(ReplicaAddress(host: "fd00::7", port: 40001).baseURL == "http://[fd00::7]:40001")
    }
}

