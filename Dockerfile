# keyward: ext_authz server + CLI, and the stand-in OpenAI-compatible backend (demo only).
#
#   docker build -t keyward .
#
# protoc is vendored by the protoc-bin-vendored build dependency: no apt protoc needed.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
# Dependencies first, in a layer of their own: it is rebuilt only when Cargo.toml, Cargo.lock,
# build.rs or the proto change, not on every source edit. The stub sources only let cargo
# resolve the package's targets; every declared target needs its file.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
RUN mkdir -p src/bin benches \
 && echo 'fn main() {}' > src/main.rs \
 && echo 'fn main() {}' > src/bin/standin_backend.rs \
 && touch src/lib.rs \
 && for bench in token decision check cold; do echo 'fn main() {}' > "benches/$bench.rs"; done \
 && cargo build --release --locked --bins \
 && rm -rf src benches
COPY . .
# COPY keeps the context's modification times, which may be older than the stub build: touch
# the crate roots so cargo rebuilds keyward itself from the real sources.
RUN touch src/main.rs src/lib.rs src/bin/standin_backend.rs \
 && cargo build --release --locked --bins

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
# In a container, Envoy reaches Check and probes reach health over the container network; the
# admin API stays on the container's loopback (use `docker compose exec … keyward …`).
ENV KEYWARD_CHECK_ADDR=0.0.0.0:9191 \
    KEYWARD_HEALTH_ADDR=0.0.0.0:9193
HEALTHCHECK --interval=5s --timeout=2s --start-period=5s --retries=12 \
  CMD curl -fsS -o /dev/null http://127.0.0.1:9193/healthz || exit 1
# 9191 ext_authz gRPC (Envoy) and grpc.health.v1, 9193 health (/healthz, /readyz, /storez, /metrics); the admin API (9192) is loopback only
EXPOSE 9191 9193
CMD ["keyward", "serve"]
