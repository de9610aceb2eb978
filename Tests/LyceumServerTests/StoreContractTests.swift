import DeploymentStore
import Foundation
import InferenceCore
import Logging
import PostgresNIO
import PostgresStore
import SQLiteStore
import Testing

/// Each store under the same contract, so a test of the fleet on the in-memory store says something
/// about the SQLite and PostgreSQL stores. PostgreSQL is a real server: scripts/test.sh starts one and
/// sets LYCEUM_TEST_POSTGRES_URL (a `swift test` without it runs the other stores only).
enum StoreKind: String, CaseIterable, CustomTestStringConvertible {
    case sqlite, memory, postgres

    var testDescription: String { rawValue }

    static var available: [StoreKind] { postgresURL == nil ? [.sqlite, .memory] : allCases }

    static var postgresURL: String? { ProcessInfo.processInfo.environment["LYCEUM_TEST_POSTGRES_URL"] }

    /// Runs `body` on a new, empty store of this kind, then closes it.
    func withStore(_ body: (any DeploymentStore) async throws -> Void) async throws {
        switch self {
        case .sqlite: try await body(try SQLiteStore(path: try temporaryDirectory() + "/lyceum.db"))
        case .memory: try await body(InMemoryStore())
        case .postgres:
            let store = try await PostgresStore(url: try await Self.freshPostgresDatabase(), logger: quietLogger)
            do {
                try await body(store)
            } catch {
                await store.shutdown()
                throw error
            }
            await store.shutdown()
        }
    }

    /// A new empty database on the test server; its URL.
    static func freshPostgresDatabase() async throws -> String {
        let admin = try #require(postgresURL, "LYCEUM_TEST_POSTGRES_URL is not set")
        let name = "t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        let client = PostgresClient(configuration: try PostgresStore.configuration(url: admin))
        let runner = Task { await client.run() }
        defer { runner.cancel() }
        try await client.query("CREATE DATABASE \(unescaped: name)")
        var url = try #require(URLComponents(string: admin))
        url.path = "/" + name
        return try #require(url.string)
    }
}

@Suite("Store contract, on every store")
struct StoreContractTests {
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    func deployment(_ id: String, org: String, at seconds: Double, min: Int = 1) -> DeploymentRecord {
        let spec = DeploymentSpec(
            hfModelId: "m/x", hardwareProfile: "sim.h100", targetRps: 5, targetLatencyP95Ms: 100, stabilisationWindow: 30, minReplicas: min, maxReplicas: 4)
        return DeploymentRecord(id: id, orgId: org, spec: spec, hfTokenSealed: nil, now: t0 + seconds)
    }

