//! Shared by the criterion benches and the load examples (`#[path]`-included there): a keyward
//! store on a temporary SQLite file holding deployment `demo/chat` and data keys for it, created
//! in bulk with raw SQL, and the `CheckRequest` Envoy would send for one of them.
//!
//! Two kinds of keys:
//! - real keys: a fresh token each, its secret hashed with the argon2 parameters given, so the
//!   token verifies (use the defaults for realistic cold paths, cheap ones to seed many fast);
//! - filler keys: rows with a fixed fake PHC string that nothing verifies against, generated
//!   inside SQLite by a recursive CTE, to make the table big for lookup measurements.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::{self as core, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use keyward::config::Config;
use keyward::model::Plane;
use keyward::services::Services;
use sqlx::Connection;

pub const DEPLOYMENT: &str = "demo/chat";
/// A syntactically valid PHC string no secret matches; for rows only looked up, never verified.
pub const FAKE_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$\
     AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// argon2id parameters for seeded keys.
#[derive(Debug, Clone, Copy)]
pub struct Hashing {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Hashing {
    /// keyward's defaults (OWASP minimum): what a real key costs to verify.
    pub const DEFAULT: Hashing = Hashing {
        memory_kib: 19_456,
        iterations: 2,
        parallelism: 1,
    };
    /// The cheapest argon2id allows: to seed 100 000 verifiable keys in seconds.
    pub const CHEAP: Hashing = Hashing {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    };
}

/// A keyward configuration on the SQLite file `db` (created when missing).
pub fn config(db: &Path) -> Config {
    let mut config = Config::default();
    config.database.url = format!("sqlite://{}", db.display());
    config
}

/// Opens the store (migrating it), creates the organization, project `demo` and deployment
/// `demo/chat`; returns the services and the owner's principal id.
pub async fn open_seeded(config: &Config) -> anyhow::Result<(Services, i64)> {
    let services = keyward::server::open(config).await?;
    let store = &services
        .store
        .audited(keyward::audit::Record::local("bench seed", String::new()));
    let owner = store.init_organization("owner@example.com", None).await?;
    store.create_project("demo").await?;
    store
        .create_deployment(
            &DEPLOYMENT.parse().map_err(anyhow::Error::msg)?,
            "m",
            true,
            true,
        )
        .await?;
    Ok((services, owner.id))
}

async fn raw(config: &Config) -> anyhow::Result<sqlx::SqliteConnection> {
    Ok(sqlx::SqliteConnection::connect(&config.database.url).await?)
}

/// Inserts `count` verifiable data keys for `demo/chat` borne by `principal`, ids
/// `r<11 digits>` from `first`; returns their tokens.
pub async fn real_keys(
    config: &Config,
    principal: i64,
    first: usize,
    count: usize,
    hashing: Hashing,
) -> anyhow::Result<Vec<String>> {
    let params = Params::new(
        hashing.memory_kib,
        hashing.iterations,
        hashing.parallelism,
        None,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let minted: Vec<(String, String, String)> = (first..first + count)
        .map(|i| {
            let id = format!("r{i:011}");
            let new = keyward::token::generate(Plane::Data, &id);
            let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
            let phc = hasher
                .hash_password(new.secret.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| anyhow::anyhow!("{e}"));
            phc.map(|phc| (id, new.token, phc))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut conn = raw(config).await?;
    let mut tx = conn.begin().await?;
    for (id, _, phc) in &minted {
        sqlx::query(
            "INSERT INTO api_keys (id, principal_id, plane, name, description, secret_hash, \
             created_at) VALUES (?1, ?2, 'data', 'bench', '', ?3, 0)",
        )
        .bind(id)
        .bind(principal)
        .bind(phc)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO api_key_targets (key_id, project, deployment) VALUES (?1, 'demo', 'chat')",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(minted.into_iter().map(|(_, token, _)| token).collect())
}

/// Inserts `count` filler keys (ids `f<11 digits>`, fake hash) in one transaction.
pub async fn filler_keys(config: &Config, principal: i64, count: usize) -> anyhow::Result<()> {
    let mut conn = raw(config).await?;
    let mut tx = conn.begin().await?;
    let numbers =
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?1)";
    sqlx::query(&format!(
        "{numbers} INSERT INTO api_keys (id, principal_id, plane, name, description, \
         secret_hash, created_at) SELECT printf('f%011d', i), ?2, 'data', 'filler', '', ?3, 0 \
         FROM n"
    ))
    .bind(count as i64)
    .bind(principal)
    .bind(FAKE_PHC)
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!(
        "{numbers} INSERT INTO api_key_targets (key_id, project, deployment) \
         SELECT printf('f%011d', i), 'demo', 'chat' FROM n"
    ))
    .bind(count as i64)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The id of filler key `i`.
pub fn filler_id(i: usize) -> String {
    format!("f{i:011}")
}

/// What Envoy sends for `POST /demo/chat/v1/chat/completions` with `token` as a Bearer
/// credential, from a client at 203.0.113.7, on the public data route of `demo/chat`.
pub fn check_request(token: &str) -> CheckRequest {
    let headers: HashMap<String, String> = [
        (":authority", "inference.example.com"),
        (":method", "POST"),
        (":path", "/demo/chat/v1/chat/completions"),
        ("authorization", &format!("Bearer {token}")),
        ("user-agent", "openai-python/1.40.0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let context_extensions = [
        ("plane", "data"),
        ("endpoint", "public"),
        ("deployment", DEPLOYMENT),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(core::Address {
                    address: Some(Address::SocketAddress(SocketAddress {
                        address: "203.0.113.7".into(),
                        port_specifier: Some(core::socket_address::PortSpecifier::PortValue(51234)),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "POST".into(),
                    path: "/demo/chat/v1/chat/completions".into(),
                    host: "inference.example.com".into(),
                    protocol: "HTTP/1.1".into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions,
            ..Default::default()
        }),
    }
}

/// Whether a response lets the request through.
pub fn is_allowed(response: &envoy_types::pb::envoy::service::auth::v3::CheckResponse) -> bool {
    response.status.as_ref().is_some_and(|s| s.code == 0)
}
