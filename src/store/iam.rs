//! Persistence of IAM and declarative state: principals, custom permission sets, policies
//! (rules stored as JSON text, identical on SQLite and PostgreSQL), workloads. Every write goes
//! through [`Store::update_state`]: one transaction, one change event per thing changed.

use std::collections::BTreeMap;

use sqlx::{AnyConnection, Row};

use super::{Change, Result, Store, StoreError, Tx, record_all};
use crate::clock::now_unix;
use crate::iam::{self, Grants, PermissionSet, Policy, PrincipalRef, Rule};
use crate::model::{DeploymentName, Principal, PrincipalKind};
use crate::state::{DeploymentSpec, Op, State, WorkloadRef};

#[derive(serde::Serialize, serde::Deserialize)]
struct SetBody {
    actions: Vec<iam::Action>,
    includes: Vec<String>,
}

fn principal_ref(kind: &str, name: String) -> Result<PrincipalRef> {
    match kind {
        "owner" => Ok(PrincipalRef::Owner),
        "member" => Ok(PrincipalRef::User(name)),
        "application" => Ok(PrincipalRef::App(name)),
        other => Err(super::corrupt(format!("principal kind {other}"))),
    }
}

fn json_err(e: serde_json::Error) -> StoreError {
    super::corrupt(format!("json: {e}"))
}

impl Store {
    /// Every principal, owner first, then members and applications by name.
    pub async fn list_principals(&self) -> Result<Vec<Principal>> {
        list_principals(&mut *self.pool.acquire().await?).await
    }
}

async fn list_principals(conn: &mut AnyConnection) -> Result<Vec<Principal>> {
    let rows = sqlx::query(
        "SELECT id, kind, name FROM principals ORDER BY \
             CASE kind WHEN 'owner' THEN 0 WHEN 'member' THEN 1 ELSE 2 END, name",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let kind: String = r.try_get("kind")?;
            Ok(Principal {
                id: r.try_get("id")?,
                kind: kind.parse().map_err(super::corrupt)?,
                name: r.try_get("name")?,
            })
        })
        .collect()
}

impl Store {
    pub async fn principal_by_ref(&self, r: &PrincipalRef) -> Result<Option<Principal>> {
        let mut conn = self.pool.acquire().await?;
        let found = lookup_principal(&mut conn, r).await?;
        Ok(found.map(|(id, kind, name)| Principal { id, kind, name }))
    }

    /// The projects holding a workload of id `id` (ids are unique per project only).
    pub async fn workload_projects(&self, id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT p.slug FROM workloads w JOIN projects p ON p.id = w.project_id \
             WHERE w.id = $1 ORDER BY p.slug",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get(0).map_err(StoreError::from))
            .collect()
    }

    /// The resolved grants of one principal: its policies with their permission sets expanded.
    pub async fn grants_of(&self, principal_id: i64) -> Result<Grants> {
        let rows = sqlx::query(
            "SELECT name, description, rules FROM policies WHERE principal_id = $1 ORDER BY name",
        )
        .bind(principal_id)
        .fetch_all(&self.pool)
        .await?;
        let mut policies = Vec::with_capacity(rows.len());
        for r in &rows {
            let rules: String = r.try_get("rules")?;
            policies.push(Policy {
                name: r.try_get("name")?,
                description: r.try_get("description")?,
                principal: None,
                rules: serde_json::from_str::<Vec<Rule>>(&rules).map_err(json_err)?,
            });
        }
        let custom = permission_sets(&mut *self.pool.acquire().await?).await?;
        let sets = iam::resolve_sets(&custom).map_err(super::corrupt)?;
        Ok(Grants::resolve(&policies, &sets))
    }

    /// Everything `apply` manages, as it is now.
    pub async fn load_state(&self) -> Result<State> {
        load_state(&mut *self.pool.acquire().await?).await
    }

