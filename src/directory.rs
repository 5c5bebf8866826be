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
    /// missing or stale.
    pub async fn key_entry(&self, id: &str) -> Result<Option<Arc<KeyEntry>>, StoreError> {
        let lookups = &self.metrics.lookups.keys;
        let cached = self.caches.key(id).await;
        if let Some(entry) = &cached
            && self.caches.is_fresh(entry)
        {
            lookups.hit();
            return Ok(Some(entry.clone()));
        }
        if cached.is_none() && self.caches.is_unknown_key(id).await {
            lookups.hit();
            return Ok(None);
        }
        lookups.miss();
        let epoch = self.caches.epoch();
        let generation = self.caches.key_generation();
        let Some(key) = self.read(StoreOp::Key, self.store.get_key(id)).await? else {
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

    /// keyward's own route table, for requests that carry none of keyward's context
    /// extensions: cached, loaded again after a route change.
    pub async fn route_table(&self) -> Result<Arc<crate::routes::RouteTable>, StoreError> {
        if let Some(table) = self.caches.routes().get() {
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
        if let Some(cached) = self.caches.deployment(name).await {
            self.metrics.lookups.deployments.hit();
            return Ok(cached);
        }
        self.metrics.lookups.deployments.miss();
        let epoch = self.caches.epoch();
        let loaded = self
            .read(
                StoreOp::Deployment,
                self.store.get_deployment(project, slug),
            )
            .await?
            .map(Arc::new);
        self.caches
            .insert_deployment(name, loaded.clone(), epoch)
            .await;
        Ok(loaded)
    }

    /// What `key`'s bearer may do: its resolved policies, from the cache or the store. The
    /// owner needs none (it may do everything), so no lookup is made for it.
    pub async fn grants(&self, key: &ApiKey) -> Result<Arc<Grants>, StoreError> {
        if key.principal.kind == PrincipalKind::Owner {
            return Ok(self.no_grants.clone());
        }
        let id = key.principal.id;
        if let Some(cached) = self.caches.grants(id).await {
            self.metrics.lookups.grants.hit();
            return Ok(cached);
        }
        self.metrics.lookups.grants.miss();
        let epoch = self.caches.epoch();
        let loaded = Arc::new(self.read(StoreOp::Grants, self.store.grants_of(id)).await?);
        self.caches.insert_grants(id, loaded.clone(), epoch).await;
        Ok(loaded)
    }

    /// The projects holding a workload of id `id` (none: no such workload), from the cache or
    /// the store. Which one a request means depends on its key ([`crate::policy::workload_project`]).
    pub async fn workload_projects(&self, id: &str) -> Result<Arc<[Arc<str>]>, StoreError> {
        if let Some(cached) = self.caches.workload(id).await {
            self.metrics.lookups.workloads.hit();
            return Ok(cached);
        }
        self.metrics.lookups.workloads.miss();
        let epoch = self.caches.epoch();
        let loaded: Arc<[Arc<str>]> = self
            .read(StoreOp::Workload, self.store.workload_projects(id))
            .await?
            .into_iter()
            .map(Arc::from)
            .collect();
        self.caches.insert_workload(id, loaded.clone(), epoch).await;
        Ok(loaded)
    }
}
