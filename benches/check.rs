//! The whole Check handler in process, no network: `CheckService::check_request` on a warmed
//! cache (key, verdict, deployment all cached), for an allowed and a denied request. The change
//! feed follower runs beside it, as in `keyward serve`, so the cache is trusted the way it is
//! in production (confirmed by the feed, [`keyward::propagation`]).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use keyward::authz::CheckService;

#[path = "support/mod.rs"]
mod support;

fn bench(c: &mut Criterion) {
    // As `keyward serve` does: the Check path records into a real Prometheus recorder.
    keyward::metrics::install();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = support::config(&dir.path().join("keyward.db"));
    let (service, allowed, denied) = runtime.block_on(async {
        let (services, owner) = support::open_seeded(&config).await.expect("seed");
        let tokens = support::real_keys(&config, owner, 0, 1, support::Hashing::DEFAULT)
            .await
            .expect("keys");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(keyward::propagation::follow(
            services.store.clone(),
            services.directory.caches().clone(),
            config.propagation.clone(),
            stopped,
        ));
        std::mem::forget(stop);
        let service = CheckService::new(&services, config.credentials.sources.clone());
        let allowed = support::check_request(&tokens[0]);
        // A well-formed token for the same key with a wrong secret: denied, verdict cached.
        let wrong = keyward::token::generate(keyward::model::Plane::Data, "r00000000000").token;
        let denied = support::check_request(&wrong);
        for request in [&allowed, &denied] {
            service.check_request(request).await.expect("decides");
        }
        let response = service.check_request(&allowed).await.expect("decides");
        assert!(support::is_allowed(&response), "warm request is allowed");
        let response = service.check_request(&denied).await.expect("decides");
        assert!(!support::is_allowed(&response), "wrong secret is denied");
        (service, allowed, denied)
    });

    let mut group = c.benchmark_group("check");
    group.bench_function("cache_hit_allow", |b| {
        b.to_async(&runtime)
            .iter(|| async { service.check_request(black_box(&allowed)).await })
    });
    group.bench_function("cache_hit_deny_wrong_secret", |b| {
        b.to_async(&runtime)
            .iter(|| async { service.check_request(black_box(&denied)).await })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
