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
    /// Recurring windows of local wall-clock time (`Mon-Fri 08:00-18:00 Europe/Paris`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<Window>,
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
    /// Condition: a recurring window of local time, `DAYS HH:MM-HH:MM ZONE`, e.g.
    /// "Mon-Fri 08:00-18:00 Europe/Paris" or "* 22:00-06:00 UTC" (repeatable; any holds).
    #[arg(long)]
    pub schedule: Vec<String>,
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
            ("schedule", schedule::holds(&self.schedule, facts)),
        ]
        .into_iter()
        .filter_map(|(kind, holds)| (!holds).then_some(kind))
        .collect()
    }

    pub fn validate(&self) -> Result<(), String> {
        user_agent::validate(&self.user_agents)?;
        time::validate_window(self.not_before, self.not_after)
    }

    /// Why the condition kind `kind` (as [`Conditions::failures`] names it) fails for `facts`,
    /// for `keyward explain`: what was required and what the request had.
    pub fn explain_failure(&self, kind: &str, facts: &Facts<'_>) -> String {
        match kind {
            "source_ip" => match facts.source_ip {
                Some(ip) => format!(
                    "source_ip: {ip} is in none of {}",
                    source_ip::describe(&self.source_ips).unwrap_or_default()
                ),
                None => "source_ip: the request's source IP is unknown".to_owned(),
            },
            "user_agent" => match facts.user_agent {
                Some(ua) => format!(
                    "user_agent: {ua:?} matches none of {}",
                    user_agent::describe(&self.user_agents).unwrap_or_default()
                ),
                None => "user_agent: the request has no user agent".to_owned(),
            },
            "not_before" => format!(
                "not_before: {} is before {}",
                format_time(facts.now),
                self.not_before.map(format_time).unwrap_or_default()
            ),
            "not_after" => format!(
                "not_after: {} is after {}",
                format_time(facts.now),
                self.not_after.map(format_time).unwrap_or_default()
            ),
            "schedule" => {
                let windows: Vec<String> = self
                    .schedule
                    .iter()
                    .map(|w| format!("{w} (it is {} there)", w.local_time(facts.now)))
                    .collect();
                format!("schedule: no window holds: {}", windows.join("; "))
            }
            other => other.to_owned(),
        }
    }

    /// One short phrase per condition set, as `keyward iam policies list` shows it.
    pub fn describe(&self) -> Vec<String> {
        [
            source_ip::describe(&self.source_ips),
            user_agent::describe(&self.user_agents),
            self.not_before.map(|t| format!("from {}", format_time(t))),
            self.not_after.map(|t| format!("until {}", format_time(t))),
            schedule::describe(&self.schedule),
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

// ---------------------------------------------------------------------------------------------
// schedule: recurring windows of local wall-clock time in an IANA time zone.
// ---------------------------------------------------------------------------------------------

/// A recurring window: on `days`, from `start` to `end` local time in `zone`, written
/// `Mon-Fri 08:00-18:00 Europe/Paris`. The start is inclusive and the end exclusive, to the
/// minute (`18:00` ends at 17:59:59); `24:00` ends at midnight.
///
/// What counts is the local wall-clock time at the instant of the request, in the zone's rules
/// of that date (the tz database is compiled in, so no host's `/usr/share/zoneinfo` changes
/// an answer). So daylight saving needs no special case: in a spring-forward gap the skipped
/// local times never occur (a window lying wholly in the gap does not hold that day); in a
/// fall-back overlap the repeated local times occur twice and the window holds both times.
///
/// A window whose end is before its start crosses midnight, and its days are the days it
/// *starts* on: `Fri 22:00-06:00` holds from Friday 22:00 to Saturday 05:59.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Window {
    /// Bit 0 is Monday, bit 6 Sunday.
    days: u8,
    /// Minutes after local midnight: `start` in 0..1440, `end` in 1..=1440, never equal.
    start: u16,
    end: u16,
    /// The zone's canonical IANA name, as written back.
    zone: String,
    tz: jiff::tz::TimeZone,
}

const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

impl PartialEq for Window {
    fn eq(&self, other: &Self) -> bool {
        (self.days, self.start, self.end, &self.zone)
            == (other.days, other.start, other.end, &other.zone)
    }
}

impl Eq for Window {}

impl TryFrom<String> for Window {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Window::parse(&s)
    }
}

