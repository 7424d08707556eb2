//! `berth up`: a one-node cluster on this machine in one command. Starts `berth-scheduler`
//! and one `berth-agent` (found next to the `berth` executable) as child processes, waits
//! until the node is ready, and on Ctrl-C or SIGTERM stops cleanly: every deployment is
//! deleted, their containers (and network) are torn down, then the agent and the scheduler
//! get SIGTERM. The daemons' logs go to DATA/up/{scheduler,agent}.log. The scheduler gets
//! `--secrets-key <pki-dir>/secrets.key`, written on first use.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use berth_proto::v1::{
    DeleteDeploymentRequest, ListClusterContainersRequest, ListDeploymentsRequest, ListNodesRequest,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::signal::unix::{Signal as UnixSignal, SignalKind, signal};

use crate::Context;
use crate::cluster::{self, Client, spec::parse_duration};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where the scheduler serves (the agents' NodeService and the DeploymentService).
    #[arg(long, default_value = "127.0.0.1:7700")]
    listen: String,
    /// The node's name (default: this host's name).
    #[arg(long)]
    node_name: Option<String>,
    /// An extra flag for berth-scheduler (repeatable), e.g. --scheduler-arg=--pod-network=10.88.0.0/16.
    #[arg(long = "scheduler-arg", value_name = "ARG", allow_hyphen_values = true)]
    scheduler_args: Vec<String>,
    /// An extra flag for berth-agent (repeatable), e.g. --agent-arg=--labels=zone=a.
    #[arg(long = "agent-arg", value_name = "ARG", allow_hyphen_values = true)]
    agent_args: Vec<String>,
    /// How long to wait for the node to become ready.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    ready_timeout: Duration,
    /// On stop, how long to wait for the deployments' containers to be removed.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    stop_timeout: Duration,
    /// Where the scheduler serves its Prometheus metrics (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:9700")]
    metrics_listen: String,
    /// Where the agent serves its Prometheus metrics (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:9701")]
    agent_metrics_listen: String,
}

/// A daemon child: its name for messages, the process and its log.
#[derive(Debug)]
struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(
        name: &'static str,
        exe: &Path,
        args: &[String],
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let log = log_dir.join(format!("{}.log", name.trim_start_matches("berth-")));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: a Ctrl-C on the terminal reaches only `berth up`, which
            // then stops the cluster in order.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        Ok(Self { name, child, log })
    }

    /// Some(description) once the process has ended.
    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    /// An error for a daemon that ended early, with its log's last lines on stderr.
    fn died(&mut self, how: &str) -> anyhow::Error {
        let tail = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = tail.lines().collect();
        eprintln!("--- the end of {}:", self.log.display());
        for line in &lines[lines.len().saturating_sub(15)..] {
            eprintln!("{line}");
        }
        anyhow::anyhow!(
            "{} exited ({how}); its log is {}",
            self.name,
            self.log.display()
        )
    }

    /// SIGTERM, then SIGKILL after `grace`; waits for the process.
    async fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "berth up: {} did not stop within {}; killing it",
            self.name,
            cluster::human_duration(grace)
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A daemon binary next to the running `berth`.
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the berth executable")?;
    let dir = exe
        .parent()
        .context("the berth executable has no directory")?;
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{name} not found next to berth in {} (build it there too: cargo build [--release] -p berth-scheduler -p berth-agent)",
            dir.display()
        );
    }
    Ok(path)
}

