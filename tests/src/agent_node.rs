//! A simulated node: a real `berth-agent` process with a data dir of its own and a network
//! namespace standing for the node's network, dialling a [`FakeScheduler`]. Needs root.
//!
//! Dropping it kills the agent and removes whatever the agent may have left, also after a
//! failed test: containers (`berth-runtime delete --force`), shims, mounts under the data dir,
//! the node's cgroups and its network namespace (with the bridge and nft state in it). When
//! the test is failing, the drop prints the agent's log first.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::berth::{Berth, binary};
use crate::fake_scheduler::FakeScheduler;
use crate::tools::{require_root, require_tool};

static NODES: AtomicU32 = AtomicU32::new(0);

/// `base-PID-N`: a node name no other test (thread or process) running now uses, so cgroup
/// paths and nft tables named after nodes never collide.
pub fn unique_node_name(base: &str) -> String {
    format!(
        "{base}-{}-{}",
        std::process::id(),
        NODES.fetch_add(1, Ordering::Relaxed)
    )
}

/// How to run the agent; `Default` gives 2000m cpu and 2g memory.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// `--cpu`.
    pub cpu: String,
    /// `--memory`.
    pub memory: String,
    /// `--labels k=v,...` when not empty.
    pub labels: Vec<(String, String)>,
    /// `--restart-backoff-base-ms`.
    pub restart_backoff_base_ms: Option<u64>,
    /// More arguments, after the others.
    pub extra_args: Vec<String>,
    /// More environment variables for the agent.
    pub env: Vec<(String, String)>,
    /// How long the agent may take to write its endpoint file.
    pub start_within: Duration,
    /// `--listen` (default `127.0.0.1:0`).
    pub listen: Option<String>,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            cpu: "2000m".to_string(),
            memory: "2g".to_string(),
            labels: Vec::new(),
            restart_backoff_base_ms: None,
            extra_args: Vec::new(),
            env: Vec::new(),
            start_within: Duration::from_secs(30),
            listen: None,
        }
    }
}

static NETNS: AtomicU32 = AtomicU32::new(0);

/// A running (or killed) `berth-agent` as one node.
#[derive(Debug)]
pub struct AgentNode {
    name: String,
    scheduler: String,
    opts: AgentOptions,
    /// Owns the data dir (removed on drop) and runs `berth` against it, e.g. to import images.
    berth: Berth,
    netns: String,
    agent_bin: PathBuf,
    runtime_bin: PathBuf,
    child: Option<Child>,
    endpoint: Option<String>,
}

impl AgentNode {
    /// Starts an agent named `name` with a fresh data dir, waiting until it serves.
    pub fn start(scheduler: &FakeScheduler, name: &str, opts: AgentOptions) -> Self {
        Self::start_in(Berth::new(), scheduler, name, opts)
    }

    /// Like [`Self::start`] on a data dir prepared beforehand (e.g. with images in its store).
    pub fn start_in(
        berth: Berth,
        scheduler: &FakeScheduler,
        name: &str,
        opts: AgentOptions,
    ) -> Self {
        Self::start_for(berth, &scheduler.endpoint(), name, opts)
    }

    /// A node named after `base` ([`unique_node_name`]) with the busybox image `image` in its
    /// store, pod CIDR `cidr` and an empty assignment set, stopping containers after 1 s
    /// (busybox's sleep as init ignores SIGTERM).
    pub fn start_with_busybox(
        scheduler: &FakeScheduler,
        base: &str,
        cidr: &str,
        image: &str,
        mut opts: AgentOptions,
    ) -> Self {
        opts.extra_args
            .extend(["--stop-grace".to_string(), "1".to_string()]);
        let berth = Berth::new();
        crate::busybox_image(&berth, image);
        let name = unique_node_name(base);
        scheduler.set_pod_cidr(&name, cidr);
        scheduler.assign(&name, vec![]);
        Self::start_in(berth, scheduler, &name, opts)
    }

