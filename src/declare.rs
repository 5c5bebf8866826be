//! The TOML format of `keyward apply -f FILE` and `keyward export` (documented in
//! docs/iam.md): parsing a file into a [`State`] with line numbers for its errors, and rendering
//! a state back. The state, its validation and its diff are [`crate::state`].
//!
//! Pure: no I/O. With `prune`, members, applications, custom permission sets, policies,
//! workloads and routes absent from the file are removed. Keys are never part of the state: their secret
//! is shown once, at creation.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;
use toml::Spanned;

use crate::condition::{Window, parse_source_ip};
use crate::iam::{
    self, Action, Conditions, PermissionSet, Policy, PrincipalRef, Rule, RuleScope,
    ScopeChoiceError, UserAgentMatch,
};
use crate::model::{DeploymentName, validate_description, validate_slug};
use crate::routes::{self, RouteKey, RouteTarget};
use crate::state::{DeploymentSpec, Locator, State, WorkloadRef, validate};

/// A rejected file: the first line at fault and why. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct FileError {
    pub line: usize,
    pub message: String,
}

// ---------------------------------------------------------------------------------------------
// The file format.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(default)]
    projects: Vec<Spanned<ProjectDoc>>,
    #[serde(default)]
    deployments: Vec<Spanned<DeploymentDoc>>,
    #[serde(default)]
    workloads: Vec<Spanned<WorkloadDoc>>,
    #[serde(default)]
    members: Vec<Spanned<MemberDoc>>,
    #[serde(default)]
    applications: Vec<Spanned<AppDoc>>,
    #[serde(default)]
    permission_sets: Vec<Spanned<SetDoc>>,
    #[serde(default)]
    policies: Vec<Spanned<PolicyDoc>>,
    #[serde(default)]
    routes: Vec<Spanned<RouteDoc>>,
}

