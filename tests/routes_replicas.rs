//! The route table across replicas on PostgreSQL: an entry added or removed through one
//! replica's admin API decides on the other one's next Checks (LISTEN/NOTIFY), asked over
//! real gRPC.

mod support;

use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use keyward::pb::Plane;
use support::{Keyward, check_request, eventually, http_status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_written_on_one_replica_decides_on_the_other() {
    let a = Keyward::start_postgres().await;
    let b = a.replica().await;
    let mut admin = a.admin().await;
    admin.project("acme").await;
    admin.deployment("acme/chat").await;
    let (_, token) = admin.key(Plane::Data, &["acme/chat"]).await;
    let mut client = AuthorizationClient::connect(format!("http://{}", b.check))
        .await
        .unwrap();
    let bearer = format!("Bearer {token}");
    let request = check_request(&[], &[("authorization", bearer.as_str())]);
    let status = |client: &mut AuthorizationClient<_>| {
        let mut client = client.clone();
        let request = request.clone();
        async move { http_status(client.check(request).await.unwrap().get_ref()) }
    };
    assert_eq!(status(&mut client).await, 403, "no route yet");

    let written = Instant::now();
    admin.route("*", "/v1", "public", Some("acme/chat")).await;
    eventually(
        "the route on the other replica",
        Duration::from_secs(5),
        || {
            let probe = status(&mut client);
            async move { (probe.await == 200).then_some(()) }
        },
    )
    .await;
    println!(
        "route added: seen by the other replica after {:?}",
        written.elapsed()
    );

    let removed = Instant::now();
    admin.remove_route("*", "/v1").await;
    eventually(
        "the removal on the other replica",
        Duration::from_secs(5),
        || {
            let probe = status(&mut client);
            async move { (probe.await == 403).then_some(()) }
        },
    )
    .await;
    println!(
        "route removed: seen by the other replica after {:?}",
        removed.elapsed()
    );
}
