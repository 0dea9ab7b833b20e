//! Persistent state: owners, tokens (stored as SHA-256 hashes only), tunnel history, and the
//! claimed and reserved subdomains and ports of each region (so reservations survive restarts).
//!
//! One storage layer over `sqlx::Any`, with two real backends: an embedded SQLite file (the
//! default, `<data dir>/rustunnel.db`) and PostgreSQL (`--database-url postgres://...`) so
//! several servers can share tokens and history. Both run the same migrations: the SQL is
//! written in the common subset (TEXT ids, BIGINT unix milliseconds, `$n` placeholders).
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

pub use crate::registry::{ClaimChange, ClaimRecord};
use crate::rights::Rights;

mod migrations;

/// Storage failures. Callers map these to 500s: they are never caused by user input.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("label must be 1-{MAX_LABEL} printable characters")]
    BadLabel,
    /// A stored token's rights do not parse (written by something else than this server).
    #[error("token {id} has unreadable rights in the database: {why}")]
    BadRights { id: String, why: String },
    /// Another server holds the data directory or, on PostgreSQL, the region.
    #[error("another rustunnel-server is already using {0}; stop it first, or give this one its own")]
    InUse(String),
}

/// Held while a server runs: it is the only server using its data directory (a lock on
/// `server.lock` there) and, on PostgreSQL, the only one serving its region (a session
/// advisory lock). A second server would otherwise take the first one's live tunnels for
/// leftovers of a crash and close their history, and claim the same names. Both locks go when
/// this is dropped or the process dies.
pub struct InstanceLock {
    _file: std::fs::File,
    _region: Option<sqlx::AnyConnection>,
}

/// The columns of a token row ([`token_from_row`]).
const TOKEN_COLUMNS: &str = "id, owner_id, label, created_at, last_used_at, allowed_subdomains, allowed_ports";

/// Longest token label.
pub const MAX_LABEL: usize = 64;

/// A token label as stored: trimmed, 1-[`MAX_LABEL`] characters, none of them a control
/// character or an invisible formatting one (bidirectional overrides, zero-width characters)
/// that could make a listing show something else than what is stored.
pub fn check_label(label: &str) -> Result<&str, StoreError> {
    let label = label.trim();
    if label.is_empty() || label.chars().count() > MAX_LABEL || label.chars().any(rustunnel_proto::names::is_hidden) {
        return Err(StoreError::BadLabel);
    }
    Ok(label)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Hex SHA-256 of a token: what the database stores and looks up by. Tokens carry 192 bits of
/// randomness, so an unsalted hash is not brute-forceable; it only keeps a leaked database
/// from handing out usable tokens.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Generates a new token: `rt_` + 48 hex characters.
pub fn generate_token() -> String {
    let mut b = [0u8; 24];
    rand::rng().fill_bytes(&mut b);
    format!("rt_{}", hex::encode(b))
}

/// A stored token (never its hash or raw value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub owner_id: String,
    pub label: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    /// What it may open.
    pub rights: Rights,
}

/// A tunnel's history row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistoryRecord {
    pub id: String,
    pub owner_id: String,
    pub name: String,
    pub protocol: String,
    pub public_url: String,
    pub subdomain: Option<String>,
    pub port: Option<i64>,
    pub local_addr: String,
    pub client_addr: String,
    pub region: String,
    pub opened_at: i64,
    pub closed_at: Option<i64>,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub requests: i64,
    pub connections: i64,
    pub close_reason: Option<String>,
}

/// Filter for [`Store::list_history`].
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// `None`: every owner (admin).
    pub owner_id: Option<String>,
    pub protocol: Option<String>,
    pub active: Option<bool>,
    pub limit: i64,
    pub offset: i64,
}

