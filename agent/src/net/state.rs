//! Persisted IPAM leases, port reservations and remote pod CIDRs: one JSON file, changed only
//! under an flock and written atomically (tmp + fsync + rename), so concurrent attaches in one
//! agent, or a crash mid-write, never leave two containers with one address.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::NetError;

/// A transport protocol of a published port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One published port of a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Published {
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

/// Everything the node network must remember across agent restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct State {
    /// Container id → its address in the pod CIDR.
    #[serde(default)]
    pub leases: BTreeMap<String, Ipv4Addr>,
    /// Container id → its published ports.
    #[serde(default)]
    pub ports: BTreeMap<String, Vec<Published>>,
    /// Other nodes' pod CIDRs (as `Ipv4Net` displays them): pod traffic to them keeps its
    /// source address (no masquerade).
    #[serde(default)]
    pub remote_pods: Vec<String>,
    /// The address handed out last: the next lease starts after it (round robin), so a
    /// freed address is not reused at once, while the node's neighbour cache may still map
    /// it to the old container's veth.
    #[serde(default)]
    pub last_lease: Option<Ipv4Addr>,
}

impl State {
    /// The container (other than `id`) holding `host_port/proto`, if any.
    pub(crate) fn port_holder(&self, id: &str, host_port: u16, proto: Proto) -> Option<&str> {
        self.ports
            .iter()
            .filter(|(holder, _)| holder.as_str() != id)
            .find(|(_, ps)| {
                ps.iter()
                    .any(|p| p.host_port == host_port && p.proto == proto)
            })
            .map(|(holder, _)| holder.as_str())
    }

    /// The lease of `id`, taking the lowest free host address of `cidr` (never `gateway`) when
    /// it has none yet.
    pub(crate) fn lease(
        &mut self,
        id: &str,
        cidr: Ipv4Net,
        gateway: Ipv4Addr,
    ) -> Result<Ipv4Addr, NetError> {
        if let Some(ip) = self.leases.get(id) {
            return Ok(*ip);
        }
        let taken: std::collections::BTreeSet<Ipv4Addr> = self.leases.values().copied().collect();
        let free = |ip: &Ipv4Addr| *ip != gateway && !taken.contains(ip);
        let after = self.last_lease.filter(|last| cidr.contains(last));
        let ip = cidr
            .hosts()
            .filter(|ip| after.is_none_or(|last| *ip > last))
            .find(free)
            .or_else(|| cidr.hosts().find(free))
            .ok_or(NetError::NoAddressLeft { cidr })?;
        self.leases.insert(id.to_owned(), ip);
        self.last_lease = Some(ip);
        Ok(ip)
    }
}

/// The state file of one node, in its state directory.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    dir: PathBuf,
}

impl Store {
    pub(crate) fn open(dir: &Path) -> Result<Store, NetError> {
        std::fs::create_dir_all(dir).map_err(|e| NetError::io("create state dir", dir, e))?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    fn file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn lock(&self, arg: FlockArg) -> Result<Flock<File>, NetError> {
        let path = self.dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| NetError::io("open lock", &path, e))?;
        // flock locks belong to the open file description, so each call's own open excludes
        // other threads of this agent as well as other processes.
        Flock::lock(file, arg).map_err(|(_, e)| NetError::io("flock", &path, e.into()))
    }

    fn load(&self) -> Result<State, NetError> {
        let path = self.file();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| NetError::State {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(NetError::io("read", path, e)),
        }
    }

    fn save(&self, state: &State) -> Result<(), NetError> {
        let path = self.file();
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| NetError::State {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        berth_runtime::sys::fs::atomic_write(&path, &bytes)
            .map_err(|e| NetError::io("write", &path, e))
    }

    /// A snapshot of the state (under a shared lock, so never a half-applied change).
    pub(crate) fn read(&self) -> Result<State, NetError> {
        let _lock = self.lock(FlockArg::LockShared)?;
        self.load()
    }

    /// Runs `f` on the state under the exclusive lock and saves what it leaves only if `f`
    /// succeeds. `f` also gets the lock's protection for side effects that must follow the
    /// state in order (the nft ruleset is rendered from it). Blocking.
    pub(crate) fn update<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, NetError>,
    ) -> Result<T, NetError> {
        let _lock = self.lock(FlockArg::LockExclusive)?;
        let before = self.load()?;
        let mut state = before.clone();
        let out = f(&mut state)?;
        if state != before {
            self.save(&state)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_skips_gateway_and_taken_and_reuses() {
        let cidr: Ipv4Net = "10.9.0.0/29".parse().unwrap();
        let gw = Ipv4Addr::new(10, 9, 0, 1);
        let mut s = State::default();
        let a = s.lease("a", cidr, gw).unwrap();
        let b = s.lease("b", cidr, gw).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(b, Ipv4Addr::new(10, 9, 0, 3));
        assert_eq!(s.lease("a", cidr, gw).unwrap(), a);
        // A freed address is not handed out again at once (round robin).
        s.leases.remove("a");
        assert_eq!(s.lease("c", cidr, gw).unwrap(), Ipv4Addr::new(10, 9, 0, 4));
        for id in ["d", "e"] {
            s.lease(id, cidr, gw).unwrap();
        }
        // Wrapped around: the freed one is the last left.
        assert_eq!(s.lease("f", cidr, gw).unwrap(), a);
        assert!(matches!(
            s.lease("g", cidr, gw),
            Err(NetError::NoAddressLeft { .. })
        ));
    }

    #[test]
    fn port_holder_ignores_self() {
        let mut s = State::default();
        let p = Published {
            host_port: 80,
            container_port: 8080,
            proto: Proto::Tcp,
        };
        s.ports.insert("a".into(), vec![p]);
        assert_eq!(s.port_holder("b", 80, Proto::Tcp), Some("a"));
        assert_eq!(s.port_holder("a", 80, Proto::Tcp), None);
        assert_eq!(s.port_holder("b", 80, Proto::Udp), None);
    }
}
