//! Measures how long a revocation made through one keyward replica takes to hold on another.
//!
//! Two replicas run in this process on one database, each with its own caches, pool and change
//! listener, serving real gRPC. For each of N keys: create it through replica A, verify it on
//! both replicas (so B has it cached), revoke it through A's admin API, then poll B's Check
//! until it denies. Prints p50 / p99 / max of the time from the revoke RPC's answer to B's
//! first denial. Run by `bench/revocation.sh`.
//!
//!   cargo run --release --example revocation_propagation -- [--database URL] [--revocations N]
//!       [--mode listen|stalled|after-outage|module]
//!
//! Modes (PostgreSQL; B reaches the database through a fault-injecting TCP proxy for the last
//! two):
//! - `listen` (default): the feed healthy.
//! - `stalled`: every `LISTEN` connection of B's is frozen (held open, delivering nothing), the
//!   current one and every new one: B learns changes only by reading the change table.
//! - `after-outage`: before every 20 revocations B's database connections are cut for 1 s and
//!   restored; the revocations are measured in the seconds right after the outage ends, while
//!   B is still re-establishing `LISTEN`.
//!
//! - `module`: B has `module.enabled` and a real Envoy (`$ENVOY_BIN`, else `.tools`) with
//!   keyward's module (`target/release/libkeyward_envoy_module.so`, or `$KEYWARD_MODULE_PATH`),
//!   which sends B its Checks; each key is first answered by the module itself (a hit: no call
//!   to keyward completes meanwhile), then revoked through A, and Envoy is polled over HTTP
//!   until it denies: revoke → the module's first denial.
//!
//! Without `--database`, a fresh database is created on the PostgreSQL server at
//! `$KEYWARD_TEST_POSTGRES` (default postgres://postgres@127.0.0.1:5432/test).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use keyward::config::Config;
use keyward::pb::{self, admin_client::AdminClient};
use keyward::server::{self, Listeners};
use sqlx::Connection;

#[path = "../tests/support/pg_proxy.rs"]
mod pg_proxy;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Listen,
    Stalled,
    AfterOutage,
    Module,
}

struct Args {
    database: Option<String>,
    revocations: usize,
    mode: Mode,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args {
        database: None,
        revocations: 200,
        mode: Mode::Listen,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--database" => args.database = Some(it.next().context("--database needs a URL")?),
            "--revocations" => {
                args.revocations = it
                    .next()
                    .context("--revocations needs a number")?
                    .parse()
                    .context("--revocations")?;
                if args.revocations < 100 {
                    bail!("--revocations must be at least 100");
                }
            }
            "--mode" => {
                args.mode = match it
                    .next()
                    .context("--mode needs listen, stalled, after-outage or module")?
                    .as_str()
                {
                    "listen" => Mode::Listen,
                    "stalled" => Mode::Stalled,
                    "after-outage" => Mode::AfterOutage,
                    "module" => Mode::Module,
                    other => {
                        bail!(
                            "--mode: expected listen, stalled, after-outage or module, got {other:?}"
                        )
                    }
                }
            }
            other => bail!(
                "unknown argument {other:?} (expected --database URL, --revocations N, --mode M)"
            ),
        }
    }
    Ok(args)
}

