//! Admin access: what a bearer may do through the admin API, decided like [`super::decide`]
//! decides a Check. Pure: the caller's key, its bearer's resolved grants, the request's facts
//! (with `now`) and the target in; `Ok(())` or an [`AccessDenied`] out. The admin handlers
//! ask these functions and nothing else.
//!
//! The key's own scope bounds everything first (a project-scoped control key acts only inside
//! its project); within it the bearer needs the action from its policies, and an IAM manager
//! (`iam.manage` on the organization; the owner) may do everything its key's scope reaches.

use std::fmt;

use crate::iam::{Action, Evaluation, Facts, Grants, Place, PrincipalRef};
use crate::model::{ApiKey, DataTarget, KeyScope, Principal, PrincipalKind};

use super::permits;

/// An authenticated admin caller, as the access functions see it.
#[derive(Debug, Clone, Copy)]
pub struct Bearer<'a> {
    pub key: &'a ApiKey,
    pub grants: &'a Grants,
    /// The gRPC peer address, the user agent and `now`.
    pub facts: Facts<'a>,
}

/// Why an admin call is refused. [`crate::errors`] maps each to a gRPC code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessDenied {
    /// The caller's control key is scoped to another project.
    NotInScope {
        project: String,
    },
    /// An organization-wide change asked with a project-scoped key.
    NeedsOrganizationKey,
    MissingPermission {
        action: Action,
        place: String,
    },
    /// For the debug log: `policy: kinds` of each rule whose conditions failed; the message
    /// never names them.
    ConditionsNotMet {
        failed: Vec<String>,
    },
    /// Owner-borne keys are minted, changed and deleted by the owner only.
    OwnerOnly,
    /// The target exists but the caller may not learn that: it reads as absent, so a
    /// project-scoped caller learns nothing about other projects' keys and workloads.
    Hidden {
        what: String,
    },
}

impl fmt::Display for AccessDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessDenied::NotInScope { project } => {
                write!(f, "this control key is not scoped to project {project}")
            }
            AccessDenied::NeedsOrganizationKey => f.write_str(
                "this control key is scoped to one project; organization-wide changes need an organization key",
            ),
            AccessDenied::MissingPermission { action, place } => {
                super::missing_permission(f, *action, place)
            }
            AccessDenied::ConditionsNotMet { .. } => f.write_str(super::CONDITIONS_NOT_MET),
            AccessDenied::OwnerOnly => f.write_str("only the owner manages the owner's keys"),
            AccessDenied::Hidden { what } => write!(f, "{what} not found"),
        }
    }
}

fn place_name(place: Place<'_>) -> String {
    match place {
        Place::Project(p) => format!("project {p}"),
        Place::Organization => "the organization".to_owned(),
    }
}

/// Whether the key's own scope reaches `place`: an organization-wide control key reaches
/// everything, a project-scoped one its project only.
pub fn reaches(key: &ApiKey, place: Place<'_>) -> Result<(), AccessDenied> {
    match (&key.scope, place) {
        (KeyScope::ControlOrganization, _) => Ok(()),
        (KeyScope::ControlProject(p), Place::Project(project)) if p == project => Ok(()),
        (_, Place::Project(project)) => Err(AccessDenied::NotInScope {
            project: project.to_owned(),
        }),
        (_, Place::Organization) => Err(AccessDenied::NeedsOrganizationKey),
    }
}

