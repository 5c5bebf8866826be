//! gRPC integration: a real tonic `Authorization` client against keyward on an ephemeral port.

mod support;

use std::collections::HashMap;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
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

#[tokio::test]
async fn allows_with_identity_headers_and_metadata() {
    let (keyward, id, token) = setup().await;
    let mut check = client(&keyward).await;
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
    let metadata = response.dynamic_metadata.unwrap();
    assert!(metadata.fields.contains_key("key_id"));
    // Nothing of the secret leaves keyward.
    let printed = format!("{ok:?}");
    assert!(!printed.contains(&token[20..]));
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