async fn fresh_postgres_database() -> anyhow::Result<String> {
    let base = std::env::var("KEYWARD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .with_context(|| format!("PostgreSQL at {base}"))?;
    let name = format!(
        "keyward_bench_{}",
        keyward::token::generate_key_id().to_lowercase()
    );
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    let mut url = url::Url::parse(&base)?;
    url.set_path(&name);
    Ok(url.to_string())
}

/// Starts one replica on ephemeral ports; returns (check address, admin address).
async fn replica(
    database: &str,
    module: bool,
) -> anyhow::Result<(
    std::net::SocketAddr,
    std::net::SocketAddr,
    keyward::services::Services,
)> {
    let mut config = Config::default();
    config.database.url = database.to_owned();
    config.listen.check = "127.0.0.1:0".parse()?;
    config.listen.admin = "127.0.0.1:0".parse()?;
    config.listen.health = "127.0.0.1:0".parse()?;
    config.module.enabled = module;
    let listeners = Listeners::bind(&config).await?;
    let (check, admin, _) = listeners.local_addrs()?;
    let services = server::open(&config).await?;
    tokio::spawn(server::serve(
        config,
        services.clone(),
        listeners,
        std::future::pending(),
    ));
    Ok((check, admin, services))
}

fn check_request(token: &str) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "POST".into(),
                    headers: HashMap::from([(
                        "authorization".to_owned(),
                        format!("Bearer {token}"),
                    )]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: HashMap::from([
                ("plane".to_owned(), "data".to_owned()),
                ("endpoint".to_owned(), "public".to_owned()),
                ("deployment".to_owned(), "bench/chat".to_owned()),
            ]),
            ..Default::default()
        }),
    }
}

async fn allowed(client: &mut AuthorizationClient<Channel>, token: &str) -> anyhow::Result<bool> {
    let response = client.check(check_request(token)).await?.into_inner();
    Ok(matches!(
        response.http_response,
        Some(HttpResponse::OkResponse(_))
    ))
}

/// Envoy 1.40 with keyward's module in front of ext_authz → replica B (`--mode module`).
struct ModuleEnvoy {
    port: u16,
    admin: std::net::SocketAddr,
    http: reqwest::Client,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

const MODULE_ENVOY: &str = r#"
admin: { address: { socket_address: { address: 127.0.0.1, port_value: 0 } } }
static_resources:
  listeners:
    - name: bench
      address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: bench
                http_filters:
                  - name: keyward.module
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
                      dynamic_module_config: { module: { local: { filename: "MODULE_PATH" } }, do_not_close: true }
                      filter_name: keyward
                      filter_config:
                        "@type": type.googleapis.com/google.protobuf.StringValue
                        value: '{"cluster":"keyward"}'
                  - name: envoy.filters.http.ext_authz
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
                      grpc_service: { envoy_grpc: { cluster_name: keyward }, timeout: 0.5s }
                      transport_api_version: V3
                      failure_mode_allow: false
                      filter_enabled_metadata:
                        filter: keyward.module
                        path: [{ key: hit }]
                        value: { bool_match: true }
                        invert: true
                  - name: envoy.filters.http.router
                    typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: { prefix: / }
                          direct_response: { status: 200, body: { inline_string: "ok" } }
                          metadata: { filter_metadata: { keyward: { context: "data|public|bench/chat" } } }
                          # As envoy/envoy.yaml.tmpl: the module is this route's authorizer.
                          typed_per_filter_config:
                            envoy.filters.http.ext_authz:
                              "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
                              disabled: true
  clusters:
    - name: keyward
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: { http2_protocol_options: {} }
      load_assignment:
        cluster_name: keyward
        endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: KEYWARD_PORT } } } }] }]
"#;

