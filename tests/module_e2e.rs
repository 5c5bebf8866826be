//! keyward's Envoy module end to end: a real Envoy 1.40 loading the built module
//! (`module/`, `KEYWARD_MODULE=on`) in front of keyward on PostgreSQL with a second replica,
//! and the stand-in backend. On the data routes the module is the authorizer: a hit is answered
//! in Envoy, a miss is a Check the module sends keyward itself. Whether a request was a hit is
//! read from keyward's own count of the Checks it answered: a hit never reaches keyward.

mod support;

use std::time::{Duration, Instant};

use keyward::pb::{self, Plane};
use reqwest::StatusCode;
use serde_json::Value;
use support::{Admin, Backend, Envoy, Keyward, PgDatabase, eventually, init, test_config};

const CHAT: &str = "/demo/chat/v1/chat/completions";
const EMBED: &str = "/demo/embed/v1/embeddings";

struct World {
    a: Keyward,
    b: Keyward,
    admin: Admin,
    envoy: Envoy,
    _backend: Backend,
    _database: PgDatabase,
}

/// A fresh database with an owner (its token), and the configuration of a replica on it whose
/// allows the module may reuse (`module.enabled`).
async fn module_database() -> (PgDatabase, String, keyward::config::Config) {
    let database = PgDatabase::create().await;
    let owner = init(&database.url).await;
    let mut config = test_config(&database.url);
    config.module.enabled = true;
    (database, owner, config)
}

/// Replica `a` (module answers on) behind Envoy with `concurrency` workers, replica `b` on the
/// same PostgreSQL database for changes made elsewhere; project demo, deployments demo/chat
/// and demo/embed.
async fn world(concurrency: u32) -> World {
    let (database, owner, config) = module_database().await;
    let a = Keyward::on(config, owner.clone()).await;
    let b = Keyward::on(test_config(&database.url), owner).await;
    let backend = Backend::start().await;
    let envoy = Envoy::start_module(&[a.check], backend.addr, &[], concurrency).await;
    let mut admin = a.admin().await;
    admin.project("demo").await;
    admin.deployment("demo/chat").await;
    admin.deployment("demo/embed").await;
    World {
        a,
        b,
        admin,
        envoy,
        _backend: backend,
        _database: database,
    }
}

/// One request on a new connection (so Envoy spreads them over its workers).
async fn call(url: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    call_from(None, url, headers).await
}

