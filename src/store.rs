//! Persistence: the one module that speaks SQL. sqlx's `Any` driver runs the same queries on
//! SQLite (the embedded default) and PostgreSQL; each backend has its own migrations. Every
//! admin write appends a row to `changes` in the same transaction and returns the [`Change`]s it
//! made, so callers can invalidate caches before they answer.

use std::str::FromStr;
use std::time::Duration;

use sqlx::AnyConnection;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

mod audit;
mod availability;
mod iam;
mod listen;
mod routes;

use availability::Availability;
pub use listen::{ChangeListener, Notice};

use crate::clock::{now_unix, now_unix_ms};
use crate::model::{
    ApiKey, DataTarget, Deployment, DeploymentName, KeyDetails, KeyScope, Plane, PreviousSecret,
    Principal, PrincipalKind, Project,
};

/// What an admin write changed; caches drop exactly what it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Key(String),
    Deployment(DeploymentName),
    Project(String),
    Principal(i64),
    /// A policy was created, changed, attached, detached or deleted.
    Policy(String),
    PermissionSet(String),
    Workload(String),
    /// A route table entry was added, changed or removed (subject: its host and prefix).
    Route(String),
}

/// The PostgreSQL channel change events are announced on.
pub const NOTIFY_CHANNEL: &str = "keyward_changes";

impl Change {
    /// Reads back a change event as stored in `changes` or sent on [`NOTIFY_CHANNEL`].
    pub fn from_event(kind: &str, subject: &str) -> Option<Change> {
        Some(match kind {
            "key" => Change::Key(subject.to_owned()),
            "deployment" => Change::Deployment(subject.parse().ok()?),
            "project" => Change::Project(subject.to_owned()),
            "principal" => Change::Principal(subject.parse().ok()?),
            "policy" => Change::Policy(subject.to_owned()),
            "permission_set" => Change::PermissionSet(subject.to_owned()),
            "workload" => Change::Workload(subject.to_owned()),
            "route" => Change::Route(subject.to_owned()),
            _ => return None,
        })
    }

    /// The `origin@sent_ms:kind:subject` payload of a notification: the change and the replica
    /// that made it (`@sent_ms`, Unix milliseconds when the write recorded it, just before its
    /// commit, is optional: replicas before it sent `origin:kind:subject`, and read a newer
    /// payload's origin as another replica's, so they apply it as they should).
    pub fn from_payload(payload: &str) -> Option<(&str, Change)> {
        let mut parts = payload.splitn(3, ':');
        let (origin, kind, subject) = (parts.next()?, parts.next()?, parts.next()?);
        let origin = origin.split_once('@').map_or(origin, |(origin, _)| origin);
        Some((origin, Change::from_event(kind, subject)?))
    }

    /// When the writer sent the notification `payload` (Unix milliseconds), if it says.
    pub fn sent_at_ms(payload: &str) -> Option<i64> {
        let (origin, _) = payload.split_once(':')?;
        let sent = origin.split_once('@')?.1;
        sent.split_once('#')
            .map_or(sent, |(sent, _)| sent)
            .parse()
            .ok()
    }

    /// The id of the change in the `changes` table, when the notification says
    /// (`origin@sent_ms#id:…`): a replica that applied the notification skips the row when it
    /// reads the table. Replicas before it read `sent_ms#id` as an unparsable time and only
    /// lose the propagation-lag sample.
    pub fn change_id(payload: &str) -> Option<i64> {
        let (origin, _) = payload.split_once(':')?;
        origin.split_once('#')?.1.parse().ok()
    }

    fn kind_and_subject(&self) -> (&'static str, String) {
        match self {
            Change::Key(id) => ("key", id.clone()),
            Change::Deployment(name) => ("deployment", name.to_string()),
            Change::Project(slug) => ("project", slug.clone()),
            Change::Principal(id) => ("principal", id.to_string()),
            Change::Policy(name) => ("policy", name.clone()),
            Change::PermissionSet(name) => ("permission_set", name.clone()),
            Change::Workload(id) => ("workload", id.clone()),
            Change::Route(key) => ("route", key.clone()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    /// The database answered with an error. The detail is for logs.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The database could not be reached (or is known to be down). The detail is for logs.
    #[error("storage unreachable: {0}")]
    Unreachable(String),
}

impl From<sqlx::Error> for StoreError {
    /// A unique violation is a lost race between two writers (both checked, one committed
    /// first): the caller's conflict, not an outage.
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict("an object with the same name".into())
            }
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unreachable(e.to_string()),
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which SQL dialect the URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The database URL with any password replaced, safe for messages and logs: the userinfo
/// password and any query parameter named like one (`password`, `sslpassword`, any case).
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "<unparseable database url>".to_owned();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("****"));
    }
    let secret = |k: &str| k.to_ascii_lowercase().contains("password");
    if parsed.query_pairs().any(|(k, _)| secret(&k)) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret(&k) {
                    "****".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    url: std::sync::Arc<str>,
    /// Random per opened store: marks the change events this replica records.
    origin: std::sync::Arc<str>,
    /// Whether the database is known to be down: reads on the Check path and readiness then
    /// fail at once ([`Self::guarded`]).
    availability: std::sync::Arc<Availability>,
    /// Set on the copy [`Self::audited`] returns: the audit record its writes append, in their
    /// own transaction.
    audit: Option<std::sync::Arc<crate::audit::Record>>,
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A key to insert. `secret_hash` is the argon2id PHC string.
#[derive(Debug)]
pub struct NewKey {
    pub id: String,
    pub principal_id: i64,
    pub scope: KeyScope,
    pub name: String,
    pub description: String,
    pub secret_hash: String,
    pub expires_at: Option<i64>,
}

/// Where a page of keys starts: after the key created at `created_at` with id `id` (keys are
/// listed newest first, then by id). Its page token is `created_at:id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCursor {
    pub created_at: i64,
    pub id: String,
}

impl KeyCursor {
    pub fn parse(token: &str) -> Option<KeyCursor> {
        let (at, id) = token.split_once(':')?;
        let valid_id =
            !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric());
        valid_id.then_some(())?;
        Some(KeyCursor {
            created_at: at.parse().ok()?,
            id: id.to_owned(),
        })
    }

