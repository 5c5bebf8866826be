//! Configuration: a TOML file (every field optional) overlaid with `KEYWARD_*` environment
//! variables. Errors name the field or the variable that is wrong.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod check;
mod duration;
mod env;

pub use check::{CheckReport, Source};
pub use env::{env_reference, variables};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: Listen,
    pub database: Database,
    pub credentials: Credentials,
    pub cache: Cache,
    pub argon2: Argon2,
    pub verify: Verify,
    pub propagation: Propagation,
    pub usage: Usage,
    pub tls: Tls,
    pub audit: Audit,
    pub module: Module,
    pub answer: Answer,
}

/// What Check's allows carry besides what they always do (overwrite the identity headers,
/// remove the credential headers).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Answer {
    /// The allow's identity as dynamic metadata too (key id, principal, project, plane,
    /// deployment), for Envoy filters that read metadata rather than headers. Off by default:
    /// it costs Envoy more than the rest of the answer (`bench/answer.sh`), and the identity
    /// headers carry the same for access logs (`%REQ(X-KEYWARD-KEY-ID)%`) and rate limits.
    /// Denials always carry theirs; the module's field does not depend on it.
    pub metadata: bool,
}

/// keyward's Envoy module (`module/`): what Check's allows tell it. Off by default: the answer
/// then carries nothing for it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Module {
    /// Add to each data-plane allow what the module needs to answer the next request with the
    /// same key on the same route itself (`x-keyward-module` in the answer, which the module
    /// takes out of it).
    pub enabled: bool,
    /// Longest the module may reuse an allow; the key's expiry and time conditions bound it
    /// lower. The module's change feed ends it at once on any change.
    #[serde(deserialize_with = "duration::millis")]
    pub max_ttl_ms: u64,
}

