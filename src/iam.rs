//! IAM data: actions, permission sets, policies, rules and their conditions, and the
//! [`Grants`] a principal holds once its policies are resolved. Pure data and pure evaluation;
//! [`crate::policy::decide`] calls [`Grants::evaluate`], the store persists these types.
//!
//! A rule grants the actions of its permission sets within its scope, when all of its
//! conditions ([`crate::condition`]) hold.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::explain::{NoTrace, RuleVerdict, Trace};

pub use crate::condition::{
    Conditions, Facts, MAX_USER_AGENT_PATTERN, UserAgentMatch, Window, format_time, parse_time,
};

/// An IAM action. Resource actions are granted per project; organization features only by
/// rules scoped to the organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Action {
    #[serde(rename = "inference.call")]
    InferenceCall,
    #[serde(rename = "deployments.read")]
    DeploymentsRead,
    #[serde(rename = "deployments.write")]
    DeploymentsWrite,
    /// Turning a deployment's authentication off: opening it to anonymous callers. Granted by
    /// no built-in set below AllProductsFullAccess.
    #[serde(rename = "deployments.auth")]
    DeploymentsAuth,
    /// Organization feature: members, applications, policies, permission sets, other
    /// principals' keys.
    #[serde(rename = "iam.manage")]
    IamManage,
    /// Organization feature: creating projects.
    #[serde(rename = "projects.write")]
    ProjectsWrite,
    /// Organization feature: the route table (`keyward routes`). Routes are shared
    /// infrastructure: an entry decides which deployment every matching request reaches, in
    /// any project, so only an organization-scope rule grants it (and IAM managers hold it).
    #[serde(rename = "routes.manage")]
    RoutesManage,
    /// Organization feature: reading the audit log (`keyward audit list`). It names every
    /// principal, key id and target in the organization, so only an organization-scope rule
    /// grants it (AllProductsFullAccess and IAM managers hold it).
    #[serde(rename = "audit.read")]
    AuditRead,
    /// Organization feature: reading how the organization's policies decide, with
    /// `keyward explain` (any key's or principal's request, each rule considered). IAM managers
    /// hold it.
    #[serde(rename = "iam.read")]
    IamRead,
}

impl Action {
    pub const ALL: [Action; 9] = [
        Action::InferenceCall,
        Action::DeploymentsRead,
        Action::DeploymentsWrite,
        Action::DeploymentsAuth,
        Action::IamManage,
        Action::ProjectsWrite,
        Action::RoutesManage,
        Action::AuditRead,
        Action::IamRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::InferenceCall => "inference.call",
            Action::DeploymentsRead => "deployments.read",
            Action::DeploymentsWrite => "deployments.write",
            Action::DeploymentsAuth => "deployments.auth",
            Action::IamManage => "iam.manage",
            Action::ProjectsWrite => "projects.write",
            Action::RoutesManage => "routes.manage",
            Action::AuditRead => "audit.read",
            Action::IamRead => "iam.read",
        }
    }

    /// Whether only organization-scope rules grant this action.
    pub fn is_organization_feature(self) -> bool {
        matches!(
            self,
            Action::IamManage
                | Action::ProjectsWrite
                | Action::RoutesManage
                | Action::AuditRead
                | Action::IamRead
        )
    }
}

impl FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<_> = Action::ALL.iter().map(|a| a.as_str()).collect();
                format!("unknown action {s:?} (known: {})", known.join(", "))
            })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The built-in permission sets and their actions.
pub fn builtin_set(name: &str) -> Option<BTreeSet<Action>> {
    use Action::*;
    Some(match name {
        "InferenceFullAccess" => [InferenceCall, DeploymentsRead, DeploymentsWrite].into(),
        "InferenceReadOnly" => [InferenceCall, DeploymentsRead].into(),
        "AllProductsFullAccess" => Action::ALL.into(),
        _ => return None,
    })
}

pub const BUILTIN_SETS: [&str; 3] = [
    "InferenceFullAccess",
    "InferenceReadOnly",
    "AllProductsFullAccess",
];

/// A custom permission set: its own actions plus those of the sets it includes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionSet {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub actions: Vec<Action>,
    #[serde(default)]
    pub includes: Vec<String>,
}

impl PermissionSet {
    /// A set from any edge, actions and includes sorted and deduplicated; `None` when it has
    /// neither (each edge words that error its own way).
    pub fn new(
        name: String,
        description: String,
        mut actions: Vec<Action>,
        mut includes: Vec<String>,
    ) -> Option<PermissionSet> {
        actions.sort();
        actions.dedup();
        includes.sort();
        includes.dedup();
        (!actions.is_empty() || !includes.is_empty()).then_some(PermissionSet {
            name,
            description,
            actions,
            includes,
        })
    }
}

