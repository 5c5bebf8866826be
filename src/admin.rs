//! The admin gRPC API (`keyward.admin.v1.Admin`), used by the CLI.
//!
//! Every call is authenticated by a control-plane token in `authorization: Bearer` metadata,
//! verified exactly like a Check, and authorized by the same model:
//!
//! - a project-scoped control key acts only inside its project, an organization-wide key
//!   (`*`, from `keyward init` or minted by an IAM manager) everywhere;
//! - within that, the bearer needs the action: `deployments.write` / `.read` in the project
//!   for deployments and workload ids, `projects.write` for projects, and `iam.manage` (an
//!   organization-scope rule) for principals, permission sets, policies, `apply`, `export` and
//!   other principals' keys. The owner may do everything. Policy conditions (source IP: the
//!   gRPC peer address; user agent; time window) apply here too.
//!
//! Each write invalidates the caches it affects before it answers, so the very next Check
//! sees it.

use std::sync::Arc;

use std::net::IpAddr;
use tonic::{Request, Response, Status};

use tracing::{debug, info, warn};

use crate::authn::{Authenticated, Authenticator, Undecidable};
use crate::cache::KeyEntry;
use crate::clock::now_unix;
use crate::config;
use crate::declare;
use crate::directory::Directory;
use crate::errors::{
    bad_input, conflict, not_found, permission_denied, precondition, unauthenticated,
};
use crate::iam::{
    self, Action, Conditions, Facts, Grants, PermissionSet, Place, Policy, PrincipalRef, Rule,
    RuleScope, UserAgentMatch,
};
use crate::model::validate_slug;
use crate::model::{ApiKey, DataTarget, Deployment, DeploymentName, KeyDetails, KeyScope, Plane};
use crate::model::{Principal, PrincipalKind};
use crate::pb::admin_server::Admin;
use crate::pb::{self, expiry};
use crate::policy::{self, Bearer};
use crate::services::Services;
use crate::state::{self, Op, State};
use crate::store::{Change, KeyUpdate, NewKey, Store};
use crate::token::{self, Token};
use crate::usage::LastUsed;

/// What `keyward init` creates: the owner and an organization-wide control token, shown once.
pub struct Bootstrap {
    pub principal: String,
    pub key_id: String,
    pub token: String,
}

/// Creates the default organization, its owner and the owner's organization-wide control key.
/// Refuses when the organization exists, so the bootstrap token is minted once.
///
/// Opens no argon2 workers: the one hash it needs runs on one blocking thread.
pub async fn bootstrap(
    store: &Store,
    argon: &config::Argon2,
    owner: &str,
) -> anyhow::Result<Bootstrap> {
    let principal = store
        .init_organization(owner)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let key_id = token::generate_key_id();
    let minted = token::generate(Plane::Control, &key_id);
    let secret_hash = crate::authn::hash_once(argon, &minted.secret)
        .await
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
    store: Store,
    directory: Directory,
    /// Verifies callers' control tokens and hashes new secrets.
    authn: Authenticator,
    last_used: LastUsed,
}

impl AdminService {
    pub fn new(services: &Services) -> Self {
        AdminService {
            store: services.store.clone(),
            directory: services.directory.clone(),
            authn: services.authn.clone(),
            last_used: services.last_used.clone(),
        }
    }

    /// The caller's verified, live control key, its bearer's grants and the request's facts.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or_else(|| {
                unauthenticated("missing control token (authorization: Bearer ik_sdk_…)")
            })?;
        let invalid = || unauthenticated("invalid control token");
        let token = Token::parse(presented).map_err(|_| invalid())?;
        if token.plane != Plane::Control {
            return Err(permission_denied(
                "the admin API needs a control-plane token (ik_sdk_…), not a data-plane key",
            ));
        }
        let now = now_unix();
        let entry = match self
            .authn
            .authenticate(&token, now)
            .await
            .map_err(undecidable)?
        {
            Authenticated::Key(entry) => entry,
            Authenticated::Invalid(_) => return Err(invalid()),
        };
        if policy::validity(entry.key.revoked_at, entry.key.expires_at, now).is_err() {
            return Err(invalid());
        }
        self.last_used.touch(&entry.key.id, now);
        let grants = self.directory.grants(&entry.key).await?;
        Ok(Caller {
            entry,
            grants,
            source_ip: request.remote_addr().map(|a| a.ip()),
            user_agent: request
                .metadata()
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            now,
        })
    }

    async fn invalidate(&self, changes: &[Change]) {
        self.directory.invalidate(changes).await;
    }
}

