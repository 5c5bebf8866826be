//! The pure decision: a route, the deployment's flags, the authenticated key and its bearer's
//! resolved [`Grants`] in, a [`Decision`] out. No I/O, no protobuf, no clock: `now` is passed
//! in, so every branch is unit-tested directly.
//!
//! allow ⇔ the key is valid ∧ the key's own scope covers the target ∧ (the bearer is the owner
//! ∨ some rule of some policy of the bearer covers the target's project, holds a set containing
//! the action, and all its conditions hold for this request now).

use std::fmt;
use std::net::IpAddr;

use crate::explain::{NoTrace, Step, Trace};
pub use crate::iam::Action;
use crate::iam::{Evaluation, Facts, Grants, Place};
use crate::model::{ApiKey, Deployment, Endpoint, KeyScope, Plane, PrincipalKind};

mod access;
pub use access::{AccessDenied, Bearer, reaches};

/// The one message for a request no rule's conditions let through, on both APIs.
const CONDITIONS_NOT_MET: &str = "request did not satisfy the policy conditions";

fn missing_permission(f: &mut fmt::Formatter<'_>, action: Action, place: &str) -> fmt::Result {
    write!(f, "missing permission {} on {place}", action.as_str())
}

/// Whether a key is valid at `now`: not revoked, not expired. The one place that says so, for
/// Check, the admin API and the CLI's listing.
pub fn validity(
    revoked_at: Option<i64>,
    expires_at: Option<i64>,
    now: i64,
) -> Result<(), InvalidReason> {
    if revoked_at.is_some() {
        return Err(InvalidReason::Revoked);
    }
    if expires_at.is_some_and(|at| now >= at) {
        return Err(InvalidReason::Expired);
    }
    Ok(())
}

/// Whether a rotated key's previous secret still counts at `now`: up to, not including, the
/// end of its grace period.
pub fn within_grace(valid_until: i64, now: i64) -> bool {
    now < valid_until
}

/// When a rotation's previous secret stops counting: `grace_seconds` from `now` (none for 0),
/// never past the key's own expiry.
pub fn grace_until(now: i64, grace_seconds: u64, expires_at: Option<i64>) -> Option<i64> {
    (grace_seconds > 0).then(|| {
        let until = now.saturating_add(grace_seconds as i64);
        expires_at.map_or(until, |expiry| until.min(expiry))
    })
}

/// Why a key cannot be given an expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryRefused {
    InThePast,
    /// The key is revoked or expired already.
    Terminal,
}

impl fmt::Display for ExpiryRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExpiryRefused::InThePast => "the expiry is in the past",
            ExpiryRefused::Terminal => "the key is revoked or expired; create a new key instead",
        })
    }
}

/// Whether a key (revoked at `revoked_at`, expiring at `expires_at`; both `None` for a new key)
/// may be given the expiry `requested` (`None`: never), at creation or by an update.
///
/// Never in the past, and an expired key is terminal like a revoked one: an update that could
/// revive it would make expiry a suspension anyone managing the key can lift.
pub fn may_set_expiry(
    revoked_at: Option<i64>,
    expires_at: Option<i64>,
    requested: Option<i64>,
    now: i64,
) -> Result<(), ExpiryRefused> {
    if validity(revoked_at, expires_at, now).is_err() {
        return Err(ExpiryRefused::Terminal);
    }
    if requested.is_some_and(|at| at <= now) {
        return Err(ExpiryRefused::InThePast);
    }
    Ok(())
}

/// The route's contract with Envoy (context extensions) and the request facts conditions are
/// checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    pub plane: Plane,
    pub endpoint: Endpoint,
    pub target: Target<'a>,
    pub method: &'a str,
    /// The peer address Envoy reports, never a client-written header.
    pub source_ip: Option<IpAddr>,
    pub user_agent: Option<&'a str>,
}

/// What the request acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// A data route: one deployment, `name` = `project/slug`.
    Deployment {
        name: &'a str,
        project: &'a str,
        slug: &'a str,
    },
    /// A control route: a project's workload lifecycle.
    Project(&'a str),
    /// A control route on one workload (`/api/workloads/:id`); keyward resolves its project
    /// itself, within the presenting key's scope ([`workload_project`]; `None`: no such
    /// workload is registered there).
    Workload {
        id: &'a str,
        project: Option<&'a str>,
    },
}

impl<'a> Target<'a> {
    /// The project acted on; `None` only for an unregistered workload.
    pub fn project(&self) -> Option<&'a str> {
        match *self {
            Target::Deployment { project, .. } => Some(project),
            Target::Project(project) => Some(project),
            Target::Workload { project, .. } => project,
        }
    }
}

/// Data routes call inference; on control routes reads are `GET`/`HEAD`, all else writes.
pub fn action_of(route: &Route<'_>) -> Action {
    match route.plane {
        Plane::Data => Action::InferenceCall,
        Plane::Control if matches!(route.method, "GET" | "HEAD") => Action::DeploymentsRead,
        Plane::Control => Action::DeploymentsWrite,
    }
}

/// Why a presented credential did not authenticate. Callers all see one generic message (no
/// oracle); the reason goes to the debug log with the key id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidReason {
    Malformed,
    UnknownKey,
    WrongSecret,
    Expired,
    Revoked,
    /// The old secret of a rotated key, past its grace period.
    RotatedOut,
}