/// Permission set names: 1-64 ASCII letters and digits, starting with a letter (like the
/// built-in `InferenceFullAccess`).
pub fn validate_set_name(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric());
    if !ok {
        return Err(format!(
            "invalid permission set name {name:?}: use 1-64 ASCII letters and digits, starting with a letter"
        ));
    }
    if builtin_set(name).is_some() {
        return Err(format!("{name} is a built-in permission set"));
    }
    Ok(())
}

/// Resolves every set (built-in and `custom`) to its actions, following `includes`.
/// Unknown names and include cycles are errors naming the set.
pub fn resolve_sets(
    custom: &[PermissionSet],
) -> Result<BTreeMap<String, BTreeSet<Action>>, String> {
    let by_name: BTreeMap<&str, &PermissionSet> =
        custom.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut resolved: BTreeMap<String, BTreeSet<Action>> = BUILTIN_SETS
        .iter()
        .filter_map(|n| Some((n.to_string(), builtin_set(n)?)))
        .collect();
    fn visit(
        name: &str,
        by_name: &BTreeMap<&str, &PermissionSet>,
        resolved: &mut BTreeMap<String, BTreeSet<Action>>,
        path: &mut Vec<String>,
    ) -> Result<BTreeSet<Action>, String> {
        if let Some(done) = resolved.get(name) {
            return Ok(done.clone());
        }
        if path.iter().any(|p| p == name) {
            path.push(name.to_owned());
            return Err(format!(
                "permission set include cycle: {}",
                path.join(" -> ")
            ));
        }
        let set = by_name
            .get(name)
            .ok_or_else(|| format!("unknown permission set {name:?}"))?;
        path.push(name.to_owned());
        let mut actions: BTreeSet<Action> = set.actions.iter().copied().collect();
        for include in &set.includes {
            actions.extend(visit(include, by_name, resolved, path)?);
        }
        path.pop();
        resolved.insert(name.to_owned(), actions.clone());
        Ok(actions)
    }
    for set in custom {
        visit(&set.name, &by_name, &mut resolved, &mut Vec::new())?;
    }
    Ok(resolved)
}

/// Where a rule applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleScope {
    /// The listed projects.
    Projects(Vec<String>),
    /// Every project of the organization, current and future.
    AllProjects,
    /// Organization features (IAM management, project creation).
    Organization,
}

/// A scope chosen as a project list, `all_projects` or `organization` was not exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeChoiceError {
    None,
    Several,
}

impl RuleScope {
    /// The one scope chosen among a project list (sorted, deduplicated), `all_projects` and
    /// `organization`, as the admin API and `apply` files spell it.
    pub fn choose(
        projects: Option<&[String]>,
        all_projects: bool,
        organization: bool,
    ) -> Result<RuleScope, ScopeChoiceError> {
        match (projects, all_projects, organization) {
            (Some(p), false, false) => {
                let mut p = p.to_vec();
                p.sort();
                p.dedup();
                Ok(RuleScope::Projects(p))
            }
            (None, true, false) => Ok(RuleScope::AllProjects),
            (None, false, true) => Ok(RuleScope::Organization),
            (None, false, false) => Err(ScopeChoiceError::None),
            _ => Err(ScopeChoiceError::Several),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub scope: RuleScope,
    pub permission_sets: Vec<String>,
    #[serde(default, skip_serializing_if = "Conditions::is_empty")]
    pub conditions: Conditions,
}

impl Rule {
    /// A rule from any edge: permission sets sorted and deduplicated, shape checked.
    pub fn new(
        scope: RuleScope,
        mut permission_sets: Vec<String>,
        conditions: Conditions,
    ) -> Result<Rule, String> {
        permission_sets.sort();
        permission_sets.dedup();
        let rule = Rule {
            scope,
            permission_sets,
            conditions,
        };
        rule.validate()?;
        Ok(rule)
    }

    /// `projects a,b InferenceReadOnly ip 10.0.0.0/8`, as `keyward iam policies list` shows it.
    pub fn describe(&self) -> String {
        let scope = match &self.scope {
            RuleScope::Organization => "organization".to_owned(),
            RuleScope::AllProjects => "all projects".to_owned(),
            RuleScope::Projects(p) => format!("projects {}", p.join(",")),
        };
        let mut parts = vec![scope, self.permission_sets.join("+")];
        parts.extend(self.conditions.describe());
        parts.join(" ")
    }

    /// Shape checks that need no other state: a scope, at least one set, sane conditions.
    pub fn validate(&self) -> Result<(), String> {
        if self.permission_sets.is_empty() {
            return Err("a rule needs at least one permission set".into());
        }
        if let RuleScope::Projects(projects) = &self.scope {
            if projects.is_empty() {
                return Err("a rule scoped to projects needs at least one project".into());
            }
            for p in projects {
                crate::model::validate_slug("project", p)?;
            }
        }
        self.conditions.validate()
    }

    pub fn covers_project(&self, project: &str) -> bool {
        match &self.scope {
            RuleScope::Projects(list) => list.iter().any(|p| p == project),
            RuleScope::AllProjects => true,
            RuleScope::Organization => false,
        }
    }
}

/// A named policy, attached to at most one principal (none: detached, grants nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub description: String,
    /// `None` when detached.
    pub principal: Option<PrincipalRef>,
    pub rules: Vec<Rule>,
}

/// Policy names: 1-128 characters of `A-Za-z0-9 . _ -`.
pub fn validate_policy_name(name: &str) -> Result<(), String> {
    let ok = (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid policy name {name:?}: use 1-128 letters, digits, '.', '_' or '-'"
        ))
    }
}

