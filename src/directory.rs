//! The directory: what keyward knows about keys, deployments, grants and workloads, served from
//! the caches ([`crate::cache`]) and loaded from the store on a miss. It owns the caches and is
//! the one place a change invalidates them ([`Directory::invalidate`]; other replicas' changes
//! arrive through [`crate::propagation`] onto the same caches). It counts cache hits and misses,
//! times the store reads behind misses, and counts this replica's admin writes by kind.

use std::sync::Arc;

use crate::cache::{Caches, KeyEntry};
use crate::iam::Grants;
use crate::metrics::{CacheLookups, ChangeCounts, StoreMetrics, StoreOp};
use crate::model::{ApiKey, Deployment, PrincipalKind};
use crate::store::{Change, Store, StoreError};

#[derive(Clone)]
pub struct Directory {
    store: Store,
    caches: Caches,
    /// What the owner's keys are given: no policies (the owner may do everything). Shared, so
    /// the owner's requests allocate nothing for it.
    no_grants: Arc<Grants>,
    metrics: Arc<DirectoryMetrics>,
}

struct DirectoryMetrics {
    lookups: CacheLookups,
    store: StoreMetrics,
    writes: ChangeCounts,
}

impl Directory {
    pub fn new(store: Store, caches: Caches) -> Self {
        Directory {
            store,
            caches,
            no_grants: Arc::new(Grants::default()),
            metrics: Arc::new(DirectoryMetrics {
                lookups: CacheLookups::default(),
                store: StoreMetrics::default(),
                writes: ChangeCounts::admin_writes(),
            }),
        }
    }

    pub fn caches(&self) -> &Caches {
        &self.caches
    }

    /// Hit and miss counters of the caches, for the lookups made outside the directory.
    pub fn lookups(&self) -> &CacheLookups {
        &self.metrics.lookups
    }

    /// Drops from the caches what `changes` affect, before the write that made them answers.
    pub async fn invalidate(&self, changes: &[Change]) {
        for change in changes {
            self.metrics.writes.count(change);
            self.caches.apply(change).await;
        }
    }

    /// One round trip to the store, timed like every store read ([`Store::ping`] is guarded
    /// itself).
    pub async fn ping_store(&self) -> Result<(), StoreError> {
        let ping = self.store.ping();
        self.metrics.store.time(StoreOp::Ping, ping).await
    }

    /// Whether cached entries may answer without a reload: the change feed confirmed them
    /// complete recently enough ([`crate::cache::FeedConfirmation`]), or the store is known to
    /// be down (during an outage the caches are all there is).
    fn cache_trusted(&self) -> bool {
        self.caches.feed().current(crate::clock::monotonic_ms) || self.store.is_known_down()
    }

    /// A cached value the feed cannot vouch for is reloaded, never served, except when the
    /// store cannot be reached: then it answers, since an outage must not turn into refusals
    /// (what the cache held when the store went away is the best knowledge there is).
    async fn reload_or_cached<T>(
        &self,
        op: StoreOp,
        unvouched: Option<T>,
        read: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match (self.read(op, read).await, unvouched) {
            (Err(StoreError::Unreachable(_)), Some(cached)) => Ok(cached),
            (result, _) => result,
        }
    }

    /// A store read behind a cache miss: answered at once while the store is known to be down
    /// ([`Store::guarded`]), otherwise timed and its failure counted as `op`.
    async fn read<T>(
        &self,
        op: StoreOp,
        read: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.metrics.store.time(op, self.store.guarded(read)).await
    }

    /// The cache entry of key `id` (`None`: no key has that id), reloaded from the store when
    /// missing, stale, or not vouched for by the change feed.
    pub async fn key_entry(&self, id: &str) -> Result<Option<Arc<KeyEntry>>, StoreError> {
        let lookups = &self.metrics.lookups.keys;
        let cached = self.caches.key(id).await;
        let trusted = self.cache_trusted();
        let mut unvouched = None;
        if let Some(entry) = &cached
            && self.caches.is_fresh(entry)
        {
            if trusted {
                lookups.hit();
                return Ok(Some(entry.clone()));
            }
            unvouched = Some(Some(entry.clone()));
        }
        if cached.is_none() && self.caches.is_unknown_key(id).await {
            if trusted {
                lookups.hit();
                return Ok(None);
            }
            unvouched = Some(None);
        }
        lookups.miss();
        let epoch = self.caches.epoch();
        let generation = self.caches.key_generation();
        let read = async {
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
        };
        self.reload_or_cached(StoreOp::Key, unvouched, read).await
    }

