//! The PostgreSQL change feed under faults it cannot see by itself: a `LISTEN` connection held
//! open but frozen (through a TCP proxy that stops delivering to it), and one terminated by the
//! server. A revocation made through another replica still reaches the replica behind the fault,
//! long before its cache TTL, and the dead connection is replaced.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use keyward::pb::Plane;
use support::pg_proxy::PgProxy;
use support::{Keyward, eventually, test_config};
use tonic::transport::Channel;

const WATCHDOG: Duration = Duration::from_secs(15);

async fn status(client: &mut AuthorizationClient<Channel>, token: &str) -> u16 {
    support::data_status(client, "acme/bot", Some(token)).await
}

async fn check_client(keyward: &Keyward) -> AuthorizationClient<Channel> {
    keyward.check_client().await
}

/// Replica A on the database directly, replica B through the proxy; a key both have cached.
async fn replicas_with_a_cached_key() -> (Keyward, Keyward, PgProxy, String, String) {
    let a = Keyward::start_postgres().await;
    let upstream: SocketAddr = "127.0.0.1:5432".parse().unwrap();
    let proxy = PgProxy::start(upstream).await;
    let proxied = proxy.url_for(&a.database_url, upstream);
    let b = Keyward::on(test_config(&proxied), a.owner_token.clone()).await;
    let mut admin = a.admin().await;
    admin.project("acme").await;
    admin.deployment("acme/bot").await;
    let (id, token) = admin.key(Plane::Data, &["acme/bot"]).await;
    assert_eq!(status(&mut check_client(&a).await, &token).await, 200);
    assert_eq!(status(&mut check_client(&b).await, &token).await, 200);
    eventually("B listening", WATCHDOG, || async {
        (proxy.listens() >= 1).then_some(())
    })
    .await;
    (a, b, proxy, id, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_listen_connection_is_detected_and_a_revocation_still_arrives() {
    let (a, b, proxy, id, token) = replicas_with_a_cached_key().await;
    assert_eq!(proxy.freeze_listeners().await, 1);

    a.admin().await.revoke(&id).await;
    let mut check_b = check_client(&b).await;
    eventually("B denies the revoked key", WATCHDOG, || {
        let (mut check_b, token) = (check_b.clone(), token.clone());
        async move { (status(&mut check_b, &token).await == 401).then_some(()) }
    })
    .await;
    // The frozen connection was found dead by its heartbeat and replaced.
    eventually("B listening on a new connection", WATCHDOG, || async {
        (proxy.listens() >= 2).then_some(())
    })
    .await;
    assert_eq!(status(&mut check_b, &token).await, 401);
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_listen_connection_is_replaced_and_the_missed_revocation_applied() {
    let (a, b, proxy, id, token) = replicas_with_a_cached_key().await;
    let admin_db = sqlx::PgPool::connect(&a.database_url).await.unwrap();
    let terminated: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .fetch_all(&admin_db)
    .await
    .unwrap();
    assert!(!terminated.is_empty(), "no LISTEN connection found");
    a.admin().await.revoke(&id).await;
    let check_b = check_client(&b).await;
    eventually("B denies the revoked key", WATCHDOG, || {
        let (mut check_b, token) = (check_b.clone(), token.clone());
        async move { (status(&mut check_b, &token).await == 401).then_some(()) }
    })
    .await;
    eventually("B listening again", WATCHDOG, || async {
        (proxy.listens() >= 2).then_some(())
    })
    .await;
}
