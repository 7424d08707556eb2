//! The service load balancer against the real kernel, as root: each test builds its own node
//! netns with containers attached to its bridge, runs tiny TCP and UDP backends inside the
//! containers' netns, programs a ServiceSet and calls the virtual IP from a client container.
//! Traffic only flows inside the namespaces the test made.

mod common;

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use berth_agent::net::{Attachment, NetError, NodeNetwork, ServicesOutcome};
use berth_proto::v1::{Endpoint, Protocol, Service, ServicePort, ServiceSet};
use common::{Node, in_netns, run, succeeds};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const TIMEOUT: Duration = Duration::from_secs(5);

/// A backend in container `att`: TCP and UDP on `port`, answering every request with
/// "NAME PEER_IP" until the process ends.
fn backend(att: &Attachment, name: &str, port: u16) {
    let (tcp, udp) = in_netns(&att.netns, || {
        (
            TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap(),
            UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap(),
        )
    });
    let tag = name.to_owned();
    std::thread::spawn(move || {
        for conn in tcp.incoming() {
            let Ok(mut conn) = conn else { continue };
            let peer = conn.peer_addr().map(|p| p.ip().to_string());
            let mut buf = [0u8; 16];
            conn.set_read_timeout(Some(TIMEOUT)).unwrap();
            let _ = conn.read(&mut buf);
            let _ = write!(conn, "{tag} {}", peer.unwrap_or_default());
        }
    });
    let tag = name.to_owned();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((_, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(format!("{tag} {}", from.ip()).as_bytes(), from);
        }
    });
}

/// One TCP request over a fresh connection (so each is balanced anew): the answer, or the
/// error kind.
fn tcp_call(to: SocketAddr) -> Result<String, ErrorKind> {
    let mut s = TcpStream::connect_timeout(&to, TIMEOUT).map_err(|e| e.kind())?;
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"ping").map_err(|e| e.kind())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(|e| e.kind())?;
    Ok(answer)
}

/// One UDP request on `sock` (connected to the VIP), retried on loss.
fn udp_call(sock: &UdpSocket) -> Result<String, ErrorKind> {
    let mut buf = [0u8; 64];
    for _ in 0..10 {
        sock.send(b"ping").map_err(|e| e.kind())?;
        match sock.recv(&mut buf) {
            Ok(n) => return Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e.kind()),
        }
    }
    Err(ErrorKind::TimedOut)
}

fn udp_socket(to: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s.connect(to).unwrap();
    s
}

/// The backend name in an answer ("b1 10.231.41.5" → "b1").
fn who(answer: &str) -> String {
    answer.split(' ').next().unwrap_or_default().to_owned()
}

fn service(
    name: &str,
    vip: Ipv4Addr,
    ports: &[(u16, u16, Protocol)],
    eps: &[&Attachment],
) -> Service {
    Service {
        name: name.into(),
        virtual_ip: vip.to_string(),
        ports: ports
            .iter()
            .map(|(port, target, p)| ServicePort {
                name: String::new(),
                port: (*port).into(),
                target: (*target).into(),
                protocol: *p as i32,
            })
            .collect(),
        endpoints: eps
            .iter()
            .map(|a| Endpoint {
                container_id: a.ip.to_string(),
                node: "local".into(),
                ip: a.ip.to_string(),
            })
            .collect(),
    }
}

fn web(eps: &[&Attachment]) -> Service {
    service(
        "web",
        VIP,
        &[(80, 8080, Protocol::Tcp), (53, 8080, Protocol::Udp)],
        eps,
    )
}

async fn apply(net: &NodeNetwork, generation: u64, services: Vec<Service>) -> ServicesOutcome {
    net.apply_services(&ServiceSet {
        generation,
        services,
    })
    .await
    .unwrap()
}

