//! Nodes, the domain: agents register (getting a stable pod CIDR) and open a session for
//! heartbeats and events up, assignment sets and routes down; a node acts only as itself.

use std::sync::Arc;

use berth_proto::v1::{
    Hello, PodRoute, RegisterRequest, RouteSet, SchedulerMessage, scheduler_message,
};
use ipnet::Ipv4Net;

use crate::auth::Caller;
use crate::cluster::{Cluster, Downlink};
use crate::error::SchedError;
use crate::records::{self, NODES, NodeRecord, POD_CIDRS, node_key, pod_cidr_key};
use crate::store::{Expect, Op, Store};

#[derive(Debug, Clone)]
pub(crate) struct Nodes {
    pub store: Arc<dyn Store>,
    pub cluster: Arc<Cluster>,
    /// Node pod CIDRs are carved out of this, one /24 each.
    pub pod_network: Ipv4Net,
    /// Services' virtual IPs: no node may have its address in it.
    pub service_network: Ipv4Net,
}

impl Nodes {
    /// Registers the node `req` names, for `caller` (None: authentication is off): its
    /// record (see [`Nodes::upsert`]) and its new session number.
    pub(crate) async fn register(
        &self,
        caller: Option<&Caller>,
        req: &RegisterRequest,
    ) -> Result<(NodeRecord, u64), SchedError> {
        check_node_identity(caller, &req.node_name, "Register")?;
        self.check_address(&req.node_address)?;
        check_allowed_bind_paths(&req.allowed_bind_paths)?;
        let record = self.upsert(req).await?;
        let session = self
            .cluster
            .register(record.clone(), req.capacity.unwrap_or_default());
        tracing::info!(node = %record.name, pod_cidr = %record.pod_cidr, "node registered");
        Ok((record, session))
    }

    /// Opens the session `hello` names for `caller`: the node's current assignments go down
    /// `downlink` first, and every node learns the routes to the nodes known now.
    pub(crate) fn open_session(
        &self,
        caller: Option<&Caller>,
        hello: &Hello,
        downlink: Downlink,
    ) -> Result<(), SchedError> {
        // Every heartbeat and event of the session counts for the Hello's node: checked once here.
        check_node_identity(caller, &hello.node_name, "Session")?;
        let first = self
            .cluster
            .connect(&hello.node_name, hello.session, downlink.clone())?;
        for m in first {
            let _ = downlink.try_send(m);
        }
        self.cluster.broadcast(&self.routes());
        tracing::info!(node = %hello.node_name, session = hello.session, "session open");
        Ok(())
    }

