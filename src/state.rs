//! The declarative state: everything `apply` manages ([`State`]), its validation as a whole
//! and the diff between two states as a list of [`Op`]s the store applies in one transaction.
//!
//! Pure: no I/O and no file format (the TOML of `apply` / `export` is [`crate::declare`]).
//! Projects and deployments are created or updated, never removed by a diff (they are deleted
//! one at a time, [`Op::RemoveDeployment`] and [`Op::RemoveProject`], by the admin calls that
//! check what refers to them); members, applications, custom permission sets, policies,
//! workloads and routes absent from the desired state are removed.

use std::collections::{BTreeMap, BTreeSet};

use crate::iam::{self, PermissionSet, Policy, PrincipalRef, RuleScope};
use crate::model::DeploymentName;
use crate::routes::{RouteKey, RouteSpec, RouteTarget};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentSpec {
    pub model: String,
    pub description: String,
    pub public_auth: bool,
    pub private_auth: bool,
    /// `false`: private-only (the public listener answers 404 for it).
    pub public_endpoint: bool,
}

/// A workload id is unique within its project only: the same id may name workloads of two
/// projects, and neither project can learn of the other's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkloadRef {
    pub project: String,
    pub id: String,
}

impl std::fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (project {})", self.id, self.project)
    }
}

/// Everything `apply` manages, normalized (sorted maps, so diffs and exports are stable).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Project slug → its description.
    pub projects: BTreeMap<String, String>,
    pub deployments: BTreeMap<DeploymentName, DeploymentSpec>,
    pub workloads: BTreeSet<WorkloadRef>,
    pub members: BTreeSet<String>,
    pub applications: BTreeSet<String>,
    pub permission_sets: BTreeMap<String, PermissionSet>,
    pub policies: BTreeMap<String, Policy>,
    pub routes: BTreeMap<RouteKey, RouteSpec>,
}

/// One write. `create` distinguishes insert from update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    CreateProject(String),
    /// Sets a project's description (a new project's too).
    DescribeProject {
        slug: String,
        description: String,
    },
    PutDeployment {
        name: DeploymentName,
        spec: DeploymentSpec,
        create: bool,
    },
    AddWorkload(WorkloadRef),
    AddMember(String),
    AddApplication(String),
    PutPermissionSet {
        set: PermissionSet,
        create: bool,
    },
    PutPolicy {
        policy: Policy,
        create: bool,
    },
    RemovePolicy(String),
    RemovePermissionSet(String),
    RemoveWorkload(WorkloadRef),
    /// Deletes a deployment; its keys' attachments to it go with it (`PROJECT/*` stays).
    RemoveDeployment(DeploymentName),
    /// Deletes a project that nothing refers to any more.
    RemoveProject(String),
    PutRoute {
        key: RouteKey,
        spec: RouteSpec,
        create: bool,
    },
    RemoveRoute(RouteKey),
    /// Removes the principal, deletes its keys and detaches its policies.
    RemovePrincipal(PrincipalRef),
}

impl Op {
    /// The dry-run line: `+` create, `~` update, `-` remove.
    pub fn describe(&self) -> String {
        match self {
            Op::CreateProject(p) => format!("+ project {p}"),
            Op::DescribeProject { slug, .. } => format!("~ project {slug} (description)"),
            Op::PutDeployment { name, spec, create } => format!(
                "{} deployment {name} (model {}, public_auth {}, private_auth {}{})",
                sign(*create),
                spec.model,
                on_off(spec.public_auth),
                on_off(spec.private_auth),
                if spec.public_endpoint {
                    ""
                } else {
                    ", public_endpoint off"
                }
            ),
            Op::AddWorkload(w) => format!("+ workload {w}"),
            Op::AddMember(e) => format!("+ member {e}"),
            Op::AddApplication(n) => format!("+ application {n}"),
            Op::PutPermissionSet { set, create } => {
                format!("{} permission set {}", sign(*create), set.name)
            }
            Op::PutPolicy { policy, create } => format!(
                "{} policy {} ({} rule{}, {})",
                sign(*create),
                policy.name,
                policy.rules.len(),
                if policy.rules.len() == 1 { "" } else { "s" },
                policy
                    .principal
                    .as_ref()
                    .map_or("detached".to_owned(), |p| format!("attached to {p}"))
            ),
            Op::RemovePolicy(n) => format!("- policy {n}"),
            Op::RemovePermissionSet(n) => format!("- permission set {n}"),
            Op::RemoveWorkload(w) => format!("- workload {w}"),
            Op::RemoveDeployment(name) => {
                format!("- deployment {name} (its keys' attachments to it are removed)")
            }
            Op::RemoveProject(slug) => format!("- project {slug}"),
            Op::PutRoute { key, spec, create } => {
                let target = match &spec.target {
                    RouteTarget::Deployment(name) => format!("deployment {name}"),
                    RouteTarget::Control(Some(project)) => format!("control project {project}"),
                    RouteTarget::Control(None) => "control, project from the path".to_owned(),
                };
                format!(
                    "{} route {key} ({}, {target})",
                    sign(*create),
                    crate::routes::endpoint_str(spec.endpoint)
                )
            }
            Op::RemoveRoute(key) => format!("- route {key}"),
            Op::RemovePrincipal(p) => format!("- principal {p} (its keys are deleted)"),
        }
    }
}