/// Final counters of a closed tunnel.
#[derive(Debug, Clone, Default)]
pub struct CloseRecord {
    pub closed_at: i64,
    pub reason: String,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub requests: i64,
    pub connections: i64,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Store {
    /// Opens the database at `url`, or the SQLite file in `data_dir` when `url` is `None`,
    /// and runs pending migrations.
    pub async fn open(url: Option<&str>, data_dir: &Path) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let url = match url {
            Some(u) => u.to_string(),
            None => {
                std::fs::create_dir_all(data_dir)
                    .map_err(|source| StoreError::DataDir { path: data_dir.display().to_string(), source })?;
                format!("sqlite://{}?mode=rwc", data_dir.join("rustunnel.db").display())
            }
        };
        let backend = if url.starts_with("postgres") { Backend::Postgres } else { Backend::Sqlite };
        // sqlx runs each SQLite connection on a thread of its own (with its own allocator
        // arena); SQLite has one writer at a time anyway, so two connections let a reader run
        // beside the writer without an idle server keeping more threads.
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 2 } else { 10 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the single writer; busy_timeout makes the
                        // writer wait instead of failing under contention.
                        conn.execute("PRAGMA journal_mode=WAL").await?;
                        conn.execute("PRAGMA busy_timeout=5000").await?;
                        conn.execute("PRAGMA synchronous=NORMAL").await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        let store = Store { pool, backend };
        migrations::run(&store.pool).await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Takes the [`InstanceLock`] for a server with this data directory and region.
    pub async fn lock_instance(&self, data_dir: &Path, region: &str) -> Result<InstanceLock, StoreError> {
        let dir_err = |source| StoreError::DataDir { path: data_dir.display().to_string(), source };
        std::fs::create_dir_all(data_dir).map_err(dir_err)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(data_dir.join("server.lock"))
            .map_err(dir_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::InUse(format!("the data directory {}", data_dir.display())))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(dir_err(e)),
        }
        let region_lock = match self.backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                // Out of the pool, so closing the pool at shutdown does not wait for it.
                let mut conn = self.pool.acquire().await?.detach();
                let digest = Sha256::digest(format!("rustunnel-region:{region}").as_bytes());
                let key = i64::from_be_bytes(digest[..8].try_into().unwrap_or_default());
                let got: bool =
                    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(key).fetch_one(&mut conn).await?;
                if !got {
                    return Err(StoreError::InUse(format!("region '{region}' of this PostgreSQL database")));
                }
                Some(conn)
            }
        };
        Ok(InstanceLock { _file: file, _region: region_lock })
    }

    // ---- owners and tokens ----

    /// Creates a token without limits. `owner_id = None` creates a new owner for it.
    pub async fn create_token(&self, owner_id: Option<&str>, label: &str) -> Result<(TokenRecord, String), StoreError> {
        self.create_token_with(owner_id, label, &Rights::unrestricted()).await
    }

    /// Creates a token with `rights`. `owner_id = None` creates a new owner for it.
    pub async fn create_token_with(
        &self,
        owner_id: Option<&str>,
        label: &str,
        rights: &Rights,
    ) -> Result<(TokenRecord, String), StoreError> {
        let label = check_label(label)?;
        let now = now_ms();
        let owner = match owner_id {
            Some(o) => o.to_string(),
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                sqlx::query("INSERT INTO owners (id, created_at) VALUES ($1, $2)")
                    .bind(&id)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                id
            }
        };
        let raw = generate_token();
        let rec = TokenRecord {
            id: uuid::Uuid::new_v4().to_string(),
            owner_id: owner,
            label: label.to_string(),
            created_at: now,
            last_used_at: None,
            rights: rights.clone(),
        };
        let (subdomains, ports) = rights.encode();
        sqlx::query(
            "INSERT INTO tokens (id, owner_id, label, token_hash, created_at, allowed_subdomains, allowed_ports) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&rec.id)
        .bind(&rec.owner_id)
        .bind(&rec.label)
        .bind(hash_token(&raw))
        .bind(now)
        .bind(subdomains)
        .bind(ports)
        .execute(&self.pool)
        .await?;
        Ok((rec, raw))
    }

    pub async fn owner_exists(&self, owner_id: &str) -> Result<bool, StoreError> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM owners WHERE id = $1").bind(owner_id).fetch_one(&self.pool).await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    /// Looks a raw token up by its hash; revoked tokens are not found. Records the use.
    pub async fn verify_token(&self, raw: &str) -> Result<Option<TokenRecord>, StoreError> {
        let row =
            sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE token_hash = $1 AND revoked_at IS NULL"))
                .bind(hash_token(raw))
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else { return Ok(None) };
        // Rights that do not parse refuse the token here, rather than reading as none.
        let rec = token_from_row(&row, rights_from_row(&row)?)?;
        sqlx::query("UPDATE tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(&rec.id)
            .execute(&self.pool)
            .await?;
        Ok(Some(rec))
    }

    /// Tokens of one owner (or all, for `None`), newest first; revoked ones are left out.
    pub async fn list_tokens(&self, owner_id: Option<&str>) -> Result<Vec<TokenRecord>, StoreError> {
        let select = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE revoked_at IS NULL");
        let rows = match owner_id {
            Some(o) => {
                sqlx::query(&format!("{select} AND owner_id = $1 ORDER BY created_at DESC, id"))
                    .bind(o)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => sqlx::query(&format!("{select} ORDER BY created_at DESC, id")).fetch_all(&self.pool).await?,
        };
        rows.iter().map(listed_token).collect()
    }

    /// One token by id, unless revoked; `owner_id` scopes the lookup (another owner's token is
    /// not found).
    pub async fn token(&self, id: &str, owner_id: Option<&str>) -> Result<Option<TokenRecord>, StoreError> {
        let select = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE revoked_at IS NULL AND id = $1");
        let row = match owner_id {
            Some(o) => {
                sqlx::query(&format!("{select} AND owner_id = $2")).bind(id).bind(o).fetch_optional(&self.pool).await?
            }
            None => sqlx::query(&select).bind(id).fetch_optional(&self.pool).await?,
        };
        row.as_ref().map(listed_token).transpose()
    }

    /// Revokes a token; `owner_id` scopes the lookup (another owner's token is "not found").
    pub async fn revoke_token(&self, id: &str, owner_id: Option<&str>) -> Result<Option<TokenRecord>, StoreError> {
        let found = self.token(id, owner_id).await?;
        if let Some(t) = &found {
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2")
                .bind(now_ms())
                .bind(&t.id)
                .execute(&self.pool)
                .await?;
        }
        Ok(found)
    }

    // ---- history ----

    pub async fn record_open(&self, h: &HistoryRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tunnel_history (id, owner_id, name, protocol, public_url, subdomain, port, local_addr, client_addr, region, opened_at, bytes_in, bytes_out, requests, connections) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, 0, 0, 0)",
        )
        .bind(&h.id)
        .bind(&h.owner_id)
        .bind(&h.name)
        .bind(&h.protocol)
        .bind(&h.public_url)
        .bind(h.subdomain.clone())
        .bind(h.port)
        .bind(&h.local_addr)
        .bind(&h.client_addr)
        .bind(&h.region)
        .bind(h.opened_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Writes the traffic counters of open tunnels so far (`(id, in, out, requests,
    /// connections)`), so a crash loses at most the last interval's traffic. One statement per
    /// tunnel, in one transaction.
    pub async fn record_counters(&self, rows: &[(String, i64, i64, i64, i64)]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for (id, bytes_in, bytes_out, requests, connections) in rows {
            sqlx::query(
                "UPDATE tunnel_history SET bytes_in = $1, bytes_out = $2, requests = $3, connections = $4 WHERE id = $5 AND closed_at IS NULL",
            )
            .bind(bytes_in)
            .bind(bytes_out)
            .bind(requests)
            .bind(connections)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn record_close(&self, id: &str, c: &CloseRecord) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE tunnel_history SET closed_at = $1, close_reason = $2, bytes_in = $3, bytes_out = $4, requests = $5, connections = $6 WHERE id = $7 AND closed_at IS NULL",
        )
        .bind(c.closed_at)
        .bind(&c.reason)
        .bind(c.bytes_in)
        .bind(c.bytes_out)
        .bind(c.requests)
        .bind(c.connections)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Rows left open by a server that died without closing them.
    pub async fn close_orphans(&self, reason: &str) -> Result<u64, StoreError> {
        let r = sqlx::query("UPDATE tunnel_history SET closed_at = $1, close_reason = $2 WHERE closed_at IS NULL")
            .bind(now_ms())
            .bind(reason)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// Rows of `region` left open by a server of that region that died without closing them.
    /// Scoped by region so that servers of other regions sharing a PostgreSQL database do not
    /// close each other's live tunnels when one of them restarts.
    pub async fn close_region_orphans(&self, region: &str, reason: &str) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE tunnel_history SET closed_at = $1, close_reason = $2 WHERE closed_at IS NULL AND region = $3",
        )
        .bind(now_ms())
        .bind(reason)
        .bind(region)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    pub async fn prune_history(&self, older_than_ms: i64) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM tunnel_history WHERE closed_at IS NOT NULL AND closed_at < $1")
            .bind(older_than_ms)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// History newest first. Filters are bound parameters; the SQL text is fixed per shape.
    pub async fn list_history(&self, q: &HistoryQuery) -> Result<Vec<HistoryRecord>, StoreError> {
        let mut sql = String::from(
            "SELECT id, owner_id, name, protocol, public_url, subdomain, port, local_addr, client_addr, region, opened_at, closed_at, bytes_in, bytes_out, requests, connections, close_reason FROM tunnel_history WHERE 1=1",
        );
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if q.owner_id.is_some() {
            sql.push_str(&format!(" AND owner_id = {}", next()));
        }
        if q.protocol.is_some() {
            sql.push_str(&format!(" AND protocol = {}", next()));
        }
        match q.active {
            Some(true) => sql.push_str(" AND closed_at IS NULL"),
            Some(false) => sql.push_str(" AND closed_at IS NOT NULL"),
            None => {}
        }
        sql.push_str(&format!(" ORDER BY opened_at DESC, id DESC LIMIT {} OFFSET {}", next(), next()));
        let mut query = sqlx::query(&sql);
        if let Some(o) = &q.owner_id {
            query = query.bind(o);
        }
        if let Some(p) = &q.protocol {
            query = query.bind(p);
        }
        let rows = query.bind(q.limit).bind(q.offset).fetch_all(&self.pool).await?;
        rows.iter().map(history_from_row).collect()
    }

    // ---- claims and reservations (per region) ----

    /// The stored claims of `region`. Their content is not checked here (the registry validates
    /// what it loads); rows whose columns cannot even be decoded are skipped with a warning.
    pub async fn load_claims(&self, region: &str) -> Result<Vec<ClaimRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, name, owner_id, reserved_until FROM registry_claims WHERE region = $1 ORDER BY kind, name",
        )
        .bind(region)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|row| match claim_from_row(row) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an undecodable stored claim");
                    None
                }
            })
            .collect())
    }

    /// Applies changes in order, in one transaction.
    pub async fn apply_claim_changes(&self, region: &str, changes: &[ClaimChange]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        for c in changes {
            match c {
                ClaimChange::Upsert(r) => {
                    upsert_claim(region, r, now).execute(&mut *tx).await?;
                }
                ClaimChange::Delete { kind, name } => {
                    sqlx::query("DELETE FROM registry_claims WHERE region = $1 AND kind = $2 AND name = $3")
                        .bind(region)
                        .bind(kind)
                        .bind(name)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Replaces every stored claim of `region` with `claims`, in one transaction.
    pub async fn replace_claims(&self, region: &str, claims: &[ClaimRecord]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM registry_claims WHERE region = $1").bind(region).execute(&mut *tx).await?;
        let now = now_ms();
        for r in claims {
            upsert_claim(region, r, now).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes the reservations of `region` that ended at or before `now_ms`.
    pub async fn prune_claims(&self, region: &str, now_ms: i64) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "DELETE FROM registry_claims WHERE region = $1 AND reserved_until IS NOT NULL AND reserved_until <= $2",
        )
        .bind(region)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// One round trip to the database (readiness probes).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Insert-or-update of one claim row; `ON CONFLICT ... DO UPDATE` is the same in SQLite (3.24+)
/// and PostgreSQL (9.5+).
const UPSERT_CLAIM: &str = "INSERT INTO registry_claims (region, kind, name, owner_id, reserved_until, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (region, kind, name) DO UPDATE SET owner_id = excluded.owner_id, \
     reserved_until = excluded.reserved_until, updated_at = excluded.updated_at";

fn claim_from_row(row: &AnyRow) -> Result<ClaimRecord, StoreError> {
    Ok(ClaimRecord {
        kind: row.try_get("kind")?,
        name: row.try_get("name")?,
        owner_id: row.try_get("owner_id")?,
        reserved_until: row.try_get("reserved_until")?,
    })
}

/// A token row's rights as stored; an error names the token.
fn rights_from_row(row: &AnyRow) -> Result<Rights, StoreError> {
    let subdomains: Option<String> = row.try_get("allowed_subdomains")?;
    let ports: Option<String> = row.try_get("allowed_ports")?;
    Rights::decode(subdomains.as_deref(), ports.as_deref())
        .map_err(|e| StoreError::BadRights { id: row.try_get("id").unwrap_or_default(), why: e.to_string() })
}

/// A token row for listings and revocation: rights that do not parse read as allowing nothing
/// (logged), so one spoiled row neither hides the token nor breaks every listing. Checking a
/// token for a connection refuses it instead ([`Store::verify_token`]).
fn listed_token(row: &AnyRow) -> Result<TokenRecord, StoreError> {
    let rights = rights_from_row(row).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "token rights unreadable; listed as allowing nothing");
        Rights::nothing()
    });
    token_from_row(row, rights)
}

fn token_from_row(row: &AnyRow, rights: Rights) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        id: row.try_get("id")?,
        owner_id: row.try_get("owner_id")?,
        label: row.try_get("label")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        rights,
    })
}

