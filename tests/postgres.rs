//! The PostgreSQL backend and several replicas: the same behaviour as the SQLite default,
//! migrations safe under concurrent starts, changes propagated to every replica, rotation with a
//! grace period, and a real database stopped and restarted under load.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use keyward::authn::Authenticated;
use keyward::clock::now_unix;
use keyward::pb::{self, Plane};
use keyward::policy::InvalidReason;
use keyward::store::{Change, Store};
use keyward::token::Token;
use support::{
    Keyward, PgDatabase, PrivatePostgres, data_status as status, eventually, test_config,
};
use tonic::transport::Channel;

const WATCHDOG: Duration = Duration::from_secs(15);

async fn check_client(keyward: &Keyward) -> AuthorizationClient<Channel> {
    keyward.check_client().await
}

/// When the grace of key `id`'s previous secret ends, as stored.
async fn grace_end(keyward: &Keyward, id: &str) -> i64 {
    let stored = keyward.services.store.get_key(id).await.unwrap().unwrap();
    stored.previous_secret.unwrap().valid_until
}

async fn seed(keyward: &Keyward) -> support::Admin {
    let mut admin = keyward.admin().await;
    admin.project("acme").await;
    admin.deployment("acme/bot").await;
    admin.deployment("acme/other").await;
    admin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_serves_the_same_key_lifecycle_as_sqlite() {
    for keyward in [Keyward::start().await, Keyward::start_postgres().await] {
        let backend = keyward.database_url.split(':').next().unwrap().to_owned();
        let mut admin = seed(&keyward).await;
        let mut check = check_client(&keyward).await;
        let (id, token) = admin.key(Plane::Data, &["acme/bot"]).await;
        assert_eq!(
            status(&mut check, "acme/bot", Some(&token)).await,
            200,
            "{backend}"
        );
        assert_eq!(
            status(&mut check, "acme/other", Some(&token)).await,
            403,
            "{backend}"
        );
        admin
            .update(pb::UpdateKeyRequest {
                id: id.clone(),
                attach: vec!["acme/*".into()],
                ..Default::default()
            })
            .await;
        assert_eq!(
            status(&mut check, "acme/other", Some(&token)).await,
            200,
            "{backend}"
        );
        admin.set_auth("acme/other", Some(false), None).await;
        assert_eq!(
            status(&mut check, "acme/other", None).await,
            200,
            "{backend}"
        );
        admin.revoke(&id).await;
        assert_eq!(
            status(&mut check, "acme/bot", Some(&token)).await,
            401,
            "{backend}"
        );

        // Last use is written in batches, not per request, and shows in keys show.
        let (used_id, used) = admin.key(Plane::Data, &["acme/bot"]).await;
        assert_eq!(status(&mut check, "acme/bot", Some(&used)).await, 200);
        let shown = admin
            .client
            .get_key(pb::GetKeyRequest {
                id: used_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            shown.last_used_at.is_some(),
            "{backend}: pending use is shown at once"
        );
        keyward
            .services
            .last_used
            .flush(&keyward.services.store)
            .await;
        let stored = keyward
            .services
            .store
            .get_key(&used_id)
            .await
            .unwrap()
            .unwrap();
        assert!(
            stored
                .details
                .as_ref()
                .unwrap()
                .last_used_at
                .is_some_and(|at| at >= now_unix() - 60),
            "{backend}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_once() {
    let database = PgDatabase::create().await;
    let opens = (0..4).map(|_| {
        let url = database.url.clone();
        async move { Store::open(&url, 2).await }
    });
    let stores = futures_join_all(opens).await;
    for store in &stores {
        let store = store.as_ref().expect("every replica starts");
        assert_eq!(store.list_projects().await.unwrap().len(), 0);
    }
}

async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

/// Revoke, detach and an auth flag changed through replica A reach replica B, which had the
/// key cached: B stops allowing without a restart and long before its cache TTL (300 s).
async fn changes_reach_the_other_replica(a: Keyward) {
    let b = a.replica().await;
    let mut admin = seed(&a).await;
    let mut check_a = check_client(&a).await;
    let mut check_b = check_client(&b).await;

    let (revoked_id, revoked) = admin.key(Plane::Data, &["acme/bot"]).await;
    let (detached_id, detached) = admin.key(Plane::Data, &["acme/bot", "acme/other"]).await;
    for token in [&revoked, &detached] {
        assert_eq!(status(&mut check_a, "acme/bot", Some(token)).await, 200);
        assert_eq!(status(&mut check_b, "acme/bot", Some(token)).await, 200);
    }
    assert_eq!(status(&mut check_b, "acme/other", None).await, 401);

    admin.revoke(&revoked_id).await;
    admin
        .update(pb::UpdateKeyRequest {
            id: detached_id,
            detach: vec!["acme/bot".into()],
            ..Default::default()
        })
        .await;
    admin.set_auth("acme/other", Some(false), None).await;

    assert_eq!(
        status(&mut check_a, "acme/bot", Some(&revoked)).await,
        401,
        "the writer sees it at once"
    );
    for (what, token, deployment, expected) in [
        ("revoke", Some(revoked.as_str()), "acme/bot", 401),
        ("detach", Some(detached.as_str()), "acme/bot", 403),
        ("auth flag", None, "acme/other", 200),
    ] {
        eventually(what, WATCHDOG, || {
            let mut check_b = check_b.clone();
            async move { (status(&mut check_b, deployment, token).await == expected).then_some(()) }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_other_replicas_on_postgres() {
    changes_reach_the_other_replica(Keyward::start_postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_other_processes_on_one_sqlite_file() {
    changes_reach_the_other_replica(Keyward::start().await).await;
}

/// A secret argon2 has verified once is not verified again while the key keeps its hash: not
/// after the key is edited, any principal changes, or the caches are flushed after a gap in
/// change notifications, and not for the old secret inside a rotation grace. A wrong secret is
/// verified once and then remembered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_secrets_survive_reloads_without_argon2() {
    for keyward in [Keyward::start().await, Keyward::start_postgres().await] {
        let mut admin = seed(&keyward).await;
        let mut check = check_client(&keyward).await;
        let verifications = || keyward.services.authn.verifications_run();
        let (id, old) = admin.key(Plane::Data, &["acme/bot"]).await;
        let before = verifications();
        assert_eq!(status(&mut check, "acme/bot", Some(&old)).await, 200);
        assert_eq!(verifications(), before + 1, "first use verifies");

        admin
            .update(pb::UpdateKeyRequest {
                id: id.clone(),
                name: Some("renamed".into()),
                ..Default::default()
            })
            .await;
        keyward
            .services
            .directory
            .caches()
            .apply(&Change::Principal(1))
            .await;
        keyward.services.directory.caches().flush();
        assert!(
            keyward
                .services
                .directory
                .caches()
                .key(&id)
                .await
                .is_some_and(|entry| !keyward.services.directory.caches().is_fresh(&entry)),
            "the cached key is stale and must be reloaded"
        );
        assert_eq!(status(&mut check, "acme/bot", Some(&old)).await, 200);
        assert_eq!(verifications(), before + 1, "reloads keep the proof");

        let new = admin
            .client
            .rotate_key(pb::RotateKeyRequest {
                id: id.clone(),
                grace_seconds: 600,
            })
            .await
            .unwrap()
            .into_inner()
            .token;
        assert_eq!(status(&mut check, "acme/bot", Some(&old)).await, 200);
        assert_eq!(
            verifications(),
            before + 1,
            "the old secret is proven in the grace"
        );
        assert_eq!(status(&mut check, "acme/bot", Some(&new)).await, 200);
        assert_eq!(
            verifications(),
            before + 2,
            "the new secret is verified once"
        );
        let until = grace_end(&keyward, &id).await;
        assert!(matches!(
            keyward
                .services
                .authn
                .authenticate(&Token::parse(&old).unwrap(), until)
                .await
                .unwrap(),
            Authenticated::Invalid(InvalidReason::RotatedOut)
        ));

        let wrong = keyward::token::generate(keyward::model::Plane::Data, &id).token;
        assert_eq!(status(&mut check, "acme/bot", Some(&wrong)).await, 401);
        assert_eq!(status(&mut check, "acme/bot", Some(&wrong)).await, 401);
        assert_eq!(
            verifications(),
            before + 3,
            "a wrong secret is verified once"
        );

        admin.revoke(&id).await;
        assert_eq!(status(&mut check, "acme/bot", Some(&new)).await, 401);
        assert_eq!(
            verifications(),
            before + 3,
            "revocation needs no verification"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_the_old_secret_for_the_grace_only() {
    for keyward in [Keyward::start().await, Keyward::start_postgres().await] {
        let mut admin = seed(&keyward).await;
        let mut check = check_client(&keyward).await;
        let expires = now_unix() + 3_600;
        let (id, old) = admin
            .key_expiring(Plane::Data, &["acme/bot"], Some(expires))
            .await;
        assert_eq!(status(&mut check, "acme/bot", Some(&old)).await, 200);

        let rotated = admin
            .client
            .rotate_key(pb::RotateKeyRequest {
                id: id.clone(),
                grace_seconds: 600,
            })
            .await
            .unwrap()
            .into_inner();
        let new = rotated.token;
        let key = rotated.key.unwrap();
        assert_eq!(key.id, id, "same key");
        assert_eq!(key.scope, vec!["acme/bot".to_string()]);
        assert_eq!(key.expires_at, Some(expires));
        assert_ne!(new, old);

        // Inside the grace both secrets work; after it only the new one.
        assert_eq!(status(&mut check, "acme/bot", Some(&new)).await, 200);
        assert_eq!(status(&mut check, "acme/bot", Some(&old)).await, 200);
        let until = grace_end(&keyward, &id).await;
        assert!((now_unix() + 598..=now_unix() + 600).contains(&until));
        let old_token = Token::parse(&old).unwrap();
        let new_token = Token::parse(&new).unwrap();
        assert!(matches!(
            keyward
                .services
                .authn
                .authenticate(&old_token, until - 1)
                .await
                .unwrap(),
            Authenticated::Key(_)
        ));
        assert!(matches!(
            keyward
                .services
                .authn
                .authenticate(&old_token, until)
                .await
                .unwrap(),
            Authenticated::Invalid(_)
        ));
        assert!(matches!(
            keyward
                .services
                .authn
                .authenticate(&new_token, until)
                .await
                .unwrap(),
            Authenticated::Key(_)
        ));

        // A grace never outlives the key.
        let long = admin
            .client
            .rotate_key(pb::RotateKeyRequest {
                id: id.clone(),
                grace_seconds: 7 * 86_400,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(grace_end(&keyward, &id).await, expires);

        // --grace 0 cuts the old secret at once.
        let cut = admin
            .client
            .rotate_key(pb::RotateKeyRequest {
                id: id.clone(),
                grace_seconds: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status(&mut check, "acme/bot", Some(&long.token)).await, 401);
        assert_eq!(status(&mut check, "acme/bot", Some(&new)).await, 401);
        assert_eq!(status(&mut check, "acme/bot", Some(&cut.token)).await, 200);

        let too_long = admin
            .client
            .rotate_key(pb::RotateKeyRequest {
                id: id.clone(),
                grace_seconds: 31 * 86_400,
            })
            .await
            .unwrap_err();
        assert_eq!(too_long.code(), tonic::Code::InvalidArgument);
        admin.revoke(&id).await;
        let revoked = admin
            .client
            .rotate_key(pb::RotateKeyRequest {
                id,
                grace_seconds: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(revoked.code(), tonic::Code::FailedPrecondition);
    }
}

/// A real PostgreSQL stopped and restarted while requests keep coming: a cached valid key never
/// gets a 401, an unverified key gets 503 (never 401, never 200), a revoked key is never allowed,
/// keyward recovers without a restart, and nothing stored is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_under_load_never_becomes_a_401() {
    let postgres = PrivatePostgres::start();
    let owner = support::init(&postgres.url()).await;
    let keyward = Keyward::on(test_config(&postgres.url()), owner).await;
    let mut admin = seed(&keyward).await;
    let (_, warm) = admin.key(Plane::Data, &["acme/bot"]).await;
    let (_, cold) = admin.key(Plane::Data, &["acme/bot"]).await;
    let (revoked_id, revoked) = admin.key(Plane::Data, &["acme/bot"]).await;
    let mut check = check_client(&keyward).await;
    assert_eq!(status(&mut check, "acme/bot", Some(&warm)).await, 200);
    assert_eq!(status(&mut check, "acme/bot", Some(&revoked)).await, 200);
    admin.revoke(&revoked_id).await;
    assert_eq!(status(&mut check, "acme/bot", Some(&revoked)).await, 401);
    let before = keyward.services.store.list_keys(None).await.unwrap();

    // Load: one task per token, bounded in count, recording every status seen.
    let outage = Arc::new(AtomicBool::new(false));
    let load = |token: String| {
        let mut check = check.clone();
        let outage = outage.clone();
        tokio::spawn(async move {
            let mut seen: HashMap<(bool, u16), u32> = HashMap::new();
            for _ in 0..20_000 {
                let during = outage.load(Ordering::Acquire);
                let got = status(&mut check, "acme/bot", Some(&token)).await;
                *seen.entry((during, got)).or_default() += 1;
                if !during && seen.keys().any(|(d, _)| *d) {
                    break;
                }
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    let warm_load = load(warm.clone());
    let revoked_load = load(revoked.clone());

    outage.store(true, Ordering::Release);
    postgres.stop();
    let http = reqwest::Client::new();
    let readyz = http
        .get(format!("http://{}/readyz", keyward.health))
        .send()
        .await
        .unwrap();
    // Readiness holds while cached keys can still be decided (it used to be 503 here, which
    // pulled every replica out of a Service exactly when cached keys should keep working); the
    // store's own health is /storez.
    assert_eq!(
        readyz.status(),
        200,
        "readiness holds: the warm key is cached"
    );
    let storez = http
        .get(format!("http://{}/storez", keyward.health))
        .send()
        .await
        .unwrap();
    assert_eq!(storez.status(), 503, "/storez reports the outage");
    assert_eq!(
        status(&mut check, "acme/bot", Some(&cold)).await,
        503,
        "unverified key: 503, not 401"
    );
    assert_eq!(
        status(&mut check, "acme/bot", Some(&warm)).await,
        200,
        "cached key keeps working"
    );
    for _ in 0..200 {
        assert_ne!(status(&mut check, "acme/bot", Some(&revoked)).await, 200);
    }
    postgres.start_again();
    outage.store(false, Ordering::Release);

    // Recovery without a restart.
    eventually(
        "the cold key after recovery",
        Duration::from_secs(30),
        || {
            let mut check = check.clone();
            let cold = cold.clone();
            async move { (status(&mut check, "acme/bot", Some(&cold)).await == 200).then_some(()) }
        },
    )
    .await;
    let readyz = http
        .get(format!("http://{}/readyz", keyward.health))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 200);

    let warm_seen = warm_load.await.unwrap();
    let revoked_seen = revoked_load.await.unwrap();
    assert!(
        warm_seen.keys().all(|(_, s)| *s == 200),
        "warm key saw {warm_seen:?}"
    );
    assert!(
        warm_seen.keys().any(|(during, _)| *during),
        "the load overlapped the outage"
    );
    assert!(
        revoked_seen.keys().all(|(_, s)| *s != 200),
        "revoked key saw {revoked_seen:?}"
    );

    let after = keyward.services.store.list_keys(None).await.unwrap();
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(
            (&b.id, &b.scope, b.revoked_at, &b.secret_hash),
            (&a.id, &a.scope, a.revoked_at, &a.secret_hash)
        );
    }
}

#[test]
fn an_unreachable_database_at_start_is_one_line_without_the_password() {
    let out = std::process::Command::new(support::KEYWARD_BIN)
        .arg("serve")
        .env(
            "KEYWARD_DATABASE_URL",
            "postgres://keyward:hunter2@127.0.0.1:1/keyward",
        )
        .env("KEYWARD_CHECK_ADDR", "127.0.0.1:0")
        .env("KEYWARD_ADMIN_ADDR", "127.0.0.1:0")
        .env("KEYWARD_HEALTH_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!stderr.contains("hunter2"), "{stderr}");
    let error: Vec<_> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error.len(), 1, "{stderr}");
    assert!(
        error[0].contains("127.0.0.1:1") && error[0].contains("****"),
        "{stderr}"
    );
    for bad in ["mysql://localhost/x", "sqlite:/nonexistent-dir/sub/k.db"] {
        let out = std::process::Command::new(support::KEYWARD_BIN)
            .args(["init", "--database", bad])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("database"),
            "{bad}"
        );
    }
}

/// Once the store is known to be down, an uncached key and `/readyz` are answered at once
/// (UNAVAILABLE, 503) instead of after the pool's acquire timeout, past Envoy's 0.5 s; and
/// keyward notices by itself when the store is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_known_to_be_down_fails_fast() {
    let postgres = PrivatePostgres::start();
    let owner = support::init(&postgres.url()).await;
    let keyward = Keyward::on(test_config(&postgres.url()), owner).await;
    let mut admin = seed(&keyward).await;
    let mut cold = Vec::new();
    for _ in 0..3 {
        cold.push(admin.key(Plane::Data, &["acme/bot"]).await.1);
    }
    let mut check = check_client(&keyward).await;
    let readyz = format!("http://{}/readyz", keyward.health);
    let storez = format!("http://{}/storez", keyward.health);
    postgres.stop();

    // The first request finds out.
    assert_eq!(status(&mut check, "acme/bot", Some(&cold[0])).await, 503);
    let started = std::time::Instant::now();
    assert_eq!(status(&mut check, "acme/bot", Some(&cold[1])).await, 503);
    let store_health = reqwest::get(&storez).await.unwrap().status();
    let took = started.elapsed();
    assert_eq!(store_health, 503);
    // Not a speed measurement: the pool's acquire timeout is 5 s, and a Check or probe that
    // waited for it would take at least that. Anything well below means it was not awaited.
    assert!(
        took < Duration::from_secs(2),
        "a Check and /storez took {took:?} on a store known to be down"
    );
    // Readiness holds: keys are cached (the owner's, from the admin calls above).
    assert_eq!(reqwest::get(&readyz).await.unwrap().status(), 200);

    postgres.start_again();
    eventually("the store to be noticed again", WATCHDOG, || {
        let mut check = check.clone();
        let token = cold[2].clone();
        async move { (status(&mut check, "acme/bot", Some(&token)).await == 200).then_some(()) }
    })
    .await;
    assert_eq!(reqwest::get(&storez).await.unwrap().status(), 200);
}