    /// Plans a change against the current state and applies the planned ops, in one
    /// transaction that holds the organization's write lock from its first statement.
    ///
    /// IAM writes are validated against the whole state (permission set includes form no
    /// cycle, policies name existing sets and principals); two writers validating the same
    /// state and writing one after the other could together store what neither would have
    /// been allowed to. Serialized, each plans against what the previous one committed, on
    /// every replica.
    pub async fn update_state<E: From<StoreError>>(
        &self,
        plan: impl FnOnce(&State) -> std::result::Result<Vec<Op>, E>,
    ) -> std::result::Result<(Vec<Op>, Vec<Change>), E> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        let org = lock_organization(&mut tx).await?;
        let current = load_state(&mut tx).await?;
        let ops = plan(&current)?;
        let changes = self.apply_in(&mut tx, org, &ops).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok((ops, changes))
    }

    async fn apply_in(&self, tx: &mut Tx<'_>, org: i64, ops: &[Op]) -> Result<Vec<Change>> {
        let now = now_unix();
        let mut changes = Vec::new();
        for op in ops {
            apply_op(tx, org, now, op, &mut changes).await?;
        }
        // An IAM write's audit summary is what it planned: known only here, inside its
        // transaction.
        let summarized = match self.audit_record() {
            Some(record) if record.summary.is_empty() => {
                let described: Vec<String> = ops.iter().map(Op::describe).collect();
                Some(self.audited(crate::audit::Record {
                    summary: match described.is_empty() {
                        true => "no changes".to_owned(),
                        false => described.join("; "),
                    },
                    ..record.clone()
                }))
            }
            _ => None,
        };
        record_all(tx, summarized.as_ref().unwrap_or(self), &changes).await?;
        Ok(changes)
    }
}

/// Takes the organization row's write lock for the rest of the transaction and returns its
/// id. An `UPDATE` as the first statement serializes writers on both backends: SQLite grants
/// one writer at a time, and a transaction that writes first reads only after it holds the
/// lock, so it sees the previous writer's commit (a deferred `BEGIN` that read first could
/// not upgrade: SQLITE_BUSY); PostgreSQL holds the row lock until commit, and each later
/// statement of a read-committed transaction sees what was committed before it.
pub(super) async fn lock_organization(tx: &mut Tx<'_>) -> Result<i64> {
    let lock = "UPDATE organizations SET name = name WHERE name = 'default' RETURNING id";
    super::organization_row(tx, lock).await
}

async fn permission_sets(conn: &mut AnyConnection) -> Result<Vec<PermissionSet>> {
    let rows = sqlx::query("SELECT name, description, body FROM permission_sets ORDER BY name")
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| {
            let body: String = r.try_get("body")?;
            let body: SetBody = serde_json::from_str(&body).map_err(json_err)?;
            Ok(PermissionSet {
                name: r.try_get("name")?,
                description: r.try_get("description")?,
                actions: body.actions,
                includes: body.includes,
            })
        })
        .collect()
}

async fn load_state(conn: &mut AnyConnection) -> Result<State> {
    let mut state = State::default();
    for project in super::list_projects(conn).await? {
        state.projects.insert(project.slug, project.description);
    }
    for d in super::list_deployments(conn, None).await? {
        state.deployments.insert(
            d.name,
            DeploymentSpec {
                model: d.model,
                description: d.description,
                public_auth: d.public_auth,
                private_auth: d.private_auth,
                public_endpoint: d.public_endpoint,
            },
        );
    }
    let rows =
        sqlx::query("SELECT w.id, p.slug FROM workloads w JOIN projects p ON p.id = w.project_id")
            .fetch_all(&mut *conn)
            .await?;
    for r in &rows {
        state.workloads.insert(WorkloadRef {
            id: r.try_get(0)?,
            project: r.try_get(1)?,
        });
    }
    for p in list_principals(conn).await? {
        match p.kind {
            PrincipalKind::Owner => {}
            PrincipalKind::Member => {
                state.members.insert(p.name);
            }
            PrincipalKind::Application => {
                state.applications.insert(p.name);
            }
        }
    }
    for set in permission_sets(conn).await? {
        state.permission_sets.insert(set.name.clone(), set);
    }
    let rows = sqlx::query(
        "SELECT po.name, po.description, po.rules, pr.kind, pr.name AS principal_name \
             FROM policies po LEFT JOIN principals pr ON pr.id = po.principal_id",
    )
    .fetch_all(&mut *conn)
    .await?;
    for r in &rows {
        let kind: Option<String> = r.try_get("kind")?;
        let principal = match kind {
            Some(kind) => Some(principal_ref(&kind, r.try_get("principal_name")?)?),
            None => None,
        };
        let rules: String = r.try_get("rules")?;
        let policy = Policy {
            name: r.try_get("name")?,
            description: r.try_get("description")?,
            principal,
            rules: serde_json::from_str(&rules).map_err(json_err)?,
        };
        state.policies.insert(policy.name.clone(), policy);
    }
    state.routes = super::routes::list_routes(conn)
        .await?
        .into_iter()
        .collect();
    Ok(state)
}

