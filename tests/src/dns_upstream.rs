//! A resolver the tests run themselves on loopback, standing in for the host's: an
//! authoritative `example.test.` zone (www → 192.0.2.7) served by hickory over UDP and TCP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::proto::rr::rdata::{A, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use tokio::net::{TcpListener, UdpSocket};

/// The name the upstream answers, and its address.
pub const UPSTREAM_NAME: &str = "www.example.test.";
pub const UPSTREAM_ADDR: &str = "192.0.2.7";

/// Starts the upstream on one loopback port (UDP and TCP alike, as a forwarder asks both);
/// it serves while the returned server lives on the calling tokio runtime.
pub async fn dns_upstream() -> (SocketAddr, Server<Catalog>) {
    let origin = Name::from_ascii("example.test.").expect("origin name");
    let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
        origin.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
    );
    let soa = SOA::new(origin.clone(), origin.clone(), 1, 60, 60, 60, 60);
    assert!(zone.upsert_mut(Record::from_rdata(origin.clone(), 60, RData::SOA(soa)), 1));
    let www = Name::from_ascii(UPSTREAM_NAME).expect("www name");
    let a = RData::A(A(UPSTREAM_ADDR.parse().expect("an IPv4 address")));
    assert!(zone.upsert_mut(Record::from_rdata(www, 60, a), 1));
    let mut catalog = Catalog::new();
    catalog.upsert(LowerName::new(&origin), vec![Arc::new(zone)]);
    let (udp, tcp) = loop {
        let udp = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind UDP on loopback");
        if let Ok(tcp) = TcpListener::bind(udp.local_addr().expect("local address")).await {
            break (udp, tcp);
        }
    };
    let addr = udp.local_addr().expect("local address");
    let mut server = Server::new(catalog);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 8);
    (addr, server)
}
