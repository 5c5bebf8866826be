//! Protobuf stops here: every admin API message ↔ domain type conversion, written once.
//! Values from the API are checked exactly like those of an `apply` file: the same
//! constructors and validators ([`Rule::new`], [`RuleScope::choose`], [`crate::condition`]).

use crate::audit;
use crate::condition::{ConditionArgs, Window, parse_source_ip};
use crate::errors::BadInput;
use crate::iam::{
    self, Action, Conditions, PermissionSet, Policy, PrincipalRef, Rule, RuleScope,
    ScopeChoiceError, UserAgentMatch,
};
use crate::model::{
    ApiKey, Deployment, DeploymentName, Endpoint, KeyDetails, KeyFilter, Plane, Principal,
    PrincipalKind,
};
use crate::pb::{self, expiry};
use crate::routes::{self, RouteKey, RouteSpec, RouteTarget};

type Result<T> = std::result::Result<T, BadInput>;

fn bad(message: impl Into<String>) -> BadInput {
    BadInput(message.into())
}

pub fn plane(plane: i32) -> Result<Plane> {
    match pb::Plane::try_from(plane) {
        Ok(pb::Plane::Data) => Ok(Plane::Data),
        Ok(pb::Plane::Control) => Ok(Plane::Control),
        _ => Err(bad("plane must be data or control")),
    }
}

impl From<Plane> for pb::Plane {
    fn from(plane: Plane) -> Self {
        match plane {
            Plane::Data => pb::Plane::Data,
            Plane::Control => pb::Plane::Control,
        }
    }
}

pub fn deployment_name(project: &str, slug: &str) -> Result<DeploymentName> {
    format!("{project}/{slug}").parse().map_err(bad)
}

/// `None`: no change requested; `Some(None)`: never expires.
pub fn expiry(expiry: Option<pb::Expiry>) -> Option<Option<i64>> {
    match expiry.and_then(|e| e.kind) {
        None => None,
        Some(expiry::Kind::Never(_)) => Some(None),
        Some(expiry::Kind::At(at)) => Some(Some(at)),
    }
}

impl From<&Deployment> for pb::Deployment {
    fn from(d: &Deployment) -> Self {
        pb::Deployment {
            project: d.name.project.clone(),
            slug: d.name.slug.clone(),
            model: d.model.clone(),
            public_auth: d.public_auth,
            private_auth: d.private_auth,
            created_at: d.created_at,
            description: d.description.clone(),
            public_endpoint: d.public_endpoint,
        }
    }
}

impl From<&crate::model::Project> for pb::Project {
    fn from(p: &crate::model::Project) -> Self {
        pb::Project {
            slug: p.slug.clone(),
            created_at: p.created_at,
            description: p.description.clone(),
        }
    }
}

/// A deployment's model: trimmed, 1-255 characters.
pub fn model(model: &str) -> Result<&str> {
    let model = model.trim();
    if model.is_empty() || model.len() > 255 {
        return Err(bad("model must be 1-255 characters"));
    }
    Ok(model)
}

