//! A RUN step's network namespace: `none` has loopback only; the default, NAT, adds a veth
//! pair to the host on a private /30 (allocated under a lock so concurrent builds never share
//! one), a default route, a masquerade rule in an nftables table of the step's own, ip_forward
//! on. Everything is undone when the step ends. (A step with a network also gets a copy of
//! the host's resolv.conf: [`bind_resolv_conf`].)
//!
//! Separate from the agent's `net` module on purpose: the CLI may not depend on the agent, and
//! the agent's pieces serve a node (a bridge, leases, one table per node, persisted state);
//! a build step needs one veth and one rule for the life of one process.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use anyhow::{Context as _, anyhow, bail};
use berth_images::containerfile::BuildNetwork;
use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use nftables::batch::Batch;
use nftables::expr::{Expression, NamedExpression, Payload, PayloadField, Prefix};
use nftables::schema::{Chain, NfListObject, Rule, Table};
use nftables::stmt::{Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use nix::fcntl::{Flock, FlockArg};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use oci_spec::runtime::{Mount, Spec};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};

/// Where step subnets come from: 10.213.0.0/16, in /30s (16,384 of them).
const POOL: [u8; 2] = [10, 213];
/// Serialises subnet allocation between concurrent builds (the lock is held until the host
/// side's address is set, which is what the next allocation looks for).
const LOCK: &str = "/run/berth-build-nat.lock";

/// The step's own names in the host: `bbh`/`bbp` + 12 hex (15, the kernel's limit).
struct Names {
    host: String,
    peer: String,
    table: String,
}

impl Names {
    fn of(id: &str) -> Self {
        let tail: String = id
            .chars()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        Self {
            host: format!("bbh{tail}"),
            peer: format!("bbp{tail}"),
            table: format!("berth_build_{tail}"),
        }
    }
}

/// The host side of a NAT step network.
struct Nat {
    names: Names,
    subnet: Ipv4Addr,
}

/// A step's network namespace (bound at a file) and, for NAT, its link to the host.
pub(crate) struct StepNetwork {
    netns: PathBuf,
    nat: Option<Nat>,
    torn_down: bool,
}

impl StepNetwork {
    /// Makes the namespace for `mode` (NAT or none) under `scratch`.
    pub(crate) fn up(id: &str, scratch: &Path, mode: BuildNetwork) -> anyhow::Result<Self> {
        let netns = scratch.join("netns");
        create_netns_file(&netns)?;
        let mut network = Self {
            netns,
            nat: None,
            torn_down: false,
        };
        in_netns(Some(&network.netns), |h| {
            Box::pin(async move { set_up(&h, "lo").await })
        })?;
        if mode == BuildNetwork::Nat {
            let names = Names::of(id);
            let subnet = network.link(names)?;
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
                .context("turning on ip_forward for the step's NAT")?;
            let table = &network.nat.as_ref().expect("linked").names.table;
            nftables::helper::apply_ruleset(&masquerade(table, subnet).to_nftables())
                .with_context(|| format!("loading the nftables table {table}"))?;
        }
        Ok(network)
    }

