@testable import Controller
import DeploymentStore
import Foundation
import InferenceCore
import Logging
import ModelHub
@testable import Replicas
import Synchronization
import Testing

/// A process table in memory: a replica "runs" from `run` until it is terminated or the test crashes it.
/// It stands in for processes so the controller's decisions can be tested in milliseconds; the end-to-end
/// suite runs the same behaviours with real processes.
final class InMemoryProvider: ReplicaProvider {
    enum Behaviour: Sendable { case serve, exitAtOnce(Int32) }

    struct Process {
        var replicaId: String
        var port: Int
        var exit: CheckedContinuation<ProcessExit, Never>?
        var healthy = true
    }

    struct State {
        var nextPid: Int32 = 1000
        var running: [Int32: Process] = [:]
        /// Pids alive before this provider's controller started (replicas that outlived a server restart).
        var survivors: [Int32: (replicaId: String, port: Int)] = [:]
        var launches: [(replicaId: String, at: ContinuousClock.Instant)] = []
        var terminated: [String] = []
    }

    let state = Mutex(State())
    let behaviour: @Sendable (EngineCommand) -> Behaviour

    /// A host other than loopback, as a cluster's node would be: the controller must probe where the provider says.
    let replicaHost = "10.99.0.7"
    let devices: DevicePool? = DevicePool()
    /// When set, the engine listens on the port this gives for the one it was asked for (as a cluster node's launcher would choose).
    let placeOnPort: (@Sendable (Int) -> Int)?

    /// When set and closed, runs wait in a queue (as a cluster with no room keeps a job pending) until it opens.
    let queue: QueueGate?

    final class QueueGate: Sendable {
        struct State {
            var open = false
            /// Queued runs stopped before they started, by replica id.
            var cancelled: Set<String> = []
        }
        let state = Mutex(State())
        func withLock<T>(_ body: (inout State) -> T) -> T { state.withLock { body(&$0) } }
    }

    init(
        behaviour: @escaping @Sendable (EngineCommand) -> Behaviour = { _ in .serve }, placeOnPort: (@Sendable (Int) -> Int)? = nil,
        queued: Bool = false
    ) {
        self.behaviour = behaviour
        self.placeOnPort = placeOnPort
        queue = queued ? QueueGate() : nil
    }

    func run(
        _ command: EngineCommand, logPath: String, waiting: @escaping @Sendable (ReplicaHandle, String) async -> Void,
        started: @escaping @Sendable (ReplicaStarted) async -> Void
    ) async throws -> ProcessExit {
        let replicaId = URL(fileURLWithPath: logPath).deletingPathExtension().lastPathComponent
        if let queue, !queue.withLock({ $0.open }) {
            await waiting(ReplicaHandle("queued:\(replicaId)"), "waiting for cluster resources: the test's queue is closed")
            while true {
                let (open, cancelled) = queue.withLock { ($0.open, $0.cancelled.contains(replicaId)) }
                if cancelled { return ProcessExit(code: nil, signal: 15) }
                if open { break }
                try await Task.sleep(for: .milliseconds(5))
            }
        }
        return try await run(command, logPath: logPath, started: started)
    }

