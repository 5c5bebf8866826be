//! Resident memory of a real `keyward serve` process with 100 000 keys cached, as an SRE would
//! read it: seeds 100 000 verifiable data keys in a fresh SQLite file, starts the release
//! `keyward` binary on it (its default configuration but for the cache capacity), checks every
//! key once over gRPC so each key, verdict and the deployment are cached, then reads the
//! server's `VmRSS` from `/proc/PID/status`.
//!
//! Most keys are hashed at the cheapest argon2id parameters so seeding and warming take seconds
//! (a cached entry is the same size whatever the cost); `--default-cost` of them (32) use
//! keyward's defaults (19 MiB, t=2), so the memory argon2 itself needs is in the figure too.
//!
//!   cargo build --release --bin keyward --example memory_100k
//!   target/release/examples/memory_100k [--keys 100000] [--default-cost 32] [--keyward PATH]
//!       [--hold-secs N]
//!
//! `--keyward` defaults to the `keyward` binary next to this example's directory.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use tonic::transport::{Channel, Endpoint};

#[path = "../benches/support/mod.rs"]
mod support;

struct Args {
    keys: usize,
    default_cost: usize,
    keyward: PathBuf,
    /// Seconds to keep the server up after measuring, to inspect it (`pmap`, `/proc/PID/smaps`).
    hold: u64,
}

fn args() -> anyhow::Result<Args> {
    let exe = std::env::current_exe()?;
    let mut a = Args {
        keys: 100_000,
        default_cost: 32,
        keyward: exe
            .parent()
            .and_then(|examples| examples.parent())
            .context("no directory above this example")?
            .join("keyward"),
        hold: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--keys" => a.keys = value()?.parse().context("--keys N")?,
            "--default-cost" => a.default_cost = value()?.parse().context("--default-cost N")?,
            "--keyward" => a.keyward = value()?.into(),
            "--hold-secs" => a.hold = value()?.parse().context("--hold-secs N")?,
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    anyhow::ensure!(a.default_cost <= a.keys, "--default-cost exceeds --keys");
    Ok(a)
}

/// `VmRSS` and `VmHWM` of process `pid`, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .with_context(|| format!("no {name} line"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .with_context(|| format!("{name} is not a number"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Kills the server when the example ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    anyhow::ensure!(
        args.keyward.is_file(),
        "keyward binary not found at {} (build it with `cargo build --release --bin keyward`, or \
         pass --keyward PATH)",
        args.keyward.display()
    );
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("keyward.db");
    let config = support::config(&db);
    let (services, owner) = support::open_seeded(&config).await?;
    let cheap = args.keys - args.default_cost;
    let mut tokens = support::real_keys(&config, owner, 0, cheap, support::Hashing::CHEAP).await?;
    tokens.extend(
        support::real_keys(
            &config,
            owner,
            cheap,
            args.default_cost,
            support::Hashing::DEFAULT,
        )
        .await?,
    );
    services.store.close().await;
    drop(services);

    let check_port = free_port()?;
    let server = Server(
        Command::new(&args.keyward)
            .arg("serve")
            .env("KEYWARD_DATABASE_URL", &config.database.url)
            .env("KEYWARD_CHECK_ADDR", format!("127.0.0.1:{check_port}"))
            .env("KEYWARD_ADMIN_ADDR", format!("127.0.0.1:{}", free_port()?))
            .env("KEYWARD_HEALTH_ADDR", format!("127.0.0.1:{}", free_port()?))
            .env("KEYWARD_CACHE_CAPACITY", args.keys.max(100_000).to_string())
            .env("KEYWARD_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", args.keyward.display()))?,
    );
    let pid = server.0.id();
    let endpoint = Endpoint::from_shared(format!("http://127.0.0.1:{check_port}"))?;
    let started = Instant::now();
    let channel: Channel = loop {
        match endpoint.connect().await {
            Ok(channel) => break channel,
            Err(_) if started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e).context("keyward did not start listening within 30 s"),
        }
    };
    let (idle, _) = rss_kib(pid)?;

    let tokens = Arc::new(tokens);
    let workers = 8;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let mut client = AuthorizationClient::new(channel.clone());
        let tokens = tokens.clone();
        tasks.push(tokio::spawn(async move {
            let mut allowed = 0usize;
            for token in tokens.iter().skip(w).step_by(workers) {
                let response = client.check(support::check_request(token)).await?;
                allowed += usize::from(support::is_allowed(response.get_ref()));
            }
            anyhow::Ok(allowed)
        }));
    }
    let mut allowed = 0;
    for task in tasks {
        allowed += task.await??;
    }
    let (rss, hwm) = rss_kib(pid)?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mb = |kib: u64| kib as f64 * 1024.0 / 1e6;
    println!(
        "RESULT label=memory keys={} default_cost={} allowed={allowed} rss_idle_mib={:.1} \
         rss_mib={:.1} rss_mb={:.1} peak_rss_mib={:.1}",
        args.keys,
        args.default_cost,
        mib(idle),
        mib(rss),
        mb(rss),
        mib(hwm),
    );
    anyhow::ensure!(
        allowed == args.keys,
        "only {allowed} of {} keys were allowed",
        args.keys
    );
    if args.hold > 0 {
        println!("holding keyward (pid {pid}) for {} s", args.hold);
        tokio::time::sleep(Duration::from_secs(args.hold)).await;
    }
    drop(server);
    Ok(())
}
