//! Persistence of the route table ([`crate::routes`]): one row per (host, path prefix). Every
//! write records a [`Change::Route`], so every replica drops its in-memory table.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Change, Result, Store, StoreError, Tx, organization_id, record_all};
use crate::clock::now_unix;
use crate::model::{Endpoint, Plane};
use crate::routes::{self, RouteKey, RouteSpec, RouteTable, RouteTarget};

fn route_from_row(row: &AnyRow) -> Result<(RouteKey, RouteSpec)> {
    let host: String = row.try_get("host")?;
    let path_prefix: String = row.try_get("path_prefix")?;
    let plane: String = row.try_get("plane")?;
    let endpoint: String = row.try_get("endpoint")?;
    let deployment: Option<String> = row.try_get("deployment")?;
    let project: Option<String> = row.try_get("project")?;
    let corrupt = |what: String| super::corrupt(format!("route {host}{path_prefix}: {what}"));
    let target = match (plane.parse::<Plane>().map_err(&corrupt)?, deployment) {
        (Plane::Data, Some(name)) => RouteTarget::Deployment(name.parse().map_err(&corrupt)?),
        (Plane::Control, None) => RouteTarget::Control(project),
        _ => return Err(corrupt("plane and deployment disagree".into())),
    };
    Ok((
        RouteKey {
            host: host.clone(),
            path_prefix: path_prefix.clone(),
        },
        RouteSpec {
            endpoint: endpoint.parse::<Endpoint>().map_err(&corrupt)?,
            target,
        },
    ))
}

impl Store {
    /// Every route entry, by host then prefix.
    pub async fn list_routes(&self) -> Result<Vec<(RouteKey, RouteSpec)>> {
        list_routes(&mut *self.pool.acquire().await?).await
    }

    /// The whole table, indexed for the Check path.
    pub async fn route_table(&self) -> Result<RouteTable> {
        Ok(RouteTable::new(self.list_routes().await?))
    }

    /// Adds an entry (`replace`: or overwrites the one with the same host and prefix).
    pub async fn put_route(
        &self,
        key: &RouteKey,
        spec: &RouteSpec,
        replace: bool,
    ) -> Result<Vec<Change>> {
        let mut tx = self.pool.begin().await?;
        let org = organization_id(&mut tx).await?;
        let exists = route_exists(&mut tx, key).await?;
        if exists && !replace {
            return Err(StoreError::Conflict(format!("route {key}")));
        }
        let mut changes = Vec::new();
        put_route_tx(&mut tx, org, now_unix(), key, spec, !exists, &mut changes).await?;
        record_all(&mut tx, self, &changes).await?;
        tx.commit().await?;
        Ok(changes)
    }

    pub async fn remove_route(&self, key: &RouteKey) -> Result<Vec<Change>> {
        let mut tx = self.pool.begin().await?;
        if !route_exists(&mut tx, key).await? {
            return Err(StoreError::NotFound(format!("route {key}")));
        }
        let mut changes = Vec::new();
        remove_route_tx(&mut tx, key, &mut changes).await?;
        record_all(&mut tx, self, &changes).await?;
        tx.commit().await?;
        Ok(changes)
    }
}

async fn route_exists(tx: &mut Tx<'_>, key: &RouteKey) -> Result<bool> {
    Ok(
        sqlx::query("SELECT 1 FROM routes WHERE host = $1 AND path_prefix = $2")
            .bind(&key.host)
            .bind(&key.path_prefix)
            .fetch_optional(&mut **tx)
            .await?
            .is_some(),
    )
}

/// Inserts (`create`) or overwrites one entry; its deployment or pinned project must exist.
pub(super) async fn put_route_tx(
    tx: &mut Tx<'_>,
    org: i64,
    now: i64,
    key: &RouteKey,
    spec: &RouteSpec,
    create: bool,
    changes: &mut Vec<Change>,
) -> Result<()> {
    routes::validate_target(&spec.target).map_err(StoreError::Invalid)?;
    let (deployment, project) = match &spec.target {
        RouteTarget::Deployment(name) => {
            super::ensure_target_exists(tx, &crate::model::DataTarget::Deployment(name.clone()))
                .await?;
            (Some(name.to_string()), None)
        }
        RouteTarget::Control(Some(project)) => {
            super::ensure_project_exists(tx, project).await?;
            (None, Some(project.as_str()))
        }
        RouteTarget::Control(None) => (None, None),
    };
    let sql = if create {
        "INSERT INTO routes (organization_id, host, path_prefix, plane, endpoint, deployment, \
           project, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    } else {
        "UPDATE routes SET plane = $4, endpoint = $5, deployment = $6, project = $7 \
         WHERE organization_id = $1 AND host = $2 AND path_prefix = $3 AND $8 = $8"
    };
    sqlx::query(sql)
        .bind(org)
        .bind(&key.host)
        .bind(&key.path_prefix)
        .bind(spec.plane().as_str())
        .bind(routes::endpoint_str(spec.endpoint))
        .bind(deployment)
        .bind(project)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    changes.push(Change::Route(key.to_string()));
    Ok(())
}

pub(super) async fn remove_route_tx(
    tx: &mut Tx<'_>,
    key: &RouteKey,
    changes: &mut Vec<Change>,
) -> Result<()> {
    sqlx::query("DELETE FROM routes WHERE host = $1 AND path_prefix = $2")
        .bind(&key.host)
        .bind(&key.path_prefix)
        .execute(&mut **tx)
        .await?;
    changes.push(Change::Route(key.to_string()));
    Ok(())
}

/// Every route, on `conn` (inside a transaction for [`Store::update_state`]).
pub(super) async fn list_routes(
    conn: &mut sqlx::AnyConnection,
) -> Result<Vec<(RouteKey, RouteSpec)>> {
    let rows = sqlx::query(
        "SELECT host, path_prefix, plane, endpoint, deployment, project FROM routes \
         ORDER BY host, path_prefix",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(route_from_row).collect()
}