    /// The veth pair, its addresses and the namespace's default route; returns the subnet.
    fn link(&mut self, names: Names) -> anyhow::Result<Ipv4Addr> {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK)
            .with_context(|| format!("opening {LOCK}"))?;
        let _lock = Flock::lock(lock, FlockArg::LockExclusive)
            .map_err(|(_, e)| anyhow!("locking {LOCK}: {e}"))?;
        let ns = File::open(&self.netns).context("opening the step's netns")?;
        let (host, peer) = (names.host.clone(), names.peer.clone());
        let subnet = in_netns(None, move |h| {
            Box::pin(async move {
                let subnet = free_subnet(&h).await?;
                h.link()
                    .add(LinkVeth::new(&host, &peer).build())
                    .execute()
                    .await
                    .with_context(|| format!("creating veth {host}/{peer}"))?;
                let idx = index(&h, &host).await?;
                h.address()
                    .add(idx, at(subnet, 1).into(), 30)
                    .execute()
                    .await
                    .with_context(|| format!("adding an address to {host}"))?;
                set_up(&h, &host).await?;
                let peer_idx = index(&h, &peer).await?;
                let msg = LinkUnspec::new_with_index(peer_idx)
                    .setns_by_fd(ns.as_raw_fd())
                    .build();
                h.link()
                    .set(msg)
                    .execute()
                    .await
                    .context("moving the veth in")?;
                Ok(subnet)
            })
        });
        // Recorded even half-made, so that teardown removes the veth and the table.
        self.nat = Some(Nat {
            names,
            subnet: Ipv4Addr::UNSPECIFIED,
        });
        let subnet = subnet?;
        let nat = self.nat.as_mut().expect("just set");
        nat.subnet = subnet;
        let peer = nat.names.peer.clone();
        in_netns(Some(&self.netns), move |h| {
            Box::pin(async move {
                let idx = index(&h, &peer).await?;
                h.address()
                    .add(idx, at(subnet, 2).into(), 30)
                    .execute()
                    .await
                    .context("adding the step's address")?;
                set_up(&h, &peer).await?;
                let route = RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(at(subnet, 1))
                    .build();
                h.route()
                    .add(route)
                    .execute()
                    .await
                    .context("adding the default route")
            })
        })?;
        Ok(subnet)
    }

    pub(crate) fn netns_path(&self) -> &Path {
        &self.netns
    }

    /// Removes the table, the veth and the namespace.
    pub(crate) fn down(mut self) -> anyhow::Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> anyhow::Result<()> {
        if std::mem::replace(&mut self.torn_down, true) {
            return Ok(());
        }
        let mut errors = Vec::new();
        if let Some(nat) = &self.nat {
            let mut batch = Batch::new();
            // Declared first, so that the delete succeeds whether or not it was loaded.
            batch.add(NfListObject::Table(table(&nat.names.table)));
            batch.delete(NfListObject::Table(table(&nat.names.table)));
            if let Err(e) = nftables::helper::apply_ruleset(&batch.to_nftables()) {
                errors.push(format!("removing table {}: {e}", nat.names.table));
            }
            let host = nat.names.host.clone();
            let deleted = in_netns(None, move |h| {
                Box::pin(async move {
                    let Ok(idx) = index(&h, &host).await else {
                        return Ok(());
                    };
                    h.link()
                        .del(idx)
                        .execute()
                        .await
                        .context("deleting the veth")
                })
            });
            if let Err(e) = deleted {
                errors.push(format!("{e:#}"));
            }
        }
        if let Err(e) = remove_netns_file(&self.netns) {
            errors.push(format!("{e:#}"));
        }
        match errors.is_empty() {
            true => Ok(()),
            false => bail!("tearing down the RUN step's network: {}", errors.join("; ")),
        }
    }
}

impl Drop for StepNetwork {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("berth: {e:#}");
        }
    }
}

/// Binds a copy (under `scratch`) of the host's resolv.conf read-only at the container's
/// /etc/resolv.conf, as buildah does: the step resolves names as the host does, and the file is
/// not part of its layer.
pub(crate) fn bind_resolv_conf(spec: &mut Spec, scratch: &Path) -> anyhow::Result<()> {
    let resolv = scratch.join("resolv.conf");
    std::fs::copy("/etc/resolv.conf", &resolv)
        .context("copying the host's /etc/resolv.conf for the step")?;
    let mut mount = Mount::default();
    mount.set_destination(PathBuf::from("/etc/resolv.conf"));
    mount.set_typ(Some("bind".into()));
    mount.set_source(Some(resolv));
    mount.set_options(Some(vec!["rbind".into(), "ro".into()]));
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.push(mount);
    spec.set_mounts(Some(mounts));
    Ok(())
}

fn at(subnet: Ipv4Addr, host: u8) -> Ipv4Addr {
    let [a, b, c, d] = subnet.octets();
    Ipv4Addr::new(a, b, c, d + host)
}

/// The first /30 of the pool that no address of the host lies in.
async fn free_subnet(h: &Handle) -> anyhow::Result<Ipv4Addr> {
    let messages: Vec<_> = h
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .context("listing the host's addresses")?;
    let used: Vec<Ipv4Addr> = messages
        .iter()
        .flat_map(|m| m.attributes.iter())
        .filter_map(|a| match a {
            AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        })
        .collect();
    first_free(&used).ok_or_else(|| {
        anyhow!(
            "no free /30 left in {}.{}.0.0/16 for the RUN step",
            POOL[0],
            POOL[1]
        )
    })
}

/// The first /30 of the pool that none of `used` lies in.
fn first_free(used: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    let net_of = |ip: &Ipv4Addr| {
        let [a, b, c, d] = ip.octets();
        Ipv4Addr::new(a, b, c, d & !3)
    };
    (0..=255u8)
        .flat_map(|c| (0..64u8).map(move |d| Ipv4Addr::new(POOL[0], POOL[1], c, d * 4)))
        .find(|net| !used.iter().any(|ip| net_of(ip) == *net))
}

