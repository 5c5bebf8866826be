//! Envoy's own answers (its per-client 429, its 503 when keyward cannot decide) are
//! OpenAI-shaped JSON with a `retry-after`, as keyward's 401/403 are, and the official OpenAI
//! Python client reads every one of them as the error class an inference client expects.

mod support;

use keyward::pb::Plane;
use reqwest::StatusCode;
use serde_json::Value;

const CHAT: &str = "/demo/chat/v1/chat/completions";

async fn world(render_env: &[(&str, &str)]) -> support::Gateway {
    let mut w = support::Gateway::start_with(render_env).await;
    w.admin.project("demo").await;
    w.admin.deployment("demo/chat").await;
    w
}

/// One chat request; returns the status, the `retry-after` and `content-type` headers, the body.
async fn chat(
    w: &support::Gateway,
    token: &str,
) -> (StatusCode, Option<String>, Option<String>, Value) {
    let response = w
        .http
        .post(w.envoy.public_url(CHAT))
        .bearer_auth(token)
        .json(&serde_json::json!({"model": "standin-model", "messages": []}))
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (retry_after, content_type) = (header("retry-after"), header("content-type"));
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, retry_after, content_type, body)
}

fn assert_openai_error(body: &Value, code: &str, kind: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert!(body["error"]["param"].is_null(), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// What the official OpenAI Python client raises when it sends `attempts` chat completions in a
/// row to `base_url` with `token` from the local address `source`: `ok` when all succeed, else
/// the first exception's class, status code and error `code`, on one line.
fn openai_client_says(base_url: &str, token: &str, source: &str, attempts: u32) -> String {
    let python = support::repo().join(".tools/venv/bin/python");
    let script = r#"
import os, openai
import httpx2 as httpx  # the HTTP library openai 3.x is built on
transport = httpx.HTTPTransport(local_address=os.environ["SOURCE"])
client = openai.OpenAI(base_url=os.environ["BASE_URL"], api_key=os.environ["KEY"],
                       max_retries=0, http_client=httpx.Client(transport=transport))
try:
    for _ in range(int(os.environ["ATTEMPTS"])):
        client.chat.completions.create(model="standin-model", messages=[{"role": "user", "content": "hi"}])
    print("ok")
except openai.APIStatusError as error:
    print(type(error).__name__, error.status_code, (error.body or {}).get("code"))
"#;
    let output = std::process::Command::new(&python)
        .args(["-c", script])
        .env("BASE_URL", base_url)
        .env("KEY", token)
        .env("SOURCE", source)
        .env("ATTEMPTS", attempts.to_string())
        .output()
        .unwrap_or_else(|e| panic!("{} ({e}): run scripts/test", python.display()));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoys_429_is_an_openai_rate_limit_error_with_retry_after() {
    let mut w = world(&[("RATE_LIMIT_PER_CLIENT_RPS", "1")]).await;
    let (_, token) = w.admin.key(Plane::Data, &["demo/chat"]).await;
    let base_url = w.envoy.public_url("/demo/chat/v1");

    // The bucket holds one request a second: the second request in a row is limited.
    let (first, ..) = chat(&w, &token).await;
    assert_eq!(first, StatusCode::OK);
    let (status, retry_after, content_type, body) = chat(&w, &token).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_openai_error(&body, "rate_limited", "rate_limit_error");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(content_type.as_deref(), Some("application/json"));
    // Five requests in a row from one address cannot fit a bucket of one a second.
    assert_eq!(
        openai_client_says(&base_url, &token, "127.0.0.1", 5),
        "RateLimitError 429 rate_limited"
    );

    // keyward's own denials are left as keyward wrote them (a fresh bucket: another address).
    assert_eq!(
        openai_client_says(&base_url, "ik_live_not_a_key", "127.0.0.2", 1),
        "AuthenticationError 401 invalid_api_key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoys_503_when_keyward_cannot_decide_is_an_openai_server_error_with_retry_after() {
    let mut w = world(&[]).await;
    let (_, token) = w.admin.key(Plane::Data, &["demo/chat"]).await;
    let base_url = w.envoy.public_url("/demo/chat/v1");
    assert_eq!(openai_client_says(&base_url, &token, "127.0.0.1", 3), "ok");
    assert_eq!(
        openai_client_says(&base_url, "ik_live_not_a_key", "127.0.0.1", 1),
        "AuthenticationError 401 invalid_api_key"
    );

    w.keyward.stop().await;
    let (status, retry_after, content_type, body) = chat(&w, &token).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_openai_error(&body, "service_unavailable", "server_error");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(content_type.as_deref(), Some("application/json"));
    assert_eq!(
        openai_client_says(&base_url, &token, "127.0.0.1", 1),
        "InternalServerError 503 service_unavailable"
    );
}
