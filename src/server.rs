//! `keyward serve`: binds the three listeners (and optionally a Unix socket for Check), opens
//! the store, serves Check, the admin API and health until the shutdown future resolves, then
//! drains for a bounded time.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::routing::get;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::AuthorizationServer;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};

use crate::admin::AdminService;
use crate::authz::CheckService;
use crate::config::Config;
use crate::directory::Directory;
use crate::pb::admin_server::AdminServer;
use crate::services::Services;
use crate::store::redact_url;

/// How long in-flight requests may finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(10);

/// The three bound listeners. Binding happens before serving, so a caller that binds port 0
/// knows the real addresses before the first request.
pub struct Listeners {
    pub check: TcpListener,
    /// Check on a Unix domain socket too, with the path to remove on shutdown.
    pub check_unix: Option<(UnixListener, PathBuf)>,
    pub admin: TcpListener,
    pub health: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let bind = |addr: SocketAddr, what: &'static str| async move {
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} ({what})"))
        };
        Ok(Listeners {
            check: bind(config.listen.check, "listen.check").await?,
            check_unix: match &config.listen.check_unix {
                Some(path) => Some((bind_unix(path)?, path.clone())),
                None => None,
            },
            admin: bind(config.listen.admin, "listen.admin").await?,
            health: bind(config.listen.health, "listen.health").await?,
        })
    }

    /// (check, admin, health) addresses as bound.
    pub fn local_addrs(&self) -> std::io::Result<(SocketAddr, SocketAddr, SocketAddr)> {
        Ok((
            self.check.local_addr()?,
            self.admin.local_addr()?,
            self.health.local_addr()?,
        ))
    }
}

/// Binds a Unix socket at `path`, replacing a stale socket left by an earlier run (and only a
/// socket: a regular file there is an error, never deleted).
fn bind_unix(path: &Path) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        anyhow::ensure!(
            meta.file_type().is_socket(),
            "listen.check_unix: {} exists and is not a socket",
            path.display()
        );
        std::fs::remove_file(path)
            .with_context(|| format!("cannot replace stale socket {}", path.display()))?;
    }
    UnixListener::bind(path)
        .with_context(|| format!("cannot listen on {} (listen.check_unix)", path.display()))
}

/// How often each replica deletes audit records past `audit.retention_days`.
const AUDIT_PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Deletes audit records older than `retention_days`; a failure is logged and retried at the
/// next interval.
async fn prune_audit(store: &crate::store::Store, retention_days: u64) {
    let retention = i64::try_from(retention_days.saturating_mul(86_400)).unwrap_or(i64::MAX);
    let before = crate::clock::now_unix().saturating_sub(retention);
    match store.prune_audit(before).await {
        Ok(0) => {}
        Ok(pruned) => info!(
            pruned,
            retention_days, "audit records past their retention deleted"
        ),
        Err(error) => warn!(%error, "cannot prune the audit log; will retry"),
    }
}

/// Opens the store named by the configuration and everything serving runs on.
pub async fn open(config: &Config) -> anyhow::Result<Services> {
    Services::open(config).await
}

/// Serves until `shutdown` resolves.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let services = open(&config).await?;
    serve(config, services, listeners, shutdown).await
}