/// One rule with its permission sets resolved to actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRule {
    pub policy: String,
    pub scope: RuleScope,
    pub actions: BTreeSet<Action>,
    pub conditions: Conditions,
}

/// What a principal's policies grant, resolved: the input of the decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub rules: Vec<GrantRule>,
}

/// Where an action is asked for: in a project, or at the organization level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place<'a> {
    Project(&'a str),
    Organization,
}

/// The outcome of evaluating grants for one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evaluation {
    Granted {
        policy: String,
    },
    /// No rule covers the place with the action.
    NotGranted,
    /// Some rules would grant it, but their conditions failed: `policy: [kinds]` for each.
    ConditionsFailed(Vec<String>),
}

impl Grants {
    /// Resolves policies against the permission sets (`sets`: every known set's actions).
    /// A name no longer known grants nothing rather than failing the whole principal.
    pub fn resolve(policies: &[Policy], sets: &BTreeMap<String, BTreeSet<Action>>) -> Grants {
        let rules = policies
            .iter()
            .flat_map(|p| {
                p.rules.iter().map(|r| GrantRule {
                    policy: p.name.clone(),
                    scope: r.scope.clone(),
                    actions: r
                        .permission_sets
                        .iter()
                        .filter_map(|s| sets.get(s))
                        .flatten()
                        .copied()
                        .collect(),
                    conditions: r.conditions.clone(),
                })
            })
            .collect();
        Grants { rules }
    }

    pub fn evaluate(&self, action: Action, place: Place<'_>, facts: &Facts<'_>) -> Evaluation {
        self.evaluate_traced(action, place, facts, &mut NoTrace)
    }

    /// [`Grants::evaluate`], reporting each rule considered to `trace`.
    pub fn evaluate_traced<T: Trace>(
        &self,
        action: Action,
        place: Place<'_>,
        facts: &Facts<'_>,
        trace: &mut T,
    ) -> Evaluation {
        let mut failed = Vec::new();
        for rule in &self.rules {
            let in_scope = match (&rule.scope, place) {
                (RuleScope::Organization, Place::Organization) => action.is_organization_feature(),
                (RuleScope::Projects(list), Place::Project(p)) => {
                    !action.is_organization_feature() && list.iter().any(|x| x == p)
                }
                (RuleScope::AllProjects, Place::Project(_)) => !action.is_organization_feature(),
                _ => false,
            };
            if !in_scope {
                trace.rule(rule, RuleVerdict::OutOfScope);
                continue;
            }
            if !rule.actions.contains(&action) {
                trace.rule(rule, RuleVerdict::ActionNotHeld);
                continue;
            }
            let failures = rule.conditions.failures(facts);
            if failures.is_empty() {
                trace.rule(rule, RuleVerdict::Granted);
                return Evaluation::Granted {
                    policy: rule.policy.clone(),
                };
            }
            trace.rule(rule, RuleVerdict::ConditionsFailed(&failures));
            failed.push(format!("{}: {}", rule.policy, failures.join("+")));
        }
        if failed.is_empty() {
            Evaluation::NotGranted
        } else {
            Evaluation::ConditionsFailed(failed)
        }
    }
}

