//! What keyward gives its Envoy module (`module/`): with `module.enabled`, each data-plane allow
//! says how long and under which request facts the module may answer the same key on the same
//! route itself ([`hints`], [`learnable`]: `x-keyward-module` among the answer's response
//! headers to add, which the module takes out of the answer to the Check it sent), and
//! `keyward.module.v1.Feed` tells each module when anything changed, so that nothing it learnt
//! outlives a change.
//!
//! The feed is per replica: an answer names the replica's instance and its epoch (how many
//! changes it has applied, its own and, through [`crate::propagation`], every other
//! replica's). The module learns only allows decided at or after the epoch it last heard from
//! the replica it follows, and drops everything when the epoch moves.

use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::cache::Caches;
use crate::iam::Grants;
use crate::model::ApiKey;

/// Generated code for the feed (`proto/keyward/module/v1/feed.proto`).
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("keyward.module.v1");
}

/// How the module may reuse one allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hints {
    pub ttl_ms: u64,
    /// A condition on the source IP took part: reuse only for the same IP.
    pub vary_ip: bool,
    /// A condition on the user agent took part: reuse only for the same user agent.
    pub vary_ua: bool,
}

impl Hints {
    pub fn vary(&self) -> &'static str {
        match (self.vary_ip, self.vary_ua) {
            (false, false) => "",
            (true, false) => "ip",
            (false, true) => "ua",
            (true, true) => "ip,ua",
        }
    }
}

/// How the module may reuse an allow of `key` (with the principal's `grants`) decided at `now`
/// (Unix seconds), or `None` when it should not at all.
///
/// Conservative by construction: every rule of the principal counts, not only the one that
/// granted, so a decision that may have read the source IP or the user agent is bound to them,
/// and the reuse ends a second before the earliest instant at which any rule's time window,
/// the key's expiry or a rotated-out secret's grace could change the answer (`now` is whole
/// seconds, so up to a second of it may already have passed).
pub fn hints(key: &ApiKey, grants: &Grants, now: i64, max_ttl_ms: u64) -> Option<Hints> {
    let mut hints = Hints {
        ttl_ms: max_ttl_ms,
        vary_ip: false,
        vary_ua: false,
    };
    let mut bound = |at: i64| {
        let left_ms = at.saturating_sub(now).saturating_sub(1).max(0) as u64 * 1_000;
        hints.ttl_ms = hints.ttl_ms.min(left_ms);
    };
    if let Some(expiry) = key.expires_at {
        bound(expiry);
    }
    if let Some(previous) = &key.previous_secret {
        bound(previous.valid_until);
    }
    for rule in &grants.rules {
        let conditions = &rule.conditions;
        for at in [conditions.not_before, conditions.not_after.map(|t| t + 1)]
            .into_iter()
            .flatten()
        {
            if at > now {
                bound(at);
            }
        }
        // A schedule's answer can change at the next local minute: no reuse past it.
        for window in &conditions.schedule {
            bound(window.next_change_after(now));
        }
        hints.vary_ip |= !conditions.source_ips.is_empty();
        hints.vary_ua |= !conditions.user_agents.is_empty();
    }
    (hints.ttl_ms > 0).then_some(hints)
}

/// The response header an allow tells the module what it may reuse in ([`learnable`]).
pub const RESPONSE_HEADER: &str = "x-keyward-module";

/// Everything the module needs to reuse one allow ([`learnable`]).
#[derive(Debug, Clone, Copy)]
pub struct Learnable<'a> {
    /// The replica's instance and epoch the allow was decided at.
    pub instance: &'a str,
    pub epoch: u64,
    pub hints: Hints,
    /// The endpoint of the data route decided for; with `deployment`, the route context the
    /// module keys allows by: `data|<endpoint>|<project>/<deployment>`, as Envoy's route
    /// metadata `keyward.context` names it.
    pub endpoint: crate::model::Endpoint,
    /// The identity headers a reuse sets.
    pub key_id: &'a str,
    pub principal: &'a str,
    pub project: &'a str,
    pub deployment: &'a str,
}

