//! The health port's probes mean what Kubernetes does with them, through a real PostgreSQL
//! outage: `/healthz` (liveness) and `/readyz` (readiness) stay 200 while a replica can decide
//! from its cache, `/readyz` is 503 on a replica that can decide nothing, and `/storez` reports
//! the store itself. `/metrics` shows the outage: store errors, the change feed lost and
//! regained, and changes propagated between replicas with their lag.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use keyward::pb::Plane;
use support::metric_value as value;
use support::{Backend, Envoy, Keyward, PrivatePostgres, eventually, test_config};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const ROUTE: [(&str, &str); 3] = [
    ("plane", "data"),
    ("endpoint", "public"),
    ("deployment", "acme/bot"),
];

async fn get(health: SocketAddr, path: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(format!("http://{health}{path}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The Check answer for `token` on acme/bot: the HTTP status, or the gRPC error code.
async fn check(keyward: &Keyward, token: &str) -> Result<u16, tonic::Code> {
    let mut client = AuthorizationClient::connect(format!("http://{}", keyward.check))
        .await
        .unwrap();
    let bearer = format!("Bearer {token}");
    let request = support::check_request(&ROUTE, &[("authorization", bearer.as_str())]);
    match client.check(request).await {
        Ok(response) => Ok(support::http_status(&response.into_inner())),
        Err(status) => Err(status.code()),
    }
}

/// What grpc.health.v1 on the Check port says of the whole server (service "").
async fn grpc_health(keyward: &Keyward) -> ServingStatus {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", keyward.check))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let response = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    match response.into_inner().status {
        1 => ServingStatus::Serving,
        2 => ServingStatus::NotServing,
        _ => ServingStatus::Unknown,
    }
}

async fn metric(health: SocketAddr, series: &str) -> f64 {
    value(&get(health, "/metrics").await.1, series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_holds_through_a_store_outage_while_keys_are_cached() {
    let postgres = PrivatePostgres::start();
    let owner = support::init(&postgres.url()).await;
    let a = Keyward::on(test_config(&postgres.url()), owner).await;
    let b = a.replica().await;
    // A replica that never decided anything: nothing cached to decide from.
    let idle = a.replica().await;
    let mut admin = a.admin().await;
    admin.project("acme").await;
    admin.deployment("acme/bot").await;
    let (_, warm) = admin.key(Plane::Data, &["acme/bot"]).await;
    let (_, cold) = admin.key(Plane::Data, &["acme/bot"]).await;
    let (revoked_id, revoked) = admin.key(Plane::Data, &["acme/bot"]).await;
    for keyward in [&a, &b] {
        assert_eq!(check(keyward, &warm).await, Ok(200));
    }
    assert_eq!(check(&b, &revoked).await, Ok(200));

    // A change made through A reaches B by NOTIFY: counted, with its lag, on the replica that
    // applied it (A skips its own events).
    admin.revoke(&revoked_id).await;
    eventually(
        "B denies the revoked key",
        Duration::from_secs(5),
        || async { (check(&b, &revoked).await == Ok(401)).then_some(()) },
    )
    .await;
    let text = get(a.health, "/metrics").await.1;
    assert!(
        value(&text, r#"keyward_propagation_changes_total{kind="key"}"#) >= 1.0,
        "{text}"
    );
    assert!(value(&text, "keyward_propagation_lag_seconds_count") >= 1.0);
    assert_eq!(value(&text, "keyward_propagation_connected"), 1.0);
    for keyward in [&a, &b, &idle] {
        assert_eq!(get(keyward.health, "/readyz").await.0, 200);
        assert_eq!(get(keyward.health, "/storez").await.0, 200);
    }

    postgres.stop();
    for keyward in [&a, &b] {
        assert_eq!(get(keyward.health, "/healthz").await.0, 200, "alive");
        assert_eq!(
            get(keyward.health, "/readyz").await,
            (200, "ready\n".to_owned()),
            "it still decides for its cached keys: stays in the Service"
        );
        assert_eq!(
            get(keyward.health, "/storez").await.0,
            503,
            "the store is down"
        );
        assert_eq!(check(keyward, &warm).await, Ok(200), "cached key");
    }
    assert_eq!(
        get(idle.health, "/healthz").await.0,
        200,
        "alive, no restart"
    );
    assert_eq!(
        get(idle.health, "/readyz").await,
        (
            503,
            "cannot decide: storage unavailable and no key cached\n".to_owned()
        ),
        "nothing to decide from"
    );
    // Envoy's active health checks and Kubernetes' gRPC probes see the same.
    eventually(
        "grpc.health.v1 follows readiness",
        Duration::from_secs(10),
        || async { (grpc_health(&idle).await == ServingStatus::NotServing).then_some(()) },
    )
    .await;
    assert_eq!(grpc_health(&b).await, ServingStatus::Serving);
    let errors_before = metric(b.health, r#"keyward_store_errors_total{op="key"}"#).await;
    assert_eq!(
        check(&b, &cold).await,
        Err(tonic::Code::Unavailable),
        "an unverified key cannot be decided: 503, never 401"
    );
    assert!(
        metric(b.health, r#"keyward_store_errors_total{op="key"}"#).await > errors_before,
        "the failed read is counted"
    );
    eventually(
        "the change feed is seen lost",
        Duration::from_secs(10),
        || async { (metric(a.health, "keyward_propagation_connected").await == 0.0).then_some(()) },
    )
    .await;

    postgres.start_again();
    eventually(
        "the change feed is regained",
        Duration::from_secs(30),
        || async {
            let text = get(a.health, "/metrics").await.1;
            (value(&text, "keyward_propagation_reconnects_total") >= 1.0
                && value(&text, "keyward_propagation_connected") == 1.0)
                .then_some(())
        },
    )
    .await;
    eventually(
        "the store answers again",
        Duration::from_secs(30),
        || async { (get(idle.health, "/storez").await.0 == 200).then_some(()) },
    )
    .await;
    assert_eq!(get(idle.health, "/readyz").await.0, 200);
    // Each replica learns on its own that the store is back: its change feed's next read or a
    // Check's probe (one per 250 ms) ends its known-down state.
    eventually(
        "recovered without a restart",
        Duration::from_secs(5),
        || async { (check(&b, &cold).await == Ok(200)).then_some(()) },
    )
    .await;
}

/// Envoy's ext_authz cluster health-checks each replica over grpc.health.v1: a serving replica
/// passes, and one that stopped fails.
#[tokio::test]
async fn envoy_health_checks_keyward_over_grpc_health() {
    let mut keyward = Keyward::start().await;
    let backend = Backend::start().await;
    let envoy = Envoy::start(keyward.check, backend.addr).await;
    eventually("a passed health check", Duration::from_secs(20), || async {
        (envoy
            .counter("cluster.keyward_ext_authz.health_check.success")
            .await
            >= 1)
            .then_some(())
    })
    .await;
    assert_eq!(
        envoy
            .counter("cluster.keyward_ext_authz.health_check.failure")
            .await,
        0
    );
    keyward.stop().await;
    eventually("a failed health check", Duration::from_secs(20), || async {
        (envoy
            .counter("cluster.keyward_ext_authz.health_check.failure")
            .await
            >= 1)
            .then_some(())
    })
    .await;
}
