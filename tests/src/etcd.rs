//! A real etcd cluster (Debian's etcd-server, `/usr/bin/etcd`) on free loopback ports, one data
//! dir per member in a temporary directory, for the etcd store's tests. Members can be stopped
//! (SIGKILL) and started again on the same ports and data; everything is killed and removed
//! when the cluster is dropped, also when the test panics.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::registry::free_loopback_addr;

/// Where Debian's etcd-server installs etcd.
pub const ETCD: &str = "/usr/bin/etcd";

/// How long a member may take to answer healthy after it starts.
const START_WITHIN: Duration = Duration::from_secs(30);

/// Tries of a cluster start with new ports, when another process took one meanwhile.
const START_ATTEMPTS: usize = 3;

/// A running etcd cluster of real `/usr/bin/etcd` processes.
#[derive(Debug)]
pub struct EtcdCluster {
    name: String,
    members: Vec<Member>,
    /// Dropped after the members are killed (declared last).
    _dir: TempDir,
}

#[derive(Debug)]
struct Member {
    name: String,
    client: SocketAddr,
    peer: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// The outcome of waiting for a member to answer healthy.
enum Started {
    Healthy,
    Exited(String),
}

impl EtcdCluster {
    /// Starts `members` etcd processes forming one cluster and waits until each answers
    /// `GET /health` with `"health":"true"` (so the cluster has a leader). Panics with the
    /// members' logs if it does not come up, and if etcd is not installed.
    pub fn start(members: usize) -> Self {
        assert!(members > 0, "an etcd cluster needs at least one member");
        assert!(
            Path::new(ETCD).is_file(),
            "{ETCD} is missing: install etcd-server (scripts/setup.sh)"
        );
        static CLUSTERS: AtomicU64 = AtomicU64::new(0);
        let mut failures = Vec::new();
        for attempt in 0..START_ATTEMPTS {
            let name = format!(
                "berth-{}-{}",
                std::process::id(),
                CLUSTERS.fetch_add(1, Ordering::Relaxed)
            );
            let dir = tempfile::Builder::new()
                .prefix(&format!("{name}-"))
                .tempdir()
                .expect("create the etcd cluster's temporary directory");
            let members = (0..members)
                .map(|i| {
                    let member_dir = dir.path().join(format!("m{i}"));
                    fs::create_dir_all(&member_dir).expect("create an etcd member's directory");
                    Member {
                        name: format!("{name}-m{i}"),
                        client: free_loopback_addr(),
                        peer: free_loopback_addr(),
                        data_dir: member_dir.join("data"),
                        log: member_dir.join("etcd.log"),
                        child: None,
                    }
                })
                .collect();
            let mut cluster = Self {
                name,
                members,
                _dir: dir,
            };
            for i in 0..cluster.members.len() {
                cluster.spawn(i);
            }
            let mut exited = None;
            for i in 0..cluster.members.len() {
                if let Started::Exited(why) = cluster.wait_healthy(i) {
                    exited = Some(why);
                    break;
                }
            }
            match exited {
                None => return cluster,
                // Most likely a port taken between finding it free and etcd binding it.
                Some(why) => failures.push(format!("attempt {}: {why}", attempt + 1)),
            }
        }
        panic!(
            "etcd would not start in {START_ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        );
    }

    /// The members' client endpoints, `127.0.0.1:PORT`, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client.to_string()).collect()
    }

    /// The client endpoint of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].client.to_string()
    }

    /// `etcd://HOST:PORT,...` naming every member, as `berth-scheduler --store` takes it.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoints().join(","))
    }

    /// The flags that put a scheduler's state in this etcd under a prefix of `tag` and this
    /// process's own (schedulers given the same tag share a cluster), with a leader's lease of
    /// `lease_seconds`.
    pub fn scheduler_flags(&self, tag: &str, lease_seconds: u32) -> Vec<String> {
        vec![
            "--store".into(),
            self.url(),
            "--store-prefix".into(),
            format!("/berth-{tag}-{}", std::process::id()),
            "--leader-lease-seconds".into(),
            lease_seconds.to_string(),
        ]
    }

    /// Kills member `i` (SIGKILL) and waits for it to exit; its data dir stays. If the members
    /// still running are a quorum, also waits until each of them answers healthy again, so the
    /// cluster has a leader that is not the dead member (a write sent meanwhile could be
    /// forwarded to the dead leader and time out).
    pub fn stop_member(&mut self, i: usize) {
        let member = &mut self.members[i];
        let mut child = member
            .child
            .take()
            .unwrap_or_else(|| panic!("etcd member {} is not running", member.name));
        let _ = child.kill();
        child
            .wait()
            .unwrap_or_else(|e| panic!("wait for etcd member {}: {e}", member.name));
        let running: Vec<usize> = (0..self.members.len())
            .filter(|&j| self.members[j].child.is_some())
            .collect();
        if running.len() * 2 > self.members.len() {
            for j in running {
                if let Started::Exited(why) = self.wait_healthy(j) {
                    panic!("etcd member {j} exited after member {i} was stopped: {why}");
                }
            }
        }
    }

    /// Starts member `i` again, on its ports and data dir, and waits until it answers healthy.
    pub fn start_member(&mut self, i: usize) {
        assert!(
            self.members[i].child.is_none(),
            "etcd member {} is already running",
            self.members[i].name
        );
        self.spawn(i);
        if let Started::Exited(why) = self.wait_healthy(i) {
            panic!(
                "etcd member {} would not start again: {why}",
                self.members[i].name
            );
        }
    }

    /// Whether member `i` answers `GET /health` with `"health":"true"` now.
    pub fn is_healthy(&self, i: usize) -> bool {
        health(self.members[i].client)
    }

    fn spawn(&mut self, i: usize) {
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let member = &mut self.members[i];
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log)
            .expect("open the etcd member's log");
        let client_url = format!("http://{}", member.client);
        let peer_url = format!("http://{}", member.peer);
        let child = Command::new(ETCD)
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&member.data_dir)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-token", &self.name])
            .args(["--initial-cluster-state", "new"])
            // Elections within a second of a member going away, on a loaded test machine.
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the etcd member's log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {ETCD}: {e}"));
        member.child = Some(child);
    }

    /// Polls member `i` until it answers healthy or exits; panics after [`START_WITHIN`].
    fn wait_healthy(&mut self, i: usize) -> Started {
        let deadline = Instant::now() + START_WITHIN;
        loop {
            let member = &mut self.members[i];
            let child = member.child.as_mut().expect("a started member");
            if let Some(status) = child.try_wait().expect("poll an etcd process") {
                member.child = None;
                return Started::Exited(format!(
                    "etcd member {} exited with {status}:\n{}",
                    member.name,
                    tail(&member.log)
                ));
            }
            if health(member.client) {
                return Started::Healthy;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .members
                    .iter()
                    .map(|m| format!("--- {} ---\n{}", m.name, tail(&m.log)))
                    .collect();
                panic!(
                    "etcd member {} did not answer healthy on {} within {START_WITHIN:?}:\n{}",
                    self.members[i].name,
                    self.members[i].client,
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // `self._dir` goes next (fields drop after this), now that nothing writes to it.
    }
}

/// Whether etcd at `addr` answers `GET /health` with `"health":"true"`.
fn health(addr: SocketAddr) -> bool {
    http_get(addr, "/health").is_some_and(|(status, body)| {
        status == 200 && body.replace(' ', "").contains(r#""health":"true""#)
    })
}

/// `GET path` over plain HTTP/1.1: the status and the body, or None if nothing answers.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response);
    let status = response.get(9..12)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// The last lines of a log, for failure messages.
fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
