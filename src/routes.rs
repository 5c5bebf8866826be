//! The route table: which deployment or control project a request is for when Envoy names
//! none (Istio's `envoyExtAuthzGrpc` provider sends no context extensions; a generic catch-all
//! route need not either). An entry maps a host and a path prefix to a plane, an endpoint and
//! a target; `keyward routes`, `apply` and `export` manage it, the store persists it, and the
//! Check path looks it up in memory ([`RouteSlot`]) without touching the store.
//!
//! Precedence, most specific first:
//!
//! 1. keyward's context extensions (`plane`, `endpoint`, `deployment`, `project`): when Envoy
//!    sends any of them, the table is not consulted at all;
//! 2. an exact host (`chat.example.com`), then wildcard hosts (`*.example.com`), the longest
//!    suffix first, then the catch-all host `*`. The first host level with an entry whose
//!    prefix matches decides, even when a less specific host has a longer prefix;
//! 3. within one host, the longest matching path prefix.
//!
//! (host, path prefix) is unique, so nothing else can tie. Hosts compare case-insensitively and
//! without a `:port` suffix; a wildcard `*.example.com` matches `a.example.com` and
//! `a.b.example.com`, never `example.com` itself (as Envoy's and Istio's do). Prefixes match
//! whole path segments (`/acme/chat` matches `/acme/chat` and `/acme/chat/v1/…`, not
//! `/acme/chatty`), case-sensitively, on the path as the client sent it (Envoy-normalized,
//! query string ignored). keyward never rewrites a path: stripping a prefix before the backend
//! is the proxy's (`prefix_rewrite`, Istio's `rewrite.uri`), and happens after authorization.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use crate::model::{DeploymentName, Endpoint, Plane, validate_slug};

/// The longest host compared (DNS names are at most 253 characters); a longer one matches no
/// entry but the catch-all.
const MAX_HOST: usize = 255;

/// Where a route entry sends a request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RouteTarget {
    /// Plane data: inference on one deployment.
    Deployment(DeploymentName),
    /// Plane control. `Some`: pinned to one project; `None`: the project is read from the path
    /// (`/api/projects/:project/workloads…`, `/api/workloads/:id…`) as on a control route
    /// without a `project` extension.
    Control(Option<String>),
}

/// What a matched request is: the plane follows from the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub endpoint: Endpoint,
    pub target: RouteTarget,
}

impl RouteSpec {
    pub fn plane(&self) -> Plane {
        match self.target {
            RouteTarget::Deployment(_) => Plane::Data,
            RouteTarget::Control(_) => Plane::Control,
        }
    }
}

/// Where a route entry applies: a normalized host pattern and path prefix ([`host_pattern`],
/// [`path_prefix`]). Ordered by host, then prefix, for stable listings and exports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteKey {
    pub host: String,
    pub path_prefix: String,
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.host, self.path_prefix)
    }
}

impl RouteKey {
    /// Checks and normalizes both parts.
    pub fn new(host: &str, path_prefix: &str) -> Result<RouteKey, String> {
        Ok(RouteKey {
            host: host_pattern(host)?,
            path_prefix: path_prefix_of(path_prefix)?,
        })
    }
}

pub fn endpoint_str(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Public => "public",
        Endpoint::Private => "private",
    }
}

/// A host pattern, lower-cased: `*` (any host), `*.suffix` or an exact DNS name or IP
/// address, without a port.
pub fn host_pattern(host: &str) -> Result<String, String> {
    let host = host.trim().to_ascii_lowercase();
    if host == "*" {
        return Ok(host);
    }
    let name = host.strip_prefix("*.").unwrap_or(&host);
    let bad = || {
        Err(format!(
            "invalid route host {host:?}: expected a DNS name (chat.example.com), a wildcard \
             (*.example.com) or * for any host, without a port"
        ))
    };
    if name.is_empty() || name.len() > 253 {
        return bad();
    }
    if name.starts_with('[') && name.ends_with(']') && name[1..name.len() - 1].contains(':') {
        return match name[1..name.len() - 1].parse::<std::net::Ipv6Addr>() {
            Ok(_) if !host.starts_with("*.") => Ok(host),
            _ => bad(),
        };
    }
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    });
    if labels_ok { Ok(host) } else { bad() }
}

