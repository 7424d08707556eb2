//! A real `berth-scheduler` process for end-to-end tests, and a "fabric" network namespace
//! that links the nodes' network namespaces like a switch.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use berth_proto::v1::{
    ApplyRequest, ApplyResponse, ClusterContainer, DeleteDeploymentRequest, Deployment,
    DeploymentSpec, GetDeploymentRequest, ListClusterContainersRequest, ListNodesRequest, NodeInfo,
    RolloutEvent, WatchRequest,
};

use crate::agent_node::AgentNode;
use crate::etcd::EtcdCluster;
use crate::{binary, free_loopback_addr, poll_until, require_root, run_ok};

/// A `berth-scheduler` on a loopback port with its own data dir.
#[derive(Debug)]
pub struct SchedulerProc {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    /// `--metrics-listen` (unless the flags name one): its own port, kept across restarts.
    metrics_addr: SocketAddr,
    child: Option<Child>,
    extra: Vec<String>,
    /// The etcd this scheduler keeps its state in, when the tests run on etcd.
    _etcd: Option<EtcdCluster>,
    /// Whether starts wait for it to serve as the leader (not for standbys).
    wait_serving: bool,
}

/// Set to `etcd` to run the schedulers of the end-to-end tests on an etcd store (one etcd per
/// scheduler) instead of the embedded redb file.
pub const STORE_ENV: &str = "BERTH_TEST_STORE";

impl SchedulerProc {
    /// Starts it with fast heartbeats (200 ms unless `extra` names `--heartbeat-ms`, NotReady
    /// after 3 missed) and `extra` flags, on the store [`STORE_ENV`] names (redb by default).
    pub fn start(extra: &[&str]) -> Self {
        let store = std::env::var(STORE_ENV).unwrap_or_else(|_| "redb".into());
        Self::start_on(&store, extra)
    }

    /// [`Self::start`] on the store named here (`redb` or `etcd`, one etcd of its own),
    /// whatever [`STORE_ENV`] says: for tests that run on both.
    pub fn start_on(store: &str, extra: &[&str]) -> Self {
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let etcd = match store {
            "etcd" => {
                let etcd = EtcdCluster::start(1);
                extra.extend(["--store".to_string(), etcd.url()]);
                Some(etcd)
            }
            "redb" => None,
            other => panic!("store {other:?} ({STORE_ENV}): expected redb or etcd"),
        };
        let mut s = Self::start_with(extra, etcd);
        s.wait_serving = true;
        s.wait_until_serving(1);
        s
    }

    /// Starts one with exactly these flags (no store chosen for it): for schedulers sharing
    /// an etcd the test owns.
    pub fn start_exact(extra: &[&str]) -> Self {
        Self::start_with(extra.iter().map(|s| s.to_string()).collect(), None)
    }

    fn start_with(extra: Vec<String>, etcd: Option<EtcdCluster>) -> Self {
        let mut s = Self {
            dir: tempfile::Builder::new()
                .prefix("berth-sched-")
                .tempdir()
                .expect("temp dir"),
            addr: free_loopback_addr(),
            metrics_addr: free_loopback_addr(),
            child: None,
            extra,
            _etcd: etcd,
            wait_serving: false,
        };
        s.spawn();
        s
    }

    /// Like [`Self::start`] with mutual TLS (and so authentication) from `tls`'s files:
    /// [`Self::endpoint`] is then `https://`.
    pub fn start_tls(tls: &berth_proto::tls::TlsFiles, extra: &[&str]) -> Self {
        let mut flags: Vec<String> = vec![
            "--tls-cert".into(),
            tls.cert.display().to_string(),
            "--tls-key".into(),
            tls.key.display().to_string(),
            "--tls-ca".into(),
            tls.ca.display().to_string(),
        ];
        flags.extend(extra.iter().map(|s| s.to_string()));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        Self::start(&flags)
    }

    /// The etcd it keeps its state in, when started on an etcd store of its own.
    pub fn etcd(&self) -> Option<&EtcdCluster> {
        self._etcd.as_ref()
    }

