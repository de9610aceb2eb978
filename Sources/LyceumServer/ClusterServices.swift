import Controller
import DeploymentStore
import Foundation
import Gateway
import Logging
import PostgresStore
import Routing
import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

/// Keeps this instance's gateway route table equal to the leader's, from the store: a full load at start
/// and every `resyncInterval`, and one route at a time as the leader's notifications arrive. Messages for
/// the fleet (`poke:`, `suspect:`) go to the controller while this instance leads.
struct RouteSync: Service {
    let url: String
    let store: PostgresStore
    let table: RouteTable
    let state: ClusterState
    let resyncInterval: Duration
    let logger: Logger

    func run() async throws {
        let (messages, continuation) = AsyncStream.makeStream(of: String.self, bufferingPolicy: .bufferingNewest(10_000))
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask {
                    while !Task.isCancelled {
                        do {
                            try await PostgresStore.listen(
                                url: url, channel: clusterChannel, logger: logger, ready: { continuation.yield("resync") },
                                receive: { continuation.yield($0) })
                        } catch {
                            if Task.isCancelled { return }
                            logger.warning("route listener lost its connection; reconnecting", metadata: ["error": "\(error)"])
                        }
                        try? await Task.sleep(for: .seconds(1))
                    }
                }
                group.addTask {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: resyncInterval)
                        continuation.yield("resync")
                    }
                }
                group.addTask {
                    // One at a time, in order: a full load never overwrites a newer single route with an older one
                    // it read before.
                    for await message in messages { await handle(message) }
                }
                group.addTask {
                    await withTaskCancellationHandler { await Task.yieldUntilCancelled() } onCancel: { continuation.finish() }
                }
            }
        }
    }

    func handle(_ message: String) async {
        let decoder = JSONDecoder()
        if message == "resync" {
            do {
                var table: [String: RouteTable.Route] = [:]
                for (id, json) in try await store.routes() { table[id] = try decoder.decode(RouteTable.Route.self, from: Data(json.utf8)) }
                self.table.replaceAll(table)
                state.synced.store(true, ordering: .relaxed)
            } catch {
                logger.error("route resync failed; keeping the last table", metadata: ["error": "\(error)"])
            }
        } else if message.hasPrefix("route:") {
            let id = String(message.dropFirst(6))
            do {
                let route = try await store.route(deploymentId: id).map { try decoder.decode(RouteTable.Route.self, from: Data($0.utf8)) }
                table.publish(id, route)
            } catch {
                logger.error("route load failed", metadata: ["deployment.id": "\(id)", "error": "\(error)"])
            }
        } else if let handler = state.fleetHandler.withLock({ $0 }) {
            handler(message)
        }
    }
}

extension Task where Success == Never, Failure == Never {
    /// Sleeps until the task is cancelled.
    static func yieldUntilCancelled() async {
        while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
    }
}

/// Every second: this instance is alive, here is its gateway's traffic; and what the others and the
/// leader are, for the autoscaler's sum, `/cluster` and `/metrics`.
struct Heartbeat: Service {
    let store: PostgresStore
    let state: ClusterState
    let stats: GatewayStats
    let traffic: ClusterTraffic
    let interval: Duration
    let logger: Logger

    func run() async throws {
        try await store.registerInstance(id: state.instanceId, url: state.url.withLock { $0 }, role: state.role.rawValue)
        let encoder = JSONEncoder()
        let decoder = JSONDecoder()
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    let shares = stats.shares()
                    let body = shares.isEmpty ? nil : String(decoding: try encoder.encode(shares), as: UTF8.self)
                    try await store.heartbeat(instanceId: state.instanceId, url: state.url.withLock { $0 }, traffic: body)
                    // Alive: heartbeat within three intervals.
                    let instances = try await store.instances(aliveWithin: max(3, interval.seconds * 3))
                    state.instances.withLock { $0 = instances }
                    var others: [String: [String: TrafficShare]] = [:]
                    for instance in instances where instance.alive && instance.id != state.instanceId {
                        guard let json = instance.traffic else { continue }
                        others[instance.id] = try? decoder.decode([String: TrafficShare].self, from: Data(json.utf8))
                    }
                    traffic.update(others: others)
                    let leader = try await store.leader()
                    state.leader.withLock { $0 = leader }
                } catch {
                    logger.warning("heartbeat failed", metadata: ["error": "\(error)"])
                }
                try await Task.sleep(for: interval)
            }
        }
        do {
            try await store.removeInstance(id: state.instanceId)
        } catch {
            logger.warning("could not deregister this instance", metadata: ["error": "\(error)"])
        }
    }
}

