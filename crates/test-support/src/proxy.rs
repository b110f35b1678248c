//! A TCP proxy on loopback that a test can turn against its clients: what
//! a cloud load balancer or NAT does to an idle connection (forgets it, and
//! answers the next packet with a reset), and a server that is not there
//! yet (a database waking from scale-to-zero).

use std::time::Duration;
use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards `127.0.0.1:port()` to an upstream address. Stopped on drop (the
/// connections already made end when either side closes them).
#[derive(Debug)]
pub struct TcpProxy {
    port: u16,
    stale: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Forwards to `upstream` (`host:port`) at once.
    pub async fn start(upstream: &str) -> Self {
        let p = Self::start_after(upstream, Duration::ZERO);
        // Listening before this returns.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", p.port)).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the proxy did not listen"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        p
    }

    /// Refuses connections (nothing listens on its port) for `delay`, then
    /// forwards to `upstream`: a server that is down, then back.
    pub fn start_after(upstream: &str, delay: Duration) -> Self {
        let port = crate::free_port();
        let (stale, _) = watch::channel(0_u64);
        let upstream = upstream.to_owned();
        let subscribe = stale.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let listener = TcpListener::bind(("127.0.0.1", port))
                .await
                .expect("binding the proxy's port");
            while let Ok((client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                tokio::spawn(forward(client, upstream.clone(), subscribe.subscribe()));
            }
        });
        Self { port, stale, task }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every connection open now goes stale, as behind a load balancer that
    /// dropped it while idle: its server side is closed at once, and its
    /// client hears nothing until it sends, when its socket is closed
    /// without forwarding a byte. New connections work as before.
    pub fn go_stale(&self) {
        self.stale.send_modify(|generation| *generation += 1);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(mut client: TcpStream, upstream: String, mut stale: watch::Receiver<u64>) {
    stale.borrow_and_update();
    let Ok(mut server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let went_stale = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
        _ = stale.changed() => true,
    };
    if went_stale {
        drop(server);
        // Silent until the client speaks; then it learns the connection is
        // gone, and nothing it sent arrived anywhere.
        let mut byte = [0_u8; 1];
        let _ = client.read(&mut byte).await;
    }
}
