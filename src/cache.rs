//! In-memory caches in front of the store, and their invalidation.
//!
//! - `keys`: key id → a [`KeyEntry`]: the stored key and the tokens proven to carry its secret
//!   (`unknown_keys` remembers ids no key has). A change to a key, to any principal, or a gap in change notifications
//!   makes entries stale rather than dropping them: the next request reloads the key, and the
//!   proofs still valid for the reloaded key carry over, so no argon2 stampede follows.
//! - `verdicts`: SHA-256 of a whole token → the outcome of its argon2 verification, naming the
//!   PHC string it concerns. It coalesces concurrent verifications of one token and remembers
//!   failures for the short negative TTL; a success is recorded as a proof on the key's entry
//!   instead and expires here at once.
//! - `deployments`: `project/slug` → the stored deployment (or its absence).
//! - `grants`: principal id → its policies resolved against the permission sets, so the hot
//!   path decides without a database round trip. Any policy, permission set or principal
//!   change drops them all: such changes are rare and may move grants between principals.
//! - `workloads`: workload id → the projects holding a workload of that id (ids are unique
//!   per project only; none: no such workload).
//!
//! Every admin write invalidates what it changed before it answers, so the very next decision
//! sees it. Other replicas' writes arrive through the change feed, and [`FeedConfirmation`]
//! bounds how long the caches are trusted without the feed confirming it is complete. A load racing an invalidation can not re-insert stale data: loads bracket their
//! insert with an epoch read and undo it (or mark it stale) when an invalidation happened
//! meanwhile.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use subtle::ConstantTimeEq;

use crate::iam::Grants;
use crate::model::{ApiKey, DataTarget, Deployment, KeyScope};
use crate::routes::RouteSlot;
use crate::store::Change;
use crate::token::KEY_ID_LEN;

/// The outcome of verifying one presented secret against a key's stored hashes. Each verdict
/// names the hash it concerns, so it stops applying the moment the key's hash changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The secret matched this PHC string (the current one, or the previous one in a grace).
    Match(Arc<str>),
    /// The secret matched none of the key's hashes while this PHC string was current.
    NoMatch(Arc<str>),
}

/// A cached key and the tokens proven to carry its secret.
///
/// A proof is the SHA-256 digest of a whole token that argon2 verified against the key's current
/// hash or, inside a rotation grace, its previous one. A key has one secret per hash, so one
/// proof of each kind is all there is to keep: 64 bytes in the entry instead of a verdict cache
/// entry of its own (~450 bytes in moka) for every cached key.
pub struct KeyEntry {
    /// The key as the Check path needs it (no details), held inline: one allocation a key.
    pub key: ApiKey,
    /// The key generation this entry was loaded in; an older one is reloaded before use.
    generation: u64,
    /// Set when a change to this key was applied after it was loaded.
    stale: AtomicBool,
    current_proof: OnceLock<[u8; 32]>,
    previous_proof: OnceLock<[u8; 32]>,
    /// The Unix second this key was last seen under attack (0: never): a wrong secret found by
    /// argon2, or an unproven token presented while it was suspect already.
    suspect_at: AtomicI64,
}

/// A key id as the caches' key: held inline, where a `String` would cost an allocation per cached
/// key. Every key id is [`KEY_ID_LEN`] ASCII characters (tokens cannot carry any other), so an id
/// of another length is never cached: it is looked up, and it cannot be in a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct CachedId([u8; KEY_ID_LEN]);

impl CachedId {
    fn of(id: &str) -> Option<CachedId> {
        id.as_bytes().try_into().ok().map(CachedId)
    }
}

/// One copy of each data scope among cached keys. Most keys of a deployment have the same
/// targets; unshared, each key's would cost ~130 bytes in three allocations.
#[derive(Default)]
struct Scopes {
    shared: HashSet<Arc<[DataTarget]>>,
    /// When `shared` reaches this size, scopes no cached key holds any more are dropped.
    prune_at: usize,
}

impl Scopes {
    fn share(&mut self, targets: Arc<[DataTarget]>) -> Arc<[DataTarget]> {
        if let Some(shared) = self.shared.get(&*targets) {
            return shared.clone();
        }
        if self.shared.len() >= self.prune_at {
            self.shared.retain(|scope| Arc::strong_count(scope) > 1);
            self.prune_at = (self.shared.len() * 2).max(1024);
        }
        self.shared.insert(targets.clone());
        targets
    }
}