/// Serves with already opened services (tests share them with their assertions).
pub async fn serve(
    config: Config,
    services: Services,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (check_addr, admin_addr, health_addr) = listeners.local_addrs()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_rx_background = stop_rx.clone();
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    crate::metrics::install();
    let check_service = AuthorizationServer::new(
        CheckService::new(&services, config.credentials.sources.clone())
            .with_module(config.module.clone())
            .with_answer(&config.answer),
    );
    // grpc.health.v1 beside Check, for gRPC health probes of each replica (Kubernetes, Envoy
    // active health checks). It follows readiness (`/readyz`): SERVING through a database outage
    // while keys are cached, NOT_SERVING when this replica can decide nothing, and from the
    // moment shutdown begins.
    let (health_reporter, grpc_health) = tonic_health::server::health_reporter();
    // HTTP/2 options otherwise at tonic's defaults on purpose: `http2_adaptive_window` measured
    // 0.96x (through Envoy) and 1.03x (gRPC direct) of the defaults, within noise; a Check is
    // ~600 bytes, so windows, frame size and stream limits never bind (bench/h2.sh,
    // docs/performance.md "HTTP/2 settings").
    let tls_check = tls_acceptor("tls.check", &config.tls.check)?;
    let tls_admin = tls_acceptor("tls.admin", &config.tls.admin)?;
    if tls_admin.is_none() && !admin_addr.ip().is_loopback() {
        warn!(admin = %admin_addr, "the admin API is plaintext on a non-loopback address: control tokens cross the network in clear (set tls.admin.cert and tls.admin.key)");
    }
    // The change feed keyward's Envoy modules follow, beside Check (the ext_authz cluster).
    let feed = crate::module::pb::feed_server::FeedServer::new(crate::module::FeedService::new(
        services.directory.caches().clone(),
    ));
    let check_router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .tcp_nodelay(true)
        .add_service(check_service.clone())
        .add_service(feed.clone())
        .add_service(grpc_health.clone());
    // `tcp_nodelay` above applies only to listeners tonic binds itself; ours is bound earlier,
    // so it is set on each accepted connection. Without it Nagle's algorithm and Envoy's
    // delayed ACKs hold small Check answers back for ~40 ms.
    let check: Served = match &tls_check {
        Some(acceptor) => Box::pin(
            check_router.serve_with_incoming_shutdown(
                crate::tls::incoming(listeners.check, acceptor.clone())
                    .map(|accepted| accepted.map(CoalescedWrites)),
                stopped(),
            ),
        ),
        None => Box::pin(
            check_router.serve_with_incoming_shutdown(
                TcpIncoming::from(listeners.check)
                    .with_nodelay(Some(true))
                    .map(|accepted| accepted.map(CoalescedWrites)),
                stopped(),
            ),
        ),
    };
    let (check_unix, unix_path) = match listeners.check_unix {
        Some((listener, path)) => (
            Some(
                tonic::transport::Server::builder()
                    .http2_keepalive_interval(Some(Duration::from_secs(30)))
                    .add_service(check_service)
                    .add_service(feed)
                    .add_service(grpc_health)
                    .serve_with_incoming_shutdown(
                        UnixListenerStream::new(listener)
                            .map(|accepted| accepted.map(CoalescedWrites)),
                        stopped(),
                    ),
            ),
            Some(path),
        ),
        None => (None, None),
    };
    let admin_router = tonic::transport::Server::builder()
        .add_service(AdminServer::new(AdminService::new(&services)));
    let admin: Served = match &tls_admin {
        Some(acceptor) => Box::pin(admin_router.serve_with_incoming_shutdown(
            crate::tls::incoming(listeners.admin, acceptor.clone()),
            stopped(),
        )),
        None => Box::pin(admin_router.serve_with_incoming_shutdown(
            TcpIncoming::from(listeners.admin).with_nodelay(Some(true)),
            stopped(),
        )),
    };
    let tls_reload = tokio::spawn(crate::tls::reload_every(
        tls_check.into_iter().chain(tls_admin).collect(),
        Duration::from_secs(config.tls.reload_interval_secs),
        stop_rx_background.clone(),
    ));
    let probes = Probes {
        directory: services.directory.clone(),
        draining: Arc::new(AtomicBool::new(false)),
    };
    let health_app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/storez", get(storez))
        .route("/metrics", get(metrics))
        .with_state(probes.clone());
    let health = axum::serve(listeners.health, health_app).with_graceful_shutdown(stopped());

    let propagation = tokio::spawn(crate::propagation::follow(
        services.store.clone(),
        services.directory.caches().clone(),
        config.propagation.clone(),
        stop_rx_background.clone(),
    ));
    // Histogram samples wait in lock-free buckets until drained: drain them even when nothing
    // scrapes /metrics, so memory stays flat under load. The same task prunes the audit log
    // past its retention, at start and then hourly.
    let mut upkeep_stop = stop_rx_background.clone();
    let (upkeep_store, retention_days) = (services.store.clone(), config.audit.retention_days);
    let metrics_upkeep = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        let mut audit_pruned: Option<tokio::time::Instant> = None;
        loop {
            let stopping = tokio::select! {
                _ = every.tick() => false,
                _ = upkeep_stop.wait_for(|stop| *stop) => true,
            };
            if stopping {
                break;
            }
            crate::metrics::upkeep();
            if audit_pruned.is_none_or(|at| at.elapsed() >= AUDIT_PRUNE_INTERVAL) {
                audit_pruned = Some(tokio::time::Instant::now());
                prune_audit(&upkeep_store, retention_days).await;
            }
        }
    });
    let mut health_stop = stop_rx_background.clone();
    let (health_probes, reporter) = (probes.clone(), health_reporter.clone());
    let grpc_health_follows = tokio::spawn(async move {
        let mut every = tokio::time::interval(GRPC_HEALTH_INTERVAL);
        let mut serving = true;
        let ready_gauge = crate::metrics::readiness();
        loop {
            let stopping = tokio::select! {
                _ = every.tick() => false,
                _ = health_stop.wait_for(|stop| *stop) => true,
            };
            if stopping {
                ready_gauge.set(0.0);
                // Again, after any update racing the shutdown's own.
                reporter
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
                break;
            }
            let ready = health_probes.ready().await.is_ok();
            ready_gauge.set(if ready { 1.0 } else { 0.0 });
            if ready != serving {
                serving = ready;
                let status = match ready {
                    true => tonic_health::ServingStatus::Serving,
                    false => tonic_health::ServingStatus::NotServing,
                };
                reporter.set_service_status("", status).await;
            }
        }
    });
    let usage = tokio::spawn(services.last_used.clone().run(
        services.store.clone(),
        Duration::from_secs(config.usage.flush_interval_secs),
        stop_rx_background,
    ));

    info!(
        check = %check_addr, check_tls = config.tls.check.enabled(), check_unix = ?unix_path,
        admin = %admin_addr, admin_tls = config.tls.admin.enabled(), health = %health_addr,
        database = %redact_url(&config.database.url), "keyward serving"
    );
    let servers = async {
        tokio::try_join!(
            async { check.await.context("check server") },
            async {
                match check_unix {
                    Some(server) => server.await.context("check server (unix socket)"),
                    None => Ok(()),
                }
            },
            async { admin.await.context("admin server") },
            async { health.await.context("health server") },
        )
    };
    tokio::pin!(servers);
    let served = tokio::select! {
        result = &mut servers => result.map(|_| ()),
        () = shutdown => {
            info!("shutting down: draining in-flight requests");
            probes.draining.store(true, Ordering::Release);
            health_reporter
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            let _ = stop_tx.send(true);
            if tokio::time::timeout(DRAIN, &mut servers).await.is_err() {
                warn!(seconds = DRAIN.as_secs(), "drain timed out; closing with requests in flight");
            }
            Ok(())
        }
    };
    let _ = stop_tx.send(true);
    let _ = propagation.await;
    let _ = usage.await;
    let _ = metrics_upkeep.await;
    let _ = grpc_health_follows.await;
    let _ = tls_reload.await;
    services.store.close().await;
    if let Some(path) = unix_path {
        let _ = std::fs::remove_file(path);
    }
    served
}

