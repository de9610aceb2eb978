import DeploymentStore
import Hummingbird

/// The request context of every route: the authenticated caller, once a middleware has checked the key.
public struct LyceumRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var caller: Caller?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        caller = nil
    }

    /// Bodies over 1 MiB are refused with 413 before they are read whole.
    public var maxUploadSize: Int { 1 << 20 }
}
