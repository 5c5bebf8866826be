//! The PostgreSQL connection that `LISTEN`s on [`NOTIFY_CHANNEL`], behind a store API so the
//! rest of keyward never speaks sqlx.

use sqlx::postgres::PgListener;

use super::{NOTIFY_CHANNEL, Result, Store};

/// A connection receiving the change payloads every writer sends on [`NOTIFY_CHANNEL`].
pub struct ChangeListener(PgListener);

impl Store {
    /// Connects a second, dedicated connection and starts listening for change events.
    pub async fn listen_for_changes(&self) -> Result<ChangeListener> {
        let mut listener = PgListener::connect(self.url()).await?;
        // A lost connection is reported at once (and reconnected by the caller, with backoff),
        // rather than retried inside `try_recv` for up to its pool's 30 s acquire timeout.
        listener.eager_reconnect(false);
        listener.listen(NOTIFY_CHANNEL).await?;
        Ok(ChangeListener(listener))
    }
}

impl ChangeListener {
    /// The next payload (`origin:kind:subject`); `Ok(None)` when the connection was lost, after
    /// which notifications may have been missed.
    pub async fn next_payload(&mut self) -> Result<Option<String>> {
        Ok(self
            .0
            .try_recv()
            .await?
            .map(|notification| notification.payload().to_owned()))
    }
}