    /// Like [`Self::start_in`] for a scheduler at `endpoint` (a real `berth-scheduler`).
    pub fn start_for(berth: Berth, endpoint: &str, name: &str, opts: AgentOptions) -> Self {
        require_root();
        require_tool("ip");
        require_tool("nsenter");
        require_tool("umount");
        require_tool("kill");
        let netns = format!(
            "berth-an-{}-{}",
            std::process::id(),
            NETNS.fetch_add(1, Ordering::Relaxed)
        );
        let mut node = Self {
            name: name.to_string(),
            scheduler: endpoint.to_string(),
            opts,
            berth,
            netns,
            agent_bin: binary("berth-agent"),
            runtime_bin: binary("berth-runtime"),
            child: None,
            endpoint: None,
        };
        // A namespace left by an earlier run with the same pid goes first.
        let _ = ip(&["netns", "delete", &node.netns]);
        let out = ip(&["netns", "add", &node.netns]);
        assert!(out.status.success(), "ip netns add {}: {out:?}", node.netns);
        let out = ip(&["-n", &node.netns, "link", "set", "lo", "up"]);
        assert!(out.status.success(), "lo up in {}: {out:?}", node.netns);
        node.spawn();
        node
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn data_dir(&self) -> &Path {
        self.berth.data_dir.path()
    }

    /// `berth` against the agent's data dir (its image store is the agent's).
    pub fn berth(&self) -> &Berth {
        &self.berth
    }

    /// The node network's namespace name (`berth-an-PID-N`).
    pub fn netns_name(&self) -> &str {
        &self.netns
    }

    /// `/run/netns/NAME`, as given to `--net-namespace`.
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }

