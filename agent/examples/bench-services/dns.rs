//! Node DNS query latency: the agent's DNS server on node A's gateway, port 53, queried over
//! UDP from a container's netns, one query in flight, idle and beside concurrent queriers.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use berth_agent::dns::{DNS_PORT, to_tokio};
use hickory_server::proto::op::{Message, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RecordType};
use tokio::sync::oneshot;

use crate::common::in_netns;
use crate::fabric::Fabric;

/// Serves node A's DNS until the returned sender is dropped or fires.
pub(crate) async fn serve(f: &Fabric) -> anyhow::Result<(SocketAddr, oneshot::Sender<()>)> {
    let (udp, tcp) = f.net_a.bind_gateway(DNS_PORT).await?;
    let (udp, tcp) = to_tokio(udp, tcp)?;
    let (stop, stopped) = oneshot::channel::<()>();
    let dns = f.dns_a.clone();
    tokio::spawn(async move {
        let _ = dns
            .serve(udp, tcp, async {
                let _ = stopped.await;
            })
            .await;
    });
    Ok((SocketAddr::from((f.net_a.gateway(), DNS_PORT)), stop))
}

fn query(name: &str) -> anyhow::Result<Vec<u8>> {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    Ok(message.to_vec()?)
}

/// `n` timed A queries for `name` on one socket, each answered NoError with an answer.
fn timed_queries(server: SocketAddr, name: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    socket.connect(server)?;
    let body = query(name)?;
    let mut buf = vec![0u8; 1500];
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let began = Instant::now();
        socket.send(&body)?;
        let got = socket.recv(&mut buf).context("no DNS answer")?;
        samples.push(began.elapsed());
        let answer = Message::from_vec(&buf[..got])?;
        if answer.metadata.response_code != ResponseCode::NoError || answer.answers.is_empty() {
            bail!("{name}: {:?}", answer.metadata.response_code);
        }
    }
    Ok(samples)
}

/// Query latency from client A's netns: `n` queries with nothing else asking, and `n` while
/// `busy` other sockets query back to back.
pub(crate) fn latency(
    f: &Fabric,
    server: SocketAddr,
    n: usize,
    busy: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let ns = f.client_a.netns.clone();
    in_netns(&ns, || {
        let idle = timed_queries(server, "web.berth.", n)?;
        let stop = Arc::new(AtomicBool::new(false));
        let loaders: Vec<_> = (0..busy)
            .map(|i| {
                let (stop, ns) = (stop.clone(), ns.clone());
                std::thread::spawn(move || {
                    in_netns(&ns, || {
                        let name = format!("filler-{i}.berth.");
                        while !stop.load(Ordering::Relaxed) {
                            if timed_queries(server, &name, 50).is_err() {
                                return;
                            }
                        }
                    })
                })
            })
            .collect();
        let loaded = timed_queries(server, "web.berth.", n);
        stop.store(true, Ordering::Relaxed);
        for l in loaders {
            let _ = l.join();
        }
        Ok((idle, loaded?))
    })
}
