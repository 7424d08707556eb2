//! The node DNS server over real sockets on loopback: A, SRV, NXDOMAIN and TTL from a
//! ServiceSet, swaps on update, UDP and TCP, forwarding to a resolver this test runs itself,
//! and no listener left after shutdown. Queries are encoded and decoded with hickory's codec.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use berth_agent::dns::{Dns, TTL_SECS, parse_upstreams};
use berth_proto::v1::{Protocol, Service, ServicePort, ServiceSet};
use berth_tests::{UPSTREAM_ADDR, UPSTREAM_NAME, dns_upstream};
use hickory_server::proto::op::{Message, Query, ResponseCode};
use hickory_server::proto::rr::rdata::A;
use hickory_server::proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(5);

fn port(name: &str, port: u32, protocol: Protocol) -> ServicePort {
    ServicePort {
        name: name.into(),
        port,
        target: port + 8000,
        protocol: protocol as i32,
    }
}

fn service(name: &str, vip: &str, ports: Vec<ServicePort>) -> Service {
    Service {
        name: name.into(),
        virtual_ip: vip.into(),
        ports,
        endpoints: Vec::new(),
    }
}

fn hello_set(generation: u64, vip: &str) -> ServiceSet {
    ServiceSet {
        generation,
        services: vec![
            service(
                "hello",
                vip,
                vec![port("http", 80, Protocol::Tcp), port("", 53, Protocol::Udp)],
            ),
            service("db", "10.96.0.20", vec![port("pg", 5432, Protocol::Tcp)]),
        ],
    }
}

/// A DNS server on loopback (UDP and TCP, each on a free port) until the sender fires.
struct Running {
    udp: SocketAddr,
    tcp: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), berth_agent::dns::DnsError>>,
}

async fn start(dns: &Dns) -> Running {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (udp_addr, tcp_addr) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let dns = dns.clone();
    let task = tokio::spawn(async move {
        dns.serve(udp, tcp, async {
            let _ = stopped.await;
        })
        .await
    });
    Running {
        udp: udp_addr,
        tcp: tcp_addr,
        stop: Some(stop),
        task,
    }
}

impl Running {
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the server stops")
            .unwrap()
            .expect("a clean shutdown");
    }
}

fn query(name: &str, rtype: RecordType) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    message.to_vec().unwrap()
}

