//! The Envoy edge: `envoy.service.auth.v3.Authorization/Check`.
//!
//! A `CheckRequest` becomes a plain [`Route`] and credential, the pure [`policy::decide`] rules,
//! and the [`Decision`] becomes a `CheckResponse`. This is the one place that maps decisions to
//! HTTP statuses and bodies. A denial is `Ok(CheckResponse)` with a non-OK status; `Err(Status)`
//! means keyward could not decide, and Envoy answers its `status_on_error` (503).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, StatusCode as HttpStatusCode};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

use crate::authn::{Authenticated, Authenticator, Undecidable};
use crate::clock::now_unix;
use crate::credential::{HeaderRead, Presented, RequestHeaders, credential};
use crate::directory::Directory;
use crate::metrics::{CheckMetrics, Outcome};
use crate::model::{Endpoint, Plane};
use crate::policy::{self, Authentication, Decision, Denial, Grant, InvalidReason, Route, Target};
use crate::routes::{RouteTable, RouteTarget};
use crate::services::Services;
use crate::token::{Token, TokenError};
use crate::usage::LastUsed;

pub const HEADER_KEY_ID: &str = "x-keyward-key-id";
pub const HEADER_PRINCIPAL: &str = "x-keyward-principal";
pub const HEADER_PROJECT: &str = "x-keyward-project";
pub const HEADER_DEPLOYMENT: &str = "x-keyward-deployment";

/// Why the route itself cannot be decided on: the Envoy configuration is wrong, not the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("the request carries no HTTP attributes")]
    NoHttpAttributes,
    #[error("context extension `plane` is missing or not data|control")]
    Plane,
    #[error("context extension `endpoint` is missing or not public|private")]
    Endpoint,
    #[error("context extension `deployment` is missing or not PROJECT/SLUG")]
    Deployment,
    #[error(
        "context extension `project` is missing or not a project slug, and the path is not a control route"
    )]
    Project,
    #[error(
        "the path is not normalized (`.` or `..` segments, `//`, `\\`, or a percent-encoded `.`, `/` or `\\`): set normalize_path and merge_slashes in Envoy's HTTP connection manager"
    )]
    PathNotNormalized,
    /// Envoy sent none of keyward's context extensions and no route table entry matches.
    #[error(
        "Envoy sent no keyward context extensions and no route table entry matches this host and path"
    )]
    NoRoute,
}

/// The request, as the decision needs it.
#[derive(Debug)]
pub struct Input<'a> {
    pub route: Route<'a>,
    pub headers: RequestHeaders<'a>,
}

/// Reads the route contract (context extensions) and the HTTP attributes.
pub fn input_of(request: &CheckRequest) -> Result<Input<'_>, RouteError> {
    input_with(request, None)
}

/// The context extensions keyward reads: when Envoy sends any of them they decide the route,
/// and the route table is not consulted.
const KEYWARD_EXTENSIONS: [&str; 4] = ["plane", "endpoint", "deployment", "project"];

/// Whether `request` must be routed by the route table: it carries none of keyward's context
/// extensions.
pub fn needs_route_table(request: &CheckRequest) -> bool {
    request.attributes.as_ref().is_some_and(|a| {
        !KEYWARD_EXTENSIONS
            .iter()
            .any(|k| a.context_extensions.contains_key(*k))
    })
}

