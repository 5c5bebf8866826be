//! Change propagation between replicas: every replica learns of every admin write and drops
//! what it affects, so a revocation made through one replica holds on all of them within
//! milliseconds, with the cache TTL only as the outer bound.
//!
//! - PostgreSQL: `LISTEN keyward_changes`; writes `pg_notify` inside their transaction.
//!   Notifications are the fast path, not the only one:
//!   - every `propagation.poll_interval_ms` the `changes` table is also read after the newest
//!     change applied, so a change whose notification never came (a connection frozen without
//!     a word) is applied within that interval while the store answers;
//!   - the replica sends itself a heartbeat every `propagation.heartbeat_ms` through the pool and
//!     expects it back on the listening connection within three intervals: when it does not
//!     come, the feed is declared dead and the connection replaced;
//!   - while not listening (connection lost, store down, reconnect backoff) the table is read
//!     every [`DEGRADED_POLL`], and on listening again every change after the last one applied
//!     is applied (catch-up by sequence: no cache flush, so no reload stampede).
//! - SQLite: several processes may share one file; each polls the `changes` table's counter.
//!
//! Each successful read of the table, and each heartbeat back, confirms the caches complete as of
//! when it began ([`crate::cache::FeedConfirmation`]); past `propagation.max_unconfirmed_ms`
//! without one, the Check path reloads instead of trusting the cache.
//!
//! A replica applies its own writes when it makes them, so it skips their events here.
//! A notification names its row in the table, so a change notified and then read from the table
//! is applied once; were it applied twice (a notification from an older replica), that is
//! harmless: it only marks entries stale, and proofs of secrets survive it.

use std::collections::BTreeSet;
use std::time::Duration;

use backon::BackoffBuilder as _;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::cache::Caches;
use crate::config::Propagation;
use crate::metrics::PropagationMetrics;
use crate::store::{Backend, Change, ChangeListener, Notice, Store};

/// How many change rows one SQLite poll reads; a longer backlog means "flush everything".
const POLL_BATCH: i64 = 1_000;

/// How often the `changes` table is read while PostgreSQL notifications are not flowing.
pub const DEGRADED_POLL: Duration = Duration::from_millis(50);

/// How far below the newest change applied each read looks again. Change ids come from a
/// sequence when a write begins, but become visible when it commits: a write that took its id
/// before another and committed after it would be skipped by reading only after the newest id.
/// This many ids below are read again (and skipped when applied already).
const LOOKBACK: i64 = 64;

/// The most notified change ids remembered ahead of the table reads (while reads fail and
/// notifications flow); past it, notified changes are applied again when read, which is
/// harmless.
const MAX_NOTIFIED_AHEAD: usize = 10_000;

/// A read of the table gets this long before it counts as failed: a stalled store must not
/// stall the follower.
const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Follows the store's change feed until `stop` turns true.
pub async fn follow(
    store: Store,
    caches: Caches,
    config: Propagation,
    stop: watch::Receiver<bool>,
) {
    caches.feed().bound(config.max_unconfirmed_ms);
    match store.backend() {
        Backend::Postgres => listen(store, caches, config, stop).await,
        Backend::Sqlite => poll(store, caches, config, stop).await,
    }
}