fn sign(create: bool) -> char {
    if create { '+' } else { '~' }
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// What a validation error is about, so `apply` can point at its line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Locator {
    Deployment(DeploymentName),
    Workload(WorkloadRef),
    PermissionSet(String),
    Policy(String),
    Rule(String, usize),
    Route(RouteKey),
}

/// Checks every reference of `state`: projects of deployments, workloads and rules; principals
/// of policies; permission sets of rules and includes (cycles too); rule shapes.
pub fn validate(state: &State) -> Result<(), (Locator, String)> {
    for name in state.deployments.keys() {
        if !state.projects.contains_key(&name.project) {
            return Err((
                Locator::Deployment(name.clone()),
                format!("project {} does not exist", name.project),
            ));
        }
    }
    for w in &state.workloads {
        if !state.projects.contains_key(&w.project) {
            return Err((
                Locator::Workload(w.clone()),
                format!("project {} does not exist", w.project),
            ));
        }
    }
    for (key, spec) in &state.routes {
        let missing = match &spec.target {
            RouteTarget::Deployment(name) => (!state.deployments.contains_key(name))
                .then(|| format!("route {key}: deployment {name} does not exist")),
            RouteTarget::Control(Some(project)) => (!state.projects.contains_key(project))
                .then(|| format!("route {key}: project {project} does not exist")),
            RouteTarget::Control(None) => None,
        };
        if let Some(message) = missing {
            return Err((Locator::Route(key.clone()), message));
        }
    }
    let custom: Vec<PermissionSet> = state.permission_sets.values().cloned().collect();
    let sets = iam::resolve_sets(&custom).map_err(|e| {
        let culprit = state
            .permission_sets
            .keys()
            .find(|n| e.contains(&format!("{n:?}")) || e.contains(n.as_str()))
            .cloned()
            .unwrap_or_default();
        (Locator::PermissionSet(culprit), e)
    })?;
    for policy in state.policies.values() {
        let at = || Locator::Policy(policy.name.clone());
        match &policy.principal {
            None | Some(PrincipalRef::Owner) => {}
            Some(PrincipalRef::User(e)) if state.members.contains(e) => {}
            Some(PrincipalRef::App(n)) if state.applications.contains(n) => {}
            Some(other) => return Err((at(), format!("principal {other} does not exist"))),
        }
        if policy.rules.is_empty() {
            return Err((at(), format!("policy {} has no rules", policy.name)));
        }
        for (i, rule) in policy.rules.iter().enumerate() {
            let at = || Locator::Rule(policy.name.clone(), i);
            rule.validate().map_err(|e| (at(), e))?;
            for set in &rule.permission_sets {
                if !sets.contains_key(set) {
                    return Err((at(), format!("unknown permission set {set:?}")));
                }
            }
            if let RuleScope::Projects(projects) = &rule.scope {
                for p in projects {
                    if !state.projects.contains_key(p) {
                        return Err((at(), format!("project {p} does not exist")));
                    }
                }
            }
        }
    }
    Ok(())
}