/// As [`input_of`]; a request with none of keyward's context extensions is routed by `table`.
pub fn input_with<'a>(
    request: &'a CheckRequest,
    table: Option<&'a RouteTable>,
) -> Result<Input<'a>, RouteError> {
    let attributes = request
        .attributes
        .as_ref()
        .ok_or(RouteError::NoHttpAttributes)?;
    let http = attributes
        .request
        .as_ref()
        .and_then(|r| r.http.as_ref())
        .ok_or(RouteError::NoHttpAttributes)?;
    if !is_normalized(&http.path) {
        return Err(RouteError::PathNotNormalized);
    }
    let ext = &attributes.context_extensions;
    if let Some(table) = table.filter(|_| needs_route_table(request)) {
        return routed(attributes, http, table);
    }
    let plane: Plane = ext
        .get("plane")
        .and_then(|p| p.parse().ok())
        .ok_or(RouteError::Plane)?;
    let endpoint: Endpoint = ext
        .get("endpoint")
        .and_then(|e| e.parse().ok())
        .ok_or(RouteError::Endpoint)?;
    let target = match plane {
        Plane::Data => {
            let name = ext.get("deployment").ok_or(RouteError::Deployment)?;
            let (project, slug) = name.split_once('/').ok_or(RouteError::Deployment)?;
            if crate::model::validate_slug("project", project).is_err()
                || crate::model::validate_slug("deployment", slug).is_err()
            {
                return Err(RouteError::Deployment);
            }
            Target::Deployment {
                name,
                project,
                slug,
            }
        }
        Plane::Control => match ext.get("project") {
            Some(project) => {
                crate::model::validate_slug("project", project).map_err(|_| RouteError::Project)?;
                Target::Project(project)
            }
            None => control_target(&http.path)?,
        },
    };
    Ok(input_from(attributes, http, plane, endpoint, target))
}

/// The route of a request from the route table entry matching its host and path.
fn routed<'a>(
    attributes: &'a AttributeContext,
    http: &'a HttpRequest,
    table: &'a RouteTable,
) -> Result<Input<'a>, RouteError> {
    let entry = table
        .lookup(&http.host, &http.path)
        .ok_or(RouteError::NoRoute)?;
    let target = match (&entry.spec.target, entry.deployment()) {
        (RouteTarget::Deployment(_), Some((name, project, slug))) => Target::Deployment {
            name,
            project,
            slug,
        },
        (RouteTarget::Deployment(_), None) => return Err(RouteError::Deployment),
        (RouteTarget::Control(Some(project)), _) => Target::Project(project),
        (RouteTarget::Control(None), _) => control_target(&http.path)?,
    };
    Ok(input_from(
        attributes,
        http,
        entry.spec.plane(),
        entry.spec.endpoint,
        target,
    ))
}

fn input_from<'a>(
    attributes: &'a AttributeContext,
    http: &'a HttpRequest,
    plane: Plane,
    endpoint: Endpoint,
    target: Target<'a>,
) -> Input<'a> {
    let source_ip = attributes
        .source
        .as_ref()
        .and_then(|peer| peer.address.as_ref())
        .and_then(|address| match address.address.as_ref()? {
            Address::SocketAddress(socket) => socket.address.parse().ok(),
            _ => None,
        });
    let headers = match &http.header_map {
        Some(raw) if http.headers.is_empty() => RequestHeaders::Raw(&raw.headers),
        _ => RequestHeaders::Map(&http.headers),
    };
    let user_agent = match headers.get("user-agent") {
        HeaderRead::Value(ua) if !ua.is_empty() => Some(ua),
        _ => None,
    };
    Input {
        route: Route {
            plane,
            endpoint,
            target,
            method: &http.method,
            source_ip,
            user_agent,
        },
        headers,
    }
}

