//! Domain types shared by storage, the decision and the edges. No protobuf, no I/O.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Which plane a key or a route belongs to: inference calls (`data`) or workload management
/// (`control`). A key of one plane never passes a route of the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Plane {
    Data,
    Control,
}

impl Plane {
    pub fn as_str(self) -> &'static str {
        match self {
            Plane::Data => "data",
            Plane::Control => "control",
        }
    }
}

impl FromStr for Plane {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "data" => Ok(Plane::Data),
            "control" => Ok(Plane::Control),
            other => Err(format!(
                "unknown plane {other:?} (expected data or control)"
            )),
        }
    }
}

impl fmt::Display for Plane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which endpoint of a deployment a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Public,
    Private,
}

impl FromStr for Endpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "public" => Ok(Endpoint::Public),
            "private" => Ok(Endpoint::Private),
            other => Err(format!(
                "unknown endpoint {other:?} (expected public or private)"
            )),
        }
    }
}

/// Project and deployment slugs: 1–63 characters of `a-z 0-9 -`, starting with a letter or
/// digit, like DNS labels, so they are safe in paths, headers and Envoy configuration.
/// The longest name (keys) in characters.
pub const NAME_MAX: usize = 128;
/// The longest description (keys, policies, permission sets) in characters.
pub const DESCRIPTION_MAX: usize = 1024;

/// A name shown in listings: at most [`NAME_MAX`] characters, one line, no control characters
/// (an ANSI escape in a name would drive the terminal of whoever lists it). The error names
/// `field` and never echoes the value.
pub fn validate_name(field: &str, value: &str) -> Result<(), String> {
    validate_text(field, value, NAME_MAX, &[])
}

/// A description: at most [`DESCRIPTION_MAX`] characters; newlines and tabs, but no other
/// control characters.
pub fn validate_description(field: &str, value: &str) -> Result<(), String> {
    validate_text(field, value, DESCRIPTION_MAX, &['\n', '\t'])
}

fn validate_text(field: &str, value: &str, max: usize, allowed: &[char]) -> Result<(), String> {
    if value.chars().count() > max {
        return Err(format!("{field} is too long: at most {max} characters"));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !allowed.contains(&c))
    {
        return Err(format!(
            "{field} contains control characters (escape sequences are not allowed)"
        ));
    }
    Ok(())
}

pub fn validate_slug(what: &str, slug: &str) -> Result<(), String> {
    let ok = !slug.is_empty()
        && slug.len() <= 63
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} slug {slug:?}: use 1-63 lowercase letters, digits and inner dashes"
        ))
    }
}

/// `PROJECT/SLUG`, the name of one deployment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeploymentName {
    pub project: String,
    pub slug: String,
}

impl FromStr for DeploymentName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (project, slug) = s
            .split_once('/')
            .ok_or_else(|| format!("invalid deployment {s:?}: expected PROJECT/SLUG"))?;
        validate_slug("project", project)?;
        validate_slug("deployment", slug)?;
        Ok(DeploymentName {
            project: project.to_owned(),
            slug: slug.to_owned(),
        })
    }
}

impl fmt::Display for DeploymentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.project, self.slug)
    }
}

/// A project: the isolation boundary deployments, workloads and keys belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub slug: String,
    pub description: String,
    pub created_at: i64,
}

/// A deployment and its per-endpoint authentication flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub name: DeploymentName,
    pub model: String,
    pub description: String,
    pub public_auth: bool,
    pub private_auth: bool,
    /// `false`: a private-only deployment; the public listener answers as if it were not there.
    pub public_endpoint: bool,
    pub created_at: i64,
}

impl Deployment {
    /// Whether the deployment answers on `endpoint` at all (the private one always does).
    pub fn has_endpoint(&self, endpoint: Endpoint) -> bool {
        match endpoint {
            Endpoint::Public => self.public_endpoint,
            Endpoint::Private => true,
        }
    }

    pub fn auth_required(&self, endpoint: Endpoint) -> bool {
        match endpoint {
            Endpoint::Public => self.public_auth,
            Endpoint::Private => self.private_auth,
        }
    }
}

/// One entry of a data key's scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataTarget {
    /// `PROJECT/SLUG`: one deployment.
    Deployment(DeploymentName),
    /// `PROJECT/*`: every deployment of the project, current and future.
    Project(String),
}

impl FromStr for DataTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_suffix("/*") {
            Some(project) => {
                validate_slug("project", project)?;
                Ok(DataTarget::Project(project.to_owned()))
            }
            None => s.parse().map(DataTarget::Deployment),
        }
    }
}

impl fmt::Display for DataTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataTarget::Deployment(d) => d.fmt(f),
            DataTarget::Project(p) => write!(f, "{p}/*"),
        }
    }
}

