//! Authentication: from a presented credential to a stored, verified key.
//!
//! Junk is rejected by [`Token::parse`] before any lookup. The key row comes from the cache or
//! the store; the secret is checked against its argon2id hash on argon2's own low-priority
//! threads ([`crate::workers`]), never on the async workers, with at most `workers`
//! verifications running and `queue` waiting: past that the request is shed rather than queued
//! without bound. Concurrent verifications of the same token are coalesced into one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use argon2::Params;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::cache::{Caches, KeyEntry, Proven, Verdict};
use crate::config;
use crate::hashing::Hasher;
use crate::iam::Grants;
use crate::model::{ApiKey, Deployment, PrincipalKind};
use crate::policy::InvalidReason;
use crate::store::{Store, StoreError};
use crate::token::Token;
use crate::usage::LastUsed;
use crate::workers::Argon2Workers;

/// Why keyward could not decide; Envoy answers its `status_on_error` (503), never a 401.
#[derive(Debug, thiserror::Error)]
pub enum Undecidable {
    #[error("storage unavailable: {0}")]
    Storage(String),
    #[error("too many verifications in flight")]
    Overloaded,
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
    store: Store,
    caches: Caches,
    hasher: Arc<Hasher>,
    workers: Arc<Argon2Workers>,
    waiting: Arc<Semaphore>,
    running: Arc<Semaphore>,
    last_used: LastUsed,
    /// argon2 verifications run since start (each checks a secret against a key's hashes).
    verifications: Arc<AtomicU64>,
    /// What the owner's keys are given: no policies (the owner may do everything). Shared, so
    /// the owner's requests allocate nothing for it.
    no_grants: Arc<Grants>,
}

impl Authenticator {
    pub fn new(
        store: Store,
        caches: Caches,
        argon: &config::Argon2,
        verify: &config::Verify,
    ) -> std::io::Result<Self> {
        Ok(Authenticator {
            store,
            caches,
            hasher: Arc::new(Hasher::new(params(argon), verify.workers)),
            workers: Arc::new(Argon2Workers::start(verify.workers, verify.nice)?),
            waiting: Arc::new(Semaphore::new(verify.workers + verify.queue)),
            running: Arc::new(Semaphore::new(verify.workers)),
            last_used: LastUsed::default(),
            verifications: Arc::new(AtomicU64::new(0)),
            no_grants: Arc::new(Grants::default()),
        })
    }

    pub fn caches(&self) -> &Caches {
        &self.caches
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// How many argon2 verifications have run since start: what the caches exist to avoid.
    pub fn verifications_run(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Last-use times waiting to be written.
    pub fn last_used(&self) -> &LastUsed {
        &self.last_used
    }

    /// The argon2id PHC string of `secret`, with a fresh random salt, computed on an argon2
    /// worker like every argon2 call, and counted among the `verify.workers` running: it waits for
    /// a worker (an admin write may wait behind a queue of verifications) but is never shed.
    pub async fn hash_secret(&self, secret: &str) -> Result<String, Undecidable> {
        let secret = secret.to_owned();
        self.on_argon2_worker(None, move |hasher| hasher.hash(secret.as_bytes()))
            .await?
            .map_err(|e| Undecidable::Internal(e.to_string()))
    }

    /// Runs `work` on an argon2 worker once one of the `verify.workers` is free. The permits go
    /// with the work, not with the request: when Envoy gives up and the request is dropped,
    /// argon2 keeps running, and so keeps counting (as does `waiting`, the caller's queue place).
    async fn on_argon2_worker<T: Send + 'static>(
        &self,
        waiting: Option<OwnedSemaphorePermit>,
        work: impl FnOnce(&Hasher) -> T + Send + 'static,
    ) -> Result<T, Undecidable> {
        let running = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Undecidable::Overloaded)?;
        let hasher = self.hasher.clone();
        self.workers
            .run(move || {
                let _permits = (waiting, running);
                work(&hasher)
            })
            .await
            .map_err(|e| Undecidable::Internal(e.to_string()))
    }

    /// The cache entry of key `id` (`None`: no key has that id), reloaded from the store when
    /// missing or stale.
    async fn key_entry(&self, id: &str) -> Result<Option<Arc<KeyEntry>>, Undecidable> {
        let cached = self.caches.key(id).await;
        if let Some(entry) = &cached
            && self.caches.is_fresh(entry)
        {
            return Ok(Some(entry.clone()));
        }
        if cached.is_none() && self.caches.is_unknown_key(id).await {
            return Ok(None);
        }
        let epoch = self.caches.epoch();
        let generation = self.caches.key_generation();
        let Some(key) = self.store.get_key(id).await? else {
            self.caches.insert_unknown_key(id, generation, epoch).await;
            return Ok(None);
        };
        let key = self.caches.share_scope(ApiKey {
            details: None,
            ..key
        });
        let entry = Arc::new(KeyEntry::new(key, generation, cached.as_deref()));
        self.caches.insert_key(id, entry.clone(), epoch).await;
        Ok(Some(entry))
    }

