//! Authentication: from a presented credential to a stored, verified key.
//!
//! Junk is rejected by [`Token::parse`] before any lookup. The key row comes from the cache or
//! the store; the secret is checked against its argon2id hash on argon2's own low-priority
//! threads ([`crate::workers`]), never on the async workers, with at most `workers`
//! verifications running and `queue` waiting: past that the request is shed rather than queued
//! without bound. One key id may hold at most `per_key` of those places, and keys a wrong secret
//! was seen for lately (a minute) at most half of them, waiting behind every other key's: a flood
//! of wrong secrets cannot take the queue from other keys' first verifications. Concurrent
//! verifications of the same token are coalesced into one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use argon2::Params;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::cache::{KeyEntry, Proven, Verdict};
use crate::config;
use crate::directory::Directory;
use crate::hashing::Hasher;
use crate::metrics::Argon2Metrics;
use crate::model::ApiKey;
use crate::policy::{self, InvalidReason};
use crate::store::StoreError;
use crate::token::Token;
use crate::workers::{Argon2Workers, Lane};

/// A verification is suspect when its key is: the key's current secret is proven already (a key
/// has one valid token, and it was not this one), or argon2 found a wrong secret for it in the
/// last `SUSPECT_FOR_SECS`. Suspect verifications wait in the later lane and share the suspects'
/// half of the queue. Every unproven token presented for a suspect key extends it, shed or not,
/// so a flood keeps its keys suspect for as long as it lasts, even when argon2 has no time left
/// for it; a key whose traffic is all proven tokens stops being suspect a minute after the last
/// wrong one. A rotation's new secret is not suspect: the reloaded key has no proof for it.
const SUSPECT_FOR_SECS: i64 = 60;

/// Why keyward could not decide; Envoy answers its `status_on_error` (503), never a 401.
#[derive(Debug, thiserror::Error)]
pub enum Undecidable {
    #[error("storage unavailable: {0}")]
    Storage(String),
    #[error("too many verifications in flight")]
    Overloaded,
    /// This key id already holds `verify.per_key` verifications, or it is suspect and the
    /// suspects' places are taken; other keys are still served. The key id is public (it is in
    /// every token and log line), never the secret.
    #[error("too many verifications in flight for key {0}")]
    KeyOverloaded(String),
    /// This principal already has `verify.admin_per_principal` new secrets being hashed for
    /// admin writes (create, rotate): its next write is refused until one finishes.
    #[error("too many key writes in flight for {0}")]
    PrincipalOverloaded(String),
    #[error("verification failed: {0}")]
    Internal(String),
}

impl From<StoreError> for Undecidable {
    fn from(e: StoreError) -> Self {
        Undecidable::Storage(e.to_string())
    }
}

/// The result of authenticating a well-formed token.
#[derive(Debug, Clone)]
pub enum Authenticated {
    /// The key's cache entry; the key itself is `entry.key`.
    Key(Arc<KeyEntry>),
    Invalid(InvalidReason),
}

#[derive(Clone)]
pub struct Authenticator {
    /// Where key rows (and their proofs and verdicts) come from.
    directory: Directory,
    hasher: Arc<Hasher>,
    workers: Arc<Argon2Workers>,
    waiting: Arc<Semaphore>,
    /// Places in `waiting` that verifications of suspect keys may hold: half of them, so the
    /// other half is always left to keys with no recent wrong secret.
    suspect_places: Arc<Semaphore>,
    per_key: Arc<PerKeyBudget>,
    /// New secrets each principal may have hashing at once for admin writes.
    admin_per_principal: Arc<PerKeyBudget>,
    /// argon2 verifications run since start (each checks a secret against a key's hashes).
    verifications: Arc<AtomicU64>,
    metrics: Argon2Metrics,
}

impl Authenticator {
    pub fn new(
        directory: Directory,
        argon: &config::Argon2,
        verify: &config::Verify,
    ) -> std::io::Result<Self> {
        Ok(Authenticator {
            directory,
            hasher: Arc::new(Hasher::new(params(argon), verify.workers)),
            workers: Arc::new(Argon2Workers::start(verify.workers, verify.nice)?),
            waiting: Arc::new(Semaphore::new(verify.workers + verify.queue)),
            suspect_places: Arc::new(Semaphore::new(((verify.workers + verify.queue) / 2).max(1))),
            per_key: Arc::new(PerKeyBudget::new(verify.per_key)),
            admin_per_principal: Arc::new(PerKeyBudget::new(verify.admin_per_principal)),
            verifications: Arc::new(AtomicU64::new(0)),
            metrics: Argon2Metrics::default(),
        })
    }