/// Whether `path` (its query and fragment aside) is already in the form the upstream acts on:
/// absolute, with no `.` or `..` segment, no empty segment but a trailing one, no backslash, and
/// no percent-encoded `.`, `/` or `\`. keyward decides on the path it reads (control targets,
/// route table prefixes), so a path an upstream could resolve differently is refused, not
/// interpreted: keyward does not trust Envoy to have normalized it. An empty path (no HTTP
/// path at all) has nothing to misread.
pub fn is_normalized(path: &str) -> bool {
    // This runs on every Check. Most paths hold none of the bytes that need a closer look, and
    // that is checked without branching per byte (the compiler vectorizes the folds).
    let path = path.as_bytes();
    let needs_a_look = path.iter().fold(false, |acc, &b| {
        acc | matches!(b, b'.' | b'%' | b'\\' | b'?' | b'#')
    });
    let double_slash = path
        .windows(2)
        .fold(false, |acc, w| acc | (w[0] == b'/' && w[1] == b'/'));
    if !needs_a_look && !double_slash {
        return path.first().is_none_or(|&b| b == b'/');
    }
    let end = path
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(path.len());
    let path = &path[..end];
    match path.first() {
        None => return true,
        Some(b'/') => {}
        Some(_) => return false,
    }
    let mut segment_start = 1;
    for i in 1..=path.len() {
        match path.get(i) {
            None | Some(b'/') => {
                let segment = &path[segment_start..i];
                let inner = i < path.len();
                if segment == b"." || segment == b".." || (segment.is_empty() && inner) {
                    return false;
                }
                segment_start = i + 1;
            }
            Some(b'\\') => return false,
            Some(b'%') => {
                let encoded = (path.get(i + 1), path.get(i + 2).map(u8::to_ascii_lowercase));
                if matches!(
                    encoded,
                    (Some(b'2'), Some(b'e' | b'f')) | (Some(b'5'), Some(b'c'))
                ) {
                    return false;
                }
            }
            Some(_) => {}
        }
    }
    true
}

/// The target of a control route without an explicit `project` extension, from the
/// (Envoy-normalized) path: `/api/projects/:project/workloads[/…]` names its project,
/// `/api/workloads/:id[/…]` a workload whose project keyward resolves itself.
pub fn control_target(path: &str) -> Result<Target<'_>, RouteError> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut segments = path.split('/').skip(1);
    match (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) {
        (Some("api"), Some("projects"), Some(project), Some("workloads")) => {
            crate::model::validate_slug("project", project).map_err(|_| RouteError::Project)?;
            Ok(Target::Project(project))
        }
        (Some("api"), Some("workloads"), Some(id), _) => {
            crate::model::validate_slug("workload", id).map_err(|_| RouteError::Project)?;
            Ok(Target::Workload { id, project: None })
        }
        _ => Err(RouteError::Project),
    }
}

/// The gRPC `Authorization` service.
#[derive(Clone)]
pub struct CheckService {
    directory: Directory,
    authn: Authenticator,
    last_used: LastUsed,
    sources: Arc<[String]>,
    shed: Arc<ShedLog>,
    misrouted: Arc<LogThrottle>,
    metrics: CheckMetrics,
    /// Set when keyward's Envoy module is on (`module.enabled`).
    module: Option<crate::config::Module>,
    /// Whether allows carry the identity as dynamic metadata (`answer.metadata`).
    allow_metadata: bool,
}

/// Shed requests are counted and reported at most once a second: a flood of bad tokens must
/// not turn into a flood of log lines on the very path it is already loading. The report names
/// the key id of the request that triggered it when that key's own budget was the limit, so an
/// SRE sees which key is being flooded.
struct ShedLog {
    throttle: LogThrottle,
    metrics: crate::metrics::Argon2Metrics,
}

/// Counts events and lets one report through per second: `note` answers how many events the
/// report covers when one is due. Log lines on the Check path go through it, so a flood of
/// requests never becomes a flood of lines.
#[derive(Default)]
pub struct LogThrottle {
    since_report: AtomicU64,
    reported_at: AtomicI64,
}

impl LogThrottle {
    pub fn note(&self, now: i64) -> Option<u64> {
        self.since_report.fetch_add(1, Ordering::Relaxed);
        let last = self.reported_at.load(Ordering::Relaxed);
        let due = now > last
            && self
                .reported_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        due.then(|| self.since_report.swap(0, Ordering::Relaxed))
    }
}

impl ShedLog {
    fn note(&self, flooded_key: Option<&str>) {
        self.metrics.shed(flooded_key.is_some());
        if let Some(shed) = self.throttle.note(now_unix()) {
            match flooded_key {
                Some(key_id) => warn!(
                    shed,
                    key_id,
                    "shedding: this key id has all the argon2 verifications it may hold \
                     (verify.per_key, or it is under attack: wrong secrets for it); Envoy \
                     answers its status_on_error"
                ),
                None => warn!(
                    shed,
                    "shedding: too many argon2 verifications in flight; Envoy answers its status_on_error"
                ),
            }
        }
    }
}

