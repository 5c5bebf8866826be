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

use support::metric_value as value;

async fn scrape(health: std::net::SocketAddr) -> String {
    let response = reqwest::get(format!("http://{health}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    response.text().await.unwrap()
}

/// How much `series` moved between two scrapes.
fn delta(before: &str, after: &str, series: &str) -> f64 {
    value(after, series) - value(before, series)
}

const ROUTE: [(&str, &str); 3] = [
    ("plane", "data"),
    ("endpoint", "public"),
    ("deployment", "demo/chat"),
];

#[tokio::test]
async fn caches_argon2_store_reads_and_admin_writes_are_counted() {
    // The second Check must be a cache hit. Under the default feed bound it is one only if
    // the change feed was confirmed within the last 500 ms, which a loaded CI machine does
    // not promise (a reload is then the right answer); the bound has tests of its own.
    let keyward = Keyward::start_with(|config| config.propagation.max_unconfirmed_ms = 0).await;
    let mut admin = keyward.admin().await;
    let before_writes = scrape(keyward.health).await;
    admin.project("demo").await;
    admin.deployment("demo/chat").await;
    let (key_id, token) = admin.key(Plane::Data, &["demo/chat"]).await;
    let after_writes = scrape(keyward.health).await;
    for (kind, at_least) in [("project", 1.0), ("deployment", 1.0), ("key", 1.0)] {
        let series = format!(r#"keyward_admin_writes_total{{kind="{kind}"}}"#);
        assert!(
            delta(&before_writes, &after_writes, &series) >= at_least,
            "{series} in\n{after_writes}"
        );
    }

    let mut check = AuthorizationClient::connect(format!("http://{}", keyward.check))
        .await
        .unwrap();
    let bearer = format!("Bearer {token}");
    let before = scrape(keyward.health).await;
    for _ in 0..2 {
        let request = support::check_request(&ROUTE, &[("authorization", bearer.as_str())]);
        let response = check.check(request).await.unwrap().into_inner();
        assert_eq!(support::http_status(&response), 200);
    }
    let after = scrape(keyward.health).await;
    // First Check: the key, its verdict and the deployment are loaded and argon2 runs once;
    // the second is answered from the caches.
    for (series, moved) in [
        (
            r#"keyward_cache_requests_total{cache="keys",result="miss"}"#,
            1.0,
        ),
        (
            r#"keyward_cache_requests_total{cache="keys",result="hit"}"#,
            1.0,
        ),
        (
            r#"keyward_cache_requests_total{cache="verdicts",result="miss"}"#,
            1.0,
        ),
        (
            r#"keyward_cache_requests_total{cache="deployments",result="miss"}"#,
            1.0,
        ),
        (
            r#"keyward_cache_requests_total{cache="deployments",result="hit"}"#,
            1.0,
        ),
        ("keyward_argon2_verifications_total", 1.0),
        ("keyward_argon2_wait_seconds_count", 1.0),
        (r#"keyward_store_duration_seconds_count{op="key"}"#, 1.0),
        (
            r#"keyward_store_duration_seconds_count{op="deployment"}"#,
            1.0,
        ),
        (r#"keyward_store_errors_total{op="key"}"#, 0.0),
    ] {
        assert_eq!(
            delta(&before, &after, series),
            moved,
            "{series} in\n{after}"
        );
    }
    assert_eq!(value(&after, "keyward_argon2_queue_depth"), 0.0, "{after}");
    assert!(after.contains("# TYPE keyward_store_duration_seconds histogram"));
    assert!(!after.contains(&key_id), "no key id in any label");
    assert!(!after.contains("demo/chat"), "no deployment in any label");
}

/// One argon2 worker and no queue: of several first verifications at once, all but the running
/// one are shed, and each shed is counted by reason and as an `overloaded` Check error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sheds_are_counted_by_reason() {
    let keyward = Keyward::start_with(|config| {
        config.verify.workers = 1;
        config.verify.queue = 0;
    })
    .await;
    let mut admin = keyward.admin().await;
    admin.project("demo").await;
    admin.deployment("demo/chat").await;
    let mut tokens = Vec::new();
    for _ in 0..8 {
        tokens.push(admin.key(Plane::Data, &["demo/chat"]).await.1);
    }
    let check = AuthorizationClient::connect(format!("http://{}", keyward.check))
        .await
        .unwrap();
    let checks: Vec<_> = tokens
        .into_iter()
        .map(|token| {
            let mut check = check.clone();
            tokio::spawn(async move {
                let bearer = format!("Bearer {token}");
                let request = support::check_request(&ROUTE, &[("authorization", bearer.as_str())]);
                check.check(request).await.map(|_| ()).map_err(|s| s.code())
            })
        })
        .collect();
    let mut shed = 0.0;
    for answer in checks {
        match answer.await.unwrap() {
            Ok(()) => {}
            Err(code) => {
                assert_eq!(code, tonic::Code::ResourceExhausted);
                shed += 1.0;
            }
        }
    }
    assert!(shed >= 1.0, "8 first verifications on 1 place, none shed");
    let text = scrape(keyward.health).await;
    assert_eq!(
        value(&text, r#"keyward_argon2_shed_total{reason="queue_full"}"#),
        shed,
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"keyward_check_decisions_total{result="error",code="overloaded",plane="data"}"#
        ),
        shed
    );
}

/// A keys cache of two entries and five keys checked: the cache drops some on its own, and
/// each drop is counted as a size eviction.
#[tokio::test]
async fn a_full_cache_counts_its_evictions() {
    let keyward = Keyward::start_with(|config| config.cache.capacity = 2).await;
    let mut admin = keyward.admin().await;
    admin.project("demo").await;
    admin.deployment("demo/chat").await;
    let mut check = AuthorizationClient::connect(format!("http://{}", keyward.check))
        .await
        .unwrap();
    for _ in 0..5 {
        let (_, token) = admin.key(Plane::Data, &["demo/chat"]).await;
        let bearer = format!("Bearer {token}");
        let request = support::check_request(&ROUTE, &[("authorization", bearer.as_str())]);
        check.check(request).await.unwrap();
    }
    support::eventually(
        "size evictions from the keys cache",
        std::time::Duration::from_secs(10),
        || async {
            // Readiness asks the keys cache for its size, which runs its pending evictions.
            reqwest::get(format!("http://{}/readyz", keyward.health))
                .await
                .unwrap();
            let text = scrape(keyward.health).await;
            let series = r#"keyward_cache_evictions_total{cache="keys",reason="size"}"#;
            (value(&text, series) >= 1.0).then_some(())
        },
    )
    .await;
}

/// Every keyward metric the shipped alert rules (deploy/prometheus/alerts.yml) use is one a
/// freshly started keyward exports: an alert on a renamed metric would never fire.
#[tokio::test]
async fn the_alert_rules_use_only_metrics_keyward_exports() {
    let keyward = Keyward::start().await;
    let rules =
        std::fs::read_to_string(support::repo().join("deploy/prometheus/alerts.yml")).unwrap();
    let used: std::collections::BTreeSet<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("keyward_") && word.len() > "keyward_".len())
        .collect();
    assert!(used.len() >= 5, "{used:?}");
    let text = support::eventually(
        "readiness exported",
        std::time::Duration::from_secs(10),
        || async {
            let text = scrape(keyward.health).await;
            (value(&text, "keyward_ready") == 1.0).then_some(text)
        },
    )
    .await;
    for metric in used {
        assert!(
            text.lines()
                .any(|line| line.starts_with(&format!("{metric}{{"))
                    || line.starts_with(&format!("{metric} "))),
            "{metric} (used in alerts.yml) is not exported:\n{text}"
        );
    }
}
