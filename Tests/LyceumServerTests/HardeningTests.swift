import ControlPlane
@testable import Controller
import DeploymentStore
import SQLiteStore
import Foundation
@testable import Gateway
import InferenceCore
import Logging
import ModelHub
import Replicas
import Testing

/// A probe that never reaches a network: every replica is down. The fleet tests here launch no process.
struct DownProbe: HealthProbing {
    func isHealthy(at address: ReplicaAddress, path: String, timeout: Duration) async -> Bool { false }
    func checkAnswer(at address: ReplicaAddress, servedModelName: String, timeout: Duration) async -> AnswerCheck { .inconclusive("down") }
}

@Suite("A hostile tenant cannot crash or jam the fleet", .serialized)
struct HardeningTests {
    /// A deployment row as it could be stored before validation bounded every number (issue: these rows
    /// crashed the server again after every restart).
    func hostileRow(_ store: any DeploymentStore, id: String, targetRps: Double, desired: Int, profile: String) async throws {
        let org = try await store.ensureOrganization(named: "tenant").id
        var spec = DeploymentSpec(hfModelId: "m/x", hardwareProfile: profile, targetRps: 10, targetLatencyP95Ms: 1500, stabilisationWindow: 30)
        spec.minReplicas = desired
        spec.maxReplicas = desired
        try await store.insert(DeploymentRecord(id: id, orgId: org, spec: spec, hfTokenSealed: nil, now: Date()), event: "created")
        try await store.updateDeployment(id: id) {
            $0.status = .running
            $0.targetRps = targetRps
            $0.desiredReplicas = desired
        }
    }

    @Test("target_rps of 1e-300 with traffic: the autoscaler decides without trapping, within max_replicas", .timeLimit(.minutes(1)))
    func tinyTargetDoesNotTrap() async throws {
        let dir = try temporaryDirectory()
        let store = try SQLiteStore(path: dir + "/lyceum.db")
        try await hostileRow(store, id: "d", targetRps: 1e-300, desired: 1, profile: "sim.h100")
        try await store.updateDeployment(id: "d") { $0.maxReplicas = 8 }
        let time = ManualTime()
        let stats = GatewayStats(clock: { time.now.instant })
        for _ in 0..<5 {
            for _ in 0..<10 {
                stats.begin(deploymentId: "d")
                stats.end(deploymentId: "d", latency: .milliseconds(20), failed: false)
            }
            time.advance(1)
        }
        let autoscaler = Autoscaler(
            store: store, fleet: FleetStandIn(store: store), traffic: stats, configuration: AutoscalerConfiguration(),
            clock: time.autoscalerClock, logger: Logger(label: "test"))
        try await autoscaler.decideAll()
        let desired = try await store.deployment(id: "d")?.desiredReplicas
        #expect(desired == 2, "at most doubling per decision, from 1")
        try await autoscaler.decideAll()
        #expect(try await store.deployment(id: "d")?.desiredReplicas ?? 0 <= 8)
    }

    @Test("a stored desired count of 1e14 creates at most the per-deployment ceiling of replica rows, at once", .timeLimit(.minutes(1)))
    func hugeDesiredCountIsClamped() async throws {
        let dir = try temporaryDirectory()
        let store = try SQLiteStore(path: dir + "/lyceum.db")
        try await hostileRow(store, id: "huge", targetRps: 10, desired: 100_000_000_000_000, profile: "gpu.none")
        let profile = HardwareProfile(name: "gpu.none", engine: .vllm, gpuType: "h100", gpuCount: 1, pricePerHour: "1", devices: [], readyTimeoutS: 60)
        var configuration = ControllerConfiguration(dataDir: dir, profiles: [profile])
        configuration.maxReplicasPerDeployment = 16
        let controller = Controller(
            store: store, provider: LocalProcessProvider(),
            launcher: EngineLauncher(lyceumExecutable: "/bin/false", vllmExecutable: "/bin/false", llamaServerExecutable: "/bin/false"),
            probe: DownProbe(), sealer: try SecretSealer(keyFile: dir + "/secret.key"), configuration: configuration, logger: Logger(label: "test"))
        let start = ContinuousClock.now
        try await controller.reconcile()
        try await controller.reconcile()
        #expect(ContinuousClock.now - start < .seconds(10))
        let rows = try await store.replicas(deploymentId: "huge")
        #expect(rows.count == 16)
        #expect(rows.allSatisfy { $0.status == .pending && $0.failReason?.hasPrefix("waiting for devices") == true })
    }