/// An authenticated admin caller: what [`policy::Bearer`] is made of, owned.
struct Caller {
    entry: Arc<KeyEntry>,
    grants: Arc<Grants>,
    source_ip: Option<IpAddr>,
    user_agent: Option<String>,
    now: i64,
}

impl std::ops::Deref for Caller {
    type Target = ApiKey;
    fn deref(&self) -> &ApiKey {
        &self.entry.key
    }
}

impl Caller {
    fn bearer(&self) -> Bearer<'_> {
        Bearer {
            key: &self.entry.key,
            grants: &self.grants,
            facts: Facts {
                source_ip: self.source_ip,
                user_agent: self.user_agent.as_deref(),
                now: self.now,
            },
        }
    }

    /// [`Bearer::may`], logged when denied.
    fn may(&self, action: Action, place: Place<'_>) -> Result<(), Status> {
        self.bearer().may(action, place).map_err(|denied| {
            debug!(key_id = %self.entry.key.id, ?denied, action = %action, ?place, "admin call denied");
            Status::from(denied)
        })
    }

    /// IAM management needs an organization-wide key and `iam.manage`.
    fn manage_iam(&self) -> Result<(), Status> {
        self.may(Action::IamManage, Place::Organization)
    }
}

/// Logged here: the caller sees only the class of failure.
fn undecidable(e: Undecidable) -> Status {
    warn!(error = %e, "admin request could not be authenticated");
    Status::from(e)
}

fn parse_plane(plane: i32) -> Result<Plane, Status> {
    match pb::Plane::try_from(plane) {
        Ok(pb::Plane::Data) => Ok(Plane::Data),
        Ok(pb::Plane::Control) => Ok(Plane::Control),
        _ => Err(bad_input("plane must be data or control")),
    }
}

