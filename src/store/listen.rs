//! The PostgreSQL connection that `LISTEN`s on [`NOTIFY_CHANNEL`], behind a store API so the
//! rest of keyward never speaks sqlx; and this replica's heartbeat through it.
//!
//! A `LISTEN` connection can die without a word: held open but frozen (a stalled proxy, a
//! half-open TCP connection), it delivers nothing and reports nothing. So each replica also
//! listens on a channel of its own and sends itself heartbeats through the pool
//! ([`Store::send_heartbeat`]): a heartbeat that does not come back in time means the feed is
//! dead, whatever the connection says.

use sqlx::postgres::PgListener;

use super::{NOTIFY_CHANNEL, Result, Store};

/// A connection receiving the change payloads every writer sends on [`NOTIFY_CHANNEL`], and
/// this replica's own heartbeats.
pub struct ChangeListener {
    listener: PgListener,
    heartbeat_channel: String,
}

/// What arrived on the listening connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A change payload (`origin:kind:subject`).
    Change(String),
    /// One of this replica's heartbeats, by sequence number.
    Heartbeat(u64),
}

impl Store {
    /// Connects a second, dedicated connection and starts listening for change events and
    /// this replica's heartbeats.
    pub async fn listen_for_changes(&self) -> Result<ChangeListener> {
        let mut listener = PgListener::connect(self.url()).await?;
        // A lost connection is reported at once (the caller reconnects and catches up), not
        // retried inside `try_recv`.
        listener.eager_reconnect(false);
        let heartbeat_channel = self.heartbeat_channel();
        listener
            .listen_all([NOTIFY_CHANNEL, heartbeat_channel.as_str()])
            .await?;
        Ok(ChangeListener {
            listener,
            heartbeat_channel,
        })
    }

    /// Sends heartbeat `sequence` to this replica's own listener, through the pool.
    pub async fn send_heartbeat(&self, sequence: u64) -> Result<()> {
        sqlx::query("SELECT 1 FROM pg_notify($1, $2)")
            .bind(self.heartbeat_channel())
            .bind(sequence.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// `keyward_heartbeat_ORIGIN`: the origin is a key id (base62, well under PostgreSQL's
    /// 63-byte identifier limit), so each replica hears only its own heartbeats.
    fn heartbeat_channel(&self) -> String {
        format!("keyward_heartbeat_{}", self.origin())
    }
}

impl ChangeListener {
    /// The next notice; `Ok(None)` when the connection was lost, after which notifications
    /// may have been missed.
    pub async fn next_notice(&mut self) -> Result<Option<Notice>> {
        loop {
            let Some(notification) = self.listener.try_recv().await? else {
                return Ok(None);
            };
            if notification.channel() != self.heartbeat_channel {
                return Ok(Some(Notice::Change(notification.payload().to_owned())));
            }
            if let Ok(sequence) = notification.payload().parse() {
                return Ok(Some(Notice::Heartbeat(sequence)));
            }
        }
    }
}
