//! gRPC integration: a real tonic `Authorization` client against keyward on an ephemeral port.

mod support;

use std::collections::HashMap;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use envoy_types::pb::google::protobuf::value::Kind;
use keyward::pb::Plane;
use support::{Keyward, check_request as request, http_status};
use tonic::Code;
use tonic::transport::Channel;

async fn client(keyward: &Keyward) -> AuthorizationClient<Channel> {
    AuthorizationClient::connect(format!("http://{}", keyward.check))
        .await
        .unwrap()
}

const CHAT_ROUTE: &[(&str, &str)] = &[
    ("plane", "data"),
    ("endpoint", "public"),
    ("deployment", "demo/chat"),
];

async fn setup() -> (Keyward, String, String) {
    let keyward = Keyward::start().await;
    let mut admin = keyward.admin().await;
    admin.project("demo").await;
    admin.deployment("demo/chat").await;
    let (id, token) = admin.key(Plane::Data, &["demo/chat"]).await;
    (keyward, id, token)
}

/// An allow overwrites the identity headers and removes the credential; by default it carries
/// no dynamic metadata (`answer.metadata`), which costs Envoy more than the rest of the answer.
#[tokio::test]
async fn allows_with_identity_headers_and_no_metadata_by_default() {
    let (keyward, id, token) = setup().await;
    let response = allow(&keyward, &id, &token).await;
    assert_eq!(response.dynamic_metadata, None);
}