impl From<Window> for String {
    fn from(w: Window) -> String {
        w.to_string()
    }
}

impl std::str::FromStr for Window {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Window::parse(s)
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}-{} {}",
            schedule::days_text(self.days),
            schedule::clock_text(self.start),
            schedule::clock_text(self.end),
            self.zone
        )
    }
}

impl Window {
    /// `DAYS HH:MM-HH:MM ZONE`: days are `Mon`..`Sun`, comma-separated, ranges allowed
    /// (`Mon-Fri`, `Fri-Mon`), `*` for every day; the zone an IANA name (`Europe/Paris`, `UTC`).
    pub fn parse(s: &str) -> Result<Window, String> {
        let example = "expected DAYS HH:MM-HH:MM ZONE, e.g. \"Mon-Fri 08:00-18:00 Europe/Paris\"";
        let parts: Vec<&str> = s.split_whitespace().collect();
        let [days, hours, zone] = parts[..] else {
            return Err(format!("invalid schedule {s:?}: {example}"));
        };
        let days = schedule::parse_days(days).map_err(|e| format!("schedule {s:?}: {e}"))?;
        let (start, end) = hours
            .split_once('-')
            .ok_or_else(|| format!("invalid schedule {s:?}: {example}"))?;
        let start =
            schedule::parse_clock(start, false).map_err(|e| format!("schedule {s:?}: {e}"))?;
        let end = schedule::parse_clock(end, true).map_err(|e| format!("schedule {s:?}: {e}"))?;
        if start == end {
            return Err(format!(
                "schedule {s:?}: the window is empty (start = end); use 00:00-24:00 for whole days"
            ));
        }
        let tz = jiff::tz::TimeZone::get(zone).map_err(|_| {
            format!(
                "schedule {s:?}: unknown time zone {zone:?}: expected an IANA name such as Europe/Paris or UTC"
            )
        })?;
        let zone = tz.iana_name().unwrap_or(zone).to_owned();
        Ok(Window {
            days,
            start,
            end,
            zone,
            tz,
        })
    }

    /// Whether the window holds at the Unix instant `now`.
    pub fn holds(&self, now: i64) -> bool {
        let Ok(at) = jiff::Timestamp::from_second(now) else {
            return false;
        };
        let local = self.tz.to_datetime(at);
        let day = local.weekday().to_monday_zero_offset() as u8;
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        self.contains(day, minute)
    }

    /// The first instant after `now` at which the window's local clock starts a new minute:
    /// windows hold to the minute, so whether this one holds cannot change before then (a
    /// daylight-saving jump also falls on a local minute). `now` itself when `now` is out of
    /// range, so a caller bounding a reuse by it reuses nothing.
    pub fn next_change_after(&self, now: i64) -> i64 {
        let Ok(at) = jiff::Timestamp::from_second(now) else {
            return now;
        };
        now + 60 - i64::from(self.tz.to_datetime(at).second())
    }

    /// Whether local `minute` of `day` (0 = Monday) is in the window.
    fn contains(&self, day: u8, minute: u16) -> bool {
        let on = |d: u8| self.days & (1 << d) != 0;
        if self.start < self.end {
            on(day) && (self.start..self.end).contains(&minute)
        } else {
            (on(day) && minute >= self.start) || (on((day + 6) % 7) && minute < self.end)
        }
    }