impl DataTarget {
    pub fn project(&self) -> &str {
        match self {
            DataTarget::Deployment(d) => &d.project,
            DataTarget::Project(p) => p,
        }
    }

    pub fn covers(&self, project: &str, slug: &str) -> bool {
        match self {
            DataTarget::Deployment(d) => d.project == project && d.slug == slug,
            DataTarget::Project(p) => p == project,
        }
    }
}

/// What a key may reach before any policy is consulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyScope {
    /// Data keys: attached deployments and whole projects (`acme/*`), sorted. Shared: the key
    /// cache gives every key with the same targets one copy of them.
    Data(Arc<[DataTarget]>),
    /// Control keys: one project.
    ControlProject(String),
    /// Control keys minted for the organization (the owner's bootstrap token from `init`):
    /// they manage every project. Written `*`.
    ControlOrganization,
}

impl KeyScope {
    pub fn plane(&self) -> Plane {
        match self {
            KeyScope::Data(_) => Plane::Data,
            KeyScope::ControlProject(_) | KeyScope::ControlOrganization => Plane::Control,
        }
    }

    /// Parses the scope strings given for a new key of `plane`.
    pub fn parse(plane: Plane, scopes: &[String]) -> Result<Self, String> {
        match plane {
            Plane::Data => {
                if scopes.is_empty() {
                    return Err(
                        "a data key needs at least one scope (PROJECT/SLUG or PROJECT/*)".into(),
                    );
                }
                let mut targets = scopes
                    .iter()
                    .map(|s| s.parse::<DataTarget>())
                    .collect::<Result<Vec<_>, _>>()?;
                targets.sort();
                targets.dedup();
                Ok(KeyScope::Data(targets.into()))
            }
            Plane::Control => match scopes {
                [one] if one == "*" => Ok(KeyScope::ControlOrganization),
                [one] => {
                    validate_slug("project", one)?;
                    Ok(KeyScope::ControlProject(one.clone()))
                }
                _ => Err(
                    "a control key's scope is exactly one PROJECT (or * for the organization)"
                        .into(),
                ),
            },
        }
    }

    pub fn to_strings(&self) -> Vec<String> {
        match self {
            KeyScope::Data(targets) => targets.iter().map(ToString::to_string).collect(),
            KeyScope::ControlProject(p) => vec![p.clone()],
            KeyScope::ControlOrganization => vec!["*".to_owned()],
        }
    }

    /// Whether the scope reaches into `project` at all.
    pub fn touches_project(&self, project: &str) -> bool {
        match self {
            KeyScope::Data(targets) => targets.iter().any(|t| t.project() == project),
            KeyScope::ControlProject(p) => p == project,
            KeyScope::ControlOrganization => true,
        }
    }
}

/// The kind of identity a key is borne by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// The organization's one owner: allowed everything in the organization.
    Owner,
    Member,
    Application,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::Owner => "owner",
            PrincipalKind::Member => "member",
            PrincipalKind::Application => "application",
        }
    }
}

impl FromStr for PrincipalKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "owner" => Ok(PrincipalKind::Owner),
            "member" => Ok(PrincipalKind::Member),
            "application" => Ok(PrincipalKind::Application),
            other => Err(format!("unknown principal kind {other:?}")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub id: i64,
    pub kind: PrincipalKind,
    /// An email for users, a name for applications.
    pub name: String,
}

/// A stored API key as the decision sees it. Holds the argon2id PHC string of the secret, never
/// the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub principal: Principal,
    pub scope: KeyScope,
    /// Shared, not copied, by the verdicts computed against it (see [`crate::cache::Verdict`]).
    pub secret_hash: Arc<str>,
    /// After a rotation with a grace period: the replaced secret's hash, still accepted until
    /// the instant given (never past `expires_at`).
    pub previous_secret: Option<PreviousSecret>,
    /// Unix seconds; the key is invalid from this instant on.
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// What people read about the key: always loaded by the store, left out (`None`) of keys
    /// cached for the Check path, which never reads it. ~100 bytes a key, 10 MB at 100 000.
    pub details: Option<Box<KeyDetails>>,
}

impl ApiKey {
    /// A live key: no expiry, no revocation, no previous secret, no details. The one way
    /// tests, benches and examples build a key by hand; set the other fields on the result.
    pub fn new(
        id: impl Into<String>,
        (principal_id, kind, name): (i64, PrincipalKind, &str),
        scope: KeyScope,
        secret_hash: &str,
    ) -> ApiKey {
        ApiKey {
            id: id.into(),
            principal: Principal {
                id: principal_id,
                kind,
                name: name.to_owned(),
            },
            scope,
            secret_hash: secret_hash.into(),
            previous_secret: None,
            expires_at: None,
            revoked_at: None,
            details: None,
        }
    }
}

