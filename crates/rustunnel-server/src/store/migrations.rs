//! Schema migrations, the same SQL for SQLite and PostgreSQL. Applied in order, each once,
//! recorded in `rustunnel_migrations`. Never edit a shipped migration: add a new one.
use sqlx::{AnyPool, Executor, Row};

const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE owners (
        id TEXT PRIMARY KEY,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        owner_id TEXT NOT NULL REFERENCES owners(id),
        label TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL,
        last_used_at BIGINT,
        revoked_at BIGINT
    );
    CREATE INDEX tokens_owner ON tokens(owner_id);
    CREATE TABLE tunnel_history (
        id TEXT PRIMARY KEY,
        owner_id TEXT NOT NULL,
        name TEXT NOT NULL,
        protocol TEXT NOT NULL,
        public_url TEXT NOT NULL,
        subdomain TEXT,
        port BIGINT,
        local_addr TEXT NOT NULL,
        client_addr TEXT NOT NULL,
        region TEXT NOT NULL,
        opened_at BIGINT NOT NULL,
        closed_at BIGINT,
        bytes_in BIGINT NOT NULL,
        bytes_out BIGINT NOT NULL,
        requests BIGINT NOT NULL,
        connections BIGINT NOT NULL,
        close_reason TEXT
    );
    CREATE INDEX tunnel_history_owner_opened ON tunnel_history(owner_id, opened_at);
    CREATE INDEX tunnel_history_opened ON tunnel_history(opened_at);",
    ),
    (
        2,
        // Claimed and reserved subdomains and ports, so reservations survive a restart. One row
        // per (region, kind, name); `reserved_until` is NULL while the name is in use, the end
        // of the owner's reservation (unix ms) once released.
        "CREATE TABLE registry_claims (
        region TEXT NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        owner_id TEXT NOT NULL,
        reserved_until BIGINT,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (region, kind, name)
    );
    CREATE INDEX registry_claims_until ON registry_claims(region, reserved_until);",
    ),
    (
        3,
        // A token's rights (`crate::rights`): comma-separated subdomain patterns and port
        // ranges; NULL for no limit.
        "ALTER TABLE tokens ADD COLUMN allowed_subdomains TEXT;
    ALTER TABLE tokens ADD COLUMN allowed_ports TEXT",
    ),
];

pub(super) async fn run(pool: &AnyPool) -> Result<(), sqlx::Error> {
    pool.execute(
        "CREATE TABLE IF NOT EXISTS rustunnel_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .await?;
    for (version, sql) in MIGRATIONS {
        let mut tx = pool.begin().await?;
        let done = sqlx::query("SELECT COUNT(*) AS n FROM rustunnel_migrations WHERE version = $1")
            .bind(*version)
            .fetch_one(&mut *tx)
            .await?
            .try_get::<i64, _>("n")?;
        if done > 0 {
            continue;
        }
        for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            tx.execute(stmt).await?;
        }
        sqlx::query("INSERT INTO rustunnel_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(*version)
            .bind(super::now_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}
