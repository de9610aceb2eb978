/// What one organisation may hold at once, so that no tenant can take capacity from the others. The
/// operator's own organisations (those with an admin key) are not limited by devices or replicas.
public struct OrgQuota: Sendable, Equatable, Codable {
    /// Devices of one hardware profile an organisation may hold; nil means half the profile's pool
    /// (at least one), so a second tenant always finds room.
    public var maxDevicesPerProfile: Int?
    /// Replicas (summed over its active deployments) an organisation may ask for.
    public var maxReplicas: Int
    /// Data-plane requests in flight at once, and their request bodies' bytes.
    public var maxRequestsInFlight: Int
    public var maxRequestBytesInFlight: Int
    /// Stored `X-Timeout-S` results, and their bytes.
    public var maxStoredResults: Int
    public var maxStoredResultBytes: Int

    public init(
        maxDevicesPerProfile: Int? = nil, maxReplicas: Int = 64, maxRequestsInFlight: Int = 512, maxRequestBytesInFlight: Int = 256 << 20,
        maxStoredResults: Int = 1000, maxStoredResultBytes: Int = 64 << 20
    ) {
        self.maxDevicesPerProfile = maxDevicesPerProfile
        self.maxReplicas = maxReplicas
        self.maxRequestsInFlight = maxRequestsInFlight
        self.maxRequestBytesInFlight = maxRequestBytesInFlight
        self.maxStoredResults = maxStoredResults
        self.maxStoredResultBytes = maxStoredResultBytes
    }

    enum CodingKeys: String, CodingKey {
        case maxDevicesPerProfile, maxReplicas, maxRequestsInFlight, maxRequestBytesInFlight, maxStoredResults, maxStoredResultBytes
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = OrgQuota()
        maxDevicesPerProfile = try c.decodeIfPresent(Int.self, forKey: .maxDevicesPerProfile).map { max(0, $0) }
        maxReplicas = max(1, try c.decodeIfPresent(Int.self, forKey: .maxReplicas) ?? d.maxReplicas)
        maxRequestsInFlight = max(1, try c.decodeIfPresent(Int.self, forKey: .maxRequestsInFlight) ?? d.maxRequestsInFlight)
        maxRequestBytesInFlight = max(1 << 20, try c.decodeIfPresent(Int.self, forKey: .maxRequestBytesInFlight) ?? d.maxRequestBytesInFlight)
        maxStoredResults = max(0, try c.decodeIfPresent(Int.self, forKey: .maxStoredResults) ?? d.maxStoredResults)
        maxStoredResultBytes = max(0, try c.decodeIfPresent(Int.self, forKey: .maxStoredResultBytes) ?? d.maxStoredResultBytes)
    }

    /// Devices of `profile` one tenant organisation may hold.
    public func devices(of profile: HardwareProfile) -> Int {
        maxDevicesPerProfile ?? max(1, (profile.devices.count + 1) / 2)
    }
}