    func run(_ command: EngineCommand, logPath: String, started: @escaping @Sendable (ReplicaStarted) async -> Void) async throws -> ProcessExit {
        let port = command.arguments.firstIndex(of: "--port").flatMap { Int(command.arguments[$0 + 1]) } ?? 0
        let replicaId = URL(fileURLWithPath: logPath).deletingPathExtension().lastPathComponent
        let pid = state.withLock { s in
            s.nextPid += 1
            s.launches.append((replicaId, .now))
            return s.nextPid
        }
        // A provider that places replicas itself (a cluster) reports where they listen once they run.
        let placed = placeOnPort.map { ReplicaAddress(host: replicaHost, port: $0(port)) }
        await started(ReplicaStarted(handle: .process(pid), address: placed))
        let servedPort = placed?.port ?? port
        if case .exitAtOnce(let code) = behaviour(command) { return ProcessExit(code: code, signal: nil) }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                state.withLock { $0.running[pid] = Process(replicaId: replicaId, port: servedPort, exit: continuation) }
            }
        } onCancel: {
            self.end(pid, ProcessExit(code: nil, signal: 15))
        }
    }

    func stop(_ handle: ReplicaHandle, grace: Duration) async {
        if handle.rawValue.hasPrefix("queued:") {
            _ = queue?.withLock { $0.cancelled.insert(String(handle.rawValue.dropFirst(7))) }
            return
        }
        guard let pid = handle.processId else { return }
        let replicaId = state.withLock { s in s.running[pid]?.replicaId ?? s.survivors.removeValue(forKey: pid)?.replicaId }
        if let replicaId { state.withLock { $0.terminated.append(replicaId) } }
        end(pid, ProcessExit(code: nil, signal: 15))
    }

    func isAlive(_ handle: ReplicaHandle, replicaId: String) -> Bool {
        guard let pid = handle.processId else { return false }
        return state.withLock { s in s.running[pid]?.replicaId == replicaId || s.survivors[pid]?.replicaId == replicaId }
    }

    func running() async -> [String: ReplicaHandle] {
        state.withLock { s in
            var out: [String: ReplicaHandle] = [:]
            for (pid, p) in s.running { out[p.replicaId] = .process(pid) }
            for (pid, p) in s.survivors { out[p.replicaId] = .process(pid) }
            return out
        }
    }

    func end(_ pid: Int32, _ exit: ProcessExit) {
        state.withLock { $0.running.removeValue(forKey: pid) }?.exit?.resume(returning: exit)
    }

    /// The engine at `address` answers its health probe (a survivor counts). Its engines listen on this
    /// provider's host, so a probe anywhere else finds nothing.
    func isHealthy(_ address: ReplicaAddress) -> Bool {
        guard address.host == replicaHost else { return false }
        let port = address.port
        return state.withLock { s in
            s.running.values.contains { $0.port == port && $0.healthy } || s.survivors.values.contains { $0.port == port }
        }
    }

    func setHealthy(replicaId: String, _ healthy: Bool) {
        state.withLock { s in
            for (pid, p) in s.running where p.replicaId == replicaId { s.running[pid]?.healthy = healthy }
        }
    }

    var runningReplicaIds: Set<String> { state.withLock { Set($0.running.values.map(\.replicaId)) } }

    /// The replica's engine exits on its own with `code`, as a crash would.
    func crash(replicaId: String, code: Int32 = 1) {
        let pid = state.withLock { s in s.running.first { $0.value.replicaId == replicaId }?.key }
        if let pid { end(pid, ProcessExit(code: code, signal: nil)) }
    }
    var launchCount: Int { state.withLock { $0.launches.count } }
}

/// Health and real-request probes answered from the in-memory process table.
struct InMemoryProbe: HealthProbing {
    let provider: InMemoryProvider
    func isHealthy(at address: ReplicaAddress, path: String, timeout: Duration) async -> Bool { provider.isHealthy(address) }
    func checkAnswer(at address: ReplicaAddress, servedModelName: String, timeout: Duration) async -> AnswerCheck {
        provider.isHealthy(address) ? .ok : .inconclusive("not answering")
    }
}

/// A controller on an in-memory store and provider, with intervals of tens of milliseconds.
struct FleetRig {
    let store = InMemoryStore()
    let provider: InMemoryProvider
    let controller: Controller
    let orgId: String
    let task: Task<Void, any Error>

    init(
        devices: Int = 4, provider: InMemoryProvider = InMemoryProvider(), drainTimeout: Duration = .milliseconds(200),
        clock: FleetClock = .system, downloader: ModelDownloader? = nil, extraProfiles: [HardwareProfile] = [],
        seed: (@Sendable (InMemoryStore, String) async throws -> Void)? = nil,
        configure: (inout ControllerConfiguration) -> Void = { _ in }
    ) async throws {
        self.provider = provider
        orgId = try await store.ensureOrganization(named: "acme").id
        try await store.insertKey(APIKeyRecord(id: "k", orgId: orgId, keyHash: "h", prefix: "lk_", isAdmin: true, createdAt: Date()))
        try await seed?(store, orgId)
        let profile = HardwareProfile(
            name: "sim.h100", engine: .sim, gpuType: "h100", gpuCount: 1, pricePerHour: "1.00",
            devices: (0..<devices).map { "g\($0)" }, readyTimeoutS: 30)
        var configuration = ControllerConfiguration(dataDir: try temporaryDirectory(), profiles: [profile] + extraProfiles)
        configuration.reconcileInterval = .milliseconds(20)
        configuration.healthInterval = .milliseconds(20)
        configuration.restartBackoff = .milliseconds(40)
        configuration.maxConsecutiveFailures = 3
        configuration.stopGrace = .milliseconds(50)
        configuration.drainTimeout = drainTimeout
        configuration.unhealthyRestartAfter = .seconds(30)
        configure(&configuration)
        controller = Controller(
            store: store, provider: provider, launcher: EngineLauncher(lyceumExecutable: "/nonexistent/lyceum"),
            probe: InMemoryProbe(provider: provider), sealer: SecretSealer(key: .init(size: .bits256)), downloader: downloader,
            configuration: configuration, clock: clock, logger: Logger(label: "fleet-test"))
        let controller = controller
        task = Task { try await controller.run() }
    }