    /// keyward's own route table, for requests that carry none of keyward's context
    /// extensions: cached, loaded again after a route change.
    pub async fn route_table(&self) -> Result<Arc<crate::routes::RouteTable>, StoreError> {
        let cached = self.caches.routes().get();
        if !self.cache_trusted() {
            self.metrics.lookups.routes.miss();
            let read = async { self.store.route_table().await.map(Arc::new) };
            return self.reload_or_cached(StoreOp::Routes, cached, read).await;
        }
        if let Some(table) = cached {
            self.metrics.lookups.routes.hit();
            return Ok(table);
        }
        self.metrics.lookups.routes.miss();
        self.caches
            .routes()
            .get_or_load(|| self.read(StoreOp::Routes, self.store.route_table()))
            .await
    }

    /// The deployment `project/slug`, from the cache or the store.
    pub async fn deployment(
        &self,
        name: &str,
        project: &str,
        slug: &str,
    ) -> Result<Option<Arc<Deployment>>, StoreError> {
        let cached = self.caches.deployment(name).await;
        if let Some(cached) = &cached
            && self.cache_trusted()
        {
            self.metrics.lookups.deployments.hit();
            return Ok(cached.clone());
        }
        self.metrics.lookups.deployments.miss();
        let epoch = self.caches.epoch();
        let read = async {
            let loaded = self
                .store
                .get_deployment(project, slug)
                .await?
                .map(Arc::new);
            self.caches
                .insert_deployment(name, loaded.clone(), epoch)
                .await;
            Ok(loaded)
        };
        self.reload_or_cached(StoreOp::Deployment, cached, read)
            .await
    }

    /// What `key`'s bearer may do: its resolved policies, from the cache or the store. The
    /// owner needs none (it may do everything), so no lookup is made for it.
    pub async fn grants(&self, key: &ApiKey) -> Result<Arc<Grants>, StoreError> {
        if key.principal.kind == PrincipalKind::Owner {
            return Ok(self.no_grants.clone());
        }
        let id = key.principal.id;
        let cached = self.caches.grants(id).await;
        if let Some(cached) = &cached
            && self.cache_trusted()
        {
            self.metrics.lookups.grants.hit();
            return Ok(cached.clone());
        }
        self.metrics.lookups.grants.miss();
        let epoch = self.caches.epoch();
        let read = async {
            let loaded = Arc::new(self.store.grants_of(id).await?);
            self.caches.insert_grants(id, loaded.clone(), epoch).await;
            Ok(loaded)
        };
        self.reload_or_cached(StoreOp::Grants, cached, read).await
    }

    /// The projects holding a workload of id `id` (none: no such workload), from the cache or
    /// the store. Which one a request means depends on its key ([`crate::policy::workload_project`]).
    pub async fn workload_projects(&self, id: &str) -> Result<Arc<[Arc<str>]>, StoreError> {
        let cached = self.caches.workload(id).await;
        if let Some(cached) = &cached
            && self.cache_trusted()
        {
            self.metrics.lookups.workloads.hit();
            return Ok(cached.clone());
        }
        self.metrics.lookups.workloads.miss();
        let epoch = self.caches.epoch();
        let read = async {
            let loaded: Arc<[Arc<str>]> = self
                .store
                .workload_projects(id)
                .await?
                .into_iter()
                .map(Arc::from)
                .collect();
            self.caches.insert_workload(id, loaded.clone(), epoch).await;
            Ok(loaded)
        };
        self.reload_or_cached(StoreOp::Workload, cached, read).await
    }
}