impl CheckService {
    pub fn new(services: &Services, sources: Vec<String>) -> Self {
        CheckService {
            directory: services.directory.clone(),
            authn: services.authn.clone(),
            last_used: services.last_used.clone(),
            sources: sources.into(),
            shed: Arc::new(ShedLog {
                throttle: LogThrottle::default(),
                metrics: services.authn.metrics().clone(),
            }),
            misrouted: Arc::default(),
            metrics: CheckMetrics::new(),
            module: None,
            allow_metadata: false,
        }
    }

    /// What allows carry besides the identity headers and credential removal, which they
    /// always do ([`crate::config::Answer`]).
    pub fn with_answer(mut self, answer: &crate::config::Answer) -> Self {
        self.allow_metadata = answer.metadata;
        self
    }

    /// With `module.enabled`, data-plane allows carry what keyward's Envoy module needs to
    /// reuse them ([`crate::module`]).
    pub fn with_module(mut self, module: crate::config::Module) -> Self {
        self.module = module.enabled.then_some(module);
        self
    }

    /// Decides one request: the whole Check path, without the gRPC transport.
    pub async fn check_request(
        &self,
        request: &CheckRequest,
    ) -> Result<CheckResponse, Undecidable> {
        let started = Instant::now();
        let mut plane = None;
        let answer = self.decide_request(request, &mut plane).await;
        let outcome = match &answer {
            Ok((_, outcome)) => *outcome,
            Err(error) => Outcome::Error(error_code(error)),
        };
        self.metrics.record(outcome, plane, started.elapsed());
        answer.map(|(response, _)| response)
    }

    /// [`Self::check_request`] without the metrics; `plane` learns the route's plane once known.
    async fn decide_request(
        &self,
        request: &CheckRequest,
        plane: &mut Option<Plane>,
    ) -> Result<(CheckResponse, Outcome), Undecidable> {
        // Read before anything the decision reads: an allow is only as fresh as this epoch.
        let epoch = self.directory.caches().epoch();
        let table = if needs_route_table(request) {
            Some(self.directory.route_table().await?)
        } else {
            None
        };
        let input = match input_with(request, table.as_deref()) {
            Ok(input) => input,
            Err(error) => {
                if let Some(requests) = self.misrouted.note(now_unix()) {
                    warn!(%error, requests, "denying requests whose Envoy route is not configured \
                          for keyward (one line a second at most: `requests` since the last)");
                }
                return Ok((misrouted(error), Outcome::Deny("route_not_configured")));
            }
        };
        *plane = Some(input.route.plane);
        let route = &input.route;
        let deployment = target_deployment(&self.directory, route.target).await?;
        if policy::endpoint_removed(route, deployment.as_deref()) {
            return Ok((no_endpoint(), Outcome::Deny(NOT_FOUND_CODE)));
        }
        if !policy::auth_required(route, deployment.as_deref()) {
            let response = allowed(route, Grant::Anonymous, &self.sources, self.allow_metadata);
            return Ok((response, Outcome::Allow));
        }
        let now = now_unix();
        let token = credential(input.headers, &self.sources).map(|presented| match presented {
            Presented::Token(token) => Token::parse(token),
            Presented::Unreadable => Err(TokenError::Shape),
        });
        let authenticated = match token {
            None => None,
            Some(Err(_)) => Some(Authenticated::Invalid(InvalidReason::Malformed)),
            Some(Ok(token)) => Some(self.authn.authenticate(&token, now).await?),
        };
        let (authentication, grants) = match &authenticated {
            None => (Authentication::Missing, Default::default()),
            Some(Authenticated::Invalid(reason)) => {
                (Authentication::Invalid(*reason), Default::default())
            }
            Some(Authenticated::Key(entry)) => (
                Authentication::Verified(&entry.key),
                self.directory.grants(&entry.key).await?,
            ),
        };
        // A workload id names a workload of the key's own project: resolved only for a
        // verified key, so an unauthenticated request costs no lookup and learns nothing.
        let holders;
        let resolved;
        let route = match (route.target, authentication) {
            (Target::Workload { id, .. }, Authentication::Verified(key))
                if key.plane() == Plane::Control =>
            {
                holders = self.directory.workload_projects(id).await?;
                resolved = Route {
                    target: Target::Workload {
                        id,
                        project: policy::workload_project(key, &holders),
                    },
                    ..*route
                };
                &resolved
            }
            _ => route,
        };
        let decision = policy::decide(route, deployment.as_deref(), authentication, &grants, now);
        Ok(match decision {
            Decision::Allow(grant) => {
                let mut response = allowed(route, grant, &self.sources, self.allow_metadata);
                if let Grant::Key(key) = grant {
                    self.last_used.touch(&key.id, now);
                }
                if let (Some(module), Grant::Key(key)) = (&self.module, grant)
                    && let Some(learnable) = self.learnable(route, key, &grants, now, epoch, module)
                {
                    set_module_answer(&mut response, learnable);
                }
                (response, Outcome::Allow)
            }
            Decision::Deny(denial) => {
                let key_id = token.and_then(Result::ok).map(|t| t.key_id);
                debug!(
                    key_id,
                    source_ip = ?route.source_ip,
                    user_agent = ?route.user_agent,
                    ?denial,
                    "denied"
                );
                (denied(&denial, key_id), Outcome::Deny(status_of(&denial).2))
            }
        })
    }
}