async fn lookup_principal(
    conn: &mut sqlx::AnyConnection,
    r: &PrincipalRef,
) -> Result<Option<(i64, PrincipalKind, String)>> {
    let (kinds, name): (&[&str], &str) = match r {
        PrincipalRef::Owner => (&["owner"], ""),
        PrincipalRef::User(email) => (&["owner", "member"], email),
        PrincipalRef::App(name) => (&["application"], name),
    };
    let row = sqlx::query(
        "SELECT id, kind, name FROM principals \
         WHERE (kind = $1 OR kind = $2) AND ($3 = '' OR name = $3) ORDER BY id LIMIT 1",
    )
    .bind(kinds[0])
    .bind(kinds.get(1).copied().unwrap_or(kinds[0]))
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| {
        let kind: String = r.try_get("kind")?;
        Ok((
            r.try_get("id")?,
            kind.parse().map_err(super::corrupt)?,
            r.try_get("name")?,
        ))
    })
    .transpose()
}

async fn project_id(tx: &mut Tx<'_>, slug: &str) -> Result<i64> {
    Ok(sqlx::query("SELECT id FROM projects WHERE slug = $1")
        .bind(slug)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("project {slug}")))?
        .try_get(0)?)
}

async fn required_principal(tx: &mut Tx<'_>, r: &PrincipalRef) -> Result<i64> {
    lookup_principal(&mut *tx, r)
        .await?
        .map(|(id, ..)| id)
        .ok_or_else(|| StoreError::NotFound(format!("principal {r}")))
}