/// A path prefix: starts with `/`, whole segments (no trailing `/` except the root `/`), no
/// empty, `.` or `..` segment, no query or fragment.
pub fn path_prefix_of(prefix: &str) -> Result<String, String> {
    let prefix = prefix.trim();
    let bad = |why: &str| Err(format!("invalid route path prefix {prefix:?}: {why}"));
    if prefix == "/" {
        return Ok(prefix.to_owned());
    }
    if !prefix.starts_with('/') {
        return bad("it must start with /");
    }
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    if prefix.contains(['?', '#']) || prefix.chars().any(|c| c.is_control() || c == ' ') {
        return bad("no query, fragment, spaces or control characters");
    }
    if prefix
        .split('/')
        .skip(1)
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return bad("no empty, . or .. segments");
    }
    Ok(prefix.to_owned())
}

/// A route's spec from its parts as the admin API, `keyward routes add` and `apply` files give
/// them: a data route names its deployment (`PROJECT/SLUG`); a control route names its project
/// (`control_project`) or, with `control` alone, takes it from the path. The endpoint is
/// `public` when not given: a private endpoint may skip key authentication
/// (`private_auth off`), so it is never the default.
pub fn spec_of(
    endpoint: Option<&str>,
    deployment: Option<&str>,
    control_project: Option<&str>,
    control: bool,
) -> Result<RouteSpec, String> {
    let endpoint = match endpoint {
        None | Some("") => Endpoint::Public,
        Some(e) => e.parse()?,
    };
    let target = match (deployment, control_project) {
        (Some(_), Some(_)) => {
            return Err("a route names a deployment or a control project, not both".into());
        }
        (Some(_), None) if control => {
            return Err("a control route names no deployment".into());
        }
        (Some(name), None) => RouteTarget::Deployment(name.parse()?),
        (None, Some(project)) => RouteTarget::Control(Some(project.to_owned())),
        (None, None) if control => RouteTarget::Control(None),
        (None, None) => {
            return Err(
                "a route needs a deployment (PROJECT/SLUG), a control project, or control for \
                 the project named by the path"
                    .into(),
            );
        }
    };
    validate_target(&target)?;
    Ok(RouteSpec { endpoint, target })
}

/// Checks what a route sends to: the control project, when pinned, is a project slug.
pub fn validate_target(target: &RouteTarget) -> Result<(), String> {
    match target {
        RouteTarget::Deployment(_) | RouteTarget::Control(None) => Ok(()),
        RouteTarget::Control(Some(project)) => validate_slug("project", project),
    }
}

