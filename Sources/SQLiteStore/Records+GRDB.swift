import DeploymentStore
import GRDB
import InferenceCore

// The records are plain values in `DeploymentStore`; how they map to tables is this store's business.

extension OrganizationRecord: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "organizations"
}

extension APIKeyRecord: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "api_keys"
}

extension DeploymentRecord: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "deployments"
}

extension ReplicaRecord: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "replicas"
}

extension EventRecord: FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "events"
    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

extension ReplicaRunRecord: FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "replica_runs"
    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

extension RequestResultRecord: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "request_results"
}

extension DeploymentStatus: DatabaseValueConvertible {}
extension ReplicaStatus: DatabaseValueConvertible {}