/// Shows whether proofs are held, never the digests: they are as good as the tokens for
/// checking a guess.
impl std::fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEntry")
            .field("key", &self.key)
            .field("generation", &self.generation)
            .field("stale", &self.stale)
            .field("current_proof", &self.current_proof.get().is_some())
            .field("previous_proof", &self.previous_proof.get().is_some())
            .finish()
    }
}

/// Which of the key's hashes a presented token is proven to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proven {
    Current,
    /// The hash replaced by a rotation, accepted until this Unix second.
    Previous {
        valid_until: i64,
    },
}

impl KeyEntry {
    /// An entry for `key` as loaded in `generation`, with the proofs of `replacing` (the entry
    /// it supersedes) that concern a hash `key` still has.
    pub fn new(key: ApiKey, generation: u64, replacing: Option<&KeyEntry>) -> Self {
        let entry = KeyEntry {
            key,
            generation,
            stale: AtomicBool::new(false),
            current_proof: OnceLock::new(),
            previous_proof: OnceLock::new(),
            suspect_at: AtomicI64::new(0),
        };
        if let Some(old) = replacing {
            entry
                .suspect_at
                .store(old.suspect_at.load(Ordering::Relaxed), Ordering::Relaxed);
            if let Some(proof) = old.current_proof.get() {
                entry.record(proof, &old.key.secret_hash);
            }
            if let (Some(proof), Some(previous)) =
                (old.previous_proof.get(), &old.key.previous_secret)
            {
                entry.record(proof, &previous.hash);
            }
        }
        entry
    }

    /// Records that the token with SHA-256 `digest` verified against `phc`. Ignored when `phc`
    /// is none of this key's hashes (it changed while the verification ran).
    pub fn record(&self, digest: &[u8; 32], phc: &str) {
        if *self.key.secret_hash == *phc {
            let _ = self.current_proof.set(*digest);
        } else if self
            .key
            .previous_secret
            .as_ref()
            .is_some_and(|p| *p.hash == *phc)
        {
            let _ = self.previous_proof.set(*digest);
        }
    }

    /// Whether a token was proven to carry this key's current secret: any other token presented
    /// for it is then most likely a wrong one.
    pub fn has_current_proof(&self) -> bool {
        self.current_proof.get().is_some()
    }

    /// Notes that this key was seen under attack at `now` (Unix seconds).
    pub fn mark_suspect(&self, now: i64) {
        self.suspect_at.fetch_max(now, Ordering::Relaxed);
    }

    /// Whether this key was seen under attack at or after `since` (Unix seconds).
    pub fn suspect_since(&self, since: i64) -> bool {
        self.suspect_at.load(Ordering::Relaxed) >= since.max(1)
    }

    /// Whether the token with SHA-256 `digest` is proven to carry this key's secret, compared
    /// in constant time.
    pub fn proven(&self, digest: &[u8; 32]) -> Option<Proven> {
        let matches = |proof: &OnceLock<[u8; 32]>| {
            proof
                .get()
                .is_some_and(|proof| bool::from(proof.ct_eq(digest)))
        };
        if matches(&self.current_proof) {
            return Some(Proven::Current);
        }
        let previous = self.key.previous_secret.as_ref()?;
        matches(&self.previous_proof).then_some(Proven::Previous {
            valid_until: previous.valid_until,
        })
    }
}

struct VerdictExpiry {
    negative: Duration,
}

impl Expiry<[u8; 32], Verdict> for VerdictExpiry {
    fn expire_after_create(&self, _: &[u8; 32], verdict: &Verdict, _: Instant) -> Option<Duration> {
        Some(match verdict {
            // Recorded as a proof on the key's entry by the caller; kept here only for the
            // callers coalesced on the same verification, which are handed it directly.
            Verdict::Match(_) => Duration::ZERO,
            Verdict::NoMatch(_) => self.negative,
        })
    }
}

