import Foundation

/// JSON coders for the wire: snake_case keys, as the contract spells them.
public enum WireJSON {
    public static var encoder: JSONEncoder {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.outputFormatting = [.sortedKeys]
        return e
    }

    public static var decoder: JSONDecoder {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return d
    }

    /// ISO 8601 with milliseconds, UTC: the timestamp format of every answer.
    public static func timestamp(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }
}

public struct CreateDeploymentResponse: Codable, Sendable {
    public var deploymentId: String
    public var status: DeploymentStatus
    public init(deploymentId: String, status: DeploymentStatus) {
        self.deploymentId = deploymentId
        self.status = status
    }
}

public struct ReplicaInfo: Codable, Sendable {
    public var replicaId: String
    public var status: ReplicaStatus
    public var healthy: Bool
    public var lastHealthCheck: String?
    public var failReason: String?
    public var restartCount: Int
    public var createdAt: String
    /// While a replica gets ready: what it is doing, e.g. a model download's progress. Not in the contract;
    /// clients that do not know it ignore it.
    public var progress: String?
    /// Where it runs: `local` for a process of the server, a cluster node's address for a Ray job. Not in the
    /// contract either.
    public var node: String?

    public init(
        replicaId: String, status: ReplicaStatus, healthy: Bool, lastHealthCheck: String?, failReason: String?,
        restartCount: Int, createdAt: String, progress: String? = nil, node: String? = nil
    ) {
        self.node = node
        self.replicaId = replicaId
        self.status = status
        self.healthy = healthy
        self.lastHealthCheck = lastHealthCheck
        self.failReason = failReason
        self.restartCount = restartCount
        self.createdAt = createdAt
        self.progress = progress
    }

    enum CodingKeys: String, CodingKey {
        case replicaId, status, healthy, lastHealthCheck, failReason, restartCount, createdAt, progress, node
    }

    /// Contract fields are always present: a missing value is `null`, never an absent key.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(replicaId, forKey: .replicaId)
        try c.encode(status, forKey: .status)
        try c.encode(healthy, forKey: .healthy)
        try c.encode(lastHealthCheck, forKey: .lastHealthCheck)
        try c.encode(failReason, forKey: .failReason)
        try c.encode(restartCount, forKey: .restartCount)
        try c.encode(createdAt, forKey: .createdAt)
        try c.encode(progress, forKey: .progress)
        try c.encode(node, forKey: .node)
    }
}

public struct DeploymentInfo: Codable, Sendable {
    public var deploymentId: String
    public var hfModelId: String
    public var hardwareProfile: String
    public var status: DeploymentStatus
    public var currentReplicas: Int
    public var desiredReplicas: Int
    public var minReplicas: Int
    public var maxReplicas: Int
    public var targetRps: Double
    public var targetLatencyP95Ms: Double
    public var stabilisationWindow: Int
    public var createdAt: String
    public var replicas: [ReplicaInfo]

    public init(
        deploymentId: String, hfModelId: String, hardwareProfile: String, status: DeploymentStatus,
        currentReplicas: Int, desiredReplicas: Int, minReplicas: Int, maxReplicas: Int, targetRps: Double,
        targetLatencyP95Ms: Double, stabilisationWindow: Int, createdAt: String, replicas: [ReplicaInfo]
    ) {
        self.deploymentId = deploymentId
        self.hfModelId = hfModelId
        self.hardwareProfile = hardwareProfile
        self.status = status
        self.currentReplicas = currentReplicas
        self.desiredReplicas = desiredReplicas
        self.minReplicas = minReplicas
        self.maxReplicas = maxReplicas
        self.targetRps = targetRps
        self.targetLatencyP95Ms = targetLatencyP95Ms
        self.stabilisationWindow = stabilisationWindow
        self.createdAt = createdAt
        self.replicas = replicas
    }
}

public struct DeploymentList: Codable, Sendable {
    public var deployments: [DeploymentInfo]
    public init(deployments: [DeploymentInfo]) { self.deployments = deployments }
}

public struct StopRequest: Codable, Sendable {
    public var deploymentId: String
    public init(deploymentId: String) { self.deploymentId = deploymentId }
}

public struct StopResponse: Codable, Sendable {
    public var deploymentId: String
    public var status: DeploymentStatus
    public init(deploymentId: String, status: DeploymentStatus) {
        self.deploymentId = deploymentId
        self.status = status
    }
}

public struct CatalogueModel: Codable, Sendable {
    public var servingName: String
    public var hfModelId: String
    public var hardwareProfile: String
    public var gpuType: String
    public var gpuCount: Int
    public var pricePerHour: String
    public var isGpuAvailable: Bool?
    public var readyTimeoutS: Int

    public init(
        servingName: String, hfModelId: String, hardwareProfile: String, gpuType: String, gpuCount: Int,
        pricePerHour: String, isGpuAvailable: Bool?, readyTimeoutS: Int
    ) {
        self.servingName = servingName
        self.hfModelId = hfModelId
        self.hardwareProfile = hardwareProfile
        self.gpuType = gpuType
        self.gpuCount = gpuCount
        self.pricePerHour = pricePerHour
        self.isGpuAvailable = isGpuAvailable
        self.readyTimeoutS = readyTimeoutS
    }

