/// The PostgreSQL store's migrations, in order. A migration once shipped is never edited; add a new one.
/// Each runs in its own transaction under a transaction-level advisory lock, and is recorded in
/// `schema_migrations` in the same transaction, so instances starting at once apply each exactly once.
enum PostgresSchema {
    /// `pg_advisory_xact_lock` key for migrations: any constant the platform's other locks do not use.
    static let migrationLock: Int64 = 0x6C79_6365_756D_0001
    /// Session advisory lock for one-time steps at start (the first admin key).
    static let bootstrapLock: Int64 = 0x6C79_6365_756D_0003

    static let migrations: [(version: Int64, statements: [String])] = [
        (1, [
            """
            CREATE TABLE organizations (
                id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at TIMESTAMPTZ NOT NULL)
            """,
            """
            CREATE TABLE api_keys (
                id TEXT PRIMARY KEY, org_id TEXT NOT NULL REFERENCES organizations, key_hash TEXT NOT NULL UNIQUE,
                prefix TEXT NOT NULL, is_admin BOOLEAN NOT NULL, created_at TIMESTAMPTZ NOT NULL)
            """,
            """
            CREATE TABLE deployments (
                id TEXT PRIMARY KEY, org_id TEXT NOT NULL REFERENCES organizations, hf_model_id TEXT NOT NULL,
                hardware_profile TEXT NOT NULL, status TEXT NOT NULL, desired_replicas BIGINT NOT NULL,
                min_replicas BIGINT NOT NULL, max_replicas BIGINT NOT NULL, target_rps DOUBLE PRECISION NOT NULL,
                target_latency_p95_ms DOUBLE PRECISION NOT NULL, stabilisation_window BIGINT NOT NULL, hf_token_sealed BYTEA,
                created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL, stopped_at TIMESTAMPTZ, last_request_at TIMESTAMPTZ)
            """,
            "CREATE INDEX deployments_org ON deployments (org_id, created_at DESC, id)",
            "CREATE INDEX deployments_status ON deployments (status)",
            """
            CREATE TABLE replicas (
                id TEXT PRIMARY KEY, deployment_id TEXT NOT NULL REFERENCES deployments, status TEXT NOT NULL,
                healthy BOOLEAN NOT NULL, last_health_check TIMESTAMPTZ, fail_reason TEXT, pid INTEGER, port BIGINT,
                devices TEXT NOT NULL, restart_count BIGINT NOT NULL, consecutive_failures BIGINT NOT NULL,
                created_at TIMESTAMPTZ NOT NULL, started_at TIMESTAMPTZ, stopped_at TIMESTAMPTZ, last_seen_alive TIMESTAMPTZ,
                progress TEXT)
            """,
            "CREATE INDEX replicas_deployment ON replicas (deployment_id, created_at)",
            "CREATE INDEX replicas_status ON replicas (status)",
            """
            CREATE TABLE events (
                id BIGSERIAL PRIMARY KEY, deployment_id TEXT NOT NULL, at TIMESTAMPTZ NOT NULL, kind TEXT NOT NULL,
                message TEXT NOT NULL)
            """,
            "CREATE INDEX events_deployment ON events (deployment_id, id)",
            """
            CREATE TABLE replica_runs (
                id BIGSERIAL PRIMARY KEY, replica_id TEXT NOT NULL, deployment_id TEXT NOT NULL, org_id TEXT NOT NULL,
                hardware_profile TEXT NOT NULL, price_per_hour TEXT NOT NULL, started_at TIMESTAMPTZ NOT NULL, ended_at TIMESTAMPTZ)
            """,
            "CREATE INDEX replica_runs_org ON replica_runs (org_id, started_at)",
            "CREATE INDEX replica_runs_open ON replica_runs (replica_id) WHERE ended_at IS NULL",
            """
            CREATE TABLE request_results (
                id TEXT PRIMARY KEY, org_id TEXT NOT NULL, deployment_id TEXT NOT NULL, status TEXT NOT NULL,
                http_status BIGINT, body BYTEA, created_at TIMESTAMPTZ NOT NULL, completed_at TIMESTAMPTZ)
            """,
            "CREATE INDEX request_results_org ON request_results (org_id)",
            "CREATE INDEX request_results_created ON request_results (created_at)",
            """
            CREATE TABLE model_grants (
                org_id TEXT NOT NULL, repo TEXT NOT NULL, granted_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (org_id, repo))
            """,
        ]),
        (2, ["ALTER TABLE replicas ADD COLUMN host TEXT"]),
        (3, [
            // One row: the epoch of the current leader, bumped by each new one; fleet writes check it.
            """
            CREATE TABLE fleet_leader (
                id INTEGER PRIMARY KEY CHECK (id = 1), epoch BIGINT NOT NULL, instance_id TEXT NOT NULL, url TEXT NOT NULL,
                since TIMESTAMPTZ NOT NULL)
            """,
            "INSERT INTO fleet_leader (id, epoch, instance_id, url, since) VALUES (1, 0, '', '', now())",
            // Every server instance: its heartbeat, and the traffic its gateway saw (for the leader's autoscaler).
            """
            CREATE TABLE instances (
                id TEXT PRIMARY KEY, url TEXT NOT NULL, role TEXT NOT NULL, started_at TIMESTAMPTZ NOT NULL,
                heartbeat_at TIMESTAMPTZ NOT NULL, traffic TEXT)
            """,
            // The leader's route table, which every gateway routes from.
            """
            CREATE TABLE fleet_routes (
                deployment_id TEXT PRIMARY KEY, route TEXT, epoch BIGINT NOT NULL, updated_at TIMESTAMPTZ NOT NULL)
            """,
        ]),
        (4, ["ALTER TABLE replicas ADD COLUMN handle TEXT"]),
    ]
}

/// The versions the store's migrations bring a database to, in order.
public enum PostgresSchemaVersions {
    public static var all: [Int64] { PostgresSchema.migrations.map(\.version) }
}
