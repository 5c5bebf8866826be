//! TLS on both edges of keyward's gRPC: the server side of the Check and admin listeners
//! (certificates from PEM files, optional client certificates, reloaded without a restart) and
//! the CLI's side of the admin API (`https://` is TLS or an error, never plaintext).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow, bail};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tracing::{debug, info, warn};

use crate::config::TlsFiles;

/// A TLS connection accepted on one of keyward's listeners.
pub type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// How long a client may take to finish its handshake before the connection is dropped, so
/// half-open connections cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reloads that failed since the process started (a broken file is counted once).
static RELOAD_FAILURES: AtomicU64 = AtomicU64::new(0);

pub fn reload_failures() -> u64 {
    RELOAD_FAILURES.load(Ordering::Relaxed)
}

/// A listener's TLS settings, reloaded from its files when they change. A reload that fails
/// (a half-written file, a key that does not match) keeps the previous certificate and logs
/// why: a bad rotation never takes the listener down.
pub struct Acceptor {
    /// `tls.check` or `tls.admin`, for messages.
    name: &'static str,
    files: TlsFiles,
    current: RwLock<Loaded>,
}

struct Loaded {
    stamp: Stamp,
    config: Arc<ServerConfig>,
}

/// Modification time and length of each file, as last loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Vec<Option<(SystemTime, u64)>>);

impl Acceptor {
    /// Loads the files once; an error here stops the start, naming the file.
    pub fn load(name: &'static str, files: &TlsFiles) -> anyhow::Result<Arc<Self>> {
        let stamp = stamp(files);
        let config = Arc::new(server_config(name, files)?);
        Ok(Arc::new(Acceptor {
            name,
            files: files.clone(),
            current: RwLock::new(Loaded { stamp, config }),
        }))
    }

    fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .config
            .clone()
    }

    /// Loads the files again if they changed since the last load; true when new connections
    /// now get the new certificate.
    pub fn reload_if_changed(&self) -> bool {
        let now = stamp(&self.files);
        {
            let current = self
                .current
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if current.stamp == now {
                return false;
            }
        }
        match server_config(self.name, &self.files) {
            Ok(config) => {
                let mut current = self
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                *current = Loaded {
                    stamp: now,
                    config: Arc::new(config),
                };
                info!(listener = self.name, "TLS certificate reloaded");
                true
            }
            Err(e) => {
                // Remember the stamp so a broken file is reported once, not every interval.
                let mut current = self
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                current.stamp = now;
                RELOAD_FAILURES.fetch_add(1, Ordering::Relaxed);
                warn!(listener = self.name, error = %format!("{e:#}"), "TLS reload failed; keeping the previous certificate");
                false
            }
        }
    }
}

fn stamp(files: &TlsFiles) -> Stamp {
    let of = |path: &Option<PathBuf>| {
        let meta = std::fs::metadata(path.as_ref()?).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    Stamp(vec![of(&files.cert), of(&files.key), of(&files.client_ca)])
}

fn read_certs(path: &Path, field: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow!("{field} {}: {e}", path.display()))?;
    if certs.is_empty() {
        bail!("{field} {}: no PEM certificate in it", path.display());
    }
    Ok(certs)
}