#[derive(Clone)]
pub struct Caches {
    pub verdicts: Cache<[u8; 32], Verdict>,
    keys: Cache<CachedId, Arc<KeyEntry>>,
    /// Ids no key has → the key generation their absence was loaded in.
    unknown_keys: Cache<CachedId, u64>,
    key_generation: Arc<AtomicU64>,
    scopes: Arc<Mutex<Scopes>>,
    deployments: Cache<String, Option<Arc<Deployment>>>,
    grants: Cache<i64, Arc<Grants>>,
    workloads: Cache<String, Arc<[Arc<str>]>>,
    /// The route table ([`crate::routes`]): dropped on any route change, reloaded on use.
    routes: Arc<RouteSlot>,
    epoch: Arc<AtomicU64>,
    applied: Arc<AtomicU64>,
    feed: Arc<FeedConfirmation>,
    /// Woken on every epoch bump: the Envoy modules' feed ([`crate::module`]) waits on it.
    changed: Arc<tokio::sync::Notify>,
    /// This process's name for its epochs: an epoch means nothing to another replica or to
    /// this one after a restart.
    instance: Arc<str>,
}

/// Until when the change feed has been confirmed complete: every change committed before that
/// instant has been applied to the caches. The feed confirms itself by reading the `changes`
/// table (as of the read's start) and by heartbeats coming back through `LISTEN` (as of their
/// sending: notifications arrive in commit order).
///
/// Past `bound_ms` without a confirmation, cached entries are not trusted: a replica that was
/// paused (SIGSTOP, a VM freeze, a long GC-like stall of its runtime) resumes with every task
/// runnable at once, and a Check may run before the feed task has applied what was written
/// meanwhile. Without this bound, that Check would answer from the pre-pause cache.
#[derive(Debug, Default)]
pub struct FeedConfirmation {
    /// 0: no feed is followed (CLI paths, tests of the cache alone): the caches are trusted.
    bound_ms: AtomicU64,
    /// On [`crate::clock::monotonic_ms`].
    confirmed_ms: AtomicU64,
}

impl FeedConfirmation {
    /// From now on, trust the caches only while the feed was confirmed within `bound_ms`
    /// (0: always). Called by the feed follower when it starts.
    pub fn bound(&self, bound_ms: u64) {
        self.bound_ms.store(bound_ms, Ordering::Release);
    }

    /// Every change committed before `as_of_ms` has been applied.
    pub fn confirm(&self, as_of_ms: u64) {
        self.confirmed_ms.fetch_max(as_of_ms, Ordering::AcqRel);
    }

    /// Whether the caches may be trusted at `now_ms`. Reads the clock only when bounded.
    pub fn current(&self, now_ms: impl FnOnce() -> u64) -> bool {
        let bound = self.bound_ms.load(Ordering::Acquire);
        bound == 0 || now_ms().saturating_sub(self.confirmed_ms.load(Ordering::Acquire)) <= bound
    }
}

impl Caches {
    pub fn new(capacity: u64, ttl: Duration, negative_ttl: Duration) -> Self {
        use crate::metrics::evictions;
        Caches {
            verdicts: Cache::builder()
                .max_capacity(capacity)
                .expire_after(VerdictExpiry {
                    negative: negative_ttl,
                })
                .eviction_listener(evictions("verdicts"))
                .build(),
            keys: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .eviction_listener(evictions("keys"))
                .build(),
            deployments: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .eviction_listener(evictions("deployments"))
                .build(),
            grants: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .eviction_listener(evictions("grants"))
                .build(),
            workloads: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .eviction_listener(evictions("workloads"))
                .build(),
            // Remembered absences of keys: evictions count as the keys cache's.
            unknown_keys: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .eviction_listener(evictions("keys"))
                .build(),
            routes: Arc::default(),
            key_generation: Arc::new(AtomicU64::new(0)),
            scopes: Arc::default(),
            epoch: Arc::new(AtomicU64::new(0)),
            applied: Arc::new(AtomicU64::new(0)),
            feed: Arc::default(),
            changed: Arc::default(),
            instance: {
                let id: u64 = rand::random();
                format!("{id:016x}").into()
            },
        }
    }

    /// How recently the change feed confirmed these caches complete.
    pub fn feed(&self) -> &FeedConfirmation {
        &self.feed
    }

    /// `key` with its data scope shared with every cached key that has the same targets.
    pub fn share_scope(&self, mut key: ApiKey) -> ApiKey {
        if let KeyScope::Data(targets) = key.scope {
            let mut scopes = self.scopes.lock().unwrap_or_else(PoisonError::into_inner);
            key.scope = KeyScope::Data(scopes.share(targets));
        }
        key
    }