    func create(_ id: String, min: Int, max: Int? = nil) async throws {
        let spec = DeploymentSpec(
            hfModelId: "sim/model", hardwareProfile: "sim.h100", targetRps: 10, targetLatencyP95Ms: 1000, stabilisationWindow: 30,
            minReplicas: min, maxReplicas: max ?? min)
        try await store.insert(DeploymentRecord(id: id, orgId: orgId, spec: spec, hfTokenSealed: nil, now: Date()), event: "created")
        controller.poke(deploymentId: id)
    }

    func status(_ id: String) async throws -> DeploymentStatus? { try await store.deployment(id: id)?.status }

    func live(_ id: String) async throws -> [ReplicaRecord] { try await store.replicas(deploymentId: id).filter(\.status.isLive) }

    func healthy(_ id: String) async throws -> Int { try await live(id).filter { $0.status == .running && $0.healthy }.count }

    func stop() async {
        task.cancel()
        _ = await task.result
    }
}

/// Polls `condition` every 10 ms until it holds or `seconds` pass.
func eventually(_ what: String, within seconds: Double = 5, _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(10))
    }
    Issue.record("not within \(seconds) s: \(what)")
}

@Suite("Fleet behaviour on an in-memory store and in-memory provider", .serialized)
struct FleetTests {
    @Test("a replica that keeps crashing is restarted with a doubling backoff, then the deployment is failed")
    func crashLoop() async throws {
        let rig = try await FleetRig(provider: InMemoryProvider { _ in .exitAtOnce(1) })
        try await rig.create("d", min: 1)
        try await eventually("deployment failed") { try await rig.status("d") == .failed }
        await rig.stop()
        let launches = rig.provider.state.withLock { $0.launches.map(\.at) }
        #expect(launches.count == 3, "max_consecutive_failures is 3")
        let gaps = zip(launches.dropFirst(), launches).map { $0 - $1 }
        #expect(gaps.count == 2 && gaps[0] >= .milliseconds(40) && gaps[1] >= .milliseconds(80), "backoff 40 ms, then 80 ms: \(gaps)")
        let events = try await rig.store.events(deploymentId: "d").map(\.kind)
        #expect(events.contains("failed"), "\(events)")
    }

    @Test("a deployment waits for devices with the reason, and starts when another one frees them")
    func deviceExhaustionAndRelease() async throws {
        let rig = try await FleetRig(devices: 2)
        try await rig.create("a", min: 2)
        try await eventually("a runs on both devices") { try await rig.healthy("a") == 2 }
        let endpoints = try #require(rig.controller.routes.route("a")?.endpoints)
        #expect(endpoints.count == 2 && endpoints.allSatisfy { $0.host == "10.99.0.7" }, "routes carry the host the provider placed them on")
        #expect(try await rig.live("a").allSatisfy { $0.host == "10.99.0.7" }, "and the store keeps it for re-adoption")
        try await rig.create("b", min: 1)
        try await eventually("b waits, saying why") {
            try await rig.live("b").first?.failReason?.hasPrefix("waiting for devices: 2 of 2 sim.h100 devices are in use") == true
        }
        #expect(rig.provider.launchCount == 2)
        try await rig.controller.stopDeployment(id: "a")
        try await eventually("b runs once a's devices are free") { try await rig.healthy("b") == 1 }
        #expect(try await rig.status("a") == .stopped)
        let bDevices = try await rig.live("b").map(\.deviceList)
        #expect(rig.provider.devices?.held == Set(bDevices.flatMap { $0 }), "the provider's pool holds exactly b's device")
        await rig.stop()
    }

    @Test("scale-down releases a replica that is not serving before any that is")
    func scaleDownChoosesTheRightReplica() async throws {
        let rig = try await FleetRig()
        try await rig.create("d", min: 1, max: 3)
        try await rig.store.updateDeployment(id: "d") { $0.desiredReplicas = 3 }
        rig.controller.poke(deploymentId: "d")
        try await eventually("three serving") { try await rig.healthy("d") == 3 }
        let sick = try #require(try await rig.live("d").sorted { $0.createdAt < $1.createdAt }.first?.id)
        rig.provider.setHealthy(replicaId: sick, false)
        try await eventually("the oldest one is out of routing") { try await rig.store.replica(id: sick)?.healthy == false }
        try await rig.store.updateDeployment(id: "d") { $0.desiredReplicas = 2 }
        rig.controller.poke(deploymentId: "d")
        try await eventually("two left") { try await rig.live("d").count == 2 }
        #expect(try await rig.store.replica(id: sick)?.status == .stopped, "the unhealthy replica went, though it is the oldest")
        #expect(try await rig.healthy("d") == 2)
        await rig.stop()
    }