/// What authentication established before the decision.
#[derive(Debug, Clone, Copy)]
pub enum Authentication<'k> {
    /// No credential was presented.
    Missing,
    /// A credential was presented and did not authenticate.
    Invalid(InvalidReason),
    /// The secret matched this stored key (revocation and expiry are checked by [`decide`]).
    Verified(&'k ApiKey),
}

/// Why a request is denied. [`crate::authz`] maps each to an HTTP status in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// The deployment's public endpoint is removed (private-only): the public route answers
    /// as if no deployment were routed there.
    NoEndpoint,
    MissingCredential,
    InvalidKey {
        route_plane: Plane,
        reason: InvalidReason,
    },
    WrongPlane {
        key_plane: Plane,
    },
    OutOfScope {
        target: String,
    },
    UnknownDeployment {
        deployment: String,
    },
    MissingPermission {
        action: Action,
        project: String,
    },
    /// Some rule grants the action, but none whose conditions hold. `failed` names each such
    /// rule's policy and failed condition kinds: for the debug log only, never the body.
    ConditionsNotMet {
        action: Action,
        project: String,
        failed: Vec<String>,
    },
}

impl fmt::Display for Denial {
    /// The caller-facing message: names only what the caller itself asked for.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::NoEndpoint => f.write_str("No deployment is routed at this path."),
            Denial::MissingCredential => f.write_str(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
            ),
            Denial::InvalidKey { .. } => f.write_str("Invalid API key provided."),
            Denial::WrongPlane {
                key_plane: Plane::Data,
            } => f.write_str(
                "This is a data-plane key (ik_live_): it calls inference only; control routes need an ik_sdk_ key.",
            ),
            Denial::WrongPlane {
                key_plane: Plane::Control,
            } => f.write_str(
                "This is a control-plane key (ik_sdk_): it manages workloads only; inference needs an ik_live_ key.",
            ),
            Denial::OutOfScope { target } => {
                write!(f, "This API key is not scoped to {target}.")
            }
            Denial::UnknownDeployment { deployment } => {
                write!(f, "Deployment {deployment} is not registered.")
            }
            Denial::MissingPermission { action, project } => {
                missing_permission(f, *action, &format!("project {project}"))
            }
            Denial::ConditionsNotMet { .. } => f.write_str(CONDITIONS_NOT_MET),
        }
    }
}

/// An allowed request and who it is allowed as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant<'k> {
    /// Authentication is off for this endpoint.
    Anonymous,
    Key(&'k ApiKey),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'k> {
    Allow(Grant<'k>),
    Deny(Denial),
}

/// Whether this request must authenticate. Unknown deployments require it (fail closed).
pub fn auth_required(route: &Route<'_>, deployment: Option<&Deployment>) -> bool {
    match (route.target, deployment) {
        (Target::Deployment { .. }, Some(d)) => d.auth_required(route.endpoint),
        _ => true,
    }
}

/// Whether the route's endpoint is removed for its deployment: a private-only deployment has
/// no public endpoint. Asked before any credential is read, so the public listener answers
/// alike for any request, with or without a key, and reveals nothing about the private one.
pub fn endpoint_removed(route: &Route<'_>, deployment: Option<&Deployment>) -> bool {
    matches!(route.target, Target::Deployment { .. })
        && deployment.is_some_and(|d| !d.has_endpoint(route.endpoint))
}

/// Which of the projects holding a workload of id `id` a request on `/api/workloads/:id`
/// means: the one the presenting key is scoped to. Workload ids are unique per project only,
/// so an organization-wide key reaching several holders is ambiguous: none is chosen (fail
/// closed), and the request is denied as for an unregistered workload. A data key gets none:
/// it is on the wrong plane anyway.
pub fn workload_project<'h>(key: &ApiKey, holders: &'h [std::sync::Arc<str>]) -> Option<&'h str> {
    match &key.scope {
        KeyScope::ControlProject(project) => {
            holders.iter().find(|h| ***h == **project).map(|h| &**h)
        }
        KeyScope::ControlOrganization => match holders {
            [only] => Some(only),
            _ => None,
        },
        KeyScope::Data(_) => None,
    }
}

/// Decides an authenticated request. `deployment` is the stored row for a data route's target
/// (`None` when it is not registered); `grants` are the key's bearer's resolved policies
/// (ignored for the owner); `now` is Unix seconds.
pub fn decide<'k>(
    route: &Route<'_>,
    deployment: Option<&Deployment>,
    auth: Authentication<'k>,
    grants: &Grants,
    now: i64,
) -> Decision<'k> {
    decide_traced(route, deployment, auth, grants, now, &mut NoTrace)
}