impl ModuleEnvoy {
    async fn start(keyward: std::net::SocketAddr) -> anyhow::Result<ModuleEnvoy> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let module = std::env::var("KEYWARD_MODULE_PATH").map_or_else(
            |_| root.join("target/release/libkeyward_envoy_module.so"),
            std::path::PathBuf::from,
        );
        if !module.exists() {
            bail!(
                "{} not found: cargo build --release -p keyward-envoy-module",
                module.display()
            );
        }
        let envoy = std::env::var("ENVOY_BIN").map_or_else(
            |_| root.join(".tools/venv/bin/envoy"),
            std::path::PathBuf::from,
        );
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("envoy.yaml");
        std::fs::write(
            &config,
            MODULE_ENVOY
                .replace("MODULE_PATH", &module.display().to_string())
                .replace("KEYWARD_PORT", &keyward.port().to_string()),
        )?;
        let admin_path = dir.path().join("admin");
        let child = tokio::process::Command::new(&envoy)
            .arg("-c")
            .arg(&config)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args([
                "--use-dynamic-base-id",
                "--concurrency",
                "2",
                "-l",
                "warning",
            ])
            .stderr(std::fs::File::create(dir.path().join("envoy.log"))?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", envoy.display()))?;
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let admin: std::net::SocketAddr = loop {
            if let Some(addr) = std::fs::read_to_string(&admin_path)
                .ok()
                .and_then(|a| a.trim().parse().ok())
            {
                break addr;
            }
            if Instant::now() > deadline {
                bail!("Envoy did not start");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let port = loop {
            let listeners: Option<serde_json::Value> = async {
                http.get(format!("http://{admin}/listeners?format=json"))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()
            }
            .await;
            let port = listeners.as_ref().and_then(|l| {
                l["listener_statuses"][0]["local_address"]["socket_address"]["port_value"].as_u64()
            });
            if let Some(port) = port.filter(|p| *p > 0) {
                break port as u16;
            }
            if Instant::now() > deadline {
                bail!("Envoy's listener did not come up");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Ok(ModuleEnvoy {
            port,
            admin,
            http,
            _child: child,
            _dir: dir,
        })
    }

    async fn status(&self, token: &str) -> anyhow::Result<u16> {
        Ok(self
            .http
            .get(format!("http://127.0.0.1:{}/", self.port))
            .bearer_auth(token)
            .send()
            .await?
            .status()
            .as_u16())
    }

    /// Calls Envoy completed to keyward: the module's Checks, and its feed polls (a poll that
    /// ends during a request makes a hit look like a miss, never the other way round).
    async fn checks(&self) -> anyhow::Result<u64> {
        let text = self
            .http
            .get(format!(
                "http://{}/stats?filter=^cluster.keyward.upstream_rq_completed$",
                self.admin
            ))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .split(':')
            .nth(1)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0))
    }

    /// Requests until one is answered by the module (no Check), so the revocation that
    /// follows is measured against a hit.
    async fn until_hit(&self, token: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let before = self.checks().await?;
            let status = self.status(token).await?;
            if status != 200 {
                let log =
                    std::fs::read_to_string(self._dir.path().join("envoy.log")).unwrap_or_default();
                bail!("a fresh key was refused through Envoy ({status}); Envoy's log:\n{log}");
            }
            if self.checks().await? == before {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the module never answered a fresh key itself");
            }
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let database = match args.database {
        Some(url) => url,
        None => fresh_postgres_database().await?,
    };
    if !matches!(args.mode, Mode::Listen | Mode::Module) && !database.starts_with("postgres") {
        bail!("--mode {:?} needs PostgreSQL", args.mode);
    }
    // B reaches the database through the proxy (a no-op until a fault is injected).
    let upstream = url::Url::parse(&database)?
        .socket_addrs(|| Some(5432))?
        .into_iter()
        .next()
        .context("the database URL names no address")?;
    let proxy = pg_proxy::PgProxy::start(upstream).await;
    let database_b = if matches!(args.mode, Mode::Listen | Mode::Module) {
        database.clone()
    } else {
        proxy.url_for(&database, upstream)
    };
    let (check_a, admin_a, services) = replica(&database, false).await?;
    let (check_b, _, services_b) = replica(&database_b, args.mode == Mode::Module).await?;
    let envoy = match args.mode {
        Mode::Module => Some(ModuleEnvoy::start(check_b).await?),
        _ => None,
    };
    let owner = keyward::admin::bootstrap(
        &services.store,
        &keyward::config::Config::default().argon2,
        "bench-owner",
    )
    .await?;

    let channel = Channel::from_shared(format!("http://{admin_a}"))?
        .connect()
        .await?;
    let bearer: MetadataValue<_> = format!("Bearer {}", owner.token).parse()?;
    let mut admin = AdminClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", bearer.clone());
        Ok(r)
    });
    admin
        .create_project(pb::CreateProjectRequest {
            slug: "bench".into(),
        })
        .await?;
    admin
        .create_deployment(pb::CreateDeploymentRequest {
            project: "bench".into(),
            slug: "chat".into(),
            model: "m".into(),
            ..Default::default()
        })
        .await?;
    let mut a = AuthorizationClient::connect(format!("http://{check_a}")).await?;
    let mut b = AuthorizationClient::connect(format!("http://{check_b}")).await?;

    let mut after_ack = Vec::with_capacity(args.revocations);
    let mut after_call = Vec::with_capacity(args.revocations);
    let mut polls = 0u64;
    if args.mode == Mode::Stalled {
        // Wait until B listens, then freeze that connection and every later one.
        while proxy.listens() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        proxy.freeze_all_listeners().await;
    }
    for n in 0..args.revocations {
        if args.mode == Mode::AfterOutage && n % 20 == 0 {
            proxy.cut().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            proxy.restore();
        }
        let seen_by_b = services_b.directory.caches().applied();
        let created = admin
            .create_key(pb::CreateKeyRequest {
                plane: pb::Plane::Data as i32,
                scope: vec!["bench/chat".into()],
                ..Default::default()
            })
            .await?
            .into_inner();
        let id = created.key.context("no key")?.id;
        // Warm B only once it has heard of the creation, so the revocation is what evicts it.
        while services_b.directory.caches().applied() == seen_by_b {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Right after an outage B's pool may still be reconnecting: a 503 there is not a
        // measurement; retry until B decides.
        let warm_deadline = Instant::now() + Duration::from_secs(30);
        while !allowed(&mut a, &created.token).await?
            || !matches!(allowed(&mut b, &created.token).await, Ok(true))
        {
            if Instant::now() > warm_deadline {
                bail!("a fresh key was not allowed");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if services_b.directory.caches().key(&id).await.is_none() {
            bail!("replica B does not have the key cached");
        }
        if let Some(envoy) = &envoy {
            envoy.until_hit(&created.token).await?;
        }
        let called = Instant::now();
        admin.revoke_key(pb::RevokeKeyRequest { id }).await?;
        let acked = Instant::now();
        let deadline = acked + Duration::from_secs(30);
        loop {
            let still = match &envoy {
                Some(envoy) => envoy.status(&created.token).await? == 200,
                None => allowed(&mut b, &created.token).await.unwrap_or(true),
            };
            if !still {
                break;
            }
            polls += 1;
            if Instant::now() > deadline {
                bail!("replica B still allowed a revoked key after 30 s");
            }
        }
        let denied = Instant::now();
        after_ack.push(denied - acked);
        after_call.push(denied - called);
    }
    after_ack.sort();
    after_call.sort();
    let backend = database.split(':').next().unwrap_or("?");
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    if envoy.is_some() {
        println!("(mode Module: B's decisions as answered by keyward's module inside Envoy)");
    }
    println!(
        "revocation propagation, replica A -> replica B ({backend}, mode {:?}), {} revocations",
        args.mode, args.revocations
    );
    println!(
        "machine: {} cores, {cpu}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("{:<34} {:>9} {:>9} {:>9}", "", "p50", "p99", "max");
    for (label, samples) in [
        ("after the revoke RPC returned", &after_ack),
        ("after the revoke RPC was sent", &after_call),
    ] {
        println!(
            "{label:<34} {:>7.2}ms {:>7.2}ms {:>7.2}ms",
            percentile(samples, 50.0).as_secs_f64() * 1e3,
            percentile(samples, 99.0).as_secs_f64() * 1e3,
            samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        );
    }
    println!("checks on B that still allowed: {polls}");
    Ok(())
}