    @Test("organisations, keys and grants", arguments: StoreKind.available)
    func organisations(kind: StoreKind) async throws {
        try await kind.withStore { store in
            let acme = try await store.ensureOrganization(named: "acme")
            #expect(try await store.ensureOrganization(named: "acme").id == acme.id, "ensure is idempotent")
            #expect(try await store.organization(id: acme.id)?.name == "acme")
            #expect(try await store.organization(named: "nobody") == nil)
            #expect(try await store.hasAdminKey() == false)
            try await store.insertKey(APIKeyRecord(id: "k1", orgId: acme.id, keyHash: "h1", prefix: "lk_1", isAdmin: true, createdAt: t0))
            await #expect(throws: (any Error).self, "a key hash is unique") {
                try await store.insertKey(APIKeyRecord(id: "k2", orgId: acme.id, keyHash: "h1", prefix: "lk_1", isAdmin: false, createdAt: t0))
            }
            #expect(try await store.hasAdminKey())
            #expect(try await store.adminOrgIds() == [acme.id])
            #expect(try await store.key(hash: "h1")?.id == "k1")
            try await store.grantModel(orgId: acme.id, repo: "Org/Model")
            #expect(try await store.hasModelGrant(orgId: acme.id, repo: "org/model"), "repos compare without case")
            #expect(try await store.hasModelGrant(orgId: "other", repo: "org/model") == false)
        }
    }

    @Test("deployments: newest first, pages, terminated ones only when asked, updates stamped", arguments: StoreKind.available)
    func deployments(kind: StoreKind) async throws {
        try await kind.withStore { store in
            let o = try await store.ensureOrganization(named: "o").id
            let other = try await store.ensureOrganization(named: "other").id
            await #expect(throws: (any Error).self, "a deployment belongs to an organisation that exists") {
                try await store.insert(deployment("orphan", org: "nobody", at: 0), event: "made")
            }
            for i in 0..<5 { try await store.insert(deployment("d\(i)", org: o, at: Double(i)), event: "made \(i)") }
            try await store.insert(deployment("x", org: other, at: 9, min: 3), event: "made")
            await #expect(throws: (any Error).self, "an id is unique") { try await store.insert(deployment("d0", org: o, at: 0), event: "again") }
            try await store.updateDeployment(id: "d1", now: t0 + 100) { $0.status = .stopped }
            #expect(try await store.deployment(id: "d1")?.updatedAt == t0 + 100)
            #expect(try await store.updateDeployment(id: "missing") { $0.status = .running } == nil)
            #expect(try await store.deployments(orgId: o, includeTerminated: false).map(\.id) == ["d4", "d3", "d2", "d0"])
            #expect(try await store.deployments(orgId: o, includeTerminated: true).map(\.id) == ["d4", "d3", "d2", "d1", "d0"])
            #expect(try await store.deployments(orgId: o, includeTerminated: true, limit: 2, offset: 1).map(\.id) == ["d3", "d2"])
            #expect(try await store.deployments(orgId: o, includeTerminated: true, limit: nil, offset: 4).map(\.id) == ["d0"])
            #expect(Set(try await store.unstoppedDeployments().map(\.id)) == ["d0", "d2", "d3", "d4", "x"])
            try await store.updateDeployment(id: "d2") { $0.status = .paused }
            try await store.updateDeployment(id: "d3") { $0.desiredReplicas = 3 }
            #expect(try await store.desiredReplicaCount(orgId: o) == 1 + 3 + 1, "max(desired, min) over d0, d3, d4; paused and stopped ones hold none")
            #expect(try await store.events(deploymentId: "d0").map(\.message) == ["made 0"])
        }
    }

    @Test("replicas: by deployment oldest first, live ones, upserts", arguments: StoreKind.available)
    func replicas(kind: StoreKind) async throws {
        try await kind.withStore { store in
            let o = try await store.ensureOrganization(named: "o").id
            for id in ["a", "b", "c"] { try await store.insert(deployment(id, org: o, at: 0), event: "made") }
            await #expect(throws: (any Error).self, "a replica belongs to a deployment that exists") {
                try await store.insert(ReplicaRecord(id: "z", deploymentId: "nowhere", now: t0))
            }
            try await store.insert(ReplicaRecord(id: "a2", deploymentId: "a", now: t0 + 2))
            try await store.insert(ReplicaRecord(id: "a1", deploymentId: "a", now: t0 + 1))
            try await store.insert(ReplicaRecord(id: "b1", deploymentId: "b", now: t0))
            try await store.updateReplica(id: "a2") { $0.status = .running; $0.pid = 7; $0.handle = "pid:7" }
            try await store.updateReplica(id: "b1") { $0.status = .stopped }
            #expect(try await store.replicas(deploymentId: "a").map(\.id) == ["a1", "a2"])
            let grouped = try await store.replicas(deploymentIds: ["a", "b", "c"])
            #expect(grouped["a"]?.map(\.id) == ["a1", "a2"] && grouped["b"]?.map(\.id) == ["b1"] && grouped["c"] == nil)
            #expect(Set(try await store.liveReplicas().map(\.id)) == ["a1", "a2"], "pending and running are live; stopped is not")
            var b1 = try #require(try await store.replica(id: "b1"))
            b1.failReason = "gone"
            try await store.save(b1)
            try await store.save(ReplicaRecord(id: "c1", deploymentId: "c", now: t0))
            #expect(try await store.replica(id: "b1")?.failReason == "gone")
            #expect(try await store.replica(id: "c1") != nil)
            #expect(try await store.replica(id: "a2")?.pid == 7)
            #expect(try await store.replica(id: "a2")?.handle == "pid:7")
        }
    }

    @Test("events: the last ones, oldest first", arguments: StoreKind.available)
    func events(kind: StoreKind) async throws {
        try await kind.withStore { store in
            for i in 0..<10 { try await store.addEvent(deploymentId: "d", kind: "k", message: "\(i)", at: t0 + Double(i)) }
            try await store.addEvent(deploymentId: "e", kind: "k", message: "other")
            #expect(try await store.events(deploymentId: "d", limit: 3).map(\.message) == ["7", "8", "9"])
            #expect(try await store.events(deploymentId: "d").count == 10)
        }
    }

    @Test("metering: runs open and close (never before they began) and overlap a window", arguments: StoreKind.available)
    func metering(kind: StoreKind) async throws {
        try await kind.withStore { store in
            func run(_ replica: String, _ deployment: String, at: Double) -> ReplicaRunRecord {
                ReplicaRunRecord(replicaId: replica, deploymentId: deployment, orgId: "o", hardwareProfile: "p", pricePerHour: "2.00", startedAt: t0 + at)
            }
            try await store.openRun(run("r1", "d", at: 0))
            try await store.openRun(run("r2", "d", at: 50))
            try await store.openRun(run("r3", "e", at: 10))
            try await store.closeRun(replicaId: "r1", at: t0 + 20)
            try await store.closeRun(replicaId: "r2", at: t0 + 40)
            let all = try await store.runs(orgId: "o", deploymentId: nil, from: t0, to: t0 + 100)
            #expect(all.map(\.replicaId) == ["r1", "r3", "r2"])
            #expect(all.first { $0.replicaId == "r2" }?.endedAt == t0 + 50, "closed at its start, not before")
            #expect(try await store.runs(orgId: "o", deploymentId: "d", from: t0 + 30, to: t0 + 100).map(\.replicaId) == ["r2"])
            #expect(try await store.runs(orgId: "o", deploymentId: "e", from: t0 + 500, to: t0 + 600).map(\.replicaId) == ["r3"], "an open run overlaps every later window")
            #expect(try await store.runs(orgId: "someone", deploymentId: nil, from: t0, to: t0 + 100).isEmpty)
        }
    }

    @Test("request results: a pending row never replaces a result; pruning; usage", arguments: StoreKind.available)
    func results(kind: StoreKind) async throws {
        try await kind.withStore { store in
            try await store.saveResult(RequestResultRecord(id: "q", orgId: "o", deploymentId: "d", status: "completed", httpStatus: 200, body: Data("{}".utf8), createdAt: t0, completedAt: t0))
            try await store.insertPendingResult(id: "q", orgId: "o", deploymentId: "d")
            try await store.insertPendingResult(id: "p", orgId: "o", deploymentId: "d", now: t0 + 100)
            #expect(try await store.result(id: "q")?.status == "completed")
            #expect(try await store.result(id: "p")?.status == "pending")
            let usage = try await store.resultUsage(orgId: "o")
            #expect(usage.count == 2 && usage.bytes == 2)
            try await store.pruneResults(olderThan: t0 + 50)
            #expect(try await store.result(id: "q") == nil)
            #expect(try await store.result(id: "p") != nil)
        }
    }
}