    /// The scheduler's data dir (with a redb store, `state.redb` is in it).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("scheduler log");
        let mut cmd = Command::new(binary("berth-scheduler"));
        if !self.extra.iter().any(|a| a == "--heartbeat-ms") {
            cmd.args(["--heartbeat-ms", "200"]);
        }
        if !self.extra.iter().any(|a| a.starts_with("--metrics-listen")) {
            cmd.arg("--metrics-listen")
                .arg(self.metrics_addr.to_string());
        }
        cmd.arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(["--log-format", "json"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        writeln!(
            OpenOptions::new()
                .append(true)
                .open(self.log_path())
                .unwrap(),
            "=== berth-test: starting {cmd:?}"
        )
        .unwrap();
        self.child = Some(cmd.spawn().expect("start berth-scheduler"));
        let addr = self.addr;
        poll_until("the scheduler to listen", Duration::from_secs(30), || {
            std::net::TcpStream::connect(addr).ok().map(|_| ())
        });
    }

    pub fn endpoint(&self) -> String {
        // Started with TLS flags (see `start_tls`): clients dial https.
        let scheme = if self.extra.iter().any(|a| a == "--tls-cert") {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Where it listens as a bare HOST:PORT, as people type it (see [`Self::endpoint`]).
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Where it serves GET /metrics (unless the flags named another address).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("scheduler.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills it (SIGKILL) and starts it again on the same port and data dir.
    pub fn restart(&mut self) {
        let started = self.log().matches("scheduler serving").count();
        self.kill9();
        self.spawn();
        if self.wait_serving {
            self.wait_until_serving(started + 1);
        }
    }

    /// Waits until its log says it served (as the leader, with an etcd store) `times` times.
    fn wait_until_serving(&self, times: usize) {
        poll_until("the scheduler to serve", Duration::from_secs(60), || {
            (self.log().matches("scheduler serving").count() >= times).then_some(())
        });
    }

    /// `berth SUBCOMMAND --scheduler ENDPOINT ARGS...` (`args[0]` is the subcommand; the
    /// global `--scheduler` could go before it too), not yet run.
    pub fn berth(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary("berth"));
        let (sub, rest) = args.split_first().expect("a berth subcommand");
        cmd.arg(sub)
            .arg("--scheduler")
            .arg(self.endpoint())
            .args(rest)
            .env_remove("BERTH_SCHEDULER");
        cmd
    }
}

impl Drop for SchedulerProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!("--- berth-scheduler log, last lines ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
        self.kill9();
    }
}

static FABRIC: AtomicU32 = AtomicU32::new(0);

/// A network namespace with a bridge that node namespaces plug into (10.99.N.0/24).
#[derive(Debug)]
pub struct Fabric {
    netns: String,
    subnet: u32,
    links: u32,
}

impl Fabric {
    pub fn new() -> Self {
        require_root();
        let n = FABRIC.fetch_add(1, Ordering::Relaxed);
        let netns = format!("berth-fab-{}-{n}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "delete", &netns])
            .output();
        run_ok(Command::new("ip").args(["netns", "add", &netns]));
        ip(&["-n", &netns, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &netns, "link", "set", "br0", "up"]);
        Self {
            netns,
            // Distinct subnets for fabrics of tests running side by side.
            subnet: (std::process::id() * 7 + n) % 200 + 20,
            links: 0,
        }
    }

    /// The address the next node plugged in gets.
    pub fn next_address(&self) -> String {
        format!("10.99.{}.{}", self.subnet, self.links + 1)
    }

    /// Links a node's network namespace to the fabric at [`Self::next_address`].
    pub fn plug(&mut self, node: &AgentNode) -> String {
        let address = self.next_address();
        self.links += 1;
        let outer = format!("fab{}", self.links);
        let inner = format!("up{}x{}", self.subnet, self.links);
        ip(&[
            "link",
            "add",
            &outer,
            "netns",
            &self.netns,
            "type",
            "veth",
            "peer",
            "name",
            &inner,
            "netns",
            node.netns_name(),
        ]);
        ip(&[
            "-n",
            &self.netns,
            "link",
            "set",
            &outer,
            "master",
            "br0",
            "up",
        ]);
        ip(&[
            "-n",
            node.netns_name(),
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            &inner,
        ]);
        ip(&["-n", node.netns_name(), "link", "set", &inner, "up"]);
        address
    }

    /// Cuts a node off the fabric (its link goes down).
    pub fn cut(&self, index: u32) {
        ip(&[
            "-n",
            &self.netns,
            "link",
            "set",
            &format!("fab{index}"),
            "down",
        ]);
    }
}

impl Default for Fabric {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .output();
    }
}

fn ip(args: &[&str]) {
    run_ok(Command::new("ip").args(args));
}

/// Whether `path` exists (for readability in polls).
pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// `count` agents named after `base`, each with `image` in its store, plugged into `fabric`
/// and registered with `sched` (fast restarts, a 1 s stop grace).
pub fn start_nodes(
    sched: &SchedulerProc,
    fabric: &mut Fabric,
    count: usize,
    base: &str,
    image: &str,
) -> Vec<AgentNode> {
    start_nodes_at(&sched.endpoint(), fabric, count, base, image)
}

/// [`start_nodes`] for agents given `endpoints` as their `--scheduler` (several schedulers,
/// comma-separated).
pub fn start_nodes_at(
    endpoints: &str,
    fabric: &mut Fabric,
    count: usize,
    base: &str,
    image: &str,
) -> Vec<AgentNode> {
    start_nodes_with(endpoints, fabric, count, base, |_, _| {
        let berth = crate::Berth::new();
        crate::busybox_image(&berth, image);
        berth
    })
}

/// [`start_nodes_at`] where `prepare(i, options)` makes node `i`'s data dir and readies it
/// before its agent starts (images in its store, labels, more flags) instead of a fresh one
/// with one busybox image.
pub fn start_nodes_with(
    endpoints: &str,
    fabric: &mut Fabric,
    count: usize,
    base: &str,
    prepare: impl Fn(usize, &mut crate::agent_node::AgentOptions) -> crate::Berth,
) -> Vec<AgentNode> {
    (0..count)
        .map(|i| {
            let mut opts = crate::agent_node::AgentOptions {
                restart_backoff_base_ms: Some(100),
                extra_args: vec![
                    "--node-address".into(),
                    fabric.next_address(),
                    // httpd or sleep as init ignore SIGTERM: 1 s to SIGKILL, not 10.
                    "--stop-grace".into(),
                    "1".into(),
                ],
                ..Default::default()
            };
            let berth = prepare(i, &mut opts);
            let name = crate::agent_node::unique_node_name(&format!("{base}{i}"));
            let node = AgentNode::start_for(berth, endpoints, &name, opts);
            fabric.plug(&node);
            node
        })
        .collect()
}

/// Blocking calls to the scheduler's DeploymentService, for tests and benchmarks; `within`
/// bounds every wait.
#[derive(Debug)]
pub struct DeployApi {
    rt: tokio::runtime::Runtime,
    pub client: berth_proto::v1::deployment_service_client::DeploymentServiceClient<
        tonic::transport::Channel,
    >,
    within: Duration,
}

impl DeployApi {
    pub fn new(endpoint: &str, within: Duration) -> Self {
        let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
        let client = rt
            .block_on(
                berth_proto::v1::deployment_service_client::DeploymentServiceClient::connect(
                    endpoint.to_string(),
                ),
            )
            .expect("connect to the scheduler");
        Self { rt, client, within }
    }

    /// [`DeployApi::new`] for a scheduler with TLS on, presenting the certificate in `files`
    /// (an admin's or a deployer's).
    pub fn new_tls(endpoint: &str, files: &berth_proto::tls::TlsFiles, within: Duration) -> Self {
        let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
        let tls = berth_proto::tls::client_config(files, "localhost").expect("a client TLS config");
        let endpoint = berth_proto::tls::dial(endpoint, Some(&tls)).expect("the endpoint");
        let channel = rt
            .block_on(endpoint.connect())
            .expect("connect to the scheduler over TLS");
        let client =
            berth_proto::v1::deployment_service_client::DeploymentServiceClient::new(channel);
        Self { rt, client, within }
    }

    /// Runs one call (a future from `self.client.clone()`) to its reply or status.
    pub fn call<T>(
        &self,
        f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        self.rt.block_on(f).map(|r| r.into_inner())
    }

    /// Runs any future on this API's runtime (calls on other services' clients).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Applies `spec`; Unavailable (no leader yet, or one still taking over, which says
    /// "retry") is retried as clients do, within `within`.
    pub fn apply(&self, spec: DeploymentSpec) -> ApplyResponse {
        poll_until("an Apply the leader takes", self.within, || {
            let mut c = self.client.clone();
            match self.call(c.apply(ApplyRequest {
                spec: Some(spec.clone()),
            })) {
                Ok(applied) => Some(applied),
                Err(status) if status.code() == tonic::Code::Unavailable => None,
                Err(status) => panic!("apply: {status:?}"),
            }
        })
    }

    pub fn get(&self, name: &str) -> Deployment {
        let mut c = self.client.clone();
        self.call(c.get(GetDeploymentRequest {
            name: name.into(),
            ..Default::default()
        }))
        .expect("get")
    }

    pub fn delete(&self, name: &str) {
        let mut c = self.client.clone();
        self.call(c.delete(DeleteDeploymentRequest {
            name: name.into(),
            ..Default::default()
        }))
        .expect("delete");
    }

    pub fn nodes(&self) -> Vec<NodeInfo> {
        let mut c = self.client.clone();
        self.call(c.list_nodes(ListNodesRequest {}))
            .expect("nodes")
            .nodes
    }

    pub fn containers(&self, deployment: &str) -> Vec<ClusterContainer> {
        let mut c = self.client.clone();
        self.call(c.list_containers(ListClusterContainersRequest {
            deployment: deployment.into(),
            ..Default::default()
        }))
        .expect("containers")
        .containers
    }

    /// Watches the current rollout to its final event.
    pub fn watch(&self, name: &str, stop_at_approval: bool) -> RolloutEvent {
        let mut c = self.client.clone();
        let within = self.within;
        self.rt.block_on(async {
            let mut stream = c
                .watch(WatchRequest {
                    name: name.into(),
                    stop_at_approval,
                    ..Default::default()
                })
                .await
                .expect("watch")
                .into_inner();
            let deadline = tokio::time::Instant::now() + within;
            loop {
                let next = tokio::time::timeout_at(deadline, stream.message())
                    .await
                    .expect("a final rollout event in time")
                    .expect("the watch stream");
                let event = next.expect("the stream ends with a final event");
                if event.r#final {
                    return event;
                }
            }
        })
    }

    /// Polls Get until `check` accepts the deployment.
    pub fn wait(&self, name: &str, what: &str, check: impl Fn(&Deployment) -> bool) -> Deployment {
        poll_until(what, self.within, || {
            Some(self.get(name)).filter(|d| check(d))
        })
    }
}

/// `d` has `n` replicas, every one ready and of its current revision.
pub fn all_ready(d: &Deployment, n: u32) -> bool {
    usize::try_from(n).is_ok_and(|n| d.replica_status.len() == n)
        && d.replica_status
            .iter()
            .all(|r| r.ready && r.revision == d.revision)
}

/// A busybox httpd on port 8080 serving `NAME-VERSION-from-HOSTNAME` (`$VERSION` from its
/// environment), 100m CPU and 32 MiB, a tcp readiness probe every 200 ms and a 60 s progress
/// deadline: the replica the cluster tests and benchmarks deploy.
pub fn httpd_spec(name: &str, image: &str, version: &str, replicas: u32) -> DeploymentSpec {
    let serve = format!(
        "mkdir -p /www && echo {name}-$VERSION-from-$(hostname) > /www/index.html && \
         exec httpd -f -p 8080 -h /www"
    );
    DeploymentSpec {
        name: name.into(),
        image: image.into(),
        command: vec!["sh".into(), "-c".into(), serve],
        env: [("VERSION".to_string(), version.to_string())].into(),
        replicas,
        resources: Some(berth_proto::v1::Resources {
            cpu_millis: 100,
            memory_bytes: 32 << 20,
        }),
        ports: vec![berth_proto::v1::PortMapping {
            host_port: 0,
            container_port: 8080,
            protocol: 0,
        }],
        readiness: Some(berth_proto::v1::Probe {
            check: Some(berth_proto::v1::probe::Check::Tcp(
                berth_proto::v1::TcpCheck { port: 8080 },
            )),
            period_ms: 200,
            ..Default::default()
        }),
        rollout: Some(berth_proto::v1::RolloutSettings {
            progress_deadline_s: 60,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `spec` serving port 80 (`http`) on its virtual IP, balanced over its replicas' port 8080.
pub fn with_http_service(mut spec: DeploymentSpec) -> DeploymentSpec {
    spec.service_ports = vec![berth_proto::v1::ServicePort {
        name: "http".into(),
        port: 80,
        target: 8080,
        protocol: berth_proto::v1::Protocol::Tcp as i32,
    }];
    spec
}