    enum CodingKeys: String, CodingKey {
        case servingName, hfModelId, hardwareProfile, gpuType, gpuCount, pricePerHour, isGpuAvailable, readyTimeoutS
    }

    /// `is_gpu_available` is true, false or null, and always present.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(servingName, forKey: .servingName)
        try c.encode(hfModelId, forKey: .hfModelId)
        try c.encode(hardwareProfile, forKey: .hardwareProfile)
        try c.encode(gpuType, forKey: .gpuType)
        try c.encode(gpuCount, forKey: .gpuCount)
        try c.encode(pricePerHour, forKey: .pricePerHour)
        try c.encode(isGpuAvailable, forKey: .isGpuAvailable)
        try c.encode(readyTimeoutS, forKey: .readyTimeoutS)
    }
}

public struct CatalogueResponse: Codable, Sendable {
    public var models: [CatalogueModel]
    public init(models: [CatalogueModel]) { self.models = models }
}

public struct ReplicaLogsResponse: Codable, Sendable {
    public var errorLogs: String
    public init(errorLogs: String) { self.errorLogs = errorLogs }
}

public struct PriceEntry: Codable, Sendable {
    public var hardwareProfile: String
    public var gpuType: String
    public var gpuCount: Int
    public var pricePerHour: String
    public var unit: String
    /// The published client's price shape: which meter, its unit price, and what it applies to.
    public var meterSlug: String
    public var unitPrice: String
    public var appliesTo: PriceScope

    public init(hardwareProfile: String, gpuType: String, gpuCount: Int, pricePerHour: String) {
        self.hardwareProfile = hardwareProfile
        self.gpuType = gpuType
        self.gpuCount = gpuCount
        self.pricePerHour = pricePerHour
        self.unit = "replica-hour"
        self.meterSlug = "dedicated_inference_replica_hours"
        self.unitPrice = pricePerHour
        self.appliesTo = PriceScope(hardwareProfile: hardwareProfile, deploymentId: nil)
    }
}

/// What a price applies to; `deployment_id` is always present (null for a profile-wide price).
public struct PriceScope: Codable, Sendable {
    public var hardwareProfile: String
    public var deploymentId: String?

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(hardwareProfile, forKey: .hardwareProfile)
        try c.encode(deploymentId, forKey: .deploymentId)
    }
}

public struct PricingResponse: Codable, Sendable {
    public var currency: String
    public var prices: [PriceEntry]
    public init(currency: String = "USD", prices: [PriceEntry]) {
        self.currency = currency
        self.prices = prices
    }
}

public struct CreateKeyRequest: Codable, Sendable {
    public var org: String
    public init(org: String) { self.org = org }
}

public struct CreateKeyResponse: Codable, Sendable {
    public var apiKey: String
    public var org: String
    public init(apiKey: String, org: String) {
        self.apiKey = apiKey
        self.org = org
    }
}

public struct EventInfo: Codable, Sendable {
    public var at: String
    public var kind: String
    public var message: String
    public init(at: String, kind: String, message: String) {
        self.at = at
        self.kind = kind
        self.message = message
    }
}

public struct EventList: Codable, Sendable {
    public var deploymentId: String
    public var events: [EventInfo]
    public init(deploymentId: String, events: [EventInfo]) {
        self.deploymentId = deploymentId
        self.events = events
    }
}

/// `{"detail": "..."}`: the control plane's shape for errors other than validation.
public struct DetailMessage: Codable, Sendable {
    public var detail: String
    public init(detail: String) { self.detail = detail }
}

/// `{"detail": [...]}`: the control plane's shape for validation errors (422).
public struct DetailIssues: Codable, Sendable {
    public var detail: [ValidationIssue]
    public init(detail: [ValidationIssue]) { self.detail = detail }
}

/// Replica time and its cost for one deployment over a period.
public struct DeploymentUsage: Codable, Sendable {
    public var deploymentId: String
    public var hardwareProfile: String
    public var replicaSeconds: Double
    /// Decimal string in `currency`.
    public var cost: String

    public init(deploymentId: String, hardwareProfile: String, replicaSeconds: Double, cost: String) {
        self.deploymentId = deploymentId
        self.hardwareProfile = hardwareProfile
        self.replicaSeconds = replicaSeconds
        self.cost = cost
    }
}

public struct UsageResponse: Codable, Sendable {
    public var from: String
    public var to: String
    public var currency: String
    public var replicaSeconds: Double
    public var cost: String
    public var deployments: [DeploymentUsage]

    public init(from: String, to: String, currency: String, replicaSeconds: Double, cost: String, deployments: [DeploymentUsage]) {
        self.from = from
        self.to = to
        self.currency = currency
        self.replicaSeconds = replicaSeconds
        self.cost = cost
        self.deployments = deployments
    }
}
