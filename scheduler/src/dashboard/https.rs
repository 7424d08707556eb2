//! The dashboard over HTTPS when the scheduler runs with TLS: the gRPC server's certificate,
//! a client certificate asked for (verified against the cluster CA, not required), and the
//! verified leaf handed to each request as [`Peer`], so that a visitor is known by its
//! certificate as a gRPC caller is.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
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
/// Handshakes one source address may have under way: a client that opens connections and
/// never speaks holds at most this many (each a task and a rustls state, for up to
/// [`HANDSHAKE`]); its next connections are closed at once, and other addresses get through.
pub(crate) const PER_SOURCE: usize = 32;

/// Handshakes under way, by source address.
#[derive(Debug, Default)]
struct InFlight(Mutex<HashMap<IpAddr, usize>>);

/// One handshake's place in [`InFlight`], given back on drop.
struct Slot {
    table: Arc<InFlight>,
    ip: IpAddr,
}

impl InFlight {
    /// A slot for a handshake from `ip`, or None when it has [`PER_SOURCE`] under way.
    fn take(table: &Arc<InFlight>, ip: IpAddr) -> Option<Slot> {
        let mut counts = table
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = counts.entry(ip).or_insert(0);
        if *n >= PER_SOURCE {
            return None;
        }
        *n += 1;
        Some(Slot {
            table: Arc::clone(table),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self
            .table
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

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
        let in_flight = Arc::new(InFlight::default());
        let accepting = tokio::spawn(async move {
            let mut plain = Shared(listener);
            loop {
                let (stream, addr) = axum::serve::Listener::accept(&mut plain).await;
                let Some(slot) = InFlight::take(&in_flight, addr.ip()) else {
                    tracing::debug!(%addr, "dashboard: {PER_SOURCE} TLS handshakes from this address already under way; closed");
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _slot = slot;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_gets_its_own_handshake_slots() {
        let table = Arc::new(InFlight::default());
        let flood: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let mut held: Vec<Slot> = (0..PER_SOURCE)
            .map(|_| InFlight::take(&table, flood).expect("a slot under the cap"))
            .collect();
        assert!(InFlight::take(&table, flood).is_none(), "over the cap");
        assert!(InFlight::take(&table, other).is_some(), "another address");
        held.pop();
        assert!(InFlight::take(&table, flood).is_some(), "a slot given back");
        drop(held);
        assert!(table.0.lock().unwrap().is_empty(), "{:?}", table.0);
    }
}
