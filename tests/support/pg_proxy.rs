//! A TCP proxy in front of PostgreSQL for fault injection: it can freeze the connections that
//! issued `LISTEN` (held open, delivering nothing: a stalled middlebox), now or from now on, and
//! cut every connection for a while (a network outage between one replica and its database).
//! Shared by the tests (`#[path]`-included by `examples/revocation_propagation.rs` too).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::AbortHandle;

pub struct PgProxy {
    pub addr: SocketAddr,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    connections: Mutex<Vec<Connection>>,
    /// Connections that have sent `LISTEN`, ever.
    listens: AtomicUsize,
    /// Freeze every listening connection, including those made later.
    freeze_all_listeners: AtomicBool,
    /// Refuse every connection (and drop the open ones).
    cut: AtomicBool,
}

struct Connection {
    listening: Arc<AtomicBool>,
    frozen: Arc<AtomicBool>,
    relay: AbortHandle,
}

impl PgProxy {
    pub async fn start(upstream: SocketAddr) -> PgProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        tokio::spawn({
            let state = state.clone();
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    if state.cut.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        continue;
                    };
                    let listening = Arc::new(AtomicBool::new(false));
                    let frozen = Arc::new(AtomicBool::new(false));
                    let relay = tokio::spawn(relay(
                        client,
                        server,
                        state.clone(),
                        listening.clone(),
                        frozen.clone(),
                    ))
                    .abort_handle();
                    state.connections.lock().await.push(Connection {
                        listening,
                        frozen,
                        relay,
                    });
                }
            }
        });
        PgProxy { addr, state }
    }

    /// `url` (a PostgreSQL URL naming `upstream`) through this proxy instead.
    pub fn url_for(&self, url: &str, upstream: SocketAddr) -> String {
        let proxied = url.replacen(&upstream.to_string(), &self.addr.to_string(), 1);
        assert_ne!(proxied, url, "{url} does not name {upstream}");
        proxied
    }

    /// Freezes the connections listening now; returns how many.
    pub async fn freeze_listeners(&self) -> usize {
        let connections = self.state.connections.lock().await;
        let mut frozen = 0;
        for c in connections
            .iter()
            .filter(|c| c.listening.load(Ordering::SeqCst))
        {
            c.frozen.store(true, Ordering::SeqCst);
            frozen += 1;
        }
        frozen
    }

    /// Freezes the listening connections, now and every one made later.
    pub async fn freeze_all_listeners(&self) {
        self.state
            .freeze_all_listeners
            .store(true, Ordering::SeqCst);
        self.freeze_listeners().await;
    }

    /// Drops every connection and refuses new ones until [`PgProxy::restore`].
    pub async fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        for c in self.state.connections.lock().await.drain(..) {
            c.relay.abort();
        }
    }

    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }

    /// How many connections have sent `LISTEN` so far.
    pub fn listens(&self) -> usize {
        self.state.listens.load(Ordering::SeqCst)
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    state: Arc<State>,
    listening: Arc<AtomicBool>,
    frozen: Arc<AtomicBool>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if !listening.load(Ordering::SeqCst) && buffer[..n].windows(7).any(|w| w == b"LISTEN ")
            {
                listening.store(true, Ordering::SeqCst);
                state.listens.fetch_add(1, Ordering::SeqCst);
                if state.freeze_all_listeners.load(Ordering::SeqCst) {
                    frozen.store(true, Ordering::SeqCst);
                }
            }
            if server_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    let downstream = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if frozen.load(Ordering::SeqCst) {
                // Held open, delivering nothing: what a stalled middlebox looks like.
                std::future::pending::<()>().await;
            }
            if client_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(upstream, downstream);
}