/// [`call`] from the local address `from` (any 127.0.0.0/8 address reaches Envoy's loopback
/// listener on Linux).
async fn call_from(
    from: Option<std::net::IpAddr>,
    url: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .local_address(from)
        .build()
        .unwrap();
    let mut request = client.post(url).json(&serde_json::json!({
        "model": "standin-model", "input": "hi",
        "messages": [{"role": "user", "content": "hi"}]
    }));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    assert!(
        response.headers().get("x-keyward-module").is_none(),
        "what keyward tells the module reached the client"
    );
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

impl World {
    /// Checks replica `a` (the one Envoy asks) has answered.
    async fn checks(&self) -> u64 {
        let text = reqwest::get(format!("http://{}/metrics", self.a.health))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        support::metric_value(&text, "keyward_check_duration_seconds_count") as u64
    }

    /// Sends the request until one is answered without a Check (a hit): the first allow
    /// teaches the module, which answers once its feed is known good.
    /// A data key for demo/chat borne by a new application `name`, whose one policy grants
    /// InferenceReadOnly on project demo under `conditions` (a rule without its projects and
    /// permission sets).
    async fn conditioned_key(&mut self, name: &str, conditions: pb::Rule) -> String {
        let client = &mut self.admin.client;
        client
            .create_application(pb::CreateApplicationRequest { name: name.into() })
            .await
            .unwrap();
        let principal = format!("app:{name}");
        client
            .put_policy(pb::Policy {
                name: format!("{name}-conditioned"),
                description: String::new(),
                principal: principal.clone(),
                rules: vec![pb::Rule {
                    projects: vec!["demo".into()],
                    permission_sets: vec!["InferenceReadOnly".into()],
                    ..conditions
                }],
            })
            .await
            .unwrap();
        client
            .create_key(pb::CreateKeyRequest {
                plane: Plane::Data as i32,
                scope: vec!["demo/chat".into()],
                name: name.into(),
                description: String::new(),
                expiry: None,
                bearer: principal,
            })
            .await
            .unwrap()
            .into_inner()
            .token
    }

    async fn until_hit(&self, url: &str, headers: &[(&str, &str)]) -> Value {
        self.until_hit_from(None, url, headers).await
    }

    async fn until_hit_from(
        &self,
        from: Option<std::net::IpAddr>,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Value {
        eventually("a hit", Duration::from_secs(20), || async {
            let before = self.checks().await;
            let (status, body) = call_from(from, url, headers).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            (self.checks().await == before).then_some(body)
        })
        .await
    }
}

fn assert_identity(body: &Value, key_id: &str, deployment: &str) {
    assert_eq!(
        body["keyward_headers"]["x-keyward-key-id"], key_id,
        "{body}"
    );
    assert_eq!(body["keyward_headers"]["x-keyward-principal"], "owner");
    assert_eq!(body["keyward_headers"]["x-keyward-project"], "demo");
    assert_eq!(
        body["keyward_headers"]["x-keyward-deployment"], deployment,
        "{body}"
    );
    assert_eq!(
        body["credential_headers_seen"],
        serde_json::json!([]),
        "{body}"
    );
}

async fn hits_on_every_worker(concurrency: u32) {
    let mut w = world(concurrency).await;
    let (id, token) = w.admin.key(Plane::Data, &["demo/chat"]).await;
    let url = w.envoy.public_url(CHAT);
    let auth = bearer(&token);

    // Miss: the module asks keyward, holds the request and its body meanwhile, and learns.
    let before = w.checks().await;
    let (status, body) = call(&url, &[("authorization", &auth)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_identity(&body, &id, "demo/chat");
    assert_eq!(body["choices"][0]["message"]["content"], "hi", "{body}");
    assert_eq!(w.checks().await, before + 1, "the first request is a Check");

    let body = w.until_hit(&url, &[("authorization", &auth)]).await;
    assert_identity(&body, &id, "demo/chat");

    // Hits on new connections, so on every worker; a client's own identity header and a
    // second credential header are overwritten and removed as keyward does.
    let checks = w.checks().await;
    for _ in 0..(8 * concurrency) {
        let (status, body) = call(
            &url,
            &[
                ("authorization", &auth),
                ("x-keyward-principal", "spoofed"),
                ("x-auth-token", "another"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_identity(&body, &id, "demo/chat");
    }
    // Each worker learns from its own first miss at most: the cache is shared.
    assert!(
        w.checks().await <= checks + 1,
        "hits reached keyward: {} -> {}",
        checks,
        w.checks().await
    );

    // The same token in x-api-key reads as the same credential.
    let (status, body) = call(&url, &[("x-api-key", &token)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_identity(&body, &id, "demo/chat");

    // A wrong token is never a hit, nor no token at all: keyward's denial, as keyward wrote it.
    let (status, body) = call(&url, &[("authorization", &bearer(&format!("{token}x")))]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    let response = reqwest::Client::new().post(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer realm="keyward""#
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "missing_api_key", "{body}");
    assert!(
        w.envoy
            .log()
            .contains("Dynamic module ABI version v0.2.0 matched"),
        "{}",
        w.envoy.log()
    );
    w.a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hit_miss_then_hit_on_two_workers() {
    hits_on_every_worker(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hit_miss_then_hit_on_four_workers() {
    hits_on_every_worker(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_another_replica_ends_hits() {
    let mut w = world(2).await;
    let (id, token) = w.admin.key(Plane::Data, &["demo/chat"]).await;
    let url = w.envoy.public_url(CHAT);
    let auth = bearer(&token);
    w.until_hit(&url, &[("authorization", &auth)]).await;

    let mut b = w.b.admin().await;
    let revoked = Instant::now();
    b.revoke(&id).await;
    let answered = revoked.elapsed();
    let took = eventually("the first denial", Duration::from_secs(5), || async {
        let (status, _) = call(&url, &[("authorization", &auth)]).await;
        match status {
            StatusCode::OK => None,
            StatusCode::UNAUTHORIZED => Some(revoked.elapsed()),
            other => panic!("unexpected {other}"),
        }
    })
    .await;
    eprintln!(
        "revoke on replica b (answered after {answered:?}) -> first denial through the \
         module's Envoy: {took:?}"
    );
    for _ in 0..10 {
        let (status, body) = call(&url, &[("authorization", &auth)]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }

    // Expiry and detach (scope) changes made elsewhere end hits as well.
    let (id2, token2) = w.admin.key(Plane::Data, &["demo/chat", "demo/embed"]).await;
    let auth2 = bearer(&token2);
    w.until_hit(&url, &[("authorization", &auth2)]).await;
    b.update(pb::UpdateKeyRequest {
        id: id2.clone(),
        detach: vec!["demo/chat".into()],
        ..Default::default()
    })
    .await;
    eventually("detached", Duration::from_secs(5), || async {
        let (status, _) = call(&url, &[("authorization", &auth2)]).await;
        (status == StatusCode::FORBIDDEN).then_some(())
    })
    .await;
    // A toggle: auth off for demo/chat's public endpoint, then back on.
    let (_, token3) = w.admin.key(Plane::Data, &["demo/chat"]).await;
    let auth3 = bearer(&token3);
    w.until_hit(&url, &[("authorization", &auth3)]).await;
    b.set_auth("demo/chat", Some(false), None).await;
    eventually("anonymous", Duration::from_secs(5), || async {
        let (status, body) = call(&url, &[("authorization", &auth3)]).await;
        (status == StatusCode::OK && body["keyward_headers"]["x-keyward-principal"] == "anonymous")
            .then_some(())
    })
    .await;
    w.a.stop().await;
}

/// A miss holds the request while keyward decides: a body larger than Envoy reads at once
/// reaches the backend whole after an allow, and never after a denial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_holds_a_large_body_until_keyward_answers() {
    let mut w = world(2).await;
    let (_, token) = w.admin.key(Plane::Data, &["demo/chat"]).await;
    let url = w.envoy.public_url(CHAT);
    let prompt = "word ".repeat(100_000);
    let send = |authorization: String| {
        let body = serde_json::json!({
            "model": "m", "messages": [{"role": "user", "content": prompt}]
        });
        let url = url.clone();
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .header("authorization", authorization)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let before = w.checks().await;
    let (status, body) = send(bearer(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .map(str::len),
        Some(prompt.len())
    );
    assert_eq!(w.checks().await, before + 1);
    let (status, body) = send(bearer(&format!("{token}x"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "invalid_api_key");
    w.a.stop().await;
}

/// A miss's Check that cannot reach a replica is sent again, to another one, as ext_authz's
/// retry policy does: stopping one of two replicas costs no request a 503 while Envoy's health
/// checks (every 2 s) have not yet taken it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_to_a_stopped_replica_is_retried_on_another() {
    let (_database, owner, config) = module_database().await;
    let a = Keyward::on(config.clone(), owner.clone()).await;
    let mut b = Keyward::on(config, owner).await;
    let backend = Backend::start().await;
    let envoy = Envoy::start_module(&[a.check, b.check], backend.addr, &[], 2).await;
    let mut admin = a.admin().await;
    admin.project("demo").await;
    admin.deployment("demo/chat").await;
    let url = envoy.public_url(CHAT);

    b.stop().await;
    // No credential: never a hit, every request is a Check, answered 401 by whichever
    // replica it reaches.
    for _ in 0..20 {
        let (status, body) = call(&url, &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"]["code"], "missing_api_key", "{body}");
    }
}

/// The access log reads the same as with ext_authz: a denial's why and key id (keyward's
/// metadata, which the module sets under ext_authz's namespace), an allow's key id from the
/// identity headers; and `module` tells a request the module asked keyward about
/// (`checked`) from one it answered from its cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_tells_denials_checks_and_hits_apart() {
    let mut w = world(2).await;
    let (id, token) = w.admin.key(Plane::Data, &["demo/chat"]).await;
    let (embed_id, embed_token) = w.admin.key(Plane::Data, &["demo/embed"]).await;
    let url = w.envoy.public_url(CHAT);
    let logged = |request_id: String| {
        let envoy = &w.envoy;
        async move {
            eventually("the access log line", Duration::from_secs(10), || async {
                envoy.log().lines().find_map(|line| {
                    let entry: Value = serde_json::from_str(line).ok()?;
                    (entry["request_id"] == request_id.as_str()).then_some(entry)
                })
            })
            .await
        }
    };
    let send = |token: &str| {
        let request = reqwest::Client::new().post(&url).bearer_auth(token).json(
            &serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
        );
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            let request_id = response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned();
            (status, request_id)
        }
    };

    let (status, request_id) = send(&embed_token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let line = logged(request_id).await;
    assert_eq!(
        line["ext_authz"]["denial_code"], "key_not_in_scope",
        "{line}"
    );
    assert_eq!(line["ext_authz"]["key_id"], embed_id.as_str(), "{line}");

    let (status, request_id) = send(&token).await;
    assert_eq!(status, StatusCode::OK);
    let line = logged(request_id).await;
    assert_eq!(line["key_id"], id.as_str(), "{line}");
    assert_eq!(
        line["module"]["checked"], true,
        "the first request is a Check: {line}"
    );

    w.until_hit(&url, &[("authorization", &bearer(&token))])
        .await;
    let (status, request_id) = send(&token).await;
    assert_eq!(status, StatusCode::OK);
    let line = logged(request_id).await;
    assert_eq!(line["key_id"], id.as_str(), "{line}");
    assert_eq!(line["module"]["hit"], true, "{line}");
    assert!(line["module"].get("checked").is_none(), "a hit: {line}");
    let log = w.envoy.log();
    for secret in [&token, &embed_token] {
        assert!(!log.contains(secret.as_str()), "a token in the access log");
    }
    w.a.stop().await;
}

/// On its routes the module is the only authorizer (ext_authz is not created there): a route
/// whose keyward context it cannot state to keyward is refused, never let through, whatever
/// the request carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_with_a_malformed_context_fails_closed() {
    let (_database, owner, config) = module_database().await;
    let a = Keyward::on(config, owner).await;
    let backend = Backend::start().await;
    let template = std::fs::read_to_string(support::repo().join("envoy/envoy.yaml.tmpl")).unwrap();
    let good = r#"keyward: { context: "data|public|demo/chat" }"#;
    assert!(template.contains(good));
    let broken = template.replace(good, r#"keyward: { context: "data|public" }"#);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("envoy.yaml.tmpl");
    std::fs::write(&path, broken).unwrap();
    let envoy = Envoy::start_module(
        &[a.check],
        backend.addr,
        &[("ENVOY_TEMPLATE", path.to_str().unwrap())],
        2,
    )
    .await;
    let mut admin = a.admin().await;
    admin.project("demo").await;
    admin.deployment("demo/chat").await;
    let (_, token) = admin.key(Plane::Data, &["demo/chat"]).await;
    for headers in [vec![("authorization", bearer(&token))], vec![]] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, body) = call(&envoy.public_url(CHAT), &headers).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    }
    // The well-formed route next to it is decided as usual.
    let (status, _) = call(&envoy.public_url(EMBED), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        envoy
            .log()
            .contains("is not data|<endpoint>|<project>/<deployment>"),
        "{}",
        envoy.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyward_down_stops_hits_and_misses_get_503() {
    let mut w = world(2).await;
    let (_, token) = w.admin.key(Plane::Data, &["demo/chat"]).await;
    let (_, fresh) = w.admin.key(Plane::Data, &["demo/chat"]).await;
    let url = w.envoy.public_url(CHAT);
    let auth = bearer(&token);
    w.until_hit(&url, &[("authorization", &auth)]).await;

    w.a.stop().await;
    // The feed is lost: hits stop (within feed_stale_ms at most), never an allow after that.
    eventually("hits stop", Duration::from_secs(5), || async {
        let (status, _) = call(&url, &[("authorization", &auth)]).await;
        (status == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;
    for token in [&token, &fresh] {
        for _ in 0..5 {
            let (status, body) = call(&url, &[("authorization", &bearer(token))]).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_serve_only_the_route_context_they_were_decided_for() {
    let mut w = world(2).await;
    let (id, token) = w.admin.key(Plane::Data, &["demo/chat"]).await;
    let auth = bearer(&token);
    w.until_hit(&w.envoy.public_url(CHAT), &[("authorization", &auth)])
        .await;

    // Another deployment: keyward decides (out of scope), not the chat entry.
    let (status, body) = call(&w.envoy.public_url(EMBED), &[("authorization", &auth)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "key_not_in_scope");
    // A control route: wrong plane, from keyward.
    let (status, body) = call(
        &w.envoy.public_url("/api/projects/demo/workloads"),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "wrong_plane");
    // The private endpoint is another context: its first request is a Check of its own.
    let private_checks = w.checks().await;
    let response = w
        .envoy
        .client()
        .post(w.envoy.private_url(CHAT))
        .header("authorization", &auth)
        .json(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_identity(&body, &id, "demo/chat");
    assert_eq!(w.checks().await, private_checks + 1);
    w.a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn condition_bound_entries_serve_only_the_same_facts() {
    let mut w = world(2).await;
    let token = w
        .conditioned_key(
            "ci",
            pb::Rule {
                user_agents: vec![pb::UserAgent {
                    r#match: "prefix".into(),
                    pattern: "sdk/".into(),
                }],
                ..Default::default()
            },
        )
        .await;
    let url = w.envoy.public_url(CHAT);
    let auth = bearer(&token);
    let body = w
        .until_hit(&url, &[("authorization", &auth), ("user-agent", "sdk/1.0")])
        .await;
    assert_eq!(body["keyward_headers"]["x-keyward-principal"], "ci");
    // The entry was made for user agent sdk/1.0: another one is decided by keyward.
    let (status, body) = call(&url, &[("authorization", &auth), ("user-agent", "curl/8")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "conditions_not_met");
    let checks = w.checks().await;
    let (status, _) = call(&url, &[("authorization", &auth), ("user-agent", "sdk/2.0")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        w.checks().await,
        checks + 1,
        "sdk/2.0 was a Check of its own"
    );
    w.a.stop().await;
}

/// An allow whose policy reads the source IP is reused only for the address it was decided
/// for: the module reads Envoy's `source.address` (an attribute id of Envoy 1.40's ABI; a wrong
/// one would make such allows never hit, or hit for every address).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_bound_entries_serve_only_the_same_address() {
    let mut w = world(2).await;
    let token = w
        .conditioned_key(
            "net",
            pb::Rule {
                source_ips: vec!["127.0.0.0/8".into()],
                ..Default::default()
            },
        )
        .await;
    let url = w.envoy.public_url(CHAT);
    let auth = bearer(&token);
    let (first, second) = ("127.0.0.1".parse().ok(), "127.0.0.2".parse().ok());
    let body = w
        .until_hit_from(first, &url, &[("authorization", &auth)])
        .await;
    assert_eq!(body["keyward_headers"]["x-keyward-principal"], "net");
    let checks = w.checks().await;
    let (status, body) = call_from(second, &url, &[("authorization", &auth)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        w.checks().await,
        checks + 1,
        "127.0.0.2 was a Check of its own"
    );
    // One entry per token and route: it now holds the allow made for 127.0.0.2.
    let (status, _) = call_from(second, &url, &[("authorization", &auth)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(w.checks().await, checks + 1, "127.0.0.2 is now a hit");
    let (status, _) = call_from(first, &url, &[("authorization", &auth)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(w.checks().await, checks + 2, "127.0.0.1 is a Check again");
    w.a.stop().await;
}

#[test]
fn the_module_is_rendered_only_when_asked_for() {
    let render = |extra: &[(&str, &str)]| {
        let out = std::process::Command::new("sh")
            .arg(support::repo().join("envoy/render.sh"))
            .env("CERT_DIR", "/certs")
            .envs(extra.iter().copied())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, off, _) = render(&[]);
    assert!(ok);
    assert!(!off.contains("DynamicModuleFilter") && !off.contains("filter_enabled_metadata"));
    let (ok, on, _) = render(&[("KEYWARD_MODULE", "on"), ("EXT_AUTHZ_TIMEOUT", "1.5s")]);
    assert!(ok);
    assert!(on.contains("DynamicModuleFilter") && on.contains("filter_enabled_metadata"));
    // The four data routes (chat and embed, public and private) leave ext_authz out: the module
    // Checks them itself, with ext_authz's timeout.
    let disabled = |yaml: &str| {
        yaml.lines()
            .filter(|line| line.trim() == "disabled: true")
            .count()
    };
    assert_eq!(disabled(&on), disabled(&off) + 4);
    assert!(on.contains(r#""check_timeout_ms":1500"#), "{on}");
    for bad in [
        vec![("KEYWARD_MODULE", "yes")],
        vec![
            ("KEYWARD_MODULE", "on"),
            ("KEYWARD_MODULE_PATH", "relative.so"),
        ],
        vec![
            ("KEYWARD_MODULE", "on"),
            ("KEYWARD_MODULE_FEED_WAIT_MS", "900"),
            ("KEYWARD_MODULE_FEED_STALE_MS", "800"),
        ],
        vec![
            ("KEYWARD_MODULE", "on"),
            ("KEYWARD_MODULE_FEED_WAIT_MS", "1s"),
        ],
    ] {
        let (ok, _, stderr) = render(&bad);
        assert!(!ok, "{bad:?} rendered");
        assert!(stderr.contains("KEYWARD_MODULE"), "{stderr}");
    }
}
