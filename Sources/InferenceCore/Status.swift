/// Deployment status words, exactly as the contract spells them.
public enum DeploymentStatus: String, Codable, Sendable, CaseIterable {
    case created
    case provisioning
    case running
    case paused
    case stopped
    case failed

    /// Deployments in these states hold (or are trying to hold) replicas.
    public var isActive: Bool {
        switch self {
        case .created, .provisioning, .running: true
        case .paused, .stopped, .failed: false
        }
    }

    /// `stopped` is the only state nothing comes back from; list and get hide it by default.
    public var isTerminated: Bool { self == .stopped }
}

/// Replica status words, exactly as the contract spells them.
///
/// The local process provider reports its start step as `initing_docker_container`
/// and model downloads as `pulling_docker_image`, the words existing clients know.
public enum ReplicaStatus: String, Codable, Sendable, CaseIterable {
    case pending
    case pullingDockerImage = "pulling_docker_image"
    case initingDockerContainer = "initing_docker_container"
    case running
    case restarting
    case stopped
    case failed

    /// A replica in one of these states has, or is about to have, a process.
    public var isLive: Bool {
        switch self {
        case .pending, .pullingDockerImage, .initingDockerContainer, .running, .restarting: true
        case .stopped, .failed: false
        }
    }
}

/// What a deployment's status should be, given its replicas.
///
/// A pure function so the lifecycle can be tested without processes:
/// `running` as soon as one replica is healthy, `failed` once every replica has failed,
/// `provisioning` while replicas are on their way.
public func aggregateStatus(current: DeploymentStatus, replicas: [ReplicaStatus], healthy: Int) -> DeploymentStatus {
    guard current.isActive else { return current }
    if healthy > 0 { return .running }
    if replicas.isEmpty { return current == .created ? .created : .provisioning }
    if replicas.allSatisfy({ $0 == .failed }) { return .failed }
    return .provisioning
}
