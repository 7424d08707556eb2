//! The agent's settings, as the binary's flags give them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use berth_proto::v1::Resources;

use crate::restart::Backoff;
use crate::shim::ShimConfig;

#[derive(Debug, Clone)]
pub struct Config {
    /// The scheduler's NodeService endpoint, e.g. http://127.0.0.1:7700.
    pub scheduler: String,
    pub node_name: String,
    pub labels: BTreeMap<String, String>,
    pub data_dir: PathBuf,
    /// Capacity before the reservation.
    pub total: Resources,
    pub reserved: Resources,
    /// The address other nodes route this node's pod CIDR to.
    pub node_address: String,
    /// Where the scheduler reaches this agent's AgentService (filled from the listener when
    /// not given).
    pub advertise: Option<String>,
    /// The network namespace the node's container network lives in (None: the agent's own).
    pub net_namespace: Option<PathBuf>,
    pub shim: ShimConfig,
    pub backoff: Backoff,
    /// How long a stopped container gets between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// Longest wait between reconnection attempts to the scheduler.
    pub reconnect_max: Duration,
    /// Mutual TLS with the scheduler and AgentService's callers (None: plaintext, loopback
    /// trust).
    pub tls: Option<crate::tls::AgentTls>,
    /// Where the node's DNS server forwards names outside `berth.` (empty: it refuses them).
    pub dns_upstream: Vec<std::net::SocketAddr>,
    /// Host paths (canonical) under which assignments may bind-mount (`--allow-bind`).
    pub allow_bind: Vec<PathBuf>,
    // Where GET /metrics is served (`--metrics-listen`; port 0: any free port, written to
    // DATA/agent/metrics-endpoint); None: not served.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// How containers get their cgroups (`--cgroup-driver`); the shim config carries the same.
    pub cgroup_driver: crate::cgroup::CgroupDriver,
}