/// Whether `path` (query and fragment ignored) starts with the whole segments of `prefix`.
fn segment_match(prefix: &str, path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The host part of an `:authority` / `Host` value: without a `:port`, without a trailing
/// dot. A bracketed IPv6 address keeps its brackets.
fn without_port(host: &str) -> &str {
    let host = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// A table entry as the Check path reads it.
#[derive(Debug)]
pub struct Entry {
    pub spec: RouteSpec,
    /// `PROJECT/SLUG` of a data route, held whole so a lookup borrows it instead of formatting.
    deployment: String,
}

impl Entry {
    /// The deployment's `PROJECT/SLUG`, its project and its slug, on a data route.
    pub fn deployment(&self) -> Option<(&str, &str, &str)> {
        let (project, slug) = self.deployment.split_once('/')?;
        Some((&self.deployment, project, slug))
    }
}

type Entries = Vec<(String, Entry)>;

/// The table, indexed for lookups that allocate nothing.
#[derive(Debug, Default)]
pub struct RouteTable {
    exact: HashMap<String, Entries>,
    /// `*.example.com` is held under `example.com`.
    wildcard: HashMap<String, Entries>,
    any: Entries,
    len: usize,
}

impl RouteTable {
    pub fn new(routes: impl IntoIterator<Item = (RouteKey, RouteSpec)>) -> RouteTable {
        let mut table = RouteTable::default();
        for (key, spec) in routes {
            let entries = if key.host == "*" {
                &mut table.any
            } else if let Some(suffix) = key.host.strip_prefix("*.") {
                table.wildcard.entry(suffix.to_owned()).or_default()
            } else {
                table.exact.entry(key.host.clone()).or_default()
            };
            let deployment = match &spec.target {
                RouteTarget::Deployment(name) => name.to_string(),
                RouteTarget::Control(_) => String::new(),
            };
            entries.push((key.path_prefix, Entry { spec, deployment }));
            table.len += 1;
        }
        let longest_first = |entries: &mut Entries| {
            entries.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)))
        };
        table.exact.values_mut().for_each(longest_first);
        table.wildcard.values_mut().for_each(longest_first);
        longest_first(&mut table.any);
        table
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entry deciding a request for `host` (`:authority`, any case, maybe with a port) and
    /// `path`, by the precedence in the module documentation.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Entry> {
        if self.len == 0 {
            return None;
        }
        fn first<'t>(entries: &'t Entries, path: &str) -> Option<&'t Entry> {
            entries
                .iter()
                .find(|(prefix, _)| segment_match(prefix, path))
                .map(|(_, entry)| entry)
        }
        let host = without_port(host);
        let mut buffer = [0u8; MAX_HOST];
        let lowered = (host.len() <= MAX_HOST)
            .then(|| {
                let buffer = &mut buffer[..host.len()];
                buffer.copy_from_slice(host.as_bytes());
                buffer.make_ascii_lowercase();
                std::str::from_utf8(buffer).ok()
            })
            .flatten();
        if let Some(host) = lowered {
            if let Some(spec) = self.exact.get(host).and_then(|e| first(e, path)) {
                return Some(spec);
            }
            if !self.wildcard.is_empty() {
                // Longest suffix first: the one after the first label, then shorter ones.
                for (i, _) in host.match_indices('.') {
                    if let Some(spec) = self
                        .wildcard
                        .get(&host[i + 1..])
                        .and_then(|e| first(e, path))
                    {
                        return Some(spec);
                    }
                }
            }
        }
        first(&self.any, path)
    }
}

/// The route table as the Check path reads it: the current table, or none after a change was
/// applied (the next request reloads it). Loads racing a change never install what they read.
#[derive(Debug, Default)]
pub struct RouteSlot {
    current: RwLock<Option<Arc<RouteTable>>>,
    generation: std::sync::atomic::AtomicU64,
    loading: tokio::sync::Mutex<()>,
}