impl GrantRule {
    /// `projects acme inference.call,deployments.read ip 10.0.0.0/8`, as `keyward explain`
    /// shows a rule: its scope, the actions its sets resolve to, its conditions.
    pub fn describe(&self) -> String {
        let scope = match &self.scope {
            RuleScope::Organization => "organization".to_owned(),
            RuleScope::AllProjects => "all projects".to_owned(),
            RuleScope::Projects(p) => format!("projects {}", p.join(",")),
        };
        let actions: Vec<&str> = self.actions.iter().map(|a| a.as_str()).collect();
        let mut parts = vec![scope, actions.join(",")];
        parts.extend(self.conditions.describe());
        parts.join(" ")
    }
}

/// A reference to a principal: `owner`, `user:EMAIL` or `app:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PrincipalRef {
    Owner,
    User(String),
    App(String),
}

impl FromStr for PrincipalRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "owner" {
            return Ok(PrincipalRef::Owner);
        }
        match s.split_once(':') {
            Some(("user", email)) => {
                validate_email(email)?;
                Ok(PrincipalRef::User(email.to_owned()))
            }
            Some(("app", name)) => {
                validate_app_name(name)?;
                Ok(PrincipalRef::App(name.to_owned()))
            }
            _ => Err(format!(
                "invalid principal {s:?}: expected owner, user:EMAIL or app:NAME"
            )),
        }
    }
}

impl fmt::Display for PrincipalRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrincipalRef::Owner => f.write_str("owner"),
            PrincipalRef::User(e) => write!(f, "user:{e}"),
            PrincipalRef::App(n) => write!(f, "app:{n}"),
        }
    }
}

/// Deliberately simple: one `@`, something on both sides, no spaces or control characters.
pub fn validate_email(email: &str) -> Result<(), String> {
    let ok = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'))
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(format!("invalid email {email:?}"))
    }
}

/// Application names follow the slug rules. `anonymous` is reserved: it is what the backend
/// sees in `x-keyward-principal` for anonymous traffic.
pub fn validate_app_name(name: &str) -> Result<(), String> {
    crate::model::validate_slug("application", name)?;
    if name == "anonymous" {
        return Err("application name anonymous is reserved for anonymous traffic".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_resolve_through_includes_and_cycles_are_named() {
        let sets = vec![
            PermissionSet {
                name: "A".into(),
                description: String::new(),
                actions: vec![Action::IamManage],
                includes: vec!["B".into()],
            },
            PermissionSet {
                name: "B".into(),
                description: String::new(),
                actions: vec![],
                includes: vec!["InferenceReadOnly".into()],
            },
        ];
        let resolved = resolve_sets(&sets).unwrap();
        assert_eq!(
            resolved["A"],
            [
                Action::InferenceCall,
                Action::DeploymentsRead,
                Action::IamManage
            ]
            .into()
        );
        let mut cyclic = sets.clone();
        cyclic[1].includes.push("A".into());
        let err = resolve_sets(&cyclic).unwrap_err();
        assert!(err.contains("cycle"), "{err}");
        let mut unknown = sets;
        unknown[1].includes = vec!["Nope".into()];
        assert!(resolve_sets(&unknown).unwrap_err().contains("Nope"));
    }

    #[test]
    fn principal_refs() {
        assert_eq!(
            "user:a@b.c".parse::<PrincipalRef>(),
            Ok(PrincipalRef::User("a@b.c".into()))
        );
        assert_eq!(
            "app:ci".parse::<PrincipalRef>(),
            Ok(PrincipalRef::App("ci".into()))
        );
        for bad in ["user:nope", "app:Bad Name", "alice", "group:x"] {
            assert!(bad.parse::<PrincipalRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_rule_has_exactly_one_scope_and_describes_itself() {
        let projects = ["b".to_owned(), "a".to_owned(), "b".to_owned()];
        assert_eq!(
            RuleScope::choose(Some(&projects), false, false),
            Ok(RuleScope::Projects(vec!["a".into(), "b".into()]))
        );
        assert_eq!(
            RuleScope::choose(None, true, false),
            Ok(RuleScope::AllProjects)
        );
        assert_eq!(
            RuleScope::choose(None, false, true),
            Ok(RuleScope::Organization)
        );
        assert_eq!(
            RuleScope::choose(None, false, false),
            Err(ScopeChoiceError::None)
        );
        assert_eq!(
            RuleScope::choose(Some(&projects), true, false),
            Err(ScopeChoiceError::Several)
        );
        let rule = Rule::new(
            RuleScope::choose(Some(&projects), false, false).unwrap(),
            vec!["Z".into(), "A".into(), "Z".into()],
            Conditions::default(),
        )
        .unwrap();
        assert_eq!(rule.describe(), "projects a,b A+Z");
        assert!(Rule::new(RuleScope::AllProjects, Vec::new(), Conditions::default()).is_err());
        assert!(PermissionSet::new("S".into(), String::new(), Vec::new(), Vec::new()).is_none());
    }
}