#[tokio::test]
async fn allows_carry_the_identity_as_metadata_with_answer_metadata() {
    let keyward = Keyward::start_with(|config| config.answer.metadata = true).await;
    let mut admin = keyward.admin().await;
    admin.project("demo").await;
    admin.deployment("demo/chat").await;
    let (id, token) = admin.key(Plane::Data, &["demo/chat"]).await;
    let response = allow(&keyward, &id, &token).await;
    let metadata = response.dynamic_metadata.unwrap();
    let field = |name: &str| match &metadata.fields[name].kind {
        Some(Kind::StringValue(value)) => value.clone(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(field("key_id"), id);
    assert_eq!(field("deployment"), "demo/chat");
    assert_eq!(field("plane"), "data");
}

/// Checks `token` on the chat route and asserts keyward's allow: identity headers set,
/// credential removed, nothing of the secret in the answer.
async fn allow(keyward: &Keyward, id: &str, token: &str) -> CheckResponse {
    let mut check = client(keyward).await;
    let bearer = format!("Bearer {token}");
    let response = check
        .check(request(CHAT_ROUTE, &[("authorization", &bearer)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.status.as_ref().unwrap().code, 0);
    let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
        panic!("ok response expected")
    };
    let set: HashMap<_, _> = ok
        .headers
        .iter()
        .map(|h| {
            (
                h.header.as_ref().unwrap().key.as_str(),
                h.header.as_ref().unwrap().value.as_str(),
            )
        })
        .collect();
    assert_eq!(set["x-keyward-key-id"], id);
    assert_eq!(set["x-keyward-deployment"], "demo/chat");
    assert!(ok.headers_to_remove.contains(&"authorization".to_string()));
    // Nothing of the secret leaves keyward.
    let printed = format!("{response:?}");
    assert!(!printed.contains(&token[20..]));
    response
}

#[tokio::test]
async fn malformed_check_requests_are_denied_never_panic() {
    let (keyward, _, token) = setup().await;
    let mut check = client(&keyward).await;
    let bearer = format!("Bearer {token}");
    let cases: Vec<CheckRequest> = vec![
        CheckRequest::default(),
        CheckRequest {
            attributes: Some(AttributeContext::default()),
        },
        request(&[], &[("authorization", &bearer)]),
        request(&[("plane", "data")], &[("authorization", &bearer)]),
        request(
            &[("plane", "data"), ("endpoint", "public")],
            &[("authorization", &bearer)],
        ),
        request(
            &[
                ("plane", "data"),
                ("endpoint", "public"),
                ("deployment", "no-slash"),
            ],
            &[("authorization", &bearer)],
        ),
        request(
            &[
                ("plane", "data"),
                ("endpoint", "public"),
                ("deployment", "Bad/Name"),
            ],
            &[("authorization", &bearer)],
        ),
        request(
            &[
                ("plane", "data"),
                ("endpoint", "sideways"),
                ("deployment", "demo/chat"),
            ],
            &[("authorization", &bearer)],
        ),
        request(
            &[
                ("plane", "warp"),
                ("endpoint", "public"),
                ("deployment", "demo/chat"),
            ],
            &[("authorization", &bearer)],
        ),
        request(
            &[("plane", "control"), ("endpoint", "public")],
            &[("authorization", &bearer)],
        ),
    ];
    for case in cases {
        let response = check.check(case.clone()).await.unwrap().into_inner();
        assert_eq!(http_status(&response), 403, "{case:?}");
    }
    // Headers that are present but useless.
    for value in [
        "",
        "Bearer",
        "Bearer    ",
        "Basic dXNlcjpwYXNz",
        &"x".repeat(100_000),
        "ik_live_\u{0}\u{1}",
    ] {
        let response = check
            .check(request(
                CHAT_ROUTE,
                &[("authorization", value), ("x-api-key", value)],
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            http_status(&response),
            401,
            "{:?}",
            &value[..value.len().min(20)]
        );
    }
    // The server is still healthy after all of that.
    let response = check
        .check(request(CHAT_ROUTE, &[("authorization", &bearer)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(http_status(&response), 200);
}

#[tokio::test]
async fn unknown_deployments_fail_closed() {
    let (keyward, _, _) = setup().await;
    let mut admin = keyward.admin().await;
    let (_, project_key) = admin.key(Plane::Data, &["demo/*"]).await;
    let mut check = client(&keyward).await;
    let bearer = format!("Bearer {project_key}");
    let route = [
        ("plane", "data"),
        ("endpoint", "public"),
        ("deployment", "demo/ghost"),
    ];
    let response = check
        .check(request(&route, &[("authorization", &bearer)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(http_status(&response), 403);
    let response = check
        .check(request(&route, &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        http_status(&response),
        401,
        "an unregistered deployment still requires a key"
    );
}

#[tokio::test]
async fn a_store_outage_is_a_grpc_error_never_a_401() {
    let (keyward, _, token) = setup().await;
    let mut check = client(&keyward).await;
    let bearer = format!("Bearer {token}");
    let warm = check
        .check(request(CHAT_ROUTE, &[("authorization", &bearer)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(http_status(&warm), 200);

    keyward.services.store.close().await;

    // A key verified before the outage keeps working from cache.
    let cached = check
        .check(request(CHAT_ROUTE, &[("authorization", &bearer)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(http_status(&cached), 200);
    // An unknown key cannot be decided: an error, so Envoy answers 503, not 401.
    let stranger = keyward::token::generate(keyward::model::Plane::Data, "AAAAAAAAAAAA").token;
    let err = check
        .check(request(
            CHAT_ROUTE,
            &[("authorization", &format!("Bearer {stranger}"))],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(!err.message().contains(&stranger));
    // An uncached deployment cannot be decided either.
    let other = [
        ("plane", "data"),
        ("endpoint", "public"),
        ("deployment", "demo/other"),
    ];
    let err = check
        .check(request(&other, &[("authorization", &bearer)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
}

#[tokio::test]
async fn health_and_readiness() {
    let (keyward, _, _) = setup().await;
    let http = reqwest::Client::new();
    let healthz = http
        .get(format!("http://{}/healthz", keyward.health))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);
    let readyz = http
        .get(format!("http://{}/readyz", keyward.health))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 200);
    keyward.services.store.close().await;
    let storez = http
        .get(format!("http://{}/storez", keyward.health))
        .send()
        .await
        .unwrap();
    assert_eq!(storez.status(), 503, "the store is gone");
    // Readiness used to be 503 here; it now holds while keys are cached (the admin calls in
    // setup cached the owner's), since they can still be decided. A replica with nothing
    // cached is 503: tests/probes.rs.
    let readyz = http
        .get(format!("http://{}/readyz", keyward.health))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 200);
}

#[tokio::test]
async fn the_check_listener_answers_grpc_health_checks() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let keyward = Keyward::start().await;
    let channel = Channel::from_shared(format!("http://{}", keyward.check))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
}

/// keyward decides on the path it reads, so it must read the path the upstream will act on: a
/// path Envoy did not normalize (no `normalize_path`, `merge_slashes`) is denied, never
/// interpreted (issue 16: `/api/workloads/w-acme/../../projects/beta` was allowed as w-acme).
#[tokio::test]
async fn unnormalized_control_paths_are_denied() {
    let keyward = Keyward::start().await;
    let mut admin = keyward.admin().await;
    admin.project("acme").await;
    admin.project("beta").await;
    admin.workload("w-acme", "acme").await;
    let (_, token) = admin.key(Plane::Control, &["acme"]).await;
    let bearer = format!("Bearer {token}");
    let check = client(&keyward).await;
    let route = &[("plane", "control"), ("endpoint", "public")];
    let status_of = |path: &str| {
        let mut request = request(route, &[("authorization", &bearer)]);
        let http = request
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
            .unwrap();
        http.path = path.into();
        http.method = "GET".into();
        let mut check = check.clone();
        async move { http_status(&check.check(request).await.unwrap().into_inner()) }
    };
    assert_eq!(status_of("/api/workloads/w-acme").await, 200);
    assert_eq!(status_of("/api/workloads/w-acme/?x=/../").await, 200);
    for path in [
        "/api/workloads/w-acme/../../projects/beta/workloads",
        "/api/workloads/w-acme/%2e%2e/%2E%2E/projects/beta/workloads",
        "/api/workloads/w-acme/..%2f..%2Fprojects/beta/workloads",
        "/api/workloads/w-acme/.%2E/x",
        "/api/workloads/w-acme/./x",
        "/api/workloads/w-acme//x",
        "//api/workloads/w-acme",
        "/api/workloads/w-acme/..\\..\\projects/beta",
        "api/workloads/w-acme",
    ] {
        assert_eq!(status_of(path).await, 403, "{path}");
    }
}