/// The rustls server configuration for one listener: HTTP/2 only (gRPC), TLS 1.2 and 1.3,
/// client certificates required when `client_ca` is set.
fn server_config(name: &str, files: &TlsFiles) -> anyhow::Result<ServerConfig> {
    let (Some(cert), Some(key)) = (&files.cert, &files.key) else {
        bail!("{name}: cert and key are both needed for TLS");
    };
    let chain = read_certs(cert, &format!("{name}.cert"))?;
    // The error names the file only: rustls' messages never carry key material.
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow!("{name}.key {}: no usable private key ({e})", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let field = format!("{name}.client_ca");
            let mut roots = RootCertStore::empty();
            for certificate in read_certs(ca, &field)? {
                roots
                    .add(certificate)
                    .map_err(|e| anyhow!("{field} {}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| anyhow!("{field} {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        anyhow!(
            "{name}: the key {} does not fit the certificate {} ({e})",
            files.key.as_deref().unwrap_or(Path::new("")).display(),
            cert.display()
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// TLS connections accepted on `listener`, for tonic's `serve_with_incoming`. Each handshake
/// runs on its own task with [`HANDSHAKE_TIMEOUT`], so a slow or failing client never holds
/// up the others; failed handshakes are dropped (logged at debug) and never end the stream.
pub fn incoming(
    listener: TcpListener,
    acceptor: Arc<Acceptor>,
) -> ReceiverStream<io::Result<TlsStream>> {
    let (ready_tx, ready_rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors and the like: back off briefly instead of spinning.
                        warn!(listener = acceptor.name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = ready_tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let tls = TlsAcceptor::from(acceptor.config());
            let ready_tx = ready_tx.clone();
            let name = acceptor.name;
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = ready_tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => handshake_failed(name, peer, &e.to_string()),
                    Err(_) => handshake_failed(name, peer, "timed out"),
                }
            });
        }
    });
    ReceiverStream::new(ready_rx)
}

fn handshake_failed(listener: &str, peer: SocketAddr, why: &str) {
    debug!(listener, %peer, why, "TLS handshake failed");
}

/// Reloads every acceptor's files every `interval` until `stop`.
pub async fn reload_every(
    acceptors: Vec<Arc<Acceptor>>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    if acceptors.is_empty() {
        return;
    }
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => {
                for acceptor in &acceptors {
                    acceptor.reload_if_changed();
                }
            }
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

/// How the CLI proves the admin API is keyward's, and optionally who it is.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// Trust only these CAs (PEM); the system's roots when unset.
    pub ca: Option<PathBuf>,
    /// A client certificate and key (PEM) for an admin API that asks for one.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// A channel to the admin API at `server`. `https://` is TLS or an error: never a silent
/// downgrade to plaintext, which would send the bearer token in clear.
pub async fn admin_channel(server: &str, tls: &ClientTls) -> anyhow::Result<Channel> {
    let invalid =
        || anyhow!("invalid --server {server:?}: expected http://HOST:PORT or https://HOST:PORT");
    let uri: tonic::transport::Uri = server.parse().map_err(|_| invalid())?;
    let endpoint = Channel::from_shared(server.to_owned()).map_err(|_| invalid())?;
    let endpoint = match uri.scheme_str() {
        Some("https") => endpoint
            .tls_config(client_tls_config(tls)?)
            .context("cannot set up TLS for the admin API")?,
        Some("http") => {
            if tls.ca.is_some() || tls.cert.is_some() {
                bail!(
                    "--ca/--client-cert are set but --server {server:?} is plaintext http://: use https:// (refusing to send the token in clear while TLS was asked for)"
                );
            }
            endpoint
        }
        _ => return Err(invalid()),
    };
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach the keyward admin API at {server}"))
}

fn client_tls_config(tls: &ClientTls) -> anyhow::Result<ClientTlsConfig> {
    let read = |path: &Path, what: &str| {
        std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
    };
    let mut config = ClientTlsConfig::new();
    config = match &tls.ca {
        Some(ca) => {
            let pem = read(ca, "--ca")?;
            if read_certs(ca, "--ca").is_err() {
                bail!("--ca {}: no PEM certificate in it", ca.display());
            }
            config.ca_certificate(Certificate::from_pem(pem))
        }
        None => config.with_native_roots(),
    };
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let identity =
                Identity::from_pem(read(cert, "--client-cert")?, read(key, "--client-key")?);
            config = config.identity(identity);
        }
        (None, None) => {}
        _ => bail!("--client-cert and --client-key go together"),
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo_certs(dir: &Path) -> PathBuf {
        let certs = dir.join("certs");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("envoy/gen-certs.sh");
        let out = std::process::Command::new("sh")
            .arg(script)
            .arg(&certs)
            .output()
            .unwrap();
        assert!(out.status.success());
        certs
    }

    fn files(cert: PathBuf, key: PathBuf) -> TlsFiles {
        TlsFiles {
            cert: Some(cert),
            key: Some(key),
            client_ca: None,
        }
    }

    #[test]
    fn unusable_files_are_named_and_no_key_material_is_shown() {
        let dir = tempfile::tempdir().unwrap();
        let certs = demo_certs(dir.path());
        let missing = Acceptor::load(
            "tls.check",
            &files(dir.path().join("nope.pem"), certs.join("keyward.key")),
        );
        let err = format!("{:#}", missing.err().unwrap());
        assert!(
            err.contains("tls.check.cert") && err.contains("nope.pem"),
            "{err}"
        );

        let key_text = std::fs::read_to_string(certs.join("keyward.key")).unwrap();
        let not_a_key = Acceptor::load(
            "tls.admin",
            &files(certs.join("keyward.pem"), certs.join("keyward.pem")),
        );
        let err = format!("{:#}", not_a_key.err().unwrap());
        assert!(err.contains("tls.admin.key"), "{err}");

        let mismatched = Acceptor::load(
            "tls.admin",
            &files(certs.join("keyward.pem"), certs.join("server.key")),
        );
        let err = format!("{:#}", mismatched.err().unwrap());
        assert!(err.contains("does not fit"), "{err}");
        let body: String = key_text
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        assert!(!err.contains(&body[..20]));

        let good = Acceptor::load(
            "tls.check",
            &files(certs.join("keyward.pem"), certs.join("keyward.key")),
        );
        assert!(good.is_ok());
        assert!(
            !good.unwrap().reload_if_changed(),
            "nothing changed, nothing reloaded"
        );
    }
}
