import DeploymentStore
import Hummingbird
import NIOCore

/// The request context of every route: the authenticated caller, once a middleware has checked the key.
public struct LyceumRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var caller: Caller?
    /// The caller's connection, to notice a caller that has gone.
    let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        caller = nil
        channel = source.channel
    }

    /// False once the caller's connection has closed.
    public var callerConnected: Bool { channel.isActive }

    /// Bodies over 1 MiB are refused with 413 before they are read whole.
    public var maxUploadSize: Int { 1 << 20 }
}
