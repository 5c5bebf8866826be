//! The floor any ext_authz server pays: an `envoy.service.auth.v3.Authorization/Check` server
//! that allows everything without looking at the request, built only to compare keyward with.
//! Same tonic version and server settings as keyward's Check listener (HTTP/2 keepalive 30 s,
//! TCP_NODELAY on accepted connections), same tokio runtime defaults.
//!
//!   cargo run --release --example noop_ext_authz -- --listen 127.0.0.1:19291 [h2 options]

use std::time::Duration;

use anyhow::Context;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse, OkHttpResponse};
use envoy_types::pb::google::rpc;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

struct AllowAll;

#[tonic::async_trait]
impl Authorization for AllowAll {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(CheckResponse {
            status: Some(rpc::Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
            dynamic_metadata: None,
        }))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut listen = None;
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
                 [--adaptive-window] [--stream-window BYTES] [--connection-window BYTES] \
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
        .add_service(AuthorizationServer::new(AllowAll))
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await?;
    Ok(())
}
