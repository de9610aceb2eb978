import Foundation

/// What a replica's launcher on a cluster node tells the control plane once it has chosen where its engine
/// listens (`POST /api/v2/internal/replicas/{id}/register`, with the run's one-time token as bearer).
public struct ReplicaRegistration: Codable, Sendable, Equatable {
    /// The node's address the engine listens on, as the control plane reaches it.
    public var host: String
    public var port: Int
    /// The launcher's process id on its node.
    public var pid: Int
    /// The devices the cluster gave the run (`CUDA_VISIBLE_DEVICES`), comma-separated; empty for none.
    public var devices: String

    public init(host: String, port: Int, pid: Int, devices: String) {
        self.host = host
        self.port = port
        self.pid = pid
        self.devices = devices
    }
}

/// The control plane's answer: the secrets the engine needs (an `HF_TOKEN`), which never travel in the
/// cluster job's own description (Ray shows a job's environment to anyone who can read its API).
public struct ReplicaRegistrationAnswer: Codable, Sendable, Equatable {
    public var environment: [String: String]

    public init(environment: [String: String]) { self.environment = environment }
}

/// Why a registration was refused, with the HTTP status the control plane answers.
public struct RegistrationRefused: Error, CustomStringConvertible, Sendable {
    public var status: Int
    public var description: String

    public init(_ status: Int, _ description: String) {
        self.status = status
        self.description = description
    }
}

/// Takes launchers' registrations (a cluster provider).
public protocol ReplicaRegistrar: Sendable {
    func register(replicaId: String, token: String, _ registration: ReplicaRegistration) async throws(RegistrationRefused)
        -> ReplicaRegistrationAnswer
}