/// A gRPC server future, whichever transport it accepts on.
type Served =
    std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send + 'static>>;

/// The listener's TLS acceptor when its certificate is configured.
fn tls_acceptor(
    name: &'static str,
    files: &crate::config::TlsFiles,
) -> anyhow::Result<Option<std::sync::Arc<crate::tls::Acceptor>>> {
    files
        .enabled()
        .then(|| crate::tls::Acceptor::load(name, files))
        .transpose()
}

/// What the health port's probes read.
#[derive(Clone)]
struct Probes {
    directory: Directory,
    /// Set when shutdown begins: readiness fails first, so Kubernetes stops sending new work.
    draining: Arc<AtomicBool>,
}

/// How often grpc.health.v1's status and `keyward_ready` are brought in line with readiness.
const GRPC_HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// How long a probe waits for the store: under the kubelet's default 1 s probe timeout.
const STORE_PROBE_TIMEOUT: Duration = Duration::from_millis(800);

impl Probes {
    async fn store_answers(&self) -> bool {
        let ping = self.directory.ping_store();
        matches!(
            tokio::time::timeout(STORE_PROBE_TIMEOUT, ping).await,
            Ok(Ok(()))
        )
    }
}

/// Readiness (`/readyz`, and grpc.health.v1 on the Check port): whether this replica should
/// get Checks. Not while shutting down; and yes while it can decide anything: keys are cached (so
/// it keeps deciding for them through a store outage, which is when pulling every replica out of
/// the Service would hurt most), or the store answers. The store is not asked while keys are
/// cached, so probes add no database load. Until the store is open and migrated the port
/// answers nothing, so a starting replica is not ready either.
async fn readyz(State(probes): State<Probes>) -> (StatusCode, &'static str) {
    match probes.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n"),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

impl Probes {
    async fn ready(&self) -> Result<(), &'static str> {
        if self.draining.load(Ordering::Acquire) {
            return Err("shutting down\n");
        }
        if self.directory.caches().holds_keys().await || self.store_answers().await {
            return Ok(());
        }
        Err("cannot decide: storage unavailable and no key cached\n")
    }
}

/// Store health (`/storez`): whether the store answers now. For alerts and dashboards, not for
/// a Kubernetes probe: an outage is no reason to restart keyward or to stop its cached answers.
async fn storez(State(probes): State<Probes>) -> (StatusCode, &'static str) {
    match probes.store_answers().await {
        true => (StatusCode::OK, "store ok\n"),
        false => (StatusCode::SERVICE_UNAVAILABLE, "storage unavailable\n"),
    }
}

/// Prometheus text exposition of [`crate::metrics`].
async fn metrics() -> ([(header::HeaderName, &'static str); 1], String) {
    crate::metrics::upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// A Check connection (TCP, TLS or Unix socket) whose writes h2 coalesces: it reports no
/// vectored writes.
///
/// h2 copies a DATA frame into its write buffer only below a threshold (256 bytes when the
/// transport writes vectored, 1 KiB otherwise); a larger one is chained and must be flushed
/// before the next frame is buffered, so every such answer costs its own write. A Check answer
/// crosses 256 bytes easily (the identity headers with long names, what the module may reuse):
/// then Envoy's concurrent Checks, answered together, left in one write each, where smaller
/// answers share one (bench/load.sh `PROFILE=1`: 2.45 against 1.37 syscalls a Check, ~4 µs of
/// keyward's kernel time). Copying up to 1 KiB costs less than a write.
struct CoalescedWrites<T>(T);

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for CoalescedWrites<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for CoalescedWrites<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected
    for CoalescedWrites<T>
{
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.connect_info()
    }
}
