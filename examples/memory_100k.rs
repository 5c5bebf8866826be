//! Resident memory with 100 000 keys cached: seeds 100 000 verifiable data keys (argon2id at
//! the cheapest parameters so seeding and warming take seconds; the cached entries are the same
//! size whatever the cost), checks each once through `CheckService::check_request` so its key,
//! verdict and deployment are cached, then reads `VmRSS` from `/proc/self/status`.
//!
//!   cargo run --release --example memory_100k -- [--keys 100000]
//!
//! The figure is the whole process: runtime, SQLite pool and page cache, the caches, and this
//! example's own list of tokens (~100 bytes a key); the line before warming shows the rest.

use std::sync::Arc;

use anyhow::Context;
use keyward::authz::CheckService;

#[path = "../benches/support/mod.rs"]
mod support;

fn rss_mib() -> anyhow::Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS line")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib / 1024.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut keys = 100_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--keys" => keys = args.next().context("--keys N")?.parse()?,
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    let dir = tempfile::tempdir()?;
    let mut config = support::config(&dir.path().join("keyward.db"));
    config.cache.capacity = config.cache.capacity.max(keys as u64);
    let (authn, owner) = support::open_seeded(&config).await?;
    let tokens = support::real_keys(&config, owner, 0, keys, support::Hashing::CHEAP).await?;
    let caches = authn.caches().clone();
    let service = Arc::new(CheckService::new(authn, config.credentials.sources.clone()));
    let before = rss_mib()?;

    let tokens = Arc::new(tokens);
    let workers = 8;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (service, tokens) = (service.clone(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            let mut allowed = 0usize;
            for token in tokens.iter().skip(w).step_by(workers) {
                let response = service
                    .check_request(&support::check_request(token))
                    .await?;
                allowed += usize::from(support::is_allowed(&response));
            }
            anyhow::Ok(allowed)
        }));
    }
    let mut allowed = 0;
    for task in tasks {
        allowed += task.await??;
    }
    caches.verdicts.run_pending_tasks().await;
    let after = rss_mib()?;
    println!(
        "RESULT label=memory keys={keys} allowed={allowed} cached_verdicts={} rss_before_warm_mib={before:.1} \
         rss_mib={after:.1} cache_delta_mib={:.1}",
        caches.verdicts.entry_count(),
        after - before
    );
    Ok(())
}