    pub fn token(&self) -> String {
        format!("{}:{}", self.created_at, self.id)
    }
}

/// Changes to a key's metadata and scope; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct KeyUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub attach: Vec<DataTarget>,
    pub detach: Vec<DataTarget>,
    /// `Some(None)` removes the expiry.
    pub expires_at: Option<Option<i64>>,
}

/// The advisory lock id serializing migrations across replicas ("keyward" in ASCII).
const MIGRATION_LOCK: i64 = 0x006b_6579_7761_7264;

const DEPLOYMENT_COLUMNS: &str = "p.slug AS project, d.slug, d.model, d.description, \
     d.public_auth, d.private_auth, d.public_endpoint, d.created_at";

const KEY_COLUMNS: &str = "k.id, k.plane, k.control_project, k.name, k.description, k.secret_hash, \
     k.previous_secret_hash, k.previous_valid_until, k.created_at, k.expires_at, k.revoked_at, k.last_used_at, p.id AS principal_id, \
     p.kind AS principal_kind, p.name AS principal_name";

/// SQLite's page cache is per connection (2 MiB by default, so 16 MiB for the default pool of
/// 8). Keys are served from keyward's own caches; a store read is a cold path whose index pages
/// the kernel's page cache keeps anyway. 512 KiB holds the upper levels of the key and target
/// indexes, which is what a lookup among a million keys touches again and again.
const SQLITE_PAGE_CACHE: &str = "PRAGMA cache_size = -512";

