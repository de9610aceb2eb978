import InferenceCore

/// Local processes and a cluster side by side: each profile says where its replicas run, and a handle says
/// which of the two runs it (a local one is `pid:N`).
public struct ProviderSet: ReplicaProvider {
    public let local: any ReplicaProvider
    public let cluster: any ReplicaProvider

    public init(local: any ReplicaProvider, cluster: any ReplicaProvider) {
        self.local = local
        self.cluster = cluster
    }

    func provider(for handle: ReplicaHandle) -> any ReplicaProvider {
        handle.processId != nil ? local : cluster
    }

    func provider(for command: EngineCommand) -> any ReplicaProvider {
        command.requirements.placement == .ray ? cluster : local
    }

    public func run(
        _ command: EngineCommand, logPath: String, started: @escaping @Sendable (ReplicaStarted) async -> Void
    ) async throws -> ProcessExit {
        try await provider(for: command).run(command, logPath: logPath, started: started)
    }

    public func run(
        _ command: EngineCommand, logPath: String, waiting: @escaping @Sendable (ReplicaHandle, String) async -> Void,
        started: @escaping @Sendable (ReplicaStarted) async -> Void
    ) async throws -> ProcessExit {
        try await provider(for: command).run(command, logPath: logPath, waiting: waiting, started: started)
    }

    public func stop(_ handle: ReplicaHandle, grace: Duration) async {
        await provider(for: handle).stop(handle, grace: grace)
    }

    public func isAlive(_ handle: ReplicaHandle, replicaId: String) -> Bool {
        provider(for: handle).isAlive(handle, replicaId: replicaId)
    }

    public func running() async -> [String: ReplicaHandle] {
        async let clusterRuns = cluster.running()
        let localRuns = await local.running()
        return localRuns.merging(await clusterRuns) { mine, _ in mine }
    }

    public func logs(_ handle: ReplicaHandle, maxLines: Int) async -> String? {
        await provider(for: handle).logs(handle, maxLines: maxLines)
    }

    public var replicaHost: String { local.replicaHost }

    public var devices: DevicePool? { local.devices }

    public func freeCapacity(for profile: HardwareProfile) async -> Int? {
        profile.provider == .ray ? await cluster.freeCapacity(for: profile) : await local.freeCapacity(for: profile)
    }

    public func devices(for profile: HardwareProfile) -> DevicePool? {
        profile.provider == .ray ? cluster.devices(for: profile) : local.devices(for: profile)
    }
}
