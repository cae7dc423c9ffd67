//! A TCP proxy on a free loopback port that a test can cut: every live connection is
//! closed at once and nothing listens on its port (a new connection is refused) until it
//! is restored, as a database server that restarts looks to its clients. It lets one test
//! take a shared server away from its app without touching the other tests on it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy; dropping it closes its port and every connection through it.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    live: Arc<AtomicUsize>,
    listening: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on `127.0.0.1:0` and forwards each connection to `target` (`host:port`).
    pub async fn start(target: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cut, cut_rx) = watch::channel(false);
        let live = Arc::new(AtomicUsize::new(0));
        let listening = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn(serve(
            listener,
            target.to_owned(),
            cut_rx,
            live.clone(),
            listening.clone(),
        ));
        Ok(Self {
            addr,
            cut,
            live,
            listening,
            task,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections open through the proxy now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Closes every live connection and stops listening; returns once both are done.
    pub async fn cut(&self) {
        self.cut.send_replace(true);
        wait_until("the proxy to close its connections and its port", || {
            self.live() == 0 && !self.listening.load(Ordering::SeqCst)
        })
        .await;
    }

    /// Listens again on the same port; returns once it does.
    pub async fn restore(&self) {
        self.cut.send_replace(false);
        wait_until("the proxy to listen again", || {
            self.listening.load(Ordering::SeqCst)
        })
        .await;
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        // Each connection's task sees the sender gone and closes.
        self.task.abort();
    }
}

/// Polls `done` for up to 5 s; a proxy that cannot do its job fails the test loudly.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The accept loop: accepts while not cut; while cut, holds no listener at all.
async fn serve(
    first: TcpListener,
    target: String,
    mut cut: watch::Receiver<bool>,
    live: Arc<AtomicUsize>,
    listening: Arc<AtomicBool>,
) {
    let addr = match first.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut listener = Some(first);
    loop {
        match listener.take() {
            Some(l) => {
                tokio::select! {
                    accepted = l.accept() => {
                        if let Ok((client, _)) = accepted {
                            // Counted before its task runs, so that `cut` waits for it.
                            live.fetch_add(1, Ordering::SeqCst);
                            tokio::spawn(pipe(client, target.clone(), cut.clone(), live.clone()));
                        }
                        listener = Some(l);
                    }
                    gone = async { cut.wait_for(|c| *c).await.is_err() } => {
                        drop(l);
                        listening.store(false, Ordering::SeqCst);
                        if gone {
                            return;
                        }
                    }
                }
            }
            None => {
                if cut.wait_for(|c| !*c).await.is_err() {
                    return;
                }
                match TcpListener::bind(addr).await {
                    Ok(l) => {
                        listener = Some(l);
                        listening.store(true, Ordering::SeqCst);
                    }
                    Err(e) => {
                        eprintln!("proxy: cannot listen on {addr} again: {e}; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    }
}

/// One client's connection to the target, until either side closes or the proxy is cut.
async fn pipe(mut client: TcpStream, target: String, mut cut: watch::Receiver<bool>, live: Arc<AtomicUsize>) {
    tokio::select! {
        _ = async {
            if let Ok(mut server) = TcpStream::connect(&target).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        } => {}
        _ = cut.wait_for(|c| *c) => {}
    }
    // Both streams are dropped here (the client's when this function returns).
    drop(client);
    live.fetch_sub(1, Ordering::SeqCst);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An echo server on a free port.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut TcpStream) -> std::io::Result<[u8; 4]> {
        s.write_all(b"ping").await?;
        let mut buf = [0; 4];
        s.read_exact(&mut buf).await?;
        Ok(buf)
    }

    #[tokio::test]
    async fn a_cut_closes_live_connections_and_refuses_new_ones_until_restored() {
        let proxy = TcpProxy::start(&echo().await.to_string()).await.unwrap();
        let mut before = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(&round_trip(&mut before).await.unwrap(), b"ping");
        assert_eq!(proxy.live(), 1);

        proxy.cut().await;
        assert!(
            round_trip(&mut before).await.is_err(),
            "a live connection is closed"
        );
        let refused = TcpStream::connect(proxy.addr()).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);

        proxy.restore().await;
        let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(&round_trip(&mut after).await.unwrap(), b"ping");
    }
}