impl CheckService {
    /// What keyward's Envoy module may reuse of an allow on a data route
    /// ([`crate::module::learnable`]); nothing for control routes, whose decisions depend on the
    /// method and path.
    fn learnable(
        &self,
        route: &Route<'_>,
        key: &crate::model::ApiKey,
        grants: &crate::iam::Grants,
        now: i64,
        epoch: u64,
        module: &crate::config::Module,
    ) -> Option<String> {
        let Target::Deployment { name, .. } = route.target else {
            return None;
        };
        if route.plane != Plane::Data {
            return None;
        }
        let hints = crate::module::hints(key, grants, now, module.max_ttl_ms)?;
        crate::module::learnable(&crate::module::Learnable {
            instance: self.directory.caches().instance(),
            epoch,
            hints,
            endpoint: route.endpoint,
            key_id: &key.id,
            principal: &key.principal.name,
            project: route.target.project().unwrap_or_default(),
            deployment: name,
        })
    }
}

/// With `module.enabled`, an allow the module may reuse says how, in the response header
/// [`crate::module::RESPONSE_HEADER`] among the answer's response headers to add. The module
/// takes it out of the answer it asked for, so it reaches neither the request nor the
/// response; on a route ext_authz decides, Envoy would add it to the response, where the
/// template's header_mutation removes it (and no module reads it there).
fn set_module_answer(response: &mut CheckResponse, learnable: String) {
    if let Some(HttpResponse::OkResponse(ok)) = response.http_response.as_mut() {
        ok.response_headers_to_add.push(header(
            crate::module::RESPONSE_HEADER,
            &learnable,
            HeaderAppendAction::OverwriteIfExistsOrAdd,
        ));
    }
}

/// The deployment `target` names, as registered (`None` for a project or workload target, or
/// a deployment keyward does not know): what Check and Explain both decide with.
pub(crate) async fn target_deployment(
    directory: &Directory,
    target: Target<'_>,
) -> Result<Option<Arc<crate::model::Deployment>>, crate::store::StoreError> {
    match target {
        Target::Deployment {
            name,
            project,
            slug,
        } => directory.deployment(name, project, slug).await,
        Target::Project(_) | Target::Workload { .. } => Ok(None),
    }
}

/// The `code` label of a Check that could not be decided.
fn error_code(error: &Undecidable) -> &'static str {
    match error {
        Undecidable::Overloaded
        | Undecidable::KeyOverloaded(_)
        | Undecidable::PrincipalOverloaded(_) => "overloaded",
        Undecidable::Storage(_) => "storage_unavailable",
        Undecidable::Internal(_) => "internal",
    }
}