/// [`decide`], reporting each step and each rule considered to `trace`: the one decision
/// function, for Check (with [`NoTrace`]) and `keyward explain` alike.
pub fn decide_traced<'k, T: Trace>(
    route: &Route<'_>,
    deployment: Option<&Deployment>,
    auth: Authentication<'k>,
    grants: &Grants,
    now: i64,
    trace: &mut T,
) -> Decision<'k> {
    if endpoint_removed(route, deployment) {
        trace.step(Step::PublicEndpointRemoved);
        return Decision::Deny(Denial::NoEndpoint);
    }
    let key = match auth {
        Authentication::Missing => return Decision::Deny(Denial::MissingCredential),
        Authentication::Invalid(reason) => return Decision::Deny(invalid(route, reason)),
        Authentication::Verified(key) => key,
    };
    if let Err(reason) = validity(key.revoked_at, key.expires_at, now) {
        return Decision::Deny(invalid(route, reason));
    }
    trace.step(Step::KeyValid);
    trace.step(Step::Plane {
        key: key.plane(),
        route: route.plane,
    });
    if key.plane() != route.plane {
        return Decision::Deny(Denial::WrongPlane {
            key_plane: key.plane(),
        });
    }
    let Some(project) = route.target.project() else {
        trace.step(Step::Scope {
            scope: &key.scope,
            target: route.target,
            covers: false,
        });
        // An unregistered workload reads exactly like another project's: no oracle.
        return Decision::Deny(Denial::OutOfScope {
            target: target_name(&route.target),
        });
    };
    let covers = scope_covers(&key.scope, &route.target);
    trace.step(Step::Scope {
        scope: &key.scope,
        target: route.target,
        covers,
    });
    if !covers {
        return Decision::Deny(Denial::OutOfScope {
            target: target_name(&route.target),
        });
    }
    if let Target::Deployment { name, .. } = route.target {
        trace.step(Step::DeploymentKnown {
            name,
            known: deployment.is_some(),
        });
        if deployment.is_none() {
            return Decision::Deny(Denial::UnknownDeployment {
                deployment: name.to_owned(),
            });
        }
    }
    let action = action_of(route);
    trace.step(Step::Action { action, project });
    let facts = Facts {
        source_ip: route.source_ip,
        user_agent: route.user_agent,
        now,
    };
    match permits_traced(key, grants, action, Place::Project(project), &facts, trace) {
        Evaluation::Granted { .. } => Decision::Allow(Grant::Key(key)),
        Evaluation::NotGranted => Decision::Deny(Denial::MissingPermission {
            action,
            project: project.to_owned(),
        }),
        Evaluation::ConditionsFailed(failed) => Decision::Deny(Denial::ConditionsNotMet {
            action,
            project: project.to_owned(),
            failed,
        }),
    }
}

/// What the key's bearer may do at `place`: the owner everything, anyone else what some rule of
/// their policies grants under the request's facts. The admin API asks this too.
pub fn permits(
    key: &ApiKey,
    grants: &Grants,
    action: Action,
    place: Place<'_>,
    facts: &Facts<'_>,
) -> Evaluation {
    permits_traced(key, grants, action, place, facts, &mut NoTrace)
}

fn permits_traced<T: Trace>(
    key: &ApiKey,
    grants: &Grants,
    action: Action,
    place: Place<'_>,
    facts: &Facts<'_>,
    trace: &mut T,
) -> Evaluation {
    if key.principal.kind == PrincipalKind::Owner {
        trace.step(Step::Owner);
        return Evaluation::Granted {
            policy: "owner".into(),
        };
    }
    grants.evaluate_traced(action, place, facts, trace)
}

fn invalid(route: &Route<'_>, reason: InvalidReason) -> Denial {
    Denial::InvalidKey {
        route_plane: route.plane,
        reason,
    }
}

/// Workload routes are named by the workload, never by the project it resolved to, so a
/// denial does not tell a caller which tenant owns someone else's workload.
pub(crate) fn target_name(target: &Target<'_>) -> String {
    match *target {
        Target::Deployment { name, .. } => format!("deployment {name}"),
        Target::Project(project) => format!("project {project}"),
        Target::Workload { id, .. } => format!("workload {id}"),
    }
}

