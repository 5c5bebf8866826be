//! The admin gRPC API (`keyward.admin.v1.Admin`), used by the CLI.
//!
//! Every call is authenticated by a control-plane token in `authorization: Bearer` metadata,
//! verified exactly like a Check, and authorized by the same model:
//!
//! - a project-scoped control key acts only inside its project, an organization-wide key
//!   (`*`, from `keyward init` or minted by an IAM manager) everywhere;
//! - within that, the bearer needs the action: `deployments.write` / `.read` in the project
//!   for deployments (updating and deleting them, removing and restoring their public endpoint)
//!   and workload ids, `projects.write` for projects (creating, updating, deleting),
//!   `routes.manage` for the route table, and `iam.manage` (an organization-scope rule) for
//!   principals, permission sets, policies, `apply`, `export` and other principals' keys;
//!   `deployments.auth` to turn a deployment's authentication off (or to restore a public
//!   endpoint whose authentication is off); `iam.read` to `explain` a decision. The owner may
//!   do everything, and only the owner mints,
//!   changes or deletes owner-borne keys. Policy conditions (source IP: the gRPC peer address;
//!   user agent; time window) apply here too.
//!
//! Each write invalidates the caches it affects before it answers, so the very next Check
//! sees it, and appends its audit record in its own transaction ([`Store::audited`]): who
//! (principal, key id), what (the call, its target, a summary), when and from where (the peer
//! address). Calls refused by an access rule are audited too, on their own; calls without a
//! valid control token are not stored (anyone can send them) but logged.

mod convert;

pub(crate) use convert::{rule_summary, set_condition_args};

use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tonic::{Request, Response, Status};

use tracing::{debug, info, warn};

use crate::audit::{self, Outcome};
use crate::authn::{Authenticated, Authenticator, Undecidable};
use crate::cache::KeyEntry;
use crate::clock::now_unix;
use crate::config;
use crate::credential;
use crate::declare;
use crate::directory::Directory;
use crate::errors::{
    bad_input, conflict, not_found, permission_denied, precondition, take_denial, unauthenticated,
};
use crate::explain::Recorder;
use crate::iam::{self, Action, Facts, Grants, PermissionSet, Place, Policy, PrincipalRef};
use crate::model::{ApiKey, DataTarget, DeploymentName, KeyScope, Plane};
use crate::model::{validate_description, validate_name, validate_slug};
use crate::pb;
use crate::pb::admin_server::Admin;
use crate::policy::{self, Authentication, Bearer, Decision, Grant, Route, Target};
use crate::services::Services;
use crate::state::{self, Op, State, WorkloadRef};
use crate::store::{self, Change, KeyCursor, KeyUpdate, NewKey, Store};
use crate::token::{self, Token};
use crate::usage::LastUsed;

/// What `keyward init` creates: the owner and an organization-wide control token, shown once.
pub struct Bootstrap {
    pub principal: String,
    pub key_id: String,
    pub token: String,
}

/// An organization-wide control key for the owner: the key to store and its token.
///
/// Opens no argon2 workers: the one hash it needs runs on one blocking thread.
async fn owner_key(argon: &config::Argon2, name: &str) -> anyhow::Result<(NewKey, String)> {
    let key_id = token::generate_key_id();
    let minted = token::generate(Plane::Control, &key_id);
    let secret_hash = crate::authn::hash_once(argon, &minted.secret)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let key = NewKey {
        id: key_id,
        principal_id: 0,
        scope: KeyScope::ControlOrganization,
        name: name.into(),
        description: format!("organization-wide control key created by keyward init ({name})"),
        secret_hash,
        expires_at: None,
    };
    Ok((key, minted.token))
}

/// Creates the default organization, its owner and the owner's organization-wide control key,
/// in one transaction. Refuses when the organization exists, so the bootstrap token is minted
/// once.
pub async fn bootstrap(
    store: &Store,
    argon: &config::Argon2,
    owner: &str,
) -> anyhow::Result<Bootstrap> {
    let (key, token) = owner_key(argon, "owner bootstrap").await?;
    let key_id = key.id.clone();
    let record = audit::Record::local(
        "init",
        format!("organization created, owner {owner}, owner key {key_id}"),
    );
    let principal = store
        .audited(record)
        .init_organization(owner, Some(key))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Bootstrap {
        principal: principal.name,
        key_id,
        token,
    })
}

/// `keyward init --recover`: mints another organization-wide key for the owner of an
/// initialized store, for an owner whose keys are lost, revoked or deleted. Whoever can write
/// to the store owns keyward anyway; this needs nothing more. Leaves an audit line (key id,
/// never the token) and a key change event.
pub async fn recover_owner(store: &Store, argon: &config::Argon2) -> anyhow::Result<Bootstrap> {
    let (key, token) = owner_key(argon, "owner recovery").await?;
    let key_id = key.id.clone();
    let record = audit::Record::local("init_recover", format!("owner key {key_id} minted"));
    let principal = store
        .audited(record)
        .recover_owner(key)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    warn!(key_id = %key_id, principal = %principal.name,
          "owner key recovered with keyward init --recover");
    Ok(Bootstrap {
        principal: principal.name,
        key_id,
        token,
    })
}

/// List pages (`keys list`, `audit list`): the default and the largest page size.
const DEFAULT_PAGE_SIZE: u32 = 100;
const MAX_PAGE_SIZE: u32 = 1000;

/// A list request's `page_size`: 0 asks for the default.
fn page_size(requested: u32) -> Result<u32, Status> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n > MAX_PAGE_SIZE => Err(bad_input(format!(
            "page_size must be at most {MAX_PAGE_SIZE}"
        ))),
        n => Ok(n),
    }
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
    async fn caller<T>(&self, request: &Request<T>, call: &'static str) -> Result<Caller, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(credential::bearer)
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
            call,
            peer: request.remote_addr(),
            source_ip: request.remote_addr().map(|a| a.ip()),
            user_agent: request
                .metadata()
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            now,
        })
    }

    /// The one write path of single-row writes: the store writes, the caches the write names
    /// are invalidated before the caller hears of it (so the very next Check sees it), then
    /// the write is logged with who made it.
    async fn write<T>(
        &self,
        caller: &Caller,
        done: &str,
        subject: &(dyn Display + Sync),
        write: impl Future<Output = store::Result<(T, Vec<Change>)>>,
    ) -> Result<T, Status> {
        let (value, changes) = write.await?;
        self.directory.invalidate(&changes).await;
        info!(%subject, by = %caller.id, "{done}");
        Ok(value)
    }

    /// The same for IAM state: plans against the current state and writes the difference, in one serialized
    /// transaction ([`Store::update_state`]); caches are invalidated and each change logged
    /// before returning.
    async fn write_state(
        &self,
        caller: &Caller,
        plan: impl FnOnce(&State) -> Result<Vec<Op>, Status>,
    ) -> Result<(Vec<Op>, Vec<Change>), Status> {
        let (ops, changes) = self.audited(caller, "").update_state(plan).await?;
        self.directory.invalidate(&changes).await;
        for op in &ops {
            info!(change = %op.describe(), by = %caller.id, "iam change");
        }
        Ok((ops, changes))
    }
}