    /// The argon2 queue's metrics (sheds are counted by the Check service, which sees them).
    pub fn metrics(&self) -> &Argon2Metrics {
        &self.metrics
    }

    /// How many argon2 verifications have run since start: what the caches exist to avoid.
    pub fn verifications_run(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// The argon2id PHC string of `secret`, with a fresh random salt, for an admin write by
    /// `principal`. It runs in the background lane, after every waiting Check verification, so
    /// key writes never delay a Check; and each principal may have at most
    /// `verify.admin_per_principal` hashes queued or running, so one caller's burst of writes
    /// cannot fill the workers' queue (its further writes are refused, `RESOURCE_EXHAUSTED`).
    pub async fn hash_secret(&self, secret: &str, principal: &str) -> Result<String, Undecidable> {
        let share = PerKeyBudget::claim(&self.admin_per_principal, principal)
            .ok_or_else(|| Undecidable::PrincipalOverloaded(principal.to_owned()))?;
        let secret = Zeroizing::new(secret.to_owned());
        self.on_argon2_worker(Lane::Background, share, move |hasher| {
            hasher.hash(secret.as_bytes())
        })
        .await?
        .map_err(|e| Undecidable::Internal(e.to_string()))
    }

    /// Runs `work` on an argon2 worker in `lane`. The places go with the work, not with the
    /// request: they are given back when the work has run, or when it is dropped unrun because
    /// its caller (Envoy's Check) has gone.
    async fn on_argon2_worker<T: Send + 'static, P: Send + 'static>(
        &self,
        lane: Lane,
        places: P,
        work: impl FnOnce(&Hasher) -> T + Send + 'static,
    ) -> Result<T, Undecidable> {
        let hasher = self.hasher.clone();
        self.workers
            .run(lane, move || {
                let _places = places;
                work(&hasher)
            })
            .await
            .map_err(|e| Undecidable::Internal(e.to_string()))
    }

    /// Authenticates a well-formed token at `now` (Unix seconds).
    pub async fn authenticate(
        &self,
        token: &Token<'_>,
        now: i64,
    ) -> Result<Authenticated, Undecidable> {
        let Some(entry) = self.directory.key_entry(token.key_id).await? else {
            return Ok(Authenticated::Invalid(InvalidReason::UnknownKey));
        };
        let key = &entry.key;
        if key.plane() != token.plane {
            return Ok(Authenticated::Invalid(InvalidReason::UnknownKey));
        }
        let cache_key = token.cache_key();
        match entry.proven(&cache_key) {
            Some(Proven::Current) => return Ok(Authenticated::Key(entry.clone())),
            Some(Proven::Previous { valid_until }) => {
                return Ok(if policy::within_grace(valid_until, now) {
                    Authenticated::Key(entry.clone())
                } else {
                    Authenticated::Invalid(InvalidReason::RotatedOut)
                });
            }
            None => {}
        }
        let verdict = self.directory.caches().verdicts.get(&cache_key).await;
        let lookups = &self.directory.lookups().verdicts;
        match verdict {
            Some(_) => lookups.hit(),
            None => lookups.miss(),
        }
        if let Some(verdict) = verdict {
            if let Some(outcome) = judge(&verdict, &entry, now) {
                return Ok(outcome);
            }
            // Computed against a hash the key no longer has: verify again.
            self.directory
                .caches()
                .verdicts
                .invalidate(&cache_key)
                .await;
        }
        // A key whose current secret is proven has one valid token, and this is not it.
        let suspect = entry.has_current_proof() || entry.suspect_since(now - SUSPECT_FOR_SECS);
        if suspect {
            entry.mark_suspect(now);
        }
        let verdict = self
            .verify(cache_key, token.key_id, token.secret(), key, suspect, now)
            .await?;
        if matches!(&verdict, Verdict::NoMatch(phc) if *phc == key.secret_hash) {
            entry.mark_suspect(now);
        }
        if let Verdict::Match(phc) = &verdict {
            entry.record(&cache_key, phc);
            // The entry may have been reloaded while argon2 ran: the proof belongs on the one
            // cached now too (it is recorded only if that key still has the hash).
            if let Some(current) = self.directory.caches().key(token.key_id).await
                && !Arc::ptr_eq(&current, &entry)
            {
                current.record(&cache_key, phc);
            }
        }
        Ok(judge(&verdict, &entry, now)
            .unwrap_or(Authenticated::Invalid(InvalidReason::WrongSecret)))
    }

    /// Verifies `secret` against the key's current hash and, inside a rotation grace, its
    /// previous one. Concurrent calls for the same token share one verification, and so one
    /// place in the queue: callers presenting the same token never shed each other. A `suspect`
    /// key's verification also needs one of the suspects' places and waits in the later lane.
    async fn verify(
        &self,
        cache_key: [u8; 32],
        key_id: &str,
        secret: &str,
        key: &ApiKey,
        suspect: bool,
        now: i64,
    ) -> Result<Verdict, Undecidable> {
        // A verdict shares the key's PHC string rather than copying ~100 bytes of it.
        let current: Arc<str> = key.secret_hash.clone();
        let previous: Option<Arc<str>> = key
            .previous_secret
            .as_ref()
            .filter(|p| policy::within_grace(p.valid_until, now))
            .map(|p| p.hash.clone());
        let init = async {
            let share = PerKeyBudget::claim(&self.per_key, key_id)
                .ok_or_else(|| Undecidable::KeyOverloaded(key_id.to_owned()))?;
            let (lane, suspect_place) = if suspect {
                let place = self.suspect_places.clone().try_acquire_owned();
                let place = place.map_err(|_| Undecidable::KeyOverloaded(key_id.to_owned()))?;
                (Lane::Later, Some(place))
            } else {
                (Lane::Urgent, None)
            };
            let waiting = self
                .waiting
                .clone()
                .try_acquire_owned()
                .map_err(|_| Undecidable::Overloaded)?;
            let secret = Zeroizing::new(secret.to_owned());
            let verifications = self.verifications.clone();
            let (metrics, queued_at) = (self.metrics.clone(), std::time::Instant::now());
            let places = (waiting, suspect_place, share, self.metrics.queued());
            self.on_argon2_worker(lane, places, move |hasher| {
                metrics.started(queued_at.elapsed());
                verifications.fetch_add(1, Ordering::Relaxed);
                for phc in std::iter::once(&current).chain(previous.as_ref()) {
                    if hasher.verify(secret.as_bytes(), phc) {
                        return Verdict::Match(phc.clone());
                    }
                }
                Verdict::NoMatch(current)
            })
            .await
        };
        self.directory
            .caches()
            .verdicts
            .try_get_with(cache_key, init)
            .await
            .map_err(|e| match e.as_ref() {
                Undecidable::Overloaded => Undecidable::Overloaded,
                Undecidable::KeyOverloaded(id) => Undecidable::KeyOverloaded(id.clone()),
                other => Undecidable::Internal(other.to_string()),
            })
    }
}

/// How many verifications each key id has running or waiting, bounded by `verify.per_key`.
///
/// The queue is shared by every key, so without a bound per key id one attacker who knows a
/// single key id (it is public: it is in the token and in logs) can keep the whole queue full
/// with wrong secrets, and every other key's first verification after a restart, a new
/// replica or a cache expiry is shed with it. Legitimate traffic needs few places per key:
/// callers presenting the same token share one verification, and a key has at most two valid
/// secrets (current and, during a rotation grace, previous). Cached keys never come here.
struct PerKeyBudget {
    limit: usize,
    held: Mutex<HashMap<Box<str>, usize>>,
}

/// One verification's place in its key's budget, given back when dropped.
struct KeyShare {
    budget: Arc<PerKeyBudget>,
    key_id: Box<str>,
}

impl PerKeyBudget {
    fn new(limit: usize) -> Self {
        PerKeyBudget {
            limit,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// A place for one more verification of `key_id`, or `None` when it holds `limit` already.
    fn claim(budget: &Arc<PerKeyBudget>, key_id: &str) -> Option<KeyShare> {
        let mut held = budget.held.lock().unwrap_or_else(|e| e.into_inner());
        let count = held.entry(key_id.into()).or_insert(0);
        if *count >= budget.limit {
            return None;
        }
        *count += 1;
        Some(KeyShare {
            budget: budget.clone(),
            key_id: key_id.into(),
        })
    }

    #[cfg(test)]
    fn held_by(&self, key_id: &str) -> usize {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(key_id).copied().unwrap_or(0)
    }
}

impl Drop for KeyShare {
    fn drop(&mut self) {
        let mut held = self.budget.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(&self.key_id) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.key_id);
            }
        }
    }
}

