//! The node's nf_tables table, rendered whole from the persisted state and loaded with one
//! atomic `nft -f -` per change: masquerade for pod traffic leaving the node, and DNAT maps
//! for published ports (from outside, and from the node itself including 127.0.0.1).

use std::fmt::Write as _;
use std::path::Path;

use ipnet::Ipv4Net;

use super::state::{Proto, State};
use super::{NetError, ns};

/// What the ruleset is about, besides the state.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub name: String,
    pub bridge: String,
    pub pod_cidr: Ipv4Net,
}

impl Table {
    /// The full script: declare, delete and re-create the table with every element, so the
    /// result is exactly the state whatever was there before (a crash, an older agent).
    pub(crate) fn render(&self, state: &State) -> String {
        let Table {
            name,
            bridge,
            pod_cidr,
        } = self;
        let mut s = String::new();
        // `table` first so `delete table` never fails on a fresh node.
        let _ = writeln!(s, "table ip {name}\ndelete table ip {name}");
        let _ = write!(
            s,
            r#"table ip {name} {{
  set remote_pods {{ type ipv4_addr; flags interval; auto-merge; }}
  map tcp_ports {{ type inet_service : ipv4_addr . inet_service; }}
  map udp_ports {{ type inet_service : ipv4_addr . inet_service; }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    fib daddr type local jump published
  }}
  chain output {{
    type nat hook output priority -100; policy accept;
    fib daddr type local jump published
  }}
  chain published {{
    dnat ip to tcp dport map @tcp_ports
    dnat ip to udp dport map @udp_ports
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "{bridge}" ip saddr 127.0.0.0/8 masquerade
    oifname "{bridge}" ip saddr {pod_cidr} ct status dnat masquerade
    oifname != "{bridge}" ip saddr {pod_cidr} ip daddr != @remote_pods masquerade
  }}
}}
"#
        );
        // Loopback sources must be rewritten on the way to the bridge (the first postrouting
        // rule): a container cannot answer 127.0.0.1. The second rule is hairpin: a container
        // reaching a published port of the node must see the reply come back through it.
        for proto in [Proto::Tcp, Proto::Udp] {
            let elements: Vec<String> = state
                .ports
                .iter()
                .filter_map(|(id, ps)| state.leases.get(id).map(|ip| (ip, ps)))
                .flat_map(|(ip, ps)| {
                    ps.iter()
                        .filter(|p| p.proto == proto)
                        .map(move |p| format!("{} : {} . {}", p.host_port, ip, p.container_port))
                })
                .collect();
            if !elements.is_empty() {
                let _ = writeln!(
                    s,
                    "add element ip {name} {}_ports {{ {} }}",
                    proto.name(),
                    elements.join(", ")
                );
            }
        }
        if !state.remote_pods.is_empty() {
            let _ = writeln!(
                s,
                "add element ip {name} remote_pods {{ {} }}",
                state.remote_pods.join(", ")
            );
        }
        s
    }

    /// A script removing the table, present or not.
    pub(crate) fn render_delete(&self) -> String {
        format!("table ip {0}\ndelete table ip {0}\n", self.name)
    }

    /// Loads `script` with `nft -f -` inside the netns at `ns` (None: the agent's own).
    /// Blocking.
    pub(crate) fn apply(&self, ns: Option<&Path>, script: &str) -> Result<(), NetError> {
        run_nft(ns, &self.name, &["-f", "-"], script.as_bytes())
    }
}

/// Runs `nft ARGS` with `input` on stdin inside the netns at `ns`; a failure names `table`
/// and carries what nft said. Blocking.
pub(crate) fn run_nft(
    ns: Option<&Path>,
    table: &str,
    args: &[&str],
    input: &[u8],
) -> Result<(), NetError> {
    let out = ns::command_output(ns, &ns::tool("nft"), args, input)?;
    if !out.status.success() {
        return Err(NetError::Nft {
            table: table.to_owned(),
            stderr: format!(
                "{} ({})",
                String::from_utf8_lossy(&out.stderr).trim(),
                out.status
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::state::Published;

    #[test]
    fn renders_ports_of_leased_containers_only() {
        let t = Table {
            name: "berth_n1".into(),
            bridge: "bb-n1".into(),
            pod_cidr: "10.88.1.0/24".parse().unwrap(),
        };
        let mut st = State::default();
        st.leases.insert("a".into(), "10.88.1.2".parse().unwrap());
        let p = |h, c, proto| Published {
            host_port: h,
            container_port: c,
            proto,
        };
        st.ports.insert(
            "a".into(),
            vec![p(18080, 8080, Proto::Tcp), p(18053, 53, Proto::Udp)],
        );
        st.ports.insert("ghost".into(), vec![p(1, 1, Proto::Tcp)]);
        let s = t.render(&st);
        assert!(s.contains("add element ip berth_n1 tcp_ports { 18080 : 10.88.1.2 . 8080 }"));
        assert!(s.contains("add element ip berth_n1 udp_ports { 18053 : 10.88.1.2 . 53 }"));
        assert!(!s.contains(" 1 : "));
        assert!(!s.contains("remote_pods {  }"));
    }
}
