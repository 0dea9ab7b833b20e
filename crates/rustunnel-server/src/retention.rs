//! Housekeeping of tunnel history: running counters written to the open rows, old rows
//! pruned, and idle HTTP upstreams closed.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::state::Shared;
use crate::store::now_ms;

/// Housekeeping: prunes old tunnel history hourly, and every 15 s closes HTTP upstreams idle
/// longer than a minute.
pub(crate) async fn retention_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    // Idle upstreams go within a quarter of their allowance after it ends.
    let mut idle_tick = tokio::time::interval((shared.config().upstream_idle / 4).max(Duration::from_millis(50)));
    let mut counters_tick = tokio::time::interval(shared.config().history_flush);
    counters_tick.reset();
    // Counters last written per tunnel: only those that moved are written again.
    let mut written: HashMap<String, (u64, u64, u64, u64)> = HashMap::new();
    loop {
        tokio::select! {
            _ = shared.hard_stop().cancelled() => return,
            _ = counters_tick.tick() => {
                let tunnels = shared.tunnels();
                let mut rows = Vec::new();
                let mut now = HashMap::with_capacity(tunnels.len());
                for t in tunnels {
                    let c = t.stats.get();
                    if written.get(&t.id) != Some(&c) {
                        rows.push((t.id.clone(), c.0 as i64, c.1 as i64, c.2 as i64, c.3 as i64));
                    }
                    now.insert(t.id.clone(), c);
                }
                match shared.store().record_counters(&rows).await {
                    Ok(()) => written = now,
                    Err(e) => tracing::warn!(error = %e, "could not record tunnel counters"),
                }
            }
            _ = idle_tick.tick() => {
                let tunnels = shared.tunnels();
                for t in tunnels {
                    t.http_idle.sweep(shared.config().upstream_idle);
                }
            }
            _ = tick.tick() => {
                let cutoff = now_ms() - shared.config().history_retention.as_millis() as i64;
                match shared.store().prune_history(cutoff).await {
                    Ok(n) if n > 0 => tracing::info!(rows = n, "pruned old tunnel history"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "history pruning failed"),
                }
            }
        }
    }
}
