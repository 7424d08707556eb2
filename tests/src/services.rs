//! What the service end-to-end tests look at: the endpoints the scheduler lists, what each
//! node's load-balancer table DNATs to, the conntrack flows to a virtual IP, and a load
//! generator that sends HTTP requests from inside a container's network namespace.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use berth_proto::v1::{ListServicesRequest, Service};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::agent_node::AgentNode;
use crate::cluster::DeployApi;

/// Every service the scheduler lists (ListServices).
pub fn list_services(api: &DeployApi) -> Vec<Service> {
    let mut c = api.client.clone();
    api.call(c.list_services(ListServicesRequest::default()))
        .expect("ListServices")
        .services
}

/// The pod IPs ListServices gives as `name`'s endpoints (none when it is not listed).
pub fn listed_endpoints(api: &DeployApi, name: &str) -> BTreeSet<String> {
    list_services(api)
        .into_iter()
        .filter(|s| s.name == name)
        .flat_map(|s| s.endpoints)
        .map(|e| e.ip)
        .collect()
}

/// `nft -j ARGS...` in the node's network namespace, parsed.
fn nft_json(node: &AgentNode, args: &[&str]) -> serde_json::Value {
    let cmd: Vec<&str> = ["nft", "-j"].iter().chain(args).copied().collect();
    let out = node.exec_in_netns(&cmd);
    assert!(
        out.status.success(),
        "{cmd:?} in {}: {}",
        node.netns_name(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{cmd:?} printed bad JSON ({e}): {out:?}"))
}

/// The objects of one kind (`table`, `rule`, ...) in `nft -j` output.
fn nft_objects<'v>(
    listed: &'v serde_json::Value,
    kind: &'v str,
) -> impl Iterator<Item = &'v serde_json::Value> {
    listed["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(move |o| o.get(kind))
}

/// The names of the `berth_svc_*` (load balancer) tables in the node's network namespace.
pub fn svc_tables(node: &AgentNode) -> Vec<String> {
    let listed = nft_json(node, &["list", "tables"]);
    nft_objects(&listed, "table")
        .filter_map(|t| t["name"].as_str())
        .filter(|name| name.starts_with("berth_svc_"))
        .map(str::to_string)
        .collect()
}

/// The addresses the node's load balancer DNATs service `service`'s connections to: the
/// `dnat` targets of its endpoint chains (`ep_SERVICE_*`), which the verdict map reaches.
/// Empty when the node has no balancer table (yet).
pub fn nft_endpoints(node: &AgentNode, service: &str) -> BTreeSet<String> {
    let tables = svc_tables(node);
    let [table] = tables.as_slice() else {
        assert!(tables.is_empty(), "one balancer table per node: {tables:?}");
        return BTreeSet::new();
    };
    let listed = nft_json(node, &["list", "table", "ip", table]);
    let prefix = format!("ep_{service}_");
    nft_objects(&listed, "rule")
        .filter(|r| r["chain"].as_str().is_some_and(|c| c.starts_with(&prefix)))
        .flat_map(|r| r["expr"].as_array().into_iter().flatten())
        .filter_map(|e| e["dnat"]["addr"].as_str())
        .map(str::to_string)
        .collect()
}

/// The conntrack entries (one per line) whose original destination is `vip`, in the node's
/// network namespace.
pub fn vip_flows(node: &AgentNode, vip: &str) -> String {
    let out = node.exec_in_netns(&["conntrack", "-L", "--orig-dst", vip]);
    // conntrack -L exits 0 with or without matches; the summary goes to stderr.
    assert!(out.status.success(), "conntrack -L: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ss` lines of the sockets on port 53 (UDP and TCP) in the node's netns.
pub fn dns_listeners(node: &AgentNode) -> String {
    let out = node.exec_in_netns(&["ss", "-Hln", "-tu", "sport = :53"]);
    assert!(out.status.success(), "ss: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The network namespace file the agent keeps for container `id`.
pub fn container_netns(node: &AgentNode, id: &str) -> PathBuf {
    node.data_dir().join("agent/netns").join(id)
}

/// One request of a [`Load`]: when it was sent (since the load started) and the response
/// body, or what failed (`connect`, `write`, `read`, `status`, `timeout`) with the error.
#[derive(Debug, Clone)]
pub struct Reply {
    pub sent: Duration,
    pub took: Duration,
    pub result: Result<String, String>,
}

/// HTTP/1.0 GETs at a fixed rate, each on a new connection (so each is balanced afresh),
/// sent from a thread that entered a container's network namespace: the traffic takes the
/// container's path to the virtual IP.
#[derive(Debug)]
pub struct Load {
    started: Instant,
    stop: Arc<AtomicBool>,
    replies: Arc<Mutex<Vec<Reply>>>,
    thread: Option<JoinHandle<()>>,
}

impl Load {
    /// Starts sending `per_second` requests a second to `target` from the network namespace
    /// at `netns`.
    pub fn start(netns: &Path, target: SocketAddr, per_second: u32) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let replies = Arc::new(Mutex::new(Vec::new()));
        let ns = std::fs::File::open(netns)
            .unwrap_or_else(|e| panic!("open the netns {}: {e}", netns.display()));
        let (stop2, replies2) = (stop.clone(), replies.clone());
        // A thread of its own: setns changes only the calling thread's namespace, and every
        // socket this thread's runtime opens is made in it.
        let thread = std::thread::spawn(move || {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(generate(target, per_second, stop2, replies2));
        });
        Load {
            started: Instant::now(),
            stop,
            replies,
            thread: Some(thread),
        }
    }

    /// How long it has been sending (the clock of [`Reply::sent`], give or take the
    /// thread's start).
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The replies so far.
    pub fn replies(&self) -> Vec<Reply> {
        self.replies.lock().expect("replies").clone()
    }

    /// Stops sending, waits for the requests in flight, and returns every reply.
    pub fn finish(mut self) -> Vec<Reply> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("the load thread");
        }
        self.replies()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Open loop: a request every 1/`per_second` s whatever the earlier ones do, so a slow or
/// hanging backend shows as failures, not as a lower rate.
async fn generate(
    target: SocketAddr,
    per_second: u32,
    stop: Arc<AtomicBool>,
    replies: Arc<Mutex<Vec<Reply>>>,
) {
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    let record = |reply: Reply| replies.lock().expect("replies").push(reply);
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        let sent = start.elapsed();
        tasks.spawn(async move {
            let began = Instant::now();
            let result = get(target).await;
            Reply {
                sent,
                took: began.elapsed(),
                result,
            }
        });
        while let Some(done) = tasks.try_join_next() {
            record(done.expect("a request task"));
        }
    }
    while let Some(done) = tasks.join_next().await {
        record(done.expect("a request task"));
    }
}

/// One `GET /` on a new connection: the body of a 200, or the step that failed.
async fn get(target: SocketAddr) -> Result<String, String> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(target)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: service\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut response = Vec::new();
        s.read_to_end(&mut response)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&response);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("status: no header end in {text:?}"))?;
        if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") {
            return Err(format!("status: {head:?}"));
        }
        Ok(body.trim().to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .unwrap_or_else(|_| Err("timeout: no full response within 5 s".to_string()))
}
