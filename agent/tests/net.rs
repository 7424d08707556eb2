//! Node networking against the real kernel, as root: every test builds its own "node" netns
//! (`ip netns add`) and state dir, and removes both when it ends, even on panic. Traffic only
//! ever flows over loopback and the namespaces a test made.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use berth_agent::net::{NetError, host_veth_name};
use berth_proto::v1::{PodRoute, PortMapping, Protocol};
use common::{Node, in_netns, run};

/// A TCP server inside `ns` on `addr`, answering `count` connections with "pong:<peer ip>:"
/// followed by what it read.
fn tcp_server(ns: &Path, addr: SocketAddrV4, count: usize) -> (u16, std::thread::JoinHandle<()>) {
    // The listener stays in the netns it was created in, whichever thread uses it later.
    let listener = in_netns(ns, || TcpListener::bind(addr).unwrap());
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        for _ in 0..count {
            let (mut conn, peer) = listener.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut got = String::new();
            conn.read_to_string(&mut got).unwrap();
            write!(conn, "pong:{}:{got}", peer.ip()).unwrap();
        }
    });
    (port, handle)
}

/// From inside `ns`: connects to `to`, sends "ping" and returns the answer.
fn tcp_exchange(ns: &Path, to: SocketAddr) -> String {
    in_netns(ns, || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {to}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"ping").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
    })
}

fn tcp(host: u16, container: u16) -> PortMapping {
    PortMapping {
        host_port: host.into(),
        container_port: container.into(),
        protocol: Protocol::Tcp as i32,
    }
}

fn udp(host: u16, container: u16) -> PortMapping {
    PortMapping {
        protocol: Protocol::Udp as i32,
        ..tcp(host, container)
    }
}

/// The IPv4 addresses on eth0 inside the netns file `ns`.
fn eth0_addrs(ns: &Path) -> String {
    let net = format!("--net={}", ns.display());
    run(&[
        "nsenter", &net, "ip", "-4", "-o", "addr", "show", "dev", "eth0",
    ])
}

