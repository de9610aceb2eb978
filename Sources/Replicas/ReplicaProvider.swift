import Foundation
import InferenceCore
import Synchronization

/// How a replica's run ended.
public struct ProcessExit: Sendable, CustomStringConvertible {
    public var code: Int32?
    public var signal: Int32?

    public init(code: Int32?, signal: Int32?) {
        self.code = code
        self.signal = signal
    }

    public var description: String {
        if let code { return "exited with code \(code)" }
        if let signal { return "killed by signal \(signal)" }
        return "ended"
    }
}

/// A provider's name for one run of a replica: opaque to the rest of the platform, kept in the store so that
/// a restarted (or newly elected) server re-attaches to the run. A local process is `pid:1234`; a cluster
/// provider would use its job id.
public struct ReplicaHandle: Sendable, Hashable, CustomStringConvertible {
    public var rawValue: String

    public init(_ rawValue: String) { self.rawValue = rawValue }

    /// A local process.
    public static func process(_ pid: Int32) -> ReplicaHandle { ReplicaHandle("pid:\(pid)") }

    /// The process id, for a local process's handle.
    public var processId: Int32? { rawValue.hasPrefix("pid:") ? Int32(rawValue.dropFirst(4)) : nil }

    public var description: String { rawValue }
}

/// A run that has started: its handle and, where the provider placed it somewhere other than where it was
/// asked to listen (a cluster node, a port chosen on the node), the address it listens on.
public struct ReplicaStarted: Sendable, Equatable {
    public var handle: ReplicaHandle
    /// Nil: it listens where the command says (the provider's host, the port the controller chose).
    public var address: ReplicaAddress?

    public init(handle: ReplicaHandle, address: ReplicaAddress? = nil) {
        self.handle = handle
        self.address = address
    }
}

/// Starts, watches and stops replicas. The controller knows replicas by handle and address only, so a
/// cluster provider (Ray jobs) can stand beside the local one.
public protocol ReplicaProvider: Sendable {
    /// Runs a replica until it ends, calling `started` with its handle (and its address, once the provider
    /// knows it) when it runs; returns how it ended.
    func run(
        _ command: EngineCommand, logPath: String, started: @escaping @Sendable (ReplicaStarted) async -> Void
    ) async throws -> ProcessExit

    /// `run(_:logPath:started:)`, telling `waiting` why the run has not started yet where the provider queues
    /// it (a cluster with no room for it), with the handle that stops it meanwhile. Default: never waits.
    func run(
        _ command: EngineCommand, logPath: String, waiting: @escaping @Sendable (ReplicaHandle, String) async -> Void,
        started: @escaping @Sendable (ReplicaStarted) async -> Void
    ) async throws -> ProcessExit

    /// Stops a run: asked to stop, then forced after `grace`. Returns once nothing of it is left.
    func stop(_ handle: ReplicaHandle, grace: Duration) async

    /// Whether the run is alive and is `replicaId`'s, so a handle reused by the system is never adopted.
    func isAlive(_ handle: ReplicaHandle, replicaId: String) -> Bool

    /// Every replica run the provider can see now, by replica id: what a restarted server compares with the
    /// store, to re-adopt what it knows and stop what the store says should not run.
    func running() async -> [String: ReplicaHandle]

    /// The host the replicas it starts listen on, for the gateway and the health checker.
    var replicaHost: String { get }

    /// The devices it hands out by name (a profile's `devices`), or nil where the cluster allots them.
    var devices: DevicePool? { get }

    /// The devices it hands out to one profile's replicas. Default: `devices`.
    func devices(for profile: HardwareProfile) -> DevicePool?

    /// How many more of a profile's replicas fit now, where the provider (not a device pool) knows: a cluster's
    /// free resources. Default: nil.
    func freeCapacity(for profile: HardwareProfile) async -> Int?

    /// A run's last `maxLines` lines of output, where the provider serves them by handle (a cluster job's); nil
    /// where they are in the replica's log file. Default: nil.
    func logs(_ handle: ReplicaHandle, maxLines: Int) async -> String?
}

extension ReplicaProvider {
    public var replicaHost: String { "127.0.0.1" }

    /// Runs a replica as `run(_:logPath:started:)` does, telling `waiting` why it has not started yet where the
    /// provider queues it (a cluster with no room): the replica shows `pending` with that reason meanwhile.
    public func run(
        _ command: EngineCommand, logPath: String, waiting: @escaping @Sendable (ReplicaHandle, String) async -> Void,
        started: @escaping @Sendable (ReplicaStarted) async -> Void
    ) async throws -> ProcessExit {
        try await run(command, logPath: logPath, started: started)
    }

    /// The devices it hands out to a profile's replicas by name, or nil where the cluster allots them.
    public func devices(for profile: HardwareProfile) -> DevicePool? { devices }

    public func freeCapacity(for profile: HardwareProfile) async -> Int? { nil }

    public func logs(_ handle: ReplicaHandle, maxLines: Int) async -> String? { nil }

    /// `freeCapacity` in devices (a replica holds `gpu_count` of them), for the catalogue's availability answer.
    public func freeDevices(for profile: HardwareProfile) async -> Int? {
        await freeCapacity(for: profile).map { $0 * max(1, profile.gpuCount) }
    }

    /// A replica's last lines: its provider's by handle, else its log file's.
    public func replicaLogs(handle: String?, logPath: String, maxLines: Int) async -> String {
        if let handle, let text = await logs(ReplicaHandle(handle), maxLines: maxLines) { return text }
        return logTail(path: logPath, maxLines: maxLines)
    }
}

/// The devices a provider hands out by name (GPU indices on one machine): never one device to two
/// replicas. A cluster provider has none: the cluster allots devices to its jobs itself.
public final class DevicePool: Sendable {
    private let taken = Mutex<Set<String>>([])

    public init() {}

    /// The devices of `pool` nobody holds, in the pool's order.
    public func free(of pool: [String]) -> [String] {
        taken.withLock { t in pool.filter { !t.contains($0) } }
    }

    /// Takes all of `devices`, or none when any is held already.
    public func take(_ devices: [String]) -> Bool {
        taken.withLock { t in
            guard devices.allSatisfy({ !t.contains($0) }) else { return false }
            t.formUnion(devices)
            return true
        }
    }

    /// Marks the devices of a re-adopted run as held (they were taken before a restart).
    public func claim(_ devices: [String]) {
        taken.withLock { _ = $0.formUnion(devices) }
    }

    public func release(_ devices: [String]) {
        taken.withLock { _ = $0.subtract(devices) }
    }

    /// Every device held, for tests and `/metrics`.
    public var held: Set<String> { taken.withLock { $0 } }
}
