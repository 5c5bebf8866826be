//! In-memory caches in front of the store, and their invalidation.
//!
//! - `verdicts`: SHA-256 of a whole token → the outcome of its argon2 verification, naming the
//!   PHC string it concerns, so it stops counting the moment the key's stored hash changes.
//!   Failures expire after the short negative TTL.
//! - `keys`: key id → the stored key (or its absence), dropped on any change to that key.
//! - `deployments`: `project/slug` → the stored deployment (or its absence).
//! - `grants`: principal id → its policies resolved against the permission sets, so the hot
//!   path decides without a database round trip. Any policy, permission set or principal
//!   change drops them all: such changes are rare and may move grants between principals.
//! - `workloads`: workload id → its project (or its absence).
//!
//! Every admin write invalidates what it changed before it answers, so the very next decision
//! sees it. A load racing an invalidation can not re-insert stale data: loads bracket their
//! insert with an epoch read and undo it when an invalidation happened meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

use crate::iam::Grants;
use crate::model::{ApiKey, Deployment};
use crate::store::Change;

/// The outcome of verifying one presented secret against a key's stored hashes. Each verdict
/// names the hash it concerns, so it stops applying the moment the key's hash changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The secret matched this PHC string (the current one, or the previous one in a grace).
    Match(Arc<str>),
    /// The secret matched none of the key's hashes while this PHC string was current.
    NoMatch(Arc<str>),
}

struct VerdictExpiry {
    positive: Duration,
    negative: Duration,
}

impl Expiry<[u8; 32], Verdict> for VerdictExpiry {
    fn expire_after_create(&self, _: &[u8; 32], verdict: &Verdict, _: Instant) -> Option<Duration> {
        Some(match verdict {
            Verdict::Match(_) => self.positive,
            Verdict::NoMatch(_) => self.negative,
        })
    }
}

#[derive(Clone)]
pub struct Caches {
    pub verdicts: Cache<[u8; 32], Verdict>,
    keys: Cache<String, Option<Arc<ApiKey>>>,
    deployments: Cache<String, Option<Arc<Deployment>>>,
    grants: Cache<i64, Arc<Grants>>,
    workloads: Cache<String, Option<Arc<str>>>,
    epoch: Arc<AtomicU64>,
    applied: Arc<AtomicU64>,
}

impl Caches {
    pub fn new(capacity: u64, ttl: Duration, negative_ttl: Duration) -> Self {
        Caches {
            verdicts: Cache::builder()
                .max_capacity(capacity)
                .expire_after(VerdictExpiry {
                    positive: ttl,
                    negative: negative_ttl,
                })
                .build(),
            keys: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            deployments: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            grants: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            workloads: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            epoch: Arc::new(AtomicU64::new(0)),
            applied: Arc::new(AtomicU64::new(0)),
        }
    }

    pub async fn key(&self, id: &str) -> Option<Option<Arc<ApiKey>>> {
        self.keys.get(id).await
    }

    pub async fn deployment(&self, name: &str) -> Option<Option<Arc<Deployment>>> {
        self.deployments.get(name).await
    }

    pub async fn grants(&self, principal: i64) -> Option<Arc<Grants>> {
        self.grants.get(&principal).await
    }

    pub async fn workload(&self, id: &str) -> Option<Option<Arc<str>>> {
        self.workloads.get(id).await
    }

    pub async fn insert_grants(&self, principal: i64, grants: Arc<Grants>, loaded_at: u64) {
        self.grants.insert(principal, grants).await;
        if self.epoch() != loaded_at {
            self.grants.invalidate(&principal).await;
        }
    }

    pub async fn insert_workload(&self, id: &str, project: Option<Arc<str>>, loaded_at: u64) {
        self.workloads.insert(id.to_owned(), project).await;
        if self.epoch() != loaded_at {
            self.workloads.invalidate(id).await;
        }
    }

    /// The epoch to pass back to an `insert_*` after loading from the store.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub async fn insert_key(&self, id: &str, key: Option<Arc<ApiKey>>, loaded_at: u64) {
        self.keys.insert(id.to_owned(), key).await;
        if self.epoch() != loaded_at {
            self.keys.invalidate(id).await;
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
        self.applied.fetch_add(1, Ordering::AcqRel);
        match change {
            Change::Key(id) => self.keys.invalidate(id.as_str()).await,
            Change::Deployment(name) => self.deployments.invalidate(&name.to_string()).await,
            // A principal's kind or membership is part of every key it bears.
            Change::Principal(_) => {
                self.keys.invalidate_all();
                self.grants.invalidate_all();
            }
            Change::Project(_) => {
                self.deployments.invalidate_all();
                self.workloads.invalidate_all();
            }
            Change::Policy(_) | Change::PermissionSet(_) => self.grants.invalidate_all(),
            Change::Workload(id) => self.workloads.invalidate(id.as_str()).await,
        }
    }

    /// Forgets every key, deployment, grant and workload: after a gap in change notifications none of them can
    /// be trusted. Verdicts stay: each applies only to the exact hash it was computed against,
    /// and the reloaded key decides whether that hash still counts, so no argon2 stampede
    /// follows a reconnect.
    pub fn flush(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.keys.invalidate_all();
        self.deployments.invalidate_all();
        self.grants.invalidate_all();
        self.workloads.invalidate_all();
    }
}