fn is_mounted(path: &Path) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_str().unwrap();
    mountinfo.lines().any(|l| l.split(' ').nth(4) == Some(p))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_on_one_node_reach_each_other() {
    let node = Node::new(1);
    let net = node.setup().await;
    // setup is idempotent.
    let net = {
        drop(net);
        node.setup().await
    };
    assert_eq!(net.gateway(), Ipv4Addr::new(10, 231, 1, 1));
    let a = net.attach("ctr-a", &[]).await.unwrap();
    let b = net.attach("ctr-b", &[]).await.unwrap();
    assert_ne!(a.ip, b.ip);
    for att in [&a, &b] {
        assert!(
            node.cidr.contains(&att.ip),
            "{} not in {}",
            att.ip,
            node.cidr
        );
        assert_ne!(att.ip, net.gateway());
        assert!(eth0_addrs(&att.netns).contains(&format!("{}/24", att.ip)));
    }
    assert!(node.has_link(&host_veth_name("ctr-a")));

    // Attaching again is a no-op returning the same place.
    assert_eq!(net.attach("ctr-a", &[]).await.unwrap(), a);
    assert!(eth0_addrs(&a.netns).contains(&a.ip.to_string()));

    let (port, server) = tcp_server(&b.netns, SocketAddrV4::new(b.ip, 0), 1);
    let answer = tcp_exchange(&a.netns, SocketAddr::from((b.ip, port)));
    assert_eq!(
        answer,
        format!("pong:{}:ping", a.ip),
        "direct on the bridge, no NAT"
    );
    server.join().unwrap();

    // And the gateway answers pings from a container.
    let net_arg = format!("--net={}", a.netns.display());
    let gw = net.gateway().to_string();
    run(&["nsenter", &net_arg, "busybox", "ping", "-c1", "-W2", &gw]);

    net.detach("ctr-a").await.unwrap();
    net.detach("ctr-b").await.unwrap();
    net.teardown().await.unwrap();
    assert!(!node.has_link(net.bridge()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_ports_answer_on_loopback_and_gateway() {
    let node = Node::new(2);
    let net = node.setup().await;
    let c = net
        .attach("web", &[tcp(18080, 8080), udp(18053, 5353)])
        .await
        .unwrap();

    let (_, server) = tcp_server(&c.netns, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8080), 3);
    let gw = net.gateway();
    // From the node itself through 127.0.0.1: DNAT in output, then masquerade to the gateway.
    let answer = tcp_exchange(&node.ns_path, SocketAddr::from(([127, 0, 0, 1], 18080)));
    assert_eq!(answer, format!("pong:{gw}:ping"));
    let answer = tcp_exchange(&node.ns_path, SocketAddr::from((gw, 18080)));
    assert_eq!(answer, format!("pong:{gw}:ping"));
    // Another container through the node's published port (prerouting DNAT, then hairpin
    // masquerade so the reply goes back through the node).
    let other = net.attach("client", &[]).await.unwrap();
    let answer = tcp_exchange(&other.netns, SocketAddr::from((gw, 18080)));
    assert_eq!(answer, format!("pong:{gw}:ping"));
    server.join().unwrap();

    let udp_server = in_netns(&c.netns, || UdpSocket::bind("0.0.0.0:5353").unwrap());
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        udp_server
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (n, from) = udp_server.recv_from(&mut buf).unwrap();
        udp_server.send_to(&buf[..n], from).unwrap();
    });
    let reply = in_netns(&node.ns_path, || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 64];
        loop {
            s.send_to(b"dns?", "127.0.0.1:18053").unwrap();
            match s.recv_from(&mut buf) {
                Ok((n, _)) => break buf[..n].to_vec(),
                Err(e) if Instant::now() < deadline => eprintln!("udp retry: {e}"),
                Err(e) => panic!("no udp answer: {e}"),
            }
        }
    });
    assert_eq!(reply, b"dns?");
    echo.join().unwrap();

    let table = node.nft_table(&net);
    assert!(
        table.contains(&format!("18080 : {} . 8080", c.ip)),
        "{table}"
    );
    assert!(
        table.contains(&format!("18053 : {} . 5353", c.ip)),
        "{table}"
    );
    net.detach("web").await.unwrap();
    net.detach("client").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_removes_everything_and_state_survives_restart() {
    let node = Node::new(3);
    let net = node.setup().await;
    let x = net.attach("x", &[tcp(18100, 80)]).await.unwrap();
    let veth = host_veth_name("x");
    assert!(node.has_link(&veth));
    assert!(is_mounted(&x.netns));
    assert!(node.nft_table(&net).contains("18100"));
    assert_eq!(net.attached().unwrap(), ["x"]);
    assert_eq!(net.ip_of("x"), Some(x.ip));

    net.detach("x").await.unwrap();
    assert!(!node.has_link(&veth));
    assert!(!x.netns.exists());
    assert!(!is_mounted(&x.netns));
    assert!(!node.nft_table(&net).contains("18100"));
    assert!(net.attached().unwrap().is_empty());
    assert_eq!(net.ip_of("x"), None);
    // Detach is idempotent.
    net.detach("x").await.unwrap();

    // Attach after detach gets a lease (and its port back).
    let x = net.attach("x", &[tcp(18100, 80)]).await.unwrap();
    let y = net.attach("y", &[]).await.unwrap();
    assert_ne!(x.ip, y.ip);

    // "Restart": a new NodeNetwork over the same state finds both containers.
    drop(net);
    let net = node.setup().await;
    assert_eq!(net.attached().unwrap(), ["x", "y"]);
    assert_eq!(net.ip_of("y"), Some(y.ip));
    assert!(
        node.nft_table(&net)
            .contains(&format!("18100 : {} . 80", x.ip))
    );
    // A new container never gets an address held from before the restart.
    let z = net.attach("z", &[]).await.unwrap();
    assert!(z.ip != x.ip && z.ip != y.ip);
    // A crash may have removed pieces already: detach copes.
    run(&[
        "ip",
        "-n",
        &node.ns_name,
        "link",
        "del",
        &host_veth_name("y"),
    ]);
    for id in ["x", "y", "z"] {
        net.detach(id).await.unwrap();
    }
    assert!(net.attached().unwrap().is_empty());
    assert!(!node.nft_table(&net).contains("18100"));
    // A netns file left without a lease (crash mid-attach) shows up and is swept by detach.
    std::fs::write(node.dir.path().join("netns/orphan"), b"").unwrap();
    assert_eq!(net.attached().unwrap(), ["orphan"]);
    net.detach("orphan").await.unwrap();
    assert!(net.attached().unwrap().is_empty());
    net.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipam_exhaustion_and_concurrency() {
    // /29: .1 is the gateway, .2-.6 for containers.
    let node = Node::with_cidr(4, "10.231.4.0/29");
    let net = std::sync::Arc::new(node.setup().await);
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let net = net.clone();
            tokio::spawn(async move { (i, net.attach(&format!("c{i}"), &[]).await) })
        })
        .collect();
    let mut ips = Vec::new();
    let mut refused = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (_, Ok(att)) => ips.push(att.ip),
            (i, Err(NetError::NoAddressLeft { cidr })) => {
                assert_eq!(cidr, node.cidr);
                refused.push(i);
            }
            (i, Err(e)) => panic!("c{i}: {e}"),
        }
    }
    assert_eq!(refused.len(), 1, "exactly one of six is refused");
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 5, "no address handed out twice: {ips:?}");
    assert!(!ips.contains(&net.gateway()));
    let loser = format!("c{}", refused[0]);
    assert!(!net.attached().unwrap().contains(&loser));
    assert!(!node.has_link(&host_veth_name(&loser)));
    assert!(!net.netns_path(&loser).exists());

    // Freeing one makes room again.
    let freed = (0..6)
        .map(|i| format!("c{i}"))
        .find(|id| *id != loser)
        .unwrap();
    net.detach(&freed).await.unwrap();
    net.attach(&loser, &[]).await.unwrap();
    for i in 0..6 {
        net.detach(&format!("c{i}")).await.unwrap();
    }
    assert!(net.attached().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attach_leaves_nothing_behind() {
    let node = Node::new(5);
    let net = node.setup().await;
    // Without the bridge the veth cannot be plugged in: the attach fails half way.
    run(&["ip", "-n", &node.ns_name, "link", "del", net.bridge()]);
    let err = net.attach("doomed", &[tcp(18300, 80)]).await.unwrap_err();
    assert!(err.to_string().contains(net.bridge()), "{err}");
    assert!(net.attached().unwrap().is_empty());
    assert!(!net.netns_path("doomed").exists());
    assert!(!node.has_link(&host_veth_name("doomed")));
    assert!(!node.nft_table(&net).contains("18300"));
    // setup repairs the node, and the same attach then works.
    let net = node.setup().await;
    net.attach("doomed", &[tcp(18300, 80)]).await.unwrap();
    net.detach("doomed").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_ports_refuses_reserved_and_bound_ports() {
    let node = Node::new(6);
    let net = node.setup().await;
    net.attach("a", &[tcp(18200, 80)]).await.unwrap();
    net.check_ports("a", &[tcp(18200, 80)]).unwrap();
    net.check_ports("b", &[udp(18200, 80)]).unwrap();
    match net.check_ports("b", &[tcp(18200, 81)]) {
        Err(NetError::PortInUse {
            port: 18200,
            protocol: "tcp",
            holder,
        }) => assert!(holder.contains('a'), "{holder}"),
        other => panic!("expected PortInUse, got {other:?}"),
    }
    // A process on the node listening on the port (in the node netns, not the test's own).
    let listener = in_netns(&node.ns_path, || {
        TcpListener::bind("0.0.0.0:18201").unwrap()
    });
    net.check_ports("b", &[tcp(18202, 80)]).unwrap();
    assert!(matches!(
        net.check_ports("b", &[tcp(18202, 80), tcp(18201, 80)]),
        Err(NetError::PortInUse { port: 18201, .. })
    ));
    let udp_holder = in_netns(&node.ns_path, || UdpSocket::bind("0.0.0.0:18203").unwrap());
    assert!(matches!(
        net.check_ports("b", &[udp(18203, 53)]),
        Err(NetError::PortInUse {
            port: 18203,
            protocol: "udp",
            ..
        })
    ));
    // attach refuses the same way and leaves no lease.
    assert!(matches!(
        net.attach("b", &[tcp(18201, 80)]).await,
        Err(NetError::PortInUse { port: 18201, .. })
    ));
    assert!(matches!(
        net.attach("b", &[tcp(18200, 80)]).await,
        Err(NetError::PortInUse { port: 18200, .. })
    ));
    assert_eq!(net.attached().unwrap(), ["a"]);
    drop((listener, udp_holder));
    net.check_ports("b", &[tcp(18201, 80), udp(18203, 53)])
        .unwrap();
    net.detach("a").await.unwrap();
    net.check_ports("b", &[tcp(18200, 80)]).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_routes_installs_and_replaces() {
    let node = Node::new(7);
    let ns = node.ns_name.as_str();
    // Somewhere for the other nodes' addresses to be on-link: a veth pair whose both ends stay
    // in the node netns (this kernel has no dummy driver), so nothing leaves it.
    run(&[
        "ip", "-n", ns, "link", "add", "d0", "type", "veth", "peer", "name", "d1",
    ]);
    run(&[
        "ip",
        "-n",
        ns,
        "addr",
        "add",
        "192.168.231.1/24",
        "dev",
        "d0",
    ]);
    run(&["ip", "-n", ns, "link", "set", "d0", "up"]);
    run(&["ip", "-n", ns, "link", "set", "d1", "up"]);
    let net = node.setup().await;
    let route = |node: &str, cidr: &str, via: &str| PodRoute {
        node_name: node.into(),
        pod_cidr: cidr.into(),
        node_address: via.into(),
    };
    let routes = || run(&["ip", "-n", ns, "-4", "route", "show", "proto", "190"]);

    net.set_routes(&[
        route("other1", "10.232.1.0/24", "192.168.231.2"),
        route("other2", "10.232.3.0/24", "192.168.231.3"),
        route(&node.node_name, &node.cidr.to_string(), "192.168.231.1"),
    ])
    .await
    .unwrap();
    let got = routes();
    assert!(got.contains("10.232.1.0/24 via 192.168.231.2"), "{got}");
    assert!(got.contains("10.232.3.0/24 via 192.168.231.3"), "{got}");
    assert_eq!(got.lines().count(), 2, "own CIDR is not routed: {got}");
    assert!(node.nft_table(&net).contains("10.232.1.0/24"));

    net.set_routes(&[route("other1", "10.232.1.0/24", "192.168.231.4")])
        .await
        .unwrap();
    let got = routes();
    assert_eq!(got.trim(), "10.232.1.0/24 via 192.168.231.4 dev d0");
    let table = node.nft_table(&net);
    assert!(!table.contains("10.232.3.0/24"), "{table}");

    assert!(matches!(
        net.set_routes(&[route("bad", "nonsense", "192.168.231.4")])
            .await,
        Err(NetError::InvalidRoute { .. })
    ));
    net.set_routes(&[]).await.unwrap();
    assert_eq!(routes().trim(), "");
    net.teardown().await.unwrap();
}