/// One allow as the module reads it: `v1` and nine fields separated by single spaces (instance,
/// epoch, ttl_ms, vary (`ip`, `ua`, `ip,ua` or `-`), context, key id, principal, project,
/// deployment), in the answer's response headers to add ([`RESPONSE_HEADER`]). `None` when a
/// field is empty or holds whitespace or a control character (no name keyward accepts does);
/// the module, which accepts exactly ten fields, would refuse it anyway.
pub fn learnable(allow: &Learnable<'_>) -> Option<String> {
    let vary = match allow.hints.vary() {
        "" => "-",
        vary => vary,
    };
    let endpoint = match allow.endpoint {
        crate::model::Endpoint::Public => "public",
        crate::model::Endpoint::Private => "private",
    };
    let names = [
        allow.instance,
        allow.key_id,
        allow.principal,
        allow.project,
        allow.deployment,
    ];
    let unfit = |f: &str| f.is_empty() || f.chars().any(|c| c.is_whitespace() || c.is_control());
    if names.iter().any(|f| unfit(f)) {
        return None;
    }
    Some(format!(
        "v1 {} {} {} {vary} data|{endpoint}|{} {} {} {} {}",
        allow.instance,
        allow.epoch,
        allow.hints.ttl_ms,
        allow.deployment,
        allow.key_id,
        allow.principal,
        allow.project,
        allow.deployment,
    ))
}

/// The longest a poll is held.
const MAX_WAIT: Duration = Duration::from_secs(5);

/// `keyward.module.v1.Feed`, on the Check listener.
#[derive(Clone)]
pub struct FeedService {
    caches: Caches,
}

impl FeedService {
    pub fn new(caches: Caches) -> Self {
        FeedService { caches }
    }

    fn state(&self) -> pb::PollResponse {
        pb::PollResponse {
            instance: self.caches.instance().to_owned(),
            epoch: self.caches.epoch(),
        }
    }
}

