//! The TCP socket under a WebSocket, so that the hub can end it.
//!
//! Once a connection is closed, actix keeps its socket until what it has
//! buffered for the client is written: a client that never reads would
//! hold the socket, and those buffers, for ever. The hub keeps a handle
//! to each socket (taken when actix accepts it, see [`on_connect`]) and
//! shuts it down after the close: at once for a client dropped for not
//! reading, after [`CLOSE_LINGER`] otherwise.

use std::sync::Arc;
use std::time::Duration;

/// How long a closed connection may take to hand its last frames (the
/// close among them) to a client that reads, before its socket is shut.
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// A handle on a connection's TCP socket (a duplicate descriptor of it).
#[derive(Debug, Clone)]
pub struct SocketHandle(Arc<std::net::TcpStream>);

impl SocketHandle {
    /// Ends the TCP connection both ways, whatever actix still holds for
    /// it (its reads end, its writes fail, and it lets the socket go).
    pub(crate) fn shut(&self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

/// Pass to `HttpServer::on_connect`: keeps a handle to each accepted TCP
/// socket in the connection's data, where the `/ws` upgrade finds it.
/// Without it the hub cannot end a connection actix still holds, and a
/// client that never reads keeps its socket open.
pub fn on_connect(conn: &dyn std::any::Any, data: &mut actix_web::dev::Extensions) {
    use std::os::fd::AsFd as _;
    let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() else {
        return;
    };
    match tcp.as_fd().try_clone_to_owned() {
        Ok(fd) => {
            data.insert(SocketHandle(Arc::new(std::net::TcpStream::from(fd))));
        }
        Err(e) => tracing::debug!(error = %e, "no handle on an accepted socket"),
    }
}
