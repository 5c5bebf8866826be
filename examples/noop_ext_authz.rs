//! The floor any ext_authz server pays: an `envoy.service.auth.v3.Authorization/Check` server
//! that allows everything without looking at the request, built only to compare keyward with.
//! Same tonic version and server settings as keyward's Check listener (HTTP/2 keepalive 30 s,
//! TCP_NODELAY on accepted connections), same tokio runtime defaults.
//!
//! With `--identity-answer` it answers what keyward answers a data key's allowed request: the
//! four `x-keyward-*` identity headers, the three credential headers to remove and the dynamic
//! metadata, with values of the same size, computed once. That is the floor for a server that
//! tells the upstream who called, and separates what such an answer costs its receiver from
//! what keyward's own decision costs.
//!
//!   cargo run --release --example noop_ext_authz -- --listen 127.0.0.1:19291 \
//!       [--identity-answer | --answer PART,...] [h2 options]

use std::time::Duration;

use anyhow::Context;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse, OkHttpResponse};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use envoy_types::pb::google::rpc;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

struct AllowAll {
    answer: CheckResponse,
}

#[tonic::async_trait]
impl Authorization for AllowAll {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(self.answer.clone()))
    }
}

fn bare_answer() -> CheckResponse {
    CheckResponse {
        status: Some(rpc::Status::default()),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
        dynamic_metadata: None,
    }
}

/// keyward's answer to an allowed data-plane request, with values of the usual sizes.
fn identity_answer() -> CheckResponse {
    answer_of(&["headers", "remove", "metadata"])
}

/// Parts of keyward's answer: `headers` (the four identity headers, overwritten), `remove` (the
/// three credential headers removed), `metadata` (the dynamic metadata), to measure what each
/// costs Envoy (bench/answer.sh); and two ways to carry what keyward's Envoy module learns
/// from (one string of the usual size): `module_metadata` (a dynamic metadata field) and
/// `module_header` (a response header, which the module removes).
fn answer_of(parts: &[&str]) -> CheckResponse {
    let identity = [
        ("x-keyward-key-id", "key_id", "r00000000000"),
        ("x-keyward-principal", "principal", "owner"),
        ("x-keyward-project", "project", "demo"),
        ("x-keyward-deployment", "deployment", "demo/chat"),
    ];
    #[allow(deprecated)]
    let headers = identity
        .iter()
        .map(|(header, _, value)| HeaderValueOption {
            header: Some(HeaderValue {
                key: header.to_string(),
                value: value.to_string(),
                raw_value: Vec::new(),
            }),
            append: None,
            append_action: HeaderAppendAction::OverwriteIfExistsOrAdd.into(),
            keep_empty_value: false,
        })
        .collect();
    let string = |s: &str| Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    };
    let mut fields: std::collections::HashMap<String, Value> = identity
        .iter()
        .map(|(_, field, value)| (field.to_string(), string(value)))
        .collect();
    fields.insert("plane".into(), string("data"));
    let has = |part: &str| parts.contains(&part);
    let learnable =
        "v1 0123456789abcdef 42 60000 - data|public|demo/chat r00000000000 owner demo demo/chat";
    let mut fields = match has("metadata") {
        true => fields,
        false => Default::default(),
    };
    if has("module_metadata") {
        fields.insert("module".into(), string(learnable));
    }
    #[allow(deprecated)]
    let response_headers_to_add = match has("module_header") {
        true => vec![HeaderValueOption {
            header: Some(HeaderValue {
                key: "x-keyward-module".into(),
                value: learnable.into(),
                raw_value: Vec::new(),
            }),
            append: None,
            append_action: HeaderAppendAction::OverwriteIfExistsOrAdd.into(),
            keep_empty_value: false,
        }],
        false => Vec::new(),
    };
    CheckResponse {
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: if has("headers") { headers } else { Vec::new() },
            headers_to_remove: if has("remove") {
                ["authorization", "x-api-key", "x-auth-token"]
                    .map(String::from)
                    .to_vec()
            } else {
                Vec::new()
            },
            response_headers_to_add,
            ..Default::default()
        })),
        dynamic_metadata: (!fields.is_empty()).then_some(Struct { fields }),
        ..bare_answer()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut listen = None;
    let mut answer = bare_answer();
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .tcp_nodelay(true);
    // HTTP/2 server options to A/B against the defaults above (bench/h2.sh): the same tonic
    // builder calls keyward's Check listener would make.
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        builder = match arg.as_str() {
            "--listen" => {
                listen = Some(value()?);
                builder
            }
            "--identity-answer" => {
                answer = identity_answer();
                builder
            }
            "--answer" => {
                let parts = value()?;
                let parts: Vec<&str> = parts.split(',').filter(|p| !p.is_empty()).collect();
                if let Some(bad) = parts.iter().find(|p| {
                    ![
                        "headers",
                        "remove",
                        "metadata",
                        "module_metadata",
                        "module_header",
                    ]
                    .contains(p)
                }) {
                    anyhow::bail!(
                        "--answer: unknown part {bad:?} (headers, remove, metadata, module_metadata, module_header)"
                    );
                }
                answer = answer_of(&parts);
                builder
            }
            "--adaptive-window" => builder.http2_adaptive_window(Some(true)),
            "--stream-window" => builder.initial_stream_window_size(Some(value()?.parse()?)),
            "--connection-window" => {
                builder.initial_connection_window_size(Some(value()?.parse()?))
            }
            "--max-concurrent-streams" => builder.max_concurrent_streams(Some(value()?.parse()?)),
            "--max-frame-size" => builder.max_frame_size(Some(value()?.parse()?)),
            "--no-keepalive" => builder.http2_keepalive_interval(None),
            other => anyhow::bail!(
                "unknown argument {other:?}; usage: noop_ext_authz --listen HOST:PORT \
                 [--identity-answer] [--answer headers,remove,metadata] [--adaptive-window] [--stream-window BYTES] [--connection-window BYTES] \
                 [--max-concurrent-streams N] [--max-frame-size BYTES] [--no-keepalive]"
            ),
        };
    }
    let listen = listen.context("usage: noop_ext_authz --listen HOST:PORT [options]")?;
    let listener = TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!("listening on {}", listener.local_addr()?);
    builder
        .add_service(AuthorizationServer::new(AllowAll { answer }))
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await?;
    Ok(())
}