async fn index(h: &Handle, name: &str) -> anyhow::Result<u32> {
    let mut links = h.link().get().match_name(name.to_owned()).execute();
    links
        .try_next()
        .await
        .with_context(|| format!("looking up link {name}"))?
        .map(|m| m.header.index)
        .ok_or_else(|| anyhow!("link {name} is missing"))
}

async fn set_up(h: &Handle, name: &str) -> anyhow::Result<()> {
    let idx = index(h, name).await?;
    h.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .with_context(|| format!("setting {name} up"))
}

fn table(name: &str) -> Table<'static> {
    Table {
        family: NfFamily::IP,
        name: Cow::Owned(name.to_string()),
        handle: None,
    }
}

/// `table ip NAME { chain postrouting { type nat hook postrouting priority srcnat;
/// ip saddr SUBNET/30 masquerade } }`.
fn masquerade(name: &str, subnet: Ipv4Addr) -> Batch<'static> {
    let mut batch = Batch::new();
    batch.add(NfListObject::Table(table(name)));
    batch.add(NfListObject::Chain(Chain {
        family: NfFamily::IP,
        table: Cow::Owned(name.to_string()),
        name: "postrouting".into(),
        _type: Some(NfChainType::NAT),
        hook: Some(NfHook::Postrouting),
        prio: Some(100),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    }));
    let saddr = Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: "ip".into(),
            field: "saddr".into(),
        },
    )));
    let net = Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(Expression::String(Cow::Owned(subnet.to_string()))),
        len: 30,
    }));
    batch.add(NfListObject::Rule(Rule {
        family: NfFamily::IP,
        table: Cow::Owned(name.to_string()),
        chain: "postrouting".into(),
        expr: Cow::Owned(vec![
            Statement::Match(Match {
                left: saddr,
                right: net,
                op: Operator::EQ,
            }),
            Statement::Masquerade(None),
        ]),
        ..Rule::default()
    }));
    batch
}

type NetFuture<T> = Pin<Box<dyn Future<Output = anyhow::Result<T>>>>;

/// Runs `f` with a netlink handle acting in the netns at `ns` (None: the host's), on a thread
/// of its own with a one-thread tokio runtime: a netlink socket acts in the netns it was made
/// in, and `setns` moves only the calling thread. No thread outlives the call (the runtime's
/// `create` forks, and wants a single-threaded caller).
fn in_netns<T: Send + 'static>(
    ns: Option<&Path>,
    f: impl FnOnce(Handle) -> NetFuture<T> + Send + 'static,
) -> anyhow::Result<T> {
    let ns = ns.map(Path::to_path_buf);
    std::thread::spawn(move || -> anyhow::Result<T> {
        if let Some(ns) = &ns {
            let file = File::open(ns).with_context(|| format!("opening {}", ns.display()))?;
            nix::sched::setns(file, CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering {}", ns.display()))?;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a tokio runtime for netlink")?;
        rt.block_on(async move {
            let (conn, handle, _) = rtnetlink::new_connection().context("opening netlink")?;
            tokio::spawn(conn);
            f(handle).await
        })
    })
    .join()
    .map_err(|_| anyhow!("the netlink thread panicked"))?
}

/// Makes `path` a new network namespace that lives as long as its bind mount.
fn create_netns_file(path: &Path) -> anyhow::Result<()> {
    File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let target = path.to_path_buf();
    // A thread that unshares and exits: unshare moves only it, the bind mount keeps the netns.
    std::thread::spawn(move || -> anyhow::Result<()> {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).context("unshare a netns")?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("binding the netns at {}", target.display()))
    })
    .join()
    .map_err(|_| anyhow!("the netns thread panicked"))?
}

fn remove_netns_file(path: &Path) -> anyhow::Result<()> {
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e).with_context(|| format!("unmounting {}", path.display())),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_limit_and_come_from_the_id() {
        let names = Names::of("build-0123456789abcdef");
        assert_eq!(names.host, "bbh456789abcdef");
        assert_eq!(names.peer.len(), 15);
        assert_eq!(names.table, "berth_build_456789abcdef");
    }

    #[test]
    fn a_subnet_with_any_address_in_use_is_skipped() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(first_free(&[ip("127.0.0.1")]), Some(ip("10.213.0.0")));
        let used = [ip("10.213.0.1"), ip("10.213.0.6"), ip("10.213.0.11")];
        assert_eq!(first_free(&used), Some(ip("10.213.0.12")));
        let all: Vec<Ipv4Addr> = (0..=255u8)
            .flat_map(|c| (0..64u8).map(move |d| Ipv4Addr::new(10, 213, c, d * 4 + 1)))
            .collect();
        assert_eq!(first_free(&all), None);
    }
}
