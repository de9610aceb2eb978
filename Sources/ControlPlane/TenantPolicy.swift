import InferenceCore
import ModelHub

/// What the control plane holds tenants to: create bounds, per-organisation limits, local model files,
/// and which Hub models are already in this server's cache.
public struct TenantPolicy: Sendable {
    public var createLimits = CreateLimits()
    public var quota = OrgQuota()
    public var localModels = LocalModelPolicy()
    /// Whether a Hub repository has files in the model cache (then access must have been granted before).
    public var isModelCached: @Sendable (String) -> Bool = { _ in false }

    public init() {}
}