impl Default for Module {
    fn default() -> Self {
        Module {
            enabled: false,
            max_ttl_ms: 60_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// Envoy's `envoy.service.auth.v3.Authorization/Check`.
    pub check: SocketAddr,
    /// Also serve Check on this Unix domain socket (none by default). Envoy on the same host
    /// reaches it with `pipe: {path: …}`, skipping the TCP stack. A stale socket file left at
    /// this path is replaced; any other kind of file is an error.
    pub check_unix: Option<PathBuf>,
    /// The admin gRPC API used by the CLI.
    pub admin: SocketAddr,
    /// HTTP `/healthz` (liveness), `/readyz` (readiness), `/storez` (the store) and `/metrics`.
    pub health: SocketAddr,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    /// `sqlite://PATH` (created when missing) or `postgres://…`.
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Credentials {
    /// Request headers read for a credential, in order. `authorization` expects `Bearer <token>`;
    /// any other header carries the bare token.
    pub sources: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cache {
    /// Entries per cache (verified secrets, keys, deployments).
    pub capacity: u64,
    /// Outer bound on how long a cached key or deployment is trusted without a reload. Admin
    /// changes invalidate at once; this bounds anything missed.
    #[serde(deserialize_with = "duration::secs")]
    pub ttl_secs: u64,
    /// How long a failed verification is remembered, to keep brute force off argon2.
    #[serde(deserialize_with = "duration::secs")]
    pub negative_ttl_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Argon2 {
    /// Parameters for new hashes; existing hashes carry their own in the PHC string.
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Verify {
    /// argon2 verifications running at once, each on a thread of its own. Each worker keeps one
    /// buffer of `argon2.memory_kib` working memory once it has verified (19 MiB at the defaults).
    pub workers: usize,
    /// Verifications allowed to wait for a worker; past that keyward sheds with a gRPC
    /// `RESOURCE_EXHAUSTED`, which Envoy turns into its `status_on_error` (503).
    pub queue: usize,
    /// Of the `workers + queue` places, how many one key id may hold at once; past that its
    /// verifications are shed (`RESOURCE_EXHAUSTED`, Envoy: 503) while other keys' still run.
    /// Requests presenting the same token share one place, and a key has at most two valid
    /// secrets (during a rotation grace), so 2 costs legitimate traffic nothing.
    pub per_key: usize,
    /// How much lower the workers' CPU priority is than the Check path's, as a nice increment
    /// (0-19; the result is capped at nice 19). The default, 10, gives a verification about a tenth
    /// of a core's share against each busy async worker: the kernel serves cached keys first when
    /// the cores are contended, and argon2 gets what is left, never nothing.
    pub nice: i32,
    /// New secrets one principal may have queued or hashing at once for admin writes (create,
    /// rotate); further writes are refused until one finishes. Admin hashing always waits
    /// behind Check verifications.
    pub admin_per_principal: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Propagation {
    /// How often the `changes` table is read for other replicas' writes: SQLite's only way to
    /// learn them; PostgreSQL's backstop to `LISTEN`, bounding how late a change whose
    /// notification was lost is applied.
    #[serde(deserialize_with = "duration::millis")]
    pub poll_interval_ms: u64,
    /// PostgreSQL: the longest wait between attempts to re-establish `LISTEN` (the table is
    /// read every 50 ms meanwhile).
    #[serde(deserialize_with = "duration::millis")]
    pub max_backoff_ms: u64,
    /// PostgreSQL: how often each replica sends itself a heartbeat through its `LISTEN`
    /// connection; one unanswered for three intervals declares the connection dead.
    #[serde(deserialize_with = "duration::millis")]
    pub heartbeat_ms: u64,
    /// The longest a replica answers from its caches without having confirmed that it has seen
    /// every change up to then (a read of the `changes` table or a heartbeat back through the
    /// feed). Past it, Check reloads what it needs from the store instead of trusting the
    /// cache, unless the store is known to be down: a replica paused, starved or cut from
    /// its feed cannot answer from a cache older than this. `0` turns the bound off.
    #[serde(deserialize_with = "duration::millis")]
    pub max_unconfirmed_ms: u64,
}

impl Default for Propagation {
    fn default() -> Self {
        Propagation {
            poll_interval_ms: 100,
            max_backoff_ms: 5_000,
            heartbeat_ms: 250,
            max_unconfirmed_ms: 500,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Usage {
    /// How often recorded last-use times are written, in one batch.
    #[serde(deserialize_with = "duration::secs")]
    pub flush_interval_secs: u64,
}

/// The audit log of admin calls (`keyward audit list`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Audit {
    /// Records older than this many days are deleted, hourly, by every replica.
    pub retention_days: u64,
}

impl Default for Audit {
    fn default() -> Self {
        Audit {
            retention_days: 365,
        }
    }
}

/// TLS for the TCP listeners (the Unix socket for Check stays local and plaintext). Off by
/// default so a first run needs no certificate; a plaintext admin API on a non-loopback address
/// warns at start.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// Envoy's ext_authz cluster then needs an `UpstreamTlsContext` (`envoy/render.sh
    /// KEYWARD_TLS=mtls`).
    pub check: TlsFiles,
    /// The CLI then connects with `--server https://…` and `--ca` (or the system roots).
    pub admin: TlsFiles,
    /// How often the certificate files are checked for changes; changed files are loaded for
    /// new connections without a restart.
    #[serde(deserialize_with = "duration::secs")]
    pub reload_interval_secs: u64,
}

/// One listener's certificate files, all PEM. TLS is on when `cert` and `key` are set.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsFiles {
    /// The certificate chain presented, leaf first.
    pub cert: Option<PathBuf>,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// Require client certificates signed by these CAs (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    pub fn enabled(&self) -> bool {
        self.cert.is_some()
    }
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            check: TlsFiles::default(),
            admin: TlsFiles::default(),
            reload_interval_secs: 10,
        }
    }
}

impl Default for Usage {
    fn default() -> Self {
        Usage {
            flush_interval_secs: 5,
        }
    }
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            check: SocketAddr::from(([127, 0, 0, 1], 9191)),
            check_unix: None,
            admin: SocketAddr::from(([127, 0, 0, 1], 9192)),
            health: SocketAddr::from(([127, 0, 0, 1], 9193)),
        }
    }
}

impl Default for Database {
    fn default() -> Self {
        Database {
            url: "sqlite://keyward.db".into(),
            max_connections: 8,
        }
    }
}

impl Default for Credentials {
    fn default() -> Self {
        Credentials {
            sources: vec![
                "authorization".into(),
                "x-api-key".into(),
                "x-auth-token".into(),
            ],
        }
    }
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            capacity: 100_000,
            ttl_secs: 300,
            negative_ttl_secs: 10,
        }
    }
}