/// What a verdict means for the key as it is now; `None` when it concerns a hash the key no
/// longer has.
fn judge(verdict: &Verdict, entry: &Arc<KeyEntry>, now: i64) -> Option<Authenticated> {
    let key = &entry.key;
    match verdict {
        Verdict::Match(phc) if *phc == key.secret_hash => Some(Authenticated::Key(entry.clone())),
        Verdict::Match(phc) => {
            let previous = key.previous_secret.as_ref().filter(|p| *phc == p.hash)?;
            Some(if policy::within_grace(previous.valid_until, now) {
                Authenticated::Key(entry.clone())
            } else {
                Authenticated::Invalid(InvalidReason::RotatedOut)
            })
        }
        Verdict::NoMatch(phc) if *phc == key.secret_hash => {
            Some(Authenticated::Invalid(InvalidReason::WrongSecret))
        }
        Verdict::NoMatch(_) => None,
    }
}

/// The argon2id PHC string of `secret` with a fresh salt, on one blocking thread: for the CLI's
/// `init`, which hashes one secret and needs no worker pool.
pub async fn hash_once(argon: &config::Argon2, secret: &str) -> Result<String, Undecidable> {
    let (params, secret) = (params(argon), Zeroizing::new(secret.to_owned()));
    tokio::task::spawn_blocking(move || Hasher::new(params, 1).hash(secret.as_bytes()))
        .await
        .map_err(|e| Undecidable::Internal(e.to_string()))?
        .map_err(|e| Undecidable::Internal(e.to_string()))
}