impl Store {
    /// Connects (creating a SQLite file when missing) and runs the embedded migrations.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, String> {
        sqlx::any::install_default_drivers();
        let shown = redact_url(url);
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(format!(
                "unsupported database url {shown}: expected sqlite://PATH or postgres://…"
            ));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)
            .map_err(|e| format!("invalid database url {shown}: {e}"))?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(SQLITE_PAGE_CACHE).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| format!("cannot connect to database {shown}: {e}"))?;
        let store = Store {
            pool,
            backend,
            url: url.as_str().into(),
            origin: crate::token::generate_key_id().into(),
            availability: Default::default(),
            audit: None,
        };
        store
            .migrate()
            .await
            .map_err(|e| format!("cannot migrate database {shown}: {e}"))?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    async fn migrate(&self) -> Result<(), sqlx::Error> {
        match self.backend {
            Backend::Sqlite => {
                sqlx::query("PRAGMA journal_mode=WAL")
                    .execute(&self.pool)
                    .await?;
                sqlx::migrate!("migrations/sqlite").run(&self.pool).await?;
            }
            Backend::Postgres => {
                // Replicas starting together must not race to create sqlx's own bookkeeping
                // table: hold a session-level advisory lock around the whole migration.
                let mut lock = self.pool.acquire().await?;
                sqlx::query("SELECT 1 FROM pg_advisory_lock($1)")
                    .bind(MIGRATION_LOCK)
                    .execute(&mut *lock)
                    .await?;
                let migrated = sqlx::migrate!("migrations/postgres").run(&self.pool).await;
                sqlx::query("SELECT 1 FROM pg_advisory_unlock($1)")
                    .bind(MIGRATION_LOCK)
                    .execute(&mut *lock)
                    .await?;
                migrated?;
            }
        }
        Ok(())
    }

    /// One round trip to the database, for readiness.
    pub async fn ping(&self) -> Result<()> {
        self.guarded(async {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
        .await
    }

    /// Runs `op` unless the database is known to be down, and records whether it was reached.
    /// Wraps the reads of the Check path ([`crate::directory`]) and readiness, where waiting out
    /// the pool's acquire timeout for every request would outlast Envoy's own timeout.
    pub async fn guarded<T>(&self, op: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        if !self.availability.admit(now_millis()) {
            return Err(StoreError::Unreachable(
                "the database is known to be down; probing it in the background".into(),
            ));
        }
        let result = op.await;
        let reachable = !matches!(result, Err(StoreError::Unreachable(_)));
        self.availability.record(reachable, now_millis());
        result
    }

    /// Whether the last attempt to reach the database failed (and no probe has succeeded since).
    pub fn is_known_down(&self) -> bool {
        self.availability.is_down()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Creates the default organization, its owner and (`keyward init`) the owner's first key,
    /// in one transaction: a failure leaves nothing behind, so `init` can run again. Fails if
    /// the organization exists, so the owner's bootstrap token is minted once.
    pub async fn init_organization(
        &self,
        owner: &str,
        owner_key: Option<NewKey>,
    ) -> Result<Principal> {
        let mut tx = self.pool.begin().await?;
        let existing = sqlx::query("SELECT id FROM organizations WHERE name = 'default'")
            .fetch_optional(&mut *tx)
            .await?;
        if existing.is_some() {
            return Err(StoreError::Invalid(
                "keyward is already initialized: use an existing control token, or run \
                 `keyward init --recover` on this database to mint a new owner key"
                    .into(),
            ));
        }
        let now = now_unix();
        let org_id: i64 = sqlx::query(
            "INSERT INTO organizations (name, created_at) VALUES ('default', $1) RETURNING id",
        )
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        let id: i64 = sqlx::query(
            "INSERT INTO principals (organization_id, kind, name, created_at) \
             VALUES ($1, 'owner', $2, $3) RETURNING id",
        )
        .bind(org_id)
        .bind(owner)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        let mut changes = vec![Change::Principal(id)];
        if let Some(key) = owner_key {
            let key = NewKey {
                principal_id: id,
                ..key
            };
            insert_key(&mut tx, &key).await?;
            changes.push(Change::Key(key.id));
        }
        record_all(&mut tx, self, &changes).await?;
        tx.commit().await?;
        Ok(Principal {
            id,
            kind: PrincipalKind::Owner,
            name: owner.to_owned(),
        })
    }

    /// Stores another key for the owner of an initialized organization (`keyward init
    /// --recover`, for whoever has local access to the store); its `principal_id` is ignored.
    pub async fn recover_owner(&self, key: NewKey) -> Result<Principal> {
        let mut tx = self.pool.begin().await?;
        organization_id(&mut tx).await?;
        let row = sqlx::query("SELECT id, name FROM principals WHERE kind = 'owner'")
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| corrupt("organization without an owner".into()))?;
        let owner = Principal {
            id: row.try_get("id")?,
            kind: PrincipalKind::Owner,
            name: row.try_get("name")?,
        };
        let key = NewKey {
            principal_id: owner.id,
            ..key
        };
        insert_key(&mut tx, &key).await?;
        record_all(&mut tx, self, &[Change::Key(key.id)]).await?;
        tx.commit().await?;
        Ok(owner)
    }

    pub async fn create_project(&self, slug: &str) -> Result<(String, i64, Vec<Change>)> {
        let mut tx = self.pool.begin().await?;
        let org_id = organization_id(&mut tx).await?;
        let taken = sqlx::query("SELECT 1 FROM projects WHERE organization_id = $1 AND slug = $2")
            .bind(org_id)
            .bind(slug)
            .fetch_optional(&mut *tx)
            .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict(format!("project {slug}")));
        }
        let now = now_unix();
        sqlx::query("INSERT INTO projects (organization_id, slug, created_at) VALUES ($1, $2, $3)")
            .bind(org_id)
            .bind(slug)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let changes = vec![Change::Project(slug.to_owned())];
        record_all(&mut tx, self, &changes).await?;
        tx.commit().await?;
        Ok((slug.to_owned(), now, changes))
    }

    pub async fn list_projects(&self) -> Result<Vec<Project>> {
        list_projects(&mut *self.pool.acquire().await?).await
    }
}

