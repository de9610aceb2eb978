import Foundation
import Synchronization

/// Who a request is from, once its API key is checked.
public struct Caller: Sendable {
    public var orgId: String
    public var isAdmin: Bool
}

/// Resolves `Authorization: Bearer lk_...` to an organisation.
///
/// Keys are looked up by hash; known keys are cached so the data plane's hot path does no database read.
public final class Authenticator: Sendable {
    private let store: any DeploymentStore
    private let cache = Mutex<[String: Caller]>([:])

    public init(store: any DeploymentStore) { self.store = store }

    /// The caller for an `Authorization` header value, or nil when the key is missing or unknown.
    public func caller(authorization: String?) async throws -> Caller? {
        guard let authorization else { return nil }
        let parts = authorization.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        let key = parts[1].trimmingCharacters(in: .whitespaces)
        guard key.hasPrefix("lk_"), key.count < 200 else { return nil }
        let hash = APIKeys.hash(key)
        if let hit = cache.withLock({ $0[hash] }) { return hit }
        guard let record = try await store.key(hash: hash) else { return nil }
        let caller = Caller(orgId: record.orgId, isAdmin: record.isAdmin)
        cache.withLock { $0[hash] = caller }
        return caller
    }

    /// Creates a key for an organisation (creating the organisation if new); returns the key in clear, once.
    public func createKey(org: String, isAdmin: Bool) async throws -> String {
        let organization = try await store.ensureOrganization(named: org)
        let key = APIKeys.generate()
        try await store.insertKey(
            APIKeyRecord(
                id: UUID().uuidString.lowercased(), orgId: organization.id, keyHash: APIKeys.hash(key),
                prefix: APIKeys.prefix(key), isAdmin: isAdmin, createdAt: Date()))
        return key
    }
}