/// A key's name, description and timestamps: for people, not for decisions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyDetails {
    pub name: String,
    pub description: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousSecret {
    pub hash: Arc<str>,
    /// Unix seconds; the old secret is refused from this instant on.
    pub valid_until: i64,
}

impl ApiKey {
    pub fn plane(&self) -> Plane {
        self.scope.plane()
    }

    pub fn is_expired(&self, now: i64) -> bool {
        crate::policy::validity(None, self.expires_at, now).is_err()
    }
}

/// `keys list` warns about active keys expiring within this many seconds (7 days).
pub const EXPIRY_WARNING_SECONDS: i64 = 7 * 86_400;

/// Whether an active key expires within [`EXPIRY_WARNING_SECONDS`] of `now`.
pub fn expires_soon(revoked_at: Option<i64>, expires_at: Option<i64>, now: i64) -> bool {
    crate::policy::validity(revoked_at, expires_at, now).is_ok()
        && expires_at.is_some_and(|at| at - now <= EXPIRY_WARNING_SECONDS)
}

/// The `keys list` filters, as a user looks for keys; every one set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFilter {
    /// Data keys that reach this deployment: attached to it, or to its whole project.
    pub deployment: Option<DeploymentName>,
    /// Active keys expiring within this many seconds.
    pub expiring_within: Option<i64>,
    /// Active keys neither used nor created in this many seconds.
    pub unused_for: Option<i64>,
}