fn history_from_row(row: &AnyRow) -> Result<HistoryRecord, StoreError> {
    Ok(HistoryRecord {
        id: row.try_get("id")?,
        owner_id: row.try_get("owner_id")?,
        name: row.try_get("name")?,
        protocol: row.try_get("protocol")?,
        public_url: row.try_get("public_url")?,
        subdomain: row.try_get("subdomain")?,
        port: row.try_get("port")?,
        local_addr: row.try_get("local_addr")?,
        client_addr: row.try_get("client_addr")?,
        region: row.try_get("region")?,
        opened_at: row.try_get("opened_at")?,
        closed_at: row.try_get("closed_at")?,
        bytes_in: row.try_get("bytes_in")?,
        bytes_out: row.try_get("bytes_out")?,
        requests: row.try_get("requests")?,
        connections: row.try_get("connections")?,
        close_reason: row.try_get("close_reason")?,
    })
}

/// The upsert of one stored claim, bound.
fn upsert_claim<'q>(
    region: &'q str,
    r: &'q ClaimRecord,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    sqlx::query(UPSERT_CLAIM)
        .bind(region)
        .bind(&r.kind)
        .bind(&r.name)
        .bind(&r.owner_id)
        .bind(r.reserved_until)
        .bind(now)
}

#[cfg(test)]
mod tests;