    /// Whether any key is cached, fresh or stale: a replica that cannot reach its store can
    /// still decide for these keys (until their TTL).
    pub async fn holds_keys(&self) -> bool {
        self.keys.run_pending_tasks().await;
        self.keys.entry_count() > 0
    }

    /// Whether key `id` is known not to exist (a fresh cached absence).
    pub async fn is_unknown_key(&self, id: &str) -> bool {
        let Some(id) = CachedId::of(id) else {
            return false;
        };
        self.unknown_keys.get(&id).await == Some(self.key_generation())
    }

    /// Caches that no key has id `id`, unless a change was applied since `loaded_at`; drops a
    /// cached entry for it (the key was deleted).
    pub async fn insert_unknown_key(&self, id: &str, generation: u64, loaded_at: u64) {
        let Some(id) = CachedId::of(id) else { return };
        self.keys.invalidate(&id).await;
        self.unknown_keys.insert(id, generation).await;
        if self.epoch() != loaded_at {
            self.unknown_keys.invalidate(&id).await;
        }
    }

    /// The cached entry for key `id`, fresh or not (see [`Caches::is_fresh`]).
    pub async fn key(&self, id: &str) -> Option<Arc<KeyEntry>> {
        self.keys.get(&CachedId::of(id)?).await
    }

    /// Whether `entry` may be used as it is, rather than reloaded.
    pub fn is_fresh(&self, entry: &KeyEntry) -> bool {
        !entry.stale.load(Ordering::Acquire)
            && entry.generation == self.key_generation.load(Ordering::Acquire)
    }

    /// The generation to give a [`KeyEntry`] about to be loaded.
    pub fn key_generation(&self) -> u64 {
        self.key_generation.load(Ordering::Acquire)
    }

    pub async fn deployment(&self, name: &str) -> Option<Option<Arc<Deployment>>> {
        self.deployments.get(name).await
    }

    pub async fn grants(&self, principal: i64) -> Option<Arc<Grants>> {
        self.grants.get(&principal).await
    }

    pub fn routes(&self) -> &RouteSlot {
        &self.routes
    }

    pub async fn workload(&self, id: &str) -> Option<Arc<[Arc<str>]>> {
        self.workloads.get(id).await
    }

    pub async fn insert_grants(&self, principal: i64, grants: Arc<Grants>, loaded_at: u64) {
        self.grants.insert(principal, grants).await;
        if self.epoch() != loaded_at {
            self.grants.invalidate(&principal).await;
        }
    }

    pub async fn insert_workload(&self, id: &str, projects: Arc<[Arc<str>]>, loaded_at: u64) {
        self.workloads.insert(id.to_owned(), projects).await;
        if self.epoch() != loaded_at {
            self.workloads.invalidate(id).await;
        }
    }

    /// The epoch to pass back to an `insert_*` after loading from the store.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// See the `instance` field.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Notified after each epoch bump (a change applied, a flush).
    pub fn changed(&self) -> &tokio::sync::Notify {
        &self.changed
    }

    /// Caches `entry` for key `id`; stale at once when a change was applied since `loaded_at`.
    pub async fn insert_key(&self, id: &str, entry: Arc<KeyEntry>, loaded_at: u64) {
        let Some(id) = CachedId::of(id) else { return };
        self.keys.insert(id, entry.clone()).await;
        if self.epoch() != loaded_at {
            entry.stale.store(true, Ordering::Release);
        }
    }

    pub async fn insert_deployment(
        &self,
        name: &str,
        deployment: Option<Arc<Deployment>>,
        loaded_at: u64,
    ) {
        self.deployments.insert(name.to_owned(), deployment).await;
        if self.epoch() != loaded_at {
            self.deployments.invalidate(name).await;
        }
    }