    /// Where the agent keeps a container's files (`DATA/agent/containers/ID`).
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.data_dir().join("agent/containers").join(id)
    }

    /// The runtime's state dir (`DATA/agent/run`, the agent's `berth-runtime --root`).
    pub fn runtime_root(&self) -> PathBuf {
        self.data_dir().join("agent/run")
    }

    /// The file the agent's stdout and stderr go to (appended to over restarts).
    pub fn log_path(&self) -> PathBuf {
        self.data_dir().join("agent.log")
    }

    /// Everything the agent wrote so far, over all its starts.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The address the agent serves AgentService on, as written to `DATA/agent/endpoint`
    /// (e.g. `127.0.0.1:41234`). Panics while the agent is not running.
    pub fn endpoint(&self) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| panic!("agent {} is not running", self.name))
    }

    /// [`Self::endpoint`] as a URL for a tonic client.
    pub fn endpoint_url(&self) -> String {
        let endpoint = self.endpoint();
        if endpoint.contains("://") {
            endpoint
        } else {
            format!("http://{endpoint}")
        }
    }

    /// [`Self::endpoint`] as a bare HOST:PORT, as people and Python's grpc write it.
    pub fn address(&self) -> String {
        let endpoint = self.endpoint();
        endpoint
            .split_once("://")
            .map_or(endpoint.as_str(), |(_, rest)| rest)
            .to_string()
    }

    /// The agent's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the agent process is alive; `false` (and the status reaped) once it exited.
    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none() && self.child.is_some()
    }

    /// The agent's exit status once it exited by itself, without waiting.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().expect("wait for the agent")
    }

    /// SIGKILL to the agent alone (shims and containers stay), reaped.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.endpoint = None;
    }

    /// SIGTERM to the agent; waits `within` for it to exit and returns how it did (failing
    /// the test, after a SIGKILL, if it does not).
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("agent {} is not running", self.name));
        self.endpoint = None;
        let _ = Command::new("kill")
            .args(["-s", "TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait for the agent") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "agent {} did not exit within {within:?} of SIGTERM\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the agent (SIGKILL, if it runs) and starts it again on the same data dir and
    /// network namespace, waiting until it serves.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// `berth exec --agent ENDPOINT ID CMD...`: runs `cmd` in container `id` through the
    /// agent, whatever its exit status.
    pub fn exec(&self, id: &str, cmd: &[&str]) -> Output {
        let agent = self.endpoint_url();
        let mut command = self.berth.cmd(["exec", "--agent", &agent, id]);
        command.args(cmd).stdin(Stdio::null());
        command
            .output()
            .unwrap_or_else(|e| panic!("could not start {command:?}: {e}"))
    }

    /// `berth exec` of `sh -c SCRIPT` in container `id`, which must succeed; its stdout.
    pub fn sh(&self, id: &str, script: &str) -> String {
        let out = self.exec(id, &["sh", "-c", script]);
        assert!(out.status.success(), "exec {script:?} in {id}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `cmd` in the node's network namespace (`nsenter --net=PATH -- CMD...`).
    pub fn exec_in_netns(&self, cmd: &[&str]) -> Output {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.netns_path().display()))
            .arg("--")
            .args(cmd)
            .stdin(Stdio::null());
        command
            .output()
            .unwrap_or_else(|e| panic!("could not start {command:?}: {e}"))
    }

    /// The agent's command line.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.agent_bin);
        cmd.arg("--scheduler")
            .arg(&self.scheduler)
            .arg("--node-name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen")
            .arg(self.opts.listen.as_deref().unwrap_or("127.0.0.1:0"))
            .arg("--net-namespace")
            .arg(self.netns_path())
            .arg("--cpu")
            .arg(&self.opts.cpu)
            .arg("--memory")
            .arg(&self.opts.memory)
            .args(["--log-format", "json"]);
        if !self.opts.labels.is_empty() {
            let labels: Vec<String> = self
                .opts
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            cmd.arg("--labels").arg(labels.join(","));
        }
        if let Some(ms) = self.opts.restart_backoff_base_ms {
            cmd.arg("--restart-backoff-base-ms").arg(ms.to_string());
        }
        // Agents of parallel tests share the host: each takes any free metrics port (written
        // to DATA/agent/metrics-endpoint), unless the test names one.
        if !self
            .opts
            .extra_args
            .iter()
            .any(|a| a.starts_with("--metrics-listen"))
        {
            cmd.args(["--metrics-listen", "127.0.0.1:0"]);
        }
        cmd.args(&self.opts.extra_args);
        cmd.envs(self.opts.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Where the agent serves GET /metrics, as it writes it (just after its endpoint file).
    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        let file = self.data_dir().join("agent/metrics-endpoint");
        crate::poll_until(
            "the agent's metrics endpoint",
            Duration::from_secs(10),
            || fs::read_to_string(&file).ok()?.trim().parse().ok(),
        )
    }

    fn endpoint_file(&self) -> PathBuf {
        self.data_dir().join("agent/endpoint")
    }

    /// Starts the agent and waits for the endpoint file it writes once serving.
    fn spawn(&mut self) {
        let _ = fs::remove_file(self.data_dir().join("agent/metrics-endpoint"));
        let endpoint_file = self.endpoint_file();
        match fs::remove_file(&endpoint_file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("remove {}: {e}", endpoint_file.display()),
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the agent's log");
        let mut cmd = self.command();
        writeln!(log, "=== berth-test: starting {cmd:?}").expect("write the agent's log");
        let stderr = log.try_clone().expect("clone the log file");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {cmd:?}: {e}"));
        self.child = Some(child);

        let within = self.opts.start_within;
        let deadline = Instant::now() + within;
        loop {
            if let Some(endpoint) = read_endpoint(&endpoint_file) {
                self.endpoint = Some(endpoint);
                return;
            }
            if let Some(status) = self.exit_status() {
                self.child = None;
                panic!(
                    "agent {} exited with {status} before serving\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "agent {} wrote no {} within {within:?}\n{}",
                self.name,
                endpoint_file.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Removes everything the agent may have left; safe when any of it is missing.
    fn cleanup(&mut self) {
        self.kill9();
        let data = self.data_dir().to_path_buf();
        let containers = data.join("agent/containers");
        let run = data.join("agent/run");

        let ids: BTreeSet<String> = dir_names(&containers)
            .into_iter()
            .chain(dir_names(&run))
            .collect();
        for id in &ids {
            let _ = Command::new(&self.runtime_bin)
                .arg("--root")
                .arg(&run)
                .args(["delete", "--force", id])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        for id in dir_names(&containers) {
            if let Some(pid) = shim_pid(&containers.join(&id).join("shim.json")) {
                kill9_pid(pid);
            }
        }
        remove_cgroups(&self.name);
        unmount_under(&data);
        let _ = ip(&["netns", "delete", &self.netns]);
    }
}

impl Drop for AgentNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(300)..];
            eprintln!(
                "--- berth-agent {} log ({}), last {} lines ---\n{}\n--- end of agent log ---",
                self.name,
                self.log_path().display(),
                tail.len(),
                tail.join("\n")
            );
        }
        self.cleanup();
    }
}

fn ip(args: &[&str]) -> Output {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("could not run ip {args:?}: {e}"))
}

/// The endpoint in `file` once the agent wrote it (it writes it whole, through a rename).
fn read_endpoint(file: &Path) -> Option<String> {
    let text = fs::read_to_string(file).ok()?;
    let endpoint = text.trim();
    (!endpoint.is_empty()).then(|| endpoint.to_string())
}

/// The names of the directories in `dir` (none if it is missing).
fn dir_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The `shim_pid` of a shim.json, if that process still is a berth-shim.
fn shim_pid(shim_json: &Path) -> Option<u32> {
    let text = fs::read_to_string(shim_json).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let pid = u32::try_from(value.get("shim_pid")?.as_u64()?).ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline)
        .contains("berth-shim")
        .then_some(pid)
}

