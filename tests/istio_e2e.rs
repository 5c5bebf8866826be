//! End to end the way Istio calls keyward: a real Envoy 1.40 rendered from
//! `tests/envoy/istio.yaml.tmpl` (the ext_authz filter Istio builds for an `envoyExtAuthzGrpc`
//! CUSTOM provider: no context extensions, every header sent, peer certificate included, one
//! generic catch-all route) in front of keyward, which decides through its route table only,
//! managed through the admin API.

mod support;

use keyward::pb::Plane;
use reqwest::StatusCode;
use serde_json::Value;
use support::{Admin, Backend, Envoy, Keyward};

struct Mesh {
    keyward: Keyward,
    _backend: Backend,
    envoy: Envoy,
    http: reqwest::Client,
    admin: Admin,
}

const PRIVATE_HOST: &str = "private.keyward.internal";

async fn mesh() -> Mesh {
    let keyward = Keyward::start().await;
    let backend = Backend::start().await;
    let template = support::repo().join("tests/envoy/istio.yaml.tmpl");
    let envoy = Envoy::start_with(
        &[keyward.check],
        backend.addr,
        &[("ENVOY_TEMPLATE", template.to_str().unwrap())],
    )
    .await;
    let mut admin = keyward.admin().await;
    admin.project("acme").await;
    admin.deployment("acme/chat").await;
    admin.deployment("acme/other").await;
    admin
        .route("*", "/acme/chat", "public", Some("acme/chat"))
        .await;
    admin
        .route("*", "/acme/other", "public", Some("acme/other"))
        .await;
    // Istio's private gateway is another host: that is what makes an entry private.
    admin
        .route(PRIVATE_HOST, "/acme/chat", "private", Some("acme/chat"))
        .await;
    admin.route("*", "/api", "public", None).await;
    Mesh {
        http: envoy.client(),
        keyward,
        _backend: backend,
        envoy,
        admin,
    }
}

impl Mesh {
    async fn chat(&self, url: String, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = self
            .http
            .post(url)
            .header("x-keyward-principal", "spoofed-admin")
            .header("x-keyward-deployment", "acme/spoofed")
            .header("x-forwarded-client-cert", "By=spiffe://spoofed")
            .json(&serde_json::json!({
                "model": "standin-model",
                "messages": [{"role": "user", "content": "hi"}]
            }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

const CHAT: &str = "/acme/chat/v1/chat/completions";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_table_decides_istio_shaped_requests() {
    let mut m = mesh().await;
    let (id, token) = m.admin.key(Plane::Data, &["acme/chat"]).await;

    // Allowed: identity from keyward, the client's x-keyward-* copies overwritten.
    let (status, body) = m.chat(m.envoy.public_url(CHAT), Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "chat.completion", "{body}");
    let seen = &body["keyward_headers"];
    assert_eq!(seen["x-keyward-key-id"], id.as_str(), "{body}");
    assert_eq!(seen["x-keyward-deployment"], "acme/chat", "{body}");
    assert_eq!(seen["x-keyward-project"], "acme", "{body}");
    assert_ne!(seen["x-keyward-principal"], "spoofed-admin", "{body}");
    assert!(
        body["credential_headers_seen"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "{body}"
    );

    // Bad key: 401.
    let forged = format!("{}x", &token[..token.len() - 1]);
    let (status, body) = m.chat(m.envoy.public_url(CHAT), Some(&forged)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // Out of scope: the key is for acme/chat, the route names acme/other.
    let (status, body) = m
        .chat(
            m.envoy.public_url("/acme/other/v1/chat/completions"),
            Some(&token),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "key_not_in_scope", "{body}");

    // Wrong plane: a control token on a data route.
    let owner = m.keyward.owner_token.clone();
    let (status, body) = m.chat(m.envoy.public_url(CHAT), Some(&owner)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "wrong_plane", "{body}");

    // No entry: segment-aware (/acme/chatty is not /acme/chat) and unknown paths.
    for path in ["/acme/chatty/v1/chat/completions", "/nowhere/v1/models"] {
        let (status, body) = m.chat(m.envoy.public_url(path), Some(&token)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(body["error"]["code"], "route_not_configured", "{body}");
    }

    // Public and private are told apart by host: with private auth off, the private host
    // lets an anonymous call through while the public one still wants a key.
    m.admin.set_auth("acme/chat", None, Some(false)).await;
    let (status, body) = m.chat(m.envoy.private_url(CHAT), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["keyward_headers"]["x-keyward-principal"], "anonymous");
    assert!(body["keyward_headers"].get("x-keyward-key-id").is_none());
    let (status, body) = m.chat(m.envoy.public_url(CHAT), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // Control plane, project read from the path: the owner passes keyward (the stand-in has
    // no such endpoint and answers 404), a data key is on the wrong plane, and the client's
    // x-keyward-deployment never reaches the backend.
    let control = m.envoy.public_url("/api/projects/acme/workloads");
    let response = m
        .http
        .get(&control)
        .bearer_auth(&owner)
        .header("x-keyward-deployment", "acme/spoofed")
        .send()
        .await
        .unwrap();
    assert!(
        !matches!(response.status().as_u16(), 401 | 403 | 503),
        "{}",
        response.text().await.unwrap()
    );
    let response = m
        .http
        .get(&control)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "wrong_plane", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_change_holds_on_the_next_request() {
    let mut m = mesh().await;
    let (_, token) = m.admin.key(Plane::Data, &["acme/chat"]).await;
    let path = "/chat-v2/v1/chat/completions";
    let (status, body) = m.chat(m.envoy.public_url(path), Some(&token)).await;
    assert_eq!(body["error"]["code"], "route_not_configured", "{body}");
    assert_eq!(status, StatusCode::FORBIDDEN);
    m.admin
        .route("127.0.0.1", "/chat-v2", "public", Some("acme/chat"))
        .await;
    let (status, body) = m.chat(m.envoy.public_url(path), Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    m.admin.remove_route("127.0.0.1", "/chat-v2").await;
    let (status, body) = m.chat(m.envoy.public_url(path), Some(&token)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}
