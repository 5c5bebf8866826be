//! gRPC load generator for `envoy.service.auth.v3.Authorization/Check`: the same client for
//! keyward and for the no-op floor. N concurrent requests spread over C HTTP/2 connections, a
//! warm-up, then a fixed measuring window; prints one `RESULT` line with throughput, p50 and
//! p99. With `--flood F`, F more tasks at full speed send well-formed tokens with the real key
//! ids and fresh wrong secrets (each one a cache miss that asks for argon2), and the line also
//! counts their denials and shed (`RESOURCE_EXHAUSTED`) answers; `--flood-keys K` aims the flood
//! at the first K key ids only (an attacker who knows one key id: `--flood-keys 1`).
//! `--concurrency 0 --flood F` is
//! a flood generator alone, to run as its own process beside a measuring one, as an attacker's
//! flood would be. Run by `bench/load.sh`.
//!
//! With `--cold FILE`, one more task sends each token of FILE once, one after the other, from
//! the start of the measuring window: keys not verified yet, each a cold lookup and an argon2
//! verification while the rest of the load runs; the line then also gives their p50 and worst
//! latency and how many were allowed.
//!
//!   cargo run --release --example check_load -- --target http://127.0.0.1:19191 \
//!       --tokens tokens.txt [--connections 2] [--concurrency 64] [--warmup 2] [--duration 8] \
//!       [--flood 0] [--flood-keys 0 (all)] [--cold FILE] [--label NAME]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use keyward::model::Plane;
use keyward::token::{self, Token};
use tonic::transport::{Channel, Endpoint};

#[path = "../benches/support/mod.rs"]
mod support;

struct Args {
    target: String,
    tokens: String,
    connections: usize,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    flood: usize,
    flood_keys: usize,
    label: String,
    cold: Option<String>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        target: String::new(),
        tokens: String::new(),
        connections: 2,
        concurrency: 64,
        warmup: Duration::from_secs(2),
        duration: Duration::from_secs(8),
        flood: 0,
        flood_keys: 0,
        label: "check".into(),
        cold: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--target" => a.target = value()?,
            "--tokens" => a.tokens = value()?,
            "--connections" => a.connections = value()?.parse()?,
            "--concurrency" => a.concurrency = value()?.parse()?,
            "--warmup" => a.warmup = Duration::from_secs_f64(value()?.parse()?),
            "--duration" => a.duration = Duration::from_secs_f64(value()?.parse()?),
            "--flood" => a.flood = value()?.parse()?,
            "--flood-keys" => a.flood_keys = value()?.parse()?,
            "--label" => a.label = value()?,
            "--cold" => a.cold = Some(value()?),
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    anyhow::ensure!(!a.target.is_empty(), "--target URL is required");
    anyhow::ensure!(!a.tokens.is_empty(), "--tokens FILE is required");
    anyhow::ensure!(
        a.connections > 0 && (a.concurrency > 0 || a.flood > 0),
        "need connections > 0, and concurrency or flood > 0"
    );
    Ok(a)
}

#[derive(Default)]
struct Counts {
    allowed: AtomicU64,
    denied: AtomicU64,
    shed: AtomicU64,
    errors: AtomicU64,
}