/// The key's own scope: a key never reaches past it, whatever its bearer may do.
fn scope_covers(scope: &KeyScope, target: &Target<'_>) -> bool {
    match (scope, target) {
        (KeyScope::Data(targets), Target::Deployment { project, slug, .. }) => {
            targets.iter().any(|t| t.covers(project, slug))
        }
        (KeyScope::ControlProject(p), Target::Project(project)) => p == project,
        (
            KeyScope::ControlProject(p),
            Target::Workload {
                project: Some(project),
                ..
            },
        ) => p == project,
        (KeyScope::ControlOrganization, Target::Project(_) | Target::Workload { .. }) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DataTarget;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn expiry_changes() {
        use ExpiryRefused::*;
        // (revoked_at, expires_at, requested, outcome)
        let table = [
            (None, None, None, Ok(())),
            (None, None, Some(NOW + 1), Ok(())),
            (None, None, Some(NOW), Err(InThePast)),
            (None, None, Some(NOW - 10), Err(InThePast)),
            (None, Some(NOW + 60), None, Ok(())),
            (None, Some(NOW + 60), Some(NOW + 3600), Ok(())),
            // Expired and revoked keys are terminal: no expiry brings them back.
            (None, Some(NOW), None, Err(Terminal)),
            (None, Some(NOW - 1), Some(NOW + 3600), Err(Terminal)),
            (Some(NOW - 5), None, None, Err(Terminal)),
        ];
        for (revoked, expires, requested, expected) in table {
            assert_eq!(
                may_set_expiry(revoked, expires, requested, NOW),
                expected,
                "{revoked:?} {expires:?} {requested:?}"
            );
        }
    }

    fn key(scope: KeyScope, kind: PrincipalKind) -> ApiKey {
        ApiKey::new("AAAAAAAAAAAA", (1, kind, "owner@example.com"), scope, "")
    }

    fn data_key(targets: &[&str]) -> ApiKey {
        key(
            KeyScope::Data(
                targets
                    .iter()
                    .map(|t| t.parse::<DataTarget>().unwrap())
                    .collect(),
            ),
            PrincipalKind::Owner,
        )
    }

    fn data_route(endpoint: Endpoint) -> Route<'static> {
        Route {
            plane: Plane::Data,
            endpoint,
            target: Target::Deployment {
                name: "acme/bot",
                project: "acme",
                slug: "bot",
            },
            method: "POST",
            source_ip: None,
            user_agent: None,
        }
    }

    fn control_route(project: &'static str, method: &'static str) -> Route<'static> {
        Route {
            plane: Plane::Control,
            endpoint: Endpoint::Public,
            target: Target::Project(project),
            method,
            source_ip: None,
            user_agent: None,
        }
    }

    fn bot(public_auth: bool, private_auth: bool) -> Deployment {
        Deployment {
            name: "acme/bot".parse().unwrap(),
            model: "llama".into(),
            public_auth,
            private_auth,
            description: String::new(),
            public_endpoint: true,
            created_at: 0,
        }
    }

    #[test]
    fn endpoint_flags_decide_whether_auth_is_required() {
        let route_pub = data_route(Endpoint::Public);
        let route_priv = data_route(Endpoint::Private);
        assert!(!auth_required(&route_pub, Some(&bot(false, true))));
        assert!(auth_required(&route_priv, Some(&bot(false, true))));
        assert!(auth_required(&route_pub, Some(&bot(true, false))));
        assert!(!auth_required(&route_priv, Some(&bot(true, false))));
        assert!(
            auth_required(&route_pub, None),
            "unknown deployment fails closed"
        );
        assert!(auth_required(&control_route("acme", "GET"), None));
    }

    #[test]
    fn a_removed_public_endpoint_answers_alike_for_every_request() {
        let private_only = Deployment {
            public_endpoint: false,
            ..bot(true, true)
        };
        let open_private_only = Deployment {
            public_endpoint: false,
            ..bot(false, false)
        };
        let owner = data_key(&["acme/bot"]);
        let revoked = ApiKey {
            revoked_at: Some(1),
            ..data_key(&["acme/bot"])
        };
        let public = data_route(Endpoint::Public);
        for d in [&private_only, &open_private_only] {
            assert!(endpoint_removed(&public, Some(d)));
            assert!(!endpoint_removed(&data_route(Endpoint::Private), Some(d)));
            for auth in [
                Authentication::Missing,
                Authentication::Invalid(InvalidReason::WrongSecret),
                Authentication::Verified(&revoked),
                Authentication::Verified(&owner),
            ] {
                let decision = decide(&public, Some(d), auth, &Grants::default(), NOW);
                assert_eq!(decision, Decision::Deny(Denial::NoEndpoint), "{auth:?}");
            }
        }
        let decision = decide(
            &data_route(Endpoint::Private),
            Some(&private_only),
            Authentication::Verified(&owner),
            &Grants::default(),
            NOW,
        );
        assert_eq!(decision, Decision::Allow(Grant::Key(&owner)));
        assert!(!endpoint_removed(&public, Some(&bot(true, true))));
        assert!(
            !endpoint_removed(&public, None),
            "unknown stays 403 after a key"
        );
        assert!(!endpoint_removed(&control_route("acme", "GET"), None));
    }

    #[test]
    fn a_workload_id_resolves_within_the_key_scope() {
        use std::sync::Arc;
        let holders: Vec<Arc<str>> = vec!["acme".into(), "beta".into()];
        let control = |scope| key(scope, PrincipalKind::Member);
        let acme = control(KeyScope::ControlProject("acme".into()));
        let beta = control(KeyScope::ControlProject("beta".into()));
        let gamma = control(KeyScope::ControlProject("gamma".into()));
        let org = control(KeyScope::ControlOrganization);
        assert_eq!(workload_project(&acme, &holders), Some("acme"));
        assert_eq!(workload_project(&beta, &holders), Some("beta"));
        assert_eq!(workload_project(&gamma, &holders), None);
        assert_eq!(
            workload_project(&org, &holders),
            None,
            "ambiguous: fail closed"
        );
        assert_eq!(workload_project(&org, &holders[1..]), Some("beta"));
        assert_eq!(workload_project(&org, &[]), None);
        assert_eq!(workload_project(&data_key(&["acme/*"]), &holders), None);
    }

    #[test]
    fn data_key_attached_to_the_deployment_is_allowed() {
        let k = data_key(&["acme/bot"]);
        let d = bot(true, true);
        let decision = decide(
            &data_route(Endpoint::Public),
            Some(&d),
            Authentication::Verified(&k),
            &Grants::default(),
            NOW,
        );
        assert_eq!(decision, Decision::Allow(Grant::Key(&k)));
        let project_wide = data_key(&["acme/*"]);
        let decision = decide(
            &data_route(Endpoint::Private),
            Some(&d),
            Authentication::Verified(&project_wide),
            &Grants::default(),
            NOW,
        );
        assert_eq!(decision, Decision::Allow(Grant::Key(&project_wide)));
    }

    #[test]
    fn every_denial_of_the_status_table() {
        let d = bot(true, true);
        let route = data_route(Endpoint::Public);
        fn deny(
            auth: Authentication<'_>,
            deployment: Option<&Deployment>,
            route: &Route<'_>,
        ) -> Denial {
            match decide(route, deployment, auth, &Grants::default(), NOW) {
                Decision::Deny(denial) => denial,
                Decision::Allow(_) => panic!("allowed"),
            }
        }

        assert_eq!(
            deny(Authentication::Missing, Some(&d), &route),
            Denial::MissingCredential
        );
        for reason in [
            InvalidReason::Malformed,
            InvalidReason::UnknownKey,
            InvalidReason::WrongSecret,
        ] {
            assert_eq!(
                deny(Authentication::Invalid(reason), Some(&d), &route),
                Denial::InvalidKey {
                    route_plane: Plane::Data,
                    reason
                }
            );
        }

        let mut revoked = data_key(&["acme/bot"]);
        revoked.revoked_at = Some(NOW - 1);
        assert_eq!(
            deny(Authentication::Verified(&revoked), Some(&d), &route),
            Denial::InvalidKey {
                route_plane: Plane::Data,
                reason: InvalidReason::Revoked
            }
        );

        let mut expired = data_key(&["acme/bot"]);
        expired.expires_at = Some(NOW);
        assert_eq!(
            deny(Authentication::Verified(&expired), Some(&d), &route),
            Denial::InvalidKey {
                route_plane: Plane::Data,
                reason: InvalidReason::Expired
            }
        );
        expired.expires_at = Some(NOW + 1);
        assert!(matches!(
            decide(
                &route,
                Some(&d),
                Authentication::Verified(&expired),
                &Grants::default(),
                NOW
            ),
            Decision::Allow(_)
        ));

        let other = data_key(&["acme/other", "beta/*"]);
        assert_eq!(
            deny(Authentication::Verified(&other), Some(&d), &route),
            Denial::OutOfScope {
                target: "deployment acme/bot".into()
            }
        );

        let attached = data_key(&["acme/*"]);
        assert_eq!(
            deny(Authentication::Verified(&attached), None, &route),
            Denial::UnknownDeployment {
                deployment: "acme/bot".into()
            }
        );

        let control = key(
            KeyScope::ControlProject("acme".into()),
            PrincipalKind::Owner,
        );
        assert_eq!(
            deny(Authentication::Verified(&control), Some(&d), &route),
            Denial::WrongPlane {
                key_plane: Plane::Control
            }
        );
        let data = data_key(&["acme/*"]);
        assert_eq!(
            deny(
                Authentication::Verified(&data),
                None,
                &control_route("acme", "GET")
            ),
            Denial::WrongPlane {
                key_plane: Plane::Data
            }
        );
    }

    #[test]
    fn invalid_keys_on_control_routes_carry_the_control_plane() {
        let denial = match decide(
            &control_route("acme", "POST"),
            None,
            Authentication::Invalid(InvalidReason::UnknownKey),
            &Grants::default(),
            NOW,
        ) {
            Decision::Deny(d) => d,
            Decision::Allow(_) => panic!("allowed"),
        };
        assert_eq!(
            denial,
            Denial::InvalidKey {
                route_plane: Plane::Control,
                reason: InvalidReason::UnknownKey
            }
        );
    }

    #[test]
    fn control_keys_stay_in_their_project() {
        let acme = key(
            KeyScope::ControlProject("acme".into()),
            PrincipalKind::Owner,
        );
        let org = key(KeyScope::ControlOrganization, PrincipalKind::Owner);
        for method in ["GET", "POST", "PATCH", "DELETE"] {
            assert!(matches!(
                decide(
                    &control_route("acme", method),
                    None,
                    Authentication::Verified(&acme),
                    &Grants::default(),
                    NOW
                ),
                Decision::Allow(_)
            ));
            assert_eq!(
                decide(
                    &control_route("beta", method),
                    None,
                    Authentication::Verified(&acme),
                    &Grants::default(),
                    NOW
                ),
                Decision::Deny(Denial::OutOfScope {
                    target: "project beta".into()
                })
            );
            assert!(matches!(
                decide(
                    &control_route("beta", method),
                    None,
                    Authentication::Verified(&org),
                    &Grants::default(),
                    NOW
                ),
                Decision::Allow(_)
            ));
        }
    }

    #[test]
    fn principals_other_than_the_owner_need_a_policy() {
        let member = key(
            KeyScope::Data(["acme/bot".parse().unwrap()].into()),
            PrincipalKind::Member,
        );
        let d = bot(true, true);
        assert_eq!(
            decide(
                &data_route(Endpoint::Public),
                Some(&d),
                Authentication::Verified(&member),
                &Grants::default(),
                NOW
            ),
            Decision::Deny(Denial::MissingPermission {
                action: Action::InferenceCall,
                project: "acme".into()
            })
        );
        let app = key(
            KeyScope::ControlProject("acme".into()),
            PrincipalKind::Application,
        );
        assert_eq!(
            decide(
                &control_route("acme", "GET"),
                None,
                Authentication::Verified(&app),
                &Grants::default(),
                NOW
            ),
            Decision::Deny(Denial::MissingPermission {
                action: Action::DeploymentsRead,
                project: "acme".into()
            })
        );
    }

    #[test]
    fn actions_follow_plane_and_method() {
        assert_eq!(
            action_of(&data_route(Endpoint::Public)),
            Action::InferenceCall
        );
        assert_eq!(
            action_of(&control_route("a", "GET")),
            Action::DeploymentsRead
        );
        assert_eq!(
            action_of(&control_route("a", "HEAD")),
            Action::DeploymentsRead
        );
        for m in ["POST", "PATCH", "DELETE", "PUT"] {
            assert_eq!(action_of(&control_route("a", m)), Action::DeploymentsWrite);
        }
    }

    #[test]
    fn denial_messages_name_only_the_request() {
        let msg = Denial::MissingPermission {
            action: Action::InferenceCall,
            project: "acme".into(),
        }
        .to_string();
        assert_eq!(msg, "missing permission inference.call on project acme");
        let msg = Denial::InvalidKey {
            route_plane: Plane::Data,
            reason: InvalidReason::Revoked,
        }
        .to_string();
        assert!(!msg.to_lowercase().contains("revoked"), "no oracle: {msg}");
    }
}