impl Bearer<'_> {
    fn evaluate(&self, action: Action, place: Place<'_>) -> Evaluation {
        permits(self.key, self.grants, action, place, &self.facts)
    }

    /// Whether the bearer holds IAM management (the owner does), under this request's facts.
    pub fn is_iam_manager(&self) -> bool {
        matches!(
            self.evaluate(Action::IamManage, Place::Organization),
            Evaluation::Granted { .. }
        )
    }

    /// The key's own scope first, then the bearer's policies; IAM managers may do everything
    /// their key's scope reaches.
    pub fn may(&self, action: Action, place: Place<'_>) -> Result<(), AccessDenied> {
        reaches(self.key, place)?;
        match self.evaluate(action, place) {
            Evaluation::Granted { .. } => Ok(()),
            _ if self.is_iam_manager() => Ok(()),
            Evaluation::ConditionsFailed(failed) => Err(AccessDenied::ConditionsNotMet { failed }),
            Evaluation::NotGranted => Err(AccessDenied::MissingPermission {
                action,
                place: place_name(place),
            }),
        }
    }

    /// Reading the audit log: an organization key and `audit.read` (or IAM management).
    pub fn may_read_audit(&self) -> Result<(), AccessDenied> {
        self.may(Action::AuditRead, Place::Organization)
    }

    fn is_owner(&self) -> bool {
        self.key.principal.kind == PrincipalKind::Owner
    }

    /// Whether the bearer may manage `key`: its own bearer's key or, for IAM managers, anyone's,
    /// and only when every project the key reaches is within the caller's key. Otherwise the
    /// key reads as absent.
    pub fn may_manage_key(&self, key: &ApiKey) -> Result<(), AccessDenied> {
        let hidden = || AccessDenied::Hidden {
            what: format!("key {}", key.id),
        };
        if key.principal.id != self.key.principal.id && !self.is_iam_manager() {
            return Err(hidden());
        }
        let within = match (&self.key.scope, &key.scope) {
            (KeyScope::ControlOrganization, _) => true,
            (KeyScope::ControlProject(p), KeyScope::Data(targets)) => {
                targets.iter().all(|t| t.project() == p)
            }
            (KeyScope::ControlProject(p), KeyScope::ControlProject(q)) => p == q,
            _ => false,
        };
        if within { Ok(()) } else { Err(hidden()) }
    }

    /// Whether the bearer may change `key` (update, rotate, revoke, delete): as
    /// [`Self::may_manage_key`], and an owner-borne key only by the owner.
    ///
    /// Owner keys skip every policy and condition, so an IAM manager who could rotate or mint
    /// one would become the owner, and one who could revoke them all would lock the owner out.
    pub fn may_change_key(&self, key: &ApiKey) -> Result<(), AccessDenied> {
        self.may_manage_key(key)?;
        if key.principal.kind == PrincipalKind::Owner && !self.is_owner() {
            return Err(AccessDenied::OwnerOnly);
        }
        Ok(())
    }

    /// Whether the bearer may name `principal` as the bearer of a new key, asked before the
    /// principal is looked up, so that only IAM managers learn which principals exist.
    pub fn may_name_bearer(&self, principal: &PrincipalRef) -> Result<(), AccessDenied> {
        let me = &self.key.principal;
        let is_me = match principal {
            PrincipalRef::Owner => me.kind == PrincipalKind::Owner,
            PrincipalRef::User(name) => {
                matches!(me.kind, PrincipalKind::Owner | PrincipalKind::Member) && *name == me.name
            }
            PrincipalRef::App(name) => me.kind == PrincipalKind::Application && *name == me.name,
        };
        if is_me || self.is_iam_manager() {
            return Ok(());
        }
        Err(AccessDenied::MissingPermission {
            action: Action::IamManage,
            place: place_name(Place::Organization),
        })
    }

    /// Whether the bearer may mint keys borne by `principal`: itself, or anyone but the owner
    /// for an IAM manager.
    pub fn may_bear(&self, principal: &Principal) -> Result<(), AccessDenied> {
        if principal.id == self.key.principal.id {
            return Ok(());
        }
        if principal.kind == PrincipalKind::Owner {
            return Err(AccessDenied::OwnerOnly);
        }
        if self.is_iam_manager() {
            return Ok(());
        }
        Err(AccessDenied::MissingPermission {
            action: Action::IamManage,
            place: place_name(Place::Organization),
        })
    }

    /// What a key borne by oneself (`own`) or another principal needs in `project`: one's own
    /// keys reach no further than one's own policies; another principal's (allowed by
    /// [`Self::may_bear`]) needs only the caller's key to reach it, and its decisions follow
    /// that bearer's policies.
    fn may_reach_for(&self, own: bool, action: Action, project: &str) -> Result<(), AccessDenied> {
        if own {
            self.may(action, Place::Project(project))
        } else {
            reaches(self.key, Place::Project(project))
        }
    }

    /// Whether the bearer may mint a key of `scope`, borne by itself (`own`) or another.
    pub fn may_mint(&self, own: bool, scope: &KeyScope) -> Result<(), AccessDenied> {
        match scope {
            KeyScope::Data(targets) => targets
                .iter()
                .try_for_each(|t| self.may_reach_for(own, Action::InferenceCall, t.project())),
            KeyScope::ControlProject(project) => {
                self.may_reach_for(own, Action::DeploymentsRead, project)
            }
            KeyScope::ControlOrganization => reaches(self.key, Place::Organization),
        }
    }

    /// Whether the bearer may attach `attach` to and detach `detach` from a key it manages,
    /// borne by itself (`own`) or another: attaching needs what minting a key with those
    /// targets needs; detaching only narrows a key, within the caller's key.
    pub fn may_retarget<'t>(
        &self,
        own: bool,
        attach: impl IntoIterator<Item = &'t DataTarget>,
        detach: impl IntoIterator<Item = &'t DataTarget>,
    ) -> Result<(), AccessDenied> {
        attach
            .into_iter()
            .try_for_each(|t| self.may_reach_for(own, Action::InferenceCall, t.project()))?;
        detach
            .into_iter()
            .try_for_each(|t| reaches(self.key, Place::Project(t.project())))
    }

    /// Whether the bearer may set a deployment's authentication in `project`: closing needs
    /// `deployments.write`; turning authentication off on either endpoint (`Some(false)`)
    /// opens it to anonymous callers and needs `deployments.auth` as well.
    pub fn may_set_auth(
        &self,
        project: &str,
        public_auth: Option<bool>,
        private_auth: Option<bool>,
    ) -> Result<(), AccessDenied> {
        let place = Place::Project(project);
        self.may(Action::DeploymentsWrite, place)?;
        if public_auth == Some(false) || private_auth == Some(false) {
            self.may(Action::DeploymentsAuth, place)?;
        }
        Ok(())
    }

    /// Whether the bearer may remove (`enabled` false) or restore a deployment's public
    /// endpoint. Removing one only narrows who can reach it: `deployments.write`. Restoring one
    /// whose public authentication is off opens the deployment to anyone on the public
    /// listener, as turning authentication off does: `deployments.auth` as well.
    pub fn may_set_public_endpoint(
        &self,
        project: &str,
        enabled: bool,
        public_auth: bool,
    ) -> Result<(), AccessDenied> {
        let place = Place::Project(project);
        self.may(Action::DeploymentsWrite, place)?;
        if enabled && !public_auth {
            self.may(Action::DeploymentsAuth, place)?;
        }
        Ok(())
    }

    /// Whether the bearer may see workload `id` of `project` at all; another project's
    /// workload reads as absent.
    pub fn may_see_workload(&self, id: &str, project: &str) -> Result<(), AccessDenied> {
        reaches(self.key, Place::Project(project)).map_err(|_| AccessDenied::Hidden {
            what: format!("workload {id}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iam::{self, Conditions, Policy, Rule, RuleScope};
    use crate::model::PrincipalKind;

    const NOW: i64 = 1_800_000_000;

    fn key(id: &str, principal: i64, kind: PrincipalKind, scope: KeyScope) -> ApiKey {
        ApiKey::new(id, (principal, kind, &format!("p{principal}")), scope, "")
    }

    fn grants(scope: RuleScope, set: &str, conditions: Conditions) -> Grants {
        let policy = Policy {
            name: "p1".into(),
            description: String::new(),
            principal: None,
            rules: vec![Rule {
                scope,
                permission_sets: vec![set.into()],
                conditions,
            }],
        };
        Grants::resolve(&[policy], &iam::resolve_sets(&[]).unwrap())
    }

    fn facts(ip: &str) -> Facts<'static> {
        Facts {
            source_ip: Some(ip.parse().unwrap()),
            user_agent: Some("keyward-cli"),
            now: NOW,
        }
    }

    fn acme() -> KeyScope {
        KeyScope::ControlProject("acme".into())
    }

    fn data(targets: &[&str]) -> KeyScope {
        KeyScope::Data(targets.iter().map(|t| t.parse().unwrap()).collect())
    }

    /// Every caller of the table: (name, key, grants).
    fn callers() -> Vec<(&'static str, ApiKey, Grants)> {
        use PrincipalKind::*;
        let none = Grants::default();
        let manager = grants(
            RuleScope::Organization,
            "AllProductsFullAccess",
            Conditions::default(),
        );
        let local_manager = grants(
            RuleScope::Organization,
            "AllProductsFullAccess",
            Conditions {
                source_ips: vec!["127.0.0.0/8".parse().unwrap()],
                ..Conditions::default()
            },
        );
        let reader = grants(
            RuleScope::Projects(vec!["acme".into()]),
            "InferenceReadOnly",
            Conditions::default(),
        );
        let writer = grants(
            RuleScope::AllProjects,
            "InferenceFullAccess",
            Conditions::default(),
        );
        let org = KeyScope::ControlOrganization;
        vec![
            (
                "owner",
                key("OWNER0000001", 1, Owner, org.clone()),
                none.clone(),
            ),
            (
                "manager",
                key("MANAGER00001", 2, Member, org.clone()),
                manager.clone(),
            ),
            (
                "manager@acme",
                key("MANAGER00002", 2, Member, acme()),
                manager,
            ),
            (
                "local manager",
                key("LOCAL0000001", 3, Member, org.clone()),
                local_manager,
            ),
            (
                "reader@acme",
                key("READER000001", 4, Member, acme()),
                reader.clone(),
            ),
            ("reader", key("READER000002", 4, Member, org), reader),
            (
                "writer@acme",
                key("WRITER000001", 5, Application, acme()),
                writer,
            ),
        ]
    }

    fn bearer<'a>(key: &'a ApiKey, grants: &'a Grants) -> Bearer<'a> {
        Bearer {
            key,
            grants,
            facts: facts("10.0.0.1"),
        }
    }

    #[test]
    fn may_by_caller_action_and_place() {
        use Action::*;
        let acme = Place::Project("acme");
        let beta = Place::Project("beta");
        let org = Place::Organization;
        // (caller, action, place, outcome): "ok", or the denial's kind.
        let table: &[(&str, Action, Place<'_>, &str)] = &[
            ("owner", IamManage, org, "ok"),
            ("owner", DeploymentsWrite, beta, "ok"),
            ("manager", IamManage, org, "ok"),
            ("manager", DeploymentsWrite, beta, "ok"),
            ("manager@acme", DeploymentsWrite, acme, "ok"),
            ("manager@acme", DeploymentsWrite, beta, "scope"),
            ("manager@acme", IamManage, org, "org key"),
            // The manager's rule holds only from 127.0.0.0/8; this request comes from 10.0.0.1.
            ("local manager", IamManage, org, "conditions"),
            ("local manager", DeploymentsRead, acme, "missing"),
            ("reader@acme", DeploymentsRead, acme, "ok"),
            ("reader@acme", DeploymentsWrite, acme, "missing"),
            ("reader@acme", DeploymentsRead, beta, "scope"),
            ("reader", DeploymentsRead, beta, "missing"),
            ("reader", ProjectsWrite, org, "missing"),
            ("writer@acme", DeploymentsWrite, acme, "ok"),
            ("writer@acme", ProjectsWrite, org, "org key"),
            // Opening an endpoint is not part of InferenceFullAccess.
            ("writer@acme", DeploymentsAuth, acme, "missing"),
            ("manager", DeploymentsAuth, beta, "ok"),
            ("owner", DeploymentsAuth, beta, "ok"),
            // The route table is organization-wide: an organization key and routes.manage
            // (AllProductsFullAccess on the organization, or an IAM manager).
            ("owner", RoutesManage, org, "ok"),
            ("manager", RoutesManage, org, "ok"),
            ("manager@acme", RoutesManage, org, "org key"),
            ("local manager", RoutesManage, org, "conditions"),
            ("reader", RoutesManage, org, "missing"),
            ("writer@acme", RoutesManage, org, "org key"),
            // The audit log names every principal and target of the organization: an
            // organization key and audit.read (AllProductsFullAccess on the organization, or an
            // IAM manager).
            ("owner", AuditRead, org, "ok"),
            ("manager", AuditRead, org, "ok"),
            ("manager@acme", AuditRead, org, "org key"),
            ("local manager", AuditRead, org, "conditions"),
            ("reader", AuditRead, org, "missing"),
            ("writer@acme", AuditRead, org, "org key"),
            // Explaining decisions reads every policy: iam.read on the organization (IAM
            // managers hold it), with an organization key.
            ("owner", IamRead, org, "ok"),
            ("manager", IamRead, org, "ok"),
            ("manager@acme", IamRead, org, "org key"),
            ("local manager", IamRead, org, "conditions"),
            ("reader", IamRead, org, "missing"),
            ("reader@acme", IamRead, org, "org key"),
        ];
        let callers = callers();
        for &(name, action, place, expected) in table {
            let (_, k, g) = callers.iter().find(|(n, ..)| *n == name).unwrap();
            let got = match bearer(k, g).may(action, place) {
                Ok(()) => "ok",
                Err(AccessDenied::NotInScope { .. }) => "scope",
                Err(AccessDenied::NeedsOrganizationKey) => "org key",
                Err(AccessDenied::MissingPermission { .. }) => "missing",
                Err(AccessDenied::ConditionsNotMet { .. }) => "conditions",
                Err(AccessDenied::Hidden { .. }) => "hidden",
                Err(AccessDenied::OwnerOnly) => "owner only",
            };
            assert_eq!(got, expected, "{name} {action} {place:?}");
        }
        let (_, k, g) = &callers[3];
        let local = Bearer {
            facts: facts("127.0.0.1"),
            ..bearer(k, g)
        };
        assert_eq!(local.may(Action::IamManage, org), Ok(()));
    }

    #[test]
    fn denial_messages_name_only_what_was_asked() {
        let (_, k, g) = &callers()[5];
        let denied = bearer(k, g).may(Action::ProjectsWrite, Place::Organization);
        assert_eq!(
            denied.unwrap_err().to_string(),
            "missing permission projects.write on the organization"
        );
        let (_, k, g) = &callers()[3];
        let denied = bearer(k, g).may(Action::IamManage, Place::Organization);
        let denied = denied.unwrap_err();
        assert!(
            matches!(&denied, AccessDenied::ConditionsNotMet { failed } if failed == &["p1: source_ip"])
        );
        assert_eq!(
            denied.to_string(),
            "request did not satisfy the policy conditions"
        );
        assert_eq!(
            reaches(k, Place::Project("beta")).map_err(|e| e.to_string()),
            Ok(())
        );
        let scoped = key("SCOPED000001", 9, PrincipalKind::Member, acme());
        assert_eq!(
            reaches(&scoped, Place::Project("beta"))
                .unwrap_err()
                .to_string(),
            "this control key is not scoped to project beta"
        );
    }

    #[test]
    fn keys_other_callers_may_manage() {
        use PrincipalKind::*;
        let callers = callers();
        let find = |name: &str| callers.iter().find(|(n, ..)| *n == name).unwrap();
        // Targets: (name, key).
        let own_reader_data = key("T00000000001", 4, Member, data(&["acme/bot"]));
        let other_acme = key("T00000000002", 7, Member, data(&["acme/*"]));
        let other_beta = key("T00000000003", 7, Member, data(&["beta/bot"]));
        let other_org = key("T00000000004", 7, Member, KeyScope::ControlOrganization);
        let owner_key = key("T00000000005", 1, Owner, KeyScope::ControlOrganization);
        let table = [
            ("owner", &owner_key, true),
            ("owner", &other_beta, true),
            ("manager", &other_org, true),
            ("manager@acme", &other_acme, true),
            ("manager@acme", &other_beta, false),
            ("manager@acme", &other_org, false),
            ("reader@acme", &own_reader_data, true),
            ("reader@acme", &other_acme, false),
            ("reader", &own_reader_data, true),
            ("local manager", &other_acme, false),
        ];
        for (name, target, ok) in table {
            let (_, k, g) = find(name);
            let got = bearer(k, g).may_manage_key(target);
            assert_eq!(got.is_ok(), ok, "{name} manages {}", target.id);
            if let Err(denied) = got {
                assert_eq!(
                    denied,
                    AccessDenied::Hidden {
                        what: format!("key {}", target.id)
                    }
                );
            }
        }
        // Changing a key: as managing it, and the owner's keys by the owner only.
        let own_manager_key = key("T00000000006", 2, Member, KeyScope::ControlOrganization);
        let table = [
            ("owner", &owner_key, Ok(())),
            ("owner", &other_org, Ok(())),
            ("manager", &owner_key, Err(AccessDenied::OwnerOnly)),
            ("manager", &other_org, Ok(())),
            ("manager", &own_manager_key, Ok(())),
            ("reader@acme", &own_reader_data, Ok(())),
            (
                "reader@acme",
                &owner_key,
                Err(AccessDenied::Hidden {
                    what: "key T00000000005".into(),
                }),
            ),
        ];
        for (name, target, expected) in table {
            let (_, k, g) = find(name);
            assert_eq!(
                bearer(k, g).may_change_key(target),
                expected,
                "{name} changes {}",
                target.id
            );
        }
    }

    #[test]
    fn setting_a_deployments_authentication() {
        let callers = callers();
        let find = |name: &str| callers.iter().find(|(n, ..)| *n == name).unwrap();
        // (caller, public, private, outcome)
        let table = [
            ("writer@acme", Some(true), None, "ok"),
            ("writer@acme", None, Some(true), "ok"),
            ("writer@acme", Some(false), None, "deployments.auth"),
            ("writer@acme", Some(true), Some(false), "deployments.auth"),
            ("reader@acme", Some(true), None, "deployments.write"),
            ("manager", Some(false), Some(false), "ok"),
            ("owner", Some(false), None, "ok"),
        ];
        for (name, public, private, expected) in table {
            let (_, k, g) = find(name);
            let got = match bearer(k, g).may_set_auth("acme", public, private) {
                Ok(()) => "ok",
                Err(AccessDenied::MissingPermission { action, .. }) => action.as_str(),
                Err(other) => panic!("{name}: {other:?}"),
            };
            assert_eq!(got, expected, "{name} {public:?} {private:?}");
        }
    }

    #[test]
    fn removing_and_restoring_a_public_endpoint() {
        let callers = callers();
        let find = |name: &str| callers.iter().find(|(n, ..)| *n == name).unwrap();
        // (caller, enabled, public_auth, outcome)
        let table = [
            ("writer@acme", false, true, "ok"),
            ("writer@acme", false, false, "ok"),
            ("writer@acme", true, true, "ok"),
            ("writer@acme", true, false, "deployments.auth"),
            ("reader@acme", false, true, "deployments.write"),
            ("manager", true, false, "ok"),
            ("owner", true, false, "ok"),
        ];
        for (name, enabled, public_auth, expected) in table {
            let (_, k, g) = find(name);
            let got = match bearer(k, g).may_set_public_endpoint("acme", enabled, public_auth) {
                Ok(()) => "ok",
                Err(AccessDenied::MissingPermission { action, .. }) => action.as_str(),
                Err(other) => panic!("{name}: {other:?}"),
            };
            assert_eq!(got, expected, "{name} {enabled} {public_auth}");
        }
    }

    #[test]
    fn minting_and_bearing() {
        use PrincipalKind::*;
        let callers = callers();
        let find = |name: &str| callers.iter().find(|(n, ..)| *n == name).unwrap();
        let someone = Principal {
            id: 7,
            kind: Member,
            name: "x".into(),
        };
        for (name, may_bear) in [
            ("owner", true),
            ("manager", true),
            ("manager@acme", true),
            ("local manager", false),
            ("reader", false),
        ] {
            let (_, k, g) = find(name);
            assert_eq!(bearer(k, g).may_bear(&someone).is_ok(), may_bear, "{name}");
            assert_eq!(
                bearer(k, g).may_bear(&k.principal),
                Ok(()),
                "{name} bears its own"
            );
        }
        // Only the owner bears the owner's keys.
        let (_, owner, owner_grants) = find("owner");
        assert_eq!(
            bearer(owner, owner_grants).may_bear(&owner.principal),
            Ok(())
        );
        for name in ["manager", "reader"] {
            let (_, k, g) = find(name);
            assert_eq!(
                bearer(k, g).may_bear(&owner.principal),
                Err(AccessDenied::OwnerOnly),
                "{name}"
            );
        }
        // Naming a bearer is authorized before it is looked up: oneself, or anyone for a manager.
        let app = |n: &str| PrincipalRef::App(n.into());
        let user = |n: &str| PrincipalRef::User(n.into());
        let table = [
            ("owner", PrincipalRef::Owner, true),
            ("owner", user("p1"), true),
            ("owner", app("ghost"), true),
            ("manager", user("ghost@example.com"), true),
            ("reader", user("p4"), true),
            ("reader", app("p4"), false),
            ("reader", user("ghost@example.com"), false),
            ("reader", PrincipalRef::Owner, false),
            ("writer@acme", app("p5"), true),
            ("writer@acme", user("p5"), false),
        ];
        for (name, named, ok) in table {
            let (_, k, g) = find(name);
            assert_eq!(
                bearer(k, g).may_name_bearer(&named).is_ok(),
                ok,
                "{name} names {named}"
            );
        }
        // (caller, own, scope, ok)
        let table = [
            ("reader@acme", true, data(&["acme/bot"]), true),
            ("reader@acme", true, data(&["acme/bot", "beta/bot"]), false),
            ("reader", true, data(&["beta/bot"]), false),
            ("reader@acme", true, acme(), true),
            ("reader@acme", true, KeyScope::ControlOrganization, false),
            ("reader", true, KeyScope::ControlOrganization, true),
            ("manager@acme", false, data(&["acme/*"]), true),
            ("manager@acme", false, data(&["beta/*"]), false),
            ("manager", false, KeyScope::ControlOrganization, true),
            ("local manager", true, data(&["acme/bot"]), false),
        ];
        for (name, own, scope, ok) in table {
            let (_, k, g) = find(name);
            assert_eq!(
                bearer(k, g).may_mint(own, &scope).is_ok(),
                ok,
                "{name} {scope:?}"
            );
        }
        // Attaching needs what minting needs; detaching only the caller's key to reach.
        let acme_bot: DataTarget = "acme/bot".parse().unwrap();
        let beta_bot: DataTarget = "beta/bot".parse().unwrap();
        let none: [&DataTarget; 0] = [];
        // (caller, own, attach, detach, ok)
        let table = [
            ("reader@acme", true, vec![&acme_bot], vec![], true),
            (
                "reader@acme",
                true,
                vec![&acme_bot, &beta_bot],
                vec![],
                false,
            ),
            ("reader@acme", true, vec![], vec![&beta_bot], false),
            // An organization key, with policies on acme only.
            ("reader", true, vec![&beta_bot], vec![], false),
            ("reader", true, vec![], vec![&beta_bot], true),
            ("manager", false, vec![&beta_bot], vec![], true),
            ("manager@acme", false, vec![&beta_bot], vec![], false),
            ("local manager", true, vec![&acme_bot], vec![], false),
        ];
        for (name, own, attach, detach, ok) in table {
            let (_, k, g) = find(name);
            assert_eq!(
                bearer(k, g)
                    .may_retarget(own, attach.clone(), detach)
                    .is_ok(),
                ok,
                "{name} attaches {attach:?}"
            );
        }
        let (_, k, g) = find("reader@acme");
        assert_eq!(bearer(k, g).may_retarget(true, none, none), Ok(()));
        assert_eq!(bearer(k, g).may_see_workload("w-1", "acme"), Ok(()));
        assert_eq!(
            bearer(k, g).may_see_workload("w-2", "beta"),
            Err(AccessDenied::Hidden {
                what: "workload w-2".into()
            })
        );
    }
}
