//! `keyward-standin-backend` — a **STAND-IN** OpenAI-compatible backend for demos and tests.
//!
//! This is NOT an inference server. It answers the few OpenAI routes a demo needs with canned,
//! echoing responses so that the keyward + Envoy path can be exercised without a GPU:
//!
//! - `POST /v1/chat/completions` — `chat.completion` echoing the last user message;
//! - `POST /v1/completions` — `text_completion` echoing the prompt;
//! - `GET /v1/models` — one model, `standin-model`;
//! - any other method or path — `200` with `{"backend", "method", "path"}`.
//!
//! Every JSON response carries `"backend": "keyward-standin"`, the `x-keyward-*` request headers
//! Envoy forwarded (`keyward_headers`) and the *names* — never the values — of any credential
//! headers that reached it (`credential_headers_seen`), so tests can check that keyward injected
//! identity headers and stripped credentials.

#![forbid(unsafe_code)]

use std::{
    io::Write as _,
    net::SocketAddr,
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use axum::{
    Json, Router,
    body::Bytes,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use clap::Parser;
use serde_json::{Map, Value, json};

/// Marker present in every response body.
const BACKEND: &str = "keyward-standin";
/// The only model this stand-in advertises.
const MODEL: &str = "standin-model";
/// Prefix of the identity headers keyward injects.
const KEYWARD_HEADER_PREFIX: &str = "x-keyward-";
/// Credential headers that keyward is expected to strip before the request gets here.
const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "x-api-key", "x-auth-token"];

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "keyward-standin-backend",
    version,
    about = "STAND-IN OpenAI-compatible backend for keyward demos and tests (not a real model)"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, env = "STANDIN_LISTEN", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let bound = listener.local_addr().context("reading bound address")?;

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {bound}").context("writing to stdout")?;
    stdout.flush().context("flushing stdout")?;
    drop(stdout);

    axum::serve(listener, app())
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving")?;
    Ok(())
}

/// The stand-in's routes.
fn app() -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .method_not_allowed_fallback(fallback)
        .fallback(fallback)
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            eprintln!("cannot listen for SIGINT: {err}");
            std::future::pending::<()>().await;
        }
    };

    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                eprintln!("cannot listen for SIGTERM: {err}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

async fn chat_completions(headers: HeaderMap, body: Bytes) -> Response {
    let request = match parse_object(&body) {
        Ok(request) => request,
        Err(message) => return invalid_request(&headers, message),
    };
    let Some(messages) = request.get("messages").and_then(Value::as_array) else {
        return invalid_request(
            &headers,
            "'messages' is required and must be an array".into(),
        );
    };

    let echoed = messages
        .iter()
        .rev()
        .find(|message| message.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|message| message.get("content"))
        .map(content_text)
        .unwrap_or_default();
    let prompt_tokens: usize = messages
        .iter()
        .filter_map(|message| message.get("content"))
        .map(|content| count_tokens(&content_text(content)))
        .sum();
    let completion_tokens = count_tokens(&echoed);

    let body = json!({
        "id": next_id("chatcmpl-standin"),
        "object": "chat.completion",
        "created": unix_now(),
        "model": requested_model(&request),
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": echoed },
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": usage(prompt_tokens, completion_tokens),
    });
    respond(StatusCode::OK, &headers, body)
}

async fn completions(headers: HeaderMap, body: Bytes) -> Response {
    let request = match parse_object(&body) {
        Ok(request) => request,
        Err(message) => return invalid_request(&headers, message),
    };
    let prompt = match request.get("prompt") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(prompt)) => prompt.clone(),
        Some(Value::Array(parts)) if parts.iter().all(Value::is_string) => parts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("\n"),
        Some(_) => {
            return invalid_request(
                &headers,
                "'prompt' must be a string or an array of strings".into(),
            );
        }
    };
    let tokens = count_tokens(&prompt);

    let body = json!({
        "id": next_id("cmpl-standin"),
        "object": "text_completion",
        "created": unix_now(),
        "model": requested_model(&request),
        "choices": [{
            "index": 0,
            "text": prompt,
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": usage(tokens, tokens),
    });
    respond(StatusCode::OK, &headers, body)
}

async fn models(headers: HeaderMap) -> Response {
    let body = json!({
        "object": "list",
        "data": [{
            "id": MODEL,
            "object": "model",
            "created": 0,
            "owned_by": BACKEND,
        }],
    });
    respond(StatusCode::OK, &headers, body)
}

async fn fallback(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let mut body = json!({
        "method": method.as_str(),
        "path": uri.path(),
    });
    if let (Some(query), Value::Object(fields)) = (uri.query(), &mut body) {
        fields.insert("query".into(), Value::String(query.to_owned()));
    }
    respond(StatusCode::OK, &headers, body)
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Serialises `body` (a JSON object) after adding the fields every response carries.
fn respond(status: StatusCode, headers: &HeaderMap, mut body: Value) -> Response {
    if let Value::Object(fields) = &mut body {
        fields.insert("backend".into(), Value::String(BACKEND.into()));
        fields.insert("keyward_headers".into(), keyward_headers(headers));
        fields.insert(
            "credential_headers_seen".into(),
            credential_headers_seen(headers),
        );
    }
    (status, Json(body)).into_response()
}

/// A 400 in OpenAI's error shape.
fn invalid_request(headers: &HeaderMap, message: String) -> Response {
    let body = json!({
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": null,
            "code": null,
        },
    });
    respond(StatusCode::BAD_REQUEST, headers, body)
}

/// Parses a request body that must be a JSON object.
fn parse_object(body: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err("request body must be a JSON object".into()),
        Err(err) => Err(format!("request body is not valid JSON: {err}")),
    }
}

