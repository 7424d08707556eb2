//! Server-sent events for live pages. `/live` says `changed` whenever a deployment's
//! described state changes (the controller's broadcast) or the cluster's nodes or containers
//! do (compared once a second, and at least every few seconds so heartbeat ages move); htmx
//! then reloads the page's content. `/containers/ID/log/live` follows a container's log.
//! Both end when the leader's term does.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use berth_proto::v1::ClusterLogsRequest;
use berth_proto::v1::deployment_service_server::DeploymentService;
use futures::{Stream, StreamExt as _};
use tokio::sync::broadcast::error::RecvError;

use super::Dashboard;
use super::session::Visitor;
use super::view::PageError;
use crate::clock::now_ms;
use crate::cluster::Cluster;

/// How often the cluster's state is compared with the last one sent.
const TICK: Duration = Duration::from_secs(1);
/// Ticks after which `changed` is sent anyway (heartbeat ages).
const REFRESH_TICKS: u32 = 5;

/// What the cluster page shows, less the heartbeat ages: equal means nothing to redraw.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    nodes: Vec<(String, bool, u32, u64, u64)>,
    containers: Vec<(String, i32, bool)>,
}

fn snapshot(cluster: &Cluster) -> Snapshot {
    let nodes = cluster
        .node_infos(now_ms())
        .into_iter()
        .map(|n| {
            let used = n.capacity.and_then(|c| c.allocated).unwrap_or_default();
            (
                n.name,
                n.ready,
                n.containers,
                used.cpu_millis,
                used.memory_bytes,
            )
        })
        .collect();
    let containers = cluster
        .containers("")
        .into_iter()
        .filter_map(|c| c.status)
        .map(|s| (s.container_id, s.state, s.ready))
        .collect();
    Snapshot { nodes, containers }
}

/// The state of one `/live` stream.
struct Changes {
    updates: tokio::sync::broadcast::Receiver<berth_proto::v1::Deployment>,
    cluster: Arc<Cluster>,
    last: Snapshot,
    tick: tokio::time::Interval,
    quiet_ticks: u32,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Changes {
    /// Waits for the next change; None when the stream should end.
    async fn next(&mut self) -> Option<Event> {
        loop {
            let changed = tokio::select! {
                update = self.updates.recv() => match update {
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        // A burst of updates is one redraw.
                        while self.updates.try_recv().is_ok() {}
                        true
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = self.tick.tick() => {
                    let now = snapshot(&self.cluster);
                    self.quiet_ticks += 1;
                    let changed = now != self.last || self.quiet_ticks >= REFRESH_TICKS;
                    self.last = now;
                    changed
                }
                _ = self.stop.wait_for(|s| *s) => return None,
            };
            if changed {
                self.quiet_ticks = 0;
                return Some(Event::default().event("changed").data("changed"));
            }
        }
    }
}

pub(crate) async fn changes(
    State(d): State<Dashboard>,
    _v: Visitor,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let cluster = d.deploy.controller.cluster.clone();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = Changes {
        updates: d.deploy.controller.events.subscribe(),
        last: snapshot(&cluster),
        cluster,
        tick,
        quiet_ticks: 0,
        stop: d.stop.clone(),
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        let event = s.next().await?;
        Some((Ok(event), s))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// The last lines of a container's log, then what it writes, as `log` events of escaped text
/// to append.
pub(crate) async fn log(
    State(d): State<Dashboard>,
    v: Visitor,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, PageError> {
    let chunks = d
        .deploy
        .logs(v.request(ClusterLogsRequest {
            target: id,
            follow: true,
            tail_lines: super::pages::LOG_TAIL,
            environment: String::new(),
        }))
        .await?
        .into_inner();
    let mut stop = d.stop.clone();
    let events = chunks
        .take_until(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        // A broken follow ends the stream; the browser reconnects.
        .take_while(|chunk| std::future::ready(chunk.is_ok()))
        .map(|chunk| {
            let data = chunk.map(|c| c.data).unwrap_or_default();
            let text = escape(&String::from_utf8_lossy(&data));
            Ok(Event::default().event("log").data(text))
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// HTML-escapes log text (htmx inserts event data as HTML) and drops carriage returns.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // SSE cannot carry a carriage return (axum's Event refuses one).
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_text_is_escaped() {
        assert_eq!(
            super::escape("<script>a&b</script>'\""),
            "&lt;script&gt;a&amp;b&lt;/script&gt;&#39;&quot;"
        );
    }
}
