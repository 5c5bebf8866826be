//! keyward: an Envoy external-authorization server guarding inference deployments with hashed
//! API keys.
//!
//! - [`token`]: the `ik_live_` / `ik_sdk_` token format: generate, parse, checksum.
//! - [`model`]: domain types (planes, deployments, scopes, principals, keys).
//! - [`iam`]: actions, permission sets, policies, rules, conditions and resolved grants.
//! - [`condition`]: rule conditions (source IP, user agent, time window), one section a kind.
//! - [`policy`]: the pure decision, with no I/O.
//! - [`state`]: the declarative state (everything `apply` manages), its validation and diff.
//! - [`declare`]: the `apply` / `export` TOML file format, parsed into and rendered from a state.
//! - [`routes`]: the route table (host + path prefix → target) for Envoys sending no context
//!   extensions.
//! - [`store`]: persistence (SQLite by default, PostgreSQL), migrations, change events.
//! - [`cache`]: moka caches and their invalidation.
//! - [`propagation`]: following other replicas' changes (PostgreSQL LISTEN, SQLite polling).
//! - [`usage`]: last-use times, batched off the request path.
//! - [`hashing`]: argon2id hashing and verification of secrets, on reused working memory.
//! - [`workers`]: argon2's own threads, below the Check path in CPU priority.
//! - [`authn`]: credential → verified key, with argon2 on a bounded pool of those workers.
//! - [`authz`]: the Envoy edge: `CheckRequest` → decision → `CheckResponse`.
//! - [`admin`]: the admin gRPC API used by the CLI.
//! - [`metrics`]: Prometheus metrics (`/metrics` on the health port), bounded label sets.
//! - [`clock`]: the wall clock in Unix seconds (decisions take `now` as an argument).
//! - [`config`]: TOML file plus `KEYWARD_*` environment overrides.
//! - [`server`]: listeners, serving, health and graceful shutdown.
//! - [`cli`]: the `keyward` command line.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod admin;
pub mod authn;
pub mod authz;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod condition;
pub mod config;
pub mod declare;
pub mod directory;
pub mod errors;
pub mod hashing;
pub mod iam;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod propagation;
pub mod routes;
pub mod server;
pub mod services;
pub mod state;
pub mod store;
pub mod token;
pub mod usage;
pub mod workers;

/// Generated code for the admin API (`proto/keyward/admin/v1/admin.proto`).
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("keyward.admin.v1");
}
