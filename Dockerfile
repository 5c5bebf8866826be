# keyward: ext_authz server + CLI, and the stand-in OpenAI-compatible backend (demo only).
#
#   docker build -t keyward .
#
# protoc is vendored by the protoc-bin-vendored build dependency: no apt protoc needed.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins

FROM debian:bookworm-slim
# openssl: envoy/gen-certs.sh (demo certificates); curl: container health checks.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates openssl curl \
 && rm -rf /var/lib/apt/lists/*
# Non-root user. /data (SQLite) and /certs (demo certificates) are created here, owned by it,
# so that named volumes mounted there start out writable.
RUN groupadd --system --gid 10001 keyward \
 && useradd --system --uid 10001 --gid keyward --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin keyward \
 && mkdir -p /data /certs \
 && chown keyward:keyward /data /certs
COPY --from=builder /src/target/release/keyward /src/target/release/keyward-standin-backend /usr/local/bin/
COPY envoy/ /opt/keyward/envoy/
RUN chmod 0755 /opt/keyward/envoy/render.sh /opt/keyward/envoy/gen-certs.sh
USER keyward:keyward
WORKDIR /data
# 9191 ext_authz gRPC (Envoy), 9192 admin gRPC (CLI), 9193 health (/healthz, /readyz)
EXPOSE 9191 9192 9193
CMD ["keyward", "serve"]
