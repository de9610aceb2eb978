import Foundation
import InferenceCore

/// The controller's knobs, with production defaults; tests shorten the intervals.
public struct ControllerConfiguration: Sendable {
    /// Where replica logs live: `<dataDir>/replicas/<replica_id>.log`.
    public var dataDir: String
    public var profiles: [HardwareProfile]
    public var reconcileInterval: Duration = .seconds(1)
    /// How often every deployment is reconciled even when nothing happened (events drive the passes between).
    public var fullReconcileInterval: Duration = .seconds(60)
    public var healthInterval: Duration = .seconds(2)
    public var healthTimeout: Duration = .seconds(2)
    /// How long a probe with a real tiny request may take; a slower answer proves nothing either way.
    public var answerTimeout: Duration = .seconds(10)
    /// A replica that fails to start this many times in a row is `failed`.
    public var maxConsecutiveFailures: Int = 4
    /// First restart delay; doubles per consecutive failure, up to `maxRestartBackoff`.
    public var restartBackoff: Duration = .seconds(1)
    public var maxRestartBackoff: Duration = .seconds(60)
    /// How long a replica process gets to exit after SIGTERM before SIGKILL.
    public var stopGrace: Duration = .seconds(10)
    /// How long a replica leaving on scale-down may finish its in-flight requests before it is stopped.
    public var drainTimeout: Duration = .seconds(30)
    /// A running replica that fails its health probe for this long is restarted.
    public var unhealthyRestartAfter: Duration = .seconds(30)

    /// The most replicas one deployment may run; a stored desired count above it is clamped, never acted on.
    public var maxReplicasPerDeployment = 64
    /// Per-organisation limits (devices per profile) for tenants; admin organisations are not limited.
    public var orgQuota = OrgQuota()
    /// A ready replica whose real requests were answered wrongly this many probes in a row is replaced.
    public var maxWrongAnswers = 3

    public init(dataDir: String, profiles: [HardwareProfile]) {
        self.dataDir = dataDir
        self.profiles = profiles
    }

    public func profile(named name: String) -> HardwareProfile? { profiles.first { $0.name == name } }

    public func logPath(replicaId: String) -> String { "\(dataDir)/replicas/\(replicaId).log" }
}

/// Where the controller reads the time and waits: the system's clock, or a virtual one in tests.
public struct FleetClock: Sendable {
    public var now: @Sendable () -> Date
    public var sleep: @Sendable (Duration) async throws -> Void

    public init(now: @escaping @Sendable () -> Date, sleep: @escaping @Sendable (Duration) async throws -> Void) {
        self.now = now
        self.sleep = sleep
    }

    public static let system = FleetClock(now: { Date() }, sleep: { try await Task.sleep(for: $0) })
}
