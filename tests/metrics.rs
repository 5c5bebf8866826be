//! `/metrics` on the health port: Prometheus text exposition of real Check decisions, with
//! bounded labels (no key id, no deployment).

mod support;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use keyward::pb::Plane;
use support::Keyward;

#[tokio::test]
async fn check_decisions_and_latency_are_exported_without_key_ids() {
    let keyward = Keyward::start().await;
    let mut admin = keyward.admin().await;
    admin.project("demo").await;
    admin.deployment("demo/chat").await;
    let (key_id, token) = admin.key(Plane::Data, &["demo/chat"]).await;
    let mut check = AuthorizationClient::connect(format!("http://{}", keyward.check))
        .await
        .unwrap();
    let route = [
        ("plane", "data"),
        ("endpoint", "public"),
        ("deployment", "demo/chat"),
    ];
    let bearer = format!("Bearer {token}");
    for headers in [
        vec![("authorization", bearer.as_str())],
        vec![("authorization", bearer.as_str())],
        vec![],
    ] {
        let request = support::check_request(&route, &headers);
        check.check(request).await.unwrap();
    }

    let response = reqwest::get(format!("http://{}/metrics", keyward.health))
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    for line in [
        r#"keyward_check_decisions_total{result="allow",code="none",plane="data"} 2"#,
        r#"keyward_check_decisions_total{result="deny",code="missing_api_key",plane="data"} 1"#,
        r#"keyward_check_duration_seconds_count 3"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from\n{text}"
        );
    }
    assert!(
        text.contains("# TYPE keyward_check_duration_seconds histogram"),
        "{text}"
    );
    assert!(!text.contains(&key_id), "no key id in any label");
    assert!(!text.contains("demo/chat"), "no deployment in any label");
}
