//! The route table across replicas on PostgreSQL: an entry added or removed through one
//! replica decides on the other one's next Checks (LISTEN/NOTIFY), asked over real gRPC.

mod support;

use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use keyward::model::Endpoint;
use keyward::pb::Plane;
use keyward::routes::{RouteKey, RouteSpec, RouteTarget};
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

    let key = RouteKey::new("*", "/v1").unwrap();
    let spec = RouteSpec {
        endpoint: Endpoint::Public,
        target: RouteTarget::Deployment("acme/chat".parse().unwrap()),
    };
    let written = Instant::now();
    for change in a
        .services
        .store
        .put_route(&key, &spec, false)
        .await
        .unwrap()
    {
        a.services.directory.caches().apply(&change).await;
    }
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
    for change in a.services.store.remove_route(&key).await.unwrap() {
        a.services.directory.caches().apply(&change).await;
    }
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