/// The decision table the IAM issue asks for: every permission set × action, each scope kind,
/// IPv4/IPv6 in and out of range, user agents, time windows, owner / member / application,
/// and a deleted policy.
#[cfg(test)]
mod iam_table {
    use std::collections::BTreeMap;

    use super::*;
    use crate::iam::{self, Conditions, Policy, Rule, RuleScope, UserAgentMatch};
    use crate::model::DataTarget;

    const NOW: i64 = 1_800_000_000;

    fn key(kind: PrincipalKind, scope: KeyScope) -> ApiKey {
        ApiKey::new("KEYID0000001", (7, kind, "p"), scope, "")
    }

    fn data_key(kind: PrincipalKind, project: &str) -> ApiKey {
        key(
            kind,
            KeyScope::Data([DataTarget::Project(project.to_owned())].into()),
        )
    }

    fn deployment(project: &str) -> Deployment {
        Deployment {
            name: format!("{project}/bot").parse().unwrap(),
            model: "m".into(),
            public_auth: true,
            private_auth: true,
            description: String::new(),
            public_endpoint: true,
            created_at: 0,
        }
    }

    struct Req {
        plane: Plane,
        method: &'static str,
        project: &'static str,
        ip: Option<&'static str>,
        ua: Option<&'static str>,
        now: i64,
    }