impl AdminService {
    /// The store whose writes append the caller's audit record, in their own transaction: the
    /// call, the caller, `summary` (empty for IAM state writes: the store describes the ops it
    /// planned) and the targets the write changes.
    fn audited(&self, caller: &Caller, summary: impl Into<String>) -> Store {
        self.store
            .audited(caller.audit_record(String::new(), summary.into(), Outcome::Ok))
    }

    /// Audits the call's outcome when an access rule refused it (the refusal has no write to
    /// ride on), and hands the result back without the mark that said so.
    async fn audit_denial<T>(
        &self,
        caller: &Caller,
        target: String,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        let mut status = match result {
            Ok(value) => return Ok(value),
            Err(status) => status,
        };
        if take_denial(&mut status) {
            let record = caller.audit_record(target, status.message().to_owned(), Outcome::Denied);
            if let Err(error) = self.store.append_audit(&record).await {
                warn!(%error, call = caller.call, by = %caller.id, "cannot audit a denied admin call");
            }
        }
        Err(status)
    }
}

/// An authenticated admin caller: what [`policy::Bearer`] is made of, owned.
struct Caller {
    entry: Arc<KeyEntry>,
    grants: Arc<Grants>,
    /// The admin call (`create_key`), as audited.
    call: &'static str,
    /// The client's address as this server saw it, as audited.
    peer: Option<SocketAddr>,
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
    /// An audit record of this call by this caller, now.
    fn audit_record(&self, target: String, summary: String, outcome: Outcome) -> audit::Record {
        audit::Record {
            at: now_unix(),
            principal: principal_ref(&self.principal).to_string(),
            key_id: self.id.clone(),
            peer: self
                .peer
                .map_or_else(|| "unknown".to_owned(), |a| a.to_string()),
            action: self.call.to_owned(),
            target,
            summary,
            outcome,
        }
    }

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

    /// The route table, listing included, needs an organization-wide key and `routes.manage`
    /// (or `iam.manage`): an entry decides which deployment requests reach in any project.
    fn manage_routes(&self) -> Result<(), Status> {
        self.may(Action::RoutesManage, Place::Organization)
    }
}

/// Logged here: the caller sees only the class of failure.
fn undecidable(e: Undecidable) -> Status {
    warn!(error = %e, "admin request could not be authenticated");
    Status::from(e)
}

/// The gRPC service: every call authenticates its caller first, then runs the call of the
/// same name on [`AdminService`] with the caller and the message.
macro_rules! admin_calls {
    ($($name:ident($request:ident) -> $response:ident;)*) => {
        #[tonic::async_trait]
        impl Admin for AdminService {
            $(
                async fn $name(
                    &self,
                    request: Request<pb::$request>,
                ) -> Result<Response<pb::$response>, Status> {
                    let caller = self.caller(&request, stringify!($name)).await?;
                    let target = convert::AuditTarget::audit_target(request.get_ref());
                    let result = AdminService::$name(self, &caller, request.into_inner()).await;
                    self.audit_denial(&caller, target, result).await.map(Response::new)
                }
            )*
        }
    };
}

admin_calls! {
    who_am_i(WhoAmIRequest) -> WhoAmIResponse;
    create_project(CreateProjectRequest) -> Project;
    list_projects(ListProjectsRequest) -> ListProjectsResponse;
    create_deployment(CreateDeploymentRequest) -> Deployment;
    list_deployments(ListDeploymentsRequest) -> ListDeploymentsResponse;
    set_deployment_auth(SetDeploymentAuthRequest) -> Deployment;
    create_key(CreateKeyRequest) -> CreateKeyResponse;
    list_keys(ListKeysRequest) -> ListKeysResponse;
    get_key(GetKeyRequest) -> Key;
    update_key(UpdateKeyRequest) -> Key;
    revoke_key(RevokeKeyRequest) -> Key;
    rotate_key(RotateKeyRequest) -> CreateKeyResponse;
    delete_key(DeleteKeyRequest) -> DeleteKeyResponse;
    add_member(AddMemberRequest) -> Principal;
    create_application(CreateApplicationRequest) -> Principal;
    list_principals(ListPrincipalsRequest) -> ListPrincipalsResponse;
    remove_principal(RemovePrincipalRequest) -> RemovePrincipalResponse;
    put_permission_set(PermissionSet) -> PermissionSet;
    list_permission_sets(ListPermissionSetsRequest) -> ListPermissionSetsResponse;
    delete_permission_set(DeletePermissionSetRequest) -> DeletePermissionSetResponse;
    put_policy(Policy) -> Policy;
    list_policies(ListPoliciesRequest) -> ListPoliciesResponse;
    delete_policy(DeletePolicyRequest) -> DeletePolicyResponse;
    register_workload(Workload) -> Workload;
    list_workloads(ListWorkloadsRequest) -> ListWorkloadsResponse;
    delete_workload(DeleteWorkloadRequest) -> DeleteWorkloadResponse;
    put_route(PutRouteRequest) -> Route;
    list_routes(ListRoutesRequest) -> ListRoutesResponse;
    delete_route(DeleteRouteRequest) -> DeleteRouteResponse;
    apply(ApplyRequest) -> ApplyResponse;
    export(ExportRequest) -> ExportResponse;
    update_deployment(UpdateDeploymentRequest) -> Deployment;
    set_public_endpoint(SetPublicEndpointRequest) -> Deployment;
    delete_deployment(DeleteDeploymentRequest) -> DeleteDeploymentResponse;
    update_project(UpdateProjectRequest) -> Project;
    delete_project(DeleteProjectRequest) -> DeleteProjectResponse;
    // ---- audit ----
    list_audit(ListAuditRequest) -> ListAuditResponse;
    explain(ExplainRequest) -> ExplainResponse;
}