async fn add_principal(
    tx: &mut Tx<'_>,
    org: i64,
    now: i64,
    kind: &str,
    name: &str,
    changes: &mut Vec<Change>,
) -> Result<()> {
    // `user:EMAIL` names the owner too when the owner is named by that email: a member of
    // the same name could never be referred to, nor removed.
    let taken = sqlx::query(
        "SELECT kind FROM principals WHERE name = $2 \
         AND (kind = $1 OR (kind = 'owner' AND $1 = 'member'))",
    )
    .bind(kind)
    .bind(name)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(row) = taken {
        let holder: String = row.try_get(0)?;
        return Err(StoreError::Conflict(format!("{holder} {name}")));
    }
    let id: i64 = sqlx::query(
        "INSERT INTO principals (organization_id, kind, name, created_at) \
         VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(org)
    .bind(kind)
    .bind(name)
    .bind(now)
    .fetch_one(&mut **tx)
    .await?
    .try_get(0)?;
    changes.push(Change::Principal(id));
    Ok(())
}

async fn apply_op(
    tx: &mut Tx<'_>,
    org: i64,
    now: i64,
    op: &Op,
    changes: &mut Vec<Change>,
) -> Result<()> {
    match op {
        Op::CreateProject(slug) => {
            sqlx::query(
                "INSERT INTO projects (organization_id, slug, created_at) VALUES ($1, $2, $3)",
            )
            .bind(org)
            .bind(slug)
            .bind(now)
            .execute(&mut **tx)
            .await?;
            changes.push(Change::Project(slug.clone()));
        }
        Op::PutDeployment { name, spec, create } => {
            put_deployment(tx, now, name, spec, *create).await?;
            changes.push(Change::Deployment(name.clone()));
        }
        Op::DescribeProject { slug, description } => {
            sqlx::query("UPDATE projects SET description = $1 WHERE slug = $2")
                .bind(description)
                .bind(slug)
                .execute(&mut **tx)
                .await?;
            changes.push(Change::Project(slug.clone()));
        }
        Op::AddWorkload(w) => {
            // Only this project's ids are looked at: another project's workload of the same
            // id is none of this caller's business, and does not stand in the way.
            let pid = project_id(tx, &w.project).await?;
            sqlx::query("INSERT INTO workloads (id, project_id, created_at) VALUES ($1, $2, $3)")
                .bind(&w.id)
                .bind(pid)
                .bind(now)
                .execute(&mut **tx)
                .await?;
            changes.push(Change::Workload(w.id.clone()));
        }
        Op::RemoveDeployment(name) => remove_deployment(tx, name, changes).await?,
        Op::RemoveProject(slug) => remove_project(tx, slug, changes).await?,
        Op::AddMember(email) => add_principal(tx, org, now, "member", email, changes).await?,
        Op::AddApplication(name) => {
            add_principal(tx, org, now, "application", name, changes).await?
        }
        Op::PutPermissionSet { set, create } => {
            let body = serde_json::to_string(&SetBody {
                actions: set.actions.clone(),
                includes: set.includes.clone(),
            })
            .map_err(json_err)?;
            let sql = if *create {
                "INSERT INTO permission_sets (organization_id, name, description, body, created_at) \
                 VALUES ($1, $2, $3, $4, $5)"
            } else {
                "UPDATE permission_sets SET description = $3, body = $4 \
                 WHERE organization_id = $1 AND name = $2 AND $5 = $5"
            };
            sqlx::query(sql)
                .bind(org)
                .bind(&set.name)
                .bind(&set.description)
                .bind(body)
                .bind(now)
                .execute(&mut **tx)
                .await?;
            changes.push(Change::PermissionSet(set.name.clone()));
        }
        Op::PutPolicy { policy, create } => {
            let principal_id = match &policy.principal {
                Some(r) => Some(required_principal(tx, r).await?),
                None => None,
            };
            let rules = serde_json::to_string(&policy.rules).map_err(json_err)?;
            let sql = if *create {
                "INSERT INTO policies (organization_id, name, description, principal_id, rules, \
                   created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)"
            } else {
                "UPDATE policies SET description = $3, principal_id = $4, rules = $5, \
                   updated_at = $6 WHERE organization_id = $1 AND name = $2"
            };
            sqlx::query(sql)
                .bind(org)
                .bind(&policy.name)
                .bind(&policy.description)
                .bind(principal_id)
                .bind(rules)
                .bind(now)
                .execute(&mut **tx)
                .await?;
            changes.push(Change::Policy(policy.name.clone()));
        }
        Op::RemovePolicy(name) => {
            sqlx::query("DELETE FROM policies WHERE name = $1")
                .bind(name)
                .execute(&mut **tx)
                .await?;
            changes.push(Change::Policy(name.clone()));
        }
        Op::RemovePermissionSet(name) => {
            sqlx::query("DELETE FROM permission_sets WHERE name = $1")
                .bind(name)
                .execute(&mut **tx)
                .await?;
            changes.push(Change::PermissionSet(name.clone()));
        }
        Op::RemoveWorkload(w) => {
            let pid = project_id(tx, &w.project).await?;
            sqlx::query("DELETE FROM workloads WHERE id = $1 AND project_id = $2")
                .bind(&w.id)
                .bind(pid)
                .execute(&mut **tx)
                .await?;
            changes.push(Change::Workload(w.id.clone()));
        }
        Op::RemovePrincipal(r) => remove_principal(tx, r, changes).await?,
        Op::PutRoute { key, spec, create } => {
            super::routes::put_route_tx(tx, org, now, key, spec, *create, changes).await?
        }
        Op::RemoveRoute(key) => super::routes::remove_route_tx(tx, key, changes).await?,
    }
    Ok(())
}

async fn put_deployment(
    tx: &mut Tx<'_>,
    now: i64,
    name: &DeploymentName,
    spec: &DeploymentSpec,
    create: bool,
) -> Result<()> {
    let pid = project_id(tx, &name.project).await?;
    let sql = if create {
        "INSERT INTO deployments (project_id, slug, model, public_auth, private_auth, created_at, \
           description, public_endpoint) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    } else {
        "UPDATE deployments SET model = $3, public_auth = $4, private_auth = $5, \
           description = $7, public_endpoint = $8 \
         WHERE project_id = $1 AND slug = $2 AND $6 = $6"
    };
    sqlx::query(sql)
        .bind(pid)
        .bind(&name.slug)
        .bind(&spec.model)
        .bind(i64::from(spec.public_auth))
        .bind(i64::from(spec.private_auth))
        .bind(now)
        .bind(&spec.description)
        .bind(i64::from(spec.public_endpoint))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Deletes a deployment and every key's attachment to it, in the caller's transaction: each
/// such key is reloaded on its next request (on every replica, from the returned changes), so
/// it is denied there from then on. `PROJECT/*` attachments are the project's, and stay.
async fn remove_deployment(
    tx: &mut Tx<'_>,
    name: &DeploymentName,
    changes: &mut Vec<Change>,
) -> Result<()> {
    let pid = project_id(tx, &name.project).await?;
    let attached = sqlx::query(
        "SELECT key_id FROM api_key_targets WHERE project = $1 AND deployment = $2 ORDER BY key_id",
    )
    .bind(&name.project)
    .bind(&name.slug)
    .fetch_all(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM api_key_targets WHERE project = $1 AND deployment = $2")
        .bind(&name.project)
        .bind(&name.slug)
        .execute(&mut **tx)
        .await?;
    let deleted = sqlx::query("DELETE FROM deployments WHERE project_id = $1 AND slug = $2")
        .bind(pid)
        .bind(&name.slug)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if deleted == 0 {
        return Err(StoreError::NotFound(format!("deployment {name}")));
    }
    for row in &attached {
        changes.push(Change::Key(row.try_get(0)?));
    }
    changes.push(Change::Deployment(name.clone()));
    Ok(())
}

/// Deletes a project nothing refers to. Keys name projects by slug: a key left scoped to a
/// deleted project would reach a later project of the same slug, so a project with keys is
/// refused (the caller's state validation refuses deployments, workloads, routes and rules).
async fn remove_project(tx: &mut Tx<'_>, slug: &str, changes: &mut Vec<Change>) -> Result<()> {
    let pid = project_id(tx, slug).await?;
    let keys: i64 = sqlx::query(
        "SELECT COUNT(*) FROM api_keys k WHERE k.control_project = $1 \
           OR EXISTS (SELECT 1 FROM api_key_targets t WHERE t.key_id = k.id AND t.project = $1)",
    )
    .bind(slug)
    .fetch_one(&mut **tx)
    .await?
    .try_get(0)?;
    if keys > 0 {
        return Err(StoreError::Invalid(format!(
            "project {slug} still has {keys} key(s) scoped to it: delete them first \
             (keyward keys list --project {slug})"
        )));
    }
    sqlx::query("DELETE FROM projects WHERE id = $1")
        .bind(pid)
        .execute(&mut **tx)
        .await?;
    changes.push(Change::Project(slug.to_owned()));
    Ok(())
}

/// Removing a principal deletes its keys in the same transaction, so they fail on the very
/// next request (the caches drop them on the returned changes), and detaches its policies.
async fn remove_principal(
    tx: &mut Tx<'_>,
    r: &PrincipalRef,
    changes: &mut Vec<Change>,
) -> Result<()> {
    if *r == PrincipalRef::Owner {
        return Err(StoreError::Invalid(
            "the organization's owner cannot be removed".into(),
        ));
    }
    let Some((id, kind, _)) = lookup_principal(&mut *tx, r).await? else {
        return Err(StoreError::NotFound(format!("principal {r}")));
    };
    if kind == PrincipalKind::Owner {
        return Err(StoreError::Invalid(
            "the organization's owner cannot be removed".into(),
        ));
    }
    let keys = sqlx::query("SELECT id FROM api_keys WHERE principal_id = $1")
        .bind(id)
        .fetch_all(&mut **tx)
        .await?;
    for k in &keys {
        let key_id: String = k.try_get(0)?;
        sqlx::query("DELETE FROM api_key_targets WHERE key_id = $1")
            .bind(&key_id)
            .execute(&mut **tx)
            .await?;
        changes.push(Change::Key(key_id));
    }
    sqlx::query("DELETE FROM api_keys WHERE principal_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    let policies = sqlx::query("SELECT name FROM policies WHERE principal_id = $1")
        .bind(id)
        .fetch_all(&mut **tx)
        .await?;
    for p in &policies {
        changes.push(Change::Policy(p.try_get(0)?));
    }
    sqlx::query("UPDATE policies SET principal_id = NULL WHERE principal_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM principals WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    changes.push(Change::Principal(id));
    Ok(())
}

/// Counts for `keyward members list` / `apps list`: keys per principal id.
pub type KeyCounts = BTreeMap<i64, i64>;

impl Store {
    pub async fn key_counts(&self) -> Result<KeyCounts> {
        let rows = sqlx::query("SELECT principal_id, COUNT(*) FROM api_keys GROUP BY principal_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }
}