/// The follower starts from the newest change id, read at `started`: it never applies a change
/// at or below it. Check serves while the follower starts, so an entry loaded before that read
/// may predate a change the follower will skip; every cached entry is dropped here, and what
/// is loaded from now on sees every change committed before `started`, so the feed is
/// confirmed as of then (without this, the first confirmation waits a whole poll interval and
/// every Check until then reloads from the store).
fn start_after(caches: &Caches, started: u64) {
    caches.flush();
    caches.feed().confirm(started);
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The change ids applied from the `changes` table: all up to `newest` but for the ones
/// within [`LOOKBACK`] below it that are not in `recent`.
struct Applied {
    metrics: PropagationMetrics,
    newest: i64,
    recent: BTreeSet<i64>,
    /// The last read failed: log the next failure only after a success.
    failing: bool,
}

impl Applied {
    fn from(newest: i64, metrics: PropagationMetrics) -> Self {
        Applied {
            metrics,
            newest,
            recent: BTreeSet::new(),
            failing: false,
        }
    }

    /// Reads the changes after `newest - LOOKBACK` and applies those not applied yet. Returns
    /// whether the read succeeded.
    async fn catch_up(&mut self, store: &Store, caches: &Caches) -> bool {
        let after = (self.newest - LOOKBACK).max(0);
        let started = crate::clock::monotonic_ms();
        // Guarded like the Check path's reads: while the database is known down this read is
        // the background probe (one per 250 ms), and the first that succeeds ends the outage
        // for every caller.
        let read = store.guarded(store.changes_since(after, POLL_BATCH));
        let read = tokio::time::timeout(READ_TIMEOUT, read).await;
        let changes = match read {
            Ok(Ok(changes)) => changes,
            Ok(Err(error)) => {
                if !std::mem::replace(&mut self.failing, true) {
                    warn!(%error, "cannot read the change table");
                }
                return false;
            }
            Err(_) => {
                if !std::mem::replace(&mut self.failing, true) {
                    warn!("reading the change table timed out");
                }
                return false;
            }
        };
        if std::mem::replace(&mut self.failing, false) {
            info!("the change table answers again");
        }
        if changes.len() as i64 >= POLL_BATCH {
            // A backlog longer than one read: too much to apply one by one.
            caches.flush();
            warn!("change backlog too long to apply one by one; caches flushed");
        }
        for (id, change) in changes {
            let seen = id <= self.newest - LOOKBACK || !self.recent.insert(id);
            self.newest = self.newest.max(id);
            if seen {
                continue;
            }
            if let Some(change) = change {
                debug!(?change, id, "change read from the table");
                caches.apply(&change).await;
                self.metrics.changes.count(&change);
            }
        }
        let floor = self.newest - LOOKBACK;
        self.recent = self.recent.split_off(&(floor + 1));
        caches.feed().confirm(started);
        true
    }

    /// Change `id` was applied from its notification: its row is skipped when read.
    fn notified(&mut self, id: i64) {
        if id > self.newest - LOOKBACK && self.recent.len() < MAX_NOTIFIED_AHEAD {
            self.recent.insert(id);
        }
    }
}

async fn listen(
    store: Store,
    caches: Caches,
    config: Propagation,
    mut stop: watch::Receiver<bool>,
) {
    let poll_interval = Duration::from_millis(config.poll_interval_ms);
    let heartbeat = Duration::from_millis(config.heartbeat_ms);
    let max_backoff = Duration::from_millis(config.max_backoff_ms);
    let mut applied = loop {
        let started = crate::clock::monotonic_ms();
        match store.latest_change().await {
            Ok(id) => {
                start_after(&caches, started);
                break Applied::from(id, PropagationMetrics::default());
            }
            Err(error) => {
                warn!(%error, "cannot read the change counter");
                tokio::select! {
                    () = stopped(&mut stop) => return,
                    () = tokio::time::sleep(DEGRADED_POLL) => {}
                }
            }
        }
    };
    let mut backoff = reconnect_backoff(max_backoff);
    let mut heartbeats = Heartbeats::default();
    let mut first = true;
    loop {
        let Some(mut listener) = connect_while_polling(
            &store,
            &caches,
            &mut applied,
            &mut backoff,
            max_backoff,
            &mut stop,
        )
        .await
        else {
            return;
        };
        backoff = reconnect_backoff(max_backoff);
        // Whatever was written while not listening is applied now, by sequence.
        applied.catch_up(&store, &caches).await;
        heartbeats.restart();
        if !std::mem::replace(&mut first, false) {
            applied.metrics.reconnected();
        }
        applied.metrics.connected(true);
        info!("listening for changes");
        let lost = follow_listener(
            &store,
            &caches,
            &mut listener,
            &mut applied,
            &mut heartbeats,
            poll_interval,
            heartbeat,
            &mut stop,
        )
        .await;
        applied.metrics.connected(false);
        match lost {
            None => return,
            Some(why) => warn!(
                why,
                "change notifications interrupted; reading the change table until listening again"
            ),
        }
    }
}

/// The waits between attempts to `LISTEN` again: from [`DEGRADED_POLL`], doubling, with jitter
/// (replicas that lost the database together do not reconnect in step), never above `max`.
fn reconnect_backoff(max: Duration) -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::new()
        .with_min_delay(DEGRADED_POLL.min(max))
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .map(move |wait| wait.min(max))
}

/// Connects a listener, reading the change table every [`DEGRADED_POLL`] meanwhile and
/// between attempts (`backoff`). `None` when stopped.
async fn connect_while_polling(
    store: &Store,
    caches: &Caches,
    applied: &mut Applied,
    backoff: &mut impl Iterator<Item = Duration>,
    max_backoff: Duration,
    stop: &mut watch::Receiver<bool>,
) -> Option<ChangeListener> {
    loop {
        let connecting = store.listen_for_changes();
        tokio::pin!(connecting);
        let failed = loop {
            tokio::select! {
                () = stopped(stop) => return None,
                result = &mut connecting => match result {
                    Ok(listener) => return Some(listener),
                    Err(error) => break error,
                },
                () = tokio::time::sleep(DEGRADED_POLL) => {
                    applied.catch_up(store, caches).await;
                }
            }
        };
        let wait = backoff.next().unwrap_or(max_backoff);
        warn!(error = %failed, retry_in_ms = wait.as_millis() as u64, "cannot LISTEN for changes");
        let retry_at = Instant::now() + wait;
        while Instant::now() < retry_at {
            tokio::select! {
                () = stopped(stop) => return None,
                () = tokio::time::sleep(DEGRADED_POLL) => {}
            }
            applied.catch_up(store, caches).await;
        }
    }
}

