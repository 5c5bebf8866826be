//! What `keyward serve` runs on, opened once and handed to each service: the store, the
//! directory over it, the authenticator and the last-use tracker. Each service takes the parts
//! it needs; nothing hands parts out on request.

use std::time::Duration;

use anyhow::Context;

use crate::authn::Authenticator;
use crate::cache::Caches;
use crate::config::Config;
use crate::directory::Directory;
use crate::store::Store;
use crate::usage::LastUsed;

#[derive(Clone)]
pub struct Services {
    pub store: Store,
    pub directory: Directory,
    pub authn: Authenticator,
    pub last_used: LastUsed,
}

impl Services {
    /// Opens the store named by the configuration and starts the argon2 workers.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        // Before any metric handle is taken: handles taken earlier record nowhere.
        crate::metrics::install();
        let store = open_store(config).await?;
        let caches = Caches::new(
            config.cache.capacity,
            config.cache_ttl(),
            Duration::from_secs(config.cache.negative_ttl_secs),
        );
        let directory = Directory::new(store.clone(), caches);
        let authn = Authenticator::new(directory.clone(), &config.argon2, &config.verify)
            .context("cannot start the argon2 workers")?;
        Ok(Services {
            store,
            directory,
            authn,
            last_used: LastUsed::default(),
        })
    }
}

/// The store alone (migrated), for CLI paths that need nothing else.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    Store::open(&config.database.url, config.database.max_connections)
        .await
        .map_err(anyhow::Error::msg)
}
