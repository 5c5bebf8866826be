//! TLS on keyward's listeners, with real peers: the `keyward` CLI against a TLS admin API (and
//! never a plaintext downgrade of `https://`), a real Envoy calling Check over mutual TLS, gRPC
//! clients refused without a client certificate, and a renewed certificate served without a
//! restart while a broken one is refused.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use keyward::config::{Config, TlsFiles};
use keyward::pb::Plane;
use reqwest::StatusCode;
use support::{Backend, Envoy, Keyward, check_request, eventually, init, repo, test_config};
use tempfile::TempDir;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const KEYWARD_BIN: &str = env!("CARGO_BIN_EXE_keyward");

/// The demo CA and certificates from `envoy/gen-certs.sh`, in `dir/certs`.
fn gen_certs(dir: &Path) -> PathBuf {
    let certs = dir.join("certs");
    let out = std::process::Command::new("sh")
        .arg(repo().join("envoy/gen-certs.sh"))
        .arg(&certs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gen-certs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    certs
}

fn files(certs: &Path, name: &str, client_ca: bool) -> TlsFiles {
    TlsFiles {
        cert: Some(certs.join(format!("{name}.pem"))),
        key: Some(certs.join(format!("{name}.key"))),
        client_ca: client_ca.then(|| certs.join("ca.pem")),
    }
}

/// A fresh SQLite database initialized by `keyward init`; returns its config and owner token.
async fn database(dir: &Path) -> (Config, String) {
    let url = format!("sqlite://{}", dir.join("keyward.db").display());
    let token = init(&url).await;
    (test_config(&url), token)
}

/// A fresh directory with the demo certificates (`certs/`), and keyward on a fresh SQLite
/// database there, its configuration adjusted by `tls` first.
async fn keyward_with_tls(tls: impl FnOnce(&mut Config, &Path)) -> (TempDir, PathBuf, Keyward) {
    let dir = TempDir::new().unwrap();
    let certs = gen_certs(dir.path());
    let (mut config, owner) = database(dir.path()).await;
    tls(&mut config, &certs);
    let keyward = Keyward::on(config, owner).await;
    (dir, certs, keyward)
}

async fn cli(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(KEYWARD_BIN)
        .args(args)
        .env_remove("KEYWARD_SERVER")
        .env_remove("KEYWARD_TOKEN")
        .env_remove("KEYWARD_CA")
        .output()
        .await
        .unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reaches_a_tls_admin_api_with_its_ca_and_refuses_anything_less() {
    let (_dir, certs, mut keyward) =
        keyward_with_tls(|c, certs| c.tls.admin = files(certs, "keyward", false)).await;
    let owner = keyward.owner_token.clone();
    let https = format!("https://localhost:{}", keyward.admin.port());
    let ca = certs.join("ca.pem");
    let ca = ca.to_str().unwrap();

    let ok = cli(&[
        "projects", "create", "acme", "--server", &https, "--ca", ca, "--token", &owner,
    ])
    .await;
    assert!(ok.status.success(), "{}", stderr(&ok));
    let listed = cli(&[
        "projects", "list", "--server", &https, "--ca", ca, "--token", &owner,
    ])
    .await;
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("acme"));

    // The demo CA is not among the system's roots: the server is not trusted.
    let untrusted = cli(&["projects", "list", "--server", &https, "--token", &owner]).await;
    assert!(!untrusted.status.success());
    assert!(
        stderr(&untrusted).contains("cannot reach"),
        "{}",
        stderr(&untrusted)
    );

    // A CA for a plaintext URL is a contradiction, refused before anything is sent.
    let http = format!("http://localhost:{}", keyward.admin.port());
    let mixed = cli(&[
        "projects", "list", "--server", &http, "--ca", ca, "--token", &owner,
    ])
    .await;
    assert!(!mixed.status.success());
    assert!(stderr(&mixed).contains("plaintext"), "{}", stderr(&mixed));

    for out in [&ok, &listed, &untrusted, &mixed] {
        assert!(
            !stderr(out).contains(&owner),
            "the token leaked into an error"
        );
    }
    keyward.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_api_asking_for_client_certificates_answers_only_the_cli_that_has_one() {
    let (_dir, certs, mut keyward) =
        keyward_with_tls(|c, certs| c.tls.admin = files(certs, "keyward", true)).await;
    let owner = keyward.owner_token.clone();
    let https = format!("https://127.0.0.1:{}", keyward.admin.port());
    let path = |name: &str| certs.join(name).to_str().unwrap().to_owned();
    let (ca, cert, key) = (
        path("ca.pem"),
        path("cli-client.pem"),
        path("cli-client.key"),
    );

    let without = cli(&[
        "projects", "list", "--server", &https, "--ca", &ca, "--token", &owner,
    ])
    .await;
    assert!(!without.status.success());
    let with = cli(&[
        "projects",
        "list",
        "--server",
        &https,
        "--ca",
        &ca,
        "--client-cert",
        &cert,
        "--client-key",
        &key,
        "--token",
        &owner,
    ])
    .await;
    assert!(with.status.success(), "{}", stderr(&with));
    let half = cli(&[
        "projects",
        "list",
        "--server",
        &https,
        "--ca",
        &ca,
        "--client-cert",
        &cert,
        "--token",
        &owner,
    ])
    .await;
    assert!(!half.status.success());
    assert!(stderr(&half).contains("--client-key"), "{}", stderr(&half));
    keyward.stop().await;
}

/// `https://` to something that does not speak TLS: the first bytes on the wire are a TLS
/// ClientHello, never the HTTP/2 request carrying the bearer token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_never_downgraded_to_plaintext() {
    let dir = TempDir::new().unwrap();
    let certs = gen_certs(dir.path());
    let (_, owner) = database(dir.path()).await;
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("https://localhost:{}", plain.local_addr().unwrap().port());
    let ca = certs.join("ca.pem");
    let run = tokio::spawn({
        let owner = owner.clone();
        async move {
            cli(&[
                "projects",
                "list",
                "--server",
                &server,
                "--ca",
                ca.to_str().unwrap(),
                "--token",
                &owner,
            ])
            .await
        }
    });
    let (mut conn, _) = plain.accept().await.unwrap();
    let mut first = vec![0u8; 4096];
    let n = conn.read(&mut first).await.unwrap();
    drop(conn);
    drop(plain);
    let first = &first[..n];
    assert!(
        n >= 3 && first[0] == 0x16 && first[1] == 0x03,
        "not a TLS record: {first:?}"
    );
    assert!(
        !first.windows(owner.len()).any(|w| w == owner.as_bytes()),
        "the token crossed the wire in clear"
    );
    assert!(
        !first.starts_with(b"PRI * HTTP/2.0"),
        "plaintext HTTP/2 preface sent to an https:// URL"
    );
    let out = run.await.unwrap();
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_calls_check_over_mutual_tls_and_clients_without_a_certificate_are_refused() {
    let (_dir, certs, mut keyward) =
        keyward_with_tls(|c, certs| c.tls.check = files(certs, "keyward", true)).await;
    let mut admin = keyward.admin().await;
    admin.project("demo").await;
    admin.deployment("demo/chat").await;
    let (_, token) = admin.key(Plane::Data, &["demo/chat"]).await;

    let backend = Backend::start().await;
    let cert_dir = certs.to_str().unwrap();
    let envoy = Envoy::start_with(
        &[keyward.check],
        backend.addr,
        &[("CERT_DIR", cert_dir), ("KEYWARD_TLS", "mtls")],
    )
    .await;
    let http = reqwest::Client::new();
    let chat = envoy.public_url("/demo/chat/v1/models");
    let allowed = http.get(&chat).bearer_auth(&token).send().await.unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
    let anonymous = http.get(&chat).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(
        envoy
            .counter("cluster.keyward_ext_authz.ssl.handshake")
            .await
            >= 1
    );

    // A gRPC client that trusts keyward but presents no certificate gets no answer at all; one
    // with Envoy's certificate does.
    let ca = Certificate::from_pem(std::fs::read(certs.join("ca.pem")).unwrap());
    let check_url = format!("https://localhost:{}", keyward.check.port());
    let without = Channel::from_shared(check_url.clone())
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(ca.clone()))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = without {
        let answer = AuthorizationClient::new(channel)
            .check(check_request(&[], &[]))
            .await;
        assert!(
            answer.is_err(),
            "Check answered a client without a certificate"
        );
    }
    let identity = Identity::from_pem(
        std::fs::read(certs.join("envoy-client.pem")).unwrap(),
        std::fs::read(certs.join("envoy-client.key")).unwrap(),
    );
    let with = Channel::from_shared(check_url)
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(ca).identity(identity))
        .unwrap()
        .connect()
        .await
        .unwrap();
    AuthorizationClient::new(with)
        .check(check_request(&[], &[]))
        .await
        .expect("a client with a certificate is answered");
    keyward.stop().await;
}