    /// The deployment `project/slug`, from the cache or the store.
    pub async fn deployment(
        &self,
        name: &str,
        project: &str,
        slug: &str,
    ) -> Result<Option<Arc<Deployment>>, Undecidable> {
        if let Some(cached) = self.caches.deployment(name).await {
            return Ok(cached);
        }
        let epoch = self.caches.epoch();
        let loaded = self
            .store
            .get_deployment(project, slug)
            .await?
            .map(Arc::new);
        self.caches
            .insert_deployment(name, loaded.clone(), epoch)
            .await;
        Ok(loaded)
    }

    /// What `key`'s bearer may do: its resolved policies, from the cache or the store. The
    /// owner needs none (it may do everything), so no lookup is made for it.
    pub async fn grants(&self, key: &ApiKey) -> Result<Arc<Grants>, Undecidable> {
        if key.principal.kind == PrincipalKind::Owner {
            return Ok(self.no_grants.clone());
        }
        let id = key.principal.id;
        if let Some(cached) = self.caches.grants(id).await {
            return Ok(cached);
        }
        let epoch = self.caches.epoch();
        let loaded = Arc::new(self.store.grants_of(id).await?);
        self.caches.insert_grants(id, loaded.clone(), epoch).await;
        Ok(loaded)
    }

    /// The project of workload `id`, from the cache or the store.
    pub async fn workload_project(&self, id: &str) -> Result<Option<Arc<str>>, Undecidable> {
        if let Some(cached) = self.caches.workload(id).await {
            return Ok(cached);
        }
        let epoch = self.caches.epoch();
        let loaded: Option<Arc<str>> = self.store.workload_project(id).await?.map(Arc::from);
        self.caches.insert_workload(id, loaded.clone(), epoch).await;
        Ok(loaded)
    }

    /// Authenticates a well-formed token at `now` (Unix seconds).
    pub async fn authenticate(
        &self,
        token: &Token<'_>,
        now: i64,
    ) -> Result<Authenticated, Undecidable> {
        let Some(entry) = self.key_entry(token.key_id).await? else {
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
                return Ok(if now < valid_until {
                    Authenticated::Key(entry.clone())
                } else {
                    Authenticated::Invalid(InvalidReason::RotatedOut)
                });
            }
            None => {}
        }
        if let Some(verdict) = self.caches.verdicts.get(&cache_key).await {
            if let Some(outcome) = judge(&verdict, &entry, now) {
                return Ok(outcome);
            }
            // Computed against a hash the key no longer has: verify again.
            self.caches.verdicts.invalidate(&cache_key).await;
        }
        let verdict = self.verify(cache_key, token.secret(), key, now).await?;
        if let Verdict::Match(phc) = &verdict {
            entry.record(&cache_key, phc);
            // The entry may have been reloaded while argon2 ran: the proof belongs on the one
            // cached now too (it is recorded only if that key still has the hash).
            if let Some(current) = self.caches.key(token.key_id).await
                && !Arc::ptr_eq(&current, &entry)
            {
                current.record(&cache_key, phc);
            }
        }
        Ok(judge(&verdict, &entry, now)
            .unwrap_or(Authenticated::Invalid(InvalidReason::WrongSecret)))
    }

    /// Verifies `secret` against the key's current hash and, inside a rotation grace, its
    /// previous one. Concurrent calls for the same token share one verification.
    async fn verify(
        &self,
        cache_key: [u8; 32],
        secret: &str,
        key: &ApiKey,
        now: i64,
    ) -> Result<Verdict, Undecidable> {
        // A verdict shares the key's PHC string rather than copying ~100 bytes of it.
        let current: Arc<str> = key.secret_hash.clone();
        let previous: Option<Arc<str>> = key
            .previous_secret
            .as_ref()
            .filter(|p| now < p.valid_until)
            .map(|p| p.hash.clone());
        let init = async {
            let waiting = self
                .waiting
                .clone()
                .try_acquire_owned()
                .map_err(|_| Undecidable::Overloaded)?;
            let secret = secret.to_owned();
            let verifications = self.verifications.clone();
            self.on_argon2_worker(Some(waiting), move |hasher| {
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
        self.caches
            .verdicts
            .try_get_with(cache_key, init)
            .await
            .map_err(|e| match e.as_ref() {
                Undecidable::Overloaded => Undecidable::Overloaded,
                other => Undecidable::Internal(other.to_string()),
            })
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
            Some(if now < previous.valid_until {
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

fn params(argon: &config::Argon2) -> Params {
    Params::new(argon.memory_kib, argon.iterations, argon.parallelism, None).unwrap_or_default()
}