/// What an admin call answers (the gRPC layer wraps it in a `Response`).
type Reply<T> = Result<T, Status>;

/// The calls, each saying what it authorizes, what it changes and what that invalidates.
impl AdminService {
    async fn who_am_i(&self, caller: &Caller, _: pb::WhoAmIRequest) -> Reply<pb::WhoAmIResponse> {
        Ok(pb::WhoAmIResponse {
            key_id: caller.id.clone(),
            principal: caller.principal.name.clone(),
            principal_kind: caller.principal.kind.as_str().to_owned(),
            scope: caller.scope.to_strings().join(","),
        })
    }

    async fn create_project(
        &self,
        caller: &Caller,
        r: pb::CreateProjectRequest,
    ) -> Reply<pb::Project> {
        caller.may(Action::ProjectsWrite, Place::Organization)?;
        let slug = &r.slug;
        validate_slug("project", slug).map_err(bad_input)?;
        let (slug, created_at) = self
            .write(caller, "project created", slug, async {
                let (slug, created_at, changes) = self
                    .audited(caller, format!("project {slug} created"))
                    .create_project(slug)
                    .await?;
                Ok(((slug, created_at), changes))
            })
            .await?;
        Ok(pb::Project {
            slug,
            created_at,
            description: String::new(),
        })
    }

    async fn list_projects(
        &self,
        caller: &Caller,
        _: pb::ListProjectsRequest,
    ) -> Reply<pb::ListProjectsResponse> {
        let projects = self
            .store
            .list_projects()
            .await?
            .into_iter()
            .filter(|p| policy::reaches(caller, Place::Project(&p.slug)).is_ok())
            .map(|p| pb::Project::from(&p))
            .collect();
        Ok(pb::ListProjectsResponse { projects })
    }

    async fn create_deployment(
        &self,
        caller: &Caller,
        r: pb::CreateDeploymentRequest,
    ) -> Reply<pb::Deployment> {
        let name = convert::deployment_name(&r.project, &r.slug)?;
        caller
            .bearer()
            .may_set_auth(&name.project, r.public_auth, r.private_auth)?;
        let model = convert::model(&r.model)?;
        let public_auth = r.public_auth.unwrap_or(true);
        let private_auth = r.private_auth.unwrap_or(true);
        let deployment = self
            .write(
                caller,
                "deployment created",
                &name,
                self.audited(
                    caller,
                    format!(
                        "deployment {name} created (model {model}, public_auth {}, private_auth {})",
                        on_off(public_auth),
                        on_off(private_auth)
                    ),
                )
                .create_deployment(&name, model, public_auth, private_auth),
            )
            .await?;
        Ok(pb::Deployment::from(&deployment))
    }

    async fn list_deployments(
        &self,
        caller: &Caller,
        r: pb::ListDeploymentsRequest,
    ) -> Reply<pb::ListDeploymentsResponse> {
        let project = r.project.as_str();
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
            .map(pb::Deployment::from)
            .collect();
        Ok(pb::ListDeploymentsResponse { deployments })
    }

    async fn set_deployment_auth(
        &self,
        caller: &Caller,
        r: pb::SetDeploymentAuthRequest,
    ) -> Reply<pb::Deployment> {
        let name = convert::deployment_name(&r.project, &r.slug)?;
        caller
            .bearer()
            .may_set_auth(&name.project, r.public_auth, r.private_auth)?;
        if r.public_auth.is_none() && r.private_auth.is_none() {
            return Err(bad_input("nothing to change: give public and/or private"));
        }
        let deployment = self
            .write(
                caller,
                "deployment auth changed",
                &name,
                self.audited(caller, auth_change(&name, r.public_auth, r.private_auth))
                    .set_deployment_auth(&name, r.public_auth, r.private_auth),
            )
            .await?;
        debug!(deployment = %name, public_auth = deployment.public_auth,
               private_auth = deployment.private_auth, "deployment auth now");
        Ok(pb::Deployment::from(&deployment))
    }

    async fn create_key(
        &self,
        caller: &Caller,
        r: pb::CreateKeyRequest,
    ) -> Reply<pb::CreateKeyResponse> {
        let plane = convert::plane(r.plane)?;
        let scope = KeyScope::parse(plane, &r.scope).map_err(bad_input)?;
        let (name, description) = (r.name.trim(), r.description.trim());
        validate_name("key name", name).map_err(bad_input)?;
        validate_description("key description", description).map_err(bad_input)?;
        let bearer = self.bearer(caller, &r.bearer).await?;
        caller
            .bearer()
            .may_mint(bearer == caller.principal.id, &scope)?;
        let expires_at = convert::expiry(r.expiry).flatten();
        policy::may_set_expiry(None, None, expires_at, now_unix())?;
        let id = token::generate_key_id();
        let minted = token::generate(plane, &id);
        let secret_hash = self
            .authn
            .hash_secret(&minted.secret, &caller.principal.id.to_string())
            .await?;
        let summary = audit::key_summary(
            plane.as_str(),
            name,
            if r.bearer.is_empty() {
                "the caller"
            } else {
                &r.bearer
            },
            &scope.to_strings(),
            expires_at,
        );
        let new = NewKey {
            id: id.clone(),
            principal_id: bearer,
            scope,
            name: name.to_owned(),
            description: description.to_owned(),
            secret_hash,
            expires_at,
        };
        let key = self
            .write(
                caller,
                "key created",
                &id,
                self.audited(caller, format!("created {summary}"))
                    .create_key(new),
            )
            .await?;
        Ok(pb::CreateKeyResponse {
            key: Some(self.key_pb(&key)),
            token: minted.token,
        })
    }

