import InferenceCore
import Synchronization

/// What the gateway needs to route a request to a deployment, published by the controller.
///
/// A lock around a dictionary rather than an actor: the gateway reads it on every request, synchronously.
public final class RouteTable: Sendable {
    /// A ready replica and where it listens.
    public struct Endpoint: Sendable, Equatable, Codable {
        public var replicaId: String
        /// Loopback for local processes, a node's address for a cluster provider.
        public var address: ReplicaAddress
        public var servedModelName: String

        public var host: String { address.host }
        public var port: Int { address.port }

        public init(replicaId: String, address: ReplicaAddress, servedModelName: String) {
            self.replicaId = replicaId
            self.address = address
            self.servedModelName = servedModelName
        }

        public init(replicaId: String, host: String = "127.0.0.1", port: Int, servedModelName: String) {
            self.init(replicaId: replicaId, address: ReplicaAddress(host: host, port: port), servedModelName: servedModelName)
        }
    }

    public struct Route: Sendable, Equatable, Codable {
        public var orgId: String
        public var status: DeploymentStatus
        public var endpoints: [Endpoint]
        /// Why no replica is ready, when none is (waiting for devices, crash-looping, ...).
        public var reason: String?

        public init(orgId: String, status: DeploymentStatus, endpoints: [Endpoint], reason: String?) {
            self.orgId = orgId
            self.status = status
            self.endpoints = endpoints
            self.reason = reason
        }
    }

    private let routes = Mutex<[String: Route]>([:])
    /// Told of every publish, in order (the leader mirrors its table into a shared store from it).
    private let observer: (@Sendable (String) -> Void)?

    /// Requests waiting for a deployment's route to change (a replica becoming ready, a resume), by deployment.
    private enum Slot {
        case waiting(CheckedContinuation<Void, Never>)
        /// The waiter gave up before it registered: registering must not wait.
        case abandoned
    }

    private let waiters = Mutex<(next: UInt64, slots: [String: [UInt64: Slot]])>((0, [:]))

    public init(observer: (@Sendable (_ deploymentId: String) -> Void)? = nil) {
        self.observer = observer
    }

    /// Waits until the deployment's route is published again, or `limit` passes: a request waiting for a
    /// replica is woken by the change itself, not by polling.
    public func waitForChange(_ deploymentId: String, upTo limit: Duration) async {
        let token = waiters.withLock { w -> UInt64 in
            w.next &+= 1
            return w.next
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    let resumeNow = self.waiters.withLock { w -> Bool in
                        if case .abandoned? = w.slots[deploymentId]?[token] {
                            w.slots[deploymentId]?[token] = nil
                            return true
                        }
                        w.slots[deploymentId, default: [:]][token] = .waiting(c)
                        return false
                    }
                    if resumeNow { c.resume() }
                }
            }
            group.addTask { try? await Task.sleep(for: limit) }
            await group.next()
            group.cancelAll()
            let waiting = waiters.withLock { w -> CheckedContinuation<Void, Never>? in
                switch w.slots[deploymentId]?[token] {
                case .waiting(let c)?:
                    w.slots[deploymentId]?[token] = nil
                    if w.slots[deploymentId]?.isEmpty == true { w.slots[deploymentId] = nil }
                    return c
                case .abandoned?:
                    return nil
                case nil:
                    // Either woken by a publish already, or not registered yet: mark it so registering returns at once.
                    w.slots[deploymentId, default: [:]][token] = .abandoned
                    return nil
                }
            }
            waiting?.resume()
        }
        // A publish may have raced with the abandoned marker; drop it either way.
        waiters.withLock { w in
            if case .abandoned? = w.slots[deploymentId]?[token] { w.slots[deploymentId]?[token] = nil }
            if w.slots[deploymentId]?.isEmpty == true { w.slots[deploymentId] = nil }
        }
    }

    public func route(_ deploymentId: String) -> Route? {
        routes.withLock { $0[deploymentId] }
    }

    public func publish(_ deploymentId: String, _ route: Route?) {
        let changed = routes.withLock { table -> Bool in
            defer { table[deploymentId] = route }
            return table[deploymentId] != route
        }
        if changed { observer?(deploymentId) }
        let woken = waiters.withLock { w -> [CheckedContinuation<Void, Never>] in
            guard let slots = w.slots[deploymentId] else { return [] }
            var out: [CheckedContinuation<Void, Never>] = []
            var kept: [UInt64: Slot] = [:]
            for (token, slot) in slots {
                switch slot {
                case .waiting(let c): out.append(c)
                case .abandoned: kept[token] = slot
                }
            }
            w.slots[deploymentId] = kept.isEmpty ? nil : kept
            return out
        }
        for c in woken { c.resume() }
    }

    /// Every published route, for `/metrics`.
    public func snapshot() -> [String: Route] { routes.withLock { $0 } }

    /// Replaces the whole table (a gateway's full resync from the store), waking waiters of routes that changed.
    public func replaceAll(_ table: [String: Route]) {
        let old = snapshot()
        for (id, route) in table where old[id] != route { publish(id, route) }
        for id in old.keys where table[id] == nil { publish(id, nil) }
    }
}
