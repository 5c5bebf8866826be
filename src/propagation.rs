//! Change propagation between replicas: every replica learns of every admin write and drops
//! what it affects, so a revocation made through one replica holds on all of them within
//! milliseconds, with the cache TTL only as the outer bound.
//!
//! - PostgreSQL: `LISTEN keyward_changes`; writes `pg_notify` inside their transaction. When the
//!   connection drops, notifications may have been missed: keyward reconnects with capped
//!   exponential backoff and, once listening again, flushes its key and deployment caches.
//! - SQLite: several processes may share one file; each polls the `changes` table's counter.
//!
//! A replica applies its own writes when it makes them, so it skips their events here.

use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::cache::Caches;
use crate::config::Propagation;
use crate::metrics::PropagationMetrics;
use crate::store::{Backend, Change, Store};

/// How many change rows one SQLite poll reads; a longer backlog means "flush everything".
const POLL_BATCH: i64 = 1_000;

/// Follows the store's change feed until `stop` turns true.
pub async fn follow(
    store: Store,
    caches: Caches,
    config: Propagation,
    stop: watch::Receiver<bool>,
) {
    match store.backend() {
        Backend::Postgres => listen(store, caches, config, stop).await,
        Backend::Sqlite => poll(store, caches, config, stop).await,
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn listen(
    store: Store,
    caches: Caches,
    config: Propagation,
    mut stop: watch::Receiver<bool>,
) {
    let metrics = PropagationMetrics::default();
    let max_backoff = Duration::from_millis(config.max_backoff_ms);
    let mut backoff = Duration::from_millis(50).min(max_backoff);
    let mut first = true;
    loop {
        let connected = store.listen_for_changes();
        let mut listener = tokio::select! {
            () = stopped(&mut stop) => return,
            result = connected => match result {
                Ok(listener) => listener,
                Err(error) => {
                    warn!(%error, retry_in_ms = backoff.as_millis() as u64, "cannot LISTEN for changes");
                    tokio::select! {
                        () = stopped(&mut stop) => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(max_backoff);
                    continue;
                }
            },
        };
        if first {
            first = false;
        } else {
            // Anything written while we were not listening was missed.
            caches.flush();
            metrics.reconnected();
            info!("listening for changes again; caches flushed");
        }
        metrics.connected(true);
        backoff = Duration::from_millis(50).min(max_backoff);
        loop {
            let notification = tokio::select! {
                () = stopped(&mut stop) => return,
                n = listener.next_payload() => n,
            };
            match notification {
                Ok(Some(payload)) => match Change::from_payload(&payload) {
                    Some((origin, _)) if origin == store.origin() => {}
                    Some((_, change)) => {
                        debug!(?change, "change notified");
                        caches.apply(&change).await;
                        metrics.changes.count(&change);
                        if let Some(sent_at) = Change::sent_at_ms(&payload) {
                            metrics.applied_after(sent_at);
                        }
                    }
                    None => {
                        warn!(
                            payload = payload.as_str(),
                            "unknown change notification; flushing caches"
                        );
                        caches.flush();
                    }
                },
                Ok(None) => {
                    metrics.connected(false);
                    warn!("change notifications interrupted: the connection was lost");
                    break;
                }
                Err(error) => {
                    metrics.connected(false);
                    warn!(%error, "change notifications interrupted");
                    break;
                }
            }
        }
    }
}

async fn poll(store: Store, caches: Caches, config: Propagation, mut stop: watch::Receiver<bool>) {
    let metrics = PropagationMetrics::default();
    let interval = Duration::from_millis(config.poll_interval_ms);
    let mut seen = loop {
        match store.latest_change().await {
            Ok(id) => break id,
            Err(error) => {
                warn!(%error, "cannot read the change counter");
                tokio::select! {
                    () = stopped(&mut stop) => return,
                    () = tokio::time::sleep(interval) => {}
                }
            }
        }
    };
    let mut failing = false;
    metrics.connected(true);
    loop {
        tokio::select! {
            () = stopped(&mut stop) => return,
            () = tokio::time::sleep(interval) => {}
        }
        match store.changes_since(seen, POLL_BATCH).await {
            Ok(changes) => {
                if failing {
                    failing = false;
                    caches.flush();
                    metrics.reconnected();
                    metrics.connected(true);
                }
                if changes.len() as i64 >= POLL_BATCH {
                    caches.flush();
                }
                for (id, change) in changes {
                    if let Some(change) = change {
                        caches.apply(&change).await;
                        metrics.changes.count(&change);
                    }
                    seen = id;
                }
            }
            Err(error) => {
                if !failing {
                    metrics.connected(false);
                    warn!(%error, "cannot poll for changes");
                }
                failing = true;
            }
        }
    }
}