impl Default for Argon2 {
    /// OWASP's argon2id minimum: 19 MiB, 2 passes, 1 lane.
    fn default() -> Self {
        Argon2 {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl Default for Verify {
    /// Half the cores verify, so a flood of wrong secrets leaves the other half to cached keys
    /// (docs/performance.md measures it). The queue holds what those workers finish within
    /// Envoy's 0.5 s check timeout at ~20 ms a verification; anything queued longer would be
    /// answered after Envoy has already given up, so it is shed at once instead.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let workers = (cores / 2).max(1);
        Verify {
            workers,
            queue: workers * 16,
            per_key: 2,
            nice: 10,
            admin_per_principal: 2,
        }
    }
}

/// Upper bounds of the ranges [`Config::validate`] enforces. Each is far above any sensible
/// setting and far below what would overflow or panic further in (moka refuses TTLs beyond
/// 1000 years, tokio's semaphores `usize::MAX >> 3` permits, argon2 allocates `memory_kib` per
/// worker up front).
pub const MAX_TTL_SECS: u64 = 30 * 86_400;
pub const MAX_CACHE_CAPACITY: u64 = 100_000_000;
pub const MAX_VERIFY_WORKERS: usize = 1_024;
pub const MAX_VERIFY_QUEUE: usize = 1_000_000;
/// 4 GiB: argon2's working memory for one verification, held by each worker.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 4 * 1024 * 1024;
pub const MAX_ARGON2_ITERATIONS: u32 = 1_000;
pub const MAX_ARGON2_PARALLELISM: u32 = 64;
pub const MAX_DATABASE_CONNECTIONS: u32 = 10_000;
pub const MAX_INTERVAL_MS: u64 = 3_600_000;
/// A hundred years: past it, `now - retention` would leave the range of a timestamp.
pub const MAX_AUDIT_RETENTION_DAYS: u64 = 36_500;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// One error for many: the only one, or all of them in one message.
fn joined(mut problems: Vec<ConfigError>) -> Option<ConfigError> {
    match problems.len() {
        0 => None,
        1 => problems.pop(),
        _ => Some(ConfigError::Invalid(
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )),
    }
}

/// A TOML error without the offending line or any quoted value: toml's own message quotes the
/// line, and a line of the configuration may hold a secret (the database URL's password). It
/// names the line, the column and the key being set, if the line sets one.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim();
    // serde quotes the value it could not use (`invalid type: string "…", expected u32`).
    let shown = message
        .split('"')
        .enumerate()
        .map(|(i, part)| if i % 2 == 1 { "…" } else { part })
        .collect::<Vec<_>>()
        .join("\"");
    let shown = shown.replace('\n', " ");
    let Some(at) = e.span().map(|span| span.start.min(text.len())) else {
        return shown;
    };
    let before = &text[..at];
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..at].chars().count() + 1;
    let line = text[line_start..].lines().next().unwrap_or_default();
    let key = line
        .split_once('=')
        .map(|(key, _)| key.trim())
        .filter(|key| {
            !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        });
    match key {
        Some(key) => format!("line {line_no}, column {column}, `{key}`: {shown}"),
        None => format!("line {line_no}, column {column}: {shown}"),
    }
}