/// A route table entry (docs/routes.md): `deployment`, `control_project`, or `control = true`
/// for a control route taking its project from the path.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteDoc {
    host: Spanned<String>,
    path_prefix: Spanned<String>,
    endpoint: Option<String>,
    deployment: Option<String>,
    control_project: Option<String>,
    #[serde(default)]
    control: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectDoc {
    slug: Spanned<String>,
    #[serde(default)]
    description: String,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentDoc {
    name: Spanned<String>,
    model: String,
    #[serde(default = "yes")]
    public_auth: bool,
    #[serde(default = "yes")]
    private_auth: bool,
    #[serde(default)]
    description: String,
    /// `false`: private-only; the public listener answers 404 for it.
    #[serde(default = "yes")]
    public_endpoint: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadDoc {
    id: Spanned<String>,
    project: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberDoc {
    email: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppDoc {
    name: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetDoc {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    actions: Vec<Spanned<String>>,
    #[serde(default)]
    includes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyDoc {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    principal: Option<Spanned<String>>,
    #[serde(default)]
    rules: Vec<Spanned<RuleDoc>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDoc {
    projects: Option<Vec<String>>,
    #[serde(default)]
    all_projects: bool,
    #[serde(default)]
    organization: bool,
    #[serde(default)]
    permission_sets: Vec<String>,
    #[serde(default)]
    source_ips: Vec<Spanned<String>>,
    #[serde(default)]
    user_agents: Vec<Spanned<UserAgentMatch>>,
    not_before: Option<Spanned<String>>,
    not_after: Option<Spanned<String>>,
    #[serde(default)]
    schedule: Vec<Spanned<String>>,
}

/// A parsed file: the state it describes and the line of each item, for error messages.
#[derive(Debug)]
pub struct File {
    pub state: State,
    lines: BTreeMap<Locator, usize>,
}

struct Lines<'a>(&'a str);

impl Lines<'_> {
    fn at(&self, offset: usize) -> usize {
        self.0[..offset.min(self.0.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }

    fn err<T>(&self, offset: usize, message: impl Into<String>) -> Result<T, FileError> {
        Err(FileError {
            line: self.at(offset),
            message: message.into(),
        })
    }
}

/// Parses and checks the shape of every value (slugs, emails, CIDRs, times, actions, duplicate
/// names). References between items are checked by [`File::resolve`].
pub fn parse(text: &str) -> Result<File, FileError> {
    let lines = Lines(text);
    let doc: Doc = toml::from_str(text).map_err(|e| FileError {
        line: e.span().map_or(1, |s| lines.at(s.start)),
        message: e.message().trim().to_owned(),
    })?;
    let mut state = State::default();
    let mut at = BTreeMap::new();
    for p in &doc.projects {
        let slug = p.get_ref().slug.get_ref();
        if let Err(e) = validate_slug("project", slug) {
            return lines.err(p.span().start, e);
        }
        let description = p.get_ref().description.trim();
        if let Err(e) = validate_description("project description", description) {
            return lines.err(p.span().start, e);
        }
        if state
            .projects
            .insert(slug.clone(), description.to_owned())
            .is_some()
        {
            return lines.err(p.span().start, format!("project {slug} is listed twice"));
        }
    }
    for d in &doc.deployments {
        let doc = d.get_ref();
        let name: DeploymentName = match doc.name.get_ref().parse() {
            Ok(n) => n,
            Err(e) => return lines.err(doc.name.span().start, e),
        };
        let model = doc.model.trim();
        if model.is_empty() || model.len() > 255 {
            return lines.err(d.span().start, "model must be 1-255 characters");
        }
        let description = doc.description.trim();
        if let Err(e) = validate_description("deployment description", description) {
            return lines.err(d.span().start, e);
        }
        let spec = DeploymentSpec {
            model: model.to_owned(),
            description: description.to_owned(),
            public_auth: doc.public_auth,
            private_auth: doc.private_auth,
            public_endpoint: doc.public_endpoint,
        };
        at.insert(Locator::Deployment(name.clone()), lines.at(d.span().start));
        if state.deployments.insert(name.clone(), spec).is_some() {
            return lines.err(d.span().start, format!("deployment {name} is listed twice"));
        }
    }
    for w in &doc.workloads {
        let doc = w.get_ref();
        let id = doc.id.get_ref();
        if let Err(e) = validate_slug("workload", id) {
            return lines.err(doc.id.span().start, e);
        }
        if let Err(e) = validate_slug("project", &doc.project) {
            return lines.err(w.span().start, e);
        }
        let workload = WorkloadRef {
            project: doc.project.clone(),
            id: id.clone(),
        };
        at.insert(
            Locator::Workload(workload.clone()),
            lines.at(w.span().start),
        );
        if !state.workloads.insert(workload.clone()) {
            return lines.err(
                w.span().start,
                format!("workload {workload} is listed twice"),
            );
        }
    }
    for m in &doc.members {
        let email = m.get_ref().email.get_ref();
        if let Err(e) = iam::validate_email(email) {
            return lines.err(m.span().start, e);
        }
        if !state.members.insert(email.clone()) {
            return lines.err(m.span().start, format!("member {email} is listed twice"));
        }
    }
    for a in &doc.applications {
        let name = a.get_ref().name.get_ref();
        if let Err(e) = iam::validate_app_name(name) {
            return lines.err(a.span().start, e);
        }
        if !state.applications.insert(name.clone()) {
            return lines.err(
                a.span().start,
                format!("application {name} is listed twice"),
            );
        }
    }
    for s in &doc.permission_sets {
        let doc = s.get_ref();
        let name = doc.name.get_ref();
        if let Err(e) = iam::validate_set_name(name) {
            return lines.err(doc.name.span().start, e);
        }
        let mut actions = Vec::new();
        for a in &doc.actions {
            match a.get_ref().parse::<Action>() {
                Ok(action) => actions.push(action),
                Err(e) => return lines.err(a.span().start, e),
            }
        }
        if let Err(e) =
            crate::model::validate_description("permission set description", &doc.description)
        {
            return lines.err(s.span().start, e);
        }
        let Some(set) = PermissionSet::new(
            name.clone(),
            doc.description.clone(),
            actions,
            doc.includes.clone(),
        ) else {
            return lines.err(
                s.span().start,
                format!("permission set {name} has no actions and includes nothing"),
            );
        };
        at.insert(
            Locator::PermissionSet(name.clone()),
            lines.at(s.span().start),
        );
        if state.permission_sets.insert(name.clone(), set).is_some() {
            return lines.err(
                s.span().start,
                format!("permission set {name} is listed twice"),
            );
        }
    }
    for p in &doc.policies {
        let doc = p.get_ref();
        let name = doc.name.get_ref();
        if let Err(e) = iam::validate_policy_name(name) {
            return lines.err(doc.name.span().start, e);
        }
        let principal = match &doc.principal {
            None => None,
            Some(r) => match r.get_ref().parse::<PrincipalRef>() {
                Ok(r) => Some(r),
                Err(e) => return lines.err(r.span().start, e),
            },
        };
        if doc.rules.is_empty() {
            return lines.err(p.span().start, format!("policy {name} has no rules"));
        }
        let mut rules = Vec::new();
        for (i, r) in doc.rules.iter().enumerate() {
            at.insert(Locator::Rule(name.clone(), i), lines.at(r.span().start));
            rules.push(rule_of(&lines, r)?);
        }
        if let Err(e) = crate::model::validate_description("policy description", &doc.description) {
            return lines.err(p.span().start, e);
        }
        at.insert(Locator::Policy(name.clone()), lines.at(p.span().start));
        let policy = Policy {
            name: name.clone(),
            description: doc.description.clone(),
            principal,
            rules,
        };
        if state.policies.insert(name.clone(), policy).is_some() {
            return lines.err(p.span().start, format!("policy {name} is listed twice"));
        }
    }
    for r in &doc.routes {
        let doc = r.get_ref();
        let host = routes::host_pattern(doc.host.get_ref())
            .or_else(|e| lines.err(doc.host.span().start, e))?;
        let path_prefix = routes::path_prefix_of(doc.path_prefix.get_ref())
            .or_else(|e| lines.err(doc.path_prefix.span().start, e))?;
        let key = RouteKey { host, path_prefix };
        let spec = routes::spec_of(
            doc.endpoint.as_deref(),
            doc.deployment.as_deref(),
            doc.control_project.as_deref(),
            doc.control,
        )
        .or_else(|e| lines.err(r.span().start, e))?;
        at.insert(Locator::Route(key.clone()), lines.at(r.span().start));
        if state.routes.insert(key.clone(), spec).is_some() {
            return lines.err(r.span().start, format!("route {key} is listed twice"));
        }
    }
    Ok(File { state, lines: at })
}

fn rule_of(lines: &Lines<'_>, spanned: &Spanned<RuleDoc>) -> Result<Rule, FileError> {
    let r = spanned.get_ref();
    let start = spanned.span().start;
    let scope = RuleScope::choose(r.projects.as_deref(), r.all_projects, r.organization)
        .or_else(|e| {
            lines.err(
                start,
                match e {
                    ScopeChoiceError::None => {
                        "empty rule: give a scope (projects = [...], all_projects = true or organization = true)"
                    }
                    ScopeChoiceError::Several => {
                        "a rule has exactly one scope: projects, all_projects or organization"
                    }
                },
            )
        })?;
    let at = |value: &Spanned<_>| value.span().start;
    let source_ips = r
        .source_ips
        .iter()
        .map(|ip| parse_source_ip(ip.get_ref()).or_else(|e| lines.err(at(ip), e)))
        .collect::<Result<_, _>>()?;
    let time = |t: &Option<Spanned<String>>| -> Result<Option<i64>, FileError> {
        t.as_ref()
            .map(|t| iam::parse_time(t.get_ref()).or_else(|e| lines.err(at(t), e)))
            .transpose()
    };
    let conditions = Conditions {
        source_ips,
        user_agents: r.user_agents.iter().map(|u| u.get_ref().clone()).collect(),
        not_before: time(&r.not_before)?,
        not_after: time(&r.not_after)?,
        schedule: r
            .schedule
            .iter()
            .map(|w| Window::parse(w.get_ref()).or_else(|e| lines.err(at(w), e)))
            .collect::<Result<_, _>>()?,
    };
    for u in &r.user_agents {
        u.get_ref()
            .validate()
            .or_else(|e| lines.err(u.span().start, e))?;
    }
    Rule::new(scope, r.permission_sets.clone(), conditions).or_else(|e| lines.err(start, e))
}

impl File {
    /// The state after applying this file onto `current`: the file's items override, the
    /// rest of `current` stays unless `prune`. Validated as a whole; errors name the line.
    pub fn resolve(&self, current: &State, prune: bool) -> Result<State, FileError> {
        let mut result = if prune {
            State {
                projects: current.projects.clone(),
                deployments: current.deployments.clone(),
                ..State::default()
            }
        } else {
            current.clone()
        };
        let f = &self.state;
        result.projects.extend(f.projects.clone());
        result.deployments.extend(f.deployments.clone());
        result.workloads.extend(f.workloads.clone());
        result.members.extend(f.members.iter().cloned());
        result.applications.extend(f.applications.iter().cloned());
        result.permission_sets.extend(f.permission_sets.clone());
        result.policies.extend(f.policies.clone());
        result.routes.extend(f.routes.clone());
        validate(&result).map_err(|(locator, message)| FileError {
            line: self.line_of(&locator),
            message,
        })?;
        Ok(result)
    }

    /// A rule falls back to its policy; items only in the database have no line (0).
    fn line_of(&self, locator: &Locator) -> usize {
        self.lines
            .get(locator)
            .or_else(|| match locator {
                Locator::Rule(policy, _) => self.lines.get(&Locator::Policy(policy.clone())),
                _ => None,
            })
            .copied()
            .unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------------------------
// Export.
// ---------------------------------------------------------------------------------------------

fn q(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn list<T: AsRef<str>>(items: &[T]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| q(s.as_ref())).collect();
    format!("[{}]", quoted.join(", "))
}

/// Renders `state` in the `apply` format. Holds no secret: keys are not part of the state.
pub fn render(state: &State) -> String {
    let mut out =
        String::from("# keyward state, `keyward export`; apply with `keyward apply -f`.\n");
    for (slug, description) in &state.projects {
        let _ = write!(out, "\n[[projects]]\nslug = {}\n", q(slug));
        if !description.is_empty() {
            let _ = writeln!(out, "description = {}", q(description));
        }
    }
    for (name, spec) in &state.deployments {
        let _ = write!(
            out,
            "\n[[deployments]]\nname = {}\nmodel = {}\npublic_auth = {}\nprivate_auth = {}\n",
            q(&name.to_string()),
            q(&spec.model),
            spec.public_auth,
            spec.private_auth
        );
        if !spec.public_endpoint {
            out.push_str("public_endpoint = false\n");
        }
        if !spec.description.is_empty() {
            let _ = writeln!(out, "description = {}", q(&spec.description));
        }
    }
    for w in &state.workloads {
        let _ = write!(
            out,
            "\n[[workloads]]\nid = {}\nproject = {}\n",
            q(&w.id),
            q(&w.project)
        );
    }
    for m in &state.members {
        let _ = write!(out, "\n[[members]]\nemail = {}\n", q(m));
    }
    for a in &state.applications {
        let _ = write!(out, "\n[[applications]]\nname = {}\n", q(a));
    }
    for set in state.permission_sets.values() {
        let actions: Vec<&str> = set.actions.iter().map(|a| a.as_str()).collect();
        let _ = write!(
            out,
            "\n[[permission_sets]]\nname = {}\ndescription = {}\nactions = {}\nincludes = {}\n",
            q(&set.name),
            q(&set.description),
            list(&actions),
            list(&set.includes)
        );
    }
    for policy in state.policies.values() {
        let _ = write!(
            out,
            "\n[[policies]]\nname = {}\ndescription = {}\n",
            q(&policy.name),
            q(&policy.description)
        );
        if let Some(p) = &policy.principal {
            let _ = writeln!(out, "principal = {}", q(&p.to_string()));
        }
        for rule in &policy.rules {
            out.push_str("\n  [[policies.rules]]\n");
            match &rule.scope {
                RuleScope::Projects(p) => {
                    let _ = writeln!(out, "  projects = {}", list(p));
                }
                RuleScope::AllProjects => out.push_str("  all_projects = true\n"),
                RuleScope::Organization => out.push_str("  organization = true\n"),
            }
            let _ = writeln!(out, "  permission_sets = {}", list(&rule.permission_sets));
            let c = &rule.conditions;
            if !c.source_ips.is_empty() {
                let ips: Vec<String> = c.source_ips.iter().map(ToString::to_string).collect();
                let _ = writeln!(out, "  source_ips = {}", list(&ips));
            }
            if !c.user_agents.is_empty() {
                let uas: Vec<String> = c
                    .user_agents
                    .iter()
                    .map(|u| format!("{{ {} = {} }}", u.kind(), q(u.pattern())))
                    .collect();
                let _ = writeln!(out, "  user_agents = [{}]", uas.join(", "));
            }
            if let Some(t) = c.not_before {
                let _ = writeln!(out, "  not_before = {}", q(&iam::format_time(t)));
            }
            if let Some(t) = c.not_after {
                let _ = writeln!(out, "  not_after = {}", q(&iam::format_time(t)));
            }
            if !c.schedule.is_empty() {
                let windows: Vec<String> = c.schedule.iter().map(ToString::to_string).collect();
                let _ = writeln!(out, "  schedule = {}", list(&windows));
            }
        }
    }
    for (key, spec) in &state.routes {
        let _ = write!(
            out,
            "\n[[routes]]\nhost = {}\npath_prefix = {}\nendpoint = {}\n",
            q(&key.host),
            q(&key.path_prefix),
            q(routes::endpoint_str(spec.endpoint))
        );
        let _ = match &spec.target {
            RouteTarget::Deployment(name) => writeln!(out, "deployment = {}", q(&name.to_string())),
            RouteTarget::Control(Some(project)) => {
                writeln!(out, "control_project = {}", q(project))
            }
            RouteTarget::Control(None) => writeln!(out, "control = true"),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::diff;

    const GOOD: &str = r#"
[[projects]]
slug = "acme"

[[deployments]]
name = "acme/chat"
model = "llama"
public_auth = false

[[workloads]]
id = "w-1"
project = "acme"

[[members]]
email = "alice@example.com"

[[applications]]
name = "ci"

[[permission_sets]]
name = "Deployer"
actions = ["deployments.write"]
includes = ["InferenceReadOnly"]

[[policies]]
name = "ci-deploy"
principal = "app:ci"

  [[policies.rules]]
  projects = ["acme"]
  permission_sets = ["Deployer"]
  source_ips = ["10.0.0.0/8", "2001:db8::/32"]
  user_agents = [{ prefix = "terraform/" }, { glob = "curl/*" }]
  not_before = "2025-01-01T00:00:00Z"
  not_after = "2030-01-01T00:00:00Z"
  schedule = ["Mon-Fri 08:00-18:00 Europe/Paris", "Sat 22:00-02:00 America/New_York"]

  [[policies.rules]]
  organization = true
  permission_sets = ["AllProductsFullAccess"]

[[routes]]
host = "*.Example.com"
path_prefix = "/acme/chat/"
deployment = "acme/chat"

[[routes]]
host = "private.example.net"
path_prefix = "/acme/chat"
endpoint = "private"
deployment = "acme/chat"

[[routes]]
host = "*"
path_prefix = "/api/projects/acme"
control_project = "acme"

[[routes]]
host = "*"
path_prefix = "/api"
endpoint = "private"
control = true
"#;

    #[test]
    fn parse_render_parse_is_stable() {
        let file = parse(GOOD).unwrap();
        let state = file.resolve(&State::default(), false).unwrap();
        assert_eq!(state.deployments.len(), 1);
        assert!(!state.deployments.values().next().unwrap().public_auth);
        assert_eq!(state.routes.len(), 4);
        assert!(
            state
                .routes
                .contains_key(&RouteKey::new("*.example.com", "/acme/chat").unwrap()),
            "normalized: {:?}",
            state.routes.keys()
        );
        let rendered = render(&state);
        let again = parse(&rendered).unwrap().resolve(&State::default(), false);
        assert_eq!(again.unwrap(), state, "{rendered}");
        assert!(diff(&state, &state).is_empty());
        let ops = diff(&State::default(), &state);
        assert!(ops.iter().all(|o| o.describe().starts_with('+')), "{ops:?}");
    }

    #[test]
    fn lifecycle_fields_round_trip() {
        let text = r#"
[[projects]]
slug = "acme"
description = "Acme's assistants"

[[projects]]
slug = "beta"

[[deployments]]
name = "acme/chat"
model = "llama"
public_endpoint = false
description = "private network only"

[[workloads]]
id = "w-1"
project = "acme"

[[workloads]]
id = "w-1"
project = "beta"
"#;
        let state = parse(text)
            .unwrap()
            .resolve(&State::default(), false)
            .unwrap();
        let chat = state.deployments.values().next().unwrap();
        assert!(!chat.public_endpoint && chat.public_auth);
        assert_eq!(chat.description, "private network only");
        assert_eq!(state.projects["acme"], "Acme's assistants");
        assert_eq!(state.workloads.len(), 2, "one id, two projects");
        let rendered = render(&state);
        let again = parse(&rendered).unwrap().resolve(&State::default(), false);
        assert_eq!(again.unwrap(), state, "{rendered}");
        let twice = text.replace("project = \"beta\"", "project = \"acme\"");
        assert!(rejected(&twice).message.contains("listed twice"));
        let mut restored = state.clone();
        restored
            .deployments
            .values_mut()
            .for_each(|d| d.public_endpoint = true);
        let ops = diff(&state, &restored);
        assert_eq!(ops.len(), 1, "{ops:?}");
        assert!(
            ops[0].describe().starts_with("~ deployment acme/chat"),
            "{ops:?}"
        );
        assert!(
            diff(&restored, &state)[0]
                .describe()
                .contains("public_endpoint off")
        );
    }

    fn rejected(text: &str) -> FileError {
        match parse(text).and_then(|f| f.resolve(&State::default(), false)) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e,
        }
    }

    #[test]
    fn bad_files_name_the_line_and_the_reason() {
        let cases = [
            (
                "permission_sets = [\"Deployer\"]",
                "permission_sets = [\"Nope\"]",
                "unknown permission set",
            ),
            ("\"10.0.0.0/8\"", "\"10.0.0.0/33\"", "invalid CIDR"),
            ("\"2025-01-01T00:00:00Z\"", "\"2025-01-01\"", "invalid time"),
            (
                "principal = \"app:ci\"",
                "principal = \"app:ghost\"",
                "app:ghost does not exist",
            ),
            (
                "projects = [\"acme\"]\n",
                "projects = [\"beta\"]\n",
                "project beta does not exist",
            ),
            (
                "includes = [\"InferenceReadOnly\"]",
                "includes = [\"Deployer\"]",
                "cycle",
            ),
            ("organization = true\n", "", "empty rule"),
            (
                "actions = [\"deployments.write\"]",
                "actions = [\"deployments.rm\"]",
                "unknown action",
            ),
            (
                "path_prefix = \"/acme/chat/\"",
                "path_prefix = \"acme/chat\"",
                "must start with /",
            ),
            (
                "host = \"*.Example.com\"",
                "host = \"a.*.com\"",
                "invalid route host",
            ),
            (
                "endpoint = \"private\"\ndeployment",
                "endpoint = \"internal\"\ndeployment",
                "unknown endpoint",
            ),
            (
                "deployment = \"acme/chat\"\n\n[[routes]]\nhost = \"private",
                "deployment = \"acme/gone\"\n\n[[routes]]\nhost = \"private",
                "deployment acme/gone does not exist",
            ),
            (
                "control_project = \"acme\"",
                "control_project = \"beta\"",
                "project beta does not exist",
            ),
            ("control = true\n", "", "a route needs a deployment"),
            (
                "Europe/Paris",
                "Europe/Pariss",
                "unknown time zone \"Europe/Pariss\"",
            ),
            ("Mon-Fri 08:00", "Mon-Fry 08:00", "unknown day \"Fry\""),
            ("08:00-18:00", "08:00-25:00", "invalid hour \"25:00\""),
            (
                "control_project = \"acme\"",
                "control_project = \"acme\"\ndeployment = \"acme/chat\"",
                "not both",
            ),
        ];
        for (from, to, reason) in cases {
            let text = GOOD.replacen(from, to, 1);
            assert_ne!(text, GOOD, "{from}");
            let err = rejected(&text);
            assert!(err.message.contains(reason), "{reason}: {err}");
            assert!(err.line > 1, "{reason}: {err}");
            let line = text.lines().nth(err.line - 1).unwrap_or_default();
            assert!(!line.trim().is_empty(), "{reason}: {err} at {line:?}");
        }
        let err = rejected("[[projects]]\nslug = 3\n");
        assert_eq!(err.line, 2, "{err}");
        let err = rejected("[[projekts]]\nslug = \"a\"\n");
        assert_eq!(err.line, 1, "{err}");
    }
}