async fn list_projects(conn: &mut AnyConnection) -> Result<Vec<Project>> {
    let rows = sqlx::query("SELECT slug, description, created_at FROM projects ORDER BY slug")
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Project {
                slug: r.try_get("slug")?,
                description: r.try_get("description")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}

impl Store {
    pub async fn project_exists(&self, slug: &str) -> Result<bool> {
        Ok(sqlx::query("SELECT 1 FROM projects WHERE slug = $1")
            .bind(slug)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// Inserts a deployment, with no description and its public endpoint on.
    pub async fn create_deployment(
        &self,
        name: &DeploymentName,
        model: &str,
        public_auth: bool,
        private_auth: bool,
    ) -> Result<(Deployment, Vec<Change>)> {
        let deployment = Deployment {
            name: name.clone(),
            model: model.to_owned(),
            description: String::new(),
            public_auth,
            private_auth,
            public_endpoint: true,
            created_at: 0,
        };
        let mut tx = self.pool.begin().await?;
        let project_id: i64 = sqlx::query("SELECT id FROM projects WHERE slug = $1")
            .bind(&name.project)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("project {}", name.project)))?
            .try_get(0)?;
        let taken = sqlx::query("SELECT 1 FROM deployments WHERE project_id = $1 AND slug = $2")
            .bind(project_id)
            .bind(&name.slug)
            .fetch_optional(&mut *tx)
            .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict(format!("deployment {name}")));
        }
        let now = now_unix();
        sqlx::query(
            "INSERT INTO deployments (project_id, slug, model, public_auth, private_auth, created_at, \
               description, public_endpoint) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(project_id)
        .bind(&name.slug)
        .bind(&deployment.model)
        .bind(i64::from(deployment.public_auth))
        .bind(i64::from(deployment.private_auth))
        .bind(now)
        .bind(&deployment.description)
        .bind(i64::from(deployment.public_endpoint))
        .execute(&mut *tx)
        .await?;
        let changes = vec![Change::Deployment(name.clone())];
        record_all(&mut tx, self, &changes).await?;
        tx.commit().await?;
        let deployment = Deployment {
            created_at: now,
            ..deployment
        };
        Ok((deployment, changes))
    }

    pub async fn get_deployment(&self, project: &str, slug: &str) -> Result<Option<Deployment>> {
        let row = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments d JOIN projects p ON p.id = d.project_id \
             WHERE p.slug = $1 AND d.slug = $2",
        ))
        .bind(project)
        .bind(slug)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(deployment_from_row).transpose()
    }

    pub async fn list_deployments(&self, project: Option<&str>) -> Result<Vec<Deployment>> {
        list_deployments(&mut *self.pool.acquire().await?, project).await
    }
}

async fn list_deployments(
    conn: &mut AnyConnection,
    project: Option<&str>,
) -> Result<Vec<Deployment>> {
    let rows = sqlx::query(&format!(
        "SELECT {DEPLOYMENT_COLUMNS} FROM deployments d JOIN projects p ON p.id = d.project_id \
             WHERE $1 = '' OR p.slug = $1 ORDER BY p.slug, d.slug",
    ))
    .bind(project.unwrap_or(""))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(deployment_from_row).collect()
}

