import Foundation

/// One replica process's billed interval: from its launch until its process stopped.
/// An open run (no `endedAt`) is a replica running now.
public struct ReplicaRunRecord: Codable, Sendable {
    public var id: Int64?
    public var replicaId: String
    public var deploymentId: String
    public var orgId: String
    public var hardwareProfile: String
    /// The price in force when the run began, per replica-hour.
    public var pricePerHour: String
    public var startedAt: Date
    public var endedAt: Date?

    public init(replicaId: String, deploymentId: String, orgId: String, hardwareProfile: String, pricePerHour: String, startedAt: Date) {
        self.replicaId = replicaId
        self.deploymentId = deploymentId
        self.orgId = orgId
        self.hardwareProfile = hardwareProfile
        self.pricePerHour = pricePerHour
        self.startedAt = startedAt
    }


    /// Seconds of this run inside `[from, to]`, with an open run counted up to `now`.
    public func seconds(from: Date, to: Date, now: Date) -> Double {
        let end = min(endedAt ?? now, to)
        let start = max(startedAt, from)
        return max(0, end.timeIntervalSince(start))
    }
}