    fn req(action: Action, project: &'static str) -> Req {
        let (plane, method) = match action {
            Action::InferenceCall => (Plane::Data, "POST"),
            Action::DeploymentsRead => (Plane::Control, "GET"),
            _ => (Plane::Control, "PATCH"),
        };
        Req {
            plane,
            method,
            project,
            ip: Some("10.1.2.3"),
            ua: Some("terraform/1.9"),
            now: NOW,
        }
    }

    fn grants(rules: Vec<Rule>) -> Grants {
        let policy = Policy {
            name: "p1".into(),
            description: String::new(),
            principal: None,
            rules,
        };
        let sets = iam::resolve_sets(&[]).unwrap();
        Grants::resolve(&[policy], &sets)
    }

    fn rule(scope: RuleScope, sets: &[&str], conditions: Conditions) -> Rule {
        Rule {
            scope,
            permission_sets: sets.iter().map(|s| s.to_string()).collect(),
            conditions,
        }
    }

    fn projects(p: &[&str]) -> RuleScope {
        RuleScope::Projects(p.iter().map(|s| s.to_string()).collect())
    }

    /// Decides `r` for a key of `kind` scoped to r.project (or `key_project`).
    fn run(kind: PrincipalKind, g: &Grants, r: &Req) -> Result<(), Denial> {
        let k = match r.plane {
            Plane::Data => data_key(kind, r.project),
            Plane::Control => key(kind, KeyScope::ControlProject(r.project.into())),
        };
        let name = format!("{}/bot", r.project);
        let d = deployment(r.project);
        let route = Route {
            plane: r.plane,
            endpoint: Endpoint::Public,
            target: match r.plane {
                Plane::Data => Target::Deployment {
                    name: &name,
                    project: r.project,
                    slug: "bot",
                },
                Plane::Control => Target::Project(r.project),
            },
            method: r.method,
            source_ip: r.ip.map(|ip| ip.parse().unwrap()),
            user_agent: r.ua,
        };
        match decide(&route, Some(&d), Authentication::Verified(&k), g, r.now) {
            Decision::Allow(_) => Ok(()),
            Decision::Deny(d) => Err(d),
        }
    }

    #[test]
    fn every_permission_set_by_every_action() {
        use Action::*;
        let expected: BTreeMap<&str, [bool; 3]> = [
            ("InferenceFullAccess", [true, true, true]),
            ("InferenceReadOnly", [true, true, false]),
            ("AllProductsFullAccess", [true, true, true]),
        ]
        .into();
        for (set, allowed) in expected {
            let g = grants(vec![rule(
                projects(&["acme"]),
                &[set],
                Conditions::default(),
            )]);
            for (action, allowed) in [InferenceCall, DeploymentsRead, DeploymentsWrite]
                .into_iter()
                .zip(allowed)
            {
                for kind in [PrincipalKind::Member, PrincipalKind::Application] {
                    let got = run(kind, &g, &req(action, "acme"));
                    if allowed {
                        assert_eq!(got, Ok(()), "{set} {action} {kind:?}");
                    } else {
                        assert_eq!(
                            got,
                            Err(Denial::MissingPermission {
                                action,
                                project: "acme".into()
                            }),
                            "{set} {action} {kind:?}"
                        );
                    }
                }
            }
            // Organization features are granted only by organization-scope rules.
            let facts = Facts::default();
            let org = grants(vec![rule(
                RuleScope::Organization,
                &[set],
                Conditions::default(),
            )]);
            for feature in [IamManage, ProjectsWrite, RoutesManage, AuditRead] {
                assert_eq!(
                    g.evaluate(feature, Place::Organization, &facts),
                    Evaluation::NotGranted,
                    "{set} in a project scope grants no organization feature"
                );
                let granted = matches!(
                    org.evaluate(feature, Place::Organization, &facts),
                    Evaluation::Granted { .. }
                );
                assert_eq!(granted, set == "AllProductsFullAccess", "{set} {feature}");
            }
            assert_eq!(
                org.evaluate(InferenceCall, Place::Project("acme"), &facts),
                Evaluation::NotGranted,
                "an organization rule grants no project action"
            );
        }
    }