    @Test("pause stops every replica and billing; resume starts min_replicas again")
    func pauseAndResume() async throws {
        let rig = try await FleetRig()
        try await rig.create("d", min: 2)
        try await eventually("running") { try await rig.healthy("d") == 2 }
        try await rig.controller.pauseDeployment(id: "d", reason: "idle")
        #expect(try await rig.status("d") == .paused)
        #expect(rig.provider.runningReplicaIds.isEmpty)
        let runs = try await rig.store.runs(orgId: rig.orgId, deploymentId: "d", from: .distantPast, to: .distantFuture)
        #expect(runs.count == 2 && runs.allSatisfy { $0.endedAt != nil }, "billing stopped with the replicas")
        try await rig.controller.resumeDeployment(id: "d")
        try await eventually("serving again") {
            let serving = try await rig.healthy("d") == 2
            let status = try await rig.status("d")
            return serving && status == .running
        }
        #expect(rig.provider.launchCount == 4)
        await rig.stop()
    }

    @Test("after a restart, a replica whose process is still alive is re-adopted, not relaunched; a dead one is replaced")
    func readoption() async throws {
        let provider = InMemoryProvider()
        provider.state.withLock { $0.survivors[777] = ("alive", 41_777) }
        let rig = try await FleetRig(provider: provider) { store, org in
            let spec = DeploymentSpec(
                hfModelId: "sim/model", hardwareProfile: "sim.h100", targetRps: 10, targetLatencyP95Ms: 1000, stabilisationWindow: 30,
                minReplicas: 2, maxReplicas: 2)
            var d = DeploymentRecord(id: "d", orgId: org, spec: spec, hfTokenSealed: nil, now: Date())
            d.status = .running
            try await store.insert(d, event: "created")
            for (id, pid) in [("alive", Int32(777)), ("gone", Int32(778))] {
                var r = ReplicaRecord(id: id, deploymentId: "d", now: Date())
                r.status = .running
                r.healthy = true
                r.pid = pid
                r.port = 41_000 + Int(pid)
                r.devices = id == "alive" ? "g0" : "g1"
                r.host = "10.99.0.7"
                try await store.insert(r)
                try await store.openRun(ReplicaRunRecord(replicaId: id, deploymentId: "d", orgId: org, hardwareProfile: "sim.h100", pricePerHour: "1.00", startedAt: Date()))
            }
        }
        try await eventually("the dead one replaced, two serving") {
            let replaced = try await rig.store.replica(id: "gone")?.status == .stopped
            let serving = try await rig.healthy("d")
            return replaced && serving == 2
        }
        let kinds = try await rig.store.events(deploymentId: "d").map(\.kind)
        #expect(kinds.contains("replica_adopted") && kinds.contains("replica_reaped"), "\(kinds)")
        #expect(try await rig.store.replica(id: "alive")?.status == .running)
        #expect(try await rig.store.replica(id: "gone")?.status == .stopped)
        #expect(rig.provider.launchCount == 1, "only the dead one was replaced")
        let launched = try #require(rig.provider.state.withLock { $0.launches.first?.replicaId })
        #expect(try await rig.store.replica(id: launched)?.devices != "g0", "the adopted replica keeps its device")
        await rig.stop()
    }

    @Test("after a restart, a run the store says should not run is stopped; a run the store does not know is left alone")
    func strays() async throws {
        let provider = InMemoryProvider()
        // 900: a replica this store stopped, whose engine still runs (its stop never finished). 901: another platform's.
        provider.state.withLock { s in
            s.survivors[900] = ("stopped-here", 41_900)
            s.survivors[901] = ("someone-else", 41_901)
        }
        let rig = try await FleetRig(provider: provider) { store, org in
            let spec = DeploymentSpec(
                hfModelId: "sim/model", hardwareProfile: "sim.h100", targetRps: 10, targetLatencyP95Ms: 1000, stabilisationWindow: 30,
                minReplicas: 1, maxReplicas: 1)
            var d = DeploymentRecord(id: "d", orgId: org, spec: spec, hfTokenSealed: nil, now: Date())
            d.status = .stopped
            try await store.insert(d, event: "created")
            var r = ReplicaRecord(id: "stopped-here", deploymentId: "d", now: Date())
            r.status = .stopped
            try await store.insert(r)
        }
        try await eventually("the stray stopped") { provider.state.withLock { $0.terminated } == ["stopped-here"] }
        #expect(provider.state.withLock { $0.survivors[901] != nil }, "another platform's run is not ours to stop")
        #expect(try await rig.store.events(deploymentId: "d").map(\.kind).contains("replica_reaped"))
        await rig.stop()
    }
}