impl Config {
    /// Reads `path` if given, then applies `KEYWARD_*` variables from the process environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(path) => Self::from_file(path)?,
            None => Config::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: shown,
            message,
        })
    }

    /// Parses TOML; the message names the line, column and key of the first problem.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| toml_error(text, &e))
    }

    /// Overlays `KEYWARD_*` variables read through `lookup`, so tests need not touch the
    /// process environment. Each configuration key has its variable derived from its path
    /// (`cache.ttl_secs`: `KEYWARD_CACHE_TTL_SECS`); every bad one is named.
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let (config, report) = env::overlay(self, &lookup)?;
        if let Some(problem) = joined(report.problems) {
            return Err(problem);
        }
        *self = config;
        Ok(())
    }

    /// Checks what serde cannot: ranges and header names. The error names every bad value.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        match self.problems().as_slice() {
            [] => Ok(()),
            problems => Err(ConfigError::Invalid(problems.join("; "))),
        }
    }

    /// Every value [`Config::validate`] refuses, each naming its key; lowercases the header
    /// names in `credentials.sources`.
    pub fn problems(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.credentials.sources.is_empty() {
            problems.push("credentials.sources must name at least one header".into());
        }
        for source in &mut self.credentials.sources {
            *source = source.to_ascii_lowercase();
            if source.is_empty()
                || !source
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                problems.push(format!(
                    "credentials.sources: {source:?} is not a valid header name"
                ));
            }
        }
        let mut within = |field: &str, value: u64, min: u64, max: u64| {
            if value < min || value > max {
                problems.push(format!(
                    "{field} must be between {min} and {max}, not {value}"
                ));
            }
        };
        let c = &*self;
        within("cache.capacity", c.cache.capacity, 1, MAX_CACHE_CAPACITY);
        within("cache.ttl_secs", c.cache.ttl_secs, 1, MAX_TTL_SECS);
        within(
            "cache.negative_ttl_secs",
            c.cache.negative_ttl_secs,
            0,
            MAX_TTL_SECS,
        );
        let queue = MAX_VERIFY_QUEUE as u64;
        within(
            "verify.workers",
            c.verify.workers as u64,
            1,
            MAX_VERIFY_WORKERS as u64,
        );
        within("verify.queue", c.verify.queue as u64, 0, queue);
        within("verify.per_key", c.verify.per_key as u64, 1, queue);
        within(
            "verify.admin_per_principal",
            c.verify.admin_per_principal as u64,
            1,
            queue,
        );
        let interval = MAX_INTERVAL_MS;
        within(
            "propagation.poll_interval_ms",
            c.propagation.poll_interval_ms,
            1,
            interval,
        );
        within(
            "propagation.max_backoff_ms",
            c.propagation.max_backoff_ms,
            1,
            interval,
        );
        within(
            "propagation.heartbeat_ms",
            c.propagation.heartbeat_ms,
            10,
            interval,
        );
        within(
            "propagation.max_unconfirmed_ms",
            c.propagation.max_unconfirmed_ms,
            0,
            interval,
        );
        within("module.max_ttl_ms", c.module.max_ttl_ms, 1, interval);
        within(
            "audit.retention_days",
            c.audit.retention_days,
            1,
            MAX_AUDIT_RETENTION_DAYS,
        );
        within(
            "tls.reload_interval_secs",
            c.tls.reload_interval_secs,
            1,
            interval / 1000,
        );
        within(
            "usage.flush_interval_secs",
            c.usage.flush_interval_secs,
            1,
            interval / 1000,
        );
        within(
            "database.max_connections",
            c.database.max_connections.into(),
            1,
            MAX_DATABASE_CONNECTIONS.into(),
        );
        within(
            "argon2.parallelism",
            c.argon2.parallelism.into(),
            1,
            MAX_ARGON2_PARALLELISM.into(),
        );
        within(
            "argon2.memory_kib",
            c.argon2.memory_kib.into(),
            8 * u64::from(c.argon2.parallelism.max(1)),
            MAX_ARGON2_MEMORY_KIB.into(),
        );
        within(
            "argon2.iterations",
            c.argon2.iterations.into(),
            1,
            MAX_ARGON2_ITERATIONS.into(),
        );
        if !(0..=19).contains(&c.verify.nice) {
            problems.push(format!(
                "verify.nice must be between 0 and 19, not {}",
                c.verify.nice
            ));
        }
        for (name, files) in [("tls.check", &c.tls.check), ("tls.admin", &c.tls.admin)] {
            if files.cert.is_some() != files.key.is_some() {
                problems.push(format!(
                    "{name}: cert and key go together (one is set, not both)"
                ));
            }
            if files.client_ca.is_some() && files.cert.is_none() {
                problems.push(format!(
                    "{name}.client_ca needs {name}.cert and {name}.key: client certificates are only asked for over TLS"
                ));
            }
        }
        let unconfirmed = self.propagation.max_unconfirmed_ms;
        if unconfirmed != 0 && unconfirmed <= self.propagation.poll_interval_ms {
            problems.push(format!(
                "propagation.max_unconfirmed_ms ({unconfirmed}) must be above propagation.poll_interval_ms ({}), or 0 to turn the bound off: the feed is confirmed once per poll",
                self.propagation.poll_interval_ms
            ));
        }
        let argon2_in_range = problems.iter().all(|p| !p.starts_with("argon2."));
        if argon2_in_range
            && let Err(e) = argon2::Params::new(
                c.argon2.memory_kib,
                c.argon2.iterations,
                c.argon2.parallelism,
                None,
            )
        {
            problems.push(format!("argon2: {e}"));
        }
        problems
    }

    pub fn cache_ttl(&self) -> Duration {
        Duration::from_secs(self.cache.ttl_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_addresses() {
        let c = Config::default();
        assert_eq!(c.listen.check.to_string(), "127.0.0.1:9191");
        assert_eq!(c.listen.admin.to_string(), "127.0.0.1:9192");
        assert_eq!(c.listen.health.to_string(), "127.0.0.1:9193");
        assert_eq!(c.database.url, "sqlite://keyward.db");
        assert_eq!(c.listen.check_unix, None);
    }

    #[test]
    fn the_check_unix_socket_is_opt_in() {
        let c = Config::from_toml("[listen]\ncheck_unix = \"/run/keyward/check.sock\"\n").unwrap();
        assert_eq!(
            c.listen.check_unix.as_deref(),
            Some(Path::new("/run/keyward/check.sock"))
        );
        let mut c = Config::default();
        c.apply_env(|n| (n == "KEYWARD_CHECK_UNIX").then(|| "/tmp/kw.sock".to_owned()))
            .unwrap();
        assert_eq!(
            c.listen.check_unix.as_deref(),
            Some(Path::new("/tmp/kw.sock"))
        );
    }

    #[test]
    fn toml_errors_never_echo_the_offending_line() {
        // (file, what the message names)
        let cases = [
            ("[database]\nurl = postgres://u:hunter2@h/db\n", "line 2"),
            ("[database]\nurl = \"postgres://u:hunter2@h/db\n", "line 2"),
            (
                "[database]\nmax_connections = \"hunter2\"\n",
                "max_connections",
            ),
            (
                "[database]\nurl = 'postgres://u:hunter2@h/db' x\n",
                "line 2",
            ),
            ("[listen]\ncheck = \"hunter2\"\n", "check"),
            ("hunter2\n", "line 1"),
        ];
        for (text, needle) in cases {
            let err = Config::from_toml(text).unwrap_err();
            assert!(!err.contains("hunter2"), "{text:?}: {err}");
            assert!(err.contains(needle), "{text:?}: {err} lacks {needle}");
        }
        assert_eq!(
            Config::from_toml("[database]\nmax_connections = \"hunter2\"\n").unwrap_err(),
            "line 2, column 19, `max_connections`: invalid type: string \"…\", expected u32"
        );
    }

    #[test]
    fn toml_fields_are_read_and_unknown_ones_named() {
        let c =
            Config::from_toml("[listen]\ncheck = \"0.0.0.0:1\"\n[cache]\nttl_secs = 7\n").unwrap();
        assert_eq!(c.listen.check.port(), 1);
        assert_eq!(c.cache.ttl_secs, 7);
        assert_eq!(c.cache.capacity, 100_000);

        let err = Config::from_toml("[cache]\nttl_sec = 7\n").unwrap_err();
        assert!(err.contains("ttl_sec"), "{err}");
        let err = Config::from_toml("[listen]\ncheck = \"nope\"\n").unwrap_err();
        assert!(err.contains("check") || err.contains("line 2"), "{err}");
    }

    #[test]
    fn environment_overrides_and_names_bad_variables() {
        let mut c = Config::default();
        let env = |name: &str| match name {
            "KEYWARD_DATABASE_URL" => Some("postgres://u@h/db".to_owned()),
            "KEYWARD_CREDENTIAL_SOURCES" => Some("X-Api-Key, authorization".to_owned()),
            "KEYWARD_CACHE_TTL_SECS" => Some("42".to_owned()),
            _ => None,
        };
        c.apply_env(env).unwrap();
        c.validate().unwrap();
        assert_eq!(c.database.url, "postgres://u@h/db");
        assert_eq!(c.credentials.sources, ["x-api-key", "authorization"]);
        assert_eq!(c.cache.ttl_secs, 42);

        let err = Config::default()
            .apply_env(|n| (n == "KEYWARD_ADMIN_ADDR").then(|| "9192".to_owned()))
            .unwrap_err();
        assert!(err.to_string().contains("KEYWARD_ADMIN_ADDR"), "{err}");
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let mut c = Config::from_toml("[argon2]\nmemory_kib = 1\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("argon2"));
        let mut c = Config::from_toml("[credentials]\nsources = [\"bad header\"]\n").unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("credentials.sources")
        );
        let mut c = Config::from_toml("[verify]\nnice = 20\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("verify.nice") && err.contains("20"), "{err}");
        let mut c = Config::from_toml("[verify]\nnice = 0\n").unwrap();
        c.validate().unwrap();
        let mut c = Config::from_toml("[verify]\nper_key = 0\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("verify.per_key"), "{err}");
    }
}

#[cfg(test)]
mod range_tests {
    use super::*;

    /// Every numeric field, set to an absurd value, is refused by name rather than panicking
    /// later (moka, the semaphores, argon2's allocation).
    #[test]
    fn tls_files_come_in_pairs_and_are_read_from_file_and_environment() {
        let mut c = Config::from_toml(
            "[tls.admin]\ncert = \"/etc/keyward/admin.pem\"\nkey = \"/etc/keyward/admin.key\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert!(c.tls.admin.enabled() && !c.tls.check.enabled());
        assert_eq!(c.tls.reload_interval_secs, 10);

        let env = |name: &str| match name {
            "KEYWARD_TLS_CHECK_CERT" => Some("/tls/check.pem".to_owned()),
            "KEYWARD_TLS_CHECK_KEY" => Some("/tls/check.key".to_owned()),
            "KEYWARD_TLS_CHECK_CLIENT_CA" => Some("/tls/ca.pem".to_owned()),
            _ => None,
        };
        c.apply_env(env).unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.tls.check.client_ca.as_deref(),
            Some(Path::new("/tls/ca.pem"))
        );

        let mut half = Config::from_toml("[tls.check]\ncert = \"/c.pem\"\n").unwrap();
        let err = half.validate().unwrap_err().to_string();
        assert!(
            err.contains("tls.check") && err.contains("together"),
            "{err}"
        );

        let mut ca_only = Config::from_toml("[tls.admin]\nclient_ca = \"/ca.pem\"\n").unwrap();
        let err = ca_only.validate().unwrap_err().to_string();
        assert!(err.contains("tls.admin.client_ca"), "{err}");

        let mut never = Config::from_toml("[tls]\nreload_interval_secs = 0\n").unwrap();
        let err = never.validate().unwrap_err().to_string();
        assert!(err.contains("tls.reload_interval_secs"), "{err}");
    }

    #[test]
    fn absurd_values_are_refused_by_name() {
        let cases: &[(&str, &str)] = &[
            (
                "[cache]\nttl_secs = 18446744073709551615\n",
                "cache.ttl_secs",
            ),
            (
                "[cache]\nnegative_ttl_secs = 18446744073709551615\n",
                "cache.negative_ttl_secs",
            ),
            (
                "[cache]\ncapacity = 18446744073709551615\n",
                "cache.capacity",
            ),
            ("[verify]\nqueue = 18446744073709551615\n", "verify.queue"),
            ("[verify]\nworkers = 100000\n", "verify.workers"),
            (
                "[propagation]\npoll_interval_ms = 200\nmax_unconfirmed_ms = 150\n",
                "propagation.max_unconfirmed_ms",
            ),
            (
                "[verify]\nper_key = 18446744073709551615\n",
                "verify.per_key",
            ),
            ("[argon2]\nmemory_kib = 4294967295\n", "argon2.memory_kib"),
            ("[argon2]\niterations = 4294967295\n", "argon2.iterations"),
            ("[argon2]\nparallelism = 0\n", "argon2.parallelism"),
            ("[argon2]\nparallelism = 16777215\n", "argon2.parallelism"),
            (
                "[database]\nmax_connections = 4294967295\n",
                "database.max_connections",
            ),
            (
                "[propagation]\npoll_interval_ms = 18446744073709551615\n",
                "propagation.poll_interval_ms",
            ),
            (
                "[propagation]\nmax_backoff_ms = 0\n",
                "propagation.max_backoff_ms",
            ),
            (
                "[usage]\nflush_interval_secs = 18446744073709551615\n",
                "usage.flush_interval_secs",
            ),
            ("[audit]\nretention_days = 0\n", "audit.retention_days"),
            (
                "[audit]\nretention_days = 18446744073709551615\n",
                "audit.retention_days",
            ),
        ];
        for (toml, field) in cases {
            let mut c = Config::from_toml(toml).unwrap_or_else(|e| panic!("{toml}: {e}"));
            let err = c
                .validate()
                .err()
                .unwrap_or_else(|| panic!("{field}: an absurd value was accepted"))
                .to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }

    #[tokio::test]
    async fn the_largest_accepted_values_start_without_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::default();
        c.database.url = format!("sqlite://{}", dir.path().join("k.db").display());
        c.cache.ttl_secs = MAX_TTL_SECS;
        c.cache.negative_ttl_secs = MAX_TTL_SECS;
        c.cache.capacity = MAX_CACHE_CAPACITY;
        c.verify.workers = 2;
        c.verify.queue = MAX_VERIFY_QUEUE;
        c.verify.per_key = MAX_VERIFY_QUEUE;
        c.validate().unwrap();
        let services = crate::server::open(&c).await.expect("opens");
        assert_eq!(services.authn.verifications_run(), 0);
    }
}