fn parse_deployment(project: &str, slug: &str) -> Result<DeploymentName, Status> {
    format!("{project}/{slug}").parse().map_err(bad_input)
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

/// `k` as the admin API shows it. Keys shown here come from the store, so they carry their
/// details; a cached key (none) would show an empty name and no timestamps.
fn key_pb(k: &ApiKey, pending_last_use: Option<i64>) -> pb::Key {
    let none = KeyDetails::default();
    let details = k.details.as_deref().unwrap_or(&none);
    pb::Key {
        id: k.id.clone(),
        plane: match k.plane() {
            Plane::Data => pb::Plane::Data,
            Plane::Control => pb::Plane::Control,
        } as i32,
        name: details.name.clone(),
        description: details.description.clone(),
        principal: k.principal.name.clone(),
        scope: k.scope.to_strings(),
        expires_at: k.expires_at,
        created_at: details.created_at,
        revoked_at: k.revoked_at,
        last_used_at: details.last_used_at.max(pending_last_use),
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
        caller.may(Action::ProjectsWrite, Place::Organization)?;
        let slug = &request.get_ref().slug;
        validate_slug("project", slug).map_err(bad_input)?;
        let (slug, created_at, changes) = self.store.create_project(slug).await?;
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
            .store
            .list_projects()
            .await?
            .into_iter()
            .filter(|(slug, _)| policy::reaches(&caller, Place::Project(slug)).is_ok())
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
        caller.may(Action::DeploymentsWrite, Place::Project(&name.project))?;
        let model = r.model.trim();
        if model.is_empty() || model.len() > 255 {
            return Err(bad_input("model must be 1-255 characters"));
        }
        let (deployment, changes) = self
            .store
            .create_deployment(
                &name,
                model,
                r.public_auth.unwrap_or(true),
                r.private_auth.unwrap_or(true),
            )
            .await?;
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
            caller.may(Action::DeploymentsRead, Place::Project(project))?;
        }
        let deployments = self
            .store
            .list_deployments((!project.is_empty()).then_some(project))
            .await?
            .iter()
            .filter(|d| {
                caller
                    .may(Action::DeploymentsRead, Place::Project(&d.name.project))
                    .is_ok()
            })
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
        caller.may(Action::DeploymentsWrite, Place::Project(&name.project))?;
        if r.public_auth.is_none() && r.private_auth.is_none() {
            return Err(bad_input("nothing to change: give public and/or private"));
        }
        let (deployment, changes) = self
            .store
            .set_deployment_auth(&name, r.public_auth, r.private_auth)
            .await?;
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
        let scope = KeyScope::parse(plane, &r.scope).map_err(bad_input)?;
        let bearer = self.bearer(&caller, &r.bearer).await?;
        caller
            .bearer()
            .may_mint(bearer == caller.principal.id, &scope)?;
        let expires_at = parse_expiry(r.expiry).flatten();
        if expires_at.is_some_and(|at| at <= now_unix()) {
            return Err(bad_input("the expiry is in the past"));
        }
        let id = token::generate_key_id();
        let minted = token::generate(plane, &id);
        let secret_hash = self.authn.hash_secret(&minted.secret).await?;
        let (key, changes) = self
            .store
            .create_key(NewKey {
                id,
                principal_id: bearer,
                scope,
                name: r.name.trim().to_owned(),
                description: r.description.trim().to_owned(),
                secret_hash,
                expires_at,
            })
            .await?;
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
            validate_slug("project", project).map_err(bad_input)?;
        }
        let keys = self
            .store
            .list_keys((!project.is_empty()).then_some(project))
            .await?
            .iter()
            .filter(|k| caller.bearer().may_manage_key(k).is_ok())
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
                .map(|s| s.parse::<DataTarget>().map_err(bad_input))
                .collect()
        };
        let update = KeyUpdate {
            name: r.name.as_ref().map(|n| n.trim().to_owned()),
            description: r.description.as_ref().map(|d| d.trim().to_owned()),
            attach: targets(&r.attach)?,
            detach: targets(&r.detach)?,
            expires_at: parse_expiry(r.expiry),
        };
        caller
            .bearer()
            .may_retarget(update.attach.iter().chain(&update.detach))?;
        let (key, changes) = self.store.update_key(&r.id, update).await?;
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
        let (key, changes) = self.store.revoke_key(id).await?;
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
        if policy::validity(key.revoked_at, key.expires_at, now).is_err() {
            return Err(precondition(format!(
                "key {} is revoked or expired; create a new key instead",
                key.id
            )));
        }
        if r.grace_seconds > MAX_GRACE_SECONDS {
            return Err(bad_input("the grace period is at most 30 days"));
        }
        let grace_until = policy::grace_until(now, r.grace_seconds, key.expires_at);
        let minted = token::generate(key.plane(), &key.id);
        let secret_hash = self.authn.hash_secret(&minted.secret).await?;
        let (key, changes) = self
            .store
            .rotate_key(&key.id, &secret_hash, grace_until)
            .await?;
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
        let changes = self.store.delete_key(id).await?;
        self.invalidate(&changes).await;
        info!(key_id = %id, by = %caller.id, "key deleted");
        Ok(Response::new(pb::DeleteKeyResponse {}))
    }
    async fn add_member(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::Principal>, Status> {
        let caller = self.caller(&request).await?;
        caller.manage_iam()?;
        let email = request.get_ref().email.trim().to_owned();
        iam::validate_email(&email).map_err(bad_input)?;
        self.add_principal(&caller, PrincipalRef::User(email)).await
    }

    async fn create_application(
        &self,
        request: Request<pb::CreateApplicationRequest>,
    ) -> Result<Response<pb::Principal>, Status> {
        let caller = self.caller(&request).await?;
        caller.manage_iam()?;
        let name = request.get_ref().name.trim().to_owned();
        iam::validate_app_name(&name).map_err(bad_input)?;
        self.add_principal(&caller, PrincipalRef::App(name)).await
    }

    async fn list_principals(
        &self,
        request: Request<pb::ListPrincipalsRequest>,
    ) -> Result<Response<pb::ListPrincipalsResponse>, Status> {
        let caller = self.caller(&request).await?;
        caller.manage_iam()?;
        let kind = request.get_ref().kind.as_str();
        let store = &self.store;
        let counts = store.key_counts().await?;
        let principals = store
            .list_principals()
            .await?
            .into_iter()
            .filter(|p| kind.is_empty() || p.kind.as_str() == kind)
            .map(|p| principal_to_pb(&p, counts.get(&p.id).copied().unwrap_or(0)))
            .collect();
        Ok(Response::new(pb::ListPrincipalsResponse { principals }))
    }

    async fn remove_principal(
        &self,
        request: Request<pb::RemovePrincipalRequest>,
    ) -> Result<Response<pb::RemovePrincipalResponse>, Status> {
        let caller = self.caller(&request).await?;
        caller.manage_iam()?;
        let target: PrincipalRef = request.get_ref().principal.parse().map_err(bad_input)?;
        let changes = self
            .store
            .apply_ops(&[Op::RemovePrincipal(target.clone())])
            .await?;
        self.invalidate(&changes).await;
        let keys_deleted = changes
            .iter()
            .filter(|c| matches!(c, Change::Key(_)))
            .count() as i64;
        info!(principal = %target, keys_deleted, by = %caller.id, "principal removed");
        Ok(Response::new(pb::RemovePrincipalResponse { keys_deleted }))
    }

    async fn put_permission_set(
        &self,
        request: Request<pb::PermissionSet>,
    ) -> Result<Response<pb::PermissionSet>, Status> {
        let caller = self.caller(&request).await?;
        caller.manage_iam()?;
        let set = permission_set_from_pb(request.get_ref())?;
        let stored = set.clone();
        self.mutate(&caller, move |state| {
            state.permission_sets.insert(set.name.clone(), set);
            Ok(())
        })
        .await?;
        Ok(Response::new(permission_set_pb(&stored, false)))
    }

    async fn list_permission_sets(
        &self,
        request: Request<pb::ListPermissionSetsRequest>,
    ) -> Result<Response<pb::ListPermissionSetsResponse>, Status> {
        self.caller(&request).await?;
        let state = self.store.load_state().await?;
        let mut permission_sets: Vec<pb::PermissionSet> = iam::BUILTIN_SETS
            .iter()
            .map(|name| {
                let actions = iam::builtin_set(name).unwrap_or_default();
                permission_set_pb(
                    &PermissionSet {
                        name: (*name).to_owned(),
                        description: "built in".into(),
                        actions: actions.into_iter().collect(),
                        includes: Vec::new(),
                    },
                    true,
                )
            })
            .collect();
        permission_sets.extend(
            state
                .permission_sets
                .values()
                .map(|s| permission_set_pb(s, false)),
        );
        Ok(Response::new(pb::ListPermissionSetsResponse {
            permission_sets,
        }))
    }

    async fn delete_permission_set(
        &self,
        request: Request<pb::DeletePermissionSetRequest>,
    ) -> Result<Response<pb::DeletePermissionSetResponse>, Status> {
        let caller = self.caller(&request).await?;
        caller.manage_iam()?;
        let name = request.get_ref().name.clone();
        self.mutate(&caller, |state| {
            state
                .permission_sets
                .remove(&name)
                .ok_or_else(|| not_found(format_args!("permission set {name}")))?;
            let users: Vec<&str> = state
                .policies
                .values()
                .filter(|p| p.rules.iter().any(|r| r.permission_sets.contains(&name)))
                .map(|p| p.name.as_str())
                .collect();
            if !users.is_empty() {
                return Err(precondition(format!(
                    "permission set {name} is used by policies {}",
                    users.join(", ")
                )));
            }
            Ok(())
        })
        .await?;
        Ok(Response::new(pb::DeletePermissionSetResponse {}))
    }

    async fn put_policy(
        &self,
        request: Request<pb::Policy>,
    ) -> Result<Response<pb::Policy>, Status> {
        let caller = self.caller(&request).await?;
        caller.manage_iam()?;
        let policy = policy_from_pb(request.get_ref())?;
        let stored = policy_pb(&policy);
        self.mutate(&caller, move |state| {
            state.policies.insert(policy.name.clone(), policy);
            Ok(())
        })
        .await?;
        Ok(Response::new(stored))
    }

    async fn list_policies(
        &self,
        request: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        let caller = self.caller(&request).await?;
        caller.manage_iam()?;
        let principal = request.get_ref().principal.as_str();
        let state = self.store.load_state().await?;
        let policies = state
            .policies
            .values()
            .filter(|p| {
                principal.is_empty()
                    || p.principal.as_ref().map(ToString::to_string).as_deref() == Some(principal)
            })
            .map(policy_pb)
            .collect();
        Ok(Response::new(pb::ListPoliciesResponse { policies }))
    }

    async fn delete_policy(
        &self,
        request: Request<pb::DeletePolicyRequest>,
    ) -> Result<Response<pb::DeletePolicyResponse>, Status> {
        let caller = self.caller(&request).await?;
        caller.manage_iam()?;
        let name = request.get_ref().name.clone();
        self.mutate(&caller, |state| {
            state
                .policies
                .remove(&name)
                .map(|_| ())
                .ok_or_else(|| not_found(format_args!("policy {name}")))
        })
        .await?;
        Ok(Response::new(pb::DeletePolicyResponse {}))
    }

    async fn register_workload(
        &self,
        request: Request<pb::Workload>,
    ) -> Result<Response<pb::Workload>, Status> {
        let caller = self.caller(&request).await?;
        let w = request.get_ref().clone();
        validate_slug("workload", &w.id).map_err(bad_input)?;
        validate_slug("project", &w.project).map_err(bad_input)?;
        caller.may(Action::DeploymentsWrite, Place::Project(&w.project))?;
        let (id, project) = (w.id.clone(), w.project.clone());
        self.mutate(&caller, move |state| {
            if state.workloads.contains_key(&id) {
                return Err(conflict(format_args!("workload {id}")));
            }
            if !state.projects.contains(&project) {
                return Err(not_found(format_args!("project {project}")));
            }
            state.workloads.insert(id, project);
            Ok(())
        })
        .await?;
        Ok(Response::new(w))
    }

    async fn list_workloads(
        &self,
        request: Request<pb::ListWorkloadsRequest>,
    ) -> Result<Response<pb::ListWorkloadsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let project = request.get_ref().project.as_str();
        let state = self.store.load_state().await?;
        let workloads = state
            .workloads
            .into_iter()
            .filter(|(_, p)| project.is_empty() || p == project)
            .filter(|(_, p)| {
                caller
                    .may(Action::DeploymentsRead, Place::Project(p))
                    .is_ok()
            })
            .map(|(id, project)| pb::Workload { id, project })
            .collect();
        Ok(Response::new(pb::ListWorkloadsResponse { workloads }))
    }

    async fn delete_workload(
        &self,
        request: Request<pb::DeleteWorkloadRequest>,
    ) -> Result<Response<pb::DeleteWorkloadResponse>, Status> {
        let caller = self.caller(&request).await?;
        let id = request.get_ref().id.clone();
        let not_found = || not_found(format_args!("workload {id}"));
        let project = self
            .store
            .workload_project(&id)
            .await?
            .ok_or_else(not_found)?;
        caller.bearer().may_see_workload(&id, &project)?;
        caller.may(Action::DeploymentsWrite, Place::Project(&project))?;
        self.mutate(&caller, |state| {
            state.workloads.remove(&id);
            Ok(())
        })
        .await?;
        Ok(Response::new(pb::DeleteWorkloadResponse {}))
    }

    async fn apply(
        &self,
        request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let caller = self.caller(&request).await?;
        caller.manage_iam()?;
        let r = request.get_ref();
        let file = declare::parse(&r.document).map_err(|e| bad_input(e.to_string()))?;
        let store = &self.store;
        let current = store.load_state().await?;
        let desired = file
            .resolve(&current, r.prune)
            .map_err(|e| bad_input(e.to_string()))?;
        let ops = state::diff(&current, &desired);
        let changes: Vec<String> = ops.iter().map(Op::describe).collect();
        let applied = !r.dry_run && !ops.is_empty();
        if applied {
            let written = store.apply_ops(&ops).await?;
            self.invalidate(&written).await;
            info!(changes = ops.len(), by = %caller.id, "state applied");
        }
        Ok(Response::new(pb::ApplyResponse { changes, applied }))
    }

    async fn export(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<pb::ExportResponse>, Status> {
        let caller = self.caller(&request).await?;
        caller.manage_iam()?;
        let state = self.store.load_state().await?;
        Ok(Response::new(pb::ExportResponse {
            document: declare::render(&state),
        }))
    }
}

