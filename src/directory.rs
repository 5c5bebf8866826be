//! The directory: what keyward knows about keys, deployments, grants and workloads, served from
//! the caches ([`crate::cache`]) and loaded from the store on a miss. It owns the caches and is
//! the one place a change invalidates them ([`Directory::invalidate`]; other replicas' changes
//! arrive through [`crate::propagation`] onto the same caches).

use std::sync::Arc;

use crate::cache::{Caches, KeyEntry};
use crate::iam::Grants;
use crate::model::{ApiKey, Deployment, PrincipalKind};
use crate::store::{Change, Store, StoreError};

#[derive(Clone)]
pub struct Directory {
    store: Store,
    caches: Caches,
    /// What the owner's keys are given: no policies (the owner may do everything). Shared, so
    /// the owner's requests allocate nothing for it.
    no_grants: Arc<Grants>,
}

impl Directory {
    pub fn new(store: Store, caches: Caches) -> Self {
        Directory {
            store,
            caches,
            no_grants: Arc::new(Grants::default()),
        }
    }

    pub fn caches(&self) -> &Caches {
        &self.caches
    }

    /// Drops from the caches what `changes` affect, before the write that made them answers.
    pub async fn invalidate(&self, changes: &[Change]) {
        for change in changes {
            self.caches.apply(change).await;
        }
    }

    /// The cache entry of key `id` (`None`: no key has that id), reloaded from the store when
    /// missing or stale.
    pub async fn key_entry(&self, id: &str) -> Result<Option<Arc<KeyEntry>>, StoreError> {
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
        let Some(key) = self.store.guarded(self.store.get_key(id)).await? else {
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
    /// keyward's own route table, for requests that carry none of keyward's context
    /// extensions: cached, loaded again after a route change.
    pub async fn route_table(&self) -> Result<Arc<crate::routes::RouteTable>, StoreError> {
        let store = &self.store;
        self.caches
            .routes()
            .get_or_load(|| store.guarded(store.route_table()))
            .await
    }

    pub async fn deployment(
        &self,
        name: &str,
        project: &str,
        slug: &str,
    ) -> Result<Option<Arc<Deployment>>, StoreError> {
        if let Some(cached) = self.caches.deployment(name).await {
            return Ok(cached);
        }
        let epoch = self.caches.epoch();
        let store = &self.store;
        let loaded = store
            .guarded(store.get_deployment(project, slug))
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
            return Ok(cached);
        }
        let epoch = self.caches.epoch();
        let loaded = Arc::new(self.store.guarded(self.store.grants_of(id)).await?);
        self.caches.insert_grants(id, loaded.clone(), epoch).await;
        Ok(loaded)
    }

    /// The project of workload `id`, from the cache or the store.
    pub async fn workload_project(&self, id: &str) -> Result<Option<Arc<str>>, StoreError> {
        if let Some(cached) = self.caches.workload(id).await {
            return Ok(cached);
        }
        let epoch = self.caches.epoch();
        let store = &self.store;
        let loaded: Option<Arc<str>> = store
            .guarded(store.workload_project(id))
            .await?
            .map(Arc::from);
        self.caches.insert_workload(id, loaded.clone(), epoch).await;
        Ok(loaded)
    }
}
