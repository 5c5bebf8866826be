//! Last use of each key, recorded without a write per request: the Check path notes the time
//! in memory, and a background task writes the batch every `usage.flush_interval_secs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;

use crate::store::Store;

#[derive(Clone, Default)]
pub struct LastUsed {
    pending: Arc<Mutex<HashMap<String, i64>>>,
}

impl LastUsed {
    /// Notes that key `id` was used at `now`. One short, uncontended lock; allocates only the
    /// first time a key is seen in a batch.
    pub fn touch(&self, id: &str, now: i64) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        match pending.get_mut(id) {
            Some(at) => *at = (*at).max(now),
            None => {
                pending.insert(id.to_owned(), now);
            }
        }
    }

    /// The not yet written last use of `id`, if any.
    pub fn pending(&self, id: &str) -> Option<i64> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .copied()
    }

    fn take(&self) -> HashMap<String, i64> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Writes what is pending; on failure keeps it for the next attempt.
    pub async fn flush(&self, store: &Store) {
        let batch: Vec<(String, i64)> = self.take().into_iter().collect();
        if batch.is_empty() {
            return;
        }
        if let Err(error) = store.record_last_used(&batch).await {
            warn!(%error, keys = batch.len(), "cannot record last use; will retry");
            for (id, at) in batch {
                self.touch(&id, at);
            }
        }
    }

    /// Flushes every `interval` until `stop`, then once more.
    pub async fn run(self, store: Store, interval: Duration, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = async { let _ = stop.wait_for(|s| *s).await; } => break,
                () = tokio::time::sleep(interval) => self.flush(&store).await,
            }
        }
        self.flush(&store).await;
    }
}