impl AdminService {
    /// Loads the state, lets `change` edit it, validates the result as a whole and writes the
    /// difference in one transaction; caches are invalidated before returning.
    async fn mutate(
        &self,
        caller: &Caller,
        change: impl FnOnce(&mut State) -> Result<(), Status>,
    ) -> Result<Vec<Change>, Status> {
        let store = &self.store;
        let current = store.load_state().await?;
        let mut desired = current.clone();
        change(&mut desired)?;
        state::validate(&desired).map_err(|(_, message)| bad_input(message))?;
        let ops = state::diff(&current, &desired);
        let changes = store.apply_ops(&ops).await?;
        self.invalidate(&changes).await;
        for op in &ops {
            info!(change = %op.describe(), by = %caller.id, "iam change");
        }
        Ok(changes)
    }

    /// The principal id a new key is borne by: the caller, or (for IAM managers) another.
    async fn bearer(&self, caller: &Caller, bearer: &str) -> Result<i64, Status> {
        if bearer.is_empty() {
            return Ok(caller.principal.id);
        }
        let r: PrincipalRef = bearer.parse().map_err(bad_input)?;
        let principal = self
            .store
            .principal_by_ref(&r)
            .await?
            .ok_or_else(|| not_found(format_args!("principal {r}")))?;
        caller.bearer().may_bear(&principal)?;
        Ok(principal.id)
    }

