//! The background pruner: every `[retention]` kind with a retention, in batches of
//! [`BATCH`] rows, each its own short transaction with a pause between, so that alert
//! issuance never waits long behind it.

use std::collections::BTreeMap;
use std::time::Duration;

use store::Store;
use store::retention::Kind;
use tokio_util::sync::CancellationToken;

/// Rows deleted per transaction.
pub const BATCH: i64 = 500;
/// How often the pruner runs.
pub const EVERY: Duration = Duration::from_secs(600);

/// Days each kind is kept (`[retention]`); a kind not listed, or 0, is kept for good.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Retention(pub BTreeMap<Kind, u32>);

impl Retention {
    /// Prunes everything due at `now` once; returns rows deleted per kind.
    pub async fn prune_once(
        &self,
        store: &Store,
        now: chrono::DateTime<chrono::Utc>,
    ) -> store::Result<BTreeMap<Kind, u64>> {
        let mut deleted = BTreeMap::new();
        for (&kind, &days) in &self.0 {
            if days == 0 {
                continue;
            }
            let before = now - chrono::Duration::days(i64::from(days));
            let mut total = 0;
            loop {
                let n = store.prune_batch(kind, before, BATCH).await?;
                total += n;
                if n < BATCH as u64 {
                    break;
                }
                // Let writers in between batches.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            deleted.insert(kind, total);
        }
        Ok(deleted)
    }
}

/// Runs [`Retention::prune_once`] every [`EVERY`] until `stop`.
pub async fn run(store: Store, retention: Retention, stop: CancellationToken) {
    loop {
        match retention.prune_once(&store, chrono::Utc::now()).await {
            Ok(deleted) => {
                let pruned: Vec<String> = deleted
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(k, n)| format!("{}={n}", k.code()))
                    .collect();
                if !pruned.is_empty() {
                    tracing::info!(pruned = %pruned.join(" "), "old records pruned");
                }
            }
            Err(e) => tracing::warn!(error = %e, "pruning old records failed; retried at the next run"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}