impl RouteSlot {
    /// The table when one is loaded and no change was applied since.
    pub fn get(&self) -> Option<Arc<RouteTable>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Drops the table: a route changed, or change notifications had a gap.
    pub fn invalidate(&self) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        *current = None;
    }

    /// The table, loading it with `load` when there is none. One load runs at a time; callers
    /// arriving meanwhile get its result.
    pub async fn get_or_load<E, F, Fut>(&self, load: F) -> Result<Arc<RouteTable>, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<RouteTable, E>>,
    {
        if let Some(table) = self.get() {
            return Ok(table);
        }
        let _loading = self.loading.lock().await;
        if let Some(table) = self.get() {
            return Ok(table);
        }
        let generation = self.generation.load(std::sync::atomic::Ordering::Acquire);
        let table = Arc::new(load().await?);
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if self.generation.load(std::sync::atomic::Ordering::Acquire) == generation {
            *current = Some(table.clone());
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(deployment: &str, endpoint: Endpoint) -> RouteSpec {
        RouteSpec {
            endpoint,
            target: RouteTarget::Deployment(deployment.parse().unwrap()),
        }
    }

    fn table(entries: &[(&str, &str, &str)]) -> RouteTable {
        RouteTable::new(entries.iter().map(|(host, prefix, deployment)| {
            (
                RouteKey::new(host, prefix).unwrap(),
                data(deployment, Endpoint::Public),
            )
        }))
    }

    fn hit(table: &RouteTable, host: &str, path: &str) -> Option<String> {
        table
            .lookup(host, path)
            .map(|entry| match &entry.spec.target {
                RouteTarget::Deployment(name) => name.to_string(),
                RouteTarget::Control(p) => format!("control {p:?}"),
            })
    }

    #[test]
    fn the_precedence_table() {
        let t = table(&[
            ("chat.example.com", "/v1", "exact/v1"),
            ("chat.example.com", "/v1/chat", "exact/v1-chat"),
            ("*.example.com", "/v1/chat/completions", "wild/long-prefix"),
            ("*.example.com", "/", "wild/root"),
            ("*.eu.example.com", "/", "wild/eu"),
            ("*", "/gw/acme/chat", "any/acme-chat"),
            ("*", "/", "any/root"),
        ]);
        let cases = [
            // Longest prefix within the exact host.
            ("chat.example.com", "/v1/chat/completions", "exact/v1-chat"),
            ("chat.example.com", "/v1/models", "exact/v1"),
            // An exact host wins over a wildcard with a longer prefix...
            ("chat.example.com", "/v1/chat/x", "exact/v1-chat"),
            // ... and when none of its prefixes match, the wildcards are next.
            ("chat.example.com", "/other", "wild/root"),
            // The longer wildcard wins over the shorter.
            ("a.eu.example.com", "/v1/chat/completions", "wild/eu"),
            (
                "a.us.example.com",
                "/v1/chat/completions",
                "wild/long-prefix",
            ),
            ("deep.a.us.example.com", "/x", "wild/root"),
            // A wildcard never matches its own suffix; the catch-all host is last.
            ("example.com", "/gw/acme/chat/v1", "any/acme-chat"),
            ("example.com", "/v1", "any/root"),
            ("other.test", "/gw/acme/chatty", "any/root"),
        ];
        for (host, path, want) in cases {
            assert_eq!(hit(&t, host, path).as_deref(), Some(want), "{host}{path}");
        }
    }

    #[test]
    fn hosts_ignore_case_port_and_trailing_dot() {
        let t = table(&[
            ("chat.example.com", "/", "a/b"),
            ("*.Example.ORG", "/", "c/d"),
        ]);
        for host in [
            "chat.example.com",
            "CHAT.Example.Com",
            "chat.example.com:8443",
            "chat.example.com.",
        ] {
            assert_eq!(hit(&t, host, "/x").as_deref(), Some("a/b"), "{host}");
        }
        assert_eq!(hit(&t, "X.example.org:80", "/").as_deref(), Some("c/d"));
        assert_eq!(hit(&t, "chat.example.net", "/"), None);
        assert_eq!(hit(&t, "", "/"), None);
        let long = "a".repeat(300);
        assert_eq!(hit(&t, &long, "/"), None, "too long: no panic");
        let v6 = table(&[("[::1]", "/", "v/six")]);
        assert_eq!(hit(&v6, "[::1]:8080", "/").as_deref(), Some("v/six"));
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let t = table(&[("*", "/acme/chat", "acme/chat")]);
        for path in [
            "/acme/chat",
            "/acme/chat/",
            "/acme/chat/v1/completions",
            "/acme/chat?x=1",
        ] {
            assert_eq!(hit(&t, "h", path).as_deref(), Some("acme/chat"), "{path}");
        }
        for path in ["/acme/chatty", "/acme", "/ACME/chat", "/x/acme/chat", ""] {
            assert_eq!(hit(&t, "h", path), None, "{path}");
        }
        let empty = RouteTable::new([]);
        assert!(empty.is_empty());
        assert_eq!(hit(&empty, "h", "/"), None);
    }

    #[test]
    fn control_entries_keep_their_project_rule() {
        let t = RouteTable::new([
            (
                RouteKey::new("*", "/api").unwrap(),
                RouteSpec {
                    endpoint: Endpoint::Private,
                    target: RouteTarget::Control(None),
                },
            ),
            (
                RouteKey::new("*", "/api/projects/acme").unwrap(),
                RouteSpec {
                    endpoint: Endpoint::Public,
                    target: RouteTarget::Control(Some("acme".into())),
                },
            ),
        ]);
        let spec = &t.lookup("h", "/api/workloads/w1").unwrap().spec;
        assert_eq!(
            (spec.plane(), spec.endpoint),
            (Plane::Control, Endpoint::Private)
        );
        assert_eq!(
            t.lookup("h", "/api/projects/acme/workloads")
                .unwrap()
                .spec
                .target,
            RouteTarget::Control(Some("acme".into()))
        );
    }

    #[test]
    fn bad_hosts_and_prefixes_are_named() {
        for host in [
            "",
            "chat.example.com:80",
            "*example.com",
            "a.*.com",
            "**",
            "chat..com",
            "-a.com",
            "a b",
            "[::1",
        ] {
            let e = host_pattern(host).unwrap_err();
            assert!(
                e.contains(&format!("{:?}", host.trim().to_ascii_lowercase())),
                "{e}"
            );
        }
        assert_eq!(
            host_pattern(" Chat.Example.COM ").unwrap(),
            "chat.example.com"
        );
        assert_eq!(host_pattern("*.Example.com").unwrap(), "*.example.com");
        assert_eq!(host_pattern("*").unwrap(), "*");
        assert_eq!(host_pattern("10.0.0.1").unwrap(), "10.0.0.1");
        for prefix in ["", "acme", "/a//b", "/a/../b", "/a/./b", "/a?b", "/a b"] {
            let e = path_prefix_of(prefix).unwrap_err();
            assert!(e.contains("path prefix"), "{e}");
        }
        assert_eq!(path_prefix_of("/acme/chat/").unwrap(), "/acme/chat");
        assert_eq!(path_prefix_of("/").unwrap(), "/");
        assert!(validate_target(&RouteTarget::Control(Some("Bad Slug".into()))).is_err());
    }

    #[test]
    fn specs_from_their_parts() {
        let data = spec_of(None, Some("acme/chat"), None, false).unwrap();
        assert_eq!(data.endpoint, Endpoint::Public, "public unless asked");
        assert_eq!(data.plane(), Plane::Data);
        let pinned = spec_of(Some("private"), None, Some("acme"), true).unwrap();
        assert_eq!(pinned.target, RouteTarget::Control(Some("acme".into())));
        assert_eq!(pinned.endpoint, Endpoint::Private);
        let from_path = spec_of(Some(""), None, None, true).unwrap();
        assert_eq!(from_path.target, RouteTarget::Control(None));
        for (endpoint, deployment, project, control, why) in [
            (None, None, None, false, "needs a deployment"),
            (None, Some("acme/chat"), Some("acme"), false, "not both"),
            (None, Some("acme/chat"), None, true, "names no deployment"),
            (
                Some("internal"),
                Some("acme/chat"),
                None,
                false,
                "unknown endpoint",
            ),
            (None, Some("acme"), None, false, "acme"),
            (None, None, Some("Not A Slug"), false, "Not A Slug"),
        ] {
            let e = spec_of(endpoint, deployment, project, control).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }
    }

    #[tokio::test]
    async fn a_load_racing_a_change_is_used_once_not_kept() {
        let slot = RouteSlot::default();
        let loaded = slot
            .get_or_load(|| async { Ok::<_, ()>(table(&[("*", "/", "a/b")])) })
            .await
            .unwrap();
        assert_eq!(loaded.len(), 1);
        assert!(slot.get().is_some());
        slot.invalidate();
        assert!(slot.get().is_none());
        let raced = slot
            .get_or_load(|| async {
                slot.invalidate();
                Ok::<_, ()>(RouteTable::default())
            })
            .await
            .unwrap();
        assert!(raced.is_empty());
        assert!(slot.get().is_none(), "a change applied while it loaded");
        let failed = slot.get_or_load(|| async { Err("store down") }).await;
        assert_eq!(failed.unwrap_err(), "store down");
        assert!(slot.get().is_none());
    }
}
