//! The audit log as data: who did what to which target, when, from where, and whether it was
//! allowed. Records are written by the store in the transaction of the write they describe
//! (`store/audit.rs`); denied admin calls have no transaction and are written on their own.
//!
//! A record never holds a secret: summaries are built from names, scopes, times and counts,
//! never from a token, a secret or its hash.

use std::fmt;

/// Whether the call was carried out or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
        }
    }
}

impl std::str::FromStr for Outcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ok" => Ok(Outcome::Ok),
            "denied" => Ok(Outcome::Denied),
            other => Err(format!("unknown audit outcome {other:?}")),
        }
    }
}

/// Where writes made on the store itself (`keyward init`, `init --recover`) come from.
pub const LOCAL: &str = "local";

/// One audit record. `target` names what changed as `kind:subject` (`key:AbC…`,
/// `deployment:acme/bot`), several separated by `, `; the store fills it from the write's change
/// events when the caller left it empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub at: i64,
    /// `owner`, `user:EMAIL` or `app:NAME`; empty for [`LOCAL`] writes.
    pub principal: String,
    /// The caller's control key id (public: it is in every token); empty for [`LOCAL`] writes.
    pub key_id: String,
    /// The admin client's address as the server saw it (`IP:PORT`), or [`LOCAL`].
    pub peer: String,
    /// The admin call (`create_key`, `put_policy`, …) or the local command (`init`).
    pub action: String,
    pub target: String,
    pub summary: String,
    pub outcome: Outcome,
}

impl Record {
    /// A command run on the store itself (`keyward init`), by whoever can write to it.
    pub fn local(action: &str, summary: String) -> Record {
        Record {
            at: crate::clock::now_unix(),
            principal: String::new(),
            key_id: String::new(),
            peer: LOCAL.to_owned(),
            action: action.to_owned(),
            target: String::new(),
            summary,
            outcome: Outcome::Ok,
        }
    }
}

/// A stored record and its id (ids grow with commits: pages go by id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: i64,
    pub record: Record,
}

/// What `audit list` asks for; empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Records at or after this Unix time.
    pub since: Option<i64>,
    /// Exactly this principal (`user:ada@example.com`, `app:ci`, `owner`).
    pub principal: String,
    /// Records whose target contains this text (`acme/bot`, `key:AbC…`).
    pub target: String,
    /// Exactly this action (`revoke_key`).
    pub action: String,
    /// Records after this id (the next page: records are listed oldest first, like a log).
    pub after_id: Option<i64>,
}

/// A short, secret-free description of a key's scope and lifetime, for summaries.
pub fn key_summary(
    plane: &str,
    name: &str,
    bearer: &str,
    scope: &[String],
    expires_at: Option<i64>,
) -> String {
    let expiry = match expires_at {
        Some(at) => format!("expires {}", format_time(at)),
        None => "never expires".to_owned(),
    };
    format!(
        "{plane} key {name:?} for {bearer}, scope {}, {expiry}",
        scope.join(",")
    )
}

/// RFC 3339 in UTC, or the raw number when it is out of range.
pub fn format_time(at: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| at.to_string())
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} by {} ({}) from {}: {} {}",
            format_time(self.at),
            self.outcome.as_str(),
            self.action,
            if self.principal.is_empty() {
                LOCAL
            } else {
                &self.principal
            },
            self.key_id,
            self.peer,
            self.target,
            self.summary
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip() {
        for o in [Outcome::Ok, Outcome::Denied] {
            assert_eq!(o.as_str().parse::<Outcome>(), Ok(o));
        }
        assert!("maybe".parse::<Outcome>().is_err());
    }

    #[test]
    fn key_summaries_name_scope_and_expiry() {
        let s = key_summary(
            "data",
            "ci",
            "app:ci",
            &["acme/bot".into(), "beta/*".into()],
            Some(0),
        );
        assert_eq!(
            s,
            "data key \"ci\" for app:ci, scope acme/bot,beta/*, expires 1970-01-01T00:00:00Z"
        );
    }
}
