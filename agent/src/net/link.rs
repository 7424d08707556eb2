//! Links, addresses and routes over rtnetlink. A netlink socket acts in the netns it was created
//! in, so each connection is opened on a short-lived thread inside the target netns and then
//! driven by tokio like any other socket.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteProtocol};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::{NetError, ns};

/// Marks the routes to other nodes' pod CIDRs (rtnetlink "protocol"), so `set_routes` can find
/// exactly its own after a restart without remembering them. Shows as `proto 190` in `ip route`.
pub(crate) const ROUTE_PROTO: RouteProtocol = RouteProtocol::Other(190);

/// A netlink connection acting inside the netns at `ns` (None: the agent's own).
pub(crate) async fn connect(ns: Option<&Path>) -> Result<Handle, NetError> {
    let rt = tokio::runtime::Handle::current();
    let where_ = ns.unwrap_or(Path::new("(own netns)")).to_path_buf();
    let (conn, handle) = ns::run_in_async(ns, move || {
        // The socket registers with tokio's reactor when created, which needs the runtime's
        // context; entering it does not make this thread a runtime thread.
        let _guard = rt.enter();
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| NetError::io("open a netlink socket in", &where_, e))?;
        Ok((conn, handle))
    })
    .await?;
    // The connection task ends by itself once every clone of the handle is dropped.
    tokio::spawn(conn);
    Ok(handle)
}

fn errno_is(e: &rtnetlink::Error, codes: &[i32]) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if codes.contains(&-m.raw_code()))
}

fn is_missing(e: &rtnetlink::Error) -> bool {
    errno_is(
        e,
        &[libc::ENODEV, libc::ENOENT, libc::ESRCH, libc::EADDRNOTAVAIL],
    )
}

/// The index of link `name`, if it exists.
pub(crate) async fn index(h: &Handle, name: &str) -> Result<Option<u32>, NetError> {
    let mut links = h.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(found) => Ok(found.map(|m| m.header.index)),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(NetError::netlink(format!("look up link {name}"), e)),
    }
}

async fn must_index(h: &Handle, name: &str) -> Result<u32, NetError> {
    index(h, name).await?.ok_or_else(|| {
        NetError::netlink(
            format!("link {name} vanished"),
            rtnetlink::Error::RequestFailed,
        )
    })
}

async fn set(
    h: &Handle,
    what: String,
    msg: netlink_packet_route::link::LinkMessage,
) -> Result<(), NetError> {
    h.link()
        .set(msg)
        .execute()
        .await
        .map_err(|e| NetError::netlink(what, e))
}

/// Brings link `idx` (named `name` for errors) up.
pub(crate) async fn up(h: &Handle, idx: u32, name: &str) -> Result<(), NetError> {
    set(
        h,
        format!("set {name} up"),
        LinkUnspec::new_with_index(idx).up().build(),
    )
    .await
}

/// Creates (if missing) and brings up bridge `name` with a fixed MAC and `addr/prefix`.
/// The MAC is fixed because a bridge otherwise takes the lowest MAC of its ports, which changes
/// as containers come and go and makes peers' ARP entries for the gateway stale.
pub(crate) async fn ensure_bridge(
    h: &Handle,
    name: &str,
    mac: [u8; 6],
    addr: Ipv4Addr,
    prefix: u8,
) -> Result<u32, NetError> {
    if index(h, name).await?.is_none() {
        // nf_call_iptables off: bridged pod-to-pod frames must not go through the IP filter
        // hooks, where another table's forward policy could drop them.
        let msg = LinkBridge::new(name)
            .address(mac.to_vec())
            .nf_call_iptables(false)
            .build();
        match h.link().add(msg).execute().await {
            Ok(()) => {}
            Err(e) if errno_is(&e, &[libc::EEXIST]) => {}
            Err(e) => return Err(NetError::netlink(format!("create bridge {name}"), e)),
        }
    }
    let idx = must_index(h, name).await?;
    up(h, idx, name).await?;
    h.address()
        .add(idx, addr.into(), prefix)
        .replace()
        .execute()
        .await
        .map_err(|e| NetError::netlink(format!("add {addr}/{prefix} to {name}"), e))?;
    Ok(idx)
}

/// Deletes link `name` if it exists (for a veth, both ends go).
pub(crate) async fn delete(h: &Handle, name: &str) -> Result<(), NetError> {
    let Some(idx) = index(h, name).await? else {
        return Ok(());
    };
    match h.link().del(idx).execute().await {
        Ok(()) => Ok(()),
        Err(e) if is_missing(&e) => Ok(()),
        Err(e) => Err(NetError::netlink(format!("delete link {name}"), e)),
    }
}

