//! `keyward explain` and recurring time windows, on a real keyward:
//!
//! - explain ≡ Check: over generated states (policies with every condition kind, schedules
//!   included; deployments' auth flags) and generated requests (keys of every plane, scope,
//!   bearer and status; data and control routes; facts), the Explain RPC's decision equals
//!   what the real Check gRPC service answers for the same request on the same state;
//! - schedules through a real Envoy: a window holding now lets the request through, one that
//!   does not is a 403 `conditions_not_met`, and Explain names the window that failed;
//! - schedules are stored and written back on SQLite and PostgreSQL alike, and the CLI's
//!   `--schedule` and `keyward explain` work end to end.

mod support;

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::{Address as EnvoyAddress, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use keyward::pb::{self, Plane};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use support::{Admin, Keyward};

fn rule(projects: &[&str], sets: &[&str]) -> pb::Rule {
    pb::Rule {
        projects: projects.iter().map(|s| s.to_string()).collect(),
        permission_sets: sets.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

async fn put_policy(admin: &mut Admin, name: &str, principal: &str, rules: Vec<pb::Rule>) {
    admin
        .client
        .put_policy(pb::Policy {
            name: name.into(),
            description: String::new(),
            principal: principal.into(),
            rules,
        })
        .await
        .unwrap();
}

async fn key_for(
    admin: &mut Admin,
    bearer: &str,
    plane: Plane,
    scope: &[&str],
) -> (String, String) {
    let created = admin
        .client
        .create_key(pb::CreateKeyRequest {
            plane: plane as i32,
            scope: scope.iter().map(|s| s.to_string()).collect(),
            name: "explain".into(),
            description: String::new(),
            expiry: None,
            bearer: bearer.into(),
        })
        .await
        .unwrap()
        .into_inner();
    (created.key.unwrap().id, created.token)
}

async fn app(admin: &mut Admin, name: &str) {
    admin
        .client
        .create_application(pb::CreateApplicationRequest { name: name.into() })
        .await
        .unwrap();
}

/// The local hour now in `zone`.
fn local_hour(zone: &str) -> i64 {
    let tz = jiff::tz::TimeZone::get(zone).unwrap();
    jiff::Timestamp::now().to_zoned(tz).hour().into()
}

/// `* HH:00-HH:00 ZONE` from `from` to `to` hours after the current local hour (mod 24).
fn window_around_now(zone: &str, from: i64, to: i64) -> String {
    let h = local_hour(zone);
    let at = |d: i64| (h + d).rem_euclid(24);
    format!("* {:02}:00-{:02}:00 {zone}", at(from), at(to))
}

// ---------------------------------------------------------------------------------------------
// explain ≡ Check, over generated states and requests.
// ---------------------------------------------------------------------------------------------

/// A request as generated: whose key, which route, which facts.
#[derive(Debug, Clone)]
struct Req {
    key: usize,
    route: RouteChoice,
    source_ip: Option<&'static str>,
    user_agent: Option<&'static str>,
}

#[derive(Debug, Clone)]
enum RouteChoice {
    Data {
        deployment: &'static str,
        endpoint: &'static str,
    },
    Control {
        path: &'static str,
        method: &'static str,
        endpoint: &'static str,
    },
}

/// A generated state: each principal's rules, and acme/open's auth flags.
#[derive(Debug, Clone)]
struct GenState {
    rules: Vec<(&'static str, Vec<pb::Rule>)>,
    open_public: bool,
    open_private: bool,
}

const PRINCIPALS: [&str; 3] = ["app:ci", "app:bot", "user:alice@example.com"];

fn gen_rule(now: i64, hour: i64) -> impl Strategy<Value = pb::Rule> {
    let scope = prop_oneof![
        Just((vec!["acme"], false, false)),
        Just((vec!["beta"], false, false)),
        Just((vec!["acme", "beta"], false, false)),
        Just((vec![], true, false)),
        Just((vec![], false, true)),
    ];
    let sets = proptest::sample::subsequence(
        vec![
            "InferenceFullAccess",
            "InferenceReadOnly",
            "AllProductsFullAccess",
        ],
        1..=2,
    );
    let ips =
        proptest::sample::subsequence(vec!["10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32"], 0..=2);
    let uas = proptest::sample::subsequence(vec![("prefix", "curl/"), ("exact", "sdk/1")], 0..=1);
    let day = 86_400;
    // (not_before, not_after) relative to now, never reversed.
    let bounds = prop_oneof![
        Just((None, None)),
        Just((Some(-day), None)),
        Just((Some(day), None)),
        Just((None, Some(day))),
        Just((None, Some(-day))),
        Just((Some(-day), Some(day))),
    ];
    let at = |h: i64| (hour + h).rem_euclid(24);
    let schedules = proptest::sample::subsequence(
        vec![
            // Holds now, in UTC and elsewhere; crosses midnight when now is near it.
            format!("* {:02}:00-{:02}:00 UTC", at(-3), at(4)),
            format!("* {:02}:00-{:02}:00 UTC", at(5), at(9)),
            "Mon-Fri 08:00-18:00 Europe/Paris".to_owned(),
            "Sat,Sun 00:00-24:00 America/New_York".to_owned(),
        ],
        0..=2,
    );
    (scope, sets, ips, uas, bounds, schedules).prop_map(
        move |((projects, all, org), sets, ips, uas, (nb, na), schedule)| pb::Rule {
            projects: projects.into_iter().map(str::to_owned).collect(),
            all_projects: all,
            organization: org,
            permission_sets: sets.into_iter().map(str::to_owned).collect(),
            source_ips: ips.into_iter().map(str::to_owned).collect(),
            user_agents: uas
                .into_iter()
                .map(|(m, p)| pb::UserAgent {
                    r#match: m.into(),
                    pattern: p.into(),
                })
                .collect(),
            not_before: nb
                .map(|d: i64| keyward::iam::format_time(now + d))
                .unwrap_or_default(),
            not_after: na
                .map(|d: i64| keyward::iam::format_time(now + d))
                .unwrap_or_default(),
            schedule,
        },
    )
}

fn gen_state(now: i64, hour: i64) -> impl Strategy<Value = GenState> {
    let rules = || proptest::collection::vec(gen_rule(now, hour), 1..=2);
    (rules(), rules(), rules(), any::<bool>(), any::<bool>()).prop_map(
        |(a, b, c, open_public, open_private)| GenState {
            rules: vec![(PRINCIPALS[0], a), (PRINCIPALS[1], b), (PRINCIPALS[2], c)],
            open_public,
            open_private,
        },
    )
}

fn gen_request(keys: usize) -> impl Strategy<Value = Req> {
    let endpoint = prop_oneof![Just("public"), Just("private")];
    let data = (
        prop_oneof![
            Just("acme/chat"),
            Just("acme/open"),
            Just("beta/bot"),
            Just("acme/ghost")
        ],
        endpoint.clone(),
    )
        .prop_map(|(deployment, endpoint)| RouteChoice::Data {
            deployment,
            endpoint,
        });
    let control = (
        prop_oneof![
            Just("/api/projects/acme/workloads"),
            Just("/api/projects/beta/workloads"),
            Just("/api/workloads/w-1"),
            Just("/api/workloads/w-x"),
        ],
        prop_oneof![Just("GET"), Just("POST"), Just("DELETE")],
        endpoint,
    )
        .prop_map(|(path, method, endpoint)| RouteChoice::Control {
            path,
            method,
            endpoint,
        });
    (
        0..keys,
        prop_oneof![data, control],
        prop_oneof![
            Just(None),
            Just(Some("10.1.2.3")),
            Just(Some("192.0.2.9")),
            Just(Some("2001:db8::1")),
            Just(Some("203.0.113.7")),
        ],
        prop_oneof![
            Just(None),
            Just(Some("curl/8.5.0")),
            Just(Some("sdk/1")),
            Just(Some("python-requests/2"))
        ],
    )
        .prop_map(|(key, route, source_ip, user_agent)| Req {
            key,
            route,
            source_ip,
            user_agent,
        })
}

/// The `CheckRequest` Envoy would send for `r` with `token`.
fn check_request(r: &Req, token: &str) -> CheckRequest {
    let (method, path, extensions) = match &r.route {
        RouteChoice::Data {
            deployment,
            endpoint,
        } => (
            "POST",
            "/v1/chat/completions",
            vec![
                ("plane", "data"),
                ("endpoint", *endpoint),
                ("deployment", *deployment),
            ],
        ),
        RouteChoice::Control {
            path,
            method,
            endpoint,
        } => (
            *method,
            *path,
            vec![("plane", "control"), ("endpoint", *endpoint)],
        ),
    };
    let mut headers = HashMap::from([("authorization".to_owned(), format!("Bearer {token}"))]);
    if let Some(ua) = r.user_agent {
        headers.insert("user-agent".to_owned(), ua.to_owned());
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            source: r.source_ip.map(|ip| Peer {
                address: Some(EnvoyAddress {
                    address: Some(Address::SocketAddress(SocketAddress {
                        address: ip.into(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: extensions
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ..Default::default()
        }),
    }
}

fn explain_request(r: &Req, key_id: &str) -> pb::ExplainRequest {
    let mut e = pb::ExplainRequest {
        key_id: key_id.into(),
        source_ip: r.source_ip.unwrap_or_default().into(),
        user_agent: r.user_agent.unwrap_or_default().into(),
        ..Default::default()
    };
    match &r.route {
        RouteChoice::Data {
            deployment,
            endpoint,
        } => {
            e.deployment = deployment.to_string();
            e.endpoint = endpoint.to_string();
        }
        RouteChoice::Control {
            path,
            method,
            endpoint,
        } => {
            e.path = path.to_string();
            e.method = method.to_string();
            e.endpoint = endpoint.to_string();
        }
    }
    e
}

/// (HTTP status, denial code) of a Check answer; the code is empty when allowed.
fn check_outcome(response: &CheckResponse) -> (u32, String) {
    match &response.http_response {
        Some(HttpResponse::OkResponse(_)) => (200, String::new()),
        Some(HttpResponse::DeniedResponse(d)) => {
            let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
            (
                d.status.as_ref().unwrap().code as u32,
                body["error"]["code"].as_str().unwrap().to_owned(),
            )
        }
        other => panic!("unexpected http_response {other:?}"),
    }
}

/// Keys of every kind: (id, token).
struct World {
    keyward: Keyward,
    admin: Admin,
    keys: Vec<(String, String)>,
}

async fn world() -> World {
    let keyward = Keyward::start().await;
    let mut admin = keyward.admin().await;
    for p in ["acme", "beta"] {
        admin.project(p).await;
    }
    for d in ["acme/chat", "acme/open", "beta/bot"] {
        admin.deployment(d).await;
    }
    admin.workload("w-1", "acme").await;
    app(&mut admin, "ci").await;
    app(&mut admin, "bot").await;
    admin
        .client
        .add_member(pb::AddMemberRequest {
            email: "alice@example.com".into(),
        })
        .await
        .unwrap();
    let mut keys = Vec::new();
    for (bearer, plane, scope) in [
        ("app:ci", Plane::Data, &["acme/*"][..]),
        ("app:ci", Plane::Data, &["acme/chat"][..]),
        ("app:bot", Plane::Data, &["beta/bot", "acme/chat"][..]),
        ("app:ci", Plane::Control, &["acme"][..]),
        ("user:alice@example.com", Plane::Control, &["*"][..]),
        ("app:bot", Plane::Control, &["beta"][..]),
        (
            "user:alice@example.com",
            Plane::Data,
            &["acme/*", "beta/*"][..],
        ),
        ("", Plane::Data, &["acme/*"][..]),
        ("app:bot", Plane::Data, &["acme/*"][..]),
    ] {
        keys.push(key_for(&mut admin, bearer, plane, scope).await);
    }
    // The last one is revoked.
    let revoked = keys.last().unwrap().0.clone();
    admin.revoke(&revoked).await;
    World {
        keyward,
        admin,
        keys,
    }
}

#[test]
fn explain_decides_as_check_does_over_generated_states() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let w = runtime.block_on(world());
    let check = std::cell::RefCell::new(runtime.block_on(w.keyward.check_client()));
    let all_keys = w.keys;
    let admin = std::cell::RefCell::new(w.admin);
    let now = keyward::clock::now_unix();
    let hour = local_hour("UTC");
    let keys = all_keys.len();
    let mut keyward = w.keyward;
    let strategy = (
        gen_state(now, hour),
        proptest::collection::vec(gen_request(keys), 8),
    );
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 40,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let compared = std::cell::Cell::new([0usize; 2]);
    let result = runner.run(&strategy, |(state, requests)| {
        let mut admin = admin.borrow_mut();
        let mut check = check.borrow_mut();
        runtime.block_on(async {
            for (i, (principal, rules)) in state.rules.iter().enumerate() {
                put_policy(&mut admin, &format!("p{i}"), principal, rules.clone()).await;
            }
            admin
                .set_auth(
                    "acme/open",
                    Some(state.open_public),
                    Some(state.open_private),
                )
                .await;
            for r in &requests {
                let (id, token) = &all_keys[r.key];
                // Check, Explain, Check: a schedule boundary crossed in between (the two Checks
                // differ) is retried, never compared.
                let (checked, explained) = loop {
                    let before = check.check(check_request(r, token)).await.unwrap();
                    let explained = admin
                        .client
                        .explain(explain_request(r, id))
                        .await
                        .unwrap()
                        .into_inner();
                    let after = check.check(check_request(r, token)).await.unwrap();
                    let (before, after) = (
                        check_outcome(&before.into_inner()),
                        check_outcome(&after.into_inner()),
                    );
                    if before == after {
                        break (before, explained);
                    }
                };
                let mut counts = compared.get();
                counts[usize::from(checked.0 == 200)] += 1;
                compared.set(counts);
                prop_assert_eq!(
                    (checked.0, checked.1.as_str(), checked.0 == 200),
                    (
                        explained.http_status,
                        explained.code.as_str(),
                        explained.allowed
                    ),
                    "request {:?}\nstate {:?}\nexplained:\n{}",
                    r,
                    state,
                    explained.reasons.join("\n")
                );
                prop_assert!(explained.reasons.last().unwrap().starts_with("=> "));
            }
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The generated cases exercise both outcomes, in numbers.
    let [denied, allowed] = compared.get();
    assert!(
        denied >= 20 && allowed >= 20,
        "denied {denied}, allowed {allowed}"
    );
    runtime.block_on(keyward.stop());
}

// ---------------------------------------------------------------------------------------------
// Explain's own answers, and who may ask.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_the_rule_that_granted_or_the_condition_that_failed() {
    let w = world().await;
    let mut admin = w.admin;
    let mut office = rule(&["acme"], &["InferenceReadOnly"]);
    office.schedule = vec!["Mon-Fri 08:00-18:00 Europe/Paris".into()];
    office.source_ips = vec!["10.0.0.0/8".into()];
    put_policy(&mut admin, "office", "app:ci", vec![office]).await;
    let explain = |at: &str| pb::ExplainRequest {
        key_id: w.keys[0].0.clone(),
        deployment: "acme/chat".into(),
        source_ip: "10.1.2.3".into(),
        at: Some(keyward::iam::parse_time(at).unwrap()),
        ..Default::default()
    };
    // Saturday 10:00 in Paris: the schedule fails, and the explanation says where it stood.
    let sat = admin
        .client
        .explain(explain("2030-03-30T09:00:00Z"))
        .await
        .unwrap()
        .into_inner();
    assert!(!sat.allowed);
    assert_eq!(
        (sat.http_status, sat.code.as_str()),
        (403, "conditions_not_met")
    );
    let text = sat.reasons.join("\n");
    assert!(text.contains("policy office: rule projects acme"), "{text}");
    assert!(text.contains("conditions failed: schedule"), "{text}");
    assert!(
        text.contains(
            "Mon-Fri 08:00-18:00 Europe/Paris (it is Sat 2030-03-30 10:00 +01:00 Europe/Paris there)"
        ),
        "{text}"
    );
    assert!(
        text.contains("key scope acme/* covers deployment acme/chat"),
        "{text}"
    );
    // Monday 08:00 in Paris, a day after the spring change: 06:00 UTC.
    let mon = admin
        .client
        .explain(explain("2030-04-01T06:00:00Z"))
        .await
        .unwrap()
        .into_inner();
    assert!(mon.allowed, "{}", mon.reasons.join("\n"));
    assert!(
        mon.reasons
            .iter()
            .any(|l| l.contains("policy office") && l.contains("grants the action")),
        "{:?}",
        mon.reasons
    );
    // A principal, as if it held a key scoped to exactly the target; an unknown one is named.
    let as_app = admin
        .client
        .explain(pb::ExplainRequest {
            principal: "app:ci".into(),
            path: "/api/projects/acme/workloads".into(),
            method: "POST".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (as_app.http_status, as_app.code.as_str()),
        (403, "permission_denied"),
        "{:?}",
        as_app.reasons
    );
    let unknown = admin
        .client
        .explain(pb::ExplainRequest {
            principal: "app:ghost".into(),
            deployment: "acme/chat".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert!(
        unknown.message().contains("app:ghost"),
        "{}",
        unknown.message()
    );
    // Bad input names itself.
    for (request, names) in [
        (
            pb::ExplainRequest {
                key_id: "x".into(),
                ..Default::default()
            },
            "deployment",
        ),
        (
            pb::ExplainRequest {
                key_id: "x".into(),
                deployment: "acme/chat".into(),
                source_ip: "10.0.0.300".into(),
                ..Default::default()
            },
            "invalid source IP \"10.0.0.300\"",
        ),
        (
            pb::ExplainRequest {
                key_id: "x".into(),
                path: "/api/../projects/acme/workloads".into(),
                ..Default::default()
            },
            "not normalized",
        ),
    ] {
        let err = admin.client.explain(request).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains(names), "{}", err.message());
    }

    // Only iam.read (or iam.manage) on the organization may ask: alice's organization key,
    // with her policy granting inference only, is refused; granted iam.read by a custom set,
    // she may.
    let alice = key_for(&mut admin, "user:alice@example.com", Plane::Control, &["*"]).await;
    put_policy(
        &mut admin,
        "alice",
        "user:alice@example.com",
        vec![rule(&["acme"], &["InferenceFullAccess"])],
    )
    .await;
    let mut as_alice = Admin::connect(w.keyward.admin, &alice.1).await;
    let refused = as_alice
        .client
        .explain(explain("2030-04-01T06:00:00Z"))
        .await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::PermissionDenied);
    admin
        .client
        .put_permission_set(pb::PermissionSet {
            name: "Auditor".into(),
            description: String::new(),
            actions: vec!["iam.read".into()],
            includes: Vec::new(),
            builtin: false,
        })
        .await
        .unwrap();
    let mut reader = rule(&[], &["Auditor"]);
    reader.organization = true;
    put_policy(
        &mut admin,
        "alice",
        "user:alice@example.com",
        vec![rule(&["acme"], &["InferenceFullAccess"]), reader],
    )
    .await;
    let allowed = as_alice
        .client
        .explain(explain("2030-04-01T06:00:00Z"))
        .await
        .unwrap()
        .into_inner();
    assert!(allowed.allowed);
    // iam.read is not iam.manage: she still may not list policies.
    let listed = as_alice
        .client
        .list_policies(pb::ListPoliciesRequest::default())
        .await;
    assert_eq!(listed.unwrap_err().code(), tonic::Code::PermissionDenied);
}

// ---------------------------------------------------------------------------------------------
// Schedules through a real Envoy.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_decide_requests_through_envoy() {
    let mut g = support::Gateway::start().await;
    g.admin.project("demo").await;
    g.admin.deployment("demo/chat").await;
    app(&mut g.admin, "ci").await;
    let (id, token) = key_for(&mut g.admin, "app:ci", Plane::Data, &["demo/chat"]).await;
    let zone = "Asia/Kolkata"; // +05:30: local hours are not UTC's.
    let send = |token: String| {
        let request = g
            .http
            .post(g.envoy.public_url("/demo/chat/v1/chat/completions"))
            .bearer_auth(token)
            .json(&serde_json::json!({"model": "standin-model",
                "messages": [{"role": "user", "content": "hi"}]}));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            (status, text)
        }
    };

    // A window around now (crossing midnight when now is near it): allowed.
    let mut now_open = rule(&["demo"], &["InferenceReadOnly"]);
    now_open.schedule = vec![window_around_now(zone, -2, 3)];
    put_policy(&mut g.admin, "hours", "app:ci", vec![now_open]).await;
    let (status, body) = send(token.clone()).await;
    assert_eq!(status, 200, "{body}");

    // Changed to a window hours away: the very next request is refused.
    let mut closed = rule(&["demo"], &["InferenceReadOnly"]);
    let later = window_around_now(zone, 6, 9);
    closed.schedule = vec![later.clone()];
    put_policy(&mut g.admin, "hours", "app:ci", vec![closed]).await;
    let (status, body) = send(token.clone()).await;
    assert_eq!(status, 403, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "conditions_not_met");
    assert!(
        !body.to_string().contains(zone),
        "the body names no condition"
    );

    // Explain agrees, and names the window that failed.
    let explained = g
        .admin
        .client
        .explain(pb::ExplainRequest {
            key_id: id,
            deployment: "demo/chat".into(),
            source_ip: "127.0.0.1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (explained.http_status, explained.code.as_str()),
        (403, "conditions_not_met")
    );
    let text = explained.reasons.join("\n");
    assert!(text.contains(&format!("{later} (it is ")), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Stored on both backends; the CLI end to end.
// ---------------------------------------------------------------------------------------------

async fn schedules_round_trip(keyward: &Keyward) {
    let mut admin = keyward.admin().await;
    admin.project("acme").await;
    app(&mut admin, "ci").await;
    let mut r = rule(&["acme"], &["InferenceReadOnly"]);
    r.schedule = vec![
        "fri-mon 22:00-06:00 europe/paris".into(),
        "* 00:00-24:00 UTC".into(),
    ];
    put_policy(&mut admin, "nights", "app:ci", vec![r]).await;
    let listed = admin
        .client
        .list_policies(pb::ListPoliciesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let stored = &listed
        .policies
        .iter()
        .find(|p| p.name == "nights")
        .unwrap()
        .rules[0];
    assert_eq!(
        stored.schedule,
        ["Mon,Fri-Sun 22:00-06:00 Europe/Paris", "* 00:00-24:00 UTC"]
    );
    let exported = admin
        .client
        .export(pb::ExportRequest {})
        .await
        .unwrap()
        .into_inner()
        .document;
    assert!(
        exported.contains(
            r#"schedule = ["Mon,Fri-Sun 22:00-06:00 Europe/Paris", "* 00:00-24:00 UTC"]"#
        ),
        "{exported}"
    );
    // Applying the export changes nothing; a bad zone in a file is named with its line.
    let applied = admin
        .client
        .apply(pb::ApplyRequest {
            document: exported.clone(),
            dry_run: false,
            prune: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(applied.changes.is_empty(), "{:?}", applied.changes);
    let bad = exported.replace("Europe/Paris", "Europe/Pariss");
    let err = admin
        .client
        .apply(pb::ApplyRequest {
            document: bad,
            dry_run: false,
            prune: false,
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("line "), "{}", err.message());
    assert!(
        err.message()
            .contains("unknown time zone \"Europe/Pariss\""),
        "{}",
        err.message()
    );
    let mut bad_rule = rule(&["acme"], &["InferenceReadOnly"]);
    bad_rule.schedule = vec!["Mon-Fri 08:00-18:60 UTC".into()];
    let err = admin
        .client
        .put_policy(pb::Policy {
            name: "bad".into(),
            description: String::new(),
            principal: "app:ci".into(),
            rules: vec![bad_rule],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("invalid hour \"18:60\""),
        "{}",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_stored_and_written_back_on_sqlite() {
    let mut keyward = Keyward::start().await;
    schedules_round_trip(&keyward).await;
    keyward.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_stored_and_written_back_on_postgres() {
    let mut keyward = Keyward::start_postgres().await;
    schedules_round_trip(&keyward).await;
    keyward.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sets_schedules_and_explains() {
    let w = world().await;
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(support::KEYWARD_BIN)
            .args(args)
            .env("KEYWARD_SERVER", format!("http://{}", w.keyward.admin))
            .env("KEYWARD_TOKEN", &w.keyward.owner_token)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, _, err) = cli(&[
        "policies",
        "create",
        "office",
        "--principal",
        "app:ci",
        "--projects",
        "acme",
        "--sets",
        "InferenceReadOnly",
        "--schedule",
        "Mon-Fri 08:00-18:00 Europe/Paris",
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = cli(&["policies", "show", "office"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("schedule Mon-Fri 08:00-18:00 Europe/Paris"),
        "{out}"
    );
    let (ok, _, err) = cli(&[
        "policies",
        "add-rule",
        "office",
        "--projects",
        "acme",
        "--sets",
        "InferenceReadOnly",
        "--schedule",
        "Mon-Fri 08:00-18:00 Europe/Pariss",
    ]);
    assert!(!ok);
    assert!(err.contains("unknown time zone \"Europe/Pariss\""), "{err}");

    let key = &w.keys[0].0;
    let (ok, out, err) = cli(&[
        "explain",
        "--key",
        key,
        "--deployment",
        "acme/chat",
        "--at",
        "2030-03-30T09:00:00Z",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("conditions failed: schedule"), "{out}");
    assert!(
        out.contains("it is Sat 2030-03-30 10:00 +01:00 Europe/Paris there"),
        "{out}"
    );
    assert!(
        out.trim_end().ends_with(
            "=> deny (403 conditions_not_met): request did not satisfy the policy conditions"
        ),
        "{out}"
    );
    let (ok, out, err) = cli(&[
        "explain",
        "--key",
        key,
        "--deployment",
        "acme/chat",
        "--at",
        "2030-04-01T06:00:00Z",
        "--output",
        "json",
    ]);
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["decision"], "allow", "{json}");
    assert_eq!(json["http_status"], 200);
    let (ok, _, err) = cli(&[
        "explain",
        "--key",
        key,
        "--deployment",
        "acme/chat",
        "--at",
        "tomorrow",
    ]);
    assert!(!ok);
    assert!(err.contains("--at: invalid time \"tomorrow\""), "{err}");
}