    /// Adds a member or an application; an existing one is a conflict.
    async fn add_principal(
        &self,
        caller: &Caller,
        principal: PrincipalRef,
    ) -> Result<Response<pb::Principal>, Status> {
        self.mutate(caller, |state| {
            let (set, name, what) = match &principal {
                PrincipalRef::User(email) => (&mut state.members, email, "member"),
                PrincipalRef::App(name) => (&mut state.applications, name, "application"),
                _ => {
                    return Err(bad_input("only members and applications are added"));
                }
            };
            if !set.insert(name.clone()) {
                return Err(conflict(format_args!("{what} {name}")));
            }
            Ok(())
        })
        .await?;
        self.principal_pb(&principal).await.map(Response::new)
    }

    async fn principal_pb(&self, r: &PrincipalRef) -> Result<pb::Principal, Status> {
        let p = self
            .store
            .principal_by_ref(r)
            .await?
            .ok_or_else(|| not_found(format_args!("principal {r}")))?;
        Ok(principal_to_pb(&p, 0))
    }
}

fn principal_to_pb(p: &Principal, keys: i64) -> pb::Principal {
    let r = match p.kind {
        PrincipalKind::Owner => "owner".to_owned(),
        PrincipalKind::Member => PrincipalRef::User(p.name.clone()).to_string(),
        PrincipalKind::Application => PrincipalRef::App(p.name.clone()).to_string(),
    };
    pb::Principal {
        r#ref: r,
        kind: p.kind.as_str().to_owned(),
        name: p.name.clone(),
        keys,
    }
}