/// `k` as the admin API shows it. Keys shown here come from the store, so they carry their
/// details; a cached key (none) would show an empty name and no timestamps.
pub fn key(k: &ApiKey, pending_last_use: Option<i64>) -> pb::Key {
    let none = KeyDetails::default();
    let details = k.details.as_deref().unwrap_or(&none);
    pb::Key {
        id: k.id.clone(),
        plane: pb::Plane::from(k.plane()) as i32,
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

pub fn principal(p: &Principal, keys: i64) -> pb::Principal {
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

impl TryFrom<&pb::PermissionSet> for PermissionSet {
    type Error = BadInput;

    fn try_from(s: &pb::PermissionSet) -> Result<Self> {
        iam::validate_set_name(&s.name).map_err(bad)?;
        let actions = s
            .actions
            .iter()
            .map(|a| a.parse::<Action>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(bad)?;
        let description = s.description.trim();
        crate::model::validate_description("permission set description", description)
            .map_err(bad)?;
        PermissionSet::new(
            s.name.clone(),
            description.to_owned(),
            actions,
            s.includes.clone(),
        )
        .ok_or_else(|| bad("a permission set needs at least one action or include"))
    }
}

pub fn permission_set(s: &PermissionSet, builtin: bool) -> pb::PermissionSet {
    pb::PermissionSet {
        name: s.name.clone(),
        description: s.description.clone(),
        actions: s.actions.iter().map(|a| a.as_str().to_owned()).collect(),
        includes: s.includes.clone(),
        builtin,
    }
}

impl TryFrom<&pb::Rule> for Rule {
    type Error = BadInput;

    fn try_from(r: &pb::Rule) -> Result<Self> {
        let projects = (!r.projects.is_empty()).then_some(r.projects.as_slice());
        let scope =
            RuleScope::choose(projects, r.all_projects, r.organization).map_err(|e| match e {
                ScopeChoiceError::None => {
                    bad("empty rule: give a scope (projects, all_projects or organization)")
                }
                ScopeChoiceError::Several => {
                    bad("a rule has exactly one scope: projects, all_projects or organization")
                }
            })?;
        Rule::new(scope, r.permission_sets.clone(), conditions(r)?).map_err(bad)
    }
}

impl From<&Rule> for pb::Rule {
    fn from(r: &Rule) -> Self {
        let mut rule = pb::Rule {
            projects: match &r.scope {
                RuleScope::Projects(p) => p.clone(),
                _ => Vec::new(),
            },
            all_projects: r.scope == RuleScope::AllProjects,
            organization: r.scope == RuleScope::Organization,
            permission_sets: r.permission_sets.clone(),
            ..pb::Rule::default()
        };
        set_conditions(&mut rule, &r.conditions);
        rule
    }
}

/// A rule from the server as `keyward iam policies list` shows it ([`Rule::describe`]).
pub fn rule_summary(r: &pb::Rule) -> String {
    Rule::try_from(r).map_or_else(|e| format!("(invalid rule: {e})"), |rule| rule.describe())
}

/// A rule's conditions, one line a kind ([`crate::condition`]).
fn conditions(r: &pb::Rule) -> Result<Conditions> {
    let time = |t: &str| (!t.is_empty()).then(|| iam::parse_time(t)).transpose();
    Ok(Conditions {
        source_ips: r
            .source_ips
            .iter()
            .map(|s| parse_source_ip(s))
            .collect::<std::result::Result<_, _>>()
            .map_err(bad)?,
        user_agents: r
            .user_agents
            .iter()
            .map(|u| UserAgentMatch::new(&u.r#match, &u.pattern))
            .collect::<std::result::Result<_, _>>()
            .map_err(bad)?,
        not_before: time(&r.not_before).map_err(bad)?,
        not_after: time(&r.not_after).map_err(bad)?,
        schedule: r
            .schedule
            .iter()
            .map(|w| Window::parse(w))
            .collect::<std::result::Result<_, _>>()
            .map_err(bad)?,
    })
}

fn set_conditions(rule: &mut pb::Rule, c: &Conditions) {
    let time = |t: Option<i64>| t.map(iam::format_time).unwrap_or_default();
    rule.source_ips = c.source_ips.iter().map(ToString::to_string).collect();
    rule.user_agents = c.user_agents.iter().map(user_agent).collect();
    rule.not_before = time(c.not_before);
    rule.not_after = time(c.not_after);
    rule.schedule = c.schedule.iter().map(ToString::to_string).collect();
}

fn user_agent(u: &UserAgentMatch) -> pb::UserAgent {
    pb::UserAgent {
        r#match: u.kind().to_owned(),
        pattern: u.pattern().to_owned(),
    }
}

/// The CLI's condition flags onto a rule, as text: the server validates them.
pub fn set_condition_args(rule: &mut pb::Rule, c: ConditionArgs) -> Result<()> {
    rule.user_agents = c
        .user_agents
        .iter()
        .map(|u| {
            let (kind, pattern) = u.split_once(':').ok_or_else(|| {
                bad(format!(
                    "--user-agent {u:?}: expected exact:V, prefix:V or glob:V"
                ))
            })?;
            Ok(pb::UserAgent {
                r#match: kind.to_owned(),
                pattern: pattern.to_owned(),
            })
        })
        .collect::<Result<_>>()?;
    rule.source_ips = c.source_ips;
    rule.not_before = c.not_before.unwrap_or_default();
    rule.not_after = c.not_after.unwrap_or_default();
    rule.schedule = c.schedule;
    Ok(())
}

impl TryFrom<&pb::Policy> for Policy {
    type Error = BadInput;

    fn try_from(p: &pb::Policy) -> Result<Self> {
        iam::validate_policy_name(&p.name).map_err(bad)?;
        let principal = if p.principal.is_empty() {
            None
        } else {
            Some(p.principal.parse().map_err(bad)?)
        };
        if p.rules.is_empty() {
            return Err(bad(format!("policy {} has no rules", p.name)));
        }
        let description = p.description.trim();
        crate::model::validate_description("policy description", description).map_err(bad)?;
        Ok(Policy {
            name: p.name.clone(),
            description: description.to_owned(),
            principal,
            rules: p.rules.iter().map(Rule::try_from).collect::<Result<_>>()?,
        })
    }
}

impl From<&Policy> for pb::Policy {
    fn from(p: &Policy) -> Self {
        pb::Policy {
            name: p.name.clone(),
            description: p.description.clone(),
            principal: p
                .principal
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            rules: p.rules.iter().map(pb::Rule::from).collect(),
        }
    }
}

pub fn route_key(host: &str, path_prefix: &str) -> Result<RouteKey> {
    RouteKey::new(host, path_prefix).map_err(bad)
}

/// A route from the API: the plane, when CONTROL, marks a control route without a deployment.
pub fn route(r: &pb::Route) -> Result<(RouteKey, RouteSpec)> {
    fn given(s: &str) -> Option<&str> {
        Some(s.trim()).filter(|s| !s.is_empty())
    }
    let control = pb::Plane::try_from(r.plane) == Ok(pb::Plane::Control);
    let spec = routes::spec_of(
        given(&r.endpoint),
        given(&r.deployment),
        given(&r.control_project),
        control,
    )
    .map_err(bad)?;
    Ok((route_key(&r.host, &r.path_prefix)?, spec))
}

pub fn route_pb(key: &RouteKey, spec: &RouteSpec) -> pb::Route {
    let (deployment, control_project) = match &spec.target {
        RouteTarget::Deployment(name) => (name.to_string(), String::new()),
        RouteTarget::Control(project) => (String::new(), project.clone().unwrap_or_default()),
    };
    pb::Route {
        host: key.host.clone(),
        path_prefix: key.path_prefix.clone(),
        endpoint: routes::endpoint_str(spec.endpoint).to_owned(),
        deployment,
        control_project,
        plane: pb::Plane::from(spec.plane()).into(),
    }
}

/// Seconds from the API as a duration keyward can add to a timestamp.
fn seconds(field: &str, value: u64) -> Result<i64> {
    i64::try_from(value)
        .ok()
        .filter(|s| *s <= 100 * 365 * 86_400)
        .ok_or_else(|| bad(format!("{field} must be at most 100 years")))
}

/// The `keys list` filters of a request.
pub fn key_filter(r: &pb::ListKeysRequest) -> Result<KeyFilter> {
    let deployment = match r.deployment.trim() {
        "" => None,
        name => Some(name.parse::<DeploymentName>().map_err(|e| {
            bad(format!(
                "deployment must be PROJECT/SLUG (keys attached to PROJECT/* are included): {e}"
            ))
        })?),
    };
    Ok(KeyFilter {
        deployment,
        expiring_within: r
            .expiring_within_seconds
            .map(|s| seconds("expiring_within_seconds", s))
            .transpose()?,
        unused_for: r
            .unused_for_seconds
            .map(|s| seconds("unused_for_seconds", s))
            .transpose()?,
    })
}

/// The `audit list` filters of a request.
pub fn audit_filter(r: &pb::ListAuditRequest) -> Result<audit::Filter> {
    let after_id = match r.page_token.as_str() {
        "" => None,
        token => Some(
            token
                .parse::<i64>()
                .ok()
                .filter(|id| *id >= 0)
                .ok_or_else(|| bad("invalid page_token"))?,
        ),
    };
    let text = |field: &str, value: &str| -> Result<String> {
        match value.len() > 512 || value.chars().any(char::is_control) {
            true => Err(bad(format!(
                "{field} must be at most 512 characters, without control characters"
            ))),
            false => Ok(value.trim().to_owned()),
        }
    };
    Ok(audit::Filter {
        since: r.since,
        principal: text("principal", &r.principal)?,
        target: text("target", &r.target)?,
        action: text("action", &r.action)?,
        after_id,
    })
}

pub fn audit_record(e: &audit::Entry) -> pb::AuditRecord {
    let r = &e.record;
    pb::AuditRecord {
        id: e.id,
        at: r.at,
        principal: r.principal.clone(),
        key_id: r.key_id.clone(),
        peer: r.peer.clone(),
        action: r.action.clone(),
        target: r.target.clone(),
        summary: r.summary.clone(),
        outcome: r.outcome.as_str().to_owned(),
    }
}

/// What an admin request is about, as a denied call's audit record names it (`kind:subject`,
/// like the targets of the writes: `key:ID`, `deployment:acme/bot`); empty for calls about
/// nothing in particular.
pub trait AuditTarget {
    fn audit_target(&self) -> String {
        String::new()
    }
}

macro_rules! audit_targets {
    ($($request:ident $(=> |$r:ident| $target:expr)?;)*) => {
        $(
            impl AuditTarget for pb::$request {
                $(fn audit_target(&self) -> String {
                    let $r = self;
                    $target
                })?
            }
        )*
    };
}

fn named(kind: &str, subject: &str) -> String {
    match subject.is_empty() {
        true => String::new(),
        false => format!("{kind}:{subject}"),
    }
}

audit_targets! {
    WhoAmIRequest;
    CreateProjectRequest => |r| named("project", &r.slug);
    ListProjectsRequest;
    CreateDeploymentRequest => |r| named("deployment", &format!("{}/{}", r.project, r.slug));
    ListDeploymentsRequest => |r| named("project", &r.project);
    SetDeploymentAuthRequest => |r| named("deployment", &format!("{}/{}", r.project, r.slug));
    CreateKeyRequest => |r| named("scope", &r.scope.join(","));
    ListKeysRequest => |r| match r.deployment.is_empty() {
        true => named("project", &r.project),
        false => named("deployment", &r.deployment),
    };
    GetKeyRequest => |r| named("key", &r.id);
    UpdateKeyRequest => |r| named("key", &r.id);
    RevokeKeyRequest => |r| named("key", &r.id);
    RotateKeyRequest => |r| named("key", &r.id);
    DeleteKeyRequest => |r| named("key", &r.id);
    AddMemberRequest => |r| named("user", &r.email);
    CreateApplicationRequest => |r| named("app", &r.name);
    ListPrincipalsRequest;
    RemovePrincipalRequest => |r| r.principal.clone();
    PermissionSet => |r| named("permission_set", &r.name);
    ListPermissionSetsRequest;
    DeletePermissionSetRequest => |r| named("permission_set", &r.name);
    Policy => |r| named("policy", &r.name);
    ListPoliciesRequest;
    DeletePolicyRequest => |r| named("policy", &r.name);
    Workload => |r| named("workload", &r.id);
    ListWorkloadsRequest => |r| named("project", &r.project);
    DeleteWorkloadRequest => |r| named("workload", &r.id);
    PutRouteRequest => |r| r
        .route
        .as_ref()
        .map(|route| named("route", &format!("{}{}", route.host, route.path_prefix)))
        .unwrap_or_default();
    ListRoutesRequest;
    DeleteRouteRequest => |r| named("route", &format!("{}{}", r.host, r.path_prefix));
    ApplyRequest;
    ExportRequest;
    ListAuditRequest;
    UpdateDeploymentRequest => |r| named("deployment", &format!("{}/{}", r.project, r.slug));
    SetPublicEndpointRequest => |r| named("deployment", &format!("{}/{}", r.project, r.slug));
    DeleteDeploymentRequest => |r| named("deployment", &format!("{}/{}", r.project, r.slug));
    UpdateProjectRequest => |r| named("project", &r.slug);
    DeleteProjectRequest => |r| named("project", &r.slug);
    ExplainRequest => |r| match (r.key_id.is_empty(), r.deployment.is_empty()) {
        (false, _) => named("key", &r.key_id),
        (true, false) => named("deployment", &r.deployment),
        (true, true) => r.principal.clone(),
    };
}
/// Whose request an Explain is about.
pub enum Whose {
    Key(String),
    Principal(PrincipalRef),
}

/// What an Explain names as its target, before it is resolved like Check resolves it.
pub enum ExplainTarget {
    Deployment(DeploymentName),
    Project(String),
    /// A control path; its project (or workload) is read from it as Check reads it.
    Path(String),
}

/// An Explain request, checked: exactly one of key and principal, exactly one of deployment,
/// project and path, and well-formed facts.
pub struct ExplainInput {
    pub whose: Whose,
    pub endpoint: Endpoint,
    pub plane: Plane,
    pub target: ExplainTarget,
    /// `PROJECT/SLUG` of a deployment target (empty otherwise), borrowed by the route.
    pub deployment_name: String,
    pub method: String,
    pub source_ip: Option<std::net::IpAddr>,
    pub user_agent: Option<String>,
    pub at: Option<i64>,
}

impl TryFrom<&pb::ExplainRequest> for ExplainInput {
    type Error = BadInput;

    fn try_from(r: &pb::ExplainRequest) -> Result<Self> {
        let whose = match (r.key_id.as_str(), r.principal.as_str()) {
            (id, "") if !id.is_empty() => Whose::Key(id.to_owned()),
            ("", principal) if !principal.is_empty() => {
                Whose::Principal(principal.parse().map_err(bad)?)
            }
            _ => return Err(bad("give exactly one of key_id and principal")),
        };
        let endpoint = match r.endpoint.as_str() {
            "" => Endpoint::Public,
            e => e.parse().map_err(bad)?,
        };
        let (plane, target) = match (r.deployment.as_str(), r.project.as_str(), r.path.as_str()) {
            (d, "", "") if !d.is_empty() => (
                Plane::Data,
                ExplainTarget::Deployment(
                    d.parse()
                        .map_err(|e| bad(format!("deployment {d:?}: {e}")))?,
                ),
            ),
            ("", p, "") if !p.is_empty() => {
                crate::model::validate_slug("project", p).map_err(bad)?;
                (Plane::Control, ExplainTarget::Project(p.to_owned()))
            }
            ("", "", path) if !path.is_empty() => {
                if !crate::authz::is_normalized(path) {
                    return Err(bad(format!(
                        "path {path:?} is not normalized: Check denies it as route_not_configured"
                    )));
                }
                (Plane::Control, ExplainTarget::Path(path.to_owned()))
            }
            _ => {
                return Err(bad(
                    "give exactly one of deployment (a data route), project or path (a control route)",
                ));
            }
        };
        let deployment_name = match &target {
            ExplainTarget::Deployment(name) => name.to_string(),
            _ => String::new(),
        };
        let method = match r.method.trim() {
            "" => "GET".to_owned(),
            m if m.len() <= 32 && m.bytes().all(|b| b.is_ascii_alphabetic()) => {
                m.to_ascii_uppercase()
            }
            m => return Err(bad(format!("invalid method {m:?}"))),
        };
        let method = match plane {
            Plane::Data if r.method.trim().is_empty() => "POST".to_owned(),
            _ => method,
        };
        let source_ip = match r.source_ip.as_str() {
            "" => None,
            ip => Some(
                ip.parse()
                    .map_err(|_| bad(format!("invalid source IP {ip:?}")))?,
            ),
        };
        let user_agent = (!r.user_agent.is_empty()).then(|| r.user_agent.clone());
        Ok(ExplainInput {
            whose,
            endpoint,
            plane,
            target,
            deployment_name,
            method,
            source_ip,
            user_agent,
            at: r.at,
        })
    }
}
