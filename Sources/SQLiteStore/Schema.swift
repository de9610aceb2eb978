import GRDB

/// The store's migrations, in order. A migration once shipped is never edited; add a new one.
enum Schema {
    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.create(table: "organizations") { t in
                t.primaryKey("id", .text)
                t.column("name", .text).notNull().unique()
                t.column("createdAt", .datetime).notNull()
            }
            try db.create(table: "api_keys") { t in
                t.primaryKey("id", .text)
                t.column("orgId", .text).notNull().references("organizations")
                t.column("keyHash", .text).notNull().unique()
                t.column("prefix", .text).notNull()
                t.column("isAdmin", .boolean).notNull()
                t.column("createdAt", .datetime).notNull()
            }
            try db.create(table: "deployments") { t in
                t.primaryKey("id", .text)
                t.column("orgId", .text).notNull().references("organizations").indexed()
                t.column("hfModelId", .text).notNull()
                t.column("hardwareProfile", .text).notNull()
                t.column("status", .text).notNull().indexed()
                t.column("desiredReplicas", .integer).notNull()
                t.column("minReplicas", .integer).notNull()
                t.column("maxReplicas", .integer).notNull()
                t.column("targetRps", .double).notNull()
                t.column("targetLatencyP95Ms", .double).notNull()
                t.column("stabilisationWindow", .integer).notNull()
                t.column("hfTokenSealed", .blob)
                t.column("createdAt", .datetime).notNull()
                t.column("updatedAt", .datetime).notNull()
                t.column("stoppedAt", .datetime)
                t.column("lastRequestAt", .datetime)
            }
            try db.create(table: "replicas") { t in
                t.primaryKey("id", .text)
                t.column("deploymentId", .text).notNull().references("deployments").indexed()
                t.column("status", .text).notNull()
                t.column("healthy", .boolean).notNull()
                t.column("lastHealthCheck", .datetime)
                t.column("failReason", .text)
                t.column("pid", .integer)
                t.column("port", .integer)
                t.column("devices", .text).notNull()
                t.column("restartCount", .integer).notNull()
                t.column("consecutiveFailures", .integer).notNull()
                t.column("createdAt", .datetime).notNull()
                t.column("startedAt", .datetime)
                t.column("stoppedAt", .datetime)
                t.column("lastSeenAlive", .datetime)
            }
            try db.create(table: "events") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("deploymentId", .text).notNull().indexed()
                t.column("at", .datetime).notNull()
                t.column("kind", .text).notNull()
                t.column("message", .text).notNull()
            }
        }
        m.registerMigration("v2-request-results") { db in
            try db.create(table: "request_results") { t in
                t.primaryKey("id", .text)
                t.column("orgId", .text).notNull()
                t.column("deploymentId", .text).notNull()
                t.column("status", .text).notNull()
                t.column("httpStatus", .integer)
                t.column("body", .blob)
                t.column("createdAt", .datetime).notNull().indexed()
                t.column("completedAt", .datetime)
            }
        }
        m.registerMigration("v3-metering") { db in
            try db.create(table: "replica_runs") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("replicaId", .text).notNull().indexed()
                t.column("deploymentId", .text).notNull().indexed()
                t.column("orgId", .text).notNull().indexed()
                t.column("hardwareProfile", .text).notNull()
                t.column("pricePerHour", .text).notNull()
                t.column("startedAt", .datetime).notNull()
                t.column("endedAt", .datetime)
            }
        }
        m.registerMigration("v4-replica-progress") { db in
            try db.alter(table: "replicas") { t in t.add(column: "progress", .text) }
        }
        m.registerMigration("v5-model-grants") { db in
            // Which organisation's own create passed the Hub's access check for which repository: a cached
            // model is served to an organisation only when this row says so.
            try db.create(table: "model_grants") { t in
                t.column("orgId", .text).notNull()
                t.column("repo", .text).notNull()
                t.column("grantedAt", .datetime).notNull()
                t.primaryKey(["orgId", "repo"])
            }
        }
        m.registerMigration("v6-replica-host") { db in
            try db.alter(table: "replicas") { t in t.add(column: "host", .text) }
        }
        m.registerMigration("v7-replica-handle") { db in
            try db.alter(table: "replicas") { t in t.add(column: "handle", .text) }
        }
        return m
    }
}
