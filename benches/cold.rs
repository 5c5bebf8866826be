//! The cold path: one argon2id verification at keyward's default parameters (what a cache miss
//! costs), and the key lookup without argon2 (`Store::get_key` by id) with 1 000 and with
//! 1 000 000 keys stored.

use std::hint::black_box;
use std::time::Duration;

use argon2::Params;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use keyward::hashing::Hasher;

#[path = "support/mod.rs"]
mod support;

/// keyward's own verification (`hashing::Hasher`, reused working memory), as a cache miss runs it.
fn argon2_verify(c: &mut Criterion) {
    let defaults = keyward::config::Argon2::default();
    let params = Params::new(
        defaults.memory_kib,
        defaults.iterations,
        defaults.parallelism,
        None,
    )
    .expect("default params");
    let hasher = Hasher::new(params, 1);
    let phc = hasher.hash(b"correct horse battery staple").expect("hash");
    let mut group = c.benchmark_group("cold");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("argon2id_verify_default_params", |b| {
        b.iter(|| hasher.verify(black_box(b"correct horse battery staple"), black_box(&phc)))
    });
    group.finish();
}

fn lookup(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("cold_lookup_get_key");
    for stored in [1_000usize, 1_000_000] {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = support::config(&dir.path().join("keyward.db"));
        let services = runtime.block_on(async {
            let (services, owner) = support::open_seeded(&config).await.expect("seed");
            support::filler_keys(&config, owner, stored)
                .await
                .expect("filler keys");
            services
        });
        let store = services.store.clone();
        // Spread lookups over the whole id range so the measurement is not one hot page.
        let ids: Vec<String> = (0..1024)
            .map(|i| support::filler_id(i * (stored / 1024)))
            .collect();
        let mut next = 0usize;
        group.bench_with_input(BenchmarkId::from_parameter(stored), &stored, |b, _| {
            b.to_async(&runtime).iter(|| {
                next = (next + 1) % ids.len();
                let id = &ids[next];
                let store = &store;
                async move {
                    store
                        .get_key(black_box(id))
                        .await
                        .expect("lookup")
                        .is_some()
                }
            })
        });
        runtime.block_on(services.store.close());
    }
    group.finish();
}

criterion_group!(benches, argon2_verify, lookup);
criterion_main!(benches);
