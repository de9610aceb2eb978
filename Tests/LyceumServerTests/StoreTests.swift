import Foundation
import Testing
@testable import DeploymentStore
import SQLiteStore
import InferenceCore

func temporaryDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "lyceum-test-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

@Suite("SQLite store")
struct StoreTests {
    @Test("deployments, replicas and events survive reopening the file")
    func persistence() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/lyceum.db"
        let orgId: String
        do {
            let store = try SQLiteStore(path: path)
            orgId = try await store.ensureOrganization(named: "acme").id
            let spec = DeploymentSpec(hfModelId: "m/x", hardwareProfile: "sim.h100", targetRps: 5, targetLatencyP95Ms: 100, stabilisationWindow: 30, minReplicas: 2, maxReplicas: 4)
            try await store.insert(DeploymentRecord(id: "d1", orgId: orgId, spec: spec, hfTokenSealed: nil, now: Date()), event: "created")
            try await store.insert(ReplicaRecord(id: "r1", deploymentId: "d1", now: Date()))
            try await store.updateReplica(id: "r1") { $0.status = .running; $0.pid = 42; $0.healthy = true }
            try await store.updateDeployment(id: "d1") { $0.status = .running }
        }
        let reopened = try SQLiteStore(path: path)
        let d = try #require(try await reopened.deployment(id: "d1"))
        #expect(d.status == .running && d.desiredReplicas == 2 && d.maxReplicas == 4 && d.orgId == orgId)
        let live = try await reopened.liveReplicas()
        #expect(live.map(\.id) == ["r1"] && live[0].pid == 42)
        #expect(try await reopened.events(deploymentId: "d1").map(\.kind) == ["created"])
        #expect(try await reopened.deployments(orgId: "someone-else", includeTerminated: true).isEmpty)
    }

    @Test("keys are stored hashed and resolve to their organisation")
    func keys() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try SQLiteStore(path: dir + "/lyceum.db")
        let auth = Authenticator(store: store)
        let key = try await auth.createKey(org: "acme", isAdmin: false)
        #expect(key.hasPrefix("lk_") && key.count == 43)
        let caller = try #require(try await auth.caller(authorization: "Bearer \(key)"))
        #expect(caller.isAdmin == false)
        #expect(try await auth.caller(authorization: "Bearer lk_wrong") == nil)
        #expect(try await auth.caller(authorization: key) == nil)
        #expect(try await store.key(hash: key) == nil, "the clear key must not be stored")
        #expect(try await store.key(hash: APIKeys.hash(key))?.orgId == caller.orgId)
    }

    @Test("a pending result never overwrites a completed one, whichever is written first")
    func resultsRace() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try SQLiteStore(path: dir + "/lyceum.db")
        try await store.saveResult(RequestResultRecord(id: "q", orgId: "o", deploymentId: "d", status: "completed", httpStatus: 200, body: Data("{}".utf8), createdAt: Date(), completedAt: Date()))
        try await store.insertPendingResult(id: "q", orgId: "o", deploymentId: "d")
        #expect(try await store.result(id: "q")?.status == "completed")
    }

    @Test("sealed tokens open with the same key file and the file is private")
    func sealing() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let sealed = try SecretSealer(keyFile: dir + "/secret.key").seal("hf_secret_token")
        #expect(!String(decoding: sealed, as: UTF8.self).contains("hf_secret_token"))
        #expect(try SecretSealer(keyFile: dir + "/secret.key").open(sealed) == "hf_secret_token")
        let mode = try FileManager.default.attributesOfItem(atPath: dir + "/secret.key")[.posixPermissions] as? Int
        #expect(mode == 0o600)
    }
}