    @Test("a tenant holds at most its share of a profile's devices; admins are not limited", .timeLimit(.minutes(1)))
    func deviceShare() {
        let profile = HardwareProfile(name: "p", engine: .sim, gpuType: "h100", gpuCount: 1, pricePerHour: "1", devices: (0..<8).map { "d\($0)" }, readyTimeoutS: 60)
        #expect(OrgQuota().devices(of: profile) == 4)
        #expect(OrgQuota(maxDevicesPerProfile: 2).devices(of: profile) == 2)
        var one = profile
        one.devices = ["d0"]
        #expect(OrgQuota().devices(of: one) == 1)
    }

    @Test("local model paths: off for tenants, confined to configured folders, no escape by '..' or symlink")
    func localModelPolicy() throws {
        let dir = try temporaryDirectory()
        let models = dir + "/models", cache = dir + "/cache"
        try FileManager.default.createDirectory(atPath: models, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: cache + "/models--acme--gated/snapshots/abc", withIntermediateDirectories: true)
        #expect(FileManager.default.createFile(atPath: models + "/ok.gguf", contents: Data("GGUF".utf8)))
        #expect(FileManager.default.createFile(atPath: cache + "/models--acme--gated/snapshots/abc/m.gguf", contents: Data("GGUF".utf8)))
        try FileManager.default.createSymbolicLink(atPath: models + "/escape.gguf", withDestinationPath: "/etc/shadow")
        let off = LocalModelPolicy(hubCacheDir: cache)
        #expect(off.refusal(path: models + "/ok.gguf", isAdmin: false)?.contains("operator") == true)
        #expect(off.refusal(path: models + "/ok.gguf", isAdmin: true) == nil)
        let on = LocalModelPolicy(allowTenants: true, directories: [models], hubCacheDir: cache)
        #expect(on.refusal(path: models + "/ok.gguf", isAdmin: false) == nil)
        #expect(on.refusal(path: models + "/escape.gguf", isAdmin: false) != nil, "a symlink out of the folder")
        #expect(on.refusal(path: models + "/../cache/models--acme--gated/snapshots/abc/m.gguf", isAdmin: false) != nil)
        #expect(on.refusal(path: cache + "/models--acme--gated/snapshots/abc/m.gguf", isAdmin: false) != nil)
        #expect(on.refusal(path: "/etc/shadow", isAdmin: false) != nil)
        let cacheAllowed = LocalModelPolicy(allowTenants: true, directories: [dir], hubCacheDir: cache)
        #expect(cacheAllowed.refusal(path: cache + "/models--acme--gated/snapshots/abc/m.gguf", isAdmin: false)?.contains("cache") == true)
        #expect(ModelDownloader.hasCachedSnapshot(cacheDir: cache, repo: "acme/gated"))
        #expect(!ModelDownloader.hasCachedSnapshot(cacheDir: cache, repo: "acme/other"))
    }

    @Test("replicas are judged by their answers: junk and misconfiguration count against them, a request's own 400 does not")
    func verdicts() {
        #expect(ReplicaVerdict.judge(status: 200, body: Array(#"{"id":"x","choices":[]}"#.utf8)) == .ok)
        #expect(ReplicaVerdict.judge(status: 200, body: Array("<html>oops</html>".utf8)) != .ok)
        #expect(ReplicaVerdict.judge(status: 200, body: Array(#"{"id":"x"}"#.utf8)) != .ok)
        #expect(ReplicaVerdict.judge(status: 404, body: Array(#"{"error":{}}"#.utf8)) != .ok)
        #expect(ReplicaVerdict.judge(status: 400, body: Array(#"{"error":{}}"#.utf8)) == .requestError)
        #expect(ReplicaVerdict.judge(status: 503, body: [UInt8]()) != .ok)
        #expect(ReplicaVerdict.judgeStreamHead(status: 200, contentType: "text/event-stream; charset=utf-8") == .ok)
        #expect(ReplicaVerdict.judgeStreamHead(status: 200, contentType: "text/html") != .ok)
    }
}