    /// The local time at `now` in the window's zone, as `keyward explain` shows it:
    /// `Sat 2030-03-30 10:15 +01:00 Europe/Paris`.
    pub fn local_time(&self, now: i64) -> String {
        jiff::Timestamp::from_second(now).map_or_else(
            |_| now.to_string(),
            |at| {
                let local = at.to_zoned(self.tz.clone());
                format!("{} {}", local.strftime("%a %Y-%m-%d %H:%M %:z"), self.zone)
            },
        )
    }
}

mod schedule {
    use super::*;

    pub(super) fn holds(windows: &[Window], facts: &Facts<'_>) -> bool {
        windows.is_empty() || windows.iter().any(|w| w.holds(facts.now))
    }

    pub(super) fn describe(windows: &[Window]) -> Option<String> {
        let windows: Vec<String> = windows.iter().map(ToString::to_string).collect();
        (!windows.is_empty()).then(|| format!("schedule {}", windows.join("|")))
    }

    fn day(name: &str) -> Result<u8, String> {
        DAY_NAMES
            .iter()
            .position(|d| d.eq_ignore_ascii_case(name))
            .map(|i| i as u8)
            .ok_or_else(|| {
                format!("unknown day {name:?}: expected Mon, Tue, Wed, Thu, Fri, Sat or Sun")
            })
    }