    async fn list_keys(
        &self,
        caller: &Caller,
        r: pb::ListKeysRequest,
    ) -> Reply<pb::ListKeysResponse> {
        let project = r.project.as_str();
        if !project.is_empty() {
            validate_slug("project", project).map_err(bad_input)?;
        }
        let page_size = page_size(r.page_size)?;
        let after = match r.page_token.as_str() {
            "" => None,
            token => Some(KeyCursor::parse(token).ok_or_else(|| bad_input("invalid page_token"))?),
        };
        let filter = convert::key_filter(&r)?;
        let now = now_unix();
        let (keys, next) = self
            .store
            .list_keys_page(
                (!project.is_empty()).then_some(project),
                after.as_ref(),
                page_size as usize,
                |k| {
                    caller.bearer().may_manage_key(k).is_ok()
                        && filter.admits(k, self.last_used_at(k), now)
                },
            )
            .await?;
        let keys = keys.iter().map(|k| self.key_pb(k)).collect();
        let next_page_token = next.map(|c| c.token()).unwrap_or_default();
        Ok(pb::ListKeysResponse {
            keys,
            next_page_token,
        })
    }

    async fn get_key(&self, caller: &Caller, r: pb::GetKeyRequest) -> Reply<pb::Key> {
        let key = self.visible_key(caller, &r.id).await?;
        Ok(self.key_pb(&key))
    }

    async fn update_key(&self, caller: &Caller, r: pb::UpdateKeyRequest) -> Reply<pb::Key> {
        let key = self.changeable_key(caller, &r.id).await?;
        let targets = |list: &[String]| -> Result<Vec<DataTarget>, Status> {
            list.iter()
                .map(|s| s.parse::<DataTarget>().map_err(bad_input))
                .collect()
        };
        let name = r.name.as_deref().map(str::trim);
        let description = r.description.as_deref().map(str::trim);
        if let Some(name) = name {
            validate_name("key name", name).map_err(bad_input)?;
        }
        if let Some(description) = description {
            validate_description("key description", description).map_err(bad_input)?;
        }
        let update = KeyUpdate {
            name: name.map(str::to_owned),
            description: description.map(str::to_owned),
            attach: targets(&r.attach)?,
            detach: targets(&r.detach)?,
            expires_at: convert::expiry(r.expiry),
        };
        caller.bearer().may_retarget(
            key.principal.id == caller.principal.id,
            &update.attach,
            &update.detach,
        )?;
        if let Some(expires_at) = update.expires_at {
            policy::may_set_expiry(key.revoked_at, key.expires_at, expires_at, now_unix())?;
        }
        let key = self
            .write(
                caller,
                "key updated",
                &r.id,
                self.audited(caller, key_update_summary(&update))
                    .update_key(&r.id, update),
            )
            .await?;
        Ok(self.key_pb(&key))
    }

    async fn revoke_key(&self, caller: &Caller, r: pb::RevokeKeyRequest) -> Reply<pb::Key> {
        let id = &r.id;
        self.changeable_key(caller, id).await?;
        let key = self
            .write(
                caller,
                "key revoked",
                id,
                self.audited(caller, "revoked").revoke_key(id),
            )
            .await?;
        Ok(self.key_pb(&key))
    }

    async fn rotate_key(
        &self,
        caller: &Caller,
        r: pb::RotateKeyRequest,
    ) -> Reply<pb::CreateKeyResponse> {
        let key = self.changeable_key(caller, &r.id).await?;
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
        let secret_hash = self
            .authn
            .hash_secret(&minted.secret, &caller.principal.id.to_string())
            .await?;
        let key = self
            .write(
                caller,
                "key rotated",
                &key.id,
                self.audited(
                    caller,
                    match grace_until {
                        Some(until) => format!(
                            "rotated; the previous secret works until {}",
                            audit::format_time(until)
                        ),
                        None => "rotated; the previous secret stopped at once".to_owned(),
                    },
                )
                .rotate_key(&key.id, &secret_hash, grace_until),
            )
            .await?;
        Ok(pb::CreateKeyResponse {
            key: Some(self.key_pb(&key)),
            token: minted.token,
        })
    }

    async fn delete_key(
        &self,
        caller: &Caller,
        r: pb::DeleteKeyRequest,
    ) -> Reply<pb::DeleteKeyResponse> {
        let id = &r.id;
        self.changeable_key(caller, id).await?;
        self.write(caller, "key deleted", id, async {
            Ok(((), self.audited(caller, "deleted").delete_key(id).await?))
        })
        .await?;
        Ok(pb::DeleteKeyResponse {})
    }
    async fn add_member(&self, caller: &Caller, r: pb::AddMemberRequest) -> Reply<pb::Principal> {
        caller.manage_iam()?;
        let email = r.email.trim().to_owned();
        iam::validate_email(&email).map_err(bad_input)?;
        self.add_principal(caller, PrincipalRef::User(email)).await
    }

    async fn create_application(
        &self,
        caller: &Caller,
        r: pb::CreateApplicationRequest,
    ) -> Reply<pb::Principal> {
        caller.manage_iam()?;
        let name = r.name.trim().to_owned();
        iam::validate_app_name(&name).map_err(bad_input)?;
        self.add_principal(caller, PrincipalRef::App(name)).await
    }

    async fn list_principals(
        &self,
        caller: &Caller,
        r: pb::ListPrincipalsRequest,
    ) -> Reply<pb::ListPrincipalsResponse> {
        caller.manage_iam()?;
        let kind = r.kind.as_str();
        let store = &self.store;
        let counts = store.key_counts().await?;
        let principals = store
            .list_principals()
            .await?
            .into_iter()
            .filter(|p| kind.is_empty() || p.kind.as_str() == kind)
            .map(|p| convert::principal(&p, counts.get(&p.id).copied().unwrap_or(0)))
            .collect();
        Ok(pb::ListPrincipalsResponse { principals })
    }

    async fn remove_principal(
        &self,
        caller: &Caller,
        r: pb::RemovePrincipalRequest,
    ) -> Reply<pb::RemovePrincipalResponse> {
        caller.manage_iam()?;
        let target: PrincipalRef = r.principal.parse().map_err(bad_input)?;
        let (_, changes) = self
            .write_state(caller, |_| Ok(vec![Op::RemovePrincipal(target)]))
            .await?;
        let keys_deleted = changes
            .iter()
            .filter(|c| matches!(c, Change::Key(_)))
            .count() as i64;
        Ok(pb::RemovePrincipalResponse { keys_deleted })
    }

