//! One container's task: prepare it, start it through its shim, watch it (exit, probes),
//! restart it as its policy says, and take everything down when it is unassigned.

use std::sync::Arc;
use std::time::Duration;

use berth_proto::v1::{Assignment, ContainerState, ContainerStatus};
use berth_runtime::sys::time::now_ms;
use tokio::sync::watch;

use super::record::{self, Record};
use super::{Containers, Inner, Start, prepare, storage};
use crate::error::AgentError;
use crate::files::Resolved;
use crate::layout::ContainerPaths;
use crate::probe::{self, Outcome, ProbeState, ProbeTarget};
use crate::restart::{self, Decision};
use crate::shim::{self, ExitRecord, ShimState};

/// Lines of log sent up with an exit.
const LOG_TAIL_LINES: usize = 20;
const LOG_TAIL_BYTES: usize = 4096;
/// The status reason of a container whose config or secret version has not arrived yet.
const WAITING_FOR_FILES: &str = "WaitingForFiles";

struct Worker {
    containers: Containers,
    assignment: Arc<Assignment>,
    paths: ContainerPaths,
    status: watch::Sender<ContainerStatus>,
    stop: watch::Receiver<bool>,
    record: Record,
}

/// Why a wait ended.
enum Woken {
    Exited(ExitRecord),
    Stop,
    LivenessFailed(String),
}

pub(crate) async fn drive(
    containers: Containers,
    assignment: Arc<Assignment>,
    status: watch::Sender<ContainerStatus>,
    stop: watch::Receiver<bool>,
    start: Start,
) {
    let paths = containers
        .inner()
        .layout
        .container(&assignment.container_id);
    let mut w = Worker {
        record: record::load_record(&paths),
        containers,
        assignment,
        paths,
        status,
        stop,
    };
    match start {
        Start::Refused(e) => {
            tracing::warn!(container = %w.paths.id, "refused: {e}");
            w.fail(&e);
            w.stopped().await;
            // Nothing was made for a refused container.
            w.containers.forget(&w.paths.id);
            return;
        }
        Start::Fresh => {
            let Some(resolved) = w.wait_for_files().await else {
                // Unassigned while waiting: nothing was made.
                w.containers.forget(&w.paths.id);
                return;
            };
            if let Err(e) = w.prepare(resolved).await {
                tracing::warn!(container = %w.paths.id, "preparing: {e}");
                w.fail(&e);
                w.stopped().await;
                w.teardown().await;
                return;
            }
        }
        Start::Adopt => {}
    }
    w.run().await;
    w.teardown().await;
}

impl Worker {
    fn inner(&self) -> &Arc<Inner> {
        self.containers.inner()
    }

    fn update(&self, f: impl FnOnce(&mut ContainerStatus)) {
        self.status.send_modify(f);
        self.containers.publish(self.status.borrow().clone());
    }

    fn fail(&self, e: &AgentError) {
        self.update(|s| {
            s.state = ContainerState::Failed as i32;
            s.ready = false;
            s.reason = e.reason().to_string();
            s.message = e.to_string();
        });
    }

    fn stop_requested(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves once the container is unassigned.
    async fn stopped(&mut self) {
        while !*self.stop.borrow_and_update() {
            if self.stop.changed().await.is_err() {
                return;
            }
        }
    }

    /// The assignment's config and secret versions, once the scheduler has sent them all
    /// (until then the container stays Pending saying what it waits for); None when it is
    /// unassigned first.
    async fn wait_for_files(&mut self) -> Option<Resolved> {
        let mut changed = self.inner().files.changed();
        loop {
            changed.mark_unchanged();
            match self.inner().files.resolve(&self.assignment) {
                Ok(resolved) => return Some(resolved),
                // Names and versions only: never a value.
                Err(waiting) if self.status.borrow().message != waiting => {
                    tracing::info!(container = %self.paths.id, "{waiting}");
                    self.update(|s| {
                        s.state = ContainerState::Pending as i32;
                        s.reason = WAITING_FOR_FILES.into();
                        s.message = waiting;
                    });
                }
                Err(_) => {}
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return None },
                () = self.stopped() => return None,
            }
        }
    }

