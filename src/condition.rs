//! Rule conditions: optional restrictions on when a rule applies, checked against the
//! [`Facts`] of one request. Kinds AND together; values of one kind OR together.
//!
//! Each kind lives in one section below, with everything that is about it: its text form
//! (how the CLI, the admin API and `apply` files spell a value), its validation, its evaluation
//! and its one-line description. Adding a kind touches three files besides tests and the
//! proto: this one (a field of [`Conditions`], its section, its `--flag` in [`ConditionArgs`]
//! and its line in each `Conditions` method), `admin/convert.rs` (its protobuf field) and
//! `declare.rs` (its TOML key). A kind needing a new fact adds it to [`Facts`] and sets it
//! where facts are gathered (`authz.rs` for Check, `admin.rs` for the admin API).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The facts of one request that conditions are checked against.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts<'a> {
    /// The peer address Envoy reports (`attributes.source.address`), never a header.
    pub source_ip: Option<IpAddr>,
    pub user_agent: Option<&'a str>,
    pub now: i64,
}

/// Optional restrictions on when a rule applies. Empty means always. Stored as JSON, so a
/// field's name and shape are part of the database format.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conditions {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<IpNet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_agents: Vec<UserAgentMatch>,
    /// Unix seconds; the rule applies from this instant on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<i64>,
    /// Unix seconds; the rule applies up to and including this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<i64>,
}

/// The condition flags of `keyward iam policies put|add-rule`, passed to the server as text.
#[derive(Debug, Default, clap::Args)]
pub struct ConditionArgs {
    /// Condition: source IP in this CIDR (repeatable; any matches).
    #[arg(long = "ip")]
    pub source_ips: Vec<String>,
    /// Condition: user agent, `exact:V`, `prefix:V` or `glob:V` (repeatable; any matches).
    #[arg(long = "user-agent")]
    pub user_agents: Vec<String>,
    /// Condition: RFC 3339 (UTC) instant from which the rule applies.
    #[arg(long)]
    pub not_before: Option<String>,
    /// Condition: RFC 3339 (UTC) instant after which the rule no longer applies.
    #[arg(long)]
    pub not_after: Option<String>,
}

impl Conditions {
    pub fn is_empty(&self) -> bool {
        *self == Conditions::default()
    }

