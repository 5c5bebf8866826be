//! The admin gRPC API (`keyward.admin.v1.Admin`), used by the CLI.
//!
//! Every call is authenticated by a control-plane token in `authorization: Bearer` metadata,
//! verified exactly like a Check. A project-scoped control key acts only inside its project;
//! the organization-wide key from `keyward init` acts everywhere. Until IAM policies exist only
//! the owner's keys may manage anything. Each write invalidates the caches it affects before
//! it answers, so the very next Check sees it.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::authn::{Authenticated, Authenticator, Undecidable};
use crate::model::{
    ApiKey, DataTarget, Deployment, DeploymentName, KeyScope, Plane, PrincipalKind, validate_slug,
};
use crate::pb::admin_server::Admin;
use crate::pb::{self, expiry};
use crate::store::{Change, KeyUpdate, NewKey, StoreError, now_unix};
use crate::token::{self, Token};

/// What `keyward init` creates: the owner and an organization-wide control token, shown once.
pub struct Bootstrap {
    pub principal: String,
    pub key_id: String,
    pub token: String,
}

/// Creates the default organization, its owner and the owner's organization-wide control key.
/// Refuses when the organization exists, so the bootstrap token is minted once.
pub async fn bootstrap(authn: &Authenticator, owner: &str) -> anyhow::Result<Bootstrap> {
    let store = authn.store();
    let principal = store
        .init_organization(owner)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let key_id = token::generate_key_id();
    let minted = token::generate(Plane::Control, &key_id);
    let secret_hash = authn
        .hash_secret(&minted.secret)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    store
        .create_key(NewKey {
            id: key_id.clone(),
            principal_id: principal.id,
            scope: KeyScope::ControlOrganization,
            name: "owner bootstrap".into(),
            description: "organization-wide control key created by keyward init".into(),
            secret_hash,
            expires_at: None,
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Bootstrap {
        principal: principal.name,
        key_id,
        token: minted.token,
    })
}

/// Rotation grace periods are capped: an old secret should not linger for months.
const MAX_GRACE_SECONDS: u64 = 30 * 24 * 3600;

#[derive(Clone)]
pub struct AdminService {
    authn: Authenticator,
}

impl AdminService {
    pub fn new(authn: Authenticator) -> Self {
        AdminService { authn }
    }

    /// The caller's verified, live control key.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Arc<ApiKey>, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or_else(|| {
                Status::unauthenticated("missing control token (authorization: Bearer ik_sdk_…)")
            })?;
        let invalid = || Status::unauthenticated("invalid control token");
        let token = Token::parse(presented).map_err(|_| invalid())?;
        if token.plane != Plane::Control {
            return Err(Status::permission_denied(
                "the admin API needs a control-plane token (ik_sdk_…), not a data-plane key",
            ));
        }
        let now = now_unix();
        let key = match self
            .authn
            .authenticate(&token, now)
            .await
            .map_err(undecidable)?
        {
            Authenticated::Key(key) => key,
            Authenticated::Invalid(_) => return Err(invalid()),
        };
        if key.revoked_at.is_some() || key.is_expired(now) {
            return Err(invalid());
        }
        self.authn.last_used().touch(&key.id, now);
        if key.principal.kind != PrincipalKind::Owner {
            return Err(Status::permission_denied(format!(
                "{} {} has no IAM permission to manage keyward",
                key.principal.kind.as_str(),
                key.principal.name
            )));
        }
        Ok(key)
    }

    async fn invalidate(&self, changes: &[Change]) {
        for change in changes {
            self.authn.caches().apply(change).await;
        }
    }
}

/// A control key scoped to one project may act only inside it.
fn ensure_project_access(caller: &ApiKey, project: &str) -> Result<(), Status> {
    match &caller.scope {
        KeyScope::ControlOrganization => Ok(()),
        KeyScope::ControlProject(p) if p == project => Ok(()),
        _ => Err(Status::permission_denied(format!(
            "this control key is not scoped to project {project}"
        ))),
    }
}

fn ensure_organization_access(caller: &ApiKey) -> Result<(), Status> {
    match caller.scope {
        KeyScope::ControlOrganization => Ok(()),
        _ => Err(Status::permission_denied(
            "this control key is scoped to one project; organization-wide changes need an organization key",
        )),
    }
}

