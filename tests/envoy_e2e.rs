//! End to end through a real Envoy: keyward (in process), Envoy 1.40 rendered from
//! `envoy/envoy.yaml.tmpl`, and the stand-in backend, asserting on what an HTTP client sees.

mod support;

use std::time::Duration;

use keyward::pb::{self, Plane};
use reqwest::StatusCode;
use serde_json::Value;

type World = support::Gateway;

/// keyward with project `demo`, deployments `demo/chat` and `demo/embed`, behind Envoy.
async fn world() -> World {
    let mut w = World::start().await;
    w.admin.project("demo").await;
    w.admin.deployment("demo/chat").await;
    w.admin.deployment("demo/embed").await;
    w.admin.workload("w-1", "demo").await;
    w
}

const CHAT: &str = "/demo/chat/v1/chat/completions";

fn chat_body() -> Value {
    serde_json::json!({"model": "standin-model", "messages": [{"role": "user", "content": "hi"}]})
}

impl World {
    async fn chat(
        &self,
        url: String,
        token: Option<&str>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self.http.post(url).json(&chat_body());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, body)
    }

    async fn status(&self, token: Option<&str>) -> StatusCode {
        self.chat(self.envoy.public_url(CHAT), token).await.0
    }
}

fn assert_openai_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body["error"]["type"].is_string(), "{body}");
    assert!(body["error"]["param"].is_null(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_key_reaches_the_backend_with_identity_and_without_credentials() {
    let mut w = world().await;
    let (id, token) = w.admin.key(Plane::Data, &["demo/chat"]).await;

    let response = w
        .http
        .post(w.envoy.public_url(CHAT))
        .bearer_auth(&token)
        .header("x-keyward-principal", "spoofed-admin")
        .header("x-api-key", "something-else")
        .json(&chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion", "{body}");
    assert_eq!(body["keyward_headers"]["x-keyward-key-id"], id.as_str());
    assert_eq!(body["keyward_headers"]["x-keyward-principal"], "owner");
    assert_eq!(body["keyward_headers"]["x-keyward-project"], "demo");
    assert_eq!(body["keyward_headers"]["x-keyward-deployment"], "demo/chat");
    assert_eq!(
        body["credential_headers_seen"],
        serde_json::json!([]),
        "{body}"
    );

    for header in ["x-api-key", "x-auth-token"] {
        let response = w
            .http
            .get(w.envoy.public_url("/demo/chat/v1/models"))
            .header(header, &token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "credential in {header}");
    }

    // The private endpoint is TLS, verified against the generated CA.
    let (status, _, body) = w.chat(w.envoy.private_url(CHAT), Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["keyward_headers"]["x-keyward-key-id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_get_401_with_an_openai_error() {
    let mut w = world().await;
    let (id, token) = w.admin.key(Plane::Data, &["demo/chat"]).await;

    let (status, headers, body) = w.chat(w.envoy.public_url(CHAT), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_eq!(headers["content-type"], "application/json");
    assert_openai_error(&body, "missing_api_key");

    let wrong_secret = keyward::token::generate(keyward::model::Plane::Data, &id).token;
    let junk = "ik_live_definitely-not-a-token";
    for bad in [
        wrong_secret.as_str(),
        junk,
        "sk-proj-1234",
        &token[..token.len() - 1],
    ] {
        let (status, headers, body) = w.chat(w.envoy.public_url(CHAT), Some(bad)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(headers.contains_key("www-authenticate"));
        assert_openai_error(&body, "invalid_api_key");
    }

    // Expired. An update cannot set an expiry in the past (issue 16, finding 2): the key is
    // created to expire in two seconds, and used before and after.
    let at = keyward::clock::now_unix() + 2;
    let (_, expiring) = w
        .admin
        .key_expiring(Plane::Data, &["demo/chat"], Some(at))
        .await;
    assert_eq!(w.status(Some(&expiring)).await, StatusCode::OK);
    support::eventually("the key to expire", Duration::from_secs(5), || async {
        (keyward::clock::now_unix() >= at).then_some(())
    })
    .await;
    let (status, _, body) = w.chat(w.envoy.public_url(CHAT), Some(&expiring)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_openai_error(&body, "invalid_api_key");

    // Revoked: the very next request is denied, on both endpoints.
    assert_eq!(w.status(Some(&token)).await, StatusCode::OK);
    w.admin.revoke(&id).await;
    let (status, _, body) = w.chat(w.envoy.public_url(CHAT), Some(&token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_openai_error(&body, "invalid_api_key");
    let (status, _, _) = w.chat(w.envoy.private_url(CHAT), Some(&token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planes_and_scopes_are_enforced_with_403() {
    let mut w = world().await;
    let (data_id, data) = w.admin.key(Plane::Data, &["demo/chat", "demo/embed"]).await;
    let (_, control) = w.admin.key(Plane::Control, &["demo"]).await;
    let (_, embed_only) = w.admin.key(Plane::Data, &["demo/embed"]).await;

    // A data key on a control route, a control key on a data route.
    let response = w
        .http
        .get(w.envoy.public_url("/api/projects/demo/workloads"))
        .bearer_auth(&data)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_openai_error(&response.json().await.unwrap(), "wrong_plane");
    let (status, _, body) = w.chat(w.envoy.public_url(CHAT), Some(&control)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_openai_error(&body, "wrong_plane");

    // The control key works on its project's control routes.
    for (method, path) in [
        (reqwest::Method::GET, "/api/projects/demo/workloads"),
        (reqwest::Method::POST, "/api/projects/demo/workloads"),
        (reqwest::Method::PATCH, "/api/workloads/w-1"),
        (reqwest::Method::DELETE, "/api/workloads/w-1"),
    ] {
        let response = w
            .http
            .request(method.clone(), w.envoy.public_url(path))
            .bearer_auth(&control)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{method} {path}");
    }

    // A key not attached to the deployment.
    let (status, _, body) = w.chat(w.envoy.public_url(CHAT), Some(&embed_only)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_openai_error(&body, "key_not_in_scope");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("demo/chat")
    );

    // Detaching takes effect on the very next request.
    assert_eq!(w.status(Some(&data)).await, StatusCode::OK);
    w.admin
        .update(pb::UpdateKeyRequest {
            id: data_id.clone(),
            detach: vec!["demo/chat".into()],
            ..Default::default()
        })
        .await;
    assert_eq!(w.status(Some(&data)).await, StatusCode::FORBIDDEN);
    w.admin
        .update(pb::UpdateKeyRequest {
            id: data_id,
            attach: vec!["demo/*".into()],
            ..Default::default()
        })
        .await;
    assert_eq!(w.status(Some(&data)).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_toggles_and_fail_closed_outage() {
    let mut w = world().await;

    // Envoy's static toggle: keyward is not even asked.
    let response = w
        .http
        .get(w.envoy.public_url("/demo/chat/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // keyward's run-time flag: public off, private still on.
    assert_eq!(w.status(None).await, StatusCode::UNAUTHORIZED);
    w.admin.set_auth("demo/chat", Some(false), None).await;
    let (status, _, body) = w.chat(w.envoy.public_url(CHAT), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["keyward_headers"]["x-keyward-principal"], "anonymous");
    assert!(body["keyward_headers"].get("x-keyward-key-id").is_none());
    let (status, _, _) = w.chat(w.envoy.private_url(CHAT), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    w.admin.set_auth("demo/chat", Some(true), None).await;
    assert_eq!(w.status(None).await, StatusCode::UNAUTHORIZED);

    // keyward stopped: Envoy fails closed with 503, never lets a request through.
    let (_, token) = w.admin.key(Plane::Data, &["demo/chat"]).await;
    assert_eq!(w.status(Some(&token)).await, StatusCode::OK);
    w.keyward.stop().await;
    assert_eq!(
        w.status(Some(&token)).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(w.status(None).await, StatusCode::SERVICE_UNAVAILABLE);
    let response = w
        .http
        .get(w.envoy.public_url("/demo/chat/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the disabled route does not need keyward"
    );
}

/// Sends `n` concurrent chat requests with `token` from `client`; returns the statuses.
async fn burst(client: &reqwest::Client, url: String, token: &str, n: usize) -> Vec<StatusCode> {
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..n {
        let request = client
            .post(url.clone())
            .bearer_auth(token)
            .json(&chat_body());
        requests.spawn(async move { request.send().await.unwrap().status() });
    }
    requests.join_all().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_client_rate_limit_answers_429_before_keyward_and_is_off_by_default() {
    // Off by default: a burst from one client all goes through to keyward.
    let mut w = world().await;
    let (_, token) = w.admin.key(Plane::Data, &["demo/chat"]).await;
    let statuses = burst(&w.http, w.envoy.public_url(CHAT), &token, 40).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(
        w.envoy
            .counter("per_client.http_local_rate_limit.rate_limited")
            .await,
        0
    );
    drop(w);

    // 1 request per second per client address, bucket of 1: 40 concurrent requests from one
    // address cannot all fit (they would have to be spread over 40 seconds).
    let mut w = World::start_with(&[("RATE_LIMIT_PER_CLIENT_RPS", "1")]).await;
    w.admin.project("demo").await;
    w.admin.deployment("demo/chat").await;
    let (_, token) = w.admin.key(Plane::Data, &["demo/chat"]).await;
    let checks = "cluster.keyward_ext_authz.upstream_rq_total";
    let checks_before = w.envoy.counter(checks).await;
    let statuses = burst(&w.http, w.envoy.public_url(CHAT), &token, 40).await;
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count() as u64;
    let allowed = statuses.iter().filter(|s| **s == StatusCode::OK).count() as u64;
    assert_eq!(limited + allowed, 40, "{statuses:?}");
    assert!(limited > 0 && allowed > 0, "{statuses:?}");
    // Every 429 was answered by Envoy's bucket, and only the allowed requests became Checks.
    assert_eq!(
        w.envoy
            .counter("per_client.http_local_rate_limit.rate_limited")
            .await,
        limited
    );
    assert_eq!(w.envoy.counter(checks).await - checks_before, allowed);

    // The bucket is per client address: another source address still gets through.
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let response = other
        .post(w.envoy.public_url(CHAT))
        .bearer_auth(&token)
        .json(&chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// `envoy/render.sh` with `CERT_DIR` and `extra`; returns (success, stdout, stderr).
fn render(extra: &[(&str, &str)]) -> (bool, String, String) {
    let out = std::process::Command::new("sh")
        .arg(support::repo().join("envoy/render.sh"))
        .env("CERT_DIR", "/nonexistent-certs")
        .env_remove("RATE_LIMIT_PER_CLIENT_RPS")
        .env_remove("RATE_LIMIT_PER_CLIENT_BURST")
        .env_remove("ENCODE_RAW_HEADERS")
        .envs(extra.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn the_rate_limit_is_rendered_only_when_asked_for_and_only_with_a_number() {
    for off in [
        &[][..],
        &[("RATE_LIMIT_PER_CLIENT_RPS", "")],
        &[("RATE_LIMIT_PER_CLIENT_RPS", "0")],
    ] {
        let (ok, yaml, stderr) = render(off);
        assert!(ok, "{stderr}");
        assert!(!yaml.contains("local_ratelimit"), "{off:?}");
    }
    let (ok, yaml, stderr) = render(&[("RATE_LIMIT_PER_CLIENT_RPS", "25")]);
    assert!(ok, "{stderr}");
    assert!(yaml.contains("envoy.filters.http.local_ratelimit"));
    assert!(yaml.contains("max_tokens: 25") && yaml.contains("tokens_per_fill: 25"));
    // The filter sits before ext_authz, so a limited request never becomes a Check.
    assert!(
        yaml.find("- name: envoy.filters.http.local_ratelimit")
            .unwrap()
            < yaml.find("- name: envoy.filters.http.ext_authz").unwrap()
    );
    let (ok, yaml, stderr) = render(&[
        ("RATE_LIMIT_PER_CLIENT_RPS", "25"),
        ("RATE_LIMIT_PER_CLIENT_BURST", "100"),
    ]);
    assert!(ok, "{stderr}");
    assert!(yaml.contains("max_tokens: 100") && yaml.contains("tokens_per_fill: 25"));

    for bad in ["ten", "5a", "-1", "1.5"] {
        let (ok, _, stderr) = render(&[("RATE_LIMIT_PER_CLIENT_RPS", bad)]);
        assert!(!ok, "{bad} was accepted");
        assert!(stderr.contains("RATE_LIMIT_PER_CLIENT_RPS"), "{stderr}");
    }
    let (ok, _, stderr) = render(&[
        ("RATE_LIMIT_PER_CLIENT_RPS", "25"),
        ("RATE_LIMIT_PER_CLIENT_BURST", "0"),
    ]);
    assert!(!ok);
    assert!(stderr.contains("RATE_LIMIT_PER_CLIENT_BURST"), "{stderr}");
}

#[test]
fn raw_header_encoding_is_rendered_only_as_true_or_false() {
    let (ok, yaml, stderr) = render(&[]);
    assert!(ok, "{stderr}");
    assert!(yaml.contains("encode_raw_headers: false"));
    let (ok, yaml, stderr) = render(&[("ENCODE_RAW_HEADERS", "true")]);
    assert!(ok, "{stderr}");
    assert!(yaml.contains("encode_raw_headers: true"));
    let (ok, _, stderr) = render(&[("ENCODE_RAW_HEADERS", "yes")]);
    assert!(!ok);
    assert!(stderr.contains("ENCODE_RAW_HEADERS"), "{stderr}");
}

#[test]
fn the_ext_authz_timeout_defaults_to_half_a_second_and_takes_only_durations() {
    let (ok, yaml, stderr) = render(&[]);
    assert!(ok, "{stderr}");
    assert!(yaml.contains("timeout: 0.5s"), "{yaml}");
    let (ok, yaml, stderr) = render(&[("EXT_AUTHZ_TIMEOUT", "250ms")]);
    assert!(ok, "{stderr}");
    assert!(yaml.contains("timeout: 250ms"));
    for bad in ["5", "1.2.3s", "5mss", "-1s", "1s; rm"] {
        let (ok, _, stderr) = render(&[("EXT_AUTHZ_TIMEOUT", bad)]);
        assert!(!ok, "{bad} was accepted");
        assert!(stderr.contains("EXT_AUTHZ_TIMEOUT"), "{stderr}");
    }
}

/// With `encode_raw_headers: true` Envoy sends the headers as raw bytes in `header_map` and
/// leaves the `headers` map empty: keyward decides from them just the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_encoded_headers_decide_as_the_map_does() {
    let mut w = World::start_with(&[("ENCODE_RAW_HEADERS", "true")]).await;
    w.admin.project("demo").await;
    w.admin.deployment("demo/chat").await;
    let (id, token) = w.admin.key(Plane::Data, &["demo/chat"]).await;

    let (status, _, body) = w.chat(w.envoy.public_url(CHAT), Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["keyward_headers"]["x-keyward-key-id"], id.as_str());
    assert_eq!(
        body["credential_headers_seen"],
        serde_json::json!([]),
        "{body}"
    );
    let response = w
        .http
        .get(w.envoy.public_url("/demo/chat/v1/models"))
        .header("x-api-key", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let (status, headers, body) = w.chat(w.envoy.public_url(CHAT), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.contains_key("www-authenticate"));
    assert_openai_error(&body, "missing_api_key");

    // The same key twice: one header line each in the raw form, and malformed.
    let response = w
        .http
        .get(w.envoy.public_url("/demo/chat/v1/models"))
        .header("x-api-key", &token)
        .header("x-api-key", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_openai_error(&body, "invalid_api_key");
}

/// A refused request's access log line says why (`ext_authz.denial_code`) and for which key id
/// (when a token was presented), next to the request id the client got back in `x-request-id`;
/// an allowed one carries its key id from the identity headers. No token ever reaches the log,
/// and no identity header a client sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_reach_the_access_log_with_code_key_id_and_request_id() {
    let mut w = world().await;
    let (id, token) = w.admin.key(Plane::Data, &["demo/chat"]).await;
    let (embed_id, embed_token) = w.admin.key(Plane::Data, &["demo/embed"]).await;
    let wrong_secret = keyward::token::generate(keyward::model::Plane::Data, &id).token;

    let cases = [
        (None, 401, Some("missing_api_key"), None),
        (
            Some(wrong_secret.as_str()),
            401,
            Some("invalid_api_key"),
            Some(&id),
        ),
        (Some("sk-proj-1234"), 401, Some("invalid_api_key"), None),
        (
            Some(embed_token.as_str()),
            403,
            Some("key_not_in_scope"),
            Some(&embed_id),
        ),
        (Some(token.as_str()), 200, None, Some(&id)),
    ];
    for (presented, status, denial_code, key_id) in cases {
        let mut request = w
            .http
            .post(w.envoy.public_url(CHAT))
            .json(&chat_body())
            .header("x-keyward-key-id", "spoofed");
        if let Some(token) = presented {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let (got, headers) = (response.status(), response.headers().clone());
        let body = response.text().await.unwrap();
        assert_eq!(got.as_u16(), status, "{body}");
        let request_id = headers["x-request-id"].to_str().unwrap().to_owned();
        let line: Value = support::eventually(
            "the access log line",
            std::time::Duration::from_secs(10),
            || async {
                w.envoy.log().lines().find_map(|line| {
                    let entry: Value = serde_json::from_str(line).ok()?;
                    (entry["request_id"] == request_id.as_str()).then_some(entry)
                })
            },
        )
        .await;
        assert_eq!(line["response_code"], status, "{line}");
        let decided = &line["ext_authz"];
        match denial_code {
            Some(code) => assert_eq!(decided["denial_code"], code, "{line}"),
            None => assert!(decided.get("denial_code").is_none(), "{line}"),
        }
        // A refusal names the key in keyward's metadata; an allow in the identity headers
        // keyward set (and only keyward: the template drops any a client sends).
        match (key_id, status) {
            (Some(key_id), 200) => {
                assert_eq!(line["key_id"], key_id.as_str(), "{line}");
                assert_eq!(line["deployment"], "demo/chat", "{line}");
            }
            (Some(key_id), _) => assert_eq!(decided["key_id"], key_id.as_str(), "{line}"),
            (None, _) => assert!(decided.get("key_id").is_none(), "{line}"),
        }
        assert!(!line.to_string().contains("spoofed"), "{line}");
    }
    let log = w.envoy.log();
    for secret in [&token, &embed_token, &wrong_secret] {
        assert!(!log.contains(secret.as_str()), "a token in the access log");
    }
}

/// The template's generic `/v1/` route sends no context extensions: keyward's route table
/// decides, so one Envoy route fronts any deployment a route entry names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generic_route_is_decided_by_the_route_table() {
    let mut w = world().await;
    let (_, chat_key) = w.admin.key(Plane::Data, &["demo/chat"]).await;
    let (_, embed_key) = w.admin.key(Plane::Data, &["demo/embed"]).await;
    let url = w.envoy.public_url("/v1/chat/completions");

    let (status, _, body) = w.chat(url.clone(), Some(&chat_key)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no entry yet: {body}");
    assert_eq!(body["error"]["code"], "route_not_configured", "{body}");

    w.admin.route("*", "/v1", "public", Some("demo/chat")).await;
    let (status, _, body) = w.chat(url.clone(), Some(&chat_key)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "chat.completion", "{body}");
    assert_eq!(
        w.chat(url.clone(), Some(&embed_key)).await.0,
        StatusCode::FORBIDDEN,
        "a key for another deployment is out of scope"
    );
    assert_eq!(w.chat(url.clone(), None).await.0, StatusCode::UNAUTHORIZED);

    w.admin.remove_route("*", "/v1").await;
    assert_eq!(
        w.chat(url, Some(&chat_key)).await.0,
        StatusCode::FORBIDDEN,
        "removed: not routed on the next request"
    );
}
