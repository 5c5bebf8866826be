//! The pure decision: a route, the deployment's flags and the authenticated key in, a
//! [`Decision`] out. No I/O, no protobuf, no clock: `now` is passed in, so every branch is
//! unit-tested directly.
//!
//! IAM policies (members, applications, rules, conditions) plug into [`principal_may`]: until
//! they exist, the organization's owner may do everything and every other principal nothing,
//! which is exactly what an empty policy list means.

use std::fmt;

use crate::model::{ApiKey, Deployment, Endpoint, KeyScope, Plane, PrincipalKind};

/// The route's contract with Envoy, from the ext_authz context extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    pub plane: Plane,
    pub endpoint: Endpoint,
    pub target: Target<'a>,
    pub method: &'a str,
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
}

impl<'a> Target<'a> {
    pub fn project(&self) -> &'a str {
        match *self {
            Target::Deployment { project, .. } => project,
            Target::Project(project) => project,
        }
    }
}

/// An IAM action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    InferenceCall,
    DeploymentsRead,
    DeploymentsWrite,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::InferenceCall => "inference.call",
            Action::DeploymentsRead => "deployments.read",
            Action::DeploymentsWrite => "deployments.write",
        }
    }

    /// Data routes call inference; on control routes reads are `GET`/`HEAD`, all else writes.
    pub fn of(route: &Route<'_>) -> Action {
        match route.plane {
            Plane::Data => Action::InferenceCall,
            Plane::Control if matches!(route.method, "GET" | "HEAD") => Action::DeploymentsRead,
            Plane::Control => Action::DeploymentsWrite,
        }
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
}

impl fmt::Display for Denial {
    /// The caller-facing message: names only what the caller itself asked for.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
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
            Denial::MissingPermission { action, project } => write!(
                f,
                "missing permission {} on project {project}",
                action.as_str()
            ),
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

/// Decides an authenticated request. `deployment` is the stored row for a data route's target
/// (`None` when it is not registered); `now` is Unix seconds.
pub fn decide<'k>(
    route: &Route<'_>,
    deployment: Option<&Deployment>,
    auth: Authentication<'k>,
    now: i64,
) -> Decision<'k> {
    let key = match auth {
        Authentication::Missing => return Decision::Deny(Denial::MissingCredential),
        Authentication::Invalid(reason) => return Decision::Deny(invalid(route, reason)),
        Authentication::Verified(key) => key,
    };
    if key.revoked_at.is_some() {
        return Decision::Deny(invalid(route, InvalidReason::Revoked));
    }
    if key.is_expired(now) {
        return Decision::Deny(invalid(route, InvalidReason::Expired));
    }
    if key.plane() != route.plane {
        return Decision::Deny(Denial::WrongPlane {
            key_plane: key.plane(),
        });
    }
    if !scope_covers(&key.scope, &route.target) {
        return Decision::Deny(Denial::OutOfScope {
            target: target_name(&route.target),
        });
    }
    if let Target::Deployment { name, .. } = route.target
        && deployment.is_none()
    {
        return Decision::Deny(Denial::UnknownDeployment {
            deployment: name.to_owned(),
        });
    }
    let action = Action::of(route);
    let project = route.target.project();
    if !principal_may(key.principal.kind, action, project) {
        return Decision::Deny(Denial::MissingPermission {
            action,
            project: project.to_owned(),
        });
    }
    Decision::Allow(Grant::Key(key))
}

fn invalid(route: &Route<'_>, reason: InvalidReason) -> Denial {
    Denial::InvalidKey {
        route_plane: route.plane,
        reason,
    }
}

fn target_name(target: &Target<'_>) -> String {
    match *target {
        Target::Deployment { name, .. } => format!("deployment {name}"),
        Target::Project(project) => format!("project {project}"),
    }
}

/// The key's own scope: a key never reaches past it, whatever its bearer may do.
fn scope_covers(scope: &KeyScope, target: &Target<'_>) -> bool {
    match (scope, target) {
        (KeyScope::Data(targets), Target::Deployment { project, slug, .. }) => {
            targets.iter().any(|t| t.covers(project, slug))
        }
        (KeyScope::ControlProject(p), Target::Project(project)) => p == project,
        (KeyScope::ControlOrganization, Target::Project(_)) => true,
        _ => false,
    }
}

/// The IAM slot: what the key's bearer may do in `project`.
fn principal_may(kind: PrincipalKind, _action: Action, _project: &str) -> bool {
    kind == PrincipalKind::Owner
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DataTarget, Principal};

    const NOW: i64 = 1_800_000_000;

    fn key(scope: KeyScope, kind: PrincipalKind) -> ApiKey {
        ApiKey {
            id: "AAAAAAAAAAAA".into(),
            name: "k".into(),
            description: String::new(),
            principal: Principal {
                id: 1,
                kind,
                name: "owner@example.com".into(),
            },
            scope,
            secret_hash: String::new(),
            previous_secret: None,
            created_at: NOW - 100,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        }
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
        }
    }

    fn control_route(project: &'static str, method: &'static str) -> Route<'static> {
        Route {
            plane: Plane::Control,
            endpoint: Endpoint::Public,
            target: Target::Project(project),
            method,
        }
    }

    fn bot(public_auth: bool, private_auth: bool) -> Deployment {
        Deployment {
            name: "acme/bot".parse().unwrap(),
            model: "llama".into(),
            public_auth,
            private_auth,
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
    fn data_key_attached_to_the_deployment_is_allowed() {
        let k = data_key(&["acme/bot"]);
        let d = bot(true, true);
        let decision = decide(
            &data_route(Endpoint::Public),
            Some(&d),
            Authentication::Verified(&k),
            NOW,
        );
        assert_eq!(decision, Decision::Allow(Grant::Key(&k)));
        let project_wide = data_key(&["acme/*"]);
        let decision = decide(
            &data_route(Endpoint::Private),
            Some(&d),
            Authentication::Verified(&project_wide),
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
            match decide(route, deployment, auth, NOW) {
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
            decide(&route, Some(&d), Authentication::Verified(&expired), NOW),
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
                    NOW
                ),
                Decision::Allow(_)
            ));
            assert_eq!(
                decide(
                    &control_route("beta", method),
                    None,
                    Authentication::Verified(&acme),
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
                    NOW
                ),
                Decision::Allow(_)
            ));
        }
    }

    #[test]
    fn principals_other_than_the_owner_need_a_policy() {
        let member = key(
            KeyScope::Data(vec!["acme/bot".parse().unwrap()]),
            PrincipalKind::Member,
        );
        let d = bot(true, true);
        assert_eq!(
            decide(
                &data_route(Endpoint::Public),
                Some(&d),
                Authentication::Verified(&member),
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
            Action::of(&data_route(Endpoint::Public)),
            Action::InferenceCall
        );
        assert_eq!(
            Action::of(&control_route("a", "GET")),
            Action::DeploymentsRead
        );
        assert_eq!(
            Action::of(&control_route("a", "HEAD")),
            Action::DeploymentsRead
        );
        for m in ["POST", "PATCH", "DELETE", "PUT"] {
            assert_eq!(Action::of(&control_route("a", m)), Action::DeploymentsWrite);
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
