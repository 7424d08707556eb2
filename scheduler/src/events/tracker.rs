//! Turns what the control loop sees into events: a node turning Ready or NotReady, a
//! container changing state, readiness or restarts (or going away), a rollout moving (phase,
//! revision, replica counts). It remembers the last of each it saw; the first sight of a
//! node that is not ready (one remembered from the store after a restart) is not news.

use std::collections::HashMap;

use berth_proto::v1::{
    ContainerState, ContainerStatus, Deployment, Event, EventKind, RolloutPhase,
};

use super::Publisher;
use crate::environments::key::split;

/// What a container event is about; a change of any is an event.
type ContainerKey = (String, i32, bool, u32);
/// What a rollout event is about: revision, phase, replicas, ready, updated.
type RolloutKey = (u64, i32, u32, u32, u32);

#[derive(Debug, Default)]
pub(crate) struct Tracker {
    nodes: HashMap<String, bool>,
    containers: HashMap<String, (ContainerKey, ContainerStatus)>,
    rollouts: HashMap<String, RolloutKey>,
}

impl Tracker {
    /// Nodes and their readiness now.
    pub(crate) fn nodes(&mut self, out: &Publisher, now: impl IntoIterator<Item = (String, bool)>) {
        for (node, ready) in now {
            let before = self.nodes.insert(node.clone(), ready);
            if before == Some(ready) || (before.is_none() && !ready) {
                continue;
            }
            let (kind, words) = if ready {
                (EventKind::NodeReady, "ready")
            } else {
                (
                    EventKind::NodeNotReady,
                    "not ready: no heartbeat or session",
                )
            };
            out.publish(Event {
                kind: kind.into(),
                message: format!("node {node} {words}"),
                node,
                ..Default::default()
            });
        }
    }

    /// Every container the nodes report now (id -> node and status).
    pub(crate) fn containers(
        &mut self,
        out: &Publisher,
        now: &HashMap<String, (String, ContainerStatus)>,
    ) {
        for (id, (node, status)) in now {
            let key = (
                node.clone(),
                status.state,
                status.ready,
                status.restart_count,
            );
            if self.containers.get(id).is_some_and(|(k, _)| *k == key) {
                continue;
            }
            out.publish(container_event(node, status, &state_name(status.state)));
            self.containers.insert(id.clone(), (key, status.clone()));
        }
        self.containers.retain(|id, ((node, ..), status)| {
            let kept = now.contains_key(id);
            if !kept {
                let mut gone = status.clone();
                gone.ready = false;
                out.publish(container_event(node, &gone, "removed"));
            }
            kept
        });
    }

    /// The deployments as the loop described them now.
    pub(crate) fn rollouts<'a>(
        &mut self,
        out: &Publisher,
        now: impl IntoIterator<Item = &'a Deployment>,
    ) {
        let mut seen = Vec::new();
        for d in now {
            let Some(spec) = &d.spec else { continue };
            seen.push(spec.name.clone());
            let key = (
                d.revision,
                d.phase,
                d.replicas,
                d.ready_replicas,
                d.updated_replicas,
            );
            if self.rollouts.insert(spec.name.clone(), key) == Some(key) {
                continue;
            }
            out.publish(rollout_event(&spec.name, d));
        }
        self.rollouts.retain(|name, _| seen.contains(name));
    }
}

fn container_event(node: &str, s: &ContainerStatus, state: &str) -> Event {
    let (env, deployment) = if s.deployment.is_empty() {
        ("", "")
    } else {
        split(&s.deployment)
    };
    let mut message = format!("{} {state}", s.container_id);
    if s.ready {
        message.push_str(", ready");
    }
    if s.restart_count > 0 {
        message.push_str(&format!(", {} restarts", s.restart_count));
    }
    if s.state == ContainerState::Exited as i32 {
        message.push_str(&format!(", exit code {}", s.exit_code));
    }
    for detail in [&s.reason, &s.message] {
        if !detail.is_empty() {
            message.push_str(" - ");
            message.push_str(detail);
        }
    }
    Event {
        kind: EventKind::Container.into(),
        environment: env.to_string(),
        deployment: deployment.to_string(),
        node: node.to_string(),
        container_id: s.container_id.clone(),
        state: state.to_string(),
        ready: s.ready,
        deployment_revision: s.revision,
        message,
        ..Default::default()
    }
}

fn rollout_event(qualified: &str, d: &Deployment) -> Event {
    let phase = phase_name(d.phase);
    let mut message = format!(
        "revision {} {phase}: {}/{} ready, {}/{} updated",
        d.revision, d.ready_replicas, d.replicas, d.updated_replicas, d.replicas
    );
    if !d.message.is_empty() {
        message.push_str(" - ");
        message.push_str(&d.message);
    }
    Event {
        kind: EventKind::Rollout.into(),
        environment: split(qualified).0.to_string(),
        deployment: split(qualified).1.to_string(),
        action: phase,
        deployment_revision: d.revision,
        message,
        ..Default::default()
    }
}

/// "running", "exited", ... as the CLI says them.
fn state_name(state: i32) -> String {
    ContainerState::try_from(state).map_or_else(
        |_| format!("state-{state}"),
        |s| words(s.as_str_name(), "CONTAINER_STATE_"),
    )
}

/// "progressing", "awaiting-approval", ... as the CLI says them.
fn phase_name(phase: i32) -> String {
    RolloutPhase::try_from(phase).map_or_else(
        |_| format!("phase-{phase}"),
        |p| words(p.as_str_name(), "ROLLOUT_PHASE_"),
    )
}

fn words(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix)
        .to_ascii_lowercase()
        .replace('_', "-")
}