#[tonic::async_trait]
impl Authorization for CheckService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        match self.check_request(request.get_ref()).await {
            Ok(response) => Ok(Response::new(response)),
            Err(error) => {
                match &error {
                    Undecidable::Overloaded => self.shed.note(None),
                    Undecidable::KeyOverloaded(key_id) => self.shed.note(Some(key_id)),
                    Undecidable::Storage(_)
                    | Undecidable::Internal(_)
                    | Undecidable::PrincipalOverloaded(_) => {
                        warn!(%error, "cannot decide; Envoy will answer its status_on_error")
                    }
                }
                Err(Status::from(error))
            }
        }
    }
}

fn header(key: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
    #[allow(deprecated)]
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            raw_value: Vec::new(),
        }),
        append: None,
        append_action: action.into(),
        keep_empty_value: false,
    }
}

/// Identity headers overwrite whatever the client sent, so no one smuggles their own copy
/// upstream; credential headers are removed so the backend never sees a secret. Both always;
/// the dynamic metadata (for Envoy's access log and rate limit filters) only with `metadata`.
fn allowed(
    route: &Route<'_>,
    grant: Grant<'_>,
    sources: &[String],
    metadata: bool,
) -> CheckResponse {
    let overwrite = HeaderAppendAction::OverwriteIfExistsOrAdd;
    let (key_id, principal) = match grant {
        Grant::Key(key) => (Some(key.id.as_str()), key.principal.name.as_str()),
        Grant::Anonymous => (None, "anonymous"),
    };
    let project = route.target.project().unwrap_or_default();
    let deployment = match route.target {
        Target::Deployment { name, .. } => Some(name),
        Target::Project(_) | Target::Workload { .. } => None,
    };
    let mut headers = Vec::with_capacity(4);
    let mut headers_to_remove: Vec<String> = sources.to_vec();
    match key_id {
        Some(id) => headers.push(header(HEADER_KEY_ID, id, overwrite)),
        None => headers_to_remove.push(HEADER_KEY_ID.to_owned()),
    }
    headers.push(header(HEADER_PRINCIPAL, principal, overwrite));
    headers.push(header(HEADER_PROJECT, project, overwrite));
    match deployment {
        Some(name) => headers.push(header(HEADER_DEPLOYMENT, name, overwrite)),
        None => headers_to_remove.push(HEADER_DEPLOYMENT.to_owned()),
    }
    let identity = [
        ("key_id", key_id),
        ("principal", Some(principal)),
        ("project", Some(project)),
        ("plane", Some(route.plane.as_str())),
        ("deployment", deployment),
    ];
    CheckResponse {
        status: Some(rpc::Status {
            code: crate::errors::check_code(true, false),
            ..Default::default()
        }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers,
            headers_to_remove,
            ..Default::default()
        })),
        // Built only when asked for: off by default, and each field is two allocations.
        dynamic_metadata: metadata.then(|| Struct {
            fields: identity
                .into_iter()
                .filter_map(|(name, value)| Some((name.to_owned(), string_value(value?))))
                .collect(),
        }),
    }
}