    pub(super) fn parse_days(text: &str) -> Result<u8, String> {
        if text == "*" {
            return Ok(0x7f);
        }
        let mut days = 0u8;
        for item in text.split(',') {
            match item.split_once('-') {
                Some((from, to)) => {
                    let (from, to) = (day(from)?, day(to)?);
                    let mut d = from;
                    loop {
                        days |= 1 << d;
                        if d == to {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                }
                None => days |= 1 << day(item)?,
            }
        }
        Ok(days)
    }

    /// `HH:MM` → minutes after midnight; `24:00` only as an end.
    pub(super) fn parse_clock(text: &str, end: bool) -> Result<u16, String> {
        let bad = || {
            format!("invalid hour {text:?}: expected HH:MM from 00:00 to 23:59 (24:00 as an end)")
        };
        let (h, m) = text.split_once(':').ok_or_else(bad)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(bad());
        }
        let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        match (h, m) {
            (24, 0) if end => Ok(1440),
            (0..=23, 0..=59) => Ok(h * 60 + m),
            _ => Err(bad()),
        }
    }

    pub(super) fn clock_text(minutes: u16) -> String {
        format!("{:02}:{:02}", minutes / 60, minutes % 60)
    }

    /// Canonical days: runs of consecutive days (Monday first) as ranges.
    pub(super) fn days_text(days: u8) -> String {
        if days == 0x7f {
            return "*".to_owned();
        }
        let mut runs = Vec::new();
        let mut d = 0;
        while d < 7 {
            if days & (1 << d) == 0 {
                d += 1;
                continue;
            }
            let first = d;
            while d + 1 < 7 && days & (1 << (d + 1)) != 0 {
                d += 1;
            }
            runs.push(if first == d {
                DAY_NAMES[first].to_owned()
            } else {
                format!("{}-{}", DAY_NAMES[first], DAY_NAMES[d])
            });
            d += 1;
        }
        runs.join(",")
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

    fn at(s: &str) -> i64 {
        parse_time(s).unwrap()
    }

    fn window(s: &str) -> Window {
        Window::parse(s).unwrap()
    }

    /// Minutes of real time, from `from` (UTC) for `minutes`, in which `w` holds.
    fn minutes_held(w: &Window, from: &str, minutes: i64) -> usize {
        let start = at(from);
        (0..minutes).filter(|m| w.holds(start + m * 60)).count()
    }

    #[test]
    fn schedules_parse_validate_and_write_back_canonically() {
        for (text, canonical) in [
            (
                "Mon-Fri 08:00-18:00 Europe/Paris",
                "Mon-Fri 08:00-18:00 Europe/Paris",
            ),
            (
                "mon,tue,wed 08:00-18:00 europe/paris",
                "Mon-Wed 08:00-18:00 Europe/Paris",
            ),
            ("Fri-Mon 22:00-06:00 UTC", "Mon,Fri-Sun 22:00-06:00 UTC"),
            (
                "* 00:00-24:00 America/New_York",
                "* 00:00-24:00 America/New_York",
            ),
            (
                "Sat,Sun 10:30-12:00 Asia/Kolkata",
                "Sat-Sun 10:30-12:00 Asia/Kolkata",
            ),
        ] {
            let w = window(text);
            assert_eq!(w.to_string(), canonical, "{text}");
            assert_eq!(window(canonical), w, "{text}: written back, read the same");
            let json = serde_json::to_string(&w).unwrap();
            assert_eq!(serde_json::from_str::<Window>(&json).unwrap(), w);
        }
        for (text, names) in [
            (
                "Mon-Fri 08:00-18:00 Europe/Pariss",
                "unknown time zone \"Europe/Pariss\"",
            ),
            ("Mon-Fri 08:00-18:00 +01:00", "unknown time zone \"+01:00\""),
            ("Mon-Fry 08:00-18:00 UTC", "unknown day \"Fry\""),
            ("Mon-Fri 08:00-25:00 UTC", "invalid hour \"25:00\""),
            ("Mon-Fri 8:00-18:00 UTC", "invalid hour \"8:00\""),
            ("Mon-Fri 24:00-18:00 UTC", "invalid hour \"24:00\""),
            ("Mon-Fri 08:00-08:00 UTC", "empty"),
            ("Mon-Fri 08:00 UTC", "expected DAYS HH:MM-HH:MM ZONE"),
            ("Mon-Fri 08:00-18:00", "expected DAYS HH:MM-HH:MM ZONE"),
        ] {
            let err = Window::parse(text).unwrap_err();
            assert!(err.contains(names), "{text}: {err}");
        }
    }

    #[test]
    fn schedules_are_local_wall_clock_time_across_dst() {
        let office = window("Mon-Fri 08:00-18:00 Europe/Paris");
        // Winter (CET, +01:00): 08:00 local is 07:00 UTC.
        assert!(!office.holds(at("2030-01-07T06:59:59Z")), "Mon 07:59 CET");
        assert!(office.holds(at("2030-01-07T07:00:00Z")), "Mon 08:00 CET");
        assert!(office.holds(at("2030-01-07T16:59:59Z")), "Mon 17:59:59 CET");
        assert!(
            !office.holds(at("2030-01-07T17:00:00Z")),
            "Mon 18:00 CET: the end is exclusive"
        );
        // Summer (CEST, +02:00): 08:00 local is 06:00 UTC.
        assert!(office.holds(at("2030-07-01T06:00:00Z")), "Mon 08:00 CEST");
        assert!(!office.holds(at("2030-07-01T05:59:59Z")), "Mon 07:59 CEST");
        assert!(!office.holds(at("2030-07-01T16:00:00Z")), "Mon 18:00 CEST");
        // The Friday before and the Monday after the spring change (Sunday 2030-03-31).
        assert!(office.holds(at("2030-03-29T07:00:00Z")), "Fri 08:00 CET");
        assert!(!office.holds(at("2030-04-01T05:59:59Z")), "Mon 07:59 CEST");
        assert!(office.holds(at("2030-04-01T06:00:00Z")), "Mon 08:00 CEST");
        assert!(!office.holds(at("2030-03-30T10:00:00Z")), "Saturday");

        // Spring forward, 2030-03-31: local 02:00-02:59 does not exist that day.
        let gap = window("Sun 02:00-02:30 Europe/Paris");
        assert_eq!(minutes_held(&gap, "2030-03-30T22:00:00Z", 24 * 60), 0);
        assert_eq!(
            minutes_held(&gap, "2030-03-23T23:00:00Z", 24 * 60),
            30,
            "a week before"
        );
        // A window over the gap holds for the wall-clock hours that exist: 01:00-01:59 CET.
        let over = window("Sun 01:00-03:00 Europe/Paris");
        assert_eq!(minutes_held(&over, "2030-03-30T22:00:00Z", 24 * 60), 60);
        assert!(over.holds(at("2030-03-31T00:59:59Z")), "01:59:59 CET");
        assert!(!over.holds(at("2030-03-31T01:00:00Z")), "03:00 CEST");

        // Fall back, 2030-10-27: local 02:00-02:59 happens twice, and holds both times.
        let twice = window("Sun 02:00-03:00 Europe/Paris");
        assert_eq!(minutes_held(&twice, "2030-10-26T22:00:00Z", 24 * 60), 120);
        assert!(twice.holds(at("2030-10-27T00:30:00Z")), "02:30 CEST");
        assert!(twice.holds(at("2030-10-27T01:30:00Z")), "02:30 CET");
        assert!(!twice.holds(at("2030-10-27T02:00:00Z")), "03:00 CET");
        assert!(!twice.holds(at("2030-10-26T23:59:59Z")), "01:59:59 CEST");
        assert_eq!(
            twice.local_time(at("2030-10-27T01:30:00Z")),
            "Sun 2030-10-27 02:30 +01:00 Europe/Paris"
        );
    }

    #[test]
    fn schedules_crossing_midnight_belong_to_the_day_they_start() {
        let night = window("Fri 22:00-06:00 UTC");
        for (instant, holds) in [
            ("2030-01-04T21:59:59Z", false), // Fri 21:59
            ("2030-01-04T22:00:00Z", true),  // Fri 22:00
            ("2030-01-04T23:59:59Z", true),
            ("2030-01-05T00:00:00Z", true), // Sat 00:00, still Friday's night
            ("2030-01-05T05:59:59Z", true),
            ("2030-01-05T06:00:00Z", false),
            ("2030-01-05T22:00:00Z", false), // Saturday is not listed
            ("2030-01-03T23:00:00Z", false), // Thursday night
            ("2030-01-07T03:00:00Z", false), // Monday early: Sunday is not listed
        ] {
            assert_eq!(night.holds(at(instant)), holds, "{instant}");
        }
        // Sunday's night runs into Monday, across the week's end.
        let sunday = window("Sun 23:00-01:00 UTC");
        assert!(sunday.holds(at("2030-01-07T00:30:00Z")), "Mon 00:30");
        let c = Conditions {
            schedule: vec![night, sunday],
            ..Conditions::default()
        };
        let facts = |s| Facts {
            now: at(s),
            ..Facts::default()
        };
        assert!(
            c.failures(&facts("2030-01-07T00:30:00Z")).is_empty(),
            "any window holds"
        );
        assert_eq!(c.failures(&facts("2030-01-07T12:00:00Z")), ["schedule"]);
        assert_eq!(
            c.describe(),
            ["schedule Fri 22:00-06:00 UTC|Sun 23:00-01:00 UTC"]
        );
        let why = c.explain_failure("schedule", &facts("2030-01-07T12:00:00Z"));
        assert!(
            why.contains("Fri 22:00-06:00 UTC (it is Mon 2030-01-07 12:00 +00:00 UTC there)"),
            "{why}"
        );
    }

    #[test]
    fn each_kind_evaluates_and_describes_in_its_own_section() {
        let c = Conditions {
            source_ips: vec![parse_source_ip("10.1.2.3/8").unwrap()],
            user_agents: vec![UserAgentMatch::new("prefix", "curl/").unwrap()],
            not_before: Some(parse_time("2030-01-01T00:00:00Z").unwrap()),
            not_after: Some(parse_time("2031-01-01T00:00:00Z").unwrap()),
            ..Conditions::default()
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