    async fn put_permission_set(
        &self,
        caller: &Caller,
        r: pb::PermissionSet,
    ) -> Reply<pb::PermissionSet> {
        caller.manage_iam()?;
        let set = PermissionSet::try_from(&r)?;
        let stored = set.clone();
        self.mutate(caller, move |state| {
            state.permission_sets.insert(set.name.clone(), set);
            Ok(())
        })
        .await?;
        Ok(convert::permission_set(&stored, false))
    }

    async fn list_permission_sets(
        &self,
        caller: &Caller,
        _: pb::ListPermissionSetsRequest,
    ) -> Reply<pb::ListPermissionSetsResponse> {
        caller.manage_iam()?;
        let state = self.store.load_state().await?;
        let mut permission_sets: Vec<pb::PermissionSet> = iam::BUILTIN_SETS
            .iter()
            .map(|name| {
                let actions = iam::builtin_set(name).unwrap_or_default();
                convert::permission_set(
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
                .map(|s| convert::permission_set(s, false)),
        );
        Ok(pb::ListPermissionSetsResponse { permission_sets })
    }

    async fn delete_permission_set(
        &self,
        caller: &Caller,
        r: pb::DeletePermissionSetRequest,
    ) -> Reply<pb::DeletePermissionSetResponse> {
        caller.manage_iam()?;
        let name = r.name.clone();
        self.mutate(caller, |state| {
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
        Ok(pb::DeletePermissionSetResponse {})
    }

    async fn put_policy(&self, caller: &Caller, r: pb::Policy) -> Reply<pb::Policy> {
        caller.manage_iam()?;
        let policy = Policy::try_from(&r)?;
        let stored = pb::Policy::from(&policy);
        self.mutate(caller, move |state| {
            state.policies.insert(policy.name.clone(), policy);
            Ok(())
        })
        .await?;
        Ok(stored)
    }

    async fn list_policies(
        &self,
        caller: &Caller,
        r: pb::ListPoliciesRequest,
    ) -> Reply<pb::ListPoliciesResponse> {
        caller.manage_iam()?;
        let principal = r.principal.as_str();
        let state = self.store.load_state().await?;
        let policies = state
            .policies
            .values()
            .filter(|p| {
                principal.is_empty()
                    || p.principal.as_ref().map(ToString::to_string).as_deref() == Some(principal)
            })
            .map(pb::Policy::from)
            .collect();
        Ok(pb::ListPoliciesResponse { policies })
    }

    async fn delete_policy(
        &self,
        caller: &Caller,
        r: pb::DeletePolicyRequest,
    ) -> Reply<pb::DeletePolicyResponse> {
        caller.manage_iam()?;
        let name = r.name.clone();
        self.mutate(caller, |state| {
            state
                .policies
                .remove(&name)
                .map(|_| ())
                .ok_or_else(|| not_found(format_args!("policy {name}")))
        })
        .await?;
        Ok(pb::DeletePolicyResponse {})
    }

    /// Registers a workload id in one project. Ids are unique per project only: another
    /// project's workload of the same id neither stands in the way nor is revealed.
    async fn register_workload(&self, caller: &Caller, r: pb::Workload) -> Reply<pb::Workload> {
        let w = r;
        validate_slug("workload", &w.id).map_err(bad_input)?;
        validate_slug("project", &w.project).map_err(bad_input)?;
        caller.may(Action::DeploymentsWrite, Place::Project(&w.project))?;
        let workload = WorkloadRef {
            project: w.project.clone(),
            id: w.id.clone(),
        };
        self.mutate(caller, move |state| {
            if !state.projects.contains_key(&workload.project) {
                return Err(not_found(format_args!("project {}", workload.project)));
            }
            if !state.workloads.insert(workload.clone()) {
                return Err(conflict(format_args!("workload {workload}")));
            }
            Ok(())
        })
        .await?;
        Ok(w)
    }

    async fn list_workloads(
        &self,
        caller: &Caller,
        r: pb::ListWorkloadsRequest,
    ) -> Reply<pb::ListWorkloadsResponse> {
        let project = r.project.as_str();
        let state = self.store.load_state().await?;
        let workloads = state
            .workloads
            .into_iter()
            .filter(|w| project.is_empty() || w.project == project)
            .filter(|w| {
                caller
                    .may(Action::DeploymentsRead, Place::Project(&w.project))
                    .is_ok()
            })
            .map(|w| pb::Workload {
                id: w.id,
                project: w.project,
            })
            .collect();
        Ok(pb::ListWorkloadsResponse { workloads })
    }

    async fn delete_workload(
        &self,
        caller: &Caller,
        r: pb::DeleteWorkloadRequest,
    ) -> Reply<pb::DeleteWorkloadResponse> {
        let id = r.id.clone();
        let not_found = || not_found(format_args!("workload {id}"));
        let visible: Vec<String> = self
            .store
            .workload_projects(&id)
            .await?
            .into_iter()
            .filter(|p| r.project.is_empty() || *p == r.project)
            .filter(|p| caller.bearer().may_see_workload(&id, p).is_ok())
            .collect();
        let project = match visible.as_slice() {
            [] => return Err(not_found()),
            [project] => project.clone(),
            _ => {
                return Err(bad_input(format!(
                    "workload {id} is registered in several projects: name one (--project)"
                )));
            }
        };
        caller.may(Action::DeploymentsWrite, Place::Project(&project))?;
        let workload = WorkloadRef { project, id };
        self.mutate(caller, |state| {
            state.workloads.remove(&workload);
            Ok(())
        })
        .await?;
        Ok(pb::DeleteWorkloadResponse {})
    }

    async fn put_route(&self, caller: &Caller, r: pb::PutRouteRequest) -> Reply<pb::Route> {
        caller.manage_routes()?;
        let route = r.route.ok_or_else(|| bad_input("route is required"))?;
        let (key, spec) = convert::route(&route)?;
        let done = if r.replace {
            "route put"
        } else {
            "route added"
        };
        self.write(caller, done, &key, async {
            let summary = Op::PutRoute {
                key: key.clone(),
                spec: spec.clone(),
                create: !r.replace,
            }
            .describe();
            Ok((
                (),
                self.audited(caller, summary)
                    .put_route(&key, &spec, r.replace)
                    .await?,
            ))
        })
        .await?;
        Ok(convert::route_pb(&key, &spec))
    }

    async fn list_routes(
        &self,
        caller: &Caller,
        _: pb::ListRoutesRequest,
    ) -> Reply<pb::ListRoutesResponse> {
        caller.manage_routes()?;
        let routes = self
            .store
            .list_routes()
            .await?
            .iter()
            .map(|(key, spec)| convert::route_pb(key, spec))
            .collect();
        Ok(pb::ListRoutesResponse { routes })
    }

    async fn delete_route(
        &self,
        caller: &Caller,
        r: pb::DeleteRouteRequest,
    ) -> Reply<pb::DeleteRouteResponse> {
        caller.manage_routes()?;
        let key = convert::route_key(&r.host, &r.path_prefix)?;
        self.write(caller, "route removed", &key, async {
            Ok((
                (),
                self.audited(caller, format!("- route {key}"))
                    .remove_route(&key)
                    .await?,
            ))
        })
        .await?;
        Ok(pb::DeleteRouteResponse {})
    }

    async fn apply(&self, caller: &Caller, r: pb::ApplyRequest) -> Reply<pb::ApplyResponse> {
        caller.manage_iam()?;
        let file = declare::parse(&r.document).map_err(|e| bad_input(e.to_string()))?;
        let plan = |current: &State| -> Result<Vec<Op>, Status> {
            let desired = file
                .resolve(current, r.prune)
                .map_err(|e| bad_input(e.to_string()))?;
            Ok(state::diff(current, &desired))
        };
        let ops = if r.dry_run {
            plan(&self.store.load_state().await?)?
        } else {
            self.write_state(caller, plan).await?.0
        };
        let changes: Vec<String> = ops.iter().map(Op::describe).collect();
        let applied = !r.dry_run && !ops.is_empty();
        Ok(pb::ApplyResponse { changes, applied })
    }

    async fn list_audit(
        &self,
        caller: &Caller,
        r: pb::ListAuditRequest,
    ) -> Reply<pb::ListAuditResponse> {
        caller.bearer().may_read_audit()?;
        let filter = convert::audit_filter(&r)?;
        let page_size = page_size(r.page_size)?;
        let entries = self.store.list_audit(&filter, i64::from(page_size)).await?;
        let next_page_token = match entries.last() {
            Some(last) => last.id.to_string(),
            None => r.page_token,
        };
        Ok(pb::ListAuditResponse {
            records: entries.iter().map(convert::audit_record).collect(),
            next_page_token,
        })
    }

    async fn export(&self, caller: &Caller, _: pb::ExportRequest) -> Reply<pb::ExportResponse> {
        caller.manage_iam()?;
        let state = self.store.load_state().await?;
        Ok(pb::ExportResponse {
            document: declare::render(&state),
        })
    }
}

/// Lifecycle: deployments and projects are updated and deleted through the state path
/// ([`AdminService::mutate`] / [`AdminService::write_state`]), serialized with every other
/// state write, so what a deletion checks (routes, rules, keys) cannot change under it.
impl AdminService {
    async fn update_deployment(
        &self,
        caller: &Caller,
        r: pb::UpdateDeploymentRequest,
    ) -> Reply<pb::Deployment> {
        let name = convert::deployment_name(&r.project, &r.slug)?;
        caller.may(Action::DeploymentsWrite, Place::Project(&name.project))?;
        let model = r.model.as_deref().map(convert::model).transpose()?;
        let description = r.description.as_deref().map(str::trim);
        if let Some(description) = description {
            validate_description("deployment description", description).map_err(bad_input)?;
        }
        if model.is_none() && description.is_none() {
            return Err(bad_input(
                "nothing to change: give a model and/or a description",
            ));
        }
        self.mutate(caller, |state| {
            let spec = deployment_spec(state, &name)?;
            if let Some(model) = model {
                spec.model = model.to_owned();
            }
            if let Some(description) = description {
                spec.description = description.to_owned();
            }
            Ok(())
        })
        .await?;
        self.deployment_pb(&name).await
    }

    async fn set_public_endpoint(
        &self,
        caller: &Caller,
        r: pb::SetPublicEndpointRequest,
    ) -> Reply<pb::Deployment> {
        let name = convert::deployment_name(&r.project, &r.slug)?;
        caller.may(Action::DeploymentsWrite, Place::Project(&name.project))?;
        self.mutate(caller, |state| {
            let spec = deployment_spec(state, &name)?;
            caller
                .bearer()
                .may_set_public_endpoint(&name.project, r.enabled, spec.public_auth)?;
            spec.public_endpoint = r.enabled;
            Ok(())
        })
        .await?;
        info!(deployment = %name, public_endpoint = r.enabled, by = %caller.id,
              "deployment public endpoint set");
        self.deployment_pb(&name).await
    }

    async fn delete_deployment(
        &self,
        caller: &Caller,
        r: pb::DeleteDeploymentRequest,
    ) -> Reply<pb::DeleteDeploymentResponse> {
        let name = convert::deployment_name(&r.project, &r.slug)?;
        caller.may(Action::DeploymentsWrite, Place::Project(&name.project))?;
        let (_, changes) = self
            .write_state(caller, |current| {
                if !current.deployments.contains_key(&name) {
                    return Err(not_found(format_args!("deployment {name}")));
                }
                refuse_while_referenced(
                    &format!("deployment {name}"),
                    state::deployment_references(current, &name),
                )?;
                Ok(vec![Op::RemoveDeployment(name.clone())])
            })
            .await?;
        let keys_detached = changes
            .iter()
            .filter(|c| matches!(c, Change::Key(_)))
            .count() as i64;
        Ok(pb::DeleteDeploymentResponse { keys_detached })
    }

    async fn update_project(
        &self,
        caller: &Caller,
        r: pb::UpdateProjectRequest,
    ) -> Reply<pb::Project> {
        caller.may(Action::ProjectsWrite, Place::Organization)?;
        let slug = r.slug.as_str();
        validate_slug("project", slug).map_err(bad_input)?;
        let Some(description) = r.description.as_deref().map(str::trim) else {
            return Err(bad_input("nothing to change: give a description"));
        };
        validate_description("project description", description).map_err(bad_input)?;
        self.mutate(caller, |state| {
            let current = state
                .projects
                .get_mut(slug)
                .ok_or_else(|| not_found(format_args!("project {slug}")))?;
            *current = description.to_owned();
            Ok(())
        })
        .await?;
        self.store
            .list_projects()
            .await?
            .iter()
            .find(|p| p.slug == slug)
            .map(pb::Project::from)
            .ok_or_else(|| not_found(format_args!("project {slug}")))
    }

    async fn delete_project(
        &self,
        caller: &Caller,
        r: pb::DeleteProjectRequest,
    ) -> Reply<pb::DeleteProjectResponse> {
        caller.may(Action::ProjectsWrite, Place::Organization)?;
        let slug = r.slug.as_str();
        validate_slug("project", slug).map_err(bad_input)?;
        self.write_state(caller, |current| {
            if !current.projects.contains_key(slug) {
                return Err(not_found(format_args!("project {slug}")));
            }
            refuse_while_referenced(
                &format!("project {slug}"),
                state::project_references(current, slug),
            )?;
            Ok(vec![Op::RemoveProject(slug.to_owned())])
        })
        .await?;
        Ok(pb::DeleteProjectResponse {})
    }

    async fn deployment_pb(&self, name: &DeploymentName) -> Result<pb::Deployment, Status> {
        self.store
            .get_deployment(&name.project, &name.slug)
            .await?
            .map(|d| pb::Deployment::from(&d))
            .ok_or_else(|| not_found(format_args!("deployment {name}")))
    }
}

/// The spec of deployment `name` in `state`, to change in place.
fn deployment_spec<'s>(
    state: &'s mut State,
    name: &DeploymentName,
) -> Result<&'s mut state::DeploymentSpec, Status> {
    state
        .deployments
        .get_mut(name)
        .ok_or_else(|| not_found(format_args!("deployment {name}")))
}

/// A deletion is refused, naming what still refers to the thing (at most ten of them).
fn refuse_while_referenced(what: &str, references: Vec<String>) -> Result<(), Status> {
    if references.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = references.iter().take(10).map(String::as_str).collect();
    let more = references.len().saturating_sub(shown.len());
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    Err(precondition(format!(
        "{what} is still referred to by {}{more}: remove those first",
        shown.join(", ")
    )))
}

impl AdminService {
    /// Lets `change` edit the current state, validates the result as a whole and writes the
    /// difference, all in one serialized transaction ([`Store::update_state`]); caches are
    /// invalidated before returning.
    async fn mutate(
        &self,
        caller: &Caller,
        change: impl FnOnce(&mut State) -> Result<(), Status>,
    ) -> Result<Vec<Change>, Status> {
        let plan = |current: &State| -> Result<Vec<Op>, Status> {
            let mut desired = current.clone();
            change(&mut desired)?;
            state::validate(&desired).map_err(|(_, message)| bad_input(message))?;
            Ok(state::diff(current, &desired))
        };
        Ok(self.write_state(caller, plan).await?.1)
    }

    /// The principal id a new key is borne by: the caller, or (for IAM managers) another.
    async fn bearer(&self, caller: &Caller, bearer: &str) -> Result<i64, Status> {
        if bearer.is_empty() {
            return Ok(caller.principal.id);
        }
        let r: PrincipalRef = bearer.parse().map_err(bad_input)?;
        caller.bearer().may_name_bearer(&r)?;
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
    ) -> Result<pb::Principal, Status> {
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
        self.principal_pb(&principal).await
    }

    async fn principal_pb(&self, r: &PrincipalRef) -> Result<pb::Principal, Status> {
        let p = self
            .store
            .principal_by_ref(r)
            .await?
            .ok_or_else(|| not_found(format_args!("principal {r}")))?;
        Ok(convert::principal(&p, 0))
    }
}

impl AdminService {
    /// The newest known use of `key`: as stored by every replica, or noted here and not yet
    /// written.
    fn last_used_at(&self, key: &ApiKey) -> Option<i64> {
        let stored = key.details.as_ref().and_then(|d| d.last_used_at);
        stored.max(self.last_used.pending(&key.id))
    }

    /// The key as stored, with this replica's not yet written last use folded in.
    fn key_pb(&self, key: &ApiKey) -> pb::Key {
        convert::key(key, self.last_used.pending(&key.id))
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

    /// The key `id` if the caller may change it ([`Bearer::may_change_key`]).
    async fn changeable_key(&self, caller: &Caller, id: &str) -> Result<ApiKey, Status> {
        let key = self.visible_key(caller, id).await?;
        caller.bearer().may_change_key(&key)?;
        Ok(key)
    }
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// The audit summary of `set-auth`.
fn auth_change(name: &DeploymentName, public: Option<bool>, private: Option<bool>) -> String {
    let mut parts = vec![format!("deployment {name}")];
    if let Some(on) = public {
        parts.push(format!("public_auth {}", on_off(on)));
    }
    if let Some(on) = private {
        parts.push(format!("private_auth {}", on_off(on)));
    }
    parts.join(", ")
}

/// The audit summary of a key update: what changes, never a secret.
fn key_update_summary(update: &KeyUpdate) -> String {
    let mut parts = Vec::new();
    if let Some(name) = &update.name {
        parts.push(format!("name {name:?}"));
    }
    if update.description.is_some() {
        parts.push("description changed".to_owned());
    }
    let list = |targets: &[DataTarget]| -> String {
        targets
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    if !update.attach.is_empty() {
        parts.push(format!("attach {}", list(&update.attach)));
    }
    if !update.detach.is_empty() {
        parts.push(format!("detach {}", list(&update.detach)));
    }
    match update.expires_at {
        Some(Some(at)) => parts.push(format!("expires {}", audit::format_time(at))),
        Some(None) => parts.push("never expires".to_owned()),
        None => {}
    }
    match parts.is_empty() {
        true => "no change".to_owned(),
        false => format!("updated: {}", parts.join(", ")),
    }
}

/// How an admin caller's principal is named in audit records and `--principal` filters.
fn principal_ref(p: &crate::model::Principal) -> PrincipalRef {
    match p.kind {
        crate::model::PrincipalKind::Owner => PrincipalRef::Owner,
        crate::model::PrincipalKind::Member => PrincipalRef::User(p.name.clone()),
        crate::model::PrincipalKind::Application => PrincipalRef::App(p.name.clone()),
    }
}

/// `keyward explain`: the decision Check would take for a request, with its reasons.
impl AdminService {
    /// Resolves the request exactly as Check does (the workload's project, the deployment,
    /// the bearer's grants, all through the same caches) and runs the one decision function with
    /// a [`Recorder`] as its trace. Reading every policy's effect, it needs iam.read.
    async fn explain(&self, caller: &Caller, r: pb::ExplainRequest) -> Reply<pb::ExplainResponse> {
        caller.may(Action::IamRead, Place::Organization)?;
        let input = convert::ExplainInput::try_from(&r)?;
        let target = match &input.target {
            convert::ExplainTarget::Deployment(name) => Target::Deployment {
                name: &input.deployment_name,
                project: &name.project,
                slug: &name.slug,
            },
            convert::ExplainTarget::Project(project) => Target::Project(project),
            convert::ExplainTarget::Path(path) => crate::authz::control_target(path)
                .map_err(|e| bad_input(format!("path {path:?}: {e}")))?,
        };
        // Workload ids are unique per project: which project `/api/workloads/:id` means
        // depends on the key, resolved below as Check resolves it.
        let holders: Arc<[Arc<str>]> = match target {
            Target::Workload { id, .. } => self.directory.workload_projects(id).await?,
            _ => Arc::from([]),
        };
        let target = match target {
            Target::Workload { id, .. } => Target::Workload {
                id,
                project: match &*holders {
                    [only] => Some(&**only),
                    _ => None,
                },
            },
            other => other,
        };
        let route = Route {
            plane: input.plane,
            endpoint: input.endpoint,
            target,
            method: &input.method,
            source_ip: input.source_ip,
            user_agent: input.user_agent.as_deref(),
        };
        let deployment = crate::authz::target_deployment(&self.directory, route.target).await?;
        let at = input.at.unwrap_or(caller.now);
        let key = self.explained_key(&input, &route).await?;
        let route = match route.target {
            Target::Workload { id, .. } => Route {
                target: Target::Workload {
                    id,
                    project: match key.key().plane() {
                        Plane::Control => policy::workload_project(key.key(), &holders),
                        Plane::Data => None,
                    },
                },
                ..route
            },
            _ => route,
        };
        let mut recorder = Recorder::new(Facts {
            source_ip: route.source_ip,
            user_agent: route.user_agent,
            now: at,
        });
        recorder.note(format!(
            "request: {} {} on the {} endpoint ({} plane) at {}, from {}, user agent {}",
            route.method,
            policy::target_name(&route.target),
            endpoint_name(route.endpoint),
            route.plane.as_str(),
            iam::format_time(at),
            route
                .source_ip
                .map_or("an unknown address".to_owned(), |ip| ip.to_string()),
            route
                .user_agent
                .map_or("none".to_owned(), |ua| format!("{ua:?}")),
        ));
        recorder.note(match &key {
            ExplainedKey::Stored(k) => format!(
                "key {} ({} plane, scope {}) borne by {}; its secret is taken as presented",
                k.id,
                k.plane().as_str(),
                k.scope.to_strings().join(","),
                k.principal.name
            ),
            ExplainedKey::Principal(k) => format!(
                "principal {} ({}) with a {} key scoped to exactly the target",
                k.principal.name,
                k.principal.kind.as_str(),
                k.plane().as_str()
            ),
        });
        let key = key.key();
        let decision = if policy::auth_required(&route, deployment.as_deref()) {
            let grants = self.directory.grants(key).await?;
            policy::decide_traced(
                &route,
                deployment.as_deref(),
                Authentication::Verified(key),
                &grants,
                at,
                &mut recorder,
            )
        } else {
            recorder.note(format!(
                "ok   authentication is off for the {} endpoint of {}: allowed as anonymous, no key asked",
                endpoint_name(route.endpoint),
                policy::target_name(&route.target)
            ));
            Decision::Allow(Grant::Anonymous)
        };
        let (allowed, http_status, code, message) = match &decision {
            Decision::Allow(_) => (true, 200, "", String::new()),
            Decision::Deny(denial) => {
                let (status, _, code) = crate::authz::status_of(denial);
                (false, status, code, denial.to_string())
            }
        };
        recorder.note(match &decision {
            Decision::Allow(_) => "=> allow (200)".to_owned(),
            Decision::Deny(_) => format!("=> deny ({http_status} {code}): {message}"),
        });
        Ok(pb::ExplainResponse {
            allowed,
            http_status: http_status.into(),
            code: code.to_owned(),
            message,
            reasons: recorder.lines,
            at,
        })
    }

    /// The key an Explain is about: the stored one, or for a principal a key of the route's
    /// plane scoped to exactly the target (so only the principal's policies decide).
    async fn explained_key(
        &self,
        input: &convert::ExplainInput,
        route: &Route<'_>,
    ) -> Result<ExplainedKey, Status> {
        match &input.whose {
            convert::Whose::Key(id) => {
                let key = self
                    .store
                    .get_key(id)
                    .await?
                    .ok_or_else(|| not_found(format_args!("key {id}")))?;
                Ok(ExplainedKey::Stored(key))
            }
            convert::Whose::Principal(r) => {
                let p = self
                    .store
                    .principal_by_ref(r)
                    .await?
                    .ok_or_else(|| not_found(format_args!("principal {r}")))?;
                let scope = match (&input.target, route.target.project()) {
                    (convert::ExplainTarget::Deployment(name), _) => {
                        KeyScope::Data([DataTarget::Deployment(name.clone())].into())
                    }
                    (_, Some(project)) => KeyScope::ControlProject(project.to_owned()),
                    (_, None) => KeyScope::ControlOrganization,
                };
                Ok(ExplainedKey::Principal(ApiKey::new(
                    "(principal)",
                    (p.id, p.kind, &p.name),
                    scope,
                    "",
                )))
            }
        }
    }
}

enum ExplainedKey {
    Stored(ApiKey),
    Principal(ApiKey),
}

impl ExplainedKey {
    fn key(&self) -> &ApiKey {
        match self {
            ExplainedKey::Stored(k) | ExplainedKey::Principal(k) => k,
        }
    }
}

fn endpoint_name(endpoint: crate::model::Endpoint) -> &'static str {
    match endpoint {
        crate::model::Endpoint::Public => "public",
        crate::model::Endpoint::Private => "private",
    }
}