/// The certificate keyward presents on a new connection to `addr`.
async fn presented(addr: std::net::SocketAddr, ca: &Path) -> Option<CertificateDer<'static>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.ok()?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .ok()?;
    tls.get_ref().1.peer_certificates()?.first().cloned()
}

fn leaf(path: &Path) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart_and_a_broken_one_is_not() {
    let (dir, certs, mut keyward) = keyward_with_tls(|c, certs| {
        c.tls.check = files(certs, "keyward", false);
        c.tls.reload_interval_secs = 1;
    })
    .await;
    let ca = certs.join("ca.pem");
    let first = leaf(&certs.join("keyward.pem"));
    assert_eq!(presented(keyward.check, &ca).await, Some(first.clone()));

    // A half-written rotation: the old certificate keeps being served.
    std::fs::write(
        certs.join("keyward.pem"),
        b"-----BEGIN CERTIFICATE-----\ntruncated",
    )
    .unwrap();
    let reloads_before = keyward::tls::reload_failures();
    eventually(
        "the broken file noticed",
        Duration::from_secs(10),
        || async { (keyward::tls::reload_failures() > reloads_before).then_some(()) },
    )
    .await;
    assert_eq!(presented(keyward.check, &ca).await, Some(first.clone()));

    // A real renewal: new connections get the new certificate.
    std::fs::remove_file(certs.join("keyward.pem")).unwrap();
    std::fs::remove_file(certs.join("keyward.key")).unwrap();
    gen_certs(dir.path());
    let renewed = leaf(&certs.join("keyward.pem"));
    assert_ne!(renewed, first);
    eventually(
        "the renewed certificate served",
        Duration::from_secs(10),
        || {
            let (ca, renewed) = (ca.clone(), renewed.clone());
            let addr = keyward.check;
            async move { (presented(addr, &ca).await == Some(renewed)).then_some(()) }
        },
    )
    .await;
    keyward.stop().await;
}