/// Creates veth `host` ↔ `peer` in the node netns, attaches `host` to bridge `bridge_idx` and up,
/// and moves `peer` into the netns at `ctr_netns`.
pub(crate) async fn create_veth(
    h: &Handle,
    host: &str,
    peer: &str,
    bridge_idx: u32,
    ctr_netns: &Path,
) -> Result<(), NetError> {
    h.link()
        .add(LinkVeth::new(host, peer).build())
        .execute()
        .await
        .map_err(|e| NetError::netlink(format!("create veth {host}/{peer}"), e))?;
    let host_idx = must_index(h, host).await?;
    set(
        h,
        format!("attach {host} to bridge"),
        LinkUnspec::new_with_index(host_idx)
            .controller(bridge_idx)
            .up()
            .build(),
    )
    .await?;
    let peer_idx = must_index(h, peer).await?;
    let ns_file =
        std::fs::File::open(ctr_netns).map_err(|e| NetError::io("open netns", ctr_netns, e))?;
    set(
        h,
        format!("move {peer} into {}", ctr_netns.display()),
        LinkUnspec::new_with_index(peer_idx)
            .setns_by_fd(ns_file.as_raw_fd())
            .build(),
    )
    .await
}

/// Inside a container netns: renames `peer` to eth0 (unless done already), gives it `ip/prefix`,
/// brings it and lo up and routes everything via `gateway`.
pub(crate) async fn configure_container(
    h: &Handle,
    peer: &str,
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
) -> Result<(), NetError> {
    let idx = match index(h, "eth0").await? {
        Some(idx) => idx,
        None => {
            let idx = must_index(h, peer).await?;
            set(
                h,
                format!("rename {peer} to eth0"),
                LinkUnspec::new_with_index(idx).name("eth0").build(),
            )
            .await?;
            idx
        }
    };
    h.address()
        .add(idx, ip.into(), prefix)
        .replace()
        .execute()
        .await
        .map_err(|e| NetError::netlink(format!("add {ip}/{prefix} to eth0"), e))?;
    up(h, idx, "eth0").await?;
    let lo = must_index(h, "lo").await?;
    up(h, lo, "lo").await?;
    h.route()
        .add(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gateway)
                .build(),
        )
        .replace()
        .execute()
        .await
        .map_err(|e| NetError::netlink(format!("add default route via {gateway}"), e))
}

/// A route this module installed: destination and gateway, plus the message to delete it by.
#[derive(Debug, Clone)]
pub(crate) struct OwnRoute {
    pub dest: Ipv4Net,
    pub via: Option<Ipv4Addr>,
    msg: netlink_packet_route::route::RouteMessage,
}

/// The main-table IPv4 routes marked with [`ROUTE_PROTO`].
pub(crate) async fn own_routes(h: &Handle) -> Result<Vec<OwnRoute>, NetError> {
    let routes: Vec<_> = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(|e| NetError::netlink("list routes", e))?;
    Ok(routes
        .into_iter()
        .filter(|m| {
            m.header.table == RouteHeader::RT_TABLE_MAIN && m.header.protocol == ROUTE_PROTO
        })
        .filter_map(|msg| {
            let mut dest = None;
            let mut via = None;
            for attr in &msg.attributes {
                match attr {
                    RouteAttribute::Destination(RouteAddress::Inet(a)) => dest = Some(*a),
                    RouteAttribute::Gateway(RouteAddress::Inet(a)) => via = Some(*a),
                    _ => {}
                }
            }
            let dest = Ipv4Net::new(
                dest.unwrap_or(Ipv4Addr::UNSPECIFIED),
                msg.header.destination_prefix_length,
            )
            .ok()?;
            Some(OwnRoute { dest, via, msg })
        })
        .collect())
}

/// Deletes a route found by [`own_routes`]; one already gone is fine.
pub(crate) async fn delete_route(h: &Handle, route: OwnRoute) -> Result<(), NetError> {
    match h.route().del(route.msg).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno_is(&e, &[libc::ESRCH, libc::ENOENT]) => Ok(()),
        Err(e) => Err(NetError::netlink(
            format!("delete route to {}", route.dest),
            e,
        )),
    }
}

/// Adds or replaces the route to `dest` via `via`, marked as ours.
pub(crate) async fn replace_route(
    h: &Handle,
    dest: Ipv4Net,
    via: Ipv4Addr,
) -> Result<(), NetError> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dest.network(), dest.prefix_len())
        .gateway(via)
        .protocol(ROUTE_PROTO)
        .build();
    h.route()
        .add(msg)
        .replace()
        .execute()
        .await
        .map_err(|e| NetError::netlink(format!("route {dest} via {via}"), e))
}

/// Puts the existing node-side veth `idx` (named `name`) on bridge `bridge_idx` and up.
pub(crate) async fn attach_up(
    h: &Handle,
    idx: u32,
    name: &str,
    bridge_idx: u32,
) -> Result<(), NetError> {
    set(
        h,
        format!("attach {name} to bridge"),
        LinkUnspec::new_with_index(idx)
            .controller(bridge_idx)
            .up()
            .build(),
    )
    .await
}