    /// The condition kinds that fail for `facts` (empty: all hold). A missing fact fails its
    /// condition: an IP rule never matches a request whose peer address is unknown.
    pub fn failures(&self, facts: &Facts<'_>) -> Vec<&'static str> {
        [
            ("source_ip", source_ip::holds(&self.source_ips, facts)),
            ("user_agent", user_agent::holds(&self.user_agents, facts)),
            ("not_before", time::not_before_holds(self.not_before, facts)),
            ("not_after", time::not_after_holds(self.not_after, facts)),
        ]
        .into_iter()
        .filter_map(|(kind, holds)| (!holds).then_some(kind))
        .collect()
    }

    pub fn validate(&self) -> Result<(), String> {
        user_agent::validate(&self.user_agents)?;
        time::validate_window(self.not_before, self.not_after)
    }

    /// One short phrase per condition set, as `keyward iam policies list` shows it.
    pub fn describe(&self) -> Vec<String> {
        [
            source_ip::describe(&self.source_ips),
            user_agent::describe(&self.user_agents),
            self.not_before.map(|t| format!("from {}", format_time(t))),
            self.not_after.map(|t| format!("until {}", format_time(t))),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// source_ips: the peer address is in one of these networks.
// ---------------------------------------------------------------------------------------------

/// A CIDR as written (`10.0.0.0/8`), host bits dropped.
pub fn parse_source_ip(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .map(|net| net.trunc())
        .map_err(|_| format!("invalid CIDR {s:?}: expected e.g. 10.0.0.0/8 or 2001:db8::/32"))
}

mod source_ip {
    use super::*;

    pub(super) fn holds(nets: &[IpNet], facts: &Facts<'_>) -> bool {
        if nets.is_empty() {
            return true;
        }
        let ip = facts.source_ip.map(canonical_ip);
        ip.is_some_and(|ip| nets.iter().any(|net| net.contains(&ip)))
    }

    pub(super) fn describe(nets: &[IpNet]) -> Option<String> {
        let nets: Vec<String> = nets.iter().map(ToString::to_string).collect();
        (!nets.is_empty()).then(|| format!("ip {}", nets.join("|")))
    }

    /// An IPv4 peer seen through a dual-stack socket (`::ffff:10.0.0.1`) is matched as IPv4,
    /// so `10.0.0.0/8` means what it says whatever the listener's address family.
    fn canonical_ip(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// user_agents: the User-Agent header matches one of these patterns.
// ---------------------------------------------------------------------------------------------

/// How a user agent must look. Patterns are at most 255 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserAgentMatch {
    Exact(String),
    Prefix(String),
    /// `*` matches any run of characters, `?` exactly one.
    Glob(String),
}

pub const MAX_USER_AGENT_PATTERN: usize = 255;

impl UserAgentMatch {
    pub fn pattern(&self) -> &str {
        match self {
            UserAgentMatch::Exact(p) | UserAgentMatch::Prefix(p) | UserAgentMatch::Glob(p) => p,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            UserAgentMatch::Exact(_) => "exact",
            UserAgentMatch::Prefix(_) => "prefix",
            UserAgentMatch::Glob(_) => "glob",
        }
    }

    pub fn new(kind: &str, pattern: &str) -> Result<Self, String> {
        let m = match kind {
            "exact" => UserAgentMatch::Exact(pattern.to_owned()),
            "prefix" => UserAgentMatch::Prefix(pattern.to_owned()),
            "glob" => UserAgentMatch::Glob(pattern.to_owned()),
            other => {
                return Err(format!(
                    "unknown user agent match {other:?} (expected exact, prefix or glob)"
                ));
            }
        };
        m.validate()?;
        Ok(m)
    }

    pub fn validate(&self) -> Result<(), String> {
        let p = self.pattern();
        if p.is_empty() || p.chars().count() > MAX_USER_AGENT_PATTERN {
            return Err(format!(
                "user agent pattern must be 1-{MAX_USER_AGENT_PATTERN} characters"
            ));
        }
        if p.chars().any(char::is_control) {
            return Err("user agent pattern contains control characters".into());
        }
        Ok(())
    }

    pub fn matches(&self, user_agent: &str) -> bool {
        match self {
            UserAgentMatch::Exact(p) => user_agent == p,
            UserAgentMatch::Prefix(p) => user_agent.starts_with(p.as_str()),
            UserAgentMatch::Glob(p) => user_agent::glob(p, user_agent),
        }
    }
}

mod user_agent {
    use super::*;

    pub(super) fn holds(matches: &[UserAgentMatch], facts: &Facts<'_>) -> bool {
        matches.is_empty()
            || facts
                .user_agent
                .is_some_and(|ua| matches.iter().any(|m| m.matches(ua)))
    }

    pub(super) fn validate(matches: &[UserAgentMatch]) -> Result<(), String> {
        matches.iter().try_for_each(UserAgentMatch::validate)
    }

    pub(super) fn describe(matches: &[UserAgentMatch]) -> Option<String> {
        let uas: Vec<String> = matches
            .iter()
            .map(|u| format!("{}:{}", u.kind(), u.pattern()))
            .collect();
        (!uas.is_empty()).then(|| format!("ua {}", uas.join("|")))
    }

    /// `*` any run of characters, `?` exactly one character (not byte); wildmatch matches
    /// without recursion or regex compilation.
    pub(super) fn glob(pattern: &str, text: &str) -> bool {
        wildmatch::WildMatch::new(pattern).matches(text)
    }
}

// ---------------------------------------------------------------------------------------------
// not_before / not_after: a time window, inclusive, in Unix seconds.
// ---------------------------------------------------------------------------------------------

/// RFC 3339 → Unix seconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    ::time::OffsetDateTime::parse(s, &::time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| format!("invalid time {s:?}: expected RFC 3339, e.g. 2030-01-02T00:00:00Z"))
}

/// Unix seconds → RFC 3339 in UTC.
pub fn format_time(at: i64) -> String {
    ::time::OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| {
            t.format(&::time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| at.to_string())
}

mod time {
    use super::*;

    pub(super) fn not_before_holds(at: Option<i64>, facts: &Facts<'_>) -> bool {
        at.is_none_or(|at| facts.now >= at)
    }

    pub(super) fn not_after_holds(at: Option<i64>, facts: &Facts<'_>) -> bool {
        at.is_none_or(|at| facts.now <= at)
    }

    pub(super) fn validate_window(
        not_before: Option<i64>,
        not_after: Option<i64>,
    ) -> Result<(), String> {
        match (not_before, not_after) {
            (Some(a), Some(b)) if a > b => Err("not_before is after not_after".into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let (star_a, a99) = ("*a".repeat(100), "a".repeat(99));
        for (p, t, ok) in [
            ("curl/*", "curl/8.5.0", true),
            ("curl/*", "xcurl/8", false),
            ("*bot*", "my-bot-1", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*", "", true),
            ("**a", "bba", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            // `?` is one character, however many bytes it takes.
            ("caf?/1", "café/1", true),
            ("caf??/1", "café/1", false),
            ("*", "\u{1F600}", true),
            // Backtracking to the last `*` stays linear on a pattern built to defeat it.
            (star_a.as_str(), a99.as_str(), false),
            ("CURL/*", "curl/8", false),
        ] {
            assert_eq!(user_agent::glob(p, t), ok, "{p} ~ {t}");
        }
    }

    #[test]
    fn each_kind_evaluates_and_describes_in_its_own_section() {
        let c = Conditions {
            source_ips: vec![parse_source_ip("10.1.2.3/8").unwrap()],
            user_agents: vec![UserAgentMatch::new("prefix", "curl/").unwrap()],
            not_before: Some(parse_time("2030-01-01T00:00:00Z").unwrap()),
            not_after: Some(parse_time("2031-01-01T00:00:00Z").unwrap()),
        };
        assert_eq!(
            c.describe(),
            [
                "ip 10.0.0.0/8",
                "ua prefix:curl/",
                "from 2030-01-01T00:00:00Z",
                "until 2031-01-01T00:00:00Z"
            ]
        );
        let inside = Facts {
            source_ip: Some("::ffff:10.9.9.9".parse().unwrap()),
            user_agent: Some("curl/8"),
            now: c.not_before.unwrap(),
        };
        assert!(c.failures(&inside).is_empty());
        let outside = Facts {
            source_ip: None,
            user_agent: Some("wget"),
            now: c.not_after.unwrap() + 1,
        };
        assert_eq!(
            c.failures(&outside),
            ["source_ip", "user_agent", "not_after"]
        );
        let early = Facts {
            now: c.not_before.unwrap() - 1,
            ..inside
        };
        assert_eq!(c.failures(&early), ["not_before"]);
        assert!(Conditions::default().failures(&outside).is_empty());
        assert!(
            parse_source_ip("10.0.0.0/33")
                .unwrap_err()
                .contains("invalid CIDR")
        );
        let reversed = Conditions {
            not_before: c.not_after,
            not_after: c.not_before,
            ..Conditions::default()
        };
        assert!(reversed.validate().is_err());
    }
}
