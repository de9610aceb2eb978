import Foundation
import InferenceCore

/// An organisation: the unit of ownership and isolation.
public struct OrganizationRecord: Codable, Sendable {
    public var id: String
    public var name: String
    public var createdAt: Date

    public init(id: String, name: String, createdAt: Date) {
        self.id = id
        self.name = name
        self.createdAt = createdAt
    }
}

/// An API key, stored only as the SHA-256 of the key; `prefix` lets operators recognise it.
public struct APIKeyRecord: Codable, Sendable {
    public var id: String
    public var orgId: String
    public var keyHash: String
    public var prefix: String
    public var isAdmin: Bool
    public var createdAt: Date

    public init(id: String, orgId: String, keyHash: String, prefix: String, isAdmin: Bool, createdAt: Date) {
        self.id = id
        self.orgId = orgId
        self.keyHash = keyHash
        self.prefix = prefix
        self.isAdmin = isAdmin
        self.createdAt = createdAt
    }
}

/// A deployment as stored; the API answer is built from it and its replicas.
public struct DeploymentRecord: Codable, Sendable {
    public var id: String
    public var orgId: String
    public var hfModelId: String
    public var hardwareProfile: String
    public var status: DeploymentStatus
    public var desiredReplicas: Int
    public var minReplicas: Int
    public var maxReplicas: Int
    public var targetRps: Double
    public var targetLatencyP95Ms: Double
    public var stabilisationWindow: Int
    /// The gated-model token, sealed with the data directory's key; never returned by the API.
    public var hfTokenSealed: Data?
    public var createdAt: Date
    public var updatedAt: Date
    public var stoppedAt: Date?
    public var lastRequestAt: Date?

    public init(id: String, orgId: String, spec: DeploymentSpec, hfTokenSealed: Data?, now: Date) {
        self.id = id
        self.orgId = orgId
        self.hfModelId = spec.hfModelId
        self.hardwareProfile = spec.hardwareProfile
        self.status = .created
        self.desiredReplicas = spec.minReplicas
        self.minReplicas = spec.minReplicas
        self.maxReplicas = spec.maxReplicas
        self.targetRps = spec.targetRps
        self.targetLatencyP95Ms = spec.targetLatencyP95Ms
        self.stabilisationWindow = spec.stabilisationWindow
        self.hfTokenSealed = hfTokenSealed
        self.createdAt = now
        self.updatedAt = now
        self.stoppedAt = nil
        self.lastRequestAt = nil
    }
}

/// One replica slot of a deployment. Restarts reuse the slot (and its log file); `handle`, `host` and
/// `port` describe the current run, so a restarted server can find and re-adopt it.
public struct ReplicaRecord: Codable, Sendable {
    public var id: String
    public var deploymentId: String
    public var status: ReplicaStatus
    public var healthy: Bool
    public var lastHealthCheck: Date?
    public var failReason: String?
    /// The local process's id, for operators (the handle is what the platform re-attaches by).
    public var pid: Int32?
    /// The provider's name for the current run (`pid:1234` for a local process), opaque to everyone else.
    public var handle: String?
    public var port: Int?
    /// The host its engine listens on (nil in rows written before hosts were recorded: loopback).
    public var host: String?
    /// Devices allotted from the profile's pool, comma-separated.
    public var devices: String
    public var restartCount: Int
    /// Failed starts in a row; reset once the replica has been healthy.
    public var consecutiveFailures: Int
    public var createdAt: Date
    public var startedAt: Date?
    public var stoppedAt: Date?
    public var lastSeenAlive: Date?
    /// What a replica that is getting ready is doing (a model download's progress), or nil.
    public var progress: String?

    public init(id: String, deploymentId: String, now: Date) {
        self.id = id
        self.deploymentId = deploymentId
        self.status = .pending
        self.healthy = false
        self.lastHealthCheck = nil
        self.failReason = nil
        self.pid = nil
        self.handle = nil
        self.port = nil
        self.host = nil
        self.devices = ""
        self.restartCount = 0
        self.consecutiveFailures = 0
        self.createdAt = now
        self.startedAt = nil
        self.stoppedAt = nil
        self.lastSeenAlive = nil
        self.progress = nil
    }

    public var deviceList: [String] { devices.isEmpty ? [] : devices.split(separator: ",").map(String.init) }
}

/// A decision or lifecycle step, in plain words, for `events` and for diagnosing what happened.
public struct EventRecord: Codable, Sendable {
    public var id: Int64?
    public var deploymentId: String
    public var at: Date
    public var kind: String
    public var message: String

    public init(id: Int64?, deploymentId: String, at: Date, kind: String, message: String) {
        self.id = id
        self.deploymentId = deploymentId
        self.at = at
        self.kind = kind
        self.message = message
    }

}

