//! The dashboard over HTTPS when the scheduler runs with TLS: the gRPC server's certificate,
//! a client certificate asked for (verified against the cluster CA, not required), and the
//! verified leaf handed to each request as [`Peer`], so that a visitor is known by its
//! certificate as a gRPC caller is.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;

use super::Shared;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the server to take them.
const READY: usize = 64;

/// What a request knows of its connection: the client certificate the handshake verified
/// (its leaf, DER), if the visitor presented one.
#[derive(Debug, Clone, Default)]
pub(crate) struct Peer {
    pub(crate) cert: Option<Arc<[u8]>>,
}

impl Connected<IncomingStream<'_, Shared>> for Peer {
    fn connect_info(_: IncomingStream<'_, Shared>) -> Self {
        Peer::default()
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        let (_, session) = stream.io().get_ref();
        // rustls gives the chain leaf first, and only once the CA has verified it.
        let cert = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| Arc::<[u8]>::from(leaf.as_ref()));
        Peer { cert }
    }
}

/// Accepts TCP connections on the shared socket and hands over those whose TLS handshake
/// succeeded. Handshakes run in tasks of their own, so a slow or silent client holds up
/// nobody else; the accepting task ends when this is dropped (the leader's term ends).
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accepting: tokio::task::JoinHandle<()>,
    local: std::io::Result<SocketAddr>,
}

impl TlsListener {
    pub(crate) fn start(listener: Arc<TcpListener>, config: Arc<ServerConfig>) -> Self {
        let (tx, ready) = mpsc::channel(READY);
        let local = listener.local_addr();
        let acceptor = TlsAcceptor::from(config);
        let accepting = tokio::spawn(async move {
            let mut plain = Shared(listener);
            loop {
                let (stream, addr) = axum::serve::Listener::accept(&mut plain).await;
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        // Plain HTTP, an untrusted certificate, a scanner: not worth a warning.
                        Ok(Err(e)) => tracing::debug!(%addr, "dashboard TLS handshake: {e}"),
                        Err(_) => tracing::debug!(%addr, "dashboard TLS handshake timed out"),
                    }
                });
            }
        });
        TlsListener {
            ready,
            accepting,
            local,
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // Else it would go on accepting from the socket a later term serves.
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task never ends by itself: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match &self.local {
            Ok(addr) => Ok(*addr),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}