    /// Image, network, root filesystem and bundle; the assignment is saved first so that a
    /// crash part-way is cleaned up by the next agent.
    async fn prepare(&mut self, resolved: Resolved) -> Result<(), AgentError> {
        std::fs::create_dir_all(&self.paths.dir).map_err(AgentError::io(format!(
            "creating {}",
            self.paths.dir.display()
        )))?;
        record::save_assignment(&self.paths, &self.assignment)?;
        record::save_record(&self.paths, &self.record)?;
        let inner = self.inner().clone();
        let assignment = self.assignment.clone();
        let image = tokio::select! {
            image = prepare::ensure_image(&inner.store, &assignment) => image?,
            () = self.stopped() => return Err(AgentError::Container {
                id: self.paths.id.clone(),
                reason: "unassigned while its image was fetched".into(),
            }),
        };
        let net = self.containers.network_ready().await;
        net.check_ports(&self.paths.id, &self.assignment.ports)?;
        let attachment = net.attach(&self.paths.id, &self.assignment.ports).await?;
        self.update(|s| s.ip = attachment.ip.to_string());
        let config = &self.inner().config;
        let cgroup = crate::cgroup::container_cgroup(
            config.cgroup_driver,
            &config.node_name,
            &self.assignment.container_id,
        );
        let overrides =
            prepare::overrides(&self.assignment, cgroup.cgroups_path, &attachment.netns);
        let security = prepare::security(&self.assignment);
        let store = self.inner().store.clone();
        let paths = self.paths.clone();
        let nameserver = net.gateway();
        let storage = storage::Inputs {
            assignment: self.assignment.clone(),
            resolved,
            allow_bind: self.inner().config.allow_bind.clone(),
            volumes: self.inner().volumes.clone(),
        };
        tokio::task::spawn_blocking(move || {
            prepare::rootfs_and_bundle(
                &store, &image, &paths, &overrides, &security, nameserver, &storage,
            )
        })
        .await
        .map_err(|e| AgentError::Container {
            id: self.paths.id.clone(),
            reason: format!("preparing task: {e}"),
        })??;
        self.update(|s| {
            s.state = ContainerState::Created as i32;
            s.reason.clear();
            s.message.clear();
        });
        Ok(())
    }

    /// Runs attempts until the container is unassigned.
    async fn run(&mut self) {
        // An adopted container: still running, ended while the agent was away, or between
        // attempts.
        let mut running = self.running_shim().await;
        if running.is_none()
            && let Ok(Some(exit)) = shim::read_exit(&self.paths)
            && exit.finished_at_ms > self.record.handled_exit_ms
        {
            let ran_for = self.ran_for(&exit);
            if !self.exited(exit, ran_for).await {
                self.stopped().await;
                return;
            }
        } else if running.is_none() && self.record.gave_up.is_some() {
            self.report_given_up();
            self.stopped().await;
            return;
        }
        if let Some(ip) = self
            .containers
            .network()
            .and_then(|n| n.ip_of(&self.paths.id))
        {
            self.update(|s| s.ip = ip.to_string());
        }
        loop {
            if self.stop_requested() {
                return;
            }
            let state = match running.take() {
                Some(state) => state,
                None => match self.start_attempt().await {
                    Ok(state) => state,
                    Err(e) => {
                        tracing::warn!(container = %self.paths.id, "starting: {e}");
                        self.fail(&e);
                        let exit = ExitRecord {
                            exit_code: -1,
                            oom_killed: false,
                            finished_at_ms: now_ms(),
                        };
                        if !self.exited_with(exit, Duration::ZERO, Some(&e)).await {
                            self.stopped().await;
                            return;
                        }
                        continue;
                    }
                },
            };
            self.update(|s| {
                s.state = ContainerState::Running as i32;
                s.pid = state.container_pid;
                s.started_at_ms = state.started_at_ms;
                s.finished_at_ms = 0;
                s.exit_code = 0;
                s.oom_killed = false;
                s.reason.clear();
                s.message.clear();
                s.ready = self.assignment.readiness.is_none();
                s.restart_count = self.record.restart_count;
            });
            match self.watch_running(&state).await {
                Woken::Stop => {
                    match self.stop_shim(&state).await {
                        Ok(exit) => self.note_exit(&exit),
                        Err(e) => tracing::warn!(container = %self.paths.id, "stopping: {e}"),
                    }
                    return;
                }
                Woken::LivenessFailed(why) => {
                    tracing::info!(container = %self.paths.id, "liveness probe failed: {why}");
                    let exit = self.stop_shim(&state).await.unwrap_or(ExitRecord {
                        exit_code: 137,
                        oom_killed: false,
                        finished_at_ms: now_ms(),
                    });
                    let ran_for = self.ran_for(&exit);
                    let reason = AgentError::Container {
                        id: self.paths.id.clone(),
                        reason: format!("liveness probe failed: {why}"),
                    };
                    if !self.exited_with(exit, ran_for, Some(&reason)).await {
                        self.stopped().await;
                        return;
                    }
                }
                Woken::Exited(exit) => {
                    let ran_for = self.ran_for(&exit);
                    if !self.exited(exit, ran_for).await {
                        self.stopped().await;
                        return;
                    }
                }
            }
        }
    }