/// A key is manageable by the caller when every project its scope reaches is.
fn ensure_key_access(caller: &ApiKey, key: &ApiKey) -> Result<(), Status> {
    let within = match (&caller.scope, &key.scope) {
        (KeyScope::ControlOrganization, _) => true,
        (KeyScope::ControlProject(p), KeyScope::Data(targets)) => {
            targets.iter().all(|t| t.project() == p)
        }
        (KeyScope::ControlProject(p), KeyScope::ControlProject(q)) => p == q,
        _ => false,
    };
    if within {
        Ok(())
    } else {
        Err(Status::not_found(format!("key {} not found", key.id)))
    }
}

fn undecidable(e: Undecidable) -> Status {
    warn!(error = %e, "admin request could not be authenticated");
    match e {
        Undecidable::Overloaded => Status::resource_exhausted("keyward is overloaded"),
        _ => Status::unavailable("storage unavailable"),
    }
}

fn store_error(e: StoreError) -> Status {
    match e {
        StoreError::NotFound(what) => Status::not_found(format!("{what} not found")),
        StoreError::Conflict(what) => Status::already_exists(format!("{what} already exists")),
        StoreError::Invalid(message) => Status::invalid_argument(message),
        StoreError::Unavailable(detail) => {
            warn!(%detail, "storage error in the admin API");
            Status::unavailable("storage unavailable")
        }
    }
}

fn parse_plane(plane: i32) -> Result<Plane, Status> {
    match pb::Plane::try_from(plane) {
        Ok(pb::Plane::Data) => Ok(Plane::Data),
        Ok(pb::Plane::Control) => Ok(Plane::Control),
        _ => Err(Status::invalid_argument("plane must be data or control")),
    }
}

fn parse_deployment(project: &str, slug: &str) -> Result<DeploymentName, Status> {
    format!("{project}/{slug}")
        .parse()
        .map_err(Status::invalid_argument)
}

/// `None`: no change requested; `Some(None)`: never expires.
fn parse_expiry(expiry: Option<pb::Expiry>) -> Option<Option<i64>> {
    match expiry.and_then(|e| e.kind) {
        None => None,
        Some(expiry::Kind::Never(_)) => Some(None),
        Some(expiry::Kind::At(at)) => Some(Some(at)),
    }
}

fn deployment_pb(d: &Deployment) -> pb::Deployment {
    pb::Deployment {
        project: d.name.project.clone(),
        slug: d.name.slug.clone(),
        model: d.model.clone(),
        public_auth: d.public_auth,
        private_auth: d.private_auth,
        created_at: d.created_at,
    }
}

