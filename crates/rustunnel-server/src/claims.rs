//! Persistence of the name and port registry: the claims stored for this region are loaded
//! as reservations at start, and a background writer keeps the stored rows in step.
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::registry::Registry;
use crate::state::Shared;
use crate::store::{now_ms, Store, StoreError};

/// A registry holding the stored claims of this server's region as reservations (see
/// [`Registry::load`]); the region's rows are then rewritten to exactly that, which drops
/// ended and unusable rows.
pub(crate) async fn load_registry(store: &Store, config: &Config) -> Result<Registry, StoreError> {
    let region = &config.region.id;
    let mut registry = Registry::new(config.reservation_grace, config.tcp_ports.clone(), config.udp_ports.clone());
    let rows = store.load_claims(region).await?;
    let (now, wall) = (Instant::now(), now_ms());
    let report = registry.load(now, wall, rows);
    for (row, why) in &report.skipped {
        tracing::warn!(
            kind = %row.kind.chars().take(32).collect::<String>(),
            name = %row.name.chars().take(80).collect::<String>(),
            reason = %why,
            "skipping a stored reservation that does not fit this server"
        );
    }
    if report.loaded > 0 || report.expired > 0 {
        tracing::info!(loaded = report.loaded, expired = report.expired, "restored name and port reservations");
    }
    store.replace_claims(region, &registry.snapshot(now, wall)).await?;
    Ok(registry)
}

/// How often the claim writer prunes ended reservations (memory and database).
const CLAIM_PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Retry delay after a failed claim write.
const CLAIM_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Persists registry changes in the background, so claims and releases never wait on the
/// database: woken after each registry operation, it takes the changed keys' current state
/// under the lock (briefly, no I/O) and writes them without it. After a failed write it
/// rewrites the region's rows from a full snapshot once the database answers again. Writes
/// what is pending when the server stops; only a change made in the last instant before a
/// crash (before this task got to it) can be lost.
pub(crate) async fn claim_writer(shared: Arc<Shared>) {
    let region = shared.config().region.id.clone();
    let mut prune = tokio::time::interval(CLAIM_PRUNE_EVERY);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resync = false;
    loop {
        let stopping = tokio::select! {
            _ = shared.claims_changed() => false,
            _ = tokio::time::sleep(CLAIM_RETRY_AFTER), if resync => false,
            _ = prune.tick() => {
                shared.prune_claims(Instant::now());
                match shared.store().prune_claims(&region, now_ms()).await {
                    Ok(n) if n > 0 => tracing::debug!(rows = n, "pruned ended reservations"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "reservation pruning failed"),
                }
                false
            }
            _ = shared.hard_stop().cancelled() => true,
        };
        let written = if resync {
            let all = shared.claims_snapshot(Instant::now(), now_ms());
            shared.store().replace_claims(&region, &all).await
        } else {
            let changes = shared.take_claim_changes(Instant::now(), now_ms());
            if changes.is_empty() {
                Ok(())
            } else {
                shared.store().apply_claim_changes(&region, &changes).await
            }
        };
        match written {
            Ok(()) => resync = false,
            Err(e) => {
                if !resync {
                    tracing::warn!(error = %e, "could not persist name and port reservations; will retry");
                }
                resync = true;
            }
        }
        if stopping {
            return;
        }
    }
}