/// What in `state` refers to project `slug` and so stands in the way of deleting it: its
/// deployments, workloads, route entries and policies whose rules name it. (Keys are not part
/// of the state: the store refuses a project keys are scoped to.)
pub fn project_references(state: &State, slug: &str) -> Vec<String> {
    let mut found: Vec<String> = state
        .deployments
        .keys()
        .filter(|d| d.project == slug)
        .map(|d| format!("deployment {d}"))
        .collect();
    found.extend(
        state
            .workloads
            .iter()
            .filter(|w| w.project == slug)
            .map(|w| format!("workload {}", w.id)),
    );
    found.extend(
        state
            .routes
            .iter()
            .filter(|(_, spec)| match &spec.target {
                RouteTarget::Deployment(name) => name.project == slug,
                RouteTarget::Control(project) => project.as_deref() == Some(slug),
            })
            .map(|(key, _)| format!("route {key}")),
    );
    found.extend(
        state
            .policies
            .values()
            .filter(|p| {
                p.rules.iter().any(|r| {
                    matches!(&r.scope, RuleScope::Projects(projects) if projects.iter().any(|p| p == slug))
                })
            })
            .map(|p| format!("policy {}", p.name)),
    );
    found
}

/// What in `state` refers to deployment `name` by name and so stands in the way of deleting
/// it: route table entries (keys' attachments are removed with it).
pub fn deployment_references(state: &State, name: &DeploymentName) -> Vec<String> {
    state
        .routes
        .iter()
        .filter(|(_, spec)| spec.target == RouteTarget::Deployment(name.clone()))
        .map(|(key, _)| format!("route {key}"))
        .collect()
}

/// The ops turning `current` into `desired`. Projects and deployments are never removed.
pub fn diff(current: &State, desired: &State) -> Vec<Op> {
    let mut ops = Vec::new();
    for (slug, description) in &desired.projects {
        let now = current.projects.get(slug);
        if now.is_none() {
            ops.push(Op::CreateProject(slug.clone()));
        }
        if now.is_some_and(|d| d != description) || (now.is_none() && !description.is_empty()) {
            ops.push(Op::DescribeProject {
                slug: slug.clone(),
                description: description.clone(),
            });
        }
    }
    for (name, spec) in &desired.deployments {
        match current.deployments.get(name) {
            Some(now) if now == spec => {}
            now => ops.push(Op::PutDeployment {
                name: name.clone(),
                spec: spec.clone(),
                create: now.is_none(),
            }),
        }
    }
    for w in desired.workloads.difference(&current.workloads) {
        ops.push(Op::AddWorkload(w.clone()));
    }
    for m in desired.members.difference(&current.members) {
        ops.push(Op::AddMember(m.clone()));
    }
    for a in desired.applications.difference(&current.applications) {
        ops.push(Op::AddApplication(a.clone()));
    }
    for (name, set) in &desired.permission_sets {
        match current.permission_sets.get(name) {
            Some(now) if now == set => {}
            now => ops.push(Op::PutPermissionSet {
                set: set.clone(),
                create: now.is_none(),
            }),
        }
    }
    for (name, policy) in &desired.policies {
        match current.policies.get(name) {
            Some(now) if now == policy => {}
            now => ops.push(Op::PutPolicy {
                policy: policy.clone(),
                create: now.is_none(),
            }),
        }
    }
    for (key, spec) in &desired.routes {
        match current.routes.get(key) {
            Some(now) if now == spec => {}
            now => ops.push(Op::PutRoute {
                key: key.clone(),
                spec: spec.clone(),
                create: now.is_none(),
            }),
        }
    }
    // Removals last, policies before what they reference.
    for name in current.policies.keys() {
        if !desired.policies.contains_key(name) {
            ops.push(Op::RemovePolicy(name.clone()));
        }
    }
    for name in current.permission_sets.keys() {
        if !desired.permission_sets.contains_key(name) {
            ops.push(Op::RemovePermissionSet(name.clone()));
        }
    }
    for w in current.workloads.difference(&desired.workloads) {
        ops.push(Op::RemoveWorkload(w.clone()));
    }
    for key in current.routes.keys() {
        if !desired.routes.contains_key(key) {
            ops.push(Op::RemoveRoute(key.clone()));
        }
    }
    for m in current.members.difference(&desired.members) {
        ops.push(Op::RemovePrincipal(PrincipalRef::User(m.clone())));
    }
    for a in current.applications.difference(&desired.applications) {
        ops.push(Op::RemovePrincipal(PrincipalRef::App(a.clone())));
    }
    ops
}