fn key_pb(k: &ApiKey, pending_last_use: Option<i64>) -> pb::Key {
    pb::Key {
        id: k.id.clone(),
        plane: match k.plane() {
            Plane::Data => pb::Plane::Data,
            Plane::Control => pb::Plane::Control,
        } as i32,
        name: k.name.clone(),
        description: k.description.clone(),
        principal: k.principal.name.clone(),
        scope: k.scope.to_strings(),
        expires_at: k.expires_at,
        created_at: k.created_at,
        revoked_at: k.revoked_at,
        last_used_at: k.last_used_at.max(pending_last_use),
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let caller = self.caller(&request).await?;
        Ok(Response::new(pb::WhoAmIResponse {
            key_id: caller.id.clone(),
            principal: caller.principal.name.clone(),
            principal_kind: caller.principal.kind.as_str().to_owned(),
            scope: caller.scope.to_strings().join(","),
        }))
    }

    async fn create_project(
        &self,
        request: Request<pb::CreateProjectRequest>,
    ) -> Result<Response<pb::Project>, Status> {
        let caller = self.caller(&request).await?;
        ensure_organization_access(&caller)?;
        let slug = &request.get_ref().slug;
        validate_slug("project", slug).map_err(Status::invalid_argument)?;
        let (slug, created_at, changes) = self
            .authn
            .store()
            .create_project(slug)
            .await
            .map_err(store_error)?;
        self.invalidate(&changes).await;
        info!(project = %slug, by = %caller.id, "project created");
        Ok(Response::new(pb::Project { slug, created_at }))
    }

    async fn list_projects(
        &self,
        request: Request<pb::ListProjectsRequest>,
    ) -> Result<Response<pb::ListProjectsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let projects = self
            .authn
            .store()
            .list_projects()
            .await
            .map_err(store_error)?
            .into_iter()
            .filter(|(slug, _)| ensure_project_access(&caller, slug).is_ok())
            .map(|(slug, created_at)| pb::Project { slug, created_at })
            .collect();
        Ok(Response::new(pb::ListProjectsResponse { projects }))
    }

    async fn create_deployment(
        &self,
        request: Request<pb::CreateDeploymentRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.get_ref();
        let name = parse_deployment(&r.project, &r.slug)?;
        ensure_project_access(&caller, &name.project)?;
        let model = r.model.trim();
        if model.is_empty() || model.len() > 255 {
            return Err(Status::invalid_argument("model must be 1-255 characters"));
        }
        let (deployment, changes) = self
            .authn
            .store()
            .create_deployment(
                &name,
                model,
                r.public_auth.unwrap_or(true),
                r.private_auth.unwrap_or(true),
            )
            .await
            .map_err(store_error)?;
        self.invalidate(&changes).await;
        info!(deployment = %name, by = %caller.id, "deployment created");
        Ok(Response::new(deployment_pb(&deployment)))
    }

    async fn list_deployments(
        &self,
        request: Request<pb::ListDeploymentsRequest>,
    ) -> Result<Response<pb::ListDeploymentsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let project = request.get_ref().project.as_str();
        if !project.is_empty() {
            ensure_project_access(&caller, project)?;
        }
        let deployments = self
            .authn
            .store()
            .list_deployments((!project.is_empty()).then_some(project))
            .await
            .map_err(store_error)?
            .iter()
            .filter(|d| ensure_project_access(&caller, &d.name.project).is_ok())
            .map(deployment_pb)
            .collect();
        Ok(Response::new(pb::ListDeploymentsResponse { deployments }))
    }

    async fn set_deployment_auth(
        &self,
        request: Request<pb::SetDeploymentAuthRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.get_ref();
        let name = parse_deployment(&r.project, &r.slug)?;
        ensure_project_access(&caller, &name.project)?;
        if r.public_auth.is_none() && r.private_auth.is_none() {
            return Err(Status::invalid_argument(
                "nothing to change: give public and/or private",
            ));
        }
        let (deployment, changes) = self
            .authn
            .store()
            .set_deployment_auth(&name, r.public_auth, r.private_auth)
            .await
            .map_err(store_error)?;
        self.invalidate(&changes).await;
        info!(deployment = %name, public_auth = deployment.public_auth,
              private_auth = deployment.private_auth, by = %caller.id, "deployment auth changed");
        Ok(Response::new(deployment_pb(&deployment)))
    }

    async fn create_key(
        &self,
        request: Request<pb::CreateKeyRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.get_ref();
        let plane = parse_plane(r.plane)?;
        let scope = KeyScope::parse(plane, &r.scope).map_err(Status::invalid_argument)?;
        match &scope {
            KeyScope::Data(targets) => {
                for target in targets {
                    ensure_project_access(&caller, target.project())?;
                }
            }
            KeyScope::ControlProject(project) => ensure_project_access(&caller, project)?,
            KeyScope::ControlOrganization => ensure_organization_access(&caller)?,
        }
        let expires_at = parse_expiry(r.expiry).flatten();
        if expires_at.is_some_and(|at| at <= now_unix()) {
            return Err(Status::invalid_argument("the expiry is in the past"));
        }
        let id = token::generate_key_id();
        let minted = token::generate(plane, &id);
        let authn = self.authn.clone();
        let secret = minted.secret.clone();
        let secret_hash = tokio::task::spawn_blocking(move || authn.hash_secret(&secret))
            .await
            .map_err(|_| Status::internal("hashing failed"))?
            .map_err(|_| Status::internal("hashing failed"))?;
        let (key, changes) = self
            .authn
            .store()
            .create_key(NewKey {
                id,
                principal_id: caller.principal.id,
                scope,
                name: r.name.trim().to_owned(),
                description: r.description.trim().to_owned(),
                secret_hash,
                expires_at,
            })
            .await
            .map_err(store_error)?;
        self.invalidate(&changes).await;
        info!(key_id = %key.id, plane = %plane, by = %caller.id, "key created");
        Ok(Response::new(pb::CreateKeyResponse {
            key: Some(self.key_pb(&key)),
            token: minted.token,
        }))
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let caller = self.caller(&request).await?;
        let project = request.get_ref().project.as_str();
        if !project.is_empty() {
            validate_slug("project", project).map_err(Status::invalid_argument)?;
        }
        let keys = self
            .authn
            .store()
            .list_keys((!project.is_empty()).then_some(project))
            .await
            .map_err(store_error)?
            .iter()
            .filter(|k| ensure_key_access(&caller, k).is_ok())
            .map(|k| self.key_pb(k))
            .collect();
        Ok(Response::new(pb::ListKeysResponse { keys }))
    }

    async fn get_key(
        &self,
        request: Request<pb::GetKeyRequest>,
    ) -> Result<Response<pb::Key>, Status> {
        let caller = self.caller(&request).await?;
        let key = self.visible_key(&caller, &request.get_ref().id).await?;
        Ok(Response::new(self.key_pb(&key)))
    }

    async fn update_key(
        &self,
        request: Request<pb::UpdateKeyRequest>,
    ) -> Result<Response<pb::Key>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.get_ref();
        self.visible_key(&caller, &r.id).await?;
        let targets = |list: &[String]| -> Result<Vec<DataTarget>, Status> {
            list.iter()
                .map(|s| s.parse::<DataTarget>().map_err(Status::invalid_argument))
                .collect()
        };
        let update = KeyUpdate {
            name: r.name.as_ref().map(|n| n.trim().to_owned()),
            description: r.description.as_ref().map(|d| d.trim().to_owned()),
            attach: targets(&r.attach)?,
            detach: targets(&r.detach)?,
            expires_at: parse_expiry(r.expiry),
        };
        for target in update.attach.iter().chain(&update.detach) {
            ensure_project_access(&caller, target.project())?;
        }
        let (key, changes) = self
            .authn
            .store()
            .update_key(&r.id, update)
            .await
            .map_err(store_error)?;
        self.invalidate(&changes).await;
        info!(key_id = %key.id, by = %caller.id, "key updated");
        Ok(Response::new(self.key_pb(&key)))
    }

    async fn revoke_key(
        &self,
        request: Request<pb::RevokeKeyRequest>,
    ) -> Result<Response<pb::Key>, Status> {
        let caller = self.caller(&request).await?;
        let id = &request.get_ref().id;
        self.visible_key(&caller, id).await?;
        let (key, changes) = self
            .authn
            .store()
            .revoke_key(id)
            .await
            .map_err(store_error)?;
        self.invalidate(&changes).await;
        info!(key_id = %key.id, by = %caller.id, "key revoked");
        Ok(Response::new(self.key_pb(&key)))
    }

    async fn rotate_key(
        &self,
        request: Request<pb::RotateKeyRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.get_ref();
        let key = self.visible_key(&caller, &r.id).await?;
        let now = now_unix();
        if key.revoked_at.is_some() || key.is_expired(now) {
            return Err(Status::failed_precondition(format!(
                "key {} is revoked or expired; create a new key instead",
                key.id
            )));
        }
        if r.grace_seconds > MAX_GRACE_SECONDS {
            return Err(Status::invalid_argument(
                "the grace period is at most 30 days",
            ));
        }
        let grace_until = (r.grace_seconds > 0).then(|| {
            let until = now + r.grace_seconds as i64;
            key.expires_at.map_or(until, |expiry| until.min(expiry))
        });
        let minted = token::generate(key.plane(), &key.id);
        let authn = self.authn.clone();
        let secret = minted.secret.clone();
        let secret_hash = tokio::task::spawn_blocking(move || authn.hash_secret(&secret))
            .await
            .map_err(|_| Status::internal("hashing failed"))?
            .map_err(|_| Status::internal("hashing failed"))?;
        let (key, changes) = self
            .authn
            .store()
            .rotate_key(&key.id, &secret_hash, grace_until)
            .await
            .map_err(store_error)?;
        self.invalidate(&changes).await;
        info!(key_id = %key.id, grace_seconds = r.grace_seconds, by = %caller.id, "key rotated");
        Ok(Response::new(pb::CreateKeyResponse {
            key: Some(self.key_pb(&key)),
            token: minted.token,
        }))
    }

    async fn delete_key(
        &self,
        request: Request<pb::DeleteKeyRequest>,
    ) -> Result<Response<pb::DeleteKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let id = &request.get_ref().id;
        self.visible_key(&caller, id).await?;
        let changes = self
            .authn
            .store()
            .delete_key(id)
            .await
            .map_err(store_error)?;
        self.invalidate(&changes).await;
        info!(key_id = %id, by = %caller.id, "key deleted");
        Ok(Response::new(pb::DeleteKeyResponse {}))
    }
}

impl AdminService {
    /// The key as stored, with this replica's not yet written last use folded in.
    fn key_pb(&self, key: &ApiKey) -> pb::Key {
        key_pb(key, self.authn.last_used().pending(&key.id))
    }

    /// The key `id` if the caller may manage it; otherwise "not found", so a project-scoped
    /// caller learns nothing about other projects' keys.
    async fn visible_key(&self, caller: &ApiKey, id: &str) -> Result<ApiKey, Status> {
        let key = self
            .authn
            .store()
            .get_key(id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| Status::not_found(format!("key {id} not found")))?;
        ensure_key_access(caller, &key)?;
        Ok(key)
    }
}