fn params(argon: &config::Argon2) -> Params {
    Params::new(argon.memory_kib, argon.iterations, argon.parallelism, None).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::time::Duration;

    use super::*;
    use crate::clock::now_unix;
    use crate::config::Config;
    use crate::model::{KeyScope, Plane};
    use crate::store::{NewKey, Store};
    use crate::token;

    /// A job in `lane` that blocks the worker taking it until released: the spawned job, a
    /// signal that a worker took it, and its release.
    fn gate(
        authn: &Authenticator,
        lane: Lane,
    ) -> (
        tokio::task::JoinHandle<Result<(), Undecidable>>,
        tokio::sync::oneshot::Receiver<()>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (started, running) = tokio::sync::oneshot::channel();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let authn = authn.clone();
        let job = tokio::spawn(async move {
            authn
                .on_argon2_worker(lane, (), move |_| {
                    let _ = started.send(());
                    let _ = held.recv();
                })
                .await
        });
        (job, running, release)
    }

    /// Yields until `done` holds: the spawned checks have reached the queue. Fails, rather than
    /// hangs, if they never do.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let wait = async {
            while !done() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .unwrap_or_else(|_| panic!("never happened: {what}"));
    }

    fn check(
        authn: &Authenticator,
        token: String,
    ) -> impl Future<Output = Result<Authenticated, Undecidable>> + Send + 'static {
        let authn = authn.clone();
        async move {
            let token = Token::parse(&token).expect("well-formed");
            authn.authenticate(&token, now_unix()).await
        }
    }

    fn wrong_secret(key_id: &str) -> String {
        token::generate(Plane::Data, key_id).token
    }

    fn is_wrong_secret(outcome: &Result<Authenticated, Undecidable>) -> bool {
        matches!(
            outcome,
            Ok(Authenticated::Invalid(InvalidReason::WrongSecret))
        )
    }

    /// SQLite in `dir`, one argon2 worker at full priority, argon2 at its cheapest: queueing
    /// order is what these tests look at, not hashing.
    fn one_cheap_worker(dir: &std::path::Path) -> Config {
        let mut config = Config::default();
        config.database.url = format!("sqlite://{}", dir.join("k.db").display());
        config.argon2.memory_kib = 8;
        config.argon2.iterations = 1;
        config.verify.workers = 1;
        config.verify.nice = 0;
        config
    }

    /// A data key borne by `owner`, stored through `store`: its id and token.
    async fn owner_key(authn: &Authenticator, store: &Store, owner: i64) -> (String, String) {
        let id = token::generate_key_id();
        let minted = token::generate(Plane::Data, &id);
        let secret_hash = authn.hash_secret(&minted.secret, "owner").await.unwrap();
        let new = NewKey {
            id: id.clone(),
            principal_id: owner,
            scope: KeyScope::Data(Arc::from(Vec::new())),
            name: "k".into(),
            description: String::new(),
            secret_hash,
            expires_at: None,
        };
        store.create_key(new).await.unwrap();
        (id, minted.token)
    }

    /// Fault matrix row 5 in miniature: a replica resumed from SIGSTOP runs a Check before its
    /// feed task applied what other replicas wrote meanwhile. The cache is served only while
    /// the feed confirmed it recently; past the bound the key is reloaded (its proof kept, so
    /// no argon2 runs again).
    #[tokio::test]
    async fn a_cache_the_feed_has_not_confirmed_recently_is_reloaded_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let config = one_cheap_worker(dir.path());
        let services = crate::services::Services::open(&config).await.unwrap();
        let authn = services.authn.clone();
        let store = services
            .store
            .audited(crate::audit::Record::local("test", String::new()));
        let owner = store.init_organization("owner", None).await.unwrap();
        let (id, token) = owner_key(&authn, &store, owner.id).await;
        let revoked = |outcome: &Result<Authenticated, Undecidable>| match outcome {
            Ok(Authenticated::Key(entry)) => entry.key.revoked_at.is_some(),
            other => panic!("not a key: {other:?}"),
        };
        assert!(!revoked(&check(&authn, token.clone()).await));

        // Revoked through "another replica": the change is in the store, not applied here.
        let (_, unapplied) = store.revoke_key(&id).await.unwrap();
        assert!(!unapplied.is_empty());
        let feed = services.directory.caches().feed();
        feed.confirm(crate::clock::monotonic_ms().saturating_sub(5_000));
        feed.bound(60_000);
        assert!(
            !revoked(&check(&authn, token.clone()).await),
            "confirmed 5 s ago, within a 60 s bound: the cache answers"
        );
        feed.bound(1_000);
        let verifications = authn.verifications_run();
        assert!(
            revoked(&check(&authn, token.clone()).await),
            "confirmed 5 s ago, past a 1 s bound: reloaded"
        );
        assert_eq!(
            authn.verifications_run(),
            verifications,
            "the reload kept the proof"
        );
    }

    #[tokio::test]
    async fn a_flood_on_some_keys_cannot_take_the_verification_queue_from_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = one_cheap_worker(dir.path());
        config.verify.queue = 4;
        config.verify.per_key = 2;
        let services = crate::services::Services::open(&config).await.unwrap();
        let authn = services.authn.clone();
        let store = services
            .store
            .audited(crate::audit::Record::local("test", String::new()));
        let owner = store.init_organization("owner", None).await.unwrap();
        let mut keys = Vec::new();
        for _ in 0..5 {
            keys.push(owner_key(&authn, &store, owner.id).await);
        }
        // Key 2 was just sent a wrong secret and key 3's real token is proven: any other token
        // for either is suspect.
        assert!(is_wrong_secret(
            &check(&authn, wrong_secret(&keys[2].0)).await
        ));
        let proven = check(&authn, keys[3].1.clone()).await;
        assert!(matches!(proven, Ok(Authenticated::Key(_))), "{proven:?}");

        // Hold the only worker, so every verification below waits in the queue (1 + 4 places,
        // 2 of them open to suspects).
        let (holder, holding, release) = gate(&authn, Lane::Urgent);
        holding.await.expect("the worker is held");

        // Two wrong secrets for key 0 take its two places; a third is shed at once, but a caller
        // presenting one of the two again joins its verification instead.
        let repeated = wrong_secret(&keys[0].0);
        let mut refused = vec![
            tokio::spawn(check(&authn, repeated.clone())),
            tokio::spawn(check(&authn, wrong_secret(&keys[0].0))),
        ];
        until("key 0 holds two places", || {
            authn.per_key.held_by(&keys[0].0) == 2
        })
        .await;
        refused.push(tokio::spawn(check(&authn, repeated)));
        let third = check(&authn, wrong_secret(&keys[0].0)).await;
        assert!(
            matches!(&third, Err(Undecidable::KeyOverloaded(id)) if *id == keys[0].0),
            "{third:?}"
        );

        // Suspects share two places: key 2 takes them, and key 3 is shed with room left.
        refused.push(tokio::spawn(check(&authn, wrong_secret(&keys[2].0))));
        refused.push(tokio::spawn(check(&authn, wrong_secret(&keys[2].0))));
        until("the suspects' places are taken", || {
            authn.suspect_places.available_permits() == 0
        })
        .await;
        let suspect = check(&authn, wrong_secret(&keys[3].0)).await;
        assert!(
            matches!(&suspect, Err(Undecidable::KeyOverloaded(id)) if *id == keys[3].0),
            "{suspect:?}"
        );
        assert_eq!(authn.waiting.available_permits(), 1);

        // The last place goes to key 1's first verification (in the urgent lane, ahead of key 2's:
        // `workers::tests` checks that order); then the queue as a whole is full and key 4's is
        // shed.
        let valid = tokio::spawn(check(&authn, keys[1].1.clone()));
        until("the queue is full", || {
            authn.waiting.available_permits() == 0
        })
        .await;
        let shed = check(&authn, keys[4].1.clone()).await;
        assert!(matches!(shed, Err(Undecidable::Overloaded)), "{shed:?}");

        release.send(()).unwrap();
        holder.await.unwrap().unwrap();
        let valid = valid.await.unwrap();
        assert!(matches!(valid, Ok(Authenticated::Key(_))), "{valid:?}");
        for outcome in refused {
            let outcome = outcome.await.unwrap();
            assert!(is_wrong_secret(&outcome), "{outcome:?}");
        }

        // Every place is given back: key 0 may be verified again, key 4 is allowed.
        assert_eq!(authn.per_key.held_by(&keys[0].0), 0);
        assert_eq!(authn.waiting.available_permits(), 5);
        assert_eq!(authn.suspect_places.available_permits(), 2);
        assert!(is_wrong_secret(
            &check(&authn, wrong_secret(&keys[0].0)).await
        ));
        let later = check(&authn, keys[4].1.clone()).await;
        assert!(matches!(later, Ok(Authenticated::Key(_))), "{later:?}");
    }

    #[test]
    fn a_key_gives_its_places_back() {
        let budget = Arc::new(PerKeyBudget::new(1));
        let first = PerKeyBudget::claim(&budget, "AAAA").expect("a place");
        assert!(PerKeyBudget::claim(&budget, "AAAA").is_none());
        assert!(PerKeyBudget::claim(&budget, "BBBB").is_some());
        drop(first);
        assert_eq!(budget.held_by("AAAA"), 0);
        assert!(
            budget.held.lock().unwrap().is_empty(),
            "no entry is left behind"
        );
    }

    #[tokio::test]
    async fn admin_hashing_waits_behind_check_verifications_and_is_bounded_per_principal() {
        use std::pin::Pin;
        use std::task::Poll;
        async fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
            std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *future).poll(cx))).await
        }

        let dir = tempfile::tempdir().unwrap();
        let mut config = one_cheap_worker(dir.path());
        config.verify.admin_per_principal = 2;
        let services = crate::services::Services::open(&config).await.unwrap();
        let authn = services.authn.clone();

        // Hold the only worker.
        let (holder, holding, release) = gate(&authn, Lane::Urgent);
        holding.await.expect("the worker is held");

        // Two writes by principal 7 queue; a third is refused at once; principal 8 still queues.
        let mut first = Box::pin(authn.hash_secret("s1", "7"));
        let mut second = Box::pin(authn.hash_secret("s2", "7"));
        assert!(poll_once(&mut first).await.is_pending());
        assert!(poll_once(&mut second).await.is_pending());
        let third = authn.hash_secret("s3", "7").await;
        assert!(
            matches!(&third, Err(Undecidable::PrincipalOverloaded(p)) if p == "7"),
            "{third:?}"
        );
        let mut other = Box::pin(authn.hash_secret("s4", "8"));
        assert!(poll_once(&mut other).await.is_pending());

        // A Check verification queued after them (even in the later lane) runs before them.
        let queued_before = Arc::strong_count(&authn.hasher);
        let (check, check_running, finish_check) = gate(&authn, Lane::Later);
        // Its task holds a clone of the authenticator and its job one of the hasher.
        until("the check job is queued", || {
            Arc::strong_count(&authn.hasher) >= queued_before + 2
        })
        .await;
        release.send(()).expect("the holder waits");
        holder.await.unwrap().expect("held");
        check_running
            .await
            .expect("the check verification runs next");
        assert!(
            poll_once(&mut first).await.is_pending(),
            "an admin hash ran before a Check"
        );
        finish_check.send(()).expect("the check waits");
        check.await.unwrap().expect("ran");
        assert!(first.await.unwrap().starts_with("$argon2id$"));
        assert!(second.await.is_ok());
        assert!(other.await.is_ok());
        // Its places are given back: principal 7 may write again.
        assert!(authn.hash_secret("s5", "7").await.is_ok());
    }
}