fn permission_set_from_pb(s: &pb::PermissionSet) -> Result<PermissionSet, Status> {
    iam::validate_set_name(&s.name).map_err(bad_input)?;
    let mut actions = s
        .actions
        .iter()
        .map(|a| a.parse::<Action>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad_input)?;
    actions.sort();
    actions.dedup();
    let mut includes = s.includes.clone();
    includes.sort();
    includes.dedup();
    if actions.is_empty() && includes.is_empty() {
        return Err(bad_input(
            "a permission set needs at least one action or include",
        ));
    }
    Ok(PermissionSet {
        name: s.name.clone(),
        description: s.description.trim().to_owned(),
        actions,
        includes,
    })
}

fn permission_set_pb(s: &PermissionSet, builtin: bool) -> pb::PermissionSet {
    pb::PermissionSet {
        name: s.name.clone(),
        description: s.description.clone(),
        actions: s.actions.iter().map(|a| a.as_str().to_owned()).collect(),
        includes: s.includes.clone(),
        builtin,
    }
}

/// Protobuf stops here: a rule is checked exactly like one from an `apply` file.
fn rule_from_pb(r: &pb::Rule) -> Result<Rule, Status> {
    let bad = |m: String| bad_input(m);
    let scope = match (r.projects.is_empty(), r.all_projects, r.organization) {
        (false, false, false) => {
            let mut p = r.projects.clone();
            p.sort();
            p.dedup();
            RuleScope::Projects(p)
        }
        (true, true, false) => RuleScope::AllProjects,
        (true, false, true) => RuleScope::Organization,
        (true, false, false) => {
            return Err(bad(
                "empty rule: give a scope (projects, all_projects or organization)".into(),
            ));
        }
        _ => {
            return Err(bad(
                "a rule has exactly one scope: projects, all_projects or organization".into(),
            ));
        }
    };
    let source_ips = r
        .source_ips
        .iter()
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .map(|n| n.trunc())
                .map_err(|_| bad(format!("invalid CIDR {s:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let user_agents = r
        .user_agents
        .iter()
        .map(|u| UserAgentMatch::new(&u.r#match, &u.pattern).map_err(bad))
        .collect::<Result<Vec<_>, _>>()?;
    let time = |t: &str| -> Result<Option<i64>, Status> {
        if t.is_empty() {
            Ok(None)
        } else {
            iam::parse_time(t).map(Some).map_err(bad)
        }
    };
    let mut permission_sets = r.permission_sets.clone();
    permission_sets.sort();
    permission_sets.dedup();
    let rule = Rule {
        scope,
        permission_sets,
        conditions: Conditions {
            source_ips,
            user_agents,
            not_before: time(&r.not_before)?,
            not_after: time(&r.not_after)?,
        },
    };
    rule.validate().map_err(bad)?;
    Ok(rule)
}

fn policy_from_pb(p: &pb::Policy) -> Result<Policy, Status> {
    iam::validate_policy_name(&p.name).map_err(bad_input)?;
    let principal = if p.principal.is_empty() {
        None
    } else {
        Some(p.principal.parse().map_err(bad_input)?)
    };
    if p.rules.is_empty() {
        return Err(bad_input(format!("policy {} has no rules", p.name)));
    }
    Ok(Policy {
        name: p.name.clone(),
        description: p.description.trim().to_owned(),
        principal,
        rules: p.rules.iter().map(rule_from_pb).collect::<Result<_, _>>()?,
    })
}

pub fn policy_pb(p: &Policy) -> pb::Policy {
    pb::Policy {
        name: p.name.clone(),
        description: p.description.clone(),
        principal: p
            .principal
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        rules: p
            .rules
            .iter()
            .map(|r| pb::Rule {
                projects: match &r.scope {
                    RuleScope::Projects(p) => p.clone(),
                    _ => Vec::new(),
                },
                all_projects: r.scope == RuleScope::AllProjects,
                organization: r.scope == RuleScope::Organization,
                permission_sets: r.permission_sets.clone(),
                source_ips: r
                    .conditions
                    .source_ips
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                user_agents: r
                    .conditions
                    .user_agents
                    .iter()
                    .map(|u| pb::UserAgent {
                        r#match: u.kind().to_owned(),
                        pattern: u.pattern().to_owned(),
                    })
                    .collect(),
                not_before: r
                    .conditions
                    .not_before
                    .map(iam::format_time)
                    .unwrap_or_default(),
                not_after: r
                    .conditions
                    .not_after
                    .map(iam::format_time)
                    .unwrap_or_default(),
            })
            .collect(),
    }
}

impl AdminService {
    /// The key as stored, with this replica's not yet written last use folded in.
    fn key_pb(&self, key: &ApiKey) -> pb::Key {
        key_pb(key, self.last_used.pending(&key.id))
    }

    /// The key `id` if the caller may manage it; otherwise "not found", so a project-scoped
    /// caller learns nothing about other projects' keys.
    async fn visible_key(&self, caller: &Caller, id: &str) -> Result<ApiKey, Status> {
        let key = self
            .store
            .get_key(id)
            .await?
            .ok_or_else(|| not_found(format_args!("key {id}")))?;
        caller.bearer().may_manage_key(&key)?;
        Ok(key)
    }
}
