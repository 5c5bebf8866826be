//! The pure decision (`policy::decide`), for the owner's key and for an application's key whose
//! policy grants inference on the project under an IP and a user-agent condition.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use keyward::iam::{Action, Conditions, GrantRule, Grants, RuleScope, UserAgentMatch};
use keyward::model::{ApiKey, DataTarget, Deployment, Endpoint, KeyScope, Plane, PrincipalKind};
use keyward::policy::{self, Authentication, Decision, Route, Target};

fn key(kind: PrincipalKind) -> ApiKey {
    let scope = KeyScope::Data(
        vec![
            DataTarget::Project("other".into()),
            DataTarget::Deployment("demo/chat".parse().expect("valid name")),
        ]
        .into(),
    );
    ApiKey {
        expires_at: Some(4_000_000_000),
        ..ApiKey::new("AbCdEfGhIjKl", (7, kind, "bench-app"), scope, "")
    }
}

fn bench(c: &mut Criterion) {
    let deployment = Deployment {
        name: "demo/chat".parse().expect("valid name"),
        model: "m".into(),
        public_auth: true,
        private_auth: true,
        description: String::new(),
        public_endpoint: true,
        created_at: 0,
    };
    let route = Route {
        plane: Plane::Data,
        endpoint: Endpoint::Public,
        target: Target::Deployment {
            name: "demo/chat",
            project: "demo",
            slug: "chat",
        },
        method: "POST",
        source_ip: Some("203.0.113.7".parse().expect("valid ip")),
        user_agent: Some("openai-python/1.40.0"),
    };
    let now = 1_750_000_000;
    let owner = key(PrincipalKind::Owner);
    let app = key(PrincipalKind::Application);
    let grants = Grants {
        rules: vec![
            GrantRule {
                policy: "readers".into(),
                scope: RuleScope::AllProjects,
                actions: [Action::DeploymentsRead].into(),
                conditions: Conditions::default(),
            },
            GrantRule {
                policy: "inference-from-office".into(),
                scope: RuleScope::Projects(vec!["demo".into()]),
                actions: [Action::InferenceCall].into(),
                conditions: Conditions {
                    source_ips: vec!["203.0.113.0/24".parse().expect("valid net")],
                    user_agents: vec![UserAgentMatch::Prefix("openai-python/".into())],
                    ..Conditions::default()
                },
            },
        ],
    };
    let empty = Grants::default();
    assert!(matches!(
        policy::decide(
            &route,
            Some(&deployment),
            Authentication::Verified(&app),
            &grants,
            now
        ),
        Decision::Allow(_)
    ));

    let mut group = c.benchmark_group("decide");
    group.bench_function("owner_allow", |b| {
        b.iter(|| {
            policy::decide(
                black_box(&route),
                Some(&deployment),
                Authentication::Verified(black_box(&owner)),
                &empty,
                now,
            )
        })
    });
    group.bench_function("application_allow_with_conditions", |b| {
        b.iter(|| {
            policy::decide(
                black_box(&route),
                Some(&deployment),
                Authentication::Verified(black_box(&app)),
                &grants,
                now,
            )
        })
    });
    group.bench_function("application_deny_missing_permission", |b| {
        b.iter(|| {
            policy::decide(
                black_box(&route),
                Some(&deployment),
                Authentication::Verified(black_box(&app)),
                &empty,
                now,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