    /// Refuses a node address inside the service network: virtual IPs would shadow it.
    fn check_address(&self, address: &str) -> Result<(), SchedError> {
        match address.parse::<std::net::Ipv4Addr>() {
            Ok(ip) if self.service_network.contains(&ip) => Err(SchedError::invalid(
                "node_address",
                format!(
                    "{ip} lies in the service network {} (--service-cidr)",
                    self.service_network
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The heartbeat interval agents are told, in milliseconds.
    pub(crate) fn heartbeat_interval_ms(&self) -> u32 {
        u32::try_from(self.cluster.heartbeat_interval.as_millis()).unwrap_or(u32::MAX)
    }

    /// The node's record: its pod CIDR is allocated once and kept across registrations. The
    /// record and the CIDR's own key (`/pod-cidrs/<cidr>`, created with `Expect::Absent`) are
    /// written in one transaction, so two nodes registering at once cannot both get a CIDR:
    /// the second transaction conflicts and picks again. Nodes are never removed, so CIDR
    /// keys are never freed.
    async fn upsert(&self, req: &RegisterRequest) -> Result<NodeRecord, SchedError> {
        crate::spec::validate_name("node_name", &req.node_name)
            .or_else(|_| validate_node_name(&req.node_name))?;
        let key = node_key(&req.node_name);
        loop {
            let existing = self.store.get(&key).await?;
            let (mut record, expect) = match &existing {
                Some(kv) => (
                    records::decode::<NodeRecord>(&key, &kv.value)?,
                    Expect::Revision(kv.mod_revision),
                ),
                None => (
                    NodeRecord {
                        name: req.node_name.clone(),
                        ..Default::default()
                    },
                    Expect::Absent,
                ),
            };
            let claim = self.cidr_claim(&record).await?;
            if let Some(cidr) = &claim {
                record.pod_cidr = cidr.clone();
            }
            record.labels = req.labels.clone().into_iter().collect();
            record.address = req.node_address.clone();
            record.agent_endpoint = req.agent_endpoint.clone();
            record.allowed_bind_paths = req.allowed_bind_paths.clone();
            let cap = req.capacity.unwrap_or_default();
            record.allocatable = cap.allocatable;
            record.total = cap.total;
            let mut ops = vec![Op::Put {
                key: key.clone(),
                value: records::encode(&record),
                expect,
            }];
            if let Some(cidr) = claim {
                ops.push(Op::Put {
                    key: pod_cidr_key(&cidr),
                    value: record.name.clone().into_bytes(),
                    expect: Expect::Absent,
                });
            }
            match self.store.txn(ops).await {
                Ok(_) => return Ok(record),
                // Another registration of the same node raced us, or another node took the
                // CIDR first: read again and pick again.
                Err(crate::store::StoreError::Conflict { key: lost, .. }) => {
                    tracing::debug!(node = %record.name, conflict = %lost, "registration raced; again");
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The CIDR `record`'s node must claim in its write, or None when it already holds its
    /// own. A record from before CIDR keys existed claims the CIDR it has (kept stable); one
    /// whose CIDR another node holds (a duplicate handed out before CIDRs were reserved) gets
    /// a free one: its agent then refuses the change loudly rather than reuse addresses.
    async fn cidr_claim(&self, record: &NodeRecord) -> Result<Option<String>, SchedError> {
        if !record.pod_cidr.is_empty() {
            let key = pod_cidr_key(&record.pod_cidr);
            match self.store.get(&key).await? {
                Some(kv) if kv.value == record.name.as_bytes() => return Ok(None),
                None => return Ok(Some(record.pod_cidr.clone())),
                Some(kv) => tracing::warn!(
                    node = %record.name,
                    pod_cidr = %record.pod_cidr,
                    holder = %String::from_utf8_lossy(&kv.value),
                    "pod CIDR held by another node: giving this node a free one"
                ),
            }
        }
        Ok(Some(self.free_cidr().await?.to_string()))
    }

    /// The first /24 of the pod network that no CIDR key and no node record names (records
    /// written before CIDR keys existed count too).
    async fn free_cidr(&self) -> Result<Ipv4Net, SchedError> {
        let used = records::claimed(self.store.as_ref(), POD_CIDRS, NODES, |n: NodeRecord| {
            n.pod_cidr
        })
        .await?;
        let subnets = self
            .pod_network
            .subnets(24)
            .map_err(|e| SchedError::invalid("pod_network", e.to_string()))?;
        subnets
            .into_iter()
            .find(|s| !used.contains(&s.to_string()))
            .ok_or_else(|| {
                SchedError::FailedPrecondition(format!(
                    "no /24 left in the pod network {}",
                    self.pod_network
                ))
            })
    }

    /// Routes to every node's pod CIDR, for every node (each skips its own).
    pub(crate) fn routes(&self) -> SchedulerMessage {
        let routes = self.cluster.with_nodes(|nodes| {
            nodes
                .values()
                .filter(|n| !n.record.pod_cidr.is_empty() && !n.record.address.is_empty())
                .map(|n| PodRoute {
                    node_name: n.record.name.clone(),
                    pod_cidr: n.record.pod_cidr.clone(),
                    node_address: n.record.address.clone(),
                })
                .collect()
        });
        SchedulerMessage {
            msg: Some(scheduler_message::Msg::Routes(RouteSet { routes })),
        }
    }
}

/// Refuses a caller that is not the node it speaks for: with authentication on (a caller was
/// admitted), only that node's own certificate may register it or run its session; a token or
/// an identity a standby forwarded never stands for a node. Without authentication (TLS off,
/// no caller) there is nothing to check against.
fn check_node_identity(caller: Option<&Caller>, node: &str, call: &str) -> Result<(), SchedError> {
    let Some(caller) = caller else {
        return Ok(());
    };
    let reason = match caller.certificate_name() {
        Some(cn) if cn == node => return Ok(()),
        Some(cn) => format!("certificate for node {cn} cannot act as node {node}"),
        None => {
            format!("{caller} cannot act as node {node}: a node acts under its own certificate")
        }
    };
    tracing::warn!(call, caller = %caller, node = %node, reason = %reason, "refused");
    Err(SchedError::PermissionDenied(reason))
}

/// An agent sends its `--allow-bind` paths canonical: absolute, clean, not the root (which
/// would allow binding the whole host). Anything else is refused, naming it.
fn check_allowed_bind_paths(paths: &[String]) -> Result<(), SchedError> {
    for (i, p) in paths.iter().enumerate() {
        let clean = berth_proto::mount_paths::clean(std::path::Path::new(p));
        let why = match clean {
            None => "is not an absolute path",
            Some(c) if c == std::path::Path::new("/") => {
                "is the root: allowing it allows every path"
            }
            Some(c) if c.as_os_str() != p.as_str() => {
                "is not a canonical path (no ., .. or trailing /)"
            }
            Some(_) => continue,
        };
        return Err(SchedError::invalid(
            format!("allowed_bind_paths[{i}]"),
            format!("{p:?} {why}"),
        ));
    }
    Ok(())
}

fn validate_node_name(name: &str) -> Result<(), SchedError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(SchedError::invalid(
            "node_name",
            format!("{name:?} is not a valid node name"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use berth_proto::tls::Role;

    use super::*;
    use crate::auth::Via;
    use crate::store::redb::RedbStore;

    fn api(dir: &tempfile::TempDir) -> Nodes {
        let store = RedbStore::open(&dir.path().join("state.redb")).expect("open the store");
        let second = std::time::Duration::from_secs(1);
        Nodes {
            store: Arc::new(store),
            cluster: Arc::new(Cluster::new(second, 3 * second)),
            pod_network: "10.88.0.0/16".parse().unwrap(),
            service_network: "10.96.0.0/16".parse().unwrap(),
        }
    }

    fn request(name: &str) -> RegisterRequest {
        RegisterRequest {
            node_name: name.into(),
            node_address: "127.0.0.1".into(),
            ..Default::default()
        }
    }

    /// Twenty registrations at once get twenty CIDRs, each reserved under its own key for its
    /// node, and keep them when they register again (also at once).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_registrations_get_distinct_cidrs_and_keep_them() {
        const NODES: usize = 20;
        let dir = tempfile::tempdir().unwrap();
        let api = Arc::new(api(&dir));
        let register_all = || async {
            let barrier = Arc::new(tokio::sync::Barrier::new(NODES));
            let tasks: Vec<_> = (0..NODES)
                .map(|i| {
                    let (api, barrier) = (api.clone(), barrier.clone());
                    tokio::spawn(async move {
                        barrier.wait().await;
                        let record = api.upsert(&request(&format!("n{i}"))).await.unwrap();
                        (record.name, record.pod_cidr)
                    })
                })
                .collect();
            let mut got = std::collections::BTreeMap::new();
            for t in tasks {
                let (name, cidr) = t.await.unwrap();
                got.insert(name, cidr);
            }
            got
        };
        let first = register_all().await;
        let distinct: BTreeSet<&String> = first.values().collect();
        assert_eq!(distinct.len(), NODES, "duplicate pod CIDRs: {first:?}");
        let (claims, _) = api.store.list(POD_CIDRS).await.unwrap();
        assert_eq!(claims.len(), NODES, "one CIDR key per node");
        for kv in &claims {
            let cidr = kv.key.strip_prefix(POD_CIDRS).unwrap();
            let node = std::str::from_utf8(&kv.value).unwrap();
            assert_eq!(first.get(node).map(String::as_str), Some(cidr), "{kv:?}");
        }
        assert_eq!(register_all().await, first, "CIDRs kept on re-registration");
        assert_eq!(api.store.list(POD_CIDRS).await.unwrap().0.len(), NODES);
    }

    /// Records written before CIDR keys existed: a node keeps its CIDR and reserves it; a
    /// second node recorded with the same CIDR gets a free one.
    #[tokio::test]
    async fn records_from_before_cidr_keys_are_reserved_or_moved_off_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let api = api(&dir);
        for name in ["old-a", "old-b"] {
            let record = NodeRecord {
                name: name.into(),
                pod_cidr: "10.88.0.0/24".into(),
                ..Default::default()
            };
            let key = node_key(name);
            let value = records::encode(&record);
            api.store.put(&key, value, Expect::Absent).await.unwrap();
        }
        let a = api.upsert(&request("old-a")).await.unwrap();
        assert_eq!(a.pod_cidr, "10.88.0.0/24", "kept");
        let b = api.upsert(&request("old-b")).await.unwrap();
        assert_eq!(b.pod_cidr, "10.88.1.0/24", "moved off the duplicate");
        let fresh = api.upsert(&request("new")).await.unwrap();
        assert_eq!(fresh.pod_cidr, "10.88.2.0/24");
        let (claims, _) = api.store.list(POD_CIDRS).await.unwrap();
        let claims: Vec<(&str, &[u8])> = claims
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_slice()))
            .collect();
        assert_eq!(
            claims,
            vec![
                ("/pod-cidrs/10.88.0.0/24", &b"old-a"[..]),
                ("/pod-cidrs/10.88.1.0/24", &b"old-b"[..]),
                ("/pod-cidrs/10.88.2.0/24", &b"new"[..]),
            ]
        );
    }

    #[tokio::test]
    async fn a_node_address_in_the_service_network_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let api = api(&dir);
        let mut req = request("in-vips");
        req.node_address = "10.96.3.4".into();
        let e = api.register(None, &req).await.unwrap_err().to_string();
        assert!(
            e.contains("node_address") && e.contains("10.96.0.0/16"),
            "{e}"
        );
        assert!(api.register(None, &request("elsewhere")).await.is_ok());
    }

    #[tokio::test]
    async fn allowed_bind_paths_are_kept_on_the_record_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let api = api(&dir);
        let mut req = request("binder");
        req.allowed_bind_paths = vec!["/srv".into(), "/data/shared".into()];
        let (record, _) = api.register(None, &req).await.unwrap();
        assert_eq!(record.allowed_bind_paths, req.allowed_bind_paths);
        let kv = api.store.get(&node_key("binder")).await.unwrap().unwrap();
        let stored: NodeRecord = records::decode(&kv.key, &kv.value).unwrap();
        assert_eq!(stored.allowed_bind_paths, req.allowed_bind_paths);
        for (bad, why) in [
            ("srv", "absolute"),
            ("/", "root"),
            ("/srv/../etc", "canonical"),
        ] {
            req.allowed_bind_paths = vec!["/ok".into(), bad.into()];
            let e = api.register(None, &req).await.unwrap_err().to_string();
            assert!(
                e.contains("allowed_bind_paths[1]") && e.contains(why),
                "{e}"
            );
        }
    }

    fn caller(name: &str, via: Via) -> Caller {
        Caller {
            name: name.into(),
            role: Role::Node,
            via,
        }
    }

    #[test]
    fn only_a_nodes_own_certificate_speaks_for_it() {
        assert!(check_node_identity(None, "n1", "Register").is_ok());
        let own = caller("n1", Via::Certificate);
        assert!(check_node_identity(Some(&own), "n1", "Register").is_ok());
        let other = check_node_identity(Some(&own), "n2", "Session").unwrap_err();
        assert!(
            other
                .to_string()
                .contains("certificate for node n1 cannot act as node n2"),
            "{other}"
        );
        let forwarded = caller("n1", Via::Forwarded { by: "s1".into() });
        let refused = check_node_identity(Some(&forwarded), "n1", "Register").unwrap_err();
        assert!(
            matches!(refused, SchedError::PermissionDenied(_)),
            "{refused}"
        );
    }
}