impl Store {
    pub async fn set_deployment_auth(
        &self,
        name: &DeploymentName,
        public_auth: Option<bool>,
        private_auth: Option<bool>,
    ) -> Result<(Deployment, Vec<Change>)> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE deployments SET \
               public_auth = COALESCE($1, public_auth), private_auth = COALESCE($2, private_auth) \
             WHERE slug = $3 AND project_id = (SELECT id FROM projects WHERE slug = $4)",
        )
        .bind(public_auth.map(i64::from))
        .bind(private_auth.map(i64::from))
        .bind(&name.slug)
        .bind(&name.project)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(StoreError::NotFound(format!("deployment {name}")));
        }
        let changes = vec![Change::Deployment(name.clone())];
        record_all(&mut tx, self, &changes).await?;
        tx.commit().await?;
        let deployment = self
            .get_deployment(&name.project, &name.slug)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("deployment {name}")))?;
        Ok((deployment, changes))
    }

    pub async fn owner(&self) -> Result<Option<Principal>> {
        let row = sqlx::query("SELECT id, kind, name FROM principals WHERE kind = 'owner'")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(Principal {
                id: r.try_get("id")?,
                kind: PrincipalKind::Owner,
                name: r.try_get("name")?,
            })
        })
        .transpose()
    }

    /// Inserts a key. Every target of a data key must name a registered deployment or project,
    /// and a control key's project must exist.
    ///
    /// Serialized with the state writes (the organization's lock): a key cannot be scoped to a
    /// deployment or project that a concurrent deletion is removing.
    pub async fn create_key(&self, key: NewKey) -> Result<(ApiKey, Vec<Change>)> {
        let mut tx = self.pool.begin().await?;
        iam::lock_organization(&mut tx).await?;
        insert_key(&mut tx, &key).await?;
        self.commit_key_change(tx, &key.id).await
    }

    /// The key with its bearer and scope, or `None` if no such id exists.
    pub async fn get_key(&self, id: &str) -> Result<Option<ApiKey>> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k JOIN principals p ON p.id = k.principal_id \
             WHERE k.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let targets = self.targets_of(id).await?;
        key_from_row(&row, targets).map(Some)
    }

    async fn targets_of(&self, id: &str) -> Result<Vec<DataTarget>> {
        let rows = sqlx::query(
            "SELECT project, deployment FROM api_key_targets WHERE key_id = $1 \
             ORDER BY project, deployment",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let mut targets = rows
            .iter()
            .map(target_from_row)
            .collect::<Result<Vec<_>>>()?;
        // Collecting through `Result` starts at capacity 4: 144 unused bytes in every cached key.
        targets.shrink_to_fit();
        Ok(targets)
    }

    /// Keys, newest first; with `project`, only those whose scope reaches into it.
    pub async fn list_keys(&self, project: Option<&str>) -> Result<Vec<ApiKey>> {
        let (keys, _) = self
            .list_keys_page(project, None, usize::MAX, |_| true)
            .await?;
        Ok(keys)
    }

    /// One page of [`Self::list_keys`]: at most `page_size` keys that `visible` admits, after
    /// `after`; and where the next page starts, if there may be one. Keys are read in batches
    /// of `page_size`, so a caller who sees few keys among many still gets full pages.
    pub async fn list_keys_page(
        &self,
        project: Option<&str>,
        after: Option<&KeyCursor>,
        page_size: usize,
        visible: impl Fn(&ApiKey) -> bool,
    ) -> Result<(Vec<ApiKey>, Option<KeyCursor>)> {
        let batch = i64::try_from(page_size).unwrap_or(i64::MAX);
        let mut cursor = after.cloned();
        let mut keys = Vec::new();
        loop {
            let rows = sqlx::query(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys k JOIN principals p ON p.id = k.principal_id \
                 WHERE $1 = 0 OR k.created_at < $2 OR (k.created_at = $2 AND k.id > $3) \
                 ORDER BY k.created_at DESC, k.id LIMIT $4"
            ))
            .bind(i64::from(cursor.is_some()))
            .bind(cursor.as_ref().map_or(0, |c| c.created_at))
            .bind(cursor.as_ref().map_or("", |c| c.id.as_str()))
            .bind(batch)
            .fetch_all(&self.pool)
            .await?;
            for row in &rows {
                let id: String = row.try_get("id")?;
                cursor = Some(KeyCursor {
                    created_at: row.try_get("created_at")?,
                    id: id.clone(),
                });
                let key = key_from_row(row, self.targets_of(&id).await?)?;
                if project.is_none_or(|p| key.scope.touches_project(p)) && visible(&key) {
                    keys.push(key);
                    if keys.len() == page_size {
                        return Ok((keys, cursor));
                    }
                }
            }
            if (rows.len() as i64) < batch {
                return Ok((keys, None));
            }
        }
    }

    pub async fn update_key(&self, id: &str, update: KeyUpdate) -> Result<(ApiKey, Vec<Change>)> {
        let current = self
            .get_key(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("key {id}")))?;
        if current.plane() == Plane::Control
            && !(update.attach.is_empty() && update.detach.is_empty())
        {
            return Err(StoreError::Invalid(
                "control keys are scoped to one project; attach and detach apply to data keys"
                    .into(),
            ));
        }
        let mut tx = self.pool.begin().await?;
        if !update.attach.is_empty() {
            // As in `create_key`: no attachment to what a concurrent deletion removes.
            iam::lock_organization(&mut tx).await?;
        }
        sqlx::query(
            "UPDATE api_keys SET name = COALESCE($1, name), description = COALESCE($2, description) \
             WHERE id = $3",
        )
        .bind(update.name)
        .bind(update.description)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if let Some(expires_at) = update.expires_at {
            sqlx::query("UPDATE api_keys SET expires_at = $1 WHERE id = $2")
                .bind(expires_at)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        for target in &update.attach {
            ensure_target_exists(&mut tx, target).await?;
            let (project, deployment) = target_columns(target);
            sqlx::query(
                "DELETE FROM api_key_targets WHERE key_id = $1 AND project = $2 AND deployment = $3",
            )
            .bind(id)
            .bind(project)
            .bind(deployment)
            .execute(&mut *tx)
            .await?;
            insert_target(&mut tx, id, target).await?;
        }
        for target in &update.detach {
            let (project, deployment) = target_columns(target);
            let removed = sqlx::query(
                "DELETE FROM api_key_targets WHERE key_id = $1 AND project = $2 AND deployment = $3",
            )
            .bind(id)
            .bind(project)
            .bind(deployment)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if removed == 0 {
                return Err(StoreError::NotFound(format!(
                    "{target} in the scope of key {id}"
                )));
            }
        }
        let remaining: i64 = sqlx::query("SELECT COUNT(*) FROM api_key_targets WHERE key_id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if current.plane() == Plane::Data && remaining == 0 {
            return Err(StoreError::Invalid(format!(
                "key {id} would be attached to nothing; revoke or delete it instead"
            )));
        }
        self.commit_key_change(tx, id).await
    }

    /// Marks a key revoked. Revoking twice keeps the first time.
    pub async fn revoke_key(&self, id: &str) -> Result<(ApiKey, Vec<Change>)> {
        let mut tx = self.pool.begin().await?;
        let updated =
            sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
                .bind(now_unix())
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if updated == 0 {
            return Err(StoreError::NotFound(format!("key {id}")));
        }
        self.commit_key_change(tx, id).await
    }

    /// Records that key `id` changed, commits, and returns the key as now stored.
    async fn commit_key_change(&self, mut tx: Tx<'_>, id: &str) -> Result<(ApiKey, Vec<Change>)> {
        let changes = vec![Change::Key(id.to_owned())];
        record_all(&mut tx, self, &changes).await?;
        tx.commit().await?;
        let key = self
            .get_key(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("key {id}")))?;
        Ok((key, changes))
    }

    pub async fn delete_key(&self, id: &str) -> Result<Vec<Change>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM api_key_targets WHERE key_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM api_keys WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound(format!("key {id}")));
        }
        let changes = vec![Change::Key(id.to_owned())];
        record_all(&mut tx, self, &changes).await?;
        tx.commit().await?;
        Ok(changes)
    }

    /// Gives key `id` a new secret hash. With `previous_valid_until`, the replaced hash keeps
    /// working until then; without, it stops at once.
    pub async fn rotate_key(
        &self,
        id: &str,
        new_hash: &str,
        previous_valid_until: Option<i64>,
    ) -> Result<(ApiKey, Vec<Change>)> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE api_keys SET \
               previous_secret_hash = CASE WHEN $1 IS NULL THEN NULL ELSE secret_hash END, \
               previous_valid_until = $1, secret_hash = $2 \
             WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(previous_valid_until)
        .bind(new_hash)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(StoreError::NotFound(format!("active key {id}")));
        }
        self.commit_key_change(tx, id).await
    }

    /// Writes a batch of last-use times in one transaction, never moving one backwards. This
    /// is bookkeeping, not a policy change: it records no change event.
    pub async fn record_last_used(&self, batch: &[(String, i64)]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for (id, at) in batch {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $1 \
                 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
            )
            .bind(*at)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Change events after `after`, oldest first, at most `limit`: the id of each and the change
    /// itself, or `None` for one this replica made (and so applied already).
    pub async fn changes_since(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Option<Change>)>> {
        let rows = sqlx::query(
            "SELECT id, kind, subject, origin FROM changes WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut changes = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            let kind: String = row.try_get("kind")?;
            let subject: String = row.try_get("subject")?;
            let origin: String = row.try_get("origin")?;
            let change = Change::from_event(&kind, &subject)
                .ok_or_else(|| corrupt(format!("change event {id} ({kind})")))?;
            changes.push((id, (origin != *self.origin).then_some(change)));
        }
        Ok(changes)
    }

    /// This replica's id in change events.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The database URL this store was opened with (it may hold a password: never log it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The id of the newest change event (0 when none): replicas poll it.
    pub async fn latest_change(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) FROM changes")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

/// Appends the change event and, on PostgreSQL, announces it to every replica. NOTIFY is
/// transactional: replicas hear of it only once the write is committed.
async fn record(tx: &mut Tx<'_>, store: &Store, change: &Change) -> Result<()> {
    let (kind, subject) = change.kind_and_subject();
    let row = sqlx::query(
        "INSERT INTO changes (kind, subject, created_at, origin) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(kind)
    .bind(subject.as_str())
    .bind(now_unix())
    .bind(&*store.origin)
    .fetch_one(&mut **tx)
    .await?;
    if store.backend == Backend::Postgres {
        let id: i64 = row.try_get(0)?;
        sqlx::query("SELECT 1 FROM pg_notify($1, $2)")
            .bind(NOTIFY_CHANNEL)
            .bind(format!(
                "{}@{}#{id}:{kind}:{subject}",
                store.origin,
                now_unix_ms()
            ))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Records every change event of a write and its audit record: each write path calls this once,
/// just before it commits, on a store made by [`Store::audited`] (without one, a write that
/// changed anything fails and rolls back).
async fn record_all(tx: &mut Tx<'_>, store: &Store, changes: &[Change]) -> Result<()> {
    for change in changes {
        record(tx, store, change).await?;
    }
    match &store.audit {
        Some(entry) => audit::append_for(tx, entry, changes).await,
        // Fail closed: a write path that forgot its audit record is a bug, and its write must
        // not commit unaudited.
        None if !changes.is_empty() => Err(StoreError::Unavailable(
            "a write without an audit record: make it through Store::audited".into(),
        )),
        None => Ok(()),
    }
}

/// Inserts a key and its targets. Every target of a data key must name a registered deployment
/// or project, and a control key's project must exist.
async fn insert_key(tx: &mut Tx<'_>, key: &NewKey) -> Result<()> {
    let (plane, control_project) = match &key.scope {
        KeyScope::Data(targets) => {
            for target in targets.iter() {
                ensure_target_exists(tx, target).await?;
            }
            (Plane::Data, None)
        }
        KeyScope::ControlProject(project) => {
            ensure_project_exists(tx, project).await?;
            (Plane::Control, Some(project.clone()))
        }
        KeyScope::ControlOrganization => (Plane::Control, None),
    };
    sqlx::query(
        "INSERT INTO api_keys (id, principal_id, plane, control_project, name, description, \
               secret_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&key.id)
    .bind(key.principal_id)
    .bind(plane.as_str())
    .bind(control_project)
    .bind(&key.name)
    .bind(&key.description)
    .bind(&key.secret_hash)
    .bind(now_unix())
    .bind(key.expires_at)
    .execute(&mut **tx)
    .await?;
    if let KeyScope::Data(targets) = &key.scope {
        for target in targets.iter() {
            insert_target(tx, &key.id, target).await?;
        }
    }
    Ok(())
}

async fn organization_id(tx: &mut Tx<'_>) -> Result<i64> {
    organization_row(tx, "SELECT id FROM organizations WHERE name = 'default'").await
}

/// The organization's id, as `sql` returns it: an error saying so when there is none yet.
async fn organization_row(tx: &mut Tx<'_>, sql: &str) -> Result<i64> {
    let row = sqlx::query(sql)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| {
            StoreError::Invalid("keyward is not initialized: run `keyward init`".into())
        })?;
    Ok(row.try_get(0)?)
}

async fn ensure_project_exists(tx: &mut Tx<'_>, project: &str) -> Result<()> {
    sqlx::query("SELECT 1 FROM projects WHERE slug = $1")
        .bind(project)
        .fetch_optional(&mut **tx)
        .await?
        .map(|_| ())
        .ok_or_else(|| StoreError::NotFound(format!("project {project}")))
}

async fn ensure_target_exists(tx: &mut Tx<'_>, target: &DataTarget) -> Result<()> {
    match target {
        DataTarget::Project(project) => ensure_project_exists(tx, project).await,
        DataTarget::Deployment(name) => sqlx::query(
            "SELECT 1 FROM deployments d JOIN projects p ON p.id = d.project_id \
             WHERE p.slug = $1 AND d.slug = $2",
        )
        .bind(&name.project)
        .bind(&name.slug)
        .fetch_optional(&mut **tx)
        .await?
        .map(|_| ())
        .ok_or_else(|| StoreError::NotFound(format!("deployment {name}"))),
    }
}

fn target_columns(target: &DataTarget) -> (&str, &str) {
    match target {
        DataTarget::Deployment(name) => (&name.project, &name.slug),
        DataTarget::Project(project) => (project, ""),
    }
}

async fn insert_target(tx: &mut Tx<'_>, key_id: &str, target: &DataTarget) -> Result<()> {
    let (project, deployment) = target_columns(target);
    sqlx::query("INSERT INTO api_key_targets (key_id, project, deployment) VALUES ($1, $2, $3)")
        .bind(key_id)
        .bind(project)
        .bind(deployment)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn corrupt(what: String) -> StoreError {
    StoreError::Unavailable(format!("corrupt row: {what}"))
}

fn deployment_from_row(row: &AnyRow) -> Result<Deployment> {
    let public_auth: i64 = row.try_get("public_auth")?;
    let private_auth: i64 = row.try_get("private_auth")?;
    Ok(Deployment {
        name: DeploymentName {
            project: row.try_get("project")?,
            slug: row.try_get("slug")?,
        },
        model: row.try_get("model")?,
        description: row.try_get("description")?,
        public_auth: public_auth != 0,
        private_auth: private_auth != 0,
        public_endpoint: row.try_get::<i64, _>("public_endpoint")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

fn target_from_row(row: &AnyRow) -> Result<DataTarget> {
    let project: String = row.try_get("project")?;
    let deployment: String = row.try_get("deployment")?;
    Ok(if deployment.is_empty() {
        DataTarget::Project(project)
    } else {
        DataTarget::Deployment(DeploymentName {
            project,
            slug: deployment,
        })
    })
}

fn key_from_row(row: &AnyRow, targets: Vec<DataTarget>) -> Result<ApiKey> {
    let plane: String = row.try_get("plane")?;
    let control_project: Option<String> = row.try_get("control_project")?;
    let scope = match (plane.parse::<Plane>().map_err(corrupt)?, control_project) {
        (Plane::Data, _) => KeyScope::Data(targets.into()),
        (Plane::Control, Some(project)) => KeyScope::ControlProject(project),
        (Plane::Control, None) => KeyScope::ControlOrganization,
    };
    let kind: String = row.try_get("principal_kind")?;
    Ok(ApiKey {
        id: row.try_get("id")?,
        principal: Principal {
            id: row.try_get("principal_id")?,
            kind: kind.parse().map_err(corrupt)?,
            name: row.try_get("principal_name")?,
        },
        scope,
        secret_hash: row.try_get::<String, _>("secret_hash")?.into(),
        previous_secret: match (
            row.try_get::<Option<String>, _>("previous_secret_hash")?,
            row.try_get::<Option<i64>, _>("previous_valid_until")?,
        ) {
            (Some(hash), Some(valid_until)) => Some(PreviousSecret {
                hash: hash.into(),
                valid_until,
            }),
            _ => None,
        },
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        details: Some(Box::new(KeyDetails {
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            created_at: row.try_get("created_at")?,
            last_used_at: row.try_get("last_used_at")?,
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_survives_the_trip_through_an_event() {
        let changes = [
            Change::Key("AAAAAAAAAAAA".into()),
            Change::Deployment("acme/bot".parse().unwrap()),
            Change::Project("acme".into()),
            Change::Principal(42),
            Change::Policy("readers".into()),
            Change::PermissionSet("Custom".into()),
            Change::Workload("w-1".into()),
            Change::Route("*.example.com/acme/chat".into()),
        ];
        for change in changes {
            let (kind, subject) = change.kind_and_subject();
            assert_eq!(Change::from_event(kind, &subject), Some(change.clone()));
            assert_eq!(
                Change::from_payload(&format!("R3pl1ca:{kind}:{subject}")),
                Some(("R3pl1ca", change.clone()))
            );
            let timed = format!("R3pl1ca@1700000000123:{kind}:{subject}");
            assert_eq!(
                Change::from_payload(&timed),
                Some(("R3pl1ca", change.clone()))
            );
            assert_eq!(Change::sent_at_ms(&timed), Some(1_700_000_000_123));
            assert_eq!(Change::change_id(&timed), None);
            let numbered = format!("R3pl1ca@1700000000123#42:{kind}:{subject}");
            assert_eq!(
                Change::from_payload(&numbered),
                Some(("R3pl1ca", change.clone()))
            );
            assert_eq!(Change::sent_at_ms(&numbered), Some(1_700_000_000_123));
            assert_eq!(Change::change_id(&numbered), Some(42));
        }
        assert_eq!(Change::from_payload("nonsense"), None);
        assert_eq!(Change::sent_at_ms("R3pl1ca:key:AAAAAAAAAAAA"), None);
    }

    #[tokio::test]
    async fn a_lost_race_on_a_unique_name_is_a_conflict_not_an_outage() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("k.db").display());
        let store = Store::open(&url, 1).await.unwrap();
        let store = store.audited(crate::audit::Record::local("test", String::new()));
        store.init_organization("owner", None).await.unwrap();
        store.create_project("acme").await.unwrap();
        // Bypass the existence check, as a concurrent writer would.
        let raced: StoreError = sqlx::query(
            "INSERT INTO projects (organization_id, slug, created_at) \
             SELECT id, 'acme', 0 FROM organizations",
        )
        .execute(&store.pool)
        .await
        .unwrap_err()
        .into();
        assert!(matches!(raced, StoreError::Conflict(_)), "{raced:?}");
    }

    #[tokio::test]
    async fn a_write_without_an_audit_record_fails_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("k.db").display());
        let store = Store::open(&url, 1).await.unwrap();
        let refused = store.init_organization("owner", None).await.unwrap_err();
        assert!(refused.to_string().contains("audit"), "{refused}");
        assert_eq!(store.owner().await.unwrap(), None, "rolled back");
        let audited = store.audited(crate::audit::Record::local("init", "seed".into()));
        audited.init_organization("owner", None).await.unwrap();
        assert!(store.create_project("acme").await.is_err());
        assert!(!store.project_exists("acme").await.unwrap());
        let records = store
            .list_audit(&crate::audit::Filter::default(), 10)
            .await
            .unwrap();
        let actions: Vec<&str> = records.iter().map(|e| e.record.action.as_str()).collect();
        assert_eq!(actions, ["init"]);
        assert_eq!(records[0].record.target, "principal:1");
    }

    #[test]
    fn passwords_never_leave_in_urls() {
        let shown = redact_url("postgres://keyward:hunter2@db:5432/keyward");
        assert!(
            !shown.contains("hunter2") && shown.contains("db:5432"),
            "{shown}"
        );
        assert_eq!(redact_url("sqlite://keyward.db"), "sqlite://keyward.db");
        for url in [
            "postgres://keyward@db/keyward?password=hunter2&sslmode=disable",
            "postgres://keyward@db/keyward?sslmode=disable&PASSWORD=hunter2",
            "postgres://db/keyward?sslpassword=hunter2",
            "postgres://keyward:hunter2@db/keyward?password=hunter2",
        ] {
            let shown = redact_url(url);
            assert!(
                !shown.contains("hunter2") && shown.contains("db"),
                "{shown}"
            );
        }
    }

    #[tokio::test]
    async fn connection_errors_never_carry_the_password() {
        for url in [
            "postgres://keyward@127.0.0.1:1/keyward?password=hunter2",
            "postgres://keyward:hunter2@127.0.0.1:1/keyward?sslmode=nonsense",
        ] {
            let err = match Store::open(url, 1).await {
                Ok(_) => panic!("{url}: nothing listens on port 1"),
                Err(err) => err,
            };
            assert!(!err.contains("hunter2"), "{err}");
        }
    }
}