    #[test]
    fn scope_kinds() {
        let full = ["InferenceFullAccess"];
        let listed = grants(vec![rule(
            projects(&["acme", "beta"]),
            &full,
            Conditions::default(),
        )]);
        let all = grants(vec![rule(
            RuleScope::AllProjects,
            &full,
            Conditions::default(),
        )]);
        let org = grants(vec![rule(
            RuleScope::Organization,
            &["AllProductsFullAccess"],
            Conditions::default(),
        )]);
        let member = PrincipalKind::Member;
        for action in [
            Action::InferenceCall,
            Action::DeploymentsRead,
            Action::DeploymentsWrite,
        ] {
            assert_eq!(run(member, &listed, &req(action, "acme")), Ok(()));
            assert_eq!(run(member, &listed, &req(action, "beta")), Ok(()));
            assert!(run(member, &listed, &req(action, "gamma")).is_err());
            // "All projects" covers a project created after the policy: the rule names none.
            assert_eq!(run(member, &all, &req(action, "created-later")), Ok(()));
            assert_eq!(
                run(member, &org, &req(action, "acme")),
                Err(Denial::MissingPermission {
                    action,
                    project: "acme".into()
                })
            );
        }
    }

    #[test]
    fn conditions_ip_user_agent_and_time() {
        let set = ["InferenceReadOnly"];
        let nets = |n: &[&str]| n.iter().map(|s| s.parse().unwrap()).collect();
        let conditions = Conditions {
            source_ips: nets(&["10.0.0.0/8", "2001:db8::/32"]),
            ..Conditions::default()
        };
        let g = grants(vec![rule(projects(&["acme"]), &set, conditions)]);
        let m = PrincipalKind::Member;
        let call = |ip: Option<&'static str>| Req {
            ip,
            ..req(Action::InferenceCall, "acme")
        };
        let not_met = |r: Result<(), Denial>| matches!(r, Err(Denial::ConditionsNotMet { .. }));
        assert_eq!(run(m, &g, &call(Some("10.200.0.1"))), Ok(()), "IPv4 in");
        assert!(not_met(run(m, &g, &call(Some("192.168.0.1")))), "IPv4 out");
        assert_eq!(run(m, &g, &call(Some("2001:db8::1"))), Ok(()), "IPv6 in");
        assert!(not_met(run(m, &g, &call(Some("2001:db9::1")))), "IPv6 out");
        assert_eq!(
            run(m, &g, &call(Some("::ffff:10.0.0.1"))),
            Ok(()),
            "IPv4-mapped IPv6 is matched as IPv4"
        );
        assert!(
            not_met(run(m, &g, &call(None))),
            "unknown peer fails closed"
        );