#[tonic::async_trait]
impl pb::feed_server::Feed for FeedService {
    async fn poll(
        &self,
        request: Request<pb::PollRequest>,
    ) -> Result<Response<pb::PollResponse>, Status> {
        let asked = request.into_inner();
        let wait = Duration::from_millis(u64::from(asked.wait_ms)).min(MAX_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the state is read, so a change between the two still wakes it.
            let changed = self.caches.changed().notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let state = self.state();
            if state.instance != asked.instance
                || state.epoch != asked.epoch
                || tokio::time::Instant::now() >= deadline
            {
                return Ok(Response::new(state));
            }
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condition::Conditions;
    use crate::iam::{GrantRule, RuleScope};
    use crate::model::{KeyScope, PreviousSecret, PrincipalKind};

    fn key() -> ApiKey {
        ApiKey::new(
            "AAAAAAAAAAAA",
            (2, PrincipalKind::Application, "app"),
            KeyScope::ControlOrganization,
            "$h",
        )
    }

    fn rule(conditions: Conditions) -> GrantRule {
        GrantRule {
            policy: "p".into(),
            scope: RuleScope::Organization,
            actions: Default::default(),
            conditions,
        }
    }

    /// The module parses exactly this (`module/src/filter.rs`, `parse_learnable`): keep them
    /// in step.
    #[test]
    fn an_allow_is_ten_fields_separated_by_spaces() {
        let allow = Learnable {
            instance: "i-1",
            epoch: 42,
            hints: Hints {
                ttl_ms: 9_000,
                vary_ip: true,
                vary_ua: false,
            },
            endpoint: crate::model::Endpoint::Public,
            key_id: "AAAAAAAAAAAA",
            principal: "app",
            project: "acme",
            deployment: "acme/chat",
        };
        assert_eq!(
            learnable(&allow).unwrap(),
            "v1 i-1 42 9000 ip data|public|acme/chat AAAAAAAAAAAA app acme acme/chat"
        );
        let unconditioned = Learnable {
            hints: Hints {
                vary_ip: false,
                ..allow.hints
            },
            ..allow
        };
        assert!(
            learnable(&unconditioned)
                .unwrap()
                .starts_with("v1 i-1 42 9000 - data|")
        );
        for principal in ["a b", "a\nb", "a\tb", ""] {
            let unfit = Learnable { principal, ..allow };
            assert_eq!(learnable(&unfit), None, "{principal:?}");
        }
    }

    #[test]
    fn reuse_is_bounded_by_expiry_windows_and_bound_to_conditions_read() {
        let now = 1_000;
        let none = Grants::default();
        assert_eq!(
            hints(&key(), &none, now, 60_000),
            Some(Hints {
                ttl_ms: 60_000,
                vary_ip: false,
                vary_ua: false
            })
        );
        let expiring = ApiKey {
            expires_at: Some(now + 10),
            ..key()
        };
        assert_eq!(hints(&expiring, &none, now, 60_000).unwrap().ttl_ms, 9_000);
        let ending = ApiKey {
            expires_at: Some(now + 1),
            ..key()
        };
        assert_eq!(hints(&ending, &none, now, 60_000), None);
        let rotated = ApiKey {
            previous_secret: Some(PreviousSecret {
                hash: "$old".into(),
                valid_until: now + 5,
            }),
            ..key()
        };
        assert_eq!(hints(&rotated, &none, now, 60_000).unwrap().ttl_ms, 4_000);

        let window = Grants {
            rules: vec![rule(Conditions {
                not_before: Some(now - 100),
                not_after: Some(now + 20),
                ..Default::default()
            })],
        };
        assert_eq!(hints(&key(), &window, now, 60_000).unwrap().ttl_ms, 20_000);
        let later = Grants {
            rules: vec![rule(Conditions {
                not_before: Some(now + 30),
                ..Default::default()
            })],
        };
        assert_eq!(hints(&key(), &later, now, 60_000).unwrap().ttl_ms, 29_000);

        let conditioned = Grants {
            rules: vec![
                rule(Conditions {
                    source_ips: vec!["10.0.0.0/8".parse().unwrap()],
                    ..Default::default()
                }),
                rule(Conditions {
                    user_agents: vec![crate::condition::UserAgentMatch::Exact("sdk".into())],
                    ..Default::default()
                }),
            ],
        };
        let h = hints(&key(), &conditioned, now, 60_000).unwrap();
        assert!(h.vary_ip && h.vary_ua);
        assert_eq!(h.vary(), "ip,ua");
    }

    /// A schedule can turn an allow into a denial at any local minute: the module may reuse
    /// the allow only up to the next one (less the second `now` may already be into).
    #[test]
    fn reuse_under_a_schedule_ends_before_the_next_local_minute() {
        let scheduled = |window: &str| Grants {
            rules: vec![rule(Conditions {
                schedule: vec![window.parse().unwrap()],
                ..Default::default()
            })],
        };
        // 2030-01-07 09:59:15 UTC, a Monday.
        let now = 1_894_010_355;
        let utc = scheduled("Mon-Fri 08:00-10:00 UTC");
        assert_eq!(hints(&key(), &utc, now, 60_000).unwrap().ttl_ms, 44_000);
        // Kathmandu is UTC+05:45: its minutes start on UTC minutes too.
        let kathmandu = scheduled("* 00:00-24:00 Asia/Kathmandu");
        assert_eq!(
            hints(&key(), &kathmandu, now, 60_000).unwrap().ttl_ms,
            44_000
        );
        // One second before the minute turns: nothing to reuse.
        assert_eq!(hints(&key(), &utc, now + 44, 60_000), None);
        // Shorter than the module's own bound: that bound wins.
        assert_eq!(hints(&key(), &utc, now, 10_000).unwrap().ttl_ms, 10_000);
    }
}