@Suite("PostgreSQL store")
struct PostgresStoreTests {
    /// Several instances starting at the same moment on an empty database: each migration is applied
    /// exactly once (the advisory lock), and every instance then works.
    @Test("instances starting at once apply each migration exactly once", .enabled(if: StoreKind.postgresURL != nil))
    func concurrentMigrations() async throws {
        let url = try await StoreKind.freshPostgresDatabase()
        let stores = try await withThrowingTaskGroup(of: PostgresStore.self) { group in
            for _ in 0..<6 { group.addTask { try await PostgresStore(url: url, logger: quietLogger) } }
            return try await group.reduce(into: [PostgresStore]()) { $0.append($1) }
        }
        let client = PostgresClient(configuration: try PostgresStore.configuration(url: url))
        let runner = Task { await client.run() }
        let rows = try await client.query("SELECT version FROM schema_migrations ORDER BY version").collect()
        let versions = try rows.map { try $0.decode(Int64.self) }
        runner.cancel()
        #expect(versions == PostgresSchemaVersions.all, "each once")
        for (i, store) in stores.enumerated() { _ = try await store.ensureOrganization(named: "org\(i % 2)") }
        #expect(try await stores[0].organization(named: "org1") != nil)
        for store in stores { await store.shutdown() }
    }

    @Test("a store URL that is not postgres:// is refused with the shape it wants")
    func badURL() {
        #expect(throws: PostgresStoreError.self) { try PostgresStore.configuration(url: "mysql://x@h/db") }
        #expect(throws: PostgresStoreError.self) { try PostgresStore.configuration(url: "postgres:///db") }
        #expect((try? PostgresStore.configuration(url: "postgres://u:p@db.internal:6543/lyceum"))?.port == 6543)
    }
}

/// The pool logs a cancelled connection attempt at shutdown at info level: not a test's business.
let quietLogger: Logger = {
    var logger = Logger(label: "store-test")
    logger.logLevel = .error
    return logger
}()