/// This replica's heartbeats: the newest sent, the newest received back, when the oldest
/// unanswered one was sent, and when each unanswered one was sent on the monotonic clock.
#[derive(Default)]
struct Heartbeats {
    sent: u64,
    received: u64,
    unanswered_since: Option<Instant>,
    sent_at_ms: std::collections::VecDeque<(u64, u64)>,
}

impl Heartbeats {
    /// On a new connection: heartbeats sent on the old one may never come back.
    fn restart(&mut self) {
        self.received = self.sent;
        self.unanswered_since = None;
        self.sent_at_ms.clear();
    }

    /// Heartbeat `n` came back: when it was sent (monotonic ms), if sent on this connection.
    /// Notifications arrive in commit order, so every change committed before then has arrived.
    fn received(&mut self, n: u64) -> Option<u64> {
        self.received = self.received.max(n);
        if self.received >= self.sent {
            self.unanswered_since = None;
        }
        let mut sent_at = None;
        while let Some(&(m, at)) = self.sent_at_ms.front()
            && m <= n
        {
            self.sent_at_ms.pop_front();
            if m == n {
                sent_at = Some(at);
            }
        }
        sent_at
    }

    /// The sequence number of the next heartbeat to send.
    fn next(&mut self, now: Instant) -> u64 {
        self.sent += 1;
        self.unanswered_since.get_or_insert(now);
        self.sent_at_ms
            .push_back((self.sent, crate::clock::monotonic_ms()));
        self.sent
    }

    /// Whether a heartbeat has gone unanswered for longer than `limit`.
    fn overdue(&self, now: Instant, limit: Duration) -> bool {
        self.unanswered_since
            .is_some_and(|since| now.duration_since(since) > limit)
    }
}