pub(crate) fn run(args: Args, ctx: &Context) -> anyhow::Result<i32> {
    let scheduler_exe = sibling("berth-scheduler")?;
    let agent_exe = sibling("berth-agent")?;
    let node = match &args.node_name {
        Some(n) => n.clone(),
        None => nix::unistd::gethostname()?
            .to_string_lossy()
            .to_ascii_lowercase(),
    };
    let data = &ctx.data_dir;
    let log_dir = data.join("up");
    let sched_dir = data.join("scheduler");
    for dir in [&log_dir, &sched_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let secrets_key = secrets_key(&args, crate::commands::secret::init_key::default_path(ctx))?;
    let url = dial_url(&args.listen);
    crate::remote::block_on(async {
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut scheduler = Daemon::spawn(
            "berth-scheduler",
            &scheduler_exe,
            &scheduler_argv(&args, &sched_dir, secrets_key.as_deref()),
            &log_dir,
        )?;
        let mut daemons = vec![];
        let started = async {
            let client = wait_for(&url, &mut scheduler, args.ready_timeout).await?;
            let agent = Daemon::spawn(
                "berth-agent",
                &agent_exe,
                &agent_argv(&args, &url, &node, data),
                &log_dir,
            )?;
            daemons.push(agent);
            wait_node(
                client,
                &node,
                &mut daemons[0],
                &mut scheduler,
                args.ready_timeout,
            )
            .await
        };
        let client = tokio::select! {
            r = started => r,
            _ = interrupt.recv() => Err(anyhow::anyhow!("interrupted while starting")),
            _ = terminate.recv() => Err(anyhow::anyhow!("terminated while starting")),
        };
        let mut client = match client {
            Ok(c) => c,
            Err(e) => {
                for d in daemons.iter_mut().chain([&mut scheduler]) {
                    d.stop(Duration::from_secs(15)).await;
                }
                return Err(e);
            }
        };
        let agent = &mut daemons[0];
        print_banner(&url, &node, data, &scheduler, agent);
        if let Some(dashboard) = dashboard_url(&args.scheduler_args) {
            println!("  dashboard: {dashboard}");
        }
        print_metrics(&sched_dir, data);
        let mut code = watch(&mut interrupt, &mut terminate, agent, &mut scheduler).await;
        println!("berth up: stopping");
        if scheduler.exited().is_none() && agent.exited().is_none() {
            let drained = tokio::select! {
                r = drain(&mut client, args.stop_timeout) => r,
                _ = interrupt.recv() => Err(anyhow::anyhow!("interrupted again: not waiting for the containers")),
                _ = terminate.recv() => Err(anyhow::anyhow!("terminated again: not waiting for the containers")),
            };
            if let Err(e) = drained {
                eprintln!("berth up: {}", crate::chain(&e));
                code = 1;
            }
        }
        agent.stop(Duration::from_secs(20)).await;
        scheduler.stop(Duration::from_secs(10)).await;
        println!("berth up: stopped");
        Ok(code)
    })
}

/// The secrets key the scheduler gets (`path`, made on first use) so that the local cluster
/// has secrets out of the box; None when `--scheduler-arg` names one already.
fn secrets_key(args: &Args, path: PathBuf) -> anyhow::Result<Option<PathBuf>> {
    if args
        .scheduler_args
        .iter()
        .any(|a| a == "--secrets-key" || a.starts_with("--secrets-key="))
    {
        return Ok(None);
    }
    if let Some(written) = crate::commands::secret::init_key::ensure_key(&path)? {
        println!(
            "berth up: wrote the secrets key {} (key id {})",
            written.path.display(),
            written.key_id
        );
    }
    Ok(Some(path))
}

/// berth-scheduler's command line.
fn scheduler_argv(args: &Args, sched_dir: &Path, secrets_key: Option<&Path>) -> Vec<String> {
    let key = secrets_key
        .map(|k| vec!["--secrets-key".into(), k.display().to_string()])
        .unwrap_or_default();
    [
        vec![
            "--listen".into(),
            args.listen.clone(),
            "--data-dir".into(),
            sched_dir.display().to_string(),
            "--metrics-listen".into(),
            args.metrics_listen.clone(),
        ],
        key,
        args.scheduler_args.clone(),
    ]
    .concat()
}

/// The dashboard's URL: the scheduler's `--http-listen` among `--scheduler-arg`s, else its
/// default; None when it is `off`.
fn dashboard_url(scheduler_args: &[String]) -> Option<String> {
    let mut addr = "127.0.0.1:7780".to_string();
    let mut args = scheduler_args.iter();
    while let Some(arg) = args.next() {
        if let Some(value) = arg.strip_prefix("--http-listen=") {
            addr = value.to_string();
        } else if arg == "--http-listen"
            && let Some(value) = args.next()
        {
            addr = value.clone();
        }
    }
    (addr != "off").then(|| format!("http://{addr}/"))
}

/// berth-agent's command line.
fn agent_argv(args: &Args, url: &str, node: &str, data: &Path) -> Vec<String> {
    [
        vec![
            "--scheduler".into(),
            url.to_string(),
            "--node-name".into(),
            node.to_string(),
            "--data-dir".into(),
            data.display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--metrics-listen".into(),
            args.agent_metrics_listen.clone(),
        ],
        args.agent_args.clone(),
    ]
    .concat()
}

/// What is running and how to use it.
fn print_banner(url: &str, node: &str, data: &Path, scheduler: &Daemon, agent: &Daemon) {
    println!(
        "berth up: scheduler at {url}, node {node:?} ready (data dir {})",
        data.display()
    );
    println!(
        "  logs:    {}  {}",
        scheduler.log.display(),
        agent.log.display()
    );
    println!("  deploy:  berth deploy -f examples/hello.toml --wait");
    println!("  watch:   berth status; berth nodes; berth ps --scheduler {url}");
    if url != cluster::DEFAULT_SCHEDULER {
        println!("  (other shells: export BERTH_SCHEDULER={url})");
    }
    println!("Ctrl-C stops: deployments deleted, containers removed, then both daemons.");
}

/// Where both daemons serve /metrics, as they wrote it (the addresses they actually got).
fn print_metrics(sched_dir: &Path, data: &Path) {
    let read = |file: PathBuf| {
        std::fs::read_to_string(&file)
            .map(|a| format!("http://{}/metrics", a.trim()))
            .unwrap_or_else(|e| format!("unknown ({}: {e})", file.display()))
    };
    println!(
        "  metrics: scheduler {}  agent {}",
        read(sched_dir.join("metrics-endpoint")),
        read(data.join("agent").join("metrics-endpoint"))
    );
}

/// Waits for Ctrl-C or SIGTERM (exit status 0) or for a daemon to die (1).
async fn watch(
    interrupt: &mut UnixSignal,
    terminate: &mut UnixSignal,
    agent: &mut Daemon,
    scheduler: &mut Daemon,
) -> i32 {
    loop {
        tokio::select! {
            _ = interrupt.recv() => return 0,
            _ = terminate.recv() => return 0,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        if let Some(how) = agent.exited() {
            eprintln!("berth up: {}", agent.died(&how));
            return 1;
        }
        if let Some(how) = scheduler.exited() {
            eprintln!("berth up: {}", scheduler.died(&how));
            return 1;
        }
    }
}

/// The URL the agent and the CLI dial for a listen address (0.0.0.0 becomes loopback).
fn dial_url(listen: &str) -> String {
    let addr = listen
        .replace("0.0.0.0:", "127.0.0.1:")
        .replace("[::]:", "[::1]:");
    cluster::url(&addr)
}

/// Waits until the scheduler answers ListNodes.
async fn wait_for(url: &str, scheduler: &mut Daemon, timeout: Duration) -> anyhow::Result<Client> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(how) = scheduler.exited() {
            return Err(scheduler.died(&how));
        }
        if let Ok(mut client) = cluster::connect(url).await
            && client.list_nodes(ListNodesRequest {}).await.is_ok()
        {
            return Ok(client);
        }
        if Instant::now() > deadline {
            bail!(
                "the scheduler did not answer at {url} within {} (see {})",
                cluster::human_duration(timeout),
                scheduler.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until ListNodes shows `node` ready.
async fn wait_node(
    mut client: Client,
    node: &str,
    agent: &mut Daemon,
    scheduler: &mut Daemon,
    timeout: Duration,
) -> anyhow::Result<Client> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(how) = agent.exited() {
            return Err(agent.died(&how));
        }
        if let Some(how) = scheduler.exited() {
            return Err(scheduler.died(&how));
        }
        if let Ok(reply) = client.list_nodes(ListNodesRequest {}).await
            && reply
                .get_ref()
                .nodes
                .iter()
                .any(|n| n.name == node && n.ready)
        {
            return Ok(client);
        }
        if Instant::now() > deadline {
            bail!(
                "node {node:?} was not ready within {} (see {})",
                cluster::human_duration(timeout),
                agent.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Deletes every deployment (of every environment) and waits until no container is left in
/// the cluster.
async fn drain(client: &mut Client, timeout: Duration) -> anyhow::Result<()> {
    let deployments = client
        .list(ListDeploymentsRequest {
            all_environments: true,
            ..Default::default()
        })
        .await
        .map_err(cluster::status_error)?
        .into_inner()
        .deployments;
    for d in deployments {
        let name = d.spec.map(|s| s.name).unwrap_or_default();
        println!("berth up: deleting deployment {name} ({})", d.environment);
        client
            .delete(DeleteDeploymentRequest {
                name: name.clone(),
                environment: d.environment,
            })
            .await
            .map_err(cluster::status_error)
            .with_context(|| format!("deleting {name}"))?;
    }
    let deadline = Instant::now() + timeout;
    let mut last = usize::MAX;
    loop {
        let left = client
            .list_containers(ListClusterContainersRequest::default())
            .await
            .map_err(cluster::status_error)?
            .into_inner()
            .containers
            .len();
        if left == 0 {
            return Ok(());
        }
        if left != last {
            println!("berth up: waiting for {left} container(s) to be removed");
            last = left;
        }
        if Instant::now() > deadline {
            bail!(
                "{left} container(s) still there after {}",
                cluster::human_duration(timeout)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dashboard_url_follows_the_schedulers_flag() {
        let url = |a: &[&str]| dashboard_url(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(url(&[]).as_deref(), Some("http://127.0.0.1:7780/"));
        assert_eq!(
            url(&["--http-listen=127.0.0.1:9"]).as_deref(),
            Some("http://127.0.0.1:9/")
        );
        assert_eq!(
            url(&["--http-listen", "[::1]:80"]).as_deref(),
            Some("http://[::1]:80/")
        );
        assert_eq!(url(&["--http-listen=off"]), None);
    }

    fn args(scheduler_args: &[&str]) -> Args {
        Args {
            listen: "127.0.0.1:7700".into(),
            node_name: None,
            scheduler_args: scheduler_args.iter().map(|a| a.to_string()).collect(),
            agent_args: Vec::new(),
            ready_timeout: Duration::from_secs(1),
            stop_timeout: Duration::from_secs(1),
            metrics_listen: "127.0.0.1:9700".into(),
            agent_metrics_listen: "127.0.0.1:9701".into(),
        }
    }

    #[test]
    fn the_scheduler_gets_a_secrets_key_made_once_unless_one_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("pki/secrets.key");
        assert_eq!(
            secrets_key(&args(&[]), key.clone()).unwrap(),
            Some(key.clone())
        );
        let first = std::fs::read(&key).unwrap();
        assert!(berth_proto::secrets_key::SecretsKey::load(&key).is_ok());
        assert_eq!(
            secrets_key(&args(&[]), key.clone()).unwrap(),
            Some(key.clone())
        );
        assert_eq!(
            std::fs::read(&key).unwrap(),
            first,
            "an existing key is kept"
        );
        let argv = scheduler_argv(&args(&["--log-format=json"]), dir.path(), Some(&key));
        let at = argv.iter().position(|a| a == "--secrets-key").unwrap();
        assert_eq!(argv[at + 1], key.display().to_string());
        assert_eq!(argv.last().unwrap(), "--log-format=json");

        let given = args(&["--secrets-key=/etc/berth/k"]);
        let other = dir.path().join("other.key");
        assert_eq!(secrets_key(&given, other.clone()).unwrap(), None);
        assert!(!other.exists(), "no key is made when one is given");
        let argv = scheduler_argv(&given, dir.path(), None);
        assert_eq!(
            argv.iter().filter(|a| a.contains("--secrets-key")).count(),
            1
        );
    }

    #[test]
    fn both_daemons_get_their_metrics_address() {
        let mut a = args(&[]);
        a.agent_metrics_listen = "127.0.0.1:0".into();
        let dir = std::path::Path::new("/tmp/x");
        let sched = scheduler_argv(&a, dir, None);
        let at = sched.iter().position(|f| f == "--metrics-listen").unwrap();
        assert_eq!(sched[at + 1], "127.0.0.1:9700");
        let agent = agent_argv(&a, "http://127.0.0.1:7700", "n1", dir);
        let at = agent.iter().position(|f| f == "--metrics-listen").unwrap();
        assert_eq!(agent[at + 1], "127.0.0.1:0");
    }
}
