//! A TCP proxy in front of PostgreSQL that can freeze the connections that issued `LISTEN`:
//! they stay open, but nothing the server sends reaches keyward any more (what a stalled
//! middlebox or a half-open TCP connection looks like). Every other connection is relayed as is.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

pub struct Proxy {
    pub addr: SocketAddr,
    /// The frozen flag of every connection that has sent `LISTEN`.
    listening: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
    listens: Arc<AtomicUsize>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let listening = Arc::new(Mutex::new(Vec::new()));
        let listens = Arc::new(AtomicUsize::new(0));
        tokio::spawn({
            let (listening, listens) = (listening.clone(), listens.clone());
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        continue;
                    };
                    tokio::spawn(relay(client, server, listening.clone(), listens.clone()));
                }
            }
        });
        Proxy {
            addr,
            listening,
            listens,
        }
    }

    /// `url` with its `upstream` address replaced by this proxy's.
    pub fn proxied(&self, url: &str, upstream: SocketAddr) -> String {
        let proxied = url.replacen(&upstream.to_string(), &self.addr.to_string(), 1);
        assert_ne!(proxied, url, "{upstream} is not in the database URL");
        proxied
    }

    /// Freezes every connection that is listening now (later ones are left alone).
    pub async fn freeze_listeners(&self) -> usize {
        let listening = self.listening.lock().await;
        for frozen in listening.iter() {
            frozen.store(true, Ordering::SeqCst);
        }
        listening.len()
    }

    /// How many connections have sent `LISTEN` so far.
    pub fn listens(&self) -> usize {
        self.listens.load(Ordering::SeqCst)
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    listening: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
    listens: Arc<AtomicUsize>,
) {
    let frozen = Arc::new(AtomicBool::new(false));
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = {
        let frozen = frozen.clone();
        async move {
            let mut buffer = vec![0u8; 16 * 1024];
            let mut marked = false;
            loop {
                let n = match client_read.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if !marked && buffer[..n].windows(7).any(|w| w == b"LISTEN ") {
                    marked = true;
                    listens.fetch_add(1, Ordering::SeqCst);
                    listening.lock().await.push(frozen.clone());
                }
                if server_write.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
            }
        }
    };
    let downstream = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if frozen.load(Ordering::SeqCst) {
                // Held open, delivering nothing.
                std::future::pending::<()>().await;
            }
            if client_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(upstream, downstream);
}