fn kill9_pid(pid: u32) {
    let _ = Command::new("kill")
        .args(["-s", "KILL", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Kills what is left in the node's cgroups (`/sys/fs/cgroup[/CONTROLLER]/berth-agent/NODE`)
/// and removes them, deepest first.
fn remove_cgroups(node: &str) {
    let base = Path::new("/sys/fs/cgroup");
    let mut candidates = vec![base.join("berth-agent").join(node)];
    if let Ok(entries) = fs::read_dir(base) {
        for entry in entries.flatten() {
            candidates.push(entry.path().join("berth-agent").join(node));
        }
    }
    for cgroup in candidates.into_iter().filter(|p| p.is_dir()) {
        let mut dirs = Vec::new();
        collect_dirs(&cgroup, &mut dirs);
        // Children come after their parents: remove from the end.
        for dir in dirs.iter().rev() {
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                let _ = fs::write(dir.join("cgroup.kill"), "1");
                for pid in fs::read_to_string(dir.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse::<u32>().ok())
                {
                    kill9_pid(pid);
                }
                if fs::remove_dir(dir).is_ok() || !dir.exists() || Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&entry.path(), out);
            }
        }
    }
}

/// Lazily unmounts every mount point at or under `dir` (overlays, netns bind mounts), deepest
/// first, until none is left (a few rounds at most, for stacked mounts).
fn unmount_under(dir: &Path) {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    for _ in 0..5 {
        let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        let mut points: Vec<PathBuf> = mountinfo
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .map(|p| PathBuf::from(unescape_mountinfo(p)))
            .filter(|p| p.starts_with(&dir))
            .collect();
        if points.is_empty() {
            return;
        }
        points.sort_by(|a, b| {
            b.components()
                .count()
                .cmp(&a.components().count())
                .then_with(|| a.cmp(b))
        });
        points.dedup();
        for point in points {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&point)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'\\' && i + 4 <= bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 4]).ok())
            .flatten()
            .and_then(|digits| u8::from_str_radix(digits, 8).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The node called `name` among `nodes`.
pub fn named<'a>(nodes: &'a [AgentNode], name: &str) -> &'a AgentNode {
    nodes
        .iter()
        .find(|n| n.name() == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}