        let ua = Conditions {
            user_agents: vec![
                UserAgentMatch::Exact("curl/8.5.0".into()),
                UserAgentMatch::Prefix("terraform/".into()),
                UserAgentMatch::Glob("*-sdk/?.*".into()),
            ],
            ..Conditions::default()
        };
        let g = grants(vec![rule(projects(&["acme"]), &set, ua)]);
        let with_ua = |ua: Option<&'static str>| Req {
            ua,
            ..req(Action::InferenceCall, "acme")
        };
        for ok in ["curl/8.5.0", "terraform/1.9", "python-sdk/2.1"] {
            assert_eq!(run(m, &g, &with_ua(Some(ok))), Ok(()), "{ok}");
        }
        for bad in ["curl/8.5.1", "Terraform/1.9", "python-sdk/10", ""] {
            assert!(not_met(run(m, &g, &with_ua(Some(bad)))), "{bad}");
        }
        assert!(not_met(run(m, &g, &with_ua(None))));

        let window = Conditions {
            not_before: Some(NOW - 10),
            not_after: Some(NOW + 10),
            ..Conditions::default()
        };
        let g = grants(vec![rule(projects(&["acme"]), &set, window)]);
        let at = |now| Req {
            now,
            ..req(Action::InferenceCall, "acme")
        };
        assert!(not_met(run(m, &g, &at(NOW - 11))), "before");
        assert_eq!(run(m, &g, &at(NOW - 10)), Ok(()), "first instant");
        assert_eq!(run(m, &g, &at(NOW)), Ok(()), "inside");
        assert_eq!(run(m, &g, &at(NOW + 10)), Ok(()), "last instant");
        assert!(not_met(run(m, &g, &at(NOW + 11))), "after");

        // Kinds AND together: right IP, wrong user agent fails; values OR within a kind.
        let both = Conditions {
            source_ips: nets(&["10.0.0.0/8"]),
            user_agents: vec![UserAgentMatch::Prefix("terraform/".into())],
            ..Conditions::default()
        };
        let g = grants(vec![rule(projects(&["acme"]), &set, both)]);
        assert_eq!(run(m, &g, &req(Action::InferenceCall, "acme")), Ok(()));
        let r = Req {
            ua: Some("curl/8"),
            ..req(Action::InferenceCall, "acme")
        };
        let Err(Denial::ConditionsNotMet { failed, .. }) = run(m, &g, &r) else {
            panic!("conditions must fail")
        };
        assert_eq!(failed, vec!["p1: user_agent".to_owned()]);
        assert_eq!(
            Denial::ConditionsNotMet {
                action: Action::InferenceCall,
                project: "acme".into(),
                failed
            }
            .to_string(),
            "request did not satisfy the policy conditions",
            "the body never names the policy or the condition"
        );
    }

    #[test]
    fn schedules_in_the_decision_follow_local_time_across_dst() {
        let office = Conditions {
            schedule: vec![iam::Window::parse("Mon-Fri 08:00-18:00 Europe/Paris").unwrap()],
            ..Conditions::default()
        };
        let g = grants(vec![rule(
            projects(&["acme"]),
            &["InferenceReadOnly"],
            office,
        )]);
        let m = PrincipalKind::Member;
        let at = |s: &str| Req {
            now: iam::parse_time(s).unwrap(),
            ..req(Action::InferenceCall, "acme")
        };
        let not_met = |r: Result<(), Denial>| match r {
            Err(Denial::ConditionsNotMet { failed, .. }) => failed == ["p1: schedule"],
            _ => false,
        };
        // 08:00 in Paris is 07:00 UTC before the spring change (Sunday 2030-03-31) and 06:00
        // UTC after it.
        assert!(
            not_met(run(m, &g, &at("2030-03-29T06:59:59Z"))),
            "Fri 07:59 CET"
        );
        assert_eq!(
            run(m, &g, &at("2030-03-29T07:00:00Z")),
            Ok(()),
            "Fri 08:00 CET"
        );
        assert!(
            not_met(run(m, &g, &at("2030-04-01T05:59:59Z"))),
            "Mon 07:59 CEST"
        );
        assert_eq!(
            run(m, &g, &at("2030-04-01T06:00:00Z")),
            Ok(()),
            "Mon 08:00 CEST"
        );
        assert!(
            not_met(run(m, &g, &at("2030-04-01T16:00:00Z"))),
            "Mon 18:00 CEST"
        );
        // And back after the autumn change (Sunday 2030-10-27).
        assert_eq!(
            run(m, &g, &at("2030-10-25T06:00:00Z")),
            Ok(()),
            "Fri 08:00 CEST"
        );
        assert!(
            not_met(run(m, &g, &at("2030-10-28T06:00:00Z"))),
            "Mon 07:00 CET"
        );
        assert_eq!(
            run(m, &g, &at("2030-10-28T07:00:00Z")),
            Ok(()),
            "Mon 08:00 CET"
        );
        assert!(not_met(run(m, &g, &at("2030-10-27T10:00:00Z"))), "Sunday");
        // The owner is bound by no condition.
        assert_eq!(
            run(PrincipalKind::Owner, &g, &at("2030-10-27T10:00:00Z")),
            Ok(())
        );
    }

    #[test]
    fn owner_member_application_and_a_deleted_policy() {
        let none = Grants::default();
        let g = grants(vec![rule(
            projects(&["acme"]),
            &["InferenceFullAccess"],
            Conditions {
                source_ips: vec!["192.0.2.0/24".parse().unwrap()],
                ..Conditions::default()
            },
        )]);
        for action in [
            Action::InferenceCall,
            Action::DeploymentsRead,
            Action::DeploymentsWrite,
        ] {
            let r = req(action, "acme");
            // The owner needs no policy, and conditions do not bind it.
            assert_eq!(run(PrincipalKind::Owner, &none, &r), Ok(()));
            for kind in [PrincipalKind::Member, PrincipalKind::Application] {
                let in_range = Req {
                    ip: Some("192.0.2.9"),
                    ..req(action, "acme")
                };
                assert_eq!(run(kind, &g, &in_range), Ok(()));
                // The policy deleted: the principal's resolved grants are empty.
                assert_eq!(
                    run(kind, &none, &in_range),
                    Err(Denial::MissingPermission {
                        action,
                        project: "acme".into()
                    })
                );
            }
        }
    }

    #[test]
    fn key_scope_bounds_every_policy() {
        // A control key for acme never acts on beta, whatever its bearer's policies say.
        let g = grants(vec![rule(
            RuleScope::AllProjects,
            &["AllProductsFullAccess"],
            Conditions::default(),
        )]);
        let k = key(
            PrincipalKind::Member,
            KeyScope::ControlProject("acme".into()),
        );
        for (target, ok) in [
            (Target::Project("beta"), false),
            (
                Target::Workload {
                    id: "w-b",
                    project: Some("beta"),
                },
                false,
            ),
            (
                Target::Workload {
                    id: "w-x",
                    project: None,
                },
                false,
            ),
            (
                Target::Workload {
                    id: "w-a",
                    project: Some("acme"),
                },
                true,
            ),
        ] {
            let route = Route {
                plane: Plane::Control,
                endpoint: Endpoint::Public,
                target,
                method: "DELETE",
                source_ip: None,
                user_agent: None,
            };
            let d = decide(&route, None, Authentication::Verified(&k), &g, NOW);
            assert_eq!(matches!(d, Decision::Allow(_)), ok, "{target:?}");
            if let (Decision::Deny(denial), Target::Workload { .. }) = (d, target) {
                assert!(
                    !denial.to_string().contains("beta"),
                    "a workload denial does not name its tenant: {denial}"
                );
            }
        }
        // A data key never passes a control route.
        let data = data_key(PrincipalKind::Owner, "acme");
        let route = Route {
            plane: Plane::Control,
            endpoint: Endpoint::Public,
            target: Target::Project("acme"),
            method: "GET",
            source_ip: None,
            user_agent: None,
        };
        assert_eq!(
            decide(&route, None, Authentication::Verified(&data), &g, NOW),
            Decision::Deny(Denial::WrongPlane {
                key_plane: Plane::Data
            })
        );
    }
}
