//! The typed errors of node networking, each naming the container, interface or path involved.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while wiring containers to the node network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Every host address of the pod CIDR is leased.
    #[error("no address left in pod CIDR {cidr}")]
    NoAddressLeft {
        /// The exhausted CIDR.
        cidr: ipnet::Ipv4Net,
    },
    /// A host port is reserved by another container or bound by a process on the node.
    #[error("host port {port}/{protocol} is in use by {holder}")]
    PortInUse {
        /// The host port asked for.
        port: u16,
        /// "tcp" or "udp".
        protocol: &'static str,
        /// `container <id>` or `a process on the node`.
        holder: String,
    },
    /// A port mapping that cannot be published (port 0 or above 65535, unknown protocol).
    #[error("container {id}: invalid port mapping: {reason}")]
    InvalidPort {
        /// The container asking.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A container id that cannot name a netns file (empty, a path, too long).
    #[error("invalid container id {id:?}")]
    InvalidId {
        /// The id as given.
        id: String,
    },
    /// The node configuration cannot work (pod CIDR too small, empty node name).
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    /// A service from the scheduler that cannot be balanced (the reason names the field).
    #[error("invalid service {service:?}: {reason}")]
    InvalidService {
        /// The service's name as given.
        service: String,
        /// What is wrong, starting with the field.
        reason: String,
    },
    /// A pod route from the scheduler that does not parse.
    #[error("invalid route to node {node}: {reason}")]
    InvalidRoute {
        /// The node the route leads to.
        node: String,
        /// What does not parse.
        reason: String,
    },
    /// `teardown` while containers still hold leases.
    #[error("containers still attached: {}", ids.join(", "))]
    StillAttached {
        /// The containers still holding a lease.
        ids: Vec<String>,
    },
    /// A netlink request failed.
    #[error("{what}: {source}")]
    Netlink {
        /// The operation and the interface it was about.
        what: String,
        /// The netlink error.
        #[source]
        source: rtnetlink::Error,
    },
    /// A file, mount or namespace operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// The operation.
        what: &'static str,
        /// The path it was about.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `nft -f -` refused a ruleset.
    #[error("nft for table {table}: {stderr}")]
    Nft {
        /// The node's table.
        table: String,
        /// What nft said.
        stderr: String,
    },
    /// The persisted IPAM/port state does not parse.
    #[error("network state {}: {reason}", path.display())]
    State {
        /// The state file.
        path: PathBuf,
        /// Why it does not parse.
        reason: String,
    },
}

impl NetError {
    /// An `Io` error for `path`.
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        NetError::Io {
            what,
            path: path.into(),
            source,
        }
    }

    /// A `Netlink` error for `what` (which names the interface).
    pub(crate) fn netlink(what: impl Into<String>, source: rtnetlink::Error) -> Self {
        NetError::Netlink {
            what: what.into(),
            source,
        }
    }
}