/// A node with `n` backends (b0..) listening on 8080 and one client container.
async fn node_with_backends(
    octet: u8,
    n: usize,
) -> (Node, NodeNetwork, Vec<Attachment>, Attachment) {
    let node = Node::new(octet);
    let net = node.setup().await;
    // Real nodes have a default route; a fresh netns has none, and a packet the node itself
    // sends to a VIP needs a route before the output hook's DNAT picks the endpoint.
    run(&[
        "ip",
        "-n",
        &node.ns_name,
        "route",
        "add",
        "default",
        "dev",
        net.bridge(),
    ]);
    let mut backends = Vec::new();
    for i in 0..n {
        let att = net.attach(&format!("b{i}"), &[]).await.unwrap();
        backend(&att, &format!("b{i}"), 8080);
        backends.push(att);
    }
    let client = net.attach("client", &[]).await.unwrap();
    (node, net, backends, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vip_reaches_every_endpoint_over_tcp_and_udp() {
    let (node, net, b, client) = node_with_backends(41, 3).await;
    let outcome = apply(&net, 1, vec![web(&[&b[0], &b[1], &b[2]])]).await;
    assert_eq!(
        outcome,
        ServicesOutcome::Applied {
            generation: 1,
            flushed: 0,
            rebuilt: true,
        }
    );
    assert_eq!(net.applied_service_generation(), 1);

    let (tcp_seen, udp_seen) = in_netns(&client.netns, || {
        let mut tcp = BTreeSet::new();
        let mut udp = BTreeSet::new();
        for _ in 0..60 {
            tcp.insert(who(&tcp_call(SocketAddr::from((VIP, 80))).unwrap()));
            // A fresh socket is a fresh flow, balanced anew.
            udp.insert(who(
                &udp_call(&udp_socket(SocketAddr::from((VIP, 53)))).unwrap()
            ));
        }
        (tcp, udp)
    });
    let all: BTreeSet<String> = ["b0", "b1", "b2"].map(String::from).into();
    assert_eq!(tcp_seen, all, "TCP over 60 calls");
    assert_eq!(udp_seen, all, "UDP over 60 calls");

    // From the node itself (output hook).
    let answer = in_netns(&node.ns_path, || tcp_call(SocketAddr::from((VIP, 80))));
    assert!(answer.unwrap().starts_with('b'));

    // An older set is ignored and changes nothing; the same set again is acknowledged again.
    apply(&net, 5, vec![web(&[&b[0], &b[1], &b[2]])]).await;
    assert_eq!(
        apply(&net, 4, vec![]).await,
        ServicesOutcome::Stale { applied: 5 }
    );
    let answer = in_netns(&client.netns, || tcp_call(SocketAddr::from((VIP, 80))));
    assert!(
        answer.unwrap().starts_with('b'),
        "the stale empty set was not applied"
    );
    let table = node.nft_services_table(&net);
    assert!(table.contains("numgen random mod 3"), "{table}");
    assert!(
        table.contains(&format!("{VIP} . tcp . 80 : goto svc_web_tcp_80")),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_are_atomic_and_flush_departed_udp_flows() {
    let (node, net, b, client) = node_with_backends(42, 3).await;
    apply(&net, 1, vec![web(&[&b[0], &b[1]])]).await;

    // Calls run without pause while sets alternate between {b0, b1} and {b1, b2}: every
    // call must be answered (a table flushed and refilled in two steps would refuse some).
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, failures, calls) = (stop.clone(), failures.clone(), calls.clone());
        let ns = client.netns.clone();
        std::thread::spawn(move || {
            in_netns(&ns, || {
                while !stop.load(Ordering::SeqCst) {
                    if let Err(e) = tcp_call(SocketAddr::from((VIP, 80))) {
                        eprintln!("call failed: {e:?}");
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                    calls.fetch_add(1, Ordering::SeqCst);
                }
            });
        })
    };
    for generation in 2..=21 {
        let eps = if generation % 2 == 0 {
            vec![&b[1], &b[2]]
        } else {
            vec![&b[0], &b[1]]
        };
        let outcome = apply(&net, generation, vec![web(&eps)]).await;
        assert!(
            matches!(outcome, ServicesOutcome::Applied { rebuilt: false, .. }),
            "an update changes only what differs: {outcome:?}"
        );
        // Let some calls through between updates.
        let seen = calls.load(Ordering::SeqCst);
        while calls.load(Ordering::SeqCst) < seen + 3 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "of {} calls",
        calls.load(Ordering::SeqCst)
    );

    // The last set (generation 21) holds b0 and b1: b2 is never chosen.
    let seen: BTreeSet<String> = in_netns(&client.netns, || {
        (0..30)
            .map(|_| who(&tcp_call(SocketAddr::from((VIP, 80))).unwrap()))
            .collect()
    });
    assert_eq!(seen, ["b0", "b1"].map(String::from).into());

    // A UDP flow pinned to b2: once b2 leaves, the same socket (same conntrack entry) moves
    // to a live endpoint, because the agent flushed the flow.
    apply(&net, 22, vec![web(&[&b[2]])]).await;
    let sock = in_netns(&client.netns, || udp_socket(SocketAddr::from((VIP, 53))));
    assert_eq!(who(&udp_call(&sock).unwrap()), "b2");
    let outcome = apply(&net, 23, vec![web(&[&b[0]])]).await;
    assert_eq!(
        outcome,
        ServicesOutcome::Applied {
            generation: 23,
            flushed: 1,
            rebuilt: false,
        }
    );
    assert_eq!(who(&udp_call(&sock).unwrap()), "b0", "the UDP flow moved");
    let flows = run(&[
        "ip",
        "netns",
        "exec",
        &node.ns_name,
        "conntrack",
        "-L",
        "-p",
        "udp",
        "--reply-src",
        &b[2].ip.to_string(),
    ]);
    assert!(!flows.contains(&VIP.to_string()), "{flows}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_endpoints_refuses_at_once() {
    let (node, net, b, client) = node_with_backends(43, 1).await;
    apply(&net, 1, vec![web(&[])]).await;
    let (tcp, udp) = in_netns(&client.netns, || {
        let tcp = tcp_call(SocketAddr::from((VIP, 80)));
        let udp = udp_call(&udp_socket(SocketAddr::from((VIP, 53))));
        (tcp, udp)
    });
    assert_eq!(tcp, Err(ErrorKind::ConnectionRefused), "TCP gets a reset");
    assert_eq!(
        udp,
        Err(ErrorKind::ConnectionRefused),
        "UDP gets port-unreachable"
    );
    let from_node = in_netns(&node.ns_path, || tcp_call(SocketAddr::from((VIP, 80))));
    assert_eq!(
        from_node,
        Err(ErrorKind::ConnectionRefused),
        "from the node too"
    );
    // An endpoint arrives: the same VIP answers.
    apply(&net, 2, vec![web(&[&b[0]])]).await;
    let answer = in_netns(&client.netns, || tcp_call(SocketAddr::from((VIP, 80))));
    assert_eq!(who(&answer.unwrap()), "b0");
    // The service goes: its chains and elements go with it, the hooks stay.
    apply(&net, 3, vec![]).await;
    let table = node.nft_services_table(&net);
    assert!(
        !table.contains("_web_") && !table.contains(&VIP.to_string()),
        "{table}"
    );
    assert!(table.contains("nat_prerouting"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_reaches_itself_through_its_service() {
    let (_node, net, b, _client) = node_with_backends(44, 1).await;
    apply(&net, 1, vec![web(&[&b[0]])]).await;
    let (tcp, udp) = in_netns(&b[0].netns, || {
        let tcp = tcp_call(SocketAddr::from((VIP, 80)));
        let udp = udp_call(&udp_socket(SocketAddr::from((VIP, 53))));
        (tcp, udp)
    });
    // Masqueraded to the gateway: the replica answers the node, which un-NATs the reply.
    let expected = format!("b0 {}", net.gateway());
    assert_eq!(tcp.unwrap(), expected, "TCP hairpin");
    assert_eq!(udp.unwrap(), expected, "UDP hairpin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sets_are_refused_whole_and_teardown_leaves_no_table() {
    let (node, net, b, client) = node_with_backends(45, 1).await;
    apply(&net, 1, vec![web(&[&b[0]])]).await;
    let mut bad = web(&[&b[0]]);
    bad.name = "Not_A_Label".into();
    let err = net
        .apply_services(&ServiceSet {
            generation: 2,
            services: vec![
                service("other", Ipv4Addr::new(10, 96, 0, 11), &[], &[]),
                bad,
            ],
        })
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::InvalidService { .. }), "{err}");
    assert!(
        err.to_string().contains("Not_A_Label") && err.to_string().contains("name"),
        "{err}"
    );
    assert_eq!(
        net.applied_service_generation(),
        1,
        "nothing of the bad set was applied"
    );
    let answer = in_netns(&client.netns, || tcp_call(SocketAddr::from((VIP, 80))));
    assert_eq!(who(&answer.unwrap()), "b0");

    // Someone removed the table behind the agent's back: the next set rebuilds it whole.
    let table = net.services_table().to_owned();
    run(&[
        "ip",
        "netns",
        "exec",
        &node.ns_name,
        "nft",
        "delete",
        "table",
        "ip",
        &table,
    ]);
    let outcome = apply(
        &net,
        3,
        vec![
            web(&[&b[0]]),
            service(
                "idle",
                Ipv4Addr::new(10, 96, 0, 12),
                &[(80, 80, Protocol::Tcp)],
                &[],
            ),
        ],
    )
    .await;
    assert!(
        matches!(outcome, ServicesOutcome::Applied { rebuilt: true, .. }),
        "{outcome:?}"
    );
    let answer = in_netns(&client.netns, || tcp_call(SocketAddr::from((VIP, 80))));
    assert_eq!(who(&answer.unwrap()), "b0");

    for id in ["b0", "client"] {
        net.detach(id).await.unwrap();
    }
    net.teardown().await.unwrap();
    assert!(
        !succeeds(&[
            "ip",
            "netns",
            "exec",
            &node.ns_name,
            "nft",
            "list",
            "table",
            "ip",
            &table
        ]),
        "the services table is gone"
    );
    let flows = run(&["ip", "netns", "exec", &node.ns_name, "conntrack", "-L"]);
    assert!(!flows.contains(&VIP.to_string()), "{flows}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_on_another_node_are_reached_over_pod_routes() {
    use berth_proto::v1::PodRoute;
    let (a, b) = (Node::new(46), Node::new(47));
    // The two nodes' link: a veth pair with one end in each node netns.
    let (va, vb) = (format!("sva{}", a.node_name), format!("svb{}", b.node_name));
    run(&[
        "ip", "-n", &a.ns_name, "link", "add", &va, "type", "veth", "peer", "name", &vb, "netns",
        &b.ns_name,
    ]);
    for (node, link, addr) in [(&a, &va, "192.168.46.1/24"), (&b, &vb, "192.168.46.2/24")] {
        run(&["ip", "-n", &node.ns_name, "addr", "add", addr, "dev", link]);
        run(&["ip", "-n", &node.ns_name, "link", "set", link, "up"]);
    }
    let (net_a, net_b) = (a.setup().await, b.setup().await);
    let routes = [
        PodRoute {
            node_name: a.node_name.clone(),
            pod_cidr: a.cidr.to_string(),
            node_address: "192.168.46.1".into(),
        },
        PodRoute {
            node_name: b.node_name.clone(),
            pod_cidr: b.cidr.to_string(),
            node_address: "192.168.46.2".into(),
        },
    ];
    net_a.set_routes(&routes).await.unwrap();
    net_b.set_routes(&routes).await.unwrap();
    let remote = net_b.attach("remote", &[]).await.unwrap();
    backend(&remote, "remote", 8080);
    let client = net_a.attach("client", &[]).await.unwrap();
    let set = vec![web(&[&remote])];
    apply(&net_a, 1, set.clone()).await;
    apply(&net_b, 1, set).await;
    let (tcp, udp) = in_netns(&client.netns, || {
        let tcp = tcp_call(SocketAddr::from((VIP, 80)));
        let udp = udp_call(&udp_socket(SocketAddr::from((VIP, 53))));
        (tcp, udp)
    });
    // DNAT on the client's node, then the pod route; the source stays the client's own.
    let expected = format!("remote {}", client.ip);
    assert_eq!(tcp.unwrap(), expected);
    assert_eq!(udp.unwrap(), expected);
}

/// A service whose endpoints are bare addresses: nft needs no container behind them.
fn service_at(name: &str, vip: &str, ports: &[(u16, u16, Protocol)], eps: &[&str]) -> Service {
    let mut svc = service(name, vip.parse().unwrap(), ports, &[]);
    svc.endpoints = eps
        .iter()
        .map(|ip| Endpoint {
            container_id: format!("c-{ip}"),
            node: "local".into(),
            ip: (*ip).into(),
        })
        .collect();
    svc
}

/// `nft -j list table` output made comparable across tables: handles dropped, the table's
/// name replaced, map elements sorted, objects grouped by kind and chain (rules keep their
/// order within a chain).
fn comparable(listing: &str) -> Vec<String> {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(o) => {
                o.remove("handle");
                if let Some(t) = o.get_mut("table") {
                    if t.is_string() {
                        *t = "T".into();
                    } else if let Some(name) = t.get_mut("name") {
                        *name = "T".into();
                    }
                }
                if let Some(serde_json::Value::Array(elems)) = o.get_mut("elem") {
                    elems.sort_by_key(|e| e.to_string());
                }
                o.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut json: serde_json::Value = serde_json::from_str(listing).unwrap();
    strip(&mut json);
    let mut objects: Vec<serde_json::Value> = json["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o.get("metainfo").is_none())
        .cloned()
        .collect();
    let key = |o: &serde_json::Value| {
        let (kind, body) = o.as_object().unwrap().iter().next().unwrap();
        let name = body.get("chain").or(body.get("name"));
        (
            kind.clone(),
            name.map(ToString::to_string).unwrap_or_default(),
        )
    };
    objects.sort_by_key(key);
    objects.iter().map(ToString::to_string).collect()
}

/// The incremental update and a whole-table build agree: after every set of a sequence
/// (services added and removed, endpoints grown, shrunk, emptied and back, ports changed),
/// the table changed set by set lists exactly as a table built from that set alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_updates_list_as_a_whole_build() {
    use Protocol::{Tcp, Udp};
    let (x, y) = (Node::new(49), Node::new(50));
    let (net_x, net_y) = (x.setup().await, y.setup().await);
    let web =
        |ports: &[(u16, u16, Protocol)], eps: &[&str]| service_at("web", "10.96.0.10", ports, eps);
    let db = |eps: &[&str]| service_at("db", "10.96.0.11", &[(5432, 5432, Tcp)], eps);
    let cache = |eps: &[&str]| service_at("cache", "10.96.0.12", &[(6379, 6379, Tcp)], eps);
    let http = [(80, 8080, Tcp), (53, 5353, Udp)];
    let steps = vec![
        vec![web(&http, &["10.88.1.2", "10.88.1.3"]), db(&["10.88.1.4"])],
        vec![
            web(&http, &["10.88.1.2", "10.88.1.3", "10.88.2.5"]),
            db(&["10.88.1.4"]),
        ],
        vec![
            web(&http, &["10.88.1.3"]),
            db(&[]),
            cache(&["10.88.1.6", "10.88.2.7"]),
        ],
        vec![
            web(
                &[(80, 8081, Tcp), (443, 8443, Tcp)],
                &["10.88.1.3", "10.88.1.8"],
            ),
            db(&["10.88.1.4"]),
        ],
        vec![],
        vec![
            web(&http, &["10.88.1.2"]),
            db(&["10.88.1.4"]),
            cache(&["10.88.1.6"]),
        ],
    ];
    for (i, services) in steps.into_iter().enumerate() {
        let generation = u64::try_from(i).unwrap() + 1;
        let stepped = apply(&net_x, generation, services.clone()).await;
        if i > 0 {
            assert!(
                matches!(stepped, ServicesOutcome::Applied { rebuilt: false, .. }),
                "set {generation}: {stepped:?}"
            );
        }
        net_y.remove_services().await.unwrap();
        let whole = apply(&net_y, generation, services).await;
        assert!(
            matches!(whole, ServicesOutcome::Applied { rebuilt: true, .. }),
            "{whole:?}"
        );
        assert_eq!(
            comparable(&x.nft_services_json(&net_x)),
            comparable(&y.nft_services_json(&net_y)),
            "set {generation}: the incremental table differs from a whole build"
        );
    }
}

/// An echo server in container `att` on `port`: answers every read with the same bytes, on
/// one connection for as long as it stays open.
fn echo_backend(att: &Attachment, port: u16) {
    let listener = in_netns(&att.netns, || {
        TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap()
    });
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// p50 and p99 of `samples`, in microseconds.
fn percentiles(mut samples: Vec<Duration>) -> (u128, u128) {
    samples.sort();
    // The sample at `percent` of the way, in integer steps.
    let at = |percent: usize| {
        let last = samples.len().saturating_sub(1);
        samples[(last * percent / 100).min(last)].as_micros()
    };
    (at(50), at(99))
}

/// `n` timed calls of `call`, each of which must succeed.
fn timed(n: usize, mut call: impl FnMut()) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let start = std::time::Instant::now();
            call();
            start.elapsed()
        })
        .collect()
}

/// Measures, for the report (nothing is asserted about times): the latency a VIP adds over
/// the pod IP (a new connection per request, and requests on one open connection), and the
/// cost of a request as the table grows to 10, 1,000 and 5,000 services. Run with
/// `--no-capture` to see the figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measure_vip_latency_and_lookup_cost() {
    const N: usize = 2000;
    let (_node, net, b, client) = node_with_backends(48, 2).await;
    echo_backend(&b[0], 9090);
    let svc = |name: &str, vip: Ipv4Addr| {
        service(
            name,
            vip,
            &[(80, 8080, Protocol::Tcp), (90, 9090, Protocol::Tcp)],
            &[&b[0]],
        )
    };
    apply(&net, 1, vec![svc("web", VIP)]).await;
    let pod = b[0].ip;
    let report = in_netns(&client.netns, || {
        let mut lines = Vec::new();
        for (what, ip, port) in [("pod IP", pod, 8080), ("VIP", VIP, 80)] {
            let to = SocketAddr::from((ip, port));
            let (p50, p99) = percentiles(timed(N, || assert!(tcp_call(to).is_ok())));
            lines.push(format!(
                "new connection per request via {what}: p50 {p50} µs, p99 {p99} µs"
            ));
        }
        for (what, ip, port) in [("pod IP", pod, 9090), ("VIP", VIP, 90)] {
            let mut conn =
                TcpStream::connect_timeout(&SocketAddr::from((ip, port)), TIMEOUT).unwrap();
            conn.set_nodelay(true).unwrap();
            let mut buf = [0u8; 4];
            let (p50, p99) = percentiles(timed(N, || {
                conn.write_all(b"ping").unwrap();
                conn.read_exact(&mut buf).unwrap();
            }));
            lines.push(format!(
                "request on an open connection via {what}: p50 {p50} µs, p99 {p99} µs"
            ));
        }
        lines
    });
    for line in report {
        println!("measure: {line}");
    }

    for (generation, count) in [(2u64, 10usize), (3, 1000), (4, 5000)] {
        // The measured service sorts last; the others fill the map.
        let mut services: Vec<Service> = (0..count - 1)
            .map(|i| {
                let i = u32::try_from(i).unwrap();
                svc(&format!("filler-{i}"), Ipv4Addr::from(0x0a60_1000 + i))
            })
            .collect();
        services.push(svc("web", VIP));
        let started = std::time::Instant::now();
        apply(&net, generation, services).await;
        let applied_in = started.elapsed();
        let to = SocketAddr::from((VIP, 80));
        let samples = in_netns(&client.netns, || {
            timed(N / 2, || assert!(tcp_call(to).is_ok()))
        });
        let (p50, p99) = percentiles(samples);
        println!(
            "measure: {count} services: request via VIP p50 {p50} µs, p99 {p99} µs; \
             whole-table nft transaction {} ms",
            applied_in.as_millis()
        );
    }
    propagation(&net, &b, &client, svc).await;
}

/// With 5,000 services programmed, 100 endpoint changes of one service: the time from the
/// set arriving to the new endpoint answering through the VIP.
async fn propagation(
    net: &NodeNetwork,
    b: &[Attachment],
    client: &Attachment,
    svc: impl Fn(&str, Ipv4Addr) -> Service,
) {
    let fillers: Vec<Service> = (0..4999u32)
        .map(|i| {
            service(
                &format!("filler-{i}"),
                Ipv4Addr::from(0x0a60_1000 + i),
                &[(80, 8080, Protocol::Tcp), (90, 9090, Protocol::Tcp)],
                &[&b[0]],
            )
        })
        .collect();
    let (mut samples, mut applied) = (Vec::new(), Vec::new());
    for generation in 10..110u64 {
        let target = usize::from(generation % 2 == 1);
        let mut web = svc("web", VIP);
        web.endpoints.truncate(0);
        web.endpoints.push(Endpoint {
            container_id: format!("b{target}"),
            node: "local".into(),
            ip: b[target].ip.to_string(),
        });
        let mut services = fillers.clone();
        services.push(web);
        let started = std::time::Instant::now();
        let outcome = apply(net, generation, services).await;
        applied.push(started.elapsed());
        assert!(
            matches!(outcome, ServicesOutcome::Applied { rebuilt: false, .. }),
            "{outcome:?}"
        );
        let want = format!("b{target}");
        in_netns(&client.netns, || {
            while who(&tcp_call(SocketAddr::from((VIP, 80))).unwrap()) != want {}
        });
        samples.push(started.elapsed());
    }
    let (p50, p99) = percentiles(samples);
    let (a50, a99) = percentiles(applied);
    println!(
        "measure: endpoint change at 5000 services, set applied to new endpoint answering: \
         p50 {p50} µs, p99 {p99} µs (100 changes); of which applying the set: p50 {a50} µs, \
         p99 {a99} µs"
    );
}

/// Issue 16: a service in an environment other than the default is named `NAME.ENV`
/// (`web.staging`); it is balanced beside the default environment's `web`, each virtual IP
/// over its own endpoints only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_of_two_environments_balance_apart() {
    let (node, net, b, client) = node_with_backends(51, 2).await;
    let staging_vip = Ipv4Addr::new(10, 96, 0, 11);
    let mut staging = service(
        "web.staging",
        staging_vip,
        &[(80, 8080, Protocol::Tcp)],
        &[&b[1]],
    );
    staging.endpoints[0].container_id = "web.staging-1-abc123".into();
    let outcome = apply(&net, 1, vec![web(&[&b[0]]), staging]).await;
    assert!(
        matches!(outcome, ServicesOutcome::Applied { generation: 1, .. }),
        "{outcome:?}"
    );
    let (default_seen, staging_seen) = in_netns(&client.netns, || {
        let mut seen = (BTreeSet::new(), BTreeSet::new());
        for _ in 0..20 {
            seen.0
                .insert(who(&tcp_call(SocketAddr::from((VIP, 80))).unwrap()));
            seen.1
                .insert(who(&tcp_call(SocketAddr::from((staging_vip, 80))).unwrap()));
        }
        seen
    });
    assert_eq!(default_seen, BTreeSet::from(["b0".to_string()]));
    assert_eq!(staging_seen, BTreeSet::from(["b1".to_string()]));
    let table = node.nft_services_table(&net);
    assert!(
        table.contains(&format!(
            "{staging_vip} . tcp . 80 : goto svc_web_staging_tcp_80"
        )),
        "{table}"
    );
}