async fn ask_udp(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&query(name, rtype), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no UDP answer for {name} {rtype}"))
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

async fn ask_tcp(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let mut stream = TcpStream::connect(server).await.unwrap();
    let body = query(name, rtype);
    let mut framed = u16::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    framed.extend_from_slice(&body);
    stream.write_all(&framed).await.unwrap();
    let read = async {
        let len = stream.read_u16().await.unwrap();
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.unwrap();
        buf
    };
    let buf = tokio::time::timeout(WAIT, read)
        .await
        .unwrap_or_else(|_| panic!("no TCP answer for {name} {rtype}"));
    Message::from_vec(&buf).unwrap()
}

fn a_records(message: &Message) -> Vec<(Ipv4Addr, u32)> {
    message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(A(ip)) => Some((*ip, r.ttl)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn answers_a_srv_and_nxdomain_with_a_5s_ttl_over_udp_and_tcp() {
    let dns = Dns::new(&[]).unwrap();
    dns.update(&hello_set(1, "10.96.0.10")).unwrap();
    let server = start(&dns).await;

    let a = ask_udp(server.udp, "hello.berth.", RecordType::A).await;
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert!(
        a.metadata.authoritative,
        "the berth zone answers with authority"
    );
    assert_eq!(
        a_records(&a),
        vec![("10.96.0.10".parse().unwrap(), TTL_SECS)]
    );
    assert_eq!(TTL_SECS, 5);
    // Names are case-insensitive.
    let upper = ask_udp(server.udp, "HELLO.Berth.", RecordType::A).await;
    assert_eq!(a_records(&upper), vec![("10.96.0.10".parse().unwrap(), 5)]);

    let srv = ask_udp(server.udp, "_http._tcp.hello.berth.", RecordType::SRV).await;
    assert_eq!(srv.metadata.response_code, ResponseCode::NoError);
    let RData::SRV(record) = srv.answers.first().map(|r| &r.data).expect("an SRV answer") else {
        panic!("not an SRV answer: {srv:?}");
    };
    assert_eq!((record.port, srv.answers[0].ttl), (80, 5));
    assert_eq!(record.target, Name::from_ascii("hello.berth.").unwrap());
    let extra: Vec<_> = srv
        .additionals
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(A(ip)) => Some(*ip),
            _ => None,
        })
        .collect();
    assert_eq!(extra, vec!["10.96.0.10".parse::<Ipv4Addr>().unwrap()]);
    // An unnamed port is named after its protocol and number, under _udp.
    let udp_srv = ask_udp(server.udp, "_udp-53._udp.hello.berth.", RecordType::SRV).await;
    assert!(
        matches!(udp_srv.answers.first().map(|r| &r.data), Some(RData::SRV(s)) if s.port == 53)
    );

    for missing in ["nope.berth.", "_http._udp.hello.berth.", "x.hello.berth."] {
        let nx = ask_udp(server.udp, missing, RecordType::A).await;
        assert_eq!(
            nx.metadata.response_code,
            ResponseCode::NXDomain,
            "{missing}"
        );
        assert!(nx.answers.is_empty());
        let soa = nx
            .authorities
            .iter()
            .find(|r| r.record_type() == RecordType::SOA);
        assert!(
            matches!(soa.map(|r| &r.data), Some(RData::SOA(s)) if s.minimum == 5),
            "NXDOMAIN carries the SOA whose minimum bounds negative caching: {nx:?}"
        );
    }
    // Without forwarders a name outside the cluster is refused, never answered.
    let outside = ask_udp(server.udp, "example.com.", RecordType::A).await;
    assert_eq!(outside.metadata.response_code, ResponseCode::Refused);

    let over_tcp = ask_tcp(server.tcp, "db.berth.", RecordType::A).await;
    assert_eq!(
        a_records(&over_tcp),
        vec![("10.96.0.20".parse().unwrap(), 5)]
    );
    let nx_tcp = ask_tcp(server.tcp, "gone.berth.", RecordType::A).await;
    assert_eq!(nx_tcp.metadata.response_code, ResponseCode::NXDomain);
    server.shutdown().await;
}

/// Issue 16: a service in environment ENV is named `NAME.ENV` by the scheduler and answers as
/// `NAME.ENV.berth` (with its SRV records); a default-environment service answers as
/// `NAME.berth` and `NAME.default.berth`.
#[tokio::test]
async fn environments_qualify_service_names_and_default_answers_both_ways() {
    let dns = Dns::new(&[]).unwrap();
    let set = ServiceSet {
        generation: 1,
        services: vec![
            service("hello", "10.96.0.10", vec![port("http", 80, Protocol::Tcp)]),
            service(
                "hello.staging",
                "10.96.0.11",
                vec![port("http", 80, Protocol::Tcp)],
            ),
            service("hello.production", "10.96.0.12", Vec::new()),
        ],
    };
    dns.update(&set).unwrap();
    let server = start(&dns).await;
    for (name, vip) in [
        ("hello.berth.", "10.96.0.10"),
        ("hello.default.berth.", "10.96.0.10"),
        ("hello.staging.berth.", "10.96.0.11"),
        ("hello.production.berth.", "10.96.0.12"),
    ] {
        let a = ask_udp(server.udp, name, RecordType::A).await;
        assert_eq!(
            a_records(&a),
            vec![(vip.parse().unwrap(), TTL_SECS)],
            "{name}"
        );
    }
    let srv = ask_udp(
        server.udp,
        "_http._tcp.hello.staging.berth.",
        RecordType::SRV,
    )
    .await;
    let Some(RData::SRV(record)) = srv.answers.first().map(|r| &r.data) else {
        panic!("not an SRV answer: {srv:?}");
    };
    assert_eq!(
        record.target,
        Name::from_ascii("hello.staging.berth.").unwrap()
    );
    let nx = ask_udp(server.udp, "hello.qa.berth.", RecordType::A).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    server.shutdown().await;
}

#[tokio::test]
async fn updates_swap_the_answers_while_serving_and_stale_sets_are_ignored() {
    let dns = Dns::new(&[]).unwrap();
    let server = start(&dns).await;
    let before = ask_udp(server.udp, "hello.berth.", RecordType::A).await;
    assert_eq!(before.metadata.response_code, ResponseCode::NXDomain);

    dns.update(&hello_set(3, "10.96.0.10")).unwrap();
    let first = ask_udp(server.udp, "hello.berth.", RecordType::A).await;
    assert_eq!(a_records(&first), vec![("10.96.0.10".parse().unwrap(), 5)]);

    // hello moves, db goes away.
    let mut next = hello_set(4, "10.96.0.11");
    next.services.retain(|s| s.name == "hello");
    dns.update(&next).unwrap();
    assert_eq!(dns.generation(), 4);
    let moved = ask_tcp(server.tcp, "hello.berth.", RecordType::A).await;
    assert_eq!(a_records(&moved), vec![("10.96.0.11".parse().unwrap(), 5)]);
    let gone = ask_udp(server.udp, "db.berth.", RecordType::A).await;
    assert_eq!(gone.metadata.response_code, ResponseCode::NXDomain);

    // An older set arriving late changes nothing.
    dns.update(&hello_set(2, "10.96.0.99")).unwrap();
    assert_eq!(dns.generation(), 4);
    let still = ask_udp(server.udp, "hello.berth.", RecordType::A).await;
    assert_eq!(a_records(&still), vec![("10.96.0.11".parse().unwrap(), 5)]);
    server.shutdown().await;
}

#[tokio::test]
async fn a_bad_set_is_refused_naming_the_service_and_field_and_keeps_the_answers() {
    let dns = Dns::new(&[]).unwrap();
    dns.update(&hello_set(1, "10.96.0.10")).unwrap();
    let cases = [
        (
            service("Bad_Name", "10.96.0.1", vec![]),
            "\"Bad_Name\": name",
        ),
        (service("web", "10.96.0", vec![]), "\"web\": virtual_ip"),
        (
            service(
                "web",
                "10.96.0.1",
                vec![port("http", 70_000, Protocol::Tcp)],
            ),
            "\"web\": ports: port 70000 is out of range",
        ),
        (
            service("web", "10.96.0.1", vec![port("no.dots", 80, Protocol::Tcp)]),
            "\"web\": ports: port name",
        ),
        (
            ServicePort {
                protocol: 7,
                ..port("x", 80, Protocol::Tcp)
            }
            .into_service(),
            "unknown protocol 7",
        ),
    ];
    for (bad, expected) in cases {
        let set = ServiceSet {
            generation: 9,
            services: vec![bad],
        };
        let err = dns.update(&set).unwrap_err().to_string();
        assert!(
            err.contains(expected),
            "{err:?} should contain {expected:?}"
        );
    }
    assert_eq!(dns.generation(), 1);
    let server = start(&dns).await;
    let kept = ask_udp(server.udp, "hello.berth.", RecordType::A).await;
    assert_eq!(a_records(&kept), vec![("10.96.0.10".parse().unwrap(), 5)]);
    server.shutdown().await;
}

trait IntoService {
    fn into_service(self) -> Service;
}

impl IntoService for ServicePort {
    fn into_service(self) -> Service {
        service("web", "10.96.0.1", vec![self])
    }
}

#[tokio::test]
async fn names_outside_the_cluster_are_forwarded_to_the_upstream() {
    let (upstream_addr, mut upstream_server) = dns_upstream().await;
    let upstreams = parse_upstreams(&upstream_addr.to_string()).unwrap();
    assert_eq!(upstreams, vec![upstream_addr]);
    let dns = Dns::new(&upstreams).unwrap();
    dns.update(&hello_set(1, "10.96.0.10")).unwrap();
    let server = start(&dns).await;

    let forwarded = ask_udp(server.udp, UPSTREAM_NAME, RecordType::A).await;
    assert_eq!(forwarded.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        a_records(&forwarded).first().map(|r| r.0),
        Some(UPSTREAM_ADDR.parse().unwrap())
    );
    let over_tcp = ask_tcp(server.tcp, UPSTREAM_NAME, RecordType::A).await;
    assert_eq!(
        a_records(&over_tcp).first().map(|r| r.0),
        Some(UPSTREAM_ADDR.parse().unwrap())
    );
    let missing = ask_udp(server.udp, "nothing.example.test.", RecordType::A).await;
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    // The cluster's own names never leave the node.
    let local = ask_udp(server.udp, "hello.berth.", RecordType::A).await;
    assert_eq!(a_records(&local), vec![("10.96.0.10".parse().unwrap(), 5)]);

    server.shutdown().await;
    upstream_server.shutdown_gracefully().await.unwrap();
}

#[tokio::test]
async fn shutdown_leaves_no_listener() {
    let dns = Dns::new(&[]).unwrap();
    dns.update(&hello_set(1, "10.96.0.10")).unwrap();
    let server = start(&dns).await;
    let (udp, tcp) = (server.udp, server.tcp);
    let answered = ask_udp(udp, "hello.berth.", RecordType::A).await;
    assert_eq!(a_records(&answered).len(), 1);
    server.shutdown().await;
    // Both addresses are free again: nothing holds them.
    std::net::UdpSocket::bind(udp).expect("the UDP port is released");
    std::net::TcpListener::bind(tcp).expect("the TCP port is released");
    assert!(
        TcpStream::connect(tcp).await.is_err(),
        "nothing accepts on {tcp}"
    );
}

#[test]
fn upstreams_parse_with_and_without_ports_and_name_bad_ones() {
    let parsed = parse_upstreams("10.0.0.2, 127.0.0.1:5353,[::1]:54").unwrap();
    let expected: Vec<SocketAddr> = vec![
        "10.0.0.2:53".parse().unwrap(),
        "127.0.0.1:5353".parse().unwrap(),
        "[::1]:54".parse().unwrap(),
    ];
    assert_eq!(parsed, expected);
    let err = parse_upstreams("10.0.0.2,dns.example")
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"dns.example\""), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("resolv.conf");
    std::fs::write(
        &conf,
        "search lan\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n",
    )
    .unwrap();
    let host = berth_agent::dns::host_upstreams(&conf).unwrap();
    assert_eq!(
        host,
        vec![
            "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
            "192.0.2.54:53".parse().unwrap()
        ]
    );
}

/// Query latency over loopback UDP, one query in flight (reported, not asserted); the
/// server gets worker threads of its own, as in the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_latency_is_reported() {
    let dns = Dns::new(&[]).unwrap();
    dns.update(&hello_set(1, "10.96.0.10")).unwrap();
    let server = start(&dns).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server.udp).await.unwrap();
    let body = query("hello.berth.", RecordType::A);
    let mut buf = vec![0u8; 512];
    let mut samples = Vec::with_capacity(5000);
    for _ in 0..5000 {
        let began = Instant::now();
        socket.send(&body).await.unwrap();
        let n = tokio::time::timeout(WAIT, socket.recv(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        samples.push(began.elapsed());
        assert!(n > 12, "an answer longer than a header");
    }
    samples.sort();
    let at = |q: usize| samples[samples.len() * q / 100];
    eprintln!(
        "node DNS query latency over loopback UDP, 5000 queries: p50 {:?}, p99 {:?}, max {:?}",
        at(50),
        at(99),
        samples[samples.len() - 1]
    );
    server.shutdown().await;
}