impl Counts {
    fn record(
        &self,
        outcome: &Result<
            tonic::Response<envoy_types::pb::envoy::service::auth::v3::CheckResponse>,
            tonic::Status,
        >,
    ) {
        let counter = match outcome {
            Ok(response) if support::is_allowed(response.get_ref()) => &self.allowed,
            Ok(_) => &self.denied,
            Err(status) if status.code() == tonic::Code::ResourceExhausted => &self.shed,
            Err(_) => &self.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let tokens: Vec<String> = std::fs::read_to_string(&args.tokens)
        .with_context(|| format!("read {}", args.tokens))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    anyhow::ensure!(!tokens.is_empty(), "no tokens in {}", args.tokens);
    let mut key_ids: Vec<String> = tokens
        .iter()
        .map(|t| Token::parse(t).map(|t| t.key_id.to_owned()))
        .collect::<Result<_, _>>()
        .context("a token in the file does not parse")?;
    if args.flood_keys > 0 {
        key_ids.truncate(args.flood_keys);
    }
    let flood_ids = Arc::new(key_ids);
    let requests: Arc<Vec<CheckRequest>> =
        Arc::new(tokens.iter().map(|t| support::check_request(t)).collect());

    let mut channels: Vec<Channel> = Vec::new();
    for _ in 0..args.connections {
        let endpoint = Endpoint::from_shared(args.target.clone())?.tcp_nodelay(true);
        channels.push(
            endpoint
                .connect()
                .await
                .with_context(|| format!("connect {}", args.target))?,
        );
    }
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let until = measure_from + args.duration;
    let hot = Arc::new(Counts::default());
    let flood = Arc::new(Counts::default());

    let mut hot_tasks = Vec::new();
    for i in 0..args.concurrency {
        let mut client = AuthorizationClient::new(channels[i % channels.len()].clone());
        let (requests, hot) = (requests.clone(), hot.clone());
        hot_tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u64> = Vec::with_capacity(1 << 16);
            let mut n = i;
            loop {
                let request = requests[n % requests.len()].clone();
                n += 1;
                let sent = Instant::now();
                if sent >= until {
                    break;
                }
                let outcome = client.check(request).await;
                if sent >= measure_from {
                    latencies.push(sent.elapsed().as_nanos() as u64);
                    hot.record(&outcome);
                }
            }
            latencies
        }));
    }
    let mut flood_tasks = Vec::new();
    for i in 0..args.flood {
        let mut client = AuthorizationClient::new(channels[i % channels.len()].clone());
        let (key_ids, flood) = (flood_ids.clone(), flood.clone());
        flood_tasks.push(tokio::spawn(async move {
            let mut n = i;
            loop {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                // A real key id, a fresh wrong secret, a valid checksum: passes parsing and the
                // key lookup, misses the verdict cache.
                let wrong = token::generate(Plane::Data, &key_ids[n % key_ids.len()]).token;
                n += 1;
                let outcome = client.check(support::check_request(&wrong)).await;
                if now >= measure_from {
                    flood.record(&outcome);
                }
            }
        }));
    }
    let cold_task = match &args.cold {
        Some(path) => {
            let cold: Vec<CheckRequest> = std::fs::read_to_string(path)
                .with_context(|| format!("read {path}"))?
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(support::check_request)
                .collect();
            let mut client = AuthorizationClient::new(channels[0].clone());
            Some(tokio::spawn(async move {
                tokio::time::sleep_until(measure_from.into()).await;
                let mut timings = Vec::with_capacity(cold.len());
                let mut allowed = 0;
                for request in cold {
                    let sent = Instant::now();
                    let outcome = client.check(request).await;
                    timings.push(sent.elapsed().as_nanos() as u64);
                    allowed += usize::from(matches!(&outcome,
                        Ok(response) if support::is_allowed(response.get_ref())));
                }
                timings.sort_unstable();
                (timings, allowed)
            }))
        }
        None => None,
    };
    let mut latencies = Vec::new();
    for task in hot_tasks {
        latencies.extend(task.await?);
    }
    for task in flood_tasks {
        task.await?;
    }
    latencies.sort_unstable();
    let cold = match cold_task {
        Some(task) => {
            let (timings, allowed) = task.await?;
            format!(
                " cold={} cold_allowed={allowed} cold_p50_us={:.1} cold_max_us={:.1}",
                timings.len(),
                percentile(&timings, 50.0),
                percentile(&timings, 100.0)
            )
        }
        None => String::new(),
    };
    let seconds = args.duration.as_secs_f64();
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    println!(
        "RESULT label={} rps={:.0} p50_us={:.1} p99_us={:.1} allowed={} denied={} shed={} errors={} \
         flood_rps={:.0} flood_denied={} flood_shed={} flood_errors={}{cold}",
        args.label,
        latencies.len() as f64 / seconds,
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        load(&hot.allowed),
        load(&hot.denied),
        load(&hot.shed),
        load(&hot.errors),
        (load(&flood.allowed) + load(&flood.denied) + load(&flood.shed) + load(&flood.errors))
            as f64
            / seconds,
        load(&flood.denied),
        load(&flood.shed),
        load(&flood.errors) + load(&flood.allowed),
    );
    Ok(())
}