    /// How many changes this replica has applied (its own and other replicas').
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Drops what `change` affects.
    pub async fn apply(&self, change: &Change) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_waiters();
        self.applied.fetch_add(1, Ordering::AcqRel);
        match change {
            Change::Key(id) => {
                if let Some(id) = CachedId::of(id) {
                    self.unknown_keys.invalidate(&id).await;
                    if let Some(entry) = self.keys.get(&id).await {
                        entry.stale.store(true, Ordering::Release);
                    }
                }
            }
            Change::Deployment(name) => self.deployments.invalidate(&name.to_string()).await,
            // A principal's kind or membership is part of every key it bears.
            Change::Principal(_) => {
                self.key_generation.fetch_add(1, Ordering::AcqRel);
                self.grants.invalidate_all();
            }
            Change::Project(_) => {
                self.deployments.invalidate_all();
                self.workloads.invalidate_all();
            }
            Change::Policy(_) | Change::PermissionSet(_) => self.grants.invalidate_all(),
            Change::Workload(id) => self.workloads.invalidate(id.as_str()).await,
            Change::Route(_) => self.routes.invalidate(),
        }
    }

    /// Forgets every deployment, grant and workload and makes every key stale: after a gap in
    /// change notifications none of them can be trusted. Proofs and verdicts stay: each applies
    /// only to the exact hash it was computed against, and the reloaded key decides whether that
    /// hash still counts, so no argon2 stampede follows a reconnect.
    pub fn flush(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_waiters();
        self.key_generation.fetch_add(1, Ordering::AcqRel);
        self.deployments.invalidate_all();
        self.grants.invalidate_all();
        self.workloads.invalidate_all();
        self.routes.invalidate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_are_trusted_only_within_the_bound_of_the_feed_confirmation() {
        let feed = FeedConfirmation::default();
        assert!(feed.current(|| unreachable!("no bound, no clock read")));
        feed.bound(500);
        assert!(!feed.current(|| 10_000), "never confirmed");
        feed.confirm(9_600);
        assert!(feed.current(|| 10_000));
        assert!(feed.current(|| 10_100));
        assert!(!feed.current(|| 10_101));
        feed.confirm(9_000);
        assert!(
            !feed.current(|| 10_101),
            "an older confirmation does not move it back"
        );
        feed.bound(0);
        assert!(feed.current(|| 99_999));
    }
    use crate::model::{KeyScope, PreviousSecret, PrincipalKind};

    fn key(hash: &str, previous: Option<&str>) -> ApiKey {
        ApiKey {
            previous_secret: previous.map(|hash| PreviousSecret {
                hash: hash.into(),
                valid_until: 100,
            }),
            ..ApiKey::new(
                "AAAAAAAAAAAA",
                (1, PrincipalKind::Owner, "owner@example.com"),
                KeyScope::ControlOrganization,
                hash,
            )
        }
    }

    const TOKEN: [u8; 32] = [7; 32];
    const OTHER: [u8; 32] = [8; 32];

    #[test]
    fn a_proof_concerns_one_hash_and_follows_it_across_reloads() {
        let first = KeyEntry::new(key("$h1", None), 0, None);
        assert_eq!(first.proven(&TOKEN), None);
        first.record(&TOKEN, "$not-this-key's");
        assert_eq!(first.proven(&TOKEN), None, "a hash the key does not have");
        first.record(&TOKEN, "$h1");
        assert_eq!(first.proven(&TOKEN), Some(Proven::Current));
        assert_eq!(first.proven(&OTHER), None);

        let edited = KeyEntry::new(key("$h1", None), 1, Some(&first));
        assert_eq!(edited.proven(&TOKEN), Some(Proven::Current), "same hash");

        let rotated = KeyEntry::new(key("$h2", Some("$h1")), 2, Some(&edited));
        assert_eq!(
            rotated.proven(&TOKEN),
            Some(Proven::Previous { valid_until: 100 }),
            "the replaced hash, inside its grace"
        );

        let cut = KeyEntry::new(key("$h3", None), 3, Some(&rotated));
        assert_eq!(cut.proven(&TOKEN), None, "rotated without a grace");
    }

    #[tokio::test]
    async fn changes_make_entries_stale_and_loads_racing_them_are_stale_at_once() {
        let caches = Caches::new(100, Duration::from_secs(60), Duration::from_secs(5));
        let fresh = |entry: &KeyEntry| caches.is_fresh(entry);
        let load = |caches: &Caches| (caches.epoch(), caches.key_generation());

        let (epoch, generation) = load(&caches);
        let a = Arc::new(KeyEntry::new(key("$h1", None), generation, None));
        caches.insert_key("aaaaaaaaaaaa", a.clone(), epoch).await;
        assert!(fresh(&a));
        caches.apply(&Change::Key("aaaaaaaaaaaa".into())).await;
        assert!(!fresh(&a), "its own change");

        let (epoch, generation) = load(&caches);
        let b = Arc::new(KeyEntry::new(key("$h1", None), generation, None));
        caches.insert_key("bbbbbbbbbbbb", b.clone(), epoch).await;
        caches.apply(&Change::Principal(1)).await;
        assert!(!fresh(&b), "any principal's change");

        let (epoch, generation) = load(&caches);
        let c = Arc::new(KeyEntry::new(key("$h1", None), generation, None));
        caches.insert_key("cccccccccccc", c.clone(), epoch).await;
        caches.flush();
        assert!(!fresh(&c), "a flush");

        let (epoch, generation) = load(&caches);
        caches.apply(&Change::Key("dddddddddddd".into())).await;
        let d = Arc::new(KeyEntry::new(key("$h1", None), generation, None));
        caches.insert_key("dddddddddddd", d.clone(), epoch).await;
        assert!(!fresh(&d), "loaded before a change applied while it loaded");
        assert!(
            caches.key("dddddddddddd").await.is_some(),
            "kept, for its proofs"
        );
    }

    #[test]
    fn equal_scopes_are_one_copy_and_unheld_ones_are_pruned() {
        let caches = Caches::new(100, Duration::from_secs(60), Duration::from_secs(5));
        let data = |targets: &[&str]| ApiKey {
            scope: KeyScope::Data(targets.iter().map(|t| t.parse().unwrap()).collect()),
            ..key("$h", None)
        };
        let targets = |key: &ApiKey| match &key.scope {
            KeyScope::Data(targets) => targets.clone(),
            _ => unreachable!("a data key"),
        };
        let a = caches.share_scope(data(&["demo/chat"]));
        let b = caches.share_scope(data(&["demo/chat"]));
        let c = caches.share_scope(data(&["demo/embed"]));
        assert!(Arc::ptr_eq(&targets(&a), &targets(&b)));
        assert!(!Arc::ptr_eq(&targets(&a), &targets(&c)));
        assert_eq!(targets(&c).len(), 1);

        let mut scopes = Scopes::default();
        for i in 0..3000 {
            let scope: Arc<[DataTarget]> = [format!("p{i}/d").parse().unwrap()].into();
            drop(scopes.share(scope));
        }
        assert!(scopes.shared.len() < 2048, "{}", scopes.shared.len());
    }

    #[tokio::test]
    async fn an_unknown_id_is_remembered_until_a_change_could_have_created_it() {
        let caches = Caches::new(100, Duration::from_secs(60), Duration::from_secs(5));
        let unknown = |id: &'static str| caches.is_unknown_key(id);

        caches
            .insert_unknown_key("xxxxxxxxxxxx", caches.key_generation(), caches.epoch())
            .await;
        assert!(unknown("xxxxxxxxxxxx").await);
        caches.apply(&Change::Key("xxxxxxxxxxxx".into())).await;
        assert!(!unknown("xxxxxxxxxxxx").await, "created");

        caches
            .insert_unknown_key("yyyyyyyyyyyy", caches.key_generation(), caches.epoch())
            .await;
        caches.flush();
        assert!(
            !unknown("yyyyyyyyyyyy").await,
            "after a gap in change notifications"
        );

        let (epoch, generation) = (caches.epoch(), caches.key_generation());
        caches.apply(&Change::Key("zzzzzzzzzzzz".into())).await;
        caches
            .insert_unknown_key("zzzzzzzzzzzz", generation, epoch)
            .await;
        assert!(
            !unknown("zzzzzzzzzzzz").await,
            "loaded before a change applied while it loaded"
        );

        let (epoch, generation) = (caches.epoch(), caches.key_generation());
        let entry = Arc::new(KeyEntry::new(key("$h1", None), generation, None));
        caches.insert_key("wwwwwwwwwwww", entry, epoch).await;
        caches
            .insert_unknown_key("wwwwwwwwwwww", generation, epoch)
            .await;
        assert!(
            caches.key("wwwwwwwwwwww").await.is_none(),
            "a deleted key's entry is dropped"
        );
    }
}
