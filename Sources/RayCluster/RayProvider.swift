import AsyncHTTPClient
import Foundation
import InferenceCore
import Logging
import Replicas
import Synchronization

/// Replicas as jobs on a Ray cluster, one job per run, through Ray's Jobs REST API.
///
/// A job runs `lyceum replica run` on whichever node has the resources its profile asks for. The launcher
/// picks a port on the node's routable address, registers it here with the run's one-time token (and gets
/// the run's secrets back: they never travel in the job's description, which Ray shows to anyone who can
/// read its API), then runs the engine with a parent-death signal, so a node lost whole leaves nothing
/// behind. The handle is `ray:SUBMISSION_ID`; a submission id is the replica's run, so two leaders
/// launching the same run submit one job.
public final class RayProvider: ReplicaProvider, ReplicaRegistrar {
    public struct Configuration: Sendable {
        /// `http://HEAD:8265`.
        public var address: String
        public var token: String?
        /// Tags this platform's jobs (`lyceum_cluster` in their metadata), so platforms sharing a cluster never
        /// adopt or stop each other's.
        public var clusterName = "lyceum"
        /// The `lyceum` binary on the nodes, which runs the launcher.
        public var launcherExecutable: String
        /// How long Ray lets an engine shut down after a stop before killing it.
        public var stopGrace: Duration = .seconds(10)
        /// A running job whose launcher has not registered within this is stopped (and counts as a crash).
        public var registerTimeout: Duration = .seconds(120)
        /// How long a job may wait for room before the replica shows `pending` with the reason.
        public var pendingReportAfter: Duration = .seconds(4)
        /// How long a job pinned to a node (to spread a deployment's replicas) waits for room there before it
        /// is placed anywhere.
        public var spreadPatience: Duration = .seconds(10)

        public init(address: String, token: String?, launcherExecutable: String) {
            self.address = address
            self.token = token
            self.launcherExecutable = launcherExecutable
        }
    }

    /// A run this provider submitted, until it ends.
    struct Expected {
        var replicaId: String
        var token: String
        var submissionId: String
        var secrets: [String: String]
        var registered: ReplicaAddress?
    }

    public let configuration: Configuration
    let jobs: RayJobsClient
    let logger: Logger
    /// The URL launchers reach the control plane at (set once the server listens).
    let controlPlaneURL = Mutex<String?>(nil)
    let expected = Mutex<[String: Expected]>([:])
    /// The last status seen of each job, and when: what `isAlive` answers from.
    let seen = Mutex<[String: (status: RayJobsClient.Job.Status, at: ContinuousClock.Instant)]>([:])
    let refreshing = Atomic<Bool>(false)
    let lastListing = Mutex<(at: ContinuousClock.Instant, jobs: [RayJobsClient.Job])?>(nil)
    /// Jobs to look at again for `isAlive`.
    let stale = Mutex<Set<String>>([])
    /// Jobs asked to stop that Ray did not report stopped in time (their node is lost, most likely): their runs
    /// count as ended, so the replica is replaced now rather than once Ray declares the node dead.
    let abandoned = Mutex<Set<String>>([])
    /// Jobs this provider stopped or gave up: never taken over again under the same submission id.
    let retired = Mutex<Set<String>>([])
    /// Nodes that ran a job whose stop Ray did not confirm, and when: no replica is pinned there for a minute.
    let suspectNodes = Mutex<[String: ContinuousClock.Instant]>([:])
    /// The node each job runs on, as last seen.
    let jobNodes = Mutex<[String: String]>([:])
    /// Jobs pinned to a node and not yet running there, by submission id: their deployment and node.
    let pins = Mutex<[String: Pin]>([:])

