//! Two keyward replicas on one PostgreSQL, both in Envoy's ext_authz cluster: a change made
//! through one replica denies every following request through Envoy, whichever replica Envoy
//! asks, once the change has propagated (milliseconds; see bench/revocation.sh).

mod support;

use std::time::Duration;

use keyward::pb::{self, Plane};
use reqwest::StatusCode;
use support::{Backend, Envoy, Keyward, data_status, eventually};

const CHAT: &str = "/demo/chat/v1/chat/completions";
/// A liveness guard, not a performance assertion: the measured bound is milliseconds.
const WATCHDOG: Duration = Duration::from_secs(15);
/// Requests sent after propagation; Envoy round-robins them over both replicas.
const FOLLOW_UP: usize = 40;

async fn post(http: &reqwest::Client, envoy: &Envoy, token: Option<&str>) -> StatusCode {
    let mut request = http
        .post(envoy.public_url(CHAT))
        .json(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().status()
}

/// Waits until every replica decides `expected` (asked directly over gRPC, bounded by the
/// watchdog), then asserts every one of the next requests through Envoy gets it too. Waiting
/// for one answer through Envoy would not do: the replica that answered might be the one the
/// change was made through, and the next request may reach the other before it learned it.
async fn converges(
    http: &reqwest::Client,
    envoy: &Envoy,
    replicas: &[&Keyward],
    token: Option<&str>,
    expected: StatusCode,
    what: &str,
) {
    for replica in replicas {
        let client = replica.check_client().await;
        eventually(what, WATCHDOG, || {
            let mut client = client.clone();
            async move {
                (data_status(&mut client, "demo/chat", token).await == expected.as_u16())
                    .then_some(())
            }
        })
        .await;
    }
    for i in 0..FOLLOW_UP {
        assert_eq!(
            post(http, envoy, token).await,
            expected,
            "{what}: request {i} after propagation"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_replica_holds_on_every_request_through_envoy() {
    let a = Keyward::start_postgres().await;
    let b = a.replica().await;
    let backend = Backend::start().await;
    let envoy = Envoy::start_many(&[a.check, b.check], backend.addr).await;
    let http = envoy.client();
    let mut admin = a.admin().await;
    admin.project("demo").await;
    admin.deployment("demo/chat").await;
    admin.deployment("demo/embed").await;
    let (revoked_id, revoked) = admin.key(Plane::Data, &["demo/chat"]).await;
    let (detached_id, detached) = admin.key(Plane::Data, &["demo/chat", "demo/embed"]).await;

    // Warm both keys on both replicas (their first check runs argon2, which can outlast
    // Envoy's 0.5 s timeout on a loaded machine: each replica is asked directly first).
    for token in [&revoked, &detached] {
        converges(
            &http,
            &envoy,
            &[&a, &b],
            Some(token),
            StatusCode::OK,
            "warm-up",
        )
        .await;
    }
    assert!(
        b.services
            .directory
            .caches()
            .key(&revoked_id)
            .await
            .is_some(),
        "replica B has the key cached"
    );

    admin.revoke(&revoked_id).await;
    converges(
        &http,
        &envoy,
        &[&a, &b],
        Some(&revoked),
        StatusCode::UNAUTHORIZED,
        "revocation",
    )
    .await;

    // Detached through the other replica.
    let mut admin_b = b.admin().await;
    admin_b
        .update(pb::UpdateKeyRequest {
            id: detached_id,
            detach: vec!["demo/chat".into()],
            ..Default::default()
        })
        .await;
    converges(
        &http,
        &envoy,
        &[&a, &b],
        Some(&detached),
        StatusCode::FORBIDDEN,
        "detach",
    )
    .await;

    // An IAM policy deleted through one replica: the member's key stops on every replica.
    admin
        .client
        .add_member(pb::AddMemberRequest {
            email: "dev@example.com".into(),
        })
        .await
        .unwrap();
    admin
        .client
        .put_policy(pb::Policy {
            name: "dev-inference".into(),
            description: String::new(),
            principal: "user:dev@example.com".into(),
            rules: vec![pb::Rule {
                projects: vec!["demo".into()],
                permission_sets: vec!["InferenceReadOnly".into()],
                ..Default::default()
            }],
        })
        .await
        .unwrap();
    let member = admin
        .client
        .create_key(pb::CreateKeyRequest {
            plane: Plane::Data as i32,
            scope: vec!["demo/chat".into()],
            bearer: "user:dev@example.com".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    converges(
        &http,
        &envoy,
        &[&a, &b],
        Some(&member),
        StatusCode::OK,
        "member allowed by policy",
    )
    .await;
    admin_b
        .client
        .delete_policy(pb::DeletePolicyRequest {
            name: "dev-inference".into(),
        })
        .await
        .unwrap();
    converges(
        &http,
        &envoy,
        &[&a, &b],
        Some(&member),
        StatusCode::FORBIDDEN,
        "policy deleted",
    )
    .await;

    assert_eq!(post(&http, &envoy, None).await, StatusCode::UNAUTHORIZED);
    admin.set_auth("demo/chat", Some(false), None).await;
    converges(
        &http,
        &envoy,
        &[&a, &b],
        None,
        StatusCode::OK,
        "auth flag off",
    )
    .await;
    admin_b.set_auth("demo/chat", Some(true), None).await;
    converges(
        &http,
        &envoy,
        &[&a, &b],
        None,
        StatusCode::UNAUTHORIZED,
        "auth flag on",
    )
    .await;
}

/// A replica that stops is retried around and ejected by Envoy (retry_policy and
/// outlier_detection on the ext_authz cluster): after at most a few 503s, every request is
/// served by the surviving replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_routes_around_a_stopped_replica() {
    let a = Keyward::start_postgres().await;
    let mut b = a.replica().await;
    let backend = Backend::start().await;
    let envoy = Envoy::start_many(&[a.check, b.check], backend.addr).await;
    let http = envoy.client();
    let mut admin = a.admin().await;
    admin.project("demo").await;
    admin.deployment("demo/chat").await;
    let (_, token) = admin.key(Plane::Data, &["demo/chat"]).await;
    converges(
        &http,
        &envoy,
        &[&a, &b],
        Some(&token),
        StatusCode::OK,
        "both replicas serving",
    )
    .await;

    b.stop().await;
    eventually(
        "Envoy to route around the stopped replica",
        WATCHDOG,
        || {
            let (http, envoy, token) = (&http, &envoy, &token);
            async move {
                for _ in 0..FOLLOW_UP {
                    if post(http, envoy, Some(token)).await != StatusCode::OK {
                        return None;
                    }
                }
                Some(())
            }
        },
    )
    .await;
}