impl KeyFilter {
    /// Whether `key` passes at `now`; `last_used` is the newest use known (stored, or noted on
    /// this replica and not yet written).
    pub fn admits(&self, key: &ApiKey, last_used: Option<i64>, now: i64) -> bool {
        let active = crate::policy::validity(key.revoked_at, key.expires_at, now).is_ok();
        if let Some(name) = &self.deployment {
            let reaches = match &key.scope {
                KeyScope::Data(targets) => targets.iter().any(|t| match t {
                    DataTarget::Deployment(d) => d == name,
                    DataTarget::Project(p) => *p == name.project,
                }),
                _ => false,
            };
            if !reaches {
                return false;
            }
        }
        if let Some(within) = self.expiring_within {
            let soon = key
                .expires_at
                .is_some_and(|at| at.saturating_sub(now) <= within);
            if !(active && soon) {
                return false;
            }
        }
        if let Some(unused_for) = self.unused_for {
            let created = key.details.as_ref().map_or(i64::MIN, |d| d.created_at);
            let seen = last_used.map_or(created, |used| used.max(created));
            if !(active && now.saturating_sub(seen) >= unused_for) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_filters_as_a_user_looks_for_keys() {
        use super::*;
        const DAY: i64 = 86_400;
        let now = 1_000 * DAY;
        let key = |id: &str, targets: &[&str], expires: Option<i64>, created: i64| {
            let targets: Vec<DataTarget> = targets.iter().map(|t| t.parse().unwrap()).collect();
            let mut k = ApiKey::new(
                id,
                (1, PrincipalKind::Owner, "o"),
                KeyScope::Data(targets.into()),
                "h",
            );
            k.expires_at = expires;
            k.details = Some(Box::new(KeyDetails {
                created_at: created,
                ..KeyDetails::default()
            }));
            k
        };
        let direct = key("direct", &["acme/bot"], Some(now + 3 * DAY), now - 90 * DAY);
        let project = key("project", &["acme/*"], None, now - 90 * DAY);
        let other = key(
            "other",
            &["acme/chat", "beta/*"],
            Some(now + 30 * DAY),
            now - DAY,
        );
        let mut revoked = key("revoked", &["acme/bot"], Some(now + DAY), now - 90 * DAY);
        revoked.revoked_at = Some(now - DAY);
        let expired = key("expired", &["acme/bot"], Some(now - DAY), now - 90 * DAY);
        let control = ApiKey::new(
            "control",
            (1, PrincipalKind::Owner, "o"),
            KeyScope::ControlProject("acme".into()),
            "h",
        );
        let keys = [&direct, &project, &other, &revoked, &expired, &control];
        let ids = |f: &KeyFilter, used: &dyn Fn(&str) -> Option<i64>| -> Vec<&str> {
            keys.iter()
                .filter(|k| f.admits(k, used(&k.id), now))
                .map(|k| k.id.as_str())
                .collect()
        };
        let never = |_: &str| None;
        let bot = KeyFilter {
            deployment: Some("acme/bot".parse().unwrap()),
            ..KeyFilter::default()
        };
        assert_eq!(
            ids(&bot, &never),
            ["direct", "project", "revoked", "expired"]
        );
        let expiring = KeyFilter {
            expiring_within: Some(7 * DAY),
            ..KeyFilter::default()
        };
        assert_eq!(ids(&expiring, &never), ["direct"]);
        let stale = KeyFilter {
            unused_for: Some(30 * DAY),
            ..KeyFilter::default()
        };
        // Never used: judged by creation (`other` is a day old; `control` has no details).
        assert_eq!(ids(&stale, &never), ["direct", "project", "control"]);
        // `direct` used an hour ago (on any replica) is not stale.
        let used = |id: &str| (id == "direct").then_some(now - 3_600);
        assert_eq!(ids(&stale, &used), ["project", "control"]);
        let both = KeyFilter {
            deployment: Some("acme/bot".parse().unwrap()),
            unused_for: Some(30 * DAY),
            ..KeyFilter::default()
        };
        assert_eq!(ids(&both, &used), ["project"]);
        assert!(expires_soon(None, Some(now + 7 * DAY), now));
        assert!(!expires_soon(None, Some(now + 7 * DAY + 1), now));
        assert!(!expires_soon(None, Some(now), now), "already expired");
        assert!(
            !expires_soon(Some(now - 1), Some(now + DAY), now),
            "revoked"
        );
        assert!(!expires_soon(None, None, now));
    }

    #[test]
    fn names_and_descriptions() {
        let long_name = "n".repeat(NAME_MAX + 1);
        let long_description = "d".repeat(DESCRIPTION_MAX + 1);
        // (name?, value, outcome)
        let table: &[(bool, &str, Result<(), &str>)] = &[
            (true, "", Ok(())),
            (true, "deploy bot — CI", Ok(())),
            (true, &long_name[1..], Ok(())),
            (
                true,
                &long_name,
                Err("key name is too long: at most 128 characters"),
            ),
            (
                true,
                "a\u{1b}[2J",
                Err("key name contains control characters (escape sequences are not allowed)"),
            ),
            (
                true,
                "two\nlines",
                Err("key name contains control characters (escape sequences are not allowed)"),
            ),
            (false, "two\nlines\tand a tab", Ok(())),
            (false, &long_description[1..], Ok(())),
            (
                false,
                &long_description,
                Err("key description is too long: at most 1024 characters"),
            ),
            (
                false,
                "bell\u{7}",
                Err(
                    "key description contains control characters (escape sequences are not allowed)",
                ),
            ),
            (
                false,
                "\u{9b}31m",
                Err(
                    "key description contains control characters (escape sequences are not allowed)",
                ),
            ),
        ];
        for (name, value, expected) in table {
            let got = if *name {
                validate_name("key name", value)
            } else {
                validate_description("key description", value)
            };
            assert_eq!(
                got.as_ref().map_err(String::as_str).copied(),
                *expected,
                "{value:?}"
            );
        }
    }

    use super::*;

    #[test]
    fn data_scopes_parse_and_cover() {
        let scope = KeyScope::parse(
            Plane::Data,
            &["acme/bot".into(), "beta/*".into(), "acme/bot".into()],
        )
        .unwrap();
        let KeyScope::Data(targets) = &scope else {
            panic!("data scope expected")
        };
        assert_eq!(targets.len(), 2, "duplicates are folded");
        assert!(targets.iter().any(|t| t.covers("acme", "bot")));
        assert!(!targets.iter().any(|t| t.covers("acme", "other")));
        assert!(targets.iter().any(|t| t.covers("beta", "anything")));
    }

    #[test]
    fn bad_scopes_are_named() {
        for (plane, scopes) in [
            (Plane::Data, vec![]),
            (Plane::Data, vec!["acme".to_string()]),
            (Plane::Data, vec!["Acme/bot".to_string()]),
            (Plane::Data, vec!["acme/bot/x".to_string()]),
            (Plane::Control, vec!["acme/bot".to_string()]),
            (Plane::Control, vec!["a".to_string(), "b".to_string()]),
            (Plane::Control, vec![]),
        ] {
            assert!(
                KeyScope::parse(plane, &scopes).is_err(),
                "{scopes:?} accepted"
            );
        }
        let err = KeyScope::parse(Plane::Data, &["acme/Bad".into()]).unwrap_err();
        assert!(err.contains("\"Bad\""), "{err}");
    }

    #[test]
    fn expiry_is_exclusive_at_the_instant() {
        let key = ApiKey {
            expires_at: Some(100),
            ..ApiKey::new(
                "k",
                (1, PrincipalKind::Owner, "o"),
                KeyScope::ControlOrganization,
                "",
            )
        };
        assert!(!key.is_expired(99));
        assert!(key.is_expired(100));
    }
}