    let client: HTTPClient

    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        var clientConfiguration = HTTPClient.Configuration()
        clientConfiguration.timeout = .init(connect: .seconds(3), read: .seconds(30))
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: clientConfiguration)
        jobs = RayJobsClient(address: configuration.address, token: configuration.token, client: client)
        self.logger = logger
    }

    public func shutdown() async {
        try? await client.shutdown()
    }

    public func setControlPlaneURL(_ url: String) {
        controlPlaneURL.withLock { $0 = url }
    }

    public var devices: DevicePool? { nil }
    public func devices(for profile: HardwareProfile) -> DevicePool? { nil }

    public func run(
        _ command: EngineCommand, logPath: String, started: @escaping @Sendable (ReplicaStarted) async -> Void
    ) async throws -> ProcessExit {
        try await run(command, logPath: logPath, waiting: { _, _ in }, started: started)
    }

    public func run(
        _ command: EngineCommand, logPath: String, waiting: @escaping @Sendable (ReplicaHandle, String) async -> Void,
        started: @escaping @Sendable (ReplicaStarted) async -> Void
    ) async throws -> ProcessExit {
        let replicaId = command.environment["LYCEUM_REPLICA_ID"] ?? command.requirements.runId
        guard let callback = controlPlaneURL.withLock({ $0 }) else {
            throw EngineUnavailable("the server does not know its own URL yet; set advertise_url")
        }
        let token = Self.randomToken()
        var submission = RayJobsClient.Submission(submissionId: "lyceum-\(command.requirements.runId)", entrypoint: "")
        var environment = command.environment
        var secrets: [String: String] = [:]
        for key in Self.secretKeys { secrets[key] = environment.removeValue(forKey: key) }
        environment["LYCEUM_REPLICA_TOKEN"] = token
        environment["RAY_JOB_STOP_WAIT_TIME_S"] = String(Int(configuration.stopGrace.components.seconds.clamped(to: 1...3600)))
        submission.environment = environment
        submission.entrypoint = Self.entrypoint(
            launcher: configuration.launcherExecutable, controlPlane: callback, replicaId: replicaId, command: command)
        submission.numGpus = Double(command.requirements.gpus)
        submission.resources = command.requirements.resources
        submission.metadata = [
            "lyceum_cluster": configuration.clusterName, "lyceum_replica_id": replicaId, "lyceum_deployment_id": command.servedModelName,
        ]
        // Expected before it is submitted: its launcher may register as soon as Ray runs it.
        expected.withLock {
            $0[replicaId] = Expected(replicaId: replicaId, token: token, submissionId: submission.submissionId, secrets: secrets)
        }
        defer { _ = expected.withLock { $0.removeValue(forKey: replicaId) } }
        // Spread over nodes: a deployment's replicas go first to the node with the fewest of them, unless it
        // has no room within `spreadPatience`.
        let reservation = "reserved:\(replicaId)"
        var pin = await choosePin(deploymentId: command.servedModelName, requirements: command.requirements, reserveAs: reservation)
        defer { _ = pins.withLock { $0.removeValue(forKey: reservation) } }
        while true {
            submission.labelSelector = pin.map { ["ray.io/node-id": "in(\($0))"] } ?? [:]
            try await submit(&submission, replicaId: replicaId, waiting: waiting)
            let id = submission.submissionId
            expected.withLock { $0[replicaId]?.submissionId = id }
            pins.withLock { p in if let reserved = p.removeValue(forKey: reservation) { p[id] = reserved } }
            defer {
                _ = pins.withLock { $0.removeValue(forKey: id) }
                _ = jobNodes.withLock { $0.removeValue(forKey: id) }
            }
            let outcome = try await follow(
                id, handle: ReplicaHandle("ray:\(id)"), replicaId: replicaId, requirements: command.requirements, logPath: logPath,
                pinnedPatience: pin == nil ? nil : configuration.spreadPatience, waiting: waiting, started: started)
            switch outcome {
            case .ended(let exit):
                return exit
            case .unpin:
                // The chosen node has no room: anywhere will do.
                await stop(ReplicaHandle("ray:\(id)"), grace: .seconds(1))
                logger.info("no room on the node chosen for spreading; placing anywhere", metadata: ["replica.id": "\(replicaId)"])
                pin = nil
                submission.submissionId = "lyceum-\(command.requirements.runId)-any"
            }
        }
    }

    /// Submits, retrying while the Jobs API does not answer (launches wait; serving replicas are not touched).
    /// A submission id Ray already has with a finished job (a run number reused) gets a fresh suffix.
    func submit(
        _ submission: inout RayJobsClient.Submission, replicaId: String, waiting: @Sendable (ReplicaHandle, String) async -> Void
    ) async throws {
        var reported = false
        while true {
            do {
                if try await jobs.submit(submission) { return }
                // Submitted before: by this run before a retry, or by another leader (take it over), unless this
                // provider already gave that job up (its node lost) or it is over.
                let id = submission.submissionId
                if let existing = try await jobs.job(id), !existing.status.isTerminal, !retired.withLock({ $0.contains(id) }) { return }
                submission.submissionId += "-" + Self.randomToken().prefix(6)
            } catch {
                if Task.isCancelled { throw CancellationError() }
                logger.warning("a Ray job submission failed; trying again in 2 s", metadata: ["replica.id": "\(replicaId)", "error": "\(error)"])
                if !reported {
                    reported = true
                    await waiting(ReplicaHandle("ray:\(submission.submissionId)"), "waiting for the Ray cluster: its Jobs API does not answer (\(error))")
                }
                try await Task.sleep(for: .seconds(2))
            }
        }
    }

    /// Follows a submitted job until it ends: reports it waiting for room, started once its launcher has
    /// registered, and mirrors its output into the replica's log file.
    func follow(
        _ id: String, handle: ReplicaHandle, replicaId: String, requirements: ReplicaRequirements, logPath: String,
        pinnedPatience: Duration?, waiting: @Sendable (ReplicaHandle, String) async -> Void,
        started: @Sendable (ReplicaStarted) async -> Void
    ) async throws -> FollowOutcome {
        let clock = ContinuousClock()
        let submittedAt = clock.now
        var runningSince: ContinuousClock.Instant?
        var reportedReason: String?
        var reasonAt: ContinuousClock.Instant?
        var isStarted = false
        while true {
            if Task.isCancelled { return .ended(ProcessExit(code: nil, signal: 15)) }
            if abandoned.withLock({ $0.remove(id) }) != nil {
                await mirrorLogs(id, to: logPath, extra: "Ray did not confirm the stop in time (its node is probably lost); replaced")
                return .ended(ProcessExit(code: nil, signal: 9))
            }
            let job: RayJobsClient.Job?
            do {
                job = try await jobs.job(id)
            } catch {
                // The Jobs API is down (a head restart): the engine goes on serving; look again.
                try? await Task.sleep(for: .seconds(1))
                continue
            }
            guard let job else {
                await mirrorLogs(id, to: logPath, extra: "Ray no longer knows job \(id)")
                return .ended(ProcessExit(code: nil, signal: 9))
            }
            note(id, job.status)
            if let node = job.driverNodeId { jobNodes.withLock { $0[id] = node } }
            switch job.status {
            case .pending:
                if let pinnedPatience, clock.now - submittedAt > pinnedPatience { return .unpin }
                // Why it waits, asked of the cluster's nodes every 5 s at most: a job may wait for hours.
                if pinnedPatience == nil, clock.now - submittedAt > configuration.pendingReportAfter,
                    reasonAt.map({ clock.now - $0 > .seconds(5) }) ?? true
                {
                    reasonAt = clock.now
                    let reason = await pendingReason(requirements)
                    if reason != reportedReason {
                        reportedReason = reason
                        await waiting(handle, reason)
                    }
                }
            case .running:
                let since = runningSince ?? clock.now
                runningSince = since
                if !isStarted, let address = expected.withLock({ $0[replicaId]?.registered }) {
                    isStarted = true
                    await started(ReplicaStarted(handle: handle, address: address))
                } else if !isStarted, clock.now - since > configuration.registerTimeout {
                    try? await jobs.stop(id)
                    await mirrorLogs(id, to: logPath, extra: "the replica's launcher did not register within \(configuration.registerTimeout)")
                    return .ended(ProcessExit(code: 1, signal: nil))
                }
            case .stopped, .succeeded, .failed:
                await mirrorLogs(id, to: logPath, extra: job.status == .failed ? "Ray: \(job.message)" : nil)
                if job.status == .stopped { return .ended(ProcessExit(code: nil, signal: 15)) }
                return .ended(ProcessExit(code: Int32(clamping: job.driverExitCode ?? (job.status == .succeeded ? 0 : 1)), signal: nil))
            }
            // Quick while it may start any moment; once a second when serving or queued for long.
            let settled = isStarted || clock.now - submittedAt > configuration.pendingReportAfter && runningSince == nil
            try? await Task.sleep(for: settled ? .seconds(1) : .milliseconds(200))
        }
    }

    public func stop(_ handle: ReplicaHandle, grace: Duration) async {
        guard let id = Self.submissionId(handle) else { return }
        retired.withLock { _ = $0.insert(id) }
        let clock = ContinuousClock()
        let deadline = clock.now + grace + .seconds(2)
        var asked = false
        while clock.now < deadline {
            if !asked { asked = (try? await jobs.stop(id)) != nil }
            if let job = try? await jobs.job(id) {
                note(id, job.status)
                if job.status.isTerminal { return }
            } else if asked {
                return
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
        if !asked {
            // Ray's Jobs API does not answer: ask again in the background until it does.
            retryStop(id)
        }
        logger.warning("a Ray job did not stop in time; counting it as ended", metadata: ["job": "\(id)"])
        if expected.withLock({ $0.values.contains { $0.submissionId == id } }) { abandoned.withLock { _ = $0.insert(id) } }
        if let node = jobNodes.withLock({ $0[id] }) { suspectNodes.withLock { $0[node] = .now } }
    }

    /// From the last status seen (kept fresh by the runs' own polls and a list every 2 s): a job Ray has not
    /// said is over counts as alive, so an unreachable head never makes the platform replace serving replicas.
    public func isAlive(_ handle: ReplicaHandle, replicaId: String) -> Bool {
        guard let id = Self.submissionId(handle) else { return false }
        let last = seen.withLock { $0[id] }
        if last == nil || ContinuousClock.now - last!.at > .seconds(2) { refreshSoon(id) }
        return !(last?.status.isTerminal ?? false)
    }

    /// This platform's jobs that are pending or running, by replica id.
    public func running() async -> [String: ReplicaHandle] {
        do {
            var found: [String: ReplicaHandle] = [:]
            for job in try await listJobs() where !job.status.isTerminal {
                if let replicaId = job.metadata["lyceum_replica_id"] { found[replicaId] = ReplicaHandle("ray:\(job.submissionId)") }
            }
            return found
        } catch {
            logger.warning("cannot list Ray jobs", metadata: ["error": "\(error)"])
            return [:]
        }
    }

    /// This platform's jobs, listed at most once a second (the catalogue and every launch ask; Ray answers
    /// with the cluster's whole job history).
    func listJobs() async throws -> [RayJobsClient.Job] {
        if let last = lastListing.withLock({ $0 }), ContinuousClock.now - last.at < .seconds(1) { return last.jobs }
        let all = try await jobs.jobs().filter { $0.metadata["lyceum_cluster"] == configuration.clusterName }
        let now = ContinuousClock.now
        lastListing.withLock { $0 = (now, all) }
        // The listing is the whole truth: jobs it no longer has are forgotten.
        seen.withLock { s in s = Dictionary(all.map { ($0.submissionId, ($0.status, now)) }, uniquingKeysWith: { a, _ in a }) }
        let nodes = all.compactMap { job in job.driverNodeId.flatMap { job.status.isTerminal ? nil : (job.submissionId, $0) } }
        jobNodes.withLock { $0 = Dictionary(nodes, uniquingKeysWith: { a, _ in a }) }
        return all
    }

    /// Asks Ray to stop a job every 5 s for up to an hour, until Ray has the request (or no longer knows the job).
    func retryStop(_ id: String) {
        Task { [jobs, logger] in
            for _ in 0..<720 {
                try? await Task.sleep(for: .seconds(5))
                if (try? await jobs.stop(id)) != nil { return }
            }
            logger.error("Ray never took the stop of a job; stop it by hand", metadata: ["job": "\(id)"])
        }
    }

    /// Looks again, in the background, at the jobs `isAlive` was asked about and has not seen lately: one
    /// request per job (runs this provider follows are kept fresh by their own loops), never the cluster's
    /// whole job history.
    func refreshSoon(_ id: String) {
        stale.withLock { _ = $0.insert(id) }
        guard refreshing.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return }
        Task {
            defer { refreshing.store(false, ordering: .relaxed) }
            let ids = stale.withLock { s in defer { s.removeAll() }; return s }
            for id in ids {
                guard let job = try? await jobs.job(id) else { continue }
                note(id, job.status)
            }
            // Forget what nobody asked about for ten minutes.
            seen.withLock { s in s = s.filter { ContinuousClock.now - $0.value.at < .seconds(600) } }
        }
    }

    func note(_ id: String, _ status: RayJobsClient.Job.Status) {
        seen.withLock { $0[id] = (status, ContinuousClock.now) }
    }

    static func submissionId(_ handle: ReplicaHandle) -> String? {
        handle.rawValue.hasPrefix("ray:") ? String(handle.rawValue.dropFirst(4)) : nil
    }

    /// Environment entries that are secrets: handed to the launcher at registration, never put in the job.
    static let secretKeys = ["HF_TOKEN"]

    static func randomToken() -> String {
        var g = SystemRandomNumberGenerator()
        return (0..<4).map { _ in String(format: "%016llx", g.next() as UInt64) }.joined()
    }
}

extension Comparable {
    func clamped(to range: ClosedRange<Self>) -> Self { min(max(self, range.lowerBound), range.upperBound) }
}
