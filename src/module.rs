//! What keyward gives its Envoy module (`module/`): with `module.enabled`, each data-plane allow
//! says how long and under which request facts the module may answer the same key on the same
//! route itself ([`hints`], sent as `module_*` dynamic metadata), and `keyward.module.v1.Feed`
//! tells each module when anything changed, so that nothing it learnt outlives a change.
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
        hints.vary_ip |= !conditions.source_ips.is_empty();
        hints.vary_ua |= !conditions.user_agents.is_empty();
    }
    (hints.ttl_ms > 0).then_some(hints)
}

/// The route context the module keys a data route's allows by:
/// `data|<endpoint>|<project>/<deployment>`, as Envoy's route metadata `keyward.context` names it.
pub fn data_context(endpoint: crate::model::Endpoint, deployment: &str) -> String {
    let endpoint = match endpoint {
        crate::model::Endpoint::Public => "public",
        crate::model::Endpoint::Private => "private",
    };
    format!("data|{endpoint}|{deployment}")
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
}
