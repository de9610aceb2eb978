import InferenceCore
import Synchronization

/// What the gateway needs to route a request to a deployment, published by the controller.
///
/// A lock around a dictionary rather than an actor: the gateway reads it on every request, synchronously.
public final class RouteTable: Sendable {
    /// A ready replica's address.
    public struct Endpoint: Sendable, Equatable {
        public var replicaId: String
        public var port: Int
        public var servedModelName: String

        public init(replicaId: String, port: Int, servedModelName: String) {
            self.replicaId = replicaId
            self.port = port
            self.servedModelName = servedModelName
        }
    }

    public struct Route: Sendable {
        public var orgId: String
        public var status: DeploymentStatus
        public var endpoints: [Endpoint]
        /// Why no replica is ready, when none is (waiting for devices, crash-looping, ...).
        public var reason: String?
    }

    private let routes = Mutex<[String: Route]>([:])

    public init() {}

    public func route(_ deploymentId: String) -> Route? {
        routes.withLock { $0[deploymentId] }
    }

    public func publish(_ deploymentId: String, _ route: Route?) {
        routes.withLock { $0[deploymentId] = route }
    }

    /// Every published route, for `/metrics`.
    public func snapshot() -> [String: Route] { routes.withLock { $0 } }
}