/// Applies notifications until the connection is lost or the feed is found dead (the reason
/// returned), or `None` when stopped. Reads the change table every `poll_interval` as well.
#[allow(clippy::too_many_arguments)]
async fn follow_listener(
    store: &Store,
    caches: &Caches,
    listener: &mut ChangeListener,
    applied: &mut Applied,
    heartbeats: &mut Heartbeats,
    poll_interval: Duration,
    heartbeat: Duration,
    stop: &mut watch::Receiver<bool>,
) -> Option<&'static str> {
    let mut poll = tokio::time::interval(poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beat = tokio::time::interval(heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let overdue_after = heartbeat * 3;
    loop {
        tokio::select! {
            () = stopped(stop) => return None,
            notice = listener.next_notice() => match notice {
                Ok(Some(Notice::Change(payload))) => {
                    apply_payload(store, caches, applied, &payload).await
                }
                Ok(Some(Notice::Heartbeat(n))) => {
                    if let Some(sent_at) = heartbeats.received(n) {
                        caches.feed().confirm(sent_at);
                    }
                }
                Ok(None) => return Some("the connection was lost"),
                Err(error) => {
                    warn!(%error, "change notification error");
                    return Some("the connection failed");
                }
            },
            _ = beat.tick() => {
                let now = Instant::now();
                if heartbeats.overdue(now, overdue_after) {
                    return Some("a heartbeat did not come back: the listening connection is dead");
                }
                let n = heartbeats.next(now);
                // Sent off this loop: a stalled pool must not stop notifications or polls.
                let store = store.clone();
                tokio::spawn(async move {
                    if let Ok(Err(error)) =
                        tokio::time::timeout(READ_TIMEOUT, store.send_heartbeat(n)).await
                    {
                        debug!(%error, "cannot send a heartbeat");
                    }
                });
            }
            _ = poll.tick() => {
                applied.catch_up(store, caches).await;
            }
        }
    }
}

async fn apply_payload(store: &Store, caches: &Caches, applied: &mut Applied, payload: &str) {
    match Change::from_payload(payload) {
        Some((origin, _)) if origin == store.origin() => {}
        Some((_, change)) => {
            debug!(?change, "change notified");
            caches.apply(&change).await;
            applied.metrics.changes.count(&change);
            if let Some(sent_at) = Change::sent_at_ms(payload) {
                applied.metrics.applied_after(sent_at);
            }
            if let Some(id) = Change::change_id(payload) {
                applied.notified(id);
            }
        }
        None => {
            warn!(payload, "unknown change notification; flushing caches");
            caches.flush();
        }
    }
}

async fn poll(store: Store, caches: Caches, config: Propagation, mut stop: watch::Receiver<bool>) {
    let metrics = PropagationMetrics::default();
    let interval = Duration::from_millis(config.poll_interval_ms);
    let mut seen = loop {
        let started = crate::clock::monotonic_ms();
        match store.latest_change().await {
            Ok(id) => {
                start_after(&caches, started);
                break id;
            }
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
        let started = crate::clock::monotonic_ms();
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
                caches.feed().confirm(started);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Two replicas' handles on one SQLite file: a change `writer` records, as the follower
    /// of `reader` sees it.
    async fn two_replicas(dir: &std::path::Path) -> (Store, Store) {
        let url = format!("sqlite://{}", dir.join("k.db").display());
        let writer = Store::open(&url, 2)
            .await
            .unwrap()
            .audited(crate::audit::Record::local("test", String::new()));
        let reader = Store::open(&url, 2).await.unwrap();
        (writer, reader)
    }

    #[tokio::test]
    async fn a_change_applied_from_its_notification_is_not_applied_again_from_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, reader) = two_replicas(dir.path()).await;
        writer.init_organization("owner", None).await.unwrap();
        let caches = Caches::new(100, Duration::from_secs(60), Duration::from_secs(5));
        let start = reader.latest_change().await.unwrap();
        let mut applied = Applied::from(start, PropagationMetrics::default());
        // The first read looks back below the starting point once.
        assert!(applied.catch_up(&reader, &caches).await);
        let settled = caches.applied();

        let (_, _, changes) = writer.create_project("acme").await.unwrap();
        assert_eq!(changes.len(), 1);
        applied.notified(writer.latest_change().await.unwrap());
        assert!(applied.catch_up(&reader, &caches).await);
        assert_eq!(caches.applied(), settled, "notified: skipped when read");

        writer.create_project("beta").await.unwrap();
        assert!(applied.catch_up(&reader, &caches).await);
        assert_eq!(
            caches.applied(),
            settled + 1,
            "not notified: applied when read"
        );
        assert!(applied.catch_up(&reader, &caches).await);
        assert_eq!(
            caches.applied(),
            settled + 1,
            "read again within the look-back: skipped"
        );
    }

    /// A Check can load from the store before the follower has read where the feed starts, and
    /// a change committed in between is at or below that start, so the follower never applies
    /// it: what was cached before the start must not be trusted after it.
    #[tokio::test]
    async fn what_was_cached_before_the_follower_started_is_not_trusted_after() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, reader) = two_replicas(dir.path()).await;
        writer.init_organization("owner", None).await.unwrap();
        let caches = Caches::new(100, Duration::from_secs(60), Duration::from_secs(5));
        // A Check for acme/chat before it exists: its absence is cached.
        caches
            .insert_deployment("acme/chat", None, caches.epoch())
            .await;
        writer.create_project("acme").await.unwrap();
        let name: crate::model::DeploymentName = "acme/chat".parse().unwrap();
        writer
            .create_deployment(&name, "m", true, false)
            .await
            .unwrap();

        let started = caches.changed().notified();
        tokio::pin!(started);
        started.as_mut().enable();
        let (stop_tx, stop) = watch::channel(false);
        let follower = tokio::spawn(follow(
            reader,
            caches.clone(),
            // No poll within the test: only the start can have confirmed the feed.
            Propagation {
                poll_interval_ms: 60_000,
                max_unconfirmed_ms: 120_000,
                ..Propagation::default()
            },
            stop,
        ));
        tokio::time::timeout(Duration::from_secs(10), started)
            .await
            .expect("the follower starts by dropping what was cached");
        assert!(
            caches.deployment("acme/chat").await.is_none(),
            "the cached absence is gone"
        );
        assert!(
            caches.feed().current(crate::clock::monotonic_ms),
            "confirmed from the start, not one poll later"
        );
        stop_tx.send(true).unwrap();
        follower.await.unwrap();
    }

    #[test]
    fn the_reconnect_backoff_doubles_with_jitter_and_never_passes_its_cap() {
        let max = Duration::from_millis(5_000);
        let waits: Vec<Duration> = reconnect_backoff(max).take(20).collect();
        assert!(
            waits[0] >= DEGRADED_POLL && waits[0] <= DEGRADED_POLL * 2,
            "{waits:?}"
        );
        assert!(waits.iter().all(|w| *w <= max), "{waits:?}");
        assert!(waits[12..].iter().all(|w| *w == max), "{waits:?}");
        // A cap below the first wait is the wait.
        let tight = Duration::from_millis(10);
        assert!(reconnect_backoff(tight).take(5).all(|w| w == tight));
    }
}