    /// Stops the container (TERM, then KILL after the grace period) and waits for its exit.
    async fn stop_shim(&self, state: &ShimState) -> Result<ExitRecord, shim::ShimError> {
        let cfg = self.inner().config.shim.clone();
        let grace = self.inner().config.stop_grace;
        let paths = self.paths.clone();
        let state = state.clone();
        tokio::spawn(async move { shim::stop(&cfg, &paths, &state, grace).await })
            .await
            .unwrap_or_else(|e| panic!("stopping task: {e}"))
    }

    /// The shim of an adopted container, if one runs. One that holds its lock but has not
    /// written shim.json yet (the last agent died while starting it) is waited for, so the
    /// container is never started a second time.
    async fn running_shim(&self) -> Option<ShimState> {
        let deadline = tokio::time::Instant::now() + shim::client::START_TIMEOUT;
        loop {
            if let Ok(Some(state)) = shim::read_state(&self.paths)
                && shim::is_alive(&state)
            {
                return Some(state);
            }
            if !shim::lock_held(&self.paths) || tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn ran_for(&self, exit: &ExitRecord) -> Duration {
        let started = self.status.borrow().started_at_ms;
        let started = if started > 0 {
            started
        } else {
            shim::read_state(&self.paths)
                .ok()
                .flatten()
                .map_or(exit.finished_at_ms, |s| s.started_at_ms)
        };
        Duration::from_millis(
            u64::try_from(exit.finished_at_ms.saturating_sub(started)).unwrap_or(0),
        )
    }

    async fn start_attempt(&mut self) -> Result<ShimState, AgentError> {
        storage::check_private(&self.assignment, &self.paths)?;
        let cfg = self.inner().config.shim.clone();
        let state = shim::start(&cfg, &self.paths).await?;
        // Start latency is timed from `applied assignments` to this line.
        tracing::debug!(container = %self.paths.id, "started");
        Ok(state)
    }

    /// Waits for the exit, a stop request or a failed liveness probe, running the probes.
    async fn watch_running(&mut self, state: &ShimState) -> Woken {
        let target = ProbeTarget {
            container_id: self.paths.id.clone(),
            runtime_binary: self.inner().config.shim.runtime_binary.clone(),
            runtime_root: self.paths.runtime_root.clone(),
            ip: self
                .containers
                .network()
                .and_then(|n| n.ip_of(&self.paths.id)),
            netns: self.inner().config.net_namespace.clone(),
        };
        let readiness = self.assignment.readiness.clone();
        let liveness = self.assignment.liveness.clone();
        let status = self.status.clone();
        let containers = self.containers.clone();
        let readiness_loop = async {
            let Some(probe) = readiness.as_ref() else {
                return std::future::pending::<()>().await;
            };
            let (delay, period, _) = probe::schedule(probe);
            tokio::time::sleep(delay).await;
            let mut state = ProbeState::readiness(probe);
            loop {
                let outcome = probe::check(probe, &target).await;
                if let Some(passing) = state.observe(&outcome) {
                    // Endpoint propagation is timed from this line (bench-propagation).
                    tracing::info!(
                        container = %target.container_id,
                        ready = passing,
                        "readiness changed"
                    );
                    status.send_modify(|s| {
                        s.ready = passing;
                        if let Outcome::Failure(why) = &outcome {
                            s.message = format!("readiness probe failed: {why}");
                        } else {
                            s.message.clear();
                        }
                    });
                    containers.publish(status.borrow().clone());
                }
                tokio::time::sleep(period).await;
            }
        };
        let liveness_loop = async {
            let Some(probe) = liveness.as_ref() else {
                return std::future::pending::<String>().await;
            };
            let (delay, period, _) = probe::schedule(probe);
            tokio::time::sleep(delay).await;
            let mut state = ProbeState::liveness(probe);
            loop {
                let outcome = probe::check(probe, &target).await;
                if state.observe(&outcome) == Some(false) {
                    return match outcome {
                        Outcome::Failure(why) => why,
                        Outcome::Success => "failed".to_string(),
                    };
                }
                tokio::time::sleep(period).await;
            }
        };
        let mut stop = self.stop.clone();
        let stop_wait = async move {
            while !*stop.borrow_and_update() {
                if stop.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        };
        tokio::select! {
            exit = shim::wait_exit(&self.paths, state) => match exit {
                Ok(exit) => Woken::Exited(exit),
                Err(e) => {
                    tracing::warn!(container = %self.paths.id, "waiting: {e}");
                    Woken::Exited(ExitRecord { exit_code: -1, oom_killed: false, finished_at_ms: now_ms() })
                }
            },
            () = stop_wait => Woken::Stop,
            why = liveness_loop => Woken::LivenessFailed(why),
            () = readiness_loop => unreachable!("the readiness loop never ends"),
        }
    }

    fn note_exit(&mut self, exit: &ExitRecord) {
        self.record.last_exit_code = Some(exit.exit_code);
        self.record.last_oom_killed = exit.oom_killed;
        self.record.last_finished_at_ms = exit.finished_at_ms;
        self.record.handled_exit_ms = exit.finished_at_ms;
        if let Err(e) = record::save_record(&self.paths, &self.record) {
            tracing::warn!(container = %self.paths.id, "saving its record: {e}");
        }
    }

    async fn exited(&mut self, exit: ExitRecord, ran_for: Duration) -> bool {
        self.exited_with(exit, ran_for, None).await
    }

    /// Reports an exit and applies the restart policy; false when the container stays down.
    async fn exited_with(
        &mut self,
        exit: ExitRecord,
        ran_for: Duration,
        cause: Option<&AgentError>,
    ) -> bool {
        self.note_exit(&exit);
        let tail = crate::logs::tail(&self.paths, LOG_TAIL_LINES).unwrap_or_default();
        let tail = String::from_utf8_lossy(&tail[tail.len().saturating_sub(LOG_TAIL_BYTES)..])
            .into_owned();
        let backoff = self.inner().config.backoff;
        let failed = exit.exit_code != 0 || cause.is_some();
        self.record.consecutive_failures = if failed {
            backoff.consecutive_after(self.record.consecutive_failures, ran_for) + 1
        } else {
            0
        };
        let policy = self.assignment.restart.unwrap_or_default();
        let decision = restart::should_restart(&policy, exit.exit_code, self.record.restart_count);
        let looping = restart::crash_looping(self.record.consecutive_failures);
        self.update(|s| {
            s.state = if cause.is_some() && exit.exit_code == -1 {
                ContainerState::Failed as i32
            } else {
                ContainerState::Exited as i32
            };
            s.ready = false;
            s.exit_code = exit.exit_code;
            s.oom_killed = exit.oom_killed;
            s.finished_at_ms = exit.finished_at_ms;
            s.log_tail = tail;
            s.restart_count = self.record.restart_count;
            s.reason = if exit.oom_killed {
                "OOMKilled".into()
            } else if looping && matches!(decision, Decision::Restart) {
                "CrashLoopBackOff".into()
            } else if let Some(c) = cause {
                c.reason().into()
            } else if exit.exit_code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            };
            if let Some(c) = cause {
                s.message = c.to_string();
            }
        });
        match decision {
            Decision::Restart => {
                let delay = if failed {
                    backoff.delay(self.record.consecutive_failures.saturating_sub(1))
                } else {
                    Duration::ZERO
                };
                self.record.restart_count += 1;
                let _ = record::save_record(&self.paths, &self.record);
                tracing::info!(container = %self.paths.id, exit_code = exit.exit_code, ?delay, "restarting");
                tokio::select! {
                    () = tokio::time::sleep(delay) => true,
                    () = self.stopped() => false,
                }
            }
            Decision::GiveUp { reason } => {
                self.record.gave_up = Some(reason.clone());
                let _ = record::save_record(&self.paths, &self.record);
                if failed {
                    self.update(|s| {
                        if s.message.is_empty() {
                            s.message = format!("not restarted: {reason}");
                        }
                    });
                }
                false
            }
        }
    }

    fn report_given_up(&self) {
        let r = &self.record;
        self.update(|s| {
            s.state = ContainerState::Exited as i32;
            s.exit_code = r.last_exit_code.unwrap_or_default();
            s.oom_killed = r.last_oom_killed;
            s.finished_at_ms = r.last_finished_at_ms;
            s.restart_count = r.restart_count;
            s.message = format!("not restarted: {}", r.gave_up.clone().unwrap_or_default());
        });
    }

    /// Stops whatever still runs and removes every trace: process, network, root
    /// filesystem, directory; then the container leaves the node's list.
    async fn teardown(&mut self) {
        self.update(|s| {
            s.state = ContainerState::Stopping as i32;
            s.ready = false;
        });
        if let Ok(Some(state)) = shim::read_state(&self.paths)
            && shim::is_alive(&state)
            && let Err(e) = self.stop_shim(&state).await
        {
            tracing::warn!(container = %self.paths.id, "stopping: {e}");
        }
        let inner = self.inner().clone();
        remove_leftovers(&inner, &self.paths).await;
        self.containers.forget(&self.paths.id);
    }
}

/// Removes a container's runtime state, network, secrets tmpfs, use of volumes, root
/// filesystem and directory, each if present.
pub(crate) async fn remove_leftovers(inner: &Arc<Inner>, paths: &ContainerPaths) {
    let runtime = inner.config.shim.runtime_binary.clone();
    if paths.runtime_root.join(&paths.id).exists() {
        let out = tokio::process::Command::new(&runtime)
            .arg("--root")
            .arg(&paths.runtime_root)
            .args(["delete", "--force", &paths.id])
            .output()
            .await;
        if let Ok(out) = out
            && !out.status.success()
        {
            tracing::warn!(container = %paths.id, "runtime delete: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
    }
    if let Some(net) = inner.net.get()
        && let Err(e) = net.detach(&paths.id).await
    {
        tracing::warn!(container = %paths.id, "detaching its network: {e}");
    }
    // After delete: nothing of the container holds its tmpfs or volumes any more.
    if let Err(e) = storage::unmount_private(paths) {
        tracing::warn!(container = %paths.id, "{e}");
    }
    if let Err(e) = inner.volumes.release(&paths.id) {
        tracing::warn!(container = %paths.id, "releasing its volumes: {e}");
    }
    let p = paths.clone();
    let removed = tokio::task::spawn_blocking(move || prepare::remove_rootfs(&p)).await;
    if let Ok(Err(e)) = removed {
        tracing::warn!(container = %paths.id, "{e}");
    }
    if let Err(e) = std::fs::remove_dir_all(&paths.dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(container = %paths.id, "removing {}: {e}", paths.dir.display());
    }
}