fn string_value(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

/// HTTP status, OpenAI error `type` and `code` for each denial.
pub(crate) fn status_of(denial: &Denial) -> (u16, &'static str, &'static str) {
    match denial {
        Denial::NoEndpoint => (404, "invalid_request_error", NOT_FOUND_CODE),
        Denial::MissingCredential => (401, "invalid_request_error", "missing_api_key"),
        Denial::InvalidKey {
            route_plane: Plane::Data,
            ..
        } => (401, "invalid_request_error", "invalid_api_key"),
        Denial::InvalidKey {
            route_plane: Plane::Control,
            ..
        } => (403, "permission_error", "invalid_api_key"),
        Denial::WrongPlane { .. } => (403, "permission_error", "wrong_plane"),
        Denial::OutOfScope { .. } => (403, "permission_error", "key_not_in_scope"),
        Denial::UnknownDeployment { .. } => (403, "permission_error", "unknown_deployment"),
        Denial::MissingPermission { .. } => (403, "permission_error", "permission_denied"),
        Denial::ConditionsNotMet { .. } => (403, "permission_error", "conditions_not_met"),
    }
}

/// A denial; `key_id` is the presented token's key id when it parsed (public: it is in every
/// token, never the secret), for the access log.
fn denied(denial: &Denial, key_id: Option<&str>) -> CheckResponse {
    if *denial == Denial::NoEndpoint {
        return no_endpoint();
    }
    let (status, kind, code) = status_of(denial);
    let mut headers = vec![header(
        "content-type",
        "application/json",
        HeaderAppendAction::OverwriteIfExistsOrAdd,
    )];
    if status == 401 {
        let challenge = match denial {
            Denial::MissingCredential => r#"Bearer realm="keyward""#,
            _ => r#"Bearer realm="keyward", error="invalid_token""#,
        };
        headers.push(header(
            "www-authenticate",
            challenge,
            HeaderAppendAction::OverwriteIfExistsOrAdd,
        ));
    }
    let body = error_body(&denial.to_string(), kind, code);
    deny_response(status, headers, body, denial_metadata(code, key_id))
}

/// What a denial tells Envoy's access log (`%DYNAMIC_METADATA(envoy.filters.http.ext_authz)%`),
/// beside Envoy's request id: why, and for which key id when a token was presented.
fn denial_metadata(code: &str, key_id: Option<&str>) -> Struct {
    let mut fields = HashMap::with_capacity(2);
    fields.insert("denial_code".to_owned(), string_value(code));
    if let Some(id) = key_id {
        fields.insert("key_id".to_owned(), string_value(id));
    }
    Struct { fields }
}

/// The `code` of the 404 of a removed public endpoint.
const NOT_FOUND_CODE: &str = "not_found";

/// Envoy's own answer for a path no deployment is routed at (the catch-all `direct_response`
/// of `envoy/envoy.yaml.tmpl`), byte for byte: a removed public endpoint must read exactly
/// like a deployment that is not there.
pub const NOT_FOUND_BODY: &str = r#"{"error":{"message":"No deployment is routed at this path.","type":"invalid_request_error","param":null,"code":"not_found"}}"#;

/// The answer on a removed public endpoint: Envoy's not-found reply, with no credential
/// challenge and nothing in the access log's metadata beyond the code.
fn no_endpoint() -> CheckResponse {
    let headers = vec![header(
        "content-type",
        "application/json",
        HeaderAppendAction::OverwriteIfExistsOrAdd,
    )];
    deny_response(
        404,
        headers,
        NOT_FOUND_BODY.to_owned(),
        denial_metadata(NOT_FOUND_CODE, None),
    )
}

fn misrouted(error: RouteError) -> CheckResponse {
    let headers = vec![header(
        "content-type",
        "application/json",
        HeaderAppendAction::OverwriteIfExistsOrAdd,
    )];
    let message = format!("This route is not configured for authorization: {error}.");
    deny_response(
        403,
        headers,
        error_body(&message, "permission_error", "route_not_configured"),
        denial_metadata("route_not_configured", None),
    )
}

/// The OpenAI error shape inference clients already parse.
pub fn error_body(message: &str, kind: &str, code: &str) -> String {
    serde_json::json!({
        "error": { "message": message, "type": kind, "param": null, "code": code }
    })
    .to_string()
}

fn deny_response(
    status: u16,
    headers: Vec<HeaderValueOption>,
    body: String,
    metadata: Struct,
) -> CheckResponse {
    let grpc_code = crate::errors::check_code(false, status == 401);
    let http_code = match status {
        401 => HttpStatusCode::Unauthorized,
        404 => HttpStatusCode::NotFound,
        _ => HttpStatusCode::Forbidden,
    };
    CheckResponse {
        status: Some(rpc::Status {
            code: grpc_code,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: http_code.into(),
            }),
            headers,
            body,
        })),
        dynamic_metadata: Some(metadata),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_public_endpoint_answers_envoys_own_not_found() {
        let template = include_str!("../envoy/envoy.yaml.tmpl");
        assert!(
            template.contains(&format!("inline_string: '{NOT_FOUND_BODY}'")),
            "envoy/envoy.yaml.tmpl's catch-all 404 and NOT_FOUND_BODY must stay identical"
        );
        let Some(HttpResponse::DeniedResponse(reply)) = no_endpoint().http_response else {
            panic!("a denial");
        };
        assert_eq!(
            reply.status.map(|s| s.code),
            Some(HttpStatusCode::NotFound as i32)
        );
        assert_eq!(reply.body, NOT_FOUND_BODY);
        let names: Vec<_> = reply
            .headers
            .iter()
            .flat_map(|h| &h.header)
            .map(|h| h.key.as_str())
            .collect();
        assert_eq!(
            names,
            ["content-type"],
            "no www-authenticate: no key is asked"
        );
        assert_eq!(
            denied(&Denial::NoEndpoint, Some("AAAAAAAAAAAA")),
            no_endpoint()
        );
    }

    #[test]
    fn throttled_log_lines() {
        let throttle = LogThrottle::default();
        // (now, report due covering this many events)
        let table = [
            (100, Some(1)),
            (100, None),
            (100, None),
            (101, Some(3)),
            (101, None),
            (105, Some(2)),
            (104, None),
        ];
        for (now, expected) in table {
            assert_eq!(throttle.note(now), expected, "at {now}");
        }
    }

    #[test]
    fn paths_keyward_decides_on_are_normalized() {
        let table = [
            ("", true),
            ("/", true),
            ("/v1/chat/completions", true),
            ("/api/workloads/w-1/", true),
            ("/a/b?next=/../x&y=%2e%2e", true),
            ("/a/b#../x", true),
            ("/a/.well-known/x", true),
            ("/a/..b/c.d", true),
            ("/a/../b", false),
            ("/a/./b", false),
            ("/a/..", false),
            ("/.", false),
            ("/a//b", false),
            ("//a", false),
            ("/a/%2e%2e/b", false),
            ("/a/%2E./b", false),
            ("/a%2fb", false),
            ("/a%5Cb", false),
            ("/a\\..\\b", false),
            ("a/b", false),
        ];
        for (path, normalized) in table {
            assert_eq!(is_normalized(path), normalized, "{path:?}");
        }
    }

    #[test]
    fn requests_without_a_route_contract_are_denied_not_panicked_on() {
        let empty = CheckRequest::default();
        assert_eq!(input_of(&empty).unwrap_err(), RouteError::NoHttpAttributes);
        let response = misrouted(RouteError::Plane);
        let Some(HttpResponse::DeniedResponse(denied)) = response.http_response else {
            panic!("denied response expected")
        };
        assert_eq!(
            denied.status.unwrap().code,
            HttpStatusCode::Forbidden as i32
        );
        assert!(denied.body.contains("route_not_configured"));
    }

    #[test]
    fn the_status_table() {
        let cases = [
            (Denial::MissingCredential, 401),
            (
                Denial::InvalidKey {
                    route_plane: Plane::Data,
                    reason: InvalidReason::Revoked,
                },
                401,
            ),
            (
                Denial::InvalidKey {
                    route_plane: Plane::Control,
                    reason: InvalidReason::Revoked,
                },
                403,
            ),
            (
                Denial::WrongPlane {
                    key_plane: Plane::Data,
                },
                403,
            ),
            (
                Denial::OutOfScope {
                    target: "deployment a/b".into(),
                },
                403,
            ),
        ];
        for (denial, status) in cases {
            let response = denied(&denial, None);
            let Some(HttpResponse::DeniedResponse(d)) = response.http_response else {
                panic!("denied response expected")
            };
            assert_eq!(d.status.unwrap().code as u16, status, "{denial:?}");
            let challenge = d
                .headers
                .iter()
                .any(|h| h.header.as_ref().unwrap().key == "www-authenticate");
            assert_eq!(challenge, status == 401);
            let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
            assert!(body["error"]["message"].is_string());
            assert!(body["error"]["param"].is_null());
        }
    }
}