/// First to hear of a graceful shutdown (last in the service list): marks this instance as leaving, so a
/// leader shutting down at the same moment stops its replicas rather than handing them to an instance that
/// is going away too.
struct Departure: Service {
    let store: PostgresStore
    let state: ClusterState
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        do {
            try await store.markLeaving(instanceId: state.instanceId)
        } catch {
            logger.warning("could not mark this instance as leaving", metadata: ["error": "\(error)"])
        }
    }
}

/// Campaigns for the fleet and, once elected, runs it: the controller, the autoscaler and the route mirror,
/// under a new epoch that fences every fleet write. A leader that loses its lock, or finds a newer epoch,
/// exits at once (code 75) so that a supervisor restarts it as a follower; its replicas keep serving and the
/// new leader re-adopts them.
struct Leadership: Service {
    let url: String
    let store: PostgresStore
    let fence: FleetFence
    let fencedStore: PostgresStore
    let state: ClusterState
    let controller: Controller
    let autoscaler: Autoscaler
    let mirror: RouteMirror
    let freezeTimeout: Duration
    let logger: Logger

    func run() async throws {
        guard state.role == .any else {
            logger.info("role gateway: this instance never leads the fleet")
            try? await gracefulShutdown()
            return
        }
        guard let lock = await campaign() else { return }
        let epoch: Int64
        do {
            epoch = try await lock.claim(instanceId: state.instanceId, url: state.url.withLock { $0 })
        } catch {
            await lock.close()
            throw error
        }
        fence.begin(epoch: epoch)
        state.isLeader.store(true, ordering: .relaxed)
        logger.notice("this instance leads the fleet", metadata: ["instance": "\(state.instanceId)", "epoch": "\(epoch)"])
        let controller = controller
        state.fleetHandler.withLock {
            $0 = { message in
                if message.hasPrefix("poke:") {
                    controller.poke(deploymentId: String(message.dropFirst(5)))
                } else if message.hasPrefix("suspect:") {
                    let rest = message.dropFirst(8)
                    let id = rest.prefix { $0 != " " }
                    controller.reportSuspect(replicaId: String(id), reason: String(rest.dropFirst(id.count).drop { $0 == " " }))
                }
            }
        }
        await controller.setClusterHooks(hooks(lock: lock, epoch: epoch))
        // A leader proves it is alive on the lock's connection; a frozen one loses its session (and the lock)
        // after `freezeTimeout`, a cut-off one after the keepalives.
        let logger = logger
        let watch = Task {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: .seconds(1))
                        if Task.isCancelled { return }
                        do { try await lock.heartbeat() } catch { return }
                    }
                }
                group.addTask { await lock.lost() }
                await group.next()
                group.cancelAll()
            }
            guard !Task.isCancelled, !state.handingOver.load(ordering: .relaxed) else { return }
            Self.stepDown("lost the PostgreSQL session that holds the leader lock", store: store, state: state, logger: logger)
        }
        let mirrorTask = Task { [mirror, fencedStore, controller] in await mirror.run(table: controller.routes, store: fencedStore, logger: logger) }
        defer {
            watch.cancel()
            mirrorTask.cancel()
        }
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await controller.run() }
            group.addTask { try await autoscaler.run() }
        }
        watch.cancel()
        await lock.close()
        state.isLeader.store(false, ordering: .relaxed)
    }

    /// Polls for the lock until it is taken (the lock) or the server shuts down (nil).
    func campaign() async -> LeaderLock? {
        var announced = false
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                let lock = try await LeaderLock.connect(url: url, freezeTimeout: freezeTimeout, logger: logger)
                while !Task.isShuttingDownGracefully && !Task.isCancelled && !lock.isClosed {
                    if try await lock.tryAcquire() { return lock }
                    if !announced {
                        logger.info("another instance leads the fleet; this one serves and stands by")
                        announced = true
                    }
                    try? await Task.sleep(for: .milliseconds(200))
                }
                await lock.close()
            } catch {
                logger.warning("leader campaign: cannot reach PostgreSQL; retrying", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
            }
        }
        return nil
    }

    func hooks(lock: LeaderLock, epoch: Int64) -> ClusterHooks {
        var hooks = ClusterHooks()
        let (store, state, mirror, logger, url, freezeTimeout, fence) = (store, state, mirror, logger, url, freezeTimeout, fence)
        hooks.stillLeads = {
            guard !state.deposed.load(ordering: .relaxed), !lock.isClosed || state.reclaimedLock.withLock({ $0 != nil }) else { return false }
            do {
                // The fence's epoch, not the one elected under: a leader that took the fleet back during a
                // failed hand-over leads under a newer one.
                return try await store.leader().epoch == fence.epoch
            } catch {
                logger.error("cannot confirm leadership before acting; not acting", metadata: ["error": "\(error)"])
                return false
            }
        }
        // The store first, then a heartbeat and a bit for every gateway to load the route and publish the
        // requests it still has on the replica.
        hooks.routesPropagated = { await mirror.propagated(settle: .milliseconds(1200)) }
        hooks.handOver = {
            let instances: [InstanceRecord]
            do { instances = try await store.instances(aliveWithin: 3) } catch { return false }
            guard let successor = state.successor(in: instances) else { return false }
            logger.notice("handing the fleet over: replicas keep serving and the next leader re-adopts them", metadata: ["successor": "\(successor.id)"])
            state.handingOver.store(true, ordering: .relaxed)
            do { try await store.markLeaving(instanceId: state.instanceId) } catch {}
            await lock.close()
            // Leave only once another instance has claimed the fleet; if none does, take it back and stop the
            // replicas here, so that none is left without a leader.
            let deadline = ContinuousClock.now + .seconds(5)
            while ContinuousClock.now < deadline {
                do {
                    if try await store.leader().epoch > epoch {
                        do { try await store.removeInstance(id: state.instanceId) } catch {}
                        fflush(nil)
                        exit(0)
                    }
                } catch {}
                try? await Task.sleep(for: .milliseconds(100))
            }
            logger.warning("no instance took the fleet over within 5 s; stopping the replicas here instead")
            do {
                let again = try await LeaderLock.connect(url: url, freezeTimeout: freezeTimeout, logger: logger)
                guard try await again.tryAcquire() else { return false }
                fence.begin(epoch: try await again.claim(instanceId: state.instanceId, url: state.url.withLock { $0 }))
                state.reclaimedLock.withLock { $0 = again }
            } catch {
                logger.error("could not take the fleet back; its replicas keep running for the next leader", metadata: ["error": "\(error)"])
            }
            return false
        }
        return hooks
    }

    /// Stops acting at once (every later fence check fails and no process is stopped or killed from here on),
    /// drops this instance from the list of possible successors (bounded at 1 s), and exits 75.
    static func stepDown(_ why: String, store: PostgresStore, state: ClusterState, logger: Logger) {
        guard !state.deposed.exchange(true, ordering: .relaxed) else { return }
        logger.critical("stepping down: \(why); exiting so that no two instances run the fleet")
        Task {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    do { try await store.removeInstance(id: state.instanceId) } catch {}
                }
                group.addTask { try? await Task.sleep(for: .seconds(1)) }
                await group.next()
                group.cancelAll()
            }
            fflush(nil)
            exit(75)
        }
    }
}
