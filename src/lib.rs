//! keyward: an Envoy external-authorization server guarding inference deployments with hashed
//! API keys.
//!
//! Domain, pure (no I/O):
//! - [`token`]: the `ik_live_` / `ik_sdk_` token format: generate, parse, checksum.
//! - [`model`]: domain types (planes, deployments, scopes, principals, keys).
//! - [`iam`]: actions, permission sets, policies, rules and resolved grants.
//! - [`condition`]: rule conditions (source IP, user agent, time window, recurring schedule in
//!   a time zone), one section a kind.
//! - [`policy`]: the decisions: [`policy::decide`] for Check, `policy::access` for the admin API.
//! - [`explain`]: the trace a decision reports its steps to (a no-op for Check) and the
//!   recorder `keyward explain` reads them with.
//! - [`state`]: the declarative state (everything `apply` manages), its validation and diff.
//! - [`routes`]: the route table (host + path prefix → target) for Envoys sending no context
//!   extensions.
//! - [`audit`]: audit records of admin calls (who, what, target, when, from where, outcome).
//! - [`clock`]: the wall clock in Unix seconds (decisions take `now` as an argument).
//!
//! Data and the work around it:
//! - [`store`]: persistence (SQLite by default, PostgreSQL), migrations, change events; the one
//!   module that speaks SQL.
//! - [`cache`]: moka caches and their invalidation.
//! - [`directory`]: keys, deployments, grants and workloads served from the caches; the one
//!   place a change invalidates them.
//! - [`propagation`]: following other replicas' changes (PostgreSQL LISTEN, SQLite polling).
//! - [`usage`]: last-use times, batched off the request path.
//! - [`hashing`]: argon2id hashing and verification of secrets, on reused working memory.
//! - [`workers`]: argon2's own threads, below the Check path in CPU priority.
//! - [`authn`]: credential → verified key, with argon2 on a bounded pool of those workers.
//! - [`services`]: what `serve` opens once (store, directory, authenticator, last use).
//!
//! Edges (protobuf, TOML, flags, HTTP stop here):
//! - [`credential`]: where a request carries its key (headers, either Envoy encoding).
//! - [`authz`]: the Envoy edge: `CheckRequest` → decision → `CheckResponse`.
//! - [`module`]: what keyward's Envoy module (`module/`) gets: reuse hints in allows, and the
//!   change feed it follows (`keyward.module.v1.Feed`).
//! - [`admin`]: the admin gRPC API used by the CLI; `admin/convert.rs` holds every protobuf ↔
//!   domain conversion.
//! - [`errors`]: the one map from failures to gRPC statuses.
//! - [`declare`]: the `apply` / `export` TOML file format, parsed into and rendered from a state.
//! - [`metrics`]: Prometheus metrics (`/metrics` on the health port), bounded label sets.
//! - [`config`]: TOML file plus `KEYWARD_*` environment overrides (one variable per key, derived
//!   from the fields), `config check`'s report.
//! - [`server`]: listeners, serving, health and graceful shutdown.
//! - [`tls`]: TLS (and mTLS) for the Check and admin listeners, reloaded without a restart;
//!   the CLI's TLS to the admin API.
//! - [`cli`]: the `keyward` command line; `cli::exit` maps every failure to its exit code,
//!   `cli::table` prints tables, `cli::help` generates help topics, the man page and completions.
//!
//! Where to start a change (docs/design-notes.md has the longer map):
//! - **A condition kind**: [`condition`] (its field, text form, validation, evaluation,
//!   description and CLI flag), then its protobuf field in `admin/convert.rs` (and the proto)
//!   and its TOML key in [`declare`]. Three files besides tests and the proto.
//! - **A credential source**: a header is configuration (`credentials.sources`); any other
//!   place (a cookie, a client certificate) is [`credential::credential`], which the Check path
//!   asks for a [`credential::Presented`] token.
//! - **A store backend**: [`store::Backend`] (the URL selects it; connection options and the
//!   few dialect differences match on it), its migrations under `migrations/<backend>/`, and,
//!   if it can announce changes, a listener like `store/listen.rs` followed by [`propagation`].
//!
//! Modules not used by the binaries, tests, benches and examples are private; the `//!` map
//! links them for `cargo doc --document-private-items`.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![allow(rustdoc::private_intra_doc_links)]

pub mod admin;
pub mod audit;
pub mod authn;
pub mod authz;
mod cache;
pub mod cli;
pub mod clock;
mod condition;
pub mod config;
pub mod credential;
pub mod declare;
mod directory;
mod errors;
pub mod explain;
pub mod hashing;
pub mod iam;
pub mod metrics;
pub mod model;
pub mod module;
pub mod policy;
pub mod propagation;
pub mod routes;
pub mod server;
pub mod services;
pub mod state;
pub mod store;
pub mod tls;
pub mod token;
mod usage;
mod workers;

/// Generated code for the admin API (`proto/keyward/admin/v1/admin.proto`).
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("keyward.admin.v1");
}
