//! The contrast to the verdict map: what kube-proxy's iptables mode does, one rule per
//! service port in a single chain (`ip daddr X tcp dport Y dnat to ...`), walked rule by rule
//! by every new connection. Loaded as its own table in the node netns, the measured rule last
//! (the worst case: a service whose rule sits at the end of KUBE-SERVICES).

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::fabric::filler_vip;

/// The table's name: no other table in the bench's netns has it.
pub(crate) const TABLE: &str = "bench_linear";
/// The virtual IP the linear chain answers for (not in the services map).
pub(crate) const VIP: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 10);

/// Loads a chain of `rules` DNAT rules in the netns `ns_name` (replacing an earlier one):
/// `rules - 1` fillers, then `VIP:80` to `endpoint:8080`.
pub(crate) fn load(ns_name: &str, rules: usize, endpoint: Ipv4Addr) -> anyhow::Result<()> {
    let mut script = format!(
        "table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n\
         chain prerouting {{ type nat hook prerouting priority -99; policy accept;\n"
    );
    for i in 0..rules.saturating_sub(1) {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        script.push_str(&format!(
            "ip daddr {} tcp dport 80 dnat to {endpoint}:8080\n",
            filler_vip(i)
        ));
    }
    script.push_str(&format!(
        "ip daddr {VIP} tcp dport 80 dnat to {endpoint}:8080\n}}\n}}\n"
    ));
    nft(ns_name, &["-f", "-"], &script)
}

/// Removes the table.
pub(crate) fn remove(ns_name: &str) -> anyhow::Result<()> {
    nft(
        ns_name,
        &["-f", "-"],
        &format!("table ip {TABLE}\ndelete table ip {TABLE}\n"),
    )
}

fn nft(ns_name: &str, args: &[&str], stdin: &str) -> anyhow::Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns_name, "nft"])
        .args(args)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(stdin.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