/// All `x-keyward-*` headers, name → value (repeated headers joined with `, `).
fn keyward_headers(headers: &HeaderMap) -> Value {
    let mut found = Map::new();
    for (name, value) in headers {
        if !name.as_str().starts_with(KEYWARD_HEADER_PREFIX) {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match found.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                found.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    Value::Object(found)
}

/// Names (never values) of the credential headers present in the request.
fn credential_headers_seen(headers: &HeaderMap) -> Value {
    CREDENTIAL_HEADERS
        .iter()
        .filter(|name| headers.contains_key(**name))
        .map(|name| Value::String((*name).to_owned()))
        .collect()
}

/// The `model` the client asked for, or the stand-in's own model name.
fn requested_model(request: &Map<String, Value>) -> String {
    request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(MODEL)
        .to_owned()
}

/// Text of a chat message `content`: a string, or the `text` parts of a content-part array.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// A crude token count (whitespace-separated words): good enough for a stand-in.
fn count_tokens(text: &str) -> usize {
    text.split_whitespace().count()
}

fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    })
}

fn next_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    format!("{prefix}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn reports_keyward_headers_and_credential_names_only() {
        let mut headers = HeaderMap::new();
        headers.insert("x-keyward-key-id", HeaderValue::from_static("k1"));
        headers.insert("x-api-key", HeaderValue::from_static("secret"));
        headers.insert("user-agent", HeaderValue::from_static("test"));

        assert_eq!(
            keyward_headers(&headers),
            json!({ "x-keyward-key-id": "k1" })
        );
        assert_eq!(credential_headers_seen(&headers), json!(["x-api-key"]));
    }

    #[test]
    fn malformed_json_is_rejected() {
        assert!(parse_object(b"{not json").is_err());
        assert!(parse_object(b"[1, 2]").is_err());
        assert!(parse_object(br#"{"model": "m"}"#).is_ok());
    }

    #[test]
    fn content_parts_are_concatenated() {
        let content =
            json!([{ "type": "text", "text": "hello " }, { "type": "text", "text": "world" }]);
        assert_eq!(content_text(&content), "hello world");
    }
}
